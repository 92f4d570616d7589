"""Draining on SIGTERM: ``/readyz`` turns ``draining``, new detections get 503, uploads under way
and requests in flight finish (up to ``DETECTOR_DRAIN_TIMEOUT_SECONDS`` in all), then the server
stops and exits 0. Bodies still arriving at the timeout are aborted (503, ``Connection: close``):
a slow upload cannot hold the shutdown past the drain timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType
from typing import Any

from fastapi import FastAPI

from app.settings import Settings

log = logging.getLogger("app")

# After the drain timeout: how long the aborted uploads and the requests in flight get to answer.
ABORT_GRACE_SECONDS = 2.0


def install_drain_handler(app: FastAPI) -> None:
    """Chain onto the server's SIGTERM handler: drain first, then let the server stop.

    Only possible from the main thread (a real uvicorn process); test clients skip it.
    """
    loop = asyncio.get_running_loop()
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if app.state.draining_task is not None:  # a second SIGTERM: stop now
            _stop_server(previous, signum, frame)
            return
        loop.call_soon_threadsafe(_start_drain, app, previous, signum, frame)

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, on_sigterm)


def _start_drain(app: FastAPI, previous: Any, signum: int, frame: FrameType | None) -> None:
    app.state.readiness.drain()
    log.info(
        "SIGTERM: draining (%d uploads under way, %d requests in flight)",
        app.state.uploads.count,
        app.state.inflight.count,
    )

    async def settled() -> None:
        # Uploads first: an upload that ends becomes a request in flight, with no pause between.
        await app.state.uploads.wait_idle()
        await app.state.inflight.wait_idle()

    async def drain() -> None:
        settings: Settings = app.state.settings
        try:
            await asyncio.wait_for(settled(), settings.drain_timeout_seconds)
        except TimeoutError:
            log.warning(
                "drain timeout: aborting %d uploads still under way (%d requests in flight)",
                app.state.uploads.count,
                app.state.inflight.count,
            )
            app.state.uploads.abort.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled(), ABORT_GRACE_SECONDS)
        await asyncio.sleep(settings.drain_delay_seconds)
        log.info("drained; shutting down")
        _stop_server(previous, signum, frame)

    app.state.draining_task = asyncio.get_running_loop().create_task(drain())


def _stop_server(previous: Any, signum: int, frame: FrameType | None) -> None:
    # uvicorn's handler re-raises SIGTERM after its own shutdown, which would end the process
    # with status 143; asking its server to exit directly gives the clean exit 0 we want.
    server = getattr(previous, "__self__", None)
    if server is not None and hasattr(server, "should_exit"):
        server.should_exit = True
    elif callable(previous):
        previous(signum, frame)
    else:
        raise SystemExit(0)

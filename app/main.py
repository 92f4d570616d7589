"""App factory and lifespan: ``uvicorn app.main:app`` serves :data:`app`.

Nothing heavy happens at import. The lifespan loads the weights in the background (so
``/healthz`` answers at once and ``/readyz`` says ``loading``), runs one warm-up batch, starts
the batcher and turns ready, or ``failed`` with the reason. On SIGTERM the service drains:
``/readyz`` says ``draining``, new detections get 503, in-flight ones finish, then it exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.batching import DynamicBatcher
from app.decode_pool import DecodeLimits, DecodePool
from app.metrics import Metrics
from app.routes import router
from app.service import DetectorService, InFlight
from app.settings import Settings
from app.state import Readiness
from model.checkpoint import WeightsError
from model.config import DetectParams
from model.predictor import Predictor

log = logging.getLogger("app")
access_log = logging.getLogger("app.access")


async def load_service(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    readiness: Readiness = app.state.readiness
    try:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        predictor, weights = await asyncio.to_thread(
            Predictor.from_weights, settings.weights, settings.device, None, settings.backend
        )
        if predictor.backend == "onnxruntime":
            # ONNX Runtime took the threads for the network; torch is left the per-image letterbox
            # and post-processing, which cost half the CPU time on one thread as on two (measured).
            torch.set_num_threads(1)
        predictor.defaults = DetectParams(
            settings.score_threshold, settings.iou_threshold, settings.max_detections
        )
        batcher = DynamicBatcher(
            predictor,
            app.state.metrics,
            settings.max_batch_size,
            settings.batch_timeout_ms / 1000.0,
            settings.max_queue_images,
        )
        limits = DecodeLimits(
            settings.max_image_pixels, settings.max_request_pixels, settings.decode_timeout_seconds
        )
        decoder = DecodePool(
            limits, settings.decode_pixel_budget, settings.decode_threads, predictor.config.input_size
        )
        service = DetectorService(predictor, weights, batcher, decoder)
        await asyncio.to_thread(service.warm_up, settings.device_decode)
        batcher.start()
        app.state.service = service
        readiness.ready()
        log.info(
            "ready: %s version %s on %s (%s), weights %s",
            predictor.config.name,
            weights.version,
            predictor.device,
            service.dtype,
            settings.weights,
        )
    except (WeightsError, ValueError, OSError, RuntimeError) as exc:
        log.error("model failed to load: %s", exc)
        # /readyz is public: name the file relative to the setting, not the host's path.
        readiness.fail(str(exc).replace(str(settings.weights), "$DETECTOR_WEIGHTS"))


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
    log.info("SIGTERM: draining (%d requests in flight)", app.state.inflight.count)

    async def drain() -> None:
        settings: Settings = app.state.settings
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.state.inflight.wait_idle(), settings.drain_timeout_seconds)
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


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    install_drain_handler(app)
    loading = asyncio.create_task(load_service(app))
    try:
        yield
    finally:
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        service: DetectorService | None = app.state.service
        if service is not None:
            await service.batcher.stop()
            service.shutdown()


class AccessLogMiddleware:
    """Counts and times every request, and writes one JSON log line for it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(elapsed)
            client = scope.get("client")
            access_log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": label,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "client": client[0] if client else None,
                    }
                )
            )


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body"))
        problems.append(
            f"{where}: {error.get('msg', 'invalid')}"
            + (f" (got {error['input']!r})" if "input" in error and error["input"] is not None else "")
        )
    return "invalid request: " + "; ".join(problems)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model loads when the app starts (its lifespan), not here."""
    settings = settings or Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = FastAPI(
        title="VOC object detector",
        summary="POST images, get Pascal VOC boxes as JSON.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.readiness = Readiness()
    app.state.metrics = Metrics()
    app.state.service = None
    app.state.inflight = InFlight()
    app.state.draining_task = None

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace or a path in a response; the log has the details.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; it has been logged"}, status_code=500)

    app.include_router(router)
    app.add_middleware(AccessLogMiddleware, metrics=app.state.metrics)
    return app


app = create_app()

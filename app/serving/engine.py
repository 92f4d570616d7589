"""The inference engine: one process per device that owns the network, shared by the HTTP fronts.

Started by the launcher (:mod:`app.serving.launcher`) as ``python -m app.serving.engine``, it loads
the predictor from the same settings as the fronts (``DETECTOR_*``), warms it up, and listens on a
Unix socket (``--socket``; the fronts prove themselves with a key passed in the environment,
``DETECTOR_ENGINE_KEY``). Each front sends one batch at a time: the fitted uint8 pixels lie in a
shared-memory block of the front's own (:mod:`app.serving.remote`), the message carries only their
places and the per-image parameters. The engine takes whatever batches are queued, one front
after another (round-robin), up to ``DETECTOR_MAX_BATCH_SIZE`` images, runs them as one batch and
sends each front its detections. It runs in a session of its own, so a terminal's Ctrl-C and a
container's SIGTERM reach the launcher only, which stops the engine after the fronts have drained
(every accepted request gets its answer); it also exits when its standard input closes (the
launcher is gone).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, Listener
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
from prometheus_client import Histogram

from app.logs import configure_logging
from app.metrics import ProcessSeries, multiprocess_mode
from app.serving.loading import open_served_predictor
from app.serving.remote import KEY_VARIABLE
from app.serving.service import warm_up_sizes
from app.settings import Settings
from model.calibration import Calibration
from model.config import DetectParams
from model.geometry import Fitted
from model.runtime import ServingPredictor

log = logging.getLogger("app.serving.engine")


@dataclass
class Job:
    """One front's batch: where its pixels are, and its parameters per image."""

    front: int
    connection: Connection
    places: list[tuple[int, int, int, int, int]]  # offset, height, width, original width, height
    params: list[DetectParams]
    memory: SharedMemory | None  # None for a job of no images


def describe(predictor: ServingPredictor) -> dict[str, Any]:
    """What a front needs of the predictor it stands in for (no tensors: it pickles small)."""
    return {
        "config": predictor.config.to_dict(),
        "defaults": predictor.defaults,
        "backend": str(predictor.backend),
        "runtime": predictor.runtime,
        "precision": predictor.precision,
        "device": str(predictor.device),
        "dtype": str(predictor.dtype).removeprefix("torch."),
        # The table only: a calibration used on a device also holds a torch copy of it.
        "calibration": None if predictor.calibration is None else Calibration(predictor.calibration.table),
        "pid": os.getpid(),
    }


class Engine:
    """Batches the fronts' jobs round-robin and runs them through one predictor."""

    def __init__(self, predictor: ServingPredictor, max_batch_size: int) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        # Written to the launcher's multiprocess directory, read by whichever front is scraped.
        self.batch_size = Histogram(
            "detector_engine_batch_size",
            "images per forward pass of the engine (the fronts' batches merged)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=None,
        )
        self.batch_seconds = Histogram(
            "detector_engine_batch_seconds",
            "seconds per engine batch: preprocess, forward, post-process",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=None,
        )
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.torch_input = predictor.runtime == "torch"

    def serve(self, listener: Listener) -> None:
        threading.Thread(target=self._accept, args=(listener,), name="engine-accept", daemon=True).start()
        waiting: dict[int, deque[Job]] = {}
        while True:
            job = self.jobs.get()
            waiting.setdefault(job.front, deque()).append(job)
            while True:  # everything queued now, without waiting for more
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                waiting.setdefault(job.front, deque()).append(job)
            while any(waiting.values()):
                self._run(self._take(waiting))

    def _take(self, waiting: dict[int, deque[Job]]) -> list[Job]:
        """Whole jobs, one front after another, up to the batch limit (at least one job)."""
        taken: list[Job] = []
        images = 0
        progress = True
        while progress:
            progress = False
            for line in waiting.values():
                if line and (not taken or images + len(line[0].places) <= self.max_batch_size):
                    job = line.popleft()
                    taken.append(job)
                    images += len(job.places)
                    progress = True
        return taken

    def _pixels(self, job: Job) -> list[Fitted]:
        fitted: list[Fitted] = []
        if job.memory is None:
            return fitted
        for offset, height, width, original_w, original_h in job.places:
            pixels: Any = np.ndarray((height, width, 3), np.uint8, job.memory.buf, offset)
            if self.torch_input:
                import torch

                pixels = torch.from_numpy(pixels).permute(2, 0, 1)
            fitted.append(Fitted(pixels, original_w, original_h))
        return fitted

    def _run(self, jobs: list[Job]) -> None:
        images: list[Fitted] = []
        params: list[DetectParams] = []
        ready = []
        for job in jobs:
            try:
                pixels = self._pixels(job)
            except (ValueError, TypeError, BufferError):  # its front went away: its block is closed
                continue
            images += pixels
            params += job.params
            ready.append(job)
        jobs = ready
        start = time.perf_counter()
        try:
            found = self.predictor(images, params) if images else []
            answers: list[Any] = []
            first = 0
            for job in jobs:
                part = found[first : first + len(job.places)]
                first += len(job.places)
                answers.append(("found", [_plain(f) for f in part]))
        except Exception as exc:  # one bad batch fails its jobs, not the engine
            log.error("batch of %d images failed: %s: %s", len(images), type(exc).__name__, exc)
            answers = [("error", f"{type(exc).__name__} during inference")] * len(jobs)
        if images:  # the launcher's pings carry none
            self.batch_seconds.observe(time.perf_counter() - start)
            self.batch_size.observe(len(images))
        del images  # views of the fronts' memory: gone before a front may write it again
        for job, answer in zip(jobs, answers, strict=True):
            with contextlib.suppress(OSError):  # that front is gone; its reader thread cleans up
                job.connection.send(answer)

    def _accept(self, listener: Listener) -> None:
        front = 0
        while True:
            try:
                connection = listener.accept()
            except OSError as exc:  # a client without the key, or a broken handshake
                log.warning("refused a connection to the engine: %s", exc)
                continue
            front += 1
            threading.Thread(
                target=self._read, args=(front, connection), name=f"engine-front-{front}", daemon=True
            ).start()

    def _read(self, front: int, connection: Connection) -> None:
        memory: SharedMemory | None = None
        try:
            while True:
                message = connection.recv()
                kind = message[0]
                if kind == "info":
                    connection.send(("info", describe(self.predictor)))
                elif kind == "memory":
                    memory = SharedMemory(name=message[1])
                    # The front made it and unlinks it; this process's tracker must not (Python < 3.13).
                    resource_tracker.unregister(memory._name, "shared_memory")  # type: ignore[attr-defined]
                    connection.send(("ok", None))
                elif kind == "detect" and (memory is not None or not message[1]):
                    # No images (the launcher's ping) needs no block: it checks the batch loop.
                    self.jobs.put(Job(front, connection, message[1], message[2], memory))
                else:
                    connection.send(("error", f"unexpected message {kind!r}"))
        except (EOFError, OSError):
            pass
        finally:
            connection.close()
            if memory is not None:
                with contextlib.suppress(BufferError):  # a batch of its still holds views: freed with it
                    memory.close()


def _plain(found: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.asarray(found.boxes_xyxy, dtype=np.float32),
        np.asarray(found.scores, dtype=np.float32),
        np.asarray(found.labels, dtype=np.int64),
    )


def _exit_when_orphaned() -> None:
    """The launcher holds our standard input; when it is gone, so are we."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the inference engine behind the HTTP fronts")
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    threading.Thread(target=_exit_when_orphaned, name="engine-orphan", daemon=True).start()
    key = bytes.fromhex(os.environ[KEY_VARIABLE])
    start = time.perf_counter()
    predictor, weights = open_served_predictor(settings)
    defaults = predictor.defaults
    blank = predictor.fit(np.zeros((64, 96, 3), dtype=np.uint8))
    for size in warm_up_sizes(settings.max_batch_size):
        for _ in range(2):
            predictor([blank] * size, defaults)
    if multiprocess_mode():
        ProcessSeries("engine").start()
    engine = Engine(predictor, settings.max_batch_size)
    listener = Listener(args.socket, family="AF_UNIX", authkey=key)
    log.info(
        "engine ready: %s version %s on %s (%s runtime, %s) in %.1f s, socket %s",
        predictor.config.name,
        weights.version,
        predictor.device,
        predictor.runtime,
        predictor.backend,
        time.perf_counter() - start,
        args.socket,
    )
    engine.serve(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus metrics, one registry per app so several apps (tests) never share counters.

Besides the service's own series: the process's (``process_*``: CPU seconds, resident and virtual
memory, open file descriptors, start time; prometheus-client's process collector, Linux only) and
``detector_model_info``, a constant 1 whose labels name the model being served.

Under the launcher's fronts (``python -m app`` with ``DETECTOR_FRONTS`` > 0) every process writes
its series to ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, set up by the
launcher) and ``/metrics``, whichever front answers it, reads them all: counters and histograms
summed over the fronts, the queue depth summed over the live ones, the engine's batches
(``detector_engine_*``), and the process series per process as ``detector_process_*{pid=...}``
(each process refreshes its own every few seconds).
"""

from __future__ import annotations

import os
import threading
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
PROCESS_REFRESH_SECONDS = 5.0


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


class ProcessSeries:
    """This process's ``process_*`` figures as ``detector_process_*`` gauges with a ``pid`` label
    (multiprocess mode ``all``), refreshed by a daemon thread: what ``ProcessCollector`` gives one
    process, for each of the fronts and the engine."""

    def __init__(self, role: str) -> None:
        self._source = ProcessCollector(registry=None)
        self._gauges: dict[str, Gauge] = {}
        self._role = role

    def refresh(self) -> None:
        for family in self._source.collect():
            for sample in family.samples:
                name = "detector_" + sample.name
                if name not in self._gauges:
                    self._gauges[name] = Gauge(
                        name, f"{family.documentation} (per process)", ["role"], multiprocess_mode="all"
                    )
                self._gauges[name].labels(role=self._role).set(sample.value)

    def start(self) -> None:
        def loop() -> None:
            while True:
                self.refresh()
                time.sleep(PROCESS_REFRESH_SECONDS)

        threading.Thread(target=loop, name="process-series", daemon=True).start()


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        if self.multiprocess:
            ProcessSeries("front").start()
        else:
            ProcessCollector(registry=self.registry)
        self.model_info = Gauge(
            "detector_model_info",
            "the model being served (always 1; its labels say which)",
            ["name", "version", "backend", "precision", "input_size", "classes"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.requests = Counter(
            "detector_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "detector_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.images = Counter("detector_images", "images detected on", registry=self.registry)
        self.detections = Counter(
            "detector_detections", "detections returned, per class", ["class_name"], registry=self.registry
        )
        self.client_errors = Counter(
            "detector_client_errors",
            "requests answered with a client error (4xx) or a 503 by the service, by status",
            ["status"],
            registry=self.registry,
        )
        self.decode_failures = Counter(
            "detector_decode_failures",
            "uploads rejected while decoding, by status",
            ["status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "detector_batch_size",
            "images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "detector_queue_depth",
            "images waiting for a forward pass",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.inference_seconds = Histogram(
            "detector_inference_seconds",
            "seconds per batch: preprocess, forward, post-process",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.batch_failures = Counter(
            "detector_batch_failures", "batches that raised (their requests got 503)", registry=self.registry
        )
        self.rejected = Counter(
            "detector_overload_rejections",
            "requests refused with 503 because the queue was full",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: this app's registry, or every process's series."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)

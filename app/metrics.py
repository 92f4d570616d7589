"""Prometheus metrics, one registry per app so several apps (tests) never share counters.

Besides the service's own series: the process's (``process_*``: CPU seconds, resident and virtual
memory, open file descriptors, start time; prometheus-client's process collector, Linux only) and
``detector_model_info``, a constant 1 whose labels name the model being served.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.model_info = Gauge(
            "detector_model_info",
            "the model being served (always 1; its labels say which)",
            ["name", "version", "backend", "precision", "input_size", "classes"],
            registry=self.registry,
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
            "detector_queue_depth", "images waiting for a forward pass", registry=self.registry
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

"""Loading the model in the background at start-up: predictor, decode pool, batcher, warm-up.

``/healthz`` answers at once and ``/readyz`` says ``loading`` meanwhile; on success the service
turns ready, on failure ``failed`` with the reason (never the host's path).
"""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import FastAPI

from app.imaging.decode_pool import DecodeLimits, DecodePool
from app.serving.batching import DynamicBatcher
from app.serving.service import DetectorService
from app.serving.state import Lifecycle
from app.settings import Settings
from model.backends import CPU_RUNTIMES
from model.card import Described, WeightsError, read_card
from model.config import DetectParams
from model.runtime import ServingPredictor, open_predictor, resolve_runtime

# What the CPU's fit (Pillow's, both runtimes) copies of a full image, 4 bytes a pixel, beyond what
# the decode costs of app.imaging.decoding count.
ARRAY_FIT_BYTES_PER_PIXEL = 4

log = logging.getLogger("app")


async def load_service(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    readiness: Lifecycle = app.state.readiness
    if "DETECTOR_DECODE_PIXEL_BUDGET" in os.environ:
        log.warning(
            "DETECTOR_DECODE_PIXEL_BUDGET is no longer read; set DETECTOR_DECODE_BUDGET_BYTES "
            "(decoded bytes, default 1 GiB; about 13 bytes per pixel of the old budget)"
        )
    try:
        runtime = "numpy" if settings.engine_socket else resolve_runtime(settings.runtime)
        if settings.device_decode and settings.engine_socket:
            raise ValueError(
                "DETECTOR_DEVICE_DECODE is not built for the fronts (they would hand the engine the "
                "JPEG bytes); serve it with DETECTOR_FRONTS=0"
            )
        if settings.device_decode and runtime == "numpy":
            raise ValueError(
                "DETECTOR_DEVICE_DECODE decodes JPEGs with torchvision on the inference device, which "
                "the numpy runtime has not; unset it (or use the GPU image)"
            )
        predictor: ServingPredictor
        weights: Described
        if settings.engine_socket:  # a front of the launcher: the engine process runs the network
            predictor, weights = await asyncio.to_thread(_remote, settings, readiness)
        else:
            predictor, weights = await asyncio.to_thread(open_served_predictor, settings)
        batcher = DynamicBatcher(
            predictor,
            app.state.metrics,
            settings.max_batch_size,
            settings.batch_timeout_ms / 1000.0,
            settings.max_queue_images,
            settings.batch_latency_budget_ms / 1000.0,
        )
        limits = DecodeLimits(
            settings.max_image_pixels, settings.max_request_pixels, settings.decode_timeout_seconds
        )
        decoder = DecodePool(
            limits,
            settings.decode_budget_bytes,
            settings.decode_threads,
            predictor.fit,
            ARRAY_FIT_BYTES_PER_PIXEL if str(predictor.device) == "cpu" else 0,
            turbo=runtime == "torch",
            reduce_for=predictor.config.input_size,
        )
        service = DetectorService(predictor, weights, batcher, decoder)
        await asyncio.to_thread(service.warm_up, settings.device_decode)
        batcher.start()
        app.state.service = service
        app.state.metrics.model_info.labels(
            name=predictor.config.name,
            version=weights.version,
            backend=predictor.backend,
            precision=predictor.precision,
            input_size=str(predictor.config.input_size),
            classes=str(len(predictor.config.classes)),
        ).set(1)
        readiness.ready()
        log.info(
            "ready: %s version %s on %s (%s, %s runtime), weights %s",
            predictor.config.name,
            weights.version,
            predictor.device,
            service.dtype,
            predictor.runtime,
            settings.weights,
        )
    except (WeightsError, ValueError, OSError, RuntimeError, EOFError) as exc:
        log.error("model failed to load: %s", exc)
        # /readyz is public: name the file relative to the setting, not the host's path.
        readiness.fail(str(exc).replace(str(settings.weights), "$DETECTOR_WEIGHTS"))


def open_served_predictor(settings: Settings) -> tuple[ServingPredictor, Described]:
    """The predictor the settings describe (runtime, device, backend, thresholds, calibration,
    input size, threads): what one process serves, and what the engine process runs."""
    runtime = resolve_runtime(settings.runtime)
    if runtime == "torch" and settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    defaults = DetectParams(
        settings.score_threshold, settings.iou_threshold, settings.max_detections, flip=settings.flip
    )
    predictor, weights = open_predictor(
        settings.weights,
        settings.device,
        settings.backend,
        defaults,
        runtime,
        settings.torch_threads,
        settings.calibrated_scores,
        settings.input_size or None,
    )
    if runtime == "torch" and predictor.backend in CPU_RUNTIMES:
        import torch

        # ONNX Runtime / OpenVINO took the threads for the network; torch is left the per-image
        # letterbox and post-processing, which cost half the CPU time on one thread as on two
        # (measured).
        torch.set_num_threads(1)
    return predictor, weights


def _remote(settings: Settings, readiness: Lifecycle) -> tuple[ServingPredictor, Described]:
    """The engine's predictor seen from this front, and the weights' card (read here: torch-free)."""
    from app.serving.remote import KEY_VARIABLE, RemotePredictor

    key = bytes.fromhex(os.environ[KEY_VARIABLE])
    predictor = RemotePredictor(
        settings.engine_socket, key, settings.max_batch_size, readiness.fail, settings.engine_timeout_seconds
    )
    return predictor, read_card(settings.weights, expected_classes=None)

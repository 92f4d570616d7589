"""A detection request in steps, shared by ``/detect`` and the DeepStack-compatible route:

1. :func:`admitted`: refuse at once (503) when too many requests are in flight or the queue is
   full, else count the request in flight (draining waits for it);
2. :func:`decode_request`: read the body (bounded in bytes and time), split it into image parts
   and form fields (:func:`read_request`), and decode each image fitted to the network
   (:func:`decode_parts`, :mod:`app.imaging.decode_pool`);
3. :func:`predict`: the images through the dynamic batcher;
4. encode the response: :func:`results` (JSON results per image) or :func:`render` (the one image
   with its boxes drawn, off the event loop).

Every step raises :class:`~app.errors.ClientError` for the client's answer; none builds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from torch import Tensor
from torchvision.io import encode_jpeg, encode_png

from app.api.schemas import Box, Detection, ImageResult
from app.errors import ClientError, Unavailable
from app.imaging.decoding import EncodedJpeg, Prepared
from app.imaging.upload import ImagePart, image_parts, read_body
from app.metrics import Metrics
from app.serving.batching import BatchFailed, Overloaded
from app.serving.service import DetectorService, InFlight
from app.settings import Settings
from model.config import DetectParams
from model.draw import draw_detections
from model.postprocess import Detections


@dataclass(frozen=True)
class DecodedRequest:
    parts: list[ImagePart]
    fields: dict[str, list[str]]  # the multipart text fields (DeepStack sends its options so)
    images: list[Prepared | EncodedJpeg]
    decode_ms: float


@dataclass(frozen=True)
class Predicted:
    found: list[Detections]
    inference_ms: float


@contextlib.asynccontextmanager
async def admitted(
    service: DetectorService, settings: Settings, inflight: InFlight, metrics: Metrics
) -> AsyncIterator[None]:
    if inflight.count >= settings.max_inflight_requests:
        metrics.rejected.inc()
        raise Unavailable(f"{inflight.count} requests in progress", settings.retry_after_seconds)
    try:
        service.batcher.check_capacity()
    except Overloaded as exc:
        raise Unavailable("overloaded", settings.retry_after_seconds) from exc
    inflight.enter()
    try:
        yield
    finally:
        inflight.leave()


async def read_request(
    request: Request, service: DetectorService, settings: Settings, single: str | None = None
) -> tuple[list[ImagePart], dict[str, list[str]]]:
    """The body (bounded in bytes and time) split into image parts and text fields. ``single``:
    the 422 message when there is not exactly one image."""
    body = await read_body(request, settings.max_upload_bytes, settings.body_timeout_seconds)
    # Splitting a 20 MB multipart body takes about 20 ms: not on the event loop.
    parts, fields = await asyncio.to_thread(image_parts, request, body, settings.max_images_per_request)
    del body
    if single is not None and len(parts) != 1:
        raise ClientError(422, f"{single}; send exactly one image, not {len(parts)}")
    try:
        service.batcher.check_capacity(len(parts))
    except Overloaded as exc:
        raise Unavailable("overloaded", settings.retry_after_seconds) from exc
    return parts, fields


async def decode_parts(
    service: DetectorService,
    settings: Settings,
    parts: list[ImagePart],
    fields: dict[str, list[str]],
    keep_full: bool = False,
) -> DecodedRequest:
    """Each image decoded and fitted to the network; ``keep_full``: keep the full-resolution
    pixels too (for a drawn answer)."""
    start = time.perf_counter()
    images = await service.decoder.prepare(parts, keep_full, settings.device_decode and not keep_full)
    return DecodedRequest(parts, fields, images, (time.perf_counter() - start) * 1000)


async def decode_request(
    request: Request,
    service: DetectorService,
    settings: Settings,
    *,
    keep_full: bool = False,
    single: str | None = None,
) -> DecodedRequest:
    """:func:`read_request` then :func:`decode_parts`."""
    parts, fields = await read_request(request, service, settings, single)
    return await decode_parts(service, settings, parts, fields, keep_full)


async def predict(
    service: DetectorService, settings: Settings, decoded: DecodedRequest, params: DetectParams
) -> Predicted:
    start = time.perf_counter()
    inputs = [image.fitted if isinstance(image, Prepared) else image for image in decoded.images]
    try:
        found = await service.batcher.submit(inputs, params)
    except Overloaded as exc:
        raise Unavailable("overloaded", settings.retry_after_seconds) from exc
    except BatchFailed as exc:
        raise Unavailable("inference failed for this batch", settings.retry_after_seconds) from exc
    return Predicted(found, (time.perf_counter() - start) * 1000)


def results(
    decoded: DecodedRequest, prediction: Predicted, classes: tuple[str, ...], metrics: Metrics
) -> list[ImageResult]:
    """One result per image, boxes rounded to 0.01 px; counted in the metrics."""
    answer = []
    for part, image, found in zip(decoded.parts, decoded.images, prediction.found, strict=True):
        rounded = [[round(v, 2) for v in box] for box in found.boxes_xyxy.tolist()]
        detections = [
            Detection(
                class_id=int(label),
                class_name=classes[int(label)],
                score=round(float(score), 5),
                box=Box(x_min=x1, y_min=y1, x_max=x2, y_max=y2),
            )
            for (x1, y1, x2, y2), score, label in zip(
                rounded, found.scores.tolist(), found.labels.tolist(), strict=True
            )
            if x1 < x2 and y1 < y2  # a sub-0.01-pixel box would round to nothing
        ]
        for detection in detections:
            metrics.detections.labels(detection.class_name).inc()
        answer.append(
            ImageResult(filename=part.filename, width=image.width, height=image.height, detections=detections)
        )
    metrics.images.inc(len(answer))
    return answer


def _draw_and_encode(image: Tensor, found: Detections, classes: tuple[str, ...], png: bool) -> bytes:
    """PNG at zlib level 1: about ten times as fast as the default level 6 for files a little larger
    (docs/operations.md has the measurement)."""
    drawn = draw_detections(image, found, classes)
    encoded = encode_png(drawn, compression_level=1) if png else encode_jpeg(drawn, quality=90)
    return bytes(encoded.numpy().tobytes())


async def render(
    service: DetectorService, decoded: DecodedRequest, prediction: Predicted, png: bool
) -> bytes:
    """The one image with its boxes drawn, encoded, on the drawing thread."""
    image = decoded.images[0]
    if not isinstance(image, Prepared) or image.full is None:
        raise RuntimeError("render needs the request decoded with keep_full=True")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        service.draw_executor, _draw_and_encode, image.full, prediction.found[0], service.classes, png
    )

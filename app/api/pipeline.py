"""A detection request in steps, shared by ``/detect`` and the DeepStack-compatible route:

1. :func:`read_request`: with an upload slot (:mod:`app.serving.uploads`; 503 at once when none
   is free or the queue is full), read the body (bounded in bytes, time and rate), optionally
   check its first bytes (the DeepStack form key), and split it into image parts and form fields;
2. :func:`admitted`: once the body is in, refuse at once (503) when too many requests are in
   flight, else count the request in flight (draining waits for it);
3. :func:`decode_parts`: decode each image fitted to the network (:mod:`app.imaging.decode_pool`);
   :func:`predict`: the images through the dynamic batcher;
4. encode the response: :func:`results` (JSON results per image) or :func:`render` (the one image
   with its boxes drawn, off the event loop).

Every step raises :class:`~app.errors.ClientError` for the client's answer; none builds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from starlette.requests import Request

from app.errors import ClientError, Unavailable
from app.imaging.decoding import EncodedJpeg, Prepared
from app.imaging.upload import BodyLimits, BodyReader, ImagePart, UploadError, image_parts
from app.metrics import Metrics
from app.serving.batching import BatchFailed, Overloaded
from app.serving.service import DetectorService, InFlight
from app.serving.uploads import Uploads, UploadsFull
from app.settings import Settings
from model.config import DetectParams
from model.draw import draw_on_array
from model.runtime import Found

T = TypeVar("T")


@dataclass(frozen=True)
class DecodedRequest:
    parts: list[ImagePart]
    fields: dict[str, list[str]]  # the multipart text fields (DeepStack sends its options so)
    images: list[Prepared | EncodedJpeg]
    decode_ms: float


@dataclass(frozen=True)
class Predicted:
    found: list[Found]
    inference_ms: float


@contextlib.asynccontextmanager
async def admitted(
    service: DetectorService, settings: Settings, inflight: InFlight, metrics: Metrics
) -> AsyncIterator[None]:
    if inflight.count >= settings.max_inflight_requests:
        metrics.rejected.inc()
        raise Unavailable(f"{inflight.count} requests in progress", settings.retry_after_seconds)
    inflight.enter()
    try:
        yield
    finally:
        inflight.leave()


def _check_queue(service: DetectorService, settings: Settings, images: int = 1) -> None:
    try:
        service.batcher.check_capacity(images)
    except Overloaded as exc:
        raise Unavailable("overloaded", settings.retry_after_seconds) from exc


# Bytes of a body that a prefix check (the DeepStack form key) may read before deciding.
PREFIX_BYTES = 65_536


async def read_request(
    request: Request,
    service: DetectorService,
    settings: Settings,
    uploads: Uploads,
    metrics: Metrics,
    single: str | None = None,
    check_prefix: Callable[[bytes], None] | None = None,
) -> tuple[list[ImagePart], dict[str, list[str]]]:
    """The body split into image parts and text fields, read while holding an upload slot.

    ``single``: the 422 message when there is not exactly one image. ``check_prefix``: called with
    the body's first :data:`PREFIX_BYTES` (or all of a shorter one) before the rest is read; it
    raises to refuse."""
    _check_queue(service, settings)
    client = request.client.host if request.client else "-"
    try:
        uploads.enter(client)
    except UploadsFull as exc:
        metrics.rejected.inc()
        raise Unavailable(str(exc), settings.retry_after_seconds) from exc
    held = 0

    def hold(size: int) -> None:
        nonlocal held
        uploads.hold(size)
        held += size

    try:
        limits = BodyLimits(
            settings.max_upload_bytes,
            settings.body_timeout_seconds,
            settings.min_upload_bytes_per_second,
            settings.upload_grace_seconds,
        )
        reader = BodyReader(request, limits, uploads.abort, hold)
        if check_prefix is not None:
            check_prefix(await reader.read_until(PREFIX_BYTES))
        body = await reader.read_all()
    except UploadsFull as exc:
        metrics.rejected.inc()
        raise Unavailable(str(exc), settings.retry_after_seconds, {"Connection": "close"}) from exc
    finally:
        uploads.leave(client, held)
    # Splitting a 20 MB multipart body takes about 20 ms: not on the event loop.
    parts, fields = await asyncio.to_thread(image_parts, request, body, settings.max_images_per_request)
    del body
    if single is not None and len(parts) != 1:
        raise ClientError(422, f"{single}; send exactly one image, not {len(parts)}")
    _check_queue(service, settings, len(parts))
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


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is read: what comes now is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_gone(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or 499 as soon as the client hangs up: the work is cancelled then (its
    decodes stop, its images leave the batcher's queue) instead of running for nobody."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise UploadError(499, "the client closed the connection before its answer")
    return task.result()


async def detect_parts(
    request: Request,
    service: DetectorService,
    settings: Settings,
    parts: list[ImagePart],
    fields: dict[str, list[str]],
    params: DetectParams,
    keep_full: bool = False,
) -> tuple[DecodedRequest, Predicted]:
    """:func:`decode_parts` then :func:`predict`, given up when the client goes away."""

    async def both() -> tuple[DecodedRequest, Predicted]:
        decoded = await decode_parts(service, settings, parts, fields, keep_full)
        return decoded, await predict(service, settings, decoded, params)

    return await unless_gone(request, both())


def results(
    decoded: DecodedRequest, prediction: Predicted, classes: tuple[str, ...], metrics: Metrics
) -> list[dict[str, Any]]:
    """One result per image, as the JSON of :class:`~app.api.schemas.ImageResult` (plain dicts:
    16 images of 1,000 detections each are 16,000 of them, and pydantic objects cost ten times as
    much), boxes rounded to 0.01 px; counted in the metrics."""
    answer = []
    found_per_class: Counter[int] = Counter()
    for part, image, found in zip(decoded.parts, decoded.images, prediction.found, strict=True):
        rounded = np.asarray(found.boxes_xyxy, dtype=np.float64).round(2).tolist()
        detections = [
            {
                "class_id": label,
                "class_name": classes[label],
                "score": round(score, 5),
                "box": {"x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2},
            }
            for (x1, y1, x2, y2), score, label in zip(
                rounded, found.scores.tolist(), found.labels.tolist(), strict=True
            )
            if x1 < x2 and y1 < y2  # a sub-0.01-pixel box would round to nothing
        ]
        found_per_class.update(detection["class_id"] for detection in detections)
        answer.append(
            {
                "filename": part.filename,
                "width": image.width,
                "height": image.height,
                "detections": detections,
            }
        )
    for label, count in found_per_class.items():
        metrics.detections.labels(classes[label]).inc(count)
    metrics.images.inc(len(answer))
    return answer


def encode_answer(
    head: dict[str, Any],
    decoded: DecodedRequest,
    prediction: Predicted,
    classes: tuple[str, ...],
    metrics: Metrics,
    start: float,
) -> bytes:
    """The /detect JSON answer: ``head`` (model, params) with the results and the timing."""
    answer = {**head, "results": results(decoded, prediction, classes, metrics)}
    answer["timing_ms"] = {
        "decode": round(decoded.decode_ms, 2),
        "inference": round(prediction.inference_ms, 2),
        "total": round((time.perf_counter() - start) * 1000, 2),
    }
    return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()


def _draw_and_encode(image: np.ndarray, found: Found, classes: tuple[str, ...], png: bool) -> bytes:
    """PNG at zlib level 1: about ten times as fast as the default level 6 for files a little larger
    (docs/operations.md has the measurement)."""
    drawn = draw_on_array(image, found.boxes_xyxy, found.scores, found.labels, classes)
    encoded = io.BytesIO()
    if png:
        drawn.save(encoded, "PNG", compress_level=1)
    else:
        drawn.save(encoded, "JPEG", quality=90)
    return encoded.getvalue()


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

"""HTTP routes: /detect, /healthz, /readyz, /model, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from torch import Tensor
from torchvision.io import encode_jpeg, encode_png

from app.batching import BatchFailed, Overloaded
from app.decoding import DecodeError, EncodedJpeg, Prepared
from app.deps import (
    InFlightDep,
    LoadedServiceDep,
    MetricsDep,
    ReadinessDep,
    ServiceDep,
    SettingsDep,
    require_api_key,
)
from app.metrics import Metrics
from app.schemas import (
    Box,
    Detection,
    DetectResponse,
    ErrorResponse,
    Health,
    ImageResult,
    ModelCard,
    ModelRef,
    Params,
    Readiness,
    Timing,
)
from app.service import DetectorService
from app.settings import Settings
from app.upload import ImagePart, UploadError, image_parts, read_body
from model.config import DetectParams
from model.draw import draw_detections
from model.postprocess import Detections

PAGE = Path(__file__).resolve().parent / "static" / "index.html"

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "no image part; empty, truncated or undecodable data",
        401: "missing or wrong API key (only when one is configured)",
        413: "body, pixel or image-count limit exceeded",
        415: "an image type the service does not decode",
        422: "a bad query value or an unknown class name",
        503: "not ready, draining or overloaded (see Retry-After)",
    }.items()
}

IMAGE_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["image"],
                }
            },
            **{
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("image/jpeg", "image/png", "image/webp", "image/bmp")
            },
        },
    }
}


def parse_classes(
    value: str | None, classes: tuple[str, ...]
) -> tuple[list[str] | None, frozenset[int] | None]:
    if value is None or not value.strip():
        return None, None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise HTTPException(
            422, f"'classes' names no class ({value!r}); omit it to keep every class, or name some"
        )
    unknown = [name for name in names if name not in classes]
    if unknown:
        raise HTTPException(
            422, f"unknown class name(s) {unknown} in 'classes'; valid names: {', '.join(classes)}"
        )
    names = list(dict.fromkeys(names))
    return names, frozenset(classes.index(name) for name in names)


def overloaded(retry_after: int, reason: str) -> HTTPException:
    return HTTPException(503, f"{reason}; retry after {retry_after} s", {"Retry-After": str(retry_after)})


def to_result(
    part: ImagePart, image: Prepared | EncodedJpeg, found: Detections, classes: tuple[str, ...]
) -> ImageResult:
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
    return ImageResult(filename=part.filename, width=image.width, height=image.height, detections=detections)


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses={
        **ERRORS,
        200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "JSON, or the drawn image"},
    },
    dependencies=[Depends(require_api_key)],
    openapi_extra=IMAGE_BODY_DOC,
    summary="Detect VOC objects in one or more images",
)
async def detect(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    inflight: InFlightDep,
    score_threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    iou_threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    max_detections: Annotated[int | None, Query(ge=1, le=1000)] = None,
    classes: Annotated[str | None, Query(description="comma-separated class names to keep")] = None,
    output_format: Annotated[
        Literal["json", "image", "jpeg", "png"],
        Query(
            alias="format",
            description="json (default); image or jpeg: the drawn image as JPEG; png: as PNG",
        ),
    ] = "json",
) -> Any:
    """Multipart with one or more file parts named ``image``, or a raw image body (one image)."""
    start = time.perf_counter()
    class_names, class_ids = parse_classes(classes, service.classes)
    params = DetectParams(
        score_threshold=settings.score_threshold if score_threshold is None else score_threshold,
        iou_threshold=settings.iou_threshold if iou_threshold is None else iou_threshold,
        max_detections=settings.max_detections if max_detections is None else max_detections,
        class_ids=class_ids,
    )
    drawn = output_format != "json"
    if inflight.count >= settings.max_inflight_requests:
        metrics.rejected.inc()
        raise overloaded(settings.retry_after_seconds, f"{inflight.count} requests in progress")
    inflight.enter()
    try:
        try:
            service.batcher.check_capacity()
            body = await read_body(request, settings.max_upload_bytes, settings.body_timeout_seconds)
            # Splitting a 20 MB multipart body takes about 20 ms: not on the event loop.
            parts = await asyncio.to_thread(image_parts, request, body, settings.max_images_per_request)
            service.batcher.check_capacity(len(parts))
        except Overloaded as exc:
            raise overloaded(settings.retry_after_seconds, "overloaded") from exc
        except UploadError as exc:
            raise HTTPException(exc.status, exc.detail, exc.headers) from exc
        del body
        if drawn and len(parts) != 1:
            raise HTTPException(
                422,
                f"format={output_format} returns one drawn image; send exactly one image, not {len(parts)}",
            )
        # A drawn answer keeps a full-resolution image until it is encoded: one at a time.
        async with service.draw_lane if drawn else contextlib.nullcontext():
            images, found, decode_ms, inference_ms = await _decode_and_detect(
                service, settings, metrics, parts, params, drawn
            )
            if drawn:
                full = images[0].full if isinstance(images[0], Prepared) else None
                assert full is not None
                loop = asyncio.get_running_loop()
                encoded = await loop.run_in_executor(
                    service.draw_executor, render, full, found[0], service.classes, output_format
                )
    finally:
        inflight.leave()
    results = [to_result(p, i, f, service.classes) for p, i, f in zip(parts, images, found, strict=True)]
    metrics.images.inc(len(results))
    for result in results:
        for detection in result.detections:
            metrics.detections.labels(detection.class_name).inc()
    if drawn:
        return Response(
            encoded,
            media_type="image/png" if output_format == "png" else "image/jpeg",
            headers={"X-Detections": str(len(found[0]))},
        )
    return DetectResponse(
        model=ModelRef(name=service.predictor.config.name, version=service.weights.version),
        params=Params(
            score_threshold=params.score_threshold,
            iou_threshold=params.iou_threshold,
            max_detections=params.max_detections,
            classes=class_names,
        ),
        results=results,
        timing_ms=Timing(
            decode=round(decode_ms, 2),
            inference=round(inference_ms, 2),
            total=round((time.perf_counter() - start) * 1000, 2),
        ),
    )


async def _decode_and_detect(
    service: DetectorService,
    settings: Settings,
    metrics: Metrics,
    parts: list[ImagePart],
    params: DetectParams,
    keep_full: bool,
) -> tuple[list[Prepared | EncodedJpeg], list[Detections], float, float]:
    decode_start = time.perf_counter()
    try:
        images = await service.decoder.prepare(parts, keep_full, settings.device_decode)
    except DecodeError as exc:
        metrics.decode_failures.labels(str(exc.status)).inc()
        raise HTTPException(exc.status, exc.detail) from exc
    decode_ms = (time.perf_counter() - decode_start) * 1000
    infer_start = time.perf_counter()
    try:
        found = await service.batcher.submit(
            [image.fitted if isinstance(image, Prepared) else image for image in images], params
        )
    except DecodeError as exc:  # a JPEG left to the batcher that failed to decode there
        metrics.decode_failures.labels(str(exc.status)).inc()
        raise HTTPException(exc.status, exc.detail) from exc
    except Overloaded as exc:
        raise overloaded(settings.retry_after_seconds, "overloaded") from exc
    except BatchFailed as exc:
        raise overloaded(settings.retry_after_seconds, "inference failed for this batch") from exc
    return images, found, decode_ms, (time.perf_counter() - infer_start) * 1000


def render(image: Tensor, found: Detections, classes: tuple[str, ...], output_format: str) -> bytes:
    """The drawn answer's bytes: boxes drawn on the full image, encoded as PNG or JPEG.

    PNG at zlib level 1: a 40-megapixel image in 2.3 s instead of 21.5 s at the default 6, for
    files 7-15% larger (measured here: the README's dog photo 685 -> 730 KB)."""
    drawn = draw_detections(image, found, classes)
    if output_format == "png":
        encoded = encode_png(drawn, compression_level=1)
    else:
        encoded = encode_jpeg(drawn, quality=90)
    return bytes(encoded.numpy().tobytes())


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """A small page to try the model in a browser; everything it loads comes from this service."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "loading, draining or failed"}},
    summary="Readiness: weights loaded and warmed up",
)
async def readyz(readiness: ReadinessDep, settings: SettingsDep) -> Response:
    body = Readiness(status=readiness.phase.value, reason=readiness.reason)
    if readiness.is_ready:
        return JSONResponse(body.model_dump(exclude_none=True))
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=503,
        headers={"Retry-After": str(settings.retry_after_seconds)},
    )


@router.get(
    "/model", response_model=ModelCard, responses={503: {"model": ErrorResponse}}, summary="The model card"
)
async def model_card(service: LoadedServiceDep, settings: SettingsDep) -> ModelCard:
    card = service.weights.card
    return ModelCard(
        name=service.predictor.config.name,
        version=service.weights.version,
        sha256=service.weights.sha256,
        classes=list(service.classes),
        input_size=service.predictor.config.input_size,
        device=str(service.predictor.device),
        dtype=service.dtype,
        backend=service.predictor.backend,
        default_thresholds={
            "score_threshold": settings.score_threshold,
            "iou_threshold": settings.iou_threshold,
            "max_detections": settings.max_detections,
        },
        training=card.get("card", {}),
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics_text(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

"""HTTP routes: /detect, /healthz, /readyz, /model, /metrics and the page (the DeepStack-compatible
route is in :mod:`app.api.deepstack`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import (
    InFlightDep,
    LoadedServiceDep,
    MetricsDep,
    ReadinessDep,
    ServiceDep,
    SettingsDep,
    UploadsDep,
    require_api_key,
)
from app.api.pipeline import admitted, detect_parts, encode_answer, read_request, render, results
from app.api.schemas import (
    DetectResponse,
    ErrorResponse,
    Health,
    Limits,
    ModelCard,
    Readiness,
    error_responses,
)
from app.errors import ClientError
from app.metrics import Metrics
from app.serving.service import DetectorService, InFlight
from app.serving.uploads import Uploads
from app.settings import Settings
from model.config import DetectParams

PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"

router = APIRouter()

ERRORS = error_responses(
    ErrorResponse,
    {
        400: "no image part; empty, truncated, undecodable or too-slow-to-decode data; a malformed body",
        401: "missing or wrong API key (only when one is configured)",
        408: "the body did not arrive in time",
        413: "body, pixel (per image or request) or image-count limit exceeded",
        415: "an image type the service does not decode",
        422: "a bad query value, an unknown class name or an empty class list",
        503: "not ready, draining or overloaded (see Retry-After)",
    },
)

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
                # application/octet-stream: the bytes are told by their magic, as for every body;
                # it is the raw body type that generated clients (openapi-python-client) can send.
                for media in (
                    "image/jpeg",
                    "image/png",
                    "image/webp",
                    "image/bmp",
                    "application/octet-stream",
                )
            },
        },
    }
}


# A drawn answer: the one image, its boxes drawn, as JPEG or PNG.
DRAWN = {media: {"schema": {"type": "string", "format": "binary"}} for media in ("image/jpeg", "image/png")}

# The query parameters /detect and /detect/drawn share; unset: the service's defaults.
ScoreThreshold = Annotated[float | None, Query(ge=0.0, le=1.0)]
IouThreshold = Annotated[float | None, Query(ge=0.0, le=1.0)]
MaxDetections = Annotated[int | None, Query(ge=1, le=1000)]
ClassNames = Annotated[str | None, Query(description="comma-separated class names to keep")]
Flip = Annotated[
    bool | None,
    Query(description="flip test-time augmentation: the image and its mirror image (twice the cost)"),
]


def parse_classes(
    value: str | None, classes: tuple[str, ...]
) -> tuple[list[str] | None, frozenset[int] | None]:
    if value is None or not value.strip():
        return None, None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ClientError(
            422, f"'classes' names no class ({value!r}); omit it to keep every class, or name some"
        )
    unknown = [name for name in names if name not in classes]
    if unknown:
        raise ClientError(
            422, f"unknown class name(s) {unknown} in 'classes'; valid names: {', '.join(classes)}"
        )
    names = list(dict.fromkeys(names))
    return names, frozenset(classes.index(name) for name in names)


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses={
        **ERRORS,
        200: {"content": DRAWN, "description": "JSON, or the drawn image with format=image|jpeg|png"},
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
    uploads: UploadsDep,
    score_threshold: ScoreThreshold = None,
    iou_threshold: IouThreshold = None,
    max_detections: MaxDetections = None,
    classes: ClassNames = None,
    flip: Flip = None,
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
    params = service.defaults.with_overrides(score_threshold, iou_threshold, max_detections, class_ids, flip)
    if output_format != "json":
        return await detect_drawn(
            request, service, settings, metrics, inflight, uploads, params, output_format
        )
    parts, fields = await read_request(request, service, settings, uploads, metrics)
    async with admitted(service, settings, inflight, metrics):
        decoded, prediction = await detect_parts(request, service, settings, parts, fields, params)
    head = {
        "model": {"name": service.predictor.config.name, "version": service.weights.version},
        "params": {
            "score_threshold": params.score_threshold,
            "iou_threshold": params.iou_threshold,
            "max_detections": params.max_detections,
            "classes": class_names,
            "flip": params.flip,
        },
    }
    # Built and encoded off the event loop: an answer can hold 16,000 detections (docs/operations.md).
    encoded = await asyncio.to_thread(
        encode_answer, head, decoded, prediction, service.classes, metrics, start
    )
    return Response(encoded, media_type="application/json")


async def detect_drawn(
    request: Request,
    service: DetectorService,
    settings: Settings,
    metrics: Metrics,
    inflight: InFlight,
    uploads: Uploads,
    params: DetectParams,
    output_format: str,
) -> Response:
    """``format=image|jpeg|png``: the one image with its boxes drawn. It holds a full-resolution
    image until encoded, so drawn answers are made one at a time (the draw lane)."""
    single = f"format={output_format} returns one drawn image"
    parts, fields = await read_request(request, service, settings, uploads, metrics, single)
    async with admitted(service, settings, inflight, metrics), service.draw_lane:
        decoded, prediction = await detect_parts(request, service, settings, parts, fields, params, True)
        results(decoded, prediction, service.classes, metrics)  # counted like JSON answers
        encoded = await render(service, decoded, prediction, png=output_format == "png")
    return Response(
        encoded,
        media_type="image/png" if output_format == "png" else "image/jpeg",
        headers={"X-Detections": str(len(prediction.found[0]))},
    )


@router.post(
    "/detect/drawn",
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": DRAWN, "description": "the one image with its boxes drawn; X-Detections: how many"},
    },
    dependencies=[Depends(require_api_key)],
    openapi_extra=IMAGE_BODY_DOC,
    summary="Detect in one image and answer it drawn, as JPEG or PNG (what /detect?format= gives)",
)
async def detect_image(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    inflight: InFlightDep,
    uploads: UploadsDep,
    score_threshold: ScoreThreshold = None,
    iou_threshold: IouThreshold = None,
    max_detections: MaxDetections = None,
    classes: ClassNames = None,
    flip: Flip = None,
    output_format: Annotated[Literal["jpeg", "png"], Query(alias="format")] = "jpeg",
) -> Response:
    """``/detect?format=jpeg|png`` as an operation of its own, whose only answer is an image: a
    generated client, which reads one kind of answer per operation, decodes it as binary."""
    _, class_ids = parse_classes(classes, service.classes)
    params = service.defaults.with_overrides(score_threshold, iou_threshold, max_detections, class_ids, flip)
    return await detect_drawn(request, service, settings, metrics, inflight, uploads, params, output_format)


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
        precision=service.predictor.precision,
        runtime=service.predictor.runtime,
        calibrated=service.predictor.calibration is not None,
        default_thresholds={
            "score_threshold": settings.score_threshold,
            "iou_threshold": settings.iou_threshold,
            "max_detections": settings.max_detections,
        },
        limits=Limits(
            max_images_per_request=settings.max_images_per_request,
            max_upload_bytes=settings.max_upload_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_request_pixels=settings.max_request_pixels,
        ),
        training=card.get("card", {}),
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics_text(metrics: MetricsDep) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

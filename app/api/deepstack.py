"""``POST /v1/vision/detection``: the DeepStack / CodeProject.AI object-detection API.

Frigate's ``deepstack`` detector, Blue Iris, Agent DVR and Home Assistant's DeepStack
integrations call it: a multipart ``image`` file, optional form fields ``min_confidence`` and
``api_key``; the answer ``{"success": true, "predictions": [{"label", "confidence", "x_min",
"y_min", "x_max", "y_max"}, ...]}`` with integer pixel boxes, highest confidence first, and the
names those tools use for the classes VOC names differently, at most
``DETECTOR_DEEPSTACK_MAX_PREDICTIONS`` of them (20: Frigate's array). CodeProject.AI's fields
(``message``, ``moduleId``, ``moduleName``, ``code``, ``command``, ``requestId``,
``inferenceDevice``, ``timestampUTC``) come with every answer, errors included (:mod:`app.api.handlers`
gives errors that API's shape). ``POST /v1/vision/custom/list`` names the one model served. The same
limits, batching, metrics and key as ``/detect``; the key may also come as the ``api_key`` form
field, as those clients send it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.deps import (
    BearerKey,
    HeaderKey,
    InFlightDep,
    MetricsDep,
    ServiceDep,
    SettingsDep,
    UploadsDep,
    key_matches,
    offered_keys,
)
from app.api.pipeline import PREFIX_BYTES, admitted, detect_parts, read_request, results
from app.api.schemas import error_responses
from app.errors import ClientError
from app.imaging.multipart import leading_fields
from app.logs import request_id
from model.config import VOC_CLASSES

router = APIRouter(prefix="/v1/vision", tags=["DeepStack-compatible"])

# VOC class names as the COCO-trained detectors these clients were built for name them.
DEEPSTACK_LABELS = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}


class Prediction(BaseModel):
    label: str
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    x_min: int
    y_min: int
    x_max: int
    y_max: int


MODULE_ID = "voc-detector"
MODULE_NAME = "VOC object detector"


class CodeProjectFields(BaseModel):
    """What CodeProject.AI's server adds to every module answer, so its clients find them."""

    moduleId: str = MODULE_ID
    moduleName: str = MODULE_NAME
    code: int = 200
    command: str = "detect"
    requestId: str = ""
    inferenceDevice: str = "CPU"
    timestampUTC: str = Field("", description="RFC 1123 time of the answer, as CodeProject.AI gives it")


def codeproject_fields(command: str, code: int, device: str) -> dict[str, object]:
    return {
        "moduleId": MODULE_ID,
        "moduleName": MODULE_NAME,
        "code": code,
        "command": command,
        "requestId": request_id.get() or "",
        "inferenceDevice": "GPU" if device.startswith("cuda") else "CPU",
        "timestampUTC": formatdate(usegmt=True),
    }


class DeepStackResponse(CodeProjectFields):
    success: bool
    message: str
    predictions: list[Prediction]
    count: int
    duration: float = Field(description="seconds, as DeepStack reports it")
    inferenceMs: int
    processMs: int


class DeepStackError(CodeProjectFields):
    success: bool
    error: str
    request_id: str | None = None


class CustomModels(CodeProjectFields):
    success: bool
    models: list[str]
    message: str


ERRORS = error_responses(
    DeepStackError,
    {
        400: "no image; undecodable data; a bad min_confidence",
        401: "missing or wrong API key (only when one is configured)",
        408: "the body did not arrive in time",
        413: "body or pixel limit exceeded",
        415: "an image type the service does not decode",
        422: "not exactly one image",
        503: "not ready, draining or overloaded (see Retry-After)",
    },
)


def form_field(fields: dict[str, list[str]], name: str) -> str:
    """A text field's value ("" when absent); given more than once it is ambiguous: 400."""
    values = fields.get(name, [])
    if len(values) > 1:
        raise ClientError(400, f"form field {name!r} given {len(values)} times; send it once")
    return values[0] if values else ""


def form_key_check(content_type: str, expected: str) -> Callable[[bytes], None]:
    """The check of the body's first bytes when no header carried the key: the ``api_key`` field
    must come before the image (as ``requests``' ``data=`` puts it) within :data:`PREFIX_BYTES`,
    so that a request without the key is refused before its image is read."""

    def check(prefix: bytes) -> None:
        fields = leading_fields(prefix, content_type)
        if not key_matches([form_field(fields, "api_key").strip()], expected):
            raise ClientError(
                401,
                "missing or wrong API key; send the form field api_key=<key> before the image (within "
                f"the body's first {PREFIX_BYTES // 1024} KiB), or a header 'X-API-Key: <key>' or "
                "'Authorization: Bearer <key>'",
            )

    return check


def min_confidence(fields: dict[str, list[str]], default: float) -> float:
    text = form_field(fields, "min_confidence").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ClientError(400, f"min_confidence must be a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ClientError(400, f"min_confidence must be a number in [0, 1], got {text!r}")
    return value


FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
                        "api_key": {"type": "string"},
                    },
                    "required": ["image"],
                }
            }
        },
    }
}


@router.post(
    "/detection",
    response_model=DeepStackResponse,
    openapi_extra=FORM_DOC,
    responses=ERRORS,
    summary="DeepStack / CodeProject.AI compatible detection (multipart image, min_confidence, api_key)",
)
async def detection(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    inflight: InFlightDep,
    uploads: UploadsDep,
    header_key: HeaderKey,
    bearer: BearerKey,
) -> DeepStackResponse:
    start = time.perf_counter()
    check = None
    if settings.api_key is not None:
        expected = settings.api_key.get_secret_value().strip()
        if not key_matches(offered_keys(header_key, bearer), expected):  # headers first, then the form
            check = form_key_check(request.headers.get("content-type", ""), expected)
    parts, fields = await read_request(
        request, service, settings, uploads, metrics, "this route takes one image", check
    )
    form_field(fields, "api_key")  # given twice: ambiguous, 400
    threshold = min_confidence(fields, settings.score_threshold)
    params = service.defaults.with_overrides(score_threshold=threshold)
    async with admitted(service, settings, inflight, metrics):
        decoded, prediction = await detect_parts(request, service, settings, parts, fields, params)
    (result,) = results(decoded, prediction, service.classes, metrics)
    # Only the VOC names are renamed; a model of one's own classes answers its card's names.
    renamed = DEEPSTACK_LABELS if service.classes == VOC_CLASSES else {}
    capped = result["detections"][: settings.deepstack_max_predictions]  # sorted by score: the best kept
    predictions = [
        Prediction(
            label=renamed.get(d["class_name"], d["class_name"]),
            confidence=d["score"],
            x_min=math.floor(d["box"]["x_min"]),
            y_min=math.floor(d["box"]["y_min"]),
            x_max=math.ceil(d["box"]["x_max"]),
            y_max=math.ceil(d["box"]["y_max"]),
        )
        for d in capped
    ]
    elapsed = time.perf_counter() - start
    found = (
        f"Found {len(predictions)} object{'s' * (len(predictions) != 1)}"
        if predictions
        else "No objects found"
    )
    return DeepStackResponse(
        **codeproject_fields("detect", 200, str(service.predictor.device)),  # type: ignore[arg-type]
        success=True,
        message=found,
        predictions=predictions,
        count=len(predictions),
        duration=round(elapsed, 4),
        inferenceMs=round(prediction.inference_ms),
        processMs=round(elapsed * 1000),
    )


@router.post(
    "/custom/list",
    response_model=CustomModels,
    operation_id="custom_list",
    summary="CodeProject.AI's list of custom models: the one model this service serves",
)
async def custom_list(service: ServiceDep) -> CustomModels:
    name = service.predictor.config.name
    return CustomModels(
        **codeproject_fields("list-custom", 200, str(service.predictor.device)),  # type: ignore[arg-type]
        success=True,
        models=[name],
        message=f"1 model: {name} ({', '.join(service.classes)})",
    )

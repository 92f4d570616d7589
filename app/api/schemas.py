"""Response bodies of the HTTP API (pydantic, so ``/docs`` shows them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Box(BaseModel):
    """Pixels of the original image after EXIF orientation: ``0 <= x_min < x_max <= width``."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float


class Detection(BaseModel):
    class_id: int = Field(ge=0)
    class_name: str
    score: float = Field(ge=0.0, le=1.0)
    box: Box


class ImageResult(BaseModel):
    filename: str | None
    width: int
    height: int
    detections: list[Detection] = Field(description="sorted by score, highest first")


class ModelRef(BaseModel):
    name: str
    version: str = Field(description="a prefix of the weights' sha256")


class Params(BaseModel):
    score_threshold: float
    iou_threshold: float
    max_detections: int
    classes: list[str] | None
    flip: bool = Field(False, description="flip test-time augmentation was applied")


class Timing(BaseModel):
    decode: float
    inference: float
    total: float


class DetectResponse(BaseModel):
    model: ModelRef
    params: Params
    results: list[ImageResult] = Field(description="one per image part, in request order")
    timing_ms: Timing


def error_responses(model: type[BaseModel], texts: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route's error statuses, each with its body model (and the 503s
    with their ``Retry-After`` header)."""
    retry_after = {
        "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
    }
    return {
        code: {"model": model, "description": text, **({"headers": retry_after} if code == 503 else {})}
        for code, text in texts.items()
    }


class ErrorResponse(BaseModel):
    detail: str
    request_id: str | None = Field(None, description="the X-Request-ID of the request")


class Limits(BaseModel):
    """What one request may carry; clients size their requests by it."""

    max_images_per_request: int
    max_upload_bytes: int
    max_image_pixels: int
    max_request_pixels: int


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["loading", "ready", "draining", "failed"]
    reason: str | None = None


class ModelCard(BaseModel):
    name: str
    version: str
    sha256: str
    classes: list[str]
    input_size: int
    device: str
    dtype: str
    backend: str
    precision: str = Field(description="what the network computes in: fp32, bf16, fp16, int8 (none: null)")
    calibrated: bool = Field(
        False,
        description="scores through the card's calibration: a score of 0.4 is right about 40% of the time",
    )
    runtime: str = Field(
        "torch", description="the prediction path: torch, or numpy (the int8 network without torch)"
    )
    default_thresholds: dict[str, float | int]
    limits: Limits
    training: dict[str, Any]

"""The service's answers as typed objects, with the box formats people move detections in."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

CSV_HEADER = ("path", "width", "height", "class_name", "score", "x_min", "y_min", "x_max", "y_max", "error")


class Box(BaseModel):
    """Pixels of the image as a viewer shows it (after EXIF orientation)."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x_max < self.x_min or self.y_max < self.y_min:
            raise ValueError(f"box corners out of order: {self.xyxy}")
        return self

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x_min, self.y_min, self.x_max, self.y_max)

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        """COCO's ``[x, y, width, height]`` (top-left corner and size)."""
        return (self.x_min, self.y_min, self.x_max - self.x_min, self.y_max - self.y_min)

    def normalized(self, width: int, height: int) -> tuple[float, float, float, float]:
        """xyxy divided by the image size: every value in [0, 1]."""
        return (self.x_min / width, self.y_min / height, self.x_max / width, self.y_max / height)


class Detection(BaseModel):
    class_id: int
    class_name: str
    score: float
    box: Box

    @property
    def coco_bbox(self) -> list[float]:
        return [round(v, 2) for v in self.box.xywh]


class ImageResult(BaseModel):
    filename: str | None
    width: int
    height: int
    detections: list[Detection] = Field(default_factory=list)

    def normalized_xyxy(self) -> list[tuple[float, float, float, float]]:
        return [d.box.normalized(self.width, self.height) for d in self.detections]

    def csv_rows(self, path: str) -> list[tuple[Any, ...]]:
        """Rows of :data:`CSV_HEADER`: one per detection, or one with empty class fields when
        there is none (so that every image processed has a row)."""
        if not self.detections:
            return [(path, self.width, self.height, "", "", "", "", "", "", "")]
        return [
            (path, self.width, self.height, d.class_name, d.score, *d.box.xyxy, "") for d in self.detections
        ]

    def coco_annotations(
        self, image_id: int, first_id: int = 1, category_ids: dict[str, int] | None = None
    ) -> list[dict[str, Any]]:
        """COCO ``annotations`` entries; category ids are ``class_id + 1`` unless given by name."""
        annotations = []
        for k, d in enumerate(self.detections):
            x, y, w, h = d.coco_bbox
            category = category_ids[d.class_name] if category_ids else d.class_id + 1
            annotations.append(
                {
                    "id": first_id + k,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": round(w * h, 2),
                    "score": d.score,
                    "iscrowd": 0,
                }
            )
        return annotations

    def to_supervision(self) -> Any:
        """A ``supervision.Detections`` (needs ``pip install supervision``)."""
        try:
            import numpy as np
            import supervision as sv
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "to_supervision() needs the supervision package: pip install supervision"
            ) from exc
        return sv.Detections(
            xyxy=np.array([d.box.xyxy for d in self.detections], dtype=np.float32).reshape(-1, 4),
            confidence=np.array([d.score for d in self.detections], dtype=np.float32),
            class_id=np.array([d.class_id for d in self.detections], dtype=int),
            data={"class_name": np.array([d.class_name for d in self.detections])},
        )


class ModelRef(BaseModel):
    name: str
    version: str


class DetectResponse(BaseModel):
    model: ModelRef
    params: dict[str, Any]
    results: list[ImageResult]
    timing_ms: dict[str, float]

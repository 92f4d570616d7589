"""The request steps' last one: detections become JSON results, per image and in request order."""

from __future__ import annotations

import torch

from app.api.pipeline import DecodedRequest, Predicted, results
from app.api.schemas import ImageResult
from app.imaging.upload import ImagePart
from app.metrics import Metrics
from model.postprocess import Detections


class Sized:
    """Stands in for a decoded image: results read only its size."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height


def detections(boxes, scores, labels) -> Detections:
    return Detections(
        boxes_xyxy=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.int64),
    )


def test_results_name_classes_round_boxes_and_count():
    parts = [ImagePart(0, "a.jpg", b""), ImagePart(1, None, b"")]
    decoded = DecodedRequest(parts, {}, [Sized(100, 50), Sized(10, 10)], 1.0)  # type: ignore[list-item]
    found = [
        detections([[1.234, 2.0, 50.5, 40.0], [3.0, 3.0, 3.001, 9.0]], [0.9, 0.8], [1, 0]),
        detections([], [], []),
    ]
    metrics = Metrics()
    answer = results(decoded, Predicted(found, 2.0), ("cat", "dog"), metrics)
    assert [r["filename"] for r in answer] == ["a.jpg", None]
    assert (answer[0]["width"], answer[0]["height"]) == (100, 50)
    (only,) = answer[0]["detections"]  # the sub-0.01 px box is dropped, not sent as x_min == x_max
    assert (only["class_name"], only["class_id"], only["score"]) == ("dog", 1, 0.9)
    assert (only["box"]["x_min"], only["box"]["x_max"]) == (1.23, 50.5)
    assert answer[1]["detections"] == []
    ImageResult.model_validate(answer[0])  # the schema /docs shows
    assert metrics.images._value.get() == 2
    assert metrics.detections.labels("dog")._value.get() == 1


def test_results_of_a_model_with_its_own_classes_use_its_names():
    decoded = DecodedRequest([ImagePart(0, "r.jpg", b"")], {}, [Sized(64, 64)], 0.0)  # type: ignore[list-item]
    answer = results(
        decoded, Predicted([detections([[0, 0, 9, 9]], [0.5], [0])], 0.0), ("raccoon",), Metrics()
    )
    assert answer[0]["detections"][0]["class_name"] == "raccoon"

import pytest
import torch

from model.evaluation.ap import (
    ImageGroundTruth,
    average_precision,
    class_average_precision,
    evaluate_detections,
)
from model.postprocess import Detections


def gt(boxes, labels, difficult=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    difficult = difficult or [False] * len(boxes)
    return ImageGroundTruth(boxes, torch.tensor(labels, dtype=torch.long), torch.tensor(difficult))


def det(boxes, scores, labels):
    return Detections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores),
        torch.tensor(labels, dtype=torch.long),
    )


A = [0, 0, 10, 10]
B = [20, 20, 30, 30]
C = [40, 40, 50, 50]
MISS = [100, 100, 110, 110]


def test_perfect_detections_give_one():
    truths = [gt([A, B], [0, 1]), gt([C], [0])]
    found = [det([A, B], [0.9, 0.8], [0, 1]), det([C], [0.7], [0])]
    result = evaluate_detections(found, truths, ["a", "b", "c"])
    assert result.ap == {"a": 1.0, "b": 1.0, "c": None}
    assert result.map50 == 1.0


def test_known_precision_recall_curve():
    # Ranked: TP, FP, TP over 3 positives -> recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3.
    truths = [gt([A, B, C], [0, 0, 0])]
    found = [det([A, MISS, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    ap = class_average_precision(found, truths, 0)
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    ap07 = class_average_precision(found, truths, 0, use_07_metric=True)
    assert ap07 == pytest.approx((4 * 1 + 3 * 2 / 3) / 11)


def test_duplicates_are_false_positives():
    truths = [gt([A], [0])]
    found = [det([A, A], [0.9, 0.8], [0, 0])]
    # TP then FP: precision at recall 1 is 1 (envelope), AP = 1; but a duplicate first lowers it.
    assert class_average_precision(found, truths, 0) == pytest.approx(1.0)
    found_dup_first = [det([MISS, A, A], [0.95, 0.9, 0.8], [0, 0, 0])]
    assert class_average_precision(found_dup_first, truths, 0) == pytest.approx(0.5)


def test_difficult_boxes_are_ignored_not_missed():
    truths = [gt([A, B], [0, 0], difficult=[False, True])]
    # Matching the difficult box is neither TP nor FP; missing it costs nothing.
    assert class_average_precision([det([B, A], [0.9, 0.8], [0, 0])], truths, 0) == pytest.approx(1.0)
    assert class_average_precision([det([A], [0.9], [0])], truths, 0) == pytest.approx(1.0)


def test_iou_threshold_and_wrong_class():
    truths = [gt([A], [0])]
    shifted = [4, 0, 14, 10]  # IoU 6/14 = 0.43 < 0.5
    assert class_average_precision([det([shifted], [0.9], [0])], truths, 0) == 0.0
    assert class_average_precision([det([A], [0.9], [1])], truths, 0) == 0.0


def test_all_point_interpolation_uses_the_precision_envelope():
    recall = torch.tensor([0.5, 0.5, 1.0])
    precision = torch.tensor([1.0, 0.5, 0.75])
    assert average_precision(recall, precision) == pytest.approx(0.5 * 1.0 + 0.5 * 0.75)

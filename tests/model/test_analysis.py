"""The error analysis: confusion with background, AP by size, F1-best thresholds, written files."""

import json
from pathlib import Path

import pytest
import torch

from model.evaluation.analysis import analyse, confusion_matrix, f1_threshold, write_analysis
from model.evaluation.ap import class_average_precision
from tests.model.test_metrics import det, gt

SMALL = [0, 0, 20, 20]  # 400 px²
LARGE = [100, 100, 300, 300]  # 40,000 px²


def test_confusion_counts_hits_swaps_misses_and_false_alarms():
    truths = [gt([SMALL, LARGE], [0, 1]), gt([LARGE], [2], difficult=[True])]
    found = [
        det([SMALL, LARGE, [400, 400, 450, 450]], [0.9, 0.8, 0.7], [0, 2, 1]),  # hit, swap, false alarm
        det([LARGE, SMALL], [0.9, 0.1], [2, 0]),  # on a difficult object: left out; under threshold
    ]
    matrix = torch.tensor(confusion_matrix(found, truths, 3, score_threshold=0.25))
    assert matrix[0, 0] == 1 and matrix[1, 2] == 1 and matrix[3, 1] == 1
    assert matrix.sum() == 3
    missed = confusion_matrix([det([], [], []), det([], [], [])], truths, 3, 0.25)
    assert missed[0][3] == 1 and missed[1][3] == 1 and sum(map(sum, missed)) == 2


def test_ap_by_size_ignores_the_other_sizes():
    truths = [gt([SMALL, LARGE], [0, 0])]
    found = [det([LARGE], [0.9], [0])]  # finds only the large one
    assert class_average_precision(found, truths, 0, area_range=(0, 32**2)) == 0.0
    assert class_average_precision(found, truths, 0, area_range=(96**2, float("inf"))) == 1.0
    assert class_average_precision(found, truths, 0) == pytest.approx(0.5)
    assert class_average_precision(found, truths, 0, area_range=(32**2, 96**2)) is None


def test_f1_threshold_is_the_score_of_the_best_point():
    scores = torch.tensor([0.9, 0.6, 0.3, 0.1])
    recall = torch.tensor([0.25, 0.5, 0.75, 0.75])
    precision = torch.tensor([1.0, 1.0, 1.0, 0.75])
    best, threshold = f1_threshold(scores, recall, precision)
    assert threshold == pytest.approx(0.3) and best == pytest.approx(2 * 0.75 / 1.75)
    assert f1_threshold(torch.zeros(0), torch.zeros(0), torch.zeros(0)) == (0.0, None)


def test_analysis_writes_readable_files(tmp_path: Path):
    truths = [gt([SMALL, LARGE], [0, 1]), gt([LARGE], [1])]
    found = [det([SMALL, LARGE], [0.9, 0.4], [0, 1]), det([LARGE], [0.8], [0])]
    analysis = analyse(found, truths, ["a", "b"])
    written = write_analysis(analysis, {"a": 0.5, "b": 0.5}, tmp_path)
    assert {p.name for p in written} == {
        "per_class.csv",
        "confusion.csv",
        "analysis.json",
        "pr_curves.png",
        "confusion.png",
        "ap_by_size.png",
    }
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert data["confusion"]["labels"] == ["a", "b", "background"]
    assert data["per_class"][0]["objects"] == 1 and data["per_class"][1]["objects"] == 2
    assert (tmp_path / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"

"""Scores that mean precision: the isotonic fit, the tables both runtimes apply, the command that
fits and records a calibration, and the predictors that serve it (or not, for old weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import calibrate
from model.arrays.postprocess import postprocess as numpy_postprocess
from model.boxes import split_grid
from model.calibration import Calibration, expected_calibration_error, fit_knots, pool_adjacent_violators
from model.config import DetectParams
from model.geometry import letterbox_geometry
from model.postprocess import postprocess
from model.predictor import Predictor
from tests.support.app_client import make_client, wait_ready
from tests.support.weights import make_weights


def test_pool_adjacent_violators_merges_what_breaks_the_order():
    means, rates, sizes = pool_adjacent_violators(
        np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0])
    )
    np.testing.assert_allclose(rates, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(means, [0.1, 0.25, 0.4])
    np.testing.assert_allclose(sizes, [1, 2, 1])


def synthetic(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose true precision is score squared: overconfident, as raw scores often are."""
    generator = np.random.default_rng(seed)
    scores = generator.uniform(0, 1, count).astype(np.float32)
    return scores, (generator.uniform(0, 1, count) < scores**2).astype(np.float32)


def test_a_fitted_map_rises_strictly_and_calibrates_held_out_scores():
    scores, hits = synthetic(4000, 0)
    calibration = Calibration.from_knots([fit_knots(scores, hits)])
    assert np.all(np.diff(calibration.table[0]) > 0)
    held_out, held_hits = synthetic(4000, 1)
    mapped = calibration.apply_array(held_out[:, None])[:, 0]
    before = expected_calibration_error(held_out, held_hits)
    after = expected_calibration_error(mapped, held_hits)
    assert before > 0.1 and after < 0.03
    assert np.all(np.diff(mapped[np.argsort(held_out)]) >= 0)  # never reorders (float32 may tie)


def test_a_perfect_top_block_is_not_called_certain():
    scores = np.linspace(0.0, 1.0, 40, dtype=np.float32)
    hits = (scores > 0.5).astype(np.float32)  # 20 right out of 20 at the top
    _, y = fit_knots(scores, hits)
    assert max(y) < 0.97


def test_numpy_and_torch_apply_the_same_table():
    calibration = Calibration.from_knots([fit_knots(*synthetic(500, k)) for k in range(3)])
    raw = np.random.default_rng(2).uniform(0, 1, (2, 50, 3)).astype(np.float32)
    np.testing.assert_allclose(
        calibration.apply_tensor(torch.from_numpy(raw)).numpy(), calibration.apply_array(raw), atol=1e-6
    )


def test_calibrated_post_processing_keeps_the_boxes_and_maps_the_scores():
    calibration = Calibration.from_knots([fit_knots(*synthetic(500, k)) for k in range(6)])
    raw = torch.randn(1, 5 + 6, 8, 8, generator=torch.Generator().manual_seed(3))
    raw[:, 4] += 2
    placements = [letterbox_geometry(100, 128, 128)[2]]
    params = [DetectParams(0.0, 0.5, 1000)]
    (plain,) = postprocess(split_grid(raw, 16), placements, params)
    (mapped,) = postprocess(split_grid(raw, 16), placements, params, calibration)
    (numpy_mapped,) = numpy_postprocess(raw.numpy(), 16, placements, params, calibration)
    for label in range(6):
        a, b = plain.labels == label, mapped.labels == label
        torch.testing.assert_close(mapped.boxes_xyxy[b], plain.boxes_xyxy[a])  # same boxes, same order
        column = torch.zeros(int(a.sum()), 6)
        column[:, label] = plain.scores[a]
        torch.testing.assert_close(
            mapped.scores[b], calibration.apply_tensor(column)[:, label], atol=1e-6, rtol=0
        )
    np.testing.assert_allclose(numpy_mapped.scores, mapped.scores.numpy(), atol=1e-5)


def test_the_command_records_a_calibration_that_both_predictors_serve(voc_root: Path, tmp_path: Path, capsys):
    weights = make_weights(tmp_path / "w", objectness_bias=2.0)
    untouched, _ = Predictor.from_weights(weights, "cpu")
    assert untouched.calibration is None  # weights from before calibration serve raw scores
    args = ["--weights", str(weights), "--data", str(voc_root), "--device", "cpu", "--workers", "0"]
    assert calibrate.main([*args, "--write-card"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["fitted_on"].startswith("4 images") and summary["checked_on"].startswith("4 images")
    block = json.loads((weights / "model.json").read_text())["calibration"]
    assert set(block["classes"]) == set(json.loads((weights / "model.json").read_text())["classes"])
    assert block["ece_before"] == summary["ece_before"]
    served, _ = Predictor.from_weights(weights, "cpu")
    raw, _ = Predictor.from_weights(weights, "cpu", calibrated=False)
    assert served.calibration is not None and raw.calibration is None
    image = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    params = DetectParams(0.0, 0.45, 50)
    (a,), (b,) = served([image], params), raw([image], params)
    assert len(a) and not torch.allclose(a.scores[:5], b.scores[:5])


@pytest.mark.parametrize("calibrated", [True, False])
def test_the_service_says_whether_its_scores_are_calibrated(calibrated, voc_root, tmp_path, capsys):
    weights = make_weights(tmp_path / "w", objectness_bias=2.0)
    args = ["--weights", str(weights), "--data", str(voc_root), "--device", "cpu", "--workers", "0"]
    assert calibrate.main([*args, "--write-card"]) == 0
    with make_client(weights, calibrated_scores=calibrated) as client:
        wait_ready(client)
        assert client.get("/model").json()["calibrated"] is calibrated

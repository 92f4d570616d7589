"""The training, evaluation and statistics commands, run for real on synthetic VOC data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import evaluate, stats, train

ROOT = Path(__file__).resolve().parents[2]


def train_args(voc_root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(voc_root),
        "--out",
        str(out),
        "--input-size",
        "64",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--lr",
        "1e-3",
        "--log-images",
        "1",
        *extra,
    ]


def test_train_export_and_evaluate_agree(voc_root: Path, tmp_path: Path, capsys):
    out, weights = tmp_path / "run", tmp_path / "weights"
    assert train.main(train_args(voc_root, out, "--epochs", "2", "--export", str(weights))) == 0
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    assert any((out / "tensorboard").iterdir())
    card = json.loads((weights / "model.json").read_text())["card"]
    assert card["epochs"] == card["checkpoint_epoch"] + 1 and card["val"]["images"] == 8
    assert set(card["val"]["ap50_per_class"]) == set(
        json.loads((weights / "model.json").read_text())["classes"]
    )
    capsys.readouterr()
    assert (
        evaluate.main(
            [
                "--weights",
                str(weights),
                "--data",
                str(voc_root),
                "--split",
                "val",
                "--device",
                "cpu",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert "mAP@0.5" in "\n".join(lines[:-1])
    report = json.loads(lines[-1])
    assert report["images"] == 8 and report["seconds"] > 0
    assert report["map50"] == pytest.approx(card["val"]["map50"], abs=1e-6)


def test_resume_continues_from_the_saved_epoch(voc_root: Path, tmp_path: Path):
    out = tmp_path / "run"
    train.main(train_args(voc_root, out, "--epochs", "1", "--limit-train", "8"))
    first = torch.load(out / "last.pt", weights_only=True)
    assert first["epoch"] == 0
    train.main(
        train_args(voc_root, out, "--epochs", "2", "--limit-train", "8", "--resume", str(out / "last.pt"))
    )
    second = torch.load(out / "last.pt", weights_only=True)
    assert second["epoch"] == 1
    assert second["card"]["images_seen"] == 2 * first["card"]["images_seen"]
    assert second["scheduler"]["last_epoch"] == 2 * first["scheduler"]["last_epoch"]


def test_find_lr_writes_a_plot_and_a_suggestion(voc_root: Path, tmp_path: Path):
    out = tmp_path / "lr"
    assert train.main(train_args(voc_root, out, "--find-lr", "--find-lr-steps", "12")) == 0
    assert (out / "lr_find.png").stat().st_size > 1000
    result = json.loads((out / "lr_find.json").read_text())
    assert 1e-6 <= result["suggested_lr"] <= 1.0 and len(result["lr"]) >= 3


def test_stats_prints_a_table_and_a_plot(voc_root: Path, tmp_path: Path, capsys):
    assert stats.main(["--data", str(voc_root), "--split", "train", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "split train: 24 images" in text and "aspect w/h" in text
    assert (tmp_path / "stats_train.png").exists()


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(voc_root: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "model.train",
        *train_args(voc_root, out, "--epochs", "1", "--device", "cpu", "--batch-size", "4"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["card"]["processes"] == 2
    assert state["card"]["images_seen"] == 24  # each process saw half of the 24 train images


def test_predict_draws_boxes_on_files(tmp_path: Path, capsys):
    from PIL import Image

    from model import predict
    from tests.conftest import image_bytes, make_weights

    weights = make_weights(tmp_path / "w", objectness_bias=6.0)
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes(90, 60, "PNG"))
    assert (
        predict.main(
            [str(photo), "--weights", str(weights), "--out", str(tmp_path / "out"), "--device", "cpu"]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["detections"] and line["out"].endswith("photo.jpg")
    drawn = Image.open(tmp_path / "out" / "photo.jpg")
    assert drawn.size == (90, 60)
    assert drawn.tobytes() != Image.open(photo).convert("RGB").tobytes()  # something was drawn

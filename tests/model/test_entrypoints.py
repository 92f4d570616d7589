"""The training, evaluation and statistics commands, run for real on synthetic VOC data."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model import evaluate, pack, stats, train

pytestmark = pytest.mark.slow  # real servers or training runs: not in make test-fast

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
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["progress"]["epoch"] == 2 and state["ema"]["updates"] == state["progress"]["step"] == 6
    assert any((out / "tensorboard").iterdir())
    meta = json.loads((weights / "model.json").read_text())
    card = meta["card"]
    assert card["epochs"] == 2 and card["weights"] == "EMA" and card["val"]["images"] == 8
    assert meta["architecture"]["stride"] == 16 and meta["architecture"]["neck_channels"] == 256
    assert set(card["val"]["ap50_per_class"]) == set(meta["classes"])
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


def test_a_time_budget_ends_the_run_on_time_with_its_schedule_complete(
    voc_root: Path, tmp_path: Path, capsys
):
    out = tmp_path / "run"
    start = time.perf_counter()
    assert train.main(train_args(voc_root, out, "--time-budget", "6", "--val-split", "")) == 0
    elapsed = time.perf_counter() - start
    state = torch.load(out / "last.pt", weights_only=True)
    # It stops at the first step after the budget: over by at most one step (slow on a busy CPU).
    assert 6.0 <= state["progress"]["seconds"] < elapsed < 60
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    final_lr = float(lines[-1].split()[-2])
    assert final_lr < 0.1 * 1e-3  # the cosine reached its end


def test_resume_continues_the_same_run_from_where_it_stopped(voc_root: Path, tmp_path: Path, monkeypatch):
    """A run stopped after its first epoch (as SIGTERM stops it) resumes with its own saved config:
    the new command line's flags do not change the run."""
    from model.training.trainer import Trainer

    out = tmp_path / "run"
    log_epoch = Trainer.log_epoch

    def stop_after_one(self, means, rate):
        log_epoch(self, means, rate)
        self.stop.set = True

    monkeypatch.setattr(Trainer, "log_epoch", stop_after_one)
    train.main(
        train_args(
            voc_root, out, "--epochs", "3", "--limit-train", "8", "--val-split", "", "--mosaic", "0.25"
        )
    )
    first = torch.load(out / "last.pt", weights_only=True)
    assert first["progress"]["epoch"] == 1 and first["config_train"]["epochs"] == 3
    monkeypatch.setattr(Trainer, "log_epoch", log_epoch)
    resumed = [
        "--epochs",
        "9",
        "--lr",
        "0.5",
        "--limit-train",
        "8",
        "--val-split",
        "",
        "--resume",
        str(out / "last.pt"),
    ]
    train.main(train_args(voc_root, out, *resumed))
    second = torch.load(out / "last.pt", weights_only=True)
    assert second["progress"]["epoch"] == 3  # the saved schedule's length, not --epochs 9
    assert second["progress"]["images_seen"] == 3 * first["progress"]["images_seen"]
    assert second["ema"]["updates"] == 3 * first["ema"]["updates"]
    assert second["card"]["lr"] == 1e-3 and second["card"]["augment"]["mosaic"] == 0.25
    assert second["config_train"] == {**first["config_train"], "command": second["config_train"]["command"]}
    assert "resumed with" in second["card"]["command"]


def test_train_takes_a_pack_and_exports_in_parts_that_join(voc_root: Path, tmp_path: Path):
    pack_dir, out = tmp_path / "pack", tmp_path / "run"
    assert (
        pack.main(
            [
                "write",
                "--data",
                str(voc_root),
                "--split",
                "train",
                "--out",
                str(pack_dir),
                "--long-side",
                "64",
                "--part-mib",
                "0.01",
            ]
        )
        == 0
    )
    assert len(list(pack_dir.glob("part-*.bin"))) >= 2
    split, whole = tmp_path / "split", tmp_path / "whole"
    args = ["--epochs", "1", "--val-data", str(voc_root), "--limit-val", "4"]
    assert (
        train.main(train_args(pack_dir, out, *args, "--export", str(split), "--export-part-mib", "0.5")) == 0
    )
    assert not (split / "model.safetensors").exists() and len(list(split.glob("model.safetensors.*"))) > 2
    assert all(p.stat().st_size <= 0.5 * 2**20 for p in split.glob("model.safetensors.*"))
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["card"]["train_images"] == 24
    from model.checkpoint import join_weights, load_weights
    from model.config import DetectorConfig
    from model.network import build_network
    from model.training.ema import ModelEMA
    from model.training.export import export_weights

    network = build_network(DetectorConfig.from_dict(state["config"]))
    ema = ModelEMA(network)
    ema.load_state_dict(state["ema"])
    card = json.loads((split / "model.json").read_text())["card"]
    export_weights(ema.module, whole, {k: v for k, v in card.items() if k != "val"}, None)
    join_weights(split)
    assert (split / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    assert sorted(p.name for p in split.iterdir()) == ["model.json", "model.safetensors"]
    load_weights(split)


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
    assert state["progress"]["images_seen"] == 24  # each process saw half of the 24 train images


def test_predict_draws_boxes_on_files(tmp_path: Path, capsys):
    from PIL import Image

    from model import predict
    from tests.support.images import image_bytes
    from tests.support.weights import make_weights

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

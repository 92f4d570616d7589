"""The GPU-window sequence (docs/gpu-window.md), run end to end here on the CPU with tiny packs.

Pack the train split and the val split less its canary into parts, check them, run the window
script as the next window will (training throughput; 60 s of multi-scale training from both packs,
continuing from exported weights; export in parts), join, evaluate on the canary with the
analysis and the card, and serve the result with a real uvicorn process: the same commands the
window runs, so it cannot fail on a typo.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import make_weights

ROOT = Path(__file__).resolve().parents[2]


def run(*command: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_the_gpu_window_sequence_runs_on_the_cpu(voc_root: Path, tmp_path: Path):
    pack, out = tmp_path / "pack", tmp_path / "out"
    py = sys.executable
    run(
        py,
        "-m",
        "model.pack",
        "write",
        "--data",
        str(voc_root),
        "--split",
        "train",
        "--out",
        str(pack),
        "--long-side",
        "96",
        "--quality",
        "65",
        "--part-mib",
        "0.03",
    )
    listing = run(py, "-m", "model.pack", "check", str(pack))
    assert "24 images in" in listing and len(list(pack.glob("part-*.bin"))) >= 2
    val_pack = tmp_path / "val-pack"
    command = ["--data", str(voc_root), "--split", "val", "--out", str(val_pack), "--long-side", "96"]
    run(py, "-m", "model.pack", "write", *command, "--canary", "3")
    start = make_weights(tmp_path / "start", input_size=64, neck_channels=32)  # as the shipped model: a neck

    window = {
        "PYTHON": py,
        "PACK": f"{pack} {val_pack}",
        "INIT_FROM": str(start),
        "SCALES": "64,96",
        "STRIDE8": "1",
        "WHEELS": str(tmp_path / "no-wheels"),
        "OUT": str(out),
        "DEVICE": "cpu",
        "SIZE": "64",
        "BATCH": "8",
        "BUDGET": "60",
        "BENCH_SECONDS": "1",
        "BENCH_BATCH": "4",
        "SERVE": "0",
        "TRAIN_ARGS": "--ema-decay 0.99",
    }
    printed = run("bash", "deploy/gpu_window.sh", env=window, timeout=600)
    assert "whole training step" in printed and "exported ->" in printed
    train_log = (out / "train.log").read_text()
    assert "budget 60 s" in train_log and "training 29 images" in train_log and "init from" in train_log
    weights = out / "weights"
    parts = sorted(p.name for p in weights.iterdir())
    assert "parts.json" in parts and "model.safetensors" not in parts
    card = json.loads((weights / "model.json").read_text())["card"]
    assert 60 <= card["training_seconds"] < 120 and card["weights"] == "EMA"
    assert card["multi_scale"] == [64, 96] and card["init_from"]["weights"] == str(start)
    assert card["levels"] == [8, 16] and "fine_head started as a copy of head" in card["init_from"]["head"]

    run(py, "-m", "model.checkpoint", "join", str(weights))
    printed = run(
        py,
        "-m",
        "model.evaluate",
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
        "--canary",
        "3",
        "--plots",
        str(tmp_path / "analysis"),
        "--write-card",
    )
    report = json.loads(printed.strip().splitlines()[-1])
    assert report["images"] == 3
    assert json.loads((weights / "model.json").read_text())["card"]["val"]["map50"] == report["map50"]
    for name in ("pr_curves.png", "confusion.png", "ap_by_size.png", "per_class.csv", "analysis.json"):
        assert (tmp_path / "analysis" / name).stat().st_size > 100

    with Server(weights) as server:
        response = httpx.post(
            f"{server.url}/detect", files={"image": ("a.jpg", image_bytes(), "image/jpeg")}, timeout=30
        )
        assert response.status_code == 200
        assert httpx.get(f"{server.url}/model").json()["version"] == card_version(weights)


def card_version(weights: Path) -> str:
    return str(json.loads((weights / "model.json").read_text())["sha256"])[:12]

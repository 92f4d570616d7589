"""The options the next GPU window can ablate: multi-scale batches, mixup, CIoU, the stride-8
level, training on val less a canary (pack, train and evaluate agree on the canary), and
``--compile`` with its eager fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model import evaluate, pack, train
from model.data import open_dataset, split_canary
from model.training.config import parse_scales
from model.training.trainer import mixup
from tests.model.test_entrypoints import train_args


def test_scales_are_the_multiples_of_32_between_the_bounds():
    assert parse_scales("320,416") == (320, 352, 384, 416)
    assert parse_scales(None) == ()
    with pytest.raises(ValueError, match="multiples of 32"):
        parse_scales("300,416")


def test_mixup_blends_the_first_images_and_keeps_both_sets_of_boxes():
    images = torch.stack([torch.full((3, 4, 4), float(k)) for k in range(4)])
    boxes = torch.tensor([[[k, k, k + 1, k + 1]] for k in range(4)], dtype=torch.float32)
    labels = torch.arange(4).view(4, 1)
    mixed, mixed_boxes, mixed_labels = mixup(images, boxes, labels, 0.5, torch.Generator())
    assert mixed[0].unique().tolist() == [0.5] and mixed[1].unique().tolist() == [1.5]
    assert torch.equal(mixed[2:], images[2:])
    assert mixed_boxes.shape == (4, 2, 4) and mixed_labels[:, 1].tolist() == [1, 2, -1, -1]
    assert torch.equal(mixed_boxes[0, 1], boxes[1, 0])


def test_the_canary_is_the_same_every_time_and_apart_from_the_rest(voc_root: Path):
    val = open_dataset([voc_root], "val")
    rest, canary = split_canary(val, 3)
    again = split_canary(open_dataset([voc_root], "val"), 3)[1]
    ids = [r.image_id for r in canary.records]
    assert ids == [r.image_id for r in again.records] and len(ids) == 3
    assert not set(ids) & {r.image_id for r in rest.records} and len(rest) + 3 == len(val)
    with pytest.raises(ValueError, match="canary"):
        split_canary(val, len(val))


def test_a_run_with_every_option_trains_on_val_less_its_canary(voc_root: Path, tmp_path: Path, capsys):
    out, weights = tmp_path / "run", tmp_path / "weights"
    options = [
        "--epochs",
        "1",
        "--multi-scale",
        "64,96",
        "--mixup",
        "0.5",
        "--box-loss",
        "ciou",
        "--stride8-level",
    ]
    assert train.main(train_args(voc_root, out, *options, "--canary", "3", "--export", str(weights))) == 0
    printed = capsys.readouterr().out
    assert "training 29 images" in printed  # 24 train + 8 val - 3 canary
    meta = json.loads((weights / "model.json").read_text())
    card = meta["card"]
    assert meta["architecture"]["levels"] == [8, 16] and card["levels"] == [8, 16]
    assert card["multi_scale"] == [64, 96] and card["box_loss"] == "ciou" and card["mixup"] == 0.5
    assert card["canary"] == 3 and card["val"]["images"] == 3 and "canary of 3" in card["val_data"]["read"]
    args = ["--weights", str(weights), "--data", str(voc_root), "--device", "cpu", "--workers", "0"]
    assert evaluate.main([*args, "--canary", "3"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 3 and report["map50"] == pytest.approx(card["val"]["map50"], abs=1e-6)


def test_a_pack_can_leave_the_canary_out(voc_root: Path, tmp_path: Path, capsys):
    assert (
        pack.main(
            [
                "write",
                "--data",
                str(voc_root),
                "--split",
                "val",
                "--out",
                str(tmp_path / "p"),
                "--canary",
                "3",
            ]
        )
        == 0
    )
    index = json.loads((tmp_path / "p" / "index.json").read_text())
    assert index["images"] == 5


def test_the_compiled_step_computes_what_the_eager_one_does():
    from model.config import DetectorConfig
    from model.network import build_network
    from model.training.augment import AugmentConfig, build_bank
    from model.training.setup import Precision
    from model.training.trainer import BatchLoss

    torch.manual_seed(0)
    detector = DetectorConfig(input_size=64, neck_channels=32, stride8_level=True)
    images = [torch.randint(0, 256, (3, 50 + k, 60 - k), dtype=torch.uint8) for k in range(6)]
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 24.0], [10.0, 8.0, 48.0, 40.0]])[: 1 + k % 2] for k in range(6)]
    labels = [torch.tensor([3, 7])[: 1 + k % 2] for k in range(6)]
    bank = build_bank(images, boxes, labels, 64)
    network = build_network(detector).train()
    precision = Precision.choose(torch.device("cpu"), "off", "off")
    results = []
    for mode in ("off", "default"):
        loss = BatchLoss(
            network, bank, detector, precision, torch.Generator().manual_seed(1), compile_mode=mode
        )
        assert loss.compiled == (mode != "off")
        network.zero_grad(set_to_none=True)
        terms = loss(torch.arange(4), AugmentConfig())
        terms["total"].backward()
        grad = network.head[-1].weight.grad
        assert grad is not None
        results.append(({k: float(v) for k, v in terms.items()}, grad.clone()))
    (eager, eager_grad), (compiled, compiled_grad) = results
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-3, atol=1e-5)


def test_a_compile_that_fails_trains_eager_and_says_so(voc_root: Path, tmp_path: Path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        def run(*a, **k):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    weights = tmp_path / "weights"
    argv = train_args(
        voc_root, tmp_path / "run", "--epochs", "1", "--compile", "default", "--export", str(weights)
    )
    assert train.main(argv) == 0
    assert "--compile failed (RuntimeError: no compiler here); training eager" in capsys.readouterr().out
    card = json.loads((weights / "model.json").read_text())["card"]
    assert card["compile"] == "default (failed: trained eager)"

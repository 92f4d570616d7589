"""The options the next GPU window can ablate: multi-scale batches, mixup, CIoU, and training on
val less a canary (pack, train and evaluate agree on the canary)."""

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
    options = ["--epochs", "1", "--multi-scale", "64,96", "--mixup", "0.5", "--box-loss", "ciou"]
    assert train.main(train_args(voc_root, out, *options, "--canary", "3", "--export", str(weights))) == 0
    printed = capsys.readouterr().out
    assert "training 29 images" in printed  # 24 train + 8 val - 3 canary
    card = json.loads((weights / "model.json").read_text())["card"]
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

"""Starting a run: ``--init-from`` weights (what fits is loaded, class channels by name), and the run's
config saved in ``last.pt`` so that ``--resume`` is the same run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import load_weights
from model.config import DetectorConfig
from model.data import open_dataset
from model.evaluation.report import evaluate_predictor
from model.network import BOX_CHANNELS, build_network
from model.predictor import Predictor
from model.training.augment import AugmentConfig
from model.training.config import TrainConfig
from model.training.setup import initial_network, transfer_weights
from tests.support.weights import make_weights


def config_for(init_from: Path | None, **changes) -> TrainConfig:
    base = TrainConfig(
        data=("d",), val_data=(), train_split="train", val_split="", out="o", epochs=1, time_budget=None,
        batch_size=4, lr=1e-3, weight_decay=0.05, warmup=0.05, clip_grad=10.0, ema_decay=0.9,
        augment=AugmentConfig(), close_mosaic=0.1, neighbours=True, iou_objectness=True, cache_side=None,
        seed=0, eval_every=0, limit_train=None, limit_val=None, workers=0, log_images=0,
        backbone_weights=None, export=None, export_part_mib=None,
        init_from=str(init_from) if init_from else None,
    )  # fmt: skip
    return TrainConfig(**{**base.__dict__, **changes})


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_weights(tmp_path_factory.mktemp("w"), objectness_bias=6.0)
    return folder


def test_a_run_started_from_weights_evaluates_equal_to_them(weights: Path, voc_root: Path):
    loaded = load_weights(weights)
    detector = DetectorConfig(classes=loaded.config.classes, input_size=64)
    network, report = initial_network(config_for(weights), detector)
    assert report is not None and report["fresh"] == [] and report["unused"] == []
    assert report["version"] == loaded.version
    for key, value in loaded.network.state_dict().items():
        torch.testing.assert_close(network.state_dict()[key], value, rtol=0, atol=0)
    dataset = open_dataset([voc_root], "val", loaded.config.classes)
    ours = evaluate_predictor(Predictor(network.eval()), dataset, workers=0, progress=False)
    theirs = evaluate_predictor(Predictor(loaded.network), dataset, workers=0, progress=False)
    assert ours.result.map50 == theirs.result.map50
    assert sum(len(d.scores) for d in ours.detections) > 0
    for mine, shipped in zip(ours.detections, theirs.detections, strict=True):
        torch.testing.assert_close(mine.boxes_xyxy, shipped.boxes_xyxy, rtol=0, atol=0)
        torch.testing.assert_close(mine.scores, shipped.scores, rtol=0, atol=0)


def test_other_classes_keep_box_objectness_and_shared_names(weights: Path):
    loaded = load_weights(weights)
    target = build_network(DetectorConfig(classes=("dog", "raccoon"), input_size=64))
    fresh_weight = target.head[-1].weight.detach().clone()
    report = transfer_weights(loaded.network, target)
    assert report["classes_kept"] == ["dog"] and "1 of 2" in report["head"]
    source, head = loaded.network.head[-1], target.head[-1]
    keep = BOX_CHANNELS + 1
    torch.testing.assert_close(head.weight[:keep], source.weight[:keep], rtol=0, atol=0)
    dog = loaded.config.classes.index("dog")
    torch.testing.assert_close(head.weight[keep], source.weight[keep + dog], rtol=0, atol=0)
    torch.testing.assert_close(head.weight[keep + 1], fresh_weight[keep + 1], rtol=0, atol=0)  # raccoon
    torch.testing.assert_close(target.backbone[0].weight, loaded.network.backbone[0].weight, rtol=0, atol=0)


def test_a_mismatched_architecture_names_the_tensors():
    source = build_network(DetectorConfig(input_size=64, neck_channels=256))
    target = build_network(DetectorConfig(input_size=64, neck_channels=128))
    with pytest.raises(
        ValueError, match=r"neck\.lateral\.0\.weight \(256, 512, 1, 1\) -> \(128, 512, 1, 1\)"
    ):
        transfer_weights(source, target)


def test_layers_the_new_architecture_adds_start_fresh(weights: Path):
    loaded = load_weights(weights)
    target = build_network(DetectorConfig(input_size=64, neck_channels=256, head_hidden_channels=32))
    report = transfer_weights(loaded.network, target)
    assert "neck.fuse.0.weight" in report["fresh"] and "head.0.weight" in report["fresh"]
    assert "head.3.weight" in report["fresh"]
    assert "last convolution starts fresh" in report["head"]


def test_train_config_survives_a_weights_only_checkpoint(tmp_path: Path):
    config = config_for(None, classes=("a", "b"), eval_at=(300.0, 600.0), freeze_backbone=0.2)
    torch.save({"config_train": config.to_dict()}, tmp_path / "c.pt")
    restored = TrainConfig.from_dict(torch.load(tmp_path / "c.pt", weights_only=True)["config_train"])
    assert restored == config

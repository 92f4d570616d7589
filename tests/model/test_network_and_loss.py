from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torchvision.models import resnet18

from model.boxes import assign_targets, pad_boxes, split_grid
from model.config import DetectorConfig
from model.loss import detection_loss
from model.network import build_network


def test_forward_returns_the_raw_grid(tiny_network):
    raw = tiny_network(torch.randn(3, 3, 64, 64))
    assert raw.shape == (3, 4 + 1 + 20, 2, 2)


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        DetectorConfig(input_size=100)
    with pytest.raises(ValueError, match="multiple of 32"):
        DetectorConfig(input_size=80, neck_channels=64)


def test_the_neck_gives_a_stride_16_grid():
    config = DetectorConfig(input_size=64, neck_channels=32, head_hidden_channels=16)
    assert config.stride == 16 and config.grid_size == 4
    raw = build_network(config)(torch.randn(2, 3, 64, 64))
    assert raw.shape == (2, 25, 4, 4)


def test_configs_saved_before_the_neck_load_as_stride_32():
    old = {
        "input_size": 224,
        "stride": 32,
        "head_hidden_channels": 0,
        "classes": list(DetectorConfig().classes),
    }
    assert DetectorConfig.from_dict(old).stride == 32
    with pytest.raises(ValueError, match="stride"):
        DetectorConfig.from_dict({**old, "stride": 16})
    round_trip = DetectorConfig(neck_channels=128)
    assert DetectorConfig.from_dict(round_trip.to_dict()) == round_trip


def test_local_backbone_weights_are_loaded(tmp_path: Path):
    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    network = build_network(DetectorConfig(input_size=64), backbone_weights=path)
    assert_close(network.backbone[0].weight, reference.conv1.weight)
    assert_close(network.backbone[7][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert_close(network.backbone[1].running_var, reference.bn1.running_var)


def test_backbone_file_of_another_architecture_is_refused(tmp_path: Path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="unexpected key"):
        build_network(DetectorConfig(input_size=64), backbone_weights=path)


def loss_for(network, images, boxes, labels):
    raw = network(images)
    targets = assign_targets(*pad_boxes(boxes, labels), raw.shape[2], raw.shape[3], 32)
    return detection_loss(split_grid(raw, 32), targets)


def test_loss_has_named_finite_terms_with_and_without_objects(tiny_network):
    images = torch.randn(2, 3, 64, 64)
    empty = loss_for(tiny_network, images, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    assert set(empty) == {"objectness", "box", "giou", "class", "total"}
    assert all(torch.isfinite(v) for v in empty.values())
    assert empty["box"] == 0 and empty["objectness"] > 0
    empty["total"].backward()  # the graph stays connected with no positives
    full = loss_for(
        tiny_network, images, [torch.tensor([[5.0, 5.0, 40.0, 30.0]])] * 2, [torch.tensor([3])] * 2
    )
    assert all(torch.isfinite(v) and v > 0 for v in full.values())


@pytest.mark.slow
def test_one_batch_overfits():
    torch.manual_seed(0)
    network = build_network(DetectorConfig(input_size=64)).train()
    images = torch.randn(4, 3, 64, 64)
    boxes = [
        torch.tensor([[4.0, 6.0, 30.0, 28.0]]),
        torch.tensor([[34.0, 30.0, 60.0, 62.0]]),
        torch.tensor([[10.0, 10.0, 54.0, 50.0]]),
        torch.zeros(0, 4),
    ]
    labels = [torch.tensor([1]), torch.tensor([5]), torch.tensor([14]), torch.zeros(0, dtype=torch.long)]
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    first = None
    for _ in range(40):
        terms = loss_for(network, images, boxes, labels)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        first = first if first is not None else {k: float(v.detach()) for k, v in terms.items()}
    last = {k: float(v.detach()) for k, v in loss_for(network, images, boxes, labels).items()}
    assert last["total"] < 0.3 * first["total"]
    assert last["class"] < first["class"] and last["giou"] < first["giou"]


@pytest.mark.parametrize("kind", ["giou", "ciou"])
def test_the_iou_loss_is_torchvisions_without_its_mask(kind):
    from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss

    from model.loss import iou_loss_per_box

    generator = torch.Generator().manual_seed(2)
    corner = torch.rand(500, 2, generator=generator) * 100
    target = torch.cat([corner, corner + 1 + torch.rand(500, 2, generator=generator) * 60], 1)
    shift = torch.randn(500, 4, generator=generator) * 20  # overlapping, touching and far apart pairs
    pred = torch.cat([target[:, :2] + shift[:, :2], target[:, :2] + shift[:, :2] + 1 + shift[:, 2:].abs()], 1)
    theirs_fn = generalized_box_iou_loss if kind == "giou" else complete_box_iou_loss
    mine_pred, theirs_pred = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    mine = iou_loss_per_box(mine_pred, target, kind)
    theirs = theirs_fn(theirs_pred, target, reduction="none")
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    mine.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(mine_pred.grad, theirs_pred.grad, rtol=1e-4, atol=1e-6)

"""The network: a torchvision ResNet18 trunk (up to ``layer4``), an optional stride-16 neck (and on
it an optional stride-8 level), a grid head per level."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18

from model.config import BOX_CHANNELS, DetectorConfig

__all__ = ["BOX_CHANNELS", "GridDetector", "build_network"]
TRUNK_CHANNELS = 512
LAYER3_CHANNELS = 256
LAYER2_CHANNELS = 128


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Stride16Neck(nn.Module):
    """``layer4`` reduced by a 1x1 conv, upsampled x2, concatenated with ``layer3``, fused by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.lateral = conv_bn_relu(TRUNK_CHANNELS, channels, 1)
        self.fuse = conv_bn_relu(channels + LAYER3_CHANNELS, channels, 3)

    def forward(self, layer3: Tensor, layer4: Tensor) -> Tensor:
        up = F.interpolate(self.lateral(layer4), scale_factor=2.0, mode="nearest")
        return self.fuse(torch.cat([up, layer3], dim=1))


class Stride8Fusion(nn.Module):
    """The neck's stride-16 map reduced by a 1x1 conv, upsampled x2, concatenated with ``layer2``
    and fused by a 3x3 conv back to the neck's width (top-down, as in a feature pyramid)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.lateral = conv_bn_relu(channels, LAYER2_CHANNELS, 1)
        self.fuse = conv_bn_relu(2 * LAYER2_CHANNELS, channels, 3)

    def forward(self, layer2: Tensor, neck: Tensor) -> Tensor:
        up = F.interpolate(self.lateral(neck), scale_factor=2.0, mode="nearest")
        return self.fuse(torch.cat([up, layer2], dim=1))


def grid_head(config: DetectorConfig) -> nn.Sequential:
    """A level's head: an optional 3x3 hidden layer, then the 1x1 conv to ``5 + C`` channels."""
    out_channels = BOX_CHANNELS + 1 + config.num_classes
    layers: list[nn.Module] = []
    in_channels = config.neck_channels or TRUNK_CHANNELS
    if config.head_hidden_channels:
        layers += list(conv_bn_relu(in_channels, config.head_hidden_channels, 3))  # flat: stable keys
        in_channels = config.head_hidden_channels
    layers.append(nn.Conv2d(in_channels, out_channels, 1))
    head = nn.Sequential(*layers)
    final = head[-1]
    assert isinstance(final, nn.Conv2d) and final.bias is not None
    nn.init.normal_(final.weight, std=0.01)
    with torch.no_grad():
        final.bias.zero_()
        # Start objectness near the prior of an object in ~1% of cells, so the first
        # steps are not spent pushing every cell's objectness down.
        final.bias[BOX_CHANNELS] = -4.6
    return head


class GridDetector(nn.Module):
    """ResNet18 grid detector.

    ``forward`` returns the raw head output, nothing decoded: ``(B, 4 + 1 + C, H/s, W/s)``
    (``s = config.stride``) with channels ``tx, ty, tw, th, objectness, class logits``; with the
    stride-8 level ``(B, 4 + 1 + C, N)``, both grids flattened (:mod:`model.grid`).
    Box coding lives in :mod:`model.boxes`, the loss in :mod:`model.loss` and
    post-processing in :mod:`model.postprocess`.
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        trunk = resnet18(weights=None)
        self.backbone = nn.Sequential(
            trunk.conv1,
            trunk.bn1,
            trunk.relu,
            trunk.maxpool,
            trunk.layer1,
            trunk.layer2,
            trunk.layer3,
            trunk.layer4,
        )
        self.neck = Stride16Neck(config.neck_channels) if config.neck_channels else None
        self.head = grid_head(config)
        # The stride-8 level: its own fusion and its own head (same shapes as ``head``, so
        # ``--init-from`` weights without one start it as a copy of theirs).
        self.fine = Stride8Fusion(config.neck_channels) if config.stride8_level else None
        self.fine_head = grid_head(config) if config.stride8_level else None

    def forward(self, images: Tensor) -> Tensor:
        """images: normalized ``(B, 3, S, S)`` float -> raw grid ``(B, 5 + C, S/s, S/s)``; with the
        stride-8 level ``(B, 5 + C, N)``, both levels flattened, stride 8 first (:mod:`model.grid`)."""
        if self.neck is None:
            return self.head(self.backbone(images))
        layer2 = self.backbone[:6](images)
        layer3 = self.backbone[6](layer2)
        neck = self.neck(layer3, self.backbone[7](layer3))
        if self.fine is None or self.fine_head is None:
            return self.head(neck)
        fine, coarse = self.fine_head(self.fine(layer2, neck)), self.head(neck)
        # reshape(..., -1), not flatten: an exported graph then serves other input sides too.
        return torch.cat(
            [level.reshape(level.shape[0], level.shape[1], -1) for level in (fine, coarse)], dim=2
        )


def load_backbone_weights(network: GridDetector, path: str | Path) -> None:
    """Load a torchvision-format ResNet18 state dict (``conv1.weight``, ``layer1.0...``) into the trunk.

    The file is read with ``weights_only=True`` (or as safetensors), so nothing is unpickled.
    The classifier (``fc.*``) is ignored; every trunk tensor must be present and match.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a ResNet18 state dict, got {type(state).__name__}")
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    mapped = {}
    for key, value in state.items():
        prefix = key.split(".", 1)[0]
        if prefix == "fc":
            continue
        if prefix not in names:
            raise ValueError(f"{path}: unexpected key {key!r}; is this a torchvision ResNet18 state dict?")
        mapped[f"{names.index(prefix)}.{key.split('.', 1)[1]}"] = value
    missing, unexpected = network.backbone.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: backbone weights do not match ResNet18 "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )


def build_network(config: DetectorConfig, backbone_weights: str | Path | None = None) -> GridDetector:
    """Random-init detector; with ``backbone_weights`` the trunk starts from that local file."""
    network = GridDetector(config)
    if backbone_weights is not None:
        load_backbone_weights(network, backbone_weights)
    return network

"""The network: a torchvision ResNet18 trunk (up to ``layer4``, stride 32) and a grid head."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet18

from model.config import DetectorConfig

BOX_CHANNELS = 4  # tx, ty, tw, th
TRUNK_CHANNELS = 512


class GridDetector(nn.Module):
    """ResNet18 grid detector.

    ``forward`` returns the raw head output, nothing decoded:
    ``(B, 4 + 1 + C, H/32, W/32)`` with channels ``tx, ty, tw, th, objectness, class logits``.
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
        out_channels = BOX_CHANNELS + 1 + config.num_classes
        layers: list[nn.Module] = []
        in_channels = TRUNK_CHANNELS
        if config.head_hidden_channels:
            layers += [
                nn.Conv2d(in_channels, config.head_hidden_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(config.head_hidden_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = config.head_hidden_channels
        layers.append(nn.Conv2d(in_channels, out_channels, 1))
        self.head = nn.Sequential(*layers)
        self._init_head()

    def _init_head(self) -> None:
        final = self.head[-1]
        assert isinstance(final, nn.Conv2d) and final.bias is not None
        nn.init.normal_(final.weight, std=0.01)
        with torch.no_grad():
            final.bias.zero_()
            # Start objectness near the prior of an object in ~1% of cells, so the first
            # steps are not spent pushing every cell's objectness down.
            final.bias[BOX_CHANNELS] = -4.6

    def forward(self, images: Tensor) -> Tensor:
        """images: normalized ``(B, 3, S, S)`` float -> raw grid ``(B, 5 + C, S/32, S/32)``."""
        return self.head(self.backbone(images))


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

"""Shared fixtures: tiny configs, random-init weights and synthetic VOC folders made per session."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from model.checkpoint import save_weights
from model.config import DetectorConfig
from model.network import GridDetector, build_network
from model.synthetic import make_synthetic_voc
from tests.serving import Server

TINY_SIZE = 64


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_config() -> DetectorConfig:
    return DetectorConfig(input_size=TINY_SIZE)


@pytest.fixture
def tiny_network(tiny_config: DetectorConfig) -> GridDetector:
    torch.manual_seed(0)
    return build_network(tiny_config).eval()


def make_weights(folder: Path, input_size: int = TINY_SIZE, objectness_bias: float | None = None) -> Path:
    """A random-init weights folder; ``objectness_bias`` raises scores so detections appear
    (mostly ``person``, then ``dog``: their class logits are raised too)."""
    torch.manual_seed(0)
    network = build_network(DetectorConfig(input_size=input_size))
    if objectness_bias is not None:
        with torch.no_grad():
            network.head[-1].bias[4] = objectness_bias
            network.head[-1].bias[5 + 14] = 4.0
            network.head[-1].bias[5 + 11] = 3.0
    return save_weights(folder, network, {"note": "random weights made by the tests"})


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A high objectness bias so every image gets detections to check.
    return make_weights(tmp_path_factory.mktemp("weights"), objectness_bias=6.0)


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_voc(
        tmp_path_factory.mktemp("voc"), {"train": 24, "val": 8}, difficult_rate=0.1, empty_rate=0.1
    )


def image_bytes(
    width: int = 120, height: int = 80, fmt: str = "JPEG", mode: str = "RGB", **save: object
) -> bytes:
    """A real encoded image: a gradient with a bright rectangle, in the given format and mode."""
    base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    base.paste((250, 40, 40), (width // 4, height // 4, width // 2, height // 2))
    image = base.convert(mode) if mode != "RGB" else base
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def random_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real uvicorn process with random weights that box everything (input 128)."""
    weights = make_weights(tmp_path_factory.mktemp("served-weights"), input_size=128, objectness_bias=6.0)
    with Server(weights) as server:
        yield server

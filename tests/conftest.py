"""Shared fixtures: tiny configs, random-init weights and synthetic VOC folders made per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model.config import DetectorConfig
from model.network import GridDetector, build_network
from tests.support.images import image_bytes  # noqa: F401  (re-exported for old imports)
from tests.support.serving import Server
from tests.support.synthetic import make_synthetic_voc
from tests.support.weights import TINY_SIZE, make_weights


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


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A high objectness bias so every image gets detections to check.
    return make_weights(tmp_path_factory.mktemp("weights"), objectness_bias=6.0)


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_voc(
        tmp_path_factory.mktemp("voc"), {"train": 24, "val": 8}, difficult_rate=0.1, empty_rate=0.1
    )


@pytest.fixture(scope="module")
def random_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real uvicorn process with random weights that box everything (input 128)."""
    weights = make_weights(tmp_path_factory.mktemp("served-weights"), input_size=128, objectness_bias=6.0)
    with Server(weights) as server:
        yield server

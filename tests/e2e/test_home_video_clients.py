"""The DeepStack route against a real client: Home Assistant's ``deepstack-python``, on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow
ds = pytest.importorskip("deepstack.core")


@pytest.fixture(scope="module")
def crowded_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights at input 320 that box every cell: a crowded frame."""
    return make_weights(tmp_path_factory.mktemp("w"), input_size=320, objectness_bias=6.0)


@pytest.fixture(scope="module")
def server(crowded_weights: Path) -> Iterator[Server]:
    with Server(crowded_weights, DETECTOR_API_KEY="s3cret") as running:
        yield running


def test_deepstack_python_detects_and_summarises(server: Server):
    client = ds.DeepstackObject(ip="127.0.0.1", port=server.port, api_key="s3cret", min_confidence=0.4)
    predictions = client.detect(image_bytes(640, 480))
    assert 0 < len(predictions) <= 20  # DETECTOR_DEEPSTACK_MAX_PREDICTIONS: Frigate's 20 rows
    assert all(p["confidence"] >= 0.4 for p in predictions)
    summary = ds.get_objects_summary(predictions)
    assert sum(summary.values()) == len(predictions)
    for prediction in predictions:
        assert 0 <= prediction["x_min"] < prediction["x_max"] <= 640
        assert 0 <= prediction["y_min"] < prediction["y_max"] <= 480


def test_deepstack_python_sees_a_wrong_key_as_an_error(server: Server):
    client = ds.DeepstackObject(ip="127.0.0.1", port=server.port, api_key="wrong")
    with pytest.raises(ds.DeepstackException, match="401"):
        client.detect(image_bytes(64, 64))

"""Property-based tests (hypothesis): the decoder and the query validation never fail
in an undesigned way, whatever they are given."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.imaging.decoding import DecodedImage, DecodeError, decode_image_bytes
from tests.support.app_client import make_client, wait_ready
from tests.support.images import image_bytes

SEEDS = {
    "jpeg": image_bytes(40, 30, "JPEG"),
    "png": image_bytes(40, 30, "PNG"),
    "webp": image_bytes(40, 30, "WEBP"),
    "bmp": image_bytes(40, 30, "BMP"),
}
LIMIT = 1_000_000


def check_decode(data: bytes) -> None:
    try:
        decoded = decode_image_bytes(data, LIMIT)
    except DecodeError as exc:
        assert exc.status in (400, 413, 415)
        assert exc.detail and "Traceback" not in exc.detail
        return
    assert isinstance(decoded, DecodedImage)
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape[2] == 3
    assert decoded.width * decoded.height <= LIMIT


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_any_bytes_decode_or_get_a_designed_error(data: bytes) -> None:
    check_decode(data)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(SEEDS)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10_000),
)
def test_mutated_real_images_decode_or_get_a_designed_error(
    kind: str, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(SEEDS[kind])
    for position, value in flips:
        data[position % len(data)] = value
    check_decode(bytes(data[: max(1, len(data) - cut % len(data))]))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from tests.support.weights import make_weights

    weights = make_weights(tmp_path_factory.mktemp("prop-weights"), objectness_bias=6.0)
    with make_client(weights) as test_client:
        wait_ready(test_client)
        yield test_client


query_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**6), 10**6).map(str),
    st.text(max_size=20),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(score=query_value, iou=query_value, top=query_value, classes=st.text(max_size=40))
def test_query_values_get_200_or_a_422(
    client: TestClient, score: str, iou: str, top: str, classes: str
) -> None:
    params = {"score_threshold": score, "iou_threshold": iou, "max_detections": top, "classes": classes}
    response = client.post("/detect", params=params, files={"image": ("x.jpg", SEEDS["jpeg"])})
    assert response.status_code in (200, 422), response.text
    assert isinstance(response.json().get("detail", ""), str)

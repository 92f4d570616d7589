"""POST /v1/vision/detection, called as Frigate's deepstack detector and Blue Iris call it, and
parsed as their public documentation describes the answer."""

from __future__ import annotations

import pytest

from app.api.deepstack import DEEPSTACK_LABELS
from model.config import VOC_CLASSES
from tests.support.app_client import make_client, wait_ready
from tests.support.images import image_bytes
from tests.support.weights import make_weights

# The COCO names these clients' label maps use for the VOC classes.
COCO_NAMES = {
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch",
    "train", "tv",
}  # fmt: skip


def frigate_parse(body: dict, width: int, height: int) -> list[tuple[str, float, float, float, float, float]]:
    """As Frigate's deepstack plugin reads an answer: predictions sorted by confidence, stopping
    under 0.4, boxes as integers divided by the frame size."""
    rows = []
    for prediction in body.get("predictions") or []:
        if prediction["confidence"] < 0.4:
            break
        rows.append(
            (
                prediction["label"],
                float(prediction["confidence"]),
                prediction["y_min"] / height,
                prediction["x_min"] / width,
                prediction["y_max"] / height,
                prediction["x_max"] / width,
            )
        )
    return rows


def test_every_voc_class_gets_a_name_the_clients_know():
    names = {DEEPSTACK_LABELS.get(name, name) for name in VOC_CLASSES}
    assert names == COCO_NAMES


def test_frigate_style_request(client):
    response = client.post(
        "/v1/vision/detection", files={"image": ("frame.jpg", image_bytes(320, 240))}, data={"api_key": ""}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["count"] == len(body["predictions"]) > 0
    confidences = [p["confidence"] for p in body["predictions"]]
    assert confidences == sorted(confidences, reverse=True)
    for prediction in body["predictions"]:
        assert set(prediction) == {"label", "confidence", "x_min", "y_min", "x_max", "y_max"}
        assert all(isinstance(prediction[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= prediction["x_min"] < prediction["x_max"] <= 320
        assert 0 <= prediction["y_min"] < prediction["y_max"] <= 240
        assert prediction["label"] in COCO_NAMES
    rows = frigate_parse(body, 320, 240)
    assert rows and all(0 <= v <= 1 for row in rows for v in row[2:])


def test_min_confidence_is_honoured_and_checked(client):
    files = {"image": ("frame.jpg", image_bytes(200, 100))}
    low = client.post("/v1/vision/detection", files=files, data={"min_confidence": "0.0"}).json()
    high = client.post("/v1/vision/detection", files=files, data={"min_confidence": "0.99"}).json()
    assert len(high["predictions"]) < len(low["predictions"])
    assert all(p["confidence"] >= 0.99 for p in high["predictions"])
    bad = client.post("/v1/vision/detection", files=files, data={"min_confidence": "lots"})
    assert bad.status_code == 400
    assert bad.json()["success"] is False and "min_confidence" in bad.json()["error"]


@pytest.mark.parametrize(
    ("files", "status"),
    [
        ({"image": ("x.jpg", b"garbage")}, 400),
        ({"picture": ("x.jpg", image_bytes())}, 400),
        ([("image", ("a.jpg", image_bytes())), ("image", ("b.jpg", image_bytes()))], 422),
    ],
)
def test_errors_in_deepstack_shape(client, files, status):
    response = client.post("/v1/vision/detection", files=files)
    assert response.status_code == status
    body = response.json()
    assert body["success"] is False and body["code"] == status and isinstance(body["error"], str)
    assert body["request_id"] == body["requestId"] == response.headers["x-request-id"]
    assert body["moduleId"] and body["command"] == "detect" and body["timestampUTC"].endswith("GMT")


def test_api_key_as_form_field_or_header(weights_dir):
    with make_client(weights_dir, api_key="k3y") as client:
        wait_ready(client)
        files = {"image": ("frame.jpg", image_bytes())}
        assert client.post("/v1/vision/detection", files=files, data={"api_key": "k3y"}).status_code == 200
        assert (
            client.post("/v1/vision/detection", files=files, headers={"X-API-Key": "k3y"}).status_code == 200
        )
        refused = client.post("/v1/vision/detection", files=files, data={"api_key": "nope"})
        assert refused.status_code == 401 and refused.json()["success"] is False
        assert client.post("/v1/vision/detection", files=files).status_code == 401


def test_a_field_given_twice_is_ambiguous(client):
    files = {"image": ("frame.jpg", image_bytes())}
    response = client.post(
        "/v1/vision/detection",
        files=[
            ("image", ("frame.jpg", image_bytes())),
            ("min_confidence", (None, "0.1")),
            ("min_confidence", (None, "0.9")),
        ],
    )
    assert response.status_code == 400 and "given 2 times" in response.json()["error"]
    assert client.post("/v1/vision/detection", files=files, data={"min_confidence": "0.5"}).status_code == 200


CODEPROJECT_FIELDS = {"message", "moduleId", "moduleName", "code", "command", "requestId", "inferenceDevice"}


def test_answers_carry_codeproject_fields(client):
    response = client.post("/v1/vision/detection", files={"image": ("frame.jpg", image_bytes(320, 240))})
    body = response.json()
    assert CODEPROJECT_FIELDS | {"timestampUTC"} <= set(body)
    assert body["code"] == 200 and body["command"] == "detect" and body["inferenceDevice"] == "CPU"
    assert body["requestId"] == response.headers["x-request-id"]
    assert body["message"] == f"Found {body['count']} objects"


def test_custom_list_names_the_served_model(client):
    body = client.post("/v1/vision/custom/list").json()
    assert (
        body["success"] is True and body["models"] == ["resnet18-grid"] and body["command"] == "list-custom"
    )


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """Random weights at input 320 (a 10 x 10 grid) that box every cell of a frame."""
    folder = make_weights(tmp_path_factory.mktemp("crowd"), input_size=320, objectness_bias=6.0)
    with make_client(folder) as client:
        wait_ready(client)
        yield client


def test_a_crowded_frame_gives_at_most_twenty_best_predictions(crowded):
    """Frigate keeps a fixed array of 20 rows: a 21st prediction at or over 0.4 crashes it."""
    client, frame = crowded, image_bytes(640, 640)
    everything = client.post(
        "/detect", params={"score_threshold": 0.4}, files={"image": ("f.jpg", frame)}
    ).json()
    scores = [d["score"] for d in everything["results"][0]["detections"]]
    assert len(scores) > 20  # the random test weights box the whole frame
    body = client.post(
        "/v1/vision/detection", files={"image": ("f.jpg", frame)}, data={"min_confidence": "0.4"}
    ).json()
    assert body["count"] == len(body["predictions"]) == 20
    assert [p["confidence"] for p in body["predictions"]] == scores[:20]
    assert len(frigate_parse(body, 640, 640)) == 20


def test_the_cap_is_a_setting(weights_dir):
    with make_client(weights_dir, deepstack_max_predictions=1) as client:
        wait_ready(client)
        body = client.post("/v1/vision/detection", files={"image": ("f.jpg", image_bytes(640, 640))}).json()
        assert body["count"] == 1

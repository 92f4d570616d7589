"""POST /detect: every field of the response contract, multipart and raw bodies."""

import json

import pytest

from model.config import VOC_CLASSES
from tests.support.images import image_bytes


def check_result(result, width, height):
    assert (result["width"], result["height"]) == (width, height)
    scores = [d["score"] for d in result["detections"]]
    assert scores == sorted(scores, reverse=True)
    for detection in result["detections"]:
        box = detection["box"]
        assert 0 <= box["x_min"] < box["x_max"] <= width
        assert 0 <= box["y_min"] < box["y_max"] <= height
        assert VOC_CLASSES[detection["class_id"]] == detection["class_name"]
        assert 0 <= detection["score"] <= 1


def test_multipart_single_image_matches_the_contract(client, weights_dir):
    sha = json.loads((weights_dir / "model.json").read_text())["sha256"]
    response = client.post("/detect", files={"image": ("photo.jpg", image_bytes(120, 80), "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model", "params", "results", "timing_ms"}
    assert body["model"] == {"name": "resnet18-grid", "version": sha[:12]}
    assert body["params"] == {
        "score_threshold": 0.25,
        "iou_threshold": 0.45,
        "max_detections": 100,
        "classes": None,
        "flip": False,
    }
    assert set(body["timing_ms"]) == {"decode", "inference", "total"}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"] >= 0
    (result,) = body["results"]
    assert result["filename"] == "photo.jpg"
    assert len(result["detections"]) > 0
    check_result(result, 120, 80)


def test_several_parts_come_back_in_request_order(client):
    files = [
        ("image", (f"{k}.png", image_bytes(40 + 10 * k, 30 + 5 * k, "PNG"), "image/png")) for k in range(4)
    ]
    response = client.post("/detect", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["0.png", "1.png", "2.png", "3.png"]
    for k, result in enumerate(results):
        check_result(result, 40 + 10 * k, 30 + 5 * k)


def test_same_image_alone_or_in_a_batch_gives_the_same_boxes(client):
    data = image_bytes(100, 60)
    alone = client.post("/detect", files={"image": ("a.jpg", data)}).json()["results"][0]
    together = client.post(
        "/detect", files=[("image", ("b.jpg", image_bytes(70, 70))), ("image", ("a.jpg", data))]
    )
    batched = together.json()["results"][1]["detections"]
    assert [d["class_id"] for d in batched] == [d["class_id"] for d in alone["detections"]]
    for a, b in zip(batched, alone["detections"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        for key in a["box"]:
            assert a["box"][key] == pytest.approx(b["box"][key], abs=0.02)


def test_raw_body_with_an_image_content_type(client):
    response = client.post(
        "/detect", content=image_bytes(64, 48, "WEBP"), headers={"Content-Type": "image/webp"}
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["filename"] is None
    check_result(result, 64, 48)


def test_query_parameters_apply_and_echo(client):
    data = image_bytes(120, 80)
    params = {"score_threshold": 0.5, "iou_threshold": 0.3, "max_detections": 2, "classes": "dog, person,dog"}
    response = client.post("/detect", params=params, files={"image": ("x.jpg", data)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["params"] == {
        "score_threshold": 0.5,
        "iou_threshold": 0.3,
        "max_detections": 2,
        "classes": ["dog", "person"],
        "flip": False,
    }
    detections = body["results"][0]["detections"]
    assert len(detections) <= 2
    assert all(d["class_name"] in ("dog", "person") and d["score"] >= 0.5 for d in detections)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"score_threshold": "high"}, "score_threshold"),
        ({"iou_threshold": -0.1}, "iou_threshold"),
        ({"max_detections": 0}, "max_detections"),
        ({"max_detections": 1001}, "max_detections"),
        ({"classes": "dog,unicorn"}, "unicorn"),
    ],
)
def test_bad_query_values_are_422_with_a_readable_detail(client, params, fragment):
    response = client.post("/detect", params=params, files={"image": ("x.jpg", image_bytes())})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail


def test_unknown_class_lists_the_valid_names(client):
    detail = client.post("/detect?classes=unicorn", files={"image": ("x.jpg", image_bytes())}).json()[
        "detail"
    ]
    assert all(name in detail for name in VOC_CLASSES)


def test_concurrent_requests_keep_their_own_parameters(client):
    from concurrent.futures import ThreadPoolExecutor

    data = image_bytes(90, 90)

    def call(k):
        limit = 1 + k % 3
        response = client.post(
            "/detect",
            params={"max_detections": limit, "score_threshold": 0.0},
            files={"image": ("x.jpg", data)},
        )
        return limit, response.json()

    with ThreadPoolExecutor(8) as pool:
        for limit, body in pool.map(call, range(24)):
            assert body["params"]["max_detections"] == limit
            assert len(body["results"][0]["detections"]) == limit


def test_format_image_returns_the_drawn_picture(client):
    import io

    from PIL import Image

    data = image_bytes(120, 80)
    for fmt, media, pil in (("image", "image/jpeg", "JPEG"), ("png", "image/png", "PNG")):
        response = client.post(f"/detect?format={fmt}", files={"image": ("x.jpg", data)})
        assert response.status_code == 200 and response.headers["content-type"] == media
        assert int(response.headers["X-Detections"]) > 0
        drawn = Image.open(io.BytesIO(response.content))
        assert drawn.format == pil and drawn.size == (120, 80)
    plain = client.post("/detect?format=png&score_threshold=1", files={"image": ("x.jpg", data)})
    assert plain.headers["X-Detections"] == "0"
    two = [("image", ("a.jpg", data)), ("image", ("b.jpg", data))]
    assert client.post("/detect?format=image", files=two).status_code == 422
    assert client.post("/detect?format=gif", files={"image": ("x.jpg", data)}).status_code == 422


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "http" not in page.text.split("<script>")[1].replace("http-equiv", "")
    schema = client.get("/openapi.json").json()
    assert "/detect" in schema["paths"] and "DetectResponse" in schema["components"]["schemas"]


def test_flip_is_a_query_parameter_echoed_in_the_answer(client):
    data = image_bytes(120, 90)
    plain = client.post("/detect", params={"score_threshold": 0.01}, files={"image": ("x.jpg", data)}).json()
    flipped = client.post(
        "/detect", params={"score_threshold": 0.01, "flip": "true"}, files={"image": ("x.jpg", data)}
    ).json()
    assert (plain["params"]["flip"], flipped["params"]["flip"]) == (False, True)
    scores = [[d["score"] for d in body["results"][0]["detections"]] for body in (plain, flipped)]
    assert scores[0] and scores[1] and scores[0] != scores[1]


def test_an_input_size_that_is_no_multiple_of_32_is_refused_at_start():
    from pydantic import ValidationError

    from app.settings import Settings

    with pytest.raises(ValidationError, match="multiple of 32"):
        Settings(input_size=300)

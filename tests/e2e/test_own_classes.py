"""Own classes end to end: a tiny model fine-tuned to a 2-class YOLO dataset, then served by a real
uvicorn process that answers those names on /detect, the DeepStack route, /model and the page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from model import evaluate, train
from tests.support.datasets import generate, write_yolo
from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow

NAMES = ["motorbike", "raccoon"]  # one VOC name (never renamed for DeepStack here) and one new one
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("own")
    start = make_weights(root / "start", objectness_bias=6.0)
    yaml = write_yolo(
        root / "data", {"train": generate(12, 2, seed=3), "val": generate(4, 2, seed=4, prefix="v")}, NAMES
    )
    export = root / "export"
    args = ["--data", str(yaml), "--init-from", str(start), "--out", str(root / "run"), "--epochs", "1"]
    args += ["--batch-size", "4", "--workers", "0", "--log-images", "0", "--export", str(export)]
    assert train.main(args) == 0
    return export


def test_the_card_says_where_it_started_and_what_it_learned(fine_tuned: Path, capsys):
    meta = json.loads((fine_tuned / "model.json").read_text())
    assert meta["classes"] == NAMES and meta["input_size"] == 64
    card = meta["card"]
    assert card["init_from"]["classes"][13] == "motorbike" and card["init_from"]["classes_kept"] == [
        "motorbike"
    ]
    assert card["val_data"]["classes"] == NAMES and card["val_data"]["images"] == 4
    assert card["train_images"] == 12 and 12 <= card["train_objects"] <= 24
    assert "YOLO data.yaml" in card["data_read"][0]
    assert set(card["val"]["ap50_per_class"]) == set(NAMES)
    data = str(Path(card["data"][0]))
    capsys.readouterr()
    assert (
        evaluate.main(["--weights", str(fine_tuned), "--data", data, "--device", "cpu", "--workers", "0"])
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["ap"]) == set(NAMES) and report["images"] == 4


def test_a_real_server_answers_the_cards_classes(fine_tuned: Path, tmp_path: Path):
    photo = image_bytes(200, 150)
    with Server(fine_tuned) as server:
        card = httpx.get(f"{server.url}/model").json()
        assert card["classes"] == NAMES
        answer = httpx.post(
            f"{server.url}/detect", params={"score_threshold": 0}, files={"image": ("a.jpg", photo)}
        ).json()
        names = {d["class_name"] for d in answer["results"][0]["detections"]}
        assert names and names <= set(NAMES)
        only = httpx.post(
            f"{server.url}/detect",
            params={"score_threshold": 0, "classes": "raccoon"},
            files={"image": ("a.jpg", photo)},
        ).json()
        assert {d["class_name"] for d in only["results"][0]["detections"]} <= {"raccoon"}
        wrong = httpx.post(
            f"{server.url}/detect", params={"classes": "dog"}, files={"image": ("a.jpg", photo)}
        )
        assert wrong.status_code == 422 and "motorbike, raccoon" in wrong.json()["detail"]
        deepstack = httpx.post(
            f"{server.url}/v1/vision/detection",
            files={"image": ("f.jpg", photo)},
            data={"min_confidence": "0"},
        ).json()
        labels = {p["label"] for p in deepstack["predictions"]}
        assert deepstack["success"] and labels and labels <= set(NAMES)  # "motorbike", not "motorcycle"
        if Path(CHROMIUM).exists():
            sync_api = pytest.importorskip("playwright.sync_api")
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page()
                page.goto(f"{server.url}/")
                page.wait_for_selector("#classes input")
                shown = page.eval_on_selector_all("#classes input", "boxes => boxes.map(b => b.value)")
                browser.close()
            assert shown == NAMES

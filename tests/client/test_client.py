"""The client distribution (client/) against a real uvicorn serving the shipped weights."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from detector_client import AsyncDetectorClient, DetectorClient, DetectorError, RetryPolicy
from detector_client.cli import main as cli_main
from detector_client.client import Upload, pack
from detector_client.models import Box, Detection, ImageResult
from PIL import Image

from tests.support.attacks import photo_like
from tests.support.serving import ROOT, Server, SlowUpload

pytestmark = pytest.mark.slow

SHIPPED = ROOT / "weights"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server(SHIPPED) as instance:
        yield instance


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of textured photos, one nested, and one corrupt file among them."""
    root = tmp_path_factory.mktemp("photos")
    (root / "nested").mkdir()
    for k in range(5):
        (root / f"p{k}.jpg").write_bytes(photo_like(320 + 16 * k, 240, seed=k))
    (root / "nested" / "q.png").write_bytes(photo_like(200, 300, "PNG", seed=9))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"not really a jpeg" * 20)
    (root / "notes.txt").write_text("not an image, and not picked up")
    return root


def plain_detect(server: Server, data: bytes, name: str) -> dict:
    response = httpx.post(
        f"{server.url}/detect", files={"image": (name, data)}, params={"score_threshold": 0.05}
    )
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_sync_client_takes_paths_bytes_and_pil_images(server: Server, photos: Path):
    path = photos / "p0.jpg"
    data = (photos / "p1.jpg").read_bytes()
    pil = Image.open(photos / "nested" / "q.png").convert("RGB")
    with DetectorClient(server.url) as client:
        results = client.detect([path, data, pil], score_threshold=0.05)
    assert [(r.width, r.height) for r in results] == [(320, 240), (336, 240), (200, 300)]
    assert results[0].filename == "p0.jpg" and results[2].filename.endswith(".png")
    # The same detections as a hand-written request.
    expected = plain_detect(server, path.read_bytes(), "p0.jpg")
    assert results[0].model_dump() == expected


def test_async_client_packs_requests_up_to_the_limit(server: Server, photos: Path):
    paths = sorted(photos.glob("p*.jpg"))

    async def run() -> list[ImageResult]:
        async with AsyncDetectorClient(server.url, max_images_per_request=2, concurrency=2) as client:
            return await client.detect(paths * 2, score_threshold=0.05)

    results = asyncio.run(run())
    assert len(results) == 10
    assert [r.filename for r in results] == [p.name for p in paths] * 2
    assert results[0].model_dump() == results[5].model_dump()


def test_async_detect_each_gives_only_the_bad_file_its_error(server: Server, photos: Path):
    paths = [*sorted(photos.glob("p*.jpg")), photos / "broken.jpg", photos / "missing.jpg"]

    async def run() -> dict[int, object]:
        async with AsyncDetectorClient(server.url, max_images_per_request=3, concurrency=2) as client:
            return {k: found async for k, found in client.detect_each(paths, score_threshold=0.05)}

    answers = asyncio.run(run())
    assert sorted(answers) == list(range(7))
    for k in range(5):
        assert isinstance(answers[k], ImageResult) and answers[k].filename == paths[k].name
    assert isinstance(answers[5], DetectorError) and answers[5].status == 400  # refused by the server
    assert isinstance(answers[6], DetectorError) and answers[6].status == 0  # not readable here
    assert answers[0].model_dump() == plain_detect(server, paths[0].read_bytes(), "p0.jpg")


def test_packing_respects_images_and_bytes():
    uploads = [Upload(f"{k}", b"x" * size) for k, size in enumerate([100, 100, 100, 5000, 100])]
    assert pack(uploads, max_images=2, max_bytes=10_000) == [[0, 1], [2, 3], [4]]
    assert pack(uploads, max_images=16, max_bytes=2000) == [[0, 1, 2], [3], [4]]


def test_503_with_retry_after_is_retried(weights_dir: Path):
    # A body still arriving holds an upload slot (not an in-flight one): with one upload slot, a
    # slow upload holds it for 1.5 s and the client's first try gets 503 Retry-After: 1.
    with Server(weights_dir, DETECTOR_MAX_UPLOADS="1") as busy:
        data = photo_like(64, 48)
        holder = SlowUpload(f"{busy.url}/detect", data, first=10, pause=1.5, timeout=30)
        holder.start()
        time.sleep(0.4)
        with DetectorClient(busy.url, retry=RetryPolicy(retries=3)) as client:
            (result,) = client.detect(data)
        holder.join()
        assert holder.response is not None and holder.response.status_code == 200
        assert (result.width, result.height) == (64, 48)
        metrics = httpx.get(f"{busy.url}/metrics").text
        assert 'detector_requests_total{route="/detect",status="503"}' in metrics  # it did get one
        holder = SlowUpload(f"{busy.url}/detect", data, first=10, pause=1.5, timeout=30)
        holder.start()
        time.sleep(0.4)
        with (
            DetectorClient(busy.url, retry=RetryPolicy(retries=0)) as client,
            pytest.raises(DetectorError) as caught,
        ):
            client.detect(data)
        holder.join()
        assert caught.value.status == 503 and "retry after" in caught.value.detail


def test_errors_carry_status_detail_and_request_id(server: Server):
    with DetectorClient(server.url) as client, pytest.raises(DetectorError) as caught:
        client.detect(b"definitely not an image")
    error = caught.value
    assert error.status == 400 and "not a recognisable image" in error.detail
    assert error.request_id and len(error.request_id) >= 16


def test_coco_csv_and_normalized_formats_by_value():
    result = ImageResult(
        filename="a.jpg",
        width=200,
        height=100,
        detections=[
            Detection(
                class_id=11, class_name="dog", score=0.9, box=Box(x_min=10, y_min=20, x_max=110, y_max=70)
            ),
            Detection(
                class_id=14, class_name="person", score=0.5, box=Box(x_min=0, y_min=0, x_max=50, y_max=100)
            ),
        ],
    )
    assert [d.coco_bbox for d in result.detections] == [[10, 20, 100, 50], [0, 0, 50, 100]]
    annotations = result.coco_annotations(image_id=7, first_id=3)
    assert [(a["id"], a["image_id"], a["category_id"], a["area"]) for a in annotations] == [
        (3, 7, 12, 5000),
        (4, 7, 15, 5000),
    ]
    assert result.normalized_xyxy() == [(0.05, 0.2, 0.55, 0.7), (0.0, 0.0, 0.25, 1.0)]
    assert result.csv_rows("a.jpg")[0] == ("a.jpg", 200, 100, "dog", 0.9, 10, 20, 110, 70, "")
    empty = ImageResult(filename=None, width=5, height=5, detections=[])
    assert empty.csv_rows("e.jpg") == [("e.jpg", 5, 5, "", "", "", "", "", "", "")]


def test_cli_over_a_folder_with_a_corrupt_file_then_resumes(
    server: Server, photos: Path, tmp_path: Path, capsys
):
    out = tmp_path / "results.jsonl"
    drawn = tmp_path / "drawn"
    argv = [
        "detect",
        str(photos),
        "--url",
        server.url,
        "--out",
        str(out),
        "--format",
        "csv",
        "--draw",
        str(drawn),
    ]
    argv += ["--score-threshold", "0.05"]
    assert cli_main(argv) == 0
    summary = capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_path = {Path(r["path"]).name: r for r in records}
    assert set(by_path) == {"p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "p4.jpg", "q.png", "broken.jpg"}
    assert by_path["broken.jpg"]["error"]["status"] == 400
    assert all("error" not in r for name, r in by_path.items() if name != "broken.jpg")
    assert "7 images" in summary and "1 errors" in summary and "broken.jpg" in summary
    # Each good record equals the service's own answer for that file.
    expected = plain_detect(server, (photos / "p3.jpg").read_bytes(), "p3.jpg")
    assert {k: by_path["p3.jpg"][k] for k in ("width", "height", "detections")} == {
        k: expected[k] for k in ("width", "height", "detections")
    }
    # CSV: one row per detection (or one empty row), the error row with its detail.
    rows = list(csv.DictReader(io.StringIO(out.with_suffix(".csv").read_text())))
    assert {Path(r["path"]).name for r in rows} == set(by_path)
    assert sum(1 for r in rows if r["class_name"]) == sum(len(r.get("detections", [])) for r in records)
    # Annotated copies, nested as the sources are.
    assert (drawn / "nested" / "q_png.jpg").exists() and (drawn / "p0_jpg.jpg").exists()
    # A second run does no work.
    before = out.read_text()
    assert cli_main(argv) == 0
    assert "0 to do" in capsys.readouterr().err
    assert out.read_text() == before


def test_cli_coco_results_load_and_score_in_pycocotools(random_server: Server, photos: Path, tmp_path: Path):
    """The ground truth is the service's own boxes over 0.3 (random weights that box everything),
    under other ids and folder names: the CLI's results must map onto it by file name and class
    name, and score AP 1.0 there."""
    server = random_server
    coco_api = pytest.importorskip("pycocotools.coco")
    coco_eval = pytest.importorskip("pycocotools.cocoeval")
    paths = sorted(photos.glob("p*.jpg"))
    card = httpx.get(f"{server.url}/model").json()
    category = {name: 100 + 7 * k for k, name in enumerate(card["classes"])}
    images, annotations = [], []
    for k, path in enumerate(paths):
        response = httpx.post(f"{server.url}/detect", files={"image": (path.name, path.read_bytes())})
        found = response.json()["results"][0]
        images.append(
            {
                "id": 1000 + k,
                "file_name": f"val/{path.name}",
                "width": found["width"],
                "height": found["height"],
            }
        )
        for d in found["detections"]:
            if d["score"] >= 0.3:
                b = d["box"]
                w, h = b["x_max"] - b["x_min"], b["y_max"] - b["y_min"]
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": 1000 + k, "iscrowd": 0, "area": w * h,
                     "category_id": category[d["class_name"]], "bbox": [b["x_min"], b["y_min"], w, h]}
                )  # fmt: skip
    assert annotations, "the weights must box something for this test to mean anything"
    gt_path = tmp_path / "gt.json"
    categories = [{"id": i, "name": n} for n, i in category.items()]
    gt_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    out = tmp_path / "results.json"
    argv = ["detect", *map(str, paths), "--url", server.url, "--out", str(out), "--score-threshold", "0.1"]
    assert cli_main([*argv, "--format", "coco", "--coco-gt", str(gt_path)]) == 0
    assert out.with_suffix(".jsonl").is_file()  # the resumable records, beside the results
    ground = coco_api.COCO(str(gt_path))
    scored = coco_eval.COCOeval(ground, ground.loadRes(str(out)), "bbox")
    scored.evaluate()
    scored.accumulate()
    scored.summarize()
    assert scored.stats[0] > 0.99  # AP@[.5:.95]: every box found where it is, under its own id


def test_cli_coco_results_refuse_what_the_ground_truth_lacks(server: Server, photos: Path, tmp_path: Path):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(
        json.dumps({"images": [{"id": 1, "file_name": "p0.jpg"}], "annotations": [], "categories": []})
    )
    argv = ["detect", str(photos / "p0.jpg"), str(photos / "p1.jpg"), "--url", server.url]
    with pytest.raises(SystemExit, match=r"match no single file_name.*p1\.jpg"):
        cli_main([*argv, "--out", str(tmp_path / "r.json"), "--format", "coco", "--coco-gt", str(gt_path)])
    with pytest.raises(SystemExit, match="--coco-gt"):
        cli_main([*argv, "--out", str(tmp_path / "s.json"), "--format", "coco"])


def test_cli_coco_dataset_output(server: Server, photos: Path, tmp_path: Path):
    out = tmp_path / "r.jsonl"
    argv = ["detect", str(photos / "p0.jpg"), str(photos / "p1.jpg"), "--url", server.url, "--out", str(out)]
    assert cli_main([*argv, "--format", "coco-dataset", "--score-threshold", "0.05"]) == 0
    coco = json.loads(out.with_suffix(".coco.json").read_text())
    assert [image["width"] for image in coco["images"]] == [320, 336]
    assert len(coco["categories"]) == 20 and coco["categories"][11] == {"id": 12, "name": "dog"}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(coco["annotations"]) == sum(len(r["detections"]) for r in records)


def test_installs_without_torch_and_its_cli_runs(server: Server, photos: Path, tmp_path: Path):
    """``pip install ./client`` into a fresh virtual environment (dependencies from the package
    index), then its CLI against the real service."""
    import subprocess
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT / "client")],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    probe = "import importlib.util, detector_client; print(importlib.util.find_spec('torch') is None)"
    assert (
        subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    )
    out = tmp_path / "fresh.jsonl"
    run = subprocess.run(
        [
            str(venv / "bin" / "detector-client"),
            "detect",
            str(photos / "p0.jpg"),
            "--url",
            server.url,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["width"], record["height"]) == (320, 240)


def test_drawings_have_readable_labels_and_one_name_per_file(tmp_path: Path):
    from detector_client.drawing import PALETTE, draw, drawing_name

    assert drawing_name(Path("x/a.jpg")) != drawing_name(Path("x/a.png"))
    assert drawing_name(Path("x/a.png")) == Path("x/a_png.jpg")
    source = tmp_path / "a.png"
    Image.new("RGB", (400, 300), (128, 128, 128)).save(source)
    box = Box(x_min=50, y_min=80, x_max=250, y_max=250)
    result = ImageResult(
        filename="a.png", width=400, height=300,
        detections=[Detection(class_id=0, class_name="aeroplane", score=0.87, box=box)],
    )  # fmt: skip
    target = tmp_path / "drawn" / "a_png.jpg"
    draw(source, result, target)
    pixels = Image.open(target).convert("RGB")
    label_band = [pixels.getpixel((x, y)) for x in range(50, 150) for y in range(60, 80)]
    filled = sum(all(abs(c - p) < 40 for c, p in zip(px, PALETTE[0], strict=True)) for px in label_band)
    white = sum(min(px) > 200 for px in label_band)
    assert filled > 0.4 * len(label_band) and white > 20  # a filled label above the box, with white text

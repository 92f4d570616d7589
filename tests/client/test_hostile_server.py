"""The client against a server that misbehaves: every malformed answer, a dripping answer and a
huge one end the call with a DetectorError that says so (and the CLI with a message), never a
traceback or an unbounded wait."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from detector_client import DetectorClient, DetectorError
from detector_client.cli import main as cli_main

from tests.support.images import image_bytes

CARD = {"classes": ["cat", "dog"], "limits": {"max_images_per_request": 4, "max_upload_bytes": 10**7}}
DETECTION = {
    "class_id": 1,
    "class_name": "dog",
    "score": 0.9,
    "box": {"x_min": 1, "y_min": 2, "x_max": 30, "y_max": 40},
}
GOOD = {
    "model": {"name": "m", "version": "v"},
    "params": {"score_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 100, "classes": None},
    "results": [{"filename": "a.jpg", "width": 64, "height": 48, "detections": [DETECTION]}],
    "timing_ms": {"decode": 1.0, "inference": 1.0, "total": 2.0},
}


def answer(mode: str) -> tuple[int, dict[str, str], bytes]:
    bad_box = {**DETECTION, "box": {"x_min": 30, "y_min": 2, "x_max": 1, "y_max": 40}}
    bodies = {
        "good": GOOD,
        "schema": {"results": "no"},
        "fewer": {**GOOD, "results": []},
        "box": {**GOOD, "results": [{**GOOD["results"][0], "detections": [bad_box]}]},
    }
    if mode in bodies:
        return 200, {"Content-Type": "application/json"}, json.dumps(bodies[mode]).encode()
    raise KeyError(mode)


class Hostile(BaseHTTPRequestHandler):
    mode = "good"
    card_mode = "card"

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.card_mode == "list":
            self.reply(200, {"Content-Type": "application/json"}, b"[]")
        elif self.card_mode == "redirect":
            self.reply(302, {"Location": "http://127.0.0.1:1/elsewhere"}, b"")
        else:
            self.reply(200, {"Content-Type": "application/json"}, json.dumps(CARD).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.mode == "drip":
            body = json.dumps(GOOD).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for k in range(len(body)):  # one byte every 0.3 s: each read is quick, the whole is not
                self.wfile.write(body[k : k + 1])
                self.wfile.flush()
                time.sleep(0.3)
        elif self.mode == "huge":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")  # no Content-Length to refuse it by
            self.end_headers()
            chunk = b"x" * 65536
            for _ in range(200):  # 13 MB
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.reply(*answer(self.mode))


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hanging up on a dripping or huge answer is the point of those tests


@pytest.fixture
def hostile() -> Iterator[tuple[str, type[Hostile]]]:
    handler = type("Handler", (Hostile,), {})
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()


def detect(url: str, **options: object):
    with DetectorClient(url, **options) as client:  # type: ignore[arg-type]
        return client.detect(image_bytes(64, 48))


def test_a_good_answer_still_reads(hostile):
    url, _ = hostile
    (result,) = detect(url)
    assert result.detections[0].class_name == "dog"


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [("schema", "not a /detect answer"), ("fewer", "0 results for 1 images"), ("box", "out of order")],
)
def test_malformed_answers_are_clear_errors(hostile, mode: str, fragment: str):
    url, handler = hostile
    handler.mode = mode
    with pytest.raises(DetectorError, match=fragment):
        detect(url)


@pytest.mark.parametrize("card_mode", ["list", "redirect"])
def test_a_model_card_that_is_no_card_is_a_clear_error(hostile, card_mode: str):
    url, handler = hostile
    handler.card_mode = card_mode
    with pytest.raises(DetectorError, match="did not answer a model card"):
        detect(url)


def test_a_dripping_answer_is_bounded_by_the_timeout(hostile):
    url, handler = hostile
    handler.mode = "drip"
    start = time.monotonic()
    with pytest.raises(DetectorError, match="within the 2 s timeout"):
        detect(url, timeout=2.0)
    assert time.monotonic() - start < 5  # the whole answer would take over a minute


def test_a_huge_answer_is_cut_off(hostile):
    url, handler = hostile
    handler.mode = "huge"
    with pytest.raises(DetectorError, match="max_answer_bytes"):
        detect(url, max_answer_bytes=2**20)


def test_the_cli_says_what_went_wrong_and_exits_non_zero(hostile, tmp_path: Path, capsys):
    url, handler = hostile
    handler.card_mode = "list"
    photo = tmp_path / "a.jpg"
    photo.write_bytes(image_bytes(64, 48))
    assert cli_main(["detect", str(photo), "--url", url, "--out", str(tmp_path / "r.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "error: GET /model did not answer a model card" in err and "Traceback" not in err


def test_a_torn_last_line_is_not_glued_to_the_next_record(hostile, tmp_path: Path):
    url, _ = hostile
    out = tmp_path / "r.jsonl"
    first, second = tmp_path / "a.jpg", tmp_path / "b.jpg"
    for path in (first, second):
        path.write_bytes(image_bytes(64, 48))
    out.write_text(
        json.dumps({"path": str(first), "width": 64, "height": 48, "detections": []})
        + '\n{"path": "'
        + str(second)
    )
    assert cli_main(["detect", str(first), str(second), "--url", url, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.endswith("}")]
    assert [r["path"] for r in records] == [str(first), str(second)]  # b.jpg done again, on a line of its own

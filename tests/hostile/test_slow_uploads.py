"""Slots are held by requests ready to run, not by bodies still dripping in or by clients without
the key. Against a real server with the guarded protocol."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hostile.test_early_answers import connect, read_response
from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow

KEY = "right-key"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weights(Path(tmp_path_factory.mktemp("w")), input_size=64)


@pytest.fixture(scope="module")
def server(weights: Path) -> Iterator[Server]:
    with Server(
        weights,
        DETECTOR_API_KEY=KEY,
        DETECTOR_MAX_INFLIGHT_REQUESTS="4",
        DETECTOR_UPLOAD_GRACE_SECONDS="1.5",
    ) as running:
        yield running


class Dripper(threading.Thread):
    """Declares a body and sends it a byte every ``pause`` seconds; ``status`` is the answer's."""

    def __init__(self, server: Server, path: str, head: bytes, body: bytes, pause: float) -> None:
        super().__init__(daemon=True)
        self.server, self.path, self.head, self.body, self.pause = server, path, head, body, pause
        self.status: int | None = None
        self.detail = ""
        self.elapsed = 0.0

    def run(self) -> None:
        start = time.monotonic()
        with connect(self.server) as sock:
            sock.sendall(self.head)
            sock.settimeout(self.pause)
            for byte in self.body:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # an answer came
                except TimeoutError:
                    continue
            sock.settimeout(30)
            status, _, detail = read_response(sock)
        self.status, self.detail, self.elapsed = status, detail.decode(), time.monotonic() - start


def detect_head(length: int, key: str | None = KEY) -> bytes:
    head = f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n"
    head += f"X-API-Key: {key}\r\n" if key else ""
    return (head + "\r\n").encode()


def test_drips_hold_no_in_flight_slot_and_are_cut_by_the_minimum_rate(server: Server):
    data = image_bytes()
    drippers = [Dripper(server, "/detect", detect_head(len(data)), data, 0.3) for _ in range(12)]
    for dripper in drippers:
        dripper.start()
    time.sleep(0.3)
    answers = [
        httpx.post(
            f"{server.url}/detect", content=data, headers={"Content-Type": "image/jpeg", "X-API-Key": KEY}
        ).status_code
        for _ in range(8)
    ]
    assert answers == [200] * 8  # 12 drips beside 4 in-flight slots take none of them
    for dripper in drippers:
        dripper.join(20)
    assert {d.status for d in drippers} == {408}
    assert all("DETECTOR_MIN_UPLOAD_BYTES_PER_SECOND" in d.detail for d in drippers)
    assert max(d.elapsed for d in drippers) < 6  # the 1.5 s grace, not the 60 s body timeout


def deepstack_body(key: str | None, image: bytes) -> tuple[bytes, str]:
    data = {"api_key": key} if key is not None else None
    built = httpx.Request("POST", "http://x/", data=data, files={"image": ("a.jpg", image, "image/jpeg")})
    return built.read(), built.headers["content-type"]


def test_deepstack_uploads_without_the_key_are_refused_before_their_body(server: Server):
    image = image_bytes(64, 64) + b"\0" * 1_500_000  # a large body, of which only the start is sent
    refused = []
    for key in (None, "wrong"):
        body, content_type = deepstack_body(key, image)
        with connect(server) as sock:
            head = f"POST /v1/vision/detection HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:100_000])
            status, _, detail = read_response(sock)  # the rest is never sent: the answer comes anyway
        refused.append((status, json.loads(detail)))
    assert [status for status, _ in refused] == [401, 401]
    assert all("before the image" in answer["error"] for _, answer in refused)
    # The key in the form, ahead of the image as requests' data= puts it, or in a header: answered.
    body, content_type = deepstack_body(KEY, image_bytes())
    in_form = httpx.post(
        f"{server.url}/v1/vision/detection", content=body, headers={"Content-Type": content_type}
    )
    body, content_type = deepstack_body(None, image_bytes())
    in_header = httpx.post(
        f"{server.url}/v1/vision/detection",
        content=body,
        headers={"Content-Type": content_type, "X-API-Key": KEY},
    )
    assert in_form.status_code == in_header.status_code == 200
    assert in_form.json()["success"] is True


def test_many_keyless_deepstack_uploads_do_not_lock_out_the_keyed_client(server: Server):
    body, content_type = deepstack_body(None, image_bytes())
    head = f"POST /v1/vision/detection HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    drippers = [Dripper(server, "", head.encode(), body, 0.3) for _ in range(12)]
    for dripper in drippers:
        dripper.start()
    time.sleep(0.3)
    keyed, content_type = deepstack_body(KEY, image_bytes())
    answers = [
        httpx.post(
            f"{server.url}/v1/vision/detection", content=keyed, headers={"Content-Type": content_type}
        ).status_code
        for _ in range(6)
    ]
    assert answers == [200] * 6
    for dripper in drippers:
        dripper.join(20)
    assert {d.status for d in drippers} <= {401, 408}


def test_sigterm_with_a_slow_upload_exits_at_the_drain_timeout(weights: Path):
    with Server(
        weights,
        DETECTOR_DRAIN_TIMEOUT_SECONDS="2",
        DETECTOR_MIN_UPLOAD_BYTES_PER_SECOND="0",  # the drip is not cut by its rate: only the drain ends it
        DETECTOR_BODY_TIMEOUT_SECONDS="60",
    ) as server:
        data = image_bytes()
        dripper = Dripper(server, "/detect", detect_head(len(data), key=None), data, 0.5)
        dripper.start()
        time.sleep(0.5)
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
        took = time.monotonic() - start
        dripper.join(10)
    assert took < 2 + 2 + 2  # drain timeout + the aborted upload's grace + the drain delay, not 60 s
    assert dripper.status == 503 and "shutting down" in dripper.detail

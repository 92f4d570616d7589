"""Clients that hang up mid-body are the client's doing: never a 500, never a traceback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import attacks
from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(make_weights(Path(tmp_path_factory.mktemp("w")))) as running:
        yield running


def hang_up_mid_body(server: Server, path: str, declared: int, sent: int) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        head += f"Content-Length: {declared}\r\n\r\n"
        sock.sendall(head.encode() + b"\xff" * sent)
        time.sleep(0.2)


def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(server: Server):
    for path in ("/detect", "/v1/vision/detection"):
        for _ in range(3):
            hang_up_mid_body(server, path, declared=500_000, sent=70_000)
    time.sleep(0.5)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'status="500"' not in metrics
    assert 'detector_requests_total{route="/detect",status="499"} 3.0' in metrics
    assert "Traceback" not in server.output()
    answer = httpx.post(f"{server.url}/detect", files={"image": ("a.jpg", image_bytes())})
    assert answer.status_code == 200  # and the service keeps serving


def hung_up(server: Server) -> float:
    """How many /detect requests ended as 499, by /metrics."""
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith('detector_requests_total{route="/detect",status="499"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_client_that_hangs_up_while_its_images_decode_has_its_work_cancelled(server: Server):
    """The body arrives whole, then the client goes: the request ends as 499 (its decodes
    cancelled), not as work that runs on for nobody."""
    slow = attacks.photo_like(2000, 1600, "PNG")  # about 2 MB and 0.3 s of decoding each
    built = httpx.Request(
        "POST", f"{server.url}/detect", files=[("image", (f"{k}.png", slow)) for k in range(6)]
    )
    body = built.read()
    before = hung_up(server)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: {built.headers['content-type']}\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)  # decoding has begun
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and hung_up(server) == before:
        time.sleep(0.1)
    assert hung_up(server) == before + 1, server.output()[-3000:]
    assert "Traceback" not in server.output()
    assert httpx.post(f"{server.url}/detect", files={"image": ("a.jpg", image_bytes())}).status_code == 200

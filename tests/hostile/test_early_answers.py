"""Answers given before the body was read (a bad query, a wrong key) leave the connection usable:
the rest of the body is body, never the next request's head, and a ``Connection: close`` answer
arrives whole instead of as a TCP reset. Against a real server with the guarded protocol."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import image_bytes
from tests.support.serving import Server
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow

KEY = "right-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    weights = make_weights(Path(tmp_path_factory.mktemp("w")), input_size=64)
    with Server(weights, DETECTOR_API_KEY=KEY, DETECTOR_HEADER_TIMEOUT_SECONDS="2") as running:
        yield running


_LEFT: dict[int, bytes] = {}  # bytes read past an answer, by socket: the start of the next


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off the socket (what follows it is
    kept for the next call on the same socket)."""
    data = _LEFT.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    if len(rest) > length:
        _LEFT[sock.fileno()] = rest[length:]
    return int(lines[0].split(" ")[1]), headers, rest[:length]


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    _LEFT.pop(sock.fileno(), None)  # a closed socket's number may come back
    return sock


def post_head(path: str, length: int, key: str | None = KEY, close: bool = False) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n"
    head += f"X-API-Key: {key}\r\n" if key else ""
    head += "Connection: close\r\n" if close else ""
    return (head + "\r\n").encode()


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/detect?score_threshold=7", KEY, 422),
        ("/detect", "wrong", 401),
        ("/detect?classes=unicorn", KEY, 422),
    ],
)
def test_the_unread_body_of_an_early_answer_is_not_the_next_head(server: Server, path, key, status):
    body = b"\xff" * 300_000  # over the 64 KiB head limit: counted as head, it would be a 431
    with connect(server) as sock:
        sock.sendall(post_head(path, len(body), key) + body + GET_HEALTHZ)  # pipelined behind it
        first, _, detail = read_response(sock)
        second, _, health = read_response(sock)
        # and a third request on the same connection, after both
        sock.sendall(post_head("/detect", len(image_bytes())) + image_bytes())
        third, _, answer = read_response(sock)
    assert (first, second, third) == (status, 200, 200), detail
    assert json.loads(health) == {"status": "ok"}
    assert len(json.loads(answer)["results"]) == 1


@pytest.mark.parametrize("path", ["/detect?score_threshold=7", "/v1/vision/detection?x=1"])
def test_an_early_answer_to_connection_close_arrives_whole_not_as_a_reset(server: Server, path):
    body = b"\xff" * 400_000
    key = KEY if "score" in path else None  # the DeepStack route without a key: 401, before the body
    with connect(server) as sock:
        sock.sendall(post_head(path, len(body), key, close=True))
        time.sleep(0.3)  # the answer is sent while the body is still coming
        for start in range(0, len(body), 32_768):  # the client goes on sending: no reset meets it
            sock.sendall(body[start : start + 32_768])
        status, headers, detail = read_response(sock)
        assert sock.recv(65536) == b""  # then an orderly close
    assert status in (401, 422), detail
    assert headers.get("connection") == "close"
    answer = json.loads(detail)
    assert answer.get("detail") or answer.get("error")  # the DeepStack shape says "error"


def test_an_endless_unread_body_is_bounded_and_the_connection_closes_in_order(server: Server):
    """A client that declares a body far over the upload limit and keeps sending after the early
    answer: the server drops what it sends, then closes the connection after its answer."""
    with connect(server) as sock:
        sock.sendall(post_head("/detect?score_threshold=7", 10**9))  # declared over the limit: 413
        status, _, _ = read_response(sock)
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 8:
            try:
                sock.sendall(b"\xff" * 65_536)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.01)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            sock.settimeout(10)
    assert status in (413, 422)
    assert closed, "the server kept reading an unbounded unread body"

"""Hostile input, round 2, against a real uvicorn process: memory peak, a live event loop, slow
and oversized requests. The server runs with the guarded protocol, as deployed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import attacks
from tests.support.serving import Server
from tests.support.weights import make_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weights(tmp_path_factory.mktemp("bounds-weights"), input_size=128, objectness_bias=6.0)


@pytest.fixture(scope="module")
def server(weights: Path) -> Iterator[Server]:
    with Server(
        weights,
        DETECTOR_HEADER_TIMEOUT_SECONDS="1",
        DETECTOR_BODY_TIMEOUT_SECONDS="1.5",
        DETECTOR_MAX_REQUEST_PIXELS="1000000000",  # let the amplification through to the decoder
    ) as instance:
        yield instance


def raw_exchange(server: Server, request: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post_measuring_peak(server: Server, files: list, label: str) -> tuple[httpx.Response, int, int]:
    """POST ``files`` after a warm-up with the first: the answer, and the RSS before and the peak
    during it (KiB)."""
    httpx.post(f"{server.url}/detect", files=files[:1], timeout=120)  # warm the allocator
    server.reset_peak_rss()
    before = server.rss_kib()
    response = httpx.post(f"{server.url}/detect", files=files, timeout=300)
    peak = server.peak_rss_kib()
    print(f"\n{label}: RSS {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")
    return response, before, peak


def test_sixteen_parts_at_the_pixel_limit_stay_inside_the_memory_budget(server: Server):
    black = attacks.black_png(8000, 5000)  # 40 MP each, about 40 KB on the wire
    files = [("image", (f"{k}.png", black, "image/png")) for k in range(16)]
    response, before, peak = post_measuring_peak(server, files, "16 x 40 MP parts")
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 16
    # Held at once: the decodes that fit the 1 GiB budget (Pillow's image, its RGB copy, the
    # tensor), not sixteen full-resolution tensors (1.9 GB) plus their decoders' copies.
    assert peak - before < 1_400_000, (before, peak)


@pytest.mark.parametrize(
    "shapes",
    [
        [(1, 40_000_000, 6, 8), (40_000_000, 1, 6, 8)],  # thin and tall RGBA: 0.35 MB on the wire
        [(1, 20_000_000, 6, 16), (6_000, 6_000, 4, 16)],  # 16-bit RGBA, 16-bit grey + alpha
    ],
    ids=["thin-rgba", "16-bit"],
)
def test_thin_tall_alpha_and_16_bit_images_stay_inside_the_decode_budget(server: Server, shapes):
    """Memory is bounded by decoded bytes, not by pixel count: alpha, 16-bit samples and
    Pillow's per-row cost are counted, and a 40,000,000-pixel axis is not resized whole."""
    files = [
        ("image", (f"{k}.png", attacks.blank_png(*shape), "image/png")) for k, shape in enumerate(shapes)
    ]
    response, before, peak = post_measuring_peak(server, files, str(shapes))
    assert response.status_code == 200, response.text
    assert [(r["width"], r["height"]) for r in response.json()["results"]] == [s[:2] for s in shapes]
    # The decode budget (1 GiB) and a little for the bodies, not 4.3 GB as before.
    assert peak - before < 1_300_000, (before, peak)


def test_default_request_pixel_cap_refuses_the_amplification(weights: Path):
    black = attacks.black_png(8000, 5000)
    files = [("image", (f"{k}.png", black, "image/png")) for k in range(16)]
    with Server(weights) as default:
        response = httpx.post(f"{default.url}/detect", files=files, timeout=60)
        assert response.status_code == 413 and "DETECTOR_MAX_REQUEST_PIXELS" in response.json()["detail"]
        assert httpx.get(f"{default.url}/readyz").status_code == 200


def test_healthz_answers_within_100_ms_while_a_40_megapixel_png_is_drawn(server: Server):
    photo = attacks.photo_like(8000, 5000)
    latencies: list[float] = []
    result: dict[str, httpx.Response] = {}

    def drawn_request() -> None:
        result["png"] = httpx.post(
            f"{server.url}/detect", params={"format": "png"}, files={"image": ("big.jpg", photo)}, timeout=120
        )

    worker = threading.Thread(target=drawn_request)
    worker.start()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        time.sleep(0.2)
        while worker.is_alive():
            start = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.05)
    worker.join()
    assert result["png"].status_code == 200 and result["png"].content.startswith(b"\x89PNG")
    print(
        f"\n/healthz during a 40 MP format=png: {len(latencies)} probes, max {max(latencies) * 1000:.0f} ms"
    )
    assert len(latencies) >= 5
    assert max(latencies) < 0.1


def test_slowloris_headers_get_408_and_the_connections_close(server: Server):
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
    time.sleep(0.3)
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # others still served meanwhile
    answers = []
    for sock in socks:
        sock.settimeout(5)
        answers.append(sock.recv(4096))
        assert sock.recv(4096) == b""  # closed by the server
        sock.close()
    assert all(status_and_body(a)[0] == 408 and b"DETECTOR_HEADER_TIMEOUT_SECONDS" in a for a in answers)


def test_slow_body_gets_408_json(server: Server):
    head = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + b"\xff\xd8\xff")
        time.sleep(0.2)
        sock.sendall(b"\x00" * 100)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after the 408
            answer += chunk
    status, body = status_and_body(answer)
    assert status == 408 and b"DETECTOR_BODY_TIMEOUT_SECONDS" in body


def test_huge_header_is_431_json(server: Server):
    big = b"X-Filler: " + b"a" * 8_000_000 + b"\r\n"
    answer = raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    status, body = status_and_body(answer)
    assert status == 431 and b"DETECTOR_MAX_HEADER_BYTES" in body


def test_many_small_headers_are_431_too(server: Server):
    headers = b"".join(b"X-H%d: v\r\n" % k for k in range(10_000))
    status, body = status_and_body(
        raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    )
    assert status == 431 and b"DETECTOR_MAX_HEADER_BYTES" in body


def test_long_query_is_414_json_and_garbage_is_400_json(server: Server):
    query = b"q=" + b"a" * 70_000
    status, body = status_and_body(
        raw_exchange(server, b"GET /healthz?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert status == 414 and b"DETECTOR_MAX_URL_BYTES" in body
    status, body = status_and_body(raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400 and b'"detail"' in body
    assert httpx.get(f"{server.url}/readyz").status_code == 200

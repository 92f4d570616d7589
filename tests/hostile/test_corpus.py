"""Every corpus case against a real uvicorn process: its designed status, a useful detail,
the service still ready after each, memory bounded after all."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.corpus import build
from tests.support.serving import ROOT, Server
from tests.support.weights import add_ir, make_weights

NO_TORCH = ROOT / "tests" / "support" / "no_torch"

pytestmark = pytest.mark.slow  # real servers or training runs: not in make test-fast


@pytest.fixture(scope="module")
def server(random_server: Server) -> Server:
    return random_server


def test_each_case_gets_its_designed_status_and_the_service_keeps_serving(server: Server):
    cases = build()
    assert len(cases) >= 30
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for case in cases[:3]:  # warm the allocator before the baseline
            client.post("/detect", **case.request_kwargs())
        rss_before, fds_before = server.rss_kib(), server.open_fds()
        for _ in range(3):
            for case in cases:
                response = client.post("/detect", **case.request_kwargs())
                assert response.status_code in case.statuses, (case.name, response.status_code, response.text)
                body = response.json()
                if response.status_code == 200:
                    if case.size:
                        assert (body["results"][0]["width"], body["results"][0]["height"]) == case.size, (
                            case.name
                        )
                else:
                    detail = body["detail"]
                    assert isinstance(detail, str) and len(detail) > 15, case.name
                    assert "Traceback" not in detail and "/work" not in detail and "object at" not in detail
                assert client.get("/readyz").status_code == 200, case.name
        rss_after, fds_after = server.rss_kib(), server.open_fds()
    print(
        f"\ncorpus: {len(cases)} cases x3; RSS {rss_before} -> {rss_after} KiB; "
        f"fds {fds_before} -> {fds_after}"
    )
    assert rss_after < rss_before * 1.25 + 50_000
    assert fds_after <= fds_before + 5


def every_case_once(client: httpx.Client) -> None:
    for case in build():
        response = client.post("/detect", **case.request_kwargs())
        assert response.status_code in case.statuses, (case.name, response.status_code, response.text)
        if response.status_code == 200 and case.size:
            result = response.json()["results"][0]
            assert (result["width"], result["height"]) == case.size, case.name
        else:
            assert "Traceback" not in response.text
        assert client.get("/readyz").status_code == 200, case.name


def test_each_case_gets_its_designed_status_with_device_decode(tmp_path_factory: pytest.TempPathFactory):
    """The same corpus once more with JPEGs left to the batcher (``DETECTOR_DEVICE_DECODE``)."""
    weights = make_weights(tmp_path_factory.mktemp("weights"), input_size=128, objectness_bias=6.0)
    with (
        Server(weights, DETECTOR_DEVICE_DECODE="true") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        every_case_once(client)


def test_each_case_gets_its_designed_status_on_the_numpy_runtime(tmp_path_factory: pytest.TempPathFactory):
    """The same corpus against the CPU image's path: torch out of reach, Pillow's fit, numpy's
    post-processing (the decode budget counting the fit's extra copy)."""
    weights = add_ir(make_weights(tmp_path_factory.mktemp("weights"), input_size=128, objectness_bias=6.0))
    with (
        Server(weights, PYTHONPATH=os.pathsep.join([str(NO_TORCH), str(ROOT)])) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert client.get("/model").json()["runtime"] == "numpy"
        every_case_once(client)


def test_oversized_body_sent_slowly_is_cut_off_early(server: Server):
    limit = 20 * 1024 * 1024
    sent = {"bytes": 0}

    def slow() -> Iterator[bytes]:
        chunk = b"\xff" * (1024 * 1024)
        for _ in range(40):  # 40 MiB offered, one MiB at a time
            sent["bytes"] += len(chunk)
            yield chunk
            time.sleep(0.02)

    rss_before = server.rss_kib()
    try:
        response = httpx.post(
            f"{server.url}/detect", content=slow(), headers={"Content-Type": "image/jpeg"}, timeout=60
        )
        assert response.status_code == 413 and "limit" in response.json()["detail"]
    except httpx.TransportError:
        pass  # the server may close the connection as soon as it has answered 413
    assert sent["bytes"] > limit  # the client did send past the limit
    # The server stopped keeping bytes at the limit: it never held the 40 MiB offered.
    assert server.rss_kib() - rss_before < 36 * 1024
    assert httpx.get(f"{server.url}/readyz").status_code == 200

"""Request IDs on every response, in error bodies and on log lines; CORS only when configured."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.app_client import make_client, wait_ready
from tests.support.images import image_bytes
from tests.support.serving import Server


def test_request_id_is_echoed_or_made(client):
    given = client.get("/healthz", headers={"X-Request-ID": "frigate-cam1-000042"})
    assert given.headers["x-request-id"] == "frigate-cam1-000042"
    made = client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    odd = client.get("/healthz", headers={"X-Request-ID": "no spaces or <tags> please"})
    assert odd.headers["x-request-id"] != "no spaces or <tags> please"
    error = client.post("/detect", files={"image": ("a.jpg", b"x")}, headers={"X-Request-ID": "req-7"})
    assert error.status_code == 400 and error.json()["request_id"] == "req-7"


def test_cors_only_for_configured_origins(weights_dir, client):
    preflight = {"Origin": "https://ui.example.org", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/detect", headers=preflight).headers
    with make_client(weights_dir, cors_origins=["https://ui.example.org"]) as allowed:
        wait_ready(allowed)
        response = allowed.options("/detect", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://ui.example.org"
        answer = allowed.post(
            "/detect", files={"image": ("a.jpg", image_bytes())}, headers={"Origin": "https://ui.example.org"}
        )
        assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()


@pytest.mark.slow
def test_every_log_line_is_json_and_one_request_can_be_followed(weights_dir):
    with Server(weights_dir, DETECTOR_CORS_ORIGINS="https://a.example,https://b.example") as server:
        httpx.post(
            f"{server.url}/detect",
            files={"image": ("a.jpg", image_bytes())},
            headers={"X-Request-ID": "follow-me"},
        )
        httpx.post(
            f"{server.url}/detect", files={"image": ("b.jpg", b"junk")}, headers={"X-Request-ID": "bad-one"}
        )
        output = server.stop()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert {line["logger"] for line in lines} >= {"app", "app.access", "uvicorn.error"}
    followed = [line for line in lines if line.get("request_id") == "follow-me"]
    assert any(line["logger"] == "app.access" and line["status"] == 200 for line in followed)
    assert any(line.get("request_id") == "bad-one" and line.get("status") == 400 for line in lines)

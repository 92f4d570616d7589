"""The app in-process (Starlette's TestClient), for tests of HTTP behaviour."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        if response.status_code == 200 or response.json()["status"] == "failed":
            return
        time.sleep(0.02)
    raise TimeoutError("service did not become ready")


def make_client(weights: Path, **overrides: object) -> TestClient:
    # The in-process app tests are about HTTP behaviour: the eager backend starts at once, where
    # the default (onnxruntime) exports the network for a few seconds at each start. The real
    # uvicorn tests (e2e, hostile, page, container) serve the default backend.
    overrides.setdefault("backend", "eager")
    settings = Settings(weights=weights, device="cpu", **overrides)  # type: ignore[arg-type]
    return TestClient(create_app(settings), raise_server_exceptions=False)


def expect(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "request_id"} and isinstance(body["detail"], str)
    assert body["request_id"] == response.headers["x-request-id"]
    for fragment in fragments:
        assert fragment in body["detail"]
    return body["detail"]

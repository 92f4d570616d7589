"""The CPU image in a real container: build, `up` with the CPU compose file, healthy, no torch in
it, detect, non-root, drain, `down`.

The compose command comes from ``DETECTOR_COMPOSE`` (default ``docker compose -f
docker-compose.cpu.yml``); ``.ci/run`` points it at the sandbox engine. Skips when no Docker
engine answers.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.containers import COMPOSE, ROOT, docker, engine_reachable, inspect
from tests.support.images import image_bytes
from tests.support.serving import SlowUpload

URL = os.environ.get("DETECTOR_CONTAINER_URL", "http://127.0.0.1:8000")


pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        not engine_reachable(),
        reason=f"no Docker engine or no {' '.join(COMPOSE[:2])} here (docs/operations.md, Container)",
    ),
]


def compose(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*COMPOSE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    start = time.monotonic()
    compose("build")
    print(f"\nbuild: {time.monotonic() - start:.1f} s")
    compose("up", "-d")
    container_id = compose("ps", "-q", "detector").stdout.strip()
    try:
        up = time.monotonic()
        deadline = up + 240
        while inspect(container_id, "{{.State.Health.Status}}") != "healthy":
            assert time.monotonic() < deadline, compose("logs").stdout[-3000:]
            time.sleep(1)
        print(f"up -> healthy: {time.monotonic() - up:.1f} s")
        yield container_id
    finally:
        compose("down", "--timeout", "40")


def test_container_is_healthy_serves_and_runs_as_non_root(container: str):
    response = httpx.post(f"{URL}/detect", files={"image": ("c.jpg", image_bytes(500, 375))}, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert (result["width"], result["height"]) == (500, 375)
    card = httpx.get(f"{URL}/model", timeout=10).json()
    assert (card["device"], card["runtime"], card["precision"]) == ("cpu", "numpy", "int8")
    no_torch = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'nvidia')))"
    docker("exec", container, "python", "-c", no_torch)
    size = int(inspect(inspect(container, "{{.Image}}"), "{{.Size}}"))
    print(f"CPU image: {size / 1e9:.2f} GB")
    uid = subprocess.run(
        ["docker", "exec", container, "id", "-u"], capture_output=True, text=True, check=True
    )
    assert uid.stdout.strip() not in ("", "0")
    assert inspect(container, "{{.HostConfig.ReadonlyRootfs}}") == "true"


def test_sigterm_drains_the_request_in_flight(container: str):
    data = image_bytes(400, 300)
    client = SlowUpload(f"{URL}/detect", data, 500, 2.0, timeout=60)
    client.start()
    time.sleep(0.7)
    started = time.monotonic()
    stop = subprocess.Popen(["docker", "stop", "-t", "30", container])  # SIGTERM, then wait
    client.join(60)
    assert stop.wait(60) == 0
    print(f"SIGTERM -> exit: {time.monotonic() - started:.1f} s")
    assert client.response is not None and client.response.status_code == 200, client.response
    assert inspect(container, "{{.State.ExitCode}}") == "0"
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr
    assert "draining" in logs

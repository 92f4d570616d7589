"""The GPU image on a machine without a GPU: it builds (``--target gpu``, the Dockerfile's default),
starts as the same non-root user with the same health check, falls back to the CPU with the torch
runtime, answers, and drains on SIGTERM. The CPU image is tests/container/test_compose.py's."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.containers import COMPOSE, docker, engine_reachable, inspect
from tests.support.images import image_bytes

URL = "http://127.0.0.1:8000"
TAG = "voc-detector:gpu"

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        not engine_reachable(),
        reason=f"no Docker engine or no {' '.join(COMPOSE[:2])} here (docs/operations.md, Container)",
    ),
]


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    start = time.monotonic()
    docker("build", "--network", "host", "--target", "gpu", "-t", TAG, ".")
    print(
        f"\nGPU image build: {time.monotonic() - start:.1f} s, {int(inspect(TAG, '{{.Size}}')) / 1e9:.2f} GB"
    )
    # As docker-compose.yml runs it, less the GPU reservation (there is no GPU here).
    container_id = docker(
        "run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp", "-e", "DETECTOR_DEVICE=auto", TAG
    ).stdout.strip()
    try:
        up = time.monotonic()
        while inspect(container_id, "{{.State.Health.Status}}") != "healthy":
            assert time.monotonic() < up + 240, docker("logs", container_id).stderr[-3000:]
            time.sleep(1)
        print(f"GPU image up -> healthy: {time.monotonic() - up:.1f} s")
        yield container_id
    finally:
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True)


def test_the_gpu_image_falls_back_to_the_cpu_and_answers(container: str):
    card = httpx.get(f"{URL}/model", timeout=10).json()
    assert (card["device"], card["runtime"]) == ("cpu", "torch")
    response = httpx.post(f"{URL}/detect", files={"image": ("c.jpg", image_bytes(500, 375))}, timeout=60)
    assert response.status_code == 200, response.text
    assert docker("exec", container, "id", "-u").stdout.strip() not in ("", "0")
    assert inspect(container, "{{.Config.Healthcheck.Test}}").count("/readyz") == 1


def test_the_gpu_image_drains_and_exits_zero_on_sigterm(container: str):
    docker("stop", "-t", "30", container, timeout=60)
    assert inspect(container, "{{.State.ExitCode}}") == "0"
    assert "draining" in subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr

"""The Docker engine for the container tests: whether one answers, and what it says of a container."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shlex.split(os.environ.get("DETECTOR_COMPOSE", "docker compose -f docker-compose.cpu.yml"))


def engine_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        return False
    try:
        return (
            subprocess.run([*COMPOSE, "version"], cwd=ROOT, capture_output=True, timeout=60).returncode == 0
        )
    except OSError:
        return False


def inspect(target: str, template: str) -> str:
    """``docker inspect --format template target`` (a container or an image)."""
    return subprocess.run(
        ["docker", "inspect", "--format", template, target], capture_output=True, text=True, check=True
    ).stdout.strip()


def docker(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"docker {' '.join(args[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )
    return done

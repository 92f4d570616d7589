"""A real uvicorn process on a free loopback port, for the end-to-end, hostile and page tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slow_body(data: bytes, first: int, pause: float) -> Iterator[bytes]:
    """The body in two pieces with a pause between, so the request is in flight meanwhile."""
    yield data[:first]
    time.sleep(pause)
    yield data[first:]


class SlowUpload(threading.Thread):
    """``POST url`` with ``data`` as a raw JPEG body in two pieces ``pause`` seconds apart, from a
    thread, so the request is in flight meanwhile; ``response`` holds the answer once joined."""

    def __init__(self, url: str, data: bytes, first: int, pause: float, timeout: float) -> None:
        super().__init__(daemon=True)
        self.url, self.data, self.first, self.pause, self.timeout = url, data, first, pause, timeout
        self.response: httpx.Response | None = None

    def run(self) -> None:
        self.response = httpx.post(
            self.url,
            content=slow_body(self.data, self.first, self.pause),
            headers={"Content-Type": "image/jpeg"},
            timeout=self.timeout,
        )


class Server:
    """``with Server(weights) as server:`` starts uvicorn, waits for /readyz, and kills it after."""

    def __init__(
        self, weights: Path, device: str = "cpu", uvicorn_args: tuple[str, ...] = (), **env: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: an unread pipe fills up and blocks the server's logging.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the server
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--http",
            "app.protocol:GuardedHttpTools",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(
            [*command, *uvicorn_args],
            cwd=ROOT,
            env={**os.environ, "DETECTOR_WEIGHTS": str(weights), "DETECTOR_DEVICE": device, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def __enter__(self) -> Server:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def peak_rss_kib(self) -> int:
        """The process's peak RSS since it started, or since :meth:`reset_peak_rss`."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def reset_peak_rss(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := current RSS

    def open_fds(self) -> int:
        return len(list(Path(f"/proc/{self.process.pid}/fd").iterdir()))

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("uvicorn did not become ready")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        return self.output()

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


# Set to a number, every Server of the suite runs as ``python -m app --fronts N`` (the launcher:
# N HTTP fronts and one engine) instead of one uvicorn process: TEST_SERVER_FRONTS=2 make test.
FRONTS_VARIABLE = "TEST_SERVER_FRONTS"
LAUNCHER_FLAGS = {"--no-access-log"}  # what the launcher takes of uvicorn's flags


class Server:
    """``with Server(weights) as server:`` starts uvicorn (or, with ``fronts``, the launcher), waits
    for /readyz, and kills it after."""

    def __init__(
        self,
        weights: Path,
        device: str = "cpu",
        uvicorn_args: tuple[str, ...] = (),
        fronts: int | None = None,
        **env: str,
    ) -> None:
        device_decode = env.get("DETECTOR_DEVICE_DECODE", "").lower() in ("1", "true")  # not with fronts
        if (
            fronts is None
            and os.environ.get(FRONTS_VARIABLE)
            and not set(uvicorn_args) - LAUNCHER_FLAGS
            and not device_decode
        ):
            fronts = int(os.environ[FRONTS_VARIABLE])
        self.fronts = fronts
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
        if fronts is not None:
            command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(self.port)]
            command += ["--fronts", str(fronts)]
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

    def tree_rss_kib(self) -> int:
        """RSS of the server and every process under it (the launcher's fronts and engine)."""
        found = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True)
        rows = [tuple(int(v) for v in line.split()) for line in found.stdout.splitlines() if line.strip()]
        family = {self.process.pid}
        changed = True
        while changed:
            changed = False
            for pid, ppid, _ in rows:
                if ppid in family and pid not in family:
                    family.add(pid)
                    changed = True
        return sum(rss for pid, _, rss in rows if pid in family)

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
        """Until /readyz says ready; with fronts, ready several times in a row (each answer comes
        from whichever front takes the connection)."""
        deadline = time.monotonic() + timeout
        needed = 1 if not self.fronts else 4 * self.fronts
        streak = 0
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                ready = False
            streak = streak + 1 if ready else 0
            if streak >= needed:
                return
            time.sleep(0.02 if ready else 0.1)
        raise TimeoutError("the server did not become ready")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> str:
        if self.process.poll() is None:
            if self.fronts:  # the launcher's fronts and engine go with a SIGTERM, not with a SIGKILL
                self.process.terminate()
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
            else:
                self.process.kill()
        self.process.wait(timeout=30)
        return self.output()

"""``python -m app``: the one launcher (the Makefile, the Dockerfile, compose and Kubernetes run it).

With ``DETECTOR_FRONTS=0`` it is ``uvicorn app.main:app`` with the guarded protocol and the
graceful-shutdown timeout: one process decodes, fits and runs the network. With ``N > 0`` it
starts the inference engine (:mod:`app.serving.engine`, the network's one process), waits until
the engine is warm, then serves through N HTTP front processes (uvicorn's workers, one port):
each front reads, bounds, decodes and fits its uploads and hands the fitted pixels to the engine
through shared memory (:mod:`app.serving.remote`); fronts import neither torch nor the network.

``auto`` (-1, the default) is 0 on a machine without an NVIDIA device, where more processes
measured slower (README, "Sizing the fronts"), and half the cores (1-8) beside a GPU.

Lifecycle: SIGTERM (or Ctrl-C) goes to the fronts, which drain (every accepted request gets its
answer, the engine still running); then the engine is stopped and the launcher exits 0. If the
engine dies, every front's ``/readyz`` turns failed at its next batch, its requests get 503, and
the launcher stops the fronts and exits 1, so the orchestrator restarts the whole service.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import uvicorn

from app.logs import configure_logging
from app.metrics import MULTIPROCESS_DIR
from app.serving.remote import KEY_VARIABLE
from app.settings import Settings

log = logging.getLogger("app.serving.launcher")

PROTOCOL = "app.protocol:GuardedHttpTools"
GRACEFUL_SHUTDOWN_SECONDS = 30
ENGINE_START_SECONDS = 600.0
PING_SECONDS = 2.0  # how often the launcher checks that the engine's batch loop answers


def auto_fronts(settings: Settings) -> int:
    """Fronts for ``DETECTOR_FRONTS=-1``: none on a CPU-only machine, half the cores beside a GPU."""
    if settings.fronts >= 0:
        return settings.fronts
    gpu = settings.device != "cpu" and Path("/dev/nvidiactl").exists()
    return max(1, min(8, len(os.sched_getaffinity(0)) // 2)) if gpu else 0


def start_engine(socket_path: Path, key: str) -> subprocess.Popen[bytes]:
    """The engine process; it listens on ``socket_path`` once warm, and exits when our pipe closes."""
    env = {**os.environ, KEY_VARIABLE: key}
    return subprocess.Popen(
        [sys.executable, "-m", "app.serving.engine", "--socket", str(socket_path)],
        stdin=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: no terminal signals; stopped as a group
    )


def wait_for_engine(engine: subprocess.Popen[bytes], socket_path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket_path.exists():
            return True
        if engine.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def stop_engine(engine: subprocess.Popen[bytes]) -> None:
    if engine.stdin is not None:
        engine.stdin.close()  # the engine exits when its input closes
    try:
        engine.wait(timeout=10)
    except subprocess.TimeoutExpired:
        engine.kill()
        engine.wait()
    # Whatever the engine's libraries forked (OpenVINO's telemetry sends from a forked child, which
    # can hang in a threaded process) goes with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(engine.pid, signal.SIGKILL)


def watch_engine(
    engine: subprocess.Popen[bytes],
    socket_path: Path,
    key: str,
    timeout: float,
    stopping: threading.Event,
    died: threading.Event,
) -> None:
    """When the engine exits on its own, stop the fronts (SIGTERM to ourselves: uvicorn's
    supervisor stops its workers) so the launcher can exit non-zero. Every few seconds a job of no
    images goes through the engine's batch loop; an engine that does not answer it within the
    fronts' answer timeout is hung, and is killed, with the same end."""
    # Connected now, while the engine is known to answer: the handshake itself has no timeout.
    ping: Connection | None = Client(str(socket_path), family="AF_UNIX", authkey=bytes.fromhex(key))
    last_ping = time.monotonic()
    while not stopping.is_set():
        if engine.poll() is not None:
            log.error("the inference engine exited (code %s); stopping the fronts", engine.returncode)
            died.set()
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if ping is not None and time.monotonic() - last_ping > PING_SECONDS:
            last_ping = time.monotonic()
            try:
                ping.send(("detect", [], []))
                if not ping.poll(timeout):
                    raise TimeoutError(f"no answer in {timeout:g} s")
                ping.recv()
            except (OSError, EOFError) as exc:  # TimeoutError is an OSError
                if engine.poll() is None and not stopping.is_set():
                    log.error("the inference engine does not answer (%s); killing it", exc)
                    engine.kill()
                ping = None
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve the detector (python -m app)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--fronts", type=int, default=None, help="HTTP front processes (default: DETECTOR_FRONTS)"
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="uvicorn's access log off (the app logs its own)"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    fronts = auto_fronts(settings) if args.fronts is None else args.fronts
    served: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "http": PROTOCOL,
        "access_log": not args.no_access_log,
    }
    if fronts <= 0:
        uvicorn.run("app.main:app", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, **served)
        return 0
    with tempfile.TemporaryDirectory(prefix="detector-engine-") as folder:
        socket_path = Path(folder) / "engine.sock"
        metrics_dir = Path(folder) / "metrics"  # every process's series (app/metrics.py)
        metrics_dir.mkdir()
        os.environ[MULTIPROCESS_DIR] = str(metrics_dir)
        key = secrets.token_hex(16)
        engine = start_engine(socket_path, key)
        if not wait_for_engine(engine, socket_path, ENGINE_START_SECONDS):
            log.error("the inference engine did not start (exit code %s)", engine.poll())
            stop_engine(engine)
            return 1
        os.environ.update({KEY_VARIABLE: key, "DETECTOR_ENGINE_SOCKET": str(socket_path)})
        stopping, died = threading.Event(), threading.Event()
        watcher = threading.Thread(
            target=watch_engine,
            args=(engine, socket_path, key, settings.engine_timeout_seconds, stopping, died),
            daemon=True,
        )
        watcher.start()
        log.info("serving with %d fronts and one engine (pid %d)", fronts, engine.pid)
        try:
            uvicorn.run(
                "app.main:app", workers=fronts, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, **served
            )
        finally:
            stopping.set()
            stop_engine(engine)
        return 1 if died.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())

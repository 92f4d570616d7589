"""The service's lifecycle as a small state machine: loading -> ready, or -> failed; ready -> draining."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field


class Phase(str, enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass
class Lifecycle:
    phase: Phase = Phase.LOADING
    reason: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ready(self) -> None:
        with self._lock:
            if self.phase == Phase.LOADING:
                self.phase = Phase.READY

    def fail(self, reason: str) -> None:
        with self._lock:
            self.phase, self.reason = Phase.FAILED, reason

    def drain(self) -> None:
        with self._lock:
            if self.phase != Phase.FAILED:
                self.phase = Phase.DRAINING

    @property
    def is_ready(self) -> bool:
        return self.phase == Phase.READY

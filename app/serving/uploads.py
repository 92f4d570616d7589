"""Bodies being received: how many at once, and how many from one client.

A request holds an upload slot while its body arrives and an in-flight slot
(:class:`~app.serving.service.InFlight`) only once the body is in, so clients still sending (or
dripping) cannot take the slots of requests ready to run. Uploads are bounded in number
(``DETECTOR_MAX_UPLOADS``), in the body bytes they hold together (``DETECTOR_UPLOAD_BUDGET_BYTES``:
an upload that would pass it gets 503) and, when set, per client address
(``DETECTOR_MAX_UPLOADS_PER_CLIENT``). A slow drip holds a slot but almost no bytes, and the
minimum rate (:class:`~app.imaging.upload.BodyReader`) ends it after the grace period.

Draining waits for uploads too, and past its timeout aborts those still arriving
(:attr:`Uploads.abort`), so a slow upload cannot hold the shutdown past the drain timeout.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field


class UploadsFull(Exception):
    """No upload slot for this request; the message says which limit."""


@dataclass
class Uploads:
    max_total: int
    max_per_client: int  # 0: no per-client cap (behind a proxy every client has its address)
    max_bytes: int = 1 << 62
    count: int = 0
    held_bytes: int = 0
    per_client: Counter[str] = field(default_factory=Counter)
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def enter(self, client: str) -> None:
        """Take a slot for ``client``; raises :class:`UploadsFull` when none is free."""
        if self.count >= self.max_total:
            raise UploadsFull(f"{self.count} uploads in progress (DETECTOR_MAX_UPLOADS)")
        if self.max_per_client and self.per_client[client] >= self.max_per_client:
            raise UploadsFull(
                f"{self.per_client[client]} uploads in progress from this client "
                "(DETECTOR_MAX_UPLOADS_PER_CLIENT)"
            )
        self.count += 1
        self.per_client[client] += 1
        self._idle.clear()

    def hold(self, size: int) -> None:
        """Count ``size`` more body bytes held; raises :class:`UploadsFull` past the budget."""
        if self.held_bytes + size > self.max_bytes:
            raise UploadsFull(
                f"uploads under way hold {self.held_bytes:,} bytes (DETECTOR_UPLOAD_BUDGET_BYTES "
                f"{self.max_bytes:,})"
            )
        self.held_bytes += size

    def leave(self, client: str, held: int = 0) -> None:
        self.held_bytes -= held
        self.count -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

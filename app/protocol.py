"""uvicorn's httptools protocol with limits on the request head, and JSON for every refusal.

Served with ``uvicorn app.main:app --http app.protocol:GuardedHttpTools`` (the Makefile, the
Dockerfile and the tests do). What it adds, before a request reaches the app:

- a header timeout: a request line and headers not complete ``DETECTOR_HEADER_TIMEOUT_SECONDS``
  after they began (a slowloris client) get 408 and the connection is closed;
- a size limit on the request head: headers over ``DETECTOR_MAX_HEADER_BYTES`` get 431, a
  request target (path and query) over ``DETECTOR_MAX_URL_BYTES`` gets 414;
- a JSON ``{"detail": ...}`` body for these and for unparseable requests (400), as the app
  answers everything else.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings

REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
}


# How long a refused connection keeps reading (and dropping) what the client still sends.
LINGER_SECONDS = 2.0


@functools.lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


def refusal(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, with a JSON body."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpTools(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self.header_timeout = settings.header_timeout_seconds
        self.max_header_bytes = settings.max_header_bytes
        self.max_url_bytes = settings.max_url_bytes
        self._in_head = False
        self._head_bytes = 0
        self._header_total = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None
        self._refused = False

    # --- the head phase: from connection (or the previous response) to the end of the headers

    def _start_head(self) -> None:
        self._in_head, self._head_bytes, self._refusal = True, 0, None
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a (pipelined) request is being answered: not a slow head
        if self._head_bytes == 0:  # an idle keep-alive connection: just close it
            self.transport.close()
            return
        self._refuse(
            408,
            f"the request headers did not arrive within {self.header_timeout:g} s "
            "(DETECTOR_HEADER_TIMEOUT_SECONDS)",
        )

    def _refuse(self, status: int, detail: str) -> None:
        """Answer and close. The rest of what the client is sending is read and dropped for a
        moment first (a lingering close): closing with unread data would reset the connection
        and the client could lose the answer."""
        self._in_head = False
        self._refused = True
        self._cancel_head_timer()
        self.logger.warning("refused before the app: %d %s", status, detail)
        self.transport.write(refusal(status, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    # --- uvicorn's protocol hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._refuse(431, self._too_large())

    def _too_large(self) -> str:
        return f"the request headers pass {self.max_header_bytes:,} bytes (DETECTOR_MAX_HEADER_BYTES)"

    def send_400_response(self, msg: str) -> None:
        status, detail = self._refusal or (400, f"invalid HTTP request: {msg.rstrip('.')}")
        self._refuse(status, detail)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_url_bytes:
            self._refusal = (
                414,
                f"the request target (path and query) passes {self.max_url_bytes:,} bytes "
                "(DETECTOR_MAX_URL_BYTES)",
            )
            raise ValueError("request target too long")  # the parser stops; send_400_response answers

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_total = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_total += len(name) + len(value) + 4
        if self._header_total + len(self.url) > self.max_header_bytes:
            self._refusal = (431, self._too_large())
            raise ValueError("headers too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._start_head()

"""uvicorn's httptools protocol with limits on the request head, and JSON for every refusal.

Served with ``uvicorn app.main:app --http app.protocol:GuardedHttpTools`` (the Makefile, the
Dockerfile and the tests do). What it adds, before a request reaches the app:

- a header timeout: a request line and headers not complete ``DETECTOR_HEADER_TIMEOUT_SECONDS``
  after they began (a slowloris client) get 408 and the connection is closed;
- a size limit on the request head: headers over ``DETECTOR_MAX_HEADER_BYTES`` get 431, a
  request target (path and query) over ``DETECTOR_MAX_URL_BYTES`` gets 414;
- a JSON ``{"detail": ...}`` body for these and for unparseable requests (400), as the app
  answers everything else;
- early answers that leave the connection usable: when the app answers before it has read the
  whole body (a bad query, a wrong key, overload), the rest of that body is read and dropped as
  body (never counted as the next request's head), up to ``DETECTOR_MAX_UPLOAD_BYTES`` and
  ``DETECTOR_HEADER_TIMEOUT_SECONDS``; past either, or when the answer closes the connection
  (``Connection: close``), the connection closes *lingering*: the answer is flushed, the write
  side shut, and what the client still sends is dropped for a moment before the socket closes,
  so that the client reads the answer instead of a TCP reset.
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


class _LingeringTransport:
    """The connection's transport as uvicorn's request cycles see it: ``close()`` while the
    request's body is still arriving becomes a lingering close (see :meth:`GuardedHttpTools.linger`)."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpTools) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        if self._protocol.body_unread():
            self._protocol.linger()
        else:
            self._transport.close()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


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
        self._refused = False  # a lingering close is under way: what arrives is dropped
        self._message_done = True  # the current request's body has been read to its end
        self._discarded = 0  # body bytes dropped after an early answer
        self._discard_timer: asyncio.TimerHandle | None = None
        self.max_discard_bytes = settings.max_upload_bytes

    @property
    def lingering(self) -> bool:
        return self._refused

    def body_unread(self) -> bool:
        """The current request's body has not all arrived (its answer was given early)."""
        return not self._message_done and self.parser is not None

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
        """Answer and close, lingering."""
        self.logger.warning("refused before the app: %d %s", status, detail)
        self.transport.write(refusal(status, detail))
        self.linger()

    def linger(self) -> None:
        """Close after what was written is flushed: shut the write side, then read and drop what
        the client still sends for a moment before closing. Closing with unread data would reset
        the connection, and the client could lose the answer."""
        if self._refused:
            return
        self._in_head = False
        self._refused = True
        self._cancel_head_timer()
        self._cancel_discard_timer()
        transport = self._raw_transport
        if transport.is_closing():
            return
        transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    # --- after an early answer: the rest of its body is dropped, bounded in bytes and time

    def _start_discarding(self) -> None:
        self._discarded = 0
        self._cancel_discard_timer()
        self._discard_timer = self.loop.call_later(self.header_timeout, self.linger)

    def _cancel_discard_timer(self) -> None:
        if self._discard_timer is not None:
            self._discard_timer.cancel()
            self._discard_timer = None

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and self.cycle.response_complete:
            self._discarded += len(body)
            if self._discarded > self.max_discard_bytes:
                self.linger()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._message_done = True
        super().on_message_complete()
        if self._discard_timer is not None:  # the dropped body ended: on to the next request
            self._cancel_discard_timer()
            self._start_head()

    # --- uvicorn's protocol hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw_transport = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_discard_timer()
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
        self._message_done = False

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
        if self.transport.is_closing():
            return
        if self._message_done:
            self._start_head()
        else:  # answered early: the rest of the body is body, not the next request's head
            self._start_discarding()

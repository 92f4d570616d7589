"""Request IDs and the access log: one JSON line per request, metrics by route and status.

A request's ID is its ``X-Request-ID`` header when that is a sensible token (1-128 characters of
letters, digits and ``-_.:``), else a new random one. It is returned on every response (the same
header), put in error bodies, on the access-log line and on every log line written while the
request is handled (:mod:`app.logs`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import request_id
from app.metrics import Metrics

access_log = logging.getLogger("app.access")

_TOKEN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def choose_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _TOKEN.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class AccessLogMiddleware:
    """Gives every request an ID, counts and times it, and writes one JSON log line for it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        rid = choose_request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(elapsed)
            client = scope.get("client")
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": label,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "client": client[0] if client else None,
                    }
                },
            )
            request_id.reset(token)

"""Errors raised below the routes, carrying the HTTP status the service answers with.

One exception handler (``app.main``) turns every :class:`ClientError` into its answer and counts
it, so routes and the steps they call raise instead of building error responses.
"""

from __future__ import annotations


class ClientError(Exception):
    """Something the client sent is wrong; ``detail`` says what, and what to send instead."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


class Unavailable(ClientError):
    """503: the service cannot take the request now (overloaded, not ready, draining); retry later."""

    def __init__(self, detail: str, retry_after: int, headers: dict[str, str] | None = None) -> None:
        extra = {"Retry-After": str(retry_after), **(headers or {})}
        super().__init__(503, f"{detail}; retry after {retry_after} s", extra)

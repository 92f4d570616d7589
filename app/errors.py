"""Client errors raised below the routes, carrying the HTTP status the service answers with."""

from __future__ import annotations


class ClientError(Exception):
    """Something the client sent is wrong; ``detail`` says what, and what to send instead."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers

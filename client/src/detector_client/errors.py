"""The one error the client raises."""

from __future__ import annotations


class DetectorError(Exception):
    """The service answered with an error (or could not be reached after the retries)."""

    def __init__(self, status: int, detail: str, request_id: str | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.request_id = request_id

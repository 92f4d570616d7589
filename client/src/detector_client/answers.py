"""Reading the service's answers: bounded in time and size, checked against the contract.

A server that drips its answer, sends a huge one, or answers something that is not a /detect
answer or a model card ends the request with a :class:`DetectorError` that says so, never a
traceback from deeper down.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import ValidationError

from detector_client.errors import DetectorError
from detector_client.models import DetectResponse, ImageResult


def error_of(response: httpx.Response) -> DetectorError:
    try:
        body = response.json()
        detail = str(body.get("detail", body))
        rid = body.get("request_id")
    except ValueError:
        detail, rid = response.text[:500] or response.reason_phrase, None
    return DetectorError(response.status_code, detail, rid or response.headers.get("x-request-id"))


def results_of(response: httpx.Response, count: int) -> list[ImageResult]:
    """The answer's results, one per image sent; any other answer is a :class:`DetectorError`."""
    try:
        results = DetectResponse.model_validate_json(response.content).results
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem.get("loc", ()))
        raise DetectorError(
            response.status_code, f"the answer is not a /detect answer ({where}: {problem.get('msg')})"
        ) from None
    if len(results) != count:
        raise DetectorError(response.status_code, f"the answer has {len(results)} results for {count} images")
    return results


def card_of(response: httpx.Response) -> dict[str, Any]:
    try:
        card = response.json()
    except ValueError:
        card = None
    if not isinstance(card, dict) or not isinstance(card.get("classes"), list):
        raise DetectorError(response.status_code, "GET /model did not answer a model card (a JSON object)")
    return card


class BoundedAnswer:
    """An answer read chunk by chunk within a whole-answer deadline and a size cap: a server that
    drips its answer, or sends a huge one, ends the request with a :class:`DetectorError`."""

    def __init__(self, response: httpx.Response, timeout: float, cap: int) -> None:
        self.response, self.deadline, self.timeout, self.cap = (
            response,
            time.monotonic() + timeout,
            timeout,
            cap,
        )
        self.body = bytearray()
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise DetectorError(0, f"the answer is {int(declared):,} bytes, over max_answer_bytes ({cap:,})")

    def add(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > self.cap:
            raise DetectorError(
                0, f"the answer passed max_answer_bytes ({self.cap:,}); raise it for larger ones"
            )
        if time.monotonic() > self.deadline:
            raise DetectorError(0, f"the answer did not arrive within the {self.timeout:g} s timeout")

    def whole(self) -> httpx.Response:
        """The answer as a plain response (its body already decoded)."""
        skip = {"content-encoding", "content-length", "transfer-encoding"}
        headers = [(k, v) for k, v in self.response.headers.items() if k.lower() not in skip]
        return httpx.Response(
            self.response.status_code,
            headers=headers,
            content=bytes(self.body),
            request=self.response.request,
        )

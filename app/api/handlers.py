"""Every error answer of the service, from one place.

:class:`~app.errors.ClientError` (raised anywhere below the routes), FastAPI's ``HTTPException``
and validation errors become ``{"detail": ..., "request_id": ...}`` with their status and
headers; on the DeepStack-compatible routes (``/v1/vision/...``) the same in that API's shape,
``{"success": false, "error": ..., "code": ...}``. Client errors are counted by status.
Anything else is a 500 that says nothing about the inside; the log has the details.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.api.deepstack import codeproject_fields
from app.errors import ClientError
from app.imaging.decoding import DecodeError
from app.metrics import Metrics

log = logging.getLogger("app")

DEEPSTACK_PREFIX = "/v1/vision/"


def error_response(
    request: Request, status: int, detail: str, headers: dict[str, str] | None
) -> JSONResponse:
    rid = request.scope.get("state", {}).get("request_id")
    if request.url.path.startswith(DEEPSTACK_PREFIX):
        command = "list-custom" if request.url.path.endswith("/list") else "detect"
        service = getattr(request.app.state, "service", None)
        device = str(service.predictor.device) if service is not None else "cpu"
        body: dict[str, object] = {
            **codeproject_fields(command, status, device),
            "success": False,
            "error": detail,
            "code": status,
        }
    else:
        body = {"detail": detail}
    if rid is not None:
        body["request_id"] = rid
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body"))
        problems.append(
            f"{where}: {error.get('msg', 'invalid')}"
            + (f" (got {error['input']!r})" if "input" in error and error["input"] is not None else "")
        )
    return "invalid request: " + "; ".join(problems)


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(ClientError)
    async def on_client_error(request: Request, exc: ClientError) -> JSONResponse:
        metrics.client_errors.labels(str(exc.status)).inc()
        if isinstance(exc, DecodeError):
            metrics.decode_failures.labels(str(exc.status)).inc()
        return error_response(request, exc.status, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.client_errors.labels("422").inc()
        return error_response(request, 422, validation_message(exc), None)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(request, exc.status_code, detail, headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace or a path in a response; the log has the details.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal error; it has been logged", None)

"""Typed dependencies the routes declare; tests can override them.

They are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in a worker
thread, a thread hop per dependency per request for what is an attribute lookup.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.metrics import Metrics
from app.serving.service import DetectorService, InFlight
from app.serving.state import Lifecycle, Phase
from app.serving.uploads import Uploads
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_readiness(request: Request) -> Lifecycle:
    readiness: Lifecycle = request.app.state.readiness
    return readiness


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_inflight(request: Request) -> InFlight:
    inflight: InFlight = request.app.state.inflight
    return inflight


async def get_uploads(request: Request) -> Uploads:
    uploads: Uploads = request.app.state.uploads
    return uploads


SettingsDep = Annotated[Settings, Depends(get_settings)]
UploadsDep = Annotated[Uploads, Depends(get_uploads)]
ReadinessDep = Annotated[Lifecycle, Depends(get_readiness)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
InFlightDep = Annotated[InFlight, Depends(get_inflight)]


def not_ready_error(readiness: Lifecycle, retry_after: int) -> HTTPException:
    messages = {
        Phase.LOADING: "the model is still loading; retry shortly",
        Phase.DRAINING: "the service is shutting down; send the request to another instance",
        Phase.FAILED: "the model failed to load; see /readyz for the reason",
    }
    return HTTPException(503, messages.get(readiness.phase, "not ready"), {"Retry-After": str(retry_after)})


async def get_service(request: Request, readiness: ReadinessDep, settings: SettingsDep) -> DetectorService:
    service: DetectorService | None = request.app.state.service
    if service is None or not readiness.is_ready:
        raise not_ready_error(readiness, settings.retry_after_seconds)
    return service


async def get_loaded_service(
    request: Request, readiness: ReadinessDep, settings: SettingsDep
) -> DetectorService:
    """The service once loaded, also while draining (for read-only routes such as /model)."""
    service: DetectorService | None = request.app.state.service
    if service is None:
        raise not_ready_error(readiness, settings.retry_after_seconds)
    return service


ServiceDep = Annotated[DetectorService, Depends(get_service)]
LoadedServiceDep = Annotated[DetectorService, Depends(get_loaded_service)]


# The two ways a key may come, as OpenAPI security schemes (so /docs and generated clients know
# them); auto_error=False because the key is optional unless DETECTOR_API_KEY is set.
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="the key of DETECTOR_API_KEY, when one is set"
)
BEARER = HTTPBearer(auto_error=False, description="the key of DETECTOR_API_KEY as a Bearer token")


HeaderKey = Annotated[str | None, Security(API_KEY_HEADER)]
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def offered_keys(header_key: str | None, bearer: HTTPAuthorizationCredentials | None) -> list[str]:
    """The keys a request offers in its headers, surrounding whitespace trimmed."""
    return [key.strip() for key in (header_key, bearer.credentials if bearer else None) if key is not None]


def key_matches(offered: list[str], expected: str) -> bool:
    """Whether any offered key is ``expected``. compare_digest takes the same time whatever the
    position of the first differing byte, and every offered key is compared, so the time says
    nothing about which one matched."""
    return any([hmac.compare_digest(key.encode(), expected.encode()) for key in offered])


async def require_api_key(settings: SettingsDep, header_key: HeaderKey, bearer: BearerKey) -> None:
    """When ``DETECTOR_API_KEY`` is set: accepted when ``Authorization: Bearer KEY`` or
    ``X-API-Key: KEY`` carries it (either header; surrounding whitespace ignored)."""
    if settings.api_key is None:
        return
    if not key_matches(offered_keys(header_key, bearer), settings.api_key.get_secret_value().strip()):
        raise HTTPException(
            401,
            "missing or wrong API key; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": "Bearer"},
        )

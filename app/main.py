"""App factory and lifespan: ``uvicorn app.main:app`` serves :data:`app`.

Nothing heavy happens at import. The lifespan starts loading the model in the background
(:mod:`app.serving.loading`), so ``/healthz`` answers at once and ``/readyz`` says ``loading``, and
installs the SIGTERM drain (:mod:`app.serving.draining`). Errors are answered from one place
(:mod:`app.api.handlers`); every request gets an ID and an access-log line (:mod:`app.api.access_log`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from app.api.access_log import AccessLogMiddleware
from app.api.deepstack import router as deepstack_router
from app.api.handlers import install_error_handlers
from app.api.openapi import describe_security
from app.api.routes import router
from app.logs import configure_logging
from app.metrics import Metrics
from app.serving.draining import install_drain_handler
from app.serving.loading import load_service
from app.serving.service import DetectorService, InFlight
from app.serving.state import Lifecycle
from app.serving.uploads import Uploads
from app.settings import Settings


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    install_drain_handler(app)
    settings: Settings = app.state.settings
    # Made here, in the serving loop, since its abort event belongs to one loop.
    app.state.uploads = Uploads(
        settings.max_uploads, settings.max_uploads_per_client, settings.upload_budget_bytes
    )
    loading = asyncio.create_task(load_service(app))
    try:
        yield
    finally:
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        service: DetectorService | None = app.state.service
        if service is not None:
            await service.batcher.stop()
            service.shutdown()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model loads when the app starts (its lifespan), not here."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    # fastapi-offline: /docs and /redoc from Swagger UI and ReDoc assets shipped in the package, not
    # from a CDN, so that they work where the service has no internet.
    app = FastAPIOffline(
        title="VOC object detector",
        summary="POST images, get Pascal VOC boxes as JSON.",
        version="0.1.0",
        lifespan=lifespan,
        # Operation ids are the route functions' names (detect, detection, readyz, ...), which
        # generated clients turn into method names.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.readiness = Lifecycle()
    app.state.metrics = Metrics()
    app.state.service = None
    app.state.inflight = InFlight()
    app.state.uploads = Uploads(
        settings.max_uploads, settings.max_uploads_per_client, settings.upload_budget_bytes
    )
    app.state.draining_task = None
    install_error_handlers(app, app.state.metrics)
    app.include_router(router)
    app.include_router(deepstack_router)
    describe_security(app, key_required=settings.api_key is not None)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "X-Request-ID", "Content-Type"],
            expose_headers=["X-Request-ID", "X-Detections", "Retry-After"],
        )
    app.add_middleware(AccessLogMiddleware, metrics=app.state.metrics)
    return app


app = create_app()

"""The FastAPI application factory.

``create_app(platform)`` serves a running ``Platform`` (what ``tiangong up`` and
``tiangong platform`` do). ``create_app()`` with no platform builds one from the environment in
the app's lifespan, for ``uvicorn --factory tiangong.platform.api.app:create_app``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from tiangong import __version__
from tiangong.data.api import create_data_router
from tiangong.data.catalog import standard_catalog
from tiangong.data.store import AnalyticsStore
from tiangong.platform.api.audit_trail import AuditTrailMiddleware
from tiangong.platform.api.auth import authorized
from tiangong.platform.api.limits import ApiLimits
from tiangong.platform.api.routes import (
    alarms,
    audit,
    certificates,
    devices,
    energy,
    health,
    oee,
    records,
    rules,
    security,
    session,
    sites,
    system,
    tenants,
    thing_models,
    tokens,
    users,
)
from tiangong.platform.api.schemas import document_error_bodies
from tiangong.platform.commands import CommandFailedError, CommandTimeoutError
from tiangong.platform.errors import (
    ConflictError,
    NotFoundError,
    PlatformError,
    StoreUnavailableError,
    ValidationError,
)
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings
from tiangong.platform.tokens import ApiScope

__all__ = ["create_app"]

_log = logging.getLogger(__name__)

_STATUS = (
    (CommandTimeoutError, status.HTTP_504_GATEWAY_TIMEOUT),
    (CommandFailedError, status.HTTP_502_BAD_GATEWAY),
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (ConflictError, status.HTTP_409_CONFLICT),
    (ValidationError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (StoreUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
)


async def _platform_error(request: Request, exc: Exception) -> JSONResponse:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return JSONResponse({"detail": str(exc)}, status_code=code)
    _log.error("unexpected platform error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def create_app(platform: Platform | None = None) -> FastAPI:
    """Build the API and dashboard application.

    Args:
        platform: a started platform to serve; ``None`` to start one in the app's lifespan.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if platform is not None:
            app.state.platform = platform
            yield
            return
        settings = PlatformSettings.load(http_port=None)
        async with Platform(settings) as own:
            app.state.platform = own
            yield

    app = FastAPI(
        title="Tiangong industrial internet platform",
        version=__version__,
        description=(
            "Devices, thing models, telemetry, alarms and connectivity KPIs. Routes need "
            "`Authorization: Bearer <token>`: an API token (tg_...) or a session from "
            "`POST /api/v1/auth/login` (tgs_...); each route needs one scope of the caller's "
            "role, and callers are confined to their tenant."
        ),
        lifespan=lifespan,
    )
    if platform is not None:
        app.state.platform = platform
    app.add_exception_handler(PlatformError, _platform_error)
    document_error_bodies(app)  # 422 bodies: a list (FastAPI's) or a sentence (ours)
    app.add_middleware(AuditTrailMiddleware)  # changes, data reads, token use (audit_trail.py)
    app.add_middleware(ApiLimits)  # rates and sizes per client (platform/api/limits.py)
    for module in (
        system,
        session,
        tenants,
        sites,
        thing_models,
        devices,
        alarms,
        rules,
        tokens,
        users,
        records,
        certificates,
        audit,
        security,
        oee,
        energy,
        health,
    ):
        app.include_router(module.router)

    def data_store() -> AnalyticsStore | None:
        running = getattr(app.state, "platform", None)
        return None if running is None else running.data_store

    # The data center views read the store of a data center run beside the platform (the
    # national center in `tiangong up`); without one they answer 503. Before the dashboard's
    # mount at "/", which would answer every path.
    app.include_router(
        create_data_router(data_store, standard_catalog()),
        dependencies=[Depends(authorized(ApiScope.DATA_READ))],
    )
    static = resources.files("tiangong.platform") / "dashboard"
    app.mount("/", StaticFiles(directory=str(static), html=True), name="dashboard")
    return app

"""The gateway's HTTP listener: ``POST /push/<device>`` for push devices, ``GET /status``.

Push devices authenticate with their own bearer token (see ``adapters.http``). ``/status``
takes the gateway's own password as bearer token: it shows plant internals. Bodies are limited
to 1 MiB; every refusal says why.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from fastapi import FastAPI, HTTPException, Request, status

from tiangong.edge.adapters.http import HttpAdapter
from tiangong.edge.errors import CommandError, EdgeConfigError
from tiangong.network.errors import NetworkError
from tiangong.network.http_listener import HttpListener, bind_listener

if TYPE_CHECKING:
    from tiangong.edge.gateway import EdgeGateway

__all__ = ["create_edge_app", "start_http"]

MAX_BODY: Final = 1024 * 1024


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def create_edge_app(gateway: EdgeGateway, status_token: str | None) -> FastAPI:
    """The gateway's HTTP application."""
    app = FastAPI(title="Tiangong edge gateway", docs_url=None, redoc_url=None)

    @app.post("/push/{device_id}")
    async def push(device_id: str, request: Request) -> dict[str, Any]:
        coordinator = gateway.coordinators.get(device_id)
        adapter = coordinator.adapter if coordinator else None
        if not isinstance(adapter, HttpAdapter):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no push device {device_id!r}")
        if not adapter.authorized(_bearer(request)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong token for this device")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "at most 1 MiB per push")
        try:
            accepted = adapter.push(body)
        except CommandError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        return {"accepted": accepted}

    @app.get("/status")
    async def gateway_status(request: Request) -> dict[str, Any]:
        token = _bearer(request)
        if status_token is None or token != status_token:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "use the gateway's password")
        return await gateway.status()

    return app


async def start_http(gateway: EdgeGateway, tasks: asyncio.TaskGroup) -> HttpListener:
    """Bind the listener and serve it as a task of ``tasks``.

    Raises:
        EdgeConfigError: the port is taken.
    """
    config = gateway.config.http
    try:
        sock = bind_listener(config.host, config.port)
    except NetworkError as exc:
        raise EdgeConfigError("edge config", None, f"http: {exc}") from exc
    listener = HttpListener(create_edge_app(gateway, gateway.uplink.password), sock)
    listener.start(tasks, "edge-http")
    return listener

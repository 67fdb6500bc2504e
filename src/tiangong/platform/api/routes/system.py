"""Health, Prometheus metrics and the dashboard overview."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tiangong.platform.api.auth import (
    Caller,
    DevicesRead,
    PlatformAdmin,
    PlatformDep,
    tenant_for_read,
)
from tiangong.platform.api.schemas import Overview
from tiangong.platform.kpi import ALL_SITES

router = APIRouter()


@router.get("/healthz", tags=["system"], summary="Liveness and readiness")
async def healthz(platform: PlatformDep) -> dict[str, Any]:
    """Whether the platform is up, its store, and whether ingest is connected to the broker."""
    return {
        "status": "ok",
        "store": platform.store.name,
        "broker_connected": platform.mqtt is not None and platform.mqtt.connected,
    }


@router.get(
    "/metrics",
    tags=["system"],
    summary="Prometheus metrics (platform_admin token)",
    response_class=Response,
)
async def metrics(platform: PlatformDep, principal: PlatformAdmin) -> Response:
    """Prometheus text exposition of the platform's metrics."""
    del principal
    return Response(generate_latest(platform.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/me", tags=["system"], summary="Who the token belongs to")
async def me(principal: Caller) -> dict[str, str | None]:
    """The caller's token id, name, role and tenant (``null`` for a platform admin)."""
    return {
        "token_id": principal.token_id,
        "name": principal.name,
        "role": principal.role.value,
        "tenant_id": principal.scope,
    }


@router.get("/api/v1/overview", tags=["system"], response_model=Overview)
async def overview(
    platform: PlatformDep, principal: DevicesRead, tenant: str | None = None
) -> Overview:
    """Counts for the dashboard header: devices, networking rate, alarms, ingest rate."""
    scope = tenant_for_read(principal, tenant)
    tenants = [
        {"id": t.id, "name": t.name}
        for t in await platform.registry.list_tenants()
        if scope is None or t.id == scope
    ]
    sites = await platform.registry.list_sites(scope)
    devices: dict[str, int] = {}
    for device in platform.registry.devices_in_memory():
        if scope is None or device.tenant_id == scope:
            devices[device.state.value] = devices.get(device.state.value, 0) + 1
    kpis = [k for k in await platform.kpis.current(scope) if k.site_id == ALL_SITES]
    registered = sum(k.registered for k in kpis)
    expected = sum(k.expected_metrics for k in kpis)
    return Overview(
        tenants=tenants,
        sites=len(sites),
        devices=devices,
        networking_rate=sum(k.online for k in kpis) / registered if registered else None,
        coverage=sum(k.reporting_metrics for k in kpis) / expected if expected else None,
        alarms_open=await platform.alarms.open_counts(scope),
        ingest_points_per_s=platform.ingest_rate(),
        points_stored_total=platform.pipeline.points_committed,
        dead_letters=await platform.dead_letters.counts(scope),
        broker_connected=platform.mqtt is not None and platform.mqtt.connected,
        started_at=platform.started_at,
    )

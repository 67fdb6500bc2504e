"""Sites (factories) and their connectivity KPIs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pydantic
from fastapi import APIRouter, HTTPException, Query, status

from tiangong.platform.api.auth import (
    DevicesRead,
    DevicesWrite,
    PlatformDep,
    tenant_for_read,
    tenant_for_write,
)
from tiangong.platform.api.query_params import parse_time
from tiangong.platform.api.schemas import KpiOut, SiteIn, SiteKpis
from tiangong.platform.kpi import ALL_SITES, ConnectivityKpi
from tiangong.platform.links import site_links
from tiangong.platform.model import Site
from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiPrincipal

router = APIRouter(prefix="/api/v1", tags=["sites"])


def kpi_out(kpi: ConnectivityKpi) -> KpiOut:
    """The API form of a KPI sample."""
    return KpiOut(
        tenant_id=kpi.tenant_id,
        site_id=kpi.site_id,
        ts=kpi.ts,
        registered=kpi.registered,
        online=kpi.online,
        reporting=kpi.reporting,
        networking_rate=kpi.networking_rate,
        coverage=kpi.coverage,
        expected_metrics=kpi.expected_metrics,
        reporting_metrics=kpi.reporting_metrics,
    )


async def resolve_site(
    platform: Platform, principal: ApiPrincipal, site_id: str, tenant: str | None
) -> Site:
    """Find a site the caller may see (a platform admin may omit the tenant if unambiguous).

    Raises:
        HTTPException: 404 when not visible; 409 when several tenants have such a site.
    """
    scope = tenant_for_read(principal, tenant)
    matches = [s for s in await platform.registry.list_sites(scope) if s.id == site_id]
    if not matches:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"site {site_id!r} not found")
    if len(matches) > 1:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"several tenants have a site {site_id!r}; pass ?tenant="
        )
    return matches[0]


@router.get("/sites", response_model=list[Site])
async def list_sites(
    platform: PlatformDep, principal: DevicesRead, tenant: str | None = None
) -> list[Site]:
    """Sites visible to the caller."""
    return await platform.registry.list_sites(tenant_for_read(principal, tenant))


@router.post("/sites", response_model=Site, status_code=status.HTTP_201_CREATED)
async def create_site(body: SiteIn, platform: PlatformDep, principal: DevicesWrite) -> Site:
    """Create a site (tenant admin)."""
    tenant = tenant_for_write(principal, body.tenant_id)
    try:
        site = Site(
            tenant_id=tenant,
            id=body.id,
            name=body.name,
            location=body.location,
            timezone=body.timezone,
        )
    except pydantic.ValidationError as exc:
        # The site's own checks (a known time zone) are input errors, not server errors.
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems) from exc
    return await platform.registry.create_site(site)


@router.get("/sites/{site_id}", response_model=Site)
async def get_site(
    site_id: str, platform: PlatformDep, principal: DevicesRead, tenant: str | None = None
) -> Site:
    """One site."""
    return await resolve_site(platform, principal, site_id, tenant)


@router.get("/sites/{site_id}/kpis", response_model=SiteKpis)
async def site_kpis(
    site_id: str,
    platform: PlatformDep,
    principal: DevicesRead,
    tenant: str | None = None,
    start: str | None = Query(None, description="ISO 8601, epoch ms, now or like -24h"),
    end: str | None = Query(None, description="ISO 8601, epoch ms, now or like -1h"),
) -> SiteKpis:
    """A site's networking rate and data collection coverage now and over time."""
    site = await resolve_site(platform, principal, site_id, tenant)
    now_ms = int(time.time() * 1000)
    start_ms = parse_time(start, now_ms - 24 * 3_600_000, "start")
    end_ms = parse_time(end, now_ms, "end")
    current = [k for k in await platform.kpis.current(site.tenant_id) if k.site_id == site.id]
    history = await platform.kpis.history(
        site.tenant_id,
        site.id,
        datetime.fromtimestamp(start_ms / 1000, UTC),
        datetime.fromtimestamp(end_ms / 1000, UTC),
    )
    return SiteKpis(
        tenant_id=site.tenant_id,
        site_id=site.id,
        current=kpi_out(current[0]) if current else None,
        history=[kpi_out(k) for k in history],
    )


@router.get("/kpis", response_model=list[KpiOut])
async def current_kpis(
    platform: PlatformDep, principal: DevicesRead, tenant: str | None = None
) -> list[KpiOut]:
    """Current KPIs of every visible site and tenant (site ``*`` = the whole tenant)."""
    return [kpi_out(k) for k in await platform.kpis.current(tenant_for_read(principal, tenant))]


@router.get("/kpis/history", response_model=list[KpiOut])
async def tenant_kpi_history(
    platform: PlatformDep,
    principal: DevicesRead,
    tenant: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> list[KpiOut]:
    """A tenant's KPI samples over time (site ``*``)."""
    tenant_id = tenant_for_write(principal, tenant)
    now_ms = int(time.time() * 1000)
    start_ms = parse_time(start, now_ms - 24 * 3_600_000, "start")
    end_ms = parse_time(end, now_ms, "end")
    history = await platform.kpis.history(
        tenant_id,
        ALL_SITES,
        datetime.fromtimestamp(start_ms / 1000, UTC),
        datetime.fromtimestamp(end_ms / 1000, UTC),
    )
    return [kpi_out(k) for k in history]


@router.get("/sites/{site_id}/links")
async def links(
    site_id: str, platform: PlatformDep, principal: DevicesRead, tenant: str | None = None
) -> dict[str, Any]:
    """How each device of the site is connected and how well its link performs.

    Per device: access type (5G slice, Wi-Fi, wired, fieldbus), measured link quality and the
    reasons a link counts as degraded; per access type: the networking rate.
    """
    site = await resolve_site(platform, principal, site_id, tenant)
    result = await site_links(platform.registry, platform.store, site.tenant_id, site.id)
    return {
        "tenant_id": result.tenant_id,
        "site_id": result.site_id,
        "by_access": {
            access: {
                "registered": s.registered,
                "online": s.online,
                "degraded": s.degraded,
                "networking_rate": s.networking_rate,
            }
            for access, s in sorted(result.by_access.items())
        },
        "devices": [
            {
                "device_id": d.device_id,
                "name": d.name,
                "state": d.state.value,
                "network": d.network.model_dump(mode="json"),
                "rtt_ms": d.rtt_ms,
                "jitter_ms": d.jitter_ms,
                "loss_pct": d.loss_pct,
                "reconnects": d.reconnects,
                "measured_at": d.measured_at,
                "degraded": d.degraded,
            }
            for d in result.devices
        ],
    }

"""Energy app: consumption, cost by time-of-use band, energy per unit, abnormal consumption."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response, status

from tiangong.apps.energy.core import Granularity
from tiangong.apps.energy.errors import EnergyQueryError, TariffError
from tiangong.apps.energy.service import AnomalyReport, EnergyReport
from tiangong.apps.energy.tariff import CHINA_INDUSTRIAL_DEFAULT, Tariff
from tiangong.platform.api.auth import (
    DevicesWrite,
    PlatformDep,
    TelemetryRead,
    tenant_for_read,
    tenant_for_write,
)
from tiangong.platform.api.query_params import parse_time
from tiangong.platform.service import Platform

router = APIRouter(prefix="/api/v1/apps/energy", tags=["apps"])

_DAY_MS = 86_400_000
#: Default range per bucket size when ``from`` is not given.
_DEFAULT_SPAN_MS = {Granularity.HOUR: _DAY_MS, Granularity.DAY: 7 * _DAY_MS}


def _range(start: str | None, end: str | None, span_ms: int) -> tuple[int, int]:
    now_ms = int(time.time() * 1000)
    end_ms = parse_time(end, now_ms, "to")
    return parse_time(start, end_ms - span_ms, "from"), end_ms


def _unprocessable(exc: EnergyQueryError) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


@router.get("", response_model=EnergyReport)
async def energy(
    platform: PlatformDep,
    principal: TelemetryRead,
    site: str | None = None,
    device: str | None = None,
    line: str | None = Query(None, description="a line of the site (devices' 'line' attribute)"),
    tenant: str | None = Query(None, description="platform administrators: the tenant"),
    start: str | None = Query(None, alias="from", description="ISO 8601, epoch ms or '-7d'"),
    end: str | None = Query(None, alias="to", description="default: now"),
    by: Granularity = Granularity.DAY,
) -> Any:
    """kWh, tce, cost by peak/flat/valley band and kWh per good unit, per bucket and in total.

    Name a site (optionally a line of it) or a device. Buckets are local to the site; see
    docs/apps.md, "Energy", for how resets, gaps and bad readings are handled and reported.
    """
    start_ms, end_ms = _range(start, end, _DEFAULT_SPAN_MS.get(by, 90 * _DAY_MS))
    try:
        return await platform.energy.consumption(
            tenant_for_read(principal, tenant),
            site_id=site,
            device_id=device,
            line=line,
            start_ms=start_ms,
            end_ms=end_ms,
            by=by,
        )
    except EnergyQueryError as exc:
        raise _unprocessable(exc) from exc


@router.get("/anomalies", response_model=AnomalyReport)
async def anomalies(
    platform: PlatformDep,
    principal: TelemetryRead,
    site: str | None = None,
    device: str | None = None,
    line: str | None = None,
    tenant: str | None = Query(None, description="platform administrators: the tenant"),
    start: str | None = Query(None, alias="from", description="default: 24 hours before 'to'"),
    end: str | None = Query(None, alias="to", description="default: now"),
) -> Any:
    """Hours far above their own baseline (per device and for the scope); idle consumption."""
    start_ms, end_ms = _range(start, end, _DAY_MS)
    try:
        return await platform.energy.anomalies(
            tenant_for_read(principal, tenant),
            site_id=site,
            device_id=device,
            line=line,
            start_ms=start_ms,
            end_ms=end_ms,
        )
    except EnergyQueryError as exc:
        raise _unprocessable(exc) from exc


@router.get("/tariffs/{site_id}")
async def tariff(
    site_id: str,
    platform: PlatformDep,
    principal: TelemetryRead,
    tenant: str | None = Query(None, description="platform administrators: the tenant"),
) -> dict[str, Any]:
    """The time-of-use tariff that prices a site's consumption."""
    scope = tenant_for_read(principal, tenant)
    if scope is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "a platform administrator names the tenant (tenant=)",
        )
    await platform.registry.get_site(scope, site_id)  # 404: a site the tenant does not have
    return platform.energy.tariffs.for_site(scope, site_id).to_json()


@router.put("/tariffs/{site_id}")
async def put_tariff(
    site_id: str,
    platform: PlatformDep,
    principal: DevicesWrite,
    body: Annotated[dict[str, Any], Body(examples=[CHINA_INDUSTRIAL_DEFAULT.to_json()])],
    tenant: str | None = Query(None, description="platform administrators: the tenant"),
) -> dict[str, Any]:
    """Give a site its own time-of-use tariff (bands covering the day, a price per period).

    Kept in the platform's ``tariffs.json``: a restart keeps it. Consumption is priced by the
    tariff in force when it is asked for, past periods included. 422 names what is wrong.
    """
    scope = tenant_for_write(principal, tenant)
    try:
        tariff = Tariff.from_json(body)
    except TariffError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    await _set_tariff(platform, scope, site_id, tariff)
    return tariff.to_json()


@router.delete("/tariffs/{site_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tariff(
    site_id: str,
    platform: PlatformDep,
    principal: DevicesWrite,
    tenant: str | None = Query(None, description="platform administrators: the tenant"),
) -> Response:
    """Price a site by the platform's default tariff again."""
    await _set_tariff(platform, tenant_for_write(principal, tenant), site_id, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _set_tariff(platform: Platform, tenant: str, site_id: str, tariff: Tariff | None) -> None:
    try:
        await platform.energy.set_tariff(tenant, site_id, tariff)
    except TariffError as exc:  # the file could not be written: nothing changed
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc

"""OEE and production monitoring (``tiangong.apps.oee``): figures by shift or day, downtime Pareto.

Both routes answer one device (``?device=``) or one site's machines (``?site=``), confined to
the caller's tenant: another tenant's device or site answers 404 like one that does not exist.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pydantic
from fastapi import APIRouter, HTTPException, Query, status

from tiangong.apps.oee.calendar import CalendarPeriod, Grouping
from tiangong.apps.oee.core import OeeFigures, pareto
from tiangong.apps.oee.service import OeeReport
from tiangong.platform.api.auth import PlatformDep, TelemetryRead
from tiangong.platform.api.query_params import parse_time
from tiangong.platform.api.routes.sites import resolve_site
from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiPrincipal

router = APIRouter(prefix="/api/v1/apps/oee", tags=["apps"])

_DAY_MS = 86_400_000


class DataQualityOut(pydantic.BaseModel):
    """Bad input found and left out (none of it changes a figure)."""

    invalid: int
    duplicates: int
    out_of_order: int
    counter_resets: int
    gaps: int


class FiguresOut(pydantic.BaseModel):
    """ISO 22400-2 figures; ratios are ``null`` when unknown (never a made-up zero)."""

    oee: float | None
    availability: float | None
    effectiveness: float | None
    quality: float | None
    planned_s: float = pydantic.Field(description="shift time")
    pbt_s: float = pydantic.Field(description="planned busy time")
    apt_s: float = pydantic.Field(description="actual production time")
    setup_s: float
    waiting_s: float
    down_s: float
    unknown_s: float = pydantic.Field(description="no state data: in PBT, never in APT")
    planned_down_s: float
    produced: float | None = pydantic.Field(description="produced quantity PQ")
    good: float | None = pydantic.Field(description="good quantity GQ")
    scrap: float | None
    machines: int
    data_quality: DataQualityOut


class PeriodOut(pydantic.BaseModel):
    """One shift or production day."""

    key: str
    day: str
    shift: str | None
    start: datetime
    end: datetime
    figures: FiguresOut


class MachineOut(pydantic.BaseModel):
    """One machine's figures."""

    device_id: str
    name: str
    model_id: str
    ideal_cycle_s: float | None = pydantic.Field(description="planned run time per unit PRI")
    total: FiguresOut
    periods: list[PeriodOut]


class OeeOut(pydantic.BaseModel):
    """OEE of a device or a site over a range."""

    tenant_id: str
    site_id: str
    timezone: str
    by: Grouping
    start: datetime
    end: datetime
    total: FiguresOut
    periods: list[PeriodOut]
    machines: list[MachineOut]


class LossOut(pydantic.BaseModel):
    """Time lost to one reason."""

    category: str = pydantic.Field(description="down, setup, waiting or unknown")
    reason: str = pydantic.Field(description="fault code, state label, or 'no data'")
    lost_s: float
    occurrences: int
    share: float
    cumulative_share: float


class DowntimeOut(pydantic.BaseModel):
    """The downtime Pareto: availability losses by reason, largest first."""

    tenant_id: str
    site_id: str
    start: datetime
    end: datetime
    machines: int
    lost_s: float
    losses: list[LossOut]


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def figures_out(f: OeeFigures) -> FiguresOut:
    """The API form of figures."""
    q = f.data_quality
    return FiguresOut(
        oee=f.oee,
        availability=f.availability,
        effectiveness=f.effectiveness,
        quality=f.quality,
        planned_s=f.planned_ms / 1000,
        pbt_s=f.pbt_ms / 1000,
        apt_s=f.apt_ms / 1000,
        setup_s=f.setup_ms / 1000,
        waiting_s=f.waiting_ms / 1000,
        down_s=f.down_ms / 1000,
        unknown_s=f.unknown_ms / 1000,
        planned_down_s=f.planned_down_ms / 1000,
        produced=f.produced,
        good=f.good,
        scrap=f.scrap,
        machines=f.machines,
        data_quality=DataQualityOut(
            invalid=q.invalid,
            duplicates=q.duplicates,
            out_of_order=q.out_of_order,
            counter_resets=q.counter_resets,
            gaps=q.gaps,
        ),
    )


def _periods_out(periods: list[CalendarPeriod], figures: list[OeeFigures]) -> list[PeriodOut]:
    return [
        PeriodOut(
            key=p.key,
            day=p.day.isoformat(),
            shift=p.shift,
            start=_when(p.start_ms),
            end=_when(p.end_ms),
            figures=figures_out(f),
        )
        for p, f in zip(periods, figures, strict=True)
    ]


async def _report(
    platform: Platform,
    principal: ApiPrincipal,
    *,
    device: str | None,
    site: str | None,
    tenant: str | None,
    start: str | None,
    end: str | None,
    by: Grouping,
) -> OeeReport:
    if (device is None) == (site is None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "pass one of device= or site=")
    now_ms = int(time.time() * 1000)
    start_ms = parse_time(start, now_ms - _DAY_MS, "from")
    end_ms = parse_time(end, now_ms, "to")
    if device is not None:
        found = await platform.registry.get_device(device, principal.scope)  # 404 if not yours
        tenant_id = found.tenant_id
    else:
        assert site is not None
        found_site = await resolve_site(platform, principal, site, tenant)
        tenant_id = found_site.tenant_id
    try:
        return await platform.oee.report(
            tenant_id,
            start_ms=start_ms,
            end_ms=end_ms,
            by=by,
            device_id=device,
            site_id=None if site is None else found_site.id,
            now_ms=now_ms,
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


_DEVICE = Query(None, description="one device")
_SITE = Query(None, description="a site: all its machines with a production profile")
_TENANT = Query(None, description="a platform administrator's tenant for site=")
_FROM = Query(None, alias="from", description="ISO 8601, epoch ms, now, or like -24h")
_TO = Query(None, alias="to", description="ISO 8601, epoch ms, now, or like -5m")


@router.get("", response_model=OeeOut)
async def oee(
    platform: PlatformDep,
    principal: TelemetryRead,
    device: str | None = _DEVICE,
    site: str | None = _SITE,
    tenant: str | None = _TENANT,
    start: str | None = _FROM,
    end: str | None = _TO,
    by: Grouping = Query(Grouping.SHIFT, description="shift or day (production day)"),
) -> OeeOut:
    """OEE = availability x effectiveness x quality (ISO 22400-2) by shift or production day."""
    report = await _report(
        platform, principal, device=device, site=site, tenant=tenant, start=start, end=end, by=by
    )
    return OeeOut(
        tenant_id=report.tenant_id,
        site_id=report.site_id,
        timezone=report.timezone,
        by=report.by,
        start=_when(report.start_ms),
        end=_when(report.end_ms),
        total=figures_out(report.total),
        periods=_periods_out(report.periods, report.group),
        machines=[
            MachineOut(
                device_id=m.device.id,
                name=m.device.name,
                model_id=m.device.model_id,
                ideal_cycle_s=m.ideal_cycle_s,
                total=figures_out(m.total),
                periods=_periods_out(report.periods, m.periods),
            )
            for m in report.machines
        ],
    )


@router.get("/downtime", response_model=DowntimeOut)
async def downtime(
    platform: PlatformDep,
    principal: TelemetryRead,
    device: str | None = _DEVICE,
    site: str | None = _SITE,
    tenant: str | None = _TENANT,
    start: str | None = _FROM,
    end: str | None = _TO,
) -> DowntimeOut:
    """The downtime Pareto: availability losses by reason (fault code, state), largest first."""
    report = await _report(
        platform,
        principal,
        device=device,
        site=site,
        tenant=tenant,
        start=start,
        end=end,
        by=Grouping.SHIFT,
    )
    losses = pareto(report.total.losses)
    lost = sum(loss.lost_ms for loss in losses)
    out: list[LossOut] = []
    running = 0
    for loss in losses:
        running += loss.lost_ms
        out.append(
            LossOut(
                category=loss.category.value,
                reason=loss.reason,
                lost_s=loss.lost_ms / 1000,
                occurrences=loss.occurrences,
                share=loss.lost_ms / lost,
                cumulative_share=running / lost,
            )
        )
    return DowntimeOut(
        tenant_id=report.tenant_id,
        site_id=report.site_id,
        start=_when(report.start_ms),
        end=_when(report.end_ms),
        machines=report.total.machines,
        lost_s=lost / 1000,
        losses=out,
    )

"""Alarms: list, acknowledge, clear."""

from __future__ import annotations

from fastapi import APIRouter, Query

from tiangong.platform.alarms.lifecycle import AlarmState
from tiangong.platform.alarms.service import Alarm
from tiangong.platform.api.auth import AlarmsRead, AlarmsWrite, PlatformDep, tenant_for_read
from tiangong.platform.api.schemas import Page
from tiangong.platform.model import Severity

router = APIRouter(prefix="/api/v1/alarms", tags=["alarms"])


@router.get("", response_model=Page[Alarm])
async def list_alarms(
    platform: PlatformDep,
    principal: AlarmsRead,
    state: AlarmState | None = None,
    open: bool = Query(False, description="only active and acknowledged alarms"),  # noqa: A002
    severity: Severity | None = None,
    site: str | None = None,
    device: str | None = None,
    tenant: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Page[Alarm]:
    """Alarms, most severe and most recent first."""
    items, total = await platform.alarms.list_alarms(
        tenant_for_read(principal, tenant),
        state=state,
        open_only=open,
        severity=severity,
        site_id=site,
        device_id=device,
        limit=limit,
        offset=offset,
    )
    return Page[Alarm](items=items, total=total)


@router.get("/{alarm_id}", response_model=Alarm)
async def get_alarm(alarm_id: int, platform: PlatformDep, principal: AlarmsRead) -> Alarm:
    """One alarm."""
    return await platform.alarms.get_alarm(alarm_id, principal.scope)


@router.post("/{alarm_id}/acknowledge", response_model=Alarm)
async def acknowledge(alarm_id: int, platform: PlatformDep, principal: AlarmsWrite) -> Alarm:
    """Acknowledge an open alarm (operator)."""
    return await platform.alarms.acknowledge(alarm_id, principal.scope, by=principal.name)


@router.post("/{alarm_id}/clear", response_model=Alarm)
async def clear(alarm_id: int, platform: PlatformDep, principal: AlarmsWrite) -> Alarm:
    """Clear an open alarm by hand (operator)."""
    return await platform.alarms.clear(alarm_id, principal.scope, by=principal.name)

"""Security events: list, posture, acknowledge; maintenance windows.

Least privilege: security events reveal where a tenant is weak, so they are read only by those
who act on them or audit them: a tenant administrator (``access:admin``: they manage the
users and devices under attack), an auditor (``audit:read``) and a platform administrator.
Operators and viewers get 403. Acknowledging an event, and opening a maintenance window (in
which firmware and configuration changes are expected), is for a tenant administrator or a
platform administrator; the auditor only reads. Everything is confined to the caller's tenant;
events that belong to no tenant (password spraying from one address over many user names) are
seen by platform administrators only.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from tiangong.platform.api.auth import (
    Caller,
    PlatformDep,
    require_scope,
    tenant_for_read,
    tenant_for_write,
)
from tiangong.platform.api.query_params import parse_time
from tiangong.platform.api.schemas import Page
from tiangong.platform.model import Name
from tiangong.platform.tokens import ApiPrincipal, ApiScope
from tiangong.security.monitor import (
    EventKind,
    EventSeverity,
    MaintenanceWindow,
    SecurityEvent,
    SecurityPosture,
)

router = APIRouter(prefix="/api/v1/security", tags=["security"])


async def _reader(principal: Caller) -> ApiPrincipal:
    """The caller, if it may read security events (access:admin or audit:read)."""
    if not (principal.can(ApiScope.ACCESS_ADMIN) or principal.can(ApiScope.AUDIT_READ)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "security events are for tenant administrators, auditors and platform"
            " administrators (access:admin or audit:read)",
        )
    return principal


async def _responder(principal: Caller) -> ApiPrincipal:
    """The caller, if it may acknowledge events and open maintenance windows (access:admin)."""
    require_scope(principal, ApiScope.ACCESS_ADMIN)
    return principal


SecurityReader = Annotated[ApiPrincipal, Depends(_reader)]
SecurityResponder = Annotated[ApiPrincipal, Depends(_responder)]


class SecurityEventOut(BaseModel):
    """A security event (possibly many coalesced occurrences)."""

    id: str
    at: datetime
    last_at: datetime
    kind: EventKind
    severity: EventSeverity
    tenant_id: str | None
    subject: str
    site_id: str | None
    device_id: str | None
    username: str | None
    source: str | None
    summary: str
    evidence: dict[str, Any]
    count: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None

    @classmethod
    def of(cls, event: SecurityEvent) -> SecurityEventOut:
        """The API form of an event."""
        return cls(
            id=event.id,
            at=event.at,
            last_at=event.last_at,
            kind=event.kind,
            severity=event.severity,
            tenant_id=event.tenant_id,
            subject=event.subject,
            site_id=event.site_id,
            device_id=event.device_id,
            username=event.username,
            source=event.source,
            summary=event.summary,
            evidence=event.evidence,
            count=event.count,
            acknowledged_at=event.acknowledged_at,
            acknowledged_by=event.acknowledged_by,
        )


class PostureOut(BaseModel):
    """Security events active in a window, counted."""

    since: datetime
    by_severity: dict[str, int]
    by_kind: dict[str, int]
    open: int
    acknowledged: int
    open_by_severity: dict[str, int]
    devices_at_risk: int
    occurrences: int
    writes_dropped: int

    @classmethod
    def of(cls, posture: SecurityPosture, dropped: int) -> PostureOut:
        """The API form of a posture."""
        return cls(
            since=posture.since,
            by_severity=posture.by_severity,
            by_kind=posture.by_kind,
            open=posture.open,
            acknowledged=posture.acknowledged,
            open_by_severity=posture.open_by_severity,
            devices_at_risk=posture.devices_at_risk,
            occurrences=posture.occurrences,
            writes_dropped=dropped,
        )


class MaintenanceIn(BaseModel):
    """A maintenance window: firmware and configuration changes expected until it ends."""

    model_config = ConfigDict(extra="forbid")

    device_id: Name | None = Field(default=None, description="one device; none: every device")
    hours: float = Field(ge=1 / 60, le=24 * 14, description="how long from now (at least a minute)")
    reason: str = Field(min_length=1, max_length=500, description="e.g. the change ticket")
    tenant_id: Name | None = Field(default=None, description="for a platform administrator")


class MaintenanceOut(BaseModel):
    """An open maintenance window."""

    id: int
    tenant_id: str
    device_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str

    @classmethod
    def of(cls, window: MaintenanceWindow) -> MaintenanceOut:
        """The API form of a window."""
        return cls(
            id=window.id,
            tenant_id=window.tenant_id,
            device_id=window.device_id,
            starts_at=window.starts_at,
            ends_at=window.ends_at,
            reason=window.reason,
            created_by=window.created_by,
        )


def _since(value: str | None, default: timedelta) -> datetime:
    now_ms = int(time.time() * 1000)
    ms = parse_time(value, now_ms - int(default.total_seconds() * 1000), "since")
    return datetime.fromtimestamp(ms / 1000, UTC)


@router.get("/events", response_model=Page[SecurityEventOut])
async def list_events(
    platform: PlatformDep,
    principal: SecurityReader,
    kind: EventKind | None = None,
    severity: EventSeverity | None = None,
    since: str | None = Query(
        None, description="ISO 8601, epoch ms or relative (-24h); default: all"
    ),
    device: Name | None = None,
    open: bool = Query(False, description="only events not acknowledged"),  # noqa: A002
    tenant: Name | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> Page[SecurityEventOut]:
    """Security events, latest activity first."""
    items, total = await platform.security.events(
        tenant_for_read(principal, tenant),
        kind=kind,
        severity=severity,
        since=None if since is None else _since(since, timedelta(0)),
        device_id=device,
        open_only=open,
        limit=limit,
        offset=offset,
    )
    return Page[SecurityEventOut](items=[SecurityEventOut.of(e) for e in items], total=total)


@router.get("/events/{event_id}", response_model=SecurityEventOut)
async def get_event(
    event_id: str, platform: PlatformDep, principal: SecurityReader
) -> SecurityEventOut:
    """One security event."""
    event = await platform.security.get(event_id[:64], principal.scope)
    if event is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no security event {event_id!r}")
    return SecurityEventOut.of(event)


@router.post("/events/{event_id}/acknowledge", response_model=SecurityEventOut)
async def acknowledge_event(
    event_id: str, platform: PlatformDep, principal: SecurityResponder
) -> SecurityEventOut:
    """Acknowledge an event: it stays on record; new activity opens a new event."""
    event = await platform.security.acknowledge(event_id[:64], principal.scope, by=principal.name)
    if event is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no security event {event_id!r}")
    return SecurityEventOut.of(event)


@router.get("/posture", response_model=PostureOut)
async def posture(
    platform: PlatformDep,
    principal: SecurityReader,
    since: str | None = Query(None, description="window start; default: the last 24 hours"),
    tenant: Name | None = None,
) -> PostureOut:
    """Events active in the window by severity and kind, open and acknowledged."""
    result = await platform.security.posture(
        tenant_for_read(principal, tenant), since=_since(since, timedelta(hours=24))
    )
    return PostureOut.of(result, platform.security.dropped)


@router.get("/maintenance", response_model=list[MaintenanceOut])
async def list_maintenance(
    platform: PlatformDep, principal: SecurityReader, tenant: Name | None = None
) -> list[MaintenanceOut]:
    """Maintenance windows not yet ended."""
    windows = platform.security.maintenance_windows(tenant_for_read(principal, tenant))
    return [MaintenanceOut.of(w) for w in windows]


@router.post("/maintenance", response_model=MaintenanceOut, status_code=status.HTTP_201_CREATED)
async def open_maintenance(
    body: MaintenanceIn, platform: PlatformDep, principal: SecurityResponder
) -> MaintenanceOut:
    """Open a maintenance window: firmware and configuration changes in it raise no event."""
    tenant = tenant_for_write(principal, body.tenant_id)
    if body.device_id is not None:
        entry = platform.registry.lookup(body.device_id)
        if entry is None or entry.device.tenant_id != tenant:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {body.device_id!r}")
    window = await platform.security.open_maintenance(
        tenant,
        device_id=body.device_id,
        until=datetime.now(UTC) + timedelta(hours=body.hours),
        reason=body.reason,
        by=principal.name,
    )
    return MaintenanceOut.of(window)

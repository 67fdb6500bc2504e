"""Dead letters and events: what was refused, and what devices reported."""

from __future__ import annotations

from fastapi import APIRouter, Query

from tiangong.platform.api.auth import DevicesRead, PlatformDep, tenant_for_read
from tiangong.platform.api.schemas import DeadLetterOut
from tiangong.platform.registry import StoredEvent

router = APIRouter(prefix="/api/v1", tags=["records"])


@router.get("/dead-letters", response_model=list[DeadLetterOut])
async def dead_letters(
    platform: PlatformDep,
    principal: DevicesRead,
    device: str | None = None,
    reason: str | None = None,
    tenant: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[DeadLetterOut]:
    """Rejected input with its reason, newest first.

    Messages that name no known tenant are visible to platform administrators only.
    """
    rows = await platform.dead_letters.list(
        tenant_for_read(principal, tenant), device_id=device, reason=reason, limit=limit
    )
    return [
        DeadLetterOut(
            id=r.id,
            received_at=r.received_at,
            tenant_id=r.tenant_id,
            device_id=r.device_id,
            topic=r.topic,
            reason=r.reason,
            detail=r.detail,
            points=r.points,
            payload_preview=r.payload[:500].decode("utf-8", "replace"),
        )
        for r in rows
    ]


@router.get("/events", response_model=list[StoredEvent])
async def events(
    platform: PlatformDep,
    principal: DevicesRead,
    tenant: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[StoredEvent]:
    """Device events, newest first."""
    return await platform.registry.list_events(tenant_for_read(principal, tenant), limit=limit)

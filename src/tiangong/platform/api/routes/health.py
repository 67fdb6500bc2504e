"""Equipment health: fleet health and RUL, history, sensor anomalies, work orders, RUL models.

Reads need ``telemetry:read`` (health is derived from telemetry); work orders are read with
``alarms:read`` and changed with ``alarms:write`` (the operators who handle alarms); the model
registry, which holds no tenant data, with ``devices:read``. Tenant callers see their own tenant
only; another tenant's devices and work orders answer 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from tiangong.apps.health.anomaly import AnomalyKind
from tiangong.apps.health.service import AnomalyRecord, HealthEstimate, HealthPoint, WorkOrder
from tiangong.apps.health.workorders import WorkOrderAction, WorkOrderState
from tiangong.platform.api.auth import (
    AlarmsRead,
    AlarmsWrite,
    DevicesRead,
    PlatformDep,
    TelemetryRead,
    tenant_for_read,
    tenant_for_write,
)
from tiangong.platform.api.schemas import Page
from tiangong.platform.model import Name

router = APIRouter(prefix="/api/v1/apps", tags=["health"])

#: A work order number (the database's 64-bit id).
OrderId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class WorkOrderIn(BaseModel):
    """A work order opened by a person."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: Name | None = None
    device_id: Name
    cause: Name = "manual"
    title: str = Field(min_length=1, max_length=200)
    recommendation: str = Field("", max_length=1000)


class TransitionIn(BaseModel):
    """One step of a work order's life."""

    model_config = ConfigDict(extra="forbid")

    action: WorkOrderAction
    note: str | None = Field(None, max_length=1000)
    scheduled_for: datetime | None = None


class ModelOut(BaseModel):
    """A version of the RUL model registry."""

    version: str
    created_at: str
    bundled: bool
    rul_cap: int
    training_data: dict[str, Any]
    cross_validation: dict[str, Any] | None
    training_seconds: float
    libraries: dict[str, str]


@router.get("/health", response_model=list[HealthEstimate])
async def fleet_health(
    platform: PlatformDep, principal: TelemetryRead, tenant: str | None = None
) -> list[HealthEstimate]:
    """The latest health index and RUL of every judged device, least healthy first."""
    return await platform.health.fleet(tenant_for_read(principal, tenant))


@router.get("/health/anomalies", response_model=Page[AnomalyRecord])
async def anomalies(
    platform: PlatformDep,
    principal: TelemetryRead,
    tenant: str | None = None,
    device: str | None = None,
    kind: AnomalyKind | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Page[AnomalyRecord]:
    """Sensor anomalies (spike, stuck, drift), newest first."""
    items, total = await platform.health.anomalies(
        tenant_for_read(principal, tenant),
        device_id=device,
        kind=kind.value if kind else None,
        limit=limit,
        offset=offset,
    )
    return Page[AnomalyRecord](items=items, total=total)


@router.get("/health/{device_id}/history", response_model=list[HealthPoint])
async def health_history(
    device_id: str,
    platform: PlatformDep,
    principal: TelemetryRead,
    limit: int = Query(500, ge=1, le=5000),
) -> list[HealthPoint]:
    """A device's health and RUL over time, with the model version of each point."""
    return await platform.health.history(device_id, principal.scope, limit=limit)


@router.get("/work-orders", response_model=Page[WorkOrder])
async def list_work_orders(
    platform: PlatformDep,
    principal: AlarmsRead,
    tenant: str | None = None,
    state: WorkOrderState | None = None,
    active: bool = Query(False, description="only orders not done or cancelled"),
    device: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Page[WorkOrder]:
    """Maintenance work orders, newest first."""
    items, total = await platform.health.work_orders(
        tenant_for_read(principal, tenant),
        state=state,
        active=active,
        device_id=device,
        limit=limit,
        offset=offset,
    )
    return Page[WorkOrder](items=items, total=total)


@router.post("/work-orders", response_model=WorkOrder, status_code=status.HTTP_201_CREATED)
async def open_work_order(
    body: WorkOrderIn, platform: PlatformDep, principal: AlarmsWrite
) -> WorkOrder:
    """Open a work order by hand (409 if the device has an active one for the same cause)."""
    return await platform.health.open_work_order(
        tenant_for_write(principal, body.tenant_id),
        body.device_id,
        cause=body.cause,
        title=body.title,
        recommendation=body.recommendation,
        by=principal.name,
    )


@router.post("/work-orders/{order_id}/transition", response_model=WorkOrder)
async def transition_work_order(
    order_id: OrderId, body: TransitionIn, platform: PlatformDep, principal: AlarmsWrite
) -> WorkOrder:
    """Acknowledge, schedule, start, complete or cancel a work order (409 if not allowed now)."""
    return await platform.health.transition(
        order_id,
        principal.scope,
        body.action,
        by=principal.name,
        note=body.note,
        scheduled_for=body.scheduled_for,
    )


@router.get("/models", response_model=list[ModelOut])
async def models(platform: PlatformDep, _: DevicesRead) -> list[ModelOut]:
    """The RUL model registry: the shipped model and every version trained here."""
    return [
        ModelOut(
            version=v.version,
            created_at=v.created_at,
            bundled=v.bundled,
            rul_cap=v.rul_cap,
            training_data=v.training_data,
            cross_validation=v.cross_validation,
            training_seconds=v.training_seconds,
            libraries=v.libraries,
        )
        for v in await platform.health.model_versions()
    ]

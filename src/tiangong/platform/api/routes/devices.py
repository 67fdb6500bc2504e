"""Devices: registration, credentials, lifecycle, latest values, telemetry, events."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status

from tiangong.network.access import Channel, DeviceTopic
from tiangong.platform.api.auth import (
    CommandsWrite,
    DevicesRead,
    DevicesWrite,
    PlatformDep,
    TelemetryRead,
    tenant_for_read,
    tenant_for_write,
)
from tiangong.platform.api.query_params import parse_interval, parse_time
from tiangong.platform.api.schemas import (
    CommandIn,
    DeviceCreated,
    DeviceIn,
    DeviceLatest,
    DevicePatch,
    LatestValueOut,
    MqttAccess,
    Page,
    TelemetryOut,
)
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.model import DataType, Device, DeviceState, PropertySpec
from tiangong.platform.registry import StoredEvent
from tiangong.platform.tsdb.base import Aggregate

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

#: Longest time range of one telemetry query, so one request cannot scan years of raw data.
MAX_RANGE_MS = 400 * 86_400_000


def mqtt_access(device: Device, secret: str) -> MqttAccess:
    """How a device connects, with its (new) secret."""
    topics = {
        c.name.lower(): DeviceTopic.build(device.tenant_id, device.site_id, device.id, c)
        for c in Channel
    }
    return MqttAccess(username=device.id, password=secret, client_id=device.id, topics=topics)


def render(spec: PropertySpec | None, value: float | str | None, agg: Aggregate | None) -> Any:
    """A stored value as the thing model's type (labels for enums, booleans for bools)."""
    if value is None or spec is None or isinstance(value, str):
        return value
    if agg not in (None, Aggregate.LAST):
        return value
    match spec.type:
        case DataType.BOOL:
            return bool(value)
        case DataType.ENUM:
            labels = spec.enum or []
            index = int(value)
            return labels[index] if 0 <= index < len(labels) else index
        case DataType.INT:
            return int(value)
    return value


@router.get("", response_model=Page[Device])
async def list_devices(
    platform: PlatformDep,
    principal: DevicesRead,
    site: str | None = None,
    state: DeviceState | None = None,
    tenant: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Page[Device]:
    """Devices visible to the caller, filtered by site and state, paginated."""
    items, total = await platform.registry.list_devices(
        tenant_for_read(principal, tenant), site_id=site, state=state, limit=limit, offset=offset
    )
    return Page[Device](items=items, total=total)


@router.post("", response_model=DeviceCreated, status_code=status.HTTP_201_CREATED)
async def register_device(
    body: DeviceIn, platform: PlatformDep, principal: DevicesWrite
) -> DeviceCreated:
    """Register a device; the response carries its MQTT password, shown only this once."""
    device, secret = await platform.registry.register_device(
        tenant_id=tenant_for_write(principal, body.tenant_id),
        site_id=body.site_id,
        device_id=body.id,
        name=body.name,
        model_id=body.model_id,
        model_version=body.model_version,
        gateway_id=body.gateway_id,
        attributes=body.attributes,
        network=body.network,
    )
    return DeviceCreated(device=device, mqtt=mqtt_access(device, secret))


@router.get("/{device_id}", response_model=Device)
async def get_device(device_id: str, platform: PlatformDep, principal: DevicesRead) -> Device:
    """One device."""
    return await platform.registry.get_device(device_id, principal.scope)


@router.patch("/{device_id}", response_model=Device)
async def update_device(
    device_id: str, body: DevicePatch, platform: PlatformDep, principal: DevicesWrite
) -> Device:
    """Rename, move to another site or gateway, pin a model version, set attributes or network."""
    return await platform.registry.update_device(
        device_id,
        principal.scope,
        name=body.name,
        site_id=body.site_id,
        model_version=body.model_version,
        attributes=body.attributes,
        network=body.network,
        gateway_id=body.gateway_id,
    )


@router.post("/{device_id}/decommission", response_model=Device)
async def decommission_device(
    device_id: str, platform: PlatformDep, principal: DevicesWrite
) -> Device:
    """Decommission a device: its credentials stop working and its messages are refused."""
    return await platform.registry.apply_lifecycle(
        device_id,
        LifecycleTrigger.DECOMMISSION,
        reason=f"decommissioned by {principal.name}",
        tenant_id=principal.scope,
    )


@router.post("/{device_id}/credentials", response_model=MqttAccess)
async def rotate_credentials(
    device_id: str, platform: PlatformDep, principal: DevicesWrite
) -> MqttAccess:
    """Issue a new MQTT password; the old one stops working at once."""
    secret = await platform.registry.rotate_secret(device_id, principal.scope)
    device = await platform.registry.get_device(device_id, principal.scope)
    return mqtt_access(device, secret)


@router.get("/{device_id}/transitions")
async def device_transitions(
    device_id: str,
    platform: PlatformDep,
    principal: DevicesRead,
    limit: int = Query(50, ge=1, le=500),
) -> list[dict[str, Any]]:
    """The device's lifecycle history, newest first."""
    await platform.registry.get_device(device_id, principal.scope)
    return await platform.registry.transitions(device_id, limit)


@router.get("/{device_id}/latest", response_model=DeviceLatest)
async def latest(device_id: str, platform: PlatformDep, principal: TelemetryRead) -> DeviceLatest:
    """The newest value of every metric of the device."""
    device = await platform.registry.get_device(device_id, principal.scope)
    entry = platform.registry.lookup(device_id)
    series = await platform.store.device_series(device.tenant_id, device.id)
    values = await platform.store.latest(list(series.values()))
    out = []
    for metric, sid in sorted(series.items()):
        latest_value = values.get(sid)
        if latest_value is None:
            continue
        spec = entry.model.property(metric) if entry else None
        out.append(
            LatestValueOut(
                metric=metric,
                name=spec.name if spec and spec.name else metric,
                ts=datetime.fromtimestamp(latest_value.ts_ms / 1000, UTC),
                value=render(spec, latest_value.value, None),
                unit=spec.unit if spec else None,
            )
        )
    return DeviceLatest(device_id=device.id, values=out)


@router.get("/{device_id}/telemetry", response_model=TelemetryOut)
async def telemetry(
    device_id: str,
    platform: PlatformDep,
    principal: TelemetryRead,
    metric: str = Query(..., description="the metric (thing-model property) to read"),
    start: str | None = Query(None, description="ISO 8601, epoch ms, now, or like -1h"),
    end: str | None = Query(None, description="ISO 8601, epoch ms, now, or like -5m"),
    interval: str | None = Query(None, description="10s, 1m, 1h, 1d...; omit for raw points"),
    agg: Aggregate = Query(Aggregate.AVG, description="aggregate per interval"),
) -> TelemetryOut:
    """One metric over a time range: raw points, or one aggregate per interval."""
    device = await platform.registry.get_device(device_id, principal.scope)
    now_ms = int(time.time() * 1000)
    start_ms = parse_time(start, now_ms - 3_600_000, "start")
    end_ms = parse_time(end, now_ms, "end")
    if end_ms <= start_ms:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "end must be after start")
    if end_ms - start_ms > MAX_RANGE_MS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "at most 400 days per query; narrow the range"
        )
    interval_ms = parse_interval(interval)
    entry = platform.registry.lookup(device_id)
    spec = entry.model.property(metric) if entry else None
    series = await platform.store.device_series(device.tenant_id, device.id)
    sid = series.get(metric)
    points: list[tuple[int, Any]] = []
    if sid is not None:
        text = spec is not None and spec.type is DataType.STRING
        rows = await platform.store.query(sid, start_ms, end_ms, interval_ms, agg, text=text)
        chosen = agg if interval_ms else None
        points = [(t, render(spec, v, chosen)) for t, v in rows]
    elif spec is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"device {device_id!r} has no metric {metric!r} (see its thing model)",
        )
    return TelemetryOut(
        device_id=device.id,
        metric=metric,
        unit=spec.unit if spec else None,
        agg=agg.value if interval_ms else None,
        interval_ms=interval_ms,
        start=datetime.fromtimestamp(start_ms / 1000, UTC),
        end=datetime.fromtimestamp(end_ms / 1000, UTC),
        points=points,
    )


@router.get("/{device_id}/events", response_model=list[StoredEvent])
async def device_events(
    device_id: str,
    platform: PlatformDep,
    principal: DevicesRead,
    limit: int = Query(100, ge=1, le=1000),
) -> list[StoredEvent]:
    """The device's most recent events."""
    await platform.registry.get_device(device_id, principal.scope)
    return await platform.registry.list_events(
        tenant_for_read(principal, None), device_id=device_id, limit=limit
    )


@router.post("/{device_id}/commands/{command}")
async def send_command(
    device_id: str,
    command: str,
    body: CommandIn,
    platform: PlatformDep,
    principal: CommandsWrite,
) -> dict[str, Any]:
    """Send a command to a device and wait for its answer (operator).

    The command goes to the device, or through its edge gateway. ``write`` sets a writable
    property (``{"params": {"feed_override": 90}}``); other commands are those of the device's
    thing model. Answers 502 with the device's reason when it refuses, 504 when it does not
    answer in time, 409 when it is not online.
    """
    device = await platform.registry.get_device(device_id, principal.scope)
    result = await platform.commands.send(device, command, body.params, wait_s=body.timeout_s)
    return {"device_id": device.id, "command": command, "ok": True, "result": result}

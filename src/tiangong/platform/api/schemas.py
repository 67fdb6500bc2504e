"""Request and response bodies of the REST API that are not domain objects themselves.

Domain objects (``Tenant``, ``Site``, ``Device``, ``ThingModel``) are returned as they are; the
classes here add what only the API needs (pages, credentials shown once, query results).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tiangong.network.profile import NetworkProfile
from tiangong.platform.alarms.rules import Rule
from tiangong.platform.model import Device, Name
from tiangong.platform.tokens import ApiRole, ApiToken

__all__ = [
    "CommandIn",
    "DeadLetterOut",
    "DeviceCreated",
    "DeviceIn",
    "DeviceLatest",
    "DevicePatch",
    "KpiOut",
    "LatestValueOut",
    "MqttAccess",
    "Overview",
    "Page",
    "RuleIn",
    "SiteIn",
    "SiteKpis",
    "TelemetryOut",
    "TenantIn",
    "TenantPatch",
    "TokenCreated",
    "TokenIn",
]

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int


class TenantIn(_In):
    """A new tenant."""

    id: Name
    name: str = Field(min_length=1, max_length=200)
    retention_days: int = Field(default=90, ge=1, le=36_500)


class TenantPatch(_In):
    """Changes to a tenant."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    retention_days: int | None = Field(default=None, ge=1, le=36_500)


class SiteIn(_In):
    """A new site."""

    tenant_id: Name | None = None
    id: Name
    name: str = Field(min_length=1, max_length=200)
    location: str = Field(default="", max_length=200)
    timezone: str = "UTC"


class DeviceIn(_In):
    """A device to register."""

    tenant_id: Name | None = None
    site_id: Name
    id: Name
    name: str = Field(default="", max_length=200)
    model_id: Name
    model_version: int | None = Field(default=None, ge=1)
    gateway_id: Name | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    network: NetworkProfile = Field(default_factory=NetworkProfile)


class DevicePatch(_In):
    """Changes to a device."""

    name: str | None = Field(default=None, max_length=200)
    site_id: Name | None = None
    model_version: int | None = Field(default=None, ge=1)
    attributes: dict[str, str] | None = None
    network: NetworkProfile | None = None
    gateway_id: Name | None = Field(
        default=None, description="move the device behind this gateway of its tenant"
    )


class CommandIn(_In):
    """A command's parameters and how long to wait for the answer."""

    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=60)


class MqttAccess(BaseModel):
    """How a device connects (the password is shown once)."""

    username: str
    password: str
    client_id: str
    topics: dict[str, str]


class DeviceCreated(BaseModel):
    """A registered device and its credentials."""

    device: Device
    mqtt: MqttAccess


class LatestValueOut(BaseModel):
    """The newest value of one metric."""

    metric: str
    name: str
    ts: datetime
    value: float | str | bool | None
    unit: str | None


class DeviceLatest(BaseModel):
    """The newest value of every metric of a device."""

    device_id: str
    values: list[LatestValueOut]


class TelemetryOut(BaseModel):
    """A metric over a time range: raw points or one aggregate per interval."""

    device_id: str
    metric: str
    unit: str | None
    agg: str | None
    interval_ms: int | None
    start: datetime
    end: datetime
    points: list[tuple[int, float | str | bool | None]] = Field(
        description="[epoch milliseconds (bucket start when aggregated), value]"
    )


class RuleIn(_In):
    """A rule to create or replace."""

    tenant_id: Name | None = None
    enabled: bool = True
    rule: Annotated[Rule, Field(description="a threshold or rate_of_change rule")]


class KpiOut(BaseModel):
    """Connectivity KPIs of a site (or a whole tenant, site ``*``) at one moment."""

    tenant_id: str
    site_id: str
    ts: datetime
    registered: int
    online: int
    reporting: int
    networking_rate: float | None = Field(description="online / registered devices (联网率)")
    coverage: float | None = Field(
        description="data points reporting / data points declared by thing models"
    )
    expected_metrics: int
    reporting_metrics: int


class SiteKpis(BaseModel):
    """A site's KPIs now and over a time range."""

    tenant_id: str
    site_id: str
    current: KpiOut | None
    history: list[KpiOut]


class TokenIn(_In):
    """A token to issue."""

    name: str = Field(min_length=1, max_length=200)
    role: ApiRole
    tenant_id: Name | None = None
    expires_at: datetime | None = None


class TokenCreated(BaseModel):
    """An issued token (the secret is shown once)."""

    token: ApiToken
    secret: str


class DeadLetterOut(BaseModel):
    """A rejected message (or the rejected values of one)."""

    id: int
    received_at: datetime
    tenant_id: str | None
    device_id: str | None
    topic: str
    reason: str
    detail: str
    points: int
    payload_preview: str


class Overview(BaseModel):
    """What the dashboard's header shows."""

    tenants: list[dict[str, str]]
    sites: int
    devices: dict[str, int]
    networking_rate: float | None
    coverage: float | None
    alarms_open: dict[str, int]
    ingest_points_per_s: float
    points_stored_total: int
    dead_letters: dict[str, int]
    broker_connected: bool
    started_at: datetime

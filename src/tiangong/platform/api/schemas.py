"""Request and response bodies of the REST API that are not domain objects themselves.

Domain objects (``Tenant``, ``Site``, ``Device``, ``ThingModel``) are returned as they are; the
classes here add what only the API needs (pages, credentials shown once, query results).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from tiangong.network.profile import NetworkProfile
from tiangong.platform.alarms.rules import Rule
from tiangong.platform.model import Device, Name
from tiangong.platform.tokens import ApiRole, ApiScope, ApiToken
from tiangong.security.users import MAX_PASSWORD_LENGTH, USERNAME_PATTERN

__all__ = [
    "CommandIn",
    "DeadLetterOut",
    "DeviceCreated",
    "DeviceIn",
    "DeviceLatest",
    "DevicePatch",
    "KpiOut",
    "LatestValueOut",
    "LoginIn",
    "LoginOut",
    "MqttAccess",
    "Overview",
    "Page",
    "PasswordChanged",
    "PasswordIn",
    "RuleIn",
    "SiteIn",
    "SiteKpis",
    "TelemetryOut",
    "TenantIn",
    "TenantPatch",
    "TokenCreated",
    "TokenIn",
    "UserCreated",
    "UserIn",
    "UserOut",
    "UserPatch",
    "WhoAmI",
    "document_error_bodies",
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
    expires_at: datetime | None = Field(
        default=None, description="default: 90 days from now; at most 366 days"
    )
    scopes: list[ApiScope] | None = Field(
        default=None,
        min_length=1,
        description="narrow the role's scopes to these; default: all of the role's",
    )


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


Password = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
UserName = Annotated[str, Field(pattern=USERNAME_PATTERN.replace("a-z", "A-Za-z"))]


class LoginIn(_In):
    """A sign-in: user names are unique platform-wide, so no tenant is needed."""

    username: str = Field(min_length=1, max_length=200)
    password: Password


class UserOut(BaseModel):
    """A user (never its password)."""

    id: str
    username: str
    role: ApiRole
    tenant_id: str | None
    created_at: datetime
    password_changed_at: datetime
    disabled: bool
    last_login_at: datetime | None


class LoginOut(BaseModel):
    """A new session: send ``token`` as ``Authorization: Bearer``; it is shown once."""

    token: str
    session_id: str
    expires_at: datetime
    idle_timeout_s: int
    user: UserOut


class WhoAmI(BaseModel):
    """The caller: a token or a session, its role, tenant and effective scopes."""

    kind: str
    id: str
    name: str
    role: ApiRole
    tenant_id: str | None
    scopes: list[ApiScope]
    user_id: str | None


class UserIn(_In):
    """A user to create; without ``password`` one is generated and shown once."""

    username: UserName
    role: ApiRole
    tenant_id: Name | None = None
    password: Password | None = None


class UserCreated(BaseModel):
    """A created user, with its generated password when none was given (shown once)."""

    user: UserOut
    password: str | None


class UserPatch(_In):
    """Changes to a user."""

    role: ApiRole | None = None
    disabled: bool | None = None


class PasswordIn(_In):
    """A new password: your own (give ``current_password``) or, as an admin, a reset.

    Without ``password`` an admin reset generates one and shows it once.
    """

    password: Password | None = None
    current_password: Password | None = None


class PasswordChanged(BaseModel):
    """A user's new password took effect (every session of the user ended).

    ``password`` is the generated one of an admin reset without a password (shown once).
    """

    user: UserOut
    password: str | None


def document_error_bodies(app: FastAPI) -> None:
    """Describe the API's 422 bodies as they are: ``detail`` is a list, a sentence or a reason.

    FastAPI documents a 422 as its own validation error (``detail``: a list of
    ``{loc, msg, type}``); the platform's own checks (an unknown time zone, a platform admin
    naming no tenant...) answer ``{"detail": "<what is wrong>"}``, and the certificate routes
    ``{"detail": {"reason", "message"}}``. All reach clients, so the OpenAPI description admits
    all three, and generated clients and schemathesis accept them.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()
        error = spec.get("components", {}).get("schemas", {}).get("HTTPValidationError")
        if error is not None:
            detail = error["properties"]["detail"]
            error["properties"]["detail"] = {
                "title": "Detail",
                "anyOf": [
                    {key: value for key, value in detail.items() if key != "title"},
                    {"type": "string", "description": "what is wrong, in a sentence"},
                    {"type": "object", "description": "a reason code and a message"},
                ],
            }
        return spec

    app.openapi = openapi  # type: ignore[method-assign]

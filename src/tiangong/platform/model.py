"""The platform's domain model: tenant (enterprise) → site (factory) → device, and thing models.

A **thing model** (物模型) describes what a kind of device reports and accepts: typed properties
with units and ranges, events, and commands. It is versioned: a new version is a new immutable
document, and each device is pinned to one version, so changing a model never reinterprets data
already stored. Thing models import and export as the JSON these classes serialize to.
"""

from __future__ import annotations

import enum
import math
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from tiangong.network.access.topics import NAME_PATTERN
from tiangong.network.profile import NetworkProfile

__all__ = [
    "LINK_PROPERTIES",
    "CommandSpec",
    "DataType",
    "Device",
    "DeviceState",
    "EventSpec",
    "Name",
    "PropertySpec",
    "Severity",
    "Site",
    "Tenant",
    "ThingModel",
]

#: A tenant, site, device, metric, event, command or thing-model name (also used in topics).
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataType(enum.StrEnum):
    """Value types of thing-model properties."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    ENUM = "enum"
    STRING = "string"

    @property
    def numeric(self) -> bool:
        """Whether values are stored as numbers (enums as their index, booleans as 0/1)."""
        return self is not DataType.STRING


class Severity(enum.StrEnum):
    """Alarm and event severity, most severe first (ITU-T X.733 perceived severity)."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for critical up to 4 for info; sorts most severe first."""
        return list(Severity).index(self)


class PropertySpec(_Frozen):
    """One typed property (data point) of a thing model.

    Attributes:
        id: the metric name devices use in payloads.
        name: display name (any language).
        type: value type.
        unit: engineering unit (e.g. ``kW``, ``degC``, ``rpm``); payload units must match it.
        min: lowest valid value (numeric types).
        max: highest valid value (numeric types).
        enum: the allowed labels of an ``enum`` property, stored as their index.
        writable: whether commands may set it.
        description: free text.
    """

    id: Name
    name: str = ""
    type: DataType
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    enum: list[str] | None = None
    writable: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type is DataType.ENUM:
            if not self.enum:
                raise ValueError(f"property {self.id!r}: an enum needs its 'enum' labels")
            if len(set(self.enum)) != len(self.enum):
                raise ValueError(f"property {self.id!r}: enum labels must be unique")
        elif self.enum is not None:
            raise ValueError(f"property {self.id!r}: 'enum' is only for type enum")
        if self.type in (DataType.STRING, DataType.BOOL, DataType.ENUM) and (
            self.min is not None or self.max is not None
        ):
            raise ValueError(f"property {self.id!r}: min/max only apply to numbers")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"property {self.id!r}: bounds must be finite")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"property {self.id!r}: min is above max")
        return self


class EventSpec(_Frozen):
    """An event a device may raise (a fault, a tool change, a door opened)."""

    id: Name
    name: str = ""
    severity: Severity = Severity.INFO
    description: str = ""
    fields: list[PropertySpec] = Field(default_factory=list)


class CommandSpec(_Frozen):
    """A command the platform may send to a device."""

    id: Name
    name: str = ""
    description: str = ""
    params: list[PropertySpec] = Field(default_factory=list)
    result: list[PropertySpec] = Field(default_factory=list)


class ThingModel(_Frozen):
    """A versioned description of a kind of device.

    Attributes:
        id: the model's name within its tenant.
        version: 1, 2, 3...; each version is immutable once created.
        name: display name.
        description: free text.
        properties: typed data points.
        events: events devices of this kind raise.
        commands: commands they accept.
    """

    id: Name
    version: int = Field(default=1, ge=1)
    name: str = ""
    description: str = ""
    properties: list[PropertySpec] = Field(default_factory=list)
    events: list[EventSpec] = Field(default_factory=list)
    commands: list[CommandSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        for kind, items in (
            ("property", self.properties),
            ("event", self.events),
            ("command", self.commands),
        ):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"{kind} {item.id!r} is defined twice")
                seen.add(item.id)
        return self

    def property(self, metric: str) -> PropertySpec | None:
        """The property named ``metric``: declared by the model, or a built-in link metric."""
        for spec in self.properties:
            if spec.id == metric:
                return spec
        return LINK_PROPERTIES.get(metric)

    def to_json(self) -> dict[str, Any]:
        """The model as a JSON-ready document (the export format)."""
        return self.model_dump(mode="json", exclude_defaults=False)


#: Link metrics the network layer reports for any device (an edge gateway measures each device's
#: link: round trip, jitter, loss, reconnects). Every device accepts them without declaring them,
#: and they do not count as declared data points in the coverage KPI.
LINK_PROPERTIES: Final[dict[str, PropertySpec]] = {
    spec.id: spec
    for spec in (
        PropertySpec(
            id="link.rtt_ms", name="Link round trip", type=DataType.FLOAT, unit="ms", min=0
        ),
        PropertySpec(
            id="link.jitter_ms", name="Link jitter", type=DataType.FLOAT, unit="ms", min=0
        ),
        PropertySpec(
            id="link.loss_pct", name="Link loss", type=DataType.FLOAT, unit="%", min=0, max=100
        ),
        PropertySpec(id="link.reconnects", name="Link reconnects", type=DataType.INT, min=0),
    )
}


class Tenant(_Frozen):
    """An enterprise using the platform.

    Attributes:
        id: the tenant's name (appears in topics).
        name: display name.
        retention_days: how long raw telemetry is kept (rollups are kept longer).
        created_at: when it was created.
    """

    id: Name
    name: str
    retention_days: int = Field(default=90, ge=1, le=36_500)
    created_at: datetime | None = None


class Site(_Frozen):
    """A factory (or workshop) of a tenant."""

    tenant_id: Name
    id: Name
    name: str
    location: str = ""
    timezone: str = "UTC"
    created_at: datetime | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value


class DeviceState(enum.StrEnum):
    """Device lifecycle states (see ``lifecycle``)."""

    PROVISIONED = "provisioned"
    ONLINE = "online"
    OFFLINE = "offline"
    DECOMMISSIONED = "decommissioned"


class Device(_Frozen):
    """A connected machine, meter, sensor, PLC or gateway.

    Attributes:
        id: globally unique name; also the device's MQTT user name.
        tenant_id: owning tenant.
        site_id: the site it is installed at.
        name: display name.
        model_id: its thing model.
        model_version: the pinned version of that model.
        gateway_id: the gateway it reports through, if any.
        state: lifecycle state.
        attributes: free key/value metadata (vendor, serial number, line...).
        network: how it is connected (5G slice, Wi-Fi, wired, fieldbus).
        created_at: registration time.
        state_changed_at: time of the last lifecycle transition.
        last_seen_at: time of the last message from it.
    """

    id: Name
    tenant_id: Name
    site_id: Name
    name: str = ""
    model_id: Name
    model_version: int = Field(ge=1)
    gateway_id: Name | None = None
    state: DeviceState = DeviceState.PROVISIONED
    attributes: dict[str, str] = Field(default_factory=dict)
    network: NetworkProfile = Field(default_factory=NetworkProfile)
    created_at: datetime | None = None
    state_changed_at: datetime | None = None
    last_seen_at: datetime | None = None

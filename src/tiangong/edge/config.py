"""The edge gateway's configuration: one TOML file, validated, with errors that name the line.

A gateway configuration says who the gateway is on the platform, how it reaches the platform's
broker, where it buffers, and for each machine behind it: the protocol (Modbus TCP, OPC UA, MQTT
on a local broker, HTTP push), how to reach it, and each data point mapped to a property of the
machine's thing model. Data points are declared here, never in code. See ``docs/edge.md``.

Validation is strict (unknown keys are errors, so a typo is caught), and an error points at the
line of the file to fix: ``edge.toml:42: devices[2].points[5].type: Input should be 'int16',
'uint16', ...``. TOML's parser reports the line of syntax errors itself; for a value that parses
but is invalid, ``locate`` walks the file's table headers to find the line of the offending key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tiangong.edge.errors import EdgeConfigError
from tiangong.network.profile import NetworkProfile
from tiangong.platform.model import Name, Severity

__all__ = [
    "BufferSection",
    "DeviceConfig",
    "EdgeConfig",
    "GatewaySection",
    "HttpDevice",
    "HttpPoint",
    "LocalRule",
    "ModbusCommand",
    "ModbusDevice",
    "ModbusPoint",
    "MqttDevice",
    "MqttPoint",
    "NetworkProfile",
    "OpcUaDevice",
    "OpcUaEventSource",
    "OpcUaMethod",
    "OpcUaPoint",
    "PointConfig",
    "UplinkSection",
    "UplinkTls",
    "load_config",
    "locate",
    "parse_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """Who the gateway is on the platform.

    Attributes:
        id: the gateway's device name (its MQTT user name).
        tenant: the tenant it belongs to.
        site: the site it is installed at.
        data_dir: where the store-and-forward buffer lives.
    """

    id: Name
    tenant: Name
    site: Name
    data_dir: Path = Path(".tiangong/edge")


#: A Sparkplug host application id: UTF-8 without the topic characters ``+ / #`` (nor NUL).
SparkplugHostId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^+/#\x00]+$")
]


class UplinkTls(_Section):
    """TLS to the platform's broker with the gateway's client certificate.

    ``tiangong edge enrol`` writes all three files. With ``[uplink.tls]`` the certificate is
    the gateway's identity: no password is needed (``port`` is then the broker's TLS port).

    Attributes:
        ca: the CA of the broker's server certificate (``server-ca.pem``).
        cert: the gateway's certificate (PEM).
        key: its private key (PEM, mode 0600).
    """

    ca: Path
    cert: Path
    key: Path


class UplinkSection(_Section):
    """How the gateway reaches the platform's broker.

    Attributes:
        host: broker address.
        port: broker port.
        username: broker user (default: the gateway id).
        password_env: environment variable holding the password.
        password_file: file holding the password (mode 0600).
        tls: TLS with a client certificate (``[uplink.tls]``), instead of a password.
        protocol: ``json`` (the platform's own JSON scheme, the default) or ``sparkplug``
            (Sparkplug B 3.0: group id = the site, edge node id = the gateway id; see
            ``docs/sparkplug.md``). ``tiangong``, the scheme's former name, means ``json``.
        primary_host_id: Sparkplug only: the primary host application whose STATE must say
            online before the gateway publishes its births (none: publish at once).
        mqtt_version: 5 or 4 (3.1.1).
        flush_ms: how long points wait to be batched into one message.
        max_batch_points: most points in one message.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=1884, ge=1, le=65535)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    tls: UplinkTls | None = None
    protocol: Literal["json", "sparkplug"] = "json"
    primary_host_id: SparkplugHostId | None = None
    mqtt_version: Literal[4, 5] = 5
    flush_ms: int = Field(default=200, ge=1, le=60_000)
    max_batch_points: int = Field(default=100_000, ge=1, le=2_000_000)

    @field_validator("protocol", mode="before")
    @classmethod
    def _former_name(cls, value: object) -> object:
        return "json" if value == "tiangong" else value

    @field_validator("primary_host_id")
    @classmethod
    def _sparkplug_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field validator (not a model one) so that the error names this key's line.
        if value is not None and info.data.get("protocol") != "sparkplug":
            raise ValueError('primary_host_id applies to protocol = "sparkplug" only')
        return value


class BufferSection(_Section):
    """The store-and-forward buffer.

    Attributes:
        max_bytes: disk the buffer may use; when full, ``overflow`` applies.
        overflow: ``drop_oldest`` (keep the newest data, the default) or ``drop_newest``
            (keep the oldest). Either way, dropped points are counted and reported.
    """

    max_bytes: int = Field(default=1024**3, ge=1024 * 1024)
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"


class _Point(_Section):
    property: Name
    unit: str | None = None
    deadband: float | None = Field(default=None, ge=0)
    window_s: float | None = Field(default=None, gt=0, le=86_400)
    aggregate: Literal["avg", "min", "max", "last"] | None = None
    writable: bool = False

    @model_validator(mode="after")
    def _window_and_aggregate_together(self) -> Self:
        if (self.window_s is None) != (self.aggregate is None):
            raise ValueError("window_s and aggregate go together")
        return self


ModbusType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"
]


class ModbusPoint(_Point):
    """A Modbus data point.

    Attributes:
        table: ``holding`` or ``input`` registers, ``coil`` or ``discrete`` inputs.
        address: the first register (0-based, as on the wire).
        type: how the registers encode the value.
        word_order: order of 16-bit words in a multi-register value.
        byte_order: order of the two bytes in each register.
        scale: engineering value = raw * scale + offset.
        offset: see ``scale``.
    """

    table: Literal["holding", "input", "coil", "discrete"] = "holding"
    address: int = Field(ge=0, le=65535)
    type: ModbusType = "uint16"
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _bits_are_bools(self) -> Self:
        bits = self.table in ("coil", "discrete")
        if bits != (self.type == "bool"):
            raise ValueError("coils and discrete inputs are type 'bool'; registers are not")
        if self.writable and self.table in ("input", "discrete"):
            raise ValueError(f"{self.table} registers are read-only; only holding/coil write")
        return self


class OpcUaPoint(_Point):
    """An OPC UA variable, subscribed to.

    Attributes:
        node: node id, e.g. ``ns=2;s=cnc-001.spindle_temp``.
        sampling_ms: the server's sampling interval for the monitored item.
    """

    node: str
    sampling_ms: int = Field(default=1000, ge=0, le=3_600_000)


class OpcUaMethod(_Section):
    """An OPC UA method the platform may call as a command.

    Attributes:
        command: the thing-model command id.
        object: node id of the object that owns the method.
        method: node id of the method.
    """

    command: Name
    object: str
    method: str


class OpcUaEventSource(_Section):
    """An OPC UA object whose events become the device's events on the platform.

    Attributes:
        source: node id of the object (its ``EventNotifier`` must allow subscribing).
        event: the thing-model event id every event of the source becomes. Without it, the
            event's message says which: ``<event id>: key=value, ...`` (the text before the
            colon is the id, the pairs become the event's data).
    """

    source: str
    event: Name | None = None


class MqttPoint(_Point):
    """A value taken from messages on a local MQTT broker.

    Attributes:
        topic: topic (filter) the device publishes on.
        field: JSON field holding the value (``None``: the payload is the value).
    """

    topic: str
    field: str | None = None


class HttpPoint(_Point):
    """A value taken from JSON documents POSTed to the gateway.

    Attributes:
        field: JSON field holding the value.
    """

    field: str


class _Device(_Section):
    id: Name
    name: str = ""
    model: Name | None = None
    network: NetworkProfile = Field(default_factory=NetworkProfile)


class ModbusCommand(_Section):
    """A thing-model command carried out by writing 1 (ON) to a coil.

    PLCs commonly take "start", "stop" or "reset counters" this way and clear the coil on their
    next scan.

    Attributes:
        command: the thing-model command id.
        coil: the coil's address (0-based, as on the wire).
    """

    command: Name
    coil: int = Field(ge=0, le=65535)


class ModbusDevice(_Device):
    """A Modbus TCP device (or a gateway unit id behind one address).

    Attributes:
        commands: command coils; ``write`` (one writable point) is always available too.
    """

    protocol: Literal["modbus"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255)
    poll_ms: int = Field(default=1000, ge=10, le=3_600_000)
    timeout_ms: int = Field(default=1000, ge=10, le=60_000)
    points: list[ModbusPoint] = Field(min_length=1)
    commands: list[ModbusCommand] = Field(default_factory=list)

    @model_validator(mode="after")
    def _commands_distinct(self) -> Self:
        names = [c.command for c in self.commands]
        if "write" in names:
            raise ValueError("'write' is the built-in command; name the coil command otherwise")
        if len(set(names)) != len(names):
            raise ValueError("a command is declared twice")
        return self


class OpcUaDevice(_Device):
    """An OPC UA server (or the part of one that is this machine)."""

    protocol: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    timeout_ms: int = Field(default=4000, ge=100, le=60_000)
    points: list[OpcUaPoint] = Field(min_length=1)
    methods: list[OpcUaMethod] = Field(default_factory=list)
    events: list[OpcUaEventSource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _security_consistent(self) -> Self:
        secure = self.security_policy != "None"
        if secure != (self.security_mode != "None"):
            raise ValueError("security_policy and security_mode are both 'None' or both set")
        if secure and (self.certificate is None or self.private_key is None):
            raise ValueError(f"{self.security_policy} needs certificate and private_key")
        return self


class MqttDevice(_Device):
    """A device publishing on a local MQTT broker the gateway subscribes to.

    Attributes:
        stale_after_s: silence after which the device counts as unreachable.
    """

    protocol: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password_env: str | None = None
    stale_after_s: float = Field(default=60.0, gt=0)
    points: list[MqttPoint] = Field(min_length=1)


class HttpDevice(_Device):
    """A device that can only POST JSON to the gateway (``POST /push/<device id>``).

    Attributes:
        token_env: environment variable holding the bearer token the device must send
            (required: the gateway accepts no anonymous data).
        stale_after_s: silence after which the device counts as unreachable.
    """

    protocol: Literal["http"]
    token_env: str
    stale_after_s: float = Field(default=60.0, gt=0)
    points: list[HttpPoint] = Field(min_length=1)


DeviceConfig = Annotated[
    ModbusDevice | OpcUaDevice | MqttDevice | HttpDevice, Field(discriminator="protocol")
]
PointConfig = ModbusPoint | OpcUaPoint | MqttPoint | HttpPoint


class LocalRule(_Section):
    """A threshold the gateway watches itself, so alarms are raised even with the uplink down.

    Attributes:
        name: the alarm's name.
        device: device id.
        property: the property watched.
        op: comparison.
        value: the limit.
        duration_s: how long the condition must hold.
        severity: alarm severity.
    """

    name: str = Field(min_length=1, max_length=200)
    device: Name
    property: Name
    op: Literal[">", ">=", "<", "<="]
    value: float
    duration_s: float = Field(default=0.0, ge=0)
    severity: Severity = Severity.MAJOR


class HttpSection(_Section):
    """The gateway's HTTP listener (push devices and status)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8091, ge=0, le=65535)


class EdgeConfig(_Section):
    """A whole gateway configuration."""

    gateway: GatewaySection
    uplink: UplinkSection = Field(default_factory=UplinkSection)
    buffer: BufferSection = Field(default_factory=BufferSection)
    http: HttpSection = Field(default_factory=HttpSection)
    devices: list[DeviceConfig] = Field(min_length=1)
    rules: list[LocalRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        seen: set[str] = set()
        properties: dict[str, set[str]] = {}
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device {device.id!r} is configured twice")
            seen.add(device.id)
            names = [p.property for p in device.points]
            duplicate = {n for n in names if names.count(n) > 1}
            if duplicate:
                raise ValueError(f"device {device.id!r} maps {sorted(duplicate)} more than once")
            properties[device.id] = set(names)
        for rule in self.rules:
            if rule.device not in properties:
                raise ValueError(f"rule {rule.name!r} names unknown device {rule.device!r}")
            if rule.property not in properties[rule.device]:
                raise ValueError(
                    f"rule {rule.name!r}: device {rule.device!r} has no point {rule.property!r}"
                )
        return self


# -- locating errors in the file ------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def locate(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the key at pydantic location ``loc`` in TOML ``text``, if found.

    TOML's rule is followed: ``[[a.b]]`` appends an element to array ``b`` of the latest
    element of ``a``; ``[a.c]`` opens table ``c`` of the latest element of ``a``. The key is
    searched in the block of the deepest header matching ``loc``; without it, the header's
    line is returned.
    """
    lines = text.splitlines()
    latest: dict[tuple[int | str, ...], int] = {}  # array of tables -> index of its last element
    headers: list[tuple[tuple[int | str, ...], int]] = []
    for number, line in enumerate(lines):
        header = _HEADER.match(line)
        if header is None:
            continue
        parts = header.group(2).split(".")
        path: tuple[int | str, ...] = ()
        for depth, part in enumerate(parts):
            path = (*path, part)
            if depth == len(parts) - 1 and header.group(1) == "[[":
                latest[path] = latest.get(path, -1) + 1
                path = (*path, latest[path])
            elif path in latest:
                path = (*path, latest[path])
        headers.append((path, number))
    start = 0
    best: tuple[int | str, ...] = ()
    header_line: int | None = None
    for path, number in headers:
        if len(path) > len(best) and loc[: len(path)] == path:
            start, best, header_line = number + 1, path, number + 1
    remainder = loc[len(best) :]
    if remainder and isinstance(remainder[0], str):
        for number in range(start, len(lines)):
            if _HEADER.match(lines[number]):
                break
            key = _KEY.match(lines[number])
            if key is not None and key.group(1) == remainder[0]:
                return number + 1
    return header_line


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif item.startswith(("modbus", "opcua", "mqtt", "http")) and out.endswith("]"):
            continue  # pydantic's discriminator tag is noise for the reader
        else:
            out += f".{item}" if out else item
    return out


def parse_config(text: str, source: str = "edge.toml") -> EdgeConfig:
    """Validate configuration text.

    Raises:
        EdgeConfigError: the first problem, with its line and an explanation.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line_match = re.search(r"line (\d+)", str(exc))
        line = int(line_match.group(1)) if line_match else None
        raise EdgeConfigError(source, line, f"not valid TOML: {exc}") from exc
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        clean = tuple(i for i in loc if not (isinstance(i, str) and i in _PROTOCOL_TAGS))
        line = locate(text, clean)
        message = first["msg"].removeprefix("Value error, ")
        where = _where(clean)
        count = len(exc.errors())
        more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
        raise EdgeConfigError(
            source, line, f"{where}: {message}{more}" if where else message
        ) from exc


_PROTOCOL_TAGS = frozenset({"modbus", "opcua", "mqtt", "http"})


def load_config(path: Path) -> EdgeConfig:
    """Read and validate a configuration file.

    Raises:
        EdgeConfigError: unreadable or invalid; the message names the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgeConfigError(str(path), None, f"cannot read the file: {exc.strerror}") from exc
    return parse_config(text, str(path))

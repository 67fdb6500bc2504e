"""Sans-I/O Sparkplug B codec: topics, metrics and payloads as typed values, and back.

Strategy
--------
Sparkplug B puts a protobuf ``Payload`` (schema: ``sparkplug_b.proto``, compiled into the
generated module) on MQTT topics of the form ``spBv1.0/<group>/<type>/<edge node>[/<device>]``,
plus JSON on ``spBv1.0/STATE/<host id>``. This module turns those into frozen dataclasses and
back, and does nothing else: no clock reads except through the caller, no sockets, no session
state. ``edge_node`` and ``host`` keep the protocol state on top of it.

The protobuf value fields are few and wide (a ``uint32``, a ``uint64``, ``bytes``...), and the
metric's ``datatype`` says how to read them. Python values map per datatype:

* Int8/16/32 and UInt8/16/32 travel in ``int_value``, Int64, UInt64 and DateTime (milliseconds
  since the epoch, UTC) in ``long_value``. Signed values are written as two's complement of the
  field's width, as Eclipse Tahu's Java encoder (and so Ignition) does. Tahu's Python
  encoder writes Int8 and Int16 as two's complement of 8 and 16 bits instead, so the decoder
  accepts both forms; anything else out of range is an error, never silently truncated. Some
  older encoders put UInt32 in ``long_value``: either integer field is accepted for any integer
  datatype, while the encoder follows the specification's table.
* Float and Double use their own fields (a Float is rounded to 32 bits on the way out), Boolean
  ``boolean_value``; String, Text and UUID ``string_value`` (a UUID stays a ``str``).
* Bytes and File are ``bytes`` in ``bytes_value``; the array types (22 to 34) are tuples packed
  little-endian into ``bytes_value``: BooleanArray as a 4-byte count then bits, most significant
  first, StringArray as NUL-terminated UTF-8 strings, DateTimeArray as unsigned 64-bit ms.
* DataSet and Template are decoded into ``DataSet`` and ``Template`` and encoded back, so they
  round-trip; extension values (``extensions 1 to max`` messages) are kept as raw bytes.

A DATA or CMD message may leave out the datatype; the metric is then decoded with
``DataType.UNKNOWN`` and its raw wire value, and ``resolve_datatype`` reinterprets it once the
receiver has looked the datatype up in the BIRTH certificate.

Decoding is strict about what cannot be right (protobuf that does not parse, a known field with
the wrong wire type, invalid UTF-8, a value out of its datatype's range) and lenient about what
other implementations legitimately do differently (unknown extension fields, a missing datatype,
an integer in the other integer field).
"""

from __future__ import annotations

import enum
import json
import math
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Final, NamedTuple, TypeAlias

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message

from tiangong.network.errors import (
    SparkplugMetricError,
    SparkplugPayloadError,
    SparkplugTopicError,
)
from tiangong.network.sparkplug import _generated_sparkplug_b_pb2 as pb

__all__ = [
    "BDSEQ_METRIC",
    "EVENT_METRIC_PREFIX",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "ArrayValue",
    "DataSet",
    "DataSetCell",
    "DataType",
    "EdgeNodeDescriptor",
    "ExtensionValue",
    "HostState",
    "MessageType",
    "MetaData",
    "Metric",
    "MetricValue",
    "OutboundMessage",
    "PayloadData",
    "PropertySet",
    "PropertyValue",
    "ScalarValue",
    "SparkplugTopic",
    "StateTopic",
    "Template",
    "TemplateParameter",
    "decode_payload",
    "decode_state",
    "encode_payload",
    "encode_state",
    "parse_topic",
    "resolve_datatype",
    "validate_value",
    "wall_clock_ms",
]

#: The topic namespace of Sparkplug B.
NAMESPACE: Final = "spBv1.0"
#: The NBIRTH/NDEATH metric that pairs a death certificate with its birth.
BDSEQ_METRIC: Final = "bdSeq"
#: The NBIRTH metric a host writes ``true`` to (NCMD) to ask for a new birth sequence.
REBIRTH_METRIC: Final = "Node Control/Rebirth"
#: Tiangong's convention, not the specification's: a String metric ``event/<event id>`` carries
#: occurrences of a thing-model event, each value the event's data as a JSON object.
EVENT_METRIC_PREFIX: Final = "event/"

_U32: Final = (1 << 32) - 1
_U64: Final = (1 << 64) - 1


def wall_clock_ms() -> int:
    """Milliseconds since the epoch (UTC), the unit of every Sparkplug timestamp."""
    return time.time_ns() // 1_000_000


# --- topics --------------------------------------------------------------------------------------


class MessageType(enum.Enum):
    """The message type element of a Sparkplug topic."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"

    @property
    def device_level(self) -> bool:
        """Whether topics of this type carry a device id (they must; the others must not)."""
        return self in _DEVICE_TYPES


_DEVICE_TYPES: Final = frozenset(
    {MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD}
)
# MQTT wildcards and the level separator cannot be part of an id; NUL is banned by MQTT itself.
_FORBIDDEN_IN_IDS: Final = frozenset("+/#\x00")


def _check_id(kind: str, value: str, topic: str) -> None:
    if not value:
        raise SparkplugTopicError(topic, "bad_id", f"empty {kind}")
    if not _FORBIDDEN_IN_IDS.isdisjoint(value):
        raise SparkplugTopicError(topic, "bad_id", f"{kind} {value!r} contains + / # or NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SparkplugTopicError(topic, "bad_id", f"{kind} is not valid UTF-8") from exc


@dataclass(frozen=True, slots=True, order=True)
class EdgeNodeDescriptor:
    """An edge node's address: the group id and edge node id pair, unique in the system."""

    group_id: str
    edge_node_id: str

    def __post_init__(self) -> None:
        where = f"{self.group_id}/{self.edge_node_id}"
        _check_id("group id", self.group_id, where)
        _check_id("edge node id", self.edge_node_id, where)

    def __str__(self) -> str:
        return f"{self.group_id}/{self.edge_node_id}"


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """An edge node or device topic: ``spBv1.0/<group>/<type>/<edge node>[/<device>]``.

    Construction validates the ids and that ``device_id`` is present exactly for the device
    message types; ``str()`` renders the topic.
    """

    message_type: MessageType
    node: EdgeNodeDescriptor
    device_id: str | None = None

    def __post_init__(self) -> None:
        rendered = self._render()
        if self.message_type is MessageType.STATE:
            raise SparkplugTopicError(rendered, "bad_shape", "STATE topics are StateTopic")
        if self.message_type.device_level and self.device_id is None:
            raise SparkplugTopicError(
                rendered, "missing_device", f"{self.message_type.value} needs a device id"
            )
        if not self.message_type.device_level and self.device_id is not None:
            raise SparkplugTopicError(
                rendered, "unexpected_device", f"{self.message_type.value} takes no device id"
            )
        if self.device_id is not None:
            _check_id("device id", self.device_id, rendered)

    def _render(self) -> str:
        parts = [NAMESPACE, self.node.group_id, self.message_type.value, self.node.edge_node_id]
        if self.device_id is not None:
            parts.append(self.device_id)
        return "/".join(parts)

    def __str__(self) -> str:
        return self._render()


@dataclass(frozen=True, slots=True)
class StateTopic:
    """A host application's STATE topic: ``spBv1.0/STATE/<host id>``."""

    host_id: str

    def __post_init__(self) -> None:
        _check_id("host id", self.host_id, str(self))

    def __str__(self) -> str:
        return f"{NAMESPACE}/STATE/{self.host_id}"


def parse_topic(topic: str) -> SparkplugTopic | StateTopic:
    """Parse a Sparkplug B topic.

    Raises:
        SparkplugTopicError: the topic is outside ``spBv1.0`` (``not_sparkplug``), has the wrong
            number of levels (``bad_shape``), an unknown message type (``unknown_type``), a bad
            id (``bad_id``), or a device id where none belongs or none where one must be.
    """
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE:
        raise SparkplugTopicError(topic, "not_sparkplug", f"not in the {NAMESPACE} namespace")
    if parts[1] == MessageType.STATE.value and len(parts) == 3:
        return StateTopic(parts[2])
    if len(parts) not in (4, 5):
        raise SparkplugTopicError(topic, "bad_shape", "expected 4 or 5 topic levels")
    try:
        message_type = MessageType(parts[2])
    except ValueError as exc:
        raise SparkplugTopicError(
            topic, "unknown_type", f"unknown message type {parts[2]!r}"
        ) from exc
    if message_type is MessageType.STATE:
        raise SparkplugTopicError(topic, "bad_shape", "a STATE topic has 3 levels")
    try:
        node = EdgeNodeDescriptor(parts[1], parts[3])
    except SparkplugTopicError as exc:
        raise SparkplugTopicError(topic, exc.reason, exc.detail) from exc
    return SparkplugTopic(message_type, node, parts[4] if len(parts) == 5 else None)


class OutboundMessage(NamedTuple):
    """An MQTT message for the transport to publish (or to register as the CONNECT Will)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


# --- datatypes and values ------------------------------------------------------------------------


class DataType(enum.IntEnum):
    """Sparkplug datatypes, numbered as in the specification (and ``sparkplug_b.proto``)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATE_TIME = 13
    TEXT = 14
    UUID = 15
    DATA_SET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTY_SET = 20
    PROPERTY_SET_LIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATE_TIME_ARRAY = 34


#: Integer datatypes -> (bits, signed).
_INTEGERS: Final[dict[DataType, tuple[int, bool]]] = {
    DataType.INT8: (8, True),
    DataType.INT16: (16, True),
    DataType.INT32: (32, True),
    DataType.INT64: (64, True),
    DataType.UINT8: (8, False),
    DataType.UINT16: (16, False),
    DataType.UINT32: (32, False),
    DataType.UINT64: (64, False),
    DataType.DATE_TIME: (64, False),
}
_STRINGS: Final = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID})
_FLOATS: Final = frozenset({DataType.FLOAT, DataType.DOUBLE})
_BINARIES: Final = frozenset({DataType.BYTES, DataType.FILE})
#: Fixed-width array datatypes -> struct format character (always little-endian).
_PACKED_ARRAYS: Final[dict[DataType, str]] = {
    DataType.INT8_ARRAY: "b",
    DataType.INT16_ARRAY: "h",
    DataType.INT32_ARRAY: "i",
    DataType.INT64_ARRAY: "q",
    DataType.UINT8_ARRAY: "B",
    DataType.UINT16_ARRAY: "H",
    DataType.UINT32_ARRAY: "I",
    DataType.UINT64_ARRAY: "Q",
    DataType.FLOAT_ARRAY: "f",
    DataType.DOUBLE_ARRAY: "d",
    DataType.DATE_TIME_ARRAY: "Q",
}
#: Datatypes carried packed in ``bytes_value``.
_ARRAYS: Final = frozenset(_PACKED_ARRAYS) | {DataType.BOOLEAN_ARRAY, DataType.STRING_ARRAY}
#: Datatypes a scalar oneof (property value, data set cell, template parameter) can carry.
_SCALARS: Final = frozenset(_INTEGERS) | _FLOATS | _STRINGS | {DataType.BOOLEAN}

ScalarValue: TypeAlias = int | float | bool | str
ArrayValue: TypeAlias = tuple[int, ...] | tuple[float, ...] | tuple[bool, ...] | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExtensionValue:
    """A value in an ``extension_value`` field, kept as its serialized bytes."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class PropertyValue:
    """One property of a metric (``None`` as value means null).

    ``datatype`` is a scalar datatype with a scalar value, ``PROPERTY_SET`` with a mapping, or
    ``PROPERTY_SET_LIST`` with a tuple of mappings.
    """

    datatype: DataType
    value: ScalarValue | PropertySet | tuple[PropertySet, ...] | ExtensionValue | None


#: A metric's property set: property name -> value (the spec's ``Quality`` is one such key).
PropertySet: TypeAlias = Mapping[str, PropertyValue]


@dataclass(frozen=True, slots=True)
class MetaData:
    """Metric metadata, mostly for Bytes and File values and multi-part transfers."""

    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


DataSetCell: TypeAlias = ScalarValue | ExtensionValue | None


@dataclass(frozen=True, slots=True)
class DataSet:
    """A table: one name and one scalar datatype per column, then rows of cells (``None`` null)."""

    columns: tuple[str, ...]
    types: tuple[DataType, ...]
    rows: tuple[tuple[DataSetCell, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class TemplateParameter:
    """A template parameter: the default (definition) or instance value of a named scalar."""

    name: str
    datatype: DataType
    value: ScalarValue | ExtensionValue | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """A Sparkplug template (user-defined type): a definition or an instance of one.

    A definition has ``is_definition`` true and no ``template_ref``; an instance names its
    definition's metric in ``template_ref``.
    """

    metrics: tuple[Metric, ...] = ()
    parameters: tuple[TemplateParameter, ...] = ()
    template_ref: str | None = None
    is_definition: bool = False
    version: str | None = None


MetricValue: TypeAlias = (
    ScalarValue | bytes | ArrayValue | DataSet | Template | ExtensionValue | None
)


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of a payload.

    BIRTH certificates carry ``name`` and ``alias``; DATA and CMD messages may carry only the
    alias. ``value`` is ``None`` exactly when ``is_null`` is set (or when a metric arrives with
    no value at all). ``timestamp`` is milliseconds since the epoch, UTC.
    """

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: DataType = DataType.UNKNOWN
    value: MetricValue = None
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    properties: PropertySet = field(default_factory=dict)
    metadata: MetaData | None = None


@dataclass(frozen=True, slots=True)
class PayloadData:
    """A decoded Sparkplug B payload. ``seq`` is absent in NDEATH, NCMD and DCMD."""

    timestamp: int | None = None
    metrics: tuple[Metric, ...] = ()
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


# --- value conversion ----------------------------------------------------------------------------


def _bad(name: str, datatype: DataType, detail: str) -> SparkplugMetricError:
    return SparkplugMetricError(name, int(datatype), "bad_value", detail)


def _check_int(name: str, datatype: DataType, value: object) -> int:
    bits, signed = _INTEGERS[datatype]
    # bool is an int in Python; a bool for an integer metric is a mistake worth reporting.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(name, datatype, f"{datatype.name} needs an int, not {type(value).__name__}")
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise _bad(name, datatype, f"{value} is outside {datatype.name} ({low}..{high})")
    return value


def _check_float(name: str, datatype: DataType, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(name, datatype, f"{datatype.name} needs a float, not {type(value).__name__}")
    number = float(value)
    if datatype is DataType.FLOAT and math.isfinite(number):
        try:
            struct.pack("<f", number)
        except OverflowError as exc:
            raise _bad(name, datatype, f"{number} does not fit a 32-bit float") from exc
    return number


def _check_str(name: str, datatype: DataType, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(name, datatype, f"{datatype.name} needs a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _bad(name, datatype, "the string is not valid UTF-8") from exc
    return value


def _scalar_to_wire(name: str, datatype: DataType, value: object) -> tuple[str, ScalarValue]:
    """(oneof field name, wire value) of a scalar, validated against its datatype."""
    if datatype in _INTEGERS:
        number = _check_int(name, datatype, value)
        bits, _ = _INTEGERS[datatype]
        if bits <= 32:
            return "int_value", number & _U32
        return "long_value", number & _U64
    if datatype is DataType.FLOAT:
        return "float_value", _check_float(name, datatype, value)
    if datatype is DataType.DOUBLE:
        return "double_value", _check_float(name, datatype, value)
    if datatype is DataType.BOOLEAN:
        if not isinstance(value, bool):
            raise _bad(name, datatype, f"BOOLEAN needs a bool, not {type(value).__name__}")
        return "boolean_value", value
    if datatype in _STRINGS:
        return "string_value", _check_str(name, datatype, value)
    raise _bad(name, datatype, f"{datatype.name} is not a scalar datatype")


def _signed_from_wire(raw: int, bits: int) -> int | None:
    half = 1 << (bits - 1)
    if raw < (1 << bits):  # two's complement of the datatype's own width (or non-negative)
        return raw - (1 << bits) if raw >= half else raw
    for width in (32, 64):  # sign-extended to the protobuf field's width
        if bits < width and (1 << width) - half <= raw < (1 << width):
            return raw - (1 << width)
    return None


def _int_from_wire(name: str, datatype: DataType, raw: int) -> int:
    bits, signed = _INTEGERS[datatype]
    value = _signed_from_wire(raw, bits) if signed else (raw if raw < (1 << bits) else None)
    if value is None:
        raise _bad(name, datatype, f"wire value {raw} is outside {datatype.name}")
    return value


def _scalar_from_wire(name: str, datatype: DataType, field_name: str, raw: object) -> ScalarValue:
    """The Python value of a scalar oneof field, checked against the declared datatype."""
    if datatype in _INTEGERS and field_name in ("int_value", "long_value"):
        assert isinstance(raw, int)
        return _int_from_wire(name, datatype, raw)
    if datatype in _FLOATS and field_name in ("float_value", "double_value"):
        assert isinstance(raw, float)
        return raw
    if datatype is DataType.BOOLEAN and field_name == "boolean_value":
        assert isinstance(raw, bool)
        return raw
    if datatype in _STRINGS and field_name == "string_value":
        return _wire_text(raw, f"value of {name!r}")
    if datatype is DataType.UNKNOWN and isinstance(raw, int | float | str):
        return _wire_text(raw, f"value of {name!r}") if field_name == "string_value" else raw
    raise _bad(name, datatype, f"{datatype.name} cannot arrive in {field_name}")


def _wire_text(raw: object, what: str) -> str:
    # proto2 string fields are not UTF-8 checked by the parser: invalid ones come back as bytes.
    if not isinstance(raw, str):
        raise SparkplugPayloadError("malformed", f"{what} is not valid UTF-8")
    return raw


def _array_to_wire(name: str, datatype: DataType, value: object) -> bytes:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
        raise _bad(name, datatype, f"{datatype.name} needs a tuple, not {type(value).__name__}")
    if datatype is DataType.BOOLEAN_ARRAY:
        if not all(isinstance(item, bool) for item in value):
            raise _bad(name, datatype, "BOOLEAN_ARRAY needs bools")
        packed = bytearray((len(value) + 7) // 8)
        for index, item in enumerate(value):
            if item:
                packed[index // 8] |= 0x80 >> (index % 8)
        return struct.pack("<I", len(value)) + bytes(packed)
    if datatype is DataType.STRING_ARRAY:
        strings = [_check_str(name, DataType.STRING, item) for item in value]
        if any("\x00" in item for item in strings):
            raise _bad(name, datatype, "STRING_ARRAY items cannot contain NUL")
        return b"".join(item.encode("utf-8") + b"\x00" for item in strings)
    fmt = _PACKED_ARRAYS[datatype]
    if fmt in "fd":
        items: list[ScalarValue] = [_check_float(name, DataType.DOUBLE, item) for item in value]
    elif any(not isinstance(item, int) or isinstance(item, bool) for item in value):
        raise _bad(name, datatype, f"{datatype.name} needs ints")
    else:
        items = list(value)
    try:
        return struct.pack(f"<{len(items)}{fmt}", *items)
    except (struct.error, OverflowError) as exc:
        raise _bad(name, datatype, f"an item does not fit {datatype.name}: {exc}") from exc


def _array_from_wire(name: str, datatype: DataType, raw: bytes) -> ArrayValue:
    if datatype is DataType.BOOLEAN_ARRAY:
        if len(raw) < 4:
            raise _bad(name, datatype, "BOOLEAN_ARRAY shorter than its 4-byte count")
        (count,) = struct.unpack_from("<I", raw)
        if len(raw) - 4 != (count + 7) // 8:
            raise _bad(name, datatype, f"BOOLEAN_ARRAY of {count} needs {(count + 7) // 8} bytes")
        return tuple(bool(raw[4 + index // 8] & (0x80 >> (index % 8))) for index in range(count))
    if datatype is DataType.STRING_ARRAY:
        if raw and not raw.endswith(b"\x00"):
            raise _bad(name, datatype, "STRING_ARRAY is not NUL-terminated")
        try:
            return tuple(item.decode("utf-8") for item in raw.split(b"\x00")[:-1])
        except UnicodeDecodeError as exc:
            raise _bad(name, datatype, "STRING_ARRAY item is not valid UTF-8") from exc
    fmt = _PACKED_ARRAYS[datatype]
    size = struct.calcsize(f"<{fmt}")
    if len(raw) % size:
        raise _bad(name, datatype, f"{len(raw)} bytes is not a whole number of {size}-byte items")
    values: tuple[int, ...] | tuple[float, ...] = struct.unpack(f"<{len(raw) // size}{fmt}", raw)
    return values


def validate_value(datatype: DataType, value: object, name: str = "?") -> None:
    """Check that ``value`` can be sent as ``datatype`` (``None`` always can: it is null).

    Raises:
        SparkplugMetricError: it cannot (``reason`` is ``bad_value``).
    """
    if value is None:
        return
    scratch = pb.Payload.Metric()
    _set_metric_value(scratch, name, datatype, value)


def _set_metric_value(out: pb.Payload.Metric, name: str, datatype: DataType, value: object) -> None:
    if isinstance(value, ExtensionValue):
        out.extension_value.SetInParent()
        _merge_extension(name, out.extension_value, value)
    elif datatype in _SCALARS:
        field_name, wire = _scalar_to_wire(name, datatype, value)
        setattr(out, field_name, wire)
    elif datatype in _BINARIES:
        if not isinstance(value, bytes | bytearray):
            raise _bad(name, datatype, f"{datatype.name} needs bytes, not {type(value).__name__}")
        out.bytes_value = bytes(value)
    elif datatype in _ARRAYS:
        out.bytes_value = _array_to_wire(name, datatype, value)
    elif datatype is DataType.DATA_SET:
        if not isinstance(value, DataSet):
            raise _bad(name, datatype, f"DATA_SET needs a DataSet, not {type(value).__name__}")
        _dataset_to_pb(name, value, out.dataset_value)
    elif datatype is DataType.TEMPLATE:
        if not isinstance(value, Template):
            raise _bad(name, datatype, f"TEMPLATE needs a Template, not {type(value).__name__}")
        _template_to_pb(value, out.template_value)
    else:
        raise _bad(name, datatype, f"a metric cannot carry a value of {datatype.name}")


def _merge_extension(name: str, target: Message, value: ExtensionValue) -> None:
    try:
        target.MergeFromString(value.raw)
    except DecodeError as exc:
        raise SparkplugMetricError(
            name, None, "bad_value", "extension value is not a serialized message"
        ) from exc


def resolve_datatype(metric: Metric, datatype: DataType) -> Metric:
    """Give a metric decoded without a datatype the one its BIRTH certificate declared.

    A metric that already has ``datatype`` is returned as is.

    Raises:
        SparkplugMetricError: the metric declares another datatype (``datatype_mismatch``) or
            its raw value does not fit ``datatype`` (``bad_value``).
    """
    if metric.datatype is datatype:
        return metric
    name = metric.name or f"alias {metric.alias}"
    if metric.datatype is not DataType.UNKNOWN:
        raise SparkplugMetricError(
            name,
            int(metric.datatype),
            "datatype_mismatch",
            f"declared {datatype.name} but sent {metric.datatype.name}",
        )
    return Metric(
        name=metric.name,
        alias=metric.alias,
        timestamp=metric.timestamp,
        datatype=datatype,
        value=_reinterpret(name, datatype, metric.value),
        is_null=metric.is_null,
        is_historical=metric.is_historical,
        is_transient=metric.is_transient,
        properties=metric.properties,
        metadata=metric.metadata,
    )


def _reinterpret(name: str, datatype: DataType, raw: MetricValue) -> MetricValue:
    if raw is None or isinstance(raw, ExtensionValue):
        return raw
    if datatype in _INTEGERS and isinstance(raw, int) and not isinstance(raw, bool):
        return _int_from_wire(name, datatype, raw)
    if datatype in _FLOATS and isinstance(raw, float):
        return raw
    if datatype is DataType.BOOLEAN and isinstance(raw, bool):
        return raw
    if datatype in _STRINGS and isinstance(raw, str):
        return raw
    if datatype in _BINARIES and isinstance(raw, bytes):
        return raw
    if datatype in _ARRAYS and isinstance(raw, bytes):
        return _array_from_wire(name, datatype, raw)
    if (datatype is DataType.DATA_SET and isinstance(raw, DataSet)) or (
        datatype is DataType.TEMPLATE and isinstance(raw, Template)
    ):
        return raw
    raise _bad(name, datatype, f"a {type(raw).__name__} on the wire cannot be {datatype.name}")


# --- protobuf <-> dataclasses ------------------------------------------------------------------


def _datatype(number: int, what: str) -> DataType:
    try:
        return DataType(number)
    except ValueError as exc:
        raise SparkplugPayloadError("unknown_datatype", f"{what}: datatype {number}") from exc


def _properties_to_pb(name: str, properties: PropertySet, out: pb.Payload.PropertySet) -> None:
    for key, prop in properties.items():
        out.keys.append(_check_str(name, DataType.STRING, key))
        value = out.values.add()
        value.type = int(prop.datatype)
        if prop.value is None:
            value.is_null = True
        elif isinstance(prop.value, ExtensionValue):
            value.extension_value.SetInParent()
            _merge_extension(name, value.extension_value, prop.value)
        elif prop.datatype is DataType.PROPERTY_SET:
            if not isinstance(prop.value, Mapping):
                raise _bad(name, prop.datatype, f"property {key!r} needs a mapping")
            _properties_to_pb(name, prop.value, value.propertyset_value)
        elif prop.datatype is DataType.PROPERTY_SET_LIST:
            if not isinstance(prop.value, tuple):
                raise _bad(name, prop.datatype, f"property {key!r} needs a tuple of mappings")
            value.propertysets_value.SetInParent()
            for nested in prop.value:
                _properties_to_pb(name, nested, value.propertysets_value.propertyset.add())
        else:
            field_name, wire = _scalar_to_wire(f"{name}.{key}", prop.datatype, prop.value)
            setattr(value, field_name, wire)


def _properties_from_pb(name: str, msg: pb.Payload.PropertySet) -> PropertySet:
    if len(msg.keys) != len(msg.values):
        raise SparkplugPayloadError(
            "malformed", f"metric {name!r}: {len(msg.keys)} property keys, {len(msg.values)} values"
        )
    result: dict[str, PropertyValue] = {}
    for raw_key, prop in zip(msg.keys, msg.values, strict=True):
        key = _wire_text(raw_key, f"a property key of {name!r}")
        datatype = _datatype(prop.type, f"property {key!r} of {name!r}")
        which = prop.WhichOneof("value")
        value: ScalarValue | PropertySet | tuple[PropertySet, ...] | ExtensionValue | None
        if prop.is_null or which is None:
            value = None
        elif which == "extension_value":
            value = ExtensionValue(bytes(prop.extension_value.SerializeToString()))
        elif which == "propertyset_value":
            value = _properties_from_pb(name, prop.propertyset_value)
        elif which == "propertysets_value":
            value = tuple(
                _properties_from_pb(name, nested) for nested in prop.propertysets_value.propertyset
            )
        else:
            value = _scalar_from_wire(f"{name}.{key}", datatype, which, getattr(prop, which))
        result[key] = PropertyValue(datatype, value)
    return result


def _dataset_to_pb(name: str, dataset: DataSet, out: pb.Payload.DataSet) -> None:
    if len(dataset.columns) != len(dataset.types):
        raise _bad(name, DataType.DATA_SET, "columns and types differ in length")
    out.num_of_columns = len(dataset.columns)
    out.columns.extend(_check_str(name, DataType.STRING, column) for column in dataset.columns)
    out.types.extend(int(datatype) for datatype in dataset.types)
    for row in dataset.rows:
        if len(row) != len(dataset.types):
            raise _bad(
                name, DataType.DATA_SET, f"a row has {len(row)} cells, not {len(dataset.types)}"
            )
        out_row = out.rows.add()
        for datatype, cell in zip(dataset.types, row, strict=True):
            element = out_row.elements.add()
            if isinstance(cell, ExtensionValue):
                element.extension_value.SetInParent()
                _merge_extension(name, element.extension_value, cell)
            elif cell is not None:
                field_name, wire = _scalar_to_wire(name, datatype, cell)
                setattr(element, field_name, wire)


def _dataset_from_pb(name: str, msg: pb.Payload.DataSet) -> DataSet:
    columns = tuple(_wire_text(column, f"a column of {name!r}") for column in msg.columns)
    types = tuple(_datatype(number, f"a column of {name!r}") for number in msg.types)
    if len(columns) != len(types):
        raise SparkplugPayloadError(
            "malformed", f"data set {name!r}: {len(columns)} columns, {len(types)} types"
        )
    rows: list[tuple[DataSetCell, ...]] = []
    for row in msg.rows:
        if len(row.elements) != len(types):
            raise SparkplugPayloadError(
                "malformed", f"data set {name!r}: a row of {len(row.elements)} cells"
            )
        cells: list[DataSetCell] = []
        for datatype, element in zip(types, row.elements, strict=True):
            which = element.WhichOneof("value")
            if which is None:
                cells.append(None)
            elif which == "extension_value":
                cells.append(ExtensionValue(bytes(element.extension_value.SerializeToString())))
            else:
                cells.append(_scalar_from_wire(name, datatype, which, getattr(element, which)))
        rows.append(tuple(cells))
    return DataSet(columns=columns, types=types, rows=tuple(rows))


def _template_to_pb(template: Template, out: pb.Payload.Template) -> None:
    if template.version is not None:
        out.version = template.version
    for metric in template.metrics:
        _metric_to_pb(metric, out.metrics.add())
    for parameter in template.parameters:
        param = out.parameters.add()
        param.name = parameter.name
        param.type = int(parameter.datatype)
        if isinstance(parameter.value, ExtensionValue):
            param.extension_value.SetInParent()
            _merge_extension(parameter.name, param.extension_value, parameter.value)
        elif parameter.value is not None:
            field_name, wire = _scalar_to_wire(parameter.name, parameter.datatype, parameter.value)
            setattr(param, field_name, wire)
    if template.template_ref is not None:
        out.template_ref = template.template_ref
    # The specification requires is_definition in every definition and instance.
    out.is_definition = template.is_definition


def _template_from_pb(msg: pb.Payload.Template) -> Template:
    parameters: list[TemplateParameter] = []
    for param in msg.parameters:
        name = _wire_text(param.name, "a template parameter name")
        datatype = _datatype(param.type, f"template parameter {name!r}")
        which = param.WhichOneof("value")
        value: ScalarValue | ExtensionValue | None
        if which is None:
            value = None
        elif which == "extension_value":
            value = ExtensionValue(bytes(param.extension_value.SerializeToString()))
        else:
            value = _scalar_from_wire(name, datatype, which, getattr(param, which))
        parameters.append(TemplateParameter(name=name, datatype=datatype, value=value))
    return Template(
        metrics=tuple(_metric_from_pb(metric) for metric in msg.metrics),
        parameters=tuple(parameters),
        template_ref=(
            _wire_text(msg.template_ref, "a template_ref") if msg.HasField("template_ref") else None
        ),
        is_definition=msg.is_definition,
        version=_wire_text(msg.version, "a template version") if msg.HasField("version") else None,
    )


def _metadata_to_pb(name: str, metadata: MetaData, out: pb.Payload.MetaData) -> None:
    out.SetInParent()
    for item in fields(MetaData):
        value = getattr(metadata, item.name)
        if value is None:
            continue
        try:
            setattr(out, item.name, value)
        except (TypeError, ValueError) as exc:
            raise _bad(name, DataType.UNKNOWN, f"metadata {item.name}: {exc}") from exc


def _metadata_from_pb(msg: pb.Payload.MetaData) -> MetaData:
    return MetaData(
        is_multi_part=msg.is_multi_part if msg.HasField("is_multi_part") else None,
        content_type=_optional_text(msg, "content_type"),
        size=msg.size if msg.HasField("size") else None,
        seq=msg.seq if msg.HasField("seq") else None,
        file_name=_optional_text(msg, "file_name"),
        file_type=_optional_text(msg, "file_type"),
        md5=_optional_text(msg, "md5"),
        description=_optional_text(msg, "description"),
    )


def _optional_text(msg: Message, field_name: str) -> str | None:
    if not msg.HasField(field_name):
        return None
    return _wire_text(getattr(msg, field_name), f"the {field_name} field")


def _metric_to_pb(metric: Metric, out: pb.Payload.Metric) -> None:
    name = metric.name or f"alias {metric.alias}"
    if metric.name is not None:
        out.name = _check_str(name, DataType.STRING, metric.name)
    if metric.alias is not None:
        out.alias = _check_int(name, DataType.UINT64, metric.alias)
    if metric.timestamp is not None:
        out.timestamp = _check_int(name, DataType.DATE_TIME, metric.timestamp)
    if metric.datatype is not DataType.UNKNOWN:
        out.datatype = int(metric.datatype)
    if metric.is_historical:
        out.is_historical = True
    if metric.is_transient:
        out.is_transient = True
    if metric.metadata is not None:
        _metadata_to_pb(name, metric.metadata, out.metadata)
    if metric.properties:
        _properties_to_pb(name, metric.properties, out.properties)
    if metric.is_null or metric.value is None:
        if metric.value is not None:
            raise _bad(name, metric.datatype, "a null metric cannot have a value")
        if metric.is_null:
            out.is_null = True
        return
    if metric.datatype is DataType.UNKNOWN and not isinstance(metric.value, ExtensionValue):
        raise _bad(name, metric.datatype, "a metric with a value needs a datatype")
    _set_metric_value(out, name, metric.datatype, metric.value)


def _metric_from_pb(msg: pb.Payload.Metric) -> Metric:
    name = _wire_text(msg.name, "a metric name") if msg.HasField("name") else None
    alias = msg.alias if msg.HasField("alias") else None
    label = name or f"alias {alias}"
    datatype = _datatype(msg.datatype, f"metric {label!r}") if msg.HasField("datatype") else None
    which = msg.WhichOneof("value")
    value: MetricValue
    if msg.is_null or which is None:
        value = None
    elif which == "extension_value":
        value = ExtensionValue(bytes(msg.extension_value.SerializeToString()))
    elif which == "dataset_value":
        value = _dataset_from_pb(label, msg.dataset_value)
    elif which == "template_value":
        value = _template_from_pb(msg.template_value)
    elif which == "bytes_value":
        raw = bytes(msg.bytes_value)
        value = raw if datatype is None else _reinterpret(label, datatype, raw)
    else:
        value = _scalar_from_wire(label, datatype or DataType.UNKNOWN, which, getattr(msg, which))
    return Metric(
        name=name,
        alias=alias,
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        datatype=datatype or DataType.UNKNOWN,
        value=value,
        is_null=msg.is_null,
        is_historical=msg.is_historical,
        is_transient=msg.is_transient,
        properties=_properties_from_pb(label, msg.properties) if msg.HasField("properties") else {},
        metadata=_metadata_from_pb(msg.metadata) if msg.HasField("metadata") else None,
    )


def _reject_mistyped_fields(msg: Message) -> None:
    """Fail on a declared field number that arrived with another wire type.

    The parser files such a field under unknown fields rather than failing, and random bytes
    often parse that way; a genuine extension or a field of a future revision has a number the
    schema does not declare, and is let through.
    """
    declared = msg.DESCRIPTOR.fields_by_number
    for unknown in unknown_fields.UnknownFieldSet(msg):
        if unknown.field_number in declared:
            raise SparkplugPayloadError(
                "malformed",
                f"field {unknown.field_number} of {msg.DESCRIPTOR.name} has the wrong wire type",
            )
    for descriptor, value in msg.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.is_repeated:
            for item in value:
                _reject_mistyped_fields(item)
        else:
            _reject_mistyped_fields(value)


def encode_payload(payload: PayloadData) -> bytes:
    """Serialize a payload to Sparkplug B protobuf bytes.

    Raises:
        SparkplugMetricError: a metric's value does not fit its datatype, or a value is present
            without a datatype.
    """
    msg = pb.Payload()
    if payload.timestamp is not None:
        msg.timestamp = _check_int("payload timestamp", DataType.DATE_TIME, payload.timestamp)
    for metric in payload.metrics:
        _metric_to_pb(metric, msg.metrics.add())
    if payload.seq is not None:
        msg.seq = _check_int("payload seq", DataType.UINT64, payload.seq)
    if payload.uuid is not None:
        msg.uuid = _check_str("payload uuid", DataType.UUID, payload.uuid)
    if payload.body is not None:
        msg.body = payload.body
    return bytes(msg.SerializeToString())


#: ``uuid`` of a payload whose ``body`` is another payload, compressed (Eclipse Tahu's clients).
COMPRESSED_UUID: Final = "SPBV1.0_COMPRESSED"
#: Largest inflated payload accepted: a decompression bomb must not exhaust memory.
MAX_INFLATED_BYTES: Final = 16 * 1024 * 1024


def decode_payload(data: bytes | bytearray | memoryview) -> PayloadData:
    """Parse Sparkplug B protobuf bytes, inflating a compressed payload.

    The specification leaves compression out; Eclipse Tahu's clients (the reference
    implementation) put a DEFLATE or GZIP-compressed payload into the ``body`` of an outer one
    whose ``uuid`` is ``SPBV1.0_COMPRESSED``, with a String metric ``algorithm`` (DEFLATE when
    absent). The inner payload is returned as if it had been sent as is.

    Raises:
        SparkplugPayloadError: the bytes are not a valid payload (``reason`` ``malformed``,
            ``unknown_datatype`` or ``bad_metric``).
    """
    outer = _decode_plain(data)
    if outer.uuid != COMPRESSED_UUID:
        return outer
    algorithm = next((m.value for m in outer.metrics if m.name == "algorithm"), "DEFLATE")
    # zlib for DEFLATE (Tahu's Deflater writes the zlib format), gzip framing for GZIP.
    name = algorithm.upper() if isinstance(algorithm, str) else ""
    wbits = {"DEFLATE": zlib.MAX_WBITS, "GZIP": zlib.MAX_WBITS | 16}.get(name)
    if wbits is None:
        raise SparkplugPayloadError("malformed", f"unknown compression algorithm {algorithm!r}")
    if outer.body is None:
        raise SparkplugPayloadError("malformed", "compressed payload without a body")
    inflater = zlib.decompressobj(wbits)
    try:
        inner = inflater.decompress(outer.body, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise SparkplugPayloadError("malformed", f"{name} body: {exc}") from exc
    if inflater.unconsumed_tail:
        raise SparkplugPayloadError(
            "malformed", f"compressed payload inflates beyond {MAX_INFLATED_BYTES} bytes"
        )
    payload = _decode_plain(inner)
    if payload.uuid == COMPRESSED_UUID:
        raise SparkplugPayloadError("malformed", "compressed payload inside a compressed one")
    return payload


def _decode_plain(data: bytes | bytearray | memoryview) -> PayloadData:
    msg = pb.Payload()
    try:
        msg.ParseFromString(bytes(data))
    except DecodeError as exc:
        raise SparkplugPayloadError("malformed", f"not a Sparkplug B payload: {exc}") from exc
    _reject_mistyped_fields(msg)
    try:
        metrics = tuple(_metric_from_pb(metric) for metric in msg.metrics)
    except SparkplugMetricError as exc:
        raise SparkplugPayloadError("bad_metric", str(exc)) from exc
    return PayloadData(
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        metrics=metrics,
        seq=msg.seq if msg.HasField("seq") else None,
        uuid=_wire_text(msg.uuid, "the payload uuid") if msg.HasField("uuid") else None,
        body=bytes(msg.body) if msg.HasField("body") else None,
    )


# --- STATE (JSON) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostState:
    """A host application's STATE payload: online or not, and its session's timestamp (ms)."""

    online: bool
    timestamp: int


def encode_state(state: HostState) -> bytes:
    """Serialize a STATE payload: ``{"online": bool, "timestamp": ms}`` as UTF-8 JSON."""
    document = {"online": state.online, "timestamp": state.timestamp}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def decode_state(data: bytes | bytearray | memoryview) -> HostState:
    """Parse a STATE payload.

    Raises:
        SparkplugPayloadError: not UTF-8 JSON, or not an object with a boolean ``online`` and a
            non-negative integer ``timestamp`` (``reason`` ``bad_state``).
    """
    try:
        document: object = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SparkplugPayloadError("bad_state", "STATE payload is not UTF-8 JSON") from exc
    if not isinstance(document, dict):
        raise SparkplugPayloadError("bad_state", "STATE payload is not a JSON object")
    online = document.get("online")
    timestamp = document.get("timestamp")
    if not isinstance(online, bool):
        raise SparkplugPayloadError("bad_state", "STATE 'online' is not a boolean")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        raise SparkplugPayloadError("bad_state", "STATE 'timestamp' is not a non-negative integer")
    return HostState(online=online, timestamp=timestamp)

"""Sans-I/O MQTT 3.1.1 and 5.0 codec: bytes in, typed packets out, and back.

Strategy
--------
Every MQTT control packet is a fixed header (type and flags in one byte, then the remaining
length as a variable byte integer) followed by ``remaining length`` bytes. ``PacketDecoder``
keeps one growing buffer and a read offset; ``feed`` appends, ``next_packet`` returns one
decoded packet or ``None`` when the buffer does not yet hold a whole one. Nothing here touches
a socket, a clock or an event loop, so the same code serves the platform's client, the
simulator's publishers and the tests (which pair an encoder with a decoder in memory).

Oversized packets are not buffered: a PUBLISH whose remaining length exceeds
``max_packet_size`` is reported as ``OversizedPublish`` (with its topic and packet id, so the
receiver can still acknowledge it and count it) while its payload is skipped as it streams in.
Any other oversized packet is a protocol error.

Only what a client needs is implemented: a client encodes CONNECT, PUBLISH, PUBACK, PUBREC,
PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ and DISCONNECT and decodes what a broker
sends. Both directions of every packet are implemented anyway where it costs nothing, because
the in-memory tests use them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from tiangong.network.errors import MalformedPacketError, ProtocolViolationError

__all__ = [
    "Connack",
    "Connect",
    "Disconnect",
    "OversizedPublish",
    "Packet",
    "PacketDecoder",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Properties",
    "ProtocolVersion",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "encode",
]

#: The largest remaining length MQTT can express (four length bytes).
MAX_REMAINING_LENGTH: Final = 268_435_455


class ProtocolVersion(IntEnum):
    """The protocol level byte of CONNECT."""

    V311 = 4
    V5 = 5


class PacketType(IntEnum):
    """MQTT control packet types (high nibble of the first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


# --- MQTT 5 properties -------------------------------------------------------------------------

#: Property identifier -> (name, wire type). Wire types: byte, u16, u32, varint, str, bin, pair.
_PROPERTY_TYPES: Final[dict[int, tuple[str, str]]] = {
    0x01: ("payload_format_indicator", "byte"),
    0x02: ("message_expiry_interval", "u32"),
    0x03: ("content_type", "str"),
    0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"),
    0x0B: ("subscription_identifier", "varint"),
    0x11: ("session_expiry_interval", "u32"),
    0x12: ("assigned_client_identifier", "str"),
    0x13: ("server_keep_alive", "u16"),
    0x15: ("authentication_method", "str"),
    0x16: ("authentication_data", "bin"),
    0x17: ("request_problem_information", "byte"),
    0x18: ("will_delay_interval", "u32"),
    0x19: ("request_response_information", "byte"),
    0x1A: ("response_information", "str"),
    0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"),
    0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"),
    0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"),
    0x25: ("retain_available", "byte"),
    0x26: ("user_property", "pair"),
    0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_subscription_available", "byte"),
    0x29: ("subscription_identifier_available", "byte"),
    0x2A: ("shared_subscription_available", "byte"),
}
_PROPERTY_IDS: Final[dict[str, int]] = {name: pid for pid, (name, _) in _PROPERTY_TYPES.items()}

#: Properties as a plain mapping from the snake_case name to its value. ``user_property`` holds a
#: list of (key, value) pairs; ``subscription_identifier`` may hold a list (several matched).
Properties = dict[str, object]


@dataclass(frozen=True, slots=True)
class Will:
    """The last-will message a broker publishes when a client vanishes."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT: a client opens a session."""

    client_id: str
    version: ProtocolVersion = ProtocolVersion.V5
    keepalive: int = 30
    clean_start: bool = True
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Connack:
    """CONNACK: the broker's answer to CONNECT."""

    session_present: bool
    reason_code: int
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH: an application message.

    ``packet_id`` is 0 for QoS 0. ``payload`` is ``bytes`` so consumers may keep it.
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OversizedPublish:
    """A PUBLISH larger than the decoder's limit; its payload was skipped, not kept."""

    topic: str
    qos: int
    packet_id: int
    size: int


@dataclass(frozen=True, slots=True)
class Puback:
    """PUBACK: acknowledges a QoS 1 PUBLISH."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pubrec:
    """PUBREC: first acknowledgement of a QoS 2 PUBLISH."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pubrel:
    """PUBREL: releases a QoS 2 PUBLISH."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pubcomp:
    """PUBCOMP: completes a QoS 2 exchange."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options."""

    topic_filter: str
    qos: int = 1
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE: one or more topic filters."""

    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Suback:
    """SUBACK: one granted QoS or failure code per requested filter."""

    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE: remove topic filters."""

    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unsuback:
    """UNSUBACK: answer to UNSUBSCRIBE (reason codes only in MQTT 5)."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pingreq:
    """PINGREQ: keep-alive probe from the client."""


@dataclass(frozen=True, slots=True)
class Pingresp:
    """PINGRESP: the broker's answer to PINGREQ."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT: orderly close (either side in MQTT 5)."""

    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


Packet = (
    Connect
    | Connack
    | Publish
    | OversizedPublish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
)

# --- primitive encoders ------------------------------------------------------------------------

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _utf8(text: str) -> bytes:
    if "\x00" in text:
        raise ValueError("MQTT strings may not contain U+0000")
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT strings are limited to 65535 bytes")
    return _U16.pack(len(raw)) + raw


def _binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("MQTT binary fields are limited to 65535 bytes")
    return _U16.pack(len(data)) + data


def _as_int(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"MQTT property value {value!r} must be an integer")
    return value


def _as_bytes(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"MQTT property value {value!r} must be bytes")
    return bytes(value)


def _encode_properties(props: Properties) -> bytes:
    body = bytearray()
    for name, value in props.items():
        pid = _PROPERTY_IDS.get(name)
        if pid is None:
            raise ValueError(f"unknown MQTT 5 property {name!r}")
        kind = _PROPERTY_TYPES[pid][1]
        values = value if isinstance(value, list) and kind in {"pair", "varint"} else [value]
        for item in values:
            body += _varint(pid)
            if kind == "byte":
                body.append(_as_int(item))
            elif kind == "u16":
                body += _U16.pack(_as_int(item))
            elif kind == "u32":
                body += _U32.pack(_as_int(item))
            elif kind == "varint":
                body += _varint(_as_int(item))
            elif kind == "str":
                body += _utf8(str(item))
            elif kind == "bin":
                body += _binary(_as_bytes(item))
            else:  # pair
                if not isinstance(item, tuple) or len(item) != 2:
                    raise ValueError("user_property entries are (key, value) pairs")
                key, val = item
                body += _utf8(str(key)) + _utf8(str(val))
    return _varint(len(body)) + bytes(body)


def _frame(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + _varint(len(body)) + body


def encode(packet: Packet, version: ProtocolVersion = ProtocolVersion.V5) -> bytes:
    """Encode one packet to bytes for the given protocol version.

    Args:
        packet: the packet to encode.
        version: the session's protocol version (``Connect`` carries its own).

    Returns:
        The whole packet, fixed header included.

    Raises:
        ValueError: a field does not fit MQTT's limits.
    """
    v5 = version is ProtocolVersion.V5
    match packet:
        case Publish():
            if packet.qos not in (0, 1, 2):
                raise ValueError(f"invalid QoS {packet.qos}")
            flags = (0x08 if packet.dup else 0) | (packet.qos << 1) | (0x01 if packet.retain else 0)
            head = _utf8(packet.topic)
            if packet.qos:
                head += _U16.pack(packet.packet_id)
            if v5:
                head += _encode_properties(packet.properties)
            body_len = len(head) + len(packet.payload)
            return (
                bytes((0x30 | flags,)) + _varint(body_len) + head + packet.payload  # one copy
            )
        case Puback() | Pubrec() | Pubrel() | Pubcomp():
            ptype = {
                Puback: PacketType.PUBACK,
                Pubrec: PacketType.PUBREC,
                Pubrel: PacketType.PUBREL,
                Pubcomp: PacketType.PUBCOMP,
            }[type(packet)]
            flags = 0x02 if ptype is PacketType.PUBREL else 0
            body = _U16.pack(packet.packet_id)
            if v5 and (packet.reason_code or packet.properties):
                body += bytes((packet.reason_code,))
                if packet.properties:
                    body += _encode_properties(packet.properties)
            return _frame((ptype << 4) | flags, body)
        case Connect():
            return _encode_connect(packet)
        case Connack():
            body = bytes((1 if packet.session_present else 0, packet.reason_code))
            if v5:
                body += _encode_properties(packet.properties)
            return _frame(PacketType.CONNACK << 4, body)
        case Subscribe():
            body = _U16.pack(packet.packet_id)
            if v5:
                body += _encode_properties(packet.properties)
            for sub in packet.subscriptions:
                options = sub.qos
                if v5:
                    options |= (
                        (0x04 if sub.no_local else 0)
                        | (0x08 if sub.retain_as_published else 0)
                        | (sub.retain_handling << 4)
                    )
                body += _utf8(sub.topic_filter) + bytes((options,))
            return _frame((PacketType.SUBSCRIBE << 4) | 0x02, body)
        case Suback():
            body = _U16.pack(packet.packet_id)
            if v5:
                body += _encode_properties(packet.properties)
            return _frame(PacketType.SUBACK << 4, body + bytes(packet.reason_codes))
        case Unsubscribe():
            body = _U16.pack(packet.packet_id)
            if v5:
                body += _encode_properties(packet.properties)
            for topic_filter in packet.topic_filters:
                body += _utf8(topic_filter)
            return _frame((PacketType.UNSUBSCRIBE << 4) | 0x02, body)
        case Unsuback():
            body = _U16.pack(packet.packet_id)
            if v5:
                body += _encode_properties(packet.properties) + bytes(packet.reason_codes)
            return _frame(PacketType.UNSUBACK << 4, body)
        case Pingreq():
            return b"\xc0\x00"
        case Pingresp():
            return b"\xd0\x00"
        case Disconnect():
            if v5 and (packet.reason_code or packet.properties):
                body = bytes((packet.reason_code,)) + _encode_properties(packet.properties)
                return _frame(PacketType.DISCONNECT << 4, body)
            return b"\xe0\x00"
        case OversizedPublish():
            raise ValueError("an OversizedPublish is a decoder report and cannot be encoded")
    raise TypeError(f"not an MQTT packet: {packet!r}")  # pragma: no cover


def _encode_connect(packet: Connect) -> bytes:
    v5 = packet.version is ProtocolVersion.V5
    flags = 0x02 if packet.clean_start else 0
    if packet.username is not None:
        flags |= 0x80
    if packet.password is not None:
        flags |= 0x40
    if packet.will is not None:
        flags |= 0x04 | (packet.will.qos << 3) | (0x20 if packet.will.retain else 0)
    body = bytearray(_utf8("MQTT"))
    body += bytes((int(packet.version), flags))
    body += _U16.pack(packet.keepalive)
    if v5:
        body += _encode_properties(packet.properties)
    body += _utf8(packet.client_id)
    if packet.will is not None:
        if v5:
            body += _encode_properties(packet.will.properties)
        body += _utf8(packet.will.topic) + _binary(packet.will.payload)
    if packet.username is not None:
        body += _utf8(packet.username)
    if packet.password is not None:
        body += _binary(packet.password)
    return _frame(PacketType.CONNECT << 4, bytes(body))


# --- decoder -----------------------------------------------------------------------------------


class _Reader:
    """Cursor over one packet body; every read checks bounds and raises MalformedPacketError."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, start: int, end: int) -> None:
        self.buf = buf
        self.pos = start
        self.end = end

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise MalformedPacketError("field runs past the end of the packet")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def byte(self) -> int:
        if self.pos >= self.end:
            raise MalformedPacketError("packet ends early")
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise MalformedPacketError("variable byte integer longer than four bytes")

    def utf8(self) -> str:
        raw = self.take(self.u16())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacketError("string is not valid UTF-8") from exc
        if "\x00" in text:
            raise MalformedPacketError("string contains U+0000")
        return text

    def binary(self) -> bytes:
        return self.take(self.u16())

    def properties(self) -> Properties:
        length = self.varint()
        if self.pos + length > self.end:
            raise MalformedPacketError("properties run past the end of the packet")
        sub = _Reader(self.buf, self.pos, self.pos + length)
        self.pos += length
        props: Properties = {}
        while sub.remaining():
            pid = sub.varint()
            spec = _PROPERTY_TYPES.get(pid)
            if spec is None:
                raise MalformedPacketError(f"unknown property identifier {pid:#04x}")
            name, kind = spec
            value: object
            if kind == "byte":
                value = sub.byte()
            elif kind == "u16":
                value = sub.u16()
            elif kind == "u32":
                value = sub.u32()
            elif kind == "varint":
                value = sub.varint()
            elif kind == "str":
                value = sub.utf8()
            elif kind == "bin":
                value = sub.binary()
            else:
                value = (sub.utf8(), sub.utf8())
            if kind in {"pair", "varint"}:
                existing = props.setdefault(name, [])
                assert isinstance(existing, list)
                existing.append(value)
            elif name in props:
                raise MalformedPacketError(f"property {name} appears twice")
            else:
                props[name] = value
        return props


class PacketDecoder:
    """Incremental MQTT decoder for one connection.

    Feed it bytes as they arrive; take packets out with ``next_packet`` until it returns
    ``None``. Set ``version`` once CONNECT/CONNACK has fixed it (MQTT 5 adds properties).

    Args:
        version: protocol version of the session.
        max_packet_size: packets with a larger *total* size are refused (PUBLISH is reported as
            ``OversizedPublish`` and skipped; any other type raises).
    """

    def __init__(
        self,
        *,
        version: ProtocolVersion = ProtocolVersion.V5,
        max_packet_size: int = MAX_REMAINING_LENGTH,
    ) -> None:
        self.version = version
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0  # bytes of an oversized packet still to discard

    @property
    def buffered(self) -> int:
        """Bytes held but not yet decoded."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if self._skip:
            drop = min(self._skip, len(data))
            self._skip -= drop
            data = data[drop:]
            if not data:
                return
        if self._pos and self._pos >= len(self._buf) // 2:
            # Compact once the consumed prefix dominates, so the buffer never grows unbounded
            # and each byte is moved O(1) times on average.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_packet(self) -> Packet | None:
        """Decode the next whole packet, or return ``None`` if more bytes are needed.

        Raises:
            MalformedPacketError: the bytes are not valid MQTT; the connection must be closed.
        """
        if self._skip:
            return None
        buf = self._buf
        start = self._pos
        avail = len(buf) - start
        if avail < 2:
            return None
        first = buf[start]
        remaining = 0
        i = start + 1
        for shift in (0, 7, 14, 21):
            if i >= len(buf):
                return None
            byte = buf[i]
            i += 1
            remaining |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            raise MalformedPacketError("remaining length longer than four bytes")
        header_len = i - start
        total = header_len + remaining
        ptype = first >> 4
        if total > self.max_packet_size:
            if ptype != PacketType.PUBLISH:
                raise MalformedPacketError(
                    f"packet of {total} bytes exceeds the limit of {self.max_packet_size}"
                )
            return self._oversized(first, i, remaining, total)
        if avail < total:
            return None
        self._pos = start + total
        return self._decode(first, buf, i, i + remaining)

    def _oversized(self, first: int, body_start: int, remaining: int, total: int) -> Packet | None:
        qos = (first >> 1) & 0x03
        have = len(self._buf) - body_start
        if have < 2:
            return None
        topic_len = int(_U16.unpack_from(self._buf, body_start)[0])
        needed = 2 + topic_len + (2 if qos else 0)
        if needed > remaining:
            raise MalformedPacketError("PUBLISH header runs past the end of the packet")
        if have < needed:
            return None  # wait for the topic and packet id; the payload is never buffered
        reader = _Reader(self._buf, body_start, body_start + needed)
        topic = reader.utf8()
        packet_id = reader.u16() if qos else 0
        packet_end = self._pos + total
        if packet_end <= len(self._buf):
            self._pos = packet_end
        else:
            self._skip = packet_end - len(self._buf)
            self._buf.clear()
            self._pos = 0
        return OversizedPublish(topic=topic, qos=qos, packet_id=packet_id, size=total)

    def _decode(self, first: int, buf: bytearray, start: int, end: int) -> Packet:
        ptype = first >> 4
        flags = first & 0x0F
        reader = _Reader(buf, start, end)
        v5 = self.version is ProtocolVersion.V5
        if ptype == PacketType.PUBLISH:
            qos = (flags >> 1) & 0x03
            if qos == 3:
                raise MalformedPacketError("PUBLISH with QoS 3")
            topic = reader.utf8()
            packet_id = reader.u16() if qos else 0
            if qos and packet_id == 0:
                raise MalformedPacketError("QoS>0 PUBLISH with packet id 0")
            props = reader.properties() if v5 else {}
            payload = bytes(buf[reader.pos : end])
            return Publish(
                topic=topic,
                payload=payload,
                qos=qos,
                retain=bool(flags & 0x01),
                dup=bool(flags & 0x08),
                packet_id=packet_id,
                properties=props,
            )
        if ptype in (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP):
            expected_flags = 0x02 if ptype == PacketType.PUBREL else 0
            if flags != expected_flags:
                raise MalformedPacketError(f"bad flags {flags:#x} on packet type {ptype}")
            packet_id = reader.u16()
            code = 0
            props = {}
            if v5 and reader.remaining():
                code = reader.byte()
                if reader.remaining():
                    props = reader.properties()
            if ptype == PacketType.PUBACK:
                return Puback(packet_id=packet_id, reason_code=code, properties=props)
            if ptype == PacketType.PUBREC:
                return Pubrec(packet_id=packet_id, reason_code=code, properties=props)
            if ptype == PacketType.PUBREL:
                return Pubrel(packet_id=packet_id, reason_code=code, properties=props)
            return Pubcomp(packet_id=packet_id, reason_code=code, properties=props)
        if ptype == PacketType.CONNACK:
            ack_flags = reader.byte()
            if ack_flags & 0xFE:
                raise MalformedPacketError("reserved CONNACK flag bits set")
            code = reader.byte()
            props = reader.properties() if v5 and reader.remaining() else {}
            return Connack(session_present=bool(ack_flags & 1), reason_code=code, properties=props)
        if ptype == PacketType.SUBACK:
            packet_id = reader.u16()
            props = reader.properties() if v5 else {}
            codes = tuple(reader.take(reader.remaining()))
            if not codes:
                raise MalformedPacketError("SUBACK without reason codes")
            return Suback(packet_id=packet_id, reason_codes=codes, properties=props)
        if ptype == PacketType.UNSUBACK:
            packet_id = reader.u16()
            if v5:
                props = reader.properties()
                return Unsuback(
                    packet_id=packet_id,
                    reason_codes=tuple(reader.take(reader.remaining())),
                    properties=props,
                )
            return Unsuback(packet_id=packet_id)
        if ptype == PacketType.PINGRESP:
            return Pingresp()
        if ptype == PacketType.PINGREQ:
            return Pingreq()
        if ptype == PacketType.DISCONNECT:
            if v5 and reader.remaining():
                code = reader.byte()
                props = reader.properties() if reader.remaining() else {}
                return Disconnect(reason_code=code, properties=props)
            return Disconnect()
        if ptype == PacketType.SUBSCRIBE:
            return self._decode_subscribe(reader, flags, v5=v5)
        if ptype == PacketType.UNSUBSCRIBE:
            packet_id = reader.u16()
            props = reader.properties() if v5 else {}
            filters: list[str] = []
            while reader.remaining():
                filters.append(reader.utf8())
            return Unsubscribe(packet_id=packet_id, topic_filters=tuple(filters), properties=props)
        if ptype == PacketType.CONNECT:
            return self._decode_connect(reader)
        raise ProtocolViolationError(f"packet type {ptype} is not supported by this client")

    @staticmethod
    def _decode_subscribe(reader: _Reader, flags: int, *, v5: bool) -> Subscribe:
        if flags != 0x02:
            raise MalformedPacketError("bad SUBSCRIBE flags")
        packet_id = reader.u16()
        props = reader.properties() if v5 else {}
        subs: list[Subscription] = []
        while reader.remaining():
            topic_filter = reader.utf8()
            options = reader.byte()
            subs.append(
                Subscription(
                    topic_filter=topic_filter,
                    qos=options & 0x03,
                    no_local=bool(options & 0x04),
                    retain_as_published=bool(options & 0x08),
                    retain_handling=(options >> 4) & 0x03,
                )
            )
        if not subs:
            raise MalformedPacketError("SUBSCRIBE without topic filters")
        return Subscribe(packet_id=packet_id, subscriptions=tuple(subs), properties=props)

    def _decode_connect(self, reader: _Reader) -> Connect:
        if reader.utf8() != "MQTT":
            raise MalformedPacketError("CONNECT protocol name is not MQTT")
        level = reader.byte()
        try:
            version = ProtocolVersion(level)
        except ValueError as exc:
            raise MalformedPacketError(f"unsupported protocol level {level}") from exc
        self.version = version
        flags = reader.byte()
        keepalive = reader.u16()
        v5 = version is ProtocolVersion.V5
        props = reader.properties() if v5 else {}
        client_id = reader.utf8()
        will = None
        if flags & 0x04:
            will_props = reader.properties() if v5 else {}
            will_topic = reader.utf8()
            will_payload = reader.binary()
            will = Will(
                topic=will_topic,
                payload=will_payload,
                qos=(flags >> 3) & 0x03,
                retain=bool(flags & 0x20),
                properties=will_props,
            )
        username = reader.utf8() if flags & 0x80 else None
        password = reader.binary() if flags & 0x40 else None
        return Connect(
            client_id=client_id,
            version=version,
            keepalive=keepalive,
            clean_start=bool(flags & 0x02),
            username=username,
            password=password,
            will=will,
            properties=props,
        )

"""Sans-I/O binary codec of the Handle protocol: bytes in, typed messages out, and back.

Strategy
--------
A Handle message is a 20-byte envelope, a 24-byte header, a body whose shape follows from the
header's op code and response code, and a credential section (a 4-byte length, 0 when the
message is unsigned). ``encode_message`` and ``decode_message`` turn a whole ``Message`` into
bytes and back; ``decode_envelope`` + ``decode_after_envelope`` do the same in two steps for
transports that read the envelope first (TCP) or reassemble it from several packets (UDP).
Nothing here touches a socket or an event loop. The clock is read only when a caller leaves
a header's expiration at 0 and passes no ``now``.

Decoding is strict and total: every malformed input raises ``CodecError`` (never
``IndexError``, ``struct.error`` or ``UnicodeDecodeError``) with the response code a server
should answer with. Every length is checked against what is left of the buffer before
anything is allocated, so a hostile length cannot make the decoder reserve memory. Once the
envelope has parsed, errors are ``MessageDecodeError``, which carries the envelope and the raw
header fields, so a server can still answer an unknown op code with the sender's request id
(``encode_error_reply``).

The decoder accepts what older peers send: RFC-era envelopes (byte 3 reserved, no suggested
version: the actual version is taken as the suggested one), messages without the credential
length field, version 2.0 challenges (``str nonce; str digest``), the old request-digest
format (algorithm 0, a length-prefixed MD5), HS_ADMIN records with the 2 trailing bytes of the
legacy 4-byte permission layout, both IPv4 layouts of HS_SITE server addresses, and the IDIS
fork's trailing ``authBytes`` string in resolution requests (read and dropped). Before
protocol 2.5, RC 303 meant SERVER_BACKUP and RC 201 stood in for INVALID_VALUE; the encoder
and decoder translate as CNRI does.

Values the data model cannot hold are refused rather than guessed: an unknown op code
(OPERATION_NOT_SUPPORTED), an unknown response code, a compressed or encrypted envelope (the
session layer must decrypt first and call ``decode_after_envelope``). Flag fields are masked
to their defined bits, because every distinct ``IntFlag`` value is cached by ``enum`` forever
and a peer must not be able to grow that cache.

The server's hot path (decode a resolution request, encode a resolution response) avoids the
general reader: precompiled ``struct.Struct`` objects, one ``bytes.join`` per message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import struct
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Final, NoReturn, TypeVar, cast

from tiangong.identity.errors import CodecError
from tiangong.identity.handle.messages import (
    Body,
    Challenge,
    ChallengeAnswer,
    CreateHandleResponse,
    Credential,
    Envelope,
    ErrorResponse,
    GenericResponse,
    HandleRequest,
    Header,
    ListResponse,
    Message,
    ReferralResponse,
    RemoveValuesRequest,
    RequestDigest,
    ResolutionRequest,
    ResolutionResponse,
    SiteInfoResponse,
    ValuesRequest,
    VerifyRequest,
    VerifyResponse,
)
from tiangong.identity.handle.protocol import (
    DEFAULT_EXPIRATION,
    DIGEST_SIZES,
    ENVELOPE_SIZE,
    HEADER_SIZE,
    MAX_ARRAY_SIZE,
    MAX_MESSAGE_LENGTH,
    MAX_UDP_DATA,
    MAX_VALUES,
    UNKNOWN_SITE_SERIAL,
    DigestAlgorithm,
    OpCode,
    OpFlag,
    ResponseCode,
)
from tiangong.identity.handle.values import (
    MAX_HANDLE_LENGTH,
    AdminPermission,
    AdminRecord,
    HandleValue,
    HashOption,
    Interface,
    InterfaceKind,
    IPAddress,
    Permission,
    ServerInfo,
    SiteInfo,
    Transport,
    TtlType,
    ValueList,
    ValueReference,
)

__all__ = [
    "MessageDecodeError",
    "TcpMessageReader",
    "UdpReassembler",
    "decode_admin",
    "decode_after_envelope",
    "decode_credential",
    "decode_envelope",
    "decode_message",
    "decode_site",
    "decode_value",
    "decode_value_list",
    "decode_values",
    "encode_admin",
    "encode_credential",
    "encode_envelope",
    "encode_error_reply",
    "encode_message",
    "encode_resolution_answer",
    "encode_resolution_body",
    "encode_site",
    "encode_value",
    "encode_value_list",
    "encode_values",
    "plain_resolution_handle",
    "request_digest",
    "signed_part",
    "site_server_for",
    "split_for_udp",
]

_T = TypeVar("_T")

_PROTOCOL_ERROR: Final = int(ResponseCode.PROTOCOL_ERROR)
_NOT_SUPPORTED: Final = int(ResponseCode.OPERATION_NOT_SUPPORTED)
_INVALID_HANDLE: Final = int(ResponseCode.INVALID_HANDLE)
_INVALID_VALUE: Final = int(ResponseCode.INVALID_VALUE)
_INVALID_CREDENTIAL: Final = int(ResponseCode.INVALID_CREDENTIAL)

_FLAG_COMPRESSED: Final = 0x80
_FLAG_ENCRYPTED: Final = 0x40
_FLAG_TRUNCATED: Final = 0x20

# Envelope, and envelope + header in one unpack for the hot path.
_ENVELOPE: Final = struct.Struct(">4B4I")
_HEADER: Final = struct.Struct(">3IHBxII")
_PREFIX: Final = struct.Struct(">4B4I3IHBxII")
_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")
# index, timestamp, ttl type, ttl, permissions, type length: the fixed start of a value record.
_VALUE_HEAD: Final = struct.Struct(">iIBiBI")
_VALUE_FIXED_SIZE: Final = 14
_ZERO_U32: Final = b"\x00\x00\x00\x00"

_OPCODES: Final = {int(op): op for op in OpCode}
_RESPONSE_CODES: Final = {int(rc): rc for rc in ResponseCode}
_DIGEST_ALGORITHMS: Final = {int(alg): alg for alg in DigestAlgorithm}
_OP_FLAG_MASK: Final = int(
    OpFlag.AT | OpFlag.CT | OpFlag.ENC | OpFlag.REC | OpFlag.CA | OpFlag.CN | OpFlag.KC
    | OpFlag.PO | OpFlag.RD | OpFlag.OVRW | OpFlag.MINT | OpFlag.DNRF | OpFlag.RECU_AUTH
)  # fmt: skip
_RD: Final = int(OpFlag.RD)
_PERMISSION_MASK: Final = 0x0F
_ADMIN_PERMISSION_MASK: Final = 0x0FFF
_IPV4_PREFIX_CNRI: Final = bytes(12)
_IPV4_PREFIX_MAPPED: Final = bytes(10) + b"\xff\xff"
_IP_ADDRESS_LENGTH: Final = 16
_SITE_PRIMARY: Final = 0x80
_SITE_MULTI_PRIMARY: Final = 0x40


def _fast_builder(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor for a frozen, slotted dataclass that skips its ``__init__``.

    A frozen dataclass's ``__init__`` assigns each field through ``object.__setattr__``,
    which costs about 1.8 us for an ``Envelope``; calling the slot descriptors directly costs
    a third of that, and the hot path builds several objects per message. Only classes
    without ``__post_init__`` qualify (nothing would be skipped but the assignments); the
    arguments are all fields, in declaration order.
    """
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} must be a slotted dataclass without __post_init__")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def build({', '.join(names)}):", "    o = _new(_cls)"]
    for number, name in enumerate(names):
        namespace[f"_set{number}"] = cls.__dict__[name].__set__
        lines.append(f"    _set{number}(o, {name})")
    lines.append("    return o")
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from the dataclass's own field names
    build: Callable[..., _T] = namespace["build"]
    return build


_new_envelope: Final = _fast_builder(Envelope)
_new_message: Final = _fast_builder(Message)
_new_resolution_request: Final = _fast_builder(ResolutionRequest)
_new_value: Final = _fast_builder(HandleValue)
# Every permission byte and TTL type, built once (enum construction is slow).
_PERMISSIONS: Final = tuple(Permission(bits) for bits in range(16))
_TTL_TYPES: Final = (TtlType.RELATIVE, TtlType.ABSOLUTE)


class MessageDecodeError(CodecError):
    """A message whose envelope parsed but whose header, body or credential did not.

    ``envelope`` lets a server answer with the sender's session and request ids;
    ``op_code``, ``received_response_code`` and ``op_flags`` are the raw header fields when
    the header parsed (``None`` otherwise), so an unknown op code can still be answered with
    OPERATION_NOT_SUPPORTED (see ``encode_error_reply``); ``header`` is the typed header
    when its op and response codes are known ones.
    """

    def __init__(
        self,
        message: str,
        response_code: int = _PROTOCOL_ERROR,
        *,
        envelope: Envelope | None = None,
        op_code: int | None = None,
        received_response_code: int | None = None,
        op_flags: int = 0,
        header: Header | None = None,
    ) -> None:
        super().__init__(message, response_code)
        self.envelope = envelope
        self.header = header
        self.op_code = op_code
        self.received_response_code = received_response_code
        self.op_flags = op_flags

    @property
    def is_request(self) -> bool | None:
        """Whether the undecodable message was a request (``None`` if its header is unknown)."""
        if self.received_response_code is None:
            return None
        return self.received_response_code == 0


def _fail(message: str, code: int = _PROTOCOL_ERROR) -> NoReturn:
    raise CodecError(message, code)


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    return data if type(data) is bytes else bytes(data)


# ------------------------------------------------------------------------------- reading


class _Reader:
    """A bounds-checked cursor over ``data[pos:end]``; every failure is a ``CodecError``."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, size: int, what: str, code: int) -> int:
        pos = self.pos
        if size > self.end - pos:
            _fail(
                f"truncated: {what} needs {size} bytes at offset {pos}, "
                f"only {self.end - pos} remain",
                code,
            )
        self.pos = pos + size
        return pos

    def u8(self, what: str, code: int = _PROTOCOL_ERROR) -> int:
        return self.data[self.take(1, what, code)]

    def u16(self, what: str, code: int = _PROTOCOL_ERROR) -> int:
        return int(_U16.unpack_from(self.data, self.take(2, what, code))[0])

    def u32(self, what: str, code: int = _PROTOCOL_ERROR) -> int:
        return int(_U32.unpack_from(self.data, self.take(4, what, code))[0])

    def i32(self, what: str, code: int = _PROTOCOL_ERROR) -> int:
        return int(_I32.unpack_from(self.data, self.take(4, what, code))[0])

    def blob(self, what: str, code: int = _PROTOCOL_ERROR, limit: int = MAX_ARRAY_SIZE) -> bytes:
        size = self.u32(f"length of {what}", code)
        if size > limit:
            _fail(f"{what} is {size} bytes long; at most {limit} are allowed", code)
        pos = self.take(size, what, code)
        return self.data[pos : pos + size]

    def text(self, what: str, code: int = _PROTOCOL_ERROR, limit: int = MAX_ARRAY_SIZE) -> str:
        raw = self.blob(what, code, limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"{what} is not valid UTF-8: {exc.reason}", code) from exc

    def handle(self, what: str, code: int = _INVALID_HANDLE) -> str:
        return self.text(what, code, MAX_HANDLE_LENGTH)

    def count(self, what: str, item_size: int, limit: int, code: int = _PROTOCOL_ERROR) -> int:
        n = self.u32(f"count of {what}", code)
        if n > limit:
            _fail(f"{n} {what}; at most {limit} are allowed", code)
        if n * item_size > self.end - self.pos:
            _fail(
                f"truncated: {n} {what} need at least {n * item_size} bytes, "
                f"only {self.end - self.pos} remain",
                code,
            )
        return n

    def ints(self, what: str, code: int = _PROTOCOL_ERROR) -> tuple[int, ...]:
        n = self.count(what, 4, MAX_ARRAY_SIZE, code)
        if not n:
            return ()
        pos = self.take(4 * n, what, code)
        return struct.unpack_from(f">{n}i", self.data, pos)

    def rest(self) -> bytes:
        pos, self.pos = self.pos, self.end
        return self.data[pos : self.end]

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def expect_end(self, what: str, code: int = _PROTOCOL_ERROR) -> None:
        if self.pos != self.end:
            _fail(f"{self.end - self.pos} unexpected bytes after {what}", code)


# ------------------------------------------------------------------------ handle values


def _append_value(parts: list[bytes], value: HandleValue) -> None:
    type_bytes = value.type.encode("utf-8")
    data = value.data
    parts += (
        _VALUE_HEAD.pack(
            value.index,
            value.timestamp,
            value.ttl_type,
            value.ttl,
            int(value.permissions) & _PERMISSION_MASK,  # int(): IntFlag's & is slow
            len(type_bytes),
        ),
        type_bytes,
        _U32.pack(len(data)),
        data,
    )
    refs = value.references
    if not refs:
        parts.append(_ZERO_U32)
        return
    parts.append(_U32.pack(len(refs)))
    for ref in refs:
        _append_reference(parts, ref)


def _append_reference(parts: list[bytes], ref: ValueReference) -> None:
    handle = ref.handle.encode("utf-8")
    parts.append(_U32.pack(len(handle)))
    parts.append(handle)
    parts.append(_I32.pack(ref.index))


def _read_references(r: _Reader, what: str, code: int) -> tuple[ValueReference, ...]:
    n = r.count(what, 8, MAX_ARRAY_SIZE, code)
    refs = []
    for _ in range(n):
        handle = r.text(f"handle of a {what[:-1]}", code, MAX_HANDLE_LENGTH)
        refs.append(ValueReference(handle=handle, index=r.i32(f"index of a {what[:-1]}", code)))
    return tuple(refs)


def _read_value(r: _Reader) -> HandleValue:
    code = _INVALID_VALUE
    pos = r.take(_VALUE_FIXED_SIZE, "handle value header", code)
    index, timestamp, ttl_type, ttl, perms = struct.unpack_from(">iIBiB", r.data, pos)
    if ttl_type > 1:
        _fail(f"value {index}: ttl type {ttl_type} is neither 0 (relative) nor 1 (absolute)", code)
    value_type = r.text(f"type of value {index}", code)
    data = r.blob(f"data of value {index}", code)
    refs = _read_references(r, f"references of value {index}", code)
    return _new_value(
        index,
        value_type,
        data,
        ttl,
        _TTL_TYPES[ttl_type],
        timestamp,
        _PERMISSIONS[perms & _PERMISSION_MASK],
        refs,
    )


def _read_values(r: _Reader, what: str) -> tuple[HandleValue, ...]:
    n = r.count(what, _VALUE_FIXED_SIZE + 12, MAX_VALUES, _INVALID_VALUE)
    return tuple(_read_value(r) for _ in range(n))


def _guard_encode(what: str, build: Callable[[], _T]) -> _T:
    try:
        return build()
    except struct.error as exc:
        raise CodecError(f"cannot encode {what}: a field is out of range ({exc})") from exc
    except UnicodeEncodeError as exc:
        raise CodecError(f"cannot encode {what}: text is not encodable ({exc.reason})") from exc


def encode_value(value: HandleValue) -> bytes:
    """The binary handle value record (RFC 3651 §3.1) of ``value``."""

    def build() -> bytes:
        parts: list[bytes] = []
        _append_value(parts, value)
        return b"".join(parts)

    return _guard_encode(f"value {value.index}", build)


def decode_value(data: bytes | bytearray | memoryview) -> HandleValue:
    """Decode one handle value record that fills ``data`` exactly."""
    r = _Reader(_as_bytes(data))
    value = _read_value(r)
    r.expect_end(f"value {value.index}", _INVALID_VALUE)
    return value


def encode_values(values: Iterable[HandleValue]) -> bytes:
    """``int n; HV*``: a list of values as messages carry them."""
    values = tuple(values)

    def build() -> bytes:
        parts = [_U32.pack(len(values))]
        for value in values:
            _append_value(parts, value)
        return b"".join(parts)

    return _guard_encode("values", build)


def decode_values(data: bytes | bytearray | memoryview) -> tuple[HandleValue, ...]:
    """Decode ``int n; HV*`` that fills ``data`` exactly."""
    r = _Reader(_as_bytes(data))
    values = _read_values(r, "values")
    r.expect_end("the values", _INVALID_VALUE)
    return values


# ----------------------------------------------------------------------- reserved types


def encode_admin(admin: AdminRecord) -> bytes:
    """HS_ADMIN data: ``int2 permissions; str adminHandle; int adminIndex``."""

    def build() -> bytes:
        handle = admin.admin.handle.encode("utf-8")
        return b"".join(
            (
                _U16.pack(admin.permissions & 0xFFFF),
                _U32.pack(len(handle)),
                handle,
                _I32.pack(admin.admin.index),
            )
        )

    return _guard_encode("HS_ADMIN", build)


def decode_admin(data: bytes | bytearray | memoryview) -> AdminRecord:
    """Decode HS_ADMIN data; the legacy layout with 2 trailing bytes is accepted too."""
    r = _Reader(_as_bytes(data))
    code = _INVALID_VALUE
    perms = r.u16("HS_ADMIN permissions", code)
    handle = r.text("HS_ADMIN admin handle", code, MAX_HANDLE_LENGTH)
    index = r.i32("HS_ADMIN admin index", code)
    # Old CNRI encoders sized the record with a 4-byte permission field but wrote 2 bytes,
    # leaving 2 extra bytes at the end ("legacyByteLength").
    if r.remaining != 2:
        r.expect_end("HS_ADMIN data", code)
    return AdminRecord(
        admin=ValueReference(handle=handle, index=index),
        permissions=AdminPermission(perms & _ADMIN_PERMISSION_MASK),
    )


def encode_value_list(value_list: ValueList) -> bytes:
    """HS_VLIST data: ``int n; n x (str handle; int index)``."""

    def build() -> bytes:
        parts = [_U32.pack(len(value_list.members))]
        for ref in value_list.members:
            _append_reference(parts, ref)
        return b"".join(parts)

    return _guard_encode("HS_VLIST", build)


def decode_value_list(data: bytes | bytearray | memoryview) -> ValueList:
    """Decode HS_VLIST data."""
    r = _Reader(_as_bytes(data))
    members = _read_references(r, "HS_VLIST members", _INVALID_VALUE)
    r.expect_end("HS_VLIST data", _INVALID_VALUE)
    return ValueList(members=members)


def _pack_address(address: IPAddress) -> bytes:
    # CNRI right-aligns the 4 IPv4 bytes in 16 zero bytes (SiteInfo's constructors); its
    # ServerInfo.isIPv4 checks exactly that layout, so it is the one to send.
    if isinstance(address, ipaddress.IPv4Address):
        return _IPV4_PREFIX_CNRI + address.packed
    return address.packed


def _unpack_address(raw: bytes) -> IPAddress:
    if raw.startswith(_IPV4_PREFIX_CNRI) or raw.startswith(_IPV4_PREFIX_MAPPED):
        return ipaddress.IPv4Address(raw[12:])
    return ipaddress.IPv6Address(raw)


def _append_site(parts: list[bytes], site: SiteInfo) -> None:
    flags = (_SITE_PRIMARY if site.primary else 0) | (
        _SITE_MULTI_PRIMARY if site.multi_primary else 0
    )
    parts.append(
        struct.pack(
            ">HBBHBBI",
            site.data_format_version,
            site.protocol_major,
            site.protocol_minor,
            site.serial,
            flags,
            site.hash_option,
            len(site.hash_filter),
        )
    )
    parts.append(site.hash_filter)
    parts.append(_U32.pack(len(site.attributes)))
    for name, value in site.attributes:
        for text in (name, value):
            raw = text.encode("utf-8")
            parts.append(_U32.pack(len(raw)))
            parts.append(raw)
    parts.append(_U32.pack(len(site.servers)))
    for server in site.servers:
        parts.append(_I32.pack(server.server_id))
        parts.append(_pack_address(server.address))
        parts.append(_U32.pack(len(server.public_key)))
        parts.append(server.public_key)
        parts.append(_U32.pack(len(server.interfaces)))
        parts.extend(
            struct.pack(">BBi", intf.kind, intf.transport, intf.port) for intf in server.interfaces
        )


def encode_site(site: SiteInfo) -> bytes:
    """HS_SITE data (RFC 3651 §3.2.2); IPv4 addresses are right-aligned in 16 zero bytes."""

    def build() -> bytes:
        parts: list[bytes] = []
        _append_site(parts, site)
        return b"".join(parts)

    return _guard_encode("HS_SITE", build)


_INTERFACE_KINDS: Final = {int(k): k for k in InterfaceKind}
_TRANSPORTS: Final = {int(t): t for t in Transport}
_HASH_OPTIONS: Final = {int(h): h for h in HashOption}


def _read_site(r: _Reader, code: int) -> SiteInfo:
    version = r.u16("HS_SITE data format version", code)
    major = r.u8("HS_SITE protocol major version", code)
    minor = r.u8("HS_SITE protocol minor version", code)
    serial = r.u16("HS_SITE serial number", code)
    flags = r.u8("HS_SITE primary mask", code)
    raw_hash = r.u8("HS_SITE hash option", code)
    hash_option = _HASH_OPTIONS.get(raw_hash)
    if hash_option is None:
        _fail(f"HS_SITE hash option {raw_hash} is not 0 (prefix), 1 (suffix) or 2 (handle)", code)
    hash_filter = r.blob("HS_SITE hash filter", code)
    attributes = []
    for _ in range(r.count("HS_SITE attributes", 8, MAX_ARRAY_SIZE, code)):
        name = r.text("HS_SITE attribute name", code)
        attributes.append((name, r.text(f"HS_SITE attribute {name!r}", code)))
    servers = []
    for _ in range(r.count("HS_SITE servers", 28, MAX_ARRAY_SIZE, code)):
        server_id = r.i32("server id", code)
        pos = r.take(_IP_ADDRESS_LENGTH, f"address of server {server_id}", code)
        address = _unpack_address(r.data[pos : pos + _IP_ADDRESS_LENGTH])
        public_key = r.blob(f"public key of server {server_id}", code)
        interfaces = []
        for _ in range(r.count(f"interfaces of server {server_id}", 6, MAX_ARRAY_SIZE, code)):
            raw_kind = r.u8("interface type", code)
            raw_transport = r.u8("interface protocol", code)
            port = r.i32("interface port", code)
            kind = _INTERFACE_KINDS.get(raw_kind)
            transport = _TRANSPORTS.get(raw_transport)
            if kind is None or transport is None:
                _fail(
                    f"server {server_id}: interface type {raw_kind} / protocol "
                    f"{raw_transport} is not known (types 1-3, protocols 0-3)",
                    code,
                )
            interfaces.append(Interface(kind=kind, transport=transport, port=port))
        servers.append(
            ServerInfo(
                server_id=server_id,
                address=address,
                interfaces=tuple(interfaces),
                public_key=public_key,
            )
        )
    return SiteInfo(
        servers=tuple(servers),
        serial=serial,
        primary=bool(flags & _SITE_PRIMARY),
        multi_primary=bool(flags & _SITE_MULTI_PRIMARY),
        hash_option=hash_option,
        hash_filter=hash_filter,
        attributes=tuple(attributes),
        protocol_major=major,
        protocol_minor=minor,
        data_format_version=version,
    )


def decode_site(data: bytes | bytearray | memoryview) -> SiteInfo:
    """Decode HS_SITE data; IPv4 server addresses may be zero-padded or v4-mapped.

    As in CNRI, a 16-byte address whose first 12 bytes are zero is an IPv4 address, so the
    IPv6 addresses ``::/96`` (``::1`` included) cannot be expressed in a site.
    """
    r = _Reader(_as_bytes(data))
    site = _read_site(r, _INVALID_VALUE)
    r.expect_end("HS_SITE data", _INVALID_VALUE)
    return site


def site_server_for(site: SiteInfo, handle: str) -> ServerInfo:
    """The server of ``site`` that serves ``handle`` (CNRI ``SiteInfo.determineServer``).

    The part of the handle named by ``site.hash_option`` (the prefix, ``0.NA`` for a handle
    without a slash; the suffix, the whole name for a handle without a slash; or the whole
    handle) is ASCII-upper-cased, hashed with MD5, and the last 4 digest bytes, read as a
    signed 32-bit integer, give ``abs(n) % len(servers)``. Java's ``Math.abs`` leaves
    ``-2**31`` negative and CNRI would then fail; here it hashes to ``2**31 % n``.
    """
    if not site.servers:
        _fail("HS_SITE lists no servers", _INVALID_VALUE)
    raw = handle.encode("utf-8")
    prefix, slash, suffix = raw.partition(b"/")
    if site.hash_option is HashOption.BY_PREFIX:
        part = prefix if slash else b"0.NA"
    elif site.hash_option is HashOption.BY_SUFFIX:
        part = suffix if slash else raw
    else:
        part = raw
    digest = hashlib.md5(part.upper(), usedforsecurity=False).digest()
    n = int.from_bytes(digest[-4:], "big", signed=True)
    return site.servers[abs(n) % len(site.servers)]


# ------------------------------------------------------------------- request digests


def _digest_of(algorithm: DigestAlgorithm, data: bytes) -> bytes:
    if algorithm in (DigestAlgorithm.MD5, DigestAlgorithm.OLD_FORMAT):
        return hashlib.md5(data, usedforsecurity=False).digest()
    if algorithm is DigestAlgorithm.SHA1:
        return hashlib.sha1(data, usedforsecurity=False).digest()
    return hashlib.sha256(data).digest()


def _header_and_body(message_bytes: bytes) -> int:
    """End of header + body in the bytes that follow an envelope."""
    if len(message_bytes) < HEADER_SIZE:
        _fail(f"truncated: a header is {HEADER_SIZE} bytes, got {len(message_bytes)}")
    (body_length,) = _U32.unpack_from(message_bytes, 20)
    end: int = HEADER_SIZE + body_length
    if end > len(message_bytes):
        _fail(f"truncated: the body length {body_length} runs past the end of the message")
    return end


def request_digest(
    message_bytes: bytes | bytearray | memoryview,
    algorithm: DigestAlgorithm = DigestAlgorithm.SHA256,
) -> RequestDigest:
    """The digest a response carries of the request ``message_bytes`` (RD flag).

    ``message_bytes`` are the bytes that follow the envelope (header, body and credential
    section: what the envelope's ``message_length`` counts, ``encode_message(m)[20:]``).
    The digest covers the header and the body only: not the envelope, whose sequence number
    and truncation flag differ between UDP and TCP, and not the credential section, which is
    how CNRI computes it (``AbstractMessage.messageBody``). MD5 serves ``OLD_FORMAT`` too.
    """
    data = _as_bytes(message_bytes)
    end = _header_and_body(data)
    return RequestDigest(algorithm=algorithm, digest=_digest_of(algorithm, data[:end]))


def _append_digest(parts: list[bytes], digest: RequestDigest) -> None:
    if digest.algorithm is DigestAlgorithm.OLD_FORMAT:
        parts.append(_U32.pack(len(digest.digest)))
    else:
        size = DIGEST_SIZES[digest.algorithm]
        if len(digest.digest) != size:
            _fail(
                f"a {digest.algorithm.name} request digest is {size} bytes, "
                f"got {len(digest.digest)}"
            )
        parts.append(_U8.pack(digest.algorithm))
    parts.append(digest.digest)


def _read_digest(r: _Reader) -> RequestDigest:
    raw = r.u8("request digest algorithm")
    algorithm = _DIGEST_ALGORITHMS.get(raw)
    if algorithm is None:
        _fail(f"unknown request digest algorithm {raw} (0-3 are defined)")
    if algorithm is DigestAlgorithm.OLD_FORMAT:
        # The old format is a length-prefixed MD5; the "algorithm" byte is the length's top byte.
        r.pos -= 1
        return RequestDigest(algorithm=algorithm, digest=r.blob("request digest", limit=64))
    size = DIGEST_SIZES[algorithm]
    pos = r.take(size, f"{algorithm.name} request digest", _PROTOCOL_ERROR)
    return RequestDigest(algorithm=algorithm, digest=r.data[pos : pos + size])


# ------------------------------------------------------------------------- credentials


def encode_credential(credential: Credential) -> bytes:
    """The credential section's content (without its 4-byte length) for ``credential``."""

    def build() -> bytes:
        signer = credential.signer.encode("utf-8")
        kind = credential.type.encode("utf-8")
        algorithm = credential.digest_algorithm.encode("utf-8")
        signature = credential.signature
        return b"".join(
            (
                struct.pack(">BBH", credential.version, 0, credential.options),
                _U32.pack(len(signer)),
                signer,
                _I32.pack(credential.signer_index),
                _U32.pack(len(kind)),
                kind,
                _U32.pack(8 + len(algorithm) + len(signature)),
                _U32.pack(len(algorithm)),
                algorithm,
                _U32.pack(len(signature)),
                signature,
            )
        )

    return _guard_encode("credential", build)


def _read_credential(r: _Reader) -> Credential:
    code = _INVALID_CREDENTIAL
    version = r.u8("credential version", code)
    r.u8("credential reserved byte", code)
    options = r.u16("credential options", code)
    signer = r.text("credential signer handle", code, MAX_HANDLE_LENGTH)
    signer_index = r.i32("credential signer index", code)
    kind = r.text("credential type", code)
    signed_length = r.u32("credential signature section length", code)
    if signed_length != r.remaining:
        _fail(
            f"credential signature section says {signed_length} bytes, {r.remaining} are there",
            code,
        )
    algorithm = r.text("credential digest algorithm", code)
    signature = r.blob("credential signature", code)
    r.expect_end("the credential signature", code)
    return Credential(
        signer=signer,
        signer_index=signer_index,
        type=kind,
        digest_algorithm=algorithm,
        signature=signature,
        version=version,
        options=options,
    )


def decode_credential(data: bytes | bytearray | memoryview) -> Credential:
    """Decode a credential section's content (without its 4-byte length)."""
    return _read_credential(_Reader(_as_bytes(data)))


def signed_part(
    message_bytes: bytes | bytearray | memoryview,
    *,
    envelope: Envelope,
    session_counter: int | None = None,
) -> bytes:
    """The bytes a message signature or MAC covers (§1.9).

    ``message_bytes`` follow ``envelope`` (header, body, credential section). The signature
    covers header + body; from protocol 2.6 on they are prefixed with the envelope's ``major,
    minor``, from 2.8 on also its suggested ``major, minor``, then ``int sessionId, int
    requestId, int sessionCounter``. ``session_counter`` defaults to the signer index of the
    message's credential (CNRI reuses that field as the counter), or 0 when it has none.

    Version 2.6 peers wrote that prefix with an offset bug (each int written at offset 2,
    then 4, then 4 again): ``major, minor``, the top half of the session id, the session
    counter and 6 zero bytes. That layout is reproduced so 2.6 signatures still verify.
    """
    data = _as_bytes(message_bytes)
    end = _header_and_body(data)
    if session_counter is None:
        session_counter = 0
        if end + 4 <= len(data):
            (cred_length,) = _U32.unpack_from(data, end)
            if cred_length:
                r = _Reader(data, end + 4, min(len(data), end + 4 + cred_length))
                session_counter = _read_credential(r).signer_index
    signed = data[:end]
    major, minor = envelope.major, envelope.minor
    version = (major, minor)
    if version < (2, 6):
        return signed
    counters = _guard_encode(
        "signature prefix",
        lambda: struct.pack(">Iii", envelope.session_id, envelope.request_id, session_counter),
    )
    if version < (2, 7):
        prefix = bytearray(14)
        prefix[0:2] = bytes((major, minor))
        prefix[2:6] = counters[0:4]
        prefix[4:8] = counters[8:12]
        return bytes(prefix) + signed
    if version >= (2, 8):
        head = bytes((major, minor, envelope.suggested_major, envelope.suggested_minor))
    else:
        head = bytes((major, minor))
    return head + counters + signed


# -------------------------------------------------------------------------- envelope


def encode_envelope(
    envelope: Envelope,
    *,
    message_length: int | None = None,
    truncated: bool | None = None,
    sequence: int | None = None,
) -> bytes:
    """The 20 envelope bytes; keyword arguments override the envelope's own fields."""
    flags = (
        (_FLAG_COMPRESSED if envelope.compressed else 0)
        | (_FLAG_ENCRYPTED if envelope.encrypted else 0)
        | (_FLAG_TRUNCATED if (envelope.truncated if truncated is None else truncated) else 0)
        | (envelope.suggested_major & 0x03)
    )
    return _guard_encode(
        "envelope",
        lambda: _ENVELOPE.pack(
            envelope.major,
            envelope.minor,
            flags,
            envelope.suggested_minor,
            envelope.session_id,
            envelope.request_id,
            envelope.sequence if sequence is None else sequence,
            envelope.message_length if message_length is None else message_length,
        ),
    )


def _envelope_from(fields: tuple[int, ...]) -> Envelope:
    major, minor, flags, suggested_minor, session_id, request_id, sequence, length = fields[:8]
    if length > MAX_MESSAGE_LENGTH:
        _fail(
            f"message length {length} is negative or above the limit of {MAX_MESSAGE_LENGTH} bytes"
        )
    suggested_major = flags & 0x03
    if suggested_major == 0:
        # RFC 3652 envelopes have no suggested version; the actual one stands in for it.
        suggested_major, suggested_minor = major, minor
    return _new_envelope(
        major,
        minor,
        suggested_major,
        suggested_minor,
        bool(flags & _FLAG_COMPRESSED),
        bool(flags & _FLAG_ENCRYPTED),
        bool(flags & _FLAG_TRUNCATED),
        session_id,
        request_id,
        sequence,
        length,
    )


def decode_envelope(data: bytes | bytearray | memoryview) -> Envelope:
    """Decode the envelope in the first 20 bytes of ``data`` (later bytes are ignored)."""
    if len(data) < ENVELOPE_SIZE:
        _fail(f"truncated: an envelope is {ENVELOPE_SIZE} bytes, got {len(data)}")
    return _envelope_from(_ENVELOPE.unpack_from(data, 0))


# ---------------------------------------------------------------------- message bodies


def _old_challenge_format(envelope: Envelope) -> bool:
    # CNRI's decodeChallenge: 2.0 peers (some of which announced themselves as 5.0) put the
    # digest inside the challenge body.
    version = (envelope.major, envelope.minor)
    return version in ((2, 0), (5, 0)) or envelope.major < 2


def _old_error_format(envelope: Envelope) -> bool:
    return envelope.major == 5 or (envelope.major, envelope.minor) <= (2, 0)


def _decode_resolution_request(data: bytes, pos: int, end: int) -> ResolutionRequest:
    # Hot path: inlined reads instead of _Reader.
    if end - pos < 12:
        _fail(f"truncated: a resolution request body is at least 12 bytes, got {end - pos}")
    (size,) = _U32.unpack_from(data, pos)
    pos += 4
    if size > MAX_HANDLE_LENGTH:
        _fail(f"handle is {size} bytes long; at most {MAX_HANDLE_LENGTH}", _INVALID_HANDLE)
    stop = pos + size
    if stop + 8 > end:
        _fail(
            f"truncated: a {size}-byte handle and the two list counts need {size + 12} bytes, "
            f"the body has {end - pos + 4}"
        )
    try:
        handle = data[pos:stop].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"handle is not valid UTF-8: {exc.reason}", _INVALID_HANDLE) from exc
    pos = stop
    (count,) = _U32.unpack_from(data, pos)
    pos += 4
    indexes: tuple[int, ...] = ()
    if count:
        if count > MAX_ARRAY_SIZE or pos + 4 * count + 4 > end:
            _fail(f"truncated: {count} requested indexes run past the end of the body")
        indexes = struct.unpack_from(f">{count}i", data, pos)
        pos += 4 * count
    (count,) = _U32.unpack_from(data, pos)
    pos += 4
    types: tuple[str, ...] = ()
    if count:
        if count > MAX_ARRAY_SIZE or pos + 4 * count > end:
            _fail(f"truncated: {count} requested types run past the end of the body")
        r = _Reader(data, pos, end)
        types = tuple(r.text("requested type") for _ in range(count))
        pos = r.pos
    if pos != end:
        # The IDIS fork appends ``str authBytes``; tolerate exactly that, nothing else.
        r = _Reader(data, pos, end)
        if r.remaining < 4:
            _fail(f"{end - pos} unexpected bytes after the resolution request")
        r.blob("IDIS authBytes")
        r.expect_end("the resolution request")
    return _new_resolution_request(handle, indexes, types)


def _decode_handle_request(r: _Reader, op: OpCode) -> HandleRequest:
    handle = r.handle("handle")
    index = r.i32("identity index") if op is OpCode.LOGIN_IDIS else None
    return HandleRequest(handle=handle, index=index)


def _decode_values_request(r: _Reader, _op: OpCode) -> ValuesRequest:
    handle = r.handle("handle")
    return ValuesRequest(handle=handle, values=_read_values(r, "values"))


def _decode_remove_request(r: _Reader, _op: OpCode) -> RemoveValuesRequest:
    handle = r.handle("handle")
    return RemoveValuesRequest(handle=handle, indexes=r.ints("indexes to remove"))


def _decode_challenge_answer(r: _Reader, _op: OpCode) -> ChallengeAnswer:
    auth_type = r.text("authentication type", limit=64)
    user = r.handle("user handle")
    user_index = r.i32("user index")
    return ChallengeAnswer(
        auth_type=auth_type,
        user=user,
        user_index=user_index,
        signed_response=r.blob("signed response"),
    )


def _decode_verify_request(r: _Reader, _op: OpCode) -> VerifyRequest:
    handle = r.handle("handle")
    index = r.i32("index")
    nonce = r.blob("nonce")
    digest = _read_digest(r).digest
    return VerifyRequest(
        handle=handle,
        index=index,
        nonce=nonce,
        request_digest=digest,
        signed_response=r.blob("signed response"),
    )


_RequestDecoder = Callable[[_Reader, OpCode], Body]

_REQUEST_DECODERS: Final[dict[OpCode, tuple[type[Body], _RequestDecoder | None]]] = {
    OpCode.RESOLUTION: (ResolutionRequest, None),
    OpCode.GET_SITEINFO: (HandleRequest, _decode_handle_request),
    OpCode.DELETE_HANDLE: (HandleRequest, _decode_handle_request),
    OpCode.LIST_HANDLES: (HandleRequest, _decode_handle_request),
    OpCode.LIST_NA: (HandleRequest, _decode_handle_request),
    OpCode.LIST_HOMED_NAS: (HandleRequest, _decode_handle_request),
    OpCode.HOME_NA: (HandleRequest, _decode_handle_request),
    OpCode.UNHOME_NA: (HandleRequest, _decode_handle_request),
    OpCode.LOGIN_IDIS: (HandleRequest, _decode_handle_request),
    OpCode.CREATE_HANDLE: (ValuesRequest, _decode_values_request),
    OpCode.ADD_VALUE: (ValuesRequest, _decode_values_request),
    OpCode.MODIFY_VALUE: (ValuesRequest, _decode_values_request),
    OpCode.REMOVE_VALUE: (RemoveValuesRequest, _decode_remove_request),
    OpCode.CHALLENGE_RESPONSE: (ChallengeAnswer, _decode_challenge_answer),
    OpCode.VERIFY_RESPONSE: (VerifyRequest, _decode_verify_request),
}

# rc 1: op code -> body class. CREATE_HANDLE may also answer with GenericResponse.
_SUCCESS_BODIES: Final[dict[OpCode, type[Body]]] = {
    OpCode.RESOLUTION: ResolutionResponse,
    OpCode.GET_SITEINFO: SiteInfoResponse,
    OpCode.CREATE_HANDLE: CreateHandleResponse,
    OpCode.LIST_HANDLES: ListResponse,
    OpCode.LIST_NA: ListResponse,
    OpCode.LIST_HOMED_NAS: ListResponse,
    OpCode.VERIFY_RESPONSE: VerifyResponse,
    OpCode.DELETE_HANDLE: GenericResponse,
    OpCode.ADD_VALUE: GenericResponse,
    OpCode.MODIFY_VALUE: GenericResponse,
    OpCode.REMOVE_VALUE: GenericResponse,
    OpCode.HOME_NA: GenericResponse,
    OpCode.UNHOME_NA: GenericResponse,
    OpCode.LOGIN_IDIS: GenericResponse,
    OpCode.LOGIN: GenericResponse,
    OpCode.SESSION_TERMINATE: GenericResponse,
}
# IDIS login successes carry a body its SDK ignores; we ignore it too.
_BODY_IGNORED: Final = frozenset({OpCode.LOGIN, OpCode.LOGIN_IDIS})

_REFERRALS: Final = frozenset({ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL})


def _decode_response_body(
    r: _Reader, op: OpCode, rc: ResponseCode, envelope: Envelope, digest: RequestDigest | None
) -> Body:
    if rc is ResponseCode.SUCCESS:
        kind = _SUCCESS_BODIES.get(op)
        if kind is None:
            _fail(f"no success response is defined for op code {int(op)}", _NOT_SUPPORTED)
        if kind is ResolutionResponse:
            handle = r.handle("handle")
            return ResolutionResponse(
                handle=handle, values=_read_values(r, "values"), digest=digest
            )
        if kind is SiteInfoResponse:
            return SiteInfoResponse(site=_read_site(r, _PROTOCOL_ERROR), digest=digest)
        if kind is CreateHandleResponse:
            if not r.remaining:
                return GenericResponse(digest=digest)
            return CreateHandleResponse(handle=r.handle("created handle"), digest=digest)
        if kind is ListResponse:
            n = r.count("handles", 4, MAX_ARRAY_SIZE)
            handles = tuple(r.handle("listed handle") for _ in range(n))
            return ListResponse(handles=handles, digest=digest)
        if kind is VerifyResponse:
            return VerifyResponse(valid=bool(r.u8("verification result") & 0x01), digest=digest)
        if op in _BODY_IGNORED:
            r.rest()
        return GenericResponse(digest=digest)
    if rc in _REFERRALS:
        handle = r.handle("referral handle")
        values = _read_values(r, "referral values") if r.remaining else ()
        return ReferralResponse(handle=handle, values=values, digest=digest)
    if rc is ResponseCode.AUTHENTICATION_NEEDED:
        nonce = r.blob("challenge nonce")
        if _old_challenge_format(envelope) and r.remaining:
            old = r.blob("challenge request digest", limit=64)
            digest = RequestDigest(algorithm=DigestAlgorithm.OLD_FORMAT, digest=old)
        return Challenge(nonce=nonce, digest=digest)
    if _old_error_format(envelope) and r.remaining < 4:
        r.rest()
        return ErrorResponse(message="", digest=digest)
    return ErrorResponse(message=r.text("error message"), digest=digest)


_HEADER_CACHE: dict[bytes, Header] = {}
_HEADER_CACHE_SIZE: Final = 4096


def _header_from(  # noqa: PLR0917 - the header fields, in wire order
    key: bytes,
    op: OpCode,
    rc: ResponseCode,
    flags: int,
    serial: int,
    recursion: int,
    expiration: int,
) -> Header:
    # Headers are frozen; clients send the same few, and the expiration changes once a
    # second, so a small cache (keyed by the header's first 20 bytes) saves building one per
    # request. An empty key bypasses the cache.
    header = _HEADER_CACHE.get(key) if key else None
    if header is None:
        if len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
            _HEADER_CACHE.clear()
        header = Header(
            op=op,
            response=rc,
            flags=OpFlag(flags),
            site_serial=serial,
            recursion=recursion,
            expiration=expiration,
        )
        if key:
            _HEADER_CACHE[key] = header
    return header


def _decode(envelope: Envelope, data: bytes, start: int, end: int) -> Message:
    """Decode header, body and credential from ``data[start:end]``."""
    op_code: int | None = None
    rc_code: int | None = None
    flags = 0
    header: Header | None = None
    try:
        if envelope.compressed or envelope.encrypted:
            _fail(
                "compressed or encrypted messages are not supported by the codec "
                "(decrypt the payload and call decode_after_envelope)",
                _NOT_SUPPORTED,
            )
        if end - start < HEADER_SIZE:
            _fail(f"truncated: a header is {HEADER_SIZE} bytes, {end - start} are there")
        op_code, rc_code, raw_flags, serial, recursion, expiration, body_length = (
            _HEADER.unpack_from(data, start)
        )
        flags = raw_flags & _OP_FLAG_MASK
        body_start = start + HEADER_SIZE
        body_end = body_start + body_length
        if body_length > end - body_start:
            _fail(
                f"body length {body_length} runs past the end of the message "
                f"({end - body_start} bytes follow the header)"
            )
        op = _OPCODES.get(op_code)
        if op is None:
            _fail(f"unknown op code {op_code}", _NOT_SUPPORTED)
        rc = _RESPONSE_CODES.get(rc_code)
        if rc is None:
            _fail(f"unknown response code {rc_code}")
        old_server_backup = rc is ResponseCode.PREFIX_REFERRAL and (
            (envelope.major, envelope.minor) < (2, 5)
        )
        if old_server_backup:
            rc = ResponseCode.SERVER_BACKUP
        key = b"" if old_server_backup else data[start : start + 20]
        header = _header_from(key, op, rc, flags, serial, recursion, expiration)
        body: Body
        if rc is ResponseCode.REQUEST:
            entry = _REQUEST_DECODERS.get(op)
            if entry is None:
                _fail(f"op code {op.name} ({op_code}) is not supported", _NOT_SUPPORTED)
            decoder = entry[1]
            if decoder is None:
                body = _decode_resolution_request(data, body_start, body_end)
            else:
                r = _Reader(data, body_start, body_end)
                body = decoder(r, op)
                r.expect_end(f"the {op.name} request")
        else:
            r = _Reader(data, body_start, body_end)
            digest = _read_digest(r) if flags & _RD else None
            body = _decode_response_body(r, op, rc, envelope, digest)
            r.expect_end(f"the {op.name} response ({rc.name})")
        credential = None
        tail = end - body_end
        if tail:
            if tail < 4:
                _fail(f"truncated: {tail} bytes after the body cannot hold a credential length")
            (cred_length,) = _U32.unpack_from(data, body_end)
            if cred_length != tail - 4:
                _fail(
                    f"credential length {cred_length} does not match the {tail - 4} bytes "
                    "left in the message"
                )
            if cred_length:
                credential = _read_credential(_Reader(data, body_end + 4, end))
        return _new_message(header, body, envelope, credential)
    except MessageDecodeError:
        raise
    except CodecError as exc:
        raise MessageDecodeError(
            str(exc),
            exc.response_code,
            envelope=envelope,
            op_code=op_code,
            received_response_code=rc_code,
            op_flags=flags,
            header=header,
        ) from exc
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        # A bug here must still reach the caller as a codec error, not as a crash.
        raise MessageDecodeError(
            f"malformed message: {exc}",
            envelope=envelope,
            op_code=op_code,
            received_response_code=rc_code,
            op_flags=flags,
            header=header,
        ) from exc


def decode_after_envelope(envelope: Envelope, payload: bytes | bytearray | memoryview) -> Message:
    """Decode the ``payload`` that follows ``envelope`` (exactly ``message_length`` bytes)."""
    data = _as_bytes(payload)
    if len(data) != envelope.message_length:
        raise MessageDecodeError(
            f"the envelope announces {envelope.message_length} message bytes, "
            f"{len(data)} were given",
            envelope=envelope,
        )
    return _decode(envelope, data, 0, len(data))


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode one whole message, envelope included; ``data`` must hold exactly one."""
    raw = _as_bytes(data)
    if len(raw) < ENVELOPE_SIZE:
        _fail(f"truncated: an envelope is {ENVELOPE_SIZE} bytes, got {len(raw)}")
    envelope = _envelope_from(_ENVELOPE.unpack_from(raw, 0))
    if len(raw) - ENVELOPE_SIZE != envelope.message_length:
        what = "truncated" if len(raw) - ENVELOPE_SIZE < envelope.message_length else "trailing"
        raise MessageDecodeError(
            f"{what}: the envelope announces {envelope.message_length} message bytes, "
            f"{len(raw) - ENVELOPE_SIZE} follow it",
            envelope=envelope,
        )
    return _decode(envelope, raw, ENVELOPE_SIZE, len(raw))


# ------------------------------------------------------------------------------ encoding


def _expected_body(op: OpCode, rc: ResponseCode) -> tuple[type[Body], ...]:
    if rc is ResponseCode.REQUEST:
        entry = _REQUEST_DECODERS.get(op)
        if entry is None:
            _fail(f"encoding {op.name} requests is not supported", _NOT_SUPPORTED)
        return (entry[0],)
    if rc is ResponseCode.SUCCESS:
        kind = _SUCCESS_BODIES.get(op)
        if kind is None:
            _fail(f"no success response is defined for {op.name}", _NOT_SUPPORTED)
        return (kind, GenericResponse) if kind is CreateHandleResponse else (kind,)
    if rc in _REFERRALS:
        return (ReferralResponse,)
    if rc is ResponseCode.AUTHENTICATION_NEEDED:
        return (Challenge,)
    return (ErrorResponse,)


def _append_text(parts: list[bytes], text: str) -> None:
    raw = text.encode("utf-8")
    parts.append(_U32.pack(len(raw)))
    parts.append(raw)


def _append_blob(parts: list[bytes], raw: bytes) -> None:
    parts.append(_U32.pack(len(raw)))
    parts.append(raw)


_RequestBody = (
    ResolutionRequest
    | HandleRequest
    | ValuesRequest
    | RemoveValuesRequest
    | ChallengeAnswer
    | VerifyRequest
)
_ResponseBody = (
    GenericResponse
    | ResolutionResponse
    | SiteInfoResponse
    | CreateHandleResponse
    | ListResponse
    | ReferralResponse
    | Challenge
    | VerifyResponse
    | ErrorResponse
)
_REQUEST_TYPES: Final = frozenset(
    {
        ResolutionRequest,
        HandleRequest,
        ValuesRequest,
        RemoveValuesRequest,
        ChallengeAnswer,
        VerifyRequest,
    }
)


def _append_request_body(parts: list[bytes], op: OpCode, body: _RequestBody) -> None:
    match body:
        case ResolutionRequest():
            _append_text(parts, body.handle)
            parts.append(_U32.pack(len(body.indexes)))
            if body.indexes:
                parts.append(struct.pack(f">{len(body.indexes)}i", *body.indexes))
            parts.append(_U32.pack(len(body.types)))
            for kind in body.types:
                _append_text(parts, kind)
        case HandleRequest():
            _append_text(parts, body.handle)
            if op is OpCode.LOGIN_IDIS:
                if body.index is None:
                    _fail("a LOGIN_IDIS request needs the identity's index")
                parts.append(_I32.pack(body.index))
            elif body.index is not None:
                _fail(f"a {op.name} request carries no index")
        case ValuesRequest():
            _append_text(parts, body.handle)
            parts.append(_U32.pack(len(body.values)))
            for value in body.values:
                _append_value(parts, value)
        case RemoveValuesRequest():
            _append_text(parts, body.handle)
            parts.append(_U32.pack(len(body.indexes)))
            if body.indexes:
                parts.append(struct.pack(f">{len(body.indexes)}i", *body.indexes))
        case ChallengeAnswer():
            _append_text(parts, body.auth_type)
            _append_text(parts, body.user)
            parts.append(_I32.pack(body.user_index))
            _append_blob(parts, body.signed_response)
        case VerifyRequest():
            _append_text(parts, body.handle)
            parts.append(_I32.pack(body.index))
            _append_blob(parts, body.nonce)
            _append_blob(parts, body.request_digest)  # the old, length-prefixed format
            _append_blob(parts, body.signed_response)


def _append_response_body(parts: list[bytes], body: _ResponseBody, envelope: Envelope) -> bool:
    """Append a response body; returns whether it carries a request digest (sets RD)."""
    if isinstance(body, Challenge) and _old_challenge_format(envelope):
        _append_blob(parts, body.nonce)
        _append_blob(parts, body.digest.digest if body.digest else b"")
        return False
    digest = body.digest
    if digest is not None:
        _append_digest(parts, digest)
    match body:
        case ResolutionResponse() | ReferralResponse():
            _append_text(parts, body.handle)
            parts.append(_U32.pack(len(body.values)))
            for value in body.values:
                _append_value(parts, value)
        case SiteInfoResponse():
            _append_site(parts, body.site)
        case CreateHandleResponse():
            _append_text(parts, body.handle)
        case ListResponse():
            parts.append(_U32.pack(len(body.handles)))
            for handle in body.handles:
                _append_text(parts, handle)
        case VerifyResponse():
            parts.append(b"\x01" if body.valid else b"\x00")
        case Challenge():
            _append_blob(parts, body.nonce)
        case ErrorResponse():
            _append_text(parts, body.message)
        case GenericResponse():
            pass
    return digest is not None


def _wire_response_code(rc: ResponseCode, envelope: Envelope) -> int:
    # CNRI writeHeader: peers older than 2.5 know SERVER_BACKUP as 303 and lack 202.
    if (envelope.major, envelope.minor) < (2, 5):
        if rc is ResponseCode.SERVER_BACKUP:
            return int(ResponseCode.PREFIX_REFERRAL)
        if rc is ResponseCode.INVALID_VALUE:
            return int(ResponseCode.VALUE_ALREADY_EXISTS)
    return int(rc)


def encode_message(message: Message, *, now: int | None = None) -> bytes:
    """Encode a whole message: envelope, header, body, credential length and credential.

    The envelope's ``message_length`` is computed. A header expiration of 0 becomes ``now +
    DEFAULT_EXPIRATION`` (``now`` defaults to the current Unix time). For responses the RD
    flag is set exactly when the body carries a request digest, so a receiver always knows
    whether to read one. ``CodecError`` reports a body that does not fit the header's op and
    response codes, a field out of range, or a message above ``MAX_MESSAGE_LENGTH``.
    """
    header = message.header
    envelope = message.envelope
    body = message.body
    op = header.op
    rc = header.response
    if not (
        type(body) is ResolutionResponse and rc is ResponseCode.SUCCESS and op is OpCode.RESOLUTION
    ):
        expected = _expected_body(op, rc)
        if not isinstance(body, expected):
            names = " or ".join(kind.__name__ for kind in expected)
            _fail(
                f"a {op.name} message with response code {rc.name} carries a {names}, "
                f"not a {type(body).__name__}"
            )
    expiration = header.expiration
    if not expiration:
        expiration = (int(time.time()) if now is None else now) + DEFAULT_EXPIRATION
    major = envelope.major
    minor = envelope.minor
    wire_rc = int(rc)
    if major < 2 or (major == 2 and minor < 5):
        wire_rc = _wire_response_code(rc, envelope)
    try:
        parts: list[bytes] = [b""]
        flags = int(header.flags)
        if type(body) in _REQUEST_TYPES:
            _append_request_body(parts, op, cast("_RequestBody", body))
        elif _append_response_body(parts, cast("_ResponseBody", body), envelope):
            flags |= _RD
        else:
            flags &= ~_RD
        body_length = sum(map(len, parts))
        credential = encode_credential(message.credential) if message.credential else b""
        message_length = HEADER_SIZE + body_length + 4 + len(credential)
        if message_length > MAX_MESSAGE_LENGTH:
            _fail(f"the message would be {message_length} bytes; at most {MAX_MESSAGE_LENGTH}")
        parts[0] = _PREFIX.pack(
            major,
            minor,
            (_FLAG_COMPRESSED if envelope.compressed else 0)
            | (_FLAG_ENCRYPTED if envelope.encrypted else 0)
            | (_FLAG_TRUNCATED if envelope.truncated else 0)
            | (envelope.suggested_major & 0x03),
            envelope.suggested_minor,
            envelope.session_id,
            envelope.request_id,
            envelope.sequence,
            message_length,
            op,
            wire_rc,
            flags,
            header.site_serial,
            header.recursion,
            expiration,
            body_length,
        )
        parts.append(_U32.pack(len(credential)))
        parts.append(credential)
        return b"".join(parts)
    except struct.error as exc:
        raise CodecError(
            f"cannot encode the {op.name} message: a field is out of range ({exc})"
        ) from exc
    except UnicodeEncodeError as exc:
        raise CodecError(
            f"cannot encode the {op.name} message: text is not encodable ({exc.reason})"
        ) from exc


# ------------------------------------------------------------------------ pre-encoded answers

# The miss path of a plain public resolution, without objects: the request is checked in
# place, the answer is the store's pre-encoded body under a header packed here: 13 µs of the
# node's time per miss instead of 41 for decode, HandleValue objects and encode
# (``bench/id_inprocess.py``, 1 M records). Anything but the plainest request (filters, a
# credential, several packets, another protocol version) returns None and goes the full way,
# so errors come from one place.
_OP_RESOLUTION_REQUEST: Final = b"\x00\x00\x00\x01\x00\x00\x00\x00"
_ECHOED_RESPONSE_FLAGS: Final = int(OpFlag.PO | OpFlag.KC)
_NO_FILTERS_NO_CREDENTIAL: Final = bytes(12)
_SESSION_AND_REQUEST: Final = struct.Struct(">II")


def plain_resolution_handle(data: bytes) -> str | None:
    """The handle asked for by a plain public resolution request in one packet, else None.

    Plain: protocol 2.x, not compressed, encrypted or multi-packet, op RESOLUTION, no CT or RD
    flag, no index or type filter and no credential, with lengths that add up exactly. The
    handle is returned as sent (its syntax is the caller's to check).
    """
    size = len(data)
    if size < 56 or data[0] != 2 or data[2] & 0xE0 or data[20:28] != _OP_RESOLUTION_REQUEST:
        return None
    if data[28] & 0x40 or data[29] & 0x80 or data[12:16] != _ZERO_U32:
        return None
    (message_length,) = _U32.unpack_from(data, 16)
    (body_length,) = _U32.unpack_from(data, 40)
    (handle_length,) = _U32.unpack_from(data, 44)
    if (
        message_length != size - ENVELOPE_SIZE
        or handle_length > MAX_HANDLE_LENGTH
        or body_length != handle_length + 12
        or size != 56 + handle_length + 4
        or data[48 + handle_length :] != _NO_FILTERS_NO_CREDENTIAL
    ):
        return None
    try:
        return data[48 : 48 + handle_length].decode("utf-8")
    except UnicodeDecodeError:
        return None


def encode_resolution_body(handle: str, values: Sequence[HandleValue]) -> bytes:
    """The body of a successful resolution response: the handle and ``values`` as given."""
    parts: list[bytes] = []
    _append_text(parts, handle)
    parts.append(_U32.pack(len(values)))
    for value in values:
        _append_value(parts, value)
    return b"".join(parts)


def encode_resolution_answer(request: bytes, body: bytes, *, now: int | None = None) -> bytes:
    """The success response to a plain resolution ``request``, carrying ``body``.

    ``request`` is one that ``plain_resolution_handle`` accepts and ``body`` comes from
    ``encode_resolution_body``: the result is byte for byte what ``encode_message`` makes of the
    dispatcher's reply to the decoded request.
    """
    major, minor, flags, suggested_minor = request[0], request[1], request[2], request[3]
    suggested_major = flags & 0x03
    if suggested_major == 0:  # an RFC 3652 envelope: the actual version stands in
        suggested_major, suggested_minor = major & 0x03, minor
    (request_flags,) = _U32.unpack_from(request, 28)
    expiration = (int(time.time()) if now is None else now) + DEFAULT_EXPIRATION
    head = _PREFIX.pack(
        major,
        minor,
        suggested_major,
        suggested_minor,
        *_SESSION_AND_REQUEST.unpack_from(request, 4),
        0,
        HEADER_SIZE + len(body) + 4,
        OpCode.RESOLUTION,
        ResponseCode.SUCCESS,
        request_flags & _ECHOED_RESPONSE_FLAGS,
        UNKNOWN_SITE_SERIAL,
        request[34],
        expiration,
        len(body),
    )
    return b"".join((head, body, _ZERO_U32))


def encode_error_reply(
    error: MessageDecodeError, *, now: int | None = None, envelope: Envelope | None = None
) -> bytes | None:
    """An error response to a message that did not decode, or ``None`` if none is due.

    None is returned when the envelope did not parse (nobody to answer) or the message was
    itself a response (answering responses could loop between two peers). Otherwise the
    reply carries the sender's session and request ids, its op code (even an unknown one,
    which ``Header`` cannot hold) and ``error.response_code``. ``envelope`` sets our own
    versions (the default ``Envelope()`` announces 2.10, suggesting 2.11).
    """
    received = error.envelope
    if received is None or error.received_response_code not in (None, 0):
        return None
    ours = envelope or Envelope()
    text = str(error).encode("utf-8")[:512]
    body = _U32.pack(len(text)) + text
    expiration = (int(time.time()) if now is None else now) + DEFAULT_EXPIRATION
    flags = ours.suggested_major & 0x03
    return b"".join(
        (
            _PREFIX.pack(
                ours.major,
                ours.minor,
                flags,
                ours.suggested_minor,
                received.session_id,
                received.request_id,
                0,
                HEADER_SIZE + len(body) + 4,
                (error.op_code or 0) & 0xFFFFFFFF,
                error.response_code & 0xFFFFFFFF,
                0,
                0xFFFF,
                0,
                expiration & 0xFFFFFFFF,
                len(body),
            ),
            body,
            _ZERO_U32,
        )
    )


# ---------------------------------------------------------------------------------- UDP


def split_for_udp(
    envelope: Envelope, message_bytes_after_envelope: bytes | bytearray | memoryview
) -> list[bytes]:
    """Split a message into UDP packets of at most 512 bytes, each with its own envelope.

    One packet when the message fits in 492 bytes (TC clear, sequence 0). Otherwise every
    packet has TC set, its packet number as the sequence number and the *whole* message
    length in its envelope, so the receiver can size the message from any packet.
    """
    payload = _as_bytes(message_bytes_after_envelope)
    total = len(payload)
    if total > MAX_MESSAGE_LENGTH:
        _fail(f"the message is {total} bytes; at most {MAX_MESSAGE_LENGTH}")
    if total <= MAX_UDP_DATA:
        return [
            encode_envelope(envelope, message_length=total, truncated=False, sequence=0) + payload
        ]
    return [
        encode_envelope(envelope, message_length=total, truncated=True, sequence=number)
        + payload[offset : offset + MAX_UDP_DATA]
        for number, offset in enumerate(range(0, total, MAX_UDP_DATA))
    ]


class _Partial:
    __slots__ = ("chunks", "envelope", "started", "total")

    def __init__(self, envelope: Envelope, started: float) -> None:
        self.envelope = envelope
        self.total = envelope.message_length
        self.started = started
        self.chunks: dict[int, bytes] = {}


class UdpReassembler:
    """Reassembles multi-packet UDP messages, with bounded memory.

    Packets are grouped by ``(peer, request id)``; ``peer`` is whatever the caller passes
    (``None`` by default, which groups by request id alone). At most ``max_partial``
    messages are in progress and at most ``max_buffered`` bytes are held; beyond either the
    oldest partial message is dropped, as is any partial message older than ``max_age``
    seconds. The clock is the caller's: pass ``now`` (monotonic seconds) to ``feed``.
    """

    def __init__(
        self,
        *,
        max_partial: int = 64,
        max_age: float = 5.0,
        max_buffered: int = 8 * 1024 * 1024,
    ) -> None:
        if max_partial < 1 or max_age <= 0 or max_buffered < MAX_UDP_DATA:
            raise ValueError("max_partial, max_age and max_buffered must be positive")
        self._max_partial = max_partial
        self._max_age = max_age
        self._max_buffered = max_buffered
        self._partials: dict[tuple[Hashable, int], _Partial] = {}
        self._buffered = 0

    @property
    def pending(self) -> int:
        """How many messages are partly received."""
        return len(self._partials)

    @property
    def buffered_bytes(self) -> int:
        """How many message bytes the partial messages hold."""
        return self._buffered

    def _drop(self, key: tuple[Hashable, int]) -> None:
        partial = self._partials.pop(key)
        self._buffered -= sum(map(len, partial.chunks.values()))

    def _expire(self, now: float) -> None:
        limit = now - self._max_age
        for key, partial in list(self._partials.items()):
            if partial.started >= limit:
                break
            self._drop(key)

    def feed_raw(
        self,
        packet: bytes | bytearray | memoryview,
        *,
        peer: Hashable = None,
        now: float | None = None,
    ) -> bytes | None:
        """Take one packet; return the whole message (one envelope + payload) once complete.

        The returned envelope has TC clear and sequence 0. ``CodecError`` reports a packet
        that cannot belong to any message (bad envelope, wrong size, out-of-range number,
        or a length that contradicts earlier packets, whose partial message is dropped).
        """
        data = _as_bytes(packet)
        envelope = decode_envelope(data)
        chunk = data[ENVELOPE_SIZE:]
        total = envelope.message_length
        if not envelope.truncated:
            if len(chunk) != total:
                raise MessageDecodeError(
                    f"UDP packet holds {len(chunk)} message bytes, its envelope says {total}",
                    envelope=envelope,
                )
            return data
        count = -(-total // MAX_UDP_DATA)
        number = envelope.sequence
        if number >= count:
            raise MessageDecodeError(
                f"UDP packet number {number} is out of range for a {total}-byte message "
                f"({count} packets)",
                envelope=envelope,
            )
        expected = MAX_UDP_DATA if number < count - 1 else total - MAX_UDP_DATA * (count - 1)
        if len(chunk) != expected:
            raise MessageDecodeError(
                f"UDP packet {number} of {count} holds {len(chunk)} bytes, expected {expected}",
                envelope=envelope,
            )
        if count == 1:
            return encode_envelope(envelope, truncated=False, sequence=0) + chunk
        clock = time.monotonic() if now is None else now
        self._expire(clock)
        key = (peer, envelope.request_id)
        partial = self._partials.get(key)
        if partial is not None and partial.total != total:
            self._drop(key)
            raise MessageDecodeError(
                f"UDP packet says the message is {total} bytes, earlier packets said "
                f"{partial.total}; the partial message is dropped",
                envelope=envelope,
            )
        if partial is None:
            while len(self._partials) >= self._max_partial:
                self._drop(next(iter(self._partials)))
            partial = self._partials[key] = _Partial(envelope, clock)
        if number in partial.chunks:
            return None  # a duplicate; the first copy stands
        while self._buffered + len(chunk) > self._max_buffered:
            oldest = next(iter(self._partials))
            self._drop(oldest)
            if oldest == key:
                return None
        partial.chunks[number] = chunk
        self._buffered += len(chunk)
        if len(partial.chunks) < count:
            return None
        self._drop(key)
        payload = b"".join(partial.chunks[i] for i in range(count))
        return encode_envelope(partial.envelope, truncated=False, sequence=0) + payload

    def feed(
        self,
        packet: bytes | bytearray | memoryview,
        *,
        peer: Hashable = None,
        now: float | None = None,
    ) -> Message | None:
        """Take one packet; return the decoded message once all its packets are in."""
        whole = self.feed_raw(packet, peer=peer, now=now)
        return None if whole is None else decode_message(whole)


# ---------------------------------------------------------------------------------- TCP


class TcpMessageReader:
    """Splits a TCP byte stream into messages (sans I/O: the caller reads the socket).

    A message whose envelope is bad (a length above ``MAX_MESSAGE_LENGTH``) leaves no way
    to find the next message, so the reader raises and refuses all later input: close the
    connection. A message whose body is bad is consumed; ``feed`` raises for it (after
    returning the messages before it), and the stream goes on. Servers that must answer
    each message, even undecodable ones, use ``feed_raw`` and ``decode_message``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._frames: list[bytes] = []
        self._broken: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole message."""
        return len(self._buffer)

    def feed_raw(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append ``data``; return every whole message now complete (envelope included)."""
        if self._broken is not None:
            _fail(f"the stream is unusable after an earlier error ({self._broken})")
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        start = 0
        while len(buffer) - start >= ENVELOPE_SIZE:
            (length,) = _U32.unpack_from(buffer, start + 16)
            if length > MAX_MESSAGE_LENGTH:
                self._broken = f"message length {length} above {MAX_MESSAGE_LENGTH}"
                del buffer[:]
                _fail(
                    f"message length {length} is negative or above {MAX_MESSAGE_LENGTH}; "
                    "the stream cannot be resynchronised: close the connection"
                )
            stop = start + ENVELOPE_SIZE + length
            if stop > len(buffer):
                break
            frames.append(bytes(buffer[start:stop]))
            start = stop
        if start:
            del buffer[:start]
        return frames

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Append ``data``; return every whole message now complete, decoded."""
        self._frames.extend(self.feed_raw(data))
        messages: list[Message] = []
        while self._frames:
            try:
                messages.append(decode_message(self._frames[0]))
            except CodecError:
                if messages:
                    return messages  # the bad frame raises on the next call
                del self._frames[0]
                raise
            del self._frames[0]
        return messages

"""The Handle.Net REST JSON forms (server 8.1 and later) of values, records and errors.

A value is ``{"index", "type", "data": {"format", "value"}, "ttl", "timestamp"}`` plus
``permissions`` and ``references`` when they say something (reference §2.2). Reading is
lenient where Handle.Net's own parser is (a bare string as ``data``, an index given as a
string, a short or ``"*"`` permission string, a ``true`` admin permission set); writing
produces what Handle.Net produces, so its clients (pyhandle, b2handle, hdl-admintool) read our
JSON unchanged. Every error is a ``CodecError`` with response code INVALID_VALUE (202) that
names the value index and what is wrong.

HS_PUBKEY data is written as a JWK (``format: "key"``) through ``tiangong.identity.keys``,
imported only when a key is met, so the other formats do not depend on that module. Data a
structured format cannot represent (an HS_ADMIN that does not decode, an unknown key type)
falls back to ``string`` or ``base64``, as Handle.Net does.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from tiangong.identity.errors import CodecError
from tiangong.identity.handle import codec
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.handle.values import (
    DEFAULT_PERMISSIONS,
    DEFAULT_TTL,
    HS_ADMIN,
    HS_PUBKEY,
    HS_SECKEY,
    HS_SITE,
    HS_SITE_PREFIX,
    HS_VLIST,
    SECRET_PERMISSIONS,
    AdminPermission,
    AdminRecord,
    HandleRecord,
    HandleValue,
    HashOption,
    Interface,
    InterfaceKind,
    Permission,
    ServerInfo,
    SiteInfo,
    Transport,
    TtlType,
    ValueList,
    ValueReference,
)

__all__ = [
    "error_entity",
    "http_status",
    "record_to_json",
    "value_from_json",
    "value_to_json",
]

_INVALID_VALUE: Final = int(ResponseCode.INVALID_VALUE)
# Types whose data Handle.Net writes as a site (HS_NA_DELEGATE is the legacy name).
_SITE_TYPES: Final = frozenset({HS_SITE, HS_SITE_PREFIX, "HS_SITE.6", "HS_NA_DELEGATE"})
_TEXT_CONTROLS_ALLOWED: Final = frozenset("\t\n\r\x0b\x0c")
_TRANSPORT_NAMES: Final = {t: t.name for t in Transport}
_ADMIN_BITS: Final = 12
_ISO_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


class _ValueContext:
    """Which value is being read, for error messages."""

    __slots__ = ("index",)

    def __init__(self, index: object) -> None:
        self.index = index

    def error(self, what: str) -> CodecError:
        return CodecError(f"value {self.index}: {what}", _INVALID_VALUE)


# ------------------------------------------------------------------------------ writing


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime(_ISO_FORMAT)


def _looks_like_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for char in text:
        if (char < " " and char not in _TEXT_CONTROLS_ALLOWED) or char == "\x7f":
            return None
    return text


def _binary_json(data: bytes) -> dict[str, object]:
    return {"format": "base64", "value": base64.b64encode(data).decode("ascii")}


def _plain_json(data: bytes) -> dict[str, object]:
    text = _looks_like_text(data)
    if text is None:
        return _binary_json(data)
    return {"format": "string", "value": text}


def _admin_bits(permissions: int) -> str:
    return format(permissions & 0x0FFF, f"0{_ADMIN_BITS}b")


def _reference_json(ref: ValueReference) -> dict[str, object]:
    return {"handle": ref.handle, "index": ref.index}


def _key_json(data: bytes) -> dict[str, object]:
    from tiangong.identity.keys import public_key_to_jwk  # noqa: PLC0415 - optional module

    try:
        return {"format": "key", "value": public_key_to_jwk(data)}
    except (CodecError, ValueError):
        return _binary_json(data)


def _site_json(site: SiteInfo) -> dict[str, object]:
    out: dict[str, object] = {
        "version": site.data_format_version,
        "protocolVersion": f"{site.protocol_major}.{site.protocol_minor}",
        "serialNumber": site.serial,
        "primarySite": site.primary,
        "multiPrimary": site.multi_primary,
    }
    if site.hash_option is not HashOption.BY_HANDLE:
        out["hashOption"] = int(site.hash_option)
    if site.hash_filter:
        out["hashFilter"] = site.hash_filter.decode("utf-8", errors="replace")
    out["attributes"] = [{"name": name, "value": value} for name, value in site.attributes]
    out["servers"] = [
        {
            "serverId": server.server_id,
            "address": str(server.address),
            "publicKey": _key_json(server.public_key) if server.public_key else _binary_json(b""),
            "interfaces": [
                {
                    "query": intf.query,
                    "admin": intf.admin,
                    "protocol": _TRANSPORT_NAMES[intf.transport],
                    "port": intf.port,
                }
                for intf in server.interfaces
            ],
        }
        for server in site.servers
    ]
    return out


def _data_json(value: HandleValue) -> dict[str, object]:
    kind = value.type.upper()
    try:
        if kind == HS_ADMIN:
            admin = codec.decode_admin(value.data)
            return {
                "format": "admin",
                "value": {
                    "handle": admin.admin.handle,
                    "index": admin.admin.index,
                    "permissions": _admin_bits(admin.permissions),
                },
            }
        if kind == HS_VLIST:
            members = codec.decode_value_list(value.data).members
            return {"format": "vlist", "value": [_reference_json(ref) for ref in members]}
        if kind in _SITE_TYPES:
            return {"format": "site", "value": _site_json(codec.decode_site(value.data))}
    except CodecError:
        pass  # not the structure its type promises: show the bytes instead
    if kind == HS_PUBKEY:
        return _key_json(value.data)
    return _plain_json(value.data)


def _default_permissions(value_type: str) -> Permission:
    # A secret key without an explicit "permissions" must not become publicly readable.
    return SECRET_PERMISSIONS if value_type.upper() == HS_SECKEY else DEFAULT_PERMISSIONS


def _permission_bits(permissions: Permission) -> str:
    return format(int(permissions) & 0x0F, "04b")


def value_to_json(value: HandleValue) -> dict[str, object]:
    """The REST JSON of one value, as a Handle.Net server writes it."""
    out: dict[str, object] = {
        "index": value.index,
        "type": value.type,
        "data": _data_json(value),
    }
    default = _default_permissions(value.type)
    if value.permissions != DEFAULT_PERMISSIONS or value.permissions != default:
        out["permissions"] = _permission_bits(value.permissions)
    out["ttl"] = _iso(value.ttl) if value.ttl_type is TtlType.ABSOLUTE else value.ttl
    if value.timestamp:
        out["timestamp"] = _iso(value.timestamp)
    if value.references:
        out["references"] = [_reference_json(ref) for ref in value.references]
    return out


def record_to_json(record: HandleRecord) -> dict[str, object]:
    """``{"responseCode": 1, "handle": ..., "values": [...]}`` with the values by index."""
    return {
        "responseCode": int(ResponseCode.SUCCESS),
        "handle": record.handle,
        "values": [value_to_json(v) for v in sorted(record.values, key=lambda v: v.index)],
    }


def error_entity(
    code: int, handle: str | None = None, message: str | None = None
) -> dict[str, object]:
    """The REST error body ``{"responseCode", "handle", "message"}`` (empty parts left out)."""
    out: dict[str, object] = {"responseCode": int(code)}
    if handle:
        out["handle"] = handle
    if message:
        out["message"] = message
    return out


_RESPONSE_CODES: Final = {int(rc): rc for rc in ResponseCode}
_HASH_OPTIONS: Final = {int(h): h for h in HashOption}
_TRANSPORTS: Final = {int(t): t for t in Transport}
_AUTH_ERRORS: Final = frozenset(
    {
        ResponseCode.INVALID_ADMIN,
        ResponseCode.INSUFFICIENT_PERMISSIONS,
        ResponseCode.AUTHENTICATION_FAILED,
        ResponseCode.INVALID_CREDENTIAL,
        ResponseCode.AUTHEN_TIMEOUT,
        ResponseCode.AUTHEN_ERROR,
    }
)
_STATUS: Final = {
    ResponseCode.ERROR: 500,
    ResponseCode.HANDLE_NOT_FOUND: 404,
    ResponseCode.HANDLE_ALREADY_EXISTS: 409,
    ResponseCode.INVALID_HANDLE: 400,
    ResponseCode.VALUE_ALREADY_EXISTS: 409,
    ResponseCode.INVALID_VALUE: 400,
    ResponseCode.SERVER_NOT_RESPONSIBLE: 400,
    ResponseCode.AUTHENTICATION_NEEDED: 401,
    ResponseCode.SERVER_TOO_BUSY: 503,
    ResponseCode.PROTOCOL_ERROR: 400,
    ResponseCode.OPERATION_NOT_SUPPORTED: 400,
}


def http_status(response_code: int, *, created: bool = False, resolution: bool = False) -> int:
    """The HTTP status a Handle.Net REST server answers ``response_code`` with (§2.3).

    ``created``: a success that created a handle or value (201). ``resolution``: the request
    was a GET, where "values not found" is still 200. Codes the table does not name are 400
    for other client-side codes (1xx-3xx), 403 for other 4xx authentication codes and 500
    for the rest.
    """
    code = int(response_code)
    if code == ResponseCode.SUCCESS:
        return 201 if created else 200
    if code == ResponseCode.VALUES_NOT_FOUND:
        return 200 if resolution else 400
    known = _RESPONSE_CODES.get(code)
    status = _STATUS.get(known) if known is not None else None
    if status is not None:
        return status
    if code in _AUTH_ERRORS or 400 <= code < 500:
        return 403
    if 100 <= code < 400:
        return 400
    return 500


# ------------------------------------------------------------------------------ reading


def _mapping(obj: object, ctx: _ValueContext, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ctx.error(f"{what} must be a JSON object, not {type(obj).__name__}")
    return obj


def _string(obj: object, ctx: _ValueContext, what: str) -> str:
    if not isinstance(obj, str):
        raise ctx.error(f"{what} must be a string, not {type(obj).__name__}")
    return obj


def _integer(obj: object, ctx: _ValueContext, what: str) -> int:
    # Handle.Net accepts numbers given as strings ("200" in pyhandle's HS_ADMIN).
    if isinstance(obj, bool):
        raise ctx.error(f"{what} must be an integer, not a boolean")
    if isinstance(obj, int):
        number = obj
    elif isinstance(obj, str) and obj.strip().lstrip("-").isdigit():
        number = int(obj.strip())
    else:
        raise ctx.error(f"{what} must be an integer, not {obj!r}")
    if not -(2**31) <= number < 2**31:
        raise ctx.error(f"{what} {number} does not fit in 32 bits")
    return number


def _boolean(obj: object, ctx: _ValueContext, what: str) -> bool:
    if not isinstance(obj, bool):
        raise ctx.error(f"{what} must be true or false, not {obj!r}")
    return obj


def _timestamp(obj: object, ctx: _ValueContext, what: str) -> int:
    text = _string(obj, ctx, what)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ctx.error(f"{what} {text!r} is not an ISO-8601 date and time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    seconds = int(parsed.timestamp())
    if not 0 <= seconds < 2**32:
        raise ctx.error(f"{what} {text!r} is outside the range of the protocol's Unix seconds")
    return seconds


def _reference(obj: object, ctx: _ValueContext, what: str) -> ValueReference:
    ref = _mapping(obj, ctx, what)
    handle = _string(ref.get("handle"), ctx, f"{what} handle")
    return ValueReference(handle=handle, index=_integer(ref.get("index"), ctx, f"{what} index"))


def _references(obj: object, ctx: _ValueContext, what: str) -> tuple[ValueReference, ...]:
    if not isinstance(obj, Sequence) or isinstance(obj, str | bytes):
        raise ctx.error(f"{what} must be a JSON array")
    return tuple(_reference(item, ctx, f"{what}[{n}]") for n, item in enumerate(obj))


def _admin_permissions(obj: object, ctx: _ValueContext) -> AdminPermission:
    if obj is None:
        return AdminPermission(0x07F3)
    if isinstance(obj, bool):
        return AdminPermission(0x0FFF if obj else 0)
    text = _string(obj, ctx, "admin permissions")
    if text == "*":
        return AdminPermission(0x0FFF)
    # Handle.Net reads the string right-aligned: its last character is bit 0.
    if not text or len(text) > _ADMIN_BITS or set(text) - {"0", "1"}:
        raise ctx.error(
            f"admin permissions {text!r} must be at most {_ADMIN_BITS} characters 0/1 "
            "(most significant bit first) or '*'"
        )
    return AdminPermission(int(text, 2))


def _value_permissions(obj: object, ctx: _ValueContext) -> Permission:
    text = _string(obj, ctx, "permissions")
    if text == "*":
        return Permission(0x0F)
    if not text or len(text) > 4 or set(text) - {"0", "1"}:
        raise ctx.error(
            f"permissions {text!r} must be up to 4 characters 0/1 "
            "(adminRead adminWrite publicRead publicWrite) or '*'"
        )
    return Permission(int(text, 2))


def _site_from_json(obj: object, ctx: _ValueContext) -> SiteInfo:
    site = _mapping(obj, ctx, "site")
    major, minor = 2, 10
    if "protocolVersion" in site:
        version = _string(site["protocolVersion"], ctx, "site protocolVersion")
        head, dot, tail = version.partition(".")
        if not (dot and head.isdigit() and tail.isdigit()) or int(head) > 255 or int(tail) > 255:
            raise ctx.error(f"site protocolVersion {version!r} is not major.minor")
        major, minor = int(head), int(tail)
    raw_hash = _integer(site.get("hashOption", int(HashOption.BY_HANDLE)), ctx, "site hashOption")
    hash_option = _HASH_OPTIONS.get(raw_hash)
    if hash_option is None:
        raise ctx.error(f"site hashOption {raw_hash} is not 0 (prefix), 1 (suffix) or 2 (handle)")
    attributes = []
    raw_attributes = site.get("attributes", [])
    if isinstance(raw_attributes, Mapping):
        attributes = [
            (str(k), _string(v, ctx, f"site attribute {k!r}")) for k, v in raw_attributes.items()
        ]
    else:
        if not isinstance(raw_attributes, list):
            raise ctx.error("site attributes must be a JSON array")
        for n, item in enumerate(raw_attributes):
            attribute = _mapping(item, ctx, f"site attributes[{n}]")
            attributes.append(
                (
                    _string(attribute.get("name"), ctx, f"site attributes[{n}] name"),
                    _string(attribute.get("value"), ctx, f"site attributes[{n}] value"),
                )
            )
    raw_servers = site.get("servers", site.get("serverList", []))
    if not isinstance(raw_servers, list):
        raise ctx.error("site servers must be a JSON array")
    servers = tuple(_server_from_json(item, ctx, n) for n, item in enumerate(raw_servers))
    hash_filter = _string(site.get("hashFilter", ""), ctx, "site hashFilter")
    return SiteInfo(
        servers=servers,
        serial=_integer(site.get("serialNumber", 1), ctx, "site serialNumber") & 0xFFFF,
        primary=_boolean(site.get("primarySite", True), ctx, "site primarySite"),
        multi_primary=_boolean(site.get("multiPrimary", False), ctx, "site multiPrimary"),
        hash_option=hash_option,
        hash_filter=hash_filter.encode("utf-8"),
        attributes=tuple(attributes),
        protocol_major=major,
        protocol_minor=minor,
        data_format_version=_integer(site.get("version", 1), ctx, "site version") & 0xFFFF,
    )


def _server_from_json(obj: object, ctx: _ValueContext, n: int) -> ServerInfo:
    server = _mapping(obj, ctx, f"site servers[{n}]")
    address_text = _string(server.get("address"), ctx, f"site servers[{n}] address")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError as exc:
        raise ctx.error(f"site servers[{n}] address {address_text!r} is not an IP address") from exc
    public_key = b""
    if server.get("publicKey") is not None:
        public_key = _data_from_json(server["publicKey"], ctx)
    raw_interfaces = server.get("interfaces", server.get("interfaceList", []))
    if not isinstance(raw_interfaces, list):
        raise ctx.error(f"site servers[{n}] interfaces must be a JSON array")
    interfaces = []
    for m, item in enumerate(raw_interfaces):
        what = f"site servers[{n}] interfaces[{m}]"
        intf = _mapping(item, ctx, what)
        query = _boolean(intf.get("query", False), ctx, f"{what} query")
        admin = _boolean(intf.get("admin", False), ctx, f"{what} admin")
        # Neither query nor admin: an interface taken out of service (CNRI's type 0).
        kind = (
            InterfaceKind.ADMIN_AND_QUERY
            if query and admin
            else (
                InterfaceKind.QUERY
                if query
                else (InterfaceKind.ADMIN if admin else InterfaceKind.OUT_OF_SERVICE)
            )
        )
        protocol = intf.get("protocol")
        if isinstance(protocol, str) and protocol.upper() in Transport.__members__:
            transport = Transport[protocol.upper()]
        else:
            number = _integer(protocol, ctx, f"{what} protocol")
            found = _TRANSPORTS.get(number)
            if found is None:
                raise ctx.error(f"{what} protocol {protocol!r} is not UDP, TCP, HTTP or HTTPS")
            transport = found
        port = _integer(intf.get("port"), ctx, f"{what} port")
        interfaces.append(Interface(kind=kind, transport=transport, port=port))
    return ServerInfo(
        server_id=_integer(server.get("serverId", 1), ctx, f"site servers[{n}] serverId"),
        address=address,
        interfaces=tuple(interfaces),
        public_key=public_key,
    )


def _data_from_json(obj: object, ctx: _ValueContext) -> bytes:
    if obj is None:
        return b""
    if isinstance(obj, str):
        return obj.encode("utf-8")
    data = _mapping(obj, ctx, "data")
    fmt = _string(data.get("format"), ctx, "data format").lower()
    content = data.get("value")
    try:
        return _decode_format(fmt, content, ctx)
    except CodecError as exc:
        if str(exc).startswith(f"value {ctx.index}:"):
            raise
        raise ctx.error(f"{fmt} data: {exc}") from exc


def _decode_format(fmt: str, content: object, ctx: _ValueContext) -> bytes:
    if fmt == "string":
        return _string(content, ctx, "string data").encode("utf-8")
    if fmt == "base64":
        text = _string(content, ctx, "base64 data")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ctx.error(f"data is not valid base64: {text[:40]!r}") from exc
    if fmt == "hex":
        text = _string(content, ctx, "hex data")
        try:
            return bytes.fromhex(text)
        except ValueError as exc:
            raise ctx.error(f"data is not valid hex: {text[:40]!r}") from exc
    if fmt == "admin":
        admin = _mapping(content, ctx, "admin data")
        return codec.encode_admin(
            AdminRecord(
                admin=ValueReference(
                    handle=_string(admin.get("handle"), ctx, "admin handle"),
                    index=_integer(admin.get("index"), ctx, "admin index"),
                ),
                permissions=_admin_permissions(admin.get("permissions"), ctx),
            )
        )
    if fmt == "vlist":
        return codec.encode_value_list(ValueList(members=_references(content, ctx, "vlist")))
    if fmt == "site":
        return codec.encode_site(_site_from_json(content, ctx))
    if fmt == "key":
        from tiangong.identity.keys import public_key_from_jwk  # noqa: PLC0415 - optional module

        jwk = _mapping(content, ctx, "key data")
        try:
            return public_key_from_jwk(jwk)
        except (ValueError, KeyError, TypeError) as exc:
            raise ctx.error(f"key data is not a usable JWK: {exc}") from exc
    raise ctx.error(f"unknown data format {fmt!r} (string, base64, hex, admin, vlist, site or key)")


def value_from_json(obj: Mapping[str, object], *, now: int) -> HandleValue:
    """Read one value from its REST JSON; ``now`` stamps a value without a timestamp."""
    if not isinstance(obj, Mapping):
        raise CodecError(f"a value must be a JSON object, not {type(obj).__name__}", _INVALID_VALUE)
    ctx = _ValueContext(obj.get("index", "?"))
    index = _integer(obj.get("index"), ctx, "index")
    ctx.index = index
    value_type = _string(obj.get("type", ""), ctx, "type")
    data = _data_from_json(obj.get("data"), ctx)
    ttl: int = DEFAULT_TTL
    ttl_type = TtlType.RELATIVE
    raw_ttl = obj.get("ttl")
    if isinstance(raw_ttl, str) and not raw_ttl.strip().lstrip("-").isdigit():
        ttl, ttl_type = _timestamp(raw_ttl, ctx, "ttl"), TtlType.ABSOLUTE
        if ttl >= 2**31:
            raise ctx.error(f"absolute ttl {raw_ttl!r} is past 2038, which 32-bit ttl cannot hold")
    elif raw_ttl is not None:
        ttl = _integer(raw_ttl, ctx, "ttl")
    timestamp = now
    if obj.get("timestamp") is not None:
        timestamp = _timestamp(obj["timestamp"], ctx, "timestamp")
    permissions = _default_permissions(value_type)
    if obj.get("permissions") is not None:
        permissions = _value_permissions(obj["permissions"], ctx)
    references: tuple[ValueReference, ...] = ()
    if obj.get("references") is not None:
        references = _references(obj["references"], ctx, "references")
    return HandleValue(
        index=index,
        type=value_type,
        data=data,
        ttl=ttl,
        ttl_type=ttl_type,
        timestamp=timestamp,
        permissions=permissions,
        references=references,
    )

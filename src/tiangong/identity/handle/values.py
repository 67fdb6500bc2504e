"""Handle values and the reserved value types, as data (no I/O, no encoding).

An identifier record is a list of *handle values* (RFC 3651 §3): each has an index, a type, raw
data bytes, a TTL, a timestamp, read/write permissions and references to other values. Reserved
types give the data a structure: ``HS_ADMIN`` (who may change the record), ``HS_VLIST`` (a group
of admins), ``HS_SITE`` (where a prefix's servers are), ``HS_SECKEY``/``HS_PUBKEY`` (the keys an
admin proves itself with). The binary encodings of those structures live in ``codec``; the REST
JSON forms in ``json_format``.

Handle names are compared case-insensitively in their ASCII letters, as the Handle.Net server
does by default; ``handle_key`` gives the form stores index by.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

from tiangong.identity.errors import HandleSyntaxError

MAX_HANDLE_LENGTH = 2048
DEFAULT_TTL = 86_400

# Reserved value types (RFC 3651 §3.2 and CNRI's extensions; HS_CERT/HS_SIGNATURE from v9 / IDIS).
HS_ADMIN = "HS_ADMIN"
HS_VLIST = "HS_VLIST"
HS_SITE = "HS_SITE"
HS_SITE_PREFIX = "HS_SITE.PREFIX"
HS_SERV = "HS_SERV"
HS_SERV_PREFIX = "HS_SERV.PREFIX"
HS_SECKEY = "HS_SECKEY"
HS_PUBKEY = "HS_PUBKEY"
HS_CERT = "HS_CERT"
HS_SIGNATURE = "HS_SIGNATURE"
HS_ALIAS = "HS_ALIAS"
HS_NAMESPACE = "HS_NAMESPACE"
URL = "URL"

PREFIX_HANDLE_NAMESPACE = "0.NA"


class Permission(IntFlag):
    """Read/write permissions of one value (the permissions byte of the binary record)."""

    NONE = 0
    PUBLIC_WRITE = 0x01
    PUBLIC_READ = 0x02
    ADMIN_WRITE = 0x04
    ADMIN_READ = 0x08


DEFAULT_PERMISSIONS = Permission.ADMIN_READ | Permission.ADMIN_WRITE | Permission.PUBLIC_READ
SECRET_PERMISSIONS = Permission.ADMIN_READ | Permission.ADMIN_WRITE  # HS_SECKEY: no public read


class AdminPermission(IntFlag):
    """What an administrator named in HS_ADMIN may do (the 16-bit permission field)."""

    NONE = 0
    ADD_HANDLE = 0x0001
    DELETE_HANDLE = 0x0002
    ADD_PREFIX = 0x0004  # "ADD_NA": create derived prefixes
    DELETE_PREFIX = 0x0008
    MODIFY_VALUE = 0x0010
    REMOVE_VALUE = 0x0020
    ADD_VALUE = 0x0040
    MODIFY_ADMIN = 0x0080
    REMOVE_ADMIN = 0x0100
    ADD_ADMIN = 0x0200
    READ_VALUE = 0x0400  # authorized read of values without public read
    LIST_HANDLES = 0x0800


ALL_ADMIN_PERMISSIONS = AdminPermission(0x0FFF)
# "011111110011": what pyhandle and hdl-admintool give a handle's owner by default.
DEFAULT_ADMIN_PERMISSIONS = AdminPermission(0x07F3)


class TtlType(IntEnum):
    """Whether ``ttl`` is a number of seconds (relative) or a Unix time (absolute)."""

    RELATIVE = 0
    ABSOLUTE = 1


@dataclass(frozen=True, slots=True)
class ValueReference:
    """A pointer to one value of a handle: ``index:handle``."""

    handle: str
    index: int

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"

    @classmethod
    def parse(cls, text: str) -> ValueReference:
        """Parse ``300:0.NA/88.100.1`` (the form used for admin identities)."""
        index, sep, handle = text.partition(":")
        if not sep or not index.isdigit() or not handle:
            raise HandleSyntaxError(f"{text!r} is not index:handle (for example 300:0.NA/88.100.1)")
        return cls(handle=handle, index=int(index))


@dataclass(frozen=True, slots=True)
class HandleValue:
    """One value of a handle record (RFC 3651 §3.1)."""

    index: int
    type: str
    data: bytes
    ttl: int = DEFAULT_TTL
    ttl_type: TtlType = TtlType.RELATIVE
    timestamp: int = 0  # Unix seconds of the last change
    permissions: Permission = DEFAULT_PERMISSIONS
    references: tuple[ValueReference, ...] = ()

    @property
    def public_read(self) -> bool:
        """Whether anyone may read this value."""
        # int.__and__: IntFlag's own operator is Python code, and this runs per value served.
        return bool(int.__and__(self.permissions, 0x02))

    def type_matches(self, wanted: str) -> bool:
        """Whether this value passes the type filter ``wanted`` (case-insensitive).

        An exact type matches, and so do its subtypes: ``HS_SITE`` and ``HS_SITE.`` both match
        ``HS_SITE.PREFIX``.
        """
        mine = self.type.upper()
        want = wanted.upper()
        if want.endswith("."):
            return mine.startswith(want) or mine == want[:-1]
        return mine == want or mine.startswith(want + ".")


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """The data of an HS_ADMIN value: ``admin`` may do ``permissions`` on this handle."""

    admin: ValueReference
    permissions: AdminPermission = DEFAULT_ADMIN_PERMISSIONS


@dataclass(frozen=True, slots=True)
class ValueList:
    """The data of an HS_VLIST value: a group of admin identities (possibly other groups)."""

    members: tuple[ValueReference, ...]


class InterfaceKind(IntEnum):
    """What a server interface accepts (HS_SITE interface type)."""

    OUT_OF_SERVICE = 0
    ADMIN = 1
    QUERY = 2
    ADMIN_AND_QUERY = 3


class Transport(IntEnum):
    """HS_SITE interface protocol codes."""

    UDP = 0
    TCP = 1
    HTTP = 2
    HTTPS = 3


@dataclass(frozen=True, slots=True)
class Interface:
    """One listening interface of a server in a site."""

    kind: InterfaceKind
    transport: Transport
    port: int

    @property
    def query(self) -> bool:
        """Whether the interface answers resolutions."""
        return self.kind in (InterfaceKind.QUERY, InterfaceKind.ADMIN_AND_QUERY)

    @property
    def admin(self) -> bool:
        """Whether the interface takes administrative requests."""
        return self.kind in (InterfaceKind.ADMIN, InterfaceKind.ADMIN_AND_QUERY)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """One server of a site: its id, address, public key (HS_PUBKEY encoding) and interfaces."""

    server_id: int
    address: IPAddress
    interfaces: tuple[Interface, ...]
    public_key: bytes = b""

    def interface(self, transport: Transport) -> Interface | None:
        """The first interface of this server on ``transport``, if any."""
        return next((i for i in self.interfaces if i.transport is transport), None)


class HashOption(IntEnum):
    """How a client picks the server within a multi-server site."""

    BY_PREFIX = 0
    BY_SUFFIX = 1
    BY_HANDLE = 2


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """The data of an HS_SITE value (RFC 3651 §3.2.2): a group of servers serving prefixes."""

    servers: tuple[ServerInfo, ...]
    serial: int = 1
    primary: bool = True
    multi_primary: bool = False
    hash_option: HashOption = HashOption.BY_HANDLE
    hash_filter: bytes = b""
    attributes: tuple[tuple[str, str], ...] = ()
    protocol_major: int = 2
    protocol_minor: int = 10
    data_format_version: int = 1

    def attribute(self, name: str) -> str | None:
        """The value of the site attribute ``name``, if it has one."""
        return next((v for k, v in self.attributes if k == name), None)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """The data of an HS_PUBKEY value, still in its algorithm's own form.

    ``key_type`` is ``RSA_PUB_KEY``, ``DSA_PUB_KEY``, ``DH_PUB_KEY`` or IDIS's ``SM2_PUB_KEY``;
    ``fields`` are the algorithm's big-endian fields in wire order (RSA: exponent, modulus) or, for
    SM2, one field with the PEM text of the X.509 SubjectPublicKeyInfo.
    """

    key_type: str
    fields: tuple[bytes, ...]
    flags: int = 0


@dataclass(frozen=True, slots=True)
class HandleRecord:
    """A handle and its values (sorted by index when it comes from a store)."""

    handle: str
    values: tuple[HandleValue, ...] = field(default_factory=tuple)

    def value(self, index: int) -> HandleValue | None:
        """The value at ``index``, if any."""
        return next((v for v in self.values if v.index == index), None)

    def of_type(self, wanted: str) -> list[HandleValue]:
        """The values whose type matches ``wanted`` (see ``HandleValue.type_matches``)."""
        return [v for v in self.values if v.type_matches(wanted)]


def validate_handle(handle: str) -> str:
    """Return ``handle`` if it is a usable handle name, else raise ``HandleSyntaxError``."""
    if not handle:
        raise HandleSyntaxError("empty handle")
    encoded = handle.encode("utf-8", errors="strict")
    if len(encoded) > MAX_HANDLE_LENGTH:
        raise HandleSyntaxError(f"handle is {len(encoded)} bytes; at most {MAX_HANDLE_LENGTH}")
    if _CONTROL.search(handle) is not None:
        raise HandleSyntaxError(f"handle {handle!r} contains control characters")
    return handle


# Checked on every request a node answers: one regex scan instead of a Python loop per character.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def handle_key(handle: str) -> str:
    """The case-insensitive key of a handle (ASCII letters upper-cased, the rest kept)."""
    return handle.translate(_ASCII_UPPER)


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def split_handle(handle: str) -> tuple[str, str]:
    """``"88.100.1/PUMP-1"`` → ``("88.100.1", "PUMP-1")``; a name without ``/`` is a prefix."""
    prefix, _, suffix = handle.partition("/")
    return prefix, suffix


def prefix_of(handle: str) -> str:
    """The prefix a handle lives under; for a prefix handle ``0.NA/88.100.1`` it is ``0.NA``."""
    return split_handle(handle)[0]


def prefix_handle(prefix: str) -> str:
    """``"88.100.1"`` → ``"0.NA/88.100.1"`` (the handle that describes the prefix)."""
    if prefix.upper().startswith(PREFIX_HANDLE_NAMESPACE + "/"):
        return prefix
    return f"{PREFIX_HANDLE_NAMESPACE}/{prefix}"


def is_prefix_handle(handle: str) -> bool:
    """Whether ``handle`` is a prefix handle (``0.NA/...``)."""
    return handle_key(handle).startswith(PREFIX_HANDLE_NAMESPACE + "/")


def prefix_from_prefix_handle(handle: str) -> str:
    """``"0.NA/88.100.1"`` → ``"88.100.1"``."""
    if not is_prefix_handle(handle):
        raise HandleSyntaxError(f"{handle!r} is not a prefix handle (0.NA/<prefix>)")
    return handle.split("/", 1)[1]


def parent_prefixes(prefix: str) -> list[str]:
    """``"88.100.1"`` → ``["88.100.1", "88.100", "88"]``: from the most to the least specific.

    A derived prefix (``88.100.1``) is delegated by the node homed for its parent (``88.100``),
    which is how the root and secondary nodes refer a client downwards.
    """
    parts = prefix.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]

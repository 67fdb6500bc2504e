"""Modbus register maps, sans-I/O: values ⇄ 16-bit registers, and read planning.

A Modbus device exposes numbered 16-bit registers (holding, input) and bits (coils, discrete
inputs). A value may span one to four registers, and vendors disagree about order: the *word
order* says whether the first register holds the most significant 16 bits ("big", the Modbus
convention) or the least ("little", often called word-swapped); the *byte order* says whether
each register's two bytes are big-endian (the protocol's own) or swapped. Engineering values are
``raw * scale + offset``.

``plan_reads`` groups the points of one device into as few requests as the protocol allows
(at most 125 registers or 2000 bits per read), merging points whose registers are contiguous or
separated by a small gap, because one request per poll costs one round trip instead of one per
point.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MAX_BITS_PER_READ",
    "MAX_REGISTERS_PER_READ",
    "ReadRequest",
    "RegisterPoint",
    "decode_value",
    "encode_value",
    "plan_reads",
    "register_count",
]

RegisterType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"
]
Table = Literal["holding", "input", "coil", "discrete"]
Order = Literal["big", "little"]

#: Protocol limits of one read request (Modbus application protocol v1.1b3, 6.1-6.4).
MAX_REGISTERS_PER_READ: Final = 125
MAX_BITS_PER_READ: Final = 2000

_FORMAT: Final[dict[str, tuple[str, int]]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}


def register_count(value_type: RegisterType) -> int:
    """How many registers (or bits, for ``bool``) a value of this type occupies."""
    return 1 if value_type == "bool" else _FORMAT[value_type][1]


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    """Where and how one value lives on a device.

    Attributes:
        key: the caller's name for the value (a thing-model property).
        table: which address space.
        address: first register or bit (0-based, as on the wire).
        value_type: encoding.
        word_order: order of 16-bit words in multi-register values.
        byte_order: order of the bytes inside each register.
        scale: engineering = raw * scale + offset.
        offset: see ``scale``.
    """

    key: str
    table: Table
    address: int
    value_type: RegisterType
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def count(self) -> int:
        """Registers (or bits) occupied."""
        return register_count(self.value_type)


def _to_bytes(registers: Sequence[int], word_order: Order, byte_order: Order) -> bytes:
    words = list(registers) if word_order == "big" else list(reversed(registers))
    out = bytearray()
    for word in words:
        pair = word.to_bytes(2, "big")
        out += pair if byte_order == "big" else pair[::-1]
    return bytes(out)


def decode_value(point: RegisterPoint, raw: Sequence[int] | Sequence[bool]) -> int | float | bool:
    """The engineering value of ``point`` from its registers (or its bit).

    Raises:
        ValueError: wrong number of registers, or a register outside 0..65535.
    """
    if point.value_type == "bool":
        if len(raw) != 1:
            raise ValueError(f"{point.key}: a bit point takes one bit, got {len(raw)}")
        return bool(raw[0])
    fmt, count = _FORMAT[point.value_type]
    if len(raw) != count:
        raise ValueError(f"{point.key}: {point.value_type} takes {count} registers, got {len(raw)}")
    registers = [int(r) for r in raw]
    if any(not 0 <= r <= 0xFFFF for r in registers):
        raise ValueError(f"{point.key}: register values must be within 0..65535")
    (value,) = struct.unpack(">" + fmt, _to_bytes(registers, point.word_order, point.byte_order))
    if fmt not in "fd" and point.scale == 1 and float(point.offset).is_integer():
        # Counters, states and enum indexes stay integers (and 64-bit counters stay exact).
        return int(value) + int(point.offset)
    return float(value) * point.scale + point.offset


def encode_value(point: RegisterPoint, value: float | bool) -> list[int] | list[bool]:
    """The registers (or bit) that write engineering ``value`` to ``point``.

    Raises:
        ValueError: the value does not fit the point's type after scaling.
    """
    if point.value_type == "bool":
        return [bool(value)]
    fmt, _ = _FORMAT[point.value_type]
    if point.scale == 0:
        raise ValueError(f"{point.key}: scale 0 cannot be written")
    raw: float | int
    if isinstance(value, int) and point.scale == 1 and point.offset == 0 and fmt not in "fd":
        raw = value  # exact: a 64-bit counter must not round through a float
    else:
        raw = (float(value) - point.offset) / point.scale
        if not math.isfinite(raw):
            raise ValueError(f"{point.key}: {value!r} is not a finite number")
        if fmt not in "fd":
            raw = round(raw)
    try:
        packed = struct.pack(">" + fmt, raw)
    except struct.error as exc:
        raise ValueError(f"{point.key}: {value!r} does not fit {point.value_type}") from exc
    pairs = [packed[i : i + 2] for i in range(0, len(packed), 2)]
    words = [int.from_bytes(p if point.byte_order == "big" else p[::-1], "big") for p in pairs]
    return words if point.word_order == "big" else list(reversed(words))


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read request and the points it covers."""

    table: Table
    address: int
    count: int
    points: tuple[RegisterPoint, ...]

    def values(self, raw: Sequence[int] | Sequence[bool]) -> dict[str, int | float | bool]:
        """Decode every point of this request from the registers (or bits) read.

        Raises:
            ValueError: the reply is shorter than the request.
        """
        if len(raw) < self.count:
            raise ValueError(f"short reply: {len(raw)} of {self.count} values")
        out: dict[str, int | float | bool] = {}
        for point in self.points:
            start = point.address - self.address
            out[point.key] = decode_value(point, raw[start : start + point.count])
        return out


def plan_reads(points: Sequence[RegisterPoint], *, max_gap: int = 8) -> list[ReadRequest]:
    """Group points into as few read requests as the protocol allows.

    Per table, by address, merging across gaps of at most ``max_gap`` registers and never
    beyond the protocol's per-read limit.
    """
    requests: list[ReadRequest] = []
    for table in ("holding", "input", "coil", "discrete"):
        members = sorted((p for p in points if p.table == table), key=lambda p: p.address)
        limit = MAX_BITS_PER_READ if table in ("coil", "discrete") else MAX_REGISTERS_PER_READ
        group: list[RegisterPoint] = []
        start = end = 0
        for point in members:
            point_end = point.address + point.count
            if group and point.address - end <= max_gap and point_end - start <= limit:
                group.append(point)
                end = max(end, point_end)
                continue
            if group:
                requests.append(ReadRequest(table, start, end - start, tuple(group)))
            group, start, end = [point], point.address, point_end
        if group:
            requests.append(ReadRequest(table, start, end - start, tuple(group)))
    return requests

"""Modbus register maps of the simulated machines, and their codec (sans-I/O).

The map is data, not code: for each machine kind, each thing-model property has a table, an
address, a type, a word and byte order, a scale and an offset, declared with the edge gateway's
own ``ModbusPoint`` model, so the gateway configuration for the simulated plant is these very
points. Command coils (write 1 to execute) are declared beside them.

Like real PLCs, the maps deliberately mix encodings, so a gateway's decoding is exercised:

=========== =========== ===================================================================
kind        tables      encodings
=========== =========== ===================================================================
cnc         input       state uint16 (enum index), spindle_speed float32 (ABCD), spindle_load
                        uint16 x0.01, feed_rate uint32 x0.1, power float32 big word order
                        (ABCD), spindle_temp int16 x0.1, vibration uint16 x0.001, parts
                        counters uint32
            holding     feed_override uint16 x0.1 (writable)
            discrete    door_closed
            coil        reset_counters (command)
compressor  holding     everything, like older controllers: state uint16, pressure int16
                        x0.01, power float32 little word order ("word swapped", CDAB),
                        discharge_temp int16 x0.1, run_hours float64, pressure_setpoint uint16
                        x0.01 (writable)
            coil        enabled (writable)
meter       input       active_power int32 x0.01 (signed: export is negative), energy uint64
                        x0.001 little word order, voltage uint16 x0.1 little *byte* order
                        (BADC), current float32, power_factor int16 x0.001
pump        input       state, flow uint16 x0.1, pressure uint16 x0.001, power float32 little
                        word order, motor_temp int16 x0.1, vibration uint16 x0.001
            holding     speed_setpoint uint16 x0.1 (writable)
            coil        start, stop (commands)
line        input       state, line_speed uint16 x0.01, good_count int64, reject_count uint32
            coil        reset_counters (command)
turbofan    input       state, engine and cycle uint16, the 3 settings and 21 sensors float32
=========== =========== ===================================================================

Addresses are 0-based as on the wire and contiguous within each table of a kind, so a gateway
reads a whole kind's table in one request. Enum properties are their index in the thing model's
``enum`` list; booleans are coils (writable) or discrete inputs (read-only).

The codec: ``encode`` turns an engineering value into registers, ``decode`` back. A value is
packed big-endian (most significant byte first) into 16-bit words, most significant word first;
``word_order = "little"`` reverses the words, ``byte_order = "little"`` swaps the two bytes of
each word. Raw = (value - offset) / scale, rounded for integer types and saturated at the
type's limits, as a PLC's conversion block does. It is deliberately written apart from the
gateway's decoder: a simulator that shared the gateway's codec could not catch its mistakes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from tiangong.edge.config import ModbusPoint, ModbusType

__all__ = [
    "REGISTER_MAPS",
    "CommandCoil",
    "RegisterMap",
    "Table",
    "decode",
    "encode",
    "register_count",
]

Table = Literal["holding", "input", "coil", "discrete"]

#: struct format (big-endian) and register count of each register type.
_FORMATS: Final[dict[str, tuple[str, int]]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
_INTEGER_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def register_count(value_type: ModbusType) -> int:
    """Registers a value of this type occupies (1 bit for ``bool``)."""
    return 1 if value_type == "bool" else _FORMATS[value_type][1]


def encode(point: ModbusPoint, value: float | bool) -> list[int] | list[bool]:
    """The registers (or the bit) holding engineering ``value`` at ``point``."""
    if point.type == "bool":
        return [bool(value)]
    fmt, _ = _FORMATS[point.type]
    raw = (float(value) - point.offset) / point.scale
    packed: bytes
    if point.type in _INTEGER_LIMITS:
        low, high = _INTEGER_LIMITS[point.type]
        packed = struct.pack(">" + fmt, min(max(round(raw), low), high))
    else:
        packed = struct.pack(">" + fmt, raw)
    words = [packed[i : i + 2] for i in range(0, len(packed), 2)]
    if point.word_order == "little":
        words.reverse()
    if point.byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def decode(point: ModbusPoint, raw: Sequence[int] | Sequence[bool]) -> float | int | bool:
    """The engineering value of ``point`` from its registers (or its bit).

    Integer types without scaling decode to ``int`` (counters, enum indexes), others to float.

    Raises:
        ValueError: the wrong number of registers.
    """
    if point.type == "bool":
        if len(raw) != 1:
            raise ValueError(f"{point.property}: one bit expected, got {len(raw)}")
        return bool(raw[0])
    fmt, count = _FORMATS[point.type]
    if len(raw) != count:
        raise ValueError(f"{point.property}: {count} registers expected, got {len(raw)}")
    words = [int(r).to_bytes(2, "big") for r in raw]
    if point.byte_order == "little":
        words = [w[::-1] for w in words]
    if point.word_order == "little":
        words.reverse()
    (number,) = struct.unpack(">" + fmt, b"".join(words))
    if isinstance(number, int) and point.scale == 1.0 and point.offset == 0.0:
        return number
    return float(number) * point.scale + point.offset


@dataclass(frozen=True, slots=True)
class CommandCoil:
    """A command executed by writing 1 to a coil; the PLC clears the coil on its next scan.

    Attributes:
        command: the thing-model command id.
        address: the coil.
    """

    command: str
    address: int


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where a machine kind keeps its properties and commands.

    Attributes:
        kind: the thing model id.
        points: one per property of the thing model.
        commands: command coils.
    """

    kind: str
    points: tuple[ModbusPoint, ...]
    commands: tuple[CommandCoil, ...] = ()

    def point(self, prop: str) -> ModbusPoint:
        """The point of a property.

        Raises:
            KeyError: the map has no such property.
        """
        for point in self.points:
            if point.property == prop:
                return point
        raise KeyError(prop)

    def span(self, table: Table) -> tuple[int, int] | None:
        """First address and count of the table's contiguous block (None: table unused)."""
        cells = [(p.address, register_count(p.type)) for p in self.points if p.table == table] + [
            (c.address, 1) for c in self.commands if table == "coil"
        ]
        if not cells:
            return None
        first = min(a for a, _ in cells)
        end = max(a + n for a, n in cells)
        return first, end - first


def _p(
    prop: str,
    table: Table,
    address: int,
    value_type: ModbusType,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    word_order: Literal["big", "little"] = "big",
    byte_order: Literal["big", "little"] = "big",
    writable: bool = False,
) -> ModbusPoint:
    return ModbusPoint(
        property=prop,
        table=table,
        address=address,
        type=value_type,
        scale=scale,
        offset=offset,
        word_order=word_order,
        byte_order=byte_order,
        writable=writable,
    )


REGISTER_MAPS: Final[dict[str, RegisterMap]] = {
    "cnc": RegisterMap(
        kind="cnc",
        points=(
            _p("state", "input", 0, "uint16"),
            _p("spindle_speed", "input", 1, "float32"),
            _p("spindle_load", "input", 3, "uint16", scale=0.01),
            _p("feed_rate", "input", 4, "uint32", scale=0.1),
            _p("power", "input", 6, "float32"),
            _p("spindle_temp", "input", 8, "int16", scale=0.1),
            _p("vibration", "input", 9, "uint16", scale=0.001),
            _p("parts_good", "input", 10, "uint32"),
            _p("parts_bad", "input", 12, "uint32"),
            _p("feed_override", "holding", 0, "uint16", scale=0.1, writable=True),
            _p("door_closed", "discrete", 0, "bool"),
        ),
        commands=(CommandCoil("reset_counters", 0),),
    ),
    "compressor": RegisterMap(
        kind="compressor",
        points=(
            _p("state", "holding", 0, "uint16"),
            _p("pressure", "holding", 1, "int16", scale=0.01),
            _p("power", "holding", 2, "float32", word_order="little"),
            _p("discharge_temp", "holding", 4, "int16", scale=0.1),
            _p("run_hours", "holding", 5, "float64"),
            _p("pressure_setpoint", "holding", 9, "uint16", scale=0.01, writable=True),
            _p("enabled", "coil", 0, "bool", writable=True),
        ),
    ),
    "meter": RegisterMap(
        kind="meter",
        points=(
            _p("active_power", "input", 0, "int32", scale=0.01),
            _p("energy", "input", 2, "uint64", scale=0.001, word_order="little"),
            _p("voltage", "input", 6, "uint16", scale=0.1, byte_order="little"),
            _p("current", "input", 7, "float32"),
            _p("power_factor", "input", 9, "int16", scale=0.001),
        ),
    ),
    "pump": RegisterMap(
        kind="pump",
        points=(
            _p("state", "input", 0, "uint16"),
            _p("flow", "input", 1, "uint16", scale=0.1),
            _p("pressure", "input", 2, "uint16", scale=0.001),
            _p("power", "input", 3, "float32", word_order="little"),
            _p("motor_temp", "input", 5, "int16", scale=0.1),
            _p("vibration", "input", 6, "uint16", scale=0.001),
            _p("speed_setpoint", "holding", 0, "uint16", scale=0.1, writable=True),
        ),
        commands=(CommandCoil("start", 0), CommandCoil("stop", 1)),
    ),
    "line": RegisterMap(
        kind="line",
        points=(
            _p("state", "input", 0, "uint16"),
            _p("line_speed", "input", 1, "uint16", scale=0.01),
            _p("good_count", "input", 2, "int64"),
            _p("reject_count", "input", 6, "uint32"),
        ),
        commands=(CommandCoil("reset_counters", 0),),
    ),
    "turbofan": RegisterMap(
        kind="turbofan",
        points=(
            _p("state", "input", 0, "uint16"),
            _p("engine", "input", 1, "uint16"),
            _p("cycle", "input", 2, "uint16"),
            *(_p(f"setting{i}", "input", 1 + 2 * i, "float32") for i in range(1, 4)),
            *(_p(f"s{i}", "input", 7 + 2 * i, "float32") for i in range(1, 22)),
        ),
    ),
}


def _check_maps() -> None:
    """The maps' own invariants, checked at import: a broken map must not serve a wrong value."""
    for kind, register_map in REGISTER_MAPS.items():
        assert register_map.kind == kind
        for table in ("holding", "input", "coil", "discrete"):
            cells: list[int] = []
            for point in register_map.points:
                if point.table == table:
                    cells.extend(range(point.address, point.address + register_count(point.type)))
            if table == "coil":
                cells.extend(c.address for c in register_map.commands)
            if len(set(cells)) != len(cells):
                raise ValueError(f"register map {kind}: overlapping {table} addresses")
            if cells and sorted(cells) != list(range(min(cells), max(cells) + 1)):
                raise ValueError(f"register map {kind}: {table} addresses are not contiguous")
        for point in register_map.points:
            if point.scale == 0 or not math.isfinite(point.scale):
                raise ValueError(f"register map {kind}.{point.property}: bad scale")


_check_maps()

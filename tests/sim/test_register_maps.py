"""Register maps and their codec, in memory: the maps match the thing models, values round-trip,
and the encoding agrees with pymodbus's own converter (an independent decoder)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from tiangong.edge.config import ModbusPoint
from tiangong.platform.model import DataType
from tiangong.sim.machines import KINDS
from tiangong.sim.register_maps import REGISTER_MAPS, decode, encode, register_count
from tiangong.sim.thing_models import THING_MODELS

DATATYPE = ModbusClientMixin.DATATYPE
LIMITS = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def test_every_kind_has_a_map_of_exactly_its_thing_model() -> None:
    assert set(REGISTER_MAPS) == set(KINDS) == set(THING_MODELS)
    for kind, register_map in REGISTER_MAPS.items():
        model = THING_MODELS[kind]
        assert [p.property for p in register_map.points] == [p.id for p in model.properties]
        for point in register_map.points:
            spec = model.property(point.property)
            assert spec is not None
            assert point.writable == spec.writable, point.property
            assert (point.type == "bool") == (spec.type is DataType.BOOL)
            if spec.type is DataType.ENUM:
                assert point.type == "uint16"
                assert point.scale == 1.0
        assert {c.command for c in register_map.commands} == {c.id for c in model.commands}
        assert set(KINDS[kind].writable) == {p.id for p in model.properties if p.writable}
        assert set(KINDS[kind].commands) == {c.id for c in model.commands}


def test_thing_model_ranges_fit_their_registers() -> None:
    """A value anywhere in the property's range encodes without saturating."""
    for kind, register_map in REGISTER_MAPS.items():
        for point in register_map.points:
            spec = THING_MODELS[kind].property(point.property)
            assert spec is not None
            if point.type not in LIMITS:
                continue
            low, high = LIMITS[point.type]
            if spec.type is DataType.ENUM:
                assert spec.enum is not None
                assert len(spec.enum) - 1 <= high
                continue
            for bound in (spec.min, spec.max):
                if bound is not None:
                    raw = (bound - point.offset) / point.scale
                    assert low <= raw <= high, (kind, point.property, bound)


def test_the_maps_use_the_realistic_mix() -> None:
    points = [p for m in REGISTER_MAPS.values() for p in m.points]
    assert {p.type for p in points} == {
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float32",
        "float64",
        "bool",
    }
    assert {p.table for p in points} == {"holding", "input", "coil", "discrete"}
    power = {
        kind: m.point("power").word_order
        for kind, m in REGISTER_MAPS.items()
        if kind in ("cnc", "compressor")
    }
    assert power == {"cnc": "big", "compressor": "little"}
    assert REGISTER_MAPS["meter"].point("voltage").byte_order == "little"
    assert REGISTER_MAPS["cnc"].span("input") == (0, 14)


@pytest.mark.parametrize(
    ("value_type", "registers", "word_order", "byte_order", "expected"),
    [
        ("float32", [0x4148, 0x0000], "big", "big", 12.5),  # ABCD
        ("float32", [0x0000, 0x4148], "little", "big", 12.5),  # CDAB, word swapped
        ("float32", [0x4841, 0x0000], "big", "little", 12.5),  # BADC, byte swapped
        ("float32", [0x0000, 0x4841], "little", "little", 12.5),  # DCBA
        ("uint32", [0x0001, 0x0002], "big", "big", 65538),
        ("uint32", [0x0002, 0x0001], "little", "big", 65538),
        ("int16", [0xFFFE], "big", "big", -2),
        ("uint16", [0x3412], "big", "little", 0x1234),
        ("uint64", [4, 3, 2, 1], "little", "big", (1 << 48) | (2 << 32) | (3 << 16) | 4),
    ],
)
def test_decode_by_hand(
    value_type: str, registers: list[int], word_order: str, byte_order: str, expected: float
) -> None:
    point = ModbusPoint.model_validate(
        {
            "property": "x",
            "address": 0,
            "type": value_type,
            "word_order": word_order,
            "byte_order": byte_order,
        }
    )
    assert decode(point, registers) == expected
    assert encode(point, expected) == registers


_NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


@given(
    value_type=st.sampled_from(_NUMERIC),
    word_order=st.sampled_from(["big", "little"]),
    fraction=st.floats(0, 1),
)
def test_round_trip_and_pymodbus_agrees(value_type: str, word_order: str, fraction: float) -> None:
    low, high = LIMITS.get(value_type, (-1e6, 1e6))
    raw = low + (high - low) * fraction
    point = ModbusPoint.model_validate(
        {"property": "x", "address": 0, "type": value_type, "word_order": word_order}
    )
    value: float = round(raw) if value_type in LIMITS else raw
    if value_type in LIMITS:
        value = min(max(int(value), low), high)
    registers = encode(point, value)
    assert len(registers) == register_count(point.type)
    decoded = decode(point, registers)
    theirs = ModbusClientMixin.convert_from_registers(
        [int(r) for r in registers], DATATYPE[value_type.upper()], word_order=word_order
    )
    if value_type == "float32":
        assert decoded == pytest.approx(value, rel=1e-6)
        assert isinstance(theirs, float)
        assert math.isclose(theirs, decoded)
    else:
        assert decoded == value
        assert theirs == decoded


def test_scaled_values_and_saturation() -> None:
    temp = REGISTER_MAPS["cnc"].point("spindle_temp")
    assert encode(temp, -12.3) == [0x10000 - 123]
    assert decode(temp, [0x10000 - 123]) == pytest.approx(-12.3)
    energy = REGISTER_MAPS["meter"].point("energy")
    assert decode(energy, encode(energy, 123456.789)) == pytest.approx(123456.789)
    load = REGISTER_MAPS["cnc"].point("spindle_load")
    assert encode(load, 1e9) == [0xFFFF]  # a PLC's conversion saturates
    assert encode(load, -5) == [0]

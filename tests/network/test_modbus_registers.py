"""Modbus register maps: every type in every order, scaling, and read planning."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiangong.network.modbus import RegisterPoint, decode_value, encode_value, plan_reads
from tiangong.network.modbus.registers import MAX_REGISTERS_PER_READ

INTEGER_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
orders = st.sampled_from(["big", "little"])


@given(data=st.data(), word_order=orders, byte_order=orders)
def test_integers_round_trip(data: st.DataObject, word_order: str, byte_order: str) -> None:
    value_type = data.draw(st.sampled_from(sorted(INTEGER_RANGES)))
    low, high = INTEGER_RANGES[value_type]
    value = data.draw(st.integers(low, high))  # unscaled integers are written exactly
    point = RegisterPoint("x", "holding", 0, value_type, word_order, byte_order)  # type: ignore[arg-type]
    registers = encode_value(point, value)
    assert all(0 <= r <= 0xFFFF for r in registers)  # type: ignore[operator]
    decoded = decode_value(point, registers)
    assert decoded == value
    assert type(decoded) is int  # counters and enum indexes stay integers


def test_unscaled_64_bit_counters_decode_exactly() -> None:
    point = RegisterPoint("energy", "input", 0, "uint64")
    assert decode_value(point, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]) == 2**64 - 1
    assert type(decode_value(RegisterPoint("s", "input", 0, "uint16", offset=1), [2])) is int
    assert type(decode_value(RegisterPoint("t", "input", 0, "uint16", scale=0.5), [2])) is float


@given(
    value=st.floats(allow_nan=False, allow_infinity=False, width=32),
    word_order=orders,
    byte_order=orders,
)
def test_float32_round_trip(value: float, word_order: str, byte_order: str) -> None:
    point = RegisterPoint("x", "input", 0, "float32", word_order, byte_order)  # type: ignore[arg-type]
    assert decode_value(point, encode_value(point, value)) == value


def test_known_layouts() -> None:
    # 123.456 as float32 is 0x42F6E979: big word order is [0x42F6, 0xE979].
    big = RegisterPoint("p", "holding", 0, "float32")
    assert encode_value(big, 123.456) == [0x42F6, 0xE979]
    swapped = RegisterPoint("p", "holding", 0, "float32", word_order="little")
    assert decode_value(swapped, [0xE979, 0x42F6]) == pytest.approx(123.456, rel=1e-6)
    bytes_swapped = RegisterPoint("p", "holding", 0, "uint16", byte_order="little")
    assert decode_value(bytes_swapped, [0x3412]) == 0x1234
    scaled = RegisterPoint("t", "holding", 0, "int16", scale=0.1, offset=-40)
    assert decode_value(scaled, [struct.unpack(">H", struct.pack(">h", -15))[0]]) == pytest.approx(
        -41.5
    )
    assert encode_value(scaled, -41.5) == [0xFFF1]
    assert decode_value(RegisterPoint("c", "coil", 3, "bool"), [True]) is True


def test_bad_inputs() -> None:
    point = RegisterPoint("p", "holding", 0, "int16")
    with pytest.raises(ValueError, match="takes 1 registers"):
        decode_value(point, [1, 2])
    with pytest.raises(ValueError, match="does not fit"):
        encode_value(point, 40_000)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode_value(point, [70_000])
    with pytest.raises(ValueError, match="finite"):
        encode_value(point, float("nan"))


def test_read_planning_merges_contiguous_points() -> None:
    points = [
        RegisterPoint("a", "holding", 0, "float32"),
        RegisterPoint("b", "holding", 2, "int16"),
        RegisterPoint("c", "holding", 6, "uint32"),  # a gap of 3: merged
        RegisterPoint("d", "holding", 100, "float64"),  # far away: new request
        RegisterPoint("e", "input", 0, "uint16"),
        RegisterPoint("f", "coil", 5, "bool"),
        RegisterPoint("g", "coil", 6, "bool"),
    ]
    plan = plan_reads(points)
    assert [(r.table, r.address, r.count, [p.key for p in r.points]) for r in plan] == [
        ("holding", 0, 8, ["a", "b", "c"]),
        ("holding", 100, 4, ["d"]),
        ("input", 0, 1, ["e"]),
        ("coil", 5, 2, ["f", "g"]),
    ]
    raw = (
        encode_value(points[0], 1.5)
        + encode_value(points[1], -2)
        + [0, 0, 0]
        + encode_value(points[2], 70_000)
    )
    assert plan[0].values(raw) == {"a": 1.5, "b": -2.0, "c": 70_000.0}


def test_read_planning_respects_the_protocol_limit() -> None:
    points = [RegisterPoint(f"p{i}", "holding", i * 2, "float32") for i in range(100)]
    plan = plan_reads(points)
    assert all(r.count <= MAX_REGISTERS_PER_READ for r in plan)
    assert sum(len(r.points) for r in plan) == 100
    assert len(plan) == 2

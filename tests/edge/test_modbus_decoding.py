"""The Modbus adapter's compiled decoding gives exactly what ``decode_value`` gives."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiangong.edge.adapters.modbus import CompiledRead
from tiangong.network.modbus import RegisterPoint, plan_reads
from tiangong.network.modbus.registers import register_count

REGISTER_TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


@st.composite
def register_points(draw: st.DrawFn) -> list[RegisterPoint]:
    """Points of one register table: gaps, overlaps, every type, order, scale and offset."""
    table = draw(st.sampled_from(["holding", "input"]))
    address = draw(st.integers(0, 20))
    points = []
    for i in range(draw(st.integers(1, 25))):
        value_type = draw(st.sampled_from(REGISTER_TYPES))
        points.append(
            RegisterPoint(
                f"p{i}",
                table,  # type: ignore[arg-type]
                address,
                value_type,  # type: ignore[arg-type]
                draw(st.sampled_from(["big", "big", "little"])),  # type: ignore[arg-type]
                draw(st.sampled_from(["big", "big", "little"])),  # type: ignore[arg-type]
                draw(st.sampled_from([1, 1.0, 0.1, 2, -1.5])),
                draw(st.sampled_from([0, 0.0, 5, 2.5, -3])),
            )
        )
        # Mostly the next free register, sometimes a gap, sometimes an overlap.
        address += draw(st.sampled_from([register_count(value_type)] * 3 + [0, 1, 5, 12]))
    return points


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


@given(points=register_points(), data=st.data())
def test_compiled_decoding_equals_decode_value(
    points: list[RegisterPoint], data: st.DataObject
) -> None:
    for request in plan_reads(points):
        registers = st.integers(0, 0xFFFF) | st.sampled_from([0, 0x7FFF, 0x8000, 0xFFFF])
        raw = data.draw(st.lists(registers, min_size=request.count, max_size=request.count))
        expected = request.values(raw)
        got = CompiledRead(request).values(raw)
        assert list(got) == list(expected)  # same points, same order
        assert all(same(got[key], expected[key]) for key in expected)


def test_bits_and_bad_replies_are_handled_as_before() -> None:
    [request] = plan_reads(
        [RegisterPoint("a", "coil", 0, "bool"), RegisterPoint("b", "coil", 3, "bool")]
    )
    assert CompiledRead(request).values([1, 0, 0, 0, 0, 0, 0, 0]) == {"a": True, "b": False}
    [request] = plan_reads([RegisterPoint("x", "holding", 0, "uint32")])
    compiled = CompiledRead(request)
    with pytest.raises(ValueError, match="short reply"):
        compiled.values([1])
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        compiled.values([1, 70_000])

"""Validation of samples against thing models."""

from __future__ import annotations

import numpy as np

from tiangong.network.access import decode_telemetry
from tiangong.platform.ingest.validation import ModelValidator, TimeWindow
from tiangong.platform.model import DataType, PropertySpec, ThingModel

NOW = 1_763_712_000_000

MODEL = ThingModel(
    id="m",
    properties=[
        PropertySpec(id="temp", type=DataType.FLOAT, unit="degC", min=-40, max=150),
        PropertySpec(id="count", type=DataType.INT, min=0),
        PropertySpec(id="on", type=DataType.BOOL),
        PropertySpec(id="state", type=DataType.ENUM, enum=["idle", "run", "down"]),
        PropertySpec(id="note", type=DataType.STRING),
    ],
)


def check(payload: bytes):
    [samples] = decode_telemetry(payload, device="d", now_ms=NOW)
    return ModelValidator(MODEL, TimeWindow()).validate(samples, NOW)


def reasons(result) -> dict[tuple[str | None, str], int]:
    return {(r.metric, r.reason): r.count for r in result.rejections}


def test_clean_columns_pass_untouched() -> None:
    result = check(
        b'{"ts": [%d, %d], "values": {"temp": [20.5, 21], "count": [1, 2], "on": [true, false],'
        b' "state": ["run", "idle"], "note": ["a", "b"]}}' % (NOW - 1, NOW)
    )
    assert result.rejections == []
    ts, values = result.numeric["temp"]
    assert ts.tolist() == [NOW - 1, NOW]
    assert values.tolist() == [20.5, 21.0]
    assert result.numeric["on"][1].tolist() == [1.0, 0.0]
    assert result.numeric["state"][1].tolist() == [1.0, 0.0]  # enum labels stored as indices
    assert result.text["note"][1] == ["a", "b"]
    assert result.accepted == 10


def test_bad_values_are_rejected_and_good_neighbours_kept() -> None:
    result = check(
        b'{"ts": [%d, %d, %d, %d], "values": {'
        b'"temp": [20, "hot", 999, null],'
        b'"count": [1, 2.5, -1, 3],'
        b'"on": [true, 2, 0, "yes"],'
        b'"state": ["run", "flying", 2, 7],'
        b'"note": ["ok", 5, null, "x\\u0000y"],'
        b'"ghost": [1, 2, 3, 4]}}' % (NOW - 3, NOW - 2, NOW - 1, NOW)
    )
    assert reasons(result) == {
        ("temp", "wrong_type"): 1,
        ("temp", "out_of_range"): 1,
        ("count", "not_integer"): 1,
        ("count", "out_of_range"): 1,
        ("on", "wrong_type"): 2,
        ("state", "unknown_label"): 2,
        ("note", "wrong_type"): 1,
        ("note", "nul_character"): 1,
        ("ghost", "unknown_metric"): 4,
    }
    assert result.numeric["temp"][1].tolist() == [20.0]
    assert result.numeric["count"][0].tolist() == [NOW - 3, NOW]
    assert result.numeric["on"][1].tolist() == [1.0, 0.0]
    assert result.numeric["state"][1].tolist() == [1.0, 2.0]  # label "run" and index 2
    assert result.text["note"][1] == ["ok"]


def test_time_window_and_units() -> None:
    far_future = NOW + 3_600_000
    far_past = NOW - 365 * 86_400_000
    result = check(
        b'{"ts": [%d, %d, %d], "values": {"temp": [1, 2, 3]}}' % (far_past, NOW, far_future)
    )
    assert reasons(result) == {("temp", "timestamp_out_of_range"): 2}
    assert result.numeric["temp"][0].tolist() == [NOW]
    seconds = check(b'{"ts": %d, "values": {"temp": 1}}' % (NOW // 1000))
    assert reasons(seconds) == {("temp", "timestamp_out_of_range"): 1}
    wrong_unit = check(b'{"ts": %d, "values": {"temp": 1}, "units": {"temp": "degF"}}' % NOW)
    assert reasons(wrong_unit) == {("temp", "unit_mismatch"): 1}
    right_unit = check(b'{"ts": %d, "values": {"temp": 1}, "units": {"temp": "degC"}}' % NOW)
    assert right_unit.rejections == []


def test_large_clean_column_is_vectorized() -> None:
    n = 100_000
    payload = b'{"ts": %s, "values": {"temp": %s}}' % (
        str(list(range(NOW - n, NOW))).encode(),
        str(np.linspace(0, 100, n).round(3).tolist()).encode(),
    )
    result = check(payload)
    assert result.accepted == n
    assert not result.rejections

"""Edge computing (report by exception, windows, local rules), frames and the buffer."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.edge.test_config import GOOD
from tiangong.edge.adapters.base import DeviceReadings
from tiangong.edge.buffer import ForwardBuffer
from tiangong.edge.config import parse_config
from tiangong.edge.errors import CommandError
from tiangong.edge.frames import Frame, FrameBuilder
from tiangong.edge.processing import EdgeProcessor
from tiangong.edge.uplink import parse_command

CONFIG = parse_config(
    GOOD.replace("scale = 0.1", "scale = 0.1\ndeadband = 0.5")
    .replace('word_order = "little"', 'word_order = "little"\nwindow_s = 10\naggregate = "max"')
    .replace("value = 70", "value = 70\nduration_s = 2")
)


def reading(ts: int, **values: float) -> DeviceReadings:
    return DeviceReadings("cnc-001", ts, dict(values))


def test_report_by_exception_with_deadband_and_heartbeat() -> None:
    processor = EdgeProcessor(CONFIG, heartbeat=60)
    sent = []
    for ts, value in [
        (0, 20.0),
        (1000, 20.3),
        (2000, 20.6),
        (3000, 20.7),
        (61_000, 20.7),
        (62_000, 20.7),
    ]:
        out, _ = processor.process(reading(ts, spindle_temp=value))
        sent += [(v.ts_ms, v.value) for v in out]
    # 20.3 is within 0.5 of 20.0; 20.6 is not; 20.7 is within 0.5 of 20.6; 60 s after the last
    # value sent (at 2 s), the heartbeat repeats it.
    assert sent == [(0, 20.0), (2000, 20.6), (62_000, 20.7)]


def test_window_aggregation_sends_one_value_per_window() -> None:
    processor = EdgeProcessor(CONFIG)
    out = []
    for ts, value in [(0, 1.0), (4000, 9.0), (9999, 3.0), (10_000, 2.0), (15_000, 5.0)]:
        values, _ = processor.process(reading(ts, power=value))
        out += values
    assert [(v.ts_ms, v.value) for v in out] == [(0, 9.0)]  # the first window closed at 10 s
    closed = processor.flush_windows(20_000)
    assert [(v.ts_ms, v.value) for v in closed] == [(10_000, 5.0)]
    assert processor.flush_windows(30_000) == []


def test_local_rule_raises_and_clears_without_the_platform() -> None:
    processor = EdgeProcessor(CONFIG)
    alarms = []
    for ts, value in [(0, 65.0), (1000, 71.0), (2500, 72.0), (3100, 73.0), (4000, 60.0)]:
        _, changed = processor.process(reading(ts, spindle_temp=value))
        alarms += [(a.active, a.since_ms, a.value) for a in changed]
    # Above 70 from 1 s, held 2 s: raised with the sample at 3.1 s; cleared by the one at 4 s.
    assert alarms == [(True, 3100, 73.0), (False, 3100, 60.0)]
    [alarm] = processor.alarms.values()
    assert (alarm.rule, alarm.cleared_ms) == ("hot spindle", 4000)


def test_frame_builder_aligns_columns() -> None:
    builder = FrameBuilder()
    builder.add("d1", "a", 1, 1.0)
    builder.add("d1", "b", 2, True)
    builder.add("d1", "a", 2, 2.0)
    builder.add("d2", "a", 1, "x")
    frame = builder.take()
    assert frame is not None
    assert (frame.points, frame.first_ts_ms) == (4, 1)
    assert orjson.loads(frame.payload) == {
        "devices": {
            "d1": {"ts": [1, 2], "values": {"a": [1.0, 2.0], "b": [None, True]}},
            "d2": {"ts": [1], "values": {"a": ["x"]}},
        }
    }
    assert builder.take() is None


def frame(n: int, size: int = 1000) -> Frame:
    return Frame(b"x" * size, points=n, first_ts_ms=n)


async def test_buffer_is_durable_and_ordered(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    buffer = ForwardBuffer(path, max_bytes=10 * 1024 * 1024)
    await buffer.open()
    seqs = [await buffer.append(frame(i)) for i in range(1, 6)]
    await buffer.ack([seqs[0], seqs[2]])
    await buffer.close()
    again = ForwardBuffer(path, max_bytes=10 * 1024 * 1024)
    await again.open()
    stats = await again.stats()
    assert (stats.frames, stats.points, stats.oldest_ts_ms) == (3, 2 + 4 + 5, 2)
    assert [f.points for f in await again.after(0, 10)] == [2, 4, 5]
    await again.close()


@pytest.mark.parametrize(
    ("policy", "kept"), [("drop_oldest", [4, 5, 6]), ("drop_newest", [1, 2, 3])]
)
async def test_buffer_overflow_policies_count_what_they_drop(
    tmp_path: Path, policy: str, kept: list[int]
) -> None:
    buffer = ForwardBuffer(tmp_path / "b.sqlite", max_bytes=3 * 1000, overflow=policy)  # type: ignore[arg-type]
    buffer.max_bytes = 3000  # below the configuration minimum, to keep the test small
    await buffer.open()
    for i in range(1, 7):
        await buffer.append(frame(i))
    stats = await buffer.stats()
    assert [f.points for f in await buffer.after(0, 10)] == kept
    assert (stats.dropped_frames, stats.dropped_points) == (3, sum(range(1, 7)) - sum(kept))
    await buffer.close()


def test_command_requests_are_checked() -> None:
    request = parse_command(b'{"id": "r1", "device": "d", "command": "write", "params": {"a": 1}}')
    assert (request.id, request.device, request.params) == ("r1", "d", {"a": 1})
    for bad in (b"nope", b"[]", b'{"device": "d"}', b'{"id": "x", "params": [1]}'):
        with pytest.raises(CommandError) as info:
            parse_command(bad)
        assert info.value.reason == "bad_request"

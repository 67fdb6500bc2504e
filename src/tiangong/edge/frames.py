"""Frames: batches of outgoing values in the platform's columnar gateway envelope.

The gateway folds values into one frame per flush (every ``flush_ms`` or ``max_batch_points``):
per device, one timestamp column and one column per property, ``null`` where a property had no
value at that time. A frame is what is stored in the forward buffer and what is published, so a
buffered frame needs no re-encoding on its way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Frame", "FrameBuilder"]


@dataclass(frozen=True, slots=True)
class Frame:
    """An encoded batch ready to store and publish.

    Attributes:
        payload: the gateway envelope, JSON.
        points: values it carries.
        first_ts_ms: its earliest sample time.
        channel: the device-access channel it goes to (``telemetry`` or ``events``).
    """

    payload: bytes
    points: int
    first_ts_ms: int
    channel: str = "telemetry"


@dataclass(slots=True)
class _DeviceRows:
    """One device's values by row until the frame is encoded.

    Rows, not columns, while values arrive: a device read at once gives one row (a dict) where
    columns would be one list per property, and these containers live for a whole flush
    interval. At 100,000 points per second the column lists were tens of thousands of objects
    per second surviving into the garbage collector's oldest generation, whose full scans then
    stalled the event loop for up to a tenth of a second. The columns are built in ``take``.
    """

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # ts -> property -> value
    props: dict[str, None] = field(default_factory=dict)  # every property, in order of arrival


class FrameBuilder:
    """Accumulates values until ``take`` encodes them as one frame."""

    def __init__(self) -> None:
        self._devices: dict[str, _DeviceRows] = {}
        self.points = 0
        self._first_ts: int | None = None

    def add(self, device: str, prop: str, ts_ms: int, value: Any) -> None:
        """Add one value."""
        rows = self._devices.get(device)
        if rows is None:
            rows = self._devices[device] = _DeviceRows()
        row = rows.rows.get(ts_ms)
        if row is None:
            row = rows.rows[ts_ms] = {}
        if prop not in rows.props:
            rows.props[prop] = None
        if row.get(prop) is None:
            self.points += 1
        row[prop] = value
        if self._first_ts is None or ts_ms < self._first_ts:
            self._first_ts = ts_ms

    def take(self) -> Frame | None:
        """Encode what was added as a frame and start over (``None`` when empty)."""
        if not self.points:
            return None
        envelope = {
            "devices": {
                device: {"ts": list(rows.rows), "values": _columns(rows)}
                for device, rows in self._devices.items()
            }
        }
        frame = Frame(orjson.dumps(envelope), self.points, self._first_ts or 0)
        self._devices = {}
        self.points = 0
        self._first_ts = None
        return frame


def _columns(rows: _DeviceRows) -> dict[str, Sequence[Any]]:
    props = list(rows.props)
    table = list(rows.rows.values())
    if all(list(row) == props for row in table):
        # Every row has every property, in the same order (a device read whole each time, the
        # usual case): transpose in C rather than one list comprehension per property. The
        # columns stay tuples (orjson writes them as arrays): the collector untracks a tuple of
        # numbers at its first pass, where lists made by the ten thousand during one encoding
        # were promoted to its oldest generation and made its full scans frequent.
        return dict(zip(props, zip(*(row.values() for row in table), strict=True), strict=True))
    return {prop: [row.get(prop) for row in table] for prop in props}

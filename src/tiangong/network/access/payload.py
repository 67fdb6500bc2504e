"""JSON payloads of the device access protocol: bytes in, columns of samples out.

A telemetry message carries samples for one device, or for many devices behind a gateway. Four
shapes are accepted, from the simplest device to the busiest gateway::

    {"ts": 1732230000123, "values": {"temp": 21.5, "state": "running"}}        one sample
    {"values": {"temp": 21.5}}                                                 one sample, stamped
                                                                               on arrival
    {"samples": [{"ts": 1732230000123, "values": {"temp": 21.5}}, ...]}        rows
    {"ts": [t0, t1, ...], "values": {"temp": [v0, v1, ...], ...}}              columns (fastest)

and any of them per device inside a gateway envelope::

    {"devices": {"pump-01": {...one of the above...}, "pump-02": {...}}}

Timestamps are milliseconds since the Unix epoch (UTC). The row and single shapes also accept
ISO 8601 strings. ``"units": {"temp": "degC"}`` may accompany ``values``; the platform then
checks them against the thing model.

Strategy: decode once with orjson, then keep each metric as the list orjson produced. Typing
and range checks need the thing model, so they happen in the platform's validator, which turns
the lists into numpy arrays in one call per metric (columns, not per-point objects: this is what
keeps ingest above a million points per second per core).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from tiangong.network.access.topics import is_valid_name
from tiangong.network.errors import PayloadError

__all__ = [
    "DeviceEvent",
    "DeviceSamples",
    "DeviceStatus",
    "PayloadLimits",
    "decode_events",
    "decode_status",
    "decode_telemetry",
]

Timestamps = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """Bounds on one message, so one hostile payload cannot exhaust the platform."""

    max_devices: int = 10_000
    max_samples: int = 2_000_000
    max_metrics: int = 2_000
    max_events: int = 10_000


DEFAULT_LIMITS: Final = PayloadLimits()


@dataclass(slots=True)
class DeviceSamples:
    """One device's samples from one message, as columns.

    Attributes:
        device: the device name (the topic's, or the gateway envelope's key).
        ts: sample timestamps in ms since the epoch, one per sample.
        values: raw JSON values per metric, each list as long as ``ts``; ``None`` = no value.
        units: units the device declared per metric, if any.
        stamped_on_arrival: some samples carried no time and got the arrival time (such a
            message cannot be recognised when delivered twice, since its content has no time).
    """

    device: str
    ts: Timestamps
    values: dict[str, list[Any]]
    units: dict[str, str] = field(default_factory=dict)
    stamped_on_arrival: bool = False

    @property
    def point_count(self) -> int:
        """Number of (metric, timestamp) values carried, nulls included."""
        return len(self.ts) * len(self.values)


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A device event (fault, state change...)."""

    device: str
    ts: int
    event: str
    data: dict[str, Any]
    stamped_on_arrival: bool = False


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("malformed_json", f"payload is not valid JSON: {exc}") from exc


def _timestamp(value: Any, now_ms: int) -> int:
    if value is None:
        return now_ms  # callers flag arrival stamping themselves
    if isinstance(value, bool):
        raise PayloadError("bad_timestamp", "a timestamp may not be true/false")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise PayloadError(
                "bad_timestamp", f"timestamp {value!r} is neither epoch ms nor ISO 8601"
            ) from exc
        if parsed.tzinfo is None:
            raise PayloadError("bad_timestamp", f"ISO timestamp {value!r} lacks a UTC offset")
        return int(parsed.timestamp() * 1000)
    raise PayloadError("bad_timestamp", f"timestamp {value!r} is not a number or ISO string")


def _metric_names(values: dict[str, Any], limits: PayloadLimits) -> None:
    if len(values) > limits.max_metrics:
        raise PayloadError(
            "too_large", f"{len(values)} metrics in one sample set (limit {limits.max_metrics})"
        )
    for name in values:
        if not is_valid_name(name):
            raise PayloadError("bad_name", f"metric name {name!r} is not a valid name")


def _units(doc: dict[str, Any]) -> dict[str, str]:
    units = doc.get("units")
    if units is None:
        return {}
    if not isinstance(units, dict) or not all(isinstance(u, str) for u in units.values()):
        raise PayloadError("bad_shape", "'units' must map metric names to unit strings")
    return units


def _device_samples(device: str, doc: Any, now_ms: int, limits: PayloadLimits) -> DeviceSamples:
    if not isinstance(doc, dict):
        raise PayloadError("bad_shape", f"samples for {device!r} must be a JSON object")
    units = _units(doc)
    if "samples" in doc:
        rows = doc["samples"]
        if not isinstance(rows, list):
            raise PayloadError("bad_shape", "'samples' must be a list of {ts, values} objects")
        if len(rows) > limits.max_samples:
            raise PayloadError("too_large", f"{len(rows)} samples (limit {limits.max_samples})")
        ts: list[int] = []
        columns: dict[str, list[Any]] = {}
        stamped = False
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("values"), dict):
                raise PayloadError("bad_shape", f"sample {i} must be {{'ts': ..., 'values': {{}}}}")
            stamped = stamped or row.get("ts") is None
            ts.append(_timestamp(row.get("ts"), now_ms))
            for name, value in row["values"].items():
                column = columns.get(name)
                if column is None:
                    column = columns[name] = [None] * i
                column.append(value)
            for column in columns.values():
                if len(column) < i + 1:
                    column.append(None)
        _metric_names(columns, limits)
        return DeviceSamples(device, np.asarray(ts, dtype=np.int64), columns, units, stamped)
    values = doc.get("values")
    if not isinstance(values, dict):
        raise PayloadError("bad_shape", "expected 'values' (an object) or 'samples' (a list)")
    _metric_names(values, limits)
    raw_ts = doc.get("ts")
    if isinstance(raw_ts, list):
        n = len(raw_ts)
        if n > limits.max_samples:
            raise PayloadError("too_large", f"{n} samples (limit {limits.max_samples})")
        try:
            ts_array = np.asarray(raw_ts, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PayloadError(
                "bad_timestamp", "columnar 'ts' must be a list of epoch milliseconds"
            ) from exc
        if ts_array.ndim != 1:
            raise PayloadError("bad_timestamp", "columnar 'ts' must be a flat list")
        for name, column in values.items():
            if not isinstance(column, list) or len(column) != n:
                raise PayloadError(
                    "length_mismatch",
                    f"metric {name!r} must be a list of {n} values to match 'ts'",
                )
        return DeviceSamples(device, ts_array, values, units)
    single = np.asarray([_timestamp(raw_ts, now_ms)], dtype=np.int64)
    for name, value in values.items():
        if isinstance(value, list | dict):
            raise PayloadError(
                "bad_shape", f"metric {name!r} has a list/object value but 'ts' is not a list"
            )
    return DeviceSamples(device, single, {k: [v] for k, v in values.items()}, units, raw_ts is None)


def decode_telemetry(
    payload: bytes, *, device: str, now_ms: int, limits: PayloadLimits = DEFAULT_LIMITS
) -> list[DeviceSamples]:
    """Decode a telemetry payload published on ``device``'s topic.

    Args:
        payload: the message payload.
        device: the device named by the topic (the gateway, for an envelope).
        now_ms: arrival time, used for samples that carry no timestamp.
        limits: bounds on the message.

    Returns:
        One ``DeviceSamples`` per device in the message.

    Raises:
        PayloadError: the payload is not part of the scheme (``reason`` says how).
    """
    doc = _loads(payload)
    if not isinstance(doc, dict):
        raise PayloadError("bad_shape", "a telemetry payload must be a JSON object")
    children = doc.get("devices")
    if children is None:
        result = [_device_samples(device, doc, now_ms, limits)]
    else:
        if not isinstance(children, dict):
            raise PayloadError("bad_shape", "'devices' must map device names to sample sets")
        if len(children) > limits.max_devices:
            raise PayloadError("too_large", f"{len(children)} devices (limit {limits.max_devices})")
        result = []
        for child, child_doc in children.items():
            if not is_valid_name(child):
                raise PayloadError("bad_name", f"device name {child!r} is not a valid name")
            result.append(_device_samples(child, child_doc, now_ms, limits))
    total = sum(len(s.ts) for s in result)
    if total > limits.max_samples:
        raise PayloadError("too_large", f"{total} samples (limit {limits.max_samples})")
    return result


def decode_events(
    payload: bytes, *, device: str, now_ms: int, limits: PayloadLimits = DEFAULT_LIMITS
) -> list[DeviceEvent]:
    """Decode an events payload: one event object, or ``{"events": [...]}``.

    An event is ``{"ts": ..., "event": "<name>", "data": {...}}``; a gateway may name the child
    with ``"device"``.

    Raises:
        PayloadError: the payload is not part of the scheme.
    """
    doc = _loads(payload)
    if isinstance(doc, dict) and "events" in doc:
        items = doc["events"]
        if not isinstance(items, list):
            raise PayloadError("bad_shape", "'events' must be a list")
    else:
        items = [doc]
    if len(items) > limits.max_events:
        raise PayloadError("too_large", f"{len(items)} events (limit {limits.max_events})")
    events = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("event"), str):
            raise PayloadError("bad_shape", "an event is {'ts': ..., 'event': name, 'data': {}}")
        name = item["event"]
        if not is_valid_name(name):
            raise PayloadError("bad_name", f"event name {name!r} is not a valid name")
        owner = item.get("device", device)
        if not isinstance(owner, str) or not is_valid_name(owner):
            raise PayloadError("bad_name", f"device name {owner!r} is not a valid name")
        data = item.get("data", {})
        if not isinstance(data, dict):
            raise PayloadError("bad_shape", "event 'data' must be an object")
        raw_ts = item.get("ts")
        events.append(DeviceEvent(owner, _timestamp(raw_ts, now_ms), name, data, raw_ts is None))
    return events


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A status message: the sender's state, and a gateway's view of its devices.

    Attributes:
        online: the sender is online.
        devices: for a gateway, each child's reachability (``True``: online).
    """

    online: bool
    devices: dict[str, bool] = field(default_factory=dict)


def decode_status(payload: bytes) -> DeviceStatus:
    """Decode a status payload.

    ``online`` / ``offline``, or ``{"state": "online", "devices": {"<child>": "offline"}}`` (a
    gateway reporting which of its devices it can reach).

    Raises:
        PayloadError: anything else.
    """
    text = payload.strip().lower()
    if text in (b"online", b"offline"):
        return DeviceStatus(online=text == b"online")
    doc = _loads(payload)
    state = doc.get("state") if isinstance(doc, dict) else None
    if state not in ("online", "offline"):
        raise PayloadError("bad_shape", "status must be 'online' or 'offline'")
    children = doc.get("devices", {})
    if not isinstance(children, dict):
        raise PayloadError("bad_shape", "'devices' must map device names to online/offline")
    devices: dict[str, bool] = {}
    for name, child_state in children.items():
        if not is_valid_name(name) or child_state not in ("online", "offline"):
            raise PayloadError("bad_shape", f"device {name!r}: state must be 'online' or 'offline'")
        devices[name] = child_state == "online"
    return DeviceStatus(online=state == "online", devices=devices)

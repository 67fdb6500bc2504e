"""What the MQTT and HTTP adapters share: devices that send JSON documents when they like.

A document is either a JSON object (each point takes its ``field``) or, for a point without a
field, a bare JSON value. The device counts as reachable while it sent something within
``stale_after`` seconds: ``read`` (the coordinator's probe) fails after that.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from tiangong.edge.adapters.base import DeviceReadings, ReadingSink
from tiangong.edge.errors import CommandError, DeviceSilentError

__all__ = ["PushedValues"]


class PushedValues:
    """The latest pushed values of one device and when they came.

    Args:
        device_id: the device.
        fields: property -> JSON field (``None``: the whole document is the value).
        stale_after: seconds of silence that make the device unreachable.
    """

    def __init__(self, device_id: str, fields: dict[str, str | None], stale_after: float) -> None:
        self.device_id = device_id
        self.fields = fields
        self.stale_after = stale_after
        self.sink: ReadingSink | None = None
        self.latest: dict[str, Any] = {}
        self.last_heard = 0.0
        self.rejected = 0

    def accept(self, payload: bytes, props: Sequence[str], ts_ms: int | None = None) -> int:
        """Take a document for the given properties; returns how many values it carried.

        Raises:
            CommandError: ``bad_payload`` when the document is not JSON.
        """
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self.rejected += 1
            raise CommandError("push", "bad_payload", f"not JSON: {exc}") from exc
        values: dict[str, Any] = {}
        for prop in props:
            field = self.fields[prop]
            if field is None:
                value = doc
            elif isinstance(doc, dict):
                value = doc.get(field)
            else:
                value = None
            if isinstance(value, bool | int | float | str):
                values[prop] = value
        now = time.time()
        self.last_heard = now
        if isinstance(doc, dict) and isinstance(doc.get("ts"), int) and ts_ms is None:
            ts_ms = int(doc["ts"])
        if values:
            self.latest.update(values)
            if self.sink is not None:
                self.sink(
                    DeviceReadings(
                        self.device_id, ts_ms or int(now * 1000), values, int(now * 1000)
                    )
                )
        return len(values)

    def snapshot(self) -> DeviceReadings:
        """The latest values, if the device was heard from recently.

        Raises:
            DeviceSilentError: silent for longer than ``stale_after``.
        """
        silent = time.time() - self.last_heard
        if not self.last_heard or silent > self.stale_after:
            raise DeviceSilentError(
                self.device_id,
                f"nothing received for {silent:.0f}s"
                if self.last_heard
                else "nothing received yet",
            )
        now = int(time.time() * 1000)
        # The probe only proves the device alive: its values were reported when they came.
        return DeviceReadings(self.device_id, now, {}, now)

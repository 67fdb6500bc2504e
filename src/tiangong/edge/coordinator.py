r"""One coordinator per device: connection, polling, reconnects, availability, link quality.

Theory of operation
-------------------
The coordinator is the only thing that decides when an adapter talks to its device::

    connect --ok--> ONLINE: read every poll_interval --error--> OFFLINE: close, back off, connect
                 \\--fail--> OFFLINE (back off with full jitter, up to backoff_max)

Polled adapters deliver their readings from ``read``; pushing adapters (OPC UA subscriptions,
MQTT, HTTP) deliver changes through the sink, and ``read`` is then a periodic probe: a snapshot
and a proof of life (it fails when a pushing device went silent). Every attempt feeds the link
quality figures: round-trip time of each read, its jitter, the share of failed attempts, and
reconnects. The gateway reports them upstream as the device's ``link.*`` metrics.

Availability transitions are reported to the gateway, which tells the platform (the device's
online/offline state) and the processing stage (values stop, stale ones are not repeated).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tiangong.cancellation import raise_if_cancelling
from tiangong.edge.adapters.base import DeviceAdapter, ReadingSink
from tiangong.edge.errors import CommandError, DeviceError, DeviceSilentError

__all__ = ["Availability", "DeviceCoordinator", "LinkQuality"]

_log = logging.getLogger(__name__)

#: Attempts the loss figure is computed over.
WINDOW: Final = 100


class Availability(enum.Enum):
    """What the gateway knows of a device's reachability."""

    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class LinkQuality:
    """Link figures of one device over its last ``WINDOW`` attempts.

    Attributes:
        rtt_ms: median round-trip time of a read.
        jitter_ms: mean absolute difference between consecutive round trips.
        loss_pct: share of attempts that failed.
        reconnects: reconnections since the gateway started.
    """

    rtt_ms: float | None
    jitter_ms: float | None
    loss_pct: float
    reconnects: int

    def as_values(self) -> dict[str, float]:
        """As ``link.*`` metric values (missing figures left out)."""
        values = {
            "link.loss_pct": round(self.loss_pct, 2),
            "link.reconnects": float(self.reconnects),
        }
        if self.rtt_ms is not None:
            values["link.rtt_ms"] = round(self.rtt_ms, 3)
        if self.jitter_ms is not None:
            values["link.jitter_ms"] = round(self.jitter_ms, 3)
        return values


AvailabilityListener = Callable[[str, Availability, str], None]


class DeviceCoordinator:
    """Runs one adapter.

    Args:
        adapter: the device's adapter.
        sink: where readings go.
        on_availability: called with (device, availability, reason) on every change.
        backoff_initial: first reconnect delay in seconds.
        backoff_max: longest reconnect delay in seconds.
        failures_before_offline: consecutive failed attempts (connect or read) before the device
            counts as offline. One lost request on a lossy radio link is loss, counted in the
            link figures, not an outage; a device that fails this many times in a row is gone.
    """

    def __init__(
        self,
        adapter: DeviceAdapter,
        *,
        sink: ReadingSink,
        on_availability: AvailabilityListener,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        failures_before_offline: int = 3,
    ) -> None:
        self.adapter = adapter
        self.device_id = adapter.device_id
        self._sink = sink
        self._on_availability = on_availability
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.availability = Availability.UNKNOWN
        self._rtts: deque[float] = deque(maxlen=WINDOW)
        self._outcomes: deque[bool] = deque(maxlen=WINDOW)
        self.reconnects = 0
        self._failures = 0  # consecutive
        self._failures_before_offline = failures_before_offline
        self._connected_once = False
        self._lock = asyncio.Lock()  # one conversation with the device at a time

    def _set(self, availability: Availability, reason: str) -> None:
        if availability is not self.availability:
            self.availability = availability
            self._on_availability(self.device_id, availability, reason)

    def link_quality(self) -> LinkQuality:
        """The device's link figures now."""
        rtts = list(self._rtts)
        outcomes = list(self._outcomes)
        loss = 100.0 * outcomes.count(False) / len(outcomes) if outcomes else 0.0
        jitter = (
            statistics.fmean(abs(b - a) for a, b in itertools.pairwise(rtts))
            if len(rtts) > 1
            else None
        )
        return LinkQuality(
            rtt_ms=statistics.median(rtts) if rtts else None,
            jitter_ms=jitter,
            loss_pct=loss,
            reconnects=self.reconnects,
        )

    async def run(self) -> None:
        """Keep the device connected and read, until cancelled."""
        delay = self._backoff_initial
        try:
            while True:
                try:
                    async with self._lock:
                        await self.adapter.connect(self._sink)
                    raise_if_cancelling()
                    if self._connected_once:
                        self.reconnects += 1
                    self._connected_once = True
                    # The back-off restarts at the first failure after a good read, not on
                    # connecting: a serial gateway that accepts the connection but cannot reach
                    # the machine behind it must not be hammered with reconnections.
                    await self._poll()
                except DeviceError as exc:
                    self._outcomes.append(False)
                    self._failures += 1
                    if self._failures == 1:  # the first failure after a good read
                        delay = self._backoff_initial
                    if self._failures >= self._failures_before_offline:
                        self._set(Availability.OFFLINE, str(exc))
                    _log.debug("device %s: %s", self.device_id, exc)
                async with self._lock:
                    await self.adapter.close()
                raise_if_cancelling()
                if self.availability is not Availability.OFFLINE:
                    # A single failure: reconnect at once and keep reading.
                    await asyncio.sleep(self._backoff_initial / 10)
                    continue
                # Full jitter: a whole line of machines losing power must not reconnect in step.
                await asyncio.sleep(random.uniform(0, delay))  # noqa: S311
                delay = min(delay * 2, self._backoff_max)
        finally:
            await self.adapter.close()

    async def _poll(self) -> None:
        interval = self.adapter.poll_interval
        next_at = time.monotonic()
        while True:
            started = time.monotonic()
            try:
                async with self._lock:
                    readings = await self.adapter.read()
                raise_if_cancelling()
            except DeviceSilentError as exc:
                # A pushing device went quiet: it is offline, but the connection that will
                # carry its next message is fine, so keep it and keep probing.
                self._set(Availability.OFFLINE, str(exc))
                await asyncio.sleep(interval)
                continue
            self._rtts.append((time.monotonic() - started) * 1000)
            self._outcomes.append(True)
            self._failures = 0
            self._set(Availability.ONLINE, "reading")
            if readings.values:
                self._sink(readings)
            # Fixed-rate schedule, skipping missed ticks rather than bursting to catch up.
            next_at += interval
            now = time.monotonic()
            if next_at < now:
                next_at = now + interval - (now - next_at) % interval
            await asyncio.sleep(next_at - now)

    async def write(self, prop: str, value: Any) -> None:
        """Write a point through the adapter.

        Raises:
            CommandError: unknown or read-only point, bad value, or the device is offline.
            DeviceError: the device failed.
        """
        if self.availability is not Availability.ONLINE:
            raise CommandError(prop, "device_offline", f"{self.device_id} is not reachable now")
        async with self._lock:
            await self.adapter.write(prop, value)

    async def call(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """Call a device command through the adapter.

        Raises:
            CommandError: unknown command, bad parameters, or the device is offline.
            DeviceError: the device failed.
        """
        if self.availability is not Availability.ONLINE:
            raise CommandError(command, "device_offline", f"{self.device_id} is not reachable now")
        async with self._lock:
            return await self.adapter.call(command, params)

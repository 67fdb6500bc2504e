"""The contract every southbound adapter follows.

An adapter knows one protocol and nothing else: how to connect to a device, read its points (or
be told of changes), write a value and call a method. It does not retry, schedule or buffer:
the ``DeviceCoordinator`` owns polling, reconnects with backoff, availability and link quality
for every adapter alike, the way Home Assistant's integrations leave scheduling to a coordinator.

Two shapes of device exist on the plant floor, and adapters declare which they are:

- **polled** (Modbus): the coordinator calls ``read`` every ``poll_interval`` seconds;
- **pushing** (OPC UA subscriptions, MQTT, HTTP): the adapter calls the ``sink`` it was given in
  ``connect`` whenever values change, and ``read`` is only used for an initial snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["DeviceAdapter", "DeviceReadings", "ReadingSink"]


@dataclass(slots=True)
class DeviceReadings:
    """Values of one device taken at one moment (one poll, one change notification).

    Attributes:
        device: device id.
        ts_ms: when the values were taken (ms since the epoch).
        values: property -> value (numbers, booleans, strings).
        received_ms: when the gateway got them (for latency figures).
        events: events of the device at that moment, as (thing-model event id, data).
    """

    device: str
    ts_ms: int
    values: dict[str, Any] = field(default_factory=dict)
    received_ms: int = 0
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


ReadingSink = Callable[[DeviceReadings], None]


class DeviceAdapter(Protocol):
    """One device behind one protocol."""

    device_id: str
    #: ``True``: the coordinator polls ``read``; ``False``: the adapter pushes to the sink.
    polled: bool
    #: Seconds between polls (polled adapters).
    poll_interval: float

    async def connect(self, sink: ReadingSink) -> None:
        """Open the connection (and subscriptions, for pushing adapters).

        Raises:
            DeviceUnreachableError: the device cannot be reached now.
            DeviceRefusedError: it refused (bad credentials, security).
        """

    async def read(self) -> DeviceReadings:
        """Read every point once.

        Raises:
            DeviceUnreachableError: timed out or the connection broke.
            DeviceRefusedError: the device answered with an error.
        """

    async def write(self, prop: str, value: Any) -> None:
        """Write a writable point.

        Raises:
            CommandError: the point is unknown or not writable, or the value does not fit.
            DeviceError: the device failed to take it.
        """

    async def call(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """Call a device method (a thing-model command).

        Raises:
            CommandError: unknown command or bad parameters.
            DeviceError: the device failed.
        """

    async def close(self) -> None:
        """Close the connection (idempotent)."""

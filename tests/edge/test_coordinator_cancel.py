"""A coordinator stops when cancelled even if a protocol library swallows the cancellation.

Python 3.11's ``asyncio.wait_for`` (pymodbus connects with it) can lose a cancellation that
arrives as the awaited call completes. A real Modbus peer cannot be timed to hit that window, so
this adapter swallows the cancellation on purpose (the fault injection the project allows).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tiangong.edge.adapters.base import DeviceReadings, ReadingSink
from tiangong.edge.coordinator import DeviceCoordinator
from tiangong.edge.errors import DeviceUnreachableError


class SwallowingAdapter:
    device_id = "press-9"
    polled = True
    poll_interval = 0.05

    def __init__(self) -> None:
        self.connects = 0

    async def connect(self, sink: ReadingSink) -> None:
        self.connects += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            return  # the library's bug: the cancellation is lost here
        raise DeviceUnreachableError(self.device_id, "no route")

    async def read(self) -> DeviceReadings:
        raise DeviceUnreachableError(self.device_id, "not connected")

    async def write(self, prop: str, value: Any) -> None:
        raise NotImplementedError

    async def call(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def test_a_swallowed_cancellation_still_stops_the_coordinator() -> None:
    adapter = SwallowingAdapter()
    coordinator = DeviceCoordinator(
        adapter,
        sink=lambda readings: None,
        on_availability=lambda *args: None,
        backoff_initial=0.01,
        backoff_max=0.02,
    )
    task = asyncio.create_task(coordinator.run())
    while adapter.connects < 3:
        await asyncio.sleep(0.01)
    # Cancel while the adapter is inside connect (where it swallows it).
    while True:
        await asyncio.sleep(0.001)
        if adapter.connects > 3:
            break
    task.cancel()
    async with asyncio.timeout(5):
        done, _ = await asyncio.wait({task})
    assert task in done
    assert task.cancelled()

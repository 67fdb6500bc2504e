"""Store-and-forward under a real outage: the uplink is cut for a minute at full rate.

A Modbus device with 100 registers is polled every 20 ms (5,000 points/s) while the link between
the gateway and Mosquitto is cut for 60 seconds (a ``FaultyLink`` holding all traffic). Proven
afterwards: every point the gateway read is stored on the platform exactly once (zero loss), and
what the broker saw arrived as at most two ordered streams, the backlog oldest first and the live
data, never shuffled.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from pathlib import Path

import orjson
import pytest

from tests.edge.conftest import ModbusPeer
from tests.faulty_link import FaultyLink
from tests.platform.conftest import running_platform
from tests.servers import MosquittoProcess
from tiangong.edge.config import EdgeConfig
from tiangong.edge.gateway import EdgeGateway
from tiangong.edge.thing_model import GATEWAY_MODEL
from tiangong.network.modbus import RegisterPoint
from tiangong.network.mqtt import MqttClient, Subscription
from tiangong.platform.model import DataType, PropertySpec, ThingModel
from tiangong.platform.tsdb.base import Aggregate, SeriesKey

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

REGISTERS = 100
BANK = ThingModel(
    id="bank",
    name="Register bank",
    properties=[PropertySpec(id=f"r{i}", type=DataType.INT) for i in range(REGISTERS)],
)
COUNTER = RegisterPoint("r0", "holding", 0, "uint16")
CUT_S = 60.0
END_MS = 4_102_444_800_000  # 2100-01-01


def config(tmp_path: Path, modbus_port: int, mqtt_port: int) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "gateway": {
                "id": "gw-sf",
                "tenant": "acme",
                "site": "p1",
                "data_dir": str(tmp_path / "edge"),
            },
            "uplink": {"host": "127.0.0.1", "port": mqtt_port, "flush_ms": 100},
            "devices": [
                {
                    "id": "bank-1",
                    "protocol": "modbus",
                    "host": "127.0.0.1",
                    "port": modbus_port,
                    "poll_ms": 20,
                    "points": [
                        {"property": f"r{i}", "address": i, "type": "uint16"}
                        for i in range(REGISTERS)
                    ],
                }
            ],
        }
    )


def longest_decreasing_run(values: list[int]) -> int:
    """Length of the longest strictly decreasing subsequence: the fewest ordered streams that
    interleave to give ``values`` (patience sorting on the negated values)."""
    tails: list[int] = []
    for value in values:
        index = bisect.bisect_left(tails, -value)
        if index == len(tails):
            tails.append(-value)
        else:
            tails[index] = -value
    return len(tails)


def test_longest_decreasing_run() -> None:
    assert longest_decreasing_run([1, 2, 3]) == 1
    assert longest_decreasing_run([1, 10, 2, 11, 3, 12]) == 2
    assert longest_decreasing_run([3, 2, 1]) == 3


async def test_uplink_cut_for_a_minute_at_full_rate_loses_nothing(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    arrivals: list[tuple[int, bytes]] = []  # (first ts, payload) in broker delivery order

    async def observe(client: MqttClient) -> None:
        async for message in client.messages():
            document = orjson.loads(message.payload)
            first = min(min(d["ts"]) for d in document["devices"].values())
            arrivals.append((first, message.payload))

    async def count_up() -> None:
        value = 0
        while True:
            value = (value + 1) % 65536
            await modbus_peer.set(COUNTER, value)
            await asyncio.sleep(0.02)

    async with (
        FaultyLink("127.0.0.1", shared_mosquitto.port) as link,
        FaultyLink("127.0.0.1", modbus_peer.port) as device_link,
        running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env,
        MqttClient(
            host="127.0.0.1", port=shared_mosquitto.port, client_id="sf-observer"
        ) as observer,
        asyncio.TaskGroup() as tasks,
    ):
        await observer.subscribe(Subscription("tg/v1/acme/p1/gw-sf/telemetry", qos=1))
        watcher = tasks.create_task(observe(observer))
        counter = tasks.create_task(count_up())
        registry = env.platform.registry
        await registry.put_thing_model("acme", BANK)
        await registry.put_thing_model("acme", GATEWAY_MODEL)
        _, secret = await registry.register_device(
            tenant_id="acme", site_id="p1", device_id="gw-sf", model_id="edge-gateway"
        )
        await registry.register_device(
            tenant_id="acme", site_id="p1", device_id="bank-1", model_id="bank", gateway_id="gw-sf"
        )
        edge = config(tmp_path, device_link.port, link.port)
        async with EdgeGateway(edge, password=secret, health_interval=1.0) as gateway:
            await env.wait_for(lambda: _flowing(gateway), timeout=20)
            link.cut()
            await asyncio.sleep(CUT_S)
            # The plant keeps producing, all on disk; on a loaded machine the cut lasts until
            # as much was read as a quiet one reads in CUT_S.
            async with asyncio.timeout(60):
                while (buffered := await gateway.buffer.stats()).points < CUT_S * 2_000:
                    await asyncio.sleep(0.1)
            link.heal()
            await link.drop_connections()
            healed_at = time.monotonic()

            # The device goes quiet (unplugged) so the totals can be compared exactly.
            await asyncio.sleep(5)
            counter.cancel()
            device_link.cut()
            await device_link.drop_connections()
            await asyncio.sleep(1.0)  # the last readings reach a frame in the buffer

            async def drained() -> bool:
                return (await gateway.buffer.stats()).frames == 0

            await env.wait_for(drained, timeout=120)
            drain_s = time.monotonic() - healed_at
            read = gateway.points_in
            stats = await gateway.buffer.stats()
        assert stats.dropped_points == 0

        store = env.platform.store
        ids = await store.series_ids([SeriesKey("acme", "bank-1", f"r{i}") for i in range(100)])

        async def stored() -> int:
            total = 0
            for sid in ids:
                total += len(await store.query(sid, 0, END_MS, None, Aggregate.LAST))
            return total

        async def all_stored() -> bool:
            return await stored() >= read

        with contextlib.suppress(TimeoutError):
            await env.wait_for(all_stored, timeout=30)
        assert await stored() == read  # every point read, stored exactly once

        counter_points = await store.query(ids[0], 0, END_MS, None, Aggregate.LAST)
        values = [int(v) for _, v in counter_points if v is not None]
        wraps = sum(1 for a, b in itertools.pairwise(values) if b < a)
        assert wraps <= 1  # the counter only ever counted up (one wrap at most)

        watcher.cancel()
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        unique: dict[bytes, int] = {}
        for first, payload in arrivals:
            unique.setdefault(payload, first)
        order = list(unique.values())
        assert longest_decreasing_run(order) <= 2, "frames arrived shuffled"
        print(f"cut {CUT_S:.0f} s, {buffered.points} points buffered, drained in {drain_s:.1f} s")


async def _flowing(gateway: EdgeGateway) -> bool:
    return gateway.uplink.sent_frames > 10

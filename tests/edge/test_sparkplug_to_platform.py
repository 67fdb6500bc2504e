"""Sparkplug B end to end: a real edge gateway -> a real Mosquitto -> the platform's host.

The gateway reads a pymodbus device and publishes as a Sparkplug edge node
(``[uplink] protocol = "sparkplug"``); the platform's Sparkplug host registers the device from
its DBIRTH and stores its values. Covers: the device appearing with a thing model from its
birth, values stored at the times the gateway read them (each once), a platform ``write``
reaching the Modbus registers as DCMD, a broker outage whose backlog arrives complete at its
original times, and a stopped gateway taking its devices offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.edge.conftest import ModbusPeer, StoppableModbusPeer
from tests.platform.conftest import PlatformEnv, running_platform
from tests.servers import MosquittoProcess
from tiangong.edge.config import EdgeConfig
from tiangong.edge.gateway import EdgeGateway
from tiangong.edge.sparkplug_uplink import SparkplugUplink
from tiangong.edge.thing_model import GATEWAY_MODEL
from tiangong.network.modbus import RegisterPoint, decode_value
from tiangong.network.mqtt import MqttClient, Subscription
from tiangong.network.sparkplug import (
    Data,
    DeviceBorn,
    HostApplication,
    MetricSample,
    NodeDied,
    decode_payload,
)
from tiangong.platform.model import DeviceState
from tiangong.platform.tsdb.base import Aggregate

pytestmark = pytest.mark.mosquitto

GATEWAY = "gw-sp"
TEMP = RegisterPoint("temp", "holding", 0, "int16", scale=0.1)
COUNT = RegisterPoint("count", "holding", 2, "uint32")
SETPOINT = RegisterPoint("setpoint", "holding", 10, "float32", word_order="little")
RUNNING = RegisterPoint("running", "coil", 0, "bool")
VALUES = ("temp", "count", "setpoint", "running")


def edge_config(
    tmp_path: Path, modbus_port: int, mqtt_port: int, *, rules: list[dict[str, Any]] | None = None
) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "rules": rules or [],
            "gateway": {
                "id": GATEWAY,
                "tenant": "acme",
                "site": "p1",
                "data_dir": str(tmp_path / "edge"),
            },
            "uplink": {
                "host": "127.0.0.1",
                "port": mqtt_port,
                "flush_ms": 50,
                "protocol": "sparkplug",
            },
            "devices": [
                {
                    "id": "press-1",
                    "protocol": "modbus",
                    "host": "127.0.0.1",
                    "port": modbus_port,
                    "poll_ms": 50,
                    "timeout_ms": 200,
                    "points": [
                        {"property": "temp", "address": 0, "type": "int16", "scale": 0.1},
                        {"property": "count", "address": 2, "type": "uint32"},
                        {
                            "property": "setpoint",
                            "address": 10,
                            "type": "float32",
                            "word_order": "little",
                            "writable": True,
                        },
                        {"property": "running", "table": "coil", "address": 0, "type": "bool"},
                    ],
                }
            ],
        }
    )


async def register_gateway(env: PlatformEnv) -> str:
    """The gateway is registered; its devices are not (their DBIRTH registers them)."""
    registry = env.platform.registry
    await registry.put_thing_model("acme", GATEWAY_MODEL)
    _, secret = await registry.register_device(
        tenant_id="acme", site_id="p1", device_id=GATEWAY, model_id=GATEWAY_MODEL.id
    )
    return secret


async def prime(peer: ModbusPeer) -> None:
    await peer.set(TEMP, -12.5)
    await peer.set(COUNT, 70_000)
    await peer.set(SETPOINT, 33.25)
    await peer.set(RUNNING, True)


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> None:
    """Poll ``check`` (plain or async) until it is true."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


async def latest(env: PlatformEnv, device: str) -> dict[str, Any]:
    response = await env.api.get(f"/api/v1/devices/{device}/latest")
    if response.status_code != 200:
        return {}
    return {v["metric"]: v["value"] for v in response.json()["values"]}


def state_of(env: PlatformEnv, device: str) -> DeviceState | None:
    entry = env.platform.registry.lookup(device)
    return entry.device.state if entry is not None else None


async def stored(env: PlatformEnv, device: str, metric: str) -> list[tuple[int, Any]]:
    """Every stored point of one series (straight from the store: no page limit)."""
    series = await env.platform.store.device_series("acme", device)
    if metric not in series:
        return []
    now = int(time.time() * 1000)
    return await env.platform.store.query(
        series[metric], now - 3_600_000, now + 60_000, None, Aggregate.AVG
    )


def died_after(env: PlatformEnv, ms: int) -> bool:
    """Whether press-1 went offline (again) after ``ms``."""
    entry = env.platform.registry.lookup("press-1")
    if entry is None or entry.device.state is not DeviceState.OFFLINE:
        return False
    changed = entry.device.state_changed_at
    return changed is not None and changed.timestamp() * 1000 > ms


def uplink_of(gateway: EdgeGateway) -> SparkplugUplink:
    assert isinstance(gateway.uplink, SparkplugUplink)
    return gateway.uplink


@dataclass
class Wiretap:
    """What the gateway put on the wire, decoded by a Sparkplug host application of its own."""

    host: HostApplication
    samples: dict[tuple[str | None, str], list[MetricSample]] = field(default_factory=dict)
    node_deaths: int = 0

    def take(self, topic: str, payload: bytes) -> None:
        for event in self.host.handle_message(topic, payload).events:
            if isinstance(event, DeviceBorn | Data):
                device = event.device_id
                for sample in event.metrics:
                    if sample.value is not None:
                        self.samples.setdefault((device, sample.name), []).append(sample)
            elif isinstance(event, NodeDied):
                self.node_deaths += 1

    def points(self, device: str, metric: str) -> set[tuple[int, Any]]:
        return {(s.timestamp, s.value) for s in self.samples.get((device, metric), [])}


@contextlib.asynccontextmanager
async def wiretap(port: int) -> AsyncIterator[Wiretap]:
    tap = Wiretap(HostApplication(host_id="wiretap"))
    async with MqttClient(host="127.0.0.1", port=port, client_id="sparkplug-wiretap") as client:
        # One filter: "#" also matches the parent level (NBIRTH, NDATA...).
        await client.subscribe(Subscription(f"spBv1.0/p1/+/{GATEWAY}/#", qos=1))

        async def listen() -> None:
            async for message in client.messages():
                client.ack(message)
                tap.take(message.topic, message.payload)

        task = asyncio.create_task(listen())
        try:
            yield tap
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_devices_appear_values_are_stored_as_read_and_writes_reach_the_device(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await prime(modbus_peer)
    port = shared_mosquitto.port
    async with running_platform(tmp_path, mqtt_port=port, sparkplug_enabled=True) as env:
        secret = await register_gateway(env)
        frozen = {
            "name": "press frozen",
            "device": "press-1",
            "property": "temp",
            "op": "<",
            "value": 0,
            "duration_s": 0.1,
            "severity": "major",
        }
        config = edge_config(tmp_path, modbus_peer.port, port, rules=[frozen])
        async with wiretap(port) as tap:
            async with EdgeGateway(config, password=secret, health_interval=0.2) as gateway:

                async def arrived() -> bool:
                    return set(VALUES) <= set(await latest(env, "press-1"))

                await eventually(arrived)
                values = await latest(env, "press-1")
                assert values["temp"] == -12.5
                assert values["count"] == 70_000
                assert values["setpoint"] == 33.25
                assert values["running"] is True
                # The DBIRTH registered the device under its gateway, with a model from it.
                device = (await env.api.get("/api/v1/devices/press-1")).json()
                assert device["gateway_id"] == GATEWAY
                assert device["model_id"] == "spb-press-1"
                assert device["state"] == "online"
                model = (
                    await env.api.get("/api/v1/thing-models/spb-press-1", params={"tenant": "acme"})
                ).json()
                types = {p["id"]: p["type"] for p in model["properties"]}
                assert {k: types[k] for k in VALUES} == {
                    "temp": "float",
                    "count": "int",
                    "setpoint": "float",
                    "running": "bool",
                }
                assert types["link.rtt_ms"] == "float"

                # The gateway's own figures are node metrics, stored under its own model.
                # The health loop may store 0 before press-1's first read: wait for the 1.
                async def one_device_online() -> bool:
                    return (await latest(env, GATEWAY)).get("devices_online") == 1

                await eventually(one_device_online)
                assert state_of(env, GATEWAY) is DeviceState.ONLINE

                # A write through the platform's API: DCMD -> the gateway -> Modbus registers.
                answer = await env.api.post(
                    "/api/v1/devices/press-1/commands/write", json={"params": {"setpoint": 42.5}}
                )
                assert answer.status_code == 200, answer.text
                result = answer.json()["result"]
                assert (result["sent"], result["confirmed"]) == (True, False)
                assert result["topic"] == f"spBv1.0/p1/DCMD/{GATEWAY}/press-1"

                async def written() -> bool:
                    return decode_value(SETPOINT, await modbus_peer.get(10, 2)) == 42.5

                await eventually(written)
                await eventually(lambda: uplink_of(gateway).commands_done == 1)

                async def reported() -> bool:
                    return (await latest(env, "press-1")).get("setpoint") == 42.5

                await eventually(reported)  # the next reading shows it: that is the answer
                assert uplink_of(gateway).commands_failed == 0

                # An alarm raised at the edge (a String node metric "event/edge_alarm") is
                # recorded as the gateway's event, as with the JSON uplink.
                async def alarmed() -> bool:
                    events = await env.platform.registry.list_events("acme", device_id=GATEWAY)
                    return any(e.event == "edge_alarm" for e in events)

                await eventually(alarmed)
                [alarm] = await env.platform.registry.list_events("acme", device_id=GATEWAY)
                assert alarm.data["rule"] == "press frozen"
                assert alarm.data["state"] == "raised"
                assert alarm.severity.value == "major"

            # Stopped: its NDEATH takes the gateway and its device offline.
            await eventually(lambda: state_of(env, GATEWAY) is DeviceState.OFFLINE)
            assert state_of(env, "press-1") is DeviceState.OFFLINE
            await eventually(lambda: tap.node_deaths == 1)
            # Every value the gateway published is stored once, at the time it was read.
            for metric in VALUES:
                points = await stored(env, "press-1", metric)
                assert len(points) == len({t for t, _ in points}), metric  # no repeats
                published = tap.points("press-1", metric)
                assert {(t, _plain(v)) for t, v in points} == published, metric
        assert await env.platform.dead_letters.counts(None) == {}


def _plain(value: Any) -> Any:
    """A stored float as the metric's own type (counts are stored as floats)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


async def _has(env: PlatformEnv, device: str, metric: str) -> bool:
    return metric in await latest(env, device)


@pytest.mark.slow
async def test_a_broker_outage_backlog_arrives_complete_at_its_original_times(
    tmp_path: Path, mosquitto: MosquittoProcess, stoppable_modbus_peer: StoppableModbusPeer
) -> None:
    peer = stoppable_modbus_peer
    await prime(peer)

    async def count_up() -> None:
        value = 0
        while True:
            value = (value + 1) % 1000
            await peer.set(TEMP, value / 10)
            await asyncio.sleep(0.02)

    port = mosquitto.port
    async with running_platform(tmp_path, mqtt_port=port, sparkplug_enabled=True) as env:
        secret = await register_gateway(env)
        config = edge_config(tmp_path, peer.port, port)
        async with (
            EdgeGateway(config, password=secret, health_interval=0.2) as gateway,
            asyncio.TaskGroup() as tasks,
        ):
            counter = tasks.create_task(count_up())

            async def flowing() -> bool:
                return len(await stored(env, "press-1", "temp")) > 5

            await eventually(flowing)
            outage_start = int(time.time() * 1000)
            await asyncio.to_thread(mosquitto.stop)

            async def buffered() -> bool:
                # The plant goes on, on disk (temp changes at every 50 ms poll; a loaded machine
                # polls less often, so the outage lasts until enough was read, not a set time).
                return (await gateway.buffer.stats()).points > 60

            await asyncio.sleep(1.5)
            await eventually(buffered, timeout=30)
            outage_end = int(time.time() * 1000)
            await asyncio.to_thread(mosquitto.start)
            await eventually(lambda: uplink_of(gateway).reconnects >= 1, timeout=30)
            counter.cancel()
            await peer.stop()  # the device goes quiet: the totals can be compared exactly

            async def drained() -> bool:
                return (await gateway.buffer.stats()).frames == 0

            await eventually(drained, timeout=30)
            read = gateway.points_in
            assert (await gateway.buffer.stats()).dropped_points == 0

            async def total() -> int:
                return sum([len(await stored(env, "press-1", m)) for m in VALUES])

            async def all_stored() -> bool:
                return await total() >= read

            await eventually(all_stored, timeout=30)  # none lost
            # Its DDEATH follows its last values: once it is processed, nothing more comes.
            await eventually(lambda: died_after(env, outage_end), timeout=30)
            # Delivery is at least once: a frame the broker took just before it went down, whose
            # PUBACK never came back, is sent again and may be stored twice. Such a copy is the
            # same value at the same time; every point read is stored, none is invented.
            rows = [(m, t, v) for m in VALUES for t, v in await stored(env, "press-1", m)]
            points = {(m, t) for m, t, _ in rows}
            assert len(points) == read
            assert len(set(rows)) == len(points)  # a repeated point repeats its value
            temps = await stored(env, "press-1", "temp")
            during = [t for t, _ in temps if outage_start <= t <= outage_end]
            assert len(during) > 20  # read during the outage, stored at the time they were read
            # The broker may take a message as it goes down, route it to the host after the
            # gateway's NDEATH and never acknowledge it: the host refuses that copy (its
            # session is over), the gateway sends the frame again in its next session.
            # The refused copy may be the device's DDATA or the node's own NDATA (its health).
            times: set[int] = set()
            for device in ("press-1", GATEWAY):
                for metric in await env.platform.store.device_series("acme", device):
                    times |= {t for t, _ in await stored(env, device, metric)}
            for letter in await env.platform.dead_letters.list(None):
                assert letter.reason == "sparkplug_data_before_birth"
                copy = decode_payload(letter.payload)
                assert {m.timestamp for m in copy.metrics} <= times, letter.topic

"""The edge gateway end to end: a real Modbus device, the gateway, a real Mosquitto, the platform.

Covers values flowing up, availability of devices behind the gateway, link figures, commands
going down (Modbus register write) with their answers, and a local rule that raises an alarm
while the uplink is down, delivered once the uplink returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.edge.conftest import ModbusPeer
from tests.faulty_link import FaultyLink
from tests.platform.conftest import PlatformEnv, running_platform
from tests.servers import MosquittoProcess, free_port
from tiangong.edge.config import EdgeConfig
from tiangong.edge.gateway import EdgeGateway
from tiangong.edge.thing_model import GATEWAY_MODEL
from tiangong.network.modbus import RegisterPoint
from tiangong.platform.model import DataType, DeviceState, PropertySpec, ThingModel

pytestmark = pytest.mark.mosquitto

PRESS = ThingModel(
    id="press",
    name="Press",
    properties=[
        PropertySpec(id="temp", type=DataType.FLOAT, unit="degC", min=-40, max=300),
        PropertySpec(id="count", type=DataType.INT, min=0),
        PropertySpec(id="setpoint", type=DataType.FLOAT, min=0, max=100, writable=True),
        PropertySpec(id="running", type=DataType.BOOL),
    ],
)
TEMP = RegisterPoint("temp", "holding", 0, "int16", scale=0.1)
COUNT = RegisterPoint("count", "holding", 2, "uint32")
SETPOINT = RegisterPoint("setpoint", "holding", 10, "float32", word_order="little")
RUNNING = RegisterPoint("running", "coil", 0, "bool")


async def register_gateway(env: PlatformEnv) -> str:
    registry = env.platform.registry
    await registry.put_thing_model("acme", PRESS)
    await registry.put_thing_model("acme", GATEWAY_MODEL)
    _, secret = await registry.register_device(
        tenant_id="acme", site_id="p1", device_id="gw-edge", model_id="edge-gateway"
    )
    await registry.register_device(
        tenant_id="acme",
        site_id="p1",
        device_id="press-1",
        model_id="press",
        gateway_id="gw-edge",
    )
    return secret


def gateway_config(tmp_path: Path, modbus_port: int, mqtt_port: int, **extra: object) -> EdgeConfig:
    document: dict[str, object] = {
        "gateway": {
            "id": "gw-edge",
            "tenant": "acme",
            "site": "p1",
            "data_dir": str(tmp_path / "edge"),
        },
        "uplink": {"host": "127.0.0.1", "port": mqtt_port, "flush_ms": 50},
        "devices": [
            {
                "id": "press-1",
                "protocol": "modbus",
                "host": "127.0.0.1",
                "port": modbus_port,
                "poll_ms": 50,
                "network": {"access": "5g", "slice": "1-000001", "five_qi": 82},
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
        **extra,
    }
    return EdgeConfig.model_validate(document)


@contextlib.asynccontextmanager
async def running_gateway(config: EdgeConfig, secret: str) -> AsyncIterator[EdgeGateway]:
    async with EdgeGateway(config, password=secret, health_interval=0.3) as gateway:
        yield gateway


async def latest(env: PlatformEnv, device: str) -> dict[str, object]:
    response = await env.api.get(f"/api/v1/devices/{device}/latest")
    return {v["metric"]: v["value"] for v in response.json()["values"]}


async def test_values_flow_up_and_commands_flow_down(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await modbus_peer.set(TEMP, -12.5)
    await modbus_peer.set(COUNT, 70_000)
    await modbus_peer.set(SETPOINT, 33.25)
    await modbus_peer.set(RUNNING, True)
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        secret = await register_gateway(env)
        config = gateway_config(tmp_path, modbus_peer.port, shared_mosquitto.port)
        async with running_gateway(config, secret) as gateway:

            async def arrived() -> bool:
                values = await latest(env, "press-1")
                return {"temp", "count", "setpoint", "running", "link.rtt_ms"} <= set(values)

            await env.wait_for(arrived)
            values = await latest(env, "press-1")
            assert values["temp"] == -12.5
            assert values["count"] == 70_000
            assert values["setpoint"] == 33.25
            assert values["running"] is True
            assert values["link.loss_pct"] == 0.0

            async def online() -> bool:
                entry = env.platform.registry.lookup("press-1")
                return entry is not None and entry.device.state is DeviceState.ONLINE

            await env.wait_for(online)
            gateway_values = await latest(env, "gw-edge")
            assert gateway_values["devices_online"] == 1

            # A setpoint written through the platform lands in the device's registers.
            answer = await env.api.post(
                "/api/v1/devices/press-1/commands/write", json={"params": {"setpoint": 42.5}}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"] == {"written": "setpoint", "value": 42.5}
            from tiangong.network.modbus import decode_value  # noqa: PLC0415

            assert decode_value(SETPOINT, await modbus_peer.get(10, 2)) == 42.5
            # The platform refuses what the thing model does not allow, before sending it.
            refused = await env.api.post(
                "/api/v1/devices/press-1/commands/write", json={"params": {"temp": 1}}
            )
            assert refused.status_code == 422
            assert "read-only" in refused.json()["detail"]
            out_of_range = await env.api.post(
                "/api/v1/devices/press-1/commands/write", json={"params": {"setpoint": 500}}
            )
            assert out_of_range.status_code == 422
            unknown = await env.api.post(
                "/api/v1/devices/press-1/commands/calibrate", json={"params": {}}
            )
            assert unknown.status_code == 422
            assert gateway.coordinators["press-1"].link_quality().rtt_ms is not None
        # The gateway's will says it is gone: its devices go offline with it.

        async def offline() -> bool:
            entry = env.platform.registry.lookup("press-1")
            return entry is not None and entry.device.state is DeviceState.OFFLINE

        await env.wait_for(offline)


async def test_a_device_that_stops_answering_goes_offline_and_commands_say_so(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        secret = await register_gateway(env)
        dead_port = free_port()  # nothing listens here
        config = gateway_config(tmp_path, dead_port, shared_mosquitto.port)
        async with running_gateway(config, secret) as gateway:

            async def status_reported() -> bool:
                entry = env.platform.registry.lookup("gw-edge")
                return entry is not None and entry.device.state is DeviceState.ONLINE

            await env.wait_for(status_reported)
            assert gateway.devices_status() == {"press-1": "offline"}
            answer = await env.api.post(
                "/api/v1/devices/press-1/commands/write", json={"params": {"setpoint": 1.0}}
            )
            # The platform still sees press-1 as provisioned, so it refuses before sending.
            assert answer.status_code == 409


async def test_local_rule_alarms_while_the_uplink_is_down(
    tmp_path: Path, modbus_peer: ModbusPeer
) -> None:
    await modbus_peer.set(TEMP, 95.0)
    broker = MosquittoProcess(workdir=tmp_path / "broker")
    # The gateway reaches the broker through a link held shut until the platform's session
    # exists there: a brand-new broker keeps nothing for a subscriber it has never seen.
    try:
        await _alarm_while_the_uplink_is_down(tmp_path, modbus_peer, broker)
    finally:
        await asyncio.to_thread(broker.stop)


async def _alarm_while_the_uplink_is_down(
    tmp_path: Path, modbus_peer: ModbusPeer, broker: MosquittoProcess
) -> None:
    async with (
        running_platform(tmp_path, mqtt_port=broker.port, wait_connected=False) as env,
        FaultyLink("127.0.0.1", broker.port) as link,
    ):
        link.cut()
        secret = await register_gateway(env)
        rule = {
            "name": "press overheating",
            "device": "press-1",
            "property": "temp",
            "op": ">",
            "value": 90,
            "duration_s": 0.2,
            "severity": "critical",
        }
        config = gateway_config(tmp_path, modbus_peer.port, link.port, rules=[rule])
        async with running_gateway(config, secret) as gateway:

            async def raised() -> bool:
                return any(a.active for a in gateway.processor.alarms.values())

            await env.wait_for(raised)  # no broker at all: the alarm is raised at the edge
            assert not gateway.uplink.connected
            stats = await gateway.buffer.stats()
            assert stats.points > 0  # and the data waits on disk
            await asyncio.to_thread(broker.start)
            async with asyncio.timeout(20):
                while env.platform.mqtt is None or not env.platform.mqtt.connected:
                    await asyncio.sleep(0.05)
            link.heal()

            async def delivered() -> bool:
                events = await env.platform.registry.list_events("acme", device_id="gw-edge")
                return any(e.event == "edge_alarm" for e in events)

            await env.wait_for(delivered, timeout=30)
            [event] = [
                e
                for e in await env.platform.registry.list_events("acme", device_id="gw-edge")
                if e.event == "edge_alarm"
            ]
            assert event.data["rule"] == "press overheating"
            assert event.data["state"] == "raised"

            async def drained() -> bool:
                return (await gateway.buffer.stats()).frames == 0

            await env.wait_for(drained, timeout=30)


async def test_a_full_buffer_drops_oldest_data_and_says_so(
    tmp_path: Path, modbus_peer: ModbusPeer
) -> None:
    """The uplink is unreachable and the buffer fills: the oldest data goes, the loss is
    counted, and a ``buffer_overflow`` event waits in the buffer for the platform."""
    await modbus_peer.set(TEMP, 20.0)
    config = gateway_config(tmp_path, modbus_peer.port, free_port())  # nobody listens there
    async with running_gateway(config, "unused") as gateway:
        gateway.buffer.max_bytes = 4000  # below the configuration minimum, to fill it quickly

        async def overflowed() -> bool:
            frames = await gateway.buffer.after(0, 1000)
            return any(b"buffer_overflow" in f.payload for f in frames if f.channel == "events")

        async with asyncio.timeout(20):
            while not await overflowed():
                await asyncio.sleep(0.1)
        stats = await gateway.buffer.stats()
        assert stats.dropped_points > 0
        assert stats.bytes <= 4000 + 2000  # one frame over at most
        [event] = [
            e
            for f in await gateway.buffer.after(0, 1000)
            if f.channel == "events"
            for e in orjson.loads(f.payload)["events"]
            if e["event"] == "buffer_overflow"
        ]
        assert event["data"]["policy"] == "drop_oldest"
        assert 0 < event["data"]["points"] <= stats.dropped_points

"""Devices that push: MQTT devices on a plant-floor broker and devices that can only POST.

A real Mosquitto acts as the plant-floor broker the sensors publish to; an HTTP client posts like
a device that can only do HTTP. Their values reach the platform; bad documents and wrong tokens
are refused with reasons; a device that falls silent goes offline without the gateway tearing
down its broker connection, and comes back when it speaks again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.platform.conftest import PlatformEnv, running_platform
from tests.servers import MosquittoProcess
from tiangong.edge.adapters.mqtt import MqttAdapter
from tiangong.edge.config import EdgeConfig
from tiangong.edge.coordinator import Availability
from tiangong.edge.gateway import EdgeGateway
from tiangong.edge.thing_model import GATEWAY_MODEL
from tiangong.network.mqtt import MqttClient
from tiangong.platform.model import DataType, PropertySpec, ThingModel

pytestmark = pytest.mark.mosquitto

SENSOR = ThingModel(
    id="sensor",
    name="Sensor",
    properties=[
        PropertySpec(id="temp", type=DataType.FLOAT, unit="degC"),
        PropertySpec(id="humidity", type=DataType.FLOAT, unit="%"),
    ],
)
PUSH_TOKEN = "push-token-0123456789abcdef"


async def register(env: PlatformEnv) -> str:
    registry = env.platform.registry
    await registry.put_thing_model("acme", SENSOR)
    await registry.put_thing_model("acme", GATEWAY_MODEL)
    _, secret = await registry.register_device(
        tenant_id="acme", site_id="p1", device_id="gw-push", model_id="edge-gateway"
    )
    for device in ("th-1", "th-2"):
        await registry.register_device(
            tenant_id="acme",
            site_id="p1",
            device_id=device,
            model_id="sensor",
            gateway_id="gw-push",
        )
    return secret


def config(tmp_path: Path, floor_port: int, uplink_port: int) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "gateway": {
                "id": "gw-push",
                "tenant": "acme",
                "site": "p1",
                "data_dir": str(tmp_path / "edge"),
            },
            "uplink": {"host": "127.0.0.1", "port": uplink_port, "flush_ms": 50},
            "http": {"port": 0},
            "devices": [
                {
                    "id": "th-1",
                    "protocol": "mqtt",
                    "port": floor_port,
                    "stale_after_s": 1.0,
                    "points": [
                        {"property": "temp", "topic": "floor/th-1", "field": "t"},
                        {"property": "humidity", "topic": "floor/th-1", "field": "h"},
                    ],
                },
                {
                    "id": "th-2",
                    "protocol": "http",
                    "token_env": "TH2_TOKEN",
                    "points": [{"property": "temp", "field": "temp"}],
                },
            ],
        }
    )


async def test_mqtt_and_http_push_devices(
    tmp_path: Path,
    shared_mosquitto: MosquittoProcess,
    mosquitto: MosquittoProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TH2_TOKEN", PUSH_TOKEN)
    floor = mosquitto  # the plant-floor broker the sensors publish to
    async with (
        running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env,
        MqttClient(host="127.0.0.1", port=floor.port, client_id="th-1-sensor") as sensor,
    ):
        secret = await register(env)
        async with EdgeGateway(
            config(tmp_path, floor.port, shared_mosquitto.port), password=secret
        ) as gateway:
            assert gateway.http_port is not None
            th1 = gateway.coordinators["th-1"]

            async def publish(payload: bytes) -> None:
                await sensor.publish("floor/th-1", payload, qos=1)

            async def arrived(device: str, metric: str, value: float) -> bool:
                response = await env.api.get(f"/api/v1/devices/{device}/latest")
                values = {v["metric"]: v["value"] for v in response.json()["values"]}
                return values.get(metric) == value

            await env.wait_for(lambda: _connected(gateway))
            await publish(b'{"t": 21.5, "h": 40.0}')
            await env.wait_for(lambda: arrived("th-1", "humidity", 40.0))
            assert await arrived("th-1", "temp", 21.5)
            await publish(b"not json")  # refused and counted; the next good one still counts
            await publish(b'{"t": 22.0}')
            await env.wait_for(lambda: arrived("th-1", "temp", 22.0))
            adapter = th1.adapter
            assert isinstance(adapter, MqttAdapter)
            assert adapter.values.rejected == 1

            # Silent for longer than stale_after_s: offline, the broker connection kept.
            await env.wait_for(lambda: _availability(gateway, "th-1", Availability.OFFLINE))
            assert adapter._client is not None
            connects = adapter._client.stats.connects
            await publish(b'{"t": 23.0}')
            await env.wait_for(lambda: _availability(gateway, "th-1", Availability.ONLINE))
            assert adapter._client.stats.connects == connects

            base = f"http://127.0.0.1:{gateway.http_port}"
            async with httpx.AsyncClient(base_url=base) as http:
                good = {"Authorization": f"Bearer {PUSH_TOKEN}"}
                accepted = await http.post("/push/th-2", content=b'{"temp": 30.5}', headers=good)
                assert accepted.status_code == 200, accepted.text
                assert accepted.json() == {"accepted": 1}
                anonymous = await http.post("/push/th-2", content=b'{"temp": 1}')
                assert anonymous.status_code == 401
                wrong = await http.post(
                    "/push/th-2",
                    content=b'{"temp": 1}',
                    headers={"Authorization": "Bearer not-the-token-at-all"},
                )
                assert wrong.status_code == 403
                garbage = await http.post("/push/th-2", content=b"{temp", headers=good)
                assert garbage.status_code == 422
                assert "not JSON" in garbage.text
                unknown = await http.post("/push/th-9", content=b"{}", headers=good)
                assert unknown.status_code == 404
                huge = await http.post("/push/th-2", content=b" " * (1024 * 1024 + 1), headers=good)
                assert huge.status_code == 413
            await env.wait_for(lambda: arrived("th-2", "temp", 30.5))


async def _connected(gateway: EdgeGateway) -> bool:
    adapter = gateway.coordinators["th-1"].adapter
    client = getattr(adapter, "_client", None)
    await asyncio.sleep(0)
    return client is not None and client.connected and gateway.uplink.connected


async def _availability(gateway: EdgeGateway, device: str, wanted: Availability) -> bool:
    return gateway.coordinators[device].availability is wanted

"""Device authentication and topic authorization, on the embedded broker and on a Mosquitto
configured from ``tiangong broker mosquitto-files`` output."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.platform.conftest import running_platform
from tests.servers import MosquittoProcess
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.errors import (
    BadCredentialsError,
    NotAuthorizedError,
    PublishRejectedError,
)
from tiangong.network.mosquitto import render_acl, render_passwd
from tiangong.network.mqtt import MqttClient, ProtocolVersion
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.model import DeviceState

pytestmark = pytest.mark.mosquitto


def topic(device: str, channel: Channel = Channel.TELEMETRY) -> str:
    return DeviceTopic.build("acme", "p1", device, channel)


def sample(value: float) -> bytes:
    return orjson.dumps({"ts": int(time.time() * 1000), "values": {"flow": value}})


async def test_embedded_broker_authenticates_and_authorizes(tmp_path: Path) -> None:
    # Without the Sparkplug host: amqtt 0.12 leaves a socket open when the host's STATE death
    # is being delivered as the embedded broker shuts down, and pytest reports it in the next
    # test. Credentials are what this test is about; see docs/operations.md (embedded broker).
    async with running_platform(tmp_path, embedded_broker=True, sparkplug_enabled=False) as env:
        v311 = {"version": ProtocolVersion.V311}
        # Anonymous and wrong passwords are refused.
        with pytest.raises((BadCredentialsError, NotAuthorizedError)):
            async with MqttClient(host="127.0.0.1", port=env.mqtt_port, client_id="anon", **v311):
                pass
        with pytest.raises((BadCredentialsError, NotAuthorizedError)):
            async with MqttClient(
                host="127.0.0.1",
                port=env.mqtt_port,
                client_id="pump-1",
                username="pump-1",
                password="wrong-password-123",
                **v311,
            ):
                pass
        # A decommissioned device's credentials are dead.
        with pytest.raises((BadCredentialsError, NotAuthorizedError)):
            async with env.client("old-1", **v311):
                pass
        async with env.client("pump-1", **v311) as pump:
            await pump.publish(topic("pump-1"), sample(1.0), qos=1)
            # Publishing on another device's topic: the broker drops it (3.1.1 has no refusal).
            await pump.publish(topic("pump-2"), sample(2.0), qos=1)

            async def own_stored() -> bool:
                return await env.stored() >= 1

            await env.wait_for(own_stored)
            await asyncio.sleep(0.5)
            assert await env.stored() == 1
            series = await env.platform.store.device_series("acme", "pump-2")
            assert series == {}
            metrics = (await env.api.get("/metrics")).text
            assert 'tiangong_broker_acl_denials_total{action="publish"} 1.0' in metrics
            assert "tiangong_broker_auth_failures_total 3.0" in metrics
            # The embedded broker reports presence: connected means online.
            entry = env.platform.registry.lookup("pump-1")
            assert entry is not None
            assert entry.device.state is DeviceState.ONLINE

        # Disconnecting makes it offline; no status message needed on the embedded broker.
        async def offline() -> bool:
            e = env.platform.registry.lookup("pump-1")
            return e is not None and e.device.state is DeviceState.OFFLINE

        await env.wait_for(offline)


async def test_rotated_and_decommissioned_credentials_stop_working(tmp_path: Path) -> None:
    # Without the Sparkplug host: amqtt 0.12 leaves a socket open when the host's STATE death
    # is being delivered as the embedded broker shuts down, and pytest reports it in the next
    # test. Credentials are what this test is about; see docs/operations.md (embedded broker).
    async with running_platform(tmp_path, embedded_broker=True, sparkplug_enabled=False) as env:
        v311 = {"version": ProtocolVersion.V311}
        old_secret = env.secrets["pump-1"]
        response = await env.api.post("/api/v1/devices/pump-1/credentials")
        assert response.status_code == 200
        new_secret = response.json()["password"]
        with pytest.raises((BadCredentialsError, NotAuthorizedError)):
            async with MqttClient(
                host="127.0.0.1",
                port=env.mqtt_port,
                client_id="pump-1",
                username="pump-1",
                password=old_secret,
                **v311,
            ):
                pass
        async with MqttClient(
            host="127.0.0.1",
            port=env.mqtt_port,
            client_id="pump-1",
            username="pump-1",
            password=new_secret,
            **v311,
        ):
            pass
        await env.platform.registry.apply_lifecycle(
            "pump-1", LifecycleTrigger.DECOMMISSION, reason="test"
        )
        with pytest.raises((BadCredentialsError, NotAuthorizedError)):
            async with MqttClient(
                host="127.0.0.1",
                port=env.mqtt_port,
                client_id="pump-1",
                username="pump-1",
                password=new_secret,
                **v311,
            ):
                pass


async def test_mosquitto_with_generated_files_enforces_the_same_rules(tmp_path: Path) -> None:
    """Render the registry into a Mosquitto password file and ACL; Mosquitto then refuses a
    device publishing on another device's topic (MQTT 5 PUBACK 0x87) and the platform, logged
    in as its service user, receives only what devices may send."""
    service_password = "platform-service-secret-0123456789"
    broker = MosquittoProcess(workdir=tmp_path / "mosquitto")
    async with running_platform(
        tmp_path,
        mqtt_port=broker.port,
        mqtt_username="tiangong-platform",
        mqtt_password=service_password,
        wait_connected=False,
    ) as env:
        registry = env.platform.registry
        devices = [
            (e.device.tenant_id, e.device.site_id, e.device.id)
            for d, _ in registry.credentials()
            if (e := registry.lookup(d)) is not None
        ]
        passwd = tmp_path / "passwd"
        passwd.write_text(render_passwd(registry.credentials()))
        await asyncio.to_thread(
            subprocess.run,
            ["mosquitto_passwd", "-b", str(passwd), "tiangong-platform", service_password],
            check=True,
        )
        acl = tmp_path / "acl"
        acl.write_text(render_acl(devices, service_users=["tiangong-platform"]))
        broker.extra_config = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
        await asyncio.to_thread(broker.start)
        try:
            async with asyncio.timeout(20):
                while env.platform.mqtt is None or not env.platform.mqtt.connected:
                    await asyncio.sleep(0.1)
            assert "old-1" not in passwd.read_text()  # decommissioned: no credentials exported
            async with env.client("pump-1") as pump:
                await pump.publish(topic("pump-1"), sample(1.0), qos=1)
                with pytest.raises(PublishRejectedError) as refused:
                    await pump.publish(topic("pump-2"), sample(2.0), qos=1)
                assert refused.value.reason_code == 0x87

            async def stored() -> bool:
                return await env.stored() >= 1

            await env.wait_for(stored)
            assert await env.platform.store.device_series("acme", "pump-2") == {}
            with pytest.raises((BadCredentialsError, NotAuthorizedError)):
                async with MqttClient(
                    host="127.0.0.1",
                    port=broker.port,
                    client_id="x",
                    username="pump-1",
                    password="not-the-secret",
                ):
                    pass
        finally:
            await asyncio.to_thread(broker.stop)


async def test_a_wrong_password_does_not_take_over_a_connected_client(tmp_path: Path) -> None:
    """amqtt would disconnect a connected client when another CONNECT with its client id
    arrives, before checking that one's password: anyone knowing a device's name could knock
    it offline. The embedded broker refuses the impostor first."""
    async with running_platform(tmp_path, embedded_broker=True, sparkplug_enabled=False) as env:
        v311 = {"version": ProtocolVersion.V311}
        async with env.client("pump-1", clean_start=False, **v311) as pump:
            with pytest.raises((BadCredentialsError, NotAuthorizedError)):
                async with MqttClient(
                    host="127.0.0.1",
                    port=env.mqtt_port,
                    client_id="pump-1",
                    username="pump-1",
                    password="guessed-wrong",
                    clean_start=False,  # asks for the connected client's session
                    **v311,
                ):
                    pass
            await asyncio.sleep(0.5)
            assert pump.connected
            assert pump.stats.connects == 1
            await pump.publish(topic("pump-1"), sample(3.0), qos=1)

"""Links made worse on purpose: the figures and the buffering must respond.

A ``FaultyLink`` proxy sits between the gateway and its Modbus device (delay, then loss) and
between the gateway and the broker (delay, then a cut). The device's ``link.*`` figures, the
platform's links view and the gateway's buffer are checked against what was done to the link.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.edge.conftest import ModbusPeer
from tests.edge.test_gateway import PRESS, TEMP, gateway_config, latest, running_gateway
from tests.faulty_link import FaultyLink
from tests.platform.conftest import PlatformEnv, running_platform
from tests.servers import MosquittoProcess
from tiangong.edge.coordinator import Availability
from tiangong.edge.thing_model import GATEWAY_MODEL
from tiangong.network.profile import NetworkProfile

pytestmark = pytest.mark.mosquitto

URLLC = NetworkProfile(access="5g", slice="1-000001", five_qi=82, dnn="plant")


async def register(env: PlatformEnv) -> str:
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
        network=URLLC,
    )
    return secret


async def press_link(env: PlatformEnv, device: str = "press-1") -> dict[str, object]:
    response = await env.api.get("/api/v1/sites/p1/links", params={"tenant": "acme"})
    assert response.status_code == 200, response.text
    [entry] = [d for d in response.json()["devices"] if d["device_id"] == device]
    return entry


async def test_device_link_delay_and_loss_show_in_figures_and_links_view(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await modbus_peer.set(TEMP, 20.0)
    async with (
        FaultyLink("127.0.0.1", modbus_peer.port) as link,
        running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env,
    ):
        secret = await register(env)
        config = gateway_config(tmp_path, link.port, shared_mosquitto.port)
        device = config.devices[0].model_copy(update={"timeout_ms": 300})
        config = config.model_copy(update={"devices": [device]})
        async with running_gateway(config, secret) as gateway:
            press = gateway.coordinators["press-1"]

            async def healthy() -> bool:
                entry = await press_link(env)
                return entry["state"] == "online" and entry["rtt_ms"] is not None

            await env.wait_for(healthy)
            assert (await press_link(env))["degraded"] == []

            # 5G URLLC promises milliseconds; 40 ms each way is a degraded slice.
            link.delay_s, link.jitter_s = 0.040, 0.010

            async def slow() -> bool:
                return (press.link_quality().rtt_ms or 0) > 80

            await env.wait_for(slow, timeout=20)

            # The links view follows the gateway's reports, so it may first show a round trip
            # that is already degraded but still rising; wait for the report of the full delay.
            reported: dict[str, object] = {}

            async def slow_reported() -> bool:
                entry = await press_link(env)
                degraded = any("round trip" in r for r in entry["degraded"])  # type: ignore[union-attr]
                if degraded and (entry["rtt_ms"] or 0) >= 80:  # type: ignore[operator]
                    reported.update(entry)
                    return True
                return False

            await env.wait_for(slow_reported, timeout=20)
            assert reported["jitter_ms"] is not None
            assert reported["loss_pct"] == 0.0

            # Loss: requests or answers that never arrive. The device stays reachable (a single
            # lost request is loss, not an outage) and the loss is measured.
            link.delay_s, link.jitter_s, link.loss = 0.0, 0.0, 0.15

            async def lossy_reported() -> bool:
                entry = await press_link(env)
                return any("loss" in r for r in entry["degraded"])  # type: ignore[union-attr]

            await env.wait_for(lossy_reported, timeout=30)
            assert link.chunks_lost > 0
            assert press.link_quality().loss_pct > 1.0
            values = await latest(env, "press-1")
            assert values["link.loss_pct"] > 1.0  # type: ignore[operator]

            # Healed: the figures come back down over the measuring window.
            link.loss = 0.0

            async def recovered() -> bool:
                return press.link_quality().loss_pct == 0.0

            await env.wait_for(recovered, timeout=30)
            assert press.availability is Availability.ONLINE


async def test_uplink_delay_and_cut_show_in_gateway_figures_and_buffer(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await modbus_peer.set(TEMP, 20.0)
    async with (
        FaultyLink("127.0.0.1", shared_mosquitto.port) as uplink,
        running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env,
    ):
        secret = await register(env)
        config = gateway_config(tmp_path, modbus_peer.port, uplink.port)
        async with running_gateway(config, secret) as gateway:

            async def flowing() -> bool:
                return "uplink_rtt_ms" in await latest(env, "gw-edge")

            await env.wait_for(flowing)
            uplink.delay_s = 0.050

            async def slow() -> bool:
                return (gateway.uplink.rtt_ms or 0) >= 100

            await env.wait_for(slow, timeout=20)

            async def slow_reported() -> bool:
                return (await latest(env, "gw-edge"))["uplink_rtt_ms"] >= 100  # type: ignore[operator]

            await env.wait_for(slow_reported, timeout=20)

            # The cable is cut: points keep being read and wait in the buffer.
            uplink.delay_s = 0.0
            stored_before = await env.stored()
            uplink.cut()
            cut_at = time.monotonic()

            async def buffering() -> bool:
                return (await gateway.buffer.stats()).points > 200

            await env.wait_for(buffering, timeout=20)
            read_during_cut = gateway.points_in
            uplink.heal()
            await uplink.drop_connections()  # the link comes back as a new connection

            async def drained() -> bool:
                return (await gateway.buffer.stats()).frames == 0

            await env.wait_for(drained, timeout=60)
            assert time.monotonic() - cut_at < 60

            async def stored() -> bool:  # acknowledged by the broker, then committed by ingest
                return await env.stored() > stored_before + 200

            await env.wait_for(stored, timeout=20)
            assert gateway.points_in >= read_during_cut
            stats = await gateway.buffer.stats()
            assert stats.dropped_points == 0

            # The outage is in the uplink's own link figures, reported as the gateway's links.
            assert gateway.uplink.link_quality().reconnects >= 1
            assert gateway.uplink.link.failures >= 1

            async def outage_reported() -> bool:
                entry = await press_link(env, "gw-edge")
                return (entry["reconnects"] or 0) >= 1  # type: ignore[operator]

            await env.wait_for(outage_reported, timeout=20)
            entry = await press_link(env, "gw-edge")
            assert entry["rtt_ms"] is not None
            assert entry["loss_pct"] is not None

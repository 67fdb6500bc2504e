"""Per-device ingest limits through the real broker: a flooding device is dead-lettered as
``rate_limited`` while another device's data is all stored; a gateway's budget scales with its
children; every dead letter reaches the rejection listeners.

Rates are low (1 message/s) and bursts known, so outcomes are asserted as counts that hold
however fast the machine is: every message is either stored or dead-lettered, never both or
neither.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.platform.conftest import PlatformEnv, running_platform
from tests.servers import MosquittoProcess
from tiangong.network.access import Channel, DeviceTopic
from tiangong.platform.ingest.pipeline import IngestRejection, IngestSettings

pytestmark = pytest.mark.mosquitto

FLOOD = 300
STEADY = 15  # within its burst of 20


def topic(device: str, tenant: str = "acme") -> str:
    return DeviceTopic.build(tenant, "p1", device, Channel.TELEMETRY)


def reading(ts: int, device: str | None = None) -> bytes:
    sample = {"ts": ts, "values": {"flow": 1.0}}
    return orjson.dumps({"devices": {device: sample}} if device else sample)


async def rate_limited(env: PlatformEnv, tenant: str | None = None) -> int:
    return (await env.platform.dead_letters.counts(tenant)).get("rate_limited", 0)


async def test_a_flooding_device_is_limited_and_the_others_flow_on(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    settings = IngestSettings(device_messages=1.0, device_burst=20.0, device_points=1e6)
    seen: list[IngestRejection] = []

    def broken(rejection: IngestRejection) -> None:
        raise RuntimeError("a listener with a bug")

    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port, ingest=settings) as env:
        env.platform.pipeline.add_rejection_listener(broken)
        env.platform.pipeline.add_rejection_listener(seen.append)
        t = int(time.time() * 1000)
        async with env.client("pump-1") as flooder, env.client("o-pump") as steady:
            for i in range(FLOOD):
                await flooder.publish(topic("pump-1"), reading(t + i), qos=1)
                if i % (FLOOD // STEADY) == 0:
                    await steady.publish(topic("o-pump", "other"), reading(t + i), qos=1)

        async def handled() -> bool:
            store = env.platform.store
            flooded = await store.point_count("acme") + await rate_limited(env, "acme")
            return flooded >= FLOOD and await store.point_count("other") >= STEADY

        await env.wait_for(handled, timeout=60)
        limited = await rate_limited(env, "acme")
        assert limited >= FLOOD - 20 - 60  # the burst, and at most a minute of refill
        # Nothing lost: each flooded message is stored or kept as a dead letter.
        assert await env.platform.store.point_count("acme") + limited == FLOOD
        # The other device was not held back at all.
        assert await env.platform.store.point_count("other") == STEADY
        assert await rate_limited(env, "other") == 0
        rows = await env.platform.dead_letters.list("acme", reason="rate_limited", limit=5)
        assert {row.device_id for row in rows} == {"pump-1"}
        assert "slow down" in rows[0].detail
        assert rows[0].payload  # the refused reading is kept with its dead letter
        # The listeners saw every one, despite the broken one before them.
        assert len([r for r in seen if r.reason == "rate_limited"]) == limited
        assert {(r.tenant_id, r.device_id, r.topic) for r in seen} == {
            ("acme", "pump-1", topic("pump-1"))
        }
        metrics = (await env.api.get("/metrics")).text
        assert f"tiangong_ingest_rate_limited_messages_total {float(limited)}" in metrics
        assert f'tiangong_ingest_dead_letters_total{{reason="rate_limited"}} {float(limited)}' in (
            metrics
        )


async def test_a_gateway_budget_scales_with_its_children_and_points_are_limited(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    # 1 message/s and 100 points/s per device, 20 s of burst: 20 messages, 2000 points.
    settings = IngestSettings(device_messages=1.0, device_points=100.0, device_burst=20.0)
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port, ingest=settings) as env:
        t = int(time.time() * 1000)
        sent = 40
        async with env.client("gw-1") as gateway, env.client("pump-2") as pump:
            for i in range(sent):
                # gw-1 speaks for c-1 and c-2: three devices' budget, 60 messages.
                await gateway.publish(topic("gw-1"), reading(t + i, "c-1"), qos=1)
                await pump.publish(topic("pump-2"), reading(t + i), qos=1)

        async def handled() -> bool:
            stored = await env.platform.store.point_count("acme")
            return stored + await rate_limited(env) >= 2 * sent

        await env.wait_for(handled, timeout=60)
        rows = await env.platform.dead_letters.list("acme", reason="rate_limited", limit=100)
        by_device = {row.device_id for row in rows}
        assert "gw-1" not in by_device  # all 40 within its scaled burst
        assert by_device == {"pump-2"}  # 40 > 20 and a minute refills less than 20 more
        assert await env.platform.store.point_count("acme") + len(rows) == 2 * sent

        # Points: one message of 1500 values passes, the next one does not.
        big = orjson.dumps(
            {"ts": list(range(t + 1000, t + 2500)), "values": {"flow": [1.0] * 1500}}
        )
        before = await rate_limited(env)
        stored = await env.platform.store.point_count("acme")
        async with env.client("pump-1") as pump1:
            await pump1.publish(topic("pump-1"), big, qos=1)
            big2 = orjson.dumps(
                {"ts": list(range(t + 3000, t + 4500)), "values": {"flow": [2.0] * 1500}}
            )
            await pump1.publish(topic("pump-1"), big2, qos=1)

        async def both() -> bool:
            limited = await rate_limited(env) - before
            return limited + (await env.platform.store.point_count("acme") - stored) >= 1 + 1500

        await env.wait_for(both, timeout=60)
        assert await rate_limited(env) == before + 1
        assert await env.platform.store.point_count("acme") == stored + 1500
        [row] = await env.platform.dead_letters.list(
            "acme", device_id="pump-1", reason="rate_limited"
        )
        assert row.points == 1500
        assert "data points per second" in row.detail

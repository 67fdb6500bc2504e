"""Ingest end to end: devices publish to a real Mosquitto, the platform stores and refuses.

Covers the issue's list of bad input and faults: malformed JSON, wrong types, unknown metrics,
timestamps far in the future or past, oversized messages, a device publishing where it does not
belong, redelivery, a broker restart mid-stream, and a store that refuses writes for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import orjson
import pytest

from tests.platform.conftest import PlatformEnv, running_platform
from tests.platform.probes import eventually, latest, state_of
from tests.servers import MosquittoProcess
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.mqtt import Will
from tiangong.network.mqtt.client import InboundMessage
from tiangong.platform.errors import StoreUnavailableError
from tiangong.platform.ingest.pipeline import IngestSettings
from tiangong.platform.model import DeviceState
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings

pytestmark = pytest.mark.mosquitto


def topic(
    device: str, channel: Channel = Channel.TELEMETRY, site: str = "p1", tenant: str = "acme"
) -> str:
    return DeviceTopic.build(tenant, site, device, channel)


def now_ms() -> int:
    return int(time.time() * 1000)


async def dead_letter_reasons(env: PlatformEnv) -> dict[str, int]:
    return await env.platform.dead_letters.counts(None)


async def test_all_payload_shapes_are_stored_and_queryable(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        t = now_ms()
        async with env.client("pump-1") as pump, env.client("gw-1") as gw:
            await pump.publish(
                topic("pump-1"), orjson.dumps({"ts": t, "values": {"flow": 1.5}}), qos=1
            )
            await pump.publish(
                topic("pump-1"),
                orjson.dumps(
                    {
                        "samples": [
                            {"ts": t + 1, "values": {"flow": 2, "state": "running"}},
                            {"ts": t + 2, "values": {"note": "valve B open"}},
                        ]
                    }
                ),
                qos=1,
            )
            await pump.publish(
                topic("pump-1"),
                orjson.dumps({"ts": [t + 3, t + 4, t + 5], "values": {"temp": [40.1, 40.2, 40.3]}}),
                qos=1,
            )
            await gw.publish(
                topic("gw-1"),
                orjson.dumps(
                    {
                        "devices": {
                            "c-1": {"ts": [t, t + 1], "values": {"flow": [10, 11]}},
                            "c-2": {"ts": t, "values": {"flow": 20, "state": "idle"}},
                        }
                    }
                ),
                qos=1,
            )

        async def all_in() -> bool:
            return env.platform.pipeline.points_committed >= 11

        await env.wait_for(all_in)
        latest = (await env.api.get("/api/v1/devices/pump-1/latest")).json()["values"]
        assert {v["metric"]: v["value"] for v in latest} == {
            "flow": 2.0,
            "state": "running",
            "note": "valve B open",
            "temp": 40.3,
        }
        temp = (
            await env.api.get(
                "/api/v1/devices/pump-1/telemetry", params={"metric": "temp", "start": "-1h"}
            )
        ).json()
        assert [v for _, v in temp["points"]] == [40.1, 40.2, 40.3]
        child = (await env.api.get("/api/v1/devices/c-2/latest")).json()["values"]
        assert {v["metric"]: v["value"] for v in child} == {"flow": 20.0, "state": "idle"}
        assert await dead_letter_reasons(env) == {}
        device = (await env.api.get("/api/v1/devices/c-1")).json()
        assert device["state"] == "online"  # data from a provisioned device brings it online


async def test_bad_input_is_dead_lettered_and_good_data_around_it_is_kept(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(
        tmp_path, mqtt_port=shared_mosquitto.port, max_message_bytes=64 * 1024
    ) as env:
        t = now_ms()
        good = orjson.dumps({"ts": [t, t + 1], "values": {"flow": [1.0, 2.0]}})
        bad = [
            (topic("pump-1"), b"{this is not json"),
            (topic("pump-1"), orjson.dumps({"ts": t + 2, "values": {"flow": "fast"}})),
            (topic("pump-1"), orjson.dumps({"ts": t + 3, "values": {"pressure": 3.2}})),
            (topic("pump-1"), orjson.dumps({"ts": t + 3_600_000, "values": {"flow": 3}})),
            (topic("pump-1"), orjson.dumps({"ts": t - 400 * 86_400_000, "values": {"flow": 3}})),
            (
                topic("pump-1"),
                orjson.dumps(
                    {"ts": list(range(t, t + 20_000)), "values": {"flow": [1.0] * 20_000}}
                ),
            ),  # > 64 KiB
            (topic("ghost-9"), good),  # unknown device
            (topic("pump-1", site="p2"), good),  # real device, wrong site in the topic
            (topic("pump-1", tenant="other"), good),  # real device, another tenant's path
            (topic("old-1"), good),  # decommissioned
            (
                topic("gw-1"),
                orjson.dumps({"devices": {"pump-2": {"ts": t, "values": {"flow": 1}}}}),
            ),
            ("tg/v1/acme/p1/bad device!/telemetry", good),  # not a valid name
        ]
        async with env.client("pump-1") as sender:
            await sender.publish(topic("pump-1"), good, qos=1)
            for where, payload in bad:
                await sender.publish(where, payload, qos=1)
            last = orjson.dumps({"ts": [t + 10, t + 11], "values": {"flow": [5.0, 6.0]}})
            await sender.publish(topic("pump-1"), last, qos=1)

        async def handled() -> bool:
            return env.platform.pipeline.messages_committed >= len(bad) + 2

        await env.wait_for(handled)
        assert await env.stored() == 4  # the two good messages, nothing else
        assert await dead_letter_reasons(env) == {
            "malformed_json": 1,
            "wrong_type": 1,
            "unknown_metric": 1,
            "timestamp_out_of_range": 2,
            "oversized": 1,
            "unknown_device": 1,
            "topic_mismatch": 2,
            "decommissioned": 1,
            "not_your_device": 1,
            "bad_topic": 1,
        }
        # Each refusal says why, in words an operator can act on.
        rows = (await env.api.get("/api/v1/dead-letters", params={"limit": 50})).json()
        details = {r["reason"]: r["detail"] for r in rows}
        assert "not behind gateway 'gw-1'" in details["not_your_device"]
        assert "belongs to acme/p1" in details["topic_mismatch"]
        assert "split the batch" in details["oversized"]
        metrics = (await env.api.get("/metrics")).text
        assert 'tiangong_ingest_dead_letters_total{reason="malformed_json"} 1.0' in metrics
        assert 'tiangong_ingest_points_total{outcome="accepted"} 4.0' in metrics


async def test_unknown_tenant_claims_do_not_reach_that_tenant(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        async with env.client("intruder") as sender:
            await sender.publish(topic("ghost", tenant="acme"), b"{}", qos=1)

        # Wait for the dead letter itself: the commit counter can move before its row is
        # readable (and a message of the broker's own could be counted first).
        async def filed() -> bool:
            return bool(await env.platform.dead_letters.list(None))

        await env.wait_for(filed)
        [row] = await env.platform.dead_letters.list(None)
        assert row.tenant_id is None  # filed for platform admins, not under "acme"
        assert await env.platform.dead_letters.list("acme") == []


async def test_redelivered_messages_are_stored_once(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        payload = orjson.dumps({"ts": [now_ms(), now_ms() + 1], "values": {"flow": [1, 2]}})
        async with env.client("pump-1") as sender:
            for _ in range(3):  # e.g. a device that re-sent after losing its PUBACK
                await sender.publish(topic("pump-1"), payload, qos=1)
            # A message without its own timestamps cannot be recognised, so it is kept.
            for _ in range(2):
                await sender.publish(topic("pump-1"), b'{"values": {"flow": 7}}', qos=1)

        async def handled() -> bool:
            return env.platform.pipeline.messages_committed >= 5

        await env.wait_for(handled)
        assert await env.stored() == 4
        metrics = (await env.api.get("/metrics")).text
        assert "tiangong_ingest_duplicate_messages_total 2.0" in metrics


async def test_status_and_last_will_drive_online_offline(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    # Its own broker: the retained status messages of this test must not reach other tests.
    async with running_platform(tmp_path, mqtt_port=mosquitto.port) as env:
        status = topic("pump-2", Channel.STATUS)
        device = env.client("pump-2", will=Will(topic=status, payload=b"offline", retain=True))
        await device.__aenter__()
        await device.publish(status, b"online", qos=1, retain=True)

        async def state_is(state: DeviceState) -> bool:
            entry = env.platform.registry.lookup("pump-2")
            return entry is not None and entry.device.state is state

        await env.wait_for(lambda: state_is(DeviceState.ONLINE))
        device.abort()  # the link breaks: Mosquitto publishes the will
        await env.wait_for(lambda: state_is(DeviceState.OFFLINE))
        await device.__aexit__(None, None, None)
        history = (await env.api.get("/api/v1/devices/pump-2/transitions")).json()
        assert [(h["from"], h["to"]) for h in history] == [
            ("online", "offline"),
            ("provisioned", "online"),
        ]
        assert history[0]["reason"].startswith("status")
        assert history[0]["reason"].endswith("offline")


async def test_broker_restart_mid_stream_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    """Mosquitto is restarted while a device streams: every published point is stored once."""
    async with running_platform(tmp_path, mqtt_port=mosquitto.port) as env:
        sent = 0
        base = now_ms()

        async def stream() -> None:
            nonlocal sent
            async with env.client("pump-1", clean_start=False, session_expiry=3600) as sender:
                for i in range(300):
                    ts = [base + i * 10 + k for k in range(10)]
                    await sender.publish(
                        topic("pump-1"),
                        orjson.dumps({"ts": ts, "values": {"flow": [float(i)] * 10}}),
                        qos=1,
                    )
                    sent += 10
                    await asyncio.sleep(0.01)

        streaming = asyncio.create_task(stream())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(mosquitto.restart, 1.0)
        await asyncio.wait_for(streaming, 90)

        async def all_stored() -> bool:
            return await env.stored() >= sent

        await env.wait_for(all_stored, timeout=60)
        await asyncio.sleep(1.0)  # anything extra (a duplicate) would show up by now
        assert sent == 3000
        assert await env.stored() == sent
        assert env.platform.mqtt is not None
        assert env.platform.mqtt.stats.connects >= 2


async def test_store_refusing_writes_holds_back_and_loses_nothing(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    """The store refuses writes for two seconds: ingest retries, acknowledges nothing, then
    stores everything; the platform keeps serving the API meanwhile."""
    settings = IngestSettings(retry_initial=0.05, retry_max=0.2)
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port, ingest=settings) as env:
        store = env.platform.store
        refusing = True

        def failure() -> None:
            if refusing:
                raise StoreUnavailableError("simulated: disk refuses writes")

        store.inject_write_failure(failure)  # type: ignore[attr-defined]
        base = now_ms()
        async with env.client("pump-1") as sender:
            for i in range(50):
                payload = orjson.dumps({"ts": base + i, "values": {"flow": float(i)}})
                await sender.publish(topic("pump-1"), payload, qos=1)
            await asyncio.sleep(2.0)
            assert await env.stored() == 0
            assert (await env.api.get("/healthz")).status_code == 200
            refusing = False

            async def all_stored() -> bool:
                return await env.stored() == 50

            await env.wait_for(all_stored)
        metrics = (await env.api.get("/metrics")).text
        failures = next(
            line
            for line in metrics.splitlines()
            if line.startswith("tiangong_store_write_failures_total")
        )
        assert float(failures.split()[-1]) >= 2


async def test_slow_store_applies_backpressure_with_bounded_memory(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    """A store slower than the devices: the platform stops reading from the broker instead of
    buffering, and everything arrives once the store catches up."""
    settings = IngestSettings(max_messages=10, max_groups=1, inbound_messages=50)
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port, ingest=settings) as env:
        store = env.platform.store

        def slow() -> None:
            time.sleep(0.02)  # runs on the store's writer thread

        store.inject_write_failure(slow)  # type: ignore[attr-defined]
        client = env.platform.mqtt
        assert client is not None
        base = now_ms()
        peak = 0
        async with env.client("pump-1") as sender:

            async def publish_all() -> None:
                for i in range(1500):
                    ts = [base + i * 100 + k for k in range(100)]
                    await sender.publish(
                        topic("pump-1"),
                        orjson.dumps({"ts": ts, "values": {"flow": [1.25] * 100}}),
                    )

            publishing = asyncio.create_task(publish_all())
            while not publishing.done() or client.pending_messages():
                peak = max(peak, client.pending_messages())
                await asyncio.sleep(0.01)
            await publishing
            store.inject_write_failure(None)  # type: ignore[attr-defined]

            async def all_stored() -> bool:
                return await env.stored() == 150_000

            await env.wait_for(all_stored, timeout=60)
        # Held in memory at most: the client's inbound bound plus one socket read's worth
        # (a read is at most 256 KiB, about 100 of these 2.5 kB messages), never all 1500.
        assert peak < 50 + 256 * 1024 // 2400 + 50
        assert client.stats.read_pauses >= 1


async def test_platform_restart_keeps_data_and_dedupe_memory(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    payload = orjson.dumps({"ts": now_ms(), "values": {"flow": 3.0}})
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        async with env.client("pump-1") as sender:
            await sender.publish(topic("pump-1"), payload, qos=1)
        async with asyncio.timeout(10):
            while await env.stored() < 1:
                await asyncio.sleep(0.05)
    settings = PlatformSettings.load(
        data_dir=tmp_path / "data",
        http_port=None,
        mqtt_port=shared_mosquitto.port,
        mqtt_client_id="tiangong-test-restart",
    )
    async with Platform(settings) as again:
        assert await again.store.point_count() == 1
        assert again.registry.lookup("pump-1") is not None
        # The digest of the stored message survived: a redelivery is still recognised.
        message = InboundMessage(
            topic=topic("pump-1"),
            payload=payload,
            qos=1,
            retain=False,
            dup=True,
            packet_id=1,
            epoch=0,
            size=len(payload),
        )
        digest = again.pipeline._digest(message)
        assert await again.pipeline._seen_before(message, digest)


async def test_a_message_that_breaks_the_platform_is_dead_lettered_and_ingest_goes_on(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug triggered by one message (injected: no real device can make a validator raise)
    costs that message only: it is dead-lettered and the messages around it are stored."""
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        pipeline = env.platform.pipeline
        real = pipeline._validator

        def fragile(model, tenant):
            validator = real(model, tenant)
            original = validator.validate

            def validate(samples, now):
                if samples.values.get("note") == ["boom"]:
                    raise RuntimeError("injected bug")
                return original(samples, now)

            validator.validate = validate  # type: ignore[method-assign]
            return validator

        monkeypatch.setattr(pipeline, "_validator", fragile)
        t = now_ms()
        async with env.client("pump-1") as sender:
            await sender.publish(
                topic("pump-1"), orjson.dumps({"ts": t, "values": {"flow": 1}}), qos=1
            )
            await sender.publish(
                topic("pump-1"), orjson.dumps({"ts": t + 1, "values": {"note": "boom"}}), qos=1
            )
            await sender.publish(
                topic("pump-1"), orjson.dumps({"ts": t + 2, "values": {"flow": 2}}), qos=1
            )

        async def handled() -> bool:
            return pipeline.messages_committed >= 3

        await env.wait_for(handled)
        assert await env.stored() == 2
        assert await dead_letter_reasons(env) == {"internal_error": 1}
        assert (await env.api.get("/healthz")).json()["broker_connected"] is True


async def test_shutdown_does_not_hang_on_a_refusing_store(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    settings = IngestSettings(shutdown_grace=1.0, retry_initial=0.05, retry_max=0.1)
    started = 0.0
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port, ingest=settings) as env:

        def refuse() -> None:
            raise StoreUnavailableError("simulated: disk refuses writes")

        env.platform.store.inject_write_failure(refuse)  # type: ignore[attr-defined]
        async with env.client("pump-1") as sender:
            await sender.publish(
                topic("pump-1"), orjson.dumps({"ts": now_ms(), "values": {"flow": 1}}), qos=1
            )
        await asyncio.sleep(0.5)
        started = time.monotonic()
    assert time.monotonic() - started < 10  # grace of 1 s, then the rest of the shutdown


async def test_link_figures_of_an_unreachable_device_do_not_make_it_online(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    """A gateway keeps reporting the link figures of a machine it cannot reach (100 % loss);
    those are the gateway's measurements, so the machine stays offline until it answers."""
    async with running_platform(tmp_path, mqtt_port=mosquitto.port) as env:
        async with env.client("gw-1") as gw:
            status = {"state": "online", "devices": {"c-1": "online", "c-2": "offline"}}
            await gw.publish(topic("gw-1", Channel.STATUS), orjson.dumps(status), qos=1)
            await eventually(lambda: state_of(env, "c-1") is DeviceState.ONLINE, timeout=15)
            link_only = {"ts": now_ms(), "values": {"link.loss_pct": 100.0, "link.reconnects": 9}}
            await gw.publish(topic("gw-1"), orjson.dumps({"devices": {"c-2": link_only}}), qos=1)
            await env.wait_for(lambda: _has(env, "c-2", "link.loss_pct"))
            assert state_of(env, "c-2") is not DeviceState.ONLINE
            # Backlog sampled before the gateway lost it: stored, but not a return.
            backlog = {"ts": now_ms() - 60_000, "values": {"flow": 11.0}}
            await gw.publish(topic("gw-1"), orjson.dumps({"devices": {"c-2": backlog}}), qos=1)
            await env.wait_for(lambda: _has(env, "c-2", "flow"))
            assert state_of(env, "c-2") is not DeviceState.ONLINE
            reading = {"ts": now_ms(), "values": {"flow": 12.5}}
            await gw.publish(topic("gw-1"), orjson.dumps({"devices": {"c-2": reading}}), qos=1)
            await eventually(lambda: state_of(env, "c-2") is DeviceState.ONLINE, timeout=15)


async def _has(env: PlatformEnv, device: str, metric: str) -> bool:
    return metric in await latest(env, device)


async def test_silent_devices_go_offline_unless_their_gateway_vouches_for_them(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    """A directly connected device that falls silent is marked offline after ``offline_after``;
    a device behind an online gateway may be silent (report by exception) and stays online."""
    silence = 2.0  # offline_after; the detector looks every silence / 2
    async with running_platform(tmp_path, mqtt_port=mosquitto.port, offline_after=silence) as env:
        async with env.client("pump-1") as pump, env.client("gw-1") as gw:

            async def gateway_reports_its_link() -> None:
                # The gateway itself is a directly connected device: it stays online by talking
                # (its own link figures, ten times per `silence`) for the whole test.
                while True:
                    health = {"ts": now_ms(), "values": {"link.rtt_ms": 1.5}}
                    await gw.publish(topic("gw-1"), orjson.dumps(health), qos=1)
                    await asyncio.sleep(silence / 10)

            reporter = asyncio.create_task(gateway_reports_its_link())
            try:
                reading = {"ts": now_ms(), "values": {"flow": 1.0}}
                await pump.publish(topic("pump-1"), orjson.dumps(reading), qos=1)
                status = orjson.dumps({"state": "online", "devices": {"c-1": "online"}})
                await gw.publish(topic("gw-1", Channel.STATUS), status, qos=1)
                await eventually(lambda: state_of(env, "c-1") is DeviceState.ONLINE, timeout=15)
                # Neither pump-1 nor c-1 sends data from here on.
                await eventually(lambda: state_of(env, "pump-1") is DeviceState.OFFLINE, timeout=15)
                history = (await env.api.get("/api/v1/devices/pump-1/transitions")).json()
                assert [(h["from"], h["to"]) for h in history] == [
                    ("online", "offline"),
                    ("provisioned", "online"),
                ]
                assert "silent" in history[0]["reason"]
                # c-1 fell silent just after pump-1: give the detector time to see it silent too.
                await asyncio.sleep(silence * 1.5 + 0.5)
                assert state_of(env, "gw-1") is DeviceState.ONLINE
                assert state_of(env, "c-1") is DeviceState.ONLINE
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter

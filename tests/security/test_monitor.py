"""Security monitoring: every detector with real inputs, the events API and its roles.

Real inputs: failed sign-ins through the real user service (argon2 and its throttle), a device
publishing outside its topics and a decommissioned device connecting to the real embedded
broker, a decommissioned device's telemetry, a device flooding and a device changing its
firmware through a real Mosquitto and the real ingest pipeline. Certificate refusals are fed as
the broker's ``BrokerRefusal`` records (the TLS handshake that makes them is H3's test).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import MosquittoProcess
from tests.platform.conftest import PlatformEnv, running_platform
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.broker import BrokerRefusal
from tiangong.network.errors import BadCredentialsError, NotAuthorizedError
from tiangong.network.mqtt import MqttClient, ProtocolVersion
from tiangong.platform.ingest.pipeline import IngestRejection
from tiangong.platform.model import DataType, PropertySpec, ThingModel
from tiangong.platform.tokens import ApiRole
from tiangong.security.monitor import (
    EventKind,
    EventSeverity,
    MonitorSettings,
    SecurityEvent,
    SecurityMonitor,
)

pytestmark = pytest.mark.mosquitto

V311 = {"version": ProtocolVersion.V311}


@dataclass(frozen=True)
class Attempt:
    """A login attempt as H1's ``LoginAttempt`` carries it (the monitor takes any such)."""

    username: str
    source: str
    tenant_id: str | None
    ok: bool
    throttled: bool
    at: datetime


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'meta.sqlite3'}")
    yield engine
    await engine.dispose()


def topic(device: str, channel: Channel = Channel.TELEMETRY, site: str = "p1") -> str:
    return DeviceTopic.build("acme", site, device, channel)


async def events_of(
    monitor: SecurityMonitor, kind: EventKind, tenant: str | None = "acme"
) -> list[SecurityEvent]:
    await monitor.drain()
    found, _ = await monitor.events(tenant, kind=kind)
    return found


async def until_event(
    monitor: SecurityMonitor, kind: EventKind, tenant: str | None = "acme"
) -> SecurityEvent:
    async with asyncio.timeout(20):
        while True:
            found = await events_of(monitor, kind, tenant)
            if found:
                return found[0]
            await asyncio.sleep(0.05)


# -- detectors on their own ----------------------------------------------------------------------


async def test_brute_force_is_one_event_that_escalates(engine: AsyncEngine) -> None:
    async with SecurityMonitor(engine=engine) as monitor:
        t0 = datetime.now(UTC)
        for _ in range(4):
            monitor.on_login(Attempt("alice", "10.0.0.9", "acme", False, False, t0))
        assert await events_of(monitor, EventKind.LOGIN_BRUTE_FORCE) == []  # below the threshold
        for i in range(16):
            monitor.on_login(
                Attempt("alice", "10.0.0.9", "acme", False, i > 5, t0 + timedelta(seconds=i))
            )
        [event] = await events_of(monitor, EventKind.LOGIN_BRUTE_FORCE)
        assert event.severity is EventSeverity.HIGH  # 20 failures = 4 x the threshold
        assert event.count == 16  # one occurrence per failure from the fifth on
        assert event.subject == "user:alice"
        assert event.evidence["failures_in_window"] == 20
        assert event.evidence["sources"] == ["10.0.0.9"]
        assert event.evidence["throttled"] == 10
        # Someone else signing in is not affected, and a success of the attacked user after
        # the failures makes it critical: the password may have been guessed.
        monitor.on_login(Attempt("bob", "10.0.0.3", "acme", True, False, t0))
        monitor.on_login(
            Attempt("alice", "10.0.0.9", "acme", True, False, t0 + timedelta(seconds=25))
        )
        [event] = await events_of(monitor, EventKind.LOGIN_BRUTE_FORCE)
        assert event.severity is EventSeverity.CRITICAL
        assert event.evidence["succeeded_from"] == "10.0.0.9"
        # Failures outside the window do not add up.
        late = t0 + timedelta(hours=2)
        for _ in range(4):
            monitor.on_login(Attempt("carol", "10.0.0.5", "acme", False, False, late))
        monitor.on_login(
            Attempt("carol", "10.0.0.5", "acme", False, False, late + timedelta(seconds=1000))
        )
        assert len(await events_of(monitor, EventKind.LOGIN_BRUTE_FORCE)) == 1


async def test_password_spraying_is_keyed_by_source_and_seen_by_platform_admins(
    engine: AsyncEngine,
) -> None:
    async with SecurityMonitor(engine=engine) as monitor:
        at = datetime.now(UTC)
        for i in range(6):
            monitor.on_login(Attempt(f"user{i}", "203.0.113.7", None, False, False, at))
        assert await events_of(monitor, EventKind.LOGIN_BRUTE_FORCE, "acme") == []
        [event] = await events_of(monitor, EventKind.LOGIN_BRUTE_FORCE, None)
        assert event.tenant_id is None
        assert event.subject == "source:203.0.113.7"
        assert len(event.evidence["usernames"]) == 6


async def test_certificate_refusals_by_kind_and_severity(engine: AsyncEngine) -> None:
    async with SecurityMonitor(engine=engine) as monitor:
        for kind in ("certificate_revoked", "certificate_unknown", "certificate_expired"):
            for _ in range(3):
                monitor.on_broker_refusal(
                    BrokerRefusal(
                        kind=kind,
                        username="pump-1",
                        tenant_id="acme",
                        device_id="pump-1",
                        topic=None,
                        source="127.0.0.1:50000",
                        detail=f"{kind} test",
                    )
                )
        monitor.on_broker_refusal(
            BrokerRefusal(
                kind="certificate_foreign",
                username=None,
                tenant_id=None,
                device_id=None,
                topic=None,
                source="198.51.100.4:1234",
                detail="issued by CN=Someone else",
            )
        )
        revoked = await events_of(monitor, EventKind.CERTIFICATE_REVOKED)
        assert [(e.severity, e.count) for e in revoked] == [(EventSeverity.HIGH, 3)]
        assert (await events_of(monitor, EventKind.CERTIFICATE_UNKNOWN))[0].severity == "high"
        assert (await events_of(monitor, EventKind.CERTIFICATE_EXPIRED))[0].severity == "low"
        [foreign] = await events_of(monitor, EventKind.CERTIFICATE_FOREIGN, None)
        assert foreign.severity is EventSeverity.MEDIUM
        assert foreign.source == "198.51.100.4:1234"


async def test_ingest_rejections_decommissioned_and_rate_limited(engine: AsyncEngine) -> None:
    async with SecurityMonitor(engine=engine) as monitor:
        for reason in ("decommissioned", "decommissioned", "unknown_device", "rate_limited"):
            monitor.on_ingest_rejection(
                IngestRejection(
                    reason=reason,
                    tenant_id="acme",
                    device_id="old-1",
                    topic=topic("old-1"),
                    detail="test",
                    at=datetime.now(UTC),
                )
            )
        [event] = await events_of(monitor, EventKind.DECOMMISSIONED_TRAFFIC)
        assert (event.severity, event.count, event.device_id) == ("high", 2, "old-1")
        [limited] = await events_of(monitor, EventKind.RATE_ANOMALY)
        assert "rate_limited" in limited.evidence


async def test_firmware_baseline_survives_a_restart_and_downgrades_are_critical(
    engine: AsyncEngine,
) -> None:
    import numpy as np  # noqa: PLC0415

    from tiangong.platform.ingest.pipeline import AcceptedSamples  # noqa: PLC0415
    from tiangong.platform.ingest.validation import ValidatedSamples  # noqa: PLC0415
    from tiangong.platform.model import Device  # noqa: PLC0415

    device = Device(tenant_id="acme", site_id="p1", id="plc-1", model_id="plc", model_version=1)
    model = ThingModel(id="plc")

    def report(version: str, ts: int) -> list[AcceptedSamples]:
        samples = ValidatedSamples(
            device="plc-1", text={"firmware_version": (np.array([ts]), [version])}
        )
        return [AcceptedSamples(device, model, samples)]

    now = int(time.time() * 1000)
    async with SecurityMonitor(engine=engine) as monitor:
        monitor.observe(report("2.4.1", now))
        assert await events_of(monitor, EventKind.FIRMWARE_CHANGE) == []  # the baseline
    async with SecurityMonitor(engine=engine) as monitor:
        monitor.observe(report("2.3.9", now + 1))
        [event] = await events_of(monitor, EventKind.FIRMWARE_CHANGE)
        assert event.severity is EventSeverity.CRITICAL
        assert event.evidence["previous"] == "2.4.1"
        assert event.evidence["reported"] == "2.3.9"
        assert event.evidence["downgrade"] is True


async def test_a_full_queue_drops_and_counts_without_blocking(engine: AsyncEngine) -> None:
    monitor = SecurityMonitor(engine=engine, settings=MonitorSettings(queue_size=2))
    at = datetime.now(UTC)
    for i in range(5):  # the writer is not running: the queue fills
        monitor.on_ingest_rejection(
            IngestRejection("decommissioned", "acme", f"old-{i}", topic("x"), "", at)
        )
    # Updates of an event already queued take no room.
    monitor.on_ingest_rejection(IngestRejection("decommissioned", "acme", "old-0", "t", "", at))
    assert monitor.dropped == 3
    async with monitor:
        found = await events_of(monitor, EventKind.DECOMMISSIONED_TRAFFIC)
        assert sorted((e.device_id, e.count) for e in found) == [("old-0", 2), ("old-1", 1)]


# -- through the running platform ----------------------------------------------------------------


async def test_failed_sign_ins_through_the_user_service(tmp_path: Path) -> None:
    async with running_platform(tmp_path, embedded_broker=True, sparkplug_enabled=False) as env:
        users = env.platform.users
        await users.create(
            username="alice", password="correct horse battery 9", role=ApiRole.VIEWER,
            tenant_id="acme",
        )  # fmt: skip
        await users.create(
            username="bob", password="another good phrase 7", role=ApiRole.VIEWER,
            tenant_id="acme",
        )  # fmt: skip
        for _ in range(8):
            with pytest.raises(Exception, match=r"(?i)refused|throttled|too many|wrong"):
                await users.login("alice", "guess-password-1", source="192.0.2.10")
        # Other users still sign in.
        await users.login("bob", "another good phrase 7", source="192.0.2.11")
        event = await until_event(env.platform.security, EventKind.LOGIN_BRUTE_FORCE)
        assert event.username == "alice"
        assert event.evidence["failures_in_window"] >= 5
        assert event.severity in (EventSeverity.MEDIUM, EventSeverity.HIGH)


async def test_broker_refusals_from_the_embedded_broker(tmp_path: Path) -> None:
    async with running_platform(tmp_path, embedded_broker=True, sparkplug_enabled=False) as env:
        monitor = env.platform.security
        # A decommissioned device's credentials.
        with pytest.raises((BadCredentialsError, NotAuthorizedError)):
            async with env.client("old-1", **V311):
                pass
        event = await until_event(monitor, EventKind.DECOMMISSIONED_TRAFFIC)
        assert event.device_id == "old-1"
        # Publishing and subscribing outside its own topics.
        async with env.client("pump-1", **V311) as pump:
            await pump.publish(topic("pump-2"), b'{"values": {"flow": 1}}', qos=1)
        event = await until_event(monitor, EventKind.TOPIC_VIOLATION)
        assert event.device_id == "pump-1"
        assert event.evidence["topics"] == [topic("pump-2")]
        assert event.site_id == "p1"
        # Guessing a device's password.
        for _ in range(6):
            with pytest.raises((BadCredentialsError, NotAuthorizedError)):
                async with MqttClient(
                    host="127.0.0.1",
                    port=env.mqtt_port,
                    client_id="pump-2",
                    username="pump-2",
                    password="wrong-password-123",
                    **V311,
                ):
                    pass
        event = await until_event(monitor, EventKind.DEVICE_CREDENTIAL_FAILURES)
        assert event.username == "pump-2"


async def test_decommissioned_telemetry_through_the_pipeline(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        async with env.client("old-1") as device:
            payload = orjson.dumps({"ts": int(time.time() * 1000), "values": {"flow": 3.0}})
            await device.publish(topic("old-1"), payload, qos=1)
        event = await until_event(env.platform.security, EventKind.DECOMMISSIONED_TRAFFIC)
        assert (event.device_id, event.severity) == ("old-1", EventSeverity.HIGH)
        assert "last_publish" in event.evidence


async def test_a_device_far_above_its_rate(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        monitor = env.platform.security
        monitor.settings = MonitorSettings(
            rate_bucket=0.5, rate_warmup=3, rate_factor=10, rate_floor=200
        )
        t = int(time.time() * 1000) - 60_000
        async with env.client("pump-1") as pump, env.client("pump-2") as other:
            # Normal: 2 points every 0.1 s, until four buckets were measured.
            for _ in range(40):
                t += 1
                body = {"ts": t, "values": {"flow": 10.0, "temp": 20.0}}
                await pump.publish(topic("pump-1"), orjson.dumps(body), qos=1)
                await other.publish(topic("pump-2"), orjson.dumps(body), qos=1)
                await asyncio.sleep(0.1)
            assert await events_of(monitor, EventKind.RATE_ANOMALY) == []
            # Then 20,000 points as fast as it can.
            for _ in range(100):
                ts = list(range(t + 1, t + 101))
                t += 100
                body = {"ts": ts, "values": {"flow": [1.0] * 100, "temp": [2.0] * 100}}
                await pump.publish(topic("pump-1"), orjson.dumps(body), qos=1)
        event = await until_event(monitor, EventKind.RATE_ANOMALY)
        assert event.device_id == "pump-1"
        assert event.evidence["points_per_s"] > 10 * event.evidence["baseline_points_per_s"]
        assert [e.device_id for e in await events_of(monitor, EventKind.RATE_ANOMALY)] == ["pump-1"]


PLC_MODEL = ThingModel(
    id="plc",
    properties=[
        PropertySpec(id="firmware_version", type=DataType.STRING),
        PropertySpec(id="config_crc", type=DataType.INT, min=0),
        PropertySpec(id="flow", type=DataType.FLOAT, unit="m3/h"),
    ],
)


async def _report(env: PlatformEnv, client: object, ts: int, **values: object) -> None:
    body = orjson.dumps({"ts": ts, "values": values})
    await client.publish(topic("plc-1"), body, qos=1)  # type: ignore[attr-defined]


async def test_firmware_and_configuration_changes_and_the_api(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        platform = env.platform
        monitor = platform.security
        await platform.registry.put_thing_model("acme", PLC_MODEL)
        for device in ("plc-1", "plc-2"):
            await platform.registry.register_device(
                tenant_id="acme", site_id="p1", device_id=device, model_id="plc"
            )
        t = int(time.time() * 1000)
        async with env.client("plc-1") as plc:
            await _report(env, plc, t, firmware_version="3.1.0", config_crc=4711, flow=1.0)
            await _report(env, plc, t + 1, firmware_version="3.1.0", config_crc=4711, flow=2.0)
            await _report(env, plc, t + 2, firmware_version="3.2.0", config_crc=4711, flow=2.0)
            firmware = await until_event(monitor, EventKind.FIRMWARE_CHANGE)
            assert firmware.severity is EventSeverity.HIGH
            assert (firmware.evidence["previous"], firmware.evidence["reported"]) == (
                "3.1.0",
                "3.2.0",
            )
            await _report(env, plc, t + 3, firmware_version="3.2.0", config_crc=4712, flow=2.0)
            config = await until_event(monitor, EventKind.CONFIG_CHANGE)
            assert config.severity is EventSeverity.MEDIUM

            # Tokens of every role, and one of another tenant.
            tokens = {}
            for role in (ApiRole.TENANT_ADMIN, ApiRole.AUDITOR, ApiRole.OPERATOR, ApiRole.VIEWER):
                _, tokens[role.value] = await platform.tokens.create(
                    name=f"{role.value}-token", role=role, tenant_id="acme"
                )
            _, tokens["other_admin"] = await platform.tokens.create(
                name="other-admin", role=ApiRole.TENANT_ADMIN, tenant_id="other"
            )

            def auth(name: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {tokens[name]}"}

            api = env.api
            # A change inside a maintenance window opened by the tenant administrator: no event.
            window = await api.post(
                "/api/v1/security/maintenance",
                json={"device_id": "plc-1", "hours": 1, "reason": "CHG-1001 firmware 3.3"},
                headers=auth("tenant_admin"),
            )
            assert window.status_code == 201, window.text
            refused = await api.post(
                "/api/v1/security/maintenance",
                json={"device_id": "plc-1", "hours": 1, "reason": "x"},
                headers=auth("auditor"),
            )
            assert refused.status_code == 403
            await _report(env, plc, t + 4, firmware_version="3.3.0", config_crc=4712, flow=2.0)
            await _report(env, plc, t + 5, flow=3.0)

            async def flow_stored() -> bool:
                series = await platform.store.device_series("acme", "plc-1")
                latest = await platform.store.latest([series["flow"]])
                return latest[series["flow"]].value == 3.0

            await env.wait_for(flow_stored)
            await monitor.drain()
            [firmware] = await events_of(monitor, EventKind.FIRMWARE_CHANGE)
            assert firmware.count == 1

        # The API: filters, tenant confinement, least privilege.
        listed = await api.get(
            "/api/v1/security/events",
            params={"kind": "firmware_change", "device": "plc-1"},
            headers=auth("auditor"),
        )
        assert listed.status_code == 200, listed.text
        assert [e["id"] for e in listed.json()["items"]] == [firmware.id]
        high = await api.get(
            "/api/v1/security/events", params={"severity": "high"}, headers=auth("tenant_admin")
        )
        assert [e["kind"] for e in high.json()["items"]] == ["firmware_change"]
        for role in ("operator", "viewer"):
            assert (await api.get("/api/v1/security/events", headers=auth(role))).status_code == 403
        other = await api.get("/api/v1/security/events", headers=auth("other_admin"))
        assert other.json() == {"items": [], "total": 0}
        assert (
            await api.get(f"/api/v1/security/events/{firmware.id}", headers=auth("other_admin"))
        ).status_code == 404
        assert (
            await api.get(
                "/api/v1/security/events", params={"tenant": "acme"}, headers=auth("other_admin")
            )
        ).status_code == 403
        posture = (await api.get("/api/v1/security/posture", headers=auth("auditor"))).json()
        assert posture["by_severity"]["high"] == 1
        assert posture["by_kind"] == {"firmware_change": 1, "config_change": 1}
        assert (posture["open"], posture["acknowledged"], posture["devices_at_risk"]) == (2, 0, 1)

        # Acknowledging: the tenant administrator may, the auditor and the other tenant not.
        path = f"/api/v1/security/events/{firmware.id}/acknowledge"
        assert (await api.post(path, headers=auth("auditor"))).status_code == 403
        assert (await api.post(path, headers=auth("other_admin"))).status_code == 404
        acked = await api.post(path, headers=auth("tenant_admin"))
        assert acked.status_code == 200, acked.text
        assert acked.json()["acknowledged_by"] == "tenant_admin-token"
        posture = (await api.get("/api/v1/security/posture", headers=auth("tenant_admin"))).json()
        assert (posture["open"], posture["acknowledged"], posture["devices_at_risk"]) == (1, 1, 0)
        open_only = await api.get(
            "/api/v1/security/events", params={"open": "true"}, headers=auth("tenant_admin")
        )
        assert [e["kind"] for e in open_only.json()["items"]] == ["config_change"]
        metrics = (await api.get("/metrics")).text
        assert (
            'tiangong_security_events_total{kind="firmware_change",severity="high"} 1.0' in metrics
        )

"""The platform's Sparkplug B host application against a real Mosquitto and raw edge nodes.

Each edge node here is the sans-I/O ``EdgeNode`` core on an ``MqttClient`` of its own, with
the test deciding what goes on the wire: the well-behaved path (births register devices and
derive thing models, data is stored and queryable, deaths mark devices offline, writes go out
as DCMD) and every way a node can misbehave (seq gap, unknown alias, an alias given twice,
garbage, a stale NDEATH, data before birth, an unregistered node, the wrong group, another
gateway's device). Each refusal must be visible as a dead letter or a counter, must leave the
platform running, and must not cost the same node's good data around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform.conftest import PlatformEnv, running_platform
from tests.platform.probes import (
    dead_letters,
    eventually,
    latest,
    now_ms,
    registered_from_birth,
    series,
    state_of,
    wait_latest,
)
from tests.servers import MosquittoProcess
from tiangong.network.mqtt import MqttClient, Subscription, Will
from tiangong.network.sparkplug import (
    BDSEQ_METRIC,
    REBIRTH_METRIC,
    DataType,
    EdgeNode,
    Metric,
    OutboundMessage,
    PayloadData,
    PropertyValue,
    SparkplugTopic,
    WriteRequest,
    decode_payload,
    decode_state,
    encode_payload,
    parse_topic,
)
from tiangong.platform.ingest.dead_letters import DeadLetter
from tiangong.platform.model import DeviceState
from tiangong.platform.service import Platform

pytestmark = pytest.mark.mosquitto

HOST_ID = "tiangong"


# -- a raw edge node on the broker ---------------------------------------------------------------


@dataclass
class RawNode:
    """An edge node whose messages the Sparkplug core builds and the test sends (or not).

    Attributes:
        core: the sans-I/O edge node (aliases, seq, bdSeq, births).
        client: its MQTT connection (user name = the edge node id).
        commands: every NCMD/DCMD received, decoded.
        writes: the writes those commands asked for.
        answer_rebirths: hand what arrives to the core and publish the births a rebirth
            request yields, as a real node does; if not, the test does it (``answer``).
    """

    core: EdgeNode
    client: MqttClient
    commands: list[tuple[str, PayloadData]] = field(default_factory=list)
    writes: list[WriteRequest] = field(default_factory=list)
    answer_rebirths: bool = True

    @property
    def topic_base(self) -> str:
        return f"spBv1.0/{self.core.node.group_id}"

    async def send(self, messages: Iterable[OutboundMessage], *, qos: int | None = None) -> None:
        """Publish, with the QoS the core chose or ``qos``."""
        for message in messages:
            await self.client.publish(
                message.topic,
                message.payload,
                qos=message.qos if qos is None else qos,
                retain=message.retain,
            )

    async def update(self, device: str | None, timestamp: int, **values: Any) -> None:
        """Publish new values (NDATA/DDATA) at ``timestamp``."""
        await self.send(self.core.update(values, device_id=device, timestamp=timestamp))

    async def answer(self, topic: str, payload: bytes) -> None:
        """Hand a received command to the core and publish what it returns (births)."""
        await self.send(self.core.handle_message(topic, payload).messages)

    async def run(self) -> None:
        async for message in self.client.messages():
            self.client.ack(message)
            parsed = parse_topic(message.topic)
            if isinstance(parsed, SparkplugTopic):
                self.commands.append((message.topic, decode_payload(message.payload)))
            if self.answer_rebirths:
                output = self.core.handle_message(message.topic, message.payload)
                self.writes.extend(output.writes)
                await self.send(output.messages)

    def rebirth_requests(self) -> list[str]:
        return [
            topic
            for topic, payload in self.commands
            if any(m.name == REBIRTH_METRIC and m.value is True for m in payload.metrics)
        ]


def metric(name: str, datatype: DataType, value: Any, timestamp: int, **kw: Any) -> Metric:
    return Metric(name=name, datatype=datatype, value=value, timestamp=timestamp, **kw)


@contextlib.asynccontextmanager
async def edge_node(
    env: PlatformEnv,
    node_id: str,
    *,
    devices: dict[str, Sequence[Metric]] | None = None,
    group: str = "p1",
    births: bool = True,
    answer_rebirths: bool = True,
    bd_seq: int = 0,
) -> AsyncIterator[RawNode]:
    """An edge node connected to the platform's broker, its NDEATH as the Will.

    With ``births`` false the session starts but its births are dropped (as if the host had
    missed them).
    """
    core = EdgeNode(group_id=group, edge_node_id=node_id, bd_seq=bd_seq)
    for device, metrics in (devices or {}).items():
        core.add_device(device, metrics)
    will = core.connect()
    client = MqttClient(
        host="127.0.0.1",
        port=env.mqtt_port,
        client_id=f"{node_id}-{uuid.uuid4().hex[:6]}",
        username=node_id,
        password=env.secrets.get(node_id),
        clean_start=True,
        session_expiry=0,
        reconnect=False,
        will=Will(will.topic, will.payload, will.qos, will.retain),
    )
    async with client:
        await client.subscribe(*(Subscription(f, qos=1) for f in core.subscriptions()))
        node = RawNode(core, client, answer_rebirths=answer_rebirths)
        started = core.session_started()
        if births:
            await node.send(started)
        task = asyncio.create_task(node.run())
        try:
            yield node
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def tampered(
    message: OutboundMessage, change: Callable[[PayloadData], PayloadData]
) -> OutboundMessage:
    """The same message with its payload changed (keeps topic and seq)."""
    payload = change(decode_payload(message.payload))
    return message._replace(payload=encode_payload(payload))


# -- the platform side ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def sparkplug_platform(
    tmp_path: Path, port: int, **settings: Any
) -> AsyncIterator[PlatformEnv]:
    async with running_platform(
        tmp_path, mqtt_port=port, sparkplug_enabled=True, sparkplug_host_id=HOST_ID, **settings
    ) as env:
        host = env.platform.sparkplug
        assert host is not None
        async with asyncio.timeout(10):
            await host.wait_online()
        yield env


async def wait_dead_letters(env: PlatformEnv, reason: str, count: int = 1) -> list[DeadLetter]:
    async def there() -> bool:
        return len(await dead_letters(env, reason)) >= count

    await eventually(there)
    return await dead_letters(env, reason)


def values_of(points: list[tuple[int, Any]]) -> list[Any]:
    return [v for _, v in points]


async def wait_state(env: PlatformEnv, device: str, state: DeviceState) -> None:
    await eventually(lambda: state_of(env, device) is state)


def counter(env: PlatformEnv, name: str, **labels: str) -> float:
    value = env.platform.metrics.registry.get_sample_value(f"{name}_total", labels)
    return value or 0.0


# -- the well-behaved path ----------------------------------------------------------------------


async def test_births_register_devices_and_models_and_data_is_stored(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    unit = {"engUnit": PropertyValue(DataType.STRING, "degC")}
    press = [
        metric("Inputs/Temperature", DataType.FLOAT, 20.5, t0, properties=unit),
        metric("count", DataType.UINT32, 7, t0),
        metric("running", DataType.BOOLEAN, True, t0),
        metric("label", DataType.STRING, "batch A", t0),
    ]
    # The pump model declares event "fault": the birth declares its metric (and repeats the
    # last occurrence, which is no new one); each value in DDATA is one.
    pump = [
        metric("flow", DataType.DOUBLE, 12.0, t0),
        metric("event/fault", DataType.STRING, '{"code": 1}', t0 - 1000),
    ]
    async with sparkplug_platform(tmp_path, shared_mosquitto.port) as env:
        # The host's STATE birth is retained with QoS 1, for nodes that connect later.
        async with MqttClient(
            host="127.0.0.1", port=env.mqtt_port, client_id=f"watch-{uuid.uuid4().hex[:6]}"
        ) as watcher:
            await watcher.subscribe(Subscription(f"spBv1.0/STATE/{HOST_ID}", qos=1))
            async with asyncio.timeout(5):
                state_message = await watcher.next_message()
        assert state_message.retain
        assert state_message.qos == 1
        assert decode_state(state_message.payload).online is True

        async with edge_node(env, "gw-1", devices={"sp-press": press, "c-1": pump}) as node:
            await node.update("sp-press", t0 + 1000, **{"Inputs/Temperature": 21.25, "count": 8})
            await node.update("c-1", t0 + 1000, flow=13.5, **{"event/fault": '{"code": 7}'})
            await wait_latest(env, "sp-press", count=8, **{"Inputs.Temperature": 21.25})
            await wait_latest(env, "c-1", flow=13.5)
            [fault] = await env.platform.registry.list_events("acme", device_id="c-1")
            assert (fault.event, fault.data, fault.severity.value) == ("fault", {"code": 7}, "info")
            assert int(fault.ts.timestamp() * 1000) == t0 + 1000

            # An unknown device id became a device of the node, with a model from its birth.
            model = await registered_from_birth(env, "sp-press")
            props = {p["id"]: p for p in model["properties"]}
            assert set(props) == {"Inputs.Temperature", "count", "running", "label"}
            assert props["Inputs.Temperature"]["name"] == "Inputs/Temperature"
            assert props["Inputs.Temperature"]["unit"] == "degC"
            assert props["Inputs.Temperature"]["type"] == "float"
            assert props["count"]["type"] == "int"
            assert props["running"]["type"] == "bool"
            assert props["label"]["type"] == "string"

            # Values at the timestamps the node gave them: the birth's, then the data's.
            assert await series(env, "sp-press", "count") == [(t0, 7), (t0 + 1000, 8)]
            assert await series(env, "sp-press", "Inputs.Temperature") == [
                (t0, 20.5),
                (t0 + 1000, 21.25),
            ]
            values = await latest(env, "sp-press")
            assert values["running"] is True
            assert values["label"] == "batch A"
            # A registered child keeps the thing model a person gave it.
            assert (await env.api.get("/api/v1/devices/c-1")).json()["model_id"] == "pump"
            assert await series(env, "c-1", "flow") == [(t0, 12.0), (t0 + 1000, 13.5)]
            assert state_of(env, "gw-1") is DeviceState.ONLINE
            assert state_of(env, "c-1") is DeviceState.ONLINE
            assert await dead_letters(env) == []

            # An event a day ahead of the platform's clock is refused like such a value.
            await node.update("c-1", now_ms() + 86_400_000, **{"event/fault": '{"code": 8}'})
            [future] = await wait_dead_letters(env, "timestamp_out_of_range")
            assert (future.device_id, future.points) == ("c-1", 1)
            await node.update("c-1", t0 + 2000, flow=14.0)
            await wait_latest(env, "c-1", flow=14.0)
            assert len(await env.platform.registry.list_events("acme", device_id="c-1")) == 1
    # Stopped: the host's STATE says offline (retained), with the birth's timestamp.
    async with MqttClient(
        host="127.0.0.1", port=shared_mosquitto.port, client_id=f"watch-{uuid.uuid4().hex[:6]}"
    ) as watcher:
        await watcher.subscribe(Subscription(f"spBv1.0/STATE/{HOST_ID}", qos=1))
        async with asyncio.timeout(5):
            goodbye = await watcher.next_message()
    assert goodbye.retain
    assert decode_state(goodbye.payload).online is False
    assert decode_state(goodbye.payload).timestamp == decode_state(state_message.payload).timestamp


# -- nodes out of step ---------------------------------------------------------------------------


async def test_a_node_in_step_resumes_when_the_host_reconnects_and_loses_nothing(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port) as env,
        edge_node(env, "gw-1", devices={"sp-1": [metric("v", DataType.INT64, 0, t0)]}) as node,
    ):
        await node.update("sp-1", t0 + 1, v=1)
        await wait_latest(env, "sp-1", v=1)
        host = env.platform.sparkplug
        assert host is not None
        assert host.client is not None
        host.client.abort()  # the platform's Sparkplug connection breaks
        await eventually(lambda: not host.online)
        # Published with QoS 1 (as Tiangong's gateway does): the broker keeps them for the
        # host's persistent session, in order; their seq shows the host missed nothing.
        for value in (2, 3, 4):
            update = node.core.update({"v": value}, device_id="sp-1", timestamp=t0 + value)
            await node.send(update, qos=1)
        await eventually(lambda: host.online)
        await wait_latest(env, "sp-1", v=4)
        await node.update("sp-1", t0 + 5, v=5)
        await wait_latest(env, "sp-1", v=5)
        assert values_of(await series(env, "sp-1", "v")) == [0, 1, 2, 3, 4, 5]
        assert node.rebirth_requests() == []
        assert await dead_letters(env) == []
        assert state_of(env, "sp-1") is DeviceState.ONLINE


async def test_a_node_out_of_step_rebirths_and_its_good_data_is_kept(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    # No rate limit: each loss of step asks for a rebirth at once.
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port, sparkplug_rebirth_interval=0) as env,
        edge_node(env, "gw-1", devices={"sp-1": [metric("v", DataType.INT64, 0, t0)]}) as node,
    ):
        await node.update("sp-1", t0 + 1, v=1)
        await wait_latest(env, "sp-1", v=1)

        # A skipped seq: the message after the gap is refused and the node asked to rebirth;
        # its value comes back in the DBIRTH, which carries the current values.
        node.core.update({"v": 2}, device_id="sp-1", timestamp=t0 + 2)  # lost on the way
        await node.update("sp-1", t0 + 3, v=3)
        [gap] = await wait_dead_letters(env, "sparkplug_seq_gap")
        assert (gap.tenant_id, gap.device_id, gap.points) == ("acme", "sp-1", 1)
        assert "waits for its rebirth" in gap.detail
        await eventually(lambda: len(node.rebirth_requests()) == 1)
        await wait_latest(env, "sp-1", v=3)  # from the DBIRTH of the rebirth
        await node.update("sp-1", t0 + 4, v=4)
        await wait_latest(env, "sp-1", v=4)

        # An alias the birth never gave.
        [unknown] = node.core.update({"v": 5}, device_id="sp-1", timestamp=t0 + 5)
        await node.send(
            [
                tampered(
                    unknown,
                    lambda p: replace(p, metrics=(replace(p.metrics[0], alias=999),)),
                )
            ]
        )
        [refused] = await wait_dead_letters(env, "sparkplug_unknown_alias")
        assert refused.device_id == "sp-1"
        await eventually(lambda: len(node.rebirth_requests()) == 2)
        await wait_latest(env, "sp-1", v=5)  # the rebirth carries it
        await node.update("sp-1", t0 + 6, v=6)
        await wait_latest(env, "sp-1", v=6)

        # Garbage where a payload should be: refused, nothing else changes (no rebirth).
        await node.client.publish(f"{node.topic_base}/DDATA/gw-1/sp-1", b"\xff\xff\xff\xff", qos=0)
        [garbage] = await wait_dead_letters(env, "sparkplug_malformed")
        assert (garbage.tenant_id, garbage.device_id) == ("acme", "sp-1")
        assert garbage.payload == b"\xff\xff\xff\xff"
        await node.update("sp-1", t0 + 7, v=7)
        await wait_latest(env, "sp-1", v=7)

        # A DBIRTH that gives one alias to two metrics: refused; the node stays in step.
        [bad_birth] = node.core.add_device(
            "sp-2",
            [metric("a", DataType.INT64, 1, t0 + 8), metric("b", DataType.INT64, 2, t0 + 8)],
        )

        def same_alias(payload: PayloadData) -> PayloadData:
            first, second = payload.metrics
            return replace(payload, metrics=(first, replace(second, alias=first.alias)))

        await node.send([tampered(bad_birth, same_alias)])
        [twice] = await wait_dead_letters(env, "sparkplug_bad_birth")
        assert (twice.tenant_id, twice.device_id) == ("acme", "sp-2")
        assert "given twice" in twice.detail
        await node.update("sp-1", t0 + 9, v=9)
        await wait_latest(env, "sp-1", v=9)
        assert env.platform.registry.lookup("sp-2") is None

        # Every value the node published in step is stored, each at its own time.
        assert await series(env, "sp-1", "v") == [
            (t0, 0),
            (t0 + 1, 1),
            (t0 + 3, 3),
            (t0 + 4, 4),
            (t0 + 5, 5),
            (t0 + 6, 6),
            (t0 + 7, 7),
            (t0 + 9, 9),
        ]
        assert len(node.rebirth_requests()) == 2
        assert counter(env, "tiangong_sparkplug_rebirth_requests", reason="seq_gap") == 1
        assert counter(env, "tiangong_sparkplug_rebirth_requests", reason="unknown_alias") == 1
        reasons = await env.platform.dead_letters.counts(None)
        assert reasons == {
            "sparkplug_seq_gap": 1,
            "sparkplug_unknown_alias": 1,
            "sparkplug_malformed": 1,
            "sparkplug_bad_birth": 1,
        }
        assert state_of(env, "sp-1") is DeviceState.ONLINE


async def test_data_before_birth_asks_for_one_rebirth_within_the_interval(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port, sparkplug_rebirth_interval=60) as env,
        # The births go missing (as when the host was away): the host hears data first.
        edge_node(
            env,
            "gw-1",
            devices={"c-1": [metric("flow", DataType.DOUBLE, 1.0, t0)]},
            births=False,
            answer_rebirths=False,
        ) as node,
    ):
        await node.update("c-1", t0 + 1, flow=2.0)
        await node.update("c-1", t0 + 2, flow=3.0)
        refused = await wait_dead_letters(env, "sparkplug_data_before_birth", count=2)
        assert {(d.tenant_id, d.device_id, d.points) for d in refused} == {("acme", "c-1", 1)}
        # Two messages, one request: the interval limits them per node.
        assert counter(env, "tiangong_sparkplug_rebirth_requests", reason="data_before_birth") == 1
        await eventually(node.rebirth_requests)
        [(topic, request)] = node.commands
        assert topic == "spBv1.0/p1/NCMD/gw-1"
        assert [(m.name, m.value) for m in request.metrics] == [(REBIRTH_METRIC, True)]
        # The node answers with its births (which carry the latest value): in step again.
        payload = encode_payload(request)
        await node.answer(topic, payload)
        await wait_latest(env, "c-1", flow=3.0)
        await node.update("c-1", t0 + 4, flow=4.0)
        await wait_latest(env, "c-1", flow=4.0)
        assert await series(env, "c-1", "flow") == [(t0 + 2, 3.0), (t0 + 4, 4.0)]
        assert state_of(env, "c-1") is DeviceState.ONLINE
        assert len(node.commands) == 1


async def test_deaths_mark_devices_offline_and_a_stale_ndeath_is_ignored(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    devices = {
        "c-1": [metric("flow", DataType.DOUBLE, 1.0, t0)],
        "c-2": [metric("flow", DataType.DOUBLE, 2.0, t0)],
    }
    async with sparkplug_platform(
        tmp_path, shared_mosquitto.port, sparkplug_rebirth_interval=0
    ) as env:
        async with edge_node(env, "gw-1", devices=devices) as node:
            for device in ("gw-1", "c-1", "c-2"):
                await wait_state(env, device, DeviceState.ONLINE)
            # The Will of an earlier connection (its bdSeq is not this birth's), delivered
            # late: ignored, and the node is asked to rebirth, since the host cannot be sure.
            stale = PayloadData(
                timestamp=now_ms(),
                metrics=(Metric(name=BDSEQ_METRIC, datatype=DataType.INT64, value=255),),
            )
            await node.client.publish(
                f"{node.topic_base}/NDEATH/gw-1", encode_payload(stale), qos=1
            )
            [ignored] = await wait_dead_letters(env, "sparkplug_stale_ndeath")
            assert (ignored.tenant_id, ignored.device_id) == ("acme", "gw-1")
            await eventually(node.rebirth_requests)
            reason = "ndeath_bdseq_mismatch"
            assert counter(env, "tiangong_sparkplug_rebirth_requests", reason=reason) == 1
            await node.update("c-1", t0 + 1, flow=1.5)
            await wait_latest(env, "c-1", flow=1.5)
            # The rebirth repeated the births' values; each is stored once.
            assert await series(env, "c-1", "flow") == [(t0, 1.0), (t0 + 1, 1.5)]
            assert {state_of(env, d) for d in ("gw-1", "c-1", "c-2")} == {DeviceState.ONLINE}

            # DDEATH: that device only.
            await node.send(node.core.device_offline("c-2"))
            await wait_state(env, "c-2", DeviceState.OFFLINE)
            assert state_of(env, "c-1") is DeviceState.ONLINE
            device = (await env.api.get("/api/v1/devices/c-2")).json()
            assert device["state"] == "offline"
            transitions = (await env.api.get("/api/v1/devices/c-2/transitions")).json()
            assert "DDEATH" in str(transitions[0])

            # The connection breaks: the broker publishes the Will, the node and all its
            # devices go offline.
            node.client.abort()
            await wait_state(env, "gw-1", DeviceState.OFFLINE)
            await wait_state(env, "c-1", DeviceState.OFFLINE)
            assert (await env.api.get("/api/v1/devices/c-1")).json()["state"] == "offline"

        # A new session (the next bdSeq) brings them back; an orderly NDEATH takes them away.
        async with edge_node(env, "gw-1", devices=devices, bd_seq=1) as node:
            await wait_state(env, "c-2", DeviceState.ONLINE)
            await node.send(node.core.disconnect())
            for device in ("gw-1", "c-1", "c-2"):
                await wait_state(env, device, DeviceState.OFFLINE)
        assert set(await env.platform.dead_letters.counts(None)) == {"sparkplug_stale_ndeath"}


# -- nodes and devices the platform refuses ------------------------------------------------------


async def test_unknown_nodes_wrong_groups_and_other_gateways_devices_are_refused(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000

    def one(value: float) -> list[Metric]:
        return [metric("flow", DataType.DOUBLE, value, t0)]

    async with sparkplug_platform(tmp_path, shared_mosquitto.port) as env:
        _, env.secrets["gw-2"] = await env.platform.registry.register_device(
            tenant_id="acme", site_id="p1", device_id="gw-2", model_id="gateway"
        )
        # An edge node id nobody registered: its births and data are refused, nothing is
        # registered for it.
        async with edge_node(env, "ghost-gw", devices={"ghost-dev": one(1.0)}) as ghost:
            await ghost.update("ghost-dev", t0 + 1, flow=1.5)
            refused = await wait_dead_letters(env, "unknown_device", count=3)
        assert {d.device_id for d in refused} == {"ghost-gw"}
        assert {d.tenant_id for d in refused} == {None}  # platform admins see it
        assert "not a registered device" in refused[0].detail
        assert sorted(d.topic.split("/")[2] for d in refused) == ["DBIRTH", "DDATA", "NBIRTH"]
        assert env.platform.registry.lookup("ghost-dev") is None

        # A registered node under a group that is not its site.
        async with edge_node(env, "gw-2", group="p2", devices={"gw2-dev": one(2.0)}) as lost:
            await lost.update("gw2-dev", t0 + 1, flow=2.5)
            mismatched = await wait_dead_letters(env, "topic_mismatch", count=3)
        assert {(d.tenant_id, d.device_id) for d in mismatched} == {("acme", "gw-2")}
        assert "group id must be 'p1'" in mismatched[0].detail
        assert env.platform.registry.lookup("gw2-dev") is None

        # The right group; among its devices, another gateway's child and a device of its own.
        devices = {"c-1": one(3.0), "pump-1": one(4.0), "gw2-dev": one(5.0)}
        async with edge_node(env, "gw-2", devices=devices) as gw2:
            await gw2.update("c-1", t0 + 1, flow=3.5)
            await gw2.update("gw2-dev", t0 + 1, flow=5.5)
            await wait_latest(env, "gw2-dev", flow=5.5)
            taken = await wait_dead_letters(env, "not_your_device", count=3)
        assert {(d.device_id, d.topic.split("/")[2]) for d in taken} == {
            ("c-1", "DBIRTH"),
            ("c-1", "DDATA"),
            ("pump-1", "DBIRTH"),
        }
        c1 = next(d for d in taken if d.device_id == "c-1")
        assert "under edge node 'gw-1'" in c1.detail
        pump = next(d for d in taken if d.device_id == "pump-1")
        assert "as a device of its own" in pump.detail
        # The new device is registered under the right node; the others are untouched.
        assert (await env.api.get("/api/v1/devices/gw2-dev")).json()["gateway_id"] == "gw-2"
        assert await series(env, "gw2-dev", "flow") == [(t0, 5.0), (t0 + 1, 5.5)]
        for device in ("c-1", "pump-1"):
            assert await latest(env, device) == {}
            assert state_of(env, device) is DeviceState.PROVISIONED
        assert (await env.api.get("/api/v1/devices/c-1")).json()["gateway_id"] == "gw-1"

        # And the rightful node's data for the same device is stored as ever.
        async with edge_node(env, "gw-1", devices={"c-1": one(6.0)}) as gw1:
            await gw1.update("c-1", t0 + 2, flow=6.5)
            await wait_latest(env, "c-1", flow=6.5)
        assert set(await env.platform.dead_letters.counts(None)) == {
            "unknown_device",
            "topic_mismatch",
            "not_your_device",
        }
        dead = env.platform.metrics.registry.get_sample_value
        assert dead("tiangong_ingest_dead_letters_total", {"reason": "not_your_device"}) == 3


# -- commands ------------------------------------------------------------------------------------


async def test_a_write_goes_out_as_dcmd_and_is_reported_unconfirmed(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    valve = [
        metric("Setpoints/Pressure", DataType.FLOAT, 2.0, t0),
        metric("mode", DataType.INT32, 1, t0),
        metric("Properties/Serial", DataType.STRING, "SN-1", t0),
    ]
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port) as env,
        edge_node(env, "gw-1", devices={"sp-valve": valve}) as node,
    ):
        await wait_latest(env, "sp-valve", mode=1)
        answer = await env.api.post(
            "/api/v1/devices/sp-valve/commands/write",
            json={"params": {"Setpoints.Pressure": 4.5}},
        )
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert result["sent"] is True
        assert result["confirmed"] is False
        assert result["protocol"] == "sparkplug"
        assert result["topic"] == "spBv1.0/p1/DCMD/gw-1/sp-valve"
        assert result["metrics"] == {"Setpoints/Pressure": "FLOAT"}
        await eventually(lambda: node.writes)
        assert node.writes == [WriteRequest("sp-valve", "Setpoints/Pressure", DataType.FLOAT, 4.5)]
        [(topic, command)] = node.commands
        assert topic == "spBv1.0/p1/DCMD/gw-1/sp-valve"
        assert command.metrics[0].name is None  # by alias, as the specification says
        # An integer metric takes a whole number, sent with its own datatype.
        answer = await env.api.post(
            "/api/v1/devices/sp-valve/commands/write", json={"params": {"mode": 3}}
        )
        assert answer.status_code == 200, answer.text
        await eventually(lambda: len(node.writes) == 2)
        assert node.writes[1] == WriteRequest("sp-valve", "mode", DataType.INT32, 3)
        # The device reports what it did in its data, as for any value.
        await node.update("sp-valve", t0 + 1, **{"Setpoints/Pressure": 4.5, "mode": 3})
        await wait_latest(env, "sp-valve", mode=3, **{"Setpoints.Pressure": 4.5})

        # Refused before anything is sent: read-only, not a write, not a number.
        for params, command in (
            ({"Properties.Serial": "SN-2"}, "write"),
            ({}, "calibrate"),
            ({"mode": 1.5}, "write"),
        ):
            refused = await env.api.post(
                f"/api/v1/devices/sp-valve/commands/{command}", json={"params": params}
            )
            assert refused.status_code == 422, (command, params, refused.text)
        # A dead device takes no command.
        await node.send(node.core.device_offline("sp-valve"))
        await wait_state(env, "sp-valve", DeviceState.OFFLINE)
        offline = await env.api.post(
            "/api/v1/devices/sp-valve/commands/write", json={"params": {"mode": 2}}
        )
        assert offline.status_code == 409, offline.text
        assert "not online" in offline.text
        assert len(node.commands) == 2
        assert counter(env, "tiangong_sparkplug_commands") == 2


# -- births repeat current values ----------------------------------------------------------------


async def test_values_repeated_by_births_are_stored_once_across_a_platform_restart(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    devices = {"sp-1": [metric("v", DataType.INT64, 1, t0)]}
    async with sparkplug_platform(
        tmp_path, shared_mosquitto.port, sparkplug_rebirth_interval=0
    ) as env:
        async with edge_node(env, "gw-1", devices=devices) as node:
            await node.update("sp-1", t0 + 1, v=2)
            await wait_latest(env, "sp-1", v=2)
            # A rebirth (the host asks after a gap) repeats v=2 at t0+1 in the DBIRTH.
            node.core.update({"v": 3}, device_id="sp-1", timestamp=t0 + 2)  # lost
            await node.update("sp-1", t0 + 3, v=4)
            await wait_latest(env, "sp-1", v=4)
            await node.update("sp-1", t0 + 5, v=5)
            await wait_latest(env, "sp-1", v=5)
            expected = [(t0, 1), (t0 + 1, 2), (t0 + 3, 4), (t0 + 5, 5)]
            assert await series(env, "sp-1", "v") == expected
        secrets = env.secrets
        settings = env.platform.settings
    # Restarted, the platform knows what it stored: the next session's births repeat v=5.
    async with Platform(settings) as again:
        host = again.sparkplug
        assert host is not None
        async with asyncio.timeout(10):
            await host.wait_online()
        headers = {"Authorization": f"Bearer {again.admin_token}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{again.http_port}", headers=headers
        ) as api:
            env = PlatformEnv(again, api, shared_mosquitto.port, secrets)
            current = {"sp-1": [metric("v", DataType.INT64, 5, t0 + 5)]}
            async with edge_node(env, "gw-1", devices=current, bd_seq=1) as node:
                await node.update("sp-1", t0 + 6, v=6)
                await wait_latest(env, "sp-1", v=6)
            assert await series(env, "sp-1", "v") == [
                (t0, 1),
                (t0 + 1, 2),
                (t0 + 3, 4),
                (t0 + 5, 5),
                (t0 + 6, 6),
            ]

"""The gateway speaking Sparkplug B upstream, watched by a Sparkplug host application.

The sans-I/O ``GatewayNode`` is driven against an in-memory ``HostApplication`` first; then a
real gateway (a pymodbus device behind it) publishes to a real Mosquitto, where a plain MQTT
client feeds everything under ``spBv1.0/#`` to a ``HostApplication`` and the tests assert on its
events: births with every metric, data, deaths, rebirths, historical data after an outage and a
restart, bdSeq continuity, the NDEATH will, and DCMD writes reaching the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from tests.edge.conftest import ModbusPeer, StoppableModbusPeer
from tests.servers import MosquittoProcess
from tiangong.edge.buffer import ForwardBuffer, StoredFrame
from tiangong.edge.config import EdgeConfig
from tiangong.edge.frames import FrameBuilder
from tiangong.edge.gateway import EdgeGateway
from tiangong.edge.sparkplug_uplink import (
    LINK_METRICS,
    BdSeqFile,
    GatewayNode,
    SparkplugUplink,
    node_metric_types,
)
from tiangong.edge.thing_model import GATEWAY_MODEL
from tiangong.network.modbus import RegisterPoint, decode_value
from tiangong.network.mqtt import MqttClient, Subscription
from tiangong.network.sparkplug import (
    BDSEQ_METRIC,
    REBIRTH_METRIC,
    Data,
    DataType,
    DeviceBorn,
    DeviceDied,
    EdgeNodeDescriptor,
    HostApplication,
    HostEvent,
    MessageType,
    Metric,
    MetricSample,
    NodeBorn,
    NodeDied,
    NodeStale,
    OutboundMessage,
    PayloadData,
    ProtocolError,
    RebirthRequested,
    SparkplugTopic,
    encode_payload,
)

GATEWAY = "gw-sp"
NODE = EdgeNodeDescriptor("p1", GATEWAY)
TEMP = RegisterPoint("temp", "holding", 0, "int16", scale=0.1)
COUNT = RegisterPoint("count", "holding", 2, "uint32")
SETPOINT = RegisterPoint("setpoint", "holding", 10, "float32", word_order="little")
RUNNING = RegisterPoint("running", "coil", 0, "bool")
PRESS_METRICS = {"temp", "count", "setpoint", "running", *LINK_METRICS}
VALUES = ("temp", "count", "setpoint", "running")


def sparkplug_config(
    tmp_path: Path, modbus_port: int, mqtt_port: int, **uplink: object
) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
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
                **uplink,
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
                },
                {
                    "id": "pump-1",
                    "protocol": "opcua",
                    "endpoint": "opc.tcp://127.0.0.1:1/unused",
                    "points": [{"property": "flow", "node": "ns=2;s=pump-1.flow"}],
                },
            ],
        }
    )


# -- the sans-I/O node against an in-memory host -----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class Wire:
    """An edge node and a host joined by a list instead of a broker."""

    node: GatewayNode
    host: HostApplication
    events: list[HostEvent] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    def deliver(self, messages: list[OutboundMessage] | tuple[OutboundMessage, ...]) -> None:
        for message in messages:
            self.topics.append(message.topic)
            self.events.extend(self.host.handle_message(message.topic, message.payload).events)

    def problems(self) -> list[HostEvent]:
        return [
            e for e in self.events if isinstance(e, ProtocolError | NodeStale | RebirthRequested)
        ]


def stored(seq: int, builder: FrameBuilder) -> StoredFrame:
    frame = builder.take()
    assert frame is not None
    return StoredFrame(seq, frame.channel, frame.payload, frame.points, frame.first_ts_ms)


def frame_of(seq: int, rows: list[tuple[str, str, int, object]]) -> StoredFrame:
    builder = FrameBuilder()
    for device, prop, ts, value in rows:
        builder.add(device, prop, ts, value)
    return stored(seq, builder)


def wire(tmp_path: Path, clock: Clock) -> Wire:
    config = sparkplug_config(tmp_path, 1502, 1884)
    node = GatewayNode(config, clock=clock)
    host = HostApplication(host_id="test-host", clock=clock)
    return Wire(node, host)


def kinds(topics: list[str]) -> list[str]:
    return [topic.split("/")[2] for topic in topics]


def test_births_declare_every_metric_with_its_type(tmp_path: Path) -> None:
    clock = Clock()
    w = wire(tmp_path, clock)
    w.node.set_availability({"press-1": True, "pump-1": True})
    w.node.connect()
    w.deliver(w.node.session_started())
    [node_born] = [e for e in w.events if isinstance(e, NodeBorn)]
    names = {m.name for m in node_born.metrics}
    assert names == {*node_metric_types(), BDSEQ_METRIC, REBIRTH_METRIC}
    assert {p.id for p in GATEWAY_MODEL.properties} <= names
    assert {"event/edge_alarm", "event/buffer_overflow"} <= names
    assert node_born.bd_seq == 0
    press, pump = (e for e in w.events if isinstance(e, DeviceBorn))
    types = {m.name: m.datatype for m in press.metrics}
    assert set(types) == PRESS_METRICS
    assert types["temp"] is DataType.DOUBLE  # int16 with a scale: engineering values are floats
    assert types["count"] is DataType.UINT32
    assert types["setpoint"] is DataType.FLOAT
    assert types["running"] is DataType.BOOLEAN
    assert all(m.value is None for m in press.metrics)  # nothing read yet: null
    assert {m.name: m.datatype for m in pump.metrics}["flow"] is DataType.DOUBLE
    assert not w.problems()


def test_frames_become_data_live_or_historical(tmp_path: Path) -> None:
    clock = Clock()
    w = wire(tmp_path, clock)
    t0 = clock.now
    # Read while offline: the births carry the latest values.
    w.node.record(frame_of(1, [("press-1", "temp", t0, 20.5), ("press-1", "temp", t0 + 1, 21.0)]))
    w.node.set_availability({"press-1": True, "pump-1": False})
    w.node.connect()
    w.deliver(w.node.session_started())
    [press] = [e for e in w.events if isinstance(e, DeviceBorn)]
    assert {m.name: m.value for m in press.metrics}["temp"] == 21.0
    # The frame goes out historical, both samples at their own times, nothing compared.
    old = frame_of(1, [("press-1", "temp", t0, 20.5), ("press-1", "temp", t0 + 1, 21.0)])
    encoded = w.node.frame_messages(old, historical=True)
    assert encoded.published_points == 2
    w.deliver(encoded.messages)
    live = frame_of(
        2,
        [
            ("press-1", "count", t0 + 5, 70_000.0),
            ("press-1", "count", t0 + 6, 70_000.0),
            (GATEWAY, "points_in", t0 + 5, 7),
        ],
    )
    w.deliver(w.node.frame_messages(live, historical=False).messages)
    data = [e for e in w.events if isinstance(e, Data)]
    assert [(s.value, s.is_historical) for s in data[0].metrics] == [(20.5, True), (21.0, True)]
    assert [s.timestamp for s in data[0].metrics] == [t0, t0 + 1]
    node_data = next(d for d in data if d.device_id is None)
    assert [(s.name, s.value) for s in node_data.metrics] == [("points_in", 7)]
    press_data = [d for d in data if d.device_id == "press-1"][-1]
    assert [(s.value, s.is_historical) for s in press_data.metrics] == [
        (70_000, False),
        (70_000, False),  # a repeated value is still a sample the gateway read
    ]
    latest = w.host.latest(NODE, "press-1")
    assert latest["count"].value == 70_000
    assert latest["temp"].value == 21.0  # historical samples do not change current values
    assert not w.problems()


def test_death_waits_for_the_last_values_and_dead_devices_record(tmp_path: Path) -> None:
    clock = Clock()
    w = wire(tmp_path, clock)
    w.node.set_availability({"press-1": True, "pump-1": True})
    w.node.connect()
    w.deliver(w.node.session_started())
    t0 = clock.now
    w.deliver(w.node.set_availability({"press-1": False, "pump-1": True}))
    assert w.node.deaths_pending
    assert w.node.settle(1000) == []  # within the grace period
    # A value read just before the failure still goes out as the device's data.
    last = frame_of(1, [("press-1", "temp", t0, 3.5)])
    w.deliver(w.node.frame_messages(last, historical=False).messages)
    assert w.host.latest(NODE, "press-1")["temp"].value == 3.5
    clock.now += 1000
    w.deliver(w.node.settle(1000))
    assert isinstance(w.events[-1], DeviceDied)
    assert not w.node.deaths_pending
    # The dead device's link figures: recorded, carried by its next birth, not published.
    figures = frame_of(2, [("press-1", "link.loss_pct", clock.now, 100.0)])
    encoded = w.node.frame_messages(figures, historical=False)
    assert encoded.messages == ()
    assert encoded.recorded_points == 1
    w.deliver(w.node.set_availability({"press-1": True, "pump-1": True}))
    reborn = w.events[-1]
    assert isinstance(reborn, DeviceBorn)
    assert {m.name: m.value for m in reborn.metrics}["link.loss_pct"] == 100.0
    assert not w.problems()


def test_backlog_of_a_dead_device_is_delivered_then_it_dies_again(tmp_path: Path) -> None:
    clock = Clock()
    w = wire(tmp_path, clock)
    w.node.set_availability({"press-1": False, "pump-1": True})
    w.node.connect()
    w.deliver(w.node.session_started())
    assert "press-1" not in w.node.born
    backlog = frame_of(1, [("press-1", "temp", clock.now - 60_000, 9.0)])
    w.deliver(w.node.frame_messages(backlog, historical=True).messages)
    assert kinds(w.topics[-2:]) == ["DBIRTH", "DDATA"]
    clock.now += 1000
    w.deliver(w.node.settle(1000))
    assert kinds(w.topics[-1:]) == ["DDEATH"]
    assert not w.problems()


def test_new_metrics_rebirth_the_device_or_the_node(tmp_path: Path) -> None:
    clock = Clock()
    w = wire(tmp_path, clock)
    w.node.set_availability({"press-1": True, "pump-1": True})
    w.node.connect()
    w.deliver(w.node.session_started())
    t = clock.now
    # A property the births do not have, and a point whose first value is not a number.
    changed = frame_of(1, [("press-1", "humidity", t, 40.0), ("pump-1", "flow", t, "high")])
    w.deliver(w.node.frame_messages(changed, historical=True).messages)
    assert kinds(w.topics[-4:]) == ["DBIRTH", "DDATA", "DBIRTH", "DDATA"]
    press, pump = (e for e in w.events[-4:] if isinstance(e, DeviceBorn))
    assert {m.name: m.datatype for m in press.metrics}["humidity"] is DataType.DOUBLE
    assert {m.name: m.datatype for m in pump.metrics}["flow"] is DataType.STRING
    assert w.host.latest(NODE, "pump-1")["flow"].datatype is DataType.STRING
    # A new node metric: the session must end; the next one is born with it.
    figure = frame_of(2, [(GATEWAY, "cpu_pct", t, 12.5)])
    assert w.node.frame_messages(figure, historical=False).restart_session
    w.deliver(w.node.disconnect())
    assert isinstance(w.events[-1], NodeDied)
    w.node.connect()
    w.deliver(w.node.session_started())
    reborn = next(e for e in reversed(w.events) if isinstance(e, NodeBorn))
    assert "cpu_pct" in {m.name for m in reborn.metrics}
    assert reborn.bd_seq == 1
    w.deliver(w.node.frame_messages(figure, historical=True).messages)
    assert w.events[-1] == Data(
        NODE, None, (MetricSample("cpu_pct", DataType.DOUBLE, t, 12.5, True),)
    )
    assert not w.problems()


async def test_bd_seq_file(tmp_path: Path) -> None:
    path = tmp_path / "gw-sparkplug.json"
    store = BdSeqFile(path)
    assert store.load() == 0
    await store.save(7)
    assert store.load() == 7
    assert orjson.loads(path.read_bytes()) == {"next_bd_seq": 7}
    path.write_text("not json")
    assert store.load() == 0
    path.write_text('{"next_bd_seq": 999}')
    assert store.load() == 0


# -- a real gateway, a real broker ---------------------------------------------------------------


@dataclass
class Observer:
    """A Sparkplug host application on the broker, recording what it makes of the traffic."""

    host: HostApplication
    client: MqttClient
    events: list[HostEvent] = field(default_factory=list)

    async def run(self) -> None:
        async for message in self.client.messages():
            output = self.host.handle_message(message.topic, message.payload)
            self.events.extend(output.events)
            self.client.ack(message)
            for outbound in output.messages:
                await self.send(outbound)

    async def send(self, message: OutboundMessage) -> None:
        await self.client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )

    async def wait(self, condition: Callable[[], object], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)

    def node_births(self) -> list[NodeBorn]:
        return [e for e in self.events if isinstance(e, NodeBorn)]

    def node_deaths(self) -> list[NodeDied]:
        return [e for e in self.events if isinstance(e, NodeDied)]

    def device_births(self, device: str = "press-1") -> list[DeviceBorn]:
        return [e for e in self.events if isinstance(e, DeviceBorn) and e.device_id == device]

    def device_deaths(self, device: str = "press-1") -> list[DeviceDied]:
        return [e for e in self.events if isinstance(e, DeviceDied) and e.device_id == device]

    def samples(self, device: str | None, name: str) -> list[MetricSample]:
        return [
            s
            for e in self.events
            if isinstance(e, Data) and e.device_id == device
            for s in e.metrics
            if s.name == name
        ]

    def problems(self) -> list[HostEvent]:
        return [
            e for e in self.events if isinstance(e, ProtocolError | NodeStale | RebirthRequested)
        ]


@contextlib.asynccontextmanager
async def observing(
    port: int, *, host_id: str = "test-observer", persistent: bool = False
) -> AsyncIterator[Observer]:
    client = MqttClient(
        host="127.0.0.1",
        port=port,
        client_id=f"{host_id}-client",
        clean_start=not persistent,
        session_expiry=3600 if persistent else 0,
        backoff_initial=0.05,
        backoff_max=0.5,
    )
    async with client:
        await client.subscribe(Subscription("spBv1.0/#", qos=1))
        observer = Observer(HostApplication(host_id=host_id), client)
        task = asyncio.create_task(observer.run())
        try:
            yield observer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def uplink_of(gateway: EdgeGateway) -> SparkplugUplink:
    assert isinstance(gateway.uplink, SparkplugUplink)
    return gateway.uplink


async def prime(peer: ModbusPeer) -> None:
    await peer.set(TEMP, -12.5)
    await peer.set(COUNT, 70_000)
    await peer.set(SETPOINT, 33.25)
    await peer.set(RUNNING, True)


@pytest.mark.mosquitto
async def test_births_and_data_from_a_modbus_device(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await prime(modbus_peer)
    config = sparkplug_config(tmp_path, modbus_peer.port, shared_mosquitto.port)
    async with (
        observing(shared_mosquitto.port) as observer,
        EdgeGateway(config, password=None, health_interval=0.2) as gateway,
    ):
        await observer.wait(lambda: observer.samples("press-1", "running"))
        # The health loop may report 0 before the first read of press-1: wait for the 1.
        await observer.wait(
            lambda: [s.value for s in observer.samples(None, "devices_online")][-1:] == [1]
        )
        [born] = observer.node_births()
        assert born.node == NODE
        assert born.bd_seq == 0
        assert {m.name for m in born.metrics} == {
            *node_metric_types(),
            BDSEQ_METRIC,
            REBIRTH_METRIC,
        }
        [press] = observer.device_births()
        assert {m.name for m in press.metrics} == PRESS_METRICS
        assert observer.samples("press-1", "temp")[-1].value == -12.5
        assert observer.samples("press-1", "count")[-1].value == 70_000
        assert observer.samples("press-1", "setpoint")[-1].value == 33.25
        assert observer.samples("press-1", "running")[-1].value is True
        assert observer.samples(None, "devices_online")[-1].value == 1
        # Only what was read before the first session is historical (on a slow start the first
        # poll can beat the connection): a prefix of the samples, never live data after it.
        flags = [s.is_historical for s in observer.samples("press-1", "temp")]
        assert flags == sorted(flags, reverse=True), flags
        assert uplink_of(gateway).connected
        status = await gateway.status()
        assert status["uplink"]["sent_points"] > 0
        assert gateway.uplink.rtt_ms is not None
        assert observer.device_births("pump-1") == []  # unreachable OPC UA server: never born
    assert not observer.problems(), observer.problems()


@pytest.mark.mosquitto
async def test_device_loss_is_a_death_and_its_return_a_birth(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, stoppable_modbus_peer: StoppableModbusPeer
) -> None:
    peer = stoppable_modbus_peer
    await prime(peer)
    config = sparkplug_config(tmp_path, peer.port, shared_mosquitto.port)
    async with (
        observing(shared_mosquitto.port) as observer,
        EdgeGateway(config, password=None, health_interval=0.2) as gateway,
    ):
        await observer.wait(lambda: observer.samples("press-1", "temp"))
        await peer.stop()
        await observer.wait(observer.device_deaths)
        assert observer.host.device_status(NODE, "press-1").value == "offline"
        died = len(observer.events)
        await asyncio.sleep(0.5)  # its link figures keep coming: recorded, not published
        assert not [e for e in observer.events[died:] if isinstance(e, Data) and e.device_id]
        assert uplink_of(gateway).recorded_points > 0
        await peer.start()
        await observer.wait(lambda: len(observer.device_births()) == 2)
        reborn = observer.device_births()[-1]
        loss = {m.name: m.value for m in reborn.metrics}["link.loss_pct"]
        assert isinstance(loss, float)
        assert loss > 0  # the failed polls, carried by the birth
        count = len(observer.samples("press-1", "temp"))
        await observer.wait(lambda: len(observer.samples("press-1", "temp")) > count)
        assert len(observer.node_births()) == 1  # the node itself never went away
    assert not observer.problems(), observer.problems()


@pytest.mark.mosquitto
async def test_rebirth_on_request(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await prime(modbus_peer)
    config = sparkplug_config(tmp_path, modbus_peer.port, shared_mosquitto.port)
    async with (
        observing(shared_mosquitto.port) as observer,
        EdgeGateway(config, password=None, health_interval=0.2),
    ):
        await observer.wait(lambda: observer.samples("press-1", "temp"))
        request = observer.host.request_rebirth(NODE, "test")
        for message in request.messages:
            await observer.send(message)
        await observer.wait(lambda: len(observer.node_births()) == 2)
        await observer.wait(lambda: len(observer.device_births()) == 2)
        first, second = observer.node_births()
        assert first.bd_seq == second.bd_seq == 0  # same session, same bdSeq
        count = len(observer.samples("press-1", "temp"))
        await observer.wait(lambda: len(observer.samples("press-1", "temp")) > count)
    assert [e for e in observer.problems() if not isinstance(e, RebirthRequested)] == []


@pytest.mark.mosquitto
async def test_broker_outage_backlog_arrives_historical_in_order_and_complete(
    tmp_path: Path, stoppable_modbus_peer: StoppableModbusPeer
) -> None:
    peer = stoppable_modbus_peer
    await prime(peer)
    # Births are QoS 0: queue them too for the observer while it is away, so it misses nothing.
    # A receive maximum of 2 (Mosquitto's default is 20) keeps most data publishes waiting for
    # a slot: births and deaths must still reach the wire in seq order.
    broker = MosquittoProcess(
        workdir=tmp_path / "broker",
        extra_config="allow_anonymous true\nqueue_qos0_messages true\nmax_inflight_messages 2\n",
    )
    await asyncio.to_thread(broker.start)

    async def count_up() -> None:
        value = 0
        while True:
            value = (value + 1) % 1000
            await peer.set(TEMP, value / 10)
            await asyncio.sleep(0.02)

    config = sparkplug_config(tmp_path, peer.port, broker.port)
    try:
        async with (
            observing(broker.port, persistent=True) as observer,
            EdgeGateway(config, password=None, health_interval=0.2) as gateway,
            asyncio.TaskGroup() as tasks,
        ):
            counter = tasks.create_task(count_up())
            await observer.wait(lambda: len(observer.samples("press-1", "temp")) > 5)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(1.5)
            # The plant keeps producing, all on disk; the outage lasts until enough was read
            # (a loaded machine polls less often than every 50 ms).
            async with asyncio.timeout(30):
                while (await gateway.buffer.stats()).points <= 50:
                    await asyncio.sleep(0.1)
            await asyncio.to_thread(broker.start)
            await observer.wait(lambda: len(observer.node_births()) >= 2, timeout=20)
            counter.cancel()
            await peer.stop()  # the device goes quiet so the totals can be compared exactly
            uplink = uplink_of(gateway)

            async def drained() -> bool:
                return (await gateway.buffer.stats()).frames == 0

            async with asyncio.timeout(20):
                while not await drained():
                    await asyncio.sleep(0.05)
            read = gateway.points_in
            stats = await gateway.buffer.stats()
            assert stats.dropped_points == 0

            def received() -> set[tuple[str, int]]:
                return {
                    (s.name, s.timestamp)
                    for prop in VALUES
                    for s in observer.samples("press-1", prop)
                }

            await observer.wait(lambda: len(received()) >= read, timeout=10)
            assert len(received()) == read  # every point read, none lost
            temps = observer.samples("press-1", "temp")
            historical = [s.timestamp for s in temps if s.is_historical]
            assert len(historical) > 20
            assert historical == sorted(historical)  # the backlog oldest first
            assert uplink.reconnects >= 1
            assert all((b.bd_seq or 0) >= 1 for b in observer.node_births()[1:])
    finally:
        await asyncio.to_thread(broker.stop)
    assert [e for e in observer.problems() if not isinstance(e, RebirthRequested)] == []


@pytest.mark.mosquitto
async def test_restart_continues_bd_seq_and_the_will_carries_it(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await prime(modbus_peer)
    config = sparkplug_config(tmp_path, modbus_peer.port, shared_mosquitto.port)
    state = BdSeqFile(config.gateway.data_dir / f"{GATEWAY}-sparkplug.json")
    async with observing(shared_mosquitto.port) as observer:
        async with EdgeGateway(config, password=None, health_interval=0.2):
            await observer.wait(lambda: observer.samples("press-1", "temp"))
        await observer.wait(observer.node_deaths)  # the orderly stop's NDEATH
        [died] = observer.node_deaths()
        assert died.bd_seq == 0
        assert state.load() == 1
        # While the gateway is down, a frame from an older configuration waits in its buffer.
        buffer = ForwardBuffer(
            config.gateway.data_dir / f"{GATEWAY}-buffer.sqlite", max_bytes=2**20
        )
        await buffer.open()
        builder = FrameBuilder()
        then = int(time.time() * 1000) - 60_000
        builder.add("press-1", "humidity", then, 41.5)
        frame = builder.take()
        assert frame is not None
        await buffer.append(frame)
        await buffer.close()

        async with EdgeGateway(config, password=None, health_interval=0.2) as gateway:
            await observer.wait(lambda: len(observer.node_births()) == 2)
            assert observer.node_births()[-1].bd_seq == 1
            assert state.load() == 2
            await observer.wait(lambda: observer.samples("press-1", "humidity"))
            [humidity] = observer.samples("press-1", "humidity")
            assert (humidity.value, humidity.timestamp, humidity.is_historical) == (
                41.5,
                then,
                True,
            )
            # The link breaks: the broker publishes the will, with this session's bdSeq.
            client = uplink_of(gateway).client
            assert client is not None
            client.abort()
            await observer.wait(lambda: len(observer.node_deaths()) == 2)
            assert observer.node_deaths()[-1].bd_seq == 1
            await observer.wait(lambda: len(observer.node_births()) == 3)
            assert observer.node_births()[-1].bd_seq == 2
            assert state.load() == 3
            count = len(observer.samples("press-1", "temp"))
            await observer.wait(lambda: len(observer.samples("press-1", "temp")) > count)
    assert not observer.problems(), observer.problems()


@pytest.mark.mosquitto
async def test_dcmd_writes_reach_the_device_and_bad_ones_are_counted(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await prime(modbus_peer)
    config = sparkplug_config(tmp_path, modbus_peer.port, shared_mosquitto.port)
    async with (
        observing(shared_mosquitto.port) as observer,
        EdgeGateway(config, password=None, health_interval=0.2) as gateway,
    ):
        uplink = uplink_of(gateway)
        await observer.wait(lambda: observer.samples("press-1", "setpoint"))
        await observer.send(observer.host.write(NODE, {"setpoint": 42.5}, device_id="press-1"))
        await observer.wait(lambda: uplink.commands_done == 1)
        assert decode_value(SETPOINT, await modbus_peer.get(10, 2)) == 42.5
        await observer.wait(lambda: observer.samples("press-1", "setpoint")[-1].value == 42.5)
        # A read-only point: the device refuses, the session goes on.
        await observer.send(observer.host.write(NODE, {"temp": 1.0}, device_id="press-1"))
        await observer.wait(lambda: uplink.commands_failed == 1)
        # A node metric is not writable; a metric the device does not have is refused.
        await observer.send(observer.host.write(NODE, {"points_in": 5}))
        unknown = PayloadData(metrics=(Metric(name="torque", datatype=DataType.DOUBLE, value=1.0),))
        topic = SparkplugTopic(MessageType.DCMD, NODE, "press-1")
        await observer.send(OutboundMessage(str(topic), encode_payload(unknown), 0, False))
        await observer.wait(lambda: uplink.commands_rejected == 2)
        count = len(observer.samples("press-1", "temp"))
        await observer.wait(lambda: len(observer.samples("press-1", "temp")) > count)
        assert len(observer.node_births()) == 1
        assert uplink.commands_done == 1
    assert not observer.problems(), observer.problems()


@pytest.mark.mosquitto
async def test_births_wait_for_the_primary_host(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, modbus_peer: ModbusPeer
) -> None:
    await prime(modbus_peer)
    config = sparkplug_config(
        tmp_path, modbus_peer.port, shared_mosquitto.port, primary_host_id="tg-primary"
    )
    async with (
        observing(shared_mosquitto.port, host_id="tg-primary") as observer,
        EdgeGateway(config, password=None, health_interval=0.2) as gateway,
    ):
        uplink = uplink_of(gateway)
        await observer.wait(lambda: uplink.connected)
        await asyncio.sleep(0.5)
        assert observer.node_births() == []  # connected, but the primary host is not online
        observer.host.connect()
        for message in observer.host.session_started():
            await observer.send(message)
        await observer.wait(lambda: observer.samples("press-1", "temp"))
        # The primary host goes offline: the node ends its session (NDEATH) and waits again.
        state_offline = observer.host.disconnect()
        for message in state_offline:
            await observer.send(message)
        await observer.wait(observer.node_deaths)
        await observer.wait(lambda: uplink.sessions == 2)
        await asyncio.sleep(0.3)
        assert len(observer.node_births()) == 1
        observer.host.connect()
        for message in observer.host.session_started():
            await observer.send(message)
        await observer.wait(lambda: len(observer.node_births()) == 2)
        assert observer.node_births()[-1].bd_seq == 1
        assert not observer.problems(), observer.problems()
        # Clear the retained STATE for the other tests on this broker.
        await observer.client.publish("spBv1.0/STATE/tg-primary", b"", qos=1, retain=True)

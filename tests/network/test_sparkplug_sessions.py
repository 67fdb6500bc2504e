"""An edge node and a host application wired together through an in-memory message bus."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiangong.network.errors import SparkplugMetricError, SparkplugStateError
from tiangong.network.sparkplug.codec import (
    BDSEQ_METRIC,
    REBIRTH_METRIC,
    DataType,
    EdgeNodeDescriptor,
    HostState,
    Metric,
    OutboundMessage,
    PayloadData,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
)
from tiangong.network.sparkplug.edge_node import (
    EdgeNode,
    EdgeNodeOutput,
    EdgeNodeState,
    WriteRequest,
)
from tiangong.network.sparkplug.host import (
    Data,
    DeviceBorn,
    DeviceDied,
    HostApplication,
    HostEvent,
    HostOutput,
    NodeBorn,
    NodeDied,
    NodeStale,
    NodeStatus,
    ProtocolError,
    RebirthRequested,
)

NODE = EdgeNodeDescriptor("Plant 1", "gateway-7")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def matches(topic_filter: str, topic: str) -> bool:
    filter_levels = topic_filter.split("/")
    levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(levels) == len(filter_levels)


class Bus:
    """A broker in a list: every message goes to every subscriber whose filter matches."""

    def __init__(self, host: HostApplication, *edges: EdgeNode) -> None:
        self.host = host
        self.edges = edges
        self.queue: deque[OutboundMessage] = deque()
        self.log: list[OutboundMessage] = []
        self.events: list[HostEvent] = []
        self.writes: list[WriteRequest] = []
        self.disconnect_requests = 0
        self.will: OutboundMessage | None = None
        self.drop: Callable[[OutboundMessage], bool] = lambda message: False

    def send(self, messages: Iterable[OutboundMessage]) -> list[HostEvent]:
        start = len(self.events)
        self.queue.extend(messages)
        while self.queue:
            message = self.queue.popleft()
            if self.drop(message):
                continue
            self.log.append(message)
            if any(matches(f, message.topic) for f in self.host.subscriptions()):
                out = self.host.handle_message(message.topic, message.payload)
                self.events.extend(out.events)
                self.queue.extend(out.messages)
            for edge in self.edges:
                if any(matches(f, message.topic) for f in edge.subscriptions()):
                    result = edge.handle_message(message.topic, message.payload)
                    assert not result.rejected, result.rejected
                    self.writes.extend(result.writes)
                    self.disconnect_requests += result.disconnect
                    self.queue.extend(result.messages)
        return self.events[start:]


def make_edge(clock: Clock, **kwargs: object) -> EdgeNode:
    edge = EdgeNode(
        group_id=NODE.group_id,
        edge_node_id=NODE.edge_node_id,
        metrics=[
            Metric(name="Supply Voltage", datatype=DataType.FLOAT, value=12.0),
            Metric(name="Properties/OS", datatype=DataType.STRING, value="Linux"),
        ],
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )
    edge.add_device(
        "plc1",
        [
            Metric(name="Inputs/Temperature", datatype=DataType.DOUBLE, value=20.0),
            Metric(name="Outputs/Setpoint", datatype=DataType.INT32, value=0),
            Metric(name="Counter", datatype=DataType.UINT64, value=0),
        ],
    )
    edge.add_device("plc2", [Metric(name="Running", datatype=DataType.BOOLEAN, value=False)])
    return edge


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def host(clock: Clock) -> HostApplication:
    host = HostApplication(host_id="tiangong", clock=clock, rebirth_interval_ms=5_000)
    host.connect()
    host.session_started()
    return host


@pytest.fixture
def edge(clock: Clock) -> EdgeNode:
    return make_edge(clock)


@pytest.fixture
def bus(host: HostApplication, edge: EdgeNode) -> Bus:
    bus = Bus(host, edge)
    bus.will = edge.connect()
    bus.send(edge.session_started())
    return bus


T = TypeVar("T")


def of_type(events: Iterable[object], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


def aliases_of(message: OutboundMessage) -> dict[str, int | None]:
    return {m.name or "": m.alias for m in decode_payload(message.payload).metrics}


# --- births and data ---------------------------------------------------------------------------


def test_births_then_data_by_alias(bus: Bus, edge: EdgeNode, host: HostApplication) -> None:
    [nbirth, dbirth1, dbirth2] = bus.log
    assert (nbirth.topic, nbirth.qos, nbirth.retain) == (
        "spBv1.0/Plant 1/NBIRTH/gateway-7",
        0,
        False,
    )
    assert dbirth1.topic == "spBv1.0/Plant 1/DBIRTH/gateway-7/plc1"
    birth = decode_payload(nbirth.payload)
    assert birth.seq == 0
    assert [decode_payload(m.payload).seq for m in (dbirth1, dbirth2)] == [1, 2]
    by_name = {m.name: m for m in birth.metrics}
    assert by_name[BDSEQ_METRIC].value == 0
    assert by_name[REBIRTH_METRIC].datatype is DataType.BOOLEAN
    assert by_name[REBIRTH_METRIC].value is False
    assert all(m.name and m.alias is not None and m.timestamp is not None for m in birth.metrics)
    every_alias = [a for m in bus.log for a in aliases_of(m).values()]
    assert len(every_alias) == len(set(every_alias)), "aliases unique across node and devices"

    [node_born] = of_type(bus.events, NodeBorn)
    assert node_born.node == NODE
    assert node_born.bd_seq == 0
    assert {s.name for s in node_born.metrics} >= {"Supply Voltage", BDSEQ_METRIC, REBIRTH_METRIC}
    assert [e.device_id for e in of_type(bus.events, DeviceBorn)] == ["plc1", "plc2"]
    assert host.node_status(NODE) is NodeStatus.ONLINE
    assert host.device_status(NODE, "plc1") is NodeStatus.ONLINE

    events = bus.send(edge.update({"Supply Voltage": 12.5}))
    ndata = bus.log[-1]
    assert ndata.topic == "spBv1.0/Plant 1/NDATA/gateway-7"
    [sent] = decode_payload(ndata.payload).metrics
    assert sent.name is None
    assert sent.alias == aliases_of(nbirth)["Supply Voltage"]
    assert events == [Data(NODE, None, events[0].metrics)]  # type: ignore[union-attr]
    [sample] = events[0].metrics  # type: ignore[union-attr]
    assert (sample.name, sample.datatype, sample.value) == ("Supply Voltage", DataType.FLOAT, 12.5)

    events = bus.send(
        edge.update(
            {"Inputs/Temperature": 21.25, "Counter": 2**64 - 1}, device_id="plc1", timestamp=42
        )
    )
    [data] = of_type(events, Data)
    assert data.device_id == "plc1"
    assert {(s.name, s.value, s.timestamp) for s in data.metrics} == {
        ("Inputs/Temperature", 21.25, 42),
        ("Counter", 2**64 - 1, 42),
    }
    assert host.latest(NODE, "plc1")["Counter"].value == 2**64 - 1


def test_report_by_exception_sends_only_changes(bus: Bus, edge: EdgeNode) -> None:
    assert edge.update({"Supply Voltage": 12.0}) == []
    [message] = edge.update({"Supply Voltage": 12.0, "Properties/OS": "Linux 6"})
    assert [m.alias for m in decode_payload(message.payload).metrics] == [
        aliases_of(bus.log[0])["Properties/OS"]
    ]


def test_unknown_and_reserved_metrics_are_refused(bus: Bus, edge: EdgeNode) -> None:
    with pytest.raises(SparkplugMetricError):
        edge.update({"nope": 1})
    with pytest.raises(SparkplugMetricError):
        edge.update({REBIRTH_METRIC: True})
    with pytest.raises(SparkplugMetricError):
        edge.update({"Outputs/Setpoint": 2**40}, device_id="plc1")
    with pytest.raises(SparkplugStateError):
        edge.update({"x": 1}, device_id="unknown")


def test_sequence_wraps_from_255_to_0(bus: Bus, edge: EdgeNode) -> None:
    seqs = []
    for i in range(300):
        messages = edge.update({"Counter": i + 1}, device_id="plc1")
        seqs.append(decode_payload(messages[0].payload).seq)
        events = bus.send(messages)
        assert of_type(events, Data), events
    assert seqs[252:256] == [255, 0, 1, 2]  # births took 0..2
    assert not of_type(bus.events, RebirthRequested)


# --- loss and resynchronization ----------------------------------------------------------------


def test_skipped_seq_requests_rebirth_and_data_flows_after_it(
    bus: Bus, edge: EdgeNode, host: HostApplication
) -> None:
    edge.update({"Supply Voltage": 1.0})  # lost on the way
    events = bus.send(edge.update({"Supply Voltage": 2.0}))
    assert of_type(events, RebirthRequested) == [RebirthRequested(NODE, "seq_gap")]
    assert of_type(events, NodeStale) == [NodeStale(NODE, "seq_gap")]
    assert not of_type(events, Data)
    ncmd = next(m for m in bus.log if m.topic.endswith("/NCMD/gateway-7"))
    [rebirth] = decode_payload(ncmd.payload).metrics
    assert (rebirth.name, rebirth.value, ncmd.qos, ncmd.retain) == (REBIRTH_METRIC, True, 0, False)
    assert decode_payload(ncmd.payload).seq is None
    # The NCMD reached the edge node on the bus, which re-born at once.
    assert [type(e) for e in events[2:]] == [NodeBorn, DeviceBorn, DeviceBorn]
    reborn = {s.name: s.value for s in of_type(events, NodeBorn)[0].metrics}
    assert reborn["Supply Voltage"] == 2.0  # the birth carries the value the host missed
    assert host.node_status(NODE) is NodeStatus.ONLINE
    events = bus.send(edge.update({"Supply Voltage": 3.0}))
    assert [s.value for s in of_type(events, Data)[0].metrics] == [3.0]


def test_unknown_alias_requests_rebirth(bus: Bus, edge: EdgeNode, host: HostApplication) -> None:
    [message] = edge.update({"Supply Voltage": 5.0})
    payload = decode_payload(message.payload)
    forged = PayloadData(
        timestamp=payload.timestamp,
        seq=payload.seq,
        metrics=(Metric(alias=9999, datatype=DataType.FLOAT, value=1.0, timestamp=1),),
    )
    bus.drop = lambda m: "/NCMD/" in m.topic
    events = bus.send([message._replace(payload=encode_payload(forged))])
    assert of_type(events, RebirthRequested) == [RebirthRequested(NODE, "unknown_alias")]
    assert host.node_status(NODE) is NodeStatus.STALE
    assert host.device_status(NODE, "plc1") is NodeStatus.STALE


def test_datatype_mismatch_requests_rebirth(bus: Bus, edge: EdgeNode) -> None:
    [message] = edge.update({"Supply Voltage": 5.0})
    payload = decode_payload(message.payload)
    alias = payload.metrics[0].alias
    forged = PayloadData(
        timestamp=1,
        seq=payload.seq,
        metrics=(Metric(alias=alias, datatype=DataType.STRING, value="x"),),
    )
    events = bus.send([message._replace(payload=encode_payload(forged))])
    assert of_type(events, RebirthRequested)[0].reason == "datatype_mismatch"


def test_data_before_birth_requests_rebirth(clock: Clock, host: HostApplication) -> None:
    other = EdgeNodeDescriptor("Plant 1", "latecomer")
    data = PayloadData(
        timestamp=1, seq=17, metrics=(Metric(alias=1, datatype=DataType.INT8, value=1),)
    )
    out = host.handle_message("spBv1.0/Plant 1/NDATA/latecomer", encode_payload(data))
    assert out.events == (RebirthRequested(other, "data_before_birth"),)
    [ncmd] = out.messages
    assert ncmd.topic == "spBv1.0/Plant 1/NCMD/latecomer"
    assert host.node_status(other) is NodeStatus.UNKNOWN


def test_rebirth_requests_are_rate_limited(
    bus: Bus, edge: EdgeNode, host: HostApplication, clock: Clock
) -> None:
    bus.drop = lambda m: "/NCMD/" in m.topic  # the node never hears the requests
    edge.update({"Supply Voltage": 1.0})  # lost: the host goes out of sync
    for value in range(2, 50):
        clock.now += 10
        bus.send(edge.update({"Supply Voltage": float(value)}))
    assert len(of_type(bus.events, RebirthRequested)) == 1
    assert len(of_type(bus.events, NodeStale)) == 1
    assert not of_type(bus.events, Data)
    clock.now += 5_000
    events = bus.send(edge.update({"Supply Voltage": 99.0}))
    assert of_type(events, RebirthRequested) == [RebirthRequested(NODE, "awaiting_rebirth")]
    # The rate limit is per node: another node is answered at once.
    out = host.handle_message(
        "spBv1.0/Plant 1/NDATA/other",
        encode_payload(
            PayloadData(seq=1, metrics=(Metric(alias=1, datatype=DataType.INT8, value=1),))
        ),
    )
    assert len(out.messages) == 1
    clock.now += 1
    assert host.request_rebirth(NODE).messages == ()


# --- death certificates ------------------------------------------------------------------------


def test_ndeath_with_a_stale_bdseq_is_ignored_and_the_current_one_kills(
    bus: Bus, edge: EdgeNode, host: HostApplication
) -> None:
    first_will = bus.will
    assert first_will is not None
    edge.connection_lost()
    second_will = edge.connect()
    bus.send(edge.session_started())
    assert edge.bd_seq == 1
    assert of_type(bus.events, NodeBorn)[-1].bd_seq == 1
    assert decode_payload(first_will.payload).metrics[0].value == 0

    bus.drop = lambda m: "/NCMD/" in m.topic
    events = bus.send([first_will])  # the broker's late Will of the earlier connection
    assert not of_type(events, NodeDied)
    assert host.node_status(NODE) is NodeStatus.ONLINE
    assert of_type(events, RebirthRequested) == [RebirthRequested(NODE, "ndeath_bdseq_mismatch")]

    events = bus.send([second_will])
    assert events == [NodeDied(NODE, 1, ("plc1", "plc2"))]
    assert host.node_status(NODE) is NodeStatus.OFFLINE
    assert host.device_status(NODE, "plc1") is NodeStatus.OFFLINE
    assert host.latest(NODE)["Supply Voltage"].value == 12.0  # kept, but stale


def test_ddeath_marks_the_device_dead_and_dbirth_revives_it(
    bus: Bus, edge: EdgeNode, host: HostApplication
) -> None:
    [ddeath] = edge.device_offline("plc2")
    assert ddeath.topic == "spBv1.0/Plant 1/DDEATH/gateway-7/plc2"
    assert decode_payload(ddeath.payload).seq == 3
    assert bus.send([ddeath]) == [DeviceDied(NODE, "plc2")]
    assert host.device_status(NODE, "plc2") is NodeStatus.OFFLINE
    assert host.device_status(NODE, "plc1") is NodeStatus.ONLINE
    assert edge.update({"Running": True}, device_id="plc2") == []  # recorded, not sent
    events = bus.send(edge.device_online("plc2"))
    [born] = of_type(events, DeviceBorn)
    assert [(s.name, s.value) for s in born.metrics] == [("Running", True)]
    assert host.device_status(NODE, "plc2") is NodeStatus.ONLINE


def test_orderly_disconnect_publishes_ndeath(
    bus: Bus, edge: EdgeNode, host: HostApplication
) -> None:
    [ndeath] = edge.disconnect()
    assert (ndeath.qos, ndeath.retain) == (1, False)
    payload = decode_payload(ndeath.payload)
    assert payload.seq is None
    assert [(m.name, m.value) for m in payload.metrics] == [(BDSEQ_METRIC, 0)]
    assert of_type(bus.send([ndeath]), NodeDied)
    assert edge.state is EdgeNodeState.DISCONNECTED


# --- robustness --------------------------------------------------------------------------------


def test_garbage_is_reported_and_other_nodes_keep_working(
    bus: Bus, edge: EdgeNode, host: HostApplication
) -> None:
    truncated = bus.log[0].payload[: len(bus.log[0].payload) // 2]
    for topic, payload in [
        ("spBv1.0/Plant 1/NDATA/other", b"\xff\xfe\xfd"),
        ("spBv1.0/Plant 1/NBIRTH/other", truncated),
        ("spBv1.0/Plant 1/DDATA/other/dev", b"\x0a\x03abc"),
        ("spBv1.0/STATE/someone", b"not json"),
        ("spBv1.0/Plant 1/NDATA", b""),
        (
            "spBv1.0/Plant 1/NBIRTH/other",
            encode_payload(PayloadData(seq=0, metrics=(Metric(alias=1),))),
        ),
    ]:
        out = host.handle_message(topic, payload)
        [error] = out.events
        assert isinstance(error, ProtocolError)
        assert error.topic == topic
        assert out.messages == ()
    assert host.handle_message("not/sparkplug", b"\x00").events == ()
    events = bus.send(edge.update({"Supply Voltage": 7.0}))
    assert of_type(events, Data)
    assert host.node_status(NODE) is NodeStatus.ONLINE


@settings(max_examples=200)
@given(
    kind=st.sampled_from(["NBIRTH", "NDEATH", "NDATA", "DBIRTH/d", "DDATA/d", "DDEATH/d"]),
    payload=st.binary(max_size=120),
)
def test_host_never_raises_on_arbitrary_bytes(kind: str, payload: bytes) -> None:
    host = HostApplication(host_id="h", clock=Clock())
    kind_name, _, device = kind.partition("/")
    topic = f"spBv1.0/G/{kind_name}/n" + (f"/{device}" if device else "")
    host.handle_message(topic, payload)


# --- commands ----------------------------------------------------------------------------------


def test_rebirth_command_rebirths_with_the_same_aliases(
    bus: Bus, edge: EdgeNode, host: HostApplication
) -> None:
    before = [aliases_of(m) for m in bus.log[:3]]
    edge.update({"Supply Voltage": 13.0})  # lost, so values differ from the first birth too
    bus.log.clear()
    out = host.request_rebirth(NODE)
    events = bus.send(out.messages)
    nbirth, dbirth1, dbirth2 = bus.log[1:]
    assert [aliases_of(m) for m in (nbirth, dbirth1, dbirth2)] == before
    assert decode_payload(nbirth.payload).seq == 0
    assert {m.name: m.value for m in decode_payload(nbirth.payload).metrics}[BDSEQ_METRIC] == 0
    assert [type(e) for e in events] == [NodeBorn, DeviceBorn, DeviceBorn]
    assert of_type(events, NodeBorn)[0].stale_devices == ("plc1", "plc2")
    assert not bus.writes, "Node Control/Rebirth is handled by the session, not the gateway"
    # And the node stays in sync afterwards.
    assert of_type(bus.send(edge.update({"Supply Voltage": 14.0})), Data)


def test_dcmd_becomes_a_write_request(bus: Bus, edge: EdgeNode, host: HostApplication) -> None:
    command = host.write(NODE, {"Outputs/Setpoint": -42}, device_id="plc1")
    assert command.topic == "spBv1.0/Plant 1/DCMD/gateway-7/plc1"
    [metric] = decode_payload(command.payload).metrics
    assert metric.name is None  # by alias, as the specification asks
    bus.send([command])
    assert bus.writes == [WriteRequest("plc1", "Outputs/Setpoint", DataType.INT32, -42)]
    node_command = host.write(NODE, {"Properties/OS": "BSD"})
    bus.send([node_command])
    assert bus.writes[-1] == WriteRequest(None, "Properties/OS", DataType.STRING, "BSD")
    with pytest.raises(SparkplugMetricError):
        host.write(NODE, {"Outputs/Setpoint": "high"}, device_id="plc1")
    with pytest.raises(SparkplugStateError):
        host.write(NODE, {"x": 1}, device_id="nope")


def test_commands_by_name_and_bad_commands(edge: EdgeNode) -> None:
    edge.connect()
    edge.session_started()
    by_name = PayloadData(
        timestamp=1, metrics=(Metric(name="Outputs/Setpoint", datatype=DataType.INT32, value=7),)
    )
    out = edge.handle_message("spBv1.0/Plant 1/DCMD/gateway-7/plc1", encode_payload(by_name))
    assert out.writes == (WriteRequest("plc1", "Outputs/Setpoint", DataType.INT32, 7),)
    for topic, payload in [
        ("spBv1.0/Plant 1/DCMD/gateway-7/plc1", b"\xff"),
        ("spBv1.0/Plant 1/DCMD/gateway-7/ghost", encode_payload(by_name)),
        ("spBv1.0/Plant 1/NCMD/gateway-7", encode_payload(by_name)),
    ]:
        out = edge.handle_message(topic, payload)
        assert out.writes == ()
        assert len(out.rejected) == 1
    assert edge.handle_message("spBv1.0/Plant 1/NCMD/someone-else", b"\xff").rejected == ()


# --- lifecycles --------------------------------------------------------------------------------


def test_bdseq_increments_per_connection_and_wraps(clock: Clock) -> None:
    edge = make_edge(clock, bd_seq=254)
    seen = []
    for _ in range(3):
        will = edge.connect()
        assert (will.topic, will.qos, will.retain) == ("spBv1.0/Plant 1/NDEATH/gateway-7", 1, False)
        payload = decode_payload(will.payload)
        assert payload.seq is None
        [bd_seq] = payload.metrics
        seen.append(bd_seq.value)
        births = edge.session_started()
        assert {m.name: m.value for m in decode_payload(births[0].payload).metrics}[
            BDSEQ_METRIC
        ] == bd_seq.value
        edge.connection_lost()
    assert seen == [254, 255, 0]
    assert edge.next_bd_seq == 1


def test_edge_node_waits_for_its_primary_host(clock: Clock) -> None:
    edge = make_edge(clock, primary_host_id="tiangong")
    host = HostApplication(host_id="tiangong", clock=clock)
    bus = Bus(host, edge)
    assert "spBv1.0/STATE/tiangong" in edge.subscriptions()
    edge.connect()
    assert edge.session_started() == []
    assert edge.state is EdgeNodeState.WAITING_FOR_HOST
    with pytest.raises(SparkplugStateError):
        edge.rebirth()
    will = host.connect()
    assert (will.qos, will.retain) == (1, True)
    assert decode_state(will.payload) == HostState(online=False, timestamp=clock.now)
    [birth] = host.session_started()
    assert decode_state(birth.payload) == HostState(online=True, timestamp=clock.now)
    events = bus.send([birth])
    assert edge.state is EdgeNodeState.ONLINE
    assert [type(e) for e in events] == [NodeBorn, DeviceBorn, DeviceBorn]
    # An older session's STATE is ignored; the current session's death asks for a disconnect.
    bus.send([OutboundMessage(will.topic, encode_state(HostState(False, clock.now - 1)), 1, True)])
    assert bus.disconnect_requests == 0
    bus.send([will])
    assert bus.disconnect_requests == 1


def test_host_republishes_its_birth_when_it_sees_its_own_death(
    host: HostApplication, clock: Clock
) -> None:
    [old_death] = host.disconnect()
    clock.now += 60_000
    will = host.connect()
    host.session_started()
    out = host.handle_message(old_death.topic, old_death.payload)
    assert out.messages == ()  # an earlier session's retained death: our birth replaced it
    out = host.handle_message(will.topic, will.payload)
    [birth] = out.messages
    assert (birth.topic, birth.qos, birth.retain) == ("spBv1.0/STATE/tiangong", 1, True)
    assert decode_state(birth.payload) == HostState(online=True, timestamp=clock.now)


def test_host_connection_loss_makes_nodes_stale_until_they_rebirth(
    bus: Bus, edge: EdgeNode, host: HostApplication
) -> None:
    assert host.connection_lost() == [NodeStale(NODE, "host_disconnected")]
    assert host.node_status(NODE) is NodeStatus.STALE
    assert host.device_status(NODE, "plc1") is NodeStatus.STALE
    host.connect()
    host.session_started()
    edge.update({"Supply Voltage": 1.5})  # published while the host was away, at QoS 0: lost
    events = bus.send(edge.update({"Supply Voltage": 1.75}))
    assert of_type(events, RebirthRequested) == [RebirthRequested(NODE, "awaiting_rebirth")]
    assert not [e for e in events if isinstance(e, Data) and e.metrics[0].value == 1.75]
    assert host.node_status(NODE) is NodeStatus.ONLINE  # the rebirth went through on the bus


def test_a_node_whose_seq_continues_after_the_host_reconnects_resumes(
    bus: Bus, edge: EdgeNode, host: HostApplication
) -> None:
    bus.send(edge.device_offline("plc2"))
    host.connection_lost()
    host.connect()
    host.session_started()
    # The persistent session kept what the node published meanwhile, in order (QoS 1).
    events = bus.send(edge.update({"Inputs/Temperature": 21.5}, device_id="plc1"))
    [data] = of_type(events, Data)
    assert (data.device_id, data.metrics[0].value) == ("plc1", 21.5)
    assert not of_type(events, RebirthRequested)
    assert host.node_status(NODE) is NodeStatus.ONLINE
    assert host.device_status(NODE, "plc1") is NodeStatus.ONLINE
    assert host.device_status(NODE, "plc2") is NodeStatus.OFFLINE
    # Only the host's own disconnection is resumed so: a gap in the node's traffic is not.
    edge.update({"Supply Voltage": 3.0})
    bus.drop = lambda m: "/NCMD/" in m.topic
    bus.send(edge.update({"Supply Voltage": 4.0}))
    assert host.node_status(NODE) is NodeStatus.STALE
    events = bus.send(edge.update({"Supply Voltage": 5.0}))
    assert not of_type(events, Data)
    assert host.node_status(NODE) is NodeStatus.STALE


def test_subscriptions(host: HostApplication, edge: EdgeNode) -> None:
    assert host.subscriptions() == ("spBv1.0/STATE/tiangong", "spBv1.0/#")
    grouped = HostApplication(host_id="h", group_ids=["A", "B"])
    assert grouped.subscriptions() == ("spBv1.0/STATE/h", "spBv1.0/A/#", "spBv1.0/B/#")
    assert edge.subscriptions() == (
        "spBv1.0/Plant 1/NCMD/gateway-7",
        "spBv1.0/Plant 1/DCMD/gateway-7/+",
    )


# --- other implementations' ways, and broken certificates ---------------------------------------


def birth_without_aliases(seq: int = 0) -> bytes:
    return encode_payload(
        PayloadData(
            timestamp=500,
            seq=seq,
            metrics=(
                Metric(name=BDSEQ_METRIC, datatype=DataType.UINT64, value=4),
                Metric(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, value=False),
                Metric(name="Level", datatype=DataType.INT16, value=-3),
            ),
        )
    )


def test_a_node_without_aliases_is_understood_by_name(host: HostApplication, clock: Clock) -> None:
    other = EdgeNodeDescriptor("G", "tahu")
    out = host.handle_message("spBv1.0/G/NBIRTH/tahu", birth_without_aliases())
    [born] = out.events
    assert isinstance(born, NodeBorn)
    assert born.bd_seq == 4
    assert [s.timestamp for s in born.metrics] == [500, 500, 500]  # the payload's timestamp
    data = PayloadData(seq=1, metrics=(Metric(name="Level", datatype=DataType.INT16, value=-4),))
    out = host.handle_message("spBv1.0/G/NDATA/tahu", encode_payload(data))
    [event] = out.events
    assert isinstance(event, Data)
    assert [(s.name, s.value, s.timestamp) for s in event.metrics] == [("Level", -4, clock.now)]
    command = host.write(other, {"Level": 9})
    [metric] = decode_payload(command.payload).metrics
    assert (metric.name, metric.alias, metric.value) == ("Level", None, 9)
    # bdSeq as UInt64 in the NDEATH (as the specification's examples have it) matches too.
    death = PayloadData(metrics=(Metric(name=BDSEQ_METRIC, datatype=DataType.UINT64, value=4),))
    assert host.handle_message("spBv1.0/G/NDEATH/tahu", encode_payload(death)).events == (
        NodeDied(other, 4, ()),
    )
    # A death of a node that is already dead (or never born) changes nothing.
    assert host.handle_message("spBv1.0/G/NDEATH/tahu", encode_payload(death)) == HostOutput()
    assert host.handle_message("spBv1.0/G/NDEATH/ghost", encode_payload(death)) == HostOutput()


def test_a_broken_nbirth_makes_the_node_stale_without_a_rebirth_request(
    bus: Bus, host: HostApplication
) -> None:
    duplicate = PayloadData(
        seq=0,
        metrics=(
            Metric(name="a", alias=1, datatype=DataType.INT8, value=1),
            Metric(name="b", alias=1, datatype=DataType.INT8, value=1),
        ),
    )
    out = host.handle_message(str(bus.log[0].topic), encode_payload(duplicate))
    assert [type(e) for e in out.events] == [NodeStale, ProtocolError]
    assert out.messages == ()
    assert host.node_status(NODE) is NodeStatus.STALE
    for metrics in [
        (
            Metric(name="a", datatype=DataType.INT8, value=1),
            Metric(name="a", datatype=DataType.INT8),
        ),
        (Metric(name="a", value=None),),
    ]:
        out = host.handle_message(
            str(bus.log[0].topic), encode_payload(PayloadData(seq=0, metrics=metrics))
        )
        assert [e.reason for e in out.events if isinstance(e, ProtocolError)] == ["bad_birth"]


def test_device_messages_out_of_order(host: HostApplication) -> None:
    host.handle_message("spBv1.0/G/NBIRTH/tahu", birth_without_aliases())
    bad_dbirth = PayloadData(seq=1, metrics=(Metric(name="x"),))
    out = host.handle_message("spBv1.0/G/DBIRTH/tahu/d", encode_payload(bad_dbirth))
    assert [e.reason for e in out.events if isinstance(e, ProtocolError)] == ["bad_birth"]
    ddeath = PayloadData(seq=2)
    assert host.handle_message("spBv1.0/G/DDEATH/tahu/d", encode_payload(ddeath)) == HostOutput()
    ddata = PayloadData(seq=3, metrics=(Metric(name="x", datatype=DataType.INT8, value=1),))
    out = host.handle_message("spBv1.0/G/DDATA/tahu/d", encode_payload(ddata))
    assert RebirthRequested(EdgeNodeDescriptor("G", "tahu"), "data_before_birth") in out.events
    dbirth_first = PayloadData(seq=1, metrics=(Metric(name="x", datatype=DataType.INT8, value=1),))
    out = host.handle_message("spBv1.0/G/DBIRTH/tahu/other-node", encode_payload(dbirth_first))
    assert host.device_status(EdgeNodeDescriptor("G", "tahu"), "other-node") is NodeStatus.UNKNOWN
    assert host.latest(EdgeNodeDescriptor("G", "nobody")) == {}
    assert host.latest(EdgeNodeDescriptor("G", "tahu"), "nobody") == {}
    assert host.nodes() == {EdgeNodeDescriptor("G", "tahu"): NodeStatus.STALE}


def test_edge_node_refuses_bad_definitions_and_misuse(clock: Clock) -> None:
    for metric in [
        Metric(datatype=DataType.INT8, value=1),
        Metric(name="a", alias=5, datatype=DataType.INT8, value=1),
        Metric(name="a", value=1),
        Metric(name="a", datatype=DataType.INT8, value=1000),
        Metric(name=BDSEQ_METRIC, datatype=DataType.INT64, value=0),
    ]:
        with pytest.raises(SparkplugMetricError):
            EdgeNode(group_id="G", edge_node_id="N", metrics=[metric], clock=clock)
    edge = EdgeNode(group_id="G", edge_node_id="N", clock=clock)
    with pytest.raises(SparkplugMetricError):
        edge.add_device(
            "d",
            [Metric(name="a", datatype=DataType.INT8), Metric(name="a", datatype=DataType.INT8)],
        )
    with pytest.raises(SparkplugStateError):
        edge.session_started()
    with pytest.raises(SparkplugStateError):
        edge.device_online("ghost")
    with pytest.raises(ValueError):
        EdgeNode(group_id="G", edge_node_id="N", bd_seq=256)
    assert edge.add_device("d", [Metric(name="a", datatype=DataType.INT8)]) == []
    assert edge.device_offline("d") == []  # not online: nothing to publish
    out = edge.handle_message("spBv1.0/G/NCMD", b"")
    assert [r.reason for r in out.rejected] == ["bad_shape"]
    assert edge.handle_message("spBv1.0/G/NDATA/N", b"") == EdgeNodeOutput()
    assert edge.handle_message("spBv1.0/STATE/not-my-host", b"") == EdgeNodeOutput()


def test_redefining_a_device_keeps_its_aliases(bus: Bus, edge: EdgeNode) -> None:
    before = aliases_of(bus.log[2])
    [dbirth] = edge.add_device(
        "plc2",
        [
            Metric(name="Running", datatype=DataType.BOOLEAN),
            Metric(name="New", datatype=DataType.INT8, value=1),
        ],
    )
    after = aliases_of(dbirth)
    assert after["Running"] == before["Running"]
    assert after["New"] not in [a for m in bus.log for a in aliases_of(m).values()]
    events = bus.send([dbirth])
    assert [s.name for s in of_type(events, DeviceBorn)[0].metrics] == ["Running", "New"]

"""Sans-I/O Sparkplug B host application: the platform's view of every edge node.

Theory of operation
-------------------
A ``HostApplication`` lives as long as the platform's Sparkplug service and spans many MQTT
connections. The service's MQTT transport calls ``connect()`` before every CONNECT and registers
the returned STATE death (``{"online": false, "timestamp": T}``, QoS 1, retained) as the Will,
subscribes to ``subscriptions()`` (its own STATE topic and ``spBv1.0/#``, or one filter per
configured group), then publishes what ``session_started()`` returns: the STATE birth with the
same ``T``. Every received message goes to ``handle_message()``, which never raises: it returns
typed events for the platform and MQTT messages (rebirth requests) to publish.

Each edge node is tracked from its certificates. The node's status moves through one table,
``_NODE_TRANSITIONS``::

    UNKNOWN --NBIRTH--> ONLINE --out of sync--> STALE --NBIRTH--> ONLINE
                         | ^                        |
                         | +--------resume----------+  (the next seq, after the host's
                         |                              own reconnect: see below)
                         +--NDEATH (bdSeq of this birth)--> OFFLINE --NBIRTH--> ONLINE

``ONLINE`` means the host holds the node's birth certificate and has seen every message since:
the alias -> (name, datatype) maps of the node and of each born device are current, and every
NDATA/DDATA becomes a ``Data`` event. Messages are checked against that: seq must be the
previous one plus one (wrapping 255 -> 0; NBIRTH restarts it), aliases must be known, DATA must
follow its BIRTH. Anything else means the host has lost track, so the node goes ``STALE`` (its
metrics and its devices' are not current), its messages are dropped, and an NCMD with
``Node Control/Rebirth`` = true asks it for a fresh birth sequence. The Reorder Timeout of the
specification is zero here: an out-of-order message is treated as a lost one. Rebirth requests
are limited to one per node per ``rebirth_interval_ms`` so that a broken node cannot make the
host flood the broker; a node that stays out of sync is asked again after the interval.

An NDEATH counts only when its bdSeq is the one of the birth the host holds: the broker may
deliver the Will of an earlier connection after the node has already reconnected and re-born.
One that does not match is ignored, but it does show that the host's picture is uncertain, so
a rebirth is requested (within the same rate limit). A DDEATH marks one device offline.

Garbage (undecodable protobuf or JSON, bad topics in ``spBv1.0``) becomes a ``ProtocolError``
event and changes nothing; the lost message, if it mattered, shows up as a seq gap next.
When the host's own connection drops, every online node becomes ``STALE`` (the specification
requires its metrics be marked stale). Whether it missed anything shows in the seq of the
node's next message after the reconnect: with a persistent session the broker queued the QoS 1
messages (deaths, and data and births of nodes that publish them with QoS 1, as Tiangong's
gateway does) in order and dropped the QoS 0 ones, so a node whose next message carries exactly
the next seq lost nothing and resumes (``ONLINE`` again, with the devices that were online),
while any other message is out of step and triggers a rebirth as usual. Only a stale mark of
the host's own disconnection is resumed so; one for a gap in the node's traffic waits for the
birth.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from tiangong.network.errors import (
    SparkplugError,
    SparkplugMetricError,
    SparkplugPayloadError,
    SparkplugStateError,
    SparkplugTopicError,
)
from tiangong.network.sparkplug.codec import (
    BDSEQ_METRIC,
    NAMESPACE,
    REBIRTH_METRIC,
    DataType,
    EdgeNodeDescriptor,
    HostState,
    MessageType,
    Metric,
    MetricValue,
    OutboundMessage,
    PayloadData,
    SparkplugTopic,
    StateTopic,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
    parse_topic,
    resolve_datatype,
    validate_value,
    wall_clock_ms,
)

__all__ = [
    "Data",
    "DeviceBorn",
    "DeviceDied",
    "HostApplication",
    "HostEvent",
    "HostOutput",
    "HostSessionState",
    "MetricSample",
    "NodeBorn",
    "NodeDied",
    "NodeStale",
    "NodeStatus",
    "ProtocolError",
    "RebirthRequested",
]


class NodeStatus(enum.Enum):
    """What the host knows about an edge node (or a device)."""

    UNKNOWN = "unknown"  # no birth certificate seen yet
    ONLINE = "online"  # born, and in sync
    STALE = "stale"  # was online; the host lost track, its values are not current
    OFFLINE = "offline"  # death certificate received


_NODE_TRANSITIONS: Final[dict[tuple[NodeStatus, str], NodeStatus]] = {
    (NodeStatus.UNKNOWN, "birth"): NodeStatus.ONLINE,
    (NodeStatus.ONLINE, "birth"): NodeStatus.ONLINE,
    (NodeStatus.STALE, "birth"): NodeStatus.ONLINE,
    (NodeStatus.OFFLINE, "birth"): NodeStatus.ONLINE,
    (NodeStatus.STALE, "resume"): NodeStatus.ONLINE,
    (NodeStatus.ONLINE, "desync"): NodeStatus.STALE,
    (NodeStatus.STALE, "desync"): NodeStatus.STALE,
    (NodeStatus.UNKNOWN, "desync"): NodeStatus.UNKNOWN,
    (NodeStatus.OFFLINE, "desync"): NodeStatus.OFFLINE,
    (NodeStatus.ONLINE, "death"): NodeStatus.OFFLINE,
    (NodeStatus.STALE, "death"): NodeStatus.OFFLINE,
}


class HostSessionState(enum.Enum):
    """The host application's own MQTT session."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    ONLINE = "online"


_SESSION_TRANSITIONS: Final[dict[tuple[HostSessionState, str], HostSessionState]] = {
    (HostSessionState.DISCONNECTED, "connect"): HostSessionState.CONNECTING,
    (HostSessionState.CONNECTING, "connect"): HostSessionState.CONNECTING,
    (HostSessionState.CONNECTING, "session_started"): HostSessionState.ONLINE,
    (HostSessionState.CONNECTING, "lost"): HostSessionState.DISCONNECTED,
    (HostSessionState.ONLINE, "lost"): HostSessionState.DISCONNECTED,
    (HostSessionState.DISCONNECTED, "lost"): HostSessionState.DISCONNECTED,
    (HostSessionState.ONLINE, "disconnect"): HostSessionState.DISCONNECTED,
}


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One metric value as the platform sees it: resolved name and datatype, a timestamp.

    ``timestamp`` is the metric's own, else the payload's, else the time of receipt (ms, UTC).
    ``value`` is ``None`` for null.
    """

    name: str
    datatype: DataType
    timestamp: int
    value: MetricValue
    is_historical: bool = False
    is_transient: bool = False


@dataclass(frozen=True, slots=True)
class NodeBorn:
    """NBIRTH: the node is online with these metrics.

    ``stale_devices`` were born in the node's previous session and stay stale until their
    DBIRTH in this one.
    """

    node: EdgeNodeDescriptor
    bd_seq: int | None
    metrics: tuple[MetricSample, ...]
    stale_devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceBorn:
    """DBIRTH: the device is online with these metrics."""

    node: EdgeNodeDescriptor
    device_id: str
    metrics: tuple[MetricSample, ...]


@dataclass(frozen=True, slots=True)
class Data:
    """NDATA (``device_id`` ``None``) or DDATA: new values of some metrics."""

    node: EdgeNodeDescriptor
    device_id: str | None
    metrics: tuple[MetricSample, ...]


@dataclass(frozen=True, slots=True)
class NodeDied:
    """NDEATH matching the current birth: the node and ``devices`` are offline, values stale."""

    node: EdgeNodeDescriptor
    bd_seq: int | None
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeStale:
    """The host lost track of a node (``reason``): its and its devices' values are stale."""

    node: EdgeNodeDescriptor
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceDied:
    """DDEATH: the device is offline and its values are stale."""

    node: EdgeNodeDescriptor
    device_id: str


@dataclass(frozen=True, slots=True)
class RebirthRequested:
    """An NCMD ``Node Control/Rebirth`` was issued to the node (it is in the output messages)."""

    node: EdgeNodeDescriptor
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A message that could not be used (``reason`` is a stable code, ``detail`` prose)."""

    topic: str
    reason: str
    detail: str = ""


HostEvent = (
    NodeBorn
    | DeviceBorn
    | Data
    | NodeDied
    | NodeStale
    | DeviceDied
    | RebirthRequested
    | ProtocolError
)


@dataclass(frozen=True, slots=True)
class HostOutput:
    """What one received message produced: events for the platform, messages to publish."""

    events: tuple[HostEvent, ...] = ()
    messages: tuple[OutboundMessage, ...] = ()


# --- per-node records --------------------------------------------------------------------------


@dataclass(slots=True)
class _Known:
    name: str
    alias: int | None
    datatype: DataType
    sample: MetricSample


@dataclass(slots=True)
class _Scope:
    """The metrics of a node or of one device, as declared by its birth certificate."""

    status: NodeStatus = NodeStatus.UNKNOWN
    by_name: dict[str, _Known] = field(default_factory=dict)
    by_alias: dict[int, _Known] = field(default_factory=dict)


@dataclass(slots=True)
class _NodeRecord:
    node: EdgeNodeDescriptor
    scope: _Scope = field(default_factory=_Scope)
    devices: dict[str, _Scope] = field(default_factory=dict)
    bd_seq: int | None = None
    last_seq: int = 0
    last_rebirth_request: int | None = None
    # Set while the node is stale only because the host's connection dropped: the devices
    # that were online then, to be resumed if the node's next message carries the next seq.
    resumable: frozenset[str] | None = None

    @property
    def status(self) -> NodeStatus:
        return self.scope.status


class _Desync(Exception):  # noqa: N818 - internal control flow, never escapes the module
    """The host lost track of a node; carries the reason code for events."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class HostApplication:
    """Sparkplug B host application state, free of I/O.

    Args:
        host_id: this host's Sparkplug host id (its STATE topic is ``spBv1.0/STATE/<host_id>``).
        group_ids: subscribe to these groups only; all groups when ``None``.
        rebirth_interval_ms: at most one rebirth request per node within this many ms.
        clock: milliseconds since the epoch, UTC; injectable for tests.

    Attributes:
        state_topic: this host's STATE topic.
        group_ids: the groups subscribed to, or ``None`` for all.
        rebirth_interval_ms: the per-node rate limit of rebirth requests.
        state: the host's own MQTT session (``HostSessionState``).

    Raises:
        SparkplugTopicError: ``host_id`` or a group id is not valid in a topic.
    """

    def __init__(
        self,
        *,
        host_id: str,
        group_ids: Iterable[str] | None = None,
        rebirth_interval_ms: int = 5_000,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        if rebirth_interval_ms < 0:
            raise ValueError("rebirth_interval_ms cannot be negative")
        self.state_topic = StateTopic(host_id)
        self.group_ids = tuple(group_ids) if group_ids is not None else None
        for group_id in self.group_ids or ():
            EdgeNodeDescriptor(group_id, "x")  # validates the group id
        self.rebirth_interval_ms = rebirth_interval_ms
        self.state = HostSessionState.DISCONNECTED
        self._clock = clock
        self._session_timestamp = 0
        self._nodes: dict[EdgeNodeDescriptor, _NodeRecord] = {}

    # -- own session ------------------------------------------------------------------------------

    def _fire(self, trigger: str) -> None:
        try:
            self.state = _SESSION_TRANSITIONS[(self.state, trigger)]
        except KeyError as exc:
            raise SparkplugStateError(self.state.value, f"{trigger!r} is not allowed now") from exc

    def subscriptions(self) -> tuple[str, ...]:
        """Topic filters to subscribe to after CONNACK and before ``session_started()``."""
        if self.group_ids is None:
            return (str(self.state_topic), f"{NAMESPACE}/#")
        return (str(self.state_topic), *(f"{NAMESPACE}/{group}/#" for group in self.group_ids))

    def connect(self) -> OutboundMessage:
        """Start a new MQTT connection; return the STATE death to register as its Will."""
        self._fire("connect")
        self._session_timestamp = self._clock()
        return self._state_message(online=False)

    def session_started(self) -> list[OutboundMessage]:
        """Connected and subscribed: return the STATE birth (same timestamp as the Will)."""
        self._fire("session_started")
        return [self._state_message(online=True)]

    def disconnect(self) -> list[OutboundMessage]:
        """Return the STATE death to publish before an orderly MQTT DISCONNECT."""
        self._fire("disconnect")
        return [self._state_message(online=False)]

    def connection_lost(self) -> list[HostEvent]:
        """The connection broke: every online node's values are now stale.

        A node resumes without a rebirth if its next message carries the next seq (see the
        module docstring).
        """
        self._fire("lost")
        events: list[HostEvent] = []
        for record in self._nodes.values():
            if record.status is NodeStatus.ONLINE:
                online = frozenset(
                    device_id
                    for device_id, device in record.devices.items()
                    if device.status is NodeStatus.ONLINE
                )
                self._mark_stale(record)
                record.resumable = online
                events.append(NodeStale(record.node, "host_disconnected"))
        return events

    def _state_message(self, *, online: bool) -> OutboundMessage:
        payload = encode_state(HostState(online=online, timestamp=self._session_timestamp))
        return OutboundMessage(str(self.state_topic), payload, 1, True)

    # -- queries ----------------------------------------------------------------------------------

    def nodes(self) -> dict[EdgeNodeDescriptor, NodeStatus]:
        """Every edge node seen, with its status."""
        return {node: record.status for node, record in self._nodes.items()}

    def node_status(self, node: EdgeNodeDescriptor) -> NodeStatus:
        """The status of one edge node (``UNKNOWN`` if never seen)."""
        record = self._nodes.get(node)
        return record.status if record is not None else NodeStatus.UNKNOWN

    def device_status(self, node: EdgeNodeDescriptor, device_id: str) -> NodeStatus:
        """The status of one device (``UNKNOWN`` if it never had a DBIRTH)."""
        record = self._nodes.get(node)
        scope = record.devices.get(device_id) if record is not None else None
        return scope.status if scope is not None else NodeStatus.UNKNOWN

    def latest(
        self, node: EdgeNodeDescriptor, device_id: str | None = None
    ) -> dict[str, MetricSample]:
        """The last value of every metric of a node or device (stale unless it is ONLINE)."""
        record = self._nodes.get(node)
        if record is None:
            return {}
        scope = record.scope if device_id is None else record.devices.get(device_id)
        if scope is None:
            return {}
        return {name: known.sample for name, known in scope.by_name.items()}

    # -- commands ---------------------------------------------------------------------------------

    def write(
        self,
        node: EdgeNodeDescriptor,
        values: Mapping[str, MetricValue],
        *,
        device_id: str | None = None,
    ) -> OutboundMessage:
        """Build an NCMD (or DCMD) that writes ``values`` to metrics of an online node/device.

        Metrics are addressed by alias when the birth certificate gave one, else by name.

        Raises:
            SparkplugStateError: the node or device is not online.
            SparkplugMetricError: an unknown metric or a value that does not fit its datatype.
        """
        record = self._nodes.get(node)
        scope = None
        if record is not None and record.status is NodeStatus.ONLINE:
            scope = record.scope if device_id is None else record.devices.get(device_id)
        if scope is None or scope.status is not NodeStatus.ONLINE:
            where = str(node) if device_id is None else f"{node}/{device_id}"
            status = scope.status if scope is not None else self.node_status(node)
            raise SparkplugStateError(status.value, f"{where} is not online")
        now = self._clock()
        metrics: list[Metric] = []
        for name, value in values.items():
            known = scope.by_name.get(name)
            if known is None:
                raise SparkplugMetricError(name, None, "unknown_metric", "not in the birth")
            validate_value(known.datatype, value, name)
            metrics.append(
                Metric(
                    name=name if known.alias is None else None,
                    alias=known.alias,
                    timestamp=now,
                    datatype=known.datatype,
                    value=value,
                    is_null=value is None,
                )
            )
        kind = MessageType.NCMD if device_id is None else MessageType.DCMD
        topic = SparkplugTopic(kind, node, device_id)
        payload = PayloadData(timestamp=now, metrics=tuple(metrics))
        return OutboundMessage(str(topic), encode_payload(payload), 0, False)

    def request_rebirth(self, node: EdgeNodeDescriptor, reason: str = "requested") -> HostOutput:
        """Ask a node for a fresh birth sequence, within the per-node rate limit."""
        record = self._nodes.setdefault(node, _NodeRecord(node))
        events: list[HostEvent] = []
        messages: list[OutboundMessage] = []
        self._maybe_request_rebirth(record, reason, events, messages)
        return HostOutput(tuple(events), tuple(messages))

    def _maybe_request_rebirth(
        self,
        record: _NodeRecord,
        reason: str,
        events: list[HostEvent],
        messages: list[OutboundMessage],
    ) -> None:
        now = self._clock()
        last = record.last_rebirth_request
        if last is not None and 0 <= now - last < self.rebirth_interval_ms:
            return
        record.last_rebirth_request = now
        # By name, not alias: the host asks precisely because its alias map may be wrong.
        command = PayloadData(
            timestamp=now,
            metrics=(
                Metric(name=REBIRTH_METRIC, timestamp=now, datatype=DataType.BOOLEAN, value=True),
            ),
        )
        topic = SparkplugTopic(MessageType.NCMD, record.node)
        messages.append(OutboundMessage(str(topic), encode_payload(command), 0, False))
        events.append(RebirthRequested(record.node, reason))

    # -- inbound ----------------------------------------------------------------------------------

    def handle_message(self, topic: str, payload: bytes) -> HostOutput:
        """Handle one received message. Never raises for bad input.

        Topics outside ``spBv1.0`` are ignored; commands (NCMD, DCMD) are other hosts' (or
        our own) and ignored too.
        """
        try:
            parsed = parse_topic(topic)
        except SparkplugTopicError as exc:
            if exc.reason == "not_sparkplug":
                return HostOutput()
            return HostOutput(events=(ProtocolError(topic, exc.reason, exc.detail),))
        if isinstance(parsed, StateTopic):
            return self._on_state(topic, parsed, payload)
        if parsed.message_type in (MessageType.NCMD, MessageType.DCMD):
            return HostOutput()
        try:
            data = decode_payload(payload)
        except SparkplugPayloadError as exc:
            return HostOutput(events=(ProtocolError(topic, exc.reason, exc.detail),))
        record = self._nodes.setdefault(parsed.node, _NodeRecord(parsed.node))
        events: list[HostEvent] = []
        messages: list[OutboundMessage] = []
        try:
            match parsed.message_type:
                case MessageType.NBIRTH:
                    self._on_nbirth(topic, record, data, events)
                case MessageType.NDEATH:
                    self._on_ndeath(record, data, events, messages)
                case _:
                    self._on_sequenced(record, parsed, data, events)
        except _Desync as desync:
            record.resumable = None
            if record.status is NodeStatus.ONLINE:
                self._mark_stale(record)
                events.append(NodeStale(record.node, desync.reason))
            self._maybe_request_rebirth(record, desync.reason, events, messages)
        except SparkplugError as exc:
            events.append(ProtocolError(topic, exc.reason, exc.detail))
        return HostOutput(tuple(events), tuple(messages))

    def _on_state(self, topic: str, parsed: StateTopic, payload: bytes) -> HostOutput:
        try:
            state = decode_state(payload)
        except SparkplugPayloadError as exc:
            return HostOutput(events=(ProtocolError(topic, exc.reason, exc.detail),))
        # Our own death while we are connected (a session takeover, or the broker dropping
        # us and a new session racing the Will) would tell edge nodes we are gone: correct it.
        if (
            parsed == self.state_topic
            and not state.online
            and self.state is HostSessionState.ONLINE
            and state.timestamp >= self._session_timestamp
        ):
            return HostOutput(messages=(self._state_message(online=True),))
        return HostOutput()

    def _on_nbirth(
        self, topic: str, record: _NodeRecord, data: PayloadData, events: list[HostEvent]
    ) -> None:
        try:
            scope = self._birth_scope(data, self._clock())
        except SparkplugPayloadError as exc:
            # A new session began, so the old birth no longer holds; but asking a node whose
            # births are broken for another birth would only repeat it, so no rebirth request.
            if record.status is NodeStatus.ONLINE:
                self._mark_stale(record)
                events.append(NodeStale(record.node, exc.reason))
            events.append(ProtocolError(topic, exc.reason, exc.detail))
            return
        bd_seq_sample = scope.by_name.get(BDSEQ_METRIC)
        bd_seq = bd_seq_sample.sample.value if bd_seq_sample is not None else None
        stale_devices: list[str] = []
        for device_id, device in record.devices.items():
            if device.status is NodeStatus.ONLINE:
                stale_devices.append(device_id)
            if device.status is not NodeStatus.OFFLINE:
                device.status = NodeStatus.STALE
        self._fire_node(record, "birth")
        record.resumable = None
        scope.status = record.status
        record.scope = scope
        record.bd_seq = bd_seq if isinstance(bd_seq, int) else None
        record.last_seq = data.seq if data.seq is not None and data.seq <= 255 else 0
        events.append(
            NodeBorn(
                record.node,
                record.bd_seq,
                tuple(known.sample for known in scope.by_name.values()),
                tuple(stale_devices),
            )
        )

    def _on_ndeath(
        self,
        record: _NodeRecord,
        data: PayloadData,
        events: list[HostEvent],
        messages: list[OutboundMessage],
    ) -> None:
        if record.status not in (NodeStatus.ONLINE, NodeStatus.STALE):
            return  # never born, or already dead: nothing to take back
        bd_seq = next(
            (metric.value for metric in data.metrics if metric.name == BDSEQ_METRIC), None
        )
        if bd_seq != record.bd_seq:
            self._maybe_request_rebirth(record, "ndeath_bdseq_mismatch", events, messages)
            return
        self._fire_node(record, "death")
        record.resumable = None
        devices = []
        for device_id, device in record.devices.items():
            if device.status is not NodeStatus.OFFLINE:
                devices.append(device_id)
                device.status = NodeStatus.OFFLINE
        events.append(NodeDied(record.node, record.bd_seq, tuple(devices)))

    def _on_sequenced(
        self,
        record: _NodeRecord,
        parsed: SparkplugTopic,
        data: PayloadData,
        events: list[HostEvent],
    ) -> None:
        kind = parsed.message_type
        expected = (record.last_seq + 1) % 256
        if record.resumable is not None and data.seq == expected:
            self._resume(record)
        if record.status is not NodeStatus.ONLINE:
            stale = record.status is NodeStatus.STALE
            raise _Desync(
                "awaiting_rebirth" if stale else "data_before_birth",
                f"{kind.value} while the node is {record.status.value}",
            )
        if data.seq != expected:
            raise _Desync("seq_gap", f"expected seq {expected}, got {data.seq}")
        record.last_seq = expected
        assert parsed.device_id is not None or kind is MessageType.NDATA
        if kind is MessageType.NDATA:
            events.append(Data(record.node, None, self._apply(record.scope, data)))
        elif kind is MessageType.DBIRTH:
            assert parsed.device_id is not None
            scope = self._birth_scope(data, self._clock())
            scope.status = NodeStatus.ONLINE
            record.devices[parsed.device_id] = scope
            samples = tuple(known.sample for known in scope.by_name.values())
            events.append(DeviceBorn(record.node, parsed.device_id, samples))
        else:
            assert parsed.device_id is not None
            device = record.devices.get(parsed.device_id)
            if device is None or device.status is not NodeStatus.ONLINE:
                if kind is MessageType.DDEATH:
                    return  # a device we do not hold as online is already dead to us
                raise _Desync("data_before_birth", f"DDATA before DBIRTH of {parsed.device_id!r}")
            if kind is MessageType.DDEATH:
                device.status = NodeStatus.OFFLINE
                events.append(DeviceDied(record.node, parsed.device_id))
            else:
                events.append(Data(record.node, parsed.device_id, self._apply(device, data)))

    def _birth_scope(self, data: PayloadData, now: int) -> _Scope:
        scope = _Scope()
        for metric in data.metrics:
            if metric.name is None:
                raise SparkplugPayloadError(
                    "bad_birth", f"birth metric alias {metric.alias} has no name"
                )
            if metric.datatype is DataType.UNKNOWN:
                raise SparkplugPayloadError("bad_birth", f"{metric.name!r} has no datatype")
            if metric.name in scope.by_name:
                raise SparkplugPayloadError("bad_birth", f"metric {metric.name!r} is born twice")
            if metric.alias is not None and metric.alias in scope.by_alias:
                raise SparkplugPayloadError("bad_birth", f"alias {metric.alias} is given twice")
            sample = _sample(metric.name, metric, data, now)
            known = _Known(metric.name, metric.alias, metric.datatype, sample)
            scope.by_name[metric.name] = known
            if metric.alias is not None:
                scope.by_alias[metric.alias] = known
        return scope

    def _apply(self, scope: _Scope, data: PayloadData) -> tuple[MetricSample, ...]:
        now = self._clock()
        resolved: list[tuple[_Known, MetricSample]] = []
        for metric in data.metrics:
            known = scope.by_alias.get(metric.alias) if metric.alias is not None else None
            if known is None and metric.name is not None:
                known = scope.by_name.get(metric.name)
            if known is None:
                label = f"alias {metric.alias}" if metric.alias is not None else repr(metric.name)
                raise _Desync("unknown_alias", f"{label} is not in the birth certificate")
            try:
                typed = resolve_datatype(metric, known.datatype)
            except SparkplugMetricError as exc:
                raise _Desync(exc.reason, exc.detail) from exc
            resolved.append((known, _sample(known.name, typed, data, now)))
        # Only a message that is entirely understood changes the stored values.
        for known, sample in resolved:
            if not sample.is_historical:
                known.sample = sample
        return tuple(sample for _, sample in resolved)

    def _fire_node(self, record: _NodeRecord, trigger: str) -> None:
        record.scope.status = _NODE_TRANSITIONS[(record.status, trigger)]

    def _resume(self, record: _NodeRecord) -> None:
        """The node's traffic continues where it was when the host's connection dropped."""
        self._fire_node(record, "resume")
        for device_id in record.resumable or ():
            device = record.devices.get(device_id)
            if device is not None and device.status is NodeStatus.STALE:
                device.status = NodeStatus.ONLINE
        record.resumable = None

    def _mark_stale(self, record: _NodeRecord) -> None:
        self._fire_node(record, "desync")
        for device in record.devices.values():
            if device.status is NodeStatus.ONLINE:
                device.status = NodeStatus.STALE


def _sample(name: str, metric: Metric, data: PayloadData, now: int) -> MetricSample:
    if metric.timestamp is not None:
        timestamp = metric.timestamp
    elif data.timestamp is not None:
        timestamp = data.timestamp
    else:
        timestamp = now
    return MetricSample(
        name=name,
        datatype=metric.datatype,
        timestamp=timestamp,
        value=metric.value,
        is_historical=metric.is_historical,
        is_transient=metric.is_transient,
    )

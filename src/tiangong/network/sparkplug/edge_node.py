"""Sans-I/O Sparkplug B edge node session: what an edge gateway publishes, and when.

Theory of operation
-------------------
An ``EdgeNode`` lives as long as the gateway process and spans many MQTT connections. It holds
every metric of the node and of its devices (name, datatype, current value), assigns aliases,
and numbers messages; the gateway's MQTT transport does the I/O and calls in:

1. ``connect()`` before every MQTT CONNECT: it returns the NDEATH to register as the Will (QoS 1,
   not retained) carrying the connection's bdSeq. bdSeq starts at ``bd_seq`` (0 unless the
   gateway persisted it) and goes up by one, wrapping 255 -> 0, on every connect.
2. ``session_started()`` once CONNACK and the SUBACK for ``subscriptions()`` are in. Without a
   primary host it returns the birth sequence: NBIRTH (seq 0, every node metric plus ``bdSeq``
   and ``Node Control/Rebirth`` = false) followed by one DBIRTH per reachable device. With a
   primary host configured the births wait for that host's STATE to say it is online.
3. ``update()``, ``add_device()``, ``device_online()`` and ``device_offline()`` while online
   return NDATA/DDATA (only the metrics that changed, by alias), DBIRTH or DDEATH. Every message
   after NBIRTH carries the next seq, wrapping 255 -> 0. Offline, they only record the change,
   which the next birth certificate then carries. ``report()`` publishes samples as given, each
   at its own timestamp and without comparing, for a gateway forwarding what it buffered; those
   from before the session are flagged historical and leave the current values alone.
4. ``handle_message()`` for what arrives on the subscriptions: NCMD ``Node Control/Rebirth`` =
   true yields a fresh NBIRTH and all DBIRTHs (same bdSeq, same aliases); other NCMD and DCMD
   metrics become ``WriteRequest`` values for the gateway to carry out (it then reports the new
   value with ``update()``); a primary host's STATE going offline asks the gateway to
   disconnect, as the specification requires.
5. ``disconnect()`` before an orderly MQTT DISCONNECT returns the NDEATH to publish first;
   ``connection_lost()`` when the connection broke (the broker publishes the Will).

States and transitions (one table, ``_TRANSITIONS``)::

    DISCONNECTED --connect()--> CONNECTING --session_started()--> WAITING_FOR_HOST
         ^   ^                   |  ^  connect() again                 |  births (no primary host,
         |   +-----lost----------+--+                                  v  or its STATE is online)
         +---- connection_lost() / disconnect() ------------------ ONLINE --rebirth--> ONLINE

Aliases are given once per (device, metric name), counting up from 1, and never reused: a
metric keeps its alias across rebirths, reconnects and device deaths, so aliases are unique
across the node's metrics and all its devices. Values are compared before they are sent
(report by exception): an ``update()`` that changes nothing publishes nothing.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from tiangong.network.errors import (
    SparkplugError,
    SparkplugMetricError,
    SparkplugStateError,
    SparkplugTopicError,
)
from tiangong.network.sparkplug.codec import (
    BDSEQ_METRIC,
    NAMESPACE,
    REBIRTH_METRIC,
    DataType,
    EdgeNodeDescriptor,
    MessageType,
    MetaData,
    Metric,
    MetricValue,
    OutboundMessage,
    PayloadData,
    PropertySet,
    SparkplugTopic,
    StateTopic,
    decode_payload,
    decode_state,
    encode_payload,
    parse_topic,
    resolve_datatype,
    validate_value,
    wall_clock_ms,
)

__all__ = [
    "CommandRejected",
    "EdgeNode",
    "EdgeNodeOutput",
    "EdgeNodeState",
    "WriteRequest",
]

_RESERVED: Final = frozenset({BDSEQ_METRIC, REBIRTH_METRIC})


class EdgeNodeState(enum.Enum):
    """Where the edge node is in its session lifecycle."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    WAITING_FOR_HOST = "waiting_for_host"
    ONLINE = "online"


_TRANSITIONS: Final[dict[tuple[EdgeNodeState, str], EdgeNodeState]] = {
    (EdgeNodeState.DISCONNECTED, "connect"): EdgeNodeState.CONNECTING,
    # A CONNECT that got no CONNACK may be retried; it is a new CONNECT, so a new bdSeq.
    (EdgeNodeState.CONNECTING, "connect"): EdgeNodeState.CONNECTING,
    (EdgeNodeState.CONNECTING, "session_started"): EdgeNodeState.WAITING_FOR_HOST,
    (EdgeNodeState.WAITING_FOR_HOST, "birth"): EdgeNodeState.ONLINE,
    (EdgeNodeState.ONLINE, "birth"): EdgeNodeState.ONLINE,
    (EdgeNodeState.DISCONNECTED, "lost"): EdgeNodeState.DISCONNECTED,
    (EdgeNodeState.CONNECTING, "lost"): EdgeNodeState.DISCONNECTED,
    (EdgeNodeState.WAITING_FOR_HOST, "lost"): EdgeNodeState.DISCONNECTED,
    (EdgeNodeState.ONLINE, "lost"): EdgeNodeState.DISCONNECTED,
    (EdgeNodeState.WAITING_FOR_HOST, "disconnect"): EdgeNodeState.DISCONNECTED,
    (EdgeNodeState.ONLINE, "disconnect"): EdgeNodeState.DISCONNECTED,
}


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A host asked (NCMD or DCMD) to write ``value`` to a metric; the gateway carries it out.

    ``device_id`` is ``None`` for a node metric (NCMD).
    """

    device_id: str | None
    name: str
    datatype: DataType
    value: MetricValue


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """A command that could not be understood (bad payload, unknown metric or device)."""

    topic: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class EdgeNodeOutput:
    """What ``EdgeNode.handle_message`` asks of the gateway.

    Attributes:
        messages: publish these, in order.
        writes: carry these out, then report the resulting values with ``update()``.
        rejected: commands that were dropped, for logs and counters.
        disconnect: the primary host went offline: call ``disconnect()``, publish what it
            returns, close the connection and connect again (to the next server, if several).
    """

    messages: tuple[OutboundMessage, ...] = ()
    writes: tuple[WriteRequest, ...] = ()
    rejected: tuple[CommandRejected, ...] = ()
    disconnect: bool = False


@dataclass(slots=True)
class _MetricSlot:
    name: str
    alias: int
    datatype: DataType
    value: MetricValue
    timestamp: int
    properties: PropertySet
    metadata: MetaData | None
    is_transient: bool

    def birth_metric(self) -> Metric:
        return Metric(
            name=self.name,
            alias=self.alias,
            timestamp=self.timestamp,
            datatype=self.datatype,
            value=self.value,
            is_null=self.value is None,
            is_transient=self.is_transient,
            properties=self.properties,
            metadata=self.metadata,
        )

    def data_metric(self) -> Metric:
        return Metric(
            alias=self.alias,
            timestamp=self.timestamp,
            datatype=self.datatype,
            value=self.value,
            is_null=self.value is None,
            is_transient=self.is_transient,
        )


@dataclass(slots=True)
class _Device:
    metrics: dict[str, _MetricSlot] = field(default_factory=dict)
    reachable: bool = True
    born: bool = False  # DBIRTH published in the current session


def _unchanged(old: MetricValue, new: MetricValue) -> bool:
    # 1 == 1.0 == True in Python; a change of type is a change. NaN never equals itself, so a
    # NaN reading is always reported, which is what a reader of the data expects.
    if type(old) is not type(new):
        return False
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
        return True
    return old == new


class EdgeNode:
    """Sparkplug B edge node session state, free of I/O.

    Args:
        group_id: the Sparkplug group id.
        edge_node_id: the Sparkplug edge node id.
        metrics: the node's own metrics, each with ``name``, ``datatype`` and initial
            ``value`` (``None`` for null); aliases are assigned here, so leave ``alias`` unset.
            ``bdSeq`` and ``Node Control/Rebirth`` are added automatically.
        primary_host_id: if set, births wait until this host's STATE says it is online.
        bd_seq: the bdSeq of the first connection (persist ``next_bd_seq`` to continue it
            across restarts).
        clock: milliseconds since the epoch, UTC; injectable for tests.

    Attributes:
        node: the edge node's descriptor (group id, edge node id).
        primary_host: the primary host's STATE topic, if one is configured.
        state: where the session is (``EdgeNodeState``).

    Raises:
        SparkplugTopicError: an id is not valid in a topic.
        SparkplugMetricError: a metric definition is invalid.
    """

    def __init__(
        self,
        *,
        group_id: str,
        edge_node_id: str,
        metrics: Iterable[Metric] = (),
        primary_host_id: str | None = None,
        bd_seq: int = 0,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        if not 0 <= bd_seq <= 255:
            raise ValueError("bd_seq must be within 0..255")
        self.node = EdgeNodeDescriptor(group_id, edge_node_id)
        self.primary_host = StateTopic(primary_host_id) if primary_host_id is not None else None
        self.state = EdgeNodeState.DISCONNECTED
        self._clock = clock
        self._next_bd_seq = bd_seq
        self._bd_seq: int | None = None
        self._seq = 0
        self._host_online = False
        self._host_timestamp = -1
        self._aliases: dict[tuple[str | None, str], int] = {}
        self._next_alias = 1
        self._devices: dict[str, _Device] = {}
        now = clock()
        self._node_metrics: dict[str, _MetricSlot] = {}
        self._node_metrics[BDSEQ_METRIC] = self._slot(
            None, Metric(name=BDSEQ_METRIC, datatype=DataType.INT64, value=bd_seq), now
        )
        self._node_metrics[REBIRTH_METRIC] = self._slot(
            None, Metric(name=REBIRTH_METRIC, datatype=DataType.BOOLEAN, value=False), now
        )
        for metric in metrics:
            slot = self._slot(None, metric, now)
            if slot.name in self._node_metrics:
                raise SparkplugMetricError(
                    slot.name, int(slot.datatype), "duplicate_metric", "defined twice or reserved"
                )
            self._node_metrics[slot.name] = slot

    # -- state ------------------------------------------------------------------------------------

    def _fire(self, trigger: str) -> None:
        try:
            self.state = _TRANSITIONS[(self.state, trigger)]
        except KeyError as exc:
            raise SparkplugStateError(self.state.value, f"{trigger!r} is not allowed now") from exc

    @property
    def bd_seq(self) -> int | None:
        """The bdSeq of the current (or last) connection; ``None`` before the first."""
        return self._bd_seq

    @property
    def next_bd_seq(self) -> int:
        """The bdSeq the next connection will use (persist it to survive restarts)."""
        return self._next_bd_seq

    def subscriptions(self) -> tuple[str, ...]:
        """Topic filters to subscribe to on every connection, before ``session_started()``."""
        base = f"{NAMESPACE}/{self.node.group_id}"
        filters = [
            f"{base}/{MessageType.NCMD.value}/{self.node.edge_node_id}",
            f"{base}/{MessageType.DCMD.value}/{self.node.edge_node_id}/+",
        ]
        if self.primary_host is not None:
            filters.append(str(self.primary_host))
        return tuple(filters)

    # -- connection lifecycle ---------------------------------------------------------------------

    def connect(self) -> OutboundMessage:
        """Start a new MQTT connection; return the NDEATH to register as its Will."""
        self._fire("connect")
        self._bd_seq = self._next_bd_seq
        self._next_bd_seq = (self._next_bd_seq + 1) % 256
        now = self._clock()
        bd_slot = self._node_metrics[BDSEQ_METRIC]
        bd_slot.value = self._bd_seq
        bd_slot.timestamp = now
        for device in self._devices.values():
            device.born = False
        return self._death_certificate(now)

    def session_started(self) -> list[OutboundMessage]:
        """The connection is up and subscribed: return the births, unless a host is awaited."""
        self._fire("session_started")
        if self.primary_host is not None and not self._host_online:
            return []
        return self._births()

    def connection_lost(self) -> None:
        """The connection closed or broke; the broker publishes the NDEATH Will for us."""
        self._fire("lost")
        for device in self._devices.values():
            device.born = False

    def disconnect(self) -> list[OutboundMessage]:
        """Return the NDEATH to publish before an orderly MQTT DISCONNECT."""
        self._fire("disconnect")
        for device in self._devices.values():
            device.born = False
        return [self._death_certificate(self._clock())]

    def rebirth(self) -> list[OutboundMessage]:
        """Publish a fresh NBIRTH and every DBIRTH (same bdSeq, same aliases).

        Raises:
            SparkplugStateError: the node is not online.
        """
        if self.state is not EdgeNodeState.ONLINE:
            raise SparkplugStateError(self.state.value, "rebirth needs an online node")
        return self._births()

    def _births(self) -> list[OutboundMessage]:
        self._fire("birth")
        now = self._clock()
        self._seq = 0
        node_birth = PayloadData(
            timestamp=now,
            metrics=tuple(slot.birth_metric() for slot in self._node_metrics.values()),
            seq=self._next_seq(),
        )
        out = [self._message(MessageType.NBIRTH, None, node_birth)]
        for device_id, device in self._devices.items():
            device.born = False
            if device.reachable:
                out.append(self._device_birth(device_id, device, now))
        return out

    # -- devices ----------------------------------------------------------------------------------

    def add_device(self, device_id: str, metrics: Iterable[Metric]) -> list[OutboundMessage]:
        """Define (or redefine) a device and its metrics, and mark it reachable.

        Metrics keep the aliases their names had before. While the node is online this
        publishes the device's DBIRTH at once.

        Raises:
            SparkplugTopicError: ``device_id`` is not valid in a topic.
            SparkplugMetricError: a metric definition is invalid or repeated.
        """
        SparkplugTopic(MessageType.DBIRTH, self.node, device_id)  # validates the id
        now = self._clock()
        slots: dict[str, _MetricSlot] = {}
        for metric in metrics:
            slot = self._slot(device_id, metric, now)
            if slot.name in slots:
                raise SparkplugMetricError(
                    slot.name, int(slot.datatype), "duplicate_metric", "defined twice"
                )
            slots[slot.name] = slot
        device = _Device(metrics=slots)
        self._devices[device_id] = device
        if self.state is not EdgeNodeState.ONLINE:
            return []
        return [self._device_birth(device_id, device, now)]

    def device_online(self, device_id: str) -> list[OutboundMessage]:
        """A known device is reachable again: publish its DBIRTH with its current values."""
        device = self._device(device_id)
        device.reachable = True
        if self.state is not EdgeNodeState.ONLINE or device.born:
            return []
        return [self._device_birth(device_id, device, self._clock())]

    def device_offline(self, device_id: str) -> list[OutboundMessage]:
        """A device stopped answering: publish its DDEATH (its metrics become stale)."""
        device = self._device(device_id)
        device.reachable = False
        if self.state is not EdgeNodeState.ONLINE or not device.born:
            return []
        device.born = False
        payload = PayloadData(timestamp=self._clock(), seq=self._next_seq())
        return [self._message(MessageType.DDEATH, device_id, payload)]

    def _device(self, device_id: str) -> _Device:
        try:
            return self._devices[device_id]
        except KeyError as exc:
            raise SparkplugStateError(
                self.state.value, f"unknown device {device_id!r} (add_device first)"
            ) from exc

    def _device_birth(self, device_id: str, device: _Device, now: int) -> OutboundMessage:
        device.born = True
        payload = PayloadData(
            timestamp=now,
            metrics=tuple(slot.birth_metric() for slot in device.metrics.values()),
            seq=self._next_seq(),
        )
        return self._message(MessageType.DBIRTH, device_id, payload)

    # -- data -------------------------------------------------------------------------------------

    def update(
        self,
        values: Mapping[str, MetricValue],
        *,
        device_id: str | None = None,
        timestamp: int | None = None,
    ) -> list[OutboundMessage]:
        """Record new metric values; while online, publish the changed ones (NDATA/DDATA).

        ``None`` means null. Nothing is recorded if any value is invalid.

        Args:
            values: metric name -> new value.
            device_id: the device the metrics belong to; ``None`` for node metrics.
            timestamp: when the values were acquired (ms, UTC); defaults to now.

        Raises:
            SparkplugMetricError: an unknown metric, a reserved one, or a value that does not
                fit the metric's datatype.
            SparkplugStateError: an unknown device.
        """
        scope = self._node_metrics if device_id is None else self._device(device_id).metrics
        pending: list[tuple[_MetricSlot, MetricValue]] = []
        for name, value in values.items():
            slot = scope.get(name)
            if slot is None or (device_id is None and name in _RESERVED):
                raise SparkplugMetricError(
                    name, None, "unknown_metric", "not in the birth certificate (or reserved)"
                )
            validate_value(slot.datatype, value, name)
            pending.append((slot, value))
        when = self._clock() if timestamp is None else timestamp
        changed: list[_MetricSlot] = []
        for slot, value in pending:
            if _unchanged(slot.value, value):
                continue
            slot.value = value
            slot.timestamp = when
            changed.append(slot)
        if not changed or self.state is not EdgeNodeState.ONLINE:
            return []
        if device_id is not None and not self._devices[device_id].born:
            return []  # recorded; the device's next DBIRTH carries it
        payload = PayloadData(
            timestamp=self._clock(),
            metrics=tuple(slot.data_metric() for slot in changed),
            seq=self._next_seq(),
        )
        kind = MessageType.NDATA if device_id is None else MessageType.DDATA
        return [self._message(kind, device_id, payload)]

    def report(
        self,
        samples: Iterable[tuple[str, int, MetricValue]],
        *,
        device_id: str | None = None,
        historical: bool = False,
    ) -> list[OutboundMessage]:
        """Publish samples exactly as given: one NDATA/DDATA, each metric at its own timestamp.

        ``update()`` reports by exception and keeps one value per metric; a store-and-forward
        gateway instead owes the host every sample it buffered, several per metric, and those
        from before the current session flagged ``is_historical``. Nothing is compared here.
        Live samples (``historical`` false) also become the metrics' current values (the latest
        of each, when newer than what the node holds), which the next birth certificate
        carries; while the node is offline or the device not born they are only recorded, as
        with ``update()``. Historical samples never change the current values.

        Args:
            samples: (metric name, timestamp in ms UTC, value or ``None`` for null), in order.
            device_id: the device the metrics belong to; ``None`` for node metrics.
            historical: the samples were acquired before this session (buffered).

        Raises:
            SparkplugMetricError: an unknown metric, a reserved one, or a value that does not
                fit the metric's datatype. Nothing is recorded then.
            SparkplugStateError: an unknown device, or historical samples while the node is
                not online or the device not born (they could not be published now).
        """
        scope = self._node_metrics if device_id is None else self._device(device_id).metrics
        resolved: list[tuple[_MetricSlot, int, MetricValue]] = []
        for name, timestamp, value in samples:
            slot = scope.get(name)
            if slot is None or (device_id is None and name in _RESERVED):
                raise SparkplugMetricError(
                    name, None, "unknown_metric", "not in the birth certificate (or reserved)"
                )
            validate_value(slot.datatype, value, name)
            resolved.append((slot, timestamp, value))
        publishable = self.state is EdgeNodeState.ONLINE and (
            device_id is None or self._devices[device_id].born
        )
        if historical and not publishable:
            raise SparkplugStateError(
                self.state.value, "historical samples need an online node and a born device"
            )
        if not historical:
            for slot, timestamp, value in resolved:
                # A metric still null takes any sample: a device's own clock may lag ours.
                if slot.value is None or timestamp >= slot.timestamp:
                    slot.value = value
                    slot.timestamp = timestamp
        if not resolved or not publishable:
            return []
        payload = PayloadData(
            timestamp=self._clock(),
            metrics=tuple(
                Metric(
                    alias=slot.alias,
                    timestamp=timestamp,
                    datatype=slot.datatype,
                    value=value,
                    is_null=value is None,
                    is_historical=historical,
                    is_transient=slot.is_transient,
                )
                for slot, timestamp, value in resolved
            ),
            seq=self._next_seq(),
        )
        kind = MessageType.NDATA if device_id is None else MessageType.DDATA
        return [self._message(kind, device_id, payload)]

    # -- inbound ----------------------------------------------------------------------------------

    def handle_message(self, topic: str, payload: bytes) -> EdgeNodeOutput:
        """Handle a message from the subscriptions (NCMD, DCMD, the primary host's STATE).

        Never raises for bad input: what cannot be used is reported in ``rejected``. Messages
        for other nodes are ignored.
        """
        try:
            parsed = parse_topic(topic)
        except SparkplugTopicError as exc:
            return EdgeNodeOutput(rejected=(CommandRejected(topic, exc.reason, exc.detail),))
        if isinstance(parsed, StateTopic):
            if parsed == self.primary_host:
                return self._on_host_state(topic, payload)
            return EdgeNodeOutput()
        if parsed.node != self.node or parsed.message_type not in (
            MessageType.NCMD,
            MessageType.DCMD,
        ):
            return EdgeNodeOutput()
        try:
            command = decode_payload(payload)
            if parsed.device_id is None:
                return self._on_node_command(command)
            scope = self._device(parsed.device_id).metrics
            writes = self._resolve_writes(parsed.device_id, scope, command)
        except SparkplugError as exc:
            return EdgeNodeOutput(rejected=(CommandRejected(topic, exc.reason, exc.detail),))
        return EdgeNodeOutput(writes=tuple(writes))

    def _on_node_command(self, command: PayloadData) -> EdgeNodeOutput:
        writes = self._resolve_writes(None, self._node_metrics, command)
        rebirth = any(write.name == REBIRTH_METRIC and write.value is True for write in writes)
        # bdSeq and Rebirth are the session's own metrics, not outputs of the gateway.
        writes = [write for write in writes if write.name not in _RESERVED]
        messages = self._births() if rebirth and self.state is EdgeNodeState.ONLINE else []
        return EdgeNodeOutput(messages=tuple(messages), writes=tuple(writes))

    def _resolve_writes(
        self, device_id: str | None, scope: dict[str, _MetricSlot], command: PayloadData
    ) -> list[WriteRequest]:
        by_alias = {slot.alias: slot for slot in scope.values()}
        writes: list[WriteRequest] = []
        for metric in command.metrics:
            # The specification says commands carry the alias only; hosts that address
            # metrics by name (rebirth requests from many hosts do) are understood too.
            slot = by_alias.get(metric.alias) if metric.alias is not None else None
            if slot is None and metric.name is not None:
                slot = scope.get(metric.name)
            if slot is None:
                label = metric.name or f"alias {metric.alias}"
                raise SparkplugMetricError(label, None, "unknown_metric", "no such metric")
            value = resolve_datatype(metric, slot.datatype).value
            validate_value(slot.datatype, value, slot.name)
            writes.append(WriteRequest(device_id, slot.name, slot.datatype, value))
        return writes

    def _on_host_state(self, topic: str, payload: bytes) -> EdgeNodeOutput:
        try:
            state = decode_state(payload)
        except SparkplugError as exc:
            return EdgeNodeOutput(rejected=(CommandRejected(topic, exc.reason, exc.detail),))
        if state.timestamp < self._host_timestamp:
            return EdgeNodeOutput()  # an older session's message, overtaken by a newer one
        self._host_timestamp = state.timestamp
        self._host_online = state.online
        if state.online and self.state is EdgeNodeState.WAITING_FOR_HOST:
            return EdgeNodeOutput(messages=tuple(self._births()))
        if not state.online and self.state is EdgeNodeState.ONLINE:
            return EdgeNodeOutput(disconnect=True)
        return EdgeNodeOutput()

    # -- helpers ----------------------------------------------------------------------------------

    def _slot(self, device_id: str | None, metric: Metric, now: int) -> _MetricSlot:
        if not metric.name:
            raise SparkplugMetricError("?", int(metric.datatype), "bad_definition", "no name")
        if metric.alias is not None:
            raise SparkplugMetricError(
                metric.name, int(metric.datatype), "bad_definition", "aliases are assigned here"
            )
        if metric.datatype is DataType.UNKNOWN:
            raise SparkplugMetricError(metric.name, 0, "bad_definition", "no datatype")
        validate_value(metric.datatype, metric.value, metric.name)
        key = (device_id, metric.name)
        alias = self._aliases.get(key)
        if alias is None:
            alias = self._aliases[key] = self._next_alias
            self._next_alias += 1
        return _MetricSlot(
            name=metric.name,
            alias=alias,
            datatype=metric.datatype,
            value=metric.value,
            timestamp=metric.timestamp if metric.timestamp is not None else now,
            properties=metric.properties,
            metadata=metric.metadata,
            is_transient=metric.is_transient,
        )

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _death_certificate(self, now: int) -> OutboundMessage:
        # NDEATH carries bdSeq only and no seq; it is the Will, so QoS 1 and not retained.
        bd_seq = self._node_metrics[BDSEQ_METRIC].value
        payload = PayloadData(
            timestamp=now,
            metrics=(
                Metric(name=BDSEQ_METRIC, timestamp=now, datatype=DataType.INT64, value=bd_seq),
            ),
        )
        topic = SparkplugTopic(MessageType.NDEATH, self.node)
        return OutboundMessage(str(topic), encode_payload(payload), 1, False)

    def _message(
        self, kind: MessageType, device_id: str | None, payload: PayloadData
    ) -> OutboundMessage:
        # Everything an edge node publishes itself is QoS 0 and not retained.
        topic = SparkplugTopic(kind, self.node, device_id)
        return OutboundMessage(str(topic), encode_payload(payload), 0, False)

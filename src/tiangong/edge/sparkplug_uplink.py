"""The Sparkplug B uplink: the gateway as a Sparkplug 3.0 edge node on the platform's broker.

Chosen with ``[uplink] protocol = "sparkplug"``; ``docs/sparkplug.md`` is the operator's
guide. Conventions agreed with the platform's host application: group id = the gateway's site,
edge node id = the gateway id (its MQTT user name), device id = the configured device id, metric
names = thing-model property ids verbatim; the gateway's own telemetry is node metrics, its
events are String node metrics ``event/<event id>`` carrying the event's data as JSON.

Theory of operation
-------------------
Two layers, as everywhere in Tiangong. ``GatewayNode`` is sans-I/O: it wraps the protocol core
(``network.sparkplug.EdgeNode``: aliases, seq, bdSeq, births, commands) with what a *gateway*
adds: metric definitions derived from the configuration (datatypes from the Modbus register
types; points without a declared type are born Double and re-born with the type of their first
value), the devices' availability, and the translation of buffered frames into NDATA/DDATA.
``SparkplugUplink`` does the I/O: one MQTT connection per Sparkplug session.

- **Sessions.** Sparkplug requires a clean session and a new bdSeq on every CONNECT, with the
  NDEATH carrying it as the Will. So the MQTT client never reconnects by itself: each connection
  is ``node.connect()`` (the Will), the next bdSeq written to the data directory's
  ``<gateway>-sparkplug.json`` *before* CONNECT (a restarted gateway continues the sequence),
  subscribe, births. A lost
  connection ends the session (the broker publishes the Will); an orderly stop publishes NDEATH
  and disconnects. Publishes that were not acknowledged are not resent by the client (their seq
  numbers belong to the dead session): their frames are still in the buffer and go out again.
- **Store and forward**, as in the JSON uplink (``forwarding.ForwardQueue``): every frame is in
  the buffer before it is sent and deleted only when the broker acknowledged every message made
  from it. DDATA/NDATA are therefore published with QoS 1, a deliberate deviation from the
  specification's QoS 0: the PUBACK is what makes zero loss possible. Births and DDEATH are
  QoS 1 too, for the host's sake: a host with a persistent session that is away (its own
  connection dropped, or the broker restarted and the gateway came back first) then finds the
  whole session queued at the broker in order, births before the backlog, instead of data it
  cannot decode without the births it missed. Frames are re-encoded against the current
  session's aliases when sent; those buffered before the session (an outage, a restart) go out
  oldest first with ``is_historical`` metrics at their own timestamps, live ones as normal data.
  Samples are sent as read: report by exception is the processing stage's job (deadbands), so
  nothing is compared here.
- **Order.** A host checks that seq numbers follow each other, so messages must reach the wire in
  the order the core numbered them, although QoS 1 publishes complete concurrently (a window of
  frames in flight). Everything the core returns goes into one outbox, in order and without an
  ``await`` in between, and a single writer starts each publish before the next.
- **Availability.** A reachable device gets its DBIRTH at once. One that becomes unreachable
  gets its DDEATH once the uplink has caught up (nothing waiting to be sent) and a grace period
  has passed, so that values read just before it failed still go out as its DDATA. Historical
  samples of a device that is not born (it failed during the outage) are not dropped: it is born
  for them and dies again once they are delivered. Live samples of a dead device (its link
  figures) become its current values, which its next DBIRTH carries.
- **New metrics.** A frame with a property the births do not have (a configuration change, a
  point whose value changed type) is not dropped: the device is re-born with it (DBIRTH, aliases
  kept) before the data; a new node metric ends the session, and the next one is born with it.
- **Commands.** DCMD writes go to the gateway's command handler as ``write`` commands; NCMD
  ``Node Control/Rebirth`` is answered by the core; other NCMD writes and malformed commands are
  refused and counted. Sparkplug has no command response: a successful write is logged and the
  device's next reading reports the new value; a failed one is counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from tiangong.edge.buffer import ForwardBuffer, StoredFrame
from tiangong.edge.config import DeviceConfig, EdgeConfig, ModbusPoint, PointConfig
from tiangong.edge.coordinator import LinkQuality
from tiangong.edge.errors import CommandError, EdgeConfigError
from tiangong.edge.thing_model import GATEWAY_MODEL
from tiangong.edge.uplink import CommandHandler, CommandRequest, UplinkBase
from tiangong.files import atomic_write
from tiangong.network.errors import MqttError, SparkplugError, SparkplugMetricError
from tiangong.network.mqtt import MqttClient, ProtocolVersion, Subscription, Will
from tiangong.network.sparkplug import (
    EVENT_METRIC_PREFIX,
    REBIRTH_METRIC,
    DataType,
    EdgeNode,
    EdgeNodeOutput,
    EdgeNodeState,
    MessageType,
    Metric,
    MetricValue,
    OutboundMessage,
    SparkplugTopic,
    WriteRequest,
    parse_topic,
)
from tiangong.network.sparkplug.codec import validate_value, wall_clock_ms
from tiangong.platform.model import DataType as ModelType

__all__ = [
    "EVENT_METRIC_PREFIX",
    "BdSeqFile",
    "FrameMessages",
    "GatewayNode",
    "Sample",
    "SparkplugUplink",
    "device_metric_types",
    "frame_samples",
    "node_metric_types",
]

_log = logging.getLogger(__name__)

#: One value of a metric: (metric name, timestamp in ms UTC, value).
Sample = tuple[str, int, Any]

_INTEGERS: Final = frozenset(
    {
        DataType.INT8,
        DataType.INT16,
        DataType.INT32,
        DataType.INT64,
        DataType.UINT8,
        DataType.UINT16,
        DataType.UINT32,
        DataType.UINT64,
    }
)
_MODBUS_TYPES: Final[dict[str, DataType]] = {
    "int16": DataType.INT16,
    "uint16": DataType.UINT16,
    "int32": DataType.INT32,
    "uint32": DataType.UINT32,
    "int64": DataType.INT64,
    "uint64": DataType.UINT64,
    "float32": DataType.FLOAT,
    "float64": DataType.DOUBLE,
    "bool": DataType.BOOLEAN,
}
_MODEL_TYPES: Final[dict[ModelType, DataType]] = {
    ModelType.FLOAT: DataType.DOUBLE,
    ModelType.INT: DataType.INT64,
    ModelType.BOOL: DataType.BOOLEAN,
    ModelType.ENUM: DataType.INT64,  # an enum travels as its index
    ModelType.STRING: DataType.STRING,
}
#: The ``link.*`` figures the gateway reports for every device (all numbers).
LINK_METRICS: Final = tuple(
    LinkQuality(rtt_ms=0.0, jitter_ms=0.0, loss_pct=0.0, reconnects=0).as_values()
)
_DATA: Final = frozenset({MessageType.NDATA, MessageType.DDATA})


# -- metric definitions -------------------------------------------------------------------------


def node_metric_types() -> dict[str, DataType]:
    """The gateway's own metrics: its thing model's properties and one per event."""
    types = {prop.id: _MODEL_TYPES[prop.type] for prop in GATEWAY_MODEL.properties}
    for event in GATEWAY_MODEL.events:
        types[EVENT_METRIC_PREFIX + event.id] = DataType.STRING
    for name in LINK_METRICS:  # the uplink's own link figures
        types[name] = DataType.DOUBLE
    return types


def _point_type(point: PointConfig) -> DataType | None:
    """The Sparkplug datatype of a configured point's values; ``None``: not declared."""
    if not isinstance(point, ModbusPoint):
        return None  # OPC UA, MQTT and HTTP points declare no type in the configuration
    if point.aggregate == "avg":
        return DataType.DOUBLE
    exact = point.scale == 1.0 and point.offset == 0.0
    datatype = _MODBUS_TYPES[point.type]
    if datatype in _INTEGERS or datatype is DataType.FLOAT:
        return datatype if exact else DataType.DOUBLE
    return datatype


def device_metric_types(device: DeviceConfig) -> tuple[dict[str, DataType], set[str]]:
    """A configured device's metrics and their datatypes, with its ``link.*`` figures.

    Returns:
        (metric name -> datatype, names whose datatype is provisional: born Double until a
        first value of another type re-births them with that type).
    """
    types: dict[str, DataType] = {}
    provisional: set[str] = set()
    for point in device.points:
        datatype = _point_type(point)
        if datatype is None:
            provisional.add(point.property)
        types[point.property] = datatype or DataType.DOUBLE
    for name in LINK_METRICS:
        types[name] = DataType.DOUBLE
    return types, provisional


def _fit(datatype: DataType, value: Any) -> tuple[bool, MetricValue]:
    """(whether ``value`` can be sent as ``datatype``, the value converted for it)."""
    if value is None:
        return True, None
    if datatype is DataType.STRING:
        return True, value if isinstance(value, str) else orjson.dumps(value).decode()
    candidate = value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        if datatype in _INTEGERS and isinstance(value, float) and value.is_integer():
            candidate = int(value)  # Modbus engineering values are floats, even for integers
        elif datatype in (DataType.FLOAT, DataType.DOUBLE) and number:
            candidate = float(value)
        validate_value(datatype, candidate)
    except (SparkplugMetricError, OverflowError):
        return False, None
    return True, candidate


def _infer(value: Any) -> DataType:
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, int | float):
        return DataType.DOUBLE
    return DataType.STRING


def _widen(datatype: DataType, value: Any) -> DataType:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and (datatype in _INTEGERS or datatype is DataType.FLOAT):
        return DataType.DOUBLE
    return DataType.STRING  # a string can carry any value (as JSON)


def frame_samples(frame: StoredFrame, gateway_id: str) -> list[tuple[str | None, list[Sample]]]:
    """The samples of a buffered frame, per device (``None``: the gateway itself), in time order.

    Raises:
        ValueError: the frame is not a gateway envelope (nor an events frame).
    """
    try:
        document = orjson.loads(frame.payload)
        if frame.channel == "events":
            events = [
                (
                    EVENT_METRIC_PREFIX + str(event["event"]),
                    int(event["ts"]),
                    orjson.dumps(event.get("data", {})).decode(),
                )
                for event in document["events"]
            ]
            return [(None, events)]
        parts: list[tuple[str | None, list[Sample]]] = []
        for device, columns in document["devices"].items():
            values: dict[str, list[Any]] = columns["values"]
            samples = [
                (prop, int(ts), column[row])
                for row, ts in enumerate(columns["ts"])
                for prop, column in values.items()
                if column[row] is not None
            ]
            parts.append((None if device == gateway_id else str(device), samples))
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"frame {frame.seq} is not a gateway envelope: {exc!r}") from exc
    return parts


# -- the sans-I/O gateway node -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameMessages:
    """What one buffered frame became.

    Attributes:
        messages: to publish in this order: the births it needed, then its NDATA/DDATA.
        published_points: samples carried by the data messages.
        recorded_points: live samples of a device that is not born: kept as its current
            values (its next DBIRTH carries them), not published.
        restart_session: the node's own metrics changed; nothing was encoded: end the session
            (the next one is born with the new metrics) and send the frame again then.
    """

    messages: tuple[OutboundMessage, ...] = ()
    published_points: int = 0
    recorded_points: int = 0
    restart_session: bool = False


@dataclass(slots=True)
class _Definitions:
    types: dict[str, DataType]
    provisional: set[str] = field(default_factory=set)


class GatewayNode:
    """The gateway as a Sparkplug edge node, free of I/O.

    Args:
        config: the gateway configuration.
        bd_seq: the bdSeq of the first connection (persisted across restarts).
        clock: milliseconds since the epoch, UTC; injectable for tests.

    Raises:
        EdgeConfigError: an id cannot be used in a Sparkplug topic.
    """

    def __init__(
        self, config: EdgeConfig, *, bd_seq: int = 0, clock: Callable[[], int] = wall_clock_ms
    ) -> None:
        self.gateway_id = config.gateway.id
        self.group_id = config.gateway.site
        self._primary_host_id = config.uplink.primary_host_id
        self._clock = clock
        self._node_defs = _Definitions(node_metric_types())
        self._device_defs: dict[str, _Definitions] = {}
        for device in config.devices:
            types, provisional = device_metric_types(device)
            self._device_defs[device.id] = _Definitions(types, provisional)
        self._latest: dict[tuple[str | None, str], tuple[int, MetricValue]] = {}
        self._reachable: dict[str, bool] = {}
        self._activity: dict[str, int] = {}  # when a device's birth was last needed (ms)
        self._born: set[str] = set()
        self._core_devices: set[str] = set()  # devices the core has definitions of
        self._rebuild = False
        try:
            self._node = self._build(bd_seq)
        except SparkplugError as exc:
            raise EdgeConfigError("edge config", None, f"Sparkplug: {exc}") from exc

    def _definition(self, device: str | None, name: str, datatype: DataType) -> Metric:
        latest = self._latest.get((device, name))
        if latest is None:
            return Metric(name=name, datatype=datatype)
        timestamp, value = latest
        fits, value = _fit(datatype, value)
        return Metric(
            name=name, datatype=datatype, value=value if fits else None, timestamp=timestamp
        )

    def _build(self, bd_seq: int) -> EdgeNode:
        node = EdgeNode(
            group_id=self.group_id,
            edge_node_id=self.gateway_id,
            metrics=[
                self._definition(None, name, datatype)
                for name, datatype in self._node_defs.types.items()
            ],
            primary_host_id=self._primary_host_id,
            bd_seq=bd_seq,
            clock=self._clock,
        )
        for device, definitions in self._device_defs.items():
            node.add_device(device, self._device_metrics(device, definitions))
            if not self._reachable.get(device, False):
                node.device_offline(device)  # offline node: only recorded
        self._core_devices = set(self._device_defs)
        return node

    def _device_metrics(self, device: str, definitions: _Definitions) -> list[Metric]:
        return [self._definition(device, n, t) for n, t in definitions.types.items()]

    # -- session ----------------------------------------------------------------------------------

    @property
    def state(self) -> EdgeNodeState:
        """Where the Sparkplug session is."""
        return self._node.state

    @property
    def online(self) -> bool:
        """Whether the births are out (data may be published)."""
        return self._node.state is EdgeNodeState.ONLINE

    @property
    def bd_seq(self) -> int | None:
        """The bdSeq of the current (or last) connection."""
        return self._node.bd_seq

    @property
    def next_bd_seq(self) -> int:
        """The bdSeq of the next connection: persist it before connecting."""
        return self._node.next_bd_seq

    @property
    def born(self) -> frozenset[str]:
        """Devices whose DBIRTH is out in the current session."""
        return frozenset(self._born)

    def subscriptions(self) -> tuple[str, ...]:
        """Topic filters to subscribe to on every connection."""
        return self._node.subscriptions()

    def connect(self) -> OutboundMessage:
        """A new MQTT connection: the NDEATH to register as its Will (with a new bdSeq)."""
        if self._rebuild:
            self._node = self._build(self._node.next_bd_seq)
            self._rebuild = False
        self._born.clear()
        return self._node.connect()

    def session_started(self) -> list[OutboundMessage]:
        """Connected and subscribed: the births, unless the primary host is awaited."""
        return self._track(self._node.session_started())

    def connection_lost(self) -> None:
        """The connection ended without ``disconnect()`` (the broker publishes the Will)."""
        if self._node.state is not EdgeNodeState.DISCONNECTED:
            self._node.connection_lost()
        self._born.clear()

    def disconnect(self) -> list[OutboundMessage]:
        """The NDEATH to publish before an orderly DISCONNECT (none if there is no session)."""
        if self._node.state not in (EdgeNodeState.WAITING_FOR_HOST, EdgeNodeState.ONLINE):
            return []
        self._born.clear()
        return self._node.disconnect()

    def handle_message(self, topic: str, payload: bytes) -> EdgeNodeOutput:
        """A message from the subscriptions (commands, the primary host's STATE)."""
        output = self._node.handle_message(topic, payload)
        self._track(output.messages)
        return output

    # -- availability -----------------------------------------------------------------------------

    def set_availability(self, status: Mapping[str, bool]) -> list[OutboundMessage]:
        """The devices' reachability now: DBIRTH for those that came back.

        A device that became unreachable is not declared dead here; ``settle()`` does that
        once its last values are out.
        """
        out: list[OutboundMessage] = []
        now = self._clock()
        for device, reachable in status.items():
            if device not in self._device_defs:
                continue
            before = self._reachable.get(device)
            self._reachable[device] = reachable
            if reachable:
                if device not in self._born:
                    out += self._node.device_online(device)
            elif not self.online:
                self._node.device_offline(device)  # only recorded: the births leave it out
            elif before is not False:
                self._activity[device] = now  # the grace period starts
        return self._track(out)

    @property
    def deaths_pending(self) -> bool:
        """Whether a born device is unreachable (``settle()`` will declare it dead)."""
        return any(not self._reachable.get(device, False) for device in self._born)

    def settle(self, grace_ms: int) -> list[OutboundMessage]:
        """DDEATH for born devices that are unreachable and had no use for ``grace_ms``.

        Call it when nothing is waiting to be sent: the values a device had read before it
        failed have been delivered then.
        """
        if not self.online:
            return []
        now = self._clock()
        out: list[OutboundMessage] = []
        for device in sorted(self._born):
            if self._reachable.get(device, False):
                continue
            if now - self._activity.get(device, 0) >= grace_ms:
                out += self._node.device_offline(device)
        return self._track(out)

    # -- data -------------------------------------------------------------------------------------

    def record(self, frame: StoredFrame) -> None:
        """Take a frame's latest values as current while offline, so births carry them.

        Values that do not fit their metric's definitions are left to ``frame_messages``.

        Raises:
            ValueError: the frame is not a gateway envelope.
        """
        if self.online:
            return
        for device, samples in frame_samples(frame, self.gateway_id):
            definitions = self._node_defs if device is None else self._device_defs.get(device)
            if definitions is None:
                continue
            fitted: list[Sample] = []
            for name, timestamp, value in samples:
                datatype = definitions.types.get(name)
                if datatype is None:
                    continue
                fits, converted = _fit(datatype, value)
                if fits:
                    fitted.append((name, timestamp, converted))
            self._node.report(fitted, device_id=device)
            self._remember(device, fitted)

    def frame_messages(self, frame: StoredFrame, *, historical: bool) -> FrameMessages:
        """Encode a buffered frame against the current session's births (node online).

        Args:
            frame: the frame.
            historical: it was buffered before this session: its metrics are flagged so.

        Raises:
            ValueError: the frame is not a gateway envelope.
            SparkplugStateError: the node is not online.
        """
        parts = frame_samples(frame, self.gateway_id)
        now = self._clock()
        node_samples = [samples for device, samples in parts if device is None]
        for samples in node_samples:
            if self._settle_types(self._node_defs, samples):
                self._rebuild = True
        if self._rebuild:
            return FrameMessages(restart_session=True)
        out: list[OutboundMessage] = []
        published = recorded = 0
        for device, samples in parts:
            if device is None:
                fitted = self._convert(self._node_defs, samples)
                out += self._node.report(fitted, historical=historical)
                published += len(fitted)
                if not historical:
                    self._remember(None, fitted)
                continue
            definitions = self._device_defs.get(device)
            if definitions is None:  # buffered under an earlier configuration
                definitions = self._device_defs[device] = _Definitions({})
                self._reachable.setdefault(device, False)
            if self._settle_types(definitions, samples) or device not in self._core_devices:
                # Re-born with every metric (aliases kept): the host learns the new ones.
                out += self._track(
                    self._node.add_device(device, self._device_metrics(device, definitions))
                )
                self._core_devices.add(device)
                self._activity[device] = now
            fitted = self._convert(definitions, samples)
            if device not in self._born:
                if not (historical or self._reachable.get(device, False)):
                    # A dead device's live figures: its next DBIRTH carries the latest.
                    self._node.report(fitted, device_id=device)
                    self._remember(device, fitted)
                    recorded += len(fitted)
                    continue
                out += self._track(self._node.device_online(device))
                self._activity[device] = now
            elif historical:
                # An unreachable device stays born while its backlog is delivered; its live
                # figures do not keep it so (they arrive for as long as it is configured).
                self._activity[device] = now
            out += self._node.report(fitted, device_id=device, historical=historical)
            published += len(fitted)
            if not historical:
                self._remember(device, fitted)
        return FrameMessages(tuple(out), published, recorded)

    def _settle_types(self, definitions: _Definitions, samples: Iterable[Sample]) -> bool:
        """Widen definitions until every sample fits; whether anything changed."""
        changed = False
        for name, _, value in samples:
            datatype = definitions.types.get(name)
            if datatype is None:
                definitions.types[name] = _infer(value)
                changed = True
                continue
            fits, _ = _fit(datatype, value)
            if fits:
                if value is not None:
                    definitions.provisional.discard(name)
                continue
            if name in definitions.provisional:
                definitions.provisional.discard(name)
                definitions.types[name] = _infer(value)
            else:
                definitions.types[name] = _widen(datatype, value)
            changed = True
        if changed:
            self._settle_types(definitions, samples)  # a later sample may not fit the new type
        return changed

    @staticmethod
    def _convert(definitions: _Definitions, samples: Iterable[Sample]) -> list[Sample]:
        return [
            (name, timestamp, _fit(definitions.types[name], value)[1])
            for name, timestamp, value in samples
        ]

    def _remember(self, device: str | None, samples: Iterable[Sample]) -> None:
        for name, timestamp, value in samples:
            key = (device, name)
            latest = self._latest.get(key)
            if latest is None or timestamp >= latest[0]:
                self._latest[key] = (timestamp, value)

    def _track(self, messages: Sequence[OutboundMessage]) -> list[OutboundMessage]:
        for message in messages:
            topic = parse_topic(message.topic)
            if not isinstance(topic, SparkplugTopic):
                continue
            if topic.message_type is MessageType.NBIRTH:
                self._born.clear()
            elif topic.message_type is MessageType.DBIRTH and topic.device_id is not None:
                self._born.add(topic.device_id)
            elif topic.message_type is MessageType.DDEATH and topic.device_id is not None:
                self._born.discard(topic.device_id)
        return list(messages)


# -- bdSeq across restarts -----------------------------------------------------------------------


class BdSeqFile:
    """Where the gateway keeps the bdSeq of its next connection (a small JSON document).

    Args:
        path: the file, in the gateway's data directory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int:
        """The persisted next bdSeq; 0 (the specification's first) if there is none."""
        try:
            document = orjson.loads(self.path.read_bytes())
            value = document["next_bd_seq"]
        except FileNotFoundError:
            return 0
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            _log.warning("sparkplug: %s unreadable (%s); bdSeq starts at 0", self.path, exc)
            return 0
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            _log.warning("sparkplug: %s holds no bdSeq (0..255); starting at 0", self.path)
            return 0
        return value

    async def save(self, value: int) -> None:
        """Persist the next bdSeq durably (write, fsync, rename); a failure is logged."""
        try:
            await asyncio.to_thread(atomic_write, self.path, orjson.dumps({"next_bd_seq": value}))
        except OSError as exc:
            _log.error("sparkplug: cannot persist bdSeq to %s: %s", self.path, exc)


# -- the uplink (I/O) ----------------------------------------------------------------------------


class _SessionEndedError(Exception):
    """Ends one Sparkplug session (one MQTT connection); carries why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Outgoing:
    message: OutboundMessage
    qos: int
    acknowledged: asyncio.Future[None] | None  # data messages: resolved at PUBACK


class SparkplugUplink(UplinkBase):
    """Sends buffered frames to the platform as a Sparkplug B edge node; takes DCMD writes.

    Offers the gateway the same interface as the JSON ``Uplink`` (``GatewayUplink``).

    Args:
        config: the gateway configuration (``[uplink] protocol = "sparkplug"``).
        password: the gateway's MQTT password.
        buffer: the forward buffer.
        on_command: executes a command, returning its result or raising ``CommandError``.
        devices_status: the current availability of each device ("online"/"offline").
        window: frames in flight at most.
        clock: milliseconds since the epoch, UTC; injectable for tests.

    Attributes:
        node: the sans-I/O gateway node (bdSeq, births, what is born).
        client: the MQTT client of the current session, if connected.
        sent_frames: frames delivered (acknowledged and deleted from the buffer).
        sent_points: points in them.
        recorded_points: live samples of dead devices, kept as current values only.
        commands_done: DCMD writes carried out.
        commands_failed: DCMD writes the device or the command handler refused.
        commands_rejected: commands refused before execution (malformed, unknown metric,
            NCMD writes other than ``Node Control/Rebirth``).
        frames_unreadable: buffered frames that were not a gateway envelope (deleted, logged).
        sessions: Sparkplug sessions begun (MQTT connections accepted).
    """

    def __init__(
        self,
        *,
        config: EdgeConfig,
        password: str | None,
        buffer: ForwardBuffer,
        on_command: CommandHandler,
        devices_status: Callable[[], dict[str, str]],
        window: int = 16,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        super().__init__(
            config=config,
            password=password,
            buffer=buffer,
            on_command=on_command,
            devices_status=devices_status,
            window=window,
        )
        self._receive_slots = asyncio.Semaphore(1)  # per session: the broker's receive maximum
        gateway = config.gateway
        self.bd_seq_file = BdSeqFile(gateway.data_dir / f"{gateway.id}-sparkplug.json")
        self.node = GatewayNode(config, bd_seq=self.bd_seq_file.load(), clock=clock)
        # Long enough for values read just before a device failed to be flushed and sent.
        self.grace_ms = max(1000, 3 * config.uplink.flush_ms)
        # Bounded by the window: at most ``window`` frames are encoded ahead of the wire, plus
        # birth sequences; it cannot be a bounded queue, as putting must never wait (order).
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_ready = asyncio.Event()
        self._births_out = asyncio.Event()
        self._session_end: asyncio.Future[str] | None = None
        self._first_offered: int | None = None  # frames below it are from an earlier run
        self._last_offered = 0
        self._session_floor = 0  # frames up to it were buffered before this session
        self.recorded_points = 0
        self.commands_done = 0
        self.commands_failed = 0
        self.commands_rejected = 0
        self.frames_unreadable = 0
        self._command_count = 0

    # -- the gateway's interface ------------------------------------------------------------------

    def offer(self, frame: StoredFrame) -> None:
        """A frame was just buffered: send it soon."""
        if self._first_offered is None:
            self._first_offered = frame.seq
        self._last_offered = max(self._last_offered, frame.seq)
        if not self.node.online:
            try:
                self.node.record(frame)
            except ValueError as exc:
                _log.error("sparkplug: %s", exc)  # counted (and deleted) when it is sent
        self._queue.offer(frame)

    def historical(self, frame: StoredFrame) -> bool:
        """Whether a frame was buffered before the current session (an outage, a restart)."""
        return (
            self._first_offered is None
            or frame.seq < self._first_offered
            or frame.seq <= self._session_floor
        )

    # -- sessions ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect (one session per connection, retrying) and keep sending until cancelled."""
        uplink = self.config.uplink
        gateway = self.config.gateway
        delay = 0.5
        while True:
            will = self.node.connect()
            await self.bd_seq_file.save(self.node.next_bd_seq)
            client = MqttClient(
                host=uplink.host,
                port=uplink.port,
                client_id=gateway.id,
                username=uplink.username or gateway.id,
                password=self._password,
                version=ProtocolVersion(uplink.mqtt_version),
                # Sparkplug: a clean session on every CONNECT, and each CONNECT is a new
                # session with a new bdSeq, so the client must not reconnect on its own.
                clean_start=True,
                session_expiry=0,
                reconnect=False,
                keepalive=20,
                tls=self._tls,
                will=Will(topic=will.topic, payload=will.payload, qos=will.qos, retain=will.retain),
            )
            try:
                async with client:
                    self.client = client
                    self.sessions += 1
                    reason = await self._session(client)
                    delay = 0.5
                _log.warning("sparkplug: session (bdSeq %s) ended: %s", self.node.bd_seq, reason)
            except (OSError, MqttError) as exc:
                self.link.failed()
                _log.warning(
                    "sparkplug uplink to %s:%d unavailable (%s); retrying in %.1fs"
                    " (data is buffered)",
                    uplink.host,
                    uplink.port,
                    exc,
                    delay,
                )
            finally:
                self.client = None
                self.node.connection_lost()
                self._births_out.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _session(self, client: MqttClient) -> str:
        await client.subscribe(*(Subscription(f, qos=1) for f in self.node.subscriptions()))
        self._outbox.clear()
        self._window = asyncio.Semaphore(self._window_size)
        self._receive_slots = asyncio.Semaphore(max(client.session.server_receive_maximum, 1))
        # Everything from before this connection goes out as backlog, oldest first, historical.
        self._queue.restart(requeue_live=True)
        self._session_floor = self._last_offered
        self._session_end = asyncio.get_running_loop().create_future()
        self._emit(self.node.set_availability(self._status()))
        self._emit(self.node.session_started())
        reason = "cancelled"
        try:
            await self._session_tasks(client, self._session_end)
        except* _SessionEndedError as ended:
            reason = str(ended.exceptions[0])
        finally:
            # An orderly end publishes NDEATH itself; DISCONNECT then discards the Will.
            await asyncio.shield(self._goodbye(client))
        return reason

    async def _session_tasks(self, client: MqttClient, end: asyncio.Future[str]) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._write_loop(client, tasks), name="sparkplug-write")
            tasks.create_task(self._send_loop(tasks), name="sparkplug-send")
            tasks.create_task(self._inbound_loop(client, tasks), name="sparkplug-inbound")
            tasks.create_task(self._availability_loop(), name="sparkplug-availability")
            tasks.create_task(self._watch(client), name="sparkplug-watch")
            # Raising here cancels the session's tasks; the caller takes the reason.
            raise _SessionEndedError(await end)

    def _end_session(self, reason: str) -> None:
        if self._session_end is not None and not self._session_end.done():
            self._session_end.set_result(reason)

    async def _goodbye(self, client: MqttClient) -> None:
        messages = self.node.disconnect()
        if not client.connected:
            return
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(2.0):
                for message in messages:
                    await client.publish(
                        message.topic, message.payload, qos=message.qos, retain=message.retain
                    )

    async def _watch(self, client: MqttClient) -> None:
        # The client does not reconnect (see run()); a lost connection ends the session.
        while client.connected:  # noqa: ASYNC110 - the client has no event for a lost link
            await asyncio.sleep(0.1)
        self._end_session("connection lost")

    def _status(self) -> dict[str, bool]:
        return {device: state == "online" for device, state in self._devices_status().items()}

    # -- the outbox: one ordered path to the wire -------------------------------------------------

    def _emit(self, messages: Iterable[OutboundMessage]) -> list[asyncio.Future[None]]:
        """Queue messages for the wire in the order given; futures of the data messages."""
        loop = asyncio.get_running_loop()
        acknowledged: list[asyncio.Future[None]] = []
        for message in messages:
            kind = parse_topic(message.topic)
            data = isinstance(kind, SparkplugTopic) and kind.message_type in _DATA
            future: asyncio.Future[None] | None = loop.create_future() if data else None
            if future is not None:
                acknowledged.append(future)
            # QoS 1 for everything (not the specification's 0): deleting a frame needs the
            # PUBACK, and a host away for a moment needs the births queued with the data.
            self._outbox.append(_Outgoing(message, 1, future))
            if isinstance(kind, SparkplugTopic) and kind.message_type is MessageType.NBIRTH:
                self._births_out.set()
            self._outbox_ready.set()
        return acknowledged

    async def _write_loop(self, client: MqttClient, tasks: asyncio.TaskGroup) -> None:
        while True:
            if not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            outgoing = self._outbox.popleft()
            if outgoing.qos:
                # Stay within the broker's receive maximum, so that no publish waits inside the
                # client and each reaches the wire in the order it was started.
                await self._receive_slots.acquire()
            tasks.create_task(self._deliver(client, outgoing))
            # The publish's first step puts the message on the wire; let it run before the next
            # one starts, so the wire order is the order the core numbered them (seq).
            await asyncio.sleep(0)

    async def _deliver(self, client: MqttClient, outgoing: _Outgoing) -> None:
        message, future = outgoing.message, outgoing.acknowledged
        try:
            await client.publish(
                message.topic, message.payload, qos=outgoing.qos, retain=message.retain
            )
        except MqttError as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        finally:
            if outgoing.qos:
                self._receive_slots.release()
        if future is not None and not future.done():
            future.set_result(None)

    # -- frames -----------------------------------------------------------------------------------

    async def _send_loop(self, tasks: asyncio.TaskGroup) -> None:
        while True:
            await self._births_out.wait()
            await self._window.acquire()
            try:
                frame = await self._queue.next_frame()
            except BaseException:
                self._window.release()
                raise
            started = time.monotonic()
            try:
                encoded = self.node.frame_messages(frame, historical=self.historical(frame))
            except ValueError as exc:
                self._window.release()
                self._queue.settled(frame.seq)
                self.frames_unreadable += 1
                _log.error("sparkplug: %s; deleted from the buffer", exc)
                await self.buffer.ack([frame.seq])
                continue
            if encoded.restart_session:
                self._window.release()
                self._queue.settled(frame.seq)
                self._end_session("new node metrics: the next session is born with them")
                return
            self.recorded_points += encoded.recorded_points
            acknowledged = self._emit(encoded.messages)
            tasks.create_task(
                self._complete(frame, acknowledged, started), name=f"sparkplug-frame-{frame.seq}"
            )

    async def _complete(
        self, frame: StoredFrame, acknowledged: list[asyncio.Future[None]], started: float
    ) -> None:
        try:
            results = await asyncio.gather(*acknowledged, return_exceptions=True)
        finally:
            self._window.release()
            self._queue.settled(frame.seq)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            self.link.failed()
            _log.warning(
                "sparkplug: frame %d not delivered now (%s); it stays buffered",
                frame.seq,
                failed[0],
            )
            return
        self.link.succeeded((time.monotonic() - started) * 1000)
        await self.buffer.ack([frame.seq])
        self.sent_frames += 1
        self.sent_points += frame.points

    # -- availability and commands ----------------------------------------------------------------

    async def _availability_loop(self) -> None:
        while True:
            timeout = 0.2 if self.node.deaths_pending else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._status_dirty.wait()
            self._status_dirty.clear()
            messages = self.node.set_availability(self._status())
            if self._queue.drained:
                messages += self.node.settle(self.grace_ms)
            self._emit(messages)

    async def _inbound_loop(self, client: MqttClient, tasks: asyncio.TaskGroup) -> None:
        while True:
            message = await client.next_message()
            client.ack(message)
            output = self.node.handle_message(message.topic, message.payload)
            self._emit(output.messages)
            for rejected in output.rejected:
                self.commands_rejected += 1
                _log.warning(
                    "sparkplug: command on %s refused: %s (%s)",
                    rejected.topic,
                    rejected.reason,
                    rejected.detail,
                )
            for write in output.writes:
                tasks.create_task(self._write(write), name="sparkplug-command")
            if output.disconnect:
                self._end_session("the primary host went offline")

    async def _write(self, write: WriteRequest) -> None:
        if write.device_id is None:
            self.commands_rejected += 1
            _log.warning(
                "sparkplug: NCMD write to node metric %r refused (the node takes only %r)",
                write.name,
                REBIRTH_METRIC,
            )
            return
        self._command_count += 1
        request = CommandRequest(
            id=f"sparkplug-{self._command_count}",
            device=write.device_id,
            command="write",
            params={write.name: write.value},
        )
        try:
            await self._on_command(request)
        except CommandError as exc:
            self.commands_failed += 1
            _log.warning(
                "sparkplug: DCMD %s/%s = %r failed: %s",
                write.device_id,
                write.name,
                write.value,
                exc,
            )
        except Exception as exc:  # noqa: BLE001 - a device error must not end the session
            self.commands_failed += 1
            _log.warning(
                "sparkplug: DCMD %s/%s = %r failed: device_error: %s",
                write.device_id,
                write.name,
                write.value,
                exc,
            )
        else:
            self.commands_done += 1
            _log.info(
                "sparkplug: DCMD %s/%s = %r written; the next reading reports it",
                write.device_id,
                write.name,
                write.value,
            )

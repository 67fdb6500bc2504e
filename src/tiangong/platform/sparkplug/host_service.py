"""The platform's Sparkplug B host application: edge nodes' births, data, deaths and commands.

Theory of operation
-------------------
``SparkplugHostService`` is the I/O and platform side of the sans-I/O
``tiangong.network.sparkplug.HostApplication``. It owns:

* **Its own MQTT connection** (``run``). Sparkplug checks ``seq`` per edge node, so one host must
  see every message of a node, in order: the subscription is ``spBv1.0/#`` and never a
  ``$share/`` one, and only one platform instance per host id runs it (a setting turns it off
  on the others). Every connection starts with ``HostApplication.connect()``, whose STATE death
  (retained, QoS 1) becomes the MQTT Will, and publishes the STATE birth with the same
  timestamp once subscribed. The client therefore does not reconnect by itself; this service
  does, with backoff, so that each connection has a Will of its own timestamp. When the
  connection drops the host marks every node stale. The session is persistent, so QoS 1
  messages (deaths, and everything of nodes that publish with QoS 1, as Tiangong's gateway
  does) wait at the broker while the host is away: a node whose first message afterwards
  carries the next seq missed nothing and goes on; any other is asked for a rebirth.
* **The meaning of messages** (``ingest``). The connection's messages go through the ingest
  pipeline like JSON ones (``IngestPipeline.feed``); the pipeline hands each Sparkplug message
  to ``ingest`` from its receive loop, in arrival order, and gets back a ``SparkplugIngest``:
  samples per platform device (validated and stored by the pipeline, in its group commit,
  acknowledged after it), presence changes (applied through the device lifecycle), and
  refusals (dead letters). Births register devices and put thing models at once, not in the
  commit, because the next messages of the same group need them; both are idempotent, so a
  message delivered again after a crash repeats them harmlessly. A birth carries the current
  value of every metric, which was usually stored already (as data, or from the previous
  birth), so its samples are flagged and the pipeline stores only the new ones.
* **Commands** (``write``): a ``write`` to a Sparkplug device goes out as DCMD (NCMD for the
  node itself) under the metric's original name and datatype. Sparkplug commands are QoS 0
  and have no answer, so the result says the command was sent, not that it was carried out.

Conventions: the Sparkplug group id is the platform site id, the edge node id a registered
device (its MQTT user name), the Sparkplug device id the platform device id, used as it is. A
DBIRTH of an unknown device registers it as a child of the node; see ``thing_models`` for how
metrics become a thing model. A String metric ``event/<id>`` of a device whose thing model
declares event ``<id>`` (Tiangong's gateway reports its events so) is that event: each value
in DATA is one occurrence, its JSON object the event's data; births only declare it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from tiangong.network.access.payload import DeviceSamples
from tiangong.network.access.topics import is_valid_name
from tiangong.network.errors import (
    MqttError,
    SparkplugMetricError,
    SparkplugPayloadError,
    SparkplugStateError,
    SparkplugTopicError,
)
from tiangong.network.mqtt import MqttClient, Subscription, Will
from tiangong.network.sparkplug import (
    EVENT_METRIC_PREFIX,
    Data,
    DeviceBorn,
    DeviceDied,
    EdgeNodeDescriptor,
    HostApplication,
    HostEvent,
    MessageType,
    MetricSample,
    NodeBorn,
    NodeDied,
    NodeStale,
    NodeStatus,
    OutboundMessage,
    PropertySet,
    ProtocolError,
    RebirthRequested,
    SparkplugTopic,
    decode_payload,
    parse_topic,
)
from tiangong.network.sparkplug.codec import wall_clock_ms
from tiangong.network.sparkplug.host import HostSessionState
from tiangong.platform.errors import ConflictError, NotFoundError, ValidationError
from tiangong.platform.model import DeviceState
from tiangong.platform.registry import DeviceRegistry, DirectoryEntry
from tiangong.platform.sparkplug.thing_models import (
    DeviceBinding,
    bind_birth,
    birth_model,
    command_value,
    is_protocol_metric,
    model_id_for,
    undeclared_metrics,
)

__all__ = [
    "SPARKPLUG_ATTRIBUTE",
    "SparkplugEvent",
    "SparkplugHostService",
    "SparkplugIngest",
    "SparkplugPresence",
    "SparkplugRefusal",
    "SparkplugSamples",
]

_log = logging.getLogger(__name__)

#: Device attribute set on devices the host registered: their Sparkplug address.
SPARKPLUG_ATTRIBUTE: Final = "sparkplug"
#: Timestamps beyond this are clamped so that validation refuses them as out of range
#: (a uint64 timestamp may not fit numpy's int64).
_MAX_TIMESTAMP: Final = 1 << 62
#: Seconds an orderly stop waits to publish the STATE death.
_GOODBYE_TIMEOUT: Final = 2.0
#: How often a connection is checked for loss (the client has no awaitable for it).
_LOSS_POLL: Final = 0.1


# --- what one message means for the platform -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SparkplugSamples:
    """Values for one platform device, as columns the ingest validator takes.

    Attributes:
        entry: the device.
        parts: its values.
        birth: they come from a birth certificate, which repeats the current value of every
            metric: the pipeline stores only those it has not stored before.
    """

    entry: DirectoryEntry
    parts: tuple[DeviceSamples, ...]
    birth: bool = False


@dataclass(frozen=True, slots=True)
class SparkplugEvent:
    """One occurrence of a thing-model event, from a metric ``event/<event id>``.

    Attributes:
        entry: the device that raised it.
        event: the event id (declared by the device's thing model).
        ts: when it happened, ms since the epoch.
        data: its data (a JSON object; any other value arrives as ``{"value": ...}``).
    """

    entry: DirectoryEntry
    event: str
    ts: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SparkplugRefusal:
    """Something in a message the platform refused (a dead letter, counted by ``reason``)."""

    reason: str
    detail: str
    tenant_id: str | None = None
    device_id: str | None = None
    points: int = 0


@dataclass(frozen=True, slots=True)
class SparkplugPresence:
    """A device came online (a birth) or went offline (a death)."""

    device_id: str
    online: bool
    reason: str


@dataclass(frozen=True, slots=True)
class SparkplugIngest:
    """What one Sparkplug message means for the platform; the ingest pipeline applies it.

    Attributes:
        samples: values to validate and store, per device.
        presence: lifecycle changes.
        refusals: dead letters.
        stamped_on_arrival: some value carried no timestamp of its own (then the message
            cannot be recognised when delivered twice).
        events: device events to record.
    """

    samples: tuple[SparkplugSamples, ...] = ()
    presence: tuple[SparkplugPresence, ...] = ()
    refusals: tuple[SparkplugRefusal, ...] = ()
    stamped_on_arrival: bool = False
    events: tuple[SparkplugEvent, ...] = ()

    @property
    def outcome(self) -> str:
        """``accepted``, ``partial``, ``rejected`` or ``ignored`` (for the message counter)."""
        used = bool(self.samples or self.presence or self.events)
        if self.refusals:
            return "partial" if used else "rejected"
        return "accepted" if used else "ignored"


@dataclass(slots=True)
class _Outcome:
    received_ms: int
    samples: list[SparkplugSamples] = field(default_factory=list)
    presence: list[SparkplugPresence] = field(default_factory=list)
    refusals: list[SparkplugRefusal] = field(default_factory=list)
    events: list[SparkplugEvent] = field(default_factory=list)
    stamped_on_arrival: bool = False
    unsupported: int = 0

    def result(self) -> SparkplugIngest:
        return SparkplugIngest(
            tuple(self.samples),
            tuple(self.presence),
            tuple(self.refusals),
            self.stamped_on_arrival,
            tuple(self.events),
        )


@dataclass(frozen=True, slots=True)
class _Born:
    """A platform device as its last birth certificate in this host session declared it."""

    node: EdgeNodeDescriptor
    sparkplug_device: str | None  # None: the edge node itself
    binding: DeviceBinding


class _SparkplugMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.births = Counter(
            "tiangong_sparkplug_births",
            "Sparkplug birth certificates accepted, by level (node, device)",
            ["level"],
            registry=registry,
        )
        self.rebirth_requests = Counter(
            "tiangong_sparkplug_rebirth_requests",
            "Rebirth requests (NCMD Node Control/Rebirth) sent to edge nodes, by reason",
            ["reason"],
            registry=registry,
        )
        self.registrations = Counter(
            "tiangong_sparkplug_devices_registered",
            "Devices registered automatically from a DBIRTH",
            registry=registry,
        )
        self.unsupported = Counter(
            "tiangong_sparkplug_unsupported_values",
            "Values of datatypes no thing-model type stores (arrays, DataSet, Template, Bytes)",
            registry=registry,
        )
        self.commands = Counter(
            "tiangong_sparkplug_commands",
            "Writes sent to Sparkplug devices as NCMD or DCMD (QoS 0, never confirmed)",
            registry=registry,
        )
        self.online = Gauge(
            "tiangong_sparkplug_host_online",
            "1 while the Sparkplug host's STATE says online on the broker",
            registry=registry,
        )


def _properties(payload: bytes) -> dict[str, PropertySet]:
    """Metric properties of a birth certificate, by metric name (the host keeps none)."""
    try:
        data = decode_payload(payload)
    except SparkplugPayloadError:  # pragma: no cover - the host decoded it a moment ago
        return {}
    return {m.name: m.properties for m in data.metrics if m.name is not None and m.properties}


def _declared_events(entry: DirectoryEntry) -> frozenset[str]:
    return frozenset(spec.id for spec in entry.model.events)


def _event_id(metric: str) -> str | None:
    """The event id of an ``event/<id>`` metric (``None`` for any other metric)."""
    if metric.startswith(EVENT_METRIC_PREFIX):
        return metric[len(EVENT_METRIC_PREFIX) :]
    return None


def _event_data(value: object) -> dict[str, Any]:
    """An event metric's value as event data: its JSON object, or ``{"value": value}``."""
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {"value": value}
        return parsed if isinstance(parsed, dict) else {"value": parsed}
    return {"value": value}


def _metric_count(payload: bytes) -> int:
    try:
        return len(decode_payload(payload).metrics)
    except SparkplugPayloadError:
        return 0


class SparkplugHostService:
    """The platform's Sparkplug B host application.

    Args:
        registry: the device registry (edge nodes, children, thing models).
        metrics_registry: the Prometheus registry its counters join (the platform's).
        host_id: the Sparkplug host id (STATE topic ``spBv1.0/STATE/<host_id>``).
        rebirth_interval_ms: at most one rebirth request per node within this many ms.
        outbound_limit: rebirth requests waiting to be published before new ones are dropped
            (the host asks again later).
        backoff_initial: first reconnect delay, seconds.
        backoff_max: longest reconnect delay, seconds.

    Attributes:
        host: the sans-I/O host application.
        client: the current MQTT connection, while there is one.
    """

    def __init__(
        self,
        *,
        registry: DeviceRegistry,
        metrics_registry: CollectorRegistry,
        host_id: str = "tiangong",
        rebirth_interval_ms: int = 5_000,
        outbound_limit: int = 1024,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        if outbound_limit < 1:
            raise ValueError("outbound_limit must be at least 1")
        self.registry = registry
        self.metrics = _SparkplugMetrics(metrics_registry)
        self._pinned_ms: int | None = None
        self.host = HostApplication(
            host_id=host_id, rebirth_interval_ms=rebirth_interval_ms, clock=self._clock
        )
        self.client: MqttClient | None = None
        self._backoff = (backoff_initial, backoff_max)
        self._outbound: asyncio.Queue[OutboundMessage] = asyncio.Queue(outbound_limit)
        self._born: dict[str, _Born] = {}
        self._refused: dict[tuple[EdgeNodeDescriptor, str | None], SparkplugRefusal] = {}
        self._online = asyncio.Event()

    def _clock(self) -> int:
        # While a message is handled the host reads its arrival time, so that a value stamped
        # "now" by the host is recognisably one that carried no timestamp of its own.
        return self._pinned_ms if self._pinned_ms is not None else wall_clock_ms()

    @property
    def state_topic(self) -> str:
        """This host's STATE topic."""
        return str(self.host.state_topic)

    @property
    def online(self) -> bool:
        """Whether the host is connected and has published its STATE birth."""
        return self._online.is_set()

    async def wait_online(self) -> None:
        """Wait until the STATE birth is published (wrap in ``asyncio.timeout``)."""
        await self._online.wait()

    # -- connection -------------------------------------------------------------------------------

    async def run(
        self,
        *,
        connect: Callable[[Will], MqttClient],
        feed: Callable[[MqttClient], Coroutine[Any, Any, None]],
    ) -> None:
        """Keep the host's MQTT connection up and its messages flowing until cancelled.

        Args:
            connect: builds an MQTT client with this Will; it must not reconnect by itself
                (``reconnect=False``), since every connection needs a Will of its own.
            feed: consumes a connected client's messages (``IngestPipeline.feed``) until
                cancelled.
        """
        initial, longest = self._backoff
        delay = initial
        while True:
            will = self.host.connect()
            client = connect(Will(will.topic, will.payload, will.qos, will.retain))
            try:
                await self._open(client)
                try:
                    self.client = client
                    await self._session(client, feed)
                finally:
                    await client.__aexit__(None, None, None)
            except (OSError, MqttError) as exc:
                _log.warning(
                    "sparkplug: host connection failed (%s); retrying in %.1fs", exc, delay
                )
            except Exception:  # noqa: BLE001 - the host restarts; ingest and the API stay up
                _log.exception("sparkplug: host stopped on an error; restarting in %.1fs", delay)
            else:
                delay = initial
                _log.warning("sparkplug: host connection lost; reconnecting in %.1fs", delay)
            finally:
                self.client = None
                self._online.clear()
                self.metrics.online.set(0)
                if self.host.state is not HostSessionState.DISCONNECTED:
                    stale = self.host.connection_lost()
                    if stale:
                        _log.info(
                            "sparkplug: %d edge nodes are stale until they rebirth", len(stale)
                        )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, longest)

    @staticmethod
    async def _open(client: MqttClient) -> None:
        """Connect ``client``; a cancellation lets a CONNECT under way finish, then closes.

        Aborting a connection in the middle of its handshake leaves the embedded broker
        (amqtt 0.12) with a socket it never closes, so a platform stopped just after it
        started would leak one; the wait is bounded.
        """
        handshake = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.shield(handshake)
        except asyncio.CancelledError:
            try:
                async with asyncio.timeout(_GOODBYE_TIMEOUT):
                    await handshake
            except (TimeoutError, OSError, MqttError):
                pass  # no connection to close
            else:
                await client.__aexit__(None, None, None)
            raise

    async def _session(
        self, client: MqttClient, feed: Callable[[MqttClient], Coroutine[Any, Any, None]]
    ) -> None:
        await client.subscribe(*(Subscription(f, qos=1) for f in self.host.subscriptions()))
        for message in self.host.session_started():
            await client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        self._online.set()
        self.metrics.online.set(1)
        _log.info("sparkplug: host %s online", self.host.state_topic.host_id)
        try:
            async with asyncio.TaskGroup() as tasks:
                feeding = tasks.create_task(feed(client), name="sparkplug-feed")
                sending = tasks.create_task(self._publish_loop(client), name="sparkplug-publish")
                # MqttClient offers no awaitable for the loss of a connection it will not
                # re-establish, so the host looks at it ten times a second.
                while client.connected:  # noqa: ASYNC110
                    await asyncio.sleep(_LOSS_POLL)
                feeding.cancel()
                sending.cancel()
        except asyncio.CancelledError:
            await self._goodbye(client)
            raise

    async def _goodbye(self, client: MqttClient) -> None:
        """Publish the STATE death before an orderly disconnect (a clean DISCONNECT has no Will)."""
        if self.host.state is not HostSessionState.ONLINE or not client.connected:
            return
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(_GOODBYE_TIMEOUT):
                for message in self.host.disconnect():
                    await client.publish(
                        message.topic, message.payload, qos=message.qos, retain=message.retain
                    )

    async def _publish_loop(self, client: MqttClient) -> None:
        while True:
            message = await self._outbound.get()
            try:
                await client.publish(
                    message.topic, message.payload, qos=message.qos, retain=message.retain
                )
            except MqttError as exc:  # the connection is going; the host asks again later
                _log.info("sparkplug: %s not sent: %s", message.topic, exc)

    def _queue_outbound(self, messages: Iterable[OutboundMessage]) -> None:
        for message in messages:
            try:
                self._outbound.put_nowait(message)
            except asyncio.QueueFull:
                _log.warning("sparkplug: outbound queue full; %s dropped", message.topic)

    # -- inbound ----------------------------------------------------------------------------------

    async def ingest(self, topic: str, payload: bytes, received_ms: int) -> SparkplugIngest:
        """Handle one message from the ``spBv1.0`` namespace. Never raises for bad input.

        Args:
            topic: the MQTT topic.
            payload: the payload.
            received_ms: arrival time, ms since the epoch (stamps values that carry none).
        """
        try:
            parsed = parse_topic(topic)
        except SparkplugTopicError:
            parsed = None
        node_before = (
            self.host.node_status(parsed.node) if isinstance(parsed, SparkplugTopic) else None
        )
        self._pinned_ms = received_ms
        try:
            output = self.host.handle_message(topic, payload)
        finally:
            self._pinned_ms = None
        self._queue_outbound(output.messages)
        outcome = _Outcome(received_ms)
        for event in output.events:
            await self._on_event(event, topic, payload, outcome)
        if isinstance(parsed, SparkplugTopic) and node_before is not None:
            self._on_unused(parsed, node_before, output.events, payload, outcome)
        if outcome.unsupported:
            self.metrics.unsupported.inc(outcome.unsupported)
        return outcome.result()

    async def _on_event(
        self, event: HostEvent, topic: str, payload: bytes, outcome: _Outcome
    ) -> None:
        match event:
            case NodeBorn():
                await self._node_born(event, payload, outcome)
            case DeviceBorn():
                await self._device_born(event, payload, outcome)
            case Data():
                self._data(event, outcome)
            case NodeDied():
                self._node_died(event.node, event.devices, "Sparkplug NDEATH", outcome)
            case DeviceDied():
                self._device_died(event, outcome)
            case NodeStale():
                _log.info("sparkplug: %s is stale (%s)", event.node, event.reason)
            case RebirthRequested():
                self.metrics.rebirth_requests.labels(event.reason).inc()
                _log.info("sparkplug: rebirth of %s requested (%s)", event.node, event.reason)
            case ProtocolError():
                tenant, device = self._owner_of(topic)
                outcome.refusals.append(
                    SparkplugRefusal(
                        f"sparkplug_{event.reason}",
                        event.detail or event.reason,
                        tenant,
                        device,
                        _metric_count(payload),
                    )
                )

    def _owner_of(self, topic: str) -> tuple[str | None, str | None]:
        """(tenant, device) to file a refusal under: the edge node's, if it is registered."""
        try:
            parsed = parse_topic(topic)
        except SparkplugTopicError:
            return None, None
        if not isinstance(parsed, SparkplugTopic):
            return None, None
        entry = self.registry.lookup(parsed.node.edge_node_id)
        if entry is None:
            return None, parsed.node.edge_node_id
        return entry.device.tenant_id, parsed.device_id or parsed.node.edge_node_id

    def _on_unused(
        self,
        parsed: SparkplugTopic,
        before: NodeStatus,
        events: tuple[HostEvent, ...],
        payload: bytes,
        outcome: _Outcome,
    ) -> None:
        """Account for a message the host application did not use (no birth, data or death)."""
        if any(
            isinstance(e, NodeBorn | DeviceBorn | Data | NodeDied | DeviceDied | ProtocolError)
            for e in events
        ):
            return
        kind = parsed.message_type
        node = parsed.node
        tenant, device = self._owner_of(str(parsed))
        if kind in (MessageType.NCMD, MessageType.DCMD):
            return  # commands: ours, or another host's
        if kind is MessageType.NDEATH:
            if before in (NodeStatus.ONLINE, NodeStatus.STALE):
                outcome.refusals.append(
                    SparkplugRefusal(
                        "sparkplug_stale_ndeath",
                        f"NDEATH of {node} with a bdSeq other than its current birth's (the Will"
                        " of an earlier connection): ignored, rebirth requested",
                        tenant,
                        device,
                    )
                )
            elif before is NodeStatus.UNKNOWN:
                self._unknown_death(node, outcome)
            return
        if kind is MessageType.NBIRTH or self.host.node_status(node) is NodeStatus.ONLINE:
            return  # e.g. DDEATH of a device that is already dead: nothing to do
        reason = next(
            (e.reason for e in events if isinstance(e, NodeStale | RebirthRequested)),
            "awaiting_rebirth" if before is NodeStatus.STALE else "data_before_birth",
        )
        outcome.refusals.append(
            SparkplugRefusal(
                f"sparkplug_{reason}",
                f"{kind.value} from {node} dropped: the host has lost track of the node"
                f" ({reason}) and waits for its rebirth",
                tenant,
                device,
                _metric_count(payload),
            )
        )

    def _unknown_death(self, node: EdgeNodeDescriptor, outcome: _Outcome) -> None:
        """NDEATH of a node this host session never saw born (e.g. queued while it was away).

        Its bdSeq cannot be checked, so the node is marked offline and asked to rebirth: a
        node that is in fact alive answers at once and is online again.
        """
        self._node_died(node, (), "Sparkplug NDEATH (unverified bdSeq)", outcome)
        if outcome.presence:
            rebirth = self.host.request_rebirth(node, "unverified_ndeath")
            self._queue_outbound(rebirth.messages)
            for event in rebirth.events:
                if isinstance(event, RebirthRequested):
                    self.metrics.rebirth_requests.labels(event.reason).inc()

    # -- births -----------------------------------------------------------------------------------

    def _node_entry(
        self, node: EdgeNodeDescriptor
    ) -> tuple[DirectoryEntry | None, SparkplugRefusal | None]:
        node_id = node.edge_node_id
        entry = self.registry.lookup(node_id)
        if entry is None:
            return None, SparkplugRefusal(
                "unknown_device",
                f"edge node {node_id!r} is not a registered device: register it (its id is"
                " also its MQTT user name) before it connects",
                None,
                node_id,
            )
        device = entry.device
        if device.site_id != node.group_id:
            return None, SparkplugRefusal(
                "topic_mismatch",
                f"edge node {node_id!r} is registered at site {device.site_id!r}: its Sparkplug"
                f" group id must be {device.site_id!r}, not {node.group_id!r}",
                device.tenant_id,
                node_id,
            )
        if device.state is DeviceState.DECOMMISSIONED:
            return None, SparkplugRefusal(
                "decommissioned",
                f"edge node {node_id!r} is decommissioned",
                device.tenant_id,
                node_id,
            )
        return entry, None

    def _refuse(
        self,
        outcome: _Outcome,
        key: tuple[EdgeNodeDescriptor, str | None],
        refusal: SparkplugRefusal,
        points: int,
    ) -> None:
        """Refuse a birth; the same refusal then applies to the data of its session."""
        self._refused[key] = refusal
        outcome.refusals.append(replace(refusal, points=points))
        _log.warning("sparkplug: %s", refusal.detail)

    async def _node_born(self, event: NodeBorn, payload: bytes, outcome: _Outcome) -> None:
        node = event.node
        for key in [key for key in self._refused if key[0] == node]:
            del self._refused[key]
        entry, refusal = self._node_entry(node)
        if entry is None:
            assert refusal is not None
            self._refuse(outcome, (node, None), refusal, len(event.metrics))
            return
        binding = bind_birth(((s.name, s.datatype) for s in event.metrics), _properties(payload))
        entry = await self._adopt_model(entry, binding, str(node))
        self._born[entry.device.id] = _Born(node, None, binding)
        self.metrics.births.labels("node").inc()
        outcome.presence.append(SparkplugPresence(entry.device.id, True, "Sparkplug NBIRTH"))
        self._collect(entry, binding, event.metrics, outcome, birth=True)

    async def _device_born(self, event: DeviceBorn, payload: bytes, outcome: _Outcome) -> None:
        node, device_id = event.node, event.device_id
        key = (node, device_id)
        self._refused.pop(key, None)
        points = len(event.metrics)
        node_entry, refusal = self._node_entry(node)
        if node_entry is None:
            assert refusal is not None
            self._refuse(outcome, key, refusal, points)
            return
        tenant = node_entry.device.tenant_id
        where = f"{node}/{device_id}"
        if not is_valid_name(device_id):
            detail = (
                f"Sparkplug device id {device_id!r} of {node} is not a valid platform device id"
                " (1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter or digit)"
            )
            self._refuse(outcome, key, SparkplugRefusal("bad_device_id", detail, tenant), points)
            return
        binding = bind_birth(((s.name, s.datatype) for s in event.metrics), _properties(payload))
        entry = self.registry.lookup(device_id)
        if entry is None:
            entry, refusal = await self._register(node_entry, device_id, binding, where)
        else:
            refusal = self._child_problem(node_entry, entry)
        if entry is None or refusal is not None:
            assert refusal is not None
            self._refuse(outcome, key, refusal, points)
            return
        entry = await self._adopt_model(entry, binding, where)
        self._born[device_id] = _Born(node, device_id, binding)
        self.metrics.births.labels("device").inc()
        outcome.presence.append(SparkplugPresence(device_id, True, "Sparkplug DBIRTH"))
        self._collect(entry, binding, event.metrics, outcome, birth=True)

    @staticmethod
    def _child_problem(node: DirectoryEntry, entry: DirectoryEntry) -> SparkplugRefusal | None:
        """Why ``entry`` cannot be a device of edge node ``node`` (``None``: it is one)."""
        device, node_id, tenant = entry.device, node.device.id, node.device.tenant_id
        if device.tenant_id != tenant:
            owner = "by another tenant"
        elif device.id == node_id:
            owner = "as the edge node itself"
        elif device.gateway_id is None:
            owner = f"as a device of its own at site {device.site_id!r}"
        elif device.gateway_id != node_id:
            owner = f"under edge node {device.gateway_id!r}"
        elif device.state is DeviceState.DECOMMISSIONED:
            return SparkplugRefusal(
                "decommissioned", f"device {device.id!r} is decommissioned", tenant, device.id
            )
        else:
            return None
        return SparkplugRefusal(
            "not_your_device",
            f"device id {device.id!r} is already registered {owner}; {node_id!r} cannot use it",
            tenant,
            device.id,
        )

    async def _register(
        self, node: DirectoryEntry, device_id: str, binding: DeviceBinding, where: str
    ) -> tuple[DirectoryEntry | None, SparkplugRefusal | None]:
        tenant = node.device.tenant_id
        model = birth_model(device_id, binding, where=where)
        try:
            stored = await self.registry.put_thing_model(tenant, model)
            await self.registry.register_device(
                tenant_id=tenant,
                site_id=node.device.site_id,
                device_id=device_id,
                model_id=stored.id,
                model_version=stored.version,
                name=device_id,
                gateway_id=node.device.id,
                attributes={SPARKPLUG_ATTRIBUTE: where},
            )
        except ConflictError:
            # Registered meanwhile (by a person, or by an earlier delivery of this birth).
            entry = self.registry.lookup(device_id)
            if entry is None:
                detail = f"device id {device_id!r} is already registered elsewhere"
                return None, SparkplugRefusal("not_your_device", detail, tenant, device_id)
            return entry, self._child_problem(node, entry)
        except NotFoundError as exc:
            detail = f"cannot register {device_id!r} under {node.device.id!r}: {exc}"
            return None, SparkplugRefusal("unknown_device", detail, tenant, device_id)
        self.metrics.registrations.inc()
        _log.info("sparkplug: registered %s (model %s v%d)", where, stored.id, stored.version)
        return self.registry.lookup(device_id), None

    async def _adopt_model(
        self, entry: DirectoryEntry, binding: DeviceBinding, where: str
    ) -> DirectoryEntry:
        """Move a device with a birth-derived model to the model this birth describes."""
        device = entry.device
        if device.model_id != model_id_for(device.id):
            events = _declared_events(entry)
            missing = [
                m for m in undeclared_metrics(entry.model, binding) if _event_id(m) not in events
            ]
            if missing:
                _log.info(
                    "sparkplug: %s keeps thing model %r, which lacks %d of its metrics (e.g."
                    " %s): their values are dead-lettered as unknown_metric",
                    where,
                    device.model_id,
                    len(missing),
                    ", ".join(repr(m) for m in missing[:5]),
                )
            return entry
        wanted = birth_model(device.id, binding, where=where)
        if entry.model.model_copy(update={"version": 1}) == wanted:
            return entry
        stored = await self.registry.put_thing_model(device.tenant_id, wanted)
        if stored.version != device.model_version:
            await self.registry.update_device(device.id, None, model_version=stored.version)
            _log.info("sparkplug: %s now uses %s v%d", where, stored.id, stored.version)
        return self.registry.lookup(device.id) or entry

    # -- data and deaths --------------------------------------------------------------------------

    def _data(self, event: Data, outcome: _Outcome) -> None:
        node = event.node
        target = event.device_id or node.edge_node_id
        entry = self.registry.lookup(target)
        born = self._born.get(target)
        refusal = self._refused.get((node, event.device_id)) or self._refused.get((node, None))
        if refusal is None:
            node_entry, refusal = self._node_entry(node)
            if node_entry is not None and entry is None:
                refusal = SparkplugRefusal(
                    "unknown_device", f"device {target!r} is no longer registered", None, target
                )
            elif node_entry is not None and entry is not None and event.device_id is not None:
                refusal = self._child_problem(node_entry, entry)
        if refusal is None and (born is None or born.node != node):
            refusal = SparkplugRefusal(
                "sparkplug_data_before_birth",
                f"{target!r} has no birth certificate from {node} in this host session",
                entry.device.tenant_id if entry is not None else None,
                target,
            )
        if refusal is not None or entry is None or born is None:
            assert refusal is not None
            outcome.refusals.append(replace(refusal, points=len(event.metrics)))
            return
        self._collect(entry, born.binding, event.metrics, outcome)

    def _collect(
        self,
        entry: DirectoryEntry,
        binding: DeviceBinding,
        metrics: Iterable[MetricSample],
        outcome: _Outcome,
        *,
        birth: bool = False,
    ) -> None:
        """Turn metric samples into value columns of the device's properties, and events."""
        columns: dict[str, tuple[list[int], list[Any]]] = {}
        events = _declared_events(entry)
        for sample in metrics:
            event = _event_id(sample.name)
            if event in events:
                # A birth declares the metric and repeats the last occurrence, which arrived
                # (or arrives, buffered) as data: only data are occurrences.
                if not birth and sample.value is not None:
                    outcome.events.append(
                        SparkplugEvent(entry, event, sample.timestamp, _event_data(sample.value))
                    )
                    if sample.timestamp == outcome.received_ms:
                        outcome.stamped_on_arrival = True
                continue
            bound = binding.metrics.get(sample.name)
            if bound is None:
                if not is_protocol_metric(sample.name):
                    outcome.unsupported += 1
                continue
            # Transient metrics are, by the specification, not to be historized.
            if sample.is_transient or sample.value is None:
                continue
            stamps, values = columns.setdefault(bound.property_id, ([], []))
            stamps.append(min(sample.timestamp, _MAX_TIMESTAMP))
            values.append(sample.value)
            if sample.timestamp == outcome.received_ms:
                outcome.stamped_on_arrival = True
        if not columns:
            return
        device = entry.device.id
        first = next(iter(columns.values()))[0]
        parts: tuple[DeviceSamples, ...]
        if all(stamps == first for stamps, _ in columns.values()):
            # The usual message: every metric sampled at the same instant, one row.
            ts = np.asarray(first, dtype=np.int64)
            parts = (DeviceSamples(device, ts, {p: v for p, (_, v) in columns.items()}),)
        else:
            parts = tuple(
                DeviceSamples(device, np.asarray(stamps, dtype=np.int64), {prop: values})
                for prop, (stamps, values) in columns.items()
            )
        outcome.samples.append(SparkplugSamples(entry, parts, birth))

    def _node_died(
        self,
        node: EdgeNodeDescriptor,
        devices: Iterable[str],
        reason: str,
        outcome: _Outcome,
    ) -> None:
        node_entry, _ = self._node_entry(node)
        if node_entry is None:
            return
        node_id = node_entry.device.id
        children = set(devices)
        children.update(
            d.id
            for d in self.registry.devices_in_memory()
            if d.gateway_id == node_id and d.state is DeviceState.ONLINE
        )
        # Children first: changes are applied in order, so whoever sees the node offline sees
        # its devices offline too.
        for child_id in sorted(children):
            child = self.registry.lookup(child_id)
            if child is not None and self._child_problem(node_entry, child) is None:
                outcome.presence.append(
                    SparkplugPresence(child_id, False, f"{reason} of {node_id}")
                )
        outcome.presence.append(SparkplugPresence(node_id, False, reason))

    def _device_died(self, event: DeviceDied, outcome: _Outcome) -> None:
        node_entry, _ = self._node_entry(event.node)
        child = self.registry.lookup(event.device_id)
        if node_entry is None or child is None or self._child_problem(node_entry, child):
            return
        outcome.presence.append(SparkplugPresence(event.device_id, False, "Sparkplug DDEATH"))

    # -- commands ---------------------------------------------------------------------------------

    def handles(self, device_id: str) -> bool:
        """Whether commands to this device go out over Sparkplug.

        It does when it was born through this host, or when the host registered it.
        """
        if device_id in self._born:
            return True
        entry = self.registry.lookup(device_id)
        return entry is not None and SPARKPLUG_ATTRIBUTE in entry.device.attributes

    async def write(
        self, entry: DirectoryEntry, values: Mapping[str, Any], *, wait_s: float = 10.0
    ) -> dict[str, Any]:
        """Send a write (checked against the thing model already) as NCMD or DCMD.

        Sparkplug commands are QoS 0 and unanswered: this returns once the message is handed
        to the broker connection, and the result says the write was sent, not confirmed (the
        device reports the new value in its data if it applied it).

        Raises:
            ValidationError: a property its last birth did not declare, or a value its
                Sparkplug datatype cannot carry.
            ConflictError: the device (or its node) is not online in Sparkplug, or the host
                is not connected.
        """
        device_id = entry.device.id
        born = self._born.get(device_id)
        if born is None:
            raise ConflictError(
                f"{device_id} has not been born through this Sparkplug host since the platform"
                " started; retry when its edge node has sent a birth certificate"
            )
        metrics: dict[str, Any] = {}
        for property_id, value in values.items():
            bound = born.binding.by_property(property_id)
            if bound is None:
                raise ValidationError(
                    f"{property_id} is not a metric of {device_id}'s Sparkplug birth certificate"
                )
            try:
                metrics[bound.metric] = command_value(
                    bound, value, entry.model.property(property_id)
                )
            except ValueError as exc:
                raise ValidationError(str(exc)) from exc
        try:
            message = self.host.write(born.node, metrics, device_id=born.sparkplug_device)
        except SparkplugStateError as exc:
            raise ConflictError(
                f"{device_id} is not online in Sparkplug ({exc.detail}); retry when it is back"
            ) from exc
        except SparkplugMetricError as exc:
            raise ValidationError(str(exc)) from exc
        client = self.client
        if client is None or not client.connected:
            raise ConflictError("the Sparkplug host is not connected to the broker; retry shortly")
        try:
            async with asyncio.timeout(wait_s):
                await client.publish(message.topic, message.payload, qos=message.qos)
        except (TimeoutError, MqttError) as exc:
            raise ConflictError(f"could not send the Sparkplug command: {exc!r}") from exc
        self.metrics.commands.inc()
        kinds = {name: born.binding.metrics[name].datatype.name for name in metrics}
        return {
            "sent": True,
            "confirmed": False,
            "protocol": "sparkplug",
            "topic": message.topic,
            "metrics": kinds,
            "note": "Sparkplug B commands are QoS 0 and have no answer; the device reports the"
            " new value in its data if it applied it",
        }

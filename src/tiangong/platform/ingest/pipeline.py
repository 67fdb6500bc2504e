"""The ingest pipeline: from MQTT messages to durable, validated points.

Theory of operation
-------------------
Two tasks and one bounded queue::

    MqttClient.next_message()          (the client stops reading the socket when its own
        |                               inbound queue is full: backpressure reaches the broker)
    receive: topic -> device directory -> decode -> validate -> series ids -> group
        |   a group closes at ``max_points`` points, ``max_messages`` messages or ``max_delay``
        v
    commit queue (``max_groups`` groups; ``receive`` waits when it is full)
        |   the committer takes every group waiting and writes them together (group commit)
    commit: store.write(points + message digests)   one transaction, durable on return
            dead letters and events -> metadata database
            lifecycle changes (online/offline)
            PUBACK every message of the group, in arrival order
            listeners (rules, KPIs) see the accepted samples

A message is acknowledged only after everything it produced is stored, so a crash at any point
loses nothing the broker considers delivered. A failing store is retried with backoff for as
long as it fails; nothing is dropped or acknowledged meanwhile, and since ``receive`` stops when
the commit queue is full, memory stays bounded by the queue sizes, not by the outage.

A message that cannot be used (bad topic, unknown device, malformed JSON, oversized) becomes a
dead letter with a reason and is acknowledged like any other: one bad message never blocks the
good ones behind it. Values refused by validation are dead-lettered the same way while the good
values of the same message are stored.

Rate limits: each device has two token buckets (``tiangong.security.ratelimit``), messages per
second and data points per second, each holding ``device_burst`` seconds' worth. A gateway
speaks for its children, so its budget is multiplied by 1 + the number of its (not
decommissioned) child devices: a gateway of 50 meters may send what 51 devices may. A Sparkplug
edge node is limited in messages per second the same way (its group and node id are the key).
The message check comes before decoding, the point check right after it (a point count is only
known then); a message over either is dead-lettered as ``rate_limited`` (its first bytes kept,
its points counted) and acknowledged, so one flooding device costs the others nothing but the
dead letter, and nothing it sent is lost without a trace. Payload size (``oversized``) and batch
size (``PayloadLimits``: devices, samples, metrics, events per message) were limited before.

Every dead letter is also handed to the rejection listeners (``add_rejection_listener``) as an
``IngestRejection`` at once, synchronously: the security monitor counts them there.

Redelivery: a message whose samples all carry their own timestamps has a digest (BLAKE2b of
topic and payload). Digests of the last ``dedupe_window`` are kept in memory and, with each
write, in the store; a message seen before is acknowledged and not stored again.

Sparkplug B: messages in the ``spBv1.0`` namespace are one more branch of ``_process``. They
come from the Sparkplug host's own connection, which ``feed`` reads with a receive loop of its
own into the same commit queue (each message is acknowledged to the connection it came from).
The host service says what a message means (``SparkplugIngest``: samples per device, presence,
refusals); the samples are validated, stored, counted and dead-lettered exactly as JSON
telemetry, in the same group commit, and acknowledged after it; so are the device events the
host finds in ``event/<id>`` metrics. A birth certificate repeats the
current value of every metric, which is in most cases stored already: as data, from the last
birth (a rebirth, a reconnect), or from the buffered data a gateway sends after it. A sample is
known by its series and timestamp, so the pipeline remembers, per Sparkplug series, the newest
timestamp it stored (loaded from the store at a device's first birth after a start) and the one
the last birth carried: a birth's value no newer than the first, and a data sample at exactly
the second, are repeats and are not stored again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import Counter as TallyCounter
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from tiangong.network.access import (
    Channel,
    PayloadLimits,
    decode_events,
    decode_status,
    decode_telemetry,
    parse_topic,
)
from tiangong.network.access.payload import DeviceSamples
from tiangong.network.errors import PayloadError, TopicError
from tiangong.network.mqtt.client import InboundMessage
from tiangong.platform.errors import LifecycleError, NotFoundError, PlatformError
from tiangong.platform.ingest.dead_letters import DeadLetterStore
from tiangong.platform.ingest.validation import ModelValidator, TimeWindow, ValidatedSamples
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.metrics import PlatformMetrics
from tiangong.platform.model import LINK_PROPERTIES, Device, DeviceState, ThingModel
from tiangong.platform.registry import DeviceRegistry, DirectoryEntry
from tiangong.platform.sparkplug.host_service import (
    SparkplugEvent,
    SparkplugIngest,
    SparkplugSamples,
)
from tiangong.platform.tsdb.base import PointBatch, SeriesKey, TimeSeriesStore
from tiangong.security.ratelimit import TokenBuckets

__all__ = [
    "AcceptedSamples",
    "IngestPipeline",
    "IngestRejection",
    "IngestSettings",
    "MessageSource",
    "SparkplugHandler",
]

_log = logging.getLogger(__name__)

#: Bytes of a rejected payload kept with its dead letter.
DEAD_LETTER_PAYLOAD: Final = 4096
#: Topic prefix of Sparkplug B messages (``spBv1.0/...``).
SPARKPLUG_PREFIX: Final = "spBv1.0/"


class MessageSource(Protocol):
    """Where messages come from and where acknowledgements go (an ``MqttClient``)."""

    async def next_message(self) -> InboundMessage:
        """The next message."""

    def ack(self, message: InboundMessage, reason_code: int = 0) -> bool:
        """Acknowledge a message once it is durable."""

    def pending_messages(self) -> int:
        """Messages received and not yet taken."""


class SparkplugHandler(Protocol):
    """What a Sparkplug B message means for the platform (``SparkplugHostService``)."""

    async def ingest(self, topic: str, payload: bytes, received_ms: int) -> SparkplugIngest:
        """Handle one ``spBv1.0`` message; never raises for bad input."""


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Tuning of the pipeline; the defaults suit a 2-core machine.

    Attributes:
        max_points: points that close a group.
        max_messages: messages that close a group.
        max_delay: seconds after which a non-empty group closes anyway.
        max_groups: closed groups waiting for the store before ``receive`` waits.
        inbound_messages: messages the MQTT client holds for ``receive`` before it stops
            reading from the broker (read backpressure).
        inbound_bytes: the same bound in payload bytes, whichever is reached first.
        window: accepted sample times.
        limits: bounds on one payload.
        dedupe_window: seconds of message digests kept in memory.
        dedupe_max: most digests kept in memory.
        retry_initial: first delay after a failed store write, in seconds.
        retry_max: longest delay between retries, in seconds.
        shutdown_grace: seconds a stopping pipeline waits for its last commits.
        device_messages: messages per second a device may send (0: no limit); a gateway's
            budget is scaled by 1 + its child devices.
        device_points: data points per second a device may send (0: no limit), scaled alike.
        device_burst: seconds of its rate a device may send at once.
        rate_keys: most devices tracked by the rate limits (memory bound; beyond it, devices
            not yet tracked share one budget).
    """

    max_points: int = 500_000
    max_messages: int = 1_000
    max_delay: float = 0.05
    max_groups: int = 4
    inbound_messages: int = 2048
    inbound_bytes: int = 64 * 1024 * 1024
    window: TimeWindow = field(default_factory=TimeWindow)
    limits: PayloadLimits = field(default_factory=PayloadLimits)
    dedupe_window: float = 600.0
    dedupe_max: int = 1_000_000
    retry_initial: float = 0.1
    retry_max: float = 5.0
    shutdown_grace: float = 15.0
    device_messages: float = 200.0
    device_points: float = 200_000.0
    device_burst: float = 10.0
    rate_keys: int = 200_000


@dataclass(frozen=True, slots=True)
class IngestRejection:
    """A dead-lettered message (or part of one), as the rejection listeners see it.

    Attributes:
        reason: the dead letter's reason (``decommissioned``, ``unknown_device``,
            ``rate_limited``, ``bad_payload``, a validation reason...).
        tenant_id: the tenant of the device, when known.
        device_id: the device the refused data names, when known.
        topic: the MQTT topic.
        detail: what was wrong.
        at: when it was refused.
    """

    reason: str
    tenant_id: str | None
    device_id: str | None
    topic: str
    detail: str
    at: datetime


RejectionListener = Callable[[IngestRejection], None]


@dataclass(frozen=True, slots=True)
class AcceptedSamples:
    """Validated samples of one device, handed to listeners after they are stored."""

    device: Device
    model: ThingModel
    samples: ValidatedSamples


CommitListener = Callable[[Sequence[AcceptedSamples]], Awaitable[None]]


@dataclass(slots=True)
class _Group:
    opened: float
    source: MessageSource | None = None
    messages: list[InboundMessage] = field(default_factory=list)
    senders: list[MessageSource] = field(default_factory=list)
    batches: list[PointBatch] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    lifecycle: list[tuple[str, LifecycleTrigger, str, datetime]] = field(default_factory=list)
    accepted: list[AcceptedSamples] = field(default_factory=list)
    points: int = 0

    def take(self, message: InboundMessage) -> None:
        """Add a message; it is acknowledged to this group's source after the commit."""
        assert self.source is not None
        self.messages.append(message)
        self.senders.append(self.source)

    def absorb(self, later: _Group) -> None:
        """Append a later group (arrival order, hence acknowledgement order, is kept)."""
        self.messages += later.messages
        self.senders += later.senders
        self.batches += later.batches
        self.digests += later.digests
        self.dead_letters += later.dead_letters
        self.events += later.events
        self.lifecycle += later.lifecycle
        self.accepted += later.accepted
        self.points += later.points


@dataclass(slots=True)
class _Intake:
    """One receive loop: its source and the group it is building."""

    source: MessageSource
    group: _Group | None = None


class IngestPipeline:
    """Consumes device messages, stores them, acknowledges them.

    Args:
        registry: the device registry (directory lookups, lifecycle).
        store: the time-series store.
        dead_letters: where rejected input is kept.
        metrics: the platform's metrics.
        settings: tuning.
        command_answers: takes messages from ``cmd/res`` topics (the command service).
        sparkplug: says what ``spBv1.0`` messages mean (the Sparkplug host service); without
            one they are counted as ignored.
    """

    def __init__(
        self,
        *,
        registry: DeviceRegistry,
        store: TimeSeriesStore,
        dead_letters: DeadLetterStore,
        metrics: PlatformMetrics,
        settings: IngestSettings | None = None,
        command_answers: Callable[[str, bytes], bool] | None = None,
        sparkplug: SparkplugHandler | None = None,
    ) -> None:
        self.registry = registry
        self._command_answers = command_answers
        self._sparkplug = sparkplug
        self.store = store
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.settings = settings or IngestSettings()
        self._validators: dict[tuple[str, str, int], ModelValidator] = {}
        self._series: dict[SeriesKey, int] = {}
        self._recent: OrderedDict[bytes, float] = OrderedDict()
        self._listeners: list[CommitListener] = []
        self._queue: asyncio.Queue[_Group | None] = asyncio.Queue(self.settings.max_groups)
        # Devices for which a CONNECT is already queued or applied, so that a stream of data
        # from an offline device yields one lifecycle change, not one per message.
        self._online: set[str] = set()
        # Children a gateway reported unreachable, with when (ms): data sampled before that
        # (backlog, a window aggregate closing late) is stored but does not bring them back.
        self._reported_offline: dict[str, int] = {}
        # Sparkplug repeats (see the module docstring): per series, the newest timestamp
        # stored and the timestamp of the value the last birth carried; devices whose newest
        # timestamps were loaded from the store.
        self._sparkplug_newest: dict[SeriesKey, int] = {}
        self._sparkplug_births: dict[SeriesKey, int] = {}
        self._sparkplug_loaded: set[tuple[str, str]] = set()
        self._rejection_listeners: list[RejectionListener] = []
        limits = self.settings
        self._message_rate = _device_buckets(
            limits.device_messages, limits.device_burst, limits.rate_keys
        )
        self._point_rate = _device_buckets(
            limits.device_points, limits.device_burst, limits.rate_keys
        )
        # Gateway -> number of child devices (built at the first rate check, then kept up to
        # date from device changes), and child -> the gateway it was counted under.
        self._children: dict[str, int] | None = None
        self._counted_under: dict[str, str] = {}
        registry.add_listener(self._on_device_change)
        self.messages_committed = 0
        self.points_committed = 0

    def add_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` with the accepted samples of every committed group."""
        self._listeners.append(listener)

    def add_rejection_listener(self, listener: RejectionListener) -> None:
        """Call ``listener`` with every dead letter as it is made (sync; it must not block).

        An exception in a listener is logged and ignored: it never stops ingest.
        """
        self._rejection_listeners.append(listener)

    async def warm_up(self) -> int:
        """Load recent message digests from the store (after a restart)."""
        since = int((time.time() - self.settings.dedupe_window) * 1000)
        digests = await self.store.recent_digests(since)
        now = time.monotonic()
        for digest in digests[-self.settings.dedupe_max :]:
            self._recent[digest] = now
        return len(digests)

    # -- tasks -----------------------------------------------------------------------------------

    async def run(self, source: MessageSource) -> None:
        """Receive and commit until cancelled; on cancellation, commit what was received.

        Stopping waits at most ``shutdown_grace`` seconds for the last commits (a store that
        refuses writes would otherwise hold shutdown for ever). What is not committed by then
        was not acknowledged either: the broker delivers it again on the next start, and the
        stored digests keep anything already written from being stored twice.
        """
        intake = _Intake(source)
        async with asyncio.TaskGroup() as tasks:
            committer = tasks.create_task(self._commit_loop(), name="ingest-commit")
            try:
                await self._receive_loop(intake, report_pending=True)
            finally:
                try:
                    async with asyncio.timeout(self.settings.shutdown_grace):
                        if intake.group is not None and intake.group.messages:
                            await self._queue.put(intake.group)
                        await self._queue.put(None)
                        await asyncio.shield(committer)
                except TimeoutError:
                    committer.cancel()
                    _log.warning(
                        "ingest: stopped with commits pending; the broker keeps the"
                        " unacknowledged messages for the next start"
                    )

    async def feed(self, source: MessageSource) -> None:
        """Receive from one more source (the Sparkplug host's connection) until cancelled.

        Its messages join the commits of ``run``, which must be running for them to be stored
        and acknowledged; each is acknowledged to ``source``. On cancellation the group being
        built is queued for commit (an acknowledgement for a connection that is gone is
        dropped by the client, and the broker delivers that message again).
        """
        intake = _Intake(source)
        try:
            await self._receive_loop(intake, report_pending=False)
        finally:
            group = intake.group
            if group is not None and group.messages:
                try:
                    async with asyncio.timeout(self.settings.shutdown_grace):
                        await self._queue.put(group)
                except TimeoutError:
                    _log.warning("ingest: a fed group was not queued; the broker keeps it")

    async def _receive_loop(self, intake: _Intake, *, report_pending: bool) -> None:
        loop = asyncio.get_running_loop()
        source = intake.source
        group = intake.group = _Group(opened=loop.time(), source=source)
        while True:
            if group.messages:
                remaining = group.opened + self.settings.max_delay - loop.time()
                try:
                    async with asyncio.timeout(max(remaining, 0.0)):
                        message = await source.next_message()
                except TimeoutError:
                    await self._queue.put(group)
                    group = intake.group = _Group(opened=loop.time(), source=source)
                    continue
            else:
                message = await source.next_message()
                group.opened = loop.time()
            try:
                await self._process(message, group)
            except Exception as exc:  # noqa: BLE001 - one message must never stop ingest
                _log.exception("ingest: failed to process a message on %s", message.topic)
                if not group.messages or group.messages[-1] is not message:
                    group.take(message)
                self.metrics.messages.labels("unknown", "rejected").inc()
                self._dead_letter(
                    group, message, "internal_error", f"the platform failed on it: {exc!r}"
                )
            if report_pending:
                self.metrics.pending_messages.set(source.pending_messages())
            if (
                group.points >= self.settings.max_points
                or len(group.messages) >= self.settings.max_messages
            ):
                await self._queue.put(group)
                group = intake.group = _Group(opened=loop.time(), source=source)

    async def _commit_loop(self) -> None:
        stopping = False
        while not stopping:
            group = await self._queue.get()
            if group is None:
                return
            # Group commit: whatever queued up while the last write ran goes into this one, so
            # batches grow when the store is the bottleneck and each transaction's fixed cost
            # (flush, latest-value upsert, digests) is paid once for all of them.
            while not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stopping = True
                    break
                group.absorb(more)
            await self._commit(group)

    # -- receive ---------------------------------------------------------------------------------

    def _dead_letter(
        self,
        group: _Group,
        message: InboundMessage,
        reason: str,
        detail: str,
        *,
        tenant: str | None = None,
        device: str | None = None,
        points: int = 0,
        with_payload: bool = True,
    ) -> None:
        self.metrics.dead_letters.labels(reason).inc()
        received_at = datetime.now(UTC)
        group.dead_letters.append(
            {
                "received_at": received_at,
                "tenant_id": tenant,
                "device_id": device,
                "topic": message.topic[:400],
                "reason": reason,
                "detail": detail[:1000],
                "points": points,
                "payload": message.payload[:DEAD_LETTER_PAYLOAD] if with_payload else b"",
            }
        )
        if self._rejection_listeners:
            rejection = IngestRejection(
                reason, tenant, device, message.topic[:400], detail[:1000], received_at
            )
            for listener in self._rejection_listeners:
                try:
                    listener(rejection)
                except Exception:  # noqa: BLE001 - a listener's bug must not stop ingest
                    _log.exception("ingest: a rejection listener failed")

    # -- rate limits -----------------------------------------------------------------------------

    def _scale(self, device: Device) -> float:
        """How many devices' budget ``device`` has: 1 + its children (module docstring)."""
        children = self._children
        if children is None:
            children = self._children = {}
            for other in self.registry.devices_in_memory():
                self._count_child(other)
        return 1.0 + children.get(device.id, 0)

    def _count_child(self, device: Device) -> None:
        assert self._children is not None
        before = self._counted_under.pop(device.id, None)
        if before is not None:
            left = self._children[before] - 1
            if left:
                self._children[before] = left
            else:
                del self._children[before]
        gateway = device.gateway_id
        if gateway and device.state is not DeviceState.DECOMMISSIONED:
            self._counted_under[device.id] = gateway
            self._children[gateway] = self._children.get(gateway, 0) + 1

    @staticmethod
    def _over_rate(
        buckets: TokenBuckets[str] | None, key: str, cost: float, scale: float
    ) -> float | None:
        """Seconds the sender should wait when ``cost`` is over its rate, else None."""
        if buckets is None:
            return None
        decision = buckets.check(key, cost, scale=scale)
        return None if decision.allowed else decision.retry_after

    def _rate_limited(
        self,
        message: InboundMessage,
        group: _Group,
        what: str,
        wait: float,
        *,
        tenant: str | None,
        device: str,
        points: int = 0,
    ) -> None:
        self.metrics.ingest_rate_limited.inc()
        self._dead_letter(
            group,
            message,
            "rate_limited",
            f"{device} sends more {what} than its limit; slow down (about {wait:.1f}s)",
            tenant=tenant,
            device=device,
            points=points,
        )

    async def _process(self, message: InboundMessage, group: _Group) -> None:
        group.take(message)
        if message.oversized:
            self.metrics.messages.labels("unknown", "rejected").inc()
            self._dead_letter(
                group,
                message,
                "oversized",
                f"{message.size} bytes exceed the ingest limit; split the batch",
                with_payload=False,
            )
            return
        if message.topic.startswith(SPARKPLUG_PREFIX):
            await self._sparkplug_message(message, group, time.time())
            return
        try:
            topic = parse_topic(message.topic)
        except TopicError as exc:
            self.metrics.messages.labels("unknown", "rejected").inc()
            self._dead_letter(group, message, "bad_topic", str(exc))
            return
        entry = self.registry.lookup(topic.device)
        channel = topic.channel.value
        reason = None
        if entry is None:
            reason, detail = "unknown_device", f"device {topic.device!r} is not registered"
        elif entry.device.tenant_id != topic.tenant or entry.device.site_id != topic.site:
            reason = "topic_mismatch"
            detail = (
                f"device {topic.device!r} belongs to {entry.device.tenant_id}/"
                f"{entry.device.site_id}, not {topic.tenant}/{topic.site}"
            )
        elif entry.device.state is DeviceState.DECOMMISSIONED:
            reason, detail = "decommissioned", f"device {topic.device!r} is decommissioned"
        if reason is not None or entry is None:
            self.metrics.messages.labels(channel, "rejected").inc()
            # The topic's tenant is only the sender's claim: file the dead letter under the
            # device's real tenant, or under none (platform admins) for an unknown device.
            self._dead_letter(
                group,
                message,
                reason or "unknown_device",
                detail,
                tenant=entry.device.tenant_id if entry is not None else None,
                device=topic.device,
            )
            return
        device = entry.device
        wait = self._over_rate(self._message_rate, device.id, 1.0, self._scale(device))
        if wait is not None:
            self.metrics.messages.labels(channel, "rejected").inc()
            self._rate_limited(
                message,
                group,
                "messages per second",
                wait,
                tenant=device.tenant_id,
                device=device.id,
            )
            return
        now = time.time()
        match topic.channel:
            case Channel.TELEMETRY:
                await self._telemetry(message, entry, group, now)
            case Channel.EVENTS:
                await self._events(message, entry, group, now)
            case Channel.STATUS:
                self._status(message, entry, group, now)
            case Channel.COMMAND_RESULT:
                matched = self._command_answers is not None and self._command_answers(
                    message.topic, message.payload
                )
                self.metrics.messages.labels(channel, "accepted" if matched else "ignored").inc()
            case _:
                self.metrics.messages.labels(channel, "ignored").inc()

    def _digest(self, message: InboundMessage) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        h.update(message.topic.encode())
        h.update(b"\x00")
        h.update(message.payload)
        return h.digest()

    async def _seen_before(self, message: InboundMessage, digest: bytes) -> bool:
        if digest in self._recent:
            return True
        if message.dup:
            # A redelivery from the broker: the original may be older than our memory.
            return bool(await self.store.known_digests([digest]))
        return False

    def _remember(self, digest: bytes, group: _Group) -> None:
        now = time.monotonic()
        recent = self._recent
        recent[digest] = now
        group.digests.append(digest)
        horizon = now - self.settings.dedupe_window
        while recent and (
            len(recent) > self.settings.dedupe_max or next(iter(recent.values())) < horizon
        ):
            recent.popitem(last=False)

    def _refuse(
        self,
        message: InboundMessage,
        entry: DirectoryEntry,
        group: _Group,
        channel: str,
        error: PayloadError,
    ) -> None:
        self.metrics.messages.labels(channel, "rejected").inc()
        self._dead_letter(
            group,
            message,
            error.reason,
            error.detail,
            tenant=entry.device.tenant_id,
            device=entry.device.id,
        )

    async def _redelivered(
        self, message: InboundMessage, group: _Group, channel: str, *, stamped: bool
    ) -> bool:
        """Whether the message was stored before; otherwise remember it with this group.

        A message with a sample stamped on arrival has no identity of its own (the same bytes
        may be a new reading), so it is never treated as a redelivery.
        """
        if stamped:
            return False
        digest = self._digest(message)
        if await self._seen_before(message, digest):
            self.metrics.duplicates.inc()
            self.metrics.messages.labels(channel, "duplicate").inc()
            return True
        self._remember(digest, group)
        return False

    def _resolve_child(
        self, gateway: DirectoryEntry, child: str
    ) -> tuple[DirectoryEntry | None, str | None]:
        if child == gateway.device.id:
            return gateway, None
        entry = self.registry.lookup(child)
        if entry is None or entry.device.tenant_id != gateway.device.tenant_id:
            return None, f"device {child!r} is not registered in {gateway.device.tenant_id!r}"
        if entry.device.gateway_id != gateway.device.id:
            return None, f"device {child!r} is not behind gateway {gateway.device.id!r}"
        if entry.device.state is DeviceState.DECOMMISSIONED:
            return None, f"device {child!r} is decommissioned"
        return entry, None

    def _validator(self, model: ThingModel, tenant_id: str) -> ModelValidator:
        key = (tenant_id, model.id, model.version)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = ModelValidator(model, self.settings.window)
        return validator

    def _shows_presence(self, device_id: str, sender: str | None, part: DeviceSamples) -> bool:
        """Whether samples show that the device is there now (see ``_store_samples``)."""
        if device_id == sender:
            return True
        if not any(metric not in LINK_PROPERTIES for metric in part.values):
            return False  # what a gateway measured of the link, also of a device it cannot reach
        reported = self._reported_offline.get(device_id)
        if reported is None or (len(part.ts) and int(part.ts.max()) > reported):
            self._reported_offline.pop(device_id, None)
            return True
        return False  # sampled before its gateway said it was gone: late, not a return

    def _heard_from(self, device: Device, group: _Group, when: datetime, reason: str) -> None:
        self.registry.touch(device.id, when)
        if device.state is not DeviceState.ONLINE and device.id not in self._online:
            self._online.add(device.id)
            group.lifecycle.append((device.id, LifecycleTrigger.CONNECT, reason, when))

    async def _telemetry(
        self, message: InboundMessage, entry: DirectoryEntry, group: _Group, now: float
    ) -> None:
        now_ms = int(now * 1000)
        tenant = entry.device.tenant_id
        try:
            parts = decode_telemetry(
                message.payload, device=entry.device.id, now_ms=now_ms, limits=self.settings.limits
            )
        except PayloadError as exc:
            self._refuse(message, entry, group, "telemetry", exc)
            return
        points = sum(part.point_count for part in parts)
        wait = self._over_rate(self._point_rate, entry.device.id, points, self._scale(entry.device))
        if wait is not None:
            self.metrics.messages.labels("telemetry", "rejected").inc()
            self.metrics.points.labels("rejected").inc(points)
            self._rate_limited(
                message,
                group,
                "data points per second",
                wait,
                tenant=tenant,
                device=entry.device.id,
                points=points,
            )
            return
        stamped = any(part.stamped_on_arrival for part in parts)
        if await self._redelivered(message, group, "telemetry", stamped=stamped):
            return
        resolved = [(*self._resolve_child(entry, part.device), part) for part in parts]
        accepted, rejected = await self._store_samples(
            message, group, tenant, resolved, now, heard="data received", sender=entry.device.id
        )
        outcome = "accepted" if not rejected else ("partial" if accepted else "rejected")
        self.metrics.messages.labels("telemetry", outcome).inc()

    async def _store_samples(
        self,
        message: InboundMessage,
        group: _Group,
        tenant: str,
        parts: Sequence[tuple[DirectoryEntry | None, str | None, DeviceSamples]],
        now: float,
        *,
        heard: str,
        sender: str | None = None,
        with_payload: bool = True,
    ) -> tuple[int, int]:
        """Validate samples, add the good ones to the group, dead-letter the rest.

        ``parts`` are (device, problem, samples): a part without a device is refused whole as
        ``not_your_device`` with the problem as its detail. Returns (accepted, rejected) values.
        """
        now_ms = int(now * 1000)
        when = datetime.fromtimestamp(now, UTC)
        validated: list[tuple[DirectoryEntry, ValidatedSamples]] = []
        tally: TallyCounter[tuple[str, str | None, str]] = TallyCounter()
        examples: dict[tuple[str, str | None, str], str] = {}
        key: tuple[str, str | None, str]
        for child, problem, part in parts:
            if child is None:
                key = (part.device, None, "not_your_device")
                tally[key] += part.point_count
                examples.setdefault(key, problem or "")
                continue
            result = self._validator(child.model, tenant).validate(part, now_ms)
            for rejection in result.rejections:
                key = (rejection.device, rejection.metric, rejection.reason)
                tally[key] += rejection.count
                examples.setdefault(key, rejection.detail)
                self.metrics.rejections.labels(rejection.reason).inc(rejection.count)
            validated.append((child, result))
            if self._shows_presence(child.device.id, sender, part):
                self._heard_from(child.device, group, when, heard)
        accepted = await self._add_points(validated, group)
        rejected = sum(tally.values())
        self.metrics.points.labels("accepted").inc(accepted)
        if rejected:
            self.metrics.points.labels("rejected").inc(rejected)
        first = with_payload
        for (device, metric, reason), count in tally.items():
            where = f"{device}.{metric}" if metric else device
            self._dead_letter(
                group,
                message,
                reason,
                f"{where}: {examples[(device, metric, reason)]}",
                tenant=tenant,
                device=device,
                points=count,
                with_payload=first,
            )
            first = False
        return accepted, rejected

    async def _sparkplug_message(self, message: InboundMessage, group: _Group, now: float) -> None:
        """A Sparkplug B message: the host service says what it means, ingest stores it."""
        if self._sparkplug is None:
            self.metrics.messages.labels("sparkplug", "ignored").inc()
            return
        levels = message.topic.split("/", 4)
        if len(levels) >= 4:
            node = f"{levels[1]}/{levels[3]}"  # group/edge node: whoever sent it
            wait = self._over_rate(self._message_rate, SPARKPLUG_PREFIX + node, 1.0, 1.0)
            if wait is not None:
                self.metrics.messages.labels("sparkplug", "rejected").inc()
                self._rate_limited(
                    message, group, "messages per second", wait, tenant=None, device=node
                )
                return
        result = await self._sparkplug.ingest(message.topic, message.payload, int(now * 1000))
        first = True
        for refusal in result.refusals:
            self._dead_letter(
                group,
                message,
                refusal.reason,
                refusal.detail,
                tenant=refusal.tenant_id,
                device=refusal.device_id,
                points=refusal.points,
                with_payload=first,
            )
            first = False
        when = datetime.fromtimestamp(now, UTC)
        for change in result.presence:
            self._presence(
                change.device_id, group, when, online=change.online, reason=change.reason
            )
        outcome = result.outcome
        if (result.samples or result.events) and await self._redelivered(
            message, group, "sparkplug", stamped=result.stamped_on_arrival
        ):
            return
        for event in result.events:
            self._sparkplug_event(message, event, group, now)
        if result.samples:
            tenant = result.samples[0].entry.device.tenant_id
            parts: list[tuple[DirectoryEntry | None, str | None, DeviceSamples]] = []
            for samples in result.samples:
                fresh = await self._sparkplug_fresh(samples)
                parts += [(samples.entry, None, part) for part in fresh]
            accepted, rejected = await self._store_samples(
                message, group, tenant, parts, now, heard="Sparkplug data", with_payload=first
            )
            if rejected:
                used = accepted or result.presence or result.events
                outcome = "partial" if used else "rejected"
        self.metrics.messages.labels("sparkplug", outcome).inc()

    def _sparkplug_event(
        self, message: InboundMessage, event: SparkplugEvent, group: _Group, now: float
    ) -> None:
        """Record an event from a Sparkplug ``event/<id>`` metric, as a JSON event is."""
        device, model = event.entry.device, event.entry.model
        now_ms, window = int(now * 1000), self.settings.window
        if not now_ms - window.max_age_ms <= event.ts <= now_ms + window.max_future_ms:
            self._dead_letter(
                group,
                message,
                "timestamp_out_of_range",
                f"{device.id}: event {event.event!r} at {event.ts} ms is outside the accepted"
                " time window",
                tenant=device.tenant_id,
                device=device.id,
                points=1,
                with_payload=False,
            )
            return
        spec = next(e for e in model.events if e.id == event.event)  # the host checked it
        group.events.append(
            {
                "tenant_id": device.tenant_id,
                "site_id": device.site_id,
                "device_id": device.id,
                "ts": datetime.fromtimestamp(event.ts / 1000, UTC),
                "event": event.event,
                "severity": spec.severity.value,
                "data": event.data,
            }
        )
        self._heard_from(device, group, datetime.fromtimestamp(now, UTC), "Sparkplug event")

    async def _sparkplug_fresh(self, samples: SparkplugSamples) -> list[DeviceSamples]:
        """The samples of one device that are not repeats of stored ones (module docstring)."""
        device = samples.entry.device
        tenant = device.tenant_id
        if samples.birth and (tenant, device.id) not in self._sparkplug_loaded:
            await self._load_newest(tenant, device.id)
        newest, births = self._sparkplug_newest, self._sparkplug_births
        fresh: list[DeviceSamples] = []
        for part in samples.parts:
            stamps = [int(ts) for ts in part.ts.tolist()]
            kept: dict[str, list[int]] = {}
            for prop in part.values:
                key = SeriesKey(tenant, device.id, prop)
                rows = kept[prop] = []
                for row, ts in enumerate(stamps):
                    if samples.birth:
                        births[key] = ts
                        if ts <= newest.get(key, ts - 1):
                            continue
                    elif births.get(key) == ts:
                        continue
                    rows.append(row)
                    newest[key] = max(ts, newest.get(key, ts))
            if all(len(rows) == len(stamps) for rows in kept.values()):
                fresh.append(part)  # the usual case: nothing repeated
                continue
            fresh += [
                DeviceSamples(
                    part.device,
                    part.ts[rows],
                    {prop: [part.values[prop][row] for row in rows]},
                    part.units,
                    part.stamped_on_arrival,
                )
                for prop, rows in kept.items()
                if rows
            ]
        return fresh

    async def _load_newest(self, tenant: str, device: str) -> None:
        """Learn the newest stored timestamp of a device's series (once per start)."""
        try:
            series = await self.store.device_series(tenant, device)
            latest = await self.store.latest(list(series.values()))
        except (PlatformError, OSError) as exc:
            # Without them a birth's values may be stored a second time; nothing is lost.
            _log.warning("ingest: newest values of %s unknown (%s); will retry", device, exc)
            return
        for metric, sid in series.items():
            value = latest.get(sid)
            if value is not None:
                key = SeriesKey(tenant, device, metric)
                self._sparkplug_newest[key] = max(
                    value.ts_ms, self._sparkplug_newest.get(key, value.ts_ms)
                )
        self._sparkplug_loaded.add((tenant, device))

    async def _add_points(
        self, validated: list[tuple[DirectoryEntry, ValidatedSamples]], group: _Group
    ) -> int:
        keys: list[SeriesKey] = []
        for child, result in validated:
            for metric in (*result.numeric, *result.text):
                key = SeriesKey(child.device.tenant_id, child.device.id, metric)
                if key not in self._series:
                    keys.append(key)
        if keys:
            ids = await self.store.series_ids(keys)
            self._series.update(zip(keys, ids, strict=True))
        series, stamps, values = [], [], []
        text_series, text_stamps, text_values = [], [], []
        for child, result in validated:
            tenant, device = child.device.tenant_id, child.device.id
            for metric, (ts, vals) in result.numeric.items():
                sid = self._series[SeriesKey(tenant, device, metric)]
                series.append(np.full(len(ts), sid, dtype=np.int32))
                stamps.append(ts)
                values.append(vals)
            for metric, (ts, texts) in result.text.items():
                sid = self._series[SeriesKey(tenant, device, metric)]
                text_series.append(np.full(len(ts), sid, dtype=np.int32))
                text_stamps.append(ts)
                text_values.extend(texts)
            if result.numeric or result.text:
                group.accepted.append(AcceptedSamples(child.device, child.model, result))
        batch = PointBatch()
        if series:
            batch.series_id = np.concatenate(series)
            batch.ts = np.concatenate(stamps)
            batch.value = np.concatenate(values)
        if text_series:
            batch.text_series_id = np.concatenate(text_series)
            batch.text_ts = np.concatenate(text_stamps)
            batch.text_value = text_values
        if len(batch):
            group.batches.append(batch)
            group.points += len(batch)
        return len(batch)

    async def _events(
        self, message: InboundMessage, entry: DirectoryEntry, group: _Group, now: float
    ) -> None:
        now_ms = int(now * 1000)
        tenant = entry.device.tenant_id
        try:
            events = decode_events(
                message.payload, device=entry.device.id, now_ms=now_ms, limits=self.settings.limits
            )
        except PayloadError as exc:
            self._refuse(message, entry, group, "events", exc)
            return
        stamped = any(event.stamped_on_arrival for event in events)
        if await self._redelivered(message, group, "events", stamped=stamped):
            return
        when = datetime.fromtimestamp(now, UTC)
        rejected = 0
        for event in events:
            child, problem = self._resolve_child(entry, event.device)
            spec = None
            if child is not None:
                spec = next((e for e in child.model.events if e.id == event.event), None)
                if spec is None:
                    problem = f"event {event.event!r} is not in thing model {child.model.id!r}"
            if child is None or spec is None:
                rejected += 1
                self._dead_letter(
                    group,
                    message,
                    "unknown_event",
                    problem or "",
                    tenant=tenant,
                    device=event.device,
                    points=1,
                )
                continue
            group.events.append(
                {
                    "tenant_id": tenant,
                    "site_id": child.device.site_id,
                    "device_id": child.device.id,
                    "ts": datetime.fromtimestamp(event.ts / 1000, UTC),
                    "event": event.event,
                    "severity": spec.severity.value,
                    "data": event.data,
                }
            )
            self._heard_from(child.device, group, when, "event received")
        outcome = (
            "accepted" if not rejected else ("partial" if rejected < len(events) else "rejected")
        )
        self.metrics.messages.labels("events", outcome).inc()

    def _status(
        self, message: InboundMessage, entry: DirectoryEntry, group: _Group, now: float
    ) -> None:
        try:
            status = decode_status(message.payload)
        except PayloadError as exc:
            self._refuse(message, entry, group, "status", exc)
            return
        when = datetime.fromtimestamp(now, UTC)
        retained = " (retained)" if message.retain else ""
        sender = entry.device.id
        if status.online:
            self._presence(sender, group, when, online=True, reason=f"status{retained}")
            for child_id, child_online in status.devices.items():
                child, _problem = self._resolve_child(entry, child_id)
                if child is not None and child.device.id != sender:
                    if child_online:
                        self._reported_offline.pop(child.device.id, None)
                    else:
                        self._reported_offline[child.device.id] = int(now * 1000)
                    self._presence(
                        child.device.id,
                        group,
                        when,
                        online=child_online,
                        reason=f"gateway {sender} reports it{retained}",
                    )
        else:
            # A gateway that is gone can no longer reach its devices either. They go first:
            # changes are applied in order, so whoever sees the gateway offline sees them so.
            for device in self.registry.devices_in_memory():
                if device.gateway_id == sender and device.state is DeviceState.ONLINE:
                    self._presence(
                        device.id, group, when, online=False, reason=f"gateway {sender} offline"
                    )
            self._presence(sender, group, when, online=False, reason=f"status{retained}")
        self.metrics.messages.labels("status", "accepted").inc()

    def _presence(
        self, device_id: str, group: _Group, when: datetime, *, online: bool, reason: str
    ) -> None:
        if online:
            self.registry.touch(device_id, when)
            self._online.add(device_id)
            group.lifecycle.append((device_id, LifecycleTrigger.CONNECT, f"{reason}: online", when))
        else:
            self._online.discard(device_id)
            group.lifecycle.append(
                (device_id, LifecycleTrigger.DISCONNECT, f"{reason}: offline", when)
            )

    # -- commit ----------------------------------------------------------------------------------

    async def _retry(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        delay = self.settings.retry_initial
        while True:
            try:
                await action()
            except (PlatformError, SQLAlchemyError, OSError) as exc:
                self.metrics.store_failures.inc()
                _log.warning(
                    "ingest: %s failed (%s); retrying in %.1fs, nothing is acknowledged",
                    what,
                    exc,
                    delay,
                )
            else:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311
            delay = min(delay * 2, self.settings.retry_max)

    async def _commit(self, group: _Group) -> None:
        batch = PointBatch.concat(group.batches) if group.batches else PointBatch()
        batch.digests = group.digests
        if len(batch) or batch.digests:
            started = time.perf_counter()
            await self._retry("store write", lambda: self.store.write(batch))
            self.metrics.store_write_seconds.observe(time.perf_counter() - started)
            self.metrics.group_points.observe(len(batch))
        if group.dead_letters:
            rows = group.dead_letters
            await self._retry("dead-letter write", lambda: self.dead_letters.record(rows))
        if group.events:
            events = group.events
            await self._retry("event write", lambda: self.registry.record_events(events))
        for device_id, trigger, reason, when in group.lifecycle:
            try:
                await self.registry.apply_lifecycle(device_id, trigger, reason=reason, at=when)
            except (LifecycleError, NotFoundError) as exc:
                _log.info("ingest: lifecycle of %s unchanged: %s", device_id, exc)
            except SQLAlchemyError:
                # The data is stored; a missed online/offline change is corrected by the next
                # message or the offline detector, so it must not hold up acknowledgements.
                _log.exception("ingest: could not record the lifecycle change of %s", device_id)
        for message, sender in zip(group.messages, group.senders, strict=True):
            sender.ack(message)
        self.messages_committed += len(group.messages)
        self.points_committed += group.points
        for listener in self._listeners:
            try:
                await listener(group.accepted)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop ingest
                _log.exception("ingest: a commit listener failed (data is stored)")

    def _on_device_change(self, device: Device) -> None:
        if device.state is not DeviceState.ONLINE:
            self._online.discard(device.id)
        if self._children is not None:
            self._count_child(device)


def _device_buckets(rate: float, burst_seconds: float, keys: int) -> TokenBuckets[str] | None:
    if rate <= 0:
        return None
    return TokenBuckets(rate=rate, burst=max(rate * burst_seconds, 1.0), max_keys=keys)

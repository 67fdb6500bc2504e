"""Security monitoring: detections with severity and evidence, kept as security events.

Theory of operation
-------------------
Detectors are fed synchronously by the parts of the platform that see what happens::

    UserService login listener      on_login(attempt)            login brute force
    broker authority refusals       on_broker_refusal(refusal)   topic violation, certificates,
                                                                 decommissioned devices, device
                                                                 credential guessing
    ingest pipeline dead letters    on_ingest_rejection(...)     decommissioned devices
    ingest pipeline commits         on_commit(accepted)          rate anomaly, firmware and
                                                                 configuration changes

A callback never blocks and never raises: it updates bounded in-memory state (failure windows,
per-device rate baselines, last reported versions) and, when something is worth a look, opens
or updates a **security event**. Events are coalesced: the same kind and subject (a user, a
source address, a device) within ``coalesce_window`` of the last occurrence update one event's
count, last time, evidence and (escalating only) severity, instead of opening another. An
acknowledged event is closed for coalescing: new activity after an acknowledgement is a new
event.

Each new or updated event is put, as a full snapshot, on a bounded queue; one writer task
upserts it in the ``security_events`` table of the platform's metadata database. When the queue
is full the write is dropped and counted; nothing is lost for good, because the next update of
the same event carries its whole state again.

Detections (defaults; every threshold is a ``MonitorSettings`` field):

- ``login_brute_force``: ``login_failures`` failed logins for one user within
  ``login_window`` (medium), four times as many (high), twenty times (critical); a success
  for that user while the count is reached makes it critical (a guessed password). The same
  count from one source address over two or more users is password spraying, keyed by source.
- ``device_credential_failures``: the same, for MQTT connections refused for bad credentials.
- ``topic_violation``: a device publishing or subscribing outside its topics (medium; high
  from ``repeat_escalation`` occurrences).
- ``certificate_revoked`` (high), ``certificate_unknown`` (high: issued by a CA we trust but
  not in its register), ``certificate_foreign`` (medium: another CA), ``certificate_expired``
  (low).
- ``decommissioned_traffic``: a decommissioned device connecting or publishing (high).
- ``rate_anomaly``: a device's points per second in a ``rate_bucket`` above
  ``rate_factor`` times its own baseline (an EWMA of its earlier buckets, learnt over
  ``rate_warmup`` buckets) and above ``rate_floor`` (medium; high above ten times that).
- ``firmware_change`` / ``config_change``: a device reports another value of a metric named
  ``firmware*``/``fw_*`` (or ``config*``) than it reported before, outside a maintenance
  window opened for it (firmware: high, a downgrade critical; configuration: medium). The
  first value a device reports is its baseline; last values survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge

from tiangong.resource import AsyncResource

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tiangong.platform.ingest.pipeline import AcceptedSamples
    from tiangong.platform.registry import DirectoryEntry

__all__ = [
    "BrokerRefusalLike",
    "EventKind",
    "EventSeverity",
    "IngestRejectionLike",
    "LoginAttemptLike",
    "MaintenanceWindow",
    "MonitorSettings",
    "PeriodFigures",
    "SecurityEvent",
    "SecurityMonitor",
    "SecurityPosture",
    "security_tables",
]

_log = logging.getLogger(__name__)


class EventSeverity(StrEnum):
    """How urgent a security event is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for low up to 3 for critical."""
        return _RANK[self]


_RANK: Final = {
    EventSeverity.LOW: 0,
    EventSeverity.MEDIUM: 1,
    EventSeverity.HIGH: 2,
    EventSeverity.CRITICAL: 3,
}
#: Severities that make a device "at risk" while an event of theirs is open.
SERIOUS: Final = (EventSeverity.HIGH, EventSeverity.CRITICAL)


class EventKind(StrEnum):
    """What was detected."""

    LOGIN_BRUTE_FORCE = "login_brute_force"
    DEVICE_CREDENTIAL_FAILURES = "device_credential_failures"
    TOPIC_VIOLATION = "topic_violation"
    CERTIFICATE_REVOKED = "certificate_revoked"
    CERTIFICATE_UNKNOWN = "certificate_unknown"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_FOREIGN = "certificate_foreign"
    DECOMMISSIONED_TRAFFIC = "decommissioned_traffic"
    RATE_ANOMALY = "rate_anomaly"
    FIRMWARE_CHANGE = "firmware_change"
    CONFIG_CHANGE = "config_change"


_CERTIFICATE_KINDS: Final = {
    "certificate_revoked": (EventKind.CERTIFICATE_REVOKED, EventSeverity.HIGH),
    "certificate_unknown": (EventKind.CERTIFICATE_UNKNOWN, EventSeverity.HIGH),
    "certificate_expired": (EventKind.CERTIFICATE_EXPIRED, EventSeverity.LOW),
    "certificate_foreign": (EventKind.CERTIFICATE_FOREIGN, EventSeverity.MEDIUM),
}
_ARTICLED: Final = {
    EventKind.CERTIFICATE_REVOKED: "a revoked",
    EventKind.CERTIFICATE_UNKNOWN: "an unknown",
    EventKind.CERTIFICATE_EXPIRED: "an expired",
    EventKind.CERTIFICATE_FOREIGN: "another CA's",
}
_FIRMWARE_METRIC: Final = re.compile(r"^(firmware|fw)([_.].*)?$")
_CONFIG_METRIC: Final = re.compile(r"^(config|configuration)([_.].*)?$")


# -- what the callbacks receive (H1's, H3's and H5's types satisfy these) ------------------------


class LoginAttemptLike(Protocol):
    """A login attempt (``tiangong.security.users.LoginAttempt``)."""

    @property
    def username(self) -> str: ...  # noqa: D102
    @property
    def source(self) -> str: ...  # noqa: D102
    @property
    def tenant_id(self) -> str | None: ...  # noqa: D102
    @property
    def ok(self) -> bool: ...  # noqa: D102
    @property
    def throttled(self) -> bool: ...  # noqa: D102
    @property
    def at(self) -> datetime: ...  # noqa: D102


class BrokerRefusalLike(Protocol):
    """A connection or packet the broker refused (``tiangong.network.broker.BrokerRefusal``)."""

    @property
    def kind(self) -> str: ...  # noqa: D102
    @property
    def username(self) -> str | None: ...  # noqa: D102
    @property
    def tenant_id(self) -> str | None: ...  # noqa: D102
    @property
    def device_id(self) -> str | None: ...  # noqa: D102
    @property
    def topic(self) -> str | None: ...  # noqa: D102
    @property
    def source(self) -> str: ...  # noqa: D102
    @property
    def detail(self) -> str: ...  # noqa: D102
    @property
    def at(self) -> datetime: ...  # noqa: D102


class IngestRejectionLike(Protocol):
    """A dead-lettered message (``tiangong.platform.ingest.pipeline.IngestRejection``)."""

    @property
    def reason(self) -> str: ...  # noqa: D102
    @property
    def tenant_id(self) -> str | None: ...  # noqa: D102
    @property
    def device_id(self) -> str | None: ...  # noqa: D102
    @property
    def topic(self) -> str: ...  # noqa: D102
    @property
    def detail(self) -> str: ...  # noqa: D102
    @property
    def at(self) -> datetime: ...  # noqa: D102


class DeviceDirectory(Protocol):
    """Where a device's tenant and site are looked up (``DeviceRegistry``)."""

    def lookup(self, device_id: str) -> DirectoryEntry | None:
        """The device's directory entry, if registered."""


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One detection, possibly coalescing many occurrences.

    Attributes:
        id: stable id (32 hex digits).
        at: first occurrence.
        last_at: latest occurrence.
        kind: what was detected.
        severity: how urgent (only ever raised while the event is open).
        tenant_id: the tenant concerned (``None``: not attributable, platform administrators).
        subject: what the event is about, e.g. ``user:alice``, ``source:10.0.0.7``,
            ``device:pump-1``; occurrences of one kind and subject coalesce.
        site_id: the device's site, where known.
        device_id: the device, where known.
        username: the user (or MQTT user name), where known.
        source: the peer address, where known.
        summary: one line for a person.
        evidence: what was seen (counts, topics, versions, rates...).
        count: occurrences.
        acknowledged_at: when someone acknowledged it.
        acknowledged_by: who.
    """

    id: str
    at: datetime
    last_at: datetime
    kind: EventKind
    severity: EventSeverity
    tenant_id: str | None
    subject: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    count: int = 1
    site_id: str | None = None
    device_id: str | None = None
    username: str | None = None
    source: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None

    @property
    def open(self) -> bool:
        """Not acknowledged yet."""
        return self.acknowledged_at is None


@dataclass(frozen=True, slots=True)
class SecurityPosture:
    """Security events of a scope over a window, counted.

    Attributes:
        since: start of the window (events whose last occurrence is in it).
        by_severity: events per severity.
        by_kind: events per kind.
        open: events not acknowledged.
        acknowledged: events acknowledged.
        open_by_severity: open events per severity.
        devices_at_risk: devices with an open high or critical event.
        occurrences: occurrences coalesced into those events.
    """

    since: datetime
    by_severity: dict[str, int]
    by_kind: dict[str, int]
    open: int
    acknowledged: int
    open_by_severity: dict[str, int]
    devices_at_risk: int
    occurrences: int


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    """A tenant's security events in one reporting period.

    Attributes:
        detected: events first seen in the period.
        serious: of them, high or critical.
        open_at_end: events seen before the period's end and not acknowledged by then.
        devices_at_risk: devices with such an open high or critical event.
    """

    detected: int
    serious: int
    open_at_end: int
    devices_at_risk: frozenset[str]


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A time in which firmware and configuration changes are expected.

    Attributes:
        id: database id.
        tenant_id: the tenant.
        device_id: one device, or ``None`` for every device of the tenant.
        starts_at: start.
        ends_at: end.
        reason: why (a change ticket).
        created_by: who opened it.
    """

    id: int
    tenant_id: str
    device_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str

    def covers(self, tenant_id: str, device_id: str, when: datetime) -> bool:
        """Whether a change of ``device_id`` at ``when`` falls in this window."""
        return (
            self.tenant_id == tenant_id
            and self.device_id in (None, device_id)
            and self.starts_at <= when <= self.ends_at
        )


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Thresholds of the detectors (see the module docstring).

    Attributes:
        coalesce_window: seconds after an event's last occurrence in which another occurrence
            of the same kind and subject updates it.
        login_failures: failed logins that make a brute-force event.
        login_window: seconds over which failures are counted.
        repeat_escalation: occurrences after which a topic violation becomes high.
        rate_bucket: seconds per rate measurement.
        rate_warmup: measurements before a device's baseline is trusted.
        rate_alpha: weight of a new measurement in the baseline (EWMA).
        rate_factor: how many times its baseline a device must publish to be anomalous.
        rate_floor: points per second below which no rate is anomalous.
        queue_size: writes waiting for the database before new ones are dropped.
        max_tracked: users, sources, devices and events kept in memory per detector.
    """

    coalesce_window: float = 600.0
    login_failures: int = 5
    login_window: float = 300.0
    repeat_escalation: int = 10
    rate_bucket: float = 10.0
    rate_warmup: int = 6
    rate_alpha: float = 0.2
    rate_factor: float = 10.0
    rate_floor: float = 100.0
    queue_size: int = 4096
    max_tracked: int = 100_000

    def __post_init__(self) -> None:
        for name in ("coalesce_window", "login_window", "rate_bucket", "rate_factor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.login_failures < 1 or self.rate_warmup < 1 or self.repeat_escalation < 1:
            raise ValueError("counts must be at least 1")
        if not 0 < self.rate_alpha <= 1:
            raise ValueError("rate_alpha must be in (0, 1]")
        if self.rate_floor < 0 or self.queue_size < 1 or self.max_tracked < 1:
            raise ValueError("rate_floor, queue_size and max_tracked must be positive")


# -- storage ----------------------------------------------------------------------------------

_TS = sa.DateTime(timezone=True)


def security_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    """Define the monitor's tables on ``metadata``: events, reported versions, maintenance."""
    events = sa.Table(
        "security_events",
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=True),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("username", sa.String(200), nullable=True),
        sa.Column("source", sa.String(200), nullable=True),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_at", _TS, nullable=False),
        sa.Column("last_at", _TS, nullable=False),
        sa.Column("acknowledged_at", _TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.Index("ix_security_events_tenant_last", "tenant_id", "last_at"),
        sa.Index("ix_security_events_tenant_first", "tenant_id", "first_at"),
    )
    versions = sa.Table(
        "security_reported_versions",
        metadata,
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("metric", sa.String(128), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("reported_at", _TS, nullable=False),
    )
    maintenance = sa.Table(
        "security_maintenance_windows",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("starts_at", _TS, nullable=False),
        sa.Column("ends_at", _TS, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    return events, versions, maintenance


_metadata = sa.MetaData()
_events, _versions, _maintenance = security_tables(_metadata)


def _utc(value: datetime) -> datetime:
    # SQLite gives back naive datetimes; every time we store is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _event_from(row: sa.Row[Any]) -> SecurityEvent:
    m = row._mapping
    acknowledged = m["acknowledged_at"]
    return SecurityEvent(
        id=m["id"],
        at=_utc(m["first_at"]),
        last_at=_utc(m["last_at"]),
        kind=EventKind(m["kind"]),
        severity=EventSeverity(m["severity"]),
        tenant_id=m["tenant_id"],
        subject=m["subject"],
        summary=m["summary"],
        evidence=dict(m["evidence"] or {}),
        count=int(m["count"]),
        site_id=m["site_id"],
        device_id=m["device_id"],
        username=m["username"],
        source=m["source"],
        acknowledged_at=None if acknowledged is None else _utc(acknowledged),
        acknowledged_by=m["acknowledged_by"],
    )


@dataclass(frozen=True, slots=True)
class _VersionWrite:
    tenant_id: str
    device_id: str
    metric: str
    value: str
    at: datetime


# -- detector state ---------------------------------------------------------------------------

_K = TypeVar("_K")
_V = TypeVar("_V")


class _Bounded(OrderedDict[_K, _V]):
    """A dict that forgets its least recently touched keys beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: _K, default: Callable[[], _V]) -> _V:
        value = self.get(key)
        if value is None:
            value = self[key] = default()
            while len(self) > self.limit:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


@dataclass(slots=True)
class _Failures:
    """Failures of one user (or from one source) within the window."""

    times: deque[datetime] = field(default_factory=deque)
    others: set[str] = field(default_factory=set)  # sources of a user, users of a source
    throttled: int = 0

    def add(self, at: datetime, other: str, window: timedelta, limit: int) -> int:
        self.times.append(at)
        while self.times and self.times[0] < at - window:
            self.times.popleft()
        if len(self.others) < 32:
            self.others.add(other)
        # Only the count matters beyond the threshold; keep memory bounded under a flood.
        while len(self.times) > limit * 40:
            self.times.popleft()
        return len(self.times)


@dataclass(slots=True)
class _Rate:
    """One device's rate measurement and baseline."""

    bucket_start: float
    points: int = 0
    baseline: float = 0.0
    buckets: int = 0
    flagged: float | None = None  # the bucket already counted as an occurrence


def _version_key(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", value))


def _severity_for_count(count: int, threshold: int) -> EventSeverity:
    if count >= threshold * 20:
        return EventSeverity.CRITICAL
    if count >= threshold * 4:
        return EventSeverity.HIGH
    return EventSeverity.MEDIUM


def _max(a: EventSeverity, b: EventSeverity) -> EventSeverity:
    return a if a.rank >= b.rank else b


class SecurityMonitor(AsyncResource):
    """Detects security events and keeps them in the metadata database.

    Use it as an async context manager: entering creates its tables, loads the reported
    versions and maintenance windows, and starts the writer; leaving writes what is queued
    (for up to ``shutdown_grace`` seconds) and stops it. The ``on_*`` callbacks may be called
    before, during and after; they must be called from the event loop's thread or, from
    another thread, are handed to it.

    Args:
        engine: the platform's metadata database engine, or a callable giving it (the
            platform's ``Database`` opens its engine after the monitor is made).
        registry: the Prometheus registry for the monitor's counters.
        directory: looks up a device's tenant and site (the device registry).
        settings: detector thresholds.
        clock: monotonic seconds, for rate measurements (tests pass their own).
        shutdown_grace: seconds the writer gets to finish when the monitor closes.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine | Callable[[], AsyncEngine],
        registry: CollectorRegistry | None = None,
        directory: DeviceDirectory | None = None,
        settings: MonitorSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        shutdown_grace: float = 10.0,
    ) -> None:
        self._engine_source = engine
        self.settings = s = settings or MonitorSettings()
        self.directory = directory
        self._clock = clock
        self._shutdown_grace = shutdown_grace
        # Event ids (their latest state waits in ``_pending``) and version writes.
        self._queue: asyncio.Queue[str | _VersionWrite] = asyncio.Queue(s.queue_size)
        self._pending: dict[str, SecurityEvent] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._writer: asyncio.Task[None] | None = None
        self._open: _Bounded[tuple[str | None, EventKind, str], SecurityEvent] = _Bounded(
            s.max_tracked
        )
        self._user_failures: _Bounded[tuple[str, str | None, str], _Failures] = _Bounded(
            s.max_tracked
        )
        self._source_failures: _Bounded[tuple[str, str], _Failures] = _Bounded(s.max_tracked)
        self._rates: _Bounded[tuple[str, str], _Rate] = _Bounded(s.max_tracked)
        self._versions: _Bounded[tuple[str, str, str], str] = _Bounded(s.max_tracked)
        self._windows: list[MaintenanceWindow] = []
        self.dropped = 0
        self.detected = 0
        r = registry or CollectorRegistry(auto_describe=True)
        self._m_events = Counter(
            "tiangong_security_events",
            "Security events opened, by kind and severity",
            ["kind", "severity"],
            registry=r,
        )
        self._m_occurrences = Counter(
            "tiangong_security_occurrences",
            "Occurrences seen by the security detectors (coalesced into events), by kind",
            ["kind"],
            registry=r,
        )
        self._m_expected = Counter(
            "tiangong_security_expected_changes",
            "Firmware or configuration changes inside a maintenance window (no event)",
            registry=r,
        )
        self._m_dropped = Counter(
            "tiangong_security_writes_dropped",
            "Event writes dropped because the writer's queue was full",
            registry=r,
        )
        self._m_queue = Gauge(
            "tiangong_security_write_queue", "Event writes waiting for the database", registry=r
        )

    @property
    def engine(self) -> AsyncEngine:
        """The metadata database engine."""
        source = self._engine_source
        return source() if callable(source) else source

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the tables, load versions and maintenance windows, start the writer."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_metadata.create_all)
            versions = (await conn.execute(sa.select(_versions))).all()
            windows = (
                await conn.execute(
                    sa.select(_maintenance).where(_maintenance.c.ends_at >= datetime.now(UTC))
                )
            ).all()
        for row in versions:
            self._versions[(row.tenant_id, row.device_id, row.metric)] = row.value
        self._windows = [self._window_from(row) for row in windows]
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._writer = asyncio.create_task(self._write_loop(), name="security-monitor-writer")

    async def close(self) -> None:
        """Write what is queued (bounded by ``shutdown_grace``), then stop the writer."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._shutdown_grace):
                await self._queue.join()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    async def drain(self) -> None:
        """Wait until every queued write is in the database."""
        await self._queue.join()

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, str):
                    # The event's latest state, however many updates came since it was queued.
                    event = self._pending.pop(item, None)
                    if event is not None:
                        await self._write_event(event)
                else:
                    await self._write_version(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed write must not stop monitoring
                _log.exception("security monitor: a write failed; the next update retries it")
            finally:
                self._queue.task_done()
                self._m_queue.set(self._queue.qsize())

    async def _write_version(self, item: _VersionWrite) -> None:
        where = sa.and_(
            _versions.c.tenant_id == item.tenant_id,
            _versions.c.device_id == item.device_id,
            _versions.c.metric == item.metric,
        )
        async with self.engine.begin() as conn:
            done = await conn.execute(
                sa.update(_versions).where(where).values(value=item.value, reported_at=item.at)
            )
            if not done.rowcount:
                await conn.execute(
                    sa.insert(_versions).values(
                        tenant_id=item.tenant_id,
                        device_id=item.device_id,
                        metric=item.metric,
                        value=item.value,
                        reported_at=item.at,
                    )
                )

    async def _write_event(self, item: SecurityEvent) -> None:
        changes = {
            "severity": item.severity.value,
            "summary": item.summary[:500],
            "evidence": item.evidence,
            "count": item.count,
            "last_at": item.last_at,
        }
        async with self.engine.begin() as conn:
            done = await conn.execute(
                sa.update(_events).where(_events.c.id == item.id).values(**changes)
            )
            if not done.rowcount:
                await conn.execute(
                    sa.insert(_events).values(
                        **changes,
                        id=item.id,
                        tenant_id=item.tenant_id,
                        kind=item.kind.value,
                        subject=item.subject[:300],
                        site_id=item.site_id,
                        device_id=item.device_id,
                        username=item.username,
                        source=item.source,
                        first_at=item.at,
                    )
                )

    def _submit(self, item: SecurityEvent | _VersionWrite) -> None:
        """Queue a write without waiting; an event already queued is only updated in place."""
        if isinstance(item, SecurityEvent):
            queued = item.id in self._pending
            self._pending[item.id] = item
            if queued:
                return
            entry: str | _VersionWrite = item.id
        else:
            entry = item
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            if isinstance(item, SecurityEvent):
                del self._pending[item.id]  # the next update of the event queues it again
            self.dropped += 1
            self._m_dropped.inc()
        self._m_queue.set(self._queue.qsize())

    def _elsewhere(self, callback: Callable[[Any], None], argument: object) -> bool:
        """Hand a callback from another thread to the event loop's; whether it was."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return False
        loop.call_soon_threadsafe(callback, argument)
        return True

    # -- events ----------------------------------------------------------------------------------

    def _raise(
        self,
        kind: EventKind,
        *,
        tenant_id: str | None,
        subject: str,
        severity: EventSeverity,
        summary: str,
        at: datetime,
        evidence: Mapping[str, Any] | None = None,
        count: int = 1,
        device_id: str | None = None,
        username: str | None = None,
        source: str | None = None,
        replace_count: bool = False,
    ) -> SecurityEvent:
        """Open an event, or update the open one of the same kind and subject."""
        self._m_occurrences.labels(kind.value).inc()
        key = (tenant_id, kind, subject)
        current = self._open.get(key)
        window = timedelta(seconds=self.settings.coalesce_window)
        site_id = None
        if device_id is not None and self.directory is not None:
            entry = self.directory.lookup(device_id)
            if entry is not None and entry.device.tenant_id == tenant_id:
                site_id = entry.device.site_id
        if current is None or at - current.last_at > window:
            event = SecurityEvent(
                id=uuid.uuid4().hex,
                at=at,
                last_at=at,
                kind=kind,
                severity=severity,
                tenant_id=tenant_id,
                subject=subject,
                summary=summary,
                evidence=dict(evidence or {}),
                count=count,
                site_id=site_id,
                device_id=device_id,
                username=username,
                source=source,
            )
            self.detected += 1
            self._m_events.labels(kind.value, severity.value).inc()
            _log.warning("security event %s [%s] %s", kind.value, severity.value, summary)
        else:
            event = replace(
                current,
                last_at=max(at, current.last_at),
                severity=_max(current.severity, severity),
                summary=summary,
                evidence={**current.evidence, **(evidence or {})},
                count=count if replace_count else current.count + count,
                site_id=current.site_id or site_id,
                source=current.source if current.source == source else None,
            )
            if event.severity is not current.severity:
                _log.warning(
                    "security event %s escalated to %s: %s", kind.value, severity.value, summary
                )
        self._open[key] = event
        self._open.move_to_end(key)
        self._submit(event)
        return event

    # -- detectors: logins -----------------------------------------------------------------------

    def on_login(self, attempt: LoginAttemptLike) -> None:
        """A login attempt (H1's ``UserService`` listener). Never raises."""
        if self._elsewhere(self.on_login, attempt):
            return
        try:
            self._login(
                EventKind.LOGIN_BRUTE_FORCE,
                "login",
                attempt.username,
                attempt.source,
                attempt.tenant_id,
                ok=attempt.ok,
                throttled=attempt.throttled,
                at=attempt.at,
            )
        except Exception:  # noqa: BLE001 - monitoring must never break a login
            _log.exception("security monitor: login attempt not evaluated")

    def _login(
        self,
        kind: EventKind,
        what: str,
        username: str,
        source: str,
        tenant_id: str | None,
        *,
        ok: bool,
        throttled: bool,
        at: datetime,
    ) -> None:
        s = self.settings
        window = timedelta(seconds=s.login_window)
        user_key = (kind.value, tenant_id, username)
        if ok:
            failures = self._user_failures.get(user_key)
            if failures is None:
                return
            recent = [t for t in failures.times if t >= at - window]
            if len(recent) >= s.login_failures:
                self._raise(
                    kind,
                    tenant_id=tenant_id,
                    subject=f"user:{username}",
                    severity=EventSeverity.CRITICAL,
                    summary=(
                        f"{what} of {username!r} succeeded from {source} after {len(recent)}"
                        f" failures in {s.login_window:g}s: the password may have been guessed"
                    ),
                    at=at,
                    evidence={"succeeded_from": source, "failures": len(recent)},
                    count=0,
                    username=username,
                    source=source,
                )
            del self._user_failures[user_key]
            return
        by_user = self._user_failures.touch(user_key, _Failures)
        n_user = by_user.add(at, source, window, s.login_failures)
        by_user.throttled += throttled
        by_source = self._source_failures.touch((kind.value, source), _Failures)
        n_source = by_source.add(at, username, window, s.login_failures)
        if n_user >= s.login_failures:
            self._raise(
                kind,
                tenant_id=tenant_id,
                subject=f"user:{username}",
                severity=_severity_for_count(n_user, s.login_failures),
                summary=(
                    f"{n_user} failed {what}s for {username!r} in {s.login_window:g}s"
                    f" from {len(by_user.others)} source(s)"
                ),
                at=at,
                evidence={
                    "failures_in_window": n_user,
                    "window_s": s.login_window,
                    "sources": sorted(by_user.others),
                    "throttled": by_user.throttled,
                    "last_source": source,
                },
                username=username,
                source=source,
            )
        elif n_source >= s.login_failures and len(by_source.others) >= 2:
            # One address trying many users: password spraying. Not attributable to a tenant.
            self._raise(
                kind,
                tenant_id=None,
                subject=f"source:{source}",
                severity=_severity_for_count(n_source, s.login_failures),
                summary=(
                    f"{n_source} failed {what}s from {source} in {s.login_window:g}s"
                    f" over {len(by_source.others)} user names"
                ),
                at=at,
                evidence={
                    "failures_in_window": n_source,
                    "window_s": s.login_window,
                    "usernames": sorted(by_source.others),
                },
                source=source,
            )

    # -- detectors: the broker -------------------------------------------------------------------

    def on_broker_refusal(self, refusal: BrokerRefusalLike) -> None:
        """A refusal by the broker authority (H3's listener). Never raises."""
        if self._elsewhere(self.on_broker_refusal, refusal):
            return
        try:
            self._broker_refusal(refusal)
        except Exception:  # noqa: BLE001 - monitoring must never break the broker
            _log.exception("security monitor: broker refusal not evaluated")

    def _broker_refusal(self, refusal: BrokerRefusalLike) -> None:
        who = refusal.device_id or refusal.username or refusal.source
        at = refusal.at
        tenant = refusal.tenant_id
        if refusal.kind == "credentials":
            self._login(
                EventKind.DEVICE_CREDENTIAL_FAILURES,
                "MQTT connection",
                refusal.username or "(none)",
                refusal.source,
                tenant,
                ok=False,
                throttled=False,
                at=at,
            )
        elif refusal.kind in ("topic_publish", "topic_subscribe"):
            action = "publish" if refusal.kind == "topic_publish" else "subscribe"
            key = (tenant, EventKind.TOPIC_VIOLATION, f"device:{who}")
            current = self._open.get(key)
            count = (current.count + 1) if current is not None else 1
            topics = list(current.evidence.get("topics", [])) if current is not None else []
            if refusal.topic and refusal.topic not in topics and len(topics) < 20:
                topics.append(refusal.topic)
            severity = (
                EventSeverity.HIGH
                if count >= self.settings.repeat_escalation
                else EventSeverity.MEDIUM
            )
            self._raise(
                EventKind.TOPIC_VIOLATION,
                tenant_id=tenant,
                subject=f"device:{who}",
                severity=severity,
                summary=f"{who} tried to {action} on {refusal.topic!r}, outside its topics",
                at=at,
                evidence={
                    "topics": topics,
                    f"last_{action}": refusal.topic,
                    "detail": refusal.detail,
                },
                device_id=refusal.device_id,
                username=refusal.username,
                source=refusal.source,
            )
        elif refusal.kind in _CERTIFICATE_KINDS:
            kind, severity = _CERTIFICATE_KINDS[refusal.kind]
            self._raise(
                kind,
                tenant_id=tenant,
                subject=f"device:{who}",
                severity=severity,
                summary=f"{who} connected from {refusal.source} with {_ARTICLED[kind]}"
                f" certificate: {refusal.detail}",
                at=at,
                evidence={"detail": refusal.detail, "last_source": refusal.source},
                device_id=refusal.device_id,
                username=refusal.username,
                source=refusal.source,
            )
        elif refusal.kind == "decommissioned":
            self._decommissioned(
                tenant, refusal.device_id or who, at, "connect", refusal.source, refusal.detail
            )

    def on_ingest_rejection(self, rejection: IngestRejectionLike) -> None:
        """A dead-lettered message (H5's pipeline rejection listener). Never raises."""
        if self._elsewhere(self.on_ingest_rejection, rejection):
            return
        try:
            if rejection.reason == "rate_limited" and rejection.device_id:
                self._rate_limited(rejection)
            elif rejection.reason == "decommissioned" and rejection.device_id:
                self._decommissioned(
                    rejection.tenant_id,
                    rejection.device_id,
                    rejection.at,
                    "publish",
                    None,
                    f"{rejection.detail} (topic {rejection.topic})",
                )
        except Exception:  # noqa: BLE001 - monitoring must never break ingest
            _log.exception("security monitor: ingest rejection not evaluated")

    def _rate_limited(self, rejection: IngestRejectionLike) -> None:
        device = rejection.device_id or ""
        self._raise(
            EventKind.RATE_ANOMALY,
            tenant_id=rejection.tenant_id,
            subject=f"device:{device}",
            severity=EventSeverity.MEDIUM,
            summary=f"{device} exceeds its ingest rate limit: its messages are refused",
            at=rejection.at,
            evidence={"rate_limited": rejection.detail, "last_topic": rejection.topic},
            device_id=device,
        )

    def _decommissioned(  # noqa: PLR0917 - private, called from two places with all of them
        self,
        tenant: str | None,
        device: str,
        at: datetime,
        action: str,
        source: str | None,
        detail: str,
    ) -> None:
        self._raise(
            EventKind.DECOMMISSIONED_TRAFFIC,
            tenant_id=tenant,
            subject=f"device:{device}",
            severity=EventSeverity.HIGH,
            summary=f"decommissioned device {device} tried to {action}: its credentials are"
            " still in use",
            at=at,
            evidence={f"last_{action}": detail, **({"last_source": source} if source else {})},
            device_id=device,
            source=source,
        )

    # -- detectors: committed samples ------------------------------------------------------------

    async def on_commit(self, accepted: Sequence[AcceptedSamples]) -> None:
        """The ingest pipeline's commit listener: rates, firmware and configuration."""
        try:
            self.observe(accepted)
        except Exception:  # noqa: BLE001 - monitoring must never break ingest
            _log.exception("security monitor: committed samples not evaluated")

    def observe(self, accepted: Iterable[AcceptedSamples], *, at: datetime | None = None) -> None:
        """Evaluate committed samples (``on_commit`` without the await)."""
        now = self._clock()
        when = at or datetime.now(UTC)
        for item in accepted:
            device = item.device
            samples = item.samples
            self._rate(device.tenant_id, device.id, samples.accepted, now, when)
            for metric, (ts, values) in samples.text.items():
                if _FIRMWARE_METRIC.match(metric) or _CONFIG_METRIC.match(metric):
                    self._reported(device.tenant_id, device.id, metric, ts.tolist(), values, when)
            for metric, (ts, numbers) in samples.numeric.items():
                if _FIRMWARE_METRIC.match(metric) or _CONFIG_METRIC.match(metric):
                    texts = [f"{v:g}" for v in numbers.tolist()]
                    self._reported(device.tenant_id, device.id, metric, ts.tolist(), texts, when)

    def _rate(self, tenant: str, device: str, points: int, now: float, when: datetime) -> None:
        s = self.settings
        state = self._rates.touch((tenant, device), lambda: _Rate(bucket_start=now))
        if now - state.bucket_start >= s.rate_bucket:
            if state.points:
                # An empty bucket (a silent device) teaches nothing about its sending rate.
                rate = state.points / max(now - state.bucket_start, s.rate_bucket)
                if state.buckets == 0:
                    state.baseline = rate
                elif not self._anomalous(state, rate):
                    # Anomalous buckets stay out of the baseline, or a flood would become normal.
                    state.baseline += s.rate_alpha * (rate - state.baseline)
                state.buckets += 1
            state.bucket_start, state.points = now, 0
        state.points += points
        rate = state.points / s.rate_bucket
        if state.buckets >= s.rate_warmup and self._anomalous(state, rate):
            severity = (
                EventSeverity.HIGH
                if rate > 10 * s.rate_factor * max(state.baseline, 1e-9)
                else EventSeverity.MEDIUM
            )
            key = (tenant, EventKind.RATE_ANOMALY, f"device:{device}")
            current = self._open.get(key)
            peak = rate
            if current is not None:
                peak = max(rate, float(current.evidence.get("peak_points_per_s", 0.0)))
            # One occurrence per anomalous bucket, however many commits it took.
            first_in_bucket = state.flagged != state.bucket_start
            state.flagged = state.bucket_start
            self._raise(
                EventKind.RATE_ANOMALY,
                tenant_id=tenant,
                subject=f"device:{device}",
                severity=severity,
                summary=(
                    f"{device} sends {rate:.0f} points/s, {rate / max(state.baseline, 1e-9):.0f}"
                    f" times its normal {state.baseline:.1f} points/s"
                ),
                at=when,
                evidence={
                    "points_per_s": round(rate, 1),
                    "peak_points_per_s": round(peak, 1),
                    "baseline_points_per_s": round(state.baseline, 2),
                    "factor": s.rate_factor,
                    "floor_points_per_s": s.rate_floor,
                    "bucket_s": s.rate_bucket,
                },
                device_id=device,
                count=1 if first_in_bucket else 0,
            )

    def _anomalous(self, state: _Rate, rate: float) -> bool:
        s = self.settings
        return rate > s.rate_floor and rate > s.rate_factor * state.baseline

    def _reported(  # noqa: PLR0917 - private, one caller
        self,
        tenant: str,
        device: str,
        metric: str,
        stamps: list[int],
        values: list[str],
        at: datetime,
    ) -> None:
        # Windows and events go by arrival time: a device's own clock (or a backlog) says
        # when it measured, not when the change reached the platform.
        for ts, reported in sorted(zip(stamps, values, strict=True)):
            value = reported[:256]
            key = (tenant, device, metric)
            previous = self._versions.get(key)
            if previous == value:
                continue
            self._versions[key] = value
            sampled = datetime.fromtimestamp(ts / 1000, UTC)
            self._submit(_VersionWrite(tenant, device, metric, value, sampled))
            if previous is None:
                continue  # the first report is the baseline
            window = next((w for w in self._windows if w.covers(tenant, device, at)), None)
            if window is not None:
                self._m_expected.inc()
                _log.info(
                    "security: %s.%s changed %r -> %r in maintenance window %d (%s)",
                    device,
                    metric,
                    previous,
                    value,
                    window.id,
                    window.reason,
                )
                continue
            firmware = bool(_FIRMWARE_METRIC.match(metric))
            old, new = _version_key(previous), _version_key(value)
            downgrade = firmware and bool(old) and bool(new) and new < old
            if firmware:
                kind = EventKind.FIRMWARE_CHANGE
                severity = EventSeverity.CRITICAL if downgrade else EventSeverity.HIGH
                what = "firmware downgraded" if downgrade else "firmware changed"
            else:
                kind, severity, what = (
                    EventKind.CONFIG_CHANGE,
                    EventSeverity.MEDIUM,
                    "config changed",
                )
            self._raise(
                kind,
                tenant_id=tenant,
                subject=f"device:{device}",
                severity=severity,
                summary=f"{device}: {what} {previous!r} -> {value!r} outside a maintenance window",
                at=at,
                evidence={
                    "metric": metric,
                    "previous": previous,
                    "reported": value,
                    "downgrade": downgrade,
                    "sampled_at": sampled.isoformat(),
                },
                device_id=device,
            )

    # -- maintenance windows ---------------------------------------------------------------------

    @staticmethod
    def _window_from(row: sa.Row[Any]) -> MaintenanceWindow:
        return MaintenanceWindow(
            id=int(row.id),
            tenant_id=row.tenant_id,
            device_id=row.device_id,
            starts_at=_utc(row.starts_at),
            ends_at=_utc(row.ends_at),
            reason=row.reason,
            created_by=row.created_by,
        )

    async def open_maintenance(
        self,
        tenant_id: str,
        *,
        device_id: str | None,
        until: datetime,
        reason: str,
        by: str,
        starts_at: datetime | None = None,
    ) -> MaintenanceWindow:
        """Expect firmware and configuration changes of a device (or a tenant) until ``until``."""
        start = starts_at or datetime.now(UTC)
        if until <= start:
            raise ValueError("a maintenance window must end after it starts")
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.insert(_maintenance)
                .values(
                    tenant_id=tenant_id,
                    device_id=device_id,
                    starts_at=start,
                    ends_at=until,
                    reason=reason[:500],
                    created_by=by[:200],
                )
                .returning(_maintenance)
            )
            window = self._window_from(result.one())
        now = datetime.now(UTC)
        self._windows = [w for w in self._windows if w.ends_at >= now] + [window]
        return window

    def maintenance_windows(self, tenant_id: str | None) -> list[MaintenanceWindow]:
        """Windows not yet ended, of one tenant (``None``: all)."""
        now = datetime.now(UTC)
        return [
            w
            for w in self._windows
            if w.ends_at >= now and (tenant_id is None or w.tenant_id == tenant_id)
        ]

    # -- queries ---------------------------------------------------------------------------------

    async def events(
        self,
        tenant_id: str | None,
        *,
        kind: EventKind | None = None,
        severity: EventSeverity | None = None,
        since: datetime | None = None,
        device_id: str | None = None,
        open_only: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[SecurityEvent], int]:
        """Events of a tenant (``None``: every tenant), latest first, and how many match."""
        where: list[sa.ColumnElement[bool]] = []
        if tenant_id is not None:
            where.append(_events.c.tenant_id == tenant_id)
        if kind is not None:
            where.append(_events.c.kind == kind.value)
        if severity is not None:
            where.append(_events.c.severity == severity.value)
        if since is not None:
            where.append(_events.c.last_at >= since)
        if device_id is not None:
            where.append(_events.c.device_id == device_id)
        if open_only:
            where.append(_events.c.acknowledged_at.is_(None))
        query = sa.select(_events).where(*where)
        async with self.engine.connect() as conn:
            total = int(
                (
                    await conn.execute(sa.select(sa.func.count()).select_from(query.subquery()))
                ).scalar_one()
            )
            rows = (
                await conn.execute(
                    query.order_by(_events.c.last_at.desc(), _events.c.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return [_event_from(row) for row in rows], total

    async def get(self, event_id: str, tenant_id: str | None) -> SecurityEvent | None:
        """One event, if it exists and is in the tenant (``None``: any tenant)."""
        query = sa.select(_events).where(_events.c.id == event_id)
        if tenant_id is not None:
            query = query.where(_events.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _event_from(row)

    async def acknowledge(
        self, event_id: str, tenant_id: str | None, *, by: str
    ) -> SecurityEvent | None:
        """Acknowledge an event; later occurrences open a new one. ``None`` if not found."""
        await self.drain()  # the event may still be on its way to the database
        where = _events.c.id == event_id
        if tenant_id is not None:
            where = sa.and_(where, _events.c.tenant_id == tenant_id)
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(_events)
                .where(where, _events.c.acknowledged_at.is_(None))
                .values(acknowledged_at=datetime.now(UTC), acknowledged_by=by[:200])
            )
            row = (await conn.execute(sa.select(_events).where(where))).first()
        if row is None:
            return None
        event = _event_from(row)
        key = (event.tenant_id, event.kind, event.subject)
        current = self._open.get(key)
        if current is not None and current.id == event.id:
            del self._open[key]
        return event

    async def posture(self, tenant_id: str | None, *, since: datetime) -> SecurityPosture:
        """Counts of the events of a tenant (``None``: all) active since ``since``."""
        where: list[sa.ColumnElement[bool]] = [_events.c.last_at >= since]
        if tenant_id is not None:
            where.append(_events.c.tenant_id == tenant_id)
        query = (
            sa.select(
                _events.c.kind,
                _events.c.severity,
                _events.c.acknowledged_at.is_(None).label("open"),
                sa.func.count().label("n"),
                sa.func.sum(_events.c.count).label("occurrences"),
            )
            .where(*where)
            .group_by(_events.c.kind, _events.c.severity, sa.text("3"))
        )
        at_risk = sa.select(sa.func.count(sa.distinct(_events.c.device_id))).where(
            *([_events.c.tenant_id == tenant_id] if tenant_id is not None else []),
            _events.c.acknowledged_at.is_(None),
            _events.c.device_id.is_not(None),
            _events.c.severity.in_([s.value for s in SERIOUS]),
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            devices = int((await conn.execute(at_risk)).scalar_one())
        by_severity = dict.fromkeys((s.value for s in EventSeverity), 0)
        open_by_severity = dict(by_severity)
        by_kind: dict[str, int] = {}
        opened = acknowledged = occurrences = 0
        for row in rows:
            n = int(row.n)
            by_severity[row.severity] = by_severity.get(row.severity, 0) + n
            by_kind[row.kind] = by_kind.get(row.kind, 0) + n
            occurrences += int(row.occurrences or 0)
            if row.open:
                opened += n
                open_by_severity[row.severity] = open_by_severity.get(row.severity, 0) + n
            else:
                acknowledged += n
        return SecurityPosture(
            since=since,
            by_severity=by_severity,
            by_kind=by_kind,
            open=opened,
            acknowledged=acknowledged,
            open_by_severity=open_by_severity,
            devices_at_risk=devices,
            occurrences=occurrences,
        )

    async def period_figures(self, tenant_id: str, start: datetime, end: datetime) -> PeriodFigures:
        """What the enterprise indicators need for ``[start, end)`` (see ``data.enterprise``)."""
        first_in = sa.and_(
            _events.c.tenant_id == tenant_id,
            _events.c.first_at >= start,
            _events.c.first_at < end,
        )
        open_at_end = sa.and_(
            _events.c.tenant_id == tenant_id,
            _events.c.first_at < end,
            sa.or_(_events.c.acknowledged_at.is_(None), _events.c.acknowledged_at >= end),
        )
        serious = _events.c.severity.in_([s.value for s in SERIOUS])
        count = sa.func.count()
        async with self.engine.connect() as conn:
            detected = (await conn.execute(sa.select(count).where(first_in))).scalar_one()
            high = (await conn.execute(sa.select(count).where(first_in, serious))).scalar_one()
            still_open = (await conn.execute(sa.select(count).where(open_at_end))).scalar_one()
            devices = (
                await conn.execute(
                    sa.select(_events.c.device_id)
                    .where(open_at_end, serious, _events.c.device_id.is_not(None))
                    .distinct()
                )
            ).scalars()
            at_risk = frozenset(str(d) for d in devices)
        return PeriodFigures(
            detected=int(detected),
            serious=int(high),
            open_at_end=int(still_open),
            devices_at_risk=at_risk,
        )

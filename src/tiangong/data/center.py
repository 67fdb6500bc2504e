"""A data center of the hierarchy: a regional or industry sub-center, or the national center.

Theory of operation
-------------------
A center consumes its own destination (``regional.east``) through a durable consumer of the
``ReportTransport``. A reader task moves deliveries into a bounded queue (backpressure reaches
the transport's ``max_ack_pending``); one worker handles them in order:

==============================  ================================================================
step                            on failure
==============================  ================================================================
decode                          rejected: term, audit ``report_rejected`` with the reason
verify signature (trusted keys) rejected
validate against the catalog    rejected
within this center's scope      rejected (a Suzhou report sent to the Beijing center)
mark the cell dirty (forwarder) transient: nak with a delay, try again
``Ledger.accept``               conflicting figures under one revision: rejected
store (NEW, REVISED, DUPLICATE) transient: nak
ack                             lost ack: the report comes again and is a DUPLICATE
==============================  ================================================================

A rejected report never blocks the ones behind it and never stops the center. A DUPLICATE is
stored again (``put`` replaces by report id) because a crash between the ledger's commit and
the store's leaves the store behind the ledger; the redelivery repairs it.

Forwarding (sub-centers only): the cell ``(period, period_start, region, industry)`` of each
report is marked dirty in ``forward.sqlite3`` *before* the ledger accepts the report, so a crash
at any point leaves either nothing accepted or the cell still dirty. A debounced forwarder
re-aggregates dirty cells from the ledger (``aggregate_report`` per cell, by each indicator's
rule), skips cells whose figures are what it last sent, takes a revision from
``Ledger.next_revision`` (persisted, so strictly increasing across restarts), passes the report
through the ``ExportPolicy`` (every refusal audited), signs it and publishes it to each parent.
A cell is clean only after every parent's publish ack; a failed publish is retried with
backoff. The national center has no parent and forwards nothing.

``EnterpriseExporter`` is the enterprise's side of the same boundary: policy, signature, audit,
publish to the enterprise's regional and industry centers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tiangong.data.aggregate import Ledger, Outcome, aggregate_report
from tiangong.data.catalog import Catalog, province_of, section_of
from tiangong.data.errors import CatalogError, DataError, ReportError, TransportError
from tiangong.data.governance import AuditEvent, AuditKind, AuditLog, ExportPolicy, Refusal
from tiangong.data.model import ANY, DataGrade, Level, Period, Report, Scope
from tiangong.data.reports import (
    KeyRing,
    decode_report,
    encode_report,
    signing_bytes,
    validate_report,
    verify_report,
)
from tiangong.data.store import AnalyticsStore
from tiangong.data.transport.base import (
    Backoff,
    Delivery,
    ReportTransport,
    destination_for,
    parse_destination,
)

__all__ = [
    "CenterConfig",
    "CenterStats",
    "DataCenter",
    "EnterpriseExporter",
    "ExportOutcome",
]

log = logging.getLogger(__name__)

#: A cell of one period: (period, period_start, region, industry).
Cell = tuple[Period, str, str, str]

_FORWARD_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS dirty (
        period TEXT NOT NULL, period_start TEXT NOT NULL, region TEXT NOT NULL,
        industry TEXT NOT NULL, PRIMARY KEY (period, period_start, region, industry))""",
    """CREATE TABLE IF NOT EXISTS sent (report_id TEXT PRIMARY KEY, digest TEXT NOT NULL)""",
)

_CHILD_LEVEL: Final = {
    Level.REGIONAL: frozenset({Level.ENTERPRISE}),
    Level.INDUSTRY: frozenset({Level.ENTERPRISE}),
    Level.NATIONAL: frozenset({Level.REGIONAL, Level.INDUSTRY}),
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, kw_only=True)
class CenterConfig:
    """What a center is and where it keeps its state.

    Attributes:
        level: ``REGIONAL``, ``INDUSTRY`` or ``NATIONAL``.
        center_id: This center's id (letters, digits, ``-``, ``_``); its destination is
            ``<level>.<center_id>``.
        data_dir: Where the ledger, the analytics store, the audit log and the forwarding state
            live (created if missing).
        keys: This center's key (it signs its aggregates) and the keys of the sources below.
        catalog: The indicator catalog reports are validated against.
        region: The region a regional center covers (a GB/T 2260 code; reports of cities in a
            province center's province are in scope); ``ANY`` otherwise.
        industry: The industry an industry center covers (a GB/T 4754 section or division);
            ``ANY`` otherwise.
        parents: Destinations this center forwards its aggregates to (``national.cn``); none
            for the national center.
        export_policy: What may leave for each parent (default: general data only).
        breakdown_max_grade: Highest grade whose per-enterprise breakdown goes up.
        forward_delay: Seconds to wait after a change before re-aggregating (debounce).
        queue_size: Deliveries held between the transport and the worker.
        batch_size: Deliveries recorded together (one store transaction).
        audit_receipts: Audit every accepted report (``report_received``), not only refusals.
        bind_signer_to_source: Require a report's signer key id to equal its source.
    """

    level: Level
    center_id: str
    data_dir: Path
    keys: KeyRing
    catalog: Catalog
    region: str = ANY
    industry: str = ANY
    parents: tuple[str, ...] = ()
    export_policy: ExportPolicy = field(default_factory=ExportPolicy)
    breakdown_max_grade: DataGrade = DataGrade.GENERAL
    forward_delay: float = 0.5
    queue_size: int = 1024
    batch_size: int = 256
    audit_receipts: bool = True
    bind_signer_to_source: bool = False

    def __post_init__(self) -> None:
        level = Level(self.level)
        if level is Level.ENTERPRISE:
            raise DataError("an enterprise is not a center: use EnterpriseExporter")
        destination_for(level, self.center_id)  # checks the id
        for parent in self.parents:
            parent_level, _ = parse_destination(parent)
            if parent_level is not Level.NATIONAL:
                raise DataError(f"parent {parent!r}: sub-centers forward to the national level")
        if level is Level.NATIONAL and self.parents:
            raise DataError("the national center has no parent")
        if level is Level.REGIONAL and self.region == ANY:
            raise DataError("a regional center needs --region (a GB/T 2260 code)")
        if level is Level.INDUSTRY and self.industry == ANY:
            raise DataError("an industry center needs --industry (a GB/T 4754 code)")
        try:
            self.catalog.check_region(self.region)
            self.catalog.check_industry(self.industry)
        except CatalogError as exc:
            raise DataError(f"center {self.center_id}: {exc}") from exc
        if self.forward_delay < 0 or self.queue_size < 1 or self.batch_size < 1:
            raise DataError("forward_delay must be >= 0, queue_size and batch_size >= 1")

    @property
    def destination(self) -> str:
        """Where reports for this center are published."""
        return destination_for(self.level, self.center_id)

    @property
    def durable(self) -> str:
        """The durable consumer's name."""
        return f"center-{Level(self.level).value}-{self.center_id}"


@dataclass
class CenterStats:
    """Counters of one center since it started."""

    received: int = 0
    accepted: int = 0
    revised: int = 0
    duplicates: int = 0
    stale: int = 0
    rejected: int = 0
    retried: int = 0
    forwarded: int = 0
    forward_unchanged: int = 0
    forward_failures: int = 0
    export_refusals: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    started_monotonic: float = field(default_factory=time.monotonic)

    @property
    def processed(self) -> int:
        """Deliveries settled one way or another."""
        return self.accepted + self.revised + self.duplicates + self.stale + self.rejected

    @property
    def per_second(self) -> float:
        """Settled deliveries per second since the start."""
        return self.processed / max(time.monotonic() - self.started_monotonic, 1e-9)


def _cell_of(report: Report) -> Cell:
    return (report.period, report.period_start, report.scope.region, report.scope.industry)


def _digest(report: Report) -> str:
    # What a forwarded cell stands for, without its revision, time and signature.
    unversioned = dataclasses.replace(report, revision=0, created_at="", signer="", signature="")
    return hashlib.sha256(signing_bytes(unversioned)).hexdigest()


class _ForwardState:
    """Dirty cells and the digest last sent per report id (an SQLite file, shared under a lock)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in _FORWARD_SCHEMA:
            self._db.execute(statement)

    def mark(self, cell: Cell) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO dirty VALUES (?, ?, ?, ?)",
                (cell[0].value, *cell[1:]),
            )

    def clear(self, cell: Cell) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM dirty WHERE period = ? AND period_start = ? AND region = ?"
                " AND industry = ?",
                (cell[0].value, *cell[1:]),
            )

    def dirty(self) -> list[Cell]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM dirty ORDER BY period_start").fetchall()
        return [(Period(p), s, r, i) for p, s, r, i in rows]

    def sent_digest(self, report_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT digest FROM sent WHERE report_id = ?", (report_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def record_sent(self, report_id: str, digest: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO sent VALUES (?, ?)", (report_id, digest))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class DataCenter:
    """A regional, industry or national data center (an async context manager).

    Args:
        config: What the center is (see ``CenterConfig``).
        transport: An open ``ReportTransport`` (JetStream or the outbox); the center does not
            close it.

    Attributes:
        stats: Counters since the start.
        ledger: The latest revision of each report received.
        store: The analytics store the received reports go into.
        audit: The audit log.
    """

    def __init__(self, config: CenterConfig, *, transport: ReportTransport) -> None:
        self.config = config
        self.transport = transport
        self.stats = CenterStats()
        self._level = Level(config.level)
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=config.queue_size)
        # cell → changes seen; the forwarder clears a cell only if no change came meanwhile.
        self._dirty: dict[Cell, int] = {}
        self._dirty_lock = asyncio.Lock()
        self._dirty_event = asyncio.Event()
        self._busy = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stack: contextlib.AsyncExitStack | None = None
        self._backoff = Backoff(initial=0.5, maximum=30.0)
        self.ledger: Ledger
        self.store: AnalyticsStore
        self.audit: AuditLog
        self._forward: _ForwardState

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        config = self.config
        data_dir = Path(config.data_dir)
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        async with contextlib.AsyncExitStack() as stack:
            self.ledger = await asyncio.to_thread(Ledger, data_dir / "ledger.sqlite3")
            stack.callback(self.ledger.close)
            self.audit = await asyncio.to_thread(AuditLog, data_dir / "audit.sqlite3")
            stack.callback(self.audit.close)
            self._forward = await asyncio.to_thread(_ForwardState, data_dir / "forward.sqlite3")
            stack.callback(self._forward.close)
            self.store = AnalyticsStore(path=data_dir / "analytics.duckdb", catalog=config.catalog)
            await self.store.open()
            stack.push_async_callback(self.store.close)
            self._dirty = dict.fromkeys(await asyncio.to_thread(self._forward.dirty), 0)
            if self._dirty:
                self._dirty_event.set()  # a previous run stopped before forwarding these
            tasks = asyncio.TaskGroup()
            await stack.enter_async_context(tasks)
            self._tasks = [
                tasks.create_task(self._read(), name=f"{config.durable}-read"),
                tasks.create_task(self._work(), name=f"{config.durable}-work"),
            ]
            if config.parents:
                self._tasks.append(
                    tasks.create_task(self._forward_loop(), name=f"{config.durable}-forward")
                )
            self._stack = stack.pop_all()
        log.info(
            "%s center %s consuming %s (parents: %s)",
            self._level.value,
            config.center_id,
            config.destination,
            ", ".join(config.parents) or "none",
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        for task in self._tasks:
            task.cancel()
        await stack.__aexit__(exc_type, exc, tb)

    async def run_forever(self) -> None:
        """Wait until cancelled (the CLI's main loop)."""
        await asyncio.Event().wait()

    # -- what tests and the CLI look at ------------------------------------------------------

    @property
    def pending_cells(self) -> int:
        """Cells changed since they were last forwarded."""
        return len(self._dirty)

    async def idle(self) -> bool:
        """True when nothing is queued, in hand, waiting to be forwarded, or in the backlog."""
        if self._queue.qsize() or self._busy or self._dirty:
            return False
        backlog = await self.transport.backlog(self.config.destination, durable=self.config.durable)
        return backlog == 0 and not (self._queue.qsize() or self._busy or self._dirty)

    async def wait_idle(self, *, poll: float = 0.05) -> None:
        """Wait until ``idle`` (bound it with ``asyncio.timeout``)."""
        # The backlog lives on the server: there is no local event to wait for.
        while not await self.idle():  # noqa: ASYNC110
            await asyncio.sleep(poll)

    # -- ingest --------------------------------------------------------------------------------

    async def _read(self) -> None:
        config = self.config
        failures = 0
        while True:
            try:
                async for delivery in self.transport.deliveries(
                    config.destination, durable=config.durable
                ):
                    failures = 0
                    await self._queue.put(delivery)
            except TransportError as exc:
                log.warning("%s: deliveries stopped (%s); resuming", config.destination, exc)
                await asyncio.sleep(self._backoff.delay(failures))
                failures += 1

    async def _work(self) -> None:
        batch_size = self.config.batch_size
        while True:
            batch = [await self._queue.get()]
            while len(batch) < batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._busy += len(batch)
            try:
                await self._handle_batch(batch)
            except Exception:
                # Never stop the center for one batch; its deliveries come again.
                log.exception("unexpected failure on a batch of %d reports", len(batch))
                self.stats.retried += len(batch)
                for delivery in batch:
                    await self._settle(delivery.nak(5.0))
            finally:
                self._busy -= len(batch)
                for _ in batch:
                    self._queue.task_done()

    async def _handle_batch(self, batch: Sequence[Delivery]) -> None:
        """Check each report, then record the good ones together (one store transaction)."""
        checked: list[tuple[Delivery, Report]] = []
        for delivery in batch:
            self.stats.received += 1
            source = ""
            try:
                report = decode_report(delivery.data)
                source = report.scope.source
                verify_report(report, self.config.keys.trusted)
                validate_report(report, self.config.catalog)
                self._check_scope(report)
            except (ReportError, CatalogError) as exc:
                await self._reject(delivery, str(exc), source=source)
            else:
                checked.append((delivery, report))
        if not checked:
            return

        def accept_all() -> list[Outcome | ReportError]:
            outcomes: list[Outcome | ReportError] = []
            for _, report in checked:
                try:
                    outcomes.append(self.ledger.accept(report))
                except ReportError as exc:  # the same revision with other figures
                    outcomes.append(exc)
            return outcomes

        try:
            outcomes = await asyncio.to_thread(accept_all)
            accepted = [
                (delivery, report, outcome)
                for (delivery, report), outcome in zip(checked, outcomes, strict=True)
                if isinstance(outcome, Outcome)
            ]
            # A DUPLICATE is stored and marked too: after a crash between the ledger's commit
            # and the store's, its redelivery is a DUPLICATE that must still reach the store
            # and the parent (``put_many`` keeps the highest revision, so this is idempotent).
            fresh = [report for _, report, outcome in accepted if outcome is not Outcome.STALE]
            if fresh:
                await self.store.put_many(fresh)
                for cell in dict.fromkeys(_cell_of(report) for report in fresh):
                    await self._mark_dirty(cell)
        except (DataError, OSError, sqlite3.Error) as exc:
            log.warning("cannot record %d reports now (%s); retrying", len(checked), exc)
            self.stats.retried += len(checked)
            for delivery, _ in checked:
                await self._settle(delivery.nak(1.0))
            return
        receipts: list[AuditEvent] = []
        for (delivery, report), outcome in zip(checked, outcomes, strict=True):
            if isinstance(outcome, ReportError):
                await self._reject(delivery, str(outcome), source=report.scope.source)
                continue
            match outcome:
                case Outcome.NEW:
                    self.stats.accepted += 1
                case Outcome.REVISED:
                    self.stats.revised += 1
                case Outcome.DUPLICATE:
                    self.stats.duplicates += 1
                case Outcome.STALE:
                    self.stats.stale += 1
            if outcome in (Outcome.NEW, Outcome.REVISED) and self.config.audit_receipts:
                receipts.append(
                    self._event(
                        AuditKind.REPORT_RECEIVED,
                        report.message_id,
                        origin=report.scope.source,
                        detail=outcome.value,
                    )
                )
        if receipts:
            await asyncio.to_thread(lambda: [self.audit.append(e) for e in receipts])
        for delivery, _ in checked:
            await self._settle(delivery.ack())

    async def _mark_dirty(self, cell: Cell) -> None:
        if not self.config.parents:
            return
        async with self._dirty_lock:
            if cell not in self._dirty:
                await asyncio.to_thread(self._forward.mark, cell)
            self._dirty[cell] = self._dirty.get(cell, 0) + 1
        self._dirty_event.set()

    def _check_scope(self, report: Report) -> None:
        config, scope = self.config, report.scope
        allowed = _CHILD_LEVEL[self._level]
        if scope.level not in allowed:
            raise ReportError(
                f"a {self._level.value} center takes reports from"
                f" {', '.join(sorted(level.value for level in allowed))} sources,"
                f" not {scope.level.value}"
            )
        if config.bind_signer_to_source and report.signer != scope.source:
            raise ReportError(f"signed by {report.signer!r}, not by its source {scope.source!r}")
        if config.region != ANY and config.region not in (
            scope.region,
            province_of(scope.region),
        ):
            raise ReportError(f"region {scope.region} is outside this center's {config.region}")
        if config.industry != ANY and config.industry not in (
            scope.industry,
            section_of(scope.industry),
        ):
            raise ReportError(
                f"industry {scope.industry} is outside this center's {config.industry}"
            )
        if self._level is Level.NATIONAL and ANY in (scope.region, scope.industry):
            raise ReportError("a sub-center forwards (region, industry) cells, not totals")

    async def _reject(self, delivery: Delivery, reason: str, *, source: str) -> None:
        self.stats.rejected += 1
        self.stats.rejections[reason.split(":", 1)[0][:80]] += 1
        log.warning("rejected %s from %s: %s", delivery.message_id, source or "?", reason)
        await self._audit(
            AuditKind.REPORT_REJECTED,
            delivery.message_id or "(no id)",
            origin=source,
            detail=reason,
        )
        await self._settle(delivery.term())

    async def _settle(self, action: Awaitable[None]) -> None:
        try:
            await action
        except TransportError as exc:
            # The transport redelivers what it did not hear about; the ledger absorbs it.
            log.debug("settling failed: %s", exc)

    def _event(
        self,
        kind: AuditKind,
        subject: str,
        *,
        origin: str = "",
        destination: str = "",
        detail: str = "",
    ) -> AuditEvent:
        return AuditEvent(
            kind=kind,
            actor=self.config.destination,
            subject=subject,
            origin=origin,
            destination=destination,
            detail=detail,
        )

    async def _audit(
        self,
        kind: AuditKind,
        subject: str,
        *,
        origin: str = "",
        destination: str = "",
        detail: str = "",
    ) -> None:
        event = self._event(kind, subject, origin=origin, destination=destination, detail=detail)
        await asyncio.to_thread(self.audit.append, event)

    # -- forwarding ------------------------------------------------------------------------------

    async def _forward_loop(self) -> None:
        failures = 0
        while True:
            await self._dirty_event.wait()
            await asyncio.sleep(self.config.forward_delay)
            self._dirty_event.clear()
            try:
                await self._forward_dirty()
            except (DataError, OSError, sqlite3.Error) as exc:
                self.stats.forward_failures += 1
                delay = self._backoff.delay(failures)
                failures += 1
                log.warning("forwarding failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                self._dirty_event.set()
            else:
                failures = 0

    async def _forward_dirty(self) -> None:
        by_period: dict[tuple[Period, str], list[Cell]] = {}
        for cell in sorted(self._dirty):
            by_period.setdefault((cell[0], cell[1]), []).append(cell)
        for (period, start), cells in by_period.items():
            # Counted before reading: a report accepted after the read bumps the count, and
            # the cell stays dirty for the next round.
            seen = {cell: self._dirty.get(cell) for cell in cells}
            children = await asyncio.to_thread(self.ledger.children, period, start)
            for cell in cells:
                members = [c for c in children if (c.scope.region, c.scope.industry) == cell[2:]]
                if members:
                    await self._forward_cell(cell, members)
                async with self._dirty_lock:
                    if self._dirty.get(cell) == seen[cell]:
                        del self._dirty[cell]
                        await asyncio.to_thread(self._forward.clear, cell)

    async def _forward_cell(self, cell: Cell, members: Sequence[Report]) -> None:
        config = self.config
        period, start, region, industry = cell
        scope = Scope(source=config.center_id, level=self._level, region=region, industry=industry)

        def build(revision: int) -> Report:
            return aggregate_report(
                members,
                scope=scope,
                period=period,
                period_start=start,
                catalog=config.catalog,
                revision=revision,
                created_at=_now(),
                breakdown_max_grade=config.breakdown_max_grade,
            )

        draft = build(0)
        digest = _digest(draft)
        if await asyncio.to_thread(self._forward.sent_digest, draft.report_id) == digest:
            self.stats.forward_unchanged += 1
            return
        revision = await asyncio.to_thread(self.ledger.next_revision, draft.report_id)
        report = dataclasses.replace(draft, revision=revision)
        for parent in config.parents:
            decision = config.export_policy.decide(report, parent, catalog=config.catalog)
            await self._audit_refusals(report, parent, decision.refused)
            if decision.allowed is None:
                continue
            signed = config.keys.sign(decision.allowed)
            await self.transport.publish(
                parent, encode_report(signed), message_id=signed.message_id
            )
            self.stats.forwarded += 1
            await self._audit(
                AuditKind.REPORT_FORWARDED,
                signed.message_id,
                origin=config.center_id,
                destination=parent,
                detail=f"{len(members)} reports, {len(signed.measures)} indicators",
            )
        await asyncio.to_thread(self._forward.record_sent, report.report_id, digest)

    async def _audit_refusals(
        self, report: Report, destination: str, refused: Sequence[Refusal]
    ) -> None:
        for refusal in refused:
            self.stats.export_refusals += 1
            await self._audit(
                AuditKind.EXPORT_REFUSED,
                report.message_id,
                origin=report.scope.source,
                destination=destination,
                detail=f"{refusal.indicator} ({refusal.grade}): {refusal.rule}",
            )


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """What one enterprise report did at each destination."""

    sent: tuple[str, ...]  # destinations that received (part of) it
    refused: dict[str, tuple[Refusal, ...]]  # destination → indicators kept back


class EnterpriseExporter:
    """The enterprise's side: policy, signature, audit, then publish to its centers.

    Args:
        transport: An open ``ReportTransport``.
        keys: The enterprise's key ring (its key id is the report's ``signer``).
        catalog: The catalog reports are validated against before they leave.
        audit: Where exports and refusals are recorded.
        destinations: The enterprise's regional and industry centers (``regional.east``,
            ``industry.C38``).
        policy: What may leave for each destination (default: general data only).
    """

    def __init__(
        self,
        *,
        transport: ReportTransport,
        keys: KeyRing,
        catalog: Catalog,
        audit: AuditLog,
        destinations: Sequence[str],
        policy: ExportPolicy | None = None,
    ) -> None:
        for destination in destinations:
            level, _ = parse_destination(destination)
            if level not in (Level.REGIONAL, Level.INDUSTRY):
                raise DataError(f"{destination}: an enterprise reports to sub-centers")
        self.transport = transport
        self.keys = keys
        self.catalog = catalog
        self.audit = audit
        self.destinations = tuple(destinations)
        self.policy = policy or ExportPolicy()

    async def export(self, report: Report) -> ExportOutcome:
        """Send ``report`` (any signature is replaced) to every destination the policy allows.

        Raises:
            ReportError: the report is not valid under the catalog (nothing is sent).
            TransportError: a destination did not accept it in time (retry: it is idempotent).
        """
        validate_report(report, self.catalog)
        if report.scope.level is not Level.ENTERPRISE:
            raise ReportError("EnterpriseExporter sends enterprise reports")
        sent: list[str] = []
        refused: dict[str, tuple[Refusal, ...]] = {}
        for destination in self.destinations:
            decision = self.policy.decide(report, destination, catalog=self.catalog)
            if decision.refused:
                refused[destination] = decision.refused
                for refusal in decision.refused:
                    await self._audit(
                        AuditKind.EXPORT_REFUSED,
                        report,
                        destination,
                        f"{refusal.indicator} ({refusal.grade}): {refusal.rule}",
                    )
            if decision.allowed is None:
                continue
            signed = self.keys.sign(decision.allowed)
            await self.transport.publish(
                destination, encode_report(signed), message_id=signed.message_id
            )
            sent.append(destination)
            await self._audit(
                AuditKind.EXPORT, report, destination, f"{len(signed.measures)} indicators"
            )
        return ExportOutcome(sent=tuple(sent), refused=refused)

    async def _audit(self, kind: AuditKind, report: Report, destination: str, detail: str) -> None:
        event = AuditEvent(
            kind=kind,
            actor=report.scope.source,
            subject=report.message_id,
            origin=report.scope.source,
            destination=destination,
            detail=detail,
        )
        await asyncio.to_thread(self.audit.append, event)

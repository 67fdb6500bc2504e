"""The equipment health service: health index, RUL, sensor anomalies and work orders, live.

Theory of operation
-------------------
::

    ingest commit ──on_commit()──> bounded queue (``queue_size`` groups; full: dropped, counted)
                                        │   never awaited by ingest beyond a put_nowait
                                        v
    worker: per device, samples in time order (out-of-order and duplicate instants counted,
            skipped)
        ├─ anomaly detectors, one per (device, float metric)  -> health_anomalies
        ├─ ConditionTracker (baseline profiles)               ─┐
        └─ cycle buffer -> RulPredictor (in a thread)          ├> estimate (+ model version)
                                                               v
            latest estimate (health_latest, every ``latest_every_s``), history (health_history,
            every ``history_every_s``), maintenance policy -> work order (health_work_orders)
    event poll (every ``event_poll_s``): ``repaired`` device events reset the device's baseline
            and detectors and are noted on its active work orders as a suggestion to close them

The tables live in the platform's metadata database (SQLite or PostgreSQL), in the service's own
``sa.MetaData``, created by ``open()``. On the first cycles of a RUL-model device after a start,
the device's recent cycles are read back from the time-series store (DuckDB or PostgreSQL, through
the ``TimeSeriesStore`` interface), so a restart does not blind the model.

What each estimate records: the method (``rul-model`` or ``baseline``), the model version that
made it (a registry version ``rul-...`` or the baseline method's version ``baseline-v1``), the
health index, the RUL with its unit (cycles or hours) or the reason there is none, and the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import sqlalchemy as sa

from tiangong.apps.health.anomaly import AnomalyFinding, SeriesAnomalyDetector
from tiangong.apps.health.condition import ConditionProfile, ConditionTracker
from tiangong.apps.health.errors import WorkOrderConflictError, WorkOrderNotFoundError
from tiangong.apps.health.profiles import (
    HealthSettings,
    MaintenancePolicy,
    ProfileEntry,
    RulModelProfile,
)
from tiangong.apps.health.workorders import (
    AUTOMATIC_CAUSES,
    FINAL_STATES,
    WorkOrderAction,
    WorkOrderState,
    next_state,
)
from tiangong.apps.phm.errors import PhmError
from tiangong.platform.database import utc
from tiangong.platform.errors import NotFoundError
from tiangong.platform.model import DataType, Device, ThingModel
from tiangong.platform.tsdb.base import Aggregate
from tiangong.resource import AsyncResource

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from tiangong.apps.phm.predictor import RulPredictor
    from tiangong.apps.phm.registry import ModelRegistry, ModelVersion
    from tiangong.platform.database import Database
    from tiangong.platform.ingest.pipeline import AcceptedSamples
    from tiangong.platform.registry import DeviceRegistry
    from tiangong.platform.tsdb.base import TimeSeriesStore

__all__ = [
    "BASELINE_METHOD_VERSION",
    "AnomalyRecord",
    "HealthEstimate",
    "HealthService",
    "WorkOrder",
    "health_tables",
]

_log = logging.getLogger(__name__)

#: The version of the baseline method, recorded as the "model version" of its estimates.
BASELINE_METHOD_VERSION: Final = "baseline-v1"
#: How far back the store is read for a RUL-model device's recent cycles after a start.
_WARM_UP_MS: Final = 30 * 60_000
_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_NAME = sa.String(64)
_TS = sa.DateTime(timezone=True)


def health_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table, sa.Table]:
    """Define the service's tables on ``metadata``: latest, history, anomalies, work orders."""
    latest = sa.Table(
        "health_latest",
        metadata,
        sa.Column("device_id", _NAME, primary_key=True),
        sa.Column("tenant_id", _NAME, nullable=False, index=True),
        sa.Column("site_id", _NAME, nullable=False),
        sa.Column("model_id", _NAME, nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("health_index", sa.Float, nullable=True),
        sa.Column("rul", sa.Float, nullable=True),
        sa.Column("rul_unit", sa.String(8), nullable=False),
        sa.Column("rul_reason", sa.String(200), nullable=True),
        sa.Column("driver", sa.String(130), nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    history = sa.Table(
        "health_history",
        metadata,
        sa.Column("id", _ID, primary_key=True),
        sa.Column("tenant_id", _NAME, nullable=False),
        sa.Column("device_id", _NAME, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("health_index", sa.Float, nullable=True),
        sa.Column("rul", sa.Float, nullable=True),
        sa.Column("rul_unit", sa.String(8), nullable=False),
        sa.Column("driver", sa.String(130), nullable=True),
        sa.Index("ix_health_history_device_at", "device_id", "at"),
    )
    anomalies = sa.Table(
        "health_anomalies",
        metadata,
        sa.Column("id", _ID, primary_key=True),
        sa.Column("tenant_id", _NAME, nullable=False),
        sa.Column("site_id", _NAME, nullable=False),
        sa.Column("device_id", _NAME, nullable=False),
        sa.Column("metric", _NAME, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Index("ix_health_anomalies_tenant_ts", "tenant_id", "ts"),
        sa.Index("ix_health_anomalies_device_ts", "device_id", "ts"),
    )
    orders = sa.Table(
        "health_work_orders",
        metadata,
        sa.Column("id", _ID, primary_key=True),
        sa.Column("tenant_id", _NAME, nullable=False, index=True),
        sa.Column("site_id", _NAME, nullable=False),
        sa.Column("device_id", _NAME, nullable=False),
        sa.Column("cause", _NAME, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("recommendation", sa.String(1000), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        # "<device>|<cause>" while the order is active, NULL once closed: unique, so at most one
        # active order per device and cause (NULLs never collide, in SQLite and PostgreSQL).
        sa.Column("active_key", sa.String(130), nullable=True, unique=True),
        sa.Column("health_index", sa.Float, nullable=True),
        sa.Column("rul", sa.Float, nullable=True),
        sa.Column("rul_unit", sa.String(8), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("opened_at", _TS, nullable=False),
        sa.Column("opened_by", sa.String(128), nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("scheduled_for", _TS, nullable=True),
        sa.Column("note", sa.String(1000), nullable=True),
        sa.Column("repair_reported_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
    )
    return latest, history, anomalies, orders


_metadata = sa.MetaData()
_latest, _history, _anomalies, _orders = health_tables(_metadata)


# -- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthEstimate:
    """A device's health estimate.

    Attributes:
        device_id: the device.
        tenant_id: its tenant.
        site_id: its site.
        model_id: its thing model.
        method: ``rul-model`` (a trained model) or ``baseline`` (own baseline and trend).
        model_version: the version that made the estimate (``rul-...`` or ``baseline-v1``).
        health_index: 1 healthy .. 0 end of life; None while a baseline is learnt.
        rul: remaining useful life in ``rul_unit``, or None (``rul_reason`` says why).
        rul_unit: ``cycles`` or ``hours``.
        rul_reason: why there is no RUL.
        driver: what drives the estimate (the worst indicator, or the model's sensors).
        detail: the figures behind it (levels, degradations, cycles seen, trend fit).
        updated_at: when it was made.
    """

    device_id: str
    tenant_id: str
    site_id: str
    model_id: str
    method: str
    model_version: str
    health_index: float | None
    rul: float | None
    rul_unit: str
    rul_reason: str | None
    driver: str | None
    detail: dict[str, Any]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class HealthPoint:
    """One stored point of a device's health history."""

    at: datetime
    method: str
    model_version: str
    health_index: float | None
    rul: float | None
    rul_unit: str
    driver: str | None


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """A stored sensor anomaly."""

    id: int
    tenant_id: str
    site_id: str
    device_id: str
    metric: str
    kind: str
    ts: datetime
    value: float
    score: float
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WorkOrderStep:
    """One step of a work order's life: who did what, when."""

    action: str
    state: str
    by: str
    at: datetime
    note: str | None = None


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """A maintenance work order.

    Attributes:
        id: its number.
        cause: ``health_low``, ``rul_low`` (opened by the health service) or a person's cause.
        recommendation: what to do and why, with the figures that opened it.
        state: where it is in its life (see ``workorders``).
        health_index, rul, rul_unit, model_version: the estimate that opened it (if any).
        opened_by: ``health-service`` or the person.
        steps: every step with who and when, oldest first.
        scheduled_for: when the work is planned, if scheduled.
        repair_reported_at: when the device reported a repair while the order was active
            (a suggestion to close it; a person decides).
    """

    id: int
    tenant_id: str
    site_id: str
    device_id: str
    cause: str
    title: str
    recommendation: str
    state: WorkOrderState
    health_index: float | None
    rul: float | None
    rul_unit: str | None
    model_version: str | None
    opened_at: datetime
    opened_by: str
    steps: list[WorkOrderStep]
    scheduled_for: datetime | None
    note: str | None
    repair_reported_at: datetime | None
    updated_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _order(row: sa.Row[Any]) -> WorkOrder:
    m = row._mapping
    return WorkOrder(
        id=int(m["id"]),
        tenant_id=m["tenant_id"],
        site_id=m["site_id"],
        device_id=m["device_id"],
        cause=m["cause"],
        title=m["title"],
        recommendation=m["recommendation"],
        state=WorkOrderState(m["state"]),
        health_index=m["health_index"],
        rul=m["rul"],
        rul_unit=m["rul_unit"],
        model_version=m["model_version"],
        opened_at=utc(m["opened_at"]) or _now(),
        opened_by=m["opened_by"],
        steps=[
            WorkOrderStep(
                action=s["action"],
                state=s["state"],
                by=s["by"],
                at=datetime.fromisoformat(s["at"]),
                note=s.get("note"),
            )
            for s in m["steps"]
        ],
        scheduled_for=utc(m["scheduled_for"]),
        note=m["note"],
        repair_reported_at=utc(m["repair_reported_at"]),
        updated_at=utc(m["updated_at"]) or _now(),
    )


def _estimate(row: sa.Row[Any]) -> HealthEstimate:
    m = row._mapping
    return HealthEstimate(
        device_id=m["device_id"],
        tenant_id=m["tenant_id"],
        site_id=m["site_id"],
        model_id=m["model_id"],
        method=m["method"],
        model_version=m["model_version"],
        health_index=m["health_index"],
        rul=m["rul"],
        rul_unit=m["rul_unit"],
        rul_reason=m["rul_reason"],
        driver=m["driver"],
        detail=dict(m["detail"] or {}),
        updated_at=utc(m["updated_at"]) or _now(),
    )


# -- per-device state ----------------------------------------------------------------------------


@dataclass(slots=True)
class _DeviceHealth:
    device: Device
    entry: ProfileEntry | None
    state_labels: list[str] | None
    watched: frozenset[str]
    tracker: ConditionTracker | None = None
    cycles: deque[tuple[int, tuple[float, ...]]] = field(default_factory=deque)
    new_cycles: int = 0
    warmed: bool = False
    last_ts: int | None = None
    state: float | None = None
    last_latest_write: float = -math.inf
    last_history_write: float = -math.inf
    last_version: str | None = None
    beyond: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class HealthCounters:
    """What the service has done and skipped (for tests, metrics and the API).

    Attributes:
        groups: commit groups processed.
        dropped_groups: commit groups dropped because the queue was full.
        out_of_order: sample instants skipped (not after the device's last one).
        invalid: values that are not numbers, skipped.
        duplicate_cycles: cycles seen again (same cycle number), skipped.
        cycle_resets: cycle counters that restarted (a new engine life).
        estimates: estimates made.
        anomalies: anomalies recorded.
        work_orders: work orders the service opened.
        failed_writes: database writes that failed (logged; the next estimate retries).
    """

    groups: int = 0
    dropped_groups: int = 0
    out_of_order: int = 0
    invalid: int = 0
    duplicate_cycles: int = 0
    cycle_resets: int = 0
    estimates: int = 0
    anomalies: int = 0
    work_orders: int = 0
    failed_writes: int = 0


class HealthService(AsyncResource):
    """Keeps every judged device's health, RUL, anomalies and maintenance work orders.

    Args:
        db: the platform's metadata database (the tables are created there).
        registry: the device registry (which device, which thing model).
        store: the time-series store (a RUL-model device's recent cycles after a start).
        data_dir: the platform's data directory (the RUL model registry is
            ``<data_dir>/models/phm``; LightGBM is loaded only when a model is first needed).
        settings: profiles, policies and thresholds.
    """

    def __init__(
        self,
        *,
        db: Database,
        registry: DeviceRegistry,
        store: TimeSeriesStore,
        data_dir: Path,
        settings: HealthSettings | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.store = store
        self.data_dir = data_dir
        self._models: ModelRegistry | None = None
        self.settings = settings or HealthSettings()
        self.counters = HealthCounters()
        self._queue: asyncio.Queue[list[AcceptedSamples]] = asyncio.Queue(self.settings.queue_size)
        self._devices: dict[str, _DeviceHealth] = {}
        self._detectors: dict[tuple[str, str], SeriesAnomalyDetector] = {}
        self._predictors: dict[str | None, RulPredictor | None] = {}
        self._active: set[str] = set()
        self._last_event_id = 0
        self._events_lock = asyncio.Lock()
        self._cpu_spent = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def models(self) -> ModelRegistry:
        """The RUL model registry (the shipped model and the versions trained here)."""
        if self._models is None:
            from tiangong.apps.phm.registry import (  # noqa: PLC0415 - loads LightGBM
                ModelRegistry,
                default_registry_root,
            )

            self._models = ModelRegistry(default_registry_root(self.data_dir))
        return self._models

    @property
    def engine(self) -> AsyncEngine:
        """The metadata database engine."""
        return self.db.engine

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the tables, load active work orders, start the worker and the event poll."""
        from tiangong.platform.database import device_events  # noqa: PLC0415

        async with self.engine.begin() as conn:
            await conn.run_sync(_metadata.create_all)
            keys = (
                await conn.execute(
                    sa.select(_orders.c.active_key).where(_orders.c.active_key.is_not(None))
                )
            ).scalars()
            self._active = {str(k) for k in keys}
            last = (await conn.execute(sa.select(sa.func.max(device_events.c.id)))).scalar()
            self._last_event_id = int(last or 0)
        self._tasks = [
            asyncio.create_task(self._work(), name="health-worker"),
            asyncio.create_task(self._poll_events(), name="health-events"),
        ]

    async def close(self, grace: float = 5.0) -> None:
        """Process what is queued (for at most ``grace`` seconds), then stop."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def drain(self) -> None:
        """Wait until every queued commit group is processed (tests, shutdown)."""
        await self._queue.join()

    # -- intake ----------------------------------------------------------------------------------

    async def on_commit(self, accepted: Sequence[AcceptedSamples]) -> None:
        """An ingest commit listener: queue the stored samples, never wait."""
        profiled = self.settings.anomaly_metrics == "profiled"
        wanted = [
            item
            for item in accepted
            if item.samples.numeric and (not profiled or item.model.id in self.settings.profiles)
        ]
        if not wanted:
            return
        try:
            self._queue.put_nowait(wanted)
        except asyncio.QueueFull:
            self.counters.dropped_groups += 1

    async def _work(self) -> None:
        share = self.settings.max_loop_share
        while True:
            group = await self._queue.get()
            try:
                for item in group:
                    await self._process(item)
                self.counters.groups += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad group must not stop health monitoring
                _log.exception("health: processing a commit group failed")
            finally:
                self._queue.task_done()
            # The detectors run on the event loop ingest runs on: after each group, stand back
            # long enough that health takes at most ``max_loop_share`` of the loop. Under a load
            # beyond that the queue fills and groups are dropped (counted), not ingest slowed.
            spent, self._cpu_spent = self._cpu_spent, 0.0
            if spent > 0 and share < 1:
                await asyncio.sleep(spent * (1 - share) / share)

    def _device_state(self, device: Device, model: ThingModel) -> _DeviceHealth:
        known = self._devices.get(device.id)
        if known is not None and known.device.model_version == device.model_version:
            known.device = device
            return known
        entry = self.settings.profiles.get(model.id)
        if entry is not None and not _applies(entry, model):
            entry = None  # a thing model of that id without the profile's properties
        labels: list[str] | None = None
        if entry is not None and isinstance(entry.method, ConditionProfile):
            state_metric = entry.method.state_metric
            spec = next((p for p in model.properties if p.id == state_metric), None)
            labels = list(spec.enum or []) if spec is not None else None
        watched = frozenset(
            p.id for p in model.properties if p.type is DataType.FLOAT and not p.writable
        )
        state = _DeviceHealth(device=device, entry=entry, state_labels=labels, watched=watched)
        if entry is not None and isinstance(entry.method, ConditionProfile):
            state.tracker = ConditionTracker(entry.method, labels)
        if entry is not None and isinstance(entry.method, RulModelProfile):
            state.cycles = deque(maxlen=entry.method.history)
        self._devices[device.id] = state
        return state

    async def _process(self, item: AcceptedSamples) -> None:
        dev = self._device_state(item.device, item.model)
        rows = _rows(item.samples.numeric)
        rul_profile = dev.entry is not None and isinstance(dev.entry.method, RulModelProfile)
        if rul_profile and not dev.warmed and rows:
            assert dev.entry is not None
            assert isinstance(dev.entry.method, RulModelProfile)
            dev.warmed = True
            await self._warm_up(dev, dev.entry.method, rows[0][0])
        started = time.perf_counter()
        operating_index = _operating_index(dev)
        findings: list[tuple[str, AnomalyFinding]] = []
        last_ts: int | None = None
        for ts, row in rows:
            if dev.last_ts is not None and ts <= dev.last_ts:
                self.counters.out_of_order += 1
                continue
            dev.last_ts = last_ts = ts
            state_metric = _state_metric(dev)
            if state_metric is not None and state_metric in row:
                dev.state = row[state_metric]
            operating = operating_index is None or (
                dev.state is not None and int(dev.state) in operating_index
            )
            for metric, value in row.items():
                if not math.isfinite(value):
                    self.counters.invalid += 1
                    continue
                if metric in dev.watched and operating:
                    detector = self._detector(dev.device.id, metric)
                    if detector is not None:
                        findings.extend((metric, f) for f in detector.update(ts, value))
            if dev.tracker is not None:
                dev.tracker.update(ts, row)
            if dev.entry is not None and isinstance(dev.entry.method, RulModelProfile):
                self._take_cycle(dev, dev.entry.method, row)
        self._cpu_spent += time.perf_counter() - started
        if findings:
            await self._record_anomalies(dev.device, findings)
        if last_ts is not None and dev.entry is not None:
            estimate = await self._estimate(dev, last_ts)
            if estimate is not None:
                await self._keep(dev, estimate)

    def _detector(self, device_id: str, metric: str) -> SeriesAnomalyDetector | None:
        key = (device_id, metric)
        detector = self._detectors.get(key)
        if detector is None:
            if len(self._detectors) >= self.settings.max_series:
                return None
            detector = self._detectors[key] = SeriesAnomalyDetector(self.settings.anomalies)
        return detector

    # -- RUL model devices -----------------------------------------------------------------------

    def _take_cycle(
        self, dev: _DeviceHealth, profile: RulModelProfile, row: dict[str, float]
    ) -> None:
        cycle_value = row.get(profile.cycle_metric)
        if cycle_value is None or not math.isfinite(cycle_value):
            return
        sensors = tuple(row.get(name, math.nan) for name in profile.sensors)
        if not all(math.isfinite(v) for v in sensors):
            self.counters.invalid += 1
            return
        cycle = int(cycle_value)
        if dev.cycles:
            last = dev.cycles[-1][0]
            if cycle == last:
                self.counters.duplicate_cycles += 1
                return
            if cycle < last:
                # A later instant with a smaller cycle number: the counter restarted (a new
                # engine, an overhaul). The old life's cycles would mislead the model.
                self.counters.cycle_resets += 1
                dev.cycles.clear()
        dev.cycles.append((cycle, sensors))
        dev.new_cycles += 1

    async def _warm_up(self, dev: _DeviceHealth, profile: RulModelProfile, first_ts: int) -> None:
        """Read the device's recent cycles back from the store (after a start)."""
        device = dev.device
        try:
            series = await self.store.device_series(device.tenant_id, device.id)
            names = (profile.cycle_metric, *profile.sensors)
            if not all(name in series for name in names):
                return
            columns: dict[str, dict[int, float]] = {}
            for name in names:
                points = await self.store.query(
                    series[name], first_ts - _WARM_UP_MS, first_ts, None, Aggregate.AVG
                )
                columns[name] = {ts: float(v) for ts, v in points if isinstance(v, (int, float))}
        except Exception:  # noqa: BLE001 - without history the model starts from live cycles
            _log.warning("health: cannot read %s's recent cycles from the store", device.id)
            return
        stamps = sorted(columns[profile.cycle_metric])[-profile.history :]
        for ts in stamps:
            row = {name: values.get(ts, math.nan) for name, values in columns.items()}
            self._take_cycle(dev, profile, row)
            dev.last_ts = ts
        dev.new_cycles = 0  # the live cycle that follows makes the first estimate

    def _predictor(self, version: str | None) -> RulPredictor | None:
        if version not in self._predictors:
            try:
                from tiangong.apps.phm.predictor import RulPredictor  # noqa: PLC0415 - LightGBM

                self._predictors[version] = RulPredictor.from_registry(self.models, version)
            except (PhmError, ImportError, OSError) as exc:
                # OSError: LightGBM's wheel needs the system's OpenMP (libgomp1 on Debian).
                _log.error(
                    "health: cannot load RUL model %s: %s; RUL-model devices get no estimate"
                    " (on a slim image: apt-get install libgomp1)",
                    version or "(default)",
                    exc,
                )
                self._predictors[version] = None
        return self._predictors[version]

    async def _estimate(self, dev: _DeviceHealth, now_ms: int) -> HealthEstimate | None:
        entry = dev.entry
        assert entry is not None
        device = dev.device
        common: dict[str, Any] = {
            "device_id": device.id,
            "tenant_id": device.tenant_id,
            "site_id": device.site_id,
            "model_id": device.model_id,
            "method": entry.method_name,
            "rul_unit": entry.rul_unit,
            "updated_at": datetime.fromtimestamp(now_ms / 1000, UTC),
        }
        if isinstance(entry.method, RulModelProfile):
            profile = entry.method
            if not dev.new_cycles or len(dev.cycles) < profile.min_cycles:
                return None
            dev.new_cycles = 0
            predictor = await asyncio.to_thread(self._predictor, profile.model_version)
            if predictor is None:
                return None
            matrix = np.array([[float(c), *sensors] for c, sensors in dev.cycles], dtype=np.float64)
            cycles = [
                {"cycle": row[0], **{f"s{i}": row[i] for i in range(1, 22)}} for row in matrix
            ]
            try:
                result = await asyncio.to_thread(predictor.estimate, cycles)
            except PhmError as exc:
                _log.warning("health: no RUL estimate for %s: %s", device.id, exc)
                return None
            return HealthEstimate(
                **common,
                model_version=result.model_version,
                health_index=round(result.health_index, 4),
                rul=round(result.rul_cycles, 1),
                rul_reason=None,
                driver="C-MAPSS sensors",
                detail={
                    "cycles_seen": result.cycles_seen,
                    "last_cycle": int(dev.cycles[-1][0]),
                    "rul_cap": predictor.version.rul_cap,
                },
            )
        tracker = dev.tracker
        assert tracker is not None
        condition = tracker.estimate(now_ms)
        trend = condition.rul
        return HealthEstimate(
            **common,
            model_version=BASELINE_METHOD_VERSION,
            health_index=None
            if condition.health_index is None
            else round(condition.health_index, 4),
            rul=None if trend.hours is None else round(trend.hours, 2),
            rul_reason=trend.reason,
            driver=condition.driver,
            detail={
                "degradation": {k: round(v, 4) for k, v in condition.degradation.items()},
                "levels": {
                    k: {"baseline": round(b, 6), "level": round(lv, 6)}
                    for k, (b, lv) in condition.levels.items()
                },
                "learning": condition.learning,
                "baseline_since": (
                    datetime.fromtimestamp(tracker.baseline_since_ms / 1000, UTC).isoformat()
                    if tracker.baseline_since_ms is not None
                    else None
                ),
                "trend": {
                    "slope_per_hour": trend.slope_per_hour,
                    "r2": None if trend.r2 is None else round(trend.r2, 3),
                    "points": trend.points,
                },
            },
        )

    # -- keeping estimates -----------------------------------------------------------------------

    async def _keep(self, dev: _DeviceHealth, estimate: HealthEstimate) -> None:
        self.counters.estimates += 1
        clock = time.monotonic()
        s = self.settings
        version_changed = estimate.model_version != dev.last_version
        try:
            if version_changed or clock - dev.last_latest_write >= s.latest_every_s:
                await self._write_latest(estimate)
                dev.last_latest_write = clock
            if estimate.health_index is not None and (
                version_changed or clock - dev.last_history_write >= s.history_every_s
            ):
                async with self.engine.begin() as conn:
                    await conn.execute(
                        sa.insert(_history).values(
                            tenant_id=estimate.tenant_id,
                            device_id=estimate.device_id,
                            at=estimate.updated_at,
                            method=estimate.method,
                            model_version=estimate.model_version,
                            health_index=estimate.health_index,
                            rul=estimate.rul,
                            rul_unit=estimate.rul_unit,
                            driver=estimate.driver,
                        )
                    )
                dev.last_history_write = clock
            dev.last_version = estimate.model_version
        except sa.exc.SQLAlchemyError:
            self.counters.failed_writes += 1
            _log.exception("health: could not store the estimate of %s", estimate.device_id)
        assert dev.entry is not None
        await self._apply_policy(dev, dev.entry.policy, estimate)

    async def _write_latest(self, estimate: HealthEstimate) -> None:
        values = {
            "tenant_id": estimate.tenant_id,
            "site_id": estimate.site_id,
            "model_id": estimate.model_id,
            "method": estimate.method,
            "model_version": estimate.model_version,
            "health_index": estimate.health_index,
            "rul": estimate.rul,
            "rul_unit": estimate.rul_unit,
            "rul_reason": (estimate.rul_reason or "")[:200] or None,
            "driver": estimate.driver,
            "detail": estimate.detail,
            "updated_at": estimate.updated_at,
        }
        async with self.engine.begin() as conn:
            done = await conn.execute(
                sa.update(_latest).where(_latest.c.device_id == estimate.device_id).values(**values)
            )
            if not done.rowcount:
                await conn.execute(
                    sa.insert(_latest).values(device_id=estimate.device_id, **values)
                )

    async def _apply_policy(
        self, dev: _DeviceHealth, policy: MaintenancePolicy, estimate: HealthEstimate
    ) -> None:
        checks: list[tuple[str, bool, str]] = []
        if estimate.health_index is not None and policy.health_below is not None:
            checks.append(
                (
                    "health_low",
                    estimate.health_index < policy.health_below,
                    f"health index {estimate.health_index:.2f} below {policy.health_below:.2f}",
                )
            )
        if policy.rul_below is not None and estimate.rul is not None:
            checks.append(
                (
                    "rul_low",
                    estimate.rul < policy.rul_below,
                    f"remaining useful life {estimate.rul:.0f} {estimate.rul_unit} below "
                    f"{policy.rul_below:g}",
                )
            )
        for cause, beyond, why in checks:
            count = dev.beyond.get(cause, 0) + 1 if beyond else 0
            dev.beyond[cause] = count
            if count < policy.confirm or f"{estimate.device_id}|{cause}" in self._active:
                continue
            what = f"driven by {estimate.driver}" if estimate.driver else ""
            title = f"Maintenance due on {dev.device.name or estimate.device_id}"
            recommendation = (
                f"Plan maintenance: {why} ({what}; {estimate.method} {estimate.model_version})"
                if what
                else f"Plan maintenance: {why} ({estimate.method} {estimate.model_version})"
            )
            if estimate.rul is not None and cause != "rul_low":
                recommendation += f"; about {estimate.rul:.0f} {estimate.rul_unit} left"
            with contextlib.suppress(WorkOrderConflictError):
                await self.open_work_order(
                    estimate.tenant_id,
                    estimate.device_id,
                    cause=cause,
                    title=title,
                    recommendation=recommendation + ".",
                    by="health-service",
                    estimate=estimate,
                )
                self.counters.work_orders += 1

    async def _record_anomalies(
        self, device: Device, findings: Sequence[tuple[str, AnomalyFinding]]
    ) -> None:
        rows = [
            {
                "tenant_id": device.tenant_id,
                "site_id": device.site_id,
                "device_id": device.id,
                "metric": metric,
                "kind": f.kind.value,
                "ts": datetime.fromtimestamp(f.ts_ms / 1000, UTC),
                "value": f.value,
                "score": f.score,
                "detail": f.detail,
            }
            for metric, f in findings
        ]
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(_anomalies), rows)
            self.counters.anomalies += len(rows)
        except sa.exc.SQLAlchemyError:
            self.counters.failed_writes += 1
            _log.exception("health: could not store %d anomalies of %s", len(rows), device.id)

    # -- device events ---------------------------------------------------------------------------

    async def _poll_events(self) -> None:
        while True:
            await asyncio.sleep(self.settings.event_poll_s)
            try:
                await self.check_events()
            except Exception:  # noqa: BLE001 - a failed poll is retried on the next one
                _log.exception("health: looking for repaired events failed")

    async def check_events(self) -> int:
        """Act on ``repaired`` device events stored since the last look; how many."""
        from tiangong.platform.database import device_events  # noqa: PLC0415

        batch = 1000
        # One look at a time (the poller and a caller may overlap), and the newest id is read
        # *before* the scan: an event stored between the two reads is then left for the next
        # look instead of being stepped over. This relies on ids committing in order, which
        # holds for the one ingest writer of a platform instance.
        async with self._events_lock:
            async with self.engine.connect() as conn:
                newest = (await conn.execute(sa.select(sa.func.max(device_events.c.id)))).scalar()
                bound = int(newest or 0)
                rows = (
                    await conn.execute(
                        sa.select(device_events.c.id, device_events.c.device_id, device_events.c.ts)
                        .where(device_events.c.id > self._last_event_id)
                        .where(device_events.c.id <= bound)
                        .where(device_events.c.event == "repaired")
                        .order_by(device_events.c.id)
                        .limit(batch)
                    )
                ).all()
            for row in rows:
                self._last_event_id = max(self._last_event_id, int(row.id))
                await self.repaired(row.device_id, utc(row.ts) or _now())
            if len(rows) < batch:
                self._last_event_id = max(self._last_event_id, bound)
        return len(rows)

    async def repaired(self, device_id: str, at: datetime) -> None:
        """A device reports a repair: learn its baseline again, note it on its active orders."""
        dev = self._devices.get(device_id)
        if dev is not None:
            if dev.tracker is not None:
                dev.tracker.reset(int(at.timestamp() * 1000))
            dev.cycles.clear()
            dev.beyond.clear()
        for (device, _metric), detector in self._detectors.items():
            if device == device_id:
                detector.reset()
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(_orders)
                .where(_orders.c.device_id == device_id, _orders.c.active_key.is_not(None))
                .values(repair_reported_at=at, updated_at=_now())
            )

    # -- work orders -----------------------------------------------------------------------------

    async def open_work_order(
        self,
        tenant_id: str,
        device_id: str,
        *,
        cause: str = "manual",
        title: str,
        recommendation: str = "",
        by: str,
        estimate: HealthEstimate | None = None,
    ) -> WorkOrder:
        """Open a work order for a device of the tenant.

        Raises:
            NotFoundError: no such device in the tenant.
            WorkOrderConflictError: an active order for the device and cause exists.
        """
        entry = self.registry.lookup(device_id)
        if entry is None or entry.device.tenant_id != tenant_id:
            raise NotFoundError("device", device_id)
        key = f"{device_id}|{cause}"
        if key in self._active:
            raise WorkOrderConflictError(f"{device_id} already has an active {cause} work order")
        now = _now()
        values = {
            "tenant_id": tenant_id,
            "site_id": entry.device.site_id,
            "device_id": device_id,
            "cause": cause,
            "title": title[:200],
            "recommendation": recommendation[:1000],
            "state": WorkOrderState.OPEN.value,
            "active_key": key,
            "health_index": estimate.health_index if estimate else None,
            "rul": estimate.rul if estimate else None,
            "rul_unit": estimate.rul_unit if estimate else None,
            "model_version": estimate.model_version if estimate else None,
            "opened_at": now,
            "opened_by": by[:128],
            "steps": [{"action": "open", "state": "open", "by": by[:128], "at": now.isoformat()}],
            "updated_at": now,
        }
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    sa.insert(_orders).values(**values).returning(_orders.c.id)
                )
                order_id = int(result.scalar_one())
        except sa.exc.IntegrityError as exc:
            self._active.add(key)  # another instance opened it first
            raise WorkOrderConflictError(
                f"{device_id} already has an active {cause} work order"
            ) from exc
        self._active.add(key)
        return await self.get_work_order(order_id, tenant_id)

    async def get_work_order(self, order_id: int, tenant_id: str | None) -> WorkOrder:
        """One work order, seen from a tenant (None: platform administrator).

        Raises:
            WorkOrderNotFoundError: no such order visible to the tenant.
        """
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(_orders).where(_orders.c.id == order_id))).first()
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise WorkOrderNotFoundError(order_id)
        return _order(row)

    async def work_orders(
        self,
        tenant_id: str | None,
        *,
        state: WorkOrderState | None = None,
        active: bool = False,
        device_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[WorkOrder], int]:
        """Work orders, newest first, and how many match."""
        where = []
        if tenant_id is not None:
            where.append(_orders.c.tenant_id == tenant_id)
        if state is not None:
            where.append(_orders.c.state == state.value)
        if active:
            where.append(_orders.c.active_key.is_not(None))
        if device_id is not None:
            where.append(_orders.c.device_id == device_id)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(_orders)
                    .where(*where)
                    .order_by(_orders.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(_orders).where(*where))
            ).scalar_one()
        return [_order(r) for r in rows], int(total)

    async def transition(
        self,
        order_id: int,
        tenant_id: str | None,
        action: WorkOrderAction,
        *,
        by: str,
        note: str | None = None,
        scheduled_for: datetime | None = None,
    ) -> WorkOrder:
        """Move a work order one step in its life, recording who and when.

        Raises:
            WorkOrderNotFoundError: no such order visible to the tenant.
            WorkOrderConflictError: the lifecycle does not allow the action now.
        """
        order = await self.get_work_order(order_id, tenant_id)
        target = next_state(order.state, action, order_id=order_id)
        now = _now()
        step: dict[str, Any] = {
            "action": action.value,
            "state": target.value,
            "by": by[:128],
            "at": now.isoformat(),
        }
        if note:
            step["note"] = note[:1000]
        steps = [
            {
                "action": s.action,
                "state": s.state,
                "by": s.by,
                "at": s.at.isoformat(),
                **({"note": s.note} if s.note else {}),
            }
            for s in order.steps
        ]
        changes: dict[str, Any] = {
            "state": target.value,
            "steps": [*steps, step],
            "updated_at": now,
        }
        if note:
            changes["note"] = note[:1000]
        if action is WorkOrderAction.SCHEDULE:
            changes["scheduled_for"] = scheduled_for
        if target in FINAL_STATES:
            changes["active_key"] = None
        async with self.engine.begin() as conn:
            done = await conn.execute(
                sa.update(_orders)
                .where(_orders.c.id == order_id, _orders.c.state == order.state.value)
                .values(**changes)
            )
        if not done.rowcount:
            raise WorkOrderConflictError(
                "the work order changed meanwhile; reload it", order_id=order_id
            )
        if target in FINAL_STATES:
            self._active.discard(f"{order.device_id}|{order.cause}")
            dev = self._devices.get(order.device_id)
            if dev is not None and order.cause in AUTOMATIC_CAUSES:
                dev.beyond.pop(order.cause, None)  # a new order needs fresh confirmation
        return await self.get_work_order(order_id, tenant_id)

    # -- reads -----------------------------------------------------------------------------------

    async def fleet(self, tenant_id: str | None) -> list[HealthEstimate]:
        """The latest estimate of every judged device (of a tenant), least healthy first."""
        query = sa.select(_latest)
        if tenant_id is not None:
            query = query.where(_latest.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [_estimate(r) for r in rows]
        items.sort(key=lambda e: (e.health_index is None, e.health_index or 0.0, e.device_id))
        return items

    async def history(
        self, device_id: str, tenant_id: str | None, *, limit: int = 500
    ) -> list[HealthPoint]:
        """A device's stored health history, oldest first (the last ``limit`` points).

        Raises:
            NotFoundError: no such device visible to the tenant.
        """
        entry = self.registry.lookup(device_id)
        if entry is None or (tenant_id is not None and entry.device.tenant_id != tenant_id):
            raise NotFoundError("device", device_id)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(_history)
                    .where(_history.c.device_id == device_id)
                    .order_by(_history.c.at.desc(), _history.c.id.desc())
                    .limit(limit)
                )
            ).all()
        return [
            HealthPoint(
                at=utc(r.at) or _now(),
                method=r.method,
                model_version=r.model_version,
                health_index=r.health_index,
                rul=r.rul,
                rul_unit=r.rul_unit,
                driver=r.driver,
            )
            for r in reversed(rows)
        ]

    async def anomalies(
        self,
        tenant_id: str | None,
        *,
        device_id: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AnomalyRecord], int]:
        """Stored sensor anomalies, newest first, and how many match."""
        where = []
        if tenant_id is not None:
            where.append(_anomalies.c.tenant_id == tenant_id)
        if device_id is not None:
            where.append(_anomalies.c.device_id == device_id)
        if kind is not None:
            where.append(_anomalies.c.kind == kind)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(_anomalies)
                    .where(*where)
                    .order_by(_anomalies.c.ts.desc(), _anomalies.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(_anomalies).where(*where))
            ).scalar_one()
        return [
            AnomalyRecord(
                id=int(r.id),
                tenant_id=r.tenant_id,
                site_id=r.site_id,
                device_id=r.device_id,
                metric=r.metric,
                kind=r.kind,
                ts=utc(r.ts) or _now(),
                value=float(r.value),
                score=float(r.score),
                detail=dict(r.detail or {}),
            )
            for r in rows
        ], int(total)

    async def model_versions(self) -> list[ModelVersion]:
        """The RUL model registry's versions, oldest first (the shipped one first)."""
        return await asyncio.to_thread(lambda: self.models.versions())  # noqa: PLW0108 - loads there


# -- helpers -------------------------------------------------------------------------------------


def _rows(numeric: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[tuple[int, dict[str, float]]]:
    """Columns (metric -> (ts, values)) as instants in time order (metric -> value at each)."""
    instants: dict[int, dict[str, float]] = {}
    for metric, (stamps, values) in numeric.items():
        for ts, value in zip(stamps.tolist(), values.tolist(), strict=True):
            instants.setdefault(int(ts), {})[metric] = float(value)
    return sorted(instants.items())


def _applies(entry: ProfileEntry, model: ThingModel) -> bool:
    """Whether the thing model has every property the profile reads."""
    method = entry.method
    needed = (
        {method.cycle_metric, *method.sensors}
        if isinstance(method, RulModelProfile)
        else set(method.metrics)
    )
    return needed <= {p.id for p in model.properties}


def _state_metric(dev: _DeviceHealth) -> str | None:
    if dev.entry is not None and isinstance(dev.entry.method, ConditionProfile):
        return dev.entry.method.state_metric
    return None


def _operating_index(dev: _DeviceHealth) -> set[int] | None:
    """The state indices in which the device's sensors are judged (None: always)."""
    if dev.state_labels is None or dev.entry is None:
        return None
    method = dev.entry.method
    if not isinstance(method, ConditionProfile):
        return None
    return {i for i, label in enumerate(dev.state_labels) if label in method.operating}


def profiles_for(models: Iterable[ThingModel], settings: HealthSettings) -> dict[str, str]:
    """Thing model id -> health method, for the models a tenant has (documentation, API)."""
    return {m.id: settings.profiles[m.id].method_name for m in models if m.id in settings.profiles}

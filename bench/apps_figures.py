"""How long the OEE and energy apps take to answer a plant engineer, over a month of telemetry.

One tenant, one site in Asia/Shanghai with the default shift calendar (A 06-14, B 14-22,
C 22-06), ``--machines`` CNC machining centers (the simulator's ``cnc`` thing model, which has
an OEE production profile) in lines of five, and one feeder meter (``meter`` model) per line.
``--days`` of telemetry end at ``--end`` (a fixed past time: 1 November 2026, 06:00 in
Shanghai, the end of October's last production day), plus one lead-in day before, generated
with a seeded numpy generator and written with ``TimeSeriesStore.write()`` (no MQTT):

- ``state`` (enum ``idle/setup/running/down``): a new state every 2 to 10 minutes, reported on
  each change and at least every 60 s (the edge gateway's report-by-exception heartbeat);
- ``parts_good`` and ``parts_bad``: cumulative counters, one reading of both every 30 to 60 s,
  rising while the machine runs (a cycle of 45 to 90 s, about 2 % scrap), both reset to zero
  once mid-range (an operator's ``reset_counters``), as the ``cnc`` model has no energy counter;
- ``power`` (kW) every ``--power-every-s`` seconds (10 by default), by state, with noise; one
  machine in seven draws a lot while idle (a hydraulic unit left on), for the idle-consumption
  check;
- per line, the meter's ``energy`` counter (kWh) every 60 s: its machines' power plus 6 kW of
  base load, integrated;
- a ``fault`` device event (with a code) at the start of every ``down`` run, in the registry's
  ``device_events``, for the OEE downtime reasons.

Points are written a UTC day at a time, all series interleaved in time order, as live ingest
lays them out; the rollups are refreshed once after the load. The registry (devices, sites,
thing models, events) is SQLite, as the platform's default metadata database, whichever store
holds the telemetry. Loading is timed and printed, but is not what this benchmark is about.

Then each question is asked ``--repeat`` times; the first call (cold: right after the load) is
reported apart from the median and maximum of the others (warm). ``OeeService.report`` caches
nothing; ``OeeService.indicator`` keeps days that ended over an hour ago, so its cold figure
uses a new service for every call and its warm figure one service whose days are settled.

1. OEE of one machine, its last production day, by shift.
2. OEE of the site (all machines) over all days, by shift and by production day.
3. The enterprise OEE indicator (``OeeService.indicator``) of the tenant over one UTC day, and
   over all days (what the enterprise reporter's monthly report asks; measured twice only).
4. Energy (``EnergyService.consumption``) of the site over all days by day and by hour (each
   device listed), of one line, of one machine; and ``EnergyService.anomalies`` of the site
   over its last day (which reads the 28 days before it per hour as the baseline).
5. Memory: the process's RSS after the load, its peak while the questions were asked (the
   high-water mark is reset after the load via ``/proc/self/clear_refs``), and the peak of
   Python allocations (tracemalloc) of one site OEE report and one site energy report.

Figures are printed as a table and written to ``bench/out/apps-figures-<store>-<time>.json``.

    .venv/bin/python bench/apps_figures.py                      # DuckDB, 20 machines x 31 days
    .venv/bin/python bench/apps_figures.py --postgres postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python bench/apps_figures.py --machines 5 --days 3 --repeat 2   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np
import numpy.typing as npt
import psycopg
from rich.console import Console
from rich.table import Table

from _ingest_procfs import cpu_model
from tiangong.apps.energy.core import Granularity
from tiangong.apps.energy.service import EnergyService
from tiangong.apps.oee.calendar import Grouping
from tiangong.apps.oee.service import OeeService
from tiangong.platform.database import Database, sqlite_url
from tiangong.platform.model import Site, Tenant
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tsdb.base import PointBatch, SeriesKey, TimeSeriesStore
from tiangong.platform.tsdb.duckdb_store import DuckDBStore
from tiangong.platform.tsdb.postgres_store import PostgresStore
from tiangong.sim.thing_models import THING_MODELS

# Wide enough for the table when the output is a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 150)

OUT_DIR: Final = Path(__file__).resolve().parent / "out"
TENANT: Final = "bench"
SITE: Final = "plant"
TIMEZONE: Final = "Asia/Shanghai"
DEFAULT_END: Final = "2026-11-01T06:00:00+08:00"
BENCH_DATABASE: Final = "tiangong_bench_apps"
SECOND: Final = 1000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
LINE_SIZE: Final = 5
#: The ``cnc`` model's state enum, in its order (the stored value is the label's index).
CNC_STATES: Final = tuple(
    next(p for p in THING_MODELS["cnc"].properties if p.id == "state").enum or ()
)
IDLE, SETUP, RUNNING, DOWN = (CNC_STATES.index(s) for s in ("idle", "setup", "running", "down"))
#: How often a state is drawn (idle, setup, running, down: in CNC_STATES order).
STATE_WEIGHTS: Final = {IDLE: 0.2, SETUP: 0.06, RUNNING: 0.62, DOWN: 0.12}
#: kW drawn in each state (before the machine's own factor and noise).
STATE_KW: Final = {IDLE: 2.0, SETUP: 4.0, RUNNING: 15.0, DOWN: 0.8}
FAULT_CODES: Final = ("SPINDLE_OVERLOAD", "TOOL_BREAKAGE", "COOLANT_LOW", "AXIS_ALARM", "JAM")
BASE_LOAD_KW: Final = 6.0

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the OEE and energy apps' answers over generated stored telemetry."
    )
    parser.add_argument("--machines", type=int, default=20, help="CNC machines at the site")
    parser.add_argument("--days", type=int, default=31, help="days of telemetry asked about")
    parser.add_argument(
        "--end", default=DEFAULT_END, help="end of the data (ISO 8601 with offset, in the past)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="calls per question (>= 2)")
    parser.add_argument("--power-every-s", type=float, default=10.0, help="power sample period")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated telemetry")
    parser.add_argument(
        "--postgres",
        metavar="DSN",
        help="measure PostgresStore instead of DuckDB; DSN is an admin connection, the"
        f" benchmark creates and drops the database {BENCH_DATABASE!r} there",
    )
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the Python-allocation peaks"
    )
    args = parser.parse_args(argv)
    if args.repeat < 2:
        parser.error("--repeat must be at least 2 (one cold call, then warm ones)")
    if args.machines < 1 or args.days < 1:
        parser.error("--machines and --days must be at least 1")
    end = datetime.fromisoformat(args.end)
    if end.tzinfo is None or end >= datetime.now(UTC):
        parser.error("--end must carry a UTC offset and lie in the past")
    return args


# -- the machine facts ---------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "system": f"{platform.system()} {platform.release()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _status_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux 4.0+); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """The RSS high-water mark (since the last reset), MiB."""
    hwm = _status_kib("VmHWM")
    if hwm is None:  # not Linux: the whole life of the process
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return hwm / 1024


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return float("nan") if kib is None else kib / 1024


# -- the generated plant -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """The time frame: data from ``data_start_ms`` (a lead-in day) to ``end_ms``."""

    machines: int
    days: int
    start_ms: int
    end_ms: int
    data_start_ms: int
    power_every_ms: int
    seed: int

    @property
    def lines(self) -> int:
        return -(-self.machines // LINE_SIZE)


@dataclass(slots=True)
class Series:
    """One series' generated points."""

    metric: str
    device_id: str
    ts: I64
    value: F64


@dataclass(slots=True)
class Machine:
    device_id: str
    line: str
    series: list[Series]
    power_grid_kw: F64  # on the common power grid, for the line's meter
    faults: list[tuple[int, str]]


def machine_id(index: int) -> str:
    return f"cnc-{index + 1:02d}"


def line_of(index: int) -> str:
    return f"L{index // LINE_SIZE + 1}"


def generate_machine(plan: Plan, index: int, grid: I64) -> Machine:
    """One CNC's state, part counters, power and faults (module docstring)."""
    rng = np.random.default_rng([plan.seed, index])
    t0, end = plan.data_start_ms, plan.end_ms
    # State runs of 2 to 10 minutes; the last one is cut at the end.
    n = int((end - t0) / (2 * MINUTE)) + 2
    durations = rng.integers(2 * MINUTE, 10 * MINUTE, size=n, endpoint=True)
    starts = t0 + np.concatenate(([0], np.cumsum(durations)[:-1]))
    keep = starts < end
    starts, durations = starts[keep], durations[keep]
    durations = np.minimum(durations, end - starts)
    weights = np.array([STATE_WEIGHTS[s] for s in range(len(CNC_STATES))])
    running_share = rng.uniform(0.85, 1.15)  # machines differ in how busy they are
    weights[RUNNING] *= running_share
    labels = rng.choice(len(CNC_STATES), size=len(starts), p=weights / weights.sum())
    # Report by exception: each change, then every 60 s while it lasts.
    counts = -(-durations // MINUTE)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    state_ts = np.repeat(starts, counts) + (np.arange(counts.sum()) - first) * MINUTE
    state_value = np.repeat(labels, counts).astype(np.float64)

    # Parts: made one per cycle while running.
    cycle_ms = rng.uniform(45, 90) * SECOND
    running_ms = np.where(labels == RUNNING, durations, 0)
    run_before = np.concatenate(([0], np.cumsum(running_ms)[:-1]))

    def produced(at: I64) -> I64:
        j = np.searchsorted(starts, at, side="right") - 1
        ran = run_before[j] + np.clip(at - starts[j], 0, running_ms[j])
        made: I64 = (ran // cycle_ms).astype(np.int64)
        return made

    gaps = rng.uniform(30, 60, size=int((end - t0) / (30 * SECOND)) + 2) * SECOND
    count_ts = (t0 + np.cumsum(gaps)).astype(np.int64)
    count_ts = count_ts[count_ts < end]
    made = produced(count_ts)
    reset_at = plan.start_ms + (plan.days * DAY) // 2 + int(rng.integers(0, 8 * HOUR))
    after = count_ts >= reset_at
    made_since = np.where(after, made - produced(np.array([reset_at]))[0], made)
    scrap_rate = rng.uniform(0.01, 0.03)
    bad = np.floor(made_since * scrap_rate)
    good = made_since - bad
    good_base, bad_base = float(rng.integers(1_000, 50_000)), float(rng.integers(10, 900))
    good = np.where(after, good, good + good_base)
    bad = np.where(after, bad, bad + bad_base)

    # Power on the common grid, by state.
    j = np.searchsorted(starts, grid, side="right") - 1
    level = np.array([STATE_KW[s] for s in range(len(CNC_STATES))])
    if index % 7 == 3:  # a hydraulic unit left on while idle
        level[IDLE] = 9.0
    factor = rng.uniform(0.8, 1.2)
    kw = level[labels[j]] * factor + rng.normal(0.0, 0.4, size=len(grid))
    kw = np.clip(kw, 0.0, None)

    down = np.flatnonzero(labels == DOWN)
    codes = rng.integers(0, len(FAULT_CODES), size=len(down))
    faults = [
        (int(starts[k]) + 2 * SECOND, FAULT_CODES[int(c)]) for k, c in zip(down, codes, strict=True)
    ]
    device = machine_id(index)
    return Machine(
        device_id=device,
        line=line_of(index),
        series=[
            Series("state", device, state_ts.astype(np.int64), state_value),
            Series("parts_good", device, count_ts, good.astype(np.float64)),
            Series("parts_bad", device, count_ts, bad.astype(np.float64)),
            Series("power", device, grid, kw),
        ],
        power_grid_kw=kw,
        faults=faults,
    )


def meter_series(plan: Plan, line: str, grid: I64, kw: F64, seed: int) -> Series:
    """A feeder meter's kWh counter every minute: its machines' power plus base load."""
    rng = np.random.default_rng([plan.seed, 10_000 + seed])
    total_kw = kw + BASE_LOAD_KW
    hours = np.diff(grid) / HOUR
    cumulative = np.concatenate(([0.0], np.cumsum((total_kw[1:] + total_kw[:-1]) / 2 * hours)))
    ts = np.arange(plan.data_start_ms, plan.end_ms, MINUTE, dtype=np.int64)
    kwh = float(rng.integers(100_000, 2_000_000)) + np.interp(ts, grid, cumulative)
    return Series("energy", f"meter-{line}", ts, np.round(kwh, 2))


# -- loading -------------------------------------------------------------------------------------


@dataclass(slots=True)
class LoadFigures:
    points: int = 0
    series: int = 0
    events: int = 0
    generate_s: float = 0.0
    write_s: float = 0.0
    writes: int = 0
    rollup_s: float = 0.0
    register_s: float = 0.0


async def register(registry: DeviceRegistry, plan: Plan) -> None:
    await registry.create_tenant(Tenant(id=TENANT, name="Bench Machining Co."))
    await registry.create_site(Site(tenant_id=TENANT, id=SITE, name="Plant", timezone=TIMEZONE))
    for kind in ("cnc", "meter"):
        await registry.put_thing_model(TENANT, THING_MODELS[kind])
    for index in range(plan.machines):
        await registry.register_device(
            tenant_id=TENANT,
            site_id=SITE,
            device_id=machine_id(index),
            model_id="cnc",
            attributes={"line": line_of(index)},
        )
    for k in range(plan.lines):
        line = f"L{k + 1}"
        await registry.register_device(
            tenant_id=TENANT,
            site_id=SITE,
            device_id=f"meter-{line}",
            model_id="meter",
            attributes={"line": line},
        )


async def load(store: TimeSeriesStore, registry: DeviceRegistry, plan: Plan) -> LoadFigures:
    figures = LoadFigures()
    began = time.perf_counter()
    await register(registry, plan)
    figures.register_s = time.perf_counter() - began

    began = time.perf_counter()
    grid = np.arange(plan.data_start_ms, plan.end_ms, plan.power_every_ms, dtype=np.int64)
    machines = [generate_machine(plan, i, grid) for i in range(plan.machines)]
    series: list[Series] = [s for m in machines for s in m.series]
    for k in range(plan.lines):
        line = f"L{k + 1}"
        kw = np.sum([m.power_grid_kw for m in machines if m.line == line], axis=0)
        series.append(meter_series(plan, line, grid, kw, k))
    for m in machines:
        m.power_grid_kw = np.empty(0)
    figures.generate_s = time.perf_counter() - began

    ids = await store.series_ids([SeriesKey(TENANT, s.device_id, s.metric) for s in series])
    figures.series = len(ids)
    # A UTC day per write, every series interleaved in time order (as live ingest lays it out).
    day = plan.data_start_ms - plan.data_start_ms % DAY
    while day < plan.end_ms:
        parts_ts: list[I64] = []
        parts_id: list[npt.NDArray[np.int32]] = []
        parts_value: list[F64] = []
        for sid, s in zip(ids, series, strict=True):
            lo, hi = np.searchsorted(s.ts, [day, day + DAY])
            parts_ts.append(s.ts[lo:hi])
            parts_value.append(s.value[lo:hi])
            parts_id.append(np.full(hi - lo, sid, dtype=np.int32))
        ts = np.concatenate(parts_ts)
        order = np.argsort(ts, kind="stable")
        batch = PointBatch(
            series_id=np.concatenate(parts_id)[order],
            ts=ts[order],
            value=np.concatenate(parts_value)[order],
        )
        if len(batch):
            began = time.perf_counter()
            await store.write(batch)
            figures.write_s += time.perf_counter() - began
            figures.points += len(batch)
            figures.writes += 1
        day += DAY
    began = time.perf_counter()
    await store.refresh_rollups()
    figures.rollup_s = time.perf_counter() - began

    events = [
        {
            "tenant_id": TENANT,
            "site_id": SITE,
            "device_id": m.device_id,
            "ts": datetime.fromtimestamp(ts_ms / 1000, UTC),
            "event": "fault",
            "severity": "major",
            "data": {"code": code},
        }
        for m in machines
        for ts_ms, code in m.faults
    ]
    began = time.perf_counter()
    for i in range(0, len(events), 5_000):
        await registry.record_events(events[i : i + 5_000])
    figures.register_s += time.perf_counter() - began
    figures.events = len(events)
    return figures


# -- timing --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Timing:
    """One question's calls: the first (cold) and the others (warm), seconds."""

    label: str
    first_s: float
    warm_s: list[float] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.label,
            "first_s": round(self.first_s, 4),
            "warm_median_s": round(statistics.median(self.warm_s), 4) if self.warm_s else None,
            "warm_max_s": round(max(self.warm_s), 4) if self.warm_s else None,
            "calls": 1 + len(self.warm_s),
            "note": self.note,
        }


async def timed(label: str, repeat: int, call: Callable[[], Awaitable[Any]]) -> tuple[Timing, Any]:
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = await call()
        times.append(time.perf_counter() - began)
    console.print(
        f"  {label}: first {times[0]:.3f} s, then median {statistics.median(times[1:]):.3f} s"
    )
    return Timing(label, times[0], times[1:]), result


async def traced_peak_mib(call: Callable[[], Awaitable[Any]]) -> float:
    """Peak of Python allocations during one call (tracemalloc), MiB."""
    gc.collect()
    tracemalloc.start()
    try:
        await call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


async def ask(
    args: argparse.Namespace, plan: Plan, store: TimeSeriesStore, registry: DeviceRegistry
) -> tuple[list[Timing], dict[str, Any]]:
    """Every question, timed; and what the answers said (so the figures are of real answers)."""
    oee = OeeService(registry=registry, store=store, db=registry.db)
    energy = EnergyService(registry, store)
    start, end, days = plan.start_ms, plan.end_ms, plan.days
    last_day = end - DAY
    one = machine_id(0)
    timings: list[Timing] = []
    answers: dict[str, Any] = {}
    site = f"site ({plan.machines} machines)"

    t, report = await timed(
        "OEE, 1 machine, 1 day, by shift",
        args.repeat,
        lambda: oee.report(TENANT, start_ms=last_day, end_ms=end, device_id=one),
    )
    timings.append(t)
    answers["oee_machine_day"] = _pct(report.total.oee)

    t, report = await timed(
        f"OEE, {site}, {days} days, by shift",
        args.repeat,
        lambda: oee.report(TENANT, start_ms=start, end_ms=end, by=Grouping.SHIFT, site_id=SITE),
    )
    t.note = f"{len(report.periods)} shifts"
    timings.append(t)
    f = report.total
    answers["oee_site"] = {
        "oee": _pct(f.oee),
        "availability": _pct(f.availability),
        "effectiveness": _pct(f.effectiveness),
        "quality": _pct(f.quality),
        "good_parts": f.good,
        "counter_resets": f.data_quality.counter_resets,
        "unknown_h": round(f.unknown_ms / HOUR, 2),
    }

    t, report = await timed(
        f"OEE, {site}, {days} days, by day",
        args.repeat,
        lambda: oee.report(TENANT, start_ms=start, end_ms=end, by=Grouping.DAY, site_id=SITE),
    )
    t.note = f"{len(report.periods)} days"
    timings.append(t)

    # The indicator over the last whole UTC day of the data.
    utc_day = end - end % DAY - DAY
    cold, _ = await timed(
        "OEE indicator, tenant, 1 UTC day, new service each call",
        args.repeat,
        lambda: OeeService(registry=registry, store=store, db=registry.db).indicator(
            TENANT, utc_day, utc_day + DAY
        ),
    )
    cold.note = "nothing settled yet"
    timings.append(cold)
    warm, (weighted, hours) = await timed(
        "OEE indicator, tenant, 1 UTC day, settled",
        args.repeat,
        lambda: oee.indicator(TENANT, utc_day, utc_day + DAY),
    )
    warm.note = "first call computes, later ones read the settled day"
    timings.append(warm)
    answers["oee_indicator"] = _pct(weighted / hours if hours else None)
    # The enterprise reporter also asks for the month: every UTC day of it, once, then settled.
    fresh = OeeService(registry=registry, store=store, db=registry.db)
    calls: list[float] = []
    for _ in range(2):
        began = time.perf_counter()
        await fresh.indicator(TENANT, start, end)
        calls.append(time.perf_counter() - began)
    console.print(f"  OEE indicator, {days} days: first {calls[0]:.3f} s, then {calls[1]:.3f} s")
    timings.append(
        Timing(
            f"OEE indicator, tenant, {days} days (the monthly report)",
            calls[0],
            calls[1:],
            note="one new service: the first call computes every UTC day, the second reads"
            " them settled",
        )
    )

    t, erep = await timed(
        f"energy, {site} + {plan.lines} meters, {days} days, by day",
        args.repeat,
        lambda: energy.consumption(TENANT, site_id=SITE, start_ms=start, end_ms=end),
    )
    t.note = f"{len(erep.devices)} device rows, resolution {erep.resolution_ms // 1000} s"
    timings.append(t)
    answers["energy_site"] = {
        "kwh": round(erep.totals.kwh) if erep.totals else None,
        "cost": round(erep.totals.cost) if erep.totals else None,
        "kwh_per_good_part": (
            round(erep.totals.kwh_per_unit, 3) if erep.totals and erep.totals.kwh_per_unit else None
        ),
    }

    t, erep = await timed(
        f"energy, site, {days} days, by hour",
        args.repeat,
        lambda: energy.consumption(
            TENANT, site_id=SITE, start_ms=start, end_ms=end, by=Granularity.HOUR
        ),
    )
    t.note = f"{len(erep.buckets)} buckets"
    timings.append(t)

    t, _ = await timed(
        f"energy, line L1 ({min(plan.machines, LINE_SIZE)} machines + meter), {days} days, by day",
        args.repeat,
        lambda: energy.consumption(TENANT, site_id=SITE, line="L1", start_ms=start, end_ms=end),
    )
    timings.append(t)

    t, _ = await timed(
        f"energy, 1 machine (power), {days} days, by day",
        args.repeat,
        lambda: energy.consumption(TENANT, device_id=one, start_ms=start, end_ms=end),
    )
    timings.append(t)

    t, anomalies = await timed(
        "energy anomalies, site, last day (28-day hourly baseline)",
        args.repeat,
        lambda: energy.anomalies(TENANT, site_id=SITE, start_ms=last_day, end_ms=end),
    )
    kinds: dict[str, int] = {}
    for a in anomalies.anomalies:
        kinds[str(a.anomaly.kind)] = kinds.get(str(a.anomaly.kind), 0) + 1
    t.note = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none found"
    timings.append(t)
    answers["anomalies"] = kinds
    return timings, answers


# -- the stores ----------------------------------------------------------------------------------


@asynccontextmanager
async def opened_store(args: argparse.Namespace, tmp: Path) -> AsyncIterator[TimeSeriesStore]:
    store: TimeSeriesStore
    if args.postgres is None:
        store = DuckDBStore(path=tmp / "telemetry.duckdb")
        await store.open()
        try:
            yield store
        finally:
            await store.close()
        return
    admin = await psycopg.AsyncConnection.connect(args.postgres, autocommit=True)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
        try:
            store = PostgresStore(
                dsn=psycopg.conninfo.make_conninfo(args.postgres, dbname=BENCH_DATABASE)
            )
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    end = datetime.fromisoformat(args.end)
    end_ms = int(end.timestamp() * 1000)
    start_ms = int((end - timedelta(days=args.days)).timestamp() * 1000)
    plan = Plan(
        machines=args.machines,
        days=args.days,
        start_ms=start_ms,
        end_ms=end_ms,
        data_start_ms=start_ms - DAY,
        power_every_ms=int(args.power_every_s * 1000),
        seed=args.seed,
    )
    backend = "postgres" if args.postgres else "duckdb"
    facts = machine_facts()
    console.print(
        f"machine: {facts['cpu']}, {facts['cores']} cores, Python {facts['python']},"
        f" {facts['system']}, load average {facts['load_average']}"
    )
    console.print(
        f"store: {backend}; {plan.machines} CNC machines in {plan.lines} lines (+ a meter each),"
        f" {plan.days} days to {end.isoformat()} ({TIMEZONE}), plus a lead-in day"
    )
    with tempfile.TemporaryDirectory(prefix="tiangong-bench-apps-") as tmp_dir:
        tmp = Path(tmp_dir)
        db = Database(url=sqlite_url(tmp / "registry.sqlite3"))
        await db.open()
        try:
            registry = DeviceRegistry(db)
            await registry.refresh()
            async with opened_store(args, tmp) as store:
                with console.status("generating and writing telemetry"):
                    loaded = await load(store, registry, plan)
                console.print(
                    f"loaded {loaded.points:,} points in {loaded.series} series"
                    f" ({loaded.writes} writes): generated in {loaded.generate_s:.1f} s,"
                    f" written in {loaded.write_s:.1f} s"
                    f" ({loaded.points / loaded.write_s:,.0f} points/s), rollups refreshed in"
                    f" {loaded.rollup_s:.1f} s; {loaded.events:,} fault events and the registry"
                    f" in {loaded.register_s:.1f} s"
                )
                gc.collect()
                rss_after_load = rss_mib()
                peak_reset = reset_peak_rss()
                console.print("asking (first call, then the median of the others):")
                timings, answers = await ask(args, plan, store, registry)
                peak_queries = peak_rss_mib()
                traced: dict[str, float] = {}
                if not args.no_tracemalloc:
                    with console.status("tracemalloc peaks"):
                        traced["oee_site_by_shift_mib"] = await traced_peak_mib(
                            lambda: OeeService(
                                registry=registry, store=store, db=registry.db
                            ).report(
                                TENANT, start_ms=plan.start_ms, end_ms=plan.end_ms, site_id=SITE
                            )
                        )
                        traced["energy_site_by_day_mib"] = await traced_peak_mib(
                            lambda: EnergyService(registry, store).consumption(
                                TENANT, site_id=SITE, start_ms=plan.start_ms, end_ms=plan.end_ms
                            )
                        )
        finally:
            await db.close()
    memory = {
        "rss_after_load_mib": round(rss_after_load, 1),
        "peak_rss_while_asking_mib": round(peak_queries, 1),
        "peak_rss_is_since_load": peak_reset,
        **{k: round(v, 1) for k, v in traced.items()},
    }
    return {
        "benchmark": "apps_figures",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "store": backend,
        "machine": facts,
        "plan": {
            "machines": plan.machines,
            "lines": plan.lines,
            "days": plan.days,
            "start": datetime.fromtimestamp(plan.start_ms / 1000, UTC).isoformat(),
            "end": datetime.fromtimestamp(plan.end_ms / 1000, UTC).isoformat(),
            "power_every_s": args.power_every_s,
            "seed": plan.seed,
        },
        "load": {
            "points": loaded.points,
            "series": loaded.series,
            "fault_events": loaded.events,
            "write_s": round(loaded.write_s, 2),
            "rollup_s": round(loaded.rollup_s, 2),
            "generate_s": round(loaded.generate_s, 2),
        },
        "figures": [t.as_dict() for t in timings],
        "memory": memory,
        "answers": answers,
    }


def print_results(doc: dict[str, Any]) -> None:
    table = Table(title=f"OEE and energy questions, {doc['store']}")
    table.add_column("question")
    table.add_column("first call", justify="right")
    table.add_column("warm median", justify="right")
    table.add_column("warm max", justify="right")
    table.add_column("note")
    for row in doc["figures"]:
        table.add_row(
            row["question"],
            f"{row['first_s'] * 1000:,.0f} ms",
            f"{row['warm_median_s'] * 1000:,.0f} ms",
            f"{row['warm_max_s'] * 1000:,.0f} ms",
            row["note"],
        )
    console.print(table)
    memory = doc["memory"]
    since = "since the load" if memory["peak_rss_is_since_load"] else "of the whole process"
    console.print(
        f"memory: RSS {memory['rss_after_load_mib']} MiB after the load, peak"
        f" {memory['peak_rss_while_asking_mib']} MiB while asking ({since})"
    )
    if "oee_site_by_shift_mib" in memory:
        console.print(
            f"Python allocations, peak of one call: site OEE by shift"
            f" {memory['oee_site_by_shift_mib']} MiB, site energy by day"
            f" {memory['energy_site_by_day_mib']} MiB"
        )
    console.print(f"answers: {doc['answers']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    doc = asyncio.run(run(args))
    print_results(doc)
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT_DIR / f"apps-figures-{doc['store']}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2))
    console.print(f"[dim]written to {path}[/dim]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end ingest throughput: devices -> Mosquitto -> platform -> durable, queryable points.

What is measured, per store (DuckDB, PostgreSQL):

- simulated devices publish columnar gateway envelopes (MQTT 5, QoS 1, pre-encoded) from
  ``--publishers`` processes to a real Mosquitto broker;
- the platform, alone in its own process (``Platform(settings)`` as ``tiangong serve`` runs it,
  without HTTP), takes them from the broker, validates them against the thing model, stores
  them and only then acknowledges them;
- the figure is **points stored per second**, from the platform's own count of committed
  points, in the steady state (after ``--warmup``) and over the whole run; at the end a real
  query counts the stored points, which must equal the points the broker acknowledged to the
  publishers (any difference is reported as lost or duplicated);
- the platform's memory (``VmRSS`` over time, ``VmHWM`` peak) and the CPU time of the
  platform, the broker, the publishers and PostgreSQL, read from ``/proc``, so the figure can
  be read against the machine's cores.

Flow control: publishers never have more than ``--max-backlog`` points (at most 800 messages)
published and not yet stored: the benchmark grants them credit as the platform commits. The
platform then always has work waiting (the figure is its capacity), while the broker's queue
stays bounded: Mosquitto *drops* messages for a client that falls too far behind (its default
``max_queued_messages`` is 1000), and the platform holds every message unacknowledged until it
is stored (an open-loop run against the default broker lost 11% of its points that way:
"Outgoing messages are being dropped" in Mosquitto's log). ``--max-backlog 0`` publishes open
loop; ``--own-broker`` queues without a cap and allows a deeper backlog, which runs with small
messages need (the credit follows the platform a few hundredths of a second late).
If publishers never wait for credit, they, not the platform, limited the run: the report says
so.

``--influx`` writes the same data (same points, measurement per device kind, tag ``device``,
a field per metric) into a private InfluxDB 1.x over HTTP line protocol, in batches of 5,000
lines from as many writer processes, for a figure from the same machine and moment.

    .venv/bin/python bench/ingest.py --influx                  # both stores, 60 s each
    .venv/bin/python bench/ingest.py --store duckdb --duration 600 --rate 1000000  # flat memory?
    .venv/bin/python bench/ingest.py --store duckdb --duration 30 --py-spy  # where time goes

Results are printed and written to ``bench/out/ingest-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from _ingest_children import CHILDREN, run_child
from _ingest_fleet import HISTORY_MS, FleetShape
from _ingest_procfs import (
    MachineCpu,
    ProcessSample,
    dir_bytes,
    machine_info,
    pid_listening_on,
    sample_process,
    thread_cpu,
)
from _ingest_servers import (
    Child,
    ChildError,
    InfluxServer,
    OwnMosquitto,
    PostgresDatabase,
    forget_session,
    influxd_binary,
    mosquitto_binary,
    wait_port,
)

SCRIPT: Final = str(Path(__file__).resolve())
OUT_DIR: Final = Path(__file__).resolve().parent / "out"
#: Seconds between two looks at the children (flow control, memory samples, progress).
TICK: Final = 0.05
#: Seconds between two reports of the platform process.
PLATFORM_REPORT_INTERVAL: Final = 0.05
#: Most messages published and not yet stored, with a broker that has Mosquitto's default
#: ``max_queued_messages 1000`` (beyond which it drops messages for a client that lags).
MAX_BACKLOG_MESSAGES: Final = 800
#: The same bound with ``--own-broker``, whose queue has no cap (small messages need a deeper
#: backlog: the credit loop takes a few tenths of a second to follow the platform).
OWN_BROKER_BACKLOG_MESSAGES: Final = 20_000
#: Seconds without a committed point after publishing ends before the drain gives up.
DRAIN_STALL: Final = 30.0
MIB: Final = 1024
#: py-spy samples per second.
PY_SPY_RATE: Final = 50


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=(
            "Measure end-to-end ingest: simulated devices -> Mosquitto -> platform -> stored,"
            " queryable points per second, and the platform's memory, for DuckDB and PostgreSQL."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--store",
        choices=["duckdb", "postgres", "both", "none"],
        default="both",
        help="store(s) to measure ('none': only --influx)",
    )
    run.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    run.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds at the start left out of the steady-state figure",
    )
    fleet = parser.add_argument_group("simulated fleet")
    fleet.add_argument("--devices", type=int, default=1000, help="simulated devices in all")
    fleet.add_argument("--metrics", type=int, default=10, help="metrics per device")
    fleet.add_argument("--samples", type=int, default=100, help="samples per device per message")
    fleet.add_argument(
        "--devices-per-message",
        type=int,
        default=10,
        help="devices in one gateway envelope (one gateway per this many devices)",
    )
    pub = parser.add_argument_group("publishing")
    pub.add_argument("--publishers", type=int, default=1, help="publisher processes")
    pub.add_argument(
        "--window", type=int, default=16, help="outstanding QoS 1 publishes per publisher"
    )
    pub.add_argument(
        "--rate", type=float, default=0.0, help="cap on published points/s in all (0: none)"
    )
    pub.add_argument(
        "--max-backlog",
        type=int,
        default=4_000_000,
        help=(
            "most points published and not yet stored (flow control; at most"
            f" {MAX_BACKLOG_MESSAGES} messages, {OWN_BROKER_BACKLOG_MESSAGES:,} with --own-broker;"
            " 0: open loop)"
        ),
    )
    broker = parser.add_argument_group("broker")
    broker.add_argument("--broker-host", default="127.0.0.1", help="Mosquitto to use")
    broker.add_argument("--broker-port", type=int, default=1883, help="its port")
    broker.add_argument(
        "--own-broker",
        action="store_true",
        help="start a private Mosquitto on a free port instead",
    )
    other = parser.add_argument_group("other systems")
    other.add_argument(
        "--postgres-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin connection (a fresh database is created there and dropped)",
    )
    other.add_argument(
        "--influx", action="store_true", help="also write the same data into InfluxDB 1.x"
    )
    other.add_argument(
        "--influx-connections", type=int, default=2, help="HTTP connections per writer process"
    )
    other.add_argument("--influx-batch", type=int, default=5000, help="lines per write request")
    diag = parser.add_argument_group("diagnosis")
    diag.add_argument(
        "--py-spy",
        action="store_true",
        help="profile the platform process with py-spy while publishing (bench/out/*.pyspy)",
    )
    diag.add_argument(
        "--switch-interval",
        type=float,
        default=0.0,
        help=(
            "sys.setswitchinterval() in the platform process, in seconds (0: Python's 0.005);"
            " for diagnosing GIL contention, not for the figures"
        ),
    )
    diag.add_argument("--out", type=Path, default=OUT_DIR, help="directory for the JSON results")
    args = parser.parse_args(argv)
    for name in ("duration", "devices", "metrics", "samples", "devices_per_message"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.publishers < 1 or args.window < 1:
        parser.error("--publishers and --window must be at least 1")
    if args.store == "none" and not args.influx:
        parser.error("--store none measures nothing without --influx")
    return args


# -- small calculations ----------------------------------------------------------------------


def rate_between(history: list[tuple[float, float]], first: float, last: float) -> float | None:
    """Slope of a counter between two times (first and last sample inside the window)."""
    inside = [(t, v) for t, v in history if first <= t <= last]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 1.0:
        return None
    (t0, v0), (t1, v1) = inside[0], inside[-1]
    return (v1 - v0) / (t1 - t0)


def trend_mib_per_min(samples: list[tuple[float, int]], first: float, last: float) -> float | None:
    """Least-squares slope of RSS (KiB samples) in MiB per minute within a window."""
    inside = [(t, kb) for t, kb in samples if first <= t <= last]
    if len(inside) < 8:
        return None
    t = np.array([s[0] for s in inside])
    kb = np.array([s[1] for s in inside], dtype=np.float64)
    slope = float(np.polyfit(t - t[0], kb, 1)[0])
    return slope * 60 / MIB


def at_time(samples: list[tuple[float, int]], when: float) -> int | None:
    """The sample nearest to ``when``."""
    if not samples:
        return None
    return min(samples, key=lambda s: abs(s[0] - when))[1]


def first_reaching(history: list[tuple[float, float]], value: float) -> float | None:
    """Time of the first sample at or above ``value``."""
    return next((t for t, v in history if v >= value), None)


def summarize_profile(path: Path, samples: int, top: int = 12) -> dict[str, Any]:
    """Where the platform's threads spent their time, from py-spy's raw (collapsed) output.

    Args:
        path: the raw profile (recorded without ``--idle``: a sample is a thread found active).
        samples: sampling instants (rate x seconds), so that shares are of wall time.
        top: functions listed per thread.

    Returns:
        Per thread (the busiest first): its active share of wall time, and the functions with
        the largest self and inclusive shares.
    """
    threads: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = {}
    own: dict[str, Counter[str]] = {}
    frame_re = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        threads[thread] += count
        names = []
        for frame in frames[1:]:
            match = frame_re.match(frame)
            if match:
                where = match["file"].rsplit("/", 2)
                names.append(f"{match['fn']} ({'/'.join(where[-2:])})")
            else:
                names.append(frame)
        per = inclusive.setdefault(thread, Counter())
        for name in set(names):
            per[name] += count
        if names:
            own.setdefault(thread, Counter())[names[-1]] += count
    total = max(samples, 1)
    return {
        thread: {
            "active_share": round(n / total, 3),
            "self": {
                k: round(v / total, 3) for k, v in own.get(thread, Counter()).most_common(top)
            },
            "inclusive": {
                k: round(v / total, 3)
                for k, v in inclusive.get(thread, Counter()).most_common(top * 3)
            },
        }
        for thread, n in threads.most_common(4)
    }


# -- the benchmark ---------------------------------------------------------------------------


class IngestBenchmark:
    """One invocation: a broker, then one run per store, then InfluxDB.

    Args:
        args: the parsed command line.
        console: where progress and results go.
    """

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.shape = FleetShape(args.devices, args.metrics, args.samples, args.devices_per_message)
        self.run_id = secrets.token_hex(3)
        self.stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.workdir = Path(tempfile.mkdtemp(prefix="tiangong-ingest-"))
        self.host = args.broker_host
        self.port = args.broker_port
        self.broker_pid: int | None = None
        self.mosquitto = mosquitto_binary()
        self.influxd = influxd_binary()
        gateways = len(self.shape.gateways())
        self.shares = [
            len(self.shape.share(i, args.publishers)) / gateways for i in range(args.publishers)
        ]
        per_message = self.shape.devices_per_message * self.shape.points_per_device_message
        self.backlog_messages = (
            min(
                max(1, -(-args.max_backlog // per_message)),
                OWN_BROKER_BACKLOG_MESSAGES if args.own_broker else MAX_BACKLOG_MESSAGES,
            )
            if args.max_backlog
            else 0
        )

    # -- plumbing --------------------------------------------------------------------------------

    def _progress(self) -> Progress:
        return Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )

    def _shape_argv(self, start_ms: int, tenant: str) -> list[str]:
        return [
            "--devices", str(self.shape.devices),
            "--metrics", str(self.shape.metrics),
            "--samples", str(self.shape.samples),
            "--devices-per-message", str(self.shape.devices_per_message),
            "--tenant", tenant,
            "--start-ms", str(start_ms),
        ]  # fmt: skip

    async def _until(
        self, child: Child, event: str, within: float, progress: Progress, task: TaskID
    ) -> dict[str, Any]:
        """Wait for a child's event while showing its provisioning progress."""
        waiting = asyncio.create_task(child.expect(event, within))
        try:
            while not waiting.done():
                step = child.events.get("provisioning")
                if step is not None:
                    progress.update(task, total=step["total"], completed=step["done"])
                await asyncio.wait({waiting}, timeout=0.2)
        finally:
            if not waiting.done():
                waiting.cancel()
        return waiting.result()

    @staticmethod
    def _check(children: list[Child]) -> None:
        for child in children:
            if child.has("error"):
                raise ChildError(f"{child.name} failed: {child.events['error'].get('message')}")

    @contextlib.asynccontextmanager
    async def _py_spy(self, pid: int, seconds: float, label: str) -> AsyncIterator[Path | None]:
        """Record the platform with py-spy for ``seconds`` (if asked for and installed)."""
        spy = _py_spy_binary()
        if not self.args.py_spy or spy is None:
            if self.args.py_spy:
                self.console.print("[yellow]py-spy not found: pip install py-spy[/yellow]")
            yield None
            return
        self.args.out.mkdir(parents=True, exist_ok=True)
        out = self.args.out / f"ingest-{self.stamp}-{label}.pyspy"
        proc = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(pid), "--rate", str(PY_SPY_RATE), "--duration",
            str(max(1, int(seconds))), "--format", "raw", "--threads",
            "--output", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield out
        finally:
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        await proc.wait()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                await proc.wait()

    # -- one store -------------------------------------------------------------------------------

    async def run_store(self, store: str) -> dict[str, Any]:
        """Measure the platform on one store; returns the figures."""
        args = self.args
        async with AsyncExitStack() as stack:
            pg: PostgresDatabase | None = None
            if store == "postgres":
                pg = await stack.enter_async_context(PostgresDatabase(args.postgres_dsn))
            tenant = f"bench-{self.run_id}-{store}"
            client_id = f"tiangong-bench-{self.run_id}-{store}"
            start_ms = int(time.time() * 1000) - HISTORY_MS
            start_ms -= start_ms % 1000
            data_dir = self.workdir / f"{store}-data"
            stack.callback(shutil.rmtree, data_dir, ignore_errors=True)  # gigabytes: free them now
            platform = Child(
                f"platform ({store})",
                [
                    sys.executable, SCRIPT, "_platform",
                    *self._shape_argv(start_ms, tenant),
                    "--store", store, "--data-dir", str(data_dir),
                    "--postgres-dsn", pg.dsn if pg else "",
                    "--mqtt-host", self.host, "--mqtt-port", str(self.port),
                    "--client-id", client_id,
                    "--switch-interval", str(args.switch_interval),
                    # Flow control follows these reports: the sooner, the deeper the platform's
                    # effective backlog within the broker's limit.
                    "--interval", str(PLATFORM_REPORT_INTERVAL),
                ],
                self.workdir / f"{store}-platform.log",
            )  # fmt: skip
            # Exit order: stop the platform, then remove its broker session, then drop the DB.
            stack.push_async_callback(forget_session, self.host, self.port, client_id)
            await platform.start()
            stack.push_async_callback(platform.terminate)
            publishers = [
                Child(
                    f"publisher {i}",
                    [
                        sys.executable, SCRIPT, "_publish",
                        *self._shape_argv(start_ms, tenant),
                        "--index", str(i), "--count", str(args.publishers),
                        "--mqtt-host", self.host, "--mqtt-port", str(self.port),
                        "--client-id", f"{client_id}-pub-{i}",
                        "--window", str(args.window),
                        "--rate", str(args.rate / args.publishers),
                        "--duration", str(args.duration),
                        "--credit", str(max(1, int(self.backlog_messages * self.shares[i])))
                        if self.backlog_messages else "0",
                    ],
                    self.workdir / f"{store}-publisher-{i}.log",
                )
                for i in range(args.publishers)
            ]  # fmt: skip
            with self._progress() as progress:
                task = progress.add_task(f"{store}: provisioning", total=None, info="")
                started = await self._until(platform, "started", 120, progress, task)
                ready = await self._until(platform, "ready", 1800, progress, task)
                provisioned = platform.events["provisioned"]
                progress.update(
                    task,
                    description=f"{store}: provisioned",
                    info=f"{provisioned['devices']:,} devices in {provisioned['seconds']:.1f}s",
                )
                for publisher in publishers:
                    await publisher.start()
                    stack.push_async_callback(publisher.terminate)
                await asyncio.gather(*(p.expect("ready", 120) for p in publishers))
                result = await self._measure(store, platform, publishers, ready, pg, progress)
            result["platform_start_s"] = round(started["seconds"], 2)
            result["provisioning_s"] = round(provisioned["seconds"], 2)
            platform.send("stop")
            stopped = await platform.expect("stopped", 600)
            await platform.wait()
            result["shutdown_s"] = round(stopped["shutdown_s"], 2)
            result["server_peak_rss_mib"] = round(
                max(result["server_peak_rss_mib"], stopped["hwm_kb"] / MIB), 1
            )
            if store == "duckdb":
                result["disk_bytes"] = _duckdb_bytes(data_dir)
            if result.get("disk_bytes") and result["verified_points"]:
                result["disk_bytes_per_point"] = round(
                    result["disk_bytes"] / result["verified_points"], 2
                )
            return result

    async def _measure(
        self,
        store: str,
        platform: Child,
        publishers: list[Child],
        ready: dict[str, Any],
        pg: PostgresDatabase | None,
        progress: Progress,
    ) -> dict[str, Any]:
        args = self.args
        base_points = int(ready["points"])
        base_messages = int(ready["messages"])
        pg_pids = await pg.server_pids() if pg else {}
        before = _Readings.take(platform.pid, self.broker_pid, list(pg_pids))
        for publisher in publishers:
            publisher.send("go")
        t_go = time.monotonic()
        task = progress.add_task(f"{store}: publishing", total=args.duration, info="")
        rss: list[tuple[float, int]] = []
        mid_rss: int | None = None
        granted = [0] * len(publishers)
        spy = self._py_spy(platform.pid, args.duration, store)
        async with spy as profile:
            while not all(p.has("done") for p in publishers):
                self._check([platform, *publishers])
                await asyncio.sleep(TICK)
                now = time.monotonic()
                published = sum(p.latest.get("points", 0) for p in publishers)
                stored = platform.latest.get("points", base_points) - base_points
                stored_msgs = platform.latest.get("messages", base_messages) - base_messages
                backlog = published - stored
                blocked = any(p.latest.get("blocked") for p in publishers)
                if self.backlog_messages:
                    allowed = stored_msgs + self.backlog_messages
                    for i, p in enumerate(publishers):
                        credit = max(1, int(allowed * self.shares[i]))
                        if credit > granted[i]:
                            granted[i] = credit
                            p.send(f"credit {credit}")
                sample = sample_process(platform.pid)
                if sample is None:
                    raise ChildError(f"the platform exited; see {platform.log}")
                rss.append((now, sample.rss_kb))
                if mid_rss is None and now >= t_go + args.duration / 2:
                    mid_rss = sample.rss_kb
                history = self._history(platform, base_points)
                recent = rate_between(history, now - 3, now) or 0.0
                progress.update(
                    task,
                    completed=min(now - t_go, args.duration),
                    info=(
                        f"published {published:,}  stored {stored:,} ({recent:,.0f}/s)  "
                        f"backlog {max(backlog, 0):,}{' [waiting]' if blocked else ''}  "
                        f"RSS {sample.rss_kb / MIB:,.0f} MiB"
                    ),
                )
            done = [p.events["done"] for p in publishers]
            t_end = max(d["t"] for d in done)
            published = sum(int(d["points"]) for d in done)
            published_msgs = sum(int(d["messages"]) for d in done)
            drain = progress.add_task(f"{store}: draining", total=published or 1, info="")
            last_change, last = time.monotonic(), -1
            while True:
                self._check([platform])
                stored = platform.latest.get("points", base_points) - base_points
                now = time.monotonic()
                sample = sample_process(platform.pid)
                if sample is not None:
                    rss.append((now, sample.rss_kb))
                progress.update(
                    drain,
                    completed=min(stored, published),
                    info=f"{max(published - stored, 0):,} points to go",
                )
                if stored >= published:
                    break
                if stored != last:
                    last_change, last = now, stored
                elif now - last_change > DRAIN_STALL:
                    self.console.print(
                        f"[red]{store}: nothing stored for {DRAIN_STALL:g}s;"
                        f" {published - stored:,} points missing[/red]"
                    )
                    break
                await asyncio.sleep(TICK)
        history = self._history(platform, base_points)
        stored = int(history[-1][1]) if history else 0
        t_stored = first_reaching(history, stored) or time.monotonic()
        after = _Readings.take(platform.pid, self.broker_pid, list(pg_pids))
        stats_go = self._stats_at(platform, t_go)
        stats_end = platform.latest
        # Real queries: count the stored points and read one series back.
        platform.send("verify")
        verified = await platform.expect("verified", 1800)
        peak = sample_process(platform.pid)
        wall = max(t_stored - t_go, 1e-9)
        steady_from = t_go + args.warmup if args.duration - args.warmup >= 3 else t_go
        verified_points = int(verified["stored"])
        gateway0 = self.shape.gateways()[0].id
        probe_expected = sum(int(d["per_gateway"].get(gateway0, 0)) for d in done) * (
            self.shape.samples
        )
        pub_elapsed = max(*(float(d["elapsed"]) for d in done), 1e-9)
        blocked_s = sum(d["blocked_s"] for d in done) / len(done)
        result: dict[str, Any] = {
            "store": store,
            "published_points": published,
            "published_messages": published_msgs,
            "publish_seconds": round(pub_elapsed, 2),
            "published_points_per_s": round(published / pub_elapsed),
            "stored_points": stored,
            "stored_points_per_s_steady": _round(rate_between(history, steady_from, t_end)),
            "stored_points_per_s_overall": round(stored / wall),
            "end_to_end_seconds": round(wall, 2),
            "drain_seconds": round(max(t_stored - t_end, 0.0), 2),
            "verified_points": verified_points,
            "lost_points": max(published - verified_points, 0),
            "duplicated_points": max(verified_points - published, 0),
            "count_query_seconds": round(verified["count_seconds"], 2),
            "probe": {
                "device": verified["probe_device"],
                "series": verified["probe_series"],
                "points_m0": verified["probe_points"],
                "expected_m0": probe_expected,
            },
            "duplicates_detected": int(stats_end.get("duplicates", 0)),
            "dead_letters": int(stats_end.get("dead_letters", 0)),
            "rejected_points": int(stats_end.get("rejected_points", 0)),
            "store_failures": int(stats_end.get("store_failures", 0)),
            "publishers_waiting_share": round(blocked_s / pub_elapsed, 3),
            "backlog_limit_messages": self.backlog_messages,
            "read_pauses": int(stats_end.get("read_pauses", 0)),
            "server_rss_mib": {
                "start": round(rss[0][1] / MIB, 1) if rss else None,
                "middle": round((mid_rss or 0) / MIB, 1),
                "end": round((at_time(rss, t_end) or 0) / MIB, 1),
                "after_drain": round(rss[-1][1] / MIB, 1) if rss else None,
            },
            # Over the second half: caches (DuckDB's buffer pool) fill during the first.
            "server_rss_trend_mib_per_min": _round(
                trend_mib_per_min(rss, (t_go + t_end) / 2, t_end), 2
            ),
            "server_peak_rss_mib": round((peak.hwm_kb if peak else 0) / MIB, 1),
            "rss_samples": [(round(t - t_go, 2), kb) for t, kb in rss[:: max(1, len(rss) // 400)]],
        }
        result |= before.usage(after, wall, pg_pids)
        publishers_cpu = sum(float(d["cpu_s"]) for d in done)
        result["publishers_cpu_s"] = round(publishers_cpu, 2)
        result["publishers_cores"] = round(publishers_cpu / wall, 2)
        if stats_go and stats_end:
            write_s = float(stats_end["write_s"]) - float(stats_go["write_s"])
            writes = float(stats_end["writes"]) - float(stats_go["writes"])
            result["store_write_share"] = round(write_s / wall, 3)
            result["store_writes"] = int(writes)
            result["store_write_ms_avg"] = round(write_s / writes * 1000, 2) if writes else None
            result["points_per_write_avg"] = round(stored / writes) if writes else None
        if pg is not None:
            result["disk_bytes"] = await pg.size_bytes()
            result["postgres_version"] = pg.server_version
        # Samples in which the platform had no message waiting: it was starved, not saturated.
        during = [s for s in platform.stats if steady_from <= s["t"] <= t_end]
        result["platform_starved_share"] = (
            round(sum(1 for s in during if not s.get("pending")) / len(during), 3)
            if during
            else None
        )
        published_rate = result["published_points_per_s"]
        starved = (result["platform_starved_share"] or 0.0) > 0.25
        result["limited_by"] = (
            "flow control (the platform often had nothing to do: raise --max-backlog, or"
            " use --own-broker, whose queue allows a deeper backlog)"
            if starved and result["publishers_waiting_share"] > 0.02
            else "platform (publishers had to wait for it)"
            if result["publishers_waiting_share"] > 0.02 or not args.max_backlog
            else "publishers or broker (publishers never had to wait: try --publishers 2)"
            if not args.rate
            else f"--rate ({published_rate:,} points/s)"
        )
        if profile is not None and profile.exists():
            samples = int(PY_SPY_RATE * max(1, int(args.duration)))
            result["profile"] = {
                "file": str(profile),
                "threads": summarize_profile(profile, samples),
            }
        return result

    @staticmethod
    def _history(platform: Child, base: int) -> list[tuple[float, float]]:
        return [(float(s["t"]), float(s["points"] - base)) for s in platform.stats]

    @staticmethod
    def _stats_at(platform: Child, when: float) -> dict[str, Any]:
        earlier = [s for s in platform.stats if s["t"] <= when]
        return earlier[-1] if earlier else (platform.stats[0] if platform.stats else {})

    # -- InfluxDB --------------------------------------------------------------------------------

    async def run_influx(self, points: int, limit_s: float) -> dict[str, Any]:
        """Write ``points`` (or for ``limit_s``) into a private InfluxDB; returns the figures."""
        args = self.args
        if self.influxd is None:
            self.console.print("[yellow]influxd is not installed: InfluxDB skipped[/yellow]")
            return {"skipped": "influxd not installed"}
        async with AsyncExitStack() as stack:
            server = InfluxServer(self.workdir / "influxdb", self.influxd)
            server.start()
            stack.push_async_callback(asyncio.to_thread, server.stop)
            await asyncio.to_thread(server.wait_ready)
            db = "bench"
            await asyncio.to_thread(server.query, f"CREATE DATABASE {db}")
            lines = points // self.shape.metrics
            n = args.publishers
            shares = [lines // n + (1 if i < lines % n else 0) for i in range(n)]
            start_ms = int(time.time() * 1000) - HISTORY_MS
            writers = [
                Child(
                    f"influx writer {i}",
                    [
                        sys.executable, SCRIPT, "_influx",
                        *self._shape_argv(start_ms, "influx"),
                        "--index", str(i), "--count", str(n),
                        "--influx-port", str(server.http_port), "--db", db,
                        "--points", str(shares[i] * self.shape.metrics),
                        "--batch", str(args.influx_batch),
                        "--connections", str(args.influx_connections),
                        "--max-seconds", str(limit_s),
                    ],
                    self.workdir / f"influx-writer-{i}.log",
                )
                for i in range(n)
            ]  # fmt: skip
            for writer in writers:
                await writer.start()
                stack.push_async_callback(writer.terminate)
            await asyncio.gather(*(w.expect("ready", 120) for w in writers))
            before = _Readings.take(server.pid, None, [])
            for writer in writers:
                writer.send("go")
            t_go = time.monotonic()
            rss: list[tuple[float, int]] = []
            with self._progress() as progress:
                task = progress.add_task("influxdb: writing", total=lines * self.shape.metrics,
                                         info="")  # fmt: skip
                while not all(w.has("done") for w in writers):
                    self._check(writers)
                    await asyncio.sleep(TICK)
                    now = time.monotonic()
                    written = sum(w.latest.get("points", 0) for w in writers)
                    sample = sample_process(server.pid)
                    if sample is not None:
                        rss.append((now, sample.rss_kb))
                    progress.update(
                        task,
                        completed=written,
                        info=(
                            f"{written / max(now - t_go, 1e-9):,.0f} points/s  "
                            f"influxd RSS {(sample.rss_kb if sample else 0) / MIB:,.0f} MiB"
                        ),
                    )
            done = [w.events["done"] for w in writers]
            t_end = max(d["t"] for d in done)
            after = _Readings.take(server.pid, None, [])
            peak = sample_process(server.pid)
            written = sum(int(d["points"]) for d in done)
            wall = max(t_end - t_go, 1e-9)
            answer = await asyncio.to_thread(server.query, "SELECT count(*) FROM meter", db)
            counted = 0
            for series in answer.get("results", [{}])[0].get("series", []):
                for row in series.get("values", []):
                    counted += sum(int(v) for v in row[1:] if isinstance(v, int | float))
            history = _sum_histories(writers)
            steady_from = t_go + args.warmup if wall - args.warmup >= 3 else t_go
            writers_cpu = sum(float(d["cpu_s"]) for d in done)
            usage = before.usage(after, wall, {})
            result: dict[str, Any] = {
                "store": "influxdb",
                "target_points": lines * self.shape.metrics,
                "published_points": written,
                "written_lines": sum(int(d["lines"]) for d in done),
                "complete": all(d["complete"] for d in done),
                "publish_seconds": round(wall, 2),
                "published_points_per_s": round(written / wall),
                "stored_points_per_s_steady": _round(rate_between(history, steady_from, t_end)),
                "stored_points_per_s_overall": round(written / wall),
                "lines_per_s": round(sum(int(d["lines"]) for d in done) / wall),
                "verified_points": counted,
                "lost_points": max(written - counted, 0),
                "duplicated_points": max(counted - written, 0),
                "requests": sum(int(d["requests"]) for d in done),
                "failures": [f for d in done for f in d.get("failures", [])][:5],
                "server_cpu_s": usage.get("server_cpu_s"),
                "server_cores": usage.get("server_cores"),
                "server_rss_mib": {
                    "start": round(rss[0][1] / MIB, 1) if rss else None,
                    "middle": round((at_time(rss, t_go + wall / 2) or 0) / MIB, 1),
                    "end": round(rss[-1][1] / MIB, 1) if rss else None,
                },
                "server_rss_trend_mib_per_min": _round(
                    trend_mib_per_min(rss, (t_go + t_end) / 2, t_end), 2
                ),
                "server_peak_rss_mib": round((peak.hwm_kb if peak else 0) / MIB, 1),
                "publishers_cpu_s": round(writers_cpu, 2),
                "publishers_cores": round(writers_cpu / wall, 2),
                "machine_busy_share": usage.get("machine_busy_share"),
            }
            await asyncio.to_thread(server.stop)
            result["disk_bytes"] = dir_bytes(server.workdir / "data") + dir_bytes(
                server.workdir / "wal"
            )
            if counted:
                result["disk_bytes_per_point"] = round(result["disk_bytes"] / counted, 2)
            return result

    # -- the whole invocation --------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Run everything asked for; returns the results document."""
        args = self.args
        results: dict[str, Any] = {}
        async with AsyncExitStack() as stack:
            stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
            stores = {"both": ["duckdb", "postgres"], "none": []}.get(args.store, [args.store])
            if stores:
                await self._broker(stack)
            for store in stores:
                self.console.rule(f"[bold]{store}")
                try:
                    results[store] = await self.run_store(store)
                except ChildError as exc:
                    self.console.print(f"[red]{store} failed:[/red] {exc}")
                    results[store] = {"store": store, "error": str(exc)}
            if args.influx:
                self.console.rule("[bold]influxdb")
                measured = [r["published_points"] for r in results.values() if "error" not in r]
                target = max(measured, default=0)
                if target:
                    limit = max(3 * args.duration, 60.0)
                else:
                    # No store run to match: write for --duration.
                    target = 10**12
                    limit = args.duration
                try:
                    results["influxdb"] = await self.run_influx(target, limit)
                except ChildError as exc:
                    self.console.print(f"[red]InfluxDB failed:[/red] {exc}")
                    results["influxdb"] = {"store": "influxdb", "error": str(exc)}
        return results

    async def _broker(self, stack: AsyncExitStack) -> None:
        if self.args.own_broker:
            if self.mosquitto is None:
                raise ChildError("mosquitto is not installed (Debian package 'mosquitto')")
            own = OwnMosquitto(self.workdir / "mosquitto", self.mosquitto)
            own.start()
            stack.callback(own.stop)
            await asyncio.to_thread(own.wait_ready)
            self.host, self.port, self.broker_pid = "127.0.0.1", own.port, own.pid
            return
        await asyncio.to_thread(wait_port, self.host, self.port, 5.0)
        if self.host in {"127.0.0.1", "localhost", "::1"}:
            self.broker_pid = await asyncio.to_thread(pid_listening_on, self.port)


class _Readings:
    """CPU readings of the processes of a run, taken at the start and the end of a window."""

    def __init__(
        self,
        main: ProcessSample | None,
        main_thread: float,
        broker: ProcessSample | None,
        server: dict[int, float],
        machine: MachineCpu,
    ) -> None:
        self.main = main
        self.main_thread = main_thread
        self.broker = broker
        self.server = server
        self.machine = machine

    @classmethod
    def take(cls, pid: int, broker_pid: int | None, server_pids: list[int]) -> _Readings:
        """Read everything now."""
        server = {}
        for p in server_pids:
            sample = sample_process(p)
            if sample is not None:
                server[p] = sample.cpu_s
        return cls(
            sample_process(pid),
            thread_cpu(pid).get(pid, 0.0),
            sample_process(broker_pid) if broker_pid else None,
            server,
            MachineCpu.read(),
        )

    def usage(self, after: _Readings, wall: float, server_kinds: dict[int, str]) -> dict[str, Any]:
        """CPU used between two readings, in seconds and in cores (seconds per second)."""
        out: dict[str, Any] = {}
        if self.main and after.main:
            cpu = after.main.cpu_s - self.main.cpu_s
            loop = after.main_thread - self.main_thread
            out |= {
                "server_cpu_s": round(cpu, 2),
                "server_cores": round(cpu / wall, 2),
                "server_main_thread_cores": round(loop / wall, 2),
                "server_other_threads_cores": round((cpu - loop) / wall, 2),
            }
        if self.broker and after.broker:
            cpu = after.broker.cpu_s - self.broker.cpu_s
            out |= {"broker_cpu_s": round(cpu, 2), "broker_cores": round(cpu / wall, 2)}
        if self.server:
            cpu = sum(after.server.get(p, v) - v for p, v in self.server.items())
            out |= {
                "postgres_cpu_s": round(cpu, 2),
                "postgres_cores": round(cpu / wall, 2),
                "postgres_processes": sorted(Counter(server_kinds.values()).items()),
            }
        busy = after.machine.busy_s - self.machine.busy_s
        total = after.machine.total_s - self.machine.total_s
        out["machine_busy_share"] = round(busy / total, 3) if total else None
        return out


def _sum_histories(children: list[Child]) -> list[tuple[float, float]]:
    """The sum of the children's ``points`` counters over time (each at its latest value)."""
    events = sorted((float(s["t"]), i, float(s["points"])) for i, c in enumerate(children)
                    for s in c.stats)  # fmt: skip
    current = [0.0] * len(children)
    history = []
    for t, i, points in events:
        current[i] = points
        history.append((t, sum(current)))
    return history


def _duckdb_bytes(data_dir: Path) -> int:
    """Size of the DuckDB store's files (database and write-ahead log)."""
    return sum(f.stat().st_size for f in data_dir.glob("telemetry.duckdb*"))


def _py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _round(value: float | None, digits: int = 0) -> float | None:
    if value is None:
        return None
    return round(value, digits) if digits else float(round(value))


# -- report ----------------------------------------------------------------------------------


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}{suffix}"
    if isinstance(value, int | float):
        return f"{value:,.0f}{suffix}"
    return f"{value}{suffix}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _rows(r: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The report rows of one result (a store through the platform, or InfluxDB)."""
    if "error" in r:
        yield "error", r["error"].splitlines()[0][:60]
        return
    rss = r["server_rss_mib"]
    yield "points published", _fmt(r["published_points"])
    yield "published points/s", _fmt(r["published_points_per_s"])
    yield "[bold]stored points/s, steady state", f"[bold]{_fmt(r['stored_points_per_s_steady'])}"
    yield "stored points/s, whole run", _fmt(r["stored_points_per_s_overall"])
    yield "verified by query", _fmt(r["verified_points"])
    yield "lost / duplicated", f"{_fmt(r['lost_points'])} / {_fmt(r['duplicated_points'])}"
    yield "drain after publishing (s)", _fmt(r.get("drain_seconds"))
    yield "publishers waiting for credit", _pct(r.get("publishers_waiting_share"))
    yield "platform with nothing to do", _pct(r.get("platform_starved_share"))
    yield "server RSS start/mid/end (MiB)", f"{rss['start']} / {rss['middle']} / {rss['end']}"
    yield "server peak RSS (MiB)", _fmt(r["server_peak_rss_mib"])
    yield "server RSS trend, 2nd half (MiB/min)", _fmt(r["server_rss_trend_mib_per_min"])
    yield "server CPU (cores)", _fmt(r.get("server_cores"))
    yield "  event-loop thread", _fmt(r.get("server_main_thread_cores"))
    yield "  other threads", _fmt(r.get("server_other_threads_cores"))
    yield "time in store.write()", _pct(r.get("store_write_share"))
    yield "points per write", _fmt(r.get("points_per_write_avg"))
    yield "broker CPU (cores)", _fmt(r.get("broker_cores"))
    yield "PostgreSQL CPU (cores)", _fmt(r.get("postgres_cores"))
    yield "publishers CPU (cores)", _fmt(r.get("publishers_cores"))
    yield "machine busy (all processes)", _pct(r.get("machine_busy_share"))
    yield "disk bytes/point", _fmt(r.get("disk_bytes_per_point"))
    if "limited_by" in r:
        yield "limited by", r["limited_by"].split(" (")[0]


def report(console: Console, doc: dict[str, Any]) -> None:
    """Print the results table, the machine and any profile."""
    results: dict[str, dict[str, Any]] = doc["results"]
    table = Table(title="End-to-end ingest", title_justify="left")
    table.add_column("")
    for name in results:
        table.add_column(name, justify="right")
    labels: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for name, r in results.items():
        for label, value in _rows(r):
            if label not in labels:
                labels[label] = {}
                order.append(label)
            labels[label][name] = value
    for label in order:
        table.add_row(label, *(labels[label].get(name, "") for name in results))
    console.print(table)
    console.print(
        "[dim]server = the platform process (InfluxDB: influxd); publishers = the simulated"
        " devices (InfluxDB: the line-protocol writers); CPU in cores = CPU seconds per second"
        " of the run[/dim]"
    )
    machine = doc["machine"]
    run = doc["run"]
    console.print(
        f"[dim]{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB,"
        f" Linux {machine['kernel']}, Python {machine['python']}, {machine['mosquitto']}"
        f" ({run['broker']}), {machine['influxdb']}[/dim]"
    )
    console.print(
        f"[dim]{run['devices']:,} devices x {run['metrics']} metrics, {run['samples']} samples"
        f" per device per message, {run['devices_per_message']} devices per message"
        f" ({run['points_per_message']:,} points), {run['publishers']} publisher(s),"
        f" {run['duration']:g}s[/dim]"
    )
    for name, r in results.items():
        profile = r.get("profile")
        if not profile:
            continue
        console.print(f"\n[bold]{name}: py-spy[/bold] ({profile['file']}), share of wall time")
        for thread, summary in list(profile["threads"].items())[:2]:
            console.print(f"  {thread}: active {summary['active_share'] * 100:.0f}%, self time:")
            for fn, share in list(summary["self"].items())[:8]:
                console.print(f"    {share * 100:5.1f}%  {fn}")


async def bench(args: argparse.Namespace, console: Console) -> int:
    """Run, report, write the JSON."""
    # SIGTERM stops the run like Ctrl-C does: everything started is stopped and removed.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    benchmark = IngestBenchmark(args, console)
    machine = await asyncio.to_thread(machine_info, benchmark.mosquitto, benchmark.influxd)
    shape = benchmark.shape
    console.print(
        f"[bold]Ingest benchmark[/bold]: {shape.devices:,} devices, {shape.metrics} metrics,"
        f" {shape.samples} samples/device/message, {shape.devices_per_message} devices/message,"
        f" {args.publishers} publisher(s), {args.duration:g}s per store"
    )
    results = await benchmark.run()
    broker = (
        f"own on port {benchmark.port}" if args.own_broker else f"{benchmark.host}:{benchmark.port}"
    )
    doc: dict[str, Any] = {
        "benchmark": "ingest",
        "started": benchmark.stamp,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
        "run": {
            "devices": shape.devices,
            "metrics": shape.metrics,
            "samples": shape.samples,
            "devices_per_message": shape.devices_per_message,
            "points_per_message": shape.devices_per_message * shape.points_per_device_message,
            "publishers": args.publishers,
            "window": args.window,
            "duration": args.duration,
            "warmup": args.warmup,
            "rate_cap": args.rate,
            "max_backlog_points": args.max_backlog,
            "broker": broker,
        },
        "results": results,
    }
    report(console, doc)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ingest-{benchmark.stamp}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    console.print(f"results written to {path}")
    return 1 if any("error" in r for r in results.values()) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: the benchmark, or one of its child processes."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CHILDREN:
        return run_child(argv)
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    try:
        return asyncio.run(bench(args, console))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[yellow]interrupted: everything the benchmark started is stopped[/yellow]")
        return 130
    except (ChildError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

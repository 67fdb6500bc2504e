"""Why DuckDB is the embedded store: DuckDB against SQLite on the same points.

Measures, for N points over S series (the shape the ingest pipeline writes):

- append throughput: DuckDB appending Arrow columns in batches (what ``DuckDBStore`` does), SQLite
  ``executemany`` in WAL mode with an index on (series, ts) (what a row store needs to answer a
  range query), each batch one committed transaction;
- a dashboard query: one series over the whole range at 1-minute buckets (avg);
- the rollup query: every series at 1-minute buckets (count, sum, min, max);
- the size on disk.

Prints the figures; asserts nothing. Example::

    .venv/bin/python bench/embedded_store_choice.py --points 5000000
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

Batch = tuple[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.float64]]


def make_batches(points: int, series: int, batch: int) -> list[Batch]:
    rng = np.random.default_rng(1)
    start = 1_760_000_000_000
    batches: list[Batch] = []
    for offset in range(0, points, batch):
        n = min(batch, points - offset)
        idx = np.arange(offset, offset + n)
        sid = (idx % series).astype(np.int32)
        ts = (start + (idx // series) * 1000).astype(np.int64)
        values = rng.normal(50, 10, n)
        batches.append((sid, ts, values))
    return batches


def bench_duckdb(path: Path, batches: list[Batch], progress: Progress) -> dict[str, float]:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE points (series_id INTEGER, ts TIMESTAMP, value DOUBLE)")
    task = progress.add_task("DuckDB append", total=len(batches))
    started = time.perf_counter()
    for sid, ts, values in batches:
        table = pa.table(
            {"series_id": sid, "ts": pa.array(ts, type=pa.timestamp("ms")), "value": values}
        )
        con.register("batch", table)
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO points SELECT * FROM batch")
        con.execute("COMMIT")
        con.unregister("batch")
        progress.advance(task)
    append = time.perf_counter() - started
    con.execute("CHECKPOINT")
    started = time.perf_counter()
    con.execute(
        "SELECT time_bucket(INTERVAL 1 MINUTE, ts) b, avg(value) FROM points WHERE series_id = 7"
        " GROUP BY b ORDER BY b"
    ).fetchall()
    query = time.perf_counter() - started
    started = time.perf_counter()
    con.execute(
        "SELECT series_id, time_bucket(INTERVAL 1 MINUTE, ts) b, count(*), sum(value), min(value),"
        " max(value) FROM points GROUP BY ALL"
    ).fetchall()
    rollup = time.perf_counter() - started
    con.close()
    return {
        "append_s": append,
        "query_s": query,
        "rollup_s": rollup,
        "bytes": float(path.stat().st_size),
    }


def bench_sqlite(path: Path, batches: list[Batch], progress: Progress) -> dict[str, float]:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE points (series_id INTEGER, ts INTEGER, value REAL)")
    con.execute("CREATE INDEX points_series_ts ON points (series_id, ts)")
    task = progress.add_task("SQLite executemany", total=len(batches))
    started = time.perf_counter()
    for sid, ts, values in batches:
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO points VALUES (?, ?, ?)",
            zip(sid.tolist(), ts.tolist(), values.tolist(), strict=True),
        )
        con.execute("COMMIT")
        progress.advance(task)
    append = time.perf_counter() - started
    started = time.perf_counter()
    con.execute(
        "SELECT ts / 60000 AS b, avg(value) FROM points WHERE series_id = 7 GROUP BY b ORDER BY b"
    ).fetchall()
    query = time.perf_counter() - started
    started = time.perf_counter()
    con.execute(
        "SELECT series_id, ts / 60000 AS b, count(*), sum(value), min(value), max(value)"
        " FROM points GROUP BY series_id, b"
    ).fetchall()
    rollup = time.perf_counter() - started
    con.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {"append_s": append, "query_s": query, "rollup_s": rollup, "bytes": float(size)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--points", type=int, default=5_000_000, help="points to write (default 5,000,000)"
    )
    parser.add_argument("--series", type=int, default=1000, help="series (default 1000)")
    parser.add_argument(
        "--batch", type=int, default=100_000, help="points per transaction (default 100,000)"
    )
    args = parser.parse_args()
    console = Console()
    batches = make_batches(args.points, args.series, args.batch)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        duck = bench_duckdb(Path(tmp) / "points.duckdb", batches, progress)
        lite = bench_sqlite(Path(tmp) / "points.sqlite", batches, progress)
    table = Table(
        title=f"{args.points:,} points, {args.series:,} series, {args.batch:,} per transaction"
    )
    for column in (
        "store",
        "append points/s",
        "1 series, 1-min avg",
        "all series, 1-min rollup",
        "on disk",
    ):
        table.add_column(column, justify="right")
    for name, result in (
        ("DuckDB (Arrow append)", duck),
        ("SQLite (executemany, WAL, index)", lite),
    ):
        table.add_row(
            name,
            f"{args.points / result['append_s']:,.0f}",
            f"{result['query_s'] * 1000:,.1f} ms",
            f"{result['rollup_s'] * 1000:,.0f} ms",
            f"{result['bytes'] / 1e6:,.1f} MB",
        )
    console.print(table)


if __name__ == "__main__":
    main()

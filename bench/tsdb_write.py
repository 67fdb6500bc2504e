"""Write throughput of the time-series store backends (points/s of ``write()``).

Each backend gets the same batches: ``--batch`` points spread over ``--series`` series, one
point per series per second, as a fleet of devices reporting together would produce. Only the
``write()`` calls are timed; the batches are generated beforehand.

PostgreSQL runs in a fresh database that the script creates and drops; DuckDB in a file in a
temporary directory.

    .venv/bin/python bench/tsdb_write.py --points 5000000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg

from tiangong.platform.tsdb.base import PointBatch, SeriesKey, TimeSeriesStore
from tiangong.platform.tsdb.duckdb_store import DuckDBStore
from tiangong.platform.tsdb.postgres_store import PostgresStore


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure points/s of TimeSeriesStore.write() for each backend."
    )
    parser.add_argument("--points", type=int, default=2_000_000, help="points written in all")
    parser.add_argument("--batch", type=int, default=100_000, help="points per write() call")
    parser.add_argument("--series", type=int, default=5_000, help="distinct series")
    parser.add_argument(
        "--backend",
        choices=["all", "duckdb", "postgres"],
        default="all",
        help="which backend(s) to measure",
    )
    parser.add_argument(
        "--dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server (an admin connection; the benchmark database is created there)",
    )
    return parser.parse_args(argv)


def batches(total: int, batch: int, series_ids: list[int], start_ms: int) -> Iterator[PointBatch]:
    """Batches of one point per series per second, in time order."""
    rng = np.random.default_rng(1)
    ids = np.asarray(series_ids, dtype=np.int32)
    written = 0
    while written < total:
        n = min(batch, total - written)
        index = np.arange(written, written + n, dtype=np.int64)
        yield PointBatch(
            series_id=ids[index % len(ids)],
            ts=start_ms + (index // len(ids)) * 1000,
            value=rng.normal(50.0, 10.0, size=n),
        )
        written += n


async def measure(store: TimeSeriesStore, args: argparse.Namespace) -> tuple[float, float]:
    """Write all points; returns (points/s over write() calls, slowest write in seconds)."""
    await store.open()
    try:
        keys = [SeriesKey("bench", f"dev-{i // 10}", f"m{i % 10}") for i in range(args.series)]
        ids = await store.series_ids(keys)
        # Spread over the last hours, so the points land in today's (and maybe yesterday's)
        # partition as live data would.
        span_ms = (args.points // args.series + 1) * 1000
        start_ms = int(time.time() * 1000) - span_ms
        work = list(batches(args.points, args.batch, ids, start_ms))
        elapsed = 0.0
        slowest = 0.0
        for batch in work:
            began = time.perf_counter()
            await store.write(batch)
            took = time.perf_counter() - began
            elapsed += took
            slowest = max(slowest, took)
        return args.points / elapsed, slowest
    finally:
        await store.close()


async def bench_postgres(args: argparse.Namespace) -> tuple[float, float]:
    name = f"tiangong_bench_{uuid.uuid4().hex[:12]}"
    admin = await psycopg.AsyncConnection.connect(args.dsn, autocommit=True)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=name)
            return await measure(PostgresStore(dsn=dsn), args)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def bench_duckdb(args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="tiangong-bench-") as tmp:
        return await measure(DuckDBStore(path=Path(tmp) / "telemetry.duckdb"), args)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"{args.points:,} points in batches of {args.batch:,} over {args.series:,} series",
        flush=True,
    )
    runs = {"duckdb": bench_duckdb, "postgres": bench_postgres}
    for backend, run in runs.items():
        if args.backend not in {"all", backend}:
            continue
        rate, slowest = await run(args)
        print(
            f"{backend:>8}: {rate:12,.0f} points/s  (slowest write {slowest * 1000:,.0f} ms)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

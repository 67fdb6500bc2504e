"""Handle store: bulk load rate and point lookups (resolutions) at millions of records.

Loads ``--records`` records (default 1,000,000; each a URL at index 1 and an HS_ADMIN at index
100, as pyhandle registers them) into the embedded SQLite store and, with ``--postgres``, into
a fresh PostgreSQL database, then measures ``get()``:

- one caller at a time: lookups/s and the p50/p99 latency of each ``await store.get()``, for
  hits (random loaded handles, in another case than stored: lookups fold case) and misses;
- ``--concurrency`` callers at once: lookups/s (the event loop shared, as in a node).

Handle names are hashed (``88.100.1/<16 hex digits>``), so both the load and the lookups land
at random places in the key order: the unfavourable case for a B-tree (``--sequential`` loads
``88.100.1/DEV-000000001``... in order instead). The load rate includes building the records in
Python, which a real loader pays as well.

    .venv/bin/python bench/id_store.py
    .venv/bin/python bench/id_store.py --records 200000 \\
        --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tiangong.identity.handle.values import HS_ADMIN, HandleRecord, HandleValue
from tiangong.identity.store import HandleStore, PostgresHandleStore, SqliteHandleStore

PREFIX = "88.100.1"
ADMIN_DATA = bytes.fromhex("07f30000000d302e4e412f38382e3130302e31000000c8")
# Wide enough for the results table when the output is not a terminal.
console = Console(width=max(Console().width, 140))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Bulk load and lookups of the handle stores.")
    parser.add_argument("--records", type=int, default=1_000_000, help="records loaded")
    parser.add_argument("--lookups", type=int, default=200_000, help="timed lookups per kind")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent callers")
    parser.add_argument("--sequential", action="store_true", help="load names in key order")
    parser.add_argument(
        "--path", type=Path, help="SQLite file (default: a temporary one, deleted afterwards)"
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the embedded store")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also measure PostgreSQL (an admin URL: a benchmark database is created there)",
    )
    return parser.parse_args(argv)


def name(i: int, *, sequential: bool) -> str:
    if sequential:
        return f"{PREFIX}/DEV-{i:09d}"
    return f"{PREFIX}/{hashlib.blake2b(i.to_bytes(8, 'big'), digest_size=8).hexdigest()}"


def records(n: int, *, sequential: bool) -> Iterator[HandleRecord]:
    admin = HandleValue(index=100, type=HS_ADMIN, data=ADMIN_DATA, timestamp=1_760_000_000)
    for i in range(n):
        handle = name(i, sequential=sequential)
        link = f"https://factory.example.com/devices/{i}".encode()
        yield HandleRecord(
            handle, (HandleValue(index=1, type="URL", data=link, timestamp=1_760_000_000), admin)
        )


async def load(store: HandleStore, args: argparse.Namespace) -> float:
    """Bulk-load the records with a progress bar; returns records/s."""
    with Progress(
        TextColumn(f"[bold]{store.name}[/bold] bulk load"),
        BarColumn(bar_width=40),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("load", total=args.records)
        began = time.perf_counter()
        loaded = await store.bulk_load(
            records(args.records, sequential=args.sequential),
            progress=lambda n: progress.update(task, completed=n),
        )
        took = time.perf_counter() - began
    assert loaded == args.records
    return loaded / took


async def timed_gets(store: HandleStore, handles: list[str], *, hit: bool) -> dict[str, float]:
    """One caller at a time: rate and latency percentiles (µs) of ``get``."""
    latencies: list[int] = []
    began = time.perf_counter()
    for handle in handles:
        t = time.perf_counter_ns()
        record = await store.get(handle)
        latencies.append(time.perf_counter_ns() - t)
        assert (record is not None) is hit, handle
    took = time.perf_counter() - began
    q = statistics.quantiles(latencies, n=100)
    return {"rate": len(handles) / took, "p50": q[49] / 1000, "p99": q[98] / 1000}


async def concurrent_gets(store: HandleStore, handles: list[str], concurrency: int) -> float:
    """``concurrency`` callers sharing the loop: lookups/s."""
    queue = iter(handles)

    async def caller() -> None:
        for handle in queue:
            await store.get(handle)

    began = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for n in range(concurrency):
            group.create_task(caller(), name=f"caller-{n}")
    return len(handles) / (time.perf_counter() - began)


async def measure(store: HandleStore, args: argparse.Namespace) -> dict[str, float]:
    async with store:
        rate = await load(store, args)
        rng = random.Random(7)
        n = min(args.lookups, args.records)
        # Lookups spell handles in lower case: they go through the case-folded key.
        hits = [
            name(rng.randrange(args.records), sequential=args.sequential).lower() for _ in range(n)
        ]
        misses = [f"{PREFIX}/missing-{rng.getrandbits(64):016x}" for _ in range(n)]
        console.print(f"{store.name}: warming up and measuring {n:,} lookups of each kind")
        await timed_gets(store, hits[: n // 4], hit=True)  # warm the caches
        hit = await timed_gets(store, hits, hit=True)
        miss = await timed_gets(store, misses, hit=False)
        together = await concurrent_gets(store, hits, args.concurrency)
        return {
            "load": rate,
            "hit_rate": hit["rate"],
            "hit_p50": hit["p50"],
            "hit_p99": hit["p99"],
            "miss_rate": miss["rate"],
            "miss_p50": miss["p50"],
            "miss_p99": miss["p99"],
            "concurrent": together,
            "count": await store.count(),
        }


async def bench_sqlite(args: argparse.Namespace) -> dict[str, float]:
    if args.path is not None:
        return await measure(SqliteHandleStore(path=args.path), args)
    with tempfile.TemporaryDirectory(prefix="tiangong-bench-") as tmp:
        path = Path(tmp) / "handles.sqlite3"
        result = await measure(SqliteHandleStore(path=path), args)
        result["size_mb"] = path.stat().st_size / 1e6
        return result


async def bench_postgres(args: argparse.Namespace) -> dict[str, float]:
    database = f"tiangong_bench_{uuid.uuid4().hex[:12]}"
    admin = await psycopg.AsyncConnection.connect(args.postgres, autocommit=True)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        try:
            dsn = psycopg.conninfo.make_conninfo(args.postgres, dbname=database)
            result = await measure(PostgresHandleStore(dsn=dsn), args)
            cur = await admin.execute("SELECT pg_database_size(%s)", [database])
            row = await cur.fetchone()
            result["size_mb"] = int(row[0]) / 1e6 if row else 0.0
            return result
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    order = "in key order" if args.sequential else "hashed names, random order"
    console.print(f"{args.records:,} records of 2 values ({order})")
    results: dict[str, dict[str, float]] = {}
    if not args.no_sqlite:
        results["sqlite"] = await bench_sqlite(args)
    if args.postgres:
        results["postgres"] = await bench_postgres(args)
    table = Table(title=f"Handle store at {args.records:,} records", title_justify="left")
    table.add_column("backend")
    table.add_column("load rec/s", justify="right")
    table.add_column("hit get/s", justify="right")
    table.add_column("hit p50 µs", justify="right")
    table.add_column("hit p99 µs", justify="right")
    table.add_column("miss get/s", justify="right")
    table.add_column("miss p50 µs", justify="right")
    table.add_column("miss p99 µs", justify="right")
    table.add_column(f"{args.concurrency} callers get/s", justify="right")
    table.add_column("size MB", justify="right")
    for backend, r in results.items():
        table.add_row(
            backend,
            f"{r['load']:,.0f}",
            f"{r['hit_rate']:,.0f}",
            f"{r['hit_p50']:.1f}",
            f"{r['hit_p99']:.1f}",
            f"{r['miss_rate']:,.0f}",
            f"{r['miss_p50']:.1f}",
            f"{r['miss_p99']:.1f}",
            f"{r['concurrent']:,.0f}",
            f"{r.get('size_mb', 0):,.0f}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

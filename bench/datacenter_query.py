"""National-center queries over a full indicator history in the analytics store.

Loads ``--years`` of monthly cell reports x ``--regions`` x ``--industries`` x ``--indicators``
(10 x 12 x 300 x 100 x 30 = 108 M rows by default) straight into ``AnalyticsStore`` with
DuckDB's ``range()`` (no Python loop), then times the national queries: totals by region, by
industry and overall, a 10-year series, a drill-down from the nation to one region's
industries, and a query filtered by both dimensions (which reads the facts, not the rollups).
Each query runs ``--repeat`` times; the first (cold) and the best time are printed.

Region codes are synthetic GB/T 2260-shaped codes (31 provinces x up to 10 prefectures) and
industry codes synthetic GB/T 4754-shaped divisions: the catalog ships fewer real codes than
the benchmark's dimensions, and the bulk load does not validate codes.

    .venv/bin/python bench/datacenter_query.py              # the full 108 M rows
    .venv/bin/python bench/datacenter_query.py --years 1    # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb

from _ingest_procfs import cpu_model
from tiangong.data.catalog import standard_catalog
from tiangong.data.model import Aggregation, Level, Period
from tiangong.data.store import AnalyticsStore

PROVINCES = ["11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36",
             "37", "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62",
             "63", "64", "65"]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time national queries of AnalyticsStore.")
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--regions", type=int, default=300)
    parser.add_argument("--industries", type=int, default=100, choices=range(1, 101))
    parser.add_argument("--indicators", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--memory-limit", default="4GB")
    return parser.parse_args(argv)


def machine() -> str:
    cpu = cpu_model()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs{mem}; Python {platform.python_version()},"
        f" DuckDB {duckdb.__version__}, {platform.system()} {platform.release()}"
    )


def region_codes(n: int) -> list[str]:
    return [f"{PROVINCES[i % len(PROVINCES)]}{i // len(PROVINCES) + 1:02d}00" for i in range(n)]


def load_sql(args: argparse.Namespace, codes: list[tuple[str, bool, bool]]) -> str:
    months = args.years * 12
    regions = ", ".join(f"'{c}'" for c in region_codes(args.regions))
    indicator_rows = ", ".join(
        f"({k}, '{code}', {str(has_den).lower()}, {str(distinct).lower()})"
        for k, (code, has_den, distinct) in enumerate(codes)
    )
    industry = "'C' || lpad(i::VARCHAR, 2, '0')"
    month = "TIMESTAMP '2016-01-01' + to_months(m::INTEGER)"
    return f"""
        WITH reg AS (SELECT unnest([{regions}]) AS region,
                            generate_subscripts([{regions}], 1) - 1 AS r),
             ind AS (SELECT * FROM (VALUES {indicator_rows}) t(k, code, has_den, is_distinct))
        SELECT
            'regional:bench-' || reg.region || ':' || reg.region || ':' || {industry}
                || ':month:' || strftime({month}, '%Y-%m-%d'),
            'month',
            {month},
            'regional',
            'bench-' || reg.region,
            reg.region,
            {industry},
            ind.code,
            ((m * 7919 + reg.r * 104729 + i * 1299709 + ind.k * 15485863) % 100000)::DOUBLE,
            CASE WHEN ind.has_den THEN ((m + reg.r + i + ind.k) % 997 + 1000)::DOUBLE ELSE 0.0 END,
            CASE WHEN ind.is_distinct THEN ['e' || reg.r || '-' || i] ELSE NULL END
        FROM range({months}) mm(m), reg, range({args.industries}) ii(i), ind
    """


async def timed(
    label: str, repeat: int, fn: Callable[[], Awaitable[Any]]
) -> tuple[str, float, float, int]:
    times = []
    result: Any = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - began)
    return label, times[0], min(times), len(result)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalog = standard_catalog()
    specs = list(catalog.indicators.values())[: args.indicators]
    codes = [
        (
            s.code,
            s.aggregation in (Aggregation.RATIO_OF_SUMS, Aggregation.WEIGHTED_MEAN),
            s.aggregation is Aggregation.DISTINCT_COUNT,
        )
        for s in specs
    ]
    planned = args.years * 12 * args.regions * args.industries * len(codes)
    print(f"machine: {machine()}", flush=True)
    print(
        f"dataset: {args.years} years of months x {args.regions} regions x {args.industries}"
        f" industries x {len(codes)} indicators = {planned:,} rows planned",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="tiangong-bench-") as tmp:
        path = Path(tmp) / "national.duckdb"
        store = AnalyticsStore(
            path=path, catalog=catalog, threads=args.threads, memory_limit=args.memory_limit
        )
        await store.open()
        try:
            began = time.perf_counter()
            rows = await store.bulk_load_rows(load_sql(args, codes))
            load = time.perf_counter() - began
            size = await asyncio.to_thread(os.path.getsize, path)
            print(
                f"loaded {rows:,} rows in {load:,.1f} s ({rows / load:,.0f} rows/s, rollups"
                f" included); file {size / 1e9:.2f} GB",
                flush=True,
            )
            start, end = "2016-01-01", f"{2016 + args.years}-01-01"
            every = [c for c, _, _ in codes]
            plain = [c for c, _, distinct in codes if not distinct]
            first_region = region_codes(args.regions)[0]
            queries = [
                ("totals by region, all indicators", lambda: store.totals(
                    Period.MONTH, start, end, by="region", indicators=every)),
                ("totals by industry, all indicators", lambda: store.totals(
                    Period.MONTH, start, end, by="industry", indicators=every)),
                ("national total, all indicators", lambda: store.totals(
                    Period.MONTH, start, end, indicators=every)),
                ("totals by province, additive/ratio only", lambda: store.totals(
                    Period.MONTH, start, end, by="province", indicators=plain)),
                ("series ENERGY_KWH, 10 years", lambda: store.series(
                    "ENERGY_KWH", Period.MONTH, start, end)),
                ("series NETWORKING_RATE of one province", lambda: store.series(
                    "NETWORKING_RATE", Period.MONTH, start, end, region=first_region[:2] + "0000")),
                ("grid of provinces, ENERGY_TCE", lambda: store.region_grid(
                    "ENERGY_TCE", Period.MONTH, start, end)),
                ("drill-down: nation -> regions", lambda: store.drill_down(
                    "NETWORKING_RATE", Period.MONTH, start, end)),
                ("drill-down: region -> industries (facts)", lambda: store.totals(
                    Period.MONTH, start, end, by="industry", region=first_region,
                    indicators=["NETWORKING_RATE"], level=Level.REGIONAL)),
                ("one region x one industry, 30 indicators (facts)", lambda: store.totals(
                    Period.MONTH, start, end, region=first_region, industry="C07",
                    indicators=every)),
            ]  # fmt: skip
            print(f"{'query':<52} {'cold':>9} {'best':>9} {'rows':>7}")
            for label, fn in queries:
                name, cold, best, n = await timed(label, args.repeat, fn)
                print(f"{name:<52} {cold * 1000:7.0f}ms {best * 1000:7.0f}ms {n:7,}", flush=True)
        finally:
            await store.close()
        # The same group-by straight on the facts, to show what the rollups save.
        conn = duckdb.connect(str(path), read_only=True, config={"threads": args.threads})
        try:
            began = time.perf_counter()
            conn.execute(
                "SELECT region, indicator, sum(num), max(num), sum(den), count(*) FROM facts"
                " WHERE period = 'month' AND level = 'regional' GROUP BY ALL"
            ).fetchall()
            print(
                f"{'(no rollup) by region straight on facts':<52}"
                f" {(time.perf_counter() - began) * 1000:7.0f}ms",
                flush=True,
            )
        finally:
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

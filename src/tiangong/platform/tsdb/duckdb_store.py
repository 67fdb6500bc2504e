"""Embedded time-series store on DuckDB (the default for ``tiangong up``).

Why DuckDB: measured on this project's 2-core machine (``docs/benchmarks.md``), appending
Arrow columns to a DuckDB table runs at about 15 million points/s, while SQLite's
``executemany`` manages a few hundred thousand rows/s and grows a B-tree per insert; DuckDB's
columnar, compressed storage also answers the dashboard's range aggregations over millions of
points in milliseconds. It runs in-process with no server, which is what an embedded default
needs.

Threading: DuckDB connections are not shared across threads; each thread gets its own cursor.
All writes (points, rollups, retention, new series) run on one writer thread, in order, which
is also what ``DirtyTracker`` relies on. Reads run on a small pool and see committed data
(DuckDB's MVCC). The commit of every write is durable: DuckDB syncs its write-ahead log on
commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tiangong.platform.errors import StoreError, StoreUnavailableError
from tiangong.platform.tsdb.base import (
    HOUR_MS,
    MINUTE_MS,
    RAW_LIMIT,
    Aggregate,
    DirtyTracker,
    LatestValue,
    PointBatch,
    SeriesKey,
    align_range,
    finish_aggregate,
    last_per_series,
    pick_rollup,
    refresh_cutoff,
    series_spans,
)

__all__ = ["DuckDBStore"]

T = TypeVar("T")

#: How long message digests are kept for redelivery detection.
DIGEST_RETENTION_MS: Final = 24 * HOUR_MS

_SCHEMA: Final = [
    "CREATE SEQUENCE IF NOT EXISTS series_seq START 1",
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY DEFAULT nextval('series_seq'),
        tenant_id VARCHAR NOT NULL, device_id VARCHAR NOT NULL, metric VARCHAR NOT NULL,
        UNIQUE (tenant_id, device_id, metric))""",
    "CREATE TABLE IF NOT EXISTS points (series_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL,"
    " value DOUBLE)",
    "CREATE TABLE IF NOT EXISTS text_points (series_id INTEGER NOT NULL,"
    " ts TIMESTAMP NOT NULL, value VARCHAR)",
    "CREATE TABLE IF NOT EXISTS latest (series_id INTEGER PRIMARY KEY, ts TIMESTAMP NOT NULL,"
    " value DOUBLE, text VARCHAR)",
    *[
        f"""CREATE TABLE IF NOT EXISTS {table} (
            series_id INTEGER NOT NULL, bucket TIMESTAMP NOT NULL, n BIGINT NOT NULL,
            sum DOUBLE, min DOUBLE, max DOUBLE, last_ts TIMESTAMP, last DOUBLE)"""
        for table in ("rollup_1m", "rollup_1h")
    ],
    "CREATE TABLE IF NOT EXISTS ingested_messages (digest BLOB NOT NULL, ts TIMESTAMP NOT NULL)",
]

_ROLLUP_TABLE: Final = {MINUTE_MS: "rollup_1m", HOUR_MS: "rollup_1h"}


class DuckDBStore:
    """The embedded store.

    Args:
        path: database file (created if missing); ``:memory:`` for tests.
        memory_limit: DuckDB's memory cap, e.g. ``"1GB"``.
        threads: DuckDB worker threads.
    """

    name = "duckdb"

    def __init__(self, *, path: Path | str, memory_limit: str = "256MB", threads: int = 2) -> None:
        self.path = str(path)
        self.memory_limit = memory_limit
        self.threads = threads
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-writer")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="duckdb-reader")
        self._dirty = DirtyTracker()
        self._series_cache: dict[SeriesKey, int] = {}
        self._failure: Callable[[], None] | None = None

    # -- plumbing --------------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            if self._conn is None:
                raise StoreUnavailableError("the DuckDB store is not open")
            cur = self._conn.cursor()
            self._local.cursor = cur
        return cur

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, fn)
        except duckdb.IOException as exc:
            raise StoreUnavailableError(f"DuckDB cannot write {self.path}: {exc}") from exc
        except duckdb.Error as exc:
            raise StoreError(f"DuckDB failed: {exc}") from exc

    async def open(self) -> None:
        """Open (and create) the database."""

        def _open() -> None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = duckdb.connect(
                self.path,
                config={"memory_limit": self.memory_limit, "threads": self.threads},
            )
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn

        await self._on(self._writer, _open)

    async def close(self) -> None:
        """Checkpoint and close."""

        def _close() -> None:
            if self._conn is not None:
                with contextlib.suppress(duckdb.Error):
                    self._conn.execute("CHECKPOINT")
                self._conn.close()
                self._conn = None

        await self._on(self._writer, _close)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)

    def inject_write_failure(self, failure: Callable[[], None] | None) -> None:
        """Tests only: call ``failure`` before each write (it raises to simulate a refusal).

        A refusing disk cannot be produced on demand by a real DuckDB file, so this is the one
        fault the tests inject.
        """
        self._failure = failure

    # -- series ----------------------------------------------------------------------------------

    async def series_ids(self, keys: Sequence[SeriesKey]) -> list[int]:
        """Ids of the series, creating missing ones."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._series_cache]
        if missing:

            def _create() -> None:
                cur = self._cursor()
                table = pa.table(
                    {
                        "tenant_id": [k.tenant_id for k in missing],
                        "device_id": [k.device_id for k in missing],
                        "metric": [k.metric for k in missing],
                    }
                )
                cur.register("new_series", table)
                try:
                    cur.execute(
                        "INSERT INTO series (tenant_id, device_id, metric) "
                        "SELECT * FROM new_series ON CONFLICT DO NOTHING"
                    )
                    rows = cur.execute(
                        "SELECT s.tenant_id, s.device_id, s.metric, s.id FROM series s "
                        "JOIN new_series n USING (tenant_id, device_id, metric)"
                    ).fetchall()
                finally:
                    cur.unregister("new_series")
                for tenant, device, metric, sid in rows:
                    self._series_cache[SeriesKey(tenant, device, metric)] = int(sid)

            await self._on(self._writer, _create)
        return [self._series_cache[k] for k in keys]

    async def device_series(self, tenant_id: str, device_id: str) -> dict[str, int]:
        """Metric -> series id of one device."""

        def _read() -> dict[str, int]:
            rows = (
                self._cursor()
                .execute(
                    "SELECT metric, id FROM series WHERE tenant_id = ? AND device_id = ?",
                    [tenant_id, device_id],
                )
                .fetchall()
            )
            return {str(m): int(i) for m, i in rows}

        return await self._on(self._readers, _read)

    # -- writes ----------------------------------------------------------------------------------

    async def write(self, batch: PointBatch) -> None:
        """Store a batch durably (points, text points, latest values, digests)."""
        if not len(batch) and not batch.digests:
            return

        def _write() -> None:
            if self._failure is not None:
                self._failure()
            cur = self._cursor()
            spans = series_spans(batch.series_id, batch.ts)
            # Mark before commit: a query in between reads raw, never a stale rollup.
            self._dirty.mark(spans, batch.ts[spans.last_row])
            cur.execute("BEGIN TRANSACTION")
            try:
                if len(batch.series_id):
                    cur.register(
                        "batch_points",
                        pa.table(
                            {
                                "series_id": batch.series_id,
                                "ts": pa.array(batch.ts, type=pa.timestamp("ms")),
                                "value": batch.value,
                            }
                        ),
                    )
                    cur.execute("INSERT INTO points SELECT * FROM batch_points")
                    cur.unregister("batch_points")
                if len(batch.text_series_id):
                    cur.register(
                        "batch_text",
                        pa.table(
                            {
                                "series_id": batch.text_series_id,
                                "ts": pa.array(batch.text_ts, type=pa.timestamp("ms")),
                                "value": pa.array(batch.text_value, type=pa.string()),
                            }
                        ),
                    )
                    cur.execute("INSERT INTO text_points SELECT * FROM batch_text")
                    cur.unregister("batch_text")
                self._upsert_latest(cur, batch, spans.last_row)
                if batch.digests:
                    now = int(time.time() * 1000)
                    cur.register(
                        "batch_digests",
                        pa.table(
                            {
                                "digest": pa.array(batch.digests, type=pa.binary()),
                                "ts": pa.array(
                                    np.full(len(batch.digests), now, dtype=np.int64),
                                    type=pa.timestamp("ms"),
                                ),
                            }
                        ),
                    )
                    cur.execute("INSERT INTO ingested_messages SELECT * FROM batch_digests")
                    cur.unregister("batch_digests")
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise

        await self._on(self._writer, _write)

    @staticmethod
    def _upsert_latest(
        cur: duckdb.DuckDBPyConnection, batch: PointBatch, idx: npt.NDArray[np.intp]
    ) -> None:
        parts = []
        if len(batch.series_id):
            parts.append(
                pa.table(
                    {
                        "series_id": batch.series_id[idx],
                        "ts": pa.array(batch.ts[idx], type=pa.timestamp("ms")),
                        "value": batch.value[idx],
                        "text": pa.nulls(len(idx), type=pa.string()),
                    }
                )
            )
        if len(batch.text_series_id):
            idx = last_per_series(batch.text_series_id, batch.text_ts)
            parts.append(
                pa.table(
                    {
                        "series_id": batch.text_series_id[idx],
                        "ts": pa.array(batch.text_ts[idx], type=pa.timestamp("ms")),
                        "value": pa.nulls(len(idx), type=pa.float64()),
                        "text": pa.array([batch.text_value[i] for i in idx], type=pa.string()),
                    }
                )
            )
        if not parts:
            return
        cur.register("batch_latest", pa.concat_tables(parts))
        cur.execute(
            "INSERT INTO latest SELECT * FROM batch_latest ON CONFLICT (series_id) DO UPDATE "
            "SET ts = excluded.ts, value = excluded.value, text = excluded.text "
            "WHERE excluded.ts >= latest.ts"
        )
        cur.unregister("batch_latest")

    async def known_digests(self, digests: Sequence[bytes]) -> set[bytes]:
        """Digests already stored."""
        if not digests:
            return set()

        def _read() -> set[bytes]:
            cur = self._cursor()
            cur.register("probe", pa.table({"digest": pa.array(list(digests), type=pa.binary())}))
            try:
                rows = cur.execute(
                    "SELECT DISTINCT m.digest FROM ingested_messages m JOIN probe USING (digest)"
                ).fetchall()
            finally:
                cur.unregister("probe")
            return {bytes(r[0]) for r in rows}

        return await self._on(self._readers, _read)

    async def recent_digests(self, since_ms: int) -> list[bytes]:
        """Digests stored since ``since_ms``."""

        def _read() -> list[bytes]:
            rows = (
                self._cursor()
                .execute(
                    "SELECT digest FROM ingested_messages WHERE ts >= epoch_ms(?::BIGINT)",
                    [since_ms],
                )
                .fetchall()
            )
            return [bytes(r[0]) for r in rows]

        return await self._on(self._readers, _read)

    # -- reads -----------------------------------------------------------------------------------

    async def latest(self, series_ids: Sequence[int]) -> dict[int, LatestValue]:
        """Newest value per series."""
        if not series_ids:
            return {}

        def _read() -> dict[int, LatestValue]:
            rows = (
                self._cursor()
                .execute(
                    "SELECT series_id, epoch_ms(ts), value, text FROM latest "
                    "WHERE series_id IN (SELECT unnest(?::INTEGER[]))",
                    [list(series_ids)],
                )
                .fetchall()
            )
            return {
                int(sid): LatestValue(int(sid), int(ts), text if text is not None else value)
                for sid, ts, value, text in rows
            }

        return await self._on(self._readers, _read)

    async def query(
        self,
        series_id: int,
        start_ms: int,
        end_ms: int,
        interval_ms: int | None,
        agg: Aggregate,
        *,
        text: bool = False,
    ) -> list[tuple[int, float | str | None]]:
        """Raw points or one aggregate per interval (see the module docstring of ``base``)."""
        now_ms = int(time.time() * 1000)
        split = self._dirty.split_point(series_id, now_ms)

        def _read() -> list[tuple[int, float | str | None]]:
            cur = self._cursor()
            if text:
                return self._query_text(cur, series_id, start_ms, end_ms, interval_ms)
            if not interval_ms:
                rows = cur.execute(
                    "SELECT epoch_ms(ts), value FROM points WHERE series_id = ? "
                    "AND ts >= epoch_ms(?::BIGINT) AND ts < epoch_ms(?::BIGINT) "
                    "ORDER BY ts LIMIT ?",
                    [series_id, start_ms, end_ms, RAW_LIMIT],
                ).fetchall()
                return [(int(t), v) for t, v in rows]
            start, end = align_range(start_ms, end_ms, interval_ms)
            granularity = pick_rollup(interval_ms)
            parts = [
                "SELECT (epoch_ms(ts) // $iv) * $iv AS b, 1 AS n, value AS s, value AS lo,"
                " value AS hi, epoch_ms(ts) AS lts, value AS lv FROM points"
                " WHERE series_id = $sid AND ts >= epoch_ms($raw_from::BIGINT)"
                " AND ts < epoch_ms($end::BIGINT)"
            ]
            params: dict[str, int] = {"iv": interval_ms, "sid": series_id, "end": end}
            if granularity:
                rolled_until = max(start, split - split % granularity)
                table = _ROLLUP_TABLE[granularity]
                parts.append(
                    "SELECT (epoch_ms(bucket) // $iv) * $iv, n, sum, min, max,"
                    f" epoch_ms(last_ts), last FROM {table} WHERE series_id = $sid"
                    " AND bucket >= epoch_ms($start::BIGINT)"
                    " AND bucket < epoch_ms($rolled::BIGINT)"
                )
                params |= {"start": start, "rolled": min(rolled_until, end)}
                params["raw_from"] = max(start, rolled_until)
            else:
                params["raw_from"] = start
            sql = (
                "SELECT b, sum(n), sum(s), min(lo), max(hi), arg_max(lv, lts) FROM ("
                + " UNION ALL ".join(parts)
                + ") GROUP BY b ORDER BY b"
            )
            rows = cur.execute(sql, params).fetchall()
            return [(int(row[0]), finish_aggregate(agg, row[1:])) for row in rows]

        return await self._on(self._readers, _read)

    @staticmethod
    def _query_text(
        cur: duckdb.DuckDBPyConnection,
        series_id: int,
        start_ms: int,
        end_ms: int,
        interval_ms: int | None,
    ) -> list[tuple[int, float | str | None]]:
        if interval_ms:
            start, end = align_range(start_ms, end_ms, interval_ms)
            rows = cur.execute(
                "SELECT (epoch_ms(ts) // ?) * ? AS b, arg_max(value, ts) FROM text_points "
                "WHERE series_id = ? AND ts >= epoch_ms(?::BIGINT) AND ts < epoch_ms(?::BIGINT) "
                "GROUP BY b ORDER BY b",
                [interval_ms, interval_ms, series_id, start, end],
            ).fetchall()
        else:
            rows = cur.execute(
                "SELECT epoch_ms(ts), value FROM text_points WHERE series_id = ? "
                "AND ts >= epoch_ms(?::BIGINT) AND ts < epoch_ms(?::BIGINT) ORDER BY ts LIMIT ?",
                [series_id, start_ms, end_ms, RAW_LIMIT],
            ).fetchall()
        return [(int(t), v) for t, v in rows]

    # -- maintenance -----------------------------------------------------------------------------

    async def refresh_rollups(self) -> int:
        """Recompute the rollups of dirty series."""

        def _refresh() -> int:
            cutoff = refresh_cutoff(int(time.time() * 1000))
            dirty = self._dirty.begin_refresh(cutoff)
            if not dirty:
                self._dirty.end_refresh()
                return 0
            cur = self._cursor()
            ids = np.fromiter(dirty.keys(), dtype=np.int32, count=len(dirty))
            froms = np.fromiter(dirty.values(), dtype=np.int64, count=len(dirty))
            cur.register(
                "dirty_series",
                pa.table(
                    {
                        "series_id": ids,
                        "from_1m": pa.array(froms - froms % MINUTE_MS, type=pa.timestamp("ms")),
                        "from_1h": pa.array(froms - froms % HOUR_MS, type=pa.timestamp("ms")),
                    }
                ),
            )
            params = [cutoff]
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(
                    "DELETE FROM rollup_1m USING dirty_series d WHERE rollup_1m.series_id ="
                    " d.series_id AND rollup_1m.bucket >= d.from_1m"
                )
                cur.execute(
                    "INSERT INTO rollup_1m SELECT p.series_id, time_bucket(INTERVAL 1 MINUTE, p.ts)"
                    " AS bucket, count(*), sum(p.value), min(p.value), max(p.value), max(p.ts),"
                    " arg_max(p.value, p.ts) FROM points p JOIN dirty_series d"
                    " ON p.series_id = d.series_id AND p.ts >= d.from_1m"
                    " WHERE p.ts < epoch_ms(?::BIGINT) GROUP BY ALL",
                    params,
                )
                cur.execute(
                    "DELETE FROM rollup_1h USING dirty_series d WHERE rollup_1h.series_id ="
                    " d.series_id AND rollup_1h.bucket >= d.from_1h"
                )
                cur.execute(
                    "INSERT INTO rollup_1h SELECT r.series_id, time_bucket(INTERVAL 1 HOUR,"
                    " r.bucket) AS bucket, sum(r.n), sum(r.sum), min(r.min), max(r.max),"
                    " max(r.last_ts), arg_max(r.last, r.last_ts) FROM rollup_1m r"
                    " JOIN dirty_series d ON r.series_id = d.series_id AND r.bucket >= d.from_1h"
                    " GROUP BY ALL"
                )
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                self._dirty.end_refresh(failed=True)  # the next refresh retries it
                raise
            finally:
                cur.unregister("dirty_series")
            self._dirty.end_refresh()
            return len(dirty)

        return await self._on(self._writer, _refresh)

    async def apply_retention(self, retention_days: Mapping[str, int], now_ms: int) -> int:
        """Delete raw points past each tenant's retention; prune old digests."""

        def _apply() -> int:
            cur = self._cursor()
            deleted = 0
            for tenant, days in retention_days.items():
                cutoff = now_ms - days * 24 * HOUR_MS
                rollup_cutoff = now_ms - max(days, 365) * 24 * HOUR_MS
                for table, limit in (
                    ("points", cutoff),
                    ("text_points", cutoff),
                    ("rollup_1m", rollup_cutoff),
                ):
                    column = "bucket" if table.startswith("rollup") else "ts"
                    row = cur.execute(
                        f"DELETE FROM {table} WHERE {column} < epoch_ms(?::BIGINT) AND series_id"
                        " IN (SELECT id FROM series WHERE tenant_id = ?)",
                        [limit, tenant],
                    ).fetchone()
                    if table == "points" and row is not None:
                        deleted += int(row[0])
            cur.execute(
                "DELETE FROM ingested_messages WHERE ts < epoch_ms(?::BIGINT)",
                [now_ms - DIGEST_RETENTION_MS],
            )
            return deleted

        return await self._on(self._writer, _apply)

    async def reporting_metrics(self, since_ms: int) -> list[tuple[str, str, str]]:
        """Series with a value since ``since_ms``."""

        def _read() -> list[tuple[str, str, str]]:
            rows = (
                self._cursor()
                .execute(
                    "SELECT s.tenant_id, s.device_id, s.metric FROM latest l JOIN series s"
                    " ON s.id = l.series_id WHERE l.ts >= epoch_ms(?::BIGINT)",
                    [since_ms],
                )
                .fetchall()
            )
            return [(str(t), str(d), str(m)) for t, d, m in rows]

        return await self._on(self._readers, _read)

    async def point_count(self, tenant_id: str | None = None) -> int:
        """Numeric points stored."""

        def _read() -> int:
            cur = self._cursor()
            if tenant_id is None:
                row = cur.execute("SELECT count(*) FROM points").fetchone()
            else:
                row = cur.execute(
                    "SELECT count(*) FROM points WHERE series_id IN"
                    " (SELECT id FROM series WHERE tenant_id = ?)",
                    [tenant_id],
                ).fetchone()
            return int(row[0]) if row else 0

        return await self._on(self._readers, _read)

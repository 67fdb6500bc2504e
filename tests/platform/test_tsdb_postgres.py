"""What is particular to the PostgreSQL store: day partitions, locks, refusals by the server.

Every fault here is produced by the real server on 127.0.0.1:5432 (a lock held by another
session, privileges revoked, a read-only database, terminated connections), never by a mock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.servers import free_port, postgres_dsn, unavailable
from tiangong.platform.errors import StoreError, StoreUnavailableError
from tiangong.platform.tsdb.base import (
    HOUR_MS,
    MINUTE_MS,
    Aggregate,
    PointBatch,
    SeriesKey,
    TimeSeriesStore,
)
from tiangong.platform.tsdb.duckdb_store import DuckDBStore
from tiangong.platform.tsdb.postgres_store import PostgresStore

pytestmark = pytest.mark.postgres

DAY_MS = 24 * HOUR_MS
NOW = int(time.time() * 1000)
TODAY = NOW - NOW % DAY_MS


def numeric(series: list[int], ts: list[int], values: list[float], digests=()) -> PointBatch:
    return PointBatch(
        series_id=np.asarray(series, dtype=np.int32),
        ts=np.asarray(ts, dtype=np.int64),
        value=np.asarray(values, dtype=np.float64),
        digests=list(digests),
    )


def partition_name(day_start_ms: int) -> str:
    day = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=day_start_ms)
    return f"points_{day:%Y%m%d}"


async def admin(dsn: str) -> psycopg.AsyncConnection:
    """A superuser connection to the test's database, beside the store's pool."""
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def partitions(dsn: str) -> set[str]:
    async with await admin(dsn) as conn:
        cur = await conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'points'::regclass"
        )
        return {str(r[0]) for r in await cur.fetchall()}


async def wait_for_lock_waiter(conn: psycopg.AsyncConnection, dbname: str) -> None:
    """Until a session of the database waits for a lock (the store's write is blocked)."""
    for _ in range(200):
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            [dbname],
        )
        row = await cur.fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the write never waited for the lock")


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(dsn=pg_database)
    async with store:
        yield store


async def test_day_partitions_created_on_demand_and_dropped_by_retention(
    pg: PostgresStore, pg_database: str
) -> None:
    [s] = await pg.series_ids([SeriesKey("t", "d", "x")])
    days_back = [40, 20, 3, 1, 0]
    stamps = [TODAY - d * DAY_MS + 5 * MINUTE_MS for d in days_back]
    # One batch across five UTC days: every day gets its partition before the COPY.
    await pg.write(numeric([s] * 10, stamps + [t + 1000 for t in stamps], [1.0] * 10))
    assert await partitions(pg_database) == {partition_name(TODAY - d * DAY_MS) for d in days_back}
    assert await pg.point_count() == 10

    # Retention of 10 days: the 40- and 20-day-old partitions go whole.
    deleted = await pg.apply_retention({"t": 10}, NOW)
    assert deleted == 4
    assert await pg.point_count() == 6
    assert await partitions(pg_database) == {partition_name(TODAY - d * DAY_MS) for d in (3, 1, 0)}

    # Late data for a dropped day: the partition comes back.
    await pg.write(numeric([s], [stamps[0]], [2.0]))
    assert partition_name(TODAY - 40 * DAY_MS) in await partitions(pg_database)
    assert await pg.query(s, stamps[0], stamps[0] + 1, None, Aggregate.LAST) == [(stamps[0], 2.0)]


async def test_retention_keeps_partitions_within_the_longest_retention(
    pg: PostgresStore, pg_database: str
) -> None:
    [short, long] = await pg.series_ids([SeriesKey("short", "d", "x"), SeriesKey("long", "d", "x")])
    old = TODAY - 20 * DAY_MS + HOUR_MS
    await pg.write(numeric([short, long], [old, old], [1.0, 1.0]))
    # The long tenant keeps 30 days: the partition stays and only the short tenant's row goes.
    assert await pg.apply_retention({"short": 10, "long": 30}, NOW) == 1
    assert partition_name(TODAY - 20 * DAY_MS) in await partitions(pg_database)
    assert await pg.point_count("long") == 1
    assert await pg.point_count("short") == 0


async def test_instances_race_to_create_the_same_partitions(pg_database: str) -> None:
    async with PostgresStore(dsn=pg_database) as a, PostgresStore(dsn=pg_database) as b:
        [s] = await a.series_ids([SeriesKey("t", "d", "x")])
        assert await b.series_ids([SeriesKey("t", "d", "x")]) == [s]
        for round_ in range(5):
            day = TODAY - (100 + round_) * DAY_MS
            await asyncio.gather(
                a.write(numeric([s], [day + 1], [1.0])),
                b.write(numeric([s], [day + 2], [2.0])),
            )
        assert await a.point_count() == 10


async def test_write_after_another_instance_dropped_a_known_partition(pg_database: str) -> None:
    async with PostgresStore(dsn=pg_database) as a, PostgresStore(dsn=pg_database) as b:
        [s] = await a.series_ids([SeriesKey("t", "d", "x")])
        old = TODAY - 50 * DAY_MS
        await a.write(numeric([s], [old], [1.0]))
        # b drops the day that a remembers having; a's next COPY into it must still succeed.
        assert await b.apply_retention({"t": 30}, NOW) == 1
        await a.write(numeric([s], [old + 1000], [2.0]))
        assert await a.point_count() == 1


async def test_open_does_not_wait_for_running_writes(pg: PostgresStore, pg_database: str) -> None:
    [s] = await pg.series_ids([SeriesKey("t", "d", "x")])
    await pg.write(numeric([s], [NOW - 1000], [1.0]))
    async with await admin(pg_database) as writer:
        async with writer.transaction():
            # Another instance's write in progress (row-exclusive lock on points)...
            await writer.execute("INSERT INTO points VALUES (%s, now(), 2.0)", [s])
            # ...does not hold up a platform instance starting on the existing schema.
            async with PostgresStore(dsn=pg_database, lock_timeout=0.5) as second:
                assert await second.series_ids([SeriesKey("t", "d", "x")]) == [s]
    assert await pg.point_count() == 2


async def test_concurrent_series_creation_by_two_instances(pg_database: str) -> None:
    keys = [SeriesKey("t", f"d{i}", "m") for i in range(200)]
    async with PostgresStore(dsn=pg_database) as a, PostgresStore(dsn=pg_database) as b:
        ids_a, ids_b = await asyncio.gather(a.series_ids(keys), b.series_ids(keys[::-1]))
        assert ids_a == ids_b[::-1]
        assert len(set(ids_a)) == 200


async def test_write_waits_for_a_table_lock_then_succeeds(
    pg: PostgresStore, pg_database: str
) -> None:
    [s] = await pg.series_ids([SeriesKey("t", "d", "x")])
    await pg.write(numeric([s], [NOW - 1000], [1.0]))
    dbname = conninfo_to_dict(pg_database)["dbname"]
    async with await admin(pg_database) as locker, await admin(pg_database) as watcher:
        async with locker.transaction():
            await locker.execute("LOCK TABLE points IN ACCESS EXCLUSIVE MODE")
            write = asyncio.create_task(pg.write(numeric([s], [NOW], [2.0])))
            await wait_for_lock_waiter(watcher, str(dbname))
            await asyncio.sleep(0.2)
            assert not write.done()
        # Released by the commit: the waiting write goes through.
        await asyncio.wait_for(write, 10)
    assert await pg.point_count() == 2
    assert (await pg.latest([s]))[s].value == 2.0


async def test_lock_timeout_refuses_the_write_and_stores_nothing(pg_database: str) -> None:
    async with PostgresStore(dsn=pg_database, lock_timeout=0.3) as store:
        [s] = await store.series_ids([SeriesKey("t", "d", "x")])
        await store.write(numeric([s], [NOW - 1000], [1.0]))
        async with await admin(pg_database) as locker:
            async with locker.transaction():
                await locker.execute("LOCK TABLE points IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(StoreUnavailableError):
                    await store.write(numeric([s], [NOW], [2.0], digests=[b"x" * 16]))
        assert await store.point_count() == 1
        assert (await store.latest([s]))[s].value == 1.0
        assert await store.known_digests([b"x" * 16]) == set()
        await store.write(numeric([s], [NOW], [2.0], digests=[b"x" * 16]))
        assert await store.point_count() == 2


@dataclass
class RoleDatabase:
    """A database owned by a non-superuser role, which the store connects as."""

    role: str
    dbname: str
    store_dsn: str
    admin_dsn: str


@pytest.fixture
def role_database() -> Iterator[RoleDatabase]:
    suffix = uuid.uuid4().hex[:12]
    role, dbname = f"tiangong_writer_{suffix}", f"tiangong_test_{suffix}"
    try:
        with psycopg.connect(postgres_dsn(), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
            # The owner of a database owns its public schema (PostgreSQL 15), so the role can
            # create the store's tables, and a superuser can still revoke its privileges.
            conn.execute(f'CREATE DATABASE "{dbname}" OWNER "{role}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL on 127.0.0.1:5432 unreachable: {exc}")
    admin_dsn = postgres_dsn(dbname)
    yield RoleDatabase(role, dbname, make_conninfo(admin_dsn, user=role), admin_dsn)
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


async def assert_nothing_stored(store: TimeSeriesStore, s: int, count: int, value: float) -> None:
    assert await store.point_count() == count
    assert (await store.latest([s]))[s].value == value
    assert await store.known_digests([b"refused".ljust(16)]) == set()


@pytest.mark.parametrize("table", ["points", "ingested_messages"])
async def test_revoked_privilege_refuses_the_write_atomically(
    role_database: RoleDatabase, table: str
) -> None:
    async with PostgresStore(dsn=role_database.store_dsn) as store:
        [s] = await store.series_ids([SeriesKey("t", "d", "x")])
        await store.write(numeric([s], [NOW - 1000], [1.0]))
        refused = numeric([s, s], [NOW, NOW + 1], [2.0, 3.0], digests=[b"refused".ljust(16)])
        async with await admin(role_database.admin_dsn) as conn:
            # points: the COPY is refused; ingested_messages: the COPY succeeds and the digest
            # insert after it is refused, which must roll the points back too.
            await conn.execute(f'REVOKE INSERT ON {table} FROM "{role_database.role}"')
            with pytest.raises(StoreUnavailableError) as caught:
                await store.write(refused)
            assert isinstance(caught.value.__cause__, psycopg.errors.InsufficientPrivilege)
            await assert_nothing_stored(store, s, 1, 1.0)
            await conn.execute(f'GRANT INSERT ON {table} TO "{role_database.role}"')
        await store.write(refused)
        assert await store.point_count() == 3
        assert (await store.latest([s]))[s].value == 3.0


async def terminate_sessions(conn: psycopg.AsyncConnection, dbname: str) -> None:
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        [dbname],
    )


async def test_read_only_database_refuses_the_write(pg: PostgresStore, pg_database: str) -> None:
    [s] = await pg.series_ids([SeriesKey("t", "d", "x")])
    await pg.write(numeric([s], [NOW - 1000], [1.0]))
    dbname = str(conninfo_to_dict(pg_database)["dbname"])
    async with await admin(pg_database) as conn:
        await conn.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
        # The setting applies to new sessions: cut the pool's, which it replaces on checkout.
        await terminate_sessions(conn, dbname)
        with pytest.raises(StoreUnavailableError) as caught:
            await pg.write(numeric([s], [NOW], [2.0], digests=[b"refused".ljust(16)]))
        assert isinstance(caught.value.__cause__, psycopg.errors.ReadOnlySqlTransaction)
        await assert_nothing_stored(pg, s, 1, 1.0)
        await conn.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
        await terminate_sessions(conn, dbname)
    await pg.write(numeric([s], [NOW], [2.0]))
    assert await pg.point_count() == 2


async def test_writes_survive_lost_connections(pg: PostgresStore, pg_database: str) -> None:
    [s] = await pg.series_ids([SeriesKey("t", "d", "x")])
    async with await admin(pg_database) as conn:
        await terminate_sessions(conn, str(conn.info.dbname))
    await pg.write(numeric([s], [NOW], [1.0]))
    assert await pg.point_count() == 1


async def test_unreachable_server_is_unavailable() -> None:
    store = PostgresStore(dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/none", timeout=1)
    with pytest.raises(StoreUnavailableError):
        await store.open()
    with pytest.raises(StoreUnavailableError):
        await store.write(numeric([1], [NOW], [1.0]))


async def test_other_database_errors_are_store_errors(pg: PostgresStore) -> None:
    [s] = await pg.series_ids([SeriesKey("t", "d", "x")])
    # PostgreSQL text cannot hold NUL characters; that is no reason to retry.
    bad = PointBatch(
        text_series_id=np.asarray([s], dtype=np.int32),
        text_ts=np.asarray([NOW], dtype=np.int64),
        text_value=["a\x00b"],
    )
    with pytest.raises(StoreError) as caught:
        await pg.write(bad)
    assert not isinstance(caught.value, StoreUnavailableError)


async def test_aggregates_equal_duckdb(pg: PostgresStore, tmp_path: Path) -> None:
    duck = DuckDBStore(path=tmp_path / "telemetry.duckdb")
    await duck.open()
    try:
        start = NOW - NOW % HOUR_MS - 30 * HOUR_MS  # across a UTC day boundary
        rng = np.random.default_rng(11)
        ts = start + np.sort(rng.choice(28 * HOUR_MS, size=5000, replace=False)).astype(np.int64)
        values = rng.normal(20, 5, size=5000).round(2)
        half = len(ts) // 2
        ids = []
        for store in (pg, duck):
            [s] = await store.series_ids([SeriesKey("t", "d", "x")])
            ids.append(s)
            await store.write(numeric([s] * half, ts[:half].tolist(), values[:half].tolist()))
            await store.refresh_rollups()
            await store.write(numeric([s] * half, ts[half:].tolist(), values[half:].tolist()))
        assert ids[0] == ids[1]
        # First half rolled and second half raw; then everything rolled.
        for _ in range(2):
            for interval in (7_000, MINUTE_MS, 5 * MINUTE_MS, HOUR_MS, 3 * HOUR_MS):
                for agg in Aggregate:
                    got = await pg.query(s, start + 1234, start + 29 * HOUR_MS, interval, agg)
                    want = await duck.query(s, start + 1234, start + 29 * HOUR_MS, interval, agg)
                    assert [b for b, _ in got] == [b for b, _ in want]
                    if agg in {Aggregate.SUM, Aggregate.AVG}:  # summation order differs
                        assert np.allclose([v for _, v in got], [v for _, v in want])
                    else:
                        assert got == want
            raw = await pg.query(s, start, start + HOUR_MS, None, Aggregate.AVG)
            assert raw == await duck.query(s, start, start + HOUR_MS, None, Aggregate.AVG)
            await pg.refresh_rollups()
            await duck.refresh_rollups()
    finally:
        await duck.close()

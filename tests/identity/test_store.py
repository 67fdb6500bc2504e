"""The handle store contract, run against every backend (SQLite file, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tiangong.identity.errors import (
    HandleExistsError,
    HandleNotFoundError,
    HandleStoreError,
    HandleSyntaxError,
    ValueExistsError,
    ValueNotFoundError,
)
from tiangong.identity.handle.values import (
    HS_ADMIN,
    HandleRecord,
    HandleValue,
    Permission,
    TtlType,
    ValueReference,
)
from tiangong.identity.store import (
    HandleStore,
    PostgresHandleStore,
    SqliteHandleStore,
    open_store,
)
from tiangong.identity.store.base import RecordChange, StoredHandle, WriteKind, plan_write

PREFIX = "88.100.1"
ADMIN_DATA = bytes.fromhex("07f30000000d302e4e412f38382e3130302e31000000c8")


def url(index: int, text: str = "https://example.com/a") -> HandleValue:
    return HandleValue(index=index, type="URL", data=text.encode(), timestamp=1_760_000_000)


def admin(index: int = 100) -> HandleValue:
    return HandleValue(index=index, type=HS_ADMIN, data=ADMIN_DATA, timestamp=1_760_000_000)


def backend_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_database"))
    return str(tmp_path / "handles.sqlite3")


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database URL."""
    return backend_target(request, tmp_path)


@pytest.fixture
async def store(target: str) -> AsyncIterator[HandleStore]:
    async with open_store(target) as opened:
        yield opened


async def indexes(store: HandleStore, handle: str) -> list[int]:
    record = await store.get(handle)
    assert record is not None
    return [v.index for v in record.values]


# -- the pure write planner -------------------------------------------------------------------


def test_plan_write_decisions() -> None:
    stored = StoredHandle(handle="88.100.1/Abc", indexes=frozenset({1, 2, 100}))
    assert plan_write(WriteKind.PUT, "88.100.1/ABC", stored, [url(2), url(3)]) == RecordChange(
        handle="88.100.1/Abc", delete=(2,), insert=(url(2), url(3))
    )
    assert plan_write(WriteKind.REMOVE, "x", stored, indexes=[1, 2, 100]).handles_delta == -1
    assert plan_write(WriteKind.REMOVE, "x", stored, indexes=[]).empty
    assert plan_write(WriteKind.REPLACE, "88.100.1/ABC", stored, [url(1)]).handle == "88.100.1/ABC"
    assert plan_write(WriteKind.CREATE, "x", None, [url(1)]).created
    with pytest.raises(ValueNotFoundError):
        plan_write(WriteKind.REMOVE, "x", stored, indexes=[1, 7])
    with pytest.raises(HandleNotFoundError):
        plan_write(WriteKind.ADD, "x", None, [url(1)])


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store("postgresql://u@127.0.0.1/db"), PostgresHandleStore)
    assert isinstance(open_store("postgres://u@127.0.0.1/db"), PostgresHandleStore)
    assert isinstance(open_store(tmp_path / "h.db"), SqliteHandleStore)
    assert isinstance(open_store(str(tmp_path / "h.db")), SqliteHandleStore)
    libpq = open_store("host=127.0.0.1 dbname=ids user=u")
    assert isinstance(libpq, PostgresHandleStore)
    assert libpq.dsn == "host=127.0.0.1 dbname=ids user=u"
    with pytest.raises(ValueError):
        SqliteHandleStore(path=":memory:")
    # Anything that looks like another kind of URL is refused, not made a file in the cwd.
    for other in ("sqlite:/var/lib/h.db", "mysql://u@db/ids", "file:h.db"):
        with pytest.raises(ValueError, match="postgresql://"):
            open_store(other)


# -- reads and simple writes ------------------------------------------------------------------


async def test_create_and_get_round_trips_every_field(store: HandleStore) -> None:
    rich = HandleValue(
        index=7,
        type="HS_VLIST",
        data=b"\x00\x01\xff binary\x00",
        ttl=4_102_444_800,  # an absolute TTL past 2038
        ttl_type=TtlType.ABSOLUTE,
        timestamp=4_102_444_800,
        permissions=Permission.ADMIN_READ | Permission.PUBLIC_WRITE,
        references=(
            ValueReference("0.NA/88.100.1", 200),
            ValueReference("88.100.1/with:colon", 300),
        ),
    )
    handle = "88.100.1/泵-Pump-1"
    await store.create(handle, [admin(), rich, url(1)])
    record = await store.get(handle)
    assert record == HandleRecord(handle, (url(1), rich, admin()))
    assert record.values[1].permissions == Permission.ADMIN_READ | Permission.PUBLIC_WRITE
    assert await store.get("88.100.1/absent") is None
    assert await store.exists(handle)
    assert not await store.exists("88.100.1/absent")
    assert await store.count() == 1


async def test_handles_are_case_insensitive_and_keep_their_spelling(store: HandleStore) -> None:
    await store.create("88.100.1/Pump-A", [url(1)])
    record = await store.get("88.100.1/PUMP-a")
    assert record is not None
    assert record.handle == "88.100.1/Pump-A"
    with pytest.raises(HandleExistsError):
        await store.create("88.100.1/pump-a", [url(2)])
    # Only ASCII letters fold (as in the Handle.Net server): é and É are two handles.
    await store.create("88.100.1/é", [url(1)])
    assert await store.get("88.100.1/É") is None
    # Writes through another spelling keep the stored one.
    assert await store.put_values("88.100.1/PUMP-A", [url(2)]) is False
    assert (await store.get("88.100.1/pump-a")) == HandleRecord("88.100.1/Pump-A", (url(1), url(2)))


async def test_get_many_keeps_order(store: HandleStore) -> None:
    names = [f"{PREFIX}/m{i}" for i in range(150)]
    for name in names[::2]:
        await store.create(name, [url(1, name)])
    records = await store.get_many([*reversed(names), names[0].upper()])
    assert len(records) == 151
    for name, record in zip([*reversed(names), names[0]], records, strict=True):
        if int(name.rsplit("m", 1)[1]) % 2:
            assert record is None
        else:
            assert record is not None
            assert record.handle == name
            assert record.values == (url(1, name),)
    assert await store.get_many([]) == []


async def test_replace_swaps_the_whole_record(store: HandleStore) -> None:
    assert await store.replace("88.100.1/r", [url(1), url(2), admin()]) is True
    assert await store.replace("88.100.1/R", [url(5, "https://example.com/new")]) is False
    record = await store.get("88.100.1/r")
    assert record == HandleRecord("88.100.1/R", (url(5, "https://example.com/new"),))
    assert await store.count() == 1


async def test_delete(store: HandleStore) -> None:
    await store.create("88.100.1/d", [url(1), admin()])
    await store.delete("88.100.1/D")
    assert await store.get("88.100.1/d") is None
    assert await store.count() == 0
    with pytest.raises(HandleNotFoundError):
        await store.delete("88.100.1/d")


async def test_add_values_is_all_or_nothing(store: HandleStore) -> None:
    await store.create("88.100.1/a", [url(1)])
    await store.add_values("88.100.1/a", [url(2), admin()])
    assert await indexes(store, "88.100.1/a") == [1, 2, 100]
    # One new index and one taken: neither is added.
    with pytest.raises(ValueExistsError):
        await store.add_values("88.100.1/a", [url(3), url(2, "https://example.com/other")])
    record = await store.get("88.100.1/a")
    assert record == HandleRecord("88.100.1/a", (url(1), url(2), admin()))
    with pytest.raises(HandleNotFoundError):
        await store.add_values("88.100.1/missing", [url(1)])


async def test_modify_values(store: HandleStore) -> None:
    await store.create("88.100.1/m", [url(1), admin()])
    await store.modify_values("88.100.1/m", [url(1, "https://example.com/moved")])
    record = await store.get("88.100.1/m")
    assert record is not None
    assert record.value(1) == url(1, "https://example.com/moved")
    with pytest.raises(ValueNotFoundError):
        await store.modify_values("88.100.1/m", [url(1, "https://x"), url(9)])
    assert await store.get("88.100.1/m") == record
    with pytest.raises(HandleNotFoundError):
        await store.modify_values("88.100.1/missing", [url(1)])


async def test_put_values_creates_adds_and_replaces(store: HandleStore) -> None:
    assert await store.put_values("88.100.1/p", [url(1), admin()]) is True
    assert await store.put_values("88.100.1/p", [url(1, "https://example.com/2"), url(3)]) is False
    record = await store.get("88.100.1/p")
    assert record == HandleRecord("88.100.1/p", (url(1, "https://example.com/2"), url(3), admin()))


async def test_remove_values(store: HandleStore) -> None:
    await store.create("88.100.1/x", [url(1), url(2), admin()])
    await store.remove_values("88.100.1/x", [2])
    assert await indexes(store, "88.100.1/x") == [1, 100]
    # An absent index refuses the whole request, as VALUES_NOT_FOUND does.
    with pytest.raises(ValueNotFoundError):
        await store.remove_values("88.100.1/x", [1, 2])
    assert await indexes(store, "88.100.1/x") == [1, 100]
    # Removing the last values removes the handle (there is no row left to keep it).
    await store.remove_values("88.100.1/X", [1, 100, 1])
    assert await store.get("88.100.1/x") is None
    assert await store.count() == 0
    with pytest.raises(HandleNotFoundError):
        await store.remove_values("88.100.1/x", [1])


async def test_refused_inputs(store: HandleStore) -> None:
    with pytest.raises(ValueExistsError):
        await store.create("88.100.1/dup", [url(1), url(1, "https://other")])
    with pytest.raises(HandleStoreError):
        await store.create("88.100.1/empty", [])
    with pytest.raises(HandleStoreError):
        await store.create("88.100.1/big", [url(2**31)])
    with pytest.raises(HandleSyntaxError):
        await store.create("88.100.1/tab\there", [url(1)])
    with pytest.raises(HandleSyntaxError):
        await store.create("", [url(1)])
    assert await store.count() == 0
    assert await store.change_counter() == 0


# -- listing, counting, change counter --------------------------------------------------------


async def test_list_handles_pages_by_key(store: HandleStore) -> None:
    names = [f"{PREFIX}/Dev-{i:03d}" for i in range(25)]
    for name in reversed(names):
        await store.create(name, [url(1), admin()])
    # Neighbours that are not under 88.100.1/: a longer prefix, a shorter one, the prefix handle.
    for other in ("88.100.10/dev-1", "88.100/dev-1", "0.NA/88.100.1", "88.100.1"):
        await store.create(other, [url(1)])
    pages: list[list[str]] = []
    after: str | None = None
    while page := await store.list_handles("88.100.1", after=after, limit=10):
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [n for p in pages for n in p] == names
    assert await store.list_handles("88.100.1", after=names[3].lower(), limit=2) == names[4:6]
    assert await store.list_handles("88.100.1", limit=0) == []
    assert await store.list_handles("88.100.10") == ["88.100.10/dev-1"]
    assert await store.list_handles("0.na") == ["0.NA/88.100.1"]
    assert await store.list_handles("99") == []


async def test_count_and_change_counter(store: HandleStore) -> None:
    seen = [await store.change_counter()]

    async def changed() -> None:
        seen.append(await store.change_counter())
        assert seen[-1] > seen[-2]

    await store.create("88.100.1/c1", [url(1)])
    await changed()
    await store.put_values("88.100.1/c2", [url(1)])
    await changed()
    await store.add_values("88.100.1/c1", [url(2)])
    await changed()
    assert await store.count() == 2
    with pytest.raises(HandleExistsError):
        await store.create("88.100.1/c1", [url(1)])
    await store.get("88.100.1/c1")
    assert await store.change_counter() == seen[-1]  # neither refusals nor reads count
    await store.remove_values("88.100.1/c1", [1, 2])
    await changed()
    assert await store.count() == 1
    await store.home_prefix(PREFIX)
    await changed()
    await store.home_prefix(PREFIX)  # no change, no count
    assert await store.change_counter() == seen[-1]


async def test_homing(store: HandleStore) -> None:
    assert await store.homed_prefixes() == []
    assert await store.home_prefix("88.100.1") is True
    assert await store.home_prefix("0.na/88.100.1") is False
    assert await store.home_prefix("88.100.2") is True
    assert await store.is_homed("88.100.1")
    assert await store.is_homed("0.NA/88.100.2")
    assert not await store.is_homed("88.100")
    assert await store.homed_prefixes() == ["88.100.1", "88.100.2"]
    assert await store.unhome_prefix("88.100.1") is True
    assert await store.unhome_prefix("88.100.1") is False
    assert await store.homed_prefixes() == ["88.100.2"]


async def test_data_survives_reopening(target: str) -> None:
    async with open_store(target) as store:
        await store.create("88.100.1/keep", [url(1)])
        await store.home_prefix(PREFIX)
        counter = await store.change_counter()
    async with open_store(target) as store:
        assert await store.get("88.100.1/keep") == HandleRecord("88.100.1/keep", (url(1),))
        assert await store.homed_prefixes() == [PREFIX]
        assert await store.change_counter() == counter
        assert await store.count() == 1
    with pytest.raises(HandleStoreError):
        await store.get("88.100.1/keep")  # closed


# -- concurrency ------------------------------------------------------------------------------


async def test_concurrent_gets_and_puts(store: HandleStore) -> None:
    handles = [f"{PREFIX}/c{i}" for i in range(20)]

    async def writer(n: int) -> None:
        handle = handles[n % len(handles)]
        await store.put_values(handle, [url(n // len(handles) + 1, f"https://e/{n}")])

    async def reader(n: int) -> None:
        record = await store.get(handles[n % len(handles)])
        if record is not None:  # values come whole and in order
            assert [v.index for v in record.values] == sorted(v.index for v in record.values)

    await asyncio.gather(*(writer(n) for n in range(200)), *(reader(n) for n in range(400)))
    assert await store.count() == 20
    for handle in handles:
        assert await indexes(store, handle) == list(range(1, 11))


async def test_concurrent_creates_of_one_handle(store: HandleStore) -> None:
    results = await asyncio.gather(
        *(store.create("88.100.1/race", [url(i + 1)]) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, HandleExistsError) for r in results if r is not None)
    assert len(await indexes(store, "88.100.1/race")) == 1


# -- bulk load --------------------------------------------------------------------------------


def generated(n: int, start: int = 0) -> Iterator[HandleRecord]:
    for i in range(start, start + n):
        name = f"{PREFIX}/BULK-{i:06d}"
        yield HandleRecord(name, (url(1, f"https://example.com/{i}"), admin()))


async def test_bulk_load(store: HandleStore) -> None:
    await store.create("88.100.1/zz-before", [url(1)])
    counter = await store.change_counter()
    reports: list[int] = []
    assert await store.bulk_load(generated(20_000), progress=reports.append) == 20_000
    assert reports == sorted(reports)
    assert reports[-1] == 20_000
    assert await store.count() == 20_001
    assert await store.change_counter() > counter
    assert await store.get("88.100.1/bulk-012345") == next(generated(1, 12_345))
    listed = await store.list_handles(PREFIX, limit=30_000)
    assert len(listed) == 20_001
    assert listed[:2] == ["88.100.1/BULK-000000", "88.100.1/BULK-000001"]
    assert await store.bulk_load([]) == 0


async def test_bulk_load_is_all_or_nothing(store: HandleStore) -> None:
    await store.create("88.100.1/BULK-000500", [url(1)])
    with pytest.raises(HandleExistsError):
        await store.bulk_load(generated(1_000))
    with pytest.raises(HandleExistsError):
        await store.bulk_load([*generated(10, 2000), *generated(1, 2005)])
    assert await store.count() == 1
    assert await store.get("88.100.1/BULK-000001") is None


# -- SQLite specifics -------------------------------------------------------------------------


class BusyReader:
    """Stands in for the loop's read connection and answers SQLITE_BUSY, as during recovery."""

    def execute(self, *args: object) -> None:
        exc = sqlite3.OperationalError("database is locked")
        exc.sqlite_errorcode = 5  # SQLITE_BUSY
        raise exc

    def close(self) -> None:
        pass


async def test_sqlite_busy_read_is_retried_off_the_loop(tmp_path: Path) -> None:
    async with SqliteHandleStore(path=tmp_path / "handles.sqlite3") as store:
        await store.create("88.100.1/busy", [url(1)])
        reader, store._reader = store._reader, BusyReader()  # type: ignore[assignment]
        try:
            assert await store.get("88.100.1/busy") == HandleRecord("88.100.1/busy", (url(1),))
            assert await store.count() == 1
        finally:
            store._reader = reader


# -- PostgreSQL specifics ---------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_reads_that_arrive_together_share_a_query(pg_database: str) -> None:
    async with PostgresHandleStore(dsn=pg_database) as store:
        await store.bulk_load(generated(300))
        wanted = [f"{PREFIX}/bulk-{i:06d}" for i in range(0, 300, 3)] * 2  # each twice
        wanted += [f"{PREFIX}/missing-{i}" for i in range(20)]
        before = store.read_queries
        records = await asyncio.gather(*(store.get(h) for h in wanted))
        queries = store.read_queries - before
        assert 1 <= queries <= store.max_connections + len(wanted) // 128 + 1
        expected = {r.handle.upper(): r for r in generated(300)}
        for handle, record in zip(wanted, records, strict=True):
            assert record == expected.get(handle.upper())
        # Alone, a read is still one query of its own.
        before = store.read_queries
        assert await store.get(f"{PREFIX}/BULK-000007") == expected[f"{PREFIX}/BULK-000007"]
        assert store.read_queries == before + 1


@pytest.mark.postgres
async def test_postgres_batched_reads_fail_alone_and_survive_cancellation(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PostgresHandleStore(dsn=pg_database) as store:
        await store.create(f"{PREFIX}/a", [url(1)])
        # A read whose caller gave up does not disturb the others in its batch.
        tasks = [asyncio.create_task(store.get(f"{PREFIX}/a")) for _ in range(10)]
        tasks[3].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[3], asyncio.CancelledError)
        assert all(
            r == HandleRecord(f"{PREFIX}/a", (url(1),)) for i, r in enumerate(results) if i != 3
        )
        # A query that fails fails the reads of its batch with the store's error, no more.
        fetch = store._fetch
        calls = 0

        async def fail_once(action: str, query: str, params: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise HandleStoreError("PostgreSQL cannot resolve handles: connection lost")
            return await fetch(action, query, params)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "_fetch", fail_once)
        failed = await asyncio.gather(
            *(store.get(f"{PREFIX}/a") for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, HandleStoreError) for r in failed)
        assert await store.get(f"{PREFIX}/a") == HandleRecord(f"{PREFIX}/a", (url(1),))
    # Reads still waiting when the store closes are told so.
    store = PostgresHandleStore(dsn=pg_database)
    await store.open()
    pending = [asyncio.create_task(store.get(f"{PREFIX}/a")) for _ in range(3)]
    await asyncio.sleep(0)  # they are waiting for their batch
    assert len(store._wanted) == 3
    await store.close()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(o, HandleStoreError) for o in outcomes)

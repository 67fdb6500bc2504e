"""The audit trail: hash recipe, tampering detected, serialised writers; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tiangong.data.governance import AuditEvent, AuditKind, AuditLog
from tiangong.security.audit import (
    GENESIS,
    AuditTrail,
    AuditUnavailableError,
    Checkpoint,
    Tamper,
    chain_hash,
)


def _async_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The trail's database: an SQLite file, and a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'audit.sqlite3'}"
    else:
        url = _async_url(request.getfixturevalue("pg_database"))
    engine = create_async_engine(url)
    yield engine
    await engine.dispose()


async def _fill(trail: AuditTrail, n: int) -> None:
    for i in range(n):
        await trail.record(
            actor=f"user-{i % 3}",
            action="POST /api/v1/devices",
            target=f"id=pump-{i}",
            tenant_id="acme" if i % 2 else "other",
            source="192.0.2.7",
            outcome="201",
            detail={"fields": ["id", "site_id"], "n": i, "名": "泵"},
        )


async def _tamper(engine: AsyncEngine, trail: AuditTrail, statement: str) -> None:
    """Do what someone with the database's credentials can: drop the guards, then change rows."""
    name = trail.table.name
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(sa.text(f"DROP TRIGGER {name}_no_change ON {name}"))
            await conn.execute(sa.text(f"DROP TRIGGER {name}_no_truncate ON {name}"))
        else:
            await conn.execute(sa.text(f"DROP TRIGGER {name}_no_update"))
            await conn.execute(sa.text(f"DROP TRIGGER {name}_no_delete"))
        await conn.execute(sa.text(statement))


async def test_hash_recipe_recomputed_by_hand(engine: AsyncEngine) -> None:
    """An auditor with hashlib and json, and the docs' recipe, gets the stored hashes."""
    async with AuditTrail(engine) as trail:
        await _fill(trail, 3)
        entries = list(reversed(await trail.entries()))
    prev = GENESIS
    for entry in entries:
        row = entry.to_dict()
        fields = [
            row["seq"], row["at"], row["actor"], row["action"], row["target"],
            row["tenant_id"], row["source"], row["outcome"], row["detail"],
        ]  # fmt: skip
        body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        assert entry.prev_hash == prev
        assert hashlib.sha256(prev.encode() + body.encode()).hexdigest() == entry.hash
        prev = entry.hash
    assert entries[0].at.tzinfo is not None
    assert str(entries[0].to_dict()["at"]).endswith("+00:00")


async def test_intact_trail_verifies_and_pages(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        await _fill(trail, 7)
        result = await trail.verify()
        assert result.ok, result.reason
        assert (result.entries, result.head_seq) == (7, 7)
        assert result.head_hash == (await trail.head()).hash
        newest = await trail.entries(limit=3)
        assert [e.seq for e in newest] == [7, 6, 5]
        older = await trail.entries(limit=3, before_seq=5)
        assert [e.seq for e in older] == [4, 3, 2]
        acme = await trail.entries(tenant_id="acme")
        assert {e.tenant_id for e in acme} == {"acme"}
        assert [e.seq for e in acme] == [6, 4, 2]
        assert [e.seq for e in await trail.entries(actor="user-1")] == [5, 2]
        assert len(await trail.entries(action="POST ")) == 7


async def test_the_trail_refuses_update_and_delete(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        await _fill(trail, 2)
        name = trail.table.name
        for statement in (
            f"UPDATE {name} SET actor = 'someone else' WHERE seq = 1",
            f"DELETE FROM {name} WHERE seq = 2",
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(sa.text(statement))
        if engine.dialect.name == "postgresql":
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(sa.text(f"TRUNCATE {name}"))
        assert (await trail.verify()).ok


async def test_an_edited_entry_is_named(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        await _fill(trail, 5)
        await _tamper(
            engine, trail, f"UPDATE {trail.table.name} SET actor = 'nobody' WHERE seq = 3"
        )
        result = await trail.verify()
    assert (result.ok, result.first_broken, result.problem) == (False, 3, Tamper.EDITED)
    assert "edited" in result.reason


async def test_an_edited_detail_is_named(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        await _fill(trail, 4)
        await _tamper(
            engine,
            trail,
            f"UPDATE {trail.table.name} SET detail = '{{\"n\": 99}}', outcome = '403'"
            " WHERE seq = 2",
        )
        result = await trail.verify()
    assert (result.first_broken, result.problem) == (2, Tamper.EDITED)


async def test_a_removed_entry_is_named(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        await _fill(trail, 5)
        await _tamper(engine, trail, f"DELETE FROM {trail.table.name} WHERE seq IN (2, 3)")
        result = await trail.verify()
    assert (result.first_broken, result.problem) == (2, Tamper.MISSING)
    assert "2..3" in result.reason


async def test_removing_the_oldest_entries_is_detected(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        await _fill(trail, 3)
        await _tamper(engine, trail, f"DELETE FROM {trail.table.name} WHERE seq = 1")
        result = await trail.verify()
    assert (result.first_broken, result.problem) == (1, Tamper.MISSING)


async def test_a_rewritten_entry_breaks_the_next_link(engine: AsyncEngine) -> None:
    """Someone who edits an entry and recomputes its hash still breaks the link after it."""
    async with AuditTrail(engine) as trail:
        await _fill(trail, 4)
        row = (await trail.entries(limit=1, before_seq=3))[0]
        forged = row.to_dict() | {"actor": "innocent"}
        fields = [forged[k] for k in ("seq", "at", "actor", "action", "target", "tenant_id",
                                      "source", "outcome", "detail")]  # fmt: skip
        digest = chain_hash(row.prev_hash, fields)
        await _tamper(
            engine,
            trail,
            f"UPDATE {trail.table.name} SET actor = 'innocent', hash = '{digest}' WHERE seq = 2",
        )
        result = await trail.verify()
    assert (result.first_broken, result.problem) == (3, Tamper.REORDERED)
    assert "entry 2 was replaced" in result.reason


async def test_swapped_entries_are_detected(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        await _fill(trail, 4)
        name = trail.table.name
        await _tamper(engine, trail, f"UPDATE {name} SET seq = -2 WHERE seq = 2")
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"UPDATE {name} SET seq = 2 WHERE seq = 3"))
            await conn.execute(sa.text(f"UPDATE {name} SET seq = 3 WHERE seq = -2"))
        result = await trail.verify()
    assert result.first_broken == 2
    assert result.problem is Tamper.EDITED  # the seq is hashed: a moved entry is an edited one


async def test_truncation_needs_the_checkpoint(engine: AsyncEngine, tmp_path: Path) -> None:
    """Cutting the tail leaves a valid shorter chain; the checkpoint file exposes it."""
    checkpoint = tmp_path / "audit-checkpoint.json"
    async with AuditTrail(engine, checkpoint=checkpoint) as trail:
        await _fill(trail, 6)
        anchored = json.loads(checkpoint.read_text())
        assert anchored["seq"] == 6
        assert oct(checkpoint.stat().st_mode & 0o777) == oct(0o600)
        await _tamper(engine, trail, f"DELETE FROM {trail.table.name} WHERE seq > 4")
        result = await trail.verify()
        assert (result.first_broken, result.problem) == (5, Tamper.TRUNCATED)
        assert "5..6" in result.reason
        # Without the anchor the shorter chain looks intact: the documented limit.
        blind = AuditTrail(engine)
        assert (await blind.verify()).ok


async def test_a_rewritten_tail_differs_from_the_checkpoint(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Replacing the tail with recomputed entries: the anchored entry's hash differs."""
    checkpoint = tmp_path / "audit-checkpoint.json"
    async with AuditTrail(engine, checkpoint=checkpoint) as trail:
        await _fill(trail, 3)
        await _tamper(engine, trail, f"DELETE FROM {trail.table.name} WHERE seq = 3")
    # A trail without the anchor appends a new entry 3 over the cut: a valid chain again.
    async with AuditTrail(engine) as forger:
        await forger.record(actor="x", action="nothing to see")
    async with AuditTrail(engine, checkpoint=checkpoint) as trail:
        result = await trail.verify()
    assert (result.first_broken, result.problem) == (3, Tamper.EDITED)
    assert "checkpoint" in result.reason


async def test_an_expected_head_given_by_hand(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        await _fill(trail, 2)
        head = await trail.head()
        assert (await trail.verify(expect=head)).ok
        wrong = await trail.verify(expect=Checkpoint(head.seq, "f" * 64))
        assert wrong.problem is Tamper.EDITED


async def test_concurrent_records_form_one_chain(engine: AsyncEngine) -> None:
    """Group commit in one process: 200 callers at once, no entry lost, no fork."""
    async with AuditTrail(engine) as trail:
        entries = await asyncio.gather(
            *(trail.record(actor="load", action="test", target=str(i)) for i in range(200))
        )
        assert sorted(e.seq for e in entries) == list(range(1, 201))
        assert {e.target for e in entries} == {str(i) for i in range(200)}
        result = await trail.verify()
    assert result.ok
    assert result.entries == 200


async def test_two_writers_never_fork_the_chain(engine: AsyncEngine) -> None:
    """Two platform processes (two engines, two trails) appending at once to one database."""
    other = create_async_engine(engine.url)
    try:
        async with AuditTrail(engine) as one, AuditTrail(other) as two:

            async def write(trail: AuditTrail, who: str) -> None:
                for i in range(60):
                    await trail.record(actor=who, action="test", target=str(i))

            await asyncio.gather(
                write(one, "one"), write(two, "two"), write(one, "one-b"), write(two, "two-b")
            )
            result = await one.verify()
            assert result.ok, result.reason
            assert result.entries == 240
            everything = await one.entries(limit=1000)
            assert sorted(e.seq for e in everything) == list(range(1, 241))
            assert len({e.hash for e in everything}) == 240
    finally:
        await other.dispose()


async def test_a_cancelled_caller_does_not_lose_the_others(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        tasks = [
            asyncio.create_task(trail.record(actor="c", action="test", target=str(i)))
            for i in range(20)
        ]
        await asyncio.sleep(0)
        tasks[0].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        written = [d for d in done if not isinstance(d, BaseException)]
        assert len(written) >= 19
        result = await trail.verify()
        assert result.ok
        assert result.entries >= 19


async def test_token_use_is_coalesced(engine: AsyncEngine) -> None:
    """One ``token.use`` entry per token and minute, with the count and the addresses."""
    now = [datetime(2026, 12, 3, 8, 15, 30, tzinfo=UTC)]
    async with AuditTrail(engine, clock=lambda: now[0]) as trail:
        for _ in range(50):
            trail.note_token_use(
                token_id="tok_a", actor="viewer (tok_a)", tenant_id="acme", role="viewer",
                source="192.0.2.1",
            )  # fmt: skip
        for _ in range(3):
            trail.note_token_use(
                token_id="tok_b", actor="admin (tok_b)", tenant_id=None, source="192.0.2.2"
            )
        assert await trail.flush_token_use() == 0  # the minute is not over yet
        now[0] += timedelta(seconds=29)
        assert await trail.flush_token_use() == 0
        now[0] += timedelta(seconds=1)  # 08:16:00: the minute of tok_a and tok_b is over
        trail.note_token_use(token_id="tok_c", actor="c (tok_c)", tenant_id=None)
        assert await trail.flush_token_use() == 2  # tok_c's minute is not
    # Closing writes the current minute too.
    async with AuditTrail(engine) as trail:
        uses = await trail.entries(action="token.use")
    by_token = {e.target: e for e in uses}
    assert set(by_token) == {"tok_a", "tok_b", "tok_c"}
    assert by_token["tok_a"].detail["count"] == 50
    assert by_token["tok_a"].detail["minute"].startswith("2026-12-03T08:15")
    assert by_token["tok_a"].tenant_id == "acme"
    assert by_token["tok_a"].detail["sources"] == ["192.0.2.1"]
    assert by_token["tok_b"].detail["count"] == 3


async def test_odd_input_is_recorded_not_refused(engine: AsyncEngine) -> None:
    async with AuditTrail(engine) as trail:
        entry = await trail.record(
            actor="a" * 1000,
            action="x",
            detail={"float": 1.5, "nan": float("nan"), "bytes": b"\x00", "set": {"b", "a"}},
        )
        assert len(entry.actor) == 200
        assert entry.detail == {
            "float": "1.5",
            "nan": "nan",
            "bytes": "b'\\x00'",
            "set": ["a", "b"],
        }
        big = await trail.record(actor="a", action="x", detail={"blob": "x" * 20_000})
        assert "truncated" in big.detail
        assert (await trail.verify()).ok


async def test_an_unreachable_database_is_an_error_not_a_hang(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'audit.sqlite3'}")
    trail = AuditTrail(engine, timeout=2.0)
    await trail.open()
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP TRIGGER audit_trail_no_update"))
        await conn.execute(sa.text("DROP TRIGGER audit_trail_no_delete"))
        await conn.execute(sa.text("DROP TABLE audit_trail"))
    with pytest.raises(AuditUnavailableError):
        await trail.record(actor="a", action="x")
    await engine.dispose()


def test_the_data_centers_log_uses_the_same_chain(tmp_path: Path) -> None:
    """``data.governance.AuditLog`` hashes with ``security.audit.chain_hash``: one mechanism."""
    with AuditLog(tmp_path / "audit.sqlite3") as log:
        first = log.append(AuditEvent(AuditKind.EXPORT, "ent-1", "msg-1", destination="sub-1"))
        event = first.event
        fields = [
            1, event.at, "export", "ent-1", "msg-1", "", "sub-1", "",
        ]  # fmt: skip
        assert first.prev_hash == GENESIS
        assert first.hash == chain_hash(GENESIS, fields)
        assert log.verify().ok


async def test_an_identifier_node_records_every_write_decision(tmp_path: Path) -> None:
    """``tiangong idnode``: allowed and refused writes, with the admin handle and the peer."""
    from tiangong.identity.auth import AdminIdentity  # noqa: PLC0415
    from tiangong.identity.client import HandleClient, ServerAddress  # noqa: PLC0415
    from tiangong.identity.handle.messages import (  # noqa: PLC0415
        HandleRequest,
        RemoveValuesRequest,
        ValuesRequest,
    )
    from tiangong.identity.handle.protocol import OpCode, ResponseCode  # noqa: PLC0415
    from tiangong.identity.handle.values import HandleValue, ValueReference  # noqa: PLC0415
    from tiangong.identity.node.runner import NodeOptions, running_node  # noqa: PLC0415
    from tiangong.identity.node.service import NodeRole  # noqa: PLC0415

    options = NodeOptions(
        NodeRole.ENTERPRISE, prefix="88.100.9", port=0, admin_secret=b"s" * 32,
        data_dir=tmp_path / "node",
    )  # fmt: skip
    admin = ValueReference("0.NA/88.100.9", 300)
    async with running_node(options) as running:
        tcp = ServerAddress(running.address.host, running.address.port, "tcp")
        good = HandleClient(identity=AdminIdentity(admin, secret=b"s" * 32))
        bad = HandleClient(identity=AdminIdentity(admin, secret=b"wrong" * 8))
        value = (HandleValue(1, "URL", b"http://example.test/"),)

        async def send(client: HandleClient, op: OpCode, body: object) -> ResponseCode:
            answer = await client.send(tcp, client.message(op, body))  # type: ignore[arg-type]
            return answer.header.response

        assert await send(good, OpCode.CREATE_HANDLE, ValuesRequest("88.100.9/A", value)) is (
            ResponseCode.SUCCESS
        )
        extra = (HandleValue(2, "URL", b"http://example.test/2"),)
        assert await send(good, OpCode.ADD_VALUE, ValuesRequest("88.100.9/A", extra)) is (
            ResponseCode.SUCCESS
        )
        assert await send(good, OpCode.REMOVE_VALUE, RemoveValuesRequest("88.100.9/A", (2,))) is (
            ResponseCode.SUCCESS
        )
        assert await send(bad, OpCode.DELETE_HANDLE, HandleRequest("88.100.9/A")) is (
            ResponseCode.AUTHENTICATION_FAILED
        )
        assert await send(good, OpCode.CREATE_HANDLE, ValuesRequest("88.100.9/A", value)) is (
            ResponseCode.HANDLE_ALREADY_EXISTS
        )
        assert await send(good, OpCode.DELETE_HANDLE, HandleRequest("88.100.9/A")) is (
            ResponseCode.SUCCESS
        )
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'node' / 'audit.sqlite3'}")
    try:
        trail = AuditTrail(engine, checkpoint=tmp_path / "node" / "audit-checkpoint.json")
        assert (await trail.verify()).ok
        written = list(reversed(await trail.entries()))
        got = [(e.action, e.target, e.actor, e.outcome) for e in written]
        assert {e.source for e in written[1:]} == {"tcp:127.0.0.1"}
    finally:
        await engine.dispose()
    who = "300:0.NA/88.100.9"
    assert got == [
        ("prefix.bootstrap", "88.100.9", "operator", "ok"),
        ("handle.create", "88.100.9/A", who, "ok"),
        ("value.add", "88.100.9/A", who, "ok"),
        ("value.remove", "88.100.9/A", who, "ok"),
        ("op.delete_handle", "88.100.9/A", who, "refused:AUTHENTICATION_FAILED"),
        ("handle.create", "88.100.9/A", who, "refused:HANDLE_ALREADY_EXISTS"),
        ("handle.delete", "88.100.9/A", who, "ok"),
    ]

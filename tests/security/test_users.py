"""Users, argon2id passwords, sessions and the sign-in brute-force throttle."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from tests.platform.conftest import PlatformEnv, running_platform
from tiangong.platform.database import Database, user_sessions, users
from tiangong.platform.errors import ConflictError, NotFoundError, ValidationError
from tiangong.platform.model import Tenant
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tokens import ROLE_SCOPES, ApiRole, ApiScope
from tiangong.security.users import (
    LoginAttempt,
    LoginBusyError,
    LoginRefusedError,
    LoginThrottle,
    LoginThrottledError,
    PasswordPolicyError,
    UserService,
    check_password_policy,
    generate_password,
)

#: Cheap parameters keep the tests fast; the policy and code paths are the same.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
GOOD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """The metadata database on each backend: embedded SQLite and the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}"
    else:
        dsn: str = request.getfixturevalue("pg_database")
        url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    database = Database(url=url)
    await database.open()
    registry = DeviceRegistry(database)
    await registry.create_tenant(Tenant(id="acme", name="Acme"))
    await registry.create_tenant(Tenant(id="other", name="Other"))
    yield database
    await database.close()


def test_password_policy() -> None:
    check_password_policy(GOOD, "alice")
    for password, why in [
        ("short", "at least 12"),
        ("alice-is-great-2026", "user name"),
        ("ALICE123456789", "user name"),
        ("aaaaaaaaaaaaaaaa", "repeated"),
        ("x" * 300, "at most"),
    ]:
        with pytest.raises(PasswordPolicyError, match=why):
            check_password_policy(password, "alice")
    generated = generate_password()
    check_password_policy(generated, "alice")
    assert generated != generate_password()
    # A policy breach is a validation error too: the API answers it with 422.
    assert issubclass(PasswordPolicyError, ValidationError)


async def test_users_sessions_and_passwords(db: Database) -> None:
    service = UserService(db, hasher=FAST)
    attempts: list[LoginAttempt] = []
    service.add_login_listener(attempts.append)
    alice = await service.create(
        username="Alice@Acme", password=GOOD, role=ApiRole.OPERATOR, tenant_id="acme"
    )
    assert alice.username == "alice@acme"  # names are kept in lower case
    async with db.engine.connect() as conn:
        stored = (await conn.execute(sa.select(users.c.password_hash))).scalar_one()
    assert stored.startswith("$argon2id$")
    assert GOOD not in stored
    with pytest.raises(ConflictError):
        await service.create(
            username="alice@acme", password=GOOD, role=ApiRole.VIEWER, tenant_id="other"
        )
    with pytest.raises(ValidationError, match="need one"):
        await service.create(username="bob", password=GOOD, role=ApiRole.VIEWER, tenant_id=None)
    with pytest.raises(ValidationError, match="invalid user name"):
        await service.create(
            username="bad name", password=GOOD, role=ApiRole.VIEWER, tenant_id="acme"
        )
    with pytest.raises(NotFoundError):
        await service.create(username="ghost", password=GOOD, role=ApiRole.VIEWER, tenant_id="nope")

    session, token = await service.login("ALICE@acme", GOOD, source="10.0.0.1")
    assert token.startswith("tgs_")
    principal = await service.verify_session(token)
    assert principal is not None
    assert (principal.kind, principal.name, principal.role, principal.tenant_id) == (
        "session",
        "alice@acme",
        ApiRole.OPERATOR,
        "acme",
    )
    assert principal.user == alice.id
    assert principal.scopes == ROLE_SCOPES[ApiRole.OPERATOR]
    async with db.engine.connect() as conn:
        hashes = (await conn.execute(sa.select(user_sessions.c.token_hash))).scalars().all()
    assert token not in hashes  # only the digest is stored

    with pytest.raises(LoginRefusedError):
        await service.login("alice@acme", "wrong password!", source="10.0.0.1")
    with pytest.raises(LoginRefusedError):
        await service.login("nobody", GOOD, source="10.0.0.1")
    assert [(a.username, a.ok, a.tenant_id) for a in attempts] == [
        ("alice@acme", True, "acme"),
        ("alice@acme", False, "acme"),
        ("nobody", False, None),
    ]

    # Other tenants do not see the user.
    with pytest.raises(NotFoundError):
        await service.get(alice.id, "other")
    assert [u.id for u in await service.list("acme")] == [alice.id]
    assert await service.list("other") == []

    # Disabling ends sessions and refuses sign-in, even with the right password.
    await service.update(alice.id, "acme", disabled=True)
    assert await service.verify_session(token) is None
    with pytest.raises(LoginRefusedError):
        await service.login("alice@acme", GOOD, source="10.0.0.1")
    await service.update(alice.id, "acme", disabled=False)
    _, token = await service.login("alice@acme", GOOD, source="10.0.0.1")

    # A new password ends every session; the old password stops working.
    with pytest.raises(LoginRefusedError):
        await service.set_password(alice.id, None, "another good one", current="not it at all")
    with pytest.raises(PasswordPolicyError):
        await service.set_password(alice.id, None, "short")
    await service.set_password(alice.id, None, "another good one", current=GOOD)
    assert await service.verify_session(token) is None
    with pytest.raises(LoginRefusedError):
        await service.login("alice@acme", GOOD, source="10.0.0.2")
    session, token = await service.login("alice@acme", "another good one", source="10.0.0.2")

    # Sign-out ends the session at once.
    await service.logout(session.id)
    assert await service.verify_session(token) is None

    await service.delete(alice.id, "acme")
    with pytest.raises(NotFoundError):
        await service.get(alice.id, None)


async def test_session_idle_timeout_and_absolute_expiry(db: Database) -> None:
    service = UserService(db, hasher=FAST)
    await service.create(username="carol", password=GOOD, role=ApiRole.VIEWER, tenant_id="acme")
    idle, idle_token = await service.login("carol", GOOD, source="10.0.0.1")
    old, old_token = await service.login("carol", GOOD, source="10.0.0.1")
    _fresh, fresh_token = await service.login("carol", GOOD, source="10.0.0.1")
    now = datetime.now(UTC)
    # Age the sessions in the database instead of waiting for them.
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.update(user_sessions)
            .where(user_sessions.c.id == idle.id)
            .values(last_used_at=now - service.idle_timeout - timedelta(seconds=1))
        )
        await conn.execute(
            sa.update(user_sessions)
            .where(user_sessions.c.id == old.id)
            .values(expires_at=now - timedelta(seconds=1))
        )
    assert await service.verify_session(idle_token) is None
    assert await service.verify_session(old_token) is None
    assert await service.verify_session(fresh_token) is not None
    assert await service.verify_session("tgs_not-a-session") is None
    assert await service.verify_session("tg_an-api-token") is None


async def test_hash_is_upgraded_when_parameters_change(db: Database) -> None:
    old = UserService(db, hasher=FAST)
    await old.create(username="dave", password=GOOD, role=ApiRole.VIEWER, tenant_id="acme")
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    new = UserService(db, hasher=stronger)
    await new.login("dave", GOOD, source="10.0.0.1")
    async with db.engine.connect() as conn:
        stored = (await conn.execute(sa.select(users.c.password_hash))).scalar_one()
    assert "m=2048,t=2,p=1" in stored
    assert not stronger.check_needs_rehash(stored)
    await new.login("dave", GOOD, source="10.0.0.1")  # still the same password


async def test_hashing_is_bounded(db: Database) -> None:
    """Sign-ins beyond the hash slots and their queue are refused at once, not queued."""
    service = UserService(db, hasher=FAST, hash_concurrency=1, hash_queue=0)
    await service.create(username="erin", password=GOOD, role=ApiRole.VIEWER, tenant_id="acme")
    release = threading.Event()
    holding = asyncio.create_task(service._in_hash_slot(release.wait, 30))
    while service._hashing == 0:
        await asyncio.sleep(0)
    with pytest.raises(LoginBusyError):
        await service.login("erin", GOOD, source="10.0.0.1")
    release.set()
    assert await holding is True
    await service.login("erin", GOOD, source="10.0.0.1")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_policy() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    attacker, elsewhere = "203.0.113.9", "198.51.100.7"
    for _ in range(5):
        throttle.check("victim", attacker)
        throttle.failed("victim", attacker)
    # The sixth failure of the pair starts the back-off: 1 s, then 2, 4, 8...
    throttle.check("victim", attacker)
    throttle.failed("victim", attacker)
    with pytest.raises(LoginThrottledError) as refused:
        throttle.check("victim", attacker)
    assert refused.value.retry_after == 1
    assert "this user from this address" in refused.value.reason
    # Other users from the same address, and the victim from elsewhere, are not held up.
    throttle.check("someone-else", attacker)
    throttle.check("victim", elsewhere)
    clock.now += 1.0
    throttle.check("victim", attacker)
    throttle.failed("victim", attacker)
    with pytest.raises(LoginThrottledError) as refused:
        throttle.check("victim", attacker)
    assert refused.value.retry_after == 2
    # The pair's back-off doubles up to 15 minutes.
    for _ in range(20):
        clock.now += 1000  # past each back-off, within the hour that keeps a counter
        throttle.failed("victim", attacker)
    with pytest.raises(LoginThrottledError) as refused:
        throttle.check("victim", attacker)
    assert refused.value.retry_after == 900
    # The victim from a good address with the right password: its counter starts over.
    throttle.succeeded("victim", elsewhere)
    throttle.check("victim", elsewhere)


def test_throttle_address_spraying_many_accounts() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    sprayer = "203.0.113.50"
    for n in range(20):
        throttle.failed(f"user-{n}", sprayer)
    throttle.check("user-99", sprayer)
    throttle.failed("user-20", sprayer)
    with pytest.raises(LoginThrottledError, match="this address"):
        throttle.check("user-99", sprayer)
    throttle.check("user-99", "198.51.100.1")


def test_throttle_distributed_attack_on_one_account() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock)
    # Eleven failures from two addresses: no account-wide back-off (one attacker, two pairs).
    for n in range(11):
        throttle.failed("boss", f"203.0.113.{n % 2}")
    throttle.check("boss", "198.51.100.1")
    # From a third address on, it applies to every address, for at most a minute.
    throttle.failed("boss", "203.0.113.2")
    with pytest.raises(LoginThrottledError, match="several addresses"):
        throttle.check("boss", "198.51.100.1")
    for n in range(30):
        throttle.failed("boss", f"203.0.113.{n}")
    with pytest.raises(LoginThrottledError) as refused:
        throttle.check("boss", "198.51.100.1")
    assert refused.value.retry_after == 60
    clock.now += 60
    throttle.check("boss", "198.51.100.1")
    # Counters are forgotten an hour after the last failure.
    clock.now += 3600
    throttle.failed("boss", "203.0.113.3")
    throttle.check("boss", "198.51.100.1")


def test_throttle_memory_is_bounded() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(clock=clock, max_entries=100)
    for n in range(5000):
        throttle.failed(f"name-{n}", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert throttle.entries <= 300


# -- through the API -----------------------------------------------------------------------------


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[PlatformEnv]:
    async with running_platform(tmp_path, embedded_broker=True, wait_connected=False) as running:
        running.platform.users.hasher = FAST
        yield running


def from_address(env: PlatformEnv, address: str) -> httpx.AsyncClient:
    """An in-process client of the platform's app whose requests come from ``address``."""
    from tiangong.platform.api.app import create_app  # noqa: PLC0415

    transport = httpx.ASGITransport(app=create_app(env.platform), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://platform")


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1"]], ids=["no-proxy", "proxy"])
async def test_forwarded_for_names_the_client_only_behind_a_trusted_proxy(
    tmp_path: Path, trusted: list[str]
) -> None:
    """Over a real socket from 127.0.0.1: X-Forwarded-For is ignored unless 127.0.0.1 is a
    trusted proxy (uvicorn alone would believe it from loopback, so any local process could
    pose as any address and slip past the per-address sign-in throttle)."""
    async with running_platform(
        tmp_path, embedded_broker=True, wait_connected=False, trusted_proxies=trusted
    ) as running:
        running.platform.users.hasher = FAST
        attempts: list[LoginAttempt] = []
        running.platform.users.add_login_listener(attempts.append)
        wrong = {"username": "nobody", "password": "guess-number-x"}
        answer = await running.api.post(
            "/api/v1/auth/login", json=wrong, headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert answer.status_code == 401
        source = "203.0.113.9" if trusted else "127.0.0.1"
        assert [a.source for a in attempts] == [source]
        entries = await running.platform.audit.entries(limit=100)
        assert [e.source for e in entries if e.action == "auth.login_failed"] == [source]


async def test_brute_force_is_throttled_while_others_sign_in(env: PlatformEnv) -> None:
    attempts: list[LoginAttempt] = []
    env.platform.users.add_login_listener(attempts.append)
    for name in ("victim", "bystander"):
        created = await env.api.post(
            "/api/v1/users",
            json={"username": name, "password": GOOD, "role": "viewer", "tenant_id": "acme"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["password"] is None
    attacker = from_address(env, "203.0.113.66")
    office = from_address(env, "198.51.100.20")
    async with attacker, office:
        wrong = {"username": "victim", "password": "guess-number-x"}
        statuses = [
            (await attacker.post("/api/v1/auth/login", json=wrong)).status_code for _ in range(8)
        ]
        assert statuses[:5] == [401] * 5
        assert 429 in statuses[5:]
        refused = await attacker.post(
            "/api/v1/auth/login", json={"username": "victim", "password": GOOD}
        )
        # Throttled: the right password is not even checked from the attacker's address.
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        # Everybody else signs in: the victim from the office, another user from anywhere.
        victim = await office.post(
            "/api/v1/auth/login", json={"username": "victim", "password": GOOD}
        )
        assert victim.status_code == 200, victim.text
        bystander = await attacker.post(
            "/api/v1/auth/login", json={"username": "bystander", "password": GOOD}
        )
        assert bystander.status_code == 200
        session = victim.json()["token"]
        me = await office.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {session}"})
        assert me.json()["kind"] == "session"
        assert me.json()["name"] == "victim"
        assert ApiScope.AUDIT_READ not in me.json()["scopes"]
        bye = await office.post(
            "/api/v1/auth/logout", headers={"Authorization": f"Bearer {session}"}
        )
        assert bye.status_code == 204
        after = await office.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {session}"})
        assert after.status_code == 401
    throttled = [a for a in attempts if a.throttled]
    assert throttled
    assert all(a.source == "203.0.113.66" and not a.ok for a in throttled)
    assert {a.username for a in attempts if a.ok} == {"victim", "bystander"}
    # The audit trail has the checked attempts, with who and from where (not each throttled one).
    trail = env.platform.audit
    entries = await trail.entries(limit=1000)
    failed = [e for e in entries if e.action == "auth.login_failed"]
    assert len(failed) == statuses.count(401)
    assert {(e.actor, e.source, e.outcome, e.tenant_id) for e in failed} == {
        ("victim", "203.0.113.66", "refused", "acme")
    }
    logins = [e for e in entries if e.action == "auth.login"]
    assert {(e.actor, e.source, e.tenant_id) for e in logins} == {
        ("victim", "198.51.100.20", "acme"),
        ("bystander", "203.0.113.66", "acme"),
    }
    [logout] = [e for e in entries if e.action == "auth.logout"]
    assert (logout.actor, logout.tenant_id) == ("victim", "acme")


async def test_user_management_routes(env: PlatformEnv) -> None:
    admin = await env.api.post(
        "/api/v1/users", json={"username": "boss@acme", "role": "tenant_admin", "tenant_id": "acme"}
    )
    assert admin.status_code == 201
    generated = admin.json()["password"]
    assert len(generated) >= 12
    async with from_address(env, "10.1.1.1") as client:
        login = await client.post(
            "/api/v1/auth/login", json={"username": "boss@acme", "password": generated}
        )
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        own_id = login.json()["user"]["id"]
        weak = await client.post(
            "/api/v1/users",
            headers=headers,
            json={"username": "op1", "role": "operator", "password": "short"},
        )
        assert weak.status_code == 422
        assert "at least 12" in weak.json()["detail"]
        made = await client.post(
            "/api/v1/users",
            headers=headers,
            json={"username": "op1", "role": "operator", "password": GOOD},
        )
        assert made.status_code == 201
        assert made.json()["user"]["tenant_id"] == "acme"
        op_id = made.json()["user"]["id"]
        # A tenant admin creates no auditors (separation of duties) and no platform admins.
        for role in ("auditor", "platform_admin"):
            refused = await client.post(
                "/api/v1/users", headers=headers, json={"username": f"x-{role}", "role": role}
            )
            assert refused.status_code == 403, role
        elsewhere = await client.post(
            "/api/v1/users",
            headers=headers,
            json={"username": "spy", "role": "viewer", "tenant_id": "other"},
        )
        assert elsewhere.status_code == 403
        listed = await client.get("/api/v1/users", headers=headers)
        assert {u["username"] for u in listed.json()} == {"boss@acme", "op1"}
        assert (
            await client.patch(f"/api/v1/users/{own_id}", headers=headers, json={"disabled": True})
        ).status_code == 409
        disabled = await client.patch(
            f"/api/v1/users/{op_id}", headers=headers, json={"disabled": True}
        )
        assert disabled.json()["disabled"] is True
        reset = await client.post(f"/api/v1/users/{op_id}/password", headers=headers, json={})
        assert reset.status_code == 200
        assert len(reset.json()["password"]) >= 12
        own = await client.post(
            f"/api/v1/users/{own_id}/password",
            headers=headers,
            json={"password": "a brand new phrase", "current_password": generated},
        )
        assert own.status_code == 200
        # A new password ends the session it was changed from, too.
        assert (await client.get("/api/v1/users", headers=headers)).status_code == 401
        assert (
            await client.post(
                "/api/v1/auth/logout",
                headers={"Authorization": f"Bearer {env.platform.admin_token}"},
            )
        ).status_code == 422


def test_users_cli(tmp_path: Path) -> None:
    """``tiangong users`` on a data directory, without a running platform."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from tiangong.cli import app  # noqa: PLC0415

    runner = CliRunner()
    where = ["--data-dir", str(tmp_path / "data")]
    created = runner.invoke(app, ["users", "create", "root", "--role", "platform_admin", *where])
    assert created.exit_code == 0, created.output
    match = re.search(r"password: (\S+)", created.output)
    assert match is not None
    generated = match.group(1)
    no_tenant = runner.invoke(app, ["users", "create", "ana", "--role", "viewer", *where])
    assert no_tenant.exit_code == 1
    assert "need one" in no_tenant.output
    weak = runner.invoke(
        app, ["users", "passwd", "root", "--password-stdin", *where], input="short\n"
    )
    assert weak.exit_code == 1
    assert "at least 12" in weak.output
    changed = runner.invoke(
        app, ["users", "passwd", "root", "--password-stdin", *where], input="a long passphrase\n"
    )
    assert changed.exit_code == 0, changed.output
    assert runner.invoke(app, ["users", "disable", "root", *where]).exit_code == 0
    listed = runner.invoke(app, ["users", "list", *where])
    assert "root" in listed.output
    assert "disabled" in listed.output
    assert runner.invoke(app, ["users", "disable", "ghost", *where]).exit_code == 1
    assert runner.invoke(app, ["users", "enable", "root", *where]).exit_code == 0

    async def sign_in(password: str) -> bool:
        db = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'registry.sqlite'}")
        await db.open()
        try:
            await UserService(db).login("root", password, source="cli-test")
        except LoginRefusedError:
            return False
        finally:
            await db.close()
        return True

    assert not asyncio.run(sign_in(generated))
    assert asyncio.run(sign_in("a long passphrase"))

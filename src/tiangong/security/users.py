"""Users, passwords, sessions and the login brute-force throttle.

Theory of operation
-------------------
*Users* have a platform-wide unique name (lower case, like ``zhang.wei@huaxia``), a role (the
API roles of ``tiangong.platform.tokens``), a tenant (none for a platform administrator) and an
**argon2id** password hash (argon2-cffi, RFC 9106 low-memory parameters by default). A hash
made with older parameters is replaced at the next successful sign-in. Passwords must be at
least 12 characters, must not contain the user name and must not be one repeated character.

*Sessions.* Signing in returns a session bearer token ``tgs_`` + 256 random bits; only its
SHA-256 is stored. A session ends after ``idle_timeout`` without requests, after
``session_lifetime`` in any case, at sign-out, and when its user is disabled, deleted or gets a
new password. Sessions are checked against the database on every request (no cache), so every
one of these takes effect at once on every instance.

*Hashing off the event loop.* argon2 costs ~0.1 s of CPU and 64 MiB per hash by design. Hashes
run in threads, at most ``hash_concurrency`` at a time; a sign-in that finds more than
``hash_queue`` others waiting is refused at once (:class:`LoginBusyError`), so a sign-in flood
cannot starve the API or grow an unbounded queue.

*Brute-force throttle* (:class:`LoginThrottle`). Failures are counted per (user name, source
address), per source address and per user name; each counter, once past its free failures,
imposes an exponential back-off (1 s, 2 s, 4 s ... up to a cap). While any counter that applies
is in back-off, a sign-in is answered at once with :class:`LoginThrottledError` (HTTP 429 with
``Retry-After``) **without checking the password**, so guesses made during the back-off are
worthless. The three counters:

====================  =============  =========  ==========================================
counter               free failures  cap        stops
====================  =============  =========  ==========================================
(user, address)       5              15 min     one address hammering one account
address               20             15 min     one address trying many accounts
user (≥3 addresses)   10             60 s       many addresses guessing one account
====================  =============  =========  ==========================================

So an attacker hammering one account from one address locks only that pair and that address:
other users, and the same user from another address, sign in at once. The account-wide counter
only counts once failures come from three or more addresses (a distributed attack), and its
short cap means the attack can delay the owner by at most a minute, never lock them out.
A success clears the (user, address) counter only: the address and account counters decay
after an hour without failures. Each counter table holds at most ``max_entries`` keys (the
least recently failing are forgotten first), so memory stays bounded under a spray of names.

Every sign-in attempt, good, bad or throttled, is told to the login listeners as a
:class:`LoginAttempt` (the security monitor is one).

Exceptions::

    SecurityError                  (tiangong.security.errors)
    └── UserError
        ├── PasswordPolicyError    a new password breaks the policy (also a ValidationError)
        ├── LoginRefusedError           wrong user name or password, or a disabled user
        ├── LoginThrottledError         too many failures: retry after ``retry_after`` seconds
        └── LoginBusyError              too many sign-ins being hashed: retry in a second
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tiangong.platform.database import Database, user_sessions, users, utc
from tiangong.platform.errors import ConflictError, NotFoundError, ValidationError
from tiangong.platform.tokens import ApiPrincipal, ApiRole
from tiangong.security.credentials import hash_token
from tiangong.security.errors import SecurityError

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "SESSION_PREFIX",
    "USERNAME_PATTERN",
    "LoginAttempt",
    "LoginBusyError",
    "LoginRefusedError",
    "LoginSession",
    "LoginThrottle",
    "LoginThrottledError",
    "PasswordPolicyError",
    "User",
    "UserError",
    "UserService",
    "check_password_policy",
    "generate_password",
    "normalize_username",
]

_log = logging.getLogger(__name__)
_R = TypeVar("_R")

SESSION_PREFIX: Final = "tgs_"
MIN_PASSWORD_LENGTH: Final = 12
#: Longer passwords are refused before hashing: argon2 of a megabyte is an easy denial of service.
MAX_PASSWORD_LENGTH: Final = 256
USERNAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_.@\-]{0,63}$"
_USERNAME_RE: Final = re.compile(USERNAME_PATTERN)
#: How often a session's last use is written (its idle timeout is at most this much late).
_TOUCH_SECONDS: Final = 30.0


class UserError(SecurityError):
    """Root of the user and sign-in errors."""


class PasswordPolicyError(UserError, ValidationError):
    """A new password breaks the policy; the message says which rule."""


class LoginRefusedError(UserError):
    """Wrong user name or password, or a disabled user (the message never says which)."""

    def __init__(self) -> None:
        super().__init__("wrong user name or password")


class LoginThrottledError(UserError):
    """Too many failed sign-ins; the password was not checked.

    Attributes:
        retry_after: Seconds until a sign-in is checked again (rounded up).
        reason: Which counter is in back-off.
    """

    def __init__(self, retry_after: float, reason: str) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        self.reason = reason
        super().__init__(f"too many failed sign-ins ({reason}): try again in {self.retry_after} s")


class LoginBusyError(UserError):
    """Too many sign-ins are being checked at once; retry in a second."""

    def __init__(self) -> None:
        super().__init__("too many sign-ins at once: try again in a second")


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """One sign-in attempt, as told to the login listeners.

    Attributes:
        username: the name given (normalised to lower case, at most 64 characters).
        source: the client's address.
        tenant_id: the user's tenant when the name is a known user, else ``None``.
        ok: whether it succeeded.
        throttled: whether it was refused by the throttle without a password check.
        at: when.
    """

    username: str
    source: str
    tenant_id: str | None
    ok: bool
    throttled: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class User:
    """A user's record (never the password hash)."""

    id: str
    username: str
    role: ApiRole
    tenant_id: str | None
    created_at: datetime
    password_changed_at: datetime
    disabled_at: datetime | None
    last_login_at: datetime | None

    @property
    def disabled(self) -> bool:
        """Whether the user may not sign in."""
        return self.disabled_at is not None


@dataclass(frozen=True, slots=True)
class LoginSession:
    """A signed-in session (never its token)."""

    id: str
    user_id: str
    username: str
    role: ApiRole
    tenant_id: str | None
    created_at: datetime
    expires_at: datetime
    idle_timeout_s: int


def check_password_policy(password: str, username: str) -> None:
    """Refuse a password that breaks the policy.

    Raises:
        PasswordPolicyError: saying which rule.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters (a passphrase of a"
            " few words is easy to remember)"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"a password may have at most {MAX_PASSWORD_LENGTH} characters")
    if username and username.lower() in password.lower():
        raise PasswordPolicyError("a password must not contain the user name")
    if len(set(password)) == 1:
        raise PasswordPolicyError("a password must not be one character repeated")


def generate_password() -> str:
    """A new random password (120 bits, 20 URL-safe characters) that meets the policy."""
    return secrets.token_urlsafe(15)


def normalize_username(username: str) -> str:
    """The stored form of a user name: trimmed, lower case."""
    return username.strip().lower()


def _check_username(username: str) -> str:
    name = normalize_username(username)
    if not _USERNAME_RE.match(name):
        raise ValidationError(
            f"invalid user name {username!r}: 1-64 of a-z 0-9 . _ - @, starting with a letter"
            " or digit"
        )
    return name


# -- the throttle --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0
    sources: set[str] = field(default_factory=set)


class _FailureTable:
    """Failure counters per key, at most ``max_entries`` (least recently failing go first)."""

    def __init__(
        self, *, free: int, cap: float, base: float, forget_after: float, max_entries: int
    ) -> None:
        self.free = free
        self.cap = cap
        self.base = base
        self.forget_after = forget_after
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> _Failures | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last > self.forget_after and now >= entry.locked_until:
            del self._entries[key]
            return None
        return entry

    def wait(self, key: str, now: float) -> float:
        entry = self.get(key, now)
        return 0.0 if entry is None else max(0.0, entry.locked_until - now)

    def fail(
        self, key: str, now: float, *, source: str | None = None, min_sources: int = 0
    ) -> None:
        entry = self.get(key, now) or _Failures()
        entry.count += 1
        entry.last = now
        if source is not None and len(entry.sources) < 16:
            entry.sources.add(source)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if entry.count > self.free and len(entry.sources) >= min_sources:
            delay = min(self.base * 2 ** (entry.count - self.free - 1), self.cap)
            entry.locked_until = now + delay

    def clear(self, key: str) -> None:
        self._entries.pop(key, None)


class LoginThrottle:
    """Exponential back-off after failed sign-ins (the policy is in the module docstring).

    Args:
        pair_free, source_free, account_free: failures before each counter's back-off starts.
        account_sources: distinct addresses before the account-wide counter applies.
        base_delay: the first back-off, in seconds; each further failure doubles it.
        max_delay: the cap of the (user, address) and address back-offs.
        account_max_delay: the cap of the account-wide back-off.
        forget_after: seconds without failures after which a counter is forgotten.
        max_entries: keys kept per counter table.
        clock: monotonic seconds (a test passes its own).
    """

    def __init__(
        self,
        *,
        pair_free: int = 5,
        source_free: int = 20,
        account_free: int = 10,
        account_sources: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 900.0,
        account_max_delay: float = 60.0,
        forget_after: float = 3600.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        def table(free: int, cap: float) -> _FailureTable:
            return _FailureTable(
                free=free,
                cap=cap,
                base=base_delay,
                forget_after=forget_after,
                max_entries=max_entries,
            )

        self._pairs = table(pair_free, max_delay)
        self._sources = table(source_free, max_delay)
        self._accounts = table(account_free, account_max_delay)
        self._account_sources = account_sources
        self._clock = clock

    @property
    def entries(self) -> int:
        """Keys held in all counter tables (bounded by 3 times ``max_entries``)."""
        return len(self._pairs) + len(self._sources) + len(self._accounts)

    def check(self, username: str, source: str) -> None:
        """Refuse a sign-in while a counter that applies is in back-off.

        Raises:
            LoginThrottledError: with the longest wait and its reason.
        """
        now = self._clock()
        waits = (
            (self._pairs.wait(f"{username}\0{source}", now), "this user from this address"),
            (self._sources.wait(source, now), "this address"),
            (self._accounts.wait(username, now), "this user from several addresses"),
        )
        wait, reason = max(waits, key=lambda w: w[0])
        if wait > 0:
            raise LoginThrottledError(wait, reason)

    def failed(self, username: str, source: str) -> None:
        """Count a failed sign-in."""
        now = self._clock()
        self._pairs.fail(f"{username}\0{source}", now)
        self._sources.fail(source, now)
        self._accounts.fail(username, now, source=source, min_sources=self._account_sources)

    def succeeded(self, username: str, source: str) -> None:
        """A correct password from this address: its (user, address) counter starts over."""
        self._pairs.clear(f"{username}\0{source}")


# -- the service ---------------------------------------------------------------------------------


def _user(row: sa.Row[object]) -> User:
    m = row._mapping
    return User(
        id=str(m["id"]),
        username=str(m["username"]),
        role=ApiRole(m["role"]),
        tenant_id=m["tenant_id"],
        created_at=utc(m["created_at"]) or datetime.now(UTC),
        password_changed_at=utc(m["password_changed_at"]) or datetime.now(UTC),
        disabled_at=utc(m["disabled_at"]),
        last_login_at=utc(m["last_login_at"]),
    )


_USER_COLUMNS: Final = [c for c in users.c if c.name != "password_hash"]


class UserService:
    """Users, their passwords and sessions, and the sign-in throttle.

    Args:
        db: the metadata database.
        hasher: the argon2id hasher (its parameters are the current ones: older hashes are
            replaced at sign-in).
        idle_timeout: a session ends after this long without requests.
        session_lifetime: a session ends this long after sign-in in any case.
        hash_concurrency: hashes computed at the same time.
        hash_queue: sign-ins allowed to wait for a hash slot before :class:`LoginBusyError`.
        throttle: the brute-force throttle.
    """

    def __init__(
        self,
        db: Database,
        *,
        hasher: PasswordHasher | None = None,
        idle_timeout: timedelta = timedelta(minutes=30),
        session_lifetime: timedelta = timedelta(hours=12),
        hash_concurrency: int = 2,
        hash_queue: int = 32,
        throttle: LoginThrottle | None = None,
    ) -> None:
        if hash_concurrency < 1 or hash_queue < 0:
            raise ValueError("hash_concurrency must be at least 1 and hash_queue not negative")
        self.db = db
        self.hasher = hasher or PasswordHasher()
        self.idle_timeout = idle_timeout
        self.session_lifetime = session_lifetime
        self.throttle = throttle or LoginThrottle()
        self._hash_slots = asyncio.Semaphore(hash_concurrency)
        self._hash_queue = hash_queue + hash_concurrency
        self._hashing = 0
        self._listeners: list[Callable[[LoginAttempt], None]] = []
        # Verified against when the user name is unknown, so that an unknown name takes as long
        # as a wrong password and answers do not reveal which names exist.
        self._dummy_hash: str | None = None

    def add_login_listener(self, listener: Callable[[LoginAttempt], None]) -> None:
        """Call ``listener`` (synchronously; it must not block) for every sign-in attempt."""
        self._listeners.append(listener)

    def _tell(self, attempt: LoginAttempt) -> None:
        for listener in self._listeners:
            try:
                listener(attempt)
            except Exception:  # noqa: BLE001 - one broken listener must not break sign-in
                _log.exception("login listener %r failed", listener)

    async def _in_hash_slot(self, work: Callable[..., _R], *args: object) -> _R:
        if self._hashing >= self._hash_queue:
            raise LoginBusyError
        self._hashing += 1
        try:
            async with self._hash_slots:
                return await asyncio.to_thread(work, *args)
        finally:
            self._hashing -= 1

    async def _hash(self, password: str) -> str:
        return await self._in_hash_slot(self.hasher.hash, password)

    def _verify_blocking(self, stored: str, password: str) -> tuple[bool, str | None]:
        """(whether it matches, a new hash when the stored one uses old parameters)."""
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False, None
        if self.hasher.check_needs_rehash(stored):
            return True, self.hasher.hash(password)
        return True, None

    # -- users -----------------------------------------------------------------------------------

    async def create(
        self, *, username: str, password: str, role: ApiRole, tenant_id: str | None
    ) -> User:
        """Create a user.

        Raises:
            ValidationError: an invalid name, a tenant role without a tenant (or the reverse).
            PasswordPolicyError: the password breaks the policy.
            ConflictError: the name is taken (names are unique platform-wide).
            NotFoundError: no such tenant.
        """
        name = _check_username(username)
        if (role is ApiRole.PLATFORM_ADMIN) != (tenant_id is None):
            raise ValidationError("platform_admin users have no tenant; all others need one")
        check_password_policy(password, name)
        password_hash = await self._hash(password)
        now = datetime.now(UTC)
        user_id = "usr_" + secrets.token_hex(6)
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    sa.insert(users).values(
                        id=user_id,
                        username=name,
                        tenant_id=tenant_id,
                        role=role.value,
                        password_hash=password_hash,
                        created_at=now,
                        password_changed_at=now,
                    )
                )
        except IntegrityError as exc:
            if tenant_id is not None and not await self._tenant_exists(tenant_id):
                raise NotFoundError("tenant", tenant_id) from exc
            raise ConflictError(f"user name {name!r} is taken") from exc
        return User(user_id, name, role, tenant_id, now, now, None, None)

    async def _tenant_exists(self, tenant_id: str) -> bool:
        from tiangong.platform.database import tenants  # noqa: PLC0415 - only on this error path

        async with self.db.engine.connect() as conn:
            found = await conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id))
            return found.first() is not None

    async def get(self, user_id: str, tenant_id: str | None) -> User:
        """A user visible to the tenant (``None``: any).

        Raises:
            NotFoundError: none such (or of another tenant).
        """
        query = sa.select(*_USER_COLUMNS).where(users.c.id == user_id)
        if tenant_id is not None:
            query = query.where(users.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFoundError("user", user_id)
        return _user(row)

    async def find(self, username: str) -> User | None:
        """A user by name, or ``None``."""
        query = sa.select(*_USER_COLUMNS).where(users.c.username == normalize_username(username))
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _user(row)

    async def list(self, tenant_id: str | None) -> list[User]:
        """Users of a tenant (``None``: all), by name."""
        query = sa.select(*_USER_COLUMNS).order_by(users.c.username)
        if tenant_id is not None:
            query = query.where(users.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_user(r) for r in rows]

    async def update(
        self,
        user_id: str,
        tenant_id: str | None,
        *,
        role: ApiRole | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change a user's role or disable/enable it; disabling ends its sessions.

        Raises:
            NotFoundError: no such user visible to the tenant.
            ValidationError: a role that does not fit the user's tenant.
        """
        user = await self.get(user_id, tenant_id)
        values: dict[str, object] = {}
        if role is not None and role is not user.role:
            if (role is ApiRole.PLATFORM_ADMIN) != (user.tenant_id is None):
                raise ValidationError("platform_admin users have no tenant; all others need one")
            values["role"] = role.value
        if disabled is not None and disabled != user.disabled:
            values["disabled_at"] = datetime.now(UTC) if disabled else None
        if values:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.update(users).where(users.c.id == user.id).values(**values))
                if values.get("disabled_at") is not None or "role" in values:
                    await self._end_sessions(conn, user.id)
        return await self.get(user_id, tenant_id)

    async def delete(self, user_id: str, tenant_id: str | None) -> None:
        """Delete a user and its sessions.

        Raises:
            NotFoundError: no such user visible to the tenant.
        """
        user = await self.get(user_id, tenant_id)
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(user_sessions).where(user_sessions.c.user_id == user.id))
            await conn.execute(sa.delete(users).where(users.c.id == user.id))

    async def set_password(
        self, user_id: str, tenant_id: str | None, password: str, *, current: str | None = None
    ) -> User:
        """Give a user a new password and end all its sessions.

        Args:
            user_id: the user.
            tenant_id: the tenant the caller is confined to (``None``: any).
            password: the new password.
            current: the present password, checked when given (a user changing its own).

        Raises:
            NotFoundError: no such user visible to the tenant.
            PasswordPolicyError: the new password breaks the policy.
            LoginRefusedError: ``current`` is wrong.
        """
        user = await self.get(user_id, tenant_id)
        check_password_policy(password, user.username)
        if current is not None:
            async with self.db.engine.connect() as conn:
                stored = (
                    await conn.execute(
                        sa.select(users.c.password_hash).where(users.c.id == user.id)
                    )
                ).scalar_one()
            ok, _ = await self._in_hash_slot(self._verify_blocking, stored, current)
            if not ok:
                raise LoginRefusedError
        password_hash = await self._hash(password)
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(users)
                .where(users.c.id == user.id)
                .values(password_hash=password_hash, password_changed_at=datetime.now(UTC))
            )
            await self._end_sessions(conn, user.id)
        return await self.get(user_id, tenant_id)

    # -- sessions --------------------------------------------------------------------------------

    async def login(self, username: str, password: str, *, source: str) -> tuple[LoginSession, str]:
        """Check a user name and password and open a session.

        Returns:
            The session and its bearer token (shown once).

        Raises:
            LoginThrottledError: too many failures; the password was not checked.
            LoginBusyError: too many sign-ins being checked; retry in a second.
            LoginRefusedError: wrong name or password, or a disabled user.
        """
        name = normalize_username(username)[:64]
        try:
            self.throttle.check(name, source)
        except LoginThrottledError:
            user = await self.find(name)
            self._tell(self._attempt(name, source, user, ok=False, throttled=True))
            raise
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(users.c.id, users.c.password_hash).where(users.c.username == name)
                )
            ).first()
        if len(password) > MAX_PASSWORD_LENGTH:
            ok, new_hash = False, None
        elif row is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
            await self._in_hash_slot(self._verify_blocking, self._dummy_hash, password)
            ok, new_hash = False, None
        else:
            ok, new_hash = await self._in_hash_slot(
                self._verify_blocking, str(row.password_hash), password
            )
        user = None if row is None else await self.get(str(row.id), None)
        if not ok or user is None or user.disabled:
            self.throttle.failed(name, source)
            self._tell(self._attempt(name, source, user, ok=False, throttled=False))
            raise LoginRefusedError
        self.throttle.succeeded(name, source)
        now = datetime.now(UTC)
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        session = LoginSession(
            id="ses_" + secrets.token_hex(6),
            user_id=user.id,
            username=user.username,
            role=user.role,
            tenant_id=user.tenant_id,
            created_at=now,
            expires_at=now + self.session_lifetime,
            idle_timeout_s=int(self.idle_timeout.total_seconds()),
        )
        user_values: dict[str, object] = {"last_login_at": now}
        if new_hash is not None:
            user_values["password_hash"] = new_hash
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.insert(user_sessions).values(
                    id=session.id,
                    user_id=user.id,
                    token_hash=hash_token(token),
                    source=source[:200],
                    created_at=now,
                    last_used_at=now,
                    expires_at=session.expires_at,
                )
            )
            await conn.execute(sa.update(users).where(users.c.id == user.id).values(**user_values))
        self._tell(self._attempt(name, source, user, ok=True, throttled=False))
        return session, token

    @staticmethod
    def _attempt(
        name: str, source: str, user: User | None, *, ok: bool, throttled: bool
    ) -> LoginAttempt:
        return LoginAttempt(
            username=name,
            source=source,
            tenant_id=None if user is None else user.tenant_id,
            ok=ok,
            throttled=throttled,
            at=datetime.now(UTC),
        )

    async def verify_session(self, token: str) -> ApiPrincipal | None:
        """The principal of a presented session token, or ``None`` (unknown or ended)."""
        if not token.startswith(SESSION_PREFIX) or len(token) > 200:
            return None
        query = (
            sa.select(
                user_sessions.c.id,
                user_sessions.c.last_used_at,
                user_sessions.c.expires_at,
                user_sessions.c.revoked_at,
                users.c.id.label("user_id"),
                users.c.username,
                users.c.role,
                users.c.tenant_id,
                users.c.disabled_at,
            )
            .join(users, users.c.id == user_sessions.c.user_id)
            .where(user_sessions.c.token_hash == hash_token(token))
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.revoked_at is not None or row.disabled_at is not None:
            return None
        now = datetime.now(UTC)
        last_used = utc(row.last_used_at) or now
        expires_at = utc(row.expires_at) or now
        if expires_at <= now or last_used + self.idle_timeout <= now:
            return None
        if (now - last_used).total_seconds() >= _TOUCH_SECONDS:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    sa.update(user_sessions)
                    .where(user_sessions.c.id == row.id)
                    .values(last_used_at=now)
                )
        return ApiPrincipal(
            str(row.id),
            str(row.username),
            ApiRole(row.role),
            row.tenant_id,
            kind="session",
            user=str(row.user_id),
        )

    async def logout(self, session_id: str) -> None:
        """End a session (its token stops working at once)."""
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(user_sessions)
                .where(user_sessions.c.id == session_id, user_sessions.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )

    async def _end_sessions(self, conn: AsyncConnection, user_id: str) -> None:
        await conn.execute(
            sa.update(user_sessions)
            .where(user_sessions.c.user_id == user_id, user_sessions.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )

    async def prune_sessions(self) -> int:
        """Delete sessions that ended more than a day ago; returns how many."""
        horizon = datetime.now(UTC) - timedelta(days=1)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.delete(user_sessions).where(
                    sa.or_(
                        user_sessions.c.expires_at < horizon,
                        user_sessions.c.revoked_at < horizon,
                        user_sessions.c.last_used_at < horizon - self.idle_timeout,
                    )
                )
            )
        return int(result.rowcount or 0)

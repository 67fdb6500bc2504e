"""API bearer tokens: who is calling the REST API, for which tenant, with which role and scopes.

Roles:

- ``platform_admin``: every tenant; creates tenants. Has no tenant of its own.
- ``tenant_admin``: one tenant; manages its sites, thing models, devices, rules, users and tokens.
- ``operator``: one tenant; reads, acknowledges and clears alarms, sends commands.
- ``viewer``: one tenant; reads.
- ``auditor``: one tenant; reads its audit trail and security events, nothing else (the
  separation of duties of 三员管理: the administrator who acts is not the one who audits).

Every route needs one *scope* (:class:`ApiScope`); each role holds a fixed set of scopes
(:data:`ROLE_SCOPES`). A token may be issued with fewer scopes than its role, and its effective
rights are its role's scopes intersected with its own. A session (a signed-in user, see
``tiangong.security.users``) has all the scopes of its user's role.

Tokens are random (see ``security.credentials``), stored as SHA-256 digests, expire (new tokens
get a default lifetime and a maximum), and can be revoked. Verified tokens are cached for a few
seconds, so revocation takes effect at once on the instance that revoked and within
``CACHE_SECONDS`` on every other instance.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from tiangong.platform.database import Database, api_tokens, utc
from tiangong.platform.errors import ConflictError, NotFoundError, ValidationError
from tiangong.security.credentials import (
    TOKEN_PREFIX,
    generate_api_token,
    hash_token,
    write_secret_file,
)

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "MAX_TOKEN_LIFETIME",
    "ROLE_SCOPES",
    "ApiPrincipal",
    "ApiRole",
    "ApiScope",
    "ApiToken",
    "PrincipalKind",
    "TokenService",
    "effective_scopes",
    "parse_scopes",
]

CACHE_SECONDS: Final = 5.0
#: The lifetime of a new token when its issuer names no expiry.
DEFAULT_TOKEN_LIFETIME: Final = timedelta(days=90)
#: The longest lifetime a new token may be issued with (the bootstrap admin token excepted).
MAX_TOKEN_LIFETIME: Final = timedelta(days=366)


class ApiRole(enum.StrEnum):
    """What a principal may do, as a set of scopes (:data:`ROLE_SCOPES`)."""

    PLATFORM_ADMIN = "platform_admin"
    TENANT_ADMIN = "tenant_admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    AUDITOR = "auditor"

    @property
    def level(self) -> int:
        """Higher means more rights; the auditor is outside the chain (below a viewer)."""
        return {"auditor": -1, "viewer": 0, "operator": 1, "tenant_admin": 2, "platform_admin": 3}[
            self.value
        ]

    def at_least(self, other: ApiRole) -> bool:
        """Whether this role includes ``other`` (an auditor includes only itself)."""
        if ApiRole.AUDITOR in (self, other):
            return self is other or self is ApiRole.PLATFORM_ADMIN
        return self.level >= other.level


class ApiScope(enum.StrEnum):
    """What one route needs. A principal holds the scopes of its role (∩ its token's)."""

    DEVICES_READ = "devices:read"
    """Tenants, sites, thing models, devices, lifecycle, events, KPIs, links, dead letters."""
    DEVICES_WRITE = "devices:write"
    """Create and change sites, thing models and devices; credentials; decommissioning."""
    TELEMETRY_READ = "telemetry:read"
    """Latest values and telemetry of devices."""
    ALARMS_READ = "alarms:read"
    """Alarms and alarm rules."""
    ALARMS_WRITE = "alarms:write"
    """Acknowledge and clear alarms."""
    RULES_WRITE = "rules:write"
    """Create, replace and delete alarm rules."""
    COMMANDS_WRITE = "commands:write"
    """Send commands to devices."""
    DATA_READ = "data:read"
    """The data center views (``/api/v1/data``)."""
    TENANTS_WRITE = "tenants:write"
    """Change the caller's tenant (name, retention)."""
    ACCESS_ADMIN = "access:admin"
    """Users and API tokens of the tenant."""
    AUDIT_READ = "audit:read"
    """The audit trail and security events of the tenant."""
    PLATFORM_ADMIN = "platform:admin"
    """Create tenants; Prometheus metrics; everything platform-wide."""


_VIEWER: Final = frozenset(
    {ApiScope.DEVICES_READ, ApiScope.TELEMETRY_READ, ApiScope.ALARMS_READ, ApiScope.DATA_READ}
)
_OPERATOR: Final = _VIEWER | {ApiScope.ALARMS_WRITE, ApiScope.COMMANDS_WRITE}
_TENANT_ADMIN: Final = _OPERATOR | {
    ApiScope.DEVICES_WRITE,
    ApiScope.RULES_WRITE,
    ApiScope.TENANTS_WRITE,
    ApiScope.ACCESS_ADMIN,
}

#: The scopes each role holds. A tenant administrator does not read the audit trail (the
#: auditor does), and only a platform administrator creates auditors.
ROLE_SCOPES: Final[dict[ApiRole, frozenset[ApiScope]]] = {
    ApiRole.VIEWER: _VIEWER,
    ApiRole.OPERATOR: _OPERATOR,
    ApiRole.TENANT_ADMIN: _TENANT_ADMIN,
    ApiRole.AUDITOR: frozenset({ApiScope.AUDIT_READ}),
    ApiRole.PLATFORM_ADMIN: frozenset(ApiScope),
}

PrincipalKind = Literal["token", "session"]


def effective_scopes(role: ApiRole, scopes: Iterable[ApiScope] | None) -> frozenset[ApiScope]:
    """A role's scopes, narrowed to ``scopes`` when given."""
    held = ROLE_SCOPES[role]
    return held if scopes is None else held & frozenset(scopes)


def parse_scopes(text: str | None) -> frozenset[ApiScope] | None:
    """Stored scopes (space-separated) back to a set; ``None`` means the role's.

    Names no longer known are dropped (a token never gains rights from an unknown name).
    """
    if text is None:
        return None
    known = {s.value for s in ApiScope}
    return frozenset(ApiScope(name) for name in text.split() if name in known)


@dataclass(frozen=True, slots=True)
class ApiPrincipal:
    """The caller of an API request: an API token or a signed-in user's session.

    Attributes:
        token_id: the token's or the session's id (``tok_...``/``ses_...``).
        name: the token's name, or the user name of a session.
        role: the role.
        tenant_id: the tenant (``None`` for a platform administrator).
        kind: ``"token"`` or ``"session"``.
        scopes: the effective scopes: the role's, intersected with those given.
        user: the user id (``usr_...``) of a session; ``None`` for a token.
    """

    token_id: str
    name: str
    role: ApiRole
    tenant_id: str | None
    kind: PrincipalKind = "token"
    scopes: frozenset[ApiScope] = field(default=frozenset(ApiScope))
    user: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", effective_scopes(self.role, self.scopes))

    @property
    def scope(self) -> str | None:
        """The tenant the caller is confined to (``None`` for a platform administrator)."""
        return None if self.role is ApiRole.PLATFORM_ADMIN else self.tenant_id

    def can(self, scope: ApiScope) -> bool:
        """Whether the principal holds ``scope``."""
        return scope in self.scopes

    def can_grant(self, role: ApiRole, scopes: Iterable[ApiScope] | None = None) -> bool:
        """Whether this principal may give ``role`` (narrowed to ``scopes``) to a token or user.

        Nobody grants rights they do not hold: the granted scopes must all be the grantor's;
        only a platform administrator grants ``platform_admin``.
        """
        if not self.can(ApiScope.ACCESS_ADMIN):
            return False
        if role is ApiRole.PLATFORM_ADMIN and self.role is not ApiRole.PLATFORM_ADMIN:
            return False
        return effective_scopes(role, scopes) <= self.scopes


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A token's record (never the token itself)."""

    id: str
    name: str
    role: ApiRole
    tenant_id: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    scopes: list[ApiScope] = field(default_factory=list)


def _token(row: sa.Row[object]) -> ApiToken:
    m = row._mapping
    role = ApiRole(m["role"])
    return ApiToken(
        id=str(m["id"]),
        name=str(m["name"]),
        role=role,
        tenant_id=m["tenant_id"],
        created_at=utc(m["created_at"]) or datetime.now(UTC),
        expires_at=utc(m["expires_at"]),
        last_used_at=utc(m["last_used_at"]),
        revoked_at=utc(m["revoked_at"]),
        scopes=sorted(effective_scopes(role, parse_scopes(m["scopes"]))),
    )


class TokenService:
    """Issues, verifies and revokes API tokens.

    Args:
        db: the metadata database.
        default_lifetime: the lifetime of a token issued without an expiry (see
            :meth:`expiry_for`).
        max_lifetime: the longest lifetime a token may be issued with.
    """

    def __init__(
        self,
        db: Database,
        *,
        default_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
        max_lifetime: timedelta = MAX_TOKEN_LIFETIME,
    ) -> None:
        self.db = db
        self.default_lifetime = default_lifetime
        self.max_lifetime = max_lifetime
        self._cache: dict[str, tuple[float, ApiPrincipal | None, datetime | None]] = {}

    def expiry_for(self, requested: datetime | None) -> datetime:
        """The expiry of a new token: the requested one, or now + the default lifetime.

        Raises:
            ValidationError: the requested expiry is beyond the maximum lifetime.
        """
        now = datetime.now(UTC)
        if requested is None:
            return now + self.default_lifetime
        if requested.tzinfo is None:
            requested = requested.replace(tzinfo=UTC)
        if requested - now > self.max_lifetime:
            raise ValidationError(
                f"a token may live at most {self.max_lifetime.days} days: choose an earlier"
                " expires_at"
            )
        return requested

    async def create(
        self,
        *,
        name: str,
        role: ApiRole,
        tenant_id: str | None,
        expires_at: datetime | None = None,
        token: str | None = None,
        scopes: Collection[ApiScope] | None = None,
    ) -> tuple[ApiToken, str]:
        """Issue a token; returns its record and the token (shown once).

        Args:
            name: what the token is for.
            role: its role.
            tenant_id: its tenant (``None`` only for ``platform_admin``).
            expires_at: when it stops working (``None``: never; the API applies
                :meth:`expiry_for`).
            token: register this token instead of generating one (a configured admin token).
            scopes: narrow the role's scopes to these (``None``: all of the role's).

        Raises:
            ValidationError: a tenant role without a tenant, a platform role with one, or
                scopes the role does not hold.
            ConflictError: ``token`` (when given) is already registered.
        """
        if (role is ApiRole.PLATFORM_ADMIN) != (tenant_id is None):
            raise ValidationError("platform_admin tokens have no tenant; all others need one")
        stored_scopes = None
        if scopes is not None:
            foreign = sorted(set(scopes) - ROLE_SCOPES[role])
            if foreign:
                raise ValidationError(
                    f"the {role.value} role does not hold {', '.join(foreign)}; its scopes are"
                    f" {', '.join(sorted(ROLE_SCOPES[role]))}"
                )
            if not scopes:
                raise ValidationError("a token needs at least one scope (or omit scopes)")
            stored_scopes = " ".join(sorted(scopes))
        token = token or generate_api_token()
        record = ApiToken(
            id="tok_" + secrets.token_hex(6),
            name=name,
            role=role,
            tenant_id=tenant_id,
            created_at=datetime.now(UTC),
            expires_at=expires_at,
            last_used_at=None,
            revoked_at=None,
            scopes=sorted(effective_scopes(role, scopes)),
        )
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    sa.insert(api_tokens).values(
                        id=record.id,
                        tenant_id=tenant_id,
                        name=name,
                        role=role.value,
                        token_hash=hash_token(token),
                        created_at=record.created_at,
                        expires_at=expires_at,
                        scopes=stored_scopes,
                    )
                )
        except IntegrityError as exc:
            raise ConflictError("that token is already registered") from exc
        return record, token

    async def verify(self, token: str) -> ApiPrincipal | None:
        """The principal of a presented token, or ``None`` (unknown, expired or revoked)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            _, principal, expires_at = cached
            # A cached token still stops working at its expiry, to the second.
            if expires_at is None or expires_at > datetime.now(UTC):
                return principal
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(api_tokens).where(api_tokens.c.token_hash == digest))
            ).first()
        principal = None
        expires_at = None
        if row is not None:
            record = _token(row)
            expires_at = record.expires_at
            expired = expires_at is not None and expires_at <= datetime.now(UTC)
            if record.revoked_at is None and not expired:
                principal = ApiPrincipal(
                    record.id,
                    record.name,
                    record.role,
                    record.tenant_id,
                    kind="token",
                    scopes=frozenset(record.scopes),
                )
                async with self.db.engine.begin() as conn:
                    await conn.execute(
                        sa.update(api_tokens)
                        .where(api_tokens.c.id == record.id)
                        .values(last_used_at=datetime.now(UTC))
                    )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, principal, expires_at)
        return principal

    async def list(self, tenant_id: str | None) -> list[ApiToken]:
        """Token records of a tenant (or all)."""
        query = sa.select(api_tokens).order_by(api_tokens.c.created_at)
        if tenant_id is not None:
            query = query.where(api_tokens.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_token(r) for r in rows]

    async def get(self, token_id: str, tenant_id: str | None) -> ApiToken:
        """One token's record, if visible to the tenant (``None``: any).

        Raises:
            NotFoundError: no such token visible to the tenant.
        """
        query = sa.select(api_tokens).where(api_tokens.c.id == token_id)
        if tenant_id is not None:
            query = query.where(api_tokens.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFoundError("token", token_id)
        return _token(row)

    async def revoke(self, token_id: str, tenant_id: str | None) -> None:
        """Revoke a token (effective within ``CACHE_SECONDS``).

        Raises:
            NotFoundError: no such token visible to the tenant.
        """
        where = [api_tokens.c.id == token_id]
        if tenant_id is not None:
            where.append(api_tokens.c.tenant_id == tenant_id)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.update(api_tokens).where(*where).values(revoked_at=datetime.now(UTC))
            )
        if not result.rowcount:
            raise NotFoundError("token", token_id)
        self._cache.clear()

    async def bootstrap_admin(self, token_file: Path, configured: str | None) -> tuple[str, bool]:
        """Make sure a platform-admin token exists.

        With a configured token (a secret manager), register it. Otherwise, on first start,
        generate one and write it to ``token_file`` with mode 0600; on later starts read it
        back from there.

        Returns:
            The admin token and whether it was generated now.
        """
        if configured is not None:
            if await self.verify(configured) is None:
                await self.create(
                    name="configured admin",
                    role=ApiRole.PLATFORM_ADMIN,
                    tenant_id=None,
                    token=configured,
                )
            return configured, False
        existing = await asyncio.to_thread(_read_secret_file, token_file)
        if existing and await self.verify(existing) is not None:
            return existing, False
        _, token = await self.create(
            name="generated admin", role=ApiRole.PLATFORM_ADMIN, tenant_id=None
        )
        await asyncio.to_thread(write_secret_file, token_file, token + "\n")
        return token, True


def _read_secret_file(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None

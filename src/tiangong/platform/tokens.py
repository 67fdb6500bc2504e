"""API bearer tokens: who is calling the REST API, for which tenant, with which role.

Roles (each includes the one below it):

- ``platform_admin``: every tenant; creates tenants. Has no tenant of its own.
- ``tenant_admin``: one tenant; manages its sites, thing models, devices, rules and tokens.
- ``operator``: one tenant; acknowledges and clears alarms.
- ``viewer``: one tenant; reads.

Tokens are random (see ``security.credentials``), stored as SHA-256 digests, optionally expire,
and can be revoked. Verified tokens are cached for a few seconds, so revocation takes effect
within ``CACHE_SECONDS`` on every instance.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

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

__all__ = ["ApiPrincipal", "ApiRole", "ApiToken", "TokenService"]

CACHE_SECONDS: Final = 5.0


class ApiRole(enum.StrEnum):
    """What a token may do."""

    PLATFORM_ADMIN = "platform_admin"
    TENANT_ADMIN = "tenant_admin"
    OPERATOR = "operator"
    VIEWER = "viewer"

    @property
    def level(self) -> int:
        """Higher means more rights."""
        return {"viewer": 0, "operator": 1, "tenant_admin": 2, "platform_admin": 3}[self.value]

    def at_least(self, other: ApiRole) -> bool:
        """Whether this role includes ``other``."""
        return self.level >= other.level


@dataclass(frozen=True, slots=True)
class ApiPrincipal:
    """The caller of an API request."""

    token_id: str
    name: str
    role: ApiRole
    tenant_id: str | None

    @property
    def scope(self) -> str | None:
        """The tenant the caller is confined to (``None`` for a platform administrator)."""
        return None if self.role is ApiRole.PLATFORM_ADMIN else self.tenant_id


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


def _token(row: sa.Row[object]) -> ApiToken:
    m = row._mapping
    return ApiToken(
        id=str(m["id"]),
        name=str(m["name"]),
        role=ApiRole(m["role"]),
        tenant_id=m["tenant_id"],
        created_at=utc(m["created_at"]) or datetime.now(UTC),
        expires_at=utc(m["expires_at"]),
        last_used_at=utc(m["last_used_at"]),
        revoked_at=utc(m["revoked_at"]),
    )


class TokenService:
    """Issues, verifies and revokes API tokens.

    Args:
        db: the metadata database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, ApiPrincipal | None]] = {}

    async def create(
        self,
        *,
        name: str,
        role: ApiRole,
        tenant_id: str | None,
        expires_at: datetime | None = None,
        token: str | None = None,
    ) -> tuple[ApiToken, str]:
        """Issue a token; returns its record and the token (shown once).

        Raises:
            ValidationError: a tenant role without a tenant, or a platform role with one.
            ConflictError: ``token`` (when given) is already registered.
        """
        if (role is ApiRole.PLATFORM_ADMIN) != (tenant_id is None):
            raise ValidationError("platform_admin tokens have no tenant; all others need one")
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
            return cached[1]
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(api_tokens).where(api_tokens.c.token_hash == digest))
            ).first()
        principal = None
        if row is not None:
            record = _token(row)
            expired = record.expires_at is not None and record.expires_at <= datetime.now(UTC)
            if record.revoked_at is None and not expired:
                principal = ApiPrincipal(record.id, record.name, record.role, record.tenant_id)
                async with self.db.engine.begin() as conn:
                    await conn.execute(
                        sa.update(api_tokens)
                        .where(api_tokens.c.id == record.id)
                        .values(last_used_at=datetime.now(UTC))
                    )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, principal)
        return principal

    async def list(self, tenant_id: str | None) -> list[ApiToken]:
        """Token records of a tenant (or all)."""
        query = sa.select(api_tokens).order_by(api_tokens.c.created_at)
        if tenant_id is not None:
            query = query.where(api_tokens.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_token(r) for r in rows]

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

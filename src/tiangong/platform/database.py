"""The metadata database: everything but telemetry.

Tenants, sites, thing models, devices, tokens, users and sessions, rules, alarms, dead letters
and KPI samples.
One schema, written once with SQLAlchemy Core, runs on SQLite (embedded, for ``tiangong up``)
and on PostgreSQL (deployments, shared by every platform instance). Telemetry does not live here:
it goes to the time-series store, which needs storage tuned for millions of points per second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tiangong.platform.errors import ConfigurationError

__all__ = [
    "Database",
    "alarms",
    "api_tokens",
    "dead_letters",
    "device_events",
    "device_transitions",
    "devices",
    "kpi_samples",
    "metadata",
    "rules",
    "sites",
    "tenants",
    "thing_models",
    "user_sessions",
    "users",
    "utc",
]

metadata = sa.MetaData()
_NAME = sa.String(64)
_TS = sa.DateTime(timezone=True)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", _NAME, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("retention_days", sa.Integer, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("tenant_id", _NAME, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", _NAME, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("location", sa.String(200), nullable=False, default=""),
    sa.Column("timezone", sa.String(64), nullable=False, default="UTC"),
    sa.Column("created_at", _TS, nullable=False),
)

thing_models = sa.Table(
    "thing_models",
    metadata,
    sa.Column("tenant_id", _NAME, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", _NAME, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", _NAME, primary_key=True),
    sa.Column("tenant_id", _NAME, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("site_id", _NAME, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("model_id", _NAME, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("gateway_id", _NAME, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(200), nullable=True),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("network", sa.JSON, nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("state_changed_at", _TS, nullable=False),
    sa.Column("last_seen_at", _TS, nullable=True),
    sa.ForeignKeyConstraint(["tenant_id", "site_id"], ["sites.tenant_id", "sites.id"]),
    sa.Index("ix_devices_tenant_site", "tenant_id", "site_id"),
)

device_transitions = sa.Table(
    "device_transitions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("tenant_id", _NAME, nullable=False),
    sa.Column("device_id", _NAME, nullable=False),
    sa.Column("ts", _TS, nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Index("ix_transitions_device_ts", "device_id", "ts"),
)

device_events = sa.Table(
    "device_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("tenant_id", _NAME, nullable=False),
    sa.Column("site_id", _NAME, nullable=False),
    sa.Column("device_id", _NAME, nullable=False),
    sa.Column("ts", _TS, nullable=False),
    sa.Column("event", _NAME, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_events_tenant_ts", "tenant_id", "ts"),
    sa.Index("ix_events_device_ts", "device_id", "ts"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", _NAME, sa.ForeignKey("tenants.id"), nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("expires_at", _TS, nullable=True),
    sa.Column("last_used_at", _TS, nullable=True),
    sa.Column("revoked_at", _TS, nullable=True),
    # Space-separated scopes narrowing the role's; NULL = all of the role's.
    sa.Column("scopes", sa.String(400), nullable=True),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    # User names are unique platform-wide, so signing in needs no tenant.
    sa.Column("username", _NAME, nullable=False, unique=True),
    sa.Column("tenant_id", _NAME, sa.ForeignKey("tenants.id"), nullable=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("password_hash", sa.String(400), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("password_changed_at", _TS, nullable=False),
    sa.Column("disabled_at", _TS, nullable=True),
    sa.Column("last_login_at", _TS, nullable=True),
    sa.Index("ix_users_tenant", "tenant_id"),
)

user_sessions = sa.Table(
    "user_sessions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("last_used_at", _TS, nullable=False),
    sa.Column("expires_at", _TS, nullable=False),
    sa.Column("revoked_at", _TS, nullable=True),
    sa.Index("ix_user_sessions_user", "user_id"),
)

rules = sa.Table(
    "rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", _NAME, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
)

alarms = sa.Table(
    "alarms",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("tenant_id", _NAME, nullable=False),
    sa.Column("site_id", _NAME, nullable=False),
    sa.Column("device_id", _NAME, nullable=False),
    sa.Column("rule_id", sa.Integer, nullable=False),
    sa.Column("rule_name", sa.String(200), nullable=False),
    sa.Column("metric", _NAME, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("message", sa.String(500), nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("raised_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.Column("acknowledged_at", _TS, nullable=True),
    sa.Column("acknowledged_by", sa.String(200), nullable=True),
    sa.Column("cleared_at", _TS, nullable=True),
    sa.Index("ix_alarms_tenant_state", "tenant_id", "state"),
    sa.Index("ix_alarms_device_rule", "device_id", "rule_id"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("received_at", _TS, nullable=False),
    sa.Column("tenant_id", _NAME, nullable=True),
    sa.Column("device_id", _NAME, nullable=True),
    sa.Column("topic", sa.String(400), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("detail", sa.String(1000), nullable=False),
    sa.Column("points", sa.Integer, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Index("ix_dead_letters_tenant_time", "tenant_id", "received_at"),
)

kpi_samples = sa.Table(
    "kpi_samples",
    metadata,
    sa.Column("tenant_id", _NAME, primary_key=True),
    sa.Column("site_id", _NAME, primary_key=True),  # "*" = the whole tenant
    sa.Column("ts", _TS, primary_key=True),
    sa.Column("registered", sa.Integer, nullable=False),
    sa.Column("online", sa.Integer, nullable=False),
    sa.Column("reporting", sa.Integer, nullable=False),
    sa.Column("expected_metrics", sa.Integer, nullable=False),
    sa.Column("reporting_metrics", sa.Integer, nullable=False),
)


def utc(value: datetime | None) -> datetime | None:
    """Make a datetime read back from the database timezone-aware (SQLite drops the zone)."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of an embedded SQLite database file."""
    return f"sqlite+aiosqlite:///{path}"


class Database:
    """Owns the SQLAlchemy engine of the metadata database.

    Args:
        url: ``sqlite+aiosqlite:///path`` or ``postgresql+psycopg://user@host/db``.
    """

    def __init__(self, *, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The engine (after ``open``)."""
        if self._engine is None:
            raise RuntimeError("the metadata database is not open")
        return self._engine

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite database."""
        return self.url.startswith("sqlite")

    async def open(self) -> None:
        """Connect and create missing tables."""
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = self.url.split("///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs |= {"pool_size": 5, "max_overflow": 5, "pool_pre_ping": True}
        engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.run_sync(_add_missing_columns)
        self._engine = engine

    async def close(self) -> None:
        """Dispose of the connection pool."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def _add_missing_columns(conn: sa.Connection) -> None:
    """Bring a database from an earlier version up to date by adding new nullable columns.

    The schema has only grown by nullable columns so far, which this handles on every start
    (``create_all`` creates missing tables but never alters existing ones). A change that
    renames, drops or retypes a column will need real migrations (Alembic), not this.
    """
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise ConfigurationError(
                    f"table {table.name} lacks non-nullable column {column.name}: this database"
                    " needs a migration this version cannot do"
                )
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the dashboard read while ingest writes; FULL sync makes a commit survive power
    # loss (metadata writes are few, so the cost does not matter); foreign keys are off by
    # default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()

"""Handle record stores: the embedded SQLite store and the PostgreSQL store, one interface.

``open_store`` picks the backend from where the records live::

    async with open_store("/var/lib/tiangong/handles.db") as store:      # embedded
        record = await store.get("88.100.1/PUMP-1")
    async with open_store("postgresql://tiangong@db/ids") as store:      # server
        ...

See ``base`` for the data model and the semantics every backend shares.
"""

from __future__ import annotations

from pathlib import Path

from tiangong.identity.store.base import HandleStore, WouldBlock
from tiangong.identity.store.postgres_store import PostgresHandleStore
from tiangong.identity.store.sqlite_store import SqliteHandleStore

__all__ = ["HandleStore", "PostgresHandleStore", "SqliteHandleStore", "WouldBlock", "open_store"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url_or_path: str | Path) -> HandleStore:
    """The store for ``url_or_path``, not yet opened (use it as ``async with``).

    Args:
        url_or_path: a ``postgresql://`` (or ``postgres://``) connection URL for the
            PostgreSQL store; anything else is the file of the embedded SQLite store.

    Returns:
        A ``PostgresHandleStore`` or a ``SqliteHandleStore``.
    """
    if isinstance(url_or_path, str) and url_or_path.lower().startswith(_POSTGRES_SCHEMES):
        return PostgresHandleStore(dsn=url_or_path)
    return SqliteHandleStore(path=url_or_path)

"""Handle record stores: the embedded SQLite store and the PostgreSQL store, one interface.

``open_store`` picks the backend from where the records live::

    async with open_store("/var/lib/tiangong/handles.db") as store:      # embedded
        record = await store.get("88.100.1/PUMP-1")
    async with open_store("postgresql://tiangong@db/ids") as store:      # server
        ...

See ``base`` for the data model and the semantics every backend shares.
"""

from __future__ import annotations

import re
from pathlib import Path

from tiangong.identity.store.base import HandleStore, WouldBlock
from tiangong.identity.store.postgres_store import PostgresHandleStore
from tiangong.identity.store.sqlite_store import SqliteHandleStore

__all__ = ["HandleStore", "PostgresHandleStore", "SqliteHandleStore", "WouldBlock", "open_store"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url_or_path: str | Path) -> HandleStore:
    """The store for ``url_or_path``, not yet opened (use it as ``async with``).

    Args:
        url_or_path: a ``postgresql://`` (or ``postgres://``) connection URL, or a libpq
            ``key=value`` string (``host=db dbname=ids``), for the PostgreSQL store; a file path
            for the embedded SQLite store.

    Returns:
        A ``PostgresHandleStore`` or a ``SqliteHandleStore``.

    Raises:
        ValueError: ``url_or_path`` looks like the URL of something else (``sqlite:``,
            ``mysql://``...): it is refused rather than taken for a file name in the current
            directory.
    """
    if isinstance(url_or_path, str):
        text = url_or_path.strip()
        if text.lower().startswith(_POSTGRES_SCHEMES) or _CONNINFO.match(text):
            return PostgresHandleStore(dsn=text)
        scheme = _SCHEME.match(text)
        if scheme is not None:
            raise ValueError(
                f"{url_or_path!r} is not a handle store: give a postgresql:// URL (or libpq"
                " key=value settings) for PostgreSQL, or a file path for the embedded store"
                f" (not a {scheme.group(1)}: URL)"
            )
    return SqliteHandleStore(path=url_or_path)


#: ``host=db dbname=ids ...``: libpq's key=value form (a file name never starts so).
_CONNINFO = re.compile(r"^(host|hostaddr|port|dbname|user|service)\s*=", re.IGNORECASE)
#: A URL scheme of two letters or more (one letter would be a drive, on other systems).
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]+):", re.IGNORECASE)

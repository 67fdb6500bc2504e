"""The handle store interface, shared by the embedded (SQLite) and PostgreSQL backends.

Data model
----------
One row per handle value, in the shape of the Handle.Net server's SQL storage
(``handles(handle, idx, type, data, ttl_type, ttl, timestamp, refs, admin_read, admin_write,
pub_read, pub_write)`` and ``nas(na)``), plus a ``handle_key`` column: the handle with its ASCII
letters upper-cased (``values.handle_key``). Lookups go by ``(handle_key, idx)``, so
``88.100.1/abc`` and ``88.100.1/ABC`` are one handle, while the spelling it was created with is
kept in ``handle`` and returned. ``refs`` is the Handle.Net text form, ``index:handle`` items
separated by tabs (a handle cannot contain a tab: ``validate_handle`` refuses control
characters).

A handle exists while it has at least one value: a record without values cannot be stored
(``HandleStoreError``), and removing the last values of a handle deletes it, as with the
Handle.Net server's SQL storage.

Write semantics
---------------
Every write is one transaction: it takes the handle's write lock, reads the indexes stored for
the handle, decides what to delete and insert (``plan_write``, pure and shared by the backends)
or refuses with an error, and applies it. A refused write changes nothing.

==================  ==============================================  =========================
method              refuses with                                    note
==================  ==============================================  =========================
``create``          ``HandleExistsError``
``replace``                                                         the whole record, new
                                                                    spelling
``delete``          ``HandleNotFoundError``
``add_values``      ``HandleNotFoundError``, ``ValueExistsError``   if *any* index exists
``modify_values``   ``HandleNotFoundError``, ``ValueNotFoundError`` if *any* index is absent
``put_values``                                                      creates the handle if
                                                                    absent (REST ``PUT
                                                                    ?index=``)
``remove_values``   ``HandleNotFoundError``, ``ValueNotFoundError`` if *any* index is absent
``bulk_load``       ``HandleExistsError``                           all or nothing
==================  ==============================================  =========================

``remove_values`` follows the Handle.Net server, which answers REMOVE_VALUE for an index the
handle lacks with VALUES_NOT_FOUND (200) (pyhandle's ``delete_handle_value`` catches that answer
to make its own deletes idempotent); the store refuses the whole request rather than removing
the indexes that do exist, so that a refused request changes nothing. Values passed in one call
must have distinct indexes (``ValueExistsError`` otherwise); writes to an existing handle keep
its stored spelling, except ``replace``, which writes the record as given.

``change_counter`` grows with every committed write that changes something (homing included) and
is read in the same snapshot as data: a cache that reads the counter *before* a record and
finds it unchanged later knows the record is unchanged.
"""

from __future__ import annotations

import abc
import enum
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from tiangong.identity.errors import (
    HandleExistsError,
    HandleNotFoundError,
    HandleStoreError,
    ValueExistsError,
    ValueNotFoundError,
)
from tiangong.identity.handle.codec import encode_resolution_body
from tiangong.identity.handle.values import (
    MAX_HANDLE_LENGTH,
    HandleRecord,
    HandleValue,
    Permission,
    TtlType,
    ValueReference,
    handle_key,
    prefix_from_prefix_handle,
    prefix_handle,
    validate_handle,
)
from tiangong.resource import AsyncResource

__all__ = [
    "PERMISSIONS",
    "PERMISSION_BITS",
    "TTL_TYPES",
    "HandleStore",
    "RecordChange",
    "Row",
    "StoredHandle",
    "WriteKind",
    "check_handle",
    "check_values",
    "decode_refs",
    "encode_refs",
    "na_handle",
    "plan_write",
    "prefix_bounds",
    "prefix_of_na",
    "record_from_rows",
]

#: ``Permission`` by its 4-bit value: ``Permission(bits)`` costs a microsecond per value read.
PERMISSIONS: Final = tuple(Permission(bits) for bits in range(16))
#: The four permission columns (admin_read, admin_write, pub_read, pub_write) by permission bits.
PERMISSION_BITS: Final = {
    bits: (bool(bits & 0x08), bool(bits & 0x04), bool(bits & 0x02), bool(bits & 0x01))
    for bits in range(16)
}
#: ``TtlType`` by its stored number.
TTL_TYPES: Final = tuple(TtlType)

_INDEX_MIN: Final = -(2**31)
_INDEX_MAX: Final = 2**31 - 1
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class WouldBlock(HandleStoreError):  # noqa: N818 - names the condition, as BlockingIOError does
    """A synchronous read (``get_now``) that would have to wait; use the async ``get``."""


class HandleStore(AsyncResource):
    """Where a node keeps its handle records and the prefixes homed on it.

    Use as an async context manager (``async with store:``) or call ``open``/``close``. Every
    method is safe to call concurrently from one event loop. Errors are ``HandleStoreError``
    and its subclasses (see the module docstring); handle names that are not well formed raise
    ``HandleSyntaxError`` from writes. Handle lookups are case-insensitive in ASCII letters.
    """

    #: The backend's short name (``sqlite``, ``postgres``).
    name: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if needed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; the store cannot be used afterwards."""

    # -- reads -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, handle: str) -> HandleRecord | None:
        """The record of ``handle`` with its values sorted by index, or None if it is absent."""

    def get_now(self, handle: str) -> HandleRecord | None:
        """``get`` answered at once, for stores whose reads never wait (the embedded one).

        A node answers cache misses with it without scheduling a task per request.

        Raises:
            WouldBlock: this store cannot answer without waiting; use ``get``.
        """
        raise WouldBlock(f"the {self.name} store reads {handle!r} asynchronously")

    def public_answer_now(self, handle: str) -> bytes | None:
        """The pre-encoded anonymous answer for ``handle``, at once, for stores that keep one.

        The bytes are ``public_answer(record)`` as of the last write: what a resolution with no
        filter and no credential returns, encoded. None when the handle is absent or has no
        public value (the full path then says which). The UDP and TCP listeners answer a cache
        miss with it without building a single value object.

        Raises:
            WouldBlock: this store keeps no such answers or cannot read without waiting.
        """
        raise WouldBlock(f"the {self.name} store keeps no encoded answers ({handle!r})")

    @abc.abstractmethod
    async def get_many(self, handles: Sequence[str]) -> list[HandleRecord | None]:
        """The records of ``handles``, in the same order (None for each absent one)."""

    @abc.abstractmethod
    async def exists(self, handle: str) -> bool:
        """Whether ``handle`` has a record."""

    @abc.abstractmethod
    async def list_handles(
        self, prefix: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Handles under ``prefix/``, ordered by key, at most ``limit`` of them.

        Args:
            prefix: the prefix (``88.100.1``), matched case-insensitively.
            after: the last handle of the previous page; this page starts after it.
            limit: the most handles returned.

        Returns:
            The handles as they are spelled in the store.
        """

    @abc.abstractmethod
    async def count(self) -> int:
        """How many handles are stored."""

    @abc.abstractmethod
    async def change_counter(self) -> int:
        """A number that grows with every committed change (see the module docstring)."""

    # -- writes ------------------------------------------------------------------------------

    # Every write is one ``_write`` of the backend: one transaction that reads the stored
    # record, asks ``plan_write`` what to do (the same decisions on every backend) and applies it.

    @abc.abstractmethod
    async def _write(
        self,
        kind: WriteKind,
        handle: str,
        values: Sequence[HandleValue] = (),
        indexes: Iterable[int] = (),
    ) -> RecordChange:
        """Apply one planned write atomically and return what changed."""

    async def create(self, handle: str, values: Sequence[HandleValue]) -> None:
        """Create ``handle`` with ``values``.

        Raises:
            HandleExistsError: the handle exists.
        """
        check_values(values)
        await self._write(WriteKind.CREATE, handle, values)

    async def replace(self, handle: str, values: Sequence[HandleValue]) -> bool:
        """Store ``values`` as the whole record of ``handle``; returns True if it was created."""
        check_values(values)
        return (await self._write(WriteKind.REPLACE, handle, values)).created

    async def delete(self, handle: str) -> None:
        """Delete ``handle`` and all its values.

        Raises:
            HandleNotFoundError: the handle does not exist.
        """
        await self._write(WriteKind.DELETE, handle)

    async def add_values(self, handle: str, values: Sequence[HandleValue]) -> None:
        """Add values at indexes the handle does not have yet.

        Raises:
            HandleNotFoundError: the handle does not exist.
            ValueExistsError: one of the indexes exists (nothing is added).
        """
        check_values(values, allow_empty=True)
        await self._write(WriteKind.ADD, handle, values)

    async def modify_values(self, handle: str, values: Sequence[HandleValue]) -> None:
        """Replace existing values, matched by index.

        Raises:
            HandleNotFoundError: the handle does not exist.
            ValueNotFoundError: one of the indexes is absent (nothing is changed).
        """
        check_values(values, allow_empty=True)
        await self._write(WriteKind.MODIFY, handle, values)

    async def put_values(self, handle: str, values: Sequence[HandleValue]) -> bool:
        """Add or replace the values at their indexes, creating the handle if it is absent.

        This is the REST API's ``PUT /api/handles/{handle}?index=...``.

        Returns:
            True if the handle was created.
        """
        check_values(values)
        return (await self._write(WriteKind.PUT, handle, values)).created

    async def remove_values(self, handle: str, indexes: Iterable[int]) -> None:
        """Remove the values at ``indexes``; removing every value deletes the handle.

        Raises:
            HandleNotFoundError: the handle does not exist.
            ValueNotFoundError: one of the indexes is absent (nothing is removed).
        """
        await self._write(WriteKind.REMOVE, handle, (), indexes)

    @abc.abstractmethod
    async def bulk_load(
        self,
        records: Iterable[HandleRecord],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Load many new records in one transaction; returns how many were loaded.

        Meant for initial loads and migrations: the fastest path the backend has, which may
        hold other writers off until it commits (reads go on).

        Args:
            records: new records; none may exist already or appear twice.
            progress: called on the event loop with the number of records loaded so far.

        Raises:
            HandleExistsError: a handle exists or appears twice; nothing was loaded.
        """

    # -- prefixes homed on this node ---------------------------------------------------------

    @abc.abstractmethod
    async def home_prefix(self, prefix: str) -> bool:
        """Make this node authoritative for ``prefix``; returns False if it already was."""

    @abc.abstractmethod
    async def unhome_prefix(self, prefix: str) -> bool:
        """Stop serving ``prefix``; returns False if it was not homed."""

    @abc.abstractmethod
    async def homed_prefixes(self) -> list[str]:
        """The prefixes homed here (``88.100.1``, not ``0.NA/88.100.1``), ordered by key."""

    @abc.abstractmethod
    async def is_homed(self, prefix: str) -> bool:
        """Whether ``prefix`` is homed here (case-insensitive)."""


# -- shared, pure helpers ---------------------------------------------------------------------


def check_handle(handle: str) -> str:
    """``validate_handle`` with a fast path for the common, valid case (bulk loads)."""
    if not handle or _CONTROL.search(handle) or len(handle) * 4 > MAX_HANDLE_LENGTH:
        # Rare: the full check decides, and raises HandleSyntaxError with its reason.
        return validate_handle(handle)
    return handle


def check_values(values: Sequence[HandleValue], *, allow_empty: bool = False) -> None:
    """Refuse a value list a store cannot keep.

    Raises:
        HandleStoreError: no values (unless ``allow_empty``), or an index out of the int32
            range of the ``idx`` column.
        ValueExistsError: two values share an index.
    """
    if not values and not allow_empty:
        raise HandleStoreError("a handle record needs at least one value")
    indexes = {v.index for v in values}
    if len(indexes) != len(values):
        raise ValueExistsError("values passed together must have distinct indexes")
    if values and (min(indexes) < _INDEX_MIN or max(indexes) > _INDEX_MAX):
        raise HandleStoreError("value indexes must fit in 32 bits")


def encode_refs(references: tuple[ValueReference, ...]) -> str:
    """The ``refs`` column: ``index:handle`` items separated by tabs."""
    if not references:
        return ""
    return "\t".join(f"{r.index}:{r.handle}" for r in references)


def decode_refs(text: str | None) -> tuple[ValueReference, ...]:
    """The references of a ``refs`` column (empty or NULL: none)."""
    if not text:
        return ()
    return tuple(ValueReference.parse(item) for item in text.split("\t") if item)


#: The columns both backends select for a record, in the order ``record_from_rows`` reads.
#: (``handle`` and ``type`` as text; permissions folded into their 4-bit value.)
Row = tuple[str, int, str, bytes, int, int, int, int, str | None]


def public_answer(handle: str, values: Iterable[HandleValue]) -> bytes | None:
    """The encoded body of an anonymous, unfiltered resolution of a record.

    None if no value of it is public: such a resolution is refused, not answered.
    """
    public = sorted((v for v in values if v.public_read), key=lambda v: v.index)
    if not public:
        return None
    return encode_resolution_body(handle, public)


def record_from_rows(rows: Sequence[Row]) -> HandleRecord | None:
    """A record from its rows, sorted by index; None for no rows.

    Each row is ``(handle, idx, type, data, ttl, ttl_type, timestamp, perms, refs)``, ``perms``
    being the 4-bit permission value.
    """
    if not rows:
        return None
    # Positional arguments in HandleValue's field order: this runs once per value resolved.
    return HandleRecord(
        rows[0][0],
        tuple(
            HandleValue(
                r[1], r[2], r[3], r[4], TTL_TYPES[r[5]], r[6], PERMISSIONS[r[7]], decode_refs(r[8])
            )
            for r in rows
        ),
    )


def na_handle(prefix: str) -> str:
    """The prefix handle a homed prefix is kept as in ``nas`` (``0.NA/88.100.1``)."""
    return check_handle(prefix_handle(prefix))


def prefix_of_na(na: str) -> str:
    """``0.NA/88.100.1`` (a ``nas`` row) → ``88.100.1``."""
    return prefix_from_prefix_handle(na)


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """Keys of handles under ``prefix/`` are in ``[low, high)`` (code point order)."""
    key = handle_key(prefix)
    # "0" is the code point after "/": every key starting with "<prefix>/" sorts before it.
    return key + "/", key + "0"


class WriteKind(enum.Enum):
    """The single-handle writes, as ``plan_write`` decides them."""

    CREATE = "create"
    REPLACE = "replace"
    DELETE = "delete"
    ADD = "add"
    MODIFY = "modify"
    PUT = "put"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class StoredHandle:
    """What a write needs to know of a stored handle: its spelling and its indexes."""

    handle: str
    indexes: frozenset[int]


@dataclass(frozen=True, slots=True)
class RecordChange:
    """The rows one write changes: delete (some or all), then insert.

    Attributes:
        handle: the spelling the inserted rows carry.
        delete_all: delete every row of the handle.
        delete: the indexes to delete (when not ``delete_all``).
        insert: the values to insert.
        handles_delta: +1 if the write creates the handle, -1 if it deletes it, else 0.
    """

    handle: str
    delete_all: bool = False
    delete: tuple[int, ...] = ()
    insert: tuple[HandleValue, ...] = ()
    handles_delta: int = 0

    @property
    def created(self) -> bool:
        """Whether the write creates the handle."""
        return self.handles_delta > 0

    @property
    def empty(self) -> bool:
        """Whether the write changes no row (adding or removing nothing)."""
        return not (self.delete_all or self.delete or self.insert)


def plan_write(
    kind: WriteKind,
    handle: str,
    stored: StoredHandle | None,
    values: Sequence[HandleValue] = (),
    indexes: Iterable[int] = (),
) -> RecordChange:
    """Decide a write from the handle's stored state, or refuse it.

    Args:
        kind: which write.
        handle: the handle as the caller spelled it.
        stored: the handle as stored, or None if it does not exist.
        values: the values of a create, replace, add, modify or put (already checked).
        indexes: the indexes of a remove.

    Returns:
        The rows to delete and insert.

    Raises:
        HandleExistsError: CREATE of an existing handle.
        HandleNotFoundError: DELETE, ADD, MODIFY or REMOVE of an absent handle.
        ValueExistsError: ADD of an index the handle has.
        ValueNotFoundError: MODIFY or REMOVE of an index the handle lacks.
    """
    new = tuple(values)
    if kind is WriteKind.CREATE:
        if stored is not None:
            raise HandleExistsError(f"handle {handle!r} already exists")
        return RecordChange(handle=handle, insert=new, handles_delta=1)
    if kind is WriteKind.REPLACE:
        if stored is None:
            return RecordChange(handle=handle, insert=new, handles_delta=1)
        return RecordChange(handle=handle, delete_all=True, insert=new)
    if kind is WriteKind.PUT:
        if stored is None:
            return RecordChange(handle=handle, insert=new, handles_delta=1)
        replaced = tuple(v.index for v in new if v.index in stored.indexes)
        return RecordChange(handle=stored.handle, delete=replaced, insert=new)
    if stored is None:
        raise HandleNotFoundError(f"handle {handle!r} does not exist")
    if kind is WriteKind.DELETE:
        return RecordChange(handle=stored.handle, delete_all=True, handles_delta=-1)
    if kind is WriteKind.ADD:
        taken = sorted(v.index for v in new if v.index in stored.indexes)
        if taken:
            raise ValueExistsError(f"handle {stored.handle!r} already has index {taken[0]}")
        return RecordChange(handle=stored.handle, insert=new)
    if kind is WriteKind.MODIFY:
        missing = sorted(v.index for v in new if v.index not in stored.indexes)
        if missing:
            raise ValueNotFoundError(f"handle {stored.handle!r} has no index {missing[0]}")
        return RecordChange(handle=stored.handle, delete=tuple(v.index for v in new), insert=new)
    # REMOVE
    wanted = frozenset(indexes)
    missing = sorted(wanted - stored.indexes)
    if missing:
        raise ValueNotFoundError(f"handle {stored.handle!r} has no index {missing[0]}")
    if wanted >= stored.indexes:
        return RecordChange(handle=stored.handle, delete_all=True, handles_delta=-1)
    return RecordChange(handle=stored.handle, delete=tuple(sorted(wanted)))

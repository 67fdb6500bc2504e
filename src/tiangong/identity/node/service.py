"""What a Handle node does, independent of how the request arrived (UDP, TCP or HTTP).

A node is homed for one or more prefixes and answers for the handles under them. For a prefix it
has delegated (a ``0.NA/<prefix>`` record with the child node's HS_SITE), it refers the client
onwards with a prefix referral (303); for anything else it says it is not responsible (301).
This is how the national root, a secondary node and an enterprise node differ: by what they
hold, not by code.

Every write is authorized against HS_ADMIN: the caller's identity (``index:handle``, proven by a
challenge or HTTP Basic) must be named in the target handle's HS_ADMIN values, directly or
through an HS_VLIST group, with the permission bit the operation needs. Creating a handle needs
ADD_HANDLE on its prefix handle; creating a prefix handle needs ADD_PREFIX on its parent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from tiangong.identity.errors import (
    CodecError,
    HandleExistsError,
    HandleNotFoundError,
    HandleSyntaxError,
    IdentityError,
    ValueExistsError,
    ValueNotFoundError,
)
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.handle.values import (
    ALL_ADMIN_PERMISSIONS,
    HS_ADMIN,
    HS_PUBKEY,
    HS_SECKEY,
    HS_SERV,
    HS_SITE,
    HS_SITE_PREFIX,
    HS_VLIST,
    SECRET_PERMISSIONS,
    AdminPermission,
    AdminRecord,
    HandleRecord,
    HandleValue,
    SiteInfo,
    ValueList,
    ValueReference,
    handle_key,
    is_prefix_handle,
    parent_prefixes,
    prefix_from_prefix_handle,
    prefix_handle,
    split_handle,
    validate_handle,
)
from tiangong.identity.store.base import HandleStore, WouldBlock

if TYPE_CHECKING:
    from tiangong.identity.signing import RecordSigner
    from tiangong.security.audit import AuditTrail

log = logging.getLogger(__name__)

ADMIN_VALUE_INDEX = 100
ADMIN_KEY_INDEX = 300
ADMIN_GROUP_INDEX = 200
MAX_VALUE_INDEX = 2**31 - 1
SITE_VALUE_INDEX = 1
MAX_GROUP_DEPTH = 8


#: Where the request being served came from (``tcp:192.0.2.7``), set by the transport that
#: decoded it, for the node's audit trail.
WRITE_SOURCE: ContextVar[str] = ContextVar("tiangong_idnode_write_source", default="")


class NodeRole(StrEnum):
    """The node's place in the hierarchy (it changes defaults and what the CLI sets up)."""

    ROOT = "root"  # national top-level node: holds prefix handles of secondary nodes
    SECONDARY = "secondary"  # industry or region: delegates enterprise prefixes
    ENTERPRISE = "enterprise"  # holds the identifier records
    RESOLVER = "resolver"  # public recursive node: follows referrals, caches


class NodeError(IdentityError):
    """A request the node answers with a Handle response code other than success."""

    def __init__(self, code: ResponseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Referral:
    """The answer "ask there instead": the delegated prefix handle and its site values."""

    code: ResponseCode  # PREFIX_REFERRAL (303) or SERVICE_REFERRAL (302)
    handle: str
    values: tuple[HandleValue, ...]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: an authenticated ``index:handle``, or nobody."""

    reference: ValueReference | None = None

    @property
    def authenticated(self) -> bool:
        """Whether the caller proved an identity."""
        return self.reference is not None


ANONYMOUS = Identity()


@dataclass
class NodeStats:
    """Counters a node exports (and the CLI and benchmarks print)."""

    resolutions: int = 0
    not_found: int = 0
    referrals: int = 0
    writes: int = 0
    refused: int = 0
    malformed: int = 0
    by_code: dict[int, int] = field(default_factory=dict)

    def count(self, code: int) -> None:
        """Count one answer with response ``code``."""
        self.by_code[code] = self.by_code.get(code, 0) + 1


def admin_values(
    admin: ValueReference,
    permissions: AdminPermission = ALL_ADMIN_PERMISSIONS,
    index: int = ADMIN_VALUE_INDEX,
) -> HandleValue:
    """An HS_ADMIN value granting ``admin`` the ``permissions``."""
    from tiangong.identity.handle.codec import encode_admin  # noqa: PLC0415

    return HandleValue(
        index=index,
        type=HS_ADMIN,
        data=encode_admin(AdminRecord(admin=admin, permissions=permissions)),
        timestamp=int(time.time()),
    )


def site_value(
    site: SiteInfo, *, index: int = SITE_VALUE_INDEX, type_: str = HS_SITE
) -> HandleValue:
    """An HS_SITE (or HS_SITE.PREFIX) value describing ``site``."""
    from tiangong.identity.handle.codec import encode_site  # noqa: PLC0415

    return HandleValue(index=index, type=type_, data=encode_site(site), timestamp=int(time.time()))


class HandleNode:
    """The request logic of one node over one store.

    ``authenticate_remote`` looks up the key value of an identity that is not homed here (the
    resolver's job); without it only local identities can write.
    """

    def __init__(
        self,
        store: HandleStore,
        *,
        role: NodeRole,
        site: SiteInfo | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.role = role
        self.site = site
        self.clock = clock
        self.stats = NodeStats()
        # Called after every committed write (the UDP response cache clears itself).
        self.listeners: list[Callable[[], None]] = []
        # Server administrators may do anything on the records this node holds, like the
        # server_admins of a Handle.Net server: the operator can always repair a record.
        self.server_admins: set[ValueReference] = set()
        # With a signer every record this node writes carries an HS_SIGNATURE over its values
        # (trusted resolution); the lock keeps a slower signature from overwriting a newer one.
        self.signer: RecordSigner | None = None
        self._sign_lock = asyncio.Lock()
        self._homed: tuple[str, ...] = ()
        # With a trail every write this node allows or refuses is recorded (security.audit):
        # who (the authenticated admin), what, which handle, from where, and the outcome.
        self.audit: AuditTrail | None = None

    # ------------------------------------------------------------ audit

    async def audit_write(
        self,
        action: str,
        handle: str,
        *,
        actor: str,
        outcome: str,
        detail: dict[str, object] | None = None,
    ) -> None:
        """Record one write decision in the node's trail (nothing without one).

        Raises:
            NodeError: the trail did not take it (the operator must know: fail loudly).
        """
        if self.audit is None:
            return
        from tiangong.security.audit import AuditError  # noqa: PLC0415

        try:
            await self.audit.record(
                actor=actor,
                action=action,
                target=handle,
                source=WRITE_SOURCE.get(),
                outcome=outcome,
                detail=detail,
            )
        except AuditError as exc:
            log.exception("identifier write %s %s not audited", action, handle)
            raise NodeError(
                ResponseCode.ERROR, f"the write decision could not be audited: {exc}"
            ) from exc

    @contextlib.asynccontextmanager
    async def _audited(
        self, action: str, handle: str, identity: Identity, **detail: object
    ) -> AsyncIterator[None]:
        actor = str(identity.reference) if identity.reference is not None else "anonymous"
        try:
            yield
        except NodeError as exc:
            if self.audit is not None:
                await self.audit_write(
                    action,
                    handle,
                    actor=actor,
                    outcome=f"refused:{exc.code.name}",
                    detail=detail | {"reason": exc.message},
                )
            raise
        await self.audit_write(action, handle, actor=actor, outcome="ok", detail=detail)

    # ------------------------------------------------------------ setup

    async def refresh_homed(self) -> None:
        """Reload the prefixes homed here (after HOME_NA / UNHOME_NA)."""
        homed = await self.store.homed_prefixes()
        self._homed = tuple(handle_key(p) for p in homed)
        # The first admin of each homed prefix (bootstrap's 300:0.NA/<prefix>) administers the
        # server; the same in every worker process, whichever of them bootstrapped.
        self.server_admins = {ValueReference(prefix_handle(p), ADMIN_KEY_INDEX) for p in homed}

    async def bootstrap(self, prefix: str, admin_secret: bytes) -> ValueReference:
        """Home ``prefix`` and make ``300:0.NA/<prefix>`` its administrator with ``admin_secret``.

        Idempotent: a restart with another secret replaces the key (the operator's secret is
        the source of truth); the prefix handle keeps its other values.
        """
        if not admin_secret:
            raise NodeError(ResponseCode.INVALID_ADMIN, "an administrator secret is required")
        handle = prefix_handle(prefix)
        admin = ValueReference(handle=handle, index=ADMIN_KEY_INDEX)
        now = int(self.clock())
        values = [
            admin_values(admin),
            HandleValue(
                index=ADMIN_KEY_INDEX,
                type=HS_SECKEY,
                data=admin_secret,
                timestamp=now,
                permissions=SECRET_PERMISSIONS,
            ),
        ]
        # Index 200 is the prefix's admin group: pyhandle and hdl-admintool name
        # 200:0.NA/<prefix> as the owner of every handle they create.
        from tiangong.identity.handle.codec import encode_value_list  # noqa: PLC0415

        values.append(
            HandleValue(
                index=ADMIN_GROUP_INDEX,
                type=HS_VLIST,
                data=encode_value_list(ValueList(members=(admin,))),
                timestamp=now,
            )
        )
        if self.site is not None:
            values.append(site_value(self.site))
        await self.store.put_values(handle, values)
        await self.store.home_prefix(prefix)
        self._changed()
        await self.refresh_homed()
        return admin

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    async def _resign(self, handle: str) -> None:
        """Sign ``handle``'s record again after a write (nothing without a signer)."""
        if self.signer is None:
            return
        async with self._sign_lock:
            record = await self.store.get(handle)
            if record is None:
                return
            signature = await self.signer.signature_for(
                record.handle, record.values, now=int(self.clock())
            )
            await self.store.put_values(record.handle, [signature])

    # ------------------------------------------------------------ responsibility

    def homed_for(self, prefix: str) -> bool:
        """Whether ``prefix`` (or, for a derived prefix, a parent of it) is homed here."""
        return handle_key(prefix) in self._homed

    def _responsible_prefix(self, handle: str) -> str:
        """The prefix whose homing decides who answers for ``handle``."""
        if is_prefix_handle(handle):
            # 0.NA/88.100.1 is answered by the node homed for 88.100.1 (its own record) or for
            # a parent that delegated it; both are checked by the caller through the store.
            return prefix_from_prefix_handle(handle)
        return split_handle(handle)[0]

    def _delegation(
        self, prefix: str, *, include_self: bool
    ) -> Generator[str, HandleRecord | None, Referral | None]:
        """A prefix handle held here that delegates ``prefix`` (or a parent) to another site.

        A generator of the handles it needs read (see ``_locate_steps``).
        """
        candidates = parent_prefixes(prefix)
        if not include_self:
            candidates = candidates[1:]
        for candidate in candidates:
            if self.homed_for(candidate):
                return None  # we are the authority from here down
            record = yield prefix_handle(candidate)
            if record is None:
                continue
            sites = tuple(v for v in record.values if v.type_matches(HS_SITE))
            if sites:
                return Referral(
                    code=ResponseCode.PREFIX_REFERRAL,
                    handle=record.handle,
                    values=tuple(
                        replace(v, type=HS_SITE_PREFIX) if v.type.upper() == HS_SITE else v
                        for v in sites
                    ),
                )
            # Delegated to a *service* (HS_SERV names a service handle whose HS_SITE values
            # say where its servers are, shared by many prefixes): a service referral.
            services = tuple(v for v in record.values if v.type_matches(HS_SERV))
            if services:
                return Referral(
                    code=ResponseCode.SERVICE_REFERRAL, handle=record.handle, values=services
                )
        return None

    def _homed_above(self, prefix: str) -> bool:
        return any(self.homed_for(p) for p in parent_prefixes(prefix))

    def _locate_steps(
        self, handle: str
    ) -> Generator[str, HandleRecord | None, tuple[HandleRecord | None, Referral | None]]:
        """The record of ``handle`` if this node answers for it, or a referral.

        A prefix handle ``0.NA/X`` is answered wherever it is held: by the node homed for X (its
        own record) and by the parent that delegated X (the copy the parent refers with). A
        normal handle ``P/S`` only by the node homed for P. Otherwise a delegation held here for
        P or a parent of it gives a prefix referral; a node homed above P says "not found";
        anything else is not this node's business (301).

        Written as a generator that yields each handle it needs read and receives its record,
        so the same rules run over an awaited read (``_locate``) and, on the UDP hot path, over
        an immediate one (``resolve_now``).
        """
        prefix = self._responsible_prefix(handle)
        if is_prefix_handle(handle):
            record = yield handle
            if record is not None:
                return record, None
            referral = yield from self._delegation(prefix, include_self=False)
        elif self.homed_for(prefix):
            return (yield handle), None
        else:
            referral = yield from self._delegation(prefix, include_self=True)
        if referral is not None:
            return None, referral
        if self._homed_above(prefix):
            return None, None
        raise NodeError(
            ResponseCode.SERVER_NOT_RESPONSIBLE, f"this node is not responsible for {handle!r}"
        )

    async def _locate(self, handle: str) -> tuple[HandleRecord | None, Referral | None]:
        steps = self._locate_steps(handle)
        try:
            wanted = next(steps)
            while True:
                wanted = steps.send(await self.store.get(wanted))
        except StopIteration as done:
            located: tuple[HandleRecord | None, Referral | None] = done.value
            return located

    def _locate_now(self, handle: str) -> tuple[HandleRecord | None, Referral | None]:
        steps = self._locate_steps(handle)
        try:
            wanted = next(steps)
            while True:
                wanted = steps.send(self.store.get_now(wanted))
        except StopIteration as done:
            located: tuple[HandleRecord | None, Referral | None] = done.value
            return located

    # ------------------------------------------------------------ resolution

    async def resolve(
        self,
        handle: str,
        *,
        indexes: Sequence[int] = (),
        types: Sequence[str] = (),
        public_only: bool = True,
        identity: Identity = ANONYMOUS,
    ) -> HandleRecord | Referral:
        """Resolve ``handle``: its (filtered) values, or where to ask instead.

        Raises:
            NodeError: HANDLE_NOT_FOUND, VALUES_NOT_FOUND, SERVER_NOT_RESPONSIBLE, INVALID_HANDLE.
        """
        self.stats.resolutions += 1
        handle = self._valid(handle)
        record, referral = await self._locate(handle)
        if referral is not None or record is None:
            return self._not_here(handle, referral)
        allowed_private = (
            not public_only
            and identity.authenticated
            and await self.authorized(identity, record, AdminPermission.READ_VALUE)
        )
        return self._filtered(record, indexes, types, allowed_private=allowed_private)

    def resolve_now(
        self, handle: str, *, indexes: Sequence[int] = (), types: Sequence[str] = ()
    ) -> HandleRecord | Referral:
        """``resolve`` for an anonymous client, answered at once.

        For stores that read without waiting (the embedded one): the UDP hot path answers a
        cache miss without scheduling a task per request.

        Raises:
            WouldBlock: the store cannot answer at once; use ``resolve``.
            NodeError: as ``resolve``.
        """
        self.stats.resolutions += 1
        handle = self._valid(handle)
        record, referral = self._locate_now(handle)
        if referral is not None or record is None:
            return self._not_here(handle, referral)
        return self._filtered(record, indexes, types, allowed_private=False)

    def public_answer_now(self, handle: str) -> bytes | None:
        """The encoded anonymous, unfiltered answer for ``handle``, if the store keeps one.

        The miss path of the UDP and TCP listeners (``codec.encode_resolution_answer`` wraps
        it): only a well-formed normal handle under a prefix homed here, present with a public
        value. None for everything else (a prefix handle, a referral, not found, a store without
        encoded answers or that would block), which ``resolve_now``/``resolve`` then answer.
        """
        if is_prefix_handle(handle) or not self.homed_for(split_handle(handle)[0]):
            return None
        try:
            validate_handle(handle)
            body = self.store.public_answer_now(handle)
        except (HandleSyntaxError, UnicodeError, WouldBlock):
            return None
        if body is not None:
            self.stats.resolutions += 1
        return body

    def _not_here(self, handle: str, referral: Referral | None) -> Referral:
        if referral is not None:
            self.stats.referrals += 1
            return referral
        self.stats.not_found += 1
        raise NodeError(ResponseCode.HANDLE_NOT_FOUND, f"handle {handle!r} not found")

    @staticmethod
    def _filtered(
        record: HandleRecord,
        indexes: Sequence[int],
        types: Sequence[str],
        *,
        allowed_private: bool,
    ) -> HandleRecord:
        values = [
            v
            for v in record.values
            if (v.public_read or allowed_private)
            # Handle.Net semantics: index and type filters are OR'ed; none means all.
            and (
                (not indexes and not types)
                or v.index in indexes
                or any(v.type_matches(t) for t in types)
            )
        ]
        if not values and (indexes or types or record.values):
            raise NodeError(
                ResponseCode.VALUES_NOT_FOUND, f"no matching values in {record.handle!r}"
            )
        return HandleRecord(handle=record.handle, values=tuple(values))

    # ------------------------------------------------------------ authorization

    async def key_value(self, reference: ValueReference) -> HandleValue | None:
        """The HS_SECKEY/HS_PUBKEY value of an identity homed here."""
        record = await self.store.get(reference.handle)
        if record is None:
            return None
        value = record.value(reference.index)
        if value is None or value.type.upper() not in (HS_SECKEY, HS_PUBKEY):
            return None
        return value

    async def authorized(
        self, identity: Identity, record: HandleRecord, needed: AdminPermission
    ) -> bool:
        """Whether ``identity`` holds ``needed`` in ``record``'s HS_ADMIN values."""
        if identity.reference is None:
            return False
        if any(_same_reference(identity.reference, a) for a in self.server_admins):
            return True
        from tiangong.identity.handle.codec import decode_admin  # noqa: PLC0415

        for value in record.values:
            if value.type.upper() != HS_ADMIN:
                continue
            try:
                admin = decode_admin(value.data)
            except CodecError:
                log.warning("unreadable HS_ADMIN at %s:%s", value.index, record.handle)
                continue
            if (admin.permissions & needed) != needed:
                continue
            if await self._is_member(identity.reference, admin.admin, depth=0):
                return True
        return False

    async def _is_member(
        self, identity: ValueReference, admin: ValueReference, *, depth: int
    ) -> bool:
        if _same_reference(identity, admin):
            return True
        if depth >= MAX_GROUP_DEPTH:
            return False
        record = await self.store.get(admin.handle)
        if record is None:
            return False
        group = record.value(admin.index)
        if group is None or group.type.upper() != HS_VLIST:
            return False
        from tiangong.identity.handle.codec import decode_value_list  # noqa: PLC0415

        try:
            members = decode_value_list(group.data).members
        except CodecError:
            return False
        for member in members:
            if await self._is_member(identity, member, depth=depth + 1):
                return True
        return False

    async def require(
        self, identity: Identity, record: HandleRecord, needed: AdminPermission, what: str
    ) -> None:
        """Raise the right NodeError unless ``identity`` may do ``what`` on ``record``."""
        if not identity.authenticated:
            raise NodeError(ResponseCode.AUTHENTICATION_NEEDED, f"{what} needs authentication")
        if not await self.authorized(identity, record, needed):
            self.stats.refused += 1
            raise NodeError(
                ResponseCode.INSUFFICIENT_PERMISSIONS,
                f"{identity.reference} may not {what} (needs {needed.name} in HS_ADMIN)",
            )

    async def _owner_record(self, handle: str) -> HandleRecord:
        """The record whose HS_ADMIN decides whether ``handle`` may be created."""
        if is_prefix_handle(handle):
            prefix = prefix_from_prefix_handle(handle)
            for parent in parent_prefixes(prefix)[1:]:
                record = await self.store.get(prefix_handle(parent))
                if record is not None and self.homed_for(parent):
                    return record
            raise NodeError(
                ResponseCode.SERVER_NOT_RESPONSIBLE,
                f"no prefix homed here may delegate {prefix!r}",
            )
        prefix = split_handle(handle)[0]
        if not self.homed_for(prefix):
            raise NodeError(
                ResponseCode.SERVER_NOT_RESPONSIBLE, f"prefix {prefix!r} is not homed on this node"
            )
        record = await self.store.get(prefix_handle(prefix))
        if record is None:
            raise NodeError(ResponseCode.ERROR, f"prefix handle of {prefix!r} is missing")
        return record

    # ------------------------------------------------------------ writes

    async def create(
        self,
        handle: str,
        values: Sequence[HandleValue],
        *,
        identity: Identity,
        overwrite: bool = False,
    ) -> bool:
        """Create ``handle`` with ``values`` (or replace it with ``overwrite``); True if new."""
        action = "handle.create" + (" overwrite" if overwrite else "")
        indexes = sorted(v.index for v in values)
        async with self._audited(action, handle, identity, indexes=indexes):
            return await self._create(handle, values, identity=identity, overwrite=overwrite)

    async def _create(
        self,
        handle: str,
        values: Sequence[HandleValue],
        *,
        identity: Identity,
        overwrite: bool,
    ) -> bool:
        handle = self._valid(handle)
        values = self._stamped(values)
        owner = await self._owner_record(handle)
        existing = await self.store.get(handle)
        if existing is not None:
            if not overwrite:
                raise NodeError(
                    ResponseCode.HANDLE_ALREADY_EXISTS, f"handle {handle!r} already exists"
                )
            # A delegation may be replaced by whoever administers its parent prefix (the
            # parent operator re-registering a child node), or by the record's own admins.
            delegator = is_prefix_handle(handle) and await self.authorized(
                identity, owner, AdminPermission.ADD_PREFIX
            )
            if not delegator:
                await self.require(
                    identity,
                    existing,
                    AdminPermission.MODIFY_VALUE | AdminPermission.ADD_VALUE,
                    f"replace {handle}",
                )
        else:
            needed = AdminPermission.ADD_HANDLE
            if is_prefix_handle(handle):
                needed = AdminPermission.ADD_PREFIX
            await self.require(identity, owner, needed, f"create {handle}")
        if not any(v.type.upper() == HS_ADMIN for v in values) and identity.reference:
            # A record nobody administers could never be changed again: the creator owns it.
            free = _free_index(values, ADMIN_VALUE_INDEX)
            values = [*values, admin_values(identity.reference, index=free)]
        self.stats.writes += 1
        if existing is None:
            try:
                await self.store.create(handle, values)
                await self._resign(handle)
                self._changed()
            except HandleExistsError as exc:
                raise NodeError(ResponseCode.HANDLE_ALREADY_EXISTS, str(exc)) from exc
            return True
        await self.store.replace(handle, values)
        await self._resign(handle)
        self._changed()
        return False

    async def delete(self, handle: str, *, identity: Identity) -> None:
        """Delete ``handle``."""
        async with self._audited("handle.delete", handle, identity):
            record = await self._existing(handle)
            await self.require(identity, record, AdminPermission.DELETE_HANDLE, f"delete {handle}")
            self.stats.writes += 1
            try:
                await self.store.delete(handle)
                self._changed()
            except HandleNotFoundError as exc:
                raise NodeError(ResponseCode.HANDLE_NOT_FOUND, str(exc)) from exc

    async def add_values(
        self, handle: str, values: Sequence[HandleValue], *, identity: Identity
    ) -> None:
        """Add values at indexes the handle does not have yet."""
        indexes = sorted(v.index for v in values)
        async with self._audited("value.add", handle, identity, indexes=indexes):
            await self._add_values(handle, values, identity=identity)

    async def _add_values(
        self, handle: str, values: Sequence[HandleValue], *, identity: Identity
    ) -> None:
        record = await self._existing(handle)
        await self.require(identity, record, _needed(values, add=True), f"add values to {handle}")
        self.stats.writes += 1
        try:
            await self.store.add_values(handle, self._stamped(values))
            await self._resign(handle)
            self._changed()
        except ValueExistsError as exc:
            raise NodeError(ResponseCode.VALUE_ALREADY_EXISTS, str(exc)) from exc

    async def modify_values(
        self, handle: str, values: Sequence[HandleValue], *, identity: Identity
    ) -> None:
        """Replace existing values (by index)."""
        indexes = sorted(v.index for v in values)
        async with self._audited("value.modify", handle, identity, indexes=indexes):
            await self._modify_values(handle, values, identity=identity)

    async def _modify_values(
        self, handle: str, values: Sequence[HandleValue], *, identity: Identity
    ) -> None:
        record = await self._existing(handle)
        await self.require(identity, record, _needed(values, add=False), f"modify {handle}")
        self.stats.writes += 1
        try:
            await self.store.modify_values(handle, self._stamped(values))
            await self._resign(handle)
            self._changed()
        except ValueNotFoundError as exc:
            raise NodeError(ResponseCode.VALUES_NOT_FOUND, str(exc)) from exc

    async def put_values(
        self, handle: str, values: Sequence[HandleValue], *, identity: Identity
    ) -> bool:
        """Add or replace the given indexes, creating the handle if needed (REST ``?index=``)."""
        handle = self._valid(handle)
        record = await self.store.get(handle)
        if record is None:
            return await self.create(handle, values, identity=identity)
        indexes = sorted(v.index for v in values)
        async with self._audited("value.put", handle, identity, indexes=indexes):
            return await self._put_values(record, handle, values, identity=identity)

    async def _put_values(
        self,
        record: HandleRecord,
        handle: str,
        values: Sequence[HandleValue],
        *,
        identity: Identity,
    ) -> bool:
        present = {v.index for v in record.values}
        adding = [v for v in values if v.index not in present]
        changing = [v for v in values if v.index in present]
        if adding:
            await self.require(identity, record, _needed(adding, add=True), f"add to {handle}")
        if changing:
            await self.require(identity, record, _needed(changing, add=False), f"modify {handle}")
        self.stats.writes += 1
        created = await self.store.put_values(handle, self._stamped(values))
        await self._resign(handle)
        self._changed()
        return created

    async def remove_values(
        self, handle: str, indexes: Sequence[int], *, identity: Identity
    ) -> None:
        """Remove the values at ``indexes``."""
        async with self._audited("value.remove", handle, identity, indexes=sorted(indexes)):
            await self._remove_values(handle, indexes, identity=identity)

    async def _remove_values(
        self, handle: str, indexes: Sequence[int], *, identity: Identity
    ) -> None:
        record = await self._existing(handle)
        removing = [v for v in record.values if v.index in set(indexes)]
        if not removing:
            raise NodeError(
                ResponseCode.VALUES_NOT_FOUND, f"{handle!r} has no value at {list(indexes)}"
            )
        needed = (
            AdminPermission.REMOVE_ADMIN
            if any(v.type.upper() == HS_ADMIN for v in removing)
            else AdminPermission.REMOVE_VALUE
        )
        await self.require(identity, record, needed, f"remove values from {handle}")
        self.stats.writes += 1
        try:
            await self.store.remove_values(handle, [v.index for v in removing])
            await self._resign(handle)
            self._changed()
        except ValueNotFoundError as exc:
            raise NodeError(ResponseCode.VALUES_NOT_FOUND, str(exc)) from exc

    async def list_handles(
        self, prefix: str, *, identity: Identity, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """The handles under ``prefix`` (needs LIST_HANDLES on its prefix handle)."""
        if is_prefix_handle(prefix):
            prefix = prefix_from_prefix_handle(prefix)
        if not self.homed_for(prefix):
            raise NodeError(
                ResponseCode.SERVER_NOT_RESPONSIBLE, f"prefix {prefix!r} is not homed here"
            )
        record = await self._existing(prefix_handle(prefix))
        await self.require(identity, record, AdminPermission.LIST_HANDLES, f"list {prefix}")
        return await self.store.list_handles(prefix, after=after, limit=limit)

    async def home(self, prefix: str, *, identity: Identity, home: bool = True) -> None:
        """HOME_NA / UNHOME_NA: become (or stop being) authoritative for ``prefix``.

        Needs ADD_PREFIX (DELETE_PREFIX to unhome) on a prefix handle already homed here: the
        operator who administers this node.
        """
        action = "prefix.home" if home else "prefix.unhome"
        async with self._audited(action, prefix, identity):
            await self._home(prefix, identity=identity, home=home)

    async def _home(self, prefix: str, *, identity: Identity, home: bool) -> None:
        if is_prefix_handle(prefix):
            prefix = prefix_from_prefix_handle(prefix)
        needed = AdminPermission.ADD_PREFIX if home else AdminPermission.DELETE_PREFIX
        for homed in await self.store.homed_prefixes():
            record = await self.store.get(prefix_handle(homed))
            if record is not None and await self.authorized(identity, record, needed):
                break
        else:
            if not identity.authenticated:
                raise NodeError(ResponseCode.AUTHENTICATION_NEEDED, "homing needs authentication")
            raise NodeError(
                ResponseCode.INSUFFICIENT_PERMISSIONS,
                f"{identity.reference} is not an administrator of this node",
            )
        if home:
            await self.store.home_prefix(prefix)
            self._changed()
        else:
            await self.store.unhome_prefix(prefix)
            self._changed()
        await self.refresh_homed()

    async def homed_prefixes(self) -> list[str]:
        """The prefixes homed here (public: a client may ask where to go)."""
        return await self.store.homed_prefixes()

    # ------------------------------------------------------------ helpers

    async def _existing(self, handle: str) -> HandleRecord:
        handle = self._valid(handle)
        record, referral = await self._locate(handle)
        if referral is not None:
            raise NodeError(
                ResponseCode.SERVER_NOT_RESPONSIBLE,
                f"{handle!r} is delegated to another node (ask the site in {referral.handle})",
            )
        if record is None:
            raise NodeError(ResponseCode.HANDLE_NOT_FOUND, f"handle {handle!r} not found")
        return record

    @staticmethod
    def _valid(handle: str) -> str:
        try:
            return validate_handle(handle)
        except (HandleSyntaxError, UnicodeError) as exc:
            raise NodeError(ResponseCode.INVALID_HANDLE, str(exc)) from exc

    def _stamped(self, values: Iterable[HandleValue]) -> list[HandleValue]:
        now = int(self.clock())
        stamped = [replace(v, timestamp=now) for v in values]
        indexes = [v.index for v in stamped]
        if len(set(indexes)) != len(indexes):
            raise NodeError(ResponseCode.INVALID_VALUE, "two values with the same index")
        if any(not 0 < i <= MAX_VALUE_INDEX for i in indexes):
            raise NodeError(
                ResponseCode.INVALID_VALUE, f"value indexes must be 1..{MAX_VALUE_INDEX}"
            )
        return stamped


def _needed(values: Sequence[HandleValue], *, add: bool) -> AdminPermission:
    admin = any(v.type.upper() == HS_ADMIN for v in values)
    if add:
        return AdminPermission.ADD_ADMIN if admin else AdminPermission.ADD_VALUE
    return AdminPermission.MODIFY_ADMIN if admin else AdminPermission.MODIFY_VALUE


def _free_index(values: Sequence[HandleValue], start: int) -> int:
    used = {v.index for v in values}
    index = start
    while index in used:
        index += 1
    return index


def _same_reference(a: ValueReference, b: ValueReference) -> bool:
    return a.index == b.index and handle_key(a.handle) == handle_key(b.handle)

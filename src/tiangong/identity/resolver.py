"""The recursive resolver (公共递归节点): from the national root down to the node holding a record.

To resolve ``88.100.1/PUMP-00042`` it first needs the site of prefix ``88.100.1``: it asks the
root for ``0.NA/88.100.1`` (types HS_SITE, HS_SERV); the root holds ``0.NA/88.100`` (a secondary
node) and answers with a prefix referral (303) carrying that node's site; the secondary holds
``0.NA/88.100.1`` and answers with the enterprise node's HS_SITE; the resolver then asks the
enterprise node for the handle itself. Every answer is cached for its TTL (referrals and sites
too), so the next resolution under the same prefix costs one round trip, or none.

A site may list several servers (mirrors) and a prefix several sites: a server that does not
answer within the timeout is skipped and the next one asked, so one node being down does not
stop resolution where a mirror exists.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tiangong.identity.client import HandleClient, ServerAddress, error_text
from tiangong.identity.errors import CodecError, ResolutionError
from tiangong.identity.handle import codec
from tiangong.identity.handle.messages import Message, ReferralResponse, ResolutionResponse
from tiangong.identity.handle.protocol import MAX_RECURSION, OpFlag, ResponseCode
from tiangong.identity.handle.values import (
    HS_SERV,
    HS_SITE,
    HandleRecord,
    HandleValue,
    SiteInfo,
    Transport,
    TtlType,
    handle_key,
    is_prefix_handle,
    prefix_handle,
    split_handle,
)
from tiangong.identity.node.service import ANONYMOUS, Identity, NodeError, Referral

log = logging.getLogger(__name__)

NEGATIVE_TTL = 10.0  # seconds a "not found" is remembered
MAX_TTL = 86_400.0
SITE_TYPES = (HS_SITE, HS_SERV)
MAX_SERVICE_DEPTH = 20  # HS_SERV chains, as CNRI's resolver limits them


@dataclass
class ResolverStats:
    """How the resolver has been doing."""

    resolutions: int = 0
    cache_hits: int = 0
    upstream_queries: int = 0
    referrals_followed: int = 0
    failovers: int = 0
    by_code: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    record: HandleRecord | None  # None: remembered "not found"
    code: ResponseCode = ResponseCode.SUCCESS


class Resolver:
    """Resolve any handle starting from ``roots`` (the national top-level node and its mirrors)."""

    def __init__(
        self,
        roots: Sequence[ServerAddress],
        *,
        client: HandleClient | None = None,
        cache_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not roots:
            raise ValueError("a resolver needs at least one root server address")
        self.roots = list(roots)
        self.client = client or HandleClient()
        self.cache_entries = cache_entries
        self.clock = clock
        self.stats = ResolverStats()
        self._cache: OrderedDict[tuple[str, tuple[int, ...], tuple[str, ...]], _Entry] = (
            OrderedDict()
        )

    # ------------------------------------------------------------ public

    async def resolve(
        self,
        handle: str,
        *,
        indexes: Sequence[int] = (),
        types: Sequence[str] = (),
    ) -> HandleRecord:
        """The public values of ``handle`` (filtered), from the cache or the hierarchy.

        Raises:
            ResolutionError: with the response code of the last node asked (100 not found, ...).
        """
        self.stats.resolutions += 1
        key = (handle_key(handle), tuple(indexes), tuple(t.upper() for t in types))
        entry = self._cached(key)
        if entry is not None:
            self.stats.cache_hits += 1
            if entry.record is None:
                raise ResolutionError(f"{handle!r}: {entry.code.name}", entry.code)
            return entry.record
        try:
            if is_prefix_handle(handle):
                servers = self.roots
            else:
                servers = await self.servers_for_prefix(split_handle(handle)[0])
            record = await self._ask(servers, handle, tuple(indexes), tuple(types))
        except ResolutionError as exc:
            if exc.response_code in (ResponseCode.HANDLE_NOT_FOUND, ResponseCode.VALUES_NOT_FOUND):
                code = ResponseCode(exc.response_code)
                self._store(key, _Entry(self.clock() + NEGATIVE_TTL, None, code))
            raise
        self._store(key, _Entry(self.clock() + _ttl(record.values), record))
        return record

    async def servers_for_prefix(self, prefix: str) -> list[ServerAddress]:
        """The servers of the sites that hold ``prefix``'s records, best first."""
        record = await self.resolve(prefix_handle(prefix), types=SITE_TYPES)
        sites = await self._sites_of(record.values, depth=0)
        if not sites:
            raise ResolutionError(
                f"prefix {prefix!r} has no HS_SITE or HS_SERV: nobody serves it",
                ResponseCode.HANDLE_NOT_FOUND,
            )
        return _servers(sites, prefix)

    async def _sites_of(self, values: Sequence[HandleValue], *, depth: int) -> list[SiteInfo]:
        """Sites named by HS_SITE values, or by the service handles HS_SERV values name."""
        sites = _sites(values)
        if sites:
            return sites
        for value in values:
            if not value.type_matches(HS_SERV):
                continue
            if depth >= MAX_SERVICE_DEPTH:
                raise ResolutionError(
                    f"HS_SERV chain longer than {MAX_SERVICE_DEPTH}",
                    ResponseCode.RECURSION_COUNT_TOO_HIGH,
                )
            service = value.data.decode("utf-8", errors="replace")
            try:
                record = await self.resolve(service, types=SITE_TYPES)
            except ResolutionError as exc:
                log.info("service handle %s did not resolve: %s", service, exc)
                continue
            sites.extend(await self._sites_of(record.values, depth=depth + 1))
        return sites

    def clear(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()

    # ------------------------------------------------------------ walking

    async def _ask(
        self,
        servers: list[ServerAddress],
        handle: str,
        indexes: tuple[int, ...],
        types: tuple[str, ...],
    ) -> HandleRecord:
        visited: set[tuple[ServerAddress, ...]] = set()
        for _hop in range(MAX_RECURSION):
            key = tuple(servers)
            if key in visited:
                # Referred back to servers already asked for this handle: nodes disagree on
                # who holds the prefix, and following them would go round for ever.
                raise ResolutionError(
                    f"{handle!r}: referral loop back to {servers[0]}",
                    ResponseCode.RECURSION_COUNT_TOO_HIGH,
                )
            visited.add(key)
            answer = await self._first_answer(servers, handle, indexes, types)
            code = answer.header.response
            self.stats.by_code[int(code)] = self.stats.by_code.get(int(code), 0) + 1
            body = answer.body
            if code is ResponseCode.SUCCESS and isinstance(body, ResolutionResponse):
                return HandleRecord(handle=body.handle, values=body.values)
            referral = code in (ResponseCode.PREFIX_REFERRAL, ResponseCode.SERVICE_REFERRAL)
            if referral and isinstance(body, ReferralResponse):
                self.stats.referrals_followed += 1
                sites = await self._sites_of(body.values, depth=0)
                if not sites:
                    raise ResolutionError(
                        f"referral for {handle!r} names no site", ResponseCode.PROTOCOL_ERROR
                    )
                servers = _servers(sites, handle)
                continue
            raise ResolutionError(f"{handle!r}: {error_text(answer)}", code)
        raise ResolutionError(
            f"{handle!r}: more than {MAX_RECURSION} referrals (a loop?)",
            ResponseCode.RECURSION_COUNT_TOO_HIGH,
        )

    async def _first_answer(
        self,
        servers: list[ServerAddress],
        handle: str,
        indexes: tuple[int, ...],
        types: tuple[str, ...],
    ) -> Message:
        failures: list[str] = []
        for position, server in enumerate(servers):
            self.stats.upstream_queries += 1
            try:
                return await self.client.resolve(
                    server, handle, indexes=indexes, types=types, flags=OpFlag.PO
                )
            except (TimeoutError, OSError, CodecError, ResolutionError) as exc:
                failures.append(f"{server}: {exc or type(exc).__name__}")
                if position + 1 < len(servers):
                    self.stats.failovers += 1
                    log.info("no answer from %s for %s; trying the next server", server, handle)
        raise ResolutionError(
            f"no server answered for {handle!r} ({'; '.join(failures)})",
            ResponseCode.SERVER_TOO_BUSY,
        )

    # ------------------------------------------------------------ cache

    def _cached(self, key: tuple[str, tuple[int, ...], tuple[str, ...]]) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires < self.clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return entry

    def _store(self, key: tuple[str, tuple[int, ...], tuple[str, ...]], entry: _Entry) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)


def _ttl(values: Sequence[HandleValue]) -> float:
    """Seconds an answer may be cached: the smallest TTL of its values."""
    ttls: list[float] = []
    now_wall = time.time()
    for value in values:
        if value.ttl_type is TtlType.ABSOLUTE:
            ttls.append(max(0.0, value.ttl - now_wall))
        else:
            ttls.append(float(value.ttl))
    return min([MAX_TTL, *ttls])


def _sites(values: Sequence[HandleValue]) -> list[SiteInfo]:
    sites: list[SiteInfo] = []
    for value in values:
        if not value.type_matches(HS_SITE):
            continue
        try:
            sites.append(codec.decode_site(value.data))
        except CodecError as exc:
            log.warning("skipping an unreadable HS_SITE at index %s: %s", value.index, exc)
    # Primary sites first: writes must go there, and they are the authority.
    sites.sort(key=lambda s: not s.primary)
    return sites


def _servers(sites: Sequence[SiteInfo], handle: str) -> list[ServerAddress]:
    """Every server of ``sites``, the hash-chosen one of each site first (mirrors after)."""
    ordered: list[ServerAddress] = []
    for site in sites:
        if not site.servers:
            continue
        chosen = codec.site_server_for(site, handle)
        for server in [chosen, *(s for s in site.servers if s is not chosen)]:
            interface = server.interface(Transport.UDP) or server.interface(Transport.TCP)
            if interface is None or not interface.query:
                continue
            address = server.address
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                host = str(address.ipv4_mapped)
            else:
                host = str(address)
            transport = "udp" if interface.transport is Transport.UDP else "tcp"
            ordered.append(ServerAddress(host, interface.port, transport))
    return ordered


class ResolverNode:
    """A resolver served like a node: the dispatcher and the REST API call ``resolve``."""

    def __init__(self, resolver: Resolver, *, site: SiteInfo | None = None) -> None:
        self.resolver = resolver
        self.site = site

    async def resolve(
        self,
        handle: str,
        *,
        indexes: Sequence[int] = (),
        types: Sequence[str] = (),
        public_only: bool = True,  # noqa: ARG002 - a resolver only ever sees public values
        identity: Identity = ANONYMOUS,  # noqa: ARG002
    ) -> HandleRecord | Referral:
        """Resolve through the hierarchy; errors become the node's response codes."""
        try:
            return await self.resolver.resolve(handle, indexes=indexes, types=types)
        except ResolutionError as exc:
            raise NodeError(ResponseCode(exc.response_code), str(exc)) from exc

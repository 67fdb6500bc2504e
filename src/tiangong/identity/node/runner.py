"""Start a node of any role: store, listeners, its own site record, registration at its parent.

``tiangong idnode`` and ``tiangong up`` both come through ``running_node``. A root, secondary or
enterprise node homes its prefix and makes ``300:0.NA/<prefix>`` its administrator with the
secret the operator gave (never a built-in default); with ``parent`` and a parent credential it
then registers its prefix at the parent (creates or updates ``0.NA/<prefix>`` there with its own
HS_SITE), which is how the hierarchy is wired. A resolver has no store: it starts from the root
addresses in ``parent`` and caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiangong.identity import auth
from tiangong.identity.client import HandleClient, ServerAddress, error_text
from tiangong.identity.errors import IdentityError
from tiangong.identity.handle.messages import ValuesRequest
from tiangong.identity.handle.protocol import OpCode, OpFlag, ResponseCode
from tiangong.identity.handle.values import (
    ALL_ADMIN_PERMISSIONS,
    HS_SITE,
    HandleValue,
    Interface,
    InterfaceKind,
    ServerInfo,
    SiteInfo,
    Transport,
    ValueReference,
    prefix_handle,
)
from tiangong.identity.node.server import NodeServer
from tiangong.identity.node.service import (
    ADMIN_KEY_INDEX,
    HandleNode,
    Identity,
    NodeRole,
    admin_values,
    site_value,
)
from tiangong.identity.resolver import Resolver, ResolverNode
from tiangong.identity.store import open_store
from tiangong.security.audit import AuditTrail

if TYPE_CHECKING:
    from tiangong.identity.signing import TrustMaterial

log = logging.getLogger(__name__)


class NodeSetupError(IdentityError):
    """A node cannot start as configured (missing secret, parent refused the registration)."""


@dataclass
class NodeOptions:
    """How to run one node (the ``tiangong idnode`` flags)."""

    role: NodeRole
    prefix: str | None = None
    host: str = "127.0.0.1"
    port: int = 2641
    http_port: int | None = None
    admin_secret: bytes | None = None
    data_dir: Path = Path(".tiangong/idnode")
    store_url: str | None = None  # postgresql://... for a big node; default: embedded
    parents: list[ServerAddress] = field(default_factory=list)
    parent_admin: ValueReference | None = None
    parent_secret: bytes | None = None
    advertise: str | None = None  # address other nodes reach us at (default: host)
    trust_dir: Path | None = None  # signing key and certificate (tiangong id trust ...)
    workers: int = 1  # processes sharing the port (SO_REUSEPORT); the first one bootstraps
    worker: bool = False  # this process is an extra worker: no bootstrap, no HTTP
    # Requests per second per client address over UDP, TCP and HTTP (0: no limit), the burst,
    # and addresses never limited (parents, children, resolvers): docs/identifiers.md.
    rate_limit: float = 5000.0
    burst: float = 20000.0
    rate_exempt: frozenset[str] = frozenset()


@dataclass
class RunningNode:
    """A started node: what it serves and where."""

    options: NodeOptions
    server: NodeServer
    node: HandleNode | None
    resolver: Resolver | None
    admin: ValueReference | None
    trust: TrustMaterial | None = None

    @property
    def address(self) -> ServerAddress:
        """Where the node answers (UDP and TCP share the port)."""
        return ServerAddress(self.options.advertise or self.options.host, self.server.port)


def own_site(host: str, port: int, http_port: int | None) -> SiteInfo:
    """The HS_SITE of a one-server node listening on ``host:port`` (and HTTP)."""
    interfaces = [
        Interface(InterfaceKind.ADMIN_AND_QUERY, Transport.UDP, port),
        Interface(InterfaceKind.ADMIN_AND_QUERY, Transport.TCP, port),
    ]
    if http_port:
        interfaces.append(Interface(InterfaceKind.ADMIN_AND_QUERY, Transport.HTTP, http_port))
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise NodeSetupError(
            f"--advertise {host!r} must be an IP address (HS_SITE carries addresses, not names)"
        ) from exc
    return SiteInfo(
        servers=(ServerInfo(server_id=1, address=address, interfaces=tuple(interfaces)),),
        attributes=(("desc", "Tiangong identifier node"),),
    )


@contextlib.asynccontextmanager
async def running_node(options: NodeOptions) -> AsyncIterator[RunningNode]:
    """Run a node until the context exits."""
    if options.role is NodeRole.RESOLVER:
        if not options.parents:
            raise NodeSetupError("a resolver needs --parent: the root node's host:port")
        resolver = Resolver(options.parents)
        resolver_node = ResolverNode(resolver)
        async with NodeServer(
            resolver_node,
            host=options.host,
            port=options.port,
            http_port=options.http_port,
            **_limits(options),
        ) as server:
            resolver_node.site = own_site(
                options.advertise or options.host, server.port, server.http_port
            )
            yield RunningNode(options, server, None, resolver, None)
        return
    if not options.prefix:
        raise NodeSetupError(f"a {options.role.value} node needs --prefix (e.g. 88.100.1)")
    if not options.admin_secret and not options.worker:
        raise NodeSetupError(
            "no administrator secret: give --admin-secret or set TIANGONG_ID_ADMIN_SECRET"
            " (generate one with `tiangong id secret`)"
        )
    options.data_dir.mkdir(parents=True, exist_ok=True)
    store_target = options.store_url or str(options.data_dir / "handles.sqlite3")
    async with open_store(store_target) as store, node_audit_trail(options.data_dir) as trail:
        node = HandleNode(store, role=options.role)
        node.audit = trail
        async with NodeServer(
            node,
            host=options.host,
            port=options.port,
            http_port=None if options.worker else options.http_port,
            reuse_port=options.workers > 1 or options.worker,
            **_limits(options),
        ) as server:
            node.site = own_site(options.advertise or options.host, server.port, options.http_port)
            material = _trust_material(options)
            if material is not None:
                node.signer = material.signer()
            if options.worker:
                await node.refresh_homed()
                yield RunningNode(options, server, node, None, None)
                return
            assert options.admin_secret  # checked above for every non-worker
            admin = await node.bootstrap(options.prefix, options.admin_secret)
            await node.audit_write(
                "prefix.bootstrap", options.prefix, actor="operator", outcome="ok",
                detail={"admin": str(admin), "role": options.role.value},
            )  # fmt: skip
            running = RunningNode(options, server, node, None, admin, material)
            if material is not None:
                await _publish_trust(running, material)
            if options.parents and options.parent_admin is not None:
                await register_at_parent(running)
            async with _extra_workers(options, server.port):
                yield running


def _limits(options: NodeOptions) -> dict[str, Any]:
    """The per-address limits of a node's listeners (``NodeServer`` arguments)."""
    return {
        "rate_limit": options.rate_limit or None,
        "burst": options.burst,
        "rate_exempt": options.rate_exempt,
    }


@contextlib.asynccontextmanager
async def node_audit_trail(data_dir: Path) -> AsyncIterator[AuditTrail]:
    """The node's audit trail: ``audit.sqlite3`` in its data directory, head anchored beside it.

    Every write the node allows or refuses is recorded there (``tiangong audit verify
    --data-dir`` checks it); the workers of one node share it.
    """
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    engine = create_async_engine(f"sqlite+aiosqlite:///{data_dir / 'audit.sqlite3'}")
    trail = AuditTrail(engine, checkpoint=data_dir / "audit-checkpoint.json")
    try:
        await trail.open()
        yield trail
    finally:
        await trail.close()
        await engine.dispose()


@contextlib.asynccontextmanager
async def _extra_workers(options: NodeOptions, port: int) -> AsyncIterator[None]:
    """Start ``workers - 1`` more processes on the same port; stop them on exit.

    One Python process answers about 100,000 cached UDP resolutions a second on one core;
    SO_REUSEPORT lets the kernel spread datagrams and connections over several processes,
    which is how a node uses every core (as NSD and CoreDNS do with their own threads).
    """
    if options.workers <= 1:
        yield
        return
    args = [
        sys.executable, "-m", "tiangong", "idnode", "--worker",
        "--role", options.role.value, "--prefix", options.prefix or "",
        "--host", options.host, "--port", str(port), "--data-dir", str(options.data_dir),
    ]  # fmt: skip
    if options.store_url:
        args += ["--store", options.store_url]
    if options.advertise:
        args += ["--advertise", options.advertise]
    if options.trust_dir:
        args += ["--trust-dir", str(options.trust_dir)]
    args += ["--rate-limit", str(options.rate_limit), "--burst", str(options.burst)]
    for address in sorted(options.rate_exempt):
        args += ["--rate-exempt", address]
    env = dict(os.environ)
    env.pop("TIANGONG_ID_ADMIN_SECRET", None)  # workers never write the admin key
    procs = [
        await asyncio.create_subprocess_exec(*args, env=env) for _ in range(options.workers - 1)
    ]
    try:
        yield
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _trust_material(options: NodeOptions) -> TrustMaterial | None:
    if options.trust_dir is None:
        return None
    from tiangong.identity.signing import TrustMaterial  # noqa: PLC0415 - cryptography is slow

    return TrustMaterial.load(options.trust_dir)


async def _publish_trust(running: RunningNode, material: TrustMaterial) -> None:
    """Put the node's certificate on its prefix handle; a root also publishes its trust handle."""
    assert running.node is not None
    assert running.admin is not None
    assert running.options.prefix is not None
    identity = Identity(running.admin)
    if material.is_root:
        handle, values = material.publications()
        await running.node.put_values(handle, values, identity=identity)
    else:
        await running.node.put_values(
            prefix_handle(running.options.prefix), [material.certificate_value()], identity=identity
        )


async def register_at_parent(running: RunningNode) -> None:
    """Create or update ``0.NA/<prefix>`` at the parent with this node's site."""
    options = running.options
    assert options.prefix is not None
    assert running.node is not None
    assert running.node.site is not None
    assert options.parent_admin is not None
    if not options.parent_secret:
        raise NodeSetupError("--parent-admin needs its secret: set TIANGONG_ID_PARENT_SECRET")
    identity = auth.AdminIdentity(options.parent_admin, secret=options.parent_secret)
    client = HandleClient(identity=identity)
    own_admin = ValueReference(prefix_handle(options.prefix), ADMIN_KEY_INDEX)
    values: tuple[HandleValue, ...] = (
        site_value(running.node.site, type_=HS_SITE),
        admin_values(own_admin, ALL_ADMIN_PERMISSIONS),
    )
    if running.trust is not None and not running.trust.is_root:
        # Resolvers read the parent's copy of 0.NA/<prefix>: the certificate that chains this
        # node's signatures to the trust root must be there (registration replaces the copy).
        values = (*values, running.trust.certificate_value())
    body = ValuesRequest(prefix_handle(options.prefix), values)
    failures: list[str] = []
    for parent in options.parents:
        request = client.message(OpCode.CREATE_HANDLE, body, flags=OpFlag.OVRW)
        try:
            answer = await client.send(ServerAddress(parent.host, parent.port, "tcp"), request)
        except (TimeoutError, OSError) as exc:
            failures.append(f"{parent}: {exc or type(exc).__name__}")
            continue
        if answer.header.response is ResponseCode.SUCCESS:
            log.info("registered prefix %s at %s", options.prefix, parent)
            return
        failures.append(f"{parent}: {error_text(answer)}")
    raise NodeSetupError(
        f"could not register prefix {options.prefix} at the parent ({'; '.join(failures)});"
        " check --parent, --parent-admin and TIANGONG_ID_PARENT_SECRET"
    )

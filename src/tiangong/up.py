"""``tiangong up``: the whole system in one process, on embedded defaults.

The real path, end to end: a simulated plant serving its machines over Modbus TCP and OPC UA
(``tiangong sim``) → one edge gateway per site (``tiangong edge``) polling and subscribing to
them, buffering on disk → the embedded MQTT broker (amqtt) → the platform (DuckDB and SQLite in
``--data-dir``) → REST API and dashboard. Nothing outside the process is needed. A restart with
the same data directory keeps all data, the admin token, the OPC UA certificates and every
device's and gateway's credentials.

Identifiers (标识解析) run here too: a national root node (prefix 88), a secondary node (88.100),
the simulated factory's enterprise node (88.100.1) and a supplier's (88.100.2), each with its
own embedded store and generated admin secret, plus a recursive resolver with a REST API. The
platform publishes every device as ``88.100.1/<device>``; the supplier's motor and bearing lots
are published at start, and every ``batch_interval`` each assembly line of the plant makes a
product batch ``88.100.1/BATCH-...`` whose components are those lots, so
``tiangong id trace`` walks from the factory's node to the supplier's.

The national view (工业互联网大数据中心, ``tiangong.data.demo``): the factory is an enterprise
(Suzhou 320500, GB/T 4754 C34 general equipment) whose hour, day and month indicators are
computed from its telemetry every ``datacenter_interval`` and sent, signed, to its regional
(Jiangsu) and industry sub-centers and from there to the national center, all in this process
over a local outbox in ``DATA_DIR/datacenter``. 14 generated enterprises with synthetic figures
(six in the energy industries) report beside it, with 30 days and 12 months of history, so the
dashboard's ``#/national`` and ``#/energy`` pages have something to compare. The platform's
data API reads the national center's store (``platform.data_store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from tiangong.data.demo import NationalDemo, national_demo
from tiangong.data.enterprise import EnterpriseProfile
from tiangong.edge.config import EdgeConfig
from tiangong.edge.gateway import EdgeGateway
from tiangong.identity.auth import AdminIdentity
from tiangong.identity.node.runner import NodeOptions, RunningNode, running_node
from tiangong.identity.node.service import NodeRole
from tiangong.platform.identifiers import IdentifierPublisher
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings
from tiangong.platform.tokens import ApiRole
from tiangong.security.credentials import write_secret_file
from tiangong.security.users import generate_password
from tiangong.sim.edge_plan import edge_config_for
from tiangong.sim.factory import FactoryPlan, RegistryProvisioner, plan_factory
from tiangong.sim.plant import SimulatedPlant

__all__ = ["LocalStack", "factory_profile", "run_local_stack"]

#: Engine test cells in the demo plant: C-MAPSS replays the RUL model applies to (apps/health).
DEMO_TURBOFANS = 2

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalStack:
    """What ``tiangong up`` runs.

    Attributes:
        data_dir: where everything is kept.
        http_host: dashboard and API address.
        http_port: dashboard and API port.
        mqtt_port: embedded broker port.
        mqtt_tls_port: the embedded broker's TLS listener (devices log in with a client
            certificate from their tenant's CA); ``None``: none.
        modbus_port: the simulated plant's (first) Modbus TCP port.
        opcua_port: the simulated plant's OPC UA port.
        devices: simulated devices.
        duration: seconds to run, or ``None`` for until interrupted.
        id_port: the identifier resolver's port; the root, secondary, factory and supplier
            nodes take the next four. ``None``: no identifier nodes.
        id_http_port: the resolver's REST API port (Handle.Net-compatible ``/api/handles``).
        batch_interval: seconds between two product batches of each assembly line.
        datacenter: run the data centers and the national view (``tiangong.data.demo``).
        datacenter_interval: seconds between two rounds of indicator reports.
    """

    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt_port: int = 1884
    mqtt_tls_port: int | None = 8884
    modbus_port: int = 5020
    opcua_port: int = 4840
    devices: int = 50
    duration: float | None = None
    id_port: int | None = 2650
    id_http_port: int = 8650
    batch_interval: float = 60.0
    datacenter: bool = True
    datacenter_interval: float = 30.0


def _banner(
    console: Console,
    stack: LocalStack,
    platform: Platform,
    plant: SimulatedPlant,
    gateways: list[EdgeConfig],
    *,
    identity: IdentifierDemo | None,
    national: NationalDemo | None,
) -> None:
    url = f"http://{stack.http_host}:{platform.http_port}/"
    token_file = stack.data_dir / "admin-token"
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Dashboard", f"{url}  (sign-in link below)")
    table.add_row(
        "Admin token",
        f"{platform.admin_token}  ({'generated now, ' if platform.admin_token_generated else ''}"
        f"kept in {token_file}, mode 0600)",
    )
    table.add_row("API", f"{url}docs  (OpenAPI at {url}openapi.json)")
    table.add_row("MQTT broker", f"{platform.settings.mqtt_host}:{stack.mqtt_port} (MQTT 3.1.1)")
    if stack.mqtt_tls_port is not None:
        server_ca = platform.certificates.server_identity().ca_file
        table.add_row(
            "MQTT over TLS",
            f"{platform.settings.mqtt_host}:{stack.mqtt_tls_port} (client certificates: enrol a"
            f" device with `tiangong edge enrol`; broker CA {server_ca})",
        )
    connecting = sum(d.connects for d in plant.plan.devices)
    table.add_row(
        "Simulated plant",
        f"{len(plant.plan.devices)} machines in {len(plant.plan.sites)} sites"
        f" ({DEMO_TURBOFANS} of them engine test cells), {connecting} commissioned"
        f" ({len(plant.plan.devices) - connecting} awaiting network commissioning); Modbus TCP on"
        f" {plant.host}:{', '.join(str(p) for p in plant.modbus_ports)},"
        f" OPC UA on {plant.opcua_endpoint} (Basic256Sha256 SignAndEncrypt)",
    )
    for gateway in gateways:
        table.add_row(
            "Edge gateway",
            f"{gateway.gateway.id}: {len(gateway.devices)} machines of site"
            f" {gateway.gateway.site}, buffer in {gateway.gateway.data_dir}",
        )
    if identity is not None:
        _identity_rows(table, identity)
    if national is not None:
        table.add_row(
            "National view",
            f"{url}#/national (by region and industry, drill-down) and {url}#/energy"
            " (energy industries); generated enterprises' figures are synthetic",
        )
        table.add_row("Data centers", f"{national.summary()}; state in {national.directory}")
    table.add_row("Data", str(stack.data_dir.resolve()))
    table.add_row("Stop", "Ctrl-C (data is kept for the next start)")
    console.print(Panel(table, title="Tiangong is up", border_style="green"))
    # On its own line so that no panel ever truncates it and terminals make it clickable.
    console.print(f"Open {url}#token={platform.admin_token}", soft_wrap=True, highlight=False)


async def run_local_stack(stack: LocalStack, console: Console | None = None) -> None:
    """Run broker, platform and simulated factory until interrupted or ``duration`` is over."""
    console = console or Console()
    settings = PlatformSettings.load(
        data_dir=stack.data_dir,
        demo=True,
        http_host=stack.http_host,
        http_port=stack.http_port,
        mqtt_port=stack.mqtt_port,
        mqtt_tls_port=stack.mqtt_tls_port,
        mqtt_version=4,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with (
            Platform(settings, embedded_broker=True) as platform,
            SimulatedPlant(
                plan=plan_factory(stack.devices, turbofans=DEMO_TURBOFANS),
                modbus_port=stack.modbus_port,
                opcua_port=stack.opcua_port,
                data_dir=stack.data_dir,
            ) as plant,
        ):
            gateways = [
                _gateway_config(plant, site.id, settings.mqtt_host, stack.mqtt_port)
                for site in plant.plan.sites
            ]
            provisioner = RegistryProvisioner(
                platform.registry, platform.alarms, stack.data_dir / "sim-credentials.json"
            )
            passwords = await provisioner.ensure(plant.plan, gateways)
            async with contextlib.AsyncExitStack() as edges:
                identity = await edges.enter_async_context(
                    _identifier_demo(stack, platform, plant.plan)
                )
                for config in gateways:
                    await edges.enter_async_context(
                        EdgeGateway(config, password=passwords[config.gateway.id])
                    )
                national = await edges.enter_async_context(
                    _national_view(stack, platform, plant.plan)
                )
                sign_in = await _demo_admin_user(platform, stack.data_dir)
                _banner(
                    console, stack, platform, plant, gateways, identity=identity, national=national
                )
                console.print(sign_in, soft_wrap=True, highlight=False)
                try:
                    async with asyncio.timeout(stack.duration):
                        await stop.wait()
                except TimeoutError:
                    console.print(f"[dim]ran for {stack.duration:g}s as asked; stopping[/dim]")
                else:
                    console.print("[dim]stopping...[/dim]")
            written = (
                f", {identity.factory.stats.published + identity.supplier.stats.published:,}"
                " identifiers written"
                if identity is not None
                else ""
            )
            reported = (
                f", {national.history_sent + national.updates_sent:,} indicator reports sent"
                if national is not None
                else ""
            )
            console.print(
                f"stopped cleanly: {platform.pipeline.points_committed:,} points stored this run"
                f"{written}{reported}, data kept in {stack.data_dir}"
            )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


def _gateway_config(plant: SimulatedPlant, site: str, mqtt_host: str, mqtt_port: int) -> EdgeConfig:
    """The edge gateway of one site, reading that site's machines from the plant's servers."""
    config = edge_config_for(
        plant.plan,
        modbus_host=plant.host,
        modbus_port=plant.modbus_ports,
        opcua_endpoint=plant.opcua_endpoint,
        gateway_id=f"edge-{site}",
        uplink_host=mqtt_host,
        uplink_port=mqtt_port,
        data_dir=plant.data_dir,
        security="sign_and_encrypt",
        protocols=plant.protocols,
        site=site,
    )
    # The embedded broker (amqtt) speaks MQTT 3.1.1.
    uplink = config.uplink.model_copy(update={"mqtt_version": 4})
    return config.model_copy(update={"uplink": uplink})


# -- the national view ---------------------------------------------------------------------------

#: The simulated factory in the national statistics: a made-up unified social credit code,
#: Suzhou (its first site), GB/T 4754 C34 general equipment (gearboxes, pumps, compressors).
FACTORY_ENTERPRISE_ID = "91320500MA1HXJM00A"
FACTORY_REGION = "320500"
FACTORY_INDUSTRY = "C34"


def factory_profile(plan: FactoryPlan) -> EnterpriseProfile:
    """The simulated factory as the enterprise that reports to the data centers."""
    return EnterpriseProfile(
        enterprise_id=FACTORY_ENTERPRISE_ID,
        name=plan.tenant_name,
        tenant_id=plan.tenant,
        region=FACTORY_REGION,
        industry=FACTORY_INDUSTRY,
    )


@contextlib.asynccontextmanager
async def _national_view(
    stack: LocalStack, platform: Platform, plan: FactoryPlan
) -> AsyncIterator[NationalDemo | None]:
    """The data centers and the national view (``None``: disabled)."""
    if not stack.datacenter:
        yield None
        return
    async with national_demo(
        stack.data_dir,
        platform,
        factory=factory_profile(plan),
        interval=stack.datacenter_interval,
    ) as demo:
        yield demo


# -- identifiers ---------------------------------------------------------------------------------

ROOT_PREFIX = "88"
SECONDARY_PREFIX = "88.100"
FACTORY_PREFIX = "88.100.1"
SUPPLIER_PREFIX = "88.100.2"
#: The identifier nodes listen on loopback: an HS_SITE carries an address other nodes dial.
ID_HOST = "127.0.0.1"

_SUPPLIER_TENANT = "jinggong"
_SUPPLIER_NAME = "Changzhou Jinggong Motor / 常州精工电机"
_SUPPLIER_SITE = "changzhou"
_CST = timezone(timedelta(hours=8))
_BEARING_LOTS = ("LOT-BEARING-0001", "LOT-BEARING-0002")
_MOTOR_LOTS = ("LOT-MOTOR-0001", "LOT-MOTOR-0002", "LOT-MOTOR-0003")
_PRODUCT = "Gearbox assembly / 齿轮箱总成"


@dataclass
class IdentifierDemo:
    """The identifier nodes of ``tiangong up`` and what publishes to them.

    Attributes:
        resolver: the recursive resolver (the address to give ``tiangong id``).
        nodes: root, secondary, factory and supplier nodes by prefix.
        secrets: each node's admin secret by prefix (kept in ``secret_dir``).
        secret_dir: where the secrets are, one ``<prefix>.secret`` file each, mode 0600.
        factory: publishes the platform's devices and the lines' batches to 88.100.1.
        supplier: publishes the supplier's component lots to 88.100.2.
        example_device: a device to show in the banner.
        batches: identifiers of the latest round of batches.
    """

    resolver: RunningNode
    nodes: dict[str, RunningNode]
    secrets: dict[str, bytes]
    secret_dir: Path
    factory: IdentifierPublisher
    supplier: IdentifierPublisher
    example_device: str = "<device>"
    batches: list[str] = field(default_factory=list)


def _identity_rows(table: Table, identity: IdentifierDemo) -> None:
    resolver = identity.resolver.address
    nodes = ", ".join(
        f"{label} {prefix} on :{identity.nodes[prefix].address.port}"
        for label, prefix in (
            ("root", ROOT_PREFIX),
            ("secondary", SECONDARY_PREFIX),
            ("factory", FACTORY_PREFIX),
            ("supplier", SUPPLIER_PREFIX),
        )
    )
    rest = identity.resolver.server.http_port
    table.add_row(
        "Identifiers",
        f"resolver {resolver} (udp+tcp)"
        + (f", REST http://{ID_HOST}:{rest}/api/handles/<identifier>" if rest else "")
        + f"; nodes {nodes}",
    )
    device = identity.example_device
    table.add_row("Resolve", f"tiangong id resolve {FACTORY_PREFIX}/{device} --server {resolver}")
    batch = identity.batches[0] if identity.batches else f"{FACTORY_PREFIX}/BATCH-..."
    table.add_row("Trace", f"tiangong id trace {batch} --server {resolver}")
    admin = identity.nodes[FACTORY_PREFIX].admin
    table.add_row(
        "Identifier admin",
        f"{admin} secret {identity.secrets[FACTORY_PREFIX].decode()}  (the other nodes' secrets"
        f" are in {identity.secret_dir}, mode 0600)",
    )


#: The demo's platform-admin user (its password is generated: there is no default one).
DEMO_ADMIN = "admin"


async def _demo_admin_user(platform: Platform, data_dir: Path) -> str:
    """Make sure the demo has a platform-admin user ``admin``; how to sign in with it.

    Its password is generated on first start and kept in ``admin-password`` (mode 0600), like
    the admin token, so later starts can show it again.
    """
    path = data_dir / "admin-password"
    if await platform.users.find(DEMO_ADMIN) is None:
        password = generate_password()
        await platform.users.create(
            username=DEMO_ADMIN, password=password, role=ApiRole.PLATFORM_ADMIN, tenant_id=None
        )
        await asyncio.to_thread(write_secret_file, path, password + "\n")
        return (
            f"Or sign in as {DEMO_ADMIN} with password {password}  (generated now, kept in {path})"
        )
    kept = await asyncio.to_thread(lambda: path.read_text().strip() if path.exists() else "")
    return (
        f"Or sign in as {DEMO_ADMIN} with password {kept or '(not kept)'}  (from {path}; if it was"
        f" changed since: tiangong users passwd {DEMO_ADMIN} --data-dir {data_dir})"
    )


def _node_secret(directory: Path, prefix: str) -> bytes:
    """The node's admin secret: kept from an earlier run, or generated and kept now.

    Blocking: call it from a thread.
    """
    path = directory / f"{prefix}.secret"
    if path.exists():
        kept = path.read_text().strip()
        if kept:
            return kept.encode()
    secret = secrets.token_urlsafe(32)
    write_secret_file(path, secret + "\n")
    return secret.encode()


@contextlib.asynccontextmanager
async def _identifier_demo(
    stack: LocalStack, platform: Platform, plan: FactoryPlan
) -> AsyncIterator[IdentifierDemo | None]:
    """Run the identifier hierarchy, the publishers and the batch loop (``None``: disabled)."""
    if stack.id_port is None:
        yield None
        return
    directory = stack.data_dir / "identity"
    prefixes = (ROOT_PREFIX, SECONDARY_PREFIX, FACTORY_PREFIX, SUPPLIER_PREFIX)
    keys = {p: await asyncio.to_thread(_node_secret, directory, p) for p in prefixes}
    roles = {
        ROOT_PREFIX: (NodeRole.ROOT, None),
        SECONDARY_PREFIX: (NodeRole.SECONDARY, ROOT_PREFIX),
        FACTORY_PREFIX: (NodeRole.ENTERPRISE, SECONDARY_PREFIX),
        SUPPLIER_PREFIX: (NodeRole.ENTERPRISE, SECONDARY_PREFIX),
    }
    async with contextlib.AsyncExitStack() as nodes_stack:
        nodes: dict[str, RunningNode] = {}
        for offset, prefix in enumerate(prefixes, start=1):
            role, parent = roles[prefix]
            above = nodes[parent] if parent else None
            nodes[prefix] = await nodes_stack.enter_async_context(
                running_node(
                    NodeOptions(
                        role=role,
                        prefix=prefix,
                        host=ID_HOST,
                        # --id-port 0: every node on a free port (tests, crowded hosts).
                        port=stack.id_port + offset if stack.id_port else 0,
                        admin_secret=keys[prefix],
                        data_dir=directory / prefix,
                        parents=[above.address] if above else [],
                        parent_admin=above.admin if above else None,
                        parent_secret=keys[parent] if parent else None,
                    )
                )
            )
        resolver = await nodes_stack.enter_async_context(
            running_node(
                NodeOptions(
                    role=NodeRole.RESOLVER,
                    host=ID_HOST,
                    port=stack.id_port,
                    http_port=stack.id_http_port,
                    parents=[nodes[ROOT_PREFIX].address],
                )
            )
        )

        def admin(prefix: str) -> AdminIdentity:
            reference = nodes[prefix].admin
            assert reference is not None
            return AdminIdentity(reference, secret=keys[prefix])

        url = f"http://{stack.http_host}:{platform.http_port}/"
        factory = await nodes_stack.enter_async_context(
            IdentifierPublisher(
                node=nodes[FACTORY_PREFIX].address,
                identity=admin(FACTORY_PREFIX),
                prefix=FACTORY_PREFIX,
                registry=platform.registry,
                tenant_id=plan.tenant,
                platform_url=url,
                maker=plan.tenant_name,
                audit=platform.audit,
            )
        )
        supplier = await nodes_stack.enter_async_context(
            IdentifierPublisher(
                node=nodes[SUPPLIER_PREFIX].address,
                identity=admin(SUPPLIER_PREFIX),
                prefix=SUPPLIER_PREFIX,
                tenant_id=_SUPPLIER_TENANT,
                maker=_SUPPLIER_NAME,
                audit=platform.audit,
            )
        )
        demo = IdentifierDemo(resolver, nodes, keys, directory, factory, supplier)
        if plan.devices:
            demo.example_device = plan.devices[0].id
        await _publish_supplier_lots(supplier)
        motors = itertools.cycle(supplier.handle_for(lot) for lot in _MOTOR_LOTS)
        bearings = itertools.cycle(supplier.handle_for(lot) for lot in _BEARING_LOTS)
        lines = [d for d in plan.devices if d.kind == "line"]

        async def one_round() -> None:
            now = datetime.now(UTC).replace(microsecond=0)
            demo.batches = [
                await factory.publish_batch(
                    f"BATCH-{line.id.upper()}-{now:%Y%m%d-%H%M%S}",
                    site=line.site,
                    produced_at=now,
                    components=[next(motors), next(bearings)],
                    line=line.id,
                    product=_PRODUCT,
                )
                for line in lines
            ]

        async def batches() -> None:
            while True:
                await asyncio.sleep(stack.batch_interval)
                try:
                    await one_round()
                except (ValueError, RuntimeError) as exc:
                    _log.warning("identifier demo: no batches this round: %s", exc)

        await one_round()
        # A plain task, not a TaskGroup: a group around the ``yield`` would turn the caller's
        # own exceptions into exception groups.
        loop = asyncio.create_task(batches(), name="identifier-batches")
        try:
            yield demo
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop


async def _publish_supplier_lots(supplier: IdentifierPublisher) -> None:
    """The supplier's component lots: bearings, and motors built with them."""
    for n, lot in enumerate(_BEARING_LOTS, start=1):
        await supplier.publish_batch(
            lot,
            site=_SUPPLIER_SITE,
            produced_at=datetime(2025, 1, n, 8, 0, tzinfo=_CST),
            components=[],
            product="Deep-groove ball bearing 6204 / 深沟球轴承",
        )
    for n, lot in enumerate(_MOTOR_LOTS, start=1):
        await supplier.publish_batch(
            lot,
            site=_SUPPLIER_SITE,
            produced_at=datetime(2025, 1, 10 + n, 8, 0, tzinfo=_CST),
            components=[supplier.handle_for(_BEARING_LOTS[n % len(_BEARING_LOTS)])],
            product="Servo motor 1.5 kW / 伺服电机",
        )

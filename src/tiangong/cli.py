"""The ``tiangong`` command line.

Every command has ``--help``. Errors print what went wrong and what to do, and exit non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from tiangong import __version__
from tiangong.apps.phm.cli import phm_app
from tiangong.data.cli import dataaudit_app, datacenter_command, datakeys_app
from tiangong.edge.cli import edge_app
from tiangong.identity.cli import id_app, idnode_command
from tiangong.security.cli import audit_app, security_app
from tiangong.security.users_cli import users_app

app = typer.Typer(
    name="tiangong",
    help="Tiangong industrial internet platform: network, platform, security, identifiers, data.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
broker_app = typer.Typer(help="Work with external MQTT brokers (Mosquitto, EMQX).")
app.add_typer(broker_app, name="broker")
app.add_typer(edge_app, name="edge")
app.add_typer(id_app, name="id")
app.command("idnode")(idnode_command)
app.command("datacenter")(datacenter_command)
app.add_typer(datakeys_app, name="datakeys")
app.add_typer(dataaudit_app, name="dataaudit")
app.add_typer(audit_app, name="audit")
app.add_typer(security_app, name="security")
app.add_typer(users_app, name="users")
app.add_typer(phm_app, name="phm")

console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="Where databases, tokens and credentials are kept.",
        envvar="TIANGONG_DATA_DIR",
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")]


def logging_setup(verbose: bool) -> None:
    """Log to stderr through rich: Tiangong at INFO (DEBUG with ``verbose``), libraries quieter."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=True)],
    )
    logging.getLogger("tiangong").setLevel(logging.DEBUG if verbose else logging.INFO)
    # amqtt logs every refused client at ERROR with a traceback; our own log line says it.
    logging.getLogger("amqtt").setLevel(logging.CRITICAL if not verbose else logging.INFO)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    # Both log each refused request (an absent unit id, an untrusted certificate) with a
    # traceback; our own log lines (simulator, gateway) say what happened.
    for library in ("pymodbus", "asyncua"):
        logging.getLogger(library).setLevel(logging.INFO if verbose else logging.CRITICAL)


def run(coro: object) -> None:
    """Run a command's coroutine; a Tiangong error is printed with its reason (exit 1)."""
    from tiangong.data.errors import DataError  # noqa: PLC0415
    from tiangong.edge.errors import EdgeError  # noqa: PLC0415 - keep --help fast
    from tiangong.identity.errors import IdentityError  # noqa: PLC0415
    from tiangong.network.errors import NetworkError  # noqa: PLC0415
    from tiangong.platform.errors import PlatformError  # noqa: PLC0415
    from tiangong.sim.errors import SimError  # noqa: PLC0415

    try:
        try:
            import uvloop  # noqa: PLC0415

            uvloop.run(coro)  # type: ignore[arg-type]
        except ImportError:  # pragma: no cover - Windows
            asyncio.run(coro)  # type: ignore[arg-type]
    except (PlatformError, NetworkError, EdgeError, SimError, IdentityError, DataError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BaseExceptionGroup as group:
        # A service's task failed on start (a taken port...): say why, not a traceback.
        known, _rest = group.split(
            (PlatformError, NetworkError, EdgeError, SimError, IdentityError, DataError)
        )
        if known is None:
            raise
        for leaf in _leaves(known):
            err.print(f"[bold red]error:[/bold red] {leaf}")
        raise typer.Exit(1) from group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@app.callback(invoke_without_command=True)
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Tiangong: run ``tiangong up`` for the whole platform with a simulated factory."""
    if version:
        console.print(f"tiangong {__version__}")
        raise typer.Exit


@app.command()
def up(
    data_dir: DataDir = Path(".tiangong"),
    port: Annotated[int, typer.Option(help="Dashboard and REST API port.")] = 8080,
    host: Annotated[str, typer.Option(help="Dashboard and REST API address.")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="Embedded MQTT broker port.")] = 1884,
    mqtt_tls_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="The embedded broker's TLS port (client certificates from the tenant CA); 0: off.",
        ),
    ] = 8884,
    modbus_port: Annotated[
        int, typer.Option(help="The simulated plant's Modbus TCP port (more on the following).")
    ] = 5020,
    opcua_port: Annotated[int, typer.Option(help="The simulated plant's OPC UA port.")] = 4840,
    devices: Annotated[int, typer.Option(min=1, max=5000, help="Simulated devices.")] = 50,
    id_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65530,
            help="Identifier resolver port (UDP+TCP); the root, secondary, factory and supplier"
            " nodes take the next four. 0: free ports.",
        ),
    ] = 2650,
    id_http_port: Annotated[
        int, typer.Option(min=0, max=65535, help="The resolver's REST API port (0: a free one).")
    ] = 8650,
    identifiers: Annotated[
        bool, typer.Option(help="Run the identifier nodes and publish identifiers.")
    ] = True,
    batch_interval: Annotated[
        float, typer.Option(min=1.0, help="Seconds between product batches of each line.")
    ] = 60.0,
    datacenter: Annotated[
        bool,
        typer.Option(help="Run the data centers (national view from this factory and others)."),
    ] = True,
    datacenter_interval: Annotated[
        float, typer.Option(min=1.0, help="Seconds between the factory's indicator reports.")
    ] = 30.0,
    duration: Annotated[
        float | None,
        typer.Option(help="Run this many seconds, then stop cleanly (default: until Ctrl-C)."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run everything in one process: simulated plant, edge gateways, broker, platform.

    The plant speaks Modbus TCP and OPC UA; one edge gateway per site reads it and forwards to
    the embedded MQTT broker, where the platform stores the data and serves the dashboard.
    Identifier nodes (a root 88, a secondary 88.100, the factory 88.100.1 and a supplier
    88.100.2) and a resolver run beside it: every device, and every batch the lines make, gets
    an identifier (try `tiangong id resolve` and `tiangong id trace` as the banner shows).
    Regional, industry and national data centers receive the factory's indicator reports and
    those of generated enterprises: the dashboard's National data and Energy pages.

    On first start an admin token is generated, written to DATA_DIR/admin-token (mode 0600)
    and printed with the dashboard URL. A restart with the same --data-dir keeps all data.
    """
    from tiangong.up import LocalStack, run_local_stack  # noqa: PLC0415

    logging_setup(verbose)
    stack = LocalStack(
        data_dir=data_dir,
        http_host=host,
        http_port=port,
        mqtt_port=mqtt_port,
        mqtt_tls_port=mqtt_tls_port or None,
        modbus_port=modbus_port,
        opcua_port=opcua_port,
        devices=devices,
        duration=duration,
        id_port=id_port if identifiers else None,
        id_http_port=id_http_port,
        batch_interval=batch_interval,
        datacenter=datacenter,
        datacenter_interval=datacenter_interval,
    )
    run(run_local_stack(stack, console))


@app.command("platform")
def platform_command(
    data_dir: DataDir = Path(".tiangong"),
    port: Annotated[int, typer.Option(help="REST API and dashboard port.")] = 8080,
    host: Annotated[str, typer.Option(help="REST API and dashboard address.")] = "127.0.0.1",
    verbose: Verbose = False,
) -> None:
    """Run the platform alone against an external broker and store.

    Configure it with TIANGONG_* environment variables (see docs/operations.md), e.g.
    TIANGONG_MQTT_HOST, TIANGONG_MQTT_PORT, TIANGONG_MQTT_USERNAME, TIANGONG_MQTT_PASSWORD,
    TIANGONG_STORE=postgres, TIANGONG_POSTGRES_DSN, TIANGONG_DATABASE_URL.
    """
    from tiangong.platform.service import Platform  # noqa: PLC0415
    from tiangong.platform.settings import PlatformSettings  # noqa: PLC0415

    logging_setup(verbose)

    async def serve() -> None:
        settings = PlatformSettings.load(data_dir=data_dir, http_host=host, http_port=port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal  # noqa: PLC0415

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Platform(settings) as platform:
            url = f"http://{host}:{platform.http_port}/"
            console.print(f"Tiangong platform at {url} (store: {platform.store.name})")
            if platform.admin_token_generated:
                console.print(
                    f"generated admin token written to {data_dir / 'admin-token'} (mode 0600)"
                )
            await stop.wait()

    run(serve())


@app.command()
def sim(
    data_dir: DataDir = Path(".tiangong"),
    host: Annotated[str, typer.Option(help="Address both servers listen on.")] = "127.0.0.1",
    modbus_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Modbus TCP port (0: any free port).")
    ] = 5020,
    opcua_port: Annotated[
        int, typer.Option(min=0, max=65535, help="OPC UA port (0: any free port).")
    ] = 4840,
    devices: Annotated[int, typer.Option(min=1, max=5000, help="Simulated devices.")] = 50,
    time_scale: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Wear acceleration: 3600 turns an hour of wear (and of repair) into a second.",
        ),
    ] = 1.0,
    write_edge_config: Annotated[
        Path | None,
        typer.Option(
            "--write-edge-config",
            metavar="PATH",
            help="Write the edge gateway configuration for this plant (TOML) to PATH.",
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(help="Run this many seconds, then stop cleanly (default: until Ctrl-C)."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run the simulated factory on industrial protocols: Modbus TCP and OPC UA.

    CNC machines, compressors and meters answer on Modbus TCP (one unit id each); pumps and
    assembly lines are in the OPC UA server's address space (Objects/Factory/<site>/<device>),
    with and without Basic256Sha256 security. The OPC UA certificates, and a client certificate
    for the edge gateway, are generated into DATA_DIR/opcua on first start. --write-edge-config
    writes the gateway configuration that reads this plant.
    """
    from tiangong.sim.plant import SimulatedPlant, run_plant  # noqa: PLC0415 - keep --help fast

    logging_setup(verbose)
    plant = SimulatedPlant(
        devices=devices,
        host=host,
        modbus_port=modbus_port,
        opcua_port=opcua_port,
        data_dir=data_dir,
        time_scale=time_scale,
    )
    run(run_plant(plant, console, duration=duration, edge_config_path=write_edge_config))


@broker_app.command("mosquitto-files")
def mosquitto_files(
    out: Annotated[Path, typer.Option(help="Directory to write passwd and acl into.")],
    data_dir: DataDir = Path(".tiangong"),
    platform_user: Annotated[
        str, typer.Option(help="Broker user name of the platform's ingest connection.")
    ] = "tiangong-platform",
    tls_port: Annotated[
        int | None,
        typer.Option(help="Also write a TLS listener on this port for device certificates."),
    ] = None,
) -> None:
    """Write a Mosquitto password file and ACL for every registered device.

    The platform's user gets no password entry (add it with mosquitto_passwd); devices get
    theirs from the registry (the stored hashes are already in Mosquitto's format). With
    --tls-port, also the TLS files (tenant CA bundle, CRLs, server certificate), a listener
    block to include (tls-listener.conf) and ACL entries for each device's certificate
    identity. Reload Mosquitto (SIGHUP) after writing; write again after every revocation and
    at least every 30 minutes (the CRLs are valid for an hour), or let a running platform do
    both: TIANGONG_MOSQUITTO_FILES (docs/security.md).
    """
    from tiangong.platform.certificates import PlatformCertificates  # noqa: PLC0415
    from tiangong.platform.database import Database  # noqa: PLC0415
    from tiangong.platform.mosquitto_keeper import (  # noqa: PLC0415
        password_identities,
        render_mosquitto_files,
        with_certificates,
        write_mosquitto_files,
    )
    from tiangong.platform.registry import DeviceRegistry  # noqa: PLC0415
    from tiangong.platform.settings import PlatformSettings  # noqa: PLC0415

    logging_setup(verbose=False)

    async def write() -> int:
        settings = PlatformSettings.load(data_dir=data_dir)
        db = Database(url=settings.metadata_url())
        await db.open()
        certificates = PlatformCertificates(data_dir) if tls_port is not None else None
        try:
            registry = DeviceRegistry(db)
            await registry.refresh()
            identities = with_certificates(password_identities(registry), registry, certificates)
            files = render_mosquitto_files(identities, service_users=[platform_user])
            write_mosquitto_files(out, files, certificates, tls_port=tls_port)
        finally:
            if certificates is not None:
                certificates.close()
            await db.close()
        return files.devices

    try:
        count = asyncio.run(write())
    except ValueError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"wrote {out / 'passwd'} and {out / 'acl'} for {count} devices")
    if tls_port is not None:
        console.print(f"TLS listener: include {out / 'tls-listener.conf'} in mosquitto.conf")


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"tiangong {__version__}")


def main() -> None:
    """Entry point of the ``tiangong`` script."""
    try:
        app()
    except BrokenPipeError:  # pragma: no cover - `tiangong ... | head`
        sys.exit(0)

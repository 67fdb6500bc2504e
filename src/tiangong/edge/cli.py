"""``tiangong edge --config edge.toml``: run an edge gateway."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tiangong.edge.config import EdgeConfig, load_config
from tiangong.edge.errors import EdgeConfigError

__all__ = ["edge_app", "edge_command", "gateway_password"]


def gateway_password(config: EdgeConfig) -> str:
    """The gateway's MQTT password, from the environment variable or file the config names.

    Raises:
        EdgeConfigError: neither is configured, or it is empty or unreadable.
    """
    uplink = config.uplink
    if uplink.password_env:
        value = os.environ.get(uplink.password_env, "")
        if not value:
            raise EdgeConfigError(
                "edge config",
                None,
                f"uplink.password_env: environment variable {uplink.password_env} is not set",
            )
        return value
    if uplink.password_file:
        try:
            value = uplink.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise EdgeConfigError(
                "edge config", None, f"uplink.password_file: cannot read it: {exc.strerror}"
            ) from exc
        if not value:
            raise EdgeConfigError("edge config", None, "uplink.password_file is empty")
        return value
    raise EdgeConfigError(
        "edge config",
        None,
        "uplink: set password_env or password_file (the secret issued when the gateway was"
        " registered on the platform)",
    )


async def _serve(config: EdgeConfig, password: str, console: Console) -> None:
    from tiangong.edge.gateway import EdgeGateway  # noqa: PLC0415 - keep --help fast

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with EdgeGateway(config, password=password) as gateway:
        # Everything built at start (configuration, adapters, libraries) lives as long as the
        # process: moving it out of the collector's reach keeps full collections, which
        # stall polling, short (docs/benchmarks.md: loop lag and CPU with and without).
        gc.freeze()
        uplink = config.uplink
        console.print(
            f"edge gateway [bold]{config.gateway.id}[/bold]: {len(config.devices)} devices,"
            f" uplink {uplink.host}:{uplink.port} ({uplink.protocol}),"
            f" buffer {gateway.buffer.path}"
        )
        if gateway.http_port is not None:
            console.print(f"push endpoint http://{config.http.host}:{gateway.http_port}/push/<id>")
        await stop.wait()
        status = await gateway.status()
        console.print(
            f"stopping: {status['points_in']:,} points read, {status['buffer']['points']:,}"
            " waiting in the buffer for the next start"
        )


edge_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode="rich",
)


@edge_app.callback()
def edge_command(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="The gateway's TOML configuration.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
) -> None:
    """Run an edge gateway: read the devices in the configuration, buffer, forward upstream.

    Every value read is written to the local buffer before it is sent, so nothing is lost
    while the uplink is down or across a restart. See docs/edge.md.
    [bold]tiangong edge browse[/bold] lists an OPC UA server's variables for the configuration.
    """
    from tiangong.cli import console, err, logging_setup, run  # noqa: PLC0415 - avoid a cycle

    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        err.print(
            "[bold red]error:[/bold red] give the gateway's configuration with --config"
            " (or a command: tiangong edge --help)"
        )
        raise typer.Exit(2)
    logging_setup(verbose)
    try:
        loaded = load_config(config)
        password = gateway_password(loaded)
    except EdgeConfigError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(2) from exc
    run(_serve(loaded, password, console))


@edge_app.command("browse")
def browse_command(
    endpoint: Annotated[str, typer.Argument(help="The server, e.g. opc.tcp://10.0.3.7:4840/.")],
    depth: Annotated[int, typer.Option(min=1, max=20, help="Object levels to descend.")] = 6,
    security_policy: Annotated[
        str, typer.Option(help="None or Basic256Sha256.", case_sensitive=False)
    ] = "None",
    security_mode: Annotated[str, typer.Option(help="None, Sign or SignAndEncrypt.")] = "None",
    certificate: Annotated[
        Path | None, typer.Option(help="Our certificate (DER or PEM), for a secured channel.")
    ] = None,
    private_key: Annotated[Path | None, typer.Option(help="Its private key.")] = None,
    server_certificate: Annotated[
        Path | None, typer.Option(help="The server's certificate, to trust only it.")
    ] = None,
    toml: Annotated[
        bool, typer.Option("--toml", help="Print [[devices.points]] entries to paste instead.")
    ] = False,
) -> None:
    """List the variables of an OPC UA server: node id, type, unit, writable, value."""
    from tiangong.cli import console, logging_setup, run  # noqa: PLC0415 - avoid a cycle

    logging_setup(verbose=False)

    run(
        _browse(
            endpoint,
            depth=depth,
            security=(security_policy, security_mode, certificate, private_key, server_certificate),
            toml=toml,
            console=console,
        )
    )


async def _browse(
    endpoint: str,
    *,
    depth: int,
    security: tuple[str, str, Path | None, Path | None, Path | None],
    toml: bool,
    console: Console,
) -> None:
    from asyncua.ua.uaerrors import UaError  # noqa: PLC0415 - keep --help fast

    from tiangong.edge.adapters.opcua import open_session  # noqa: PLC0415
    from tiangong.edge.browse import browse_variables, points_toml  # noqa: PLC0415

    policy, mode, certificate, private_key, server_certificate = security
    if (policy != "None") and (certificate is None or private_key is None):
        raise EdgeConfigError("browse", None, f"{policy} needs --certificate and --private-key")
    try:
        client = await open_session(
            endpoint,
            name="browse",
            timeout_s=5.0,
            security_policy=policy,
            security_mode=mode,
            certificate=certificate,
            private_key=private_key,
            server_certificate=server_certificate,
        )
    except (OSError, TimeoutError) as exc:
        raise EdgeConfigError("browse", None, f"cannot reach {endpoint}: {exc}") from exc
    except Exception as exc:  # asyncua raises plain exceptions for certificate problems
        raise EdgeConfigError("browse", None, f"{endpoint} refused the session: {exc}") from exc
    try:
        variables = await browse_variables(client, max_depth=depth)
    except (UaError, OSError, TimeoutError) as exc:
        raise EdgeConfigError("browse", None, f"browsing {endpoint} failed: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    if toml:
        console.print(points_toml(variables), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(box=None)
    for column in ("path", "node", "type", "unit", "writable", "value"):
        table.add_column(column, overflow="fold")
    for variable in variables:
        table.add_row(
            "/".join(variable.path),
            variable.node_id,
            variable.data_type,
            variable.unit or "",
            "yes" if variable.writable else "",
            repr(variable.value)[:40],
        )
    console.print(table)
    console.print(f"{len(variables)} variables under Objects")

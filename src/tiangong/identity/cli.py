"""``tiangong idnode`` (run a node) and ``tiangong id ...`` (resolve, write, trace identifiers)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tiangong.identity.client import ServerAddress
from tiangong.identity.handle.values import HandleValue, ValueReference
from tiangong.identity.node.service import NodeRole

id_app = typer.Typer(
    help="Identifiers (标识解析): resolve, register, trace across nodes.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

# Names of environment variables, not secrets.
ADMIN_SECRET_ENV = "TIANGONG_ID_ADMIN_SECRET"  # noqa: S105
PARENT_SECRET_ENV = "TIANGONG_ID_PARENT_SECRET"  # noqa: S105


def _address(text: str) -> ServerAddress:
    try:
        return ServerAddress.parse(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: expected host:port, e.g. 127.0.0.1:2641") from exc


def _reference(text: str) -> ValueReference:
    from tiangong.identity.errors import HandleSyntaxError  # noqa: PLC0415

    try:
        return ValueReference.parse(text)
    except HandleSyntaxError as exc:
        raise typer.BadParameter(str(exc)) from exc


def idnode_command(
    role: Annotated[
        NodeRole,
        typer.Option(
            help="root: national top-level node; secondary: industry/region node; enterprise:"
            " holds records; resolver: recursive entry point."
        ),
    ],
    prefix: Annotated[
        str | None, typer.Option(help="The prefix this node is homed for, e.g. 88.100.1.")
    ] = None,
    port: Annotated[int, typer.Option(help="Binary Handle protocol port (UDP and TCP).")] = 2641,
    http_port: Annotated[
        int | None, typer.Option(help="REST API port (Handle.Net-compatible /api/handles).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    advertise: Annotated[
        str | None, typer.Option(help="IP address other nodes reach this one at (HS_SITE).")
    ] = None,
    admin_secret: Annotated[
        str | None,
        typer.Option(
            envvar=ADMIN_SECRET_ENV,
            help="Secret key of the node's first admin, 300:0.NA/<prefix> (required; no default).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="Where the embedded record store lives.")] = Path(
        ".tiangong/idnode"
    ),
    store: Annotated[
        str | None,
        typer.Option(help="postgresql://... to keep records in PostgreSQL instead."),
    ] = None,
    parent: Annotated[
        list[str] | None,
        typer.Option(
            help="host:port of the parent node (repeat for mirrors): where this node registers"
            " its prefix, or where a resolver starts."
        ),
    ] = None,
    parent_admin: Annotated[
        str | None,
        typer.Option(
            help="index:handle this node authenticates as at the parent, e.g. 300:0.NA/88.100;"
            f" its secret comes from {PARENT_SECRET_ENV}."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Processes sharing the port (SO_REUSEPORT), e.g. one per core.",
        ),
    ] = 1,
    worker: Annotated[bool, typer.Option(hidden=True)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
) -> None:
    """Run an identifier node (Handle protocol over UDP+TCP, REST over HTTP).

    Example hierarchy on one machine:

      tiangong idnode --role root --prefix 88 --port 2641 --admin-secret S1

      TIANGONG_ID_PARENT_SECRET=S1 tiangong idnode --role secondary --prefix 88.100
      --port 2642 --admin-secret S2 --parent 127.0.0.1:2641 --parent-admin 300:0.NA/88

      tiangong idnode --role resolver --port 2640 --http-port 8000 --parent 127.0.0.1:2641
    """
    from tiangong.cli import logging_setup, run  # noqa: PLC0415
    from tiangong.identity.node.runner import NodeOptions, running_node  # noqa: PLC0415

    logging_setup(verbose)
    options = NodeOptions(
        role=role,
        prefix=prefix,
        host=host,
        port=port,
        http_port=http_port,
        admin_secret=admin_secret.encode() if admin_secret else None,
        data_dir=data_dir,
        store_url=store,
        parents=[_address(p) for p in parent or []],
        parent_admin=_reference(parent_admin) if parent_admin else None,
        parent_secret=os.environ.get(PARENT_SECRET_ENV, "").encode() or None,
        advertise=advertise,
        workers=workers,
        worker=worker,
    )
    if workers > 1 and port == 0:
        raise typer.BadParameter("--workers needs a fixed --port (workers share it)")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running_node(options) as running:
            where = f"{running.address} (udp+tcp)"
            if running.server.http_port:
                where += f", http://{options.host}:{running.server.http_port}/api/handles/"
            if worker:
                await stop.wait()
                return
            note = f", {workers} workers" if workers > 1 else ""
            console.print(f"[bold]{role.value}[/bold] node {prefix or ''} on {where}{note}")
            if running.admin is not None:
                console.print(f"administrator: {running.admin}")
            await stop.wait()

    run(serve())


@id_app.command("secret")
def secret_command() -> None:
    """Print a new random secret for --admin-secret (32 bytes, URL-safe base64)."""
    console.print(secrets.token_urlsafe(32))


@id_app.command("resolve")
def resolve_command(
    handle: Annotated[str, typer.Argument(help="The identifier, e.g. 88.100.1/PUMP-00042.")],
    server: Annotated[
        str, typer.Option(help="host:port of a resolver (or any node).")
    ] = "127.0.0.1:2641",
    index: Annotated[list[int] | None, typer.Option(help="Only these value indexes.")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Only these value types.")
    ] = None,
    tcp: Annotated[bool, typer.Option(help="Use TCP instead of UDP.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print Handle REST JSON.")] = False,
) -> None:
    """Resolve an identifier and print its values."""
    from tiangong.cli import run  # noqa: PLC0415
    from tiangong.identity.client import HandleClient, error_text  # noqa: PLC0415
    from tiangong.identity.handle.json_format import record_to_json  # noqa: PLC0415
    from tiangong.identity.handle.messages import ResolutionResponse  # noqa: PLC0415

    address = _address(server)
    if tcp:
        address = ServerAddress(address.host, address.port, "tcp")

    async def go() -> None:
        answer = await HandleClient().resolve(
            address, handle, indexes=tuple(index or ()), types=tuple(type_ or ())
        )
        body = answer.body
        if not isinstance(body, ResolutionResponse):
            err.print(f"[bold red]error:[/bold red] {handle}: {error_text(answer)}")
            raise typer.Exit(1)
        from tiangong.identity.handle.values import HandleRecord  # noqa: PLC0415

        record = HandleRecord(body.handle, body.values)
        if as_json:
            console.print_json(orjson.dumps(record_to_json(record)).decode())
            return
        table = Table(title=body.handle)
        for column in ("index", "type", "data", "ttl"):
            table.add_column(column)
        for value in sorted(body.values, key=lambda v: v.index):
            table.add_row(str(value.index), value.type, _show(value), str(value.ttl))
        console.print(table)

    run(go())


def _show(value: HandleValue) -> str:
    """A value's data as people read it: text, or the REST JSON form of structured types."""
    from tiangong.identity.errors import CodecError  # noqa: PLC0415
    from tiangong.identity.handle.json_format import value_to_json  # noqa: PLC0415

    try:
        data = value_to_json(value)["data"]
    except CodecError:
        return value.data.hex()
    if isinstance(data, dict) and data.get("format") == "string":
        return str(data.get("value", ""))
    if isinstance(data, dict) and data.get("format") in ("base64", "hex"):
        return value.data.hex()
    return orjson.dumps(data.get("value") if isinstance(data, dict) else data).decode()

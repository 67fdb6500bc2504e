"""``tiangong idnode`` (run a node) and ``tiangong id ...`` (resolve, write, trace identifiers)."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import signal
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.handle.messages import (
    Body,
    HandleRequest,
    ListResponse,
    Message,
    RemoveValuesRequest,
    ValuesRequest,
)
from tiangong.identity.handle.protocol import OpCode, OpFlag, ResponseCode
from tiangong.identity.handle.values import HandleValue, ValueReference
from tiangong.identity.node.service import NodeRole
from tiangong.identity.store import open_store
from tiangong.identity.trace import trace_command
from tiangong.identity.trust_cli import trust_app

id_app = typer.Typer(
    help="Identifiers (标识解析): resolve, register, trace across nodes.", no_args_is_help=True
)
id_app.command("trace")(trace_command)
id_app.add_typer(trust_app, name="trust")
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
        typer.Option(
            help="postgresql://... (or libpq 'host=... dbname=...') to keep records in"
            " PostgreSQL instead."
        ),
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
    trust_dir: Annotated[
        Path | None,
        typer.Option(
            help="Trust directory (tiangong id trust keygen/install): sign every record written"
            " here and publish this node's certificate."
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
    rate_limit: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="TIANGONG_ID_RATE_LIMIT",
            help="Requests per second per client address (UDP, TCP and HTTP together);"
            " 0: no limit. Over it: SERVER_TOO_BUSY (3), HTTP 429.",
        ),
    ] = 5000.0,
    burst: Annotated[
        float,
        typer.Option(
            min=1, envvar="TIANGONG_ID_BURST", help="Requests a client address may send at once."
        ),
    ] = 20000.0,
    rate_exempt: Annotated[
        list[str] | None,
        typer.Option(
            help="An IP address never rate limited (repeat): a parent, child or resolver."
        ),
    ] = None,
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
        trust_dir=trust_dir,
        workers=workers,
        worker=worker,
        rate_limit=rate_limit,
        burst=burst,
        rate_exempt=frozenset(rate_exempt or ()),
    )
    if workers > 1 and port == 0:
        raise typer.BadParameter("--workers needs a fixed --port (workers share it)")
    if store is not None:
        try:
            open_store(store)  # only checks what it names; nothing is opened yet
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--store") from exc

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running_node(options) as running:
            # Everything built at start (codecs, caches, the app) is long-lived: keep it out of
            # the collector's way, so its pauses stay short under load.
            gc.freeze()
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
    verify: Annotated[
        bool,
        typer.Option(help="Check the record's signature and certificate chain up to --trust-root."),
    ] = False,
    trust_root: Annotated[
        str | None,
        typer.Option(
            envvar="TIANGONG_ID_TRUST_ROOT", help="index:handle of the trust root, e.g. 300:88/0.0."
        ),
    ] = None,
    trust_key: Annotated[
        Path | None,
        typer.Option(envvar="TIANGONG_ID_TRUST_KEY", help="The trust root's public key file."),
    ] = None,
) -> None:
    """Resolve an identifier and print its values (with --verify, whether they are authentic)."""
    from tiangong.cli import run  # noqa: PLC0415
    from tiangong.identity.client import error_text  # noqa: PLC0415
    from tiangong.identity.handle.json_format import record_to_json  # noqa: PLC0415
    from tiangong.identity.handle.messages import ResolutionResponse  # noqa: PLC0415

    address = _address(server)
    if tcp:
        address = ServerAddress(address.host, address.port, "tcp")

    if verify and (trust_root is None or trust_key is None):
        raise typer.BadParameter("--verify needs --trust-root and --trust-key")

    async def go() -> None:
        if verify:
            await _verify(address, handle, _reference(trust_root or ""), trust_key, as_json)
            return
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


async def _verify(
    server: ServerAddress, handle: str, root: ValueReference, key_file: Path | None, as_json: bool
) -> None:
    from tiangong.identity.resolver import Resolver  # noqa: PLC0415
    from tiangong.identity.signing import read_public_key_file, verify_resolved  # noqa: PLC0415
    from tiangong.identity.trust_cli import print_report, verification_json  # noqa: PLC0415

    assert key_file is not None
    resolver = Resolver([server])
    record = await resolver.resolve(handle)
    result = await verify_resolved(
        resolver, record, trust_root=root, trust_root_key_data=read_public_key_file(key_file)
    )
    if as_json:
        console.print_json(orjson.dumps(verification_json(handle, result)).decode())
    else:
        print_report(handle, result, out=console)
    if not result.valid:
        raise typer.Exit(1)


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


SECRET_ENV = "TIANGONG_ID_SECRET"  # noqa: S105 - the name of a variable, not a secret


def _admin_client(admin: str) -> HandleClient:
    from tiangong.identity.auth import AdminIdentity  # noqa: PLC0415

    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        err.print(
            f"[bold red]error:[/bold red] set {SECRET_ENV} to the secret of {admin}"
            " (the --admin-secret of its node for 300:0.NA/<prefix>)"
        )
        raise typer.Exit(2)
    return HandleClient(identity=AdminIdentity(_reference(admin), secret=secret.encode()))


def _parse_value(text: str) -> HandleValue:
    """``INDEX:TYPE=DATA``, e.g. ``1:URL=https://plant.example/pumps/42``."""
    index_text, sep, rest = text.partition(":")
    type_, eq, data = rest.partition("=")
    if not sep or not eq or not index_text.isdigit() or not type_:
        raise typer.BadParameter(
            f"{text!r}: expected INDEX:TYPE=DATA, e.g. 1:URL=https://plant.example/pumps/42"
        )
    return HandleValue(index=int(index_text), type=type_, data=data.encode())


async def _admin_request(
    client: HandleClient, server: str, op: OpCode, body: Body, flags: OpFlag = OpFlag.NONE
) -> Message:
    from tiangong.identity.client import error_text  # noqa: PLC0415

    address = _address(server)
    answer = await client.send(
        ServerAddress(address.host, address.port, "tcp"), client.message(op, body, flags=flags)
    )
    if answer.header.response is not ResponseCode.SUCCESS:
        err.print(f"[bold red]error:[/bold red] {error_text(answer)}")
        raise typer.Exit(1)
    return answer


ServerOption = Annotated[
    str, typer.Option(help="host:port of the node that holds the prefix (its binary port).")
]
AdminOption = Annotated[
    str,
    typer.Option(
        help=f"index:handle to authenticate as, e.g. 300:0.NA/88.100.1; secret from {SECRET_ENV}."
    ),
]


@id_app.command("put")
def put_command(
    handle: Annotated[str, typer.Argument(help="The identifier to write.")],
    value: Annotated[
        list[str],
        typer.Option(help="INDEX:TYPE=DATA, repeatable, e.g. 1:URL=https://plant/p42."),
    ],
    server: ServerOption = "127.0.0.1:2641",
    admin: AdminOption = "",
    replace: Annotated[
        bool, typer.Option(help="Replace the whole record instead of adding/changing values.")
    ] = False,
) -> None:
    """Create an identifier, or add/change values of an existing one."""
    from tiangong.cli import run  # noqa: PLC0415

    values = tuple(_parse_value(v) for v in value)
    client = _admin_client(admin or _default_admin(handle))

    async def go() -> None:
        answer = await HandleClient().resolve(_address(server), handle)
        exists = answer.header.response is ResponseCode.SUCCESS
        if exists and not replace:
            await _admin_request(
                client, server, OpCode.ADD_VALUE, ValuesRequest(handle, values), OpFlag.OVRW
            )
            console.print(f"updated {handle}")
            return
        flags = OpFlag.OVRW if replace else OpFlag.NONE
        await _admin_request(
            client, server, OpCode.CREATE_HANDLE, ValuesRequest(handle, values), flags
        )
        console.print(f"{'replaced' if exists else 'created'} {handle}")

    run(go())


@id_app.command("delete")
def delete_command(
    handle: Annotated[str, typer.Argument(help="The identifier to delete (or change).")],
    index: Annotated[
        list[int] | None, typer.Option(help="Only remove these value indexes.")
    ] = None,
    server: ServerOption = "127.0.0.1:2641",
    admin: AdminOption = "",
) -> None:
    """Delete an identifier, or only some of its values."""
    from tiangong.cli import run  # noqa: PLC0415

    client = _admin_client(admin or _default_admin(handle))

    async def go() -> None:
        if index:
            body: Body = RemoveValuesRequest(handle, tuple(index))
            await _admin_request(client, server, OpCode.REMOVE_VALUE, body)
            console.print(f"removed {', '.join(map(str, index))} from {handle}")
        else:
            await _admin_request(client, server, OpCode.DELETE_HANDLE, HandleRequest(handle))
            console.print(f"deleted {handle}")

    run(go())


@id_app.command("list")
def list_command(
    prefix: Annotated[str, typer.Argument(help="The prefix, e.g. 88.100.1.")],
    server: ServerOption = "127.0.0.1:2641",
    admin: AdminOption = "",
) -> None:
    """List the identifiers under a prefix (needs LIST_HANDLES; first 1000)."""
    from tiangong.cli import run  # noqa: PLC0415

    client = _admin_client(admin or f"300:0.NA/{prefix}")

    async def go() -> None:
        answer = await _admin_request(
            client, server, OpCode.LIST_HANDLES, HandleRequest(f"0.NA/{prefix}")
        )
        body = answer.body
        handles = body.handles if isinstance(body, ListResponse) else ()
        for handle in handles:
            console.print(handle)

    run(go())


def _default_admin(handle: str) -> str:
    prefix = handle.split("/", 1)[0] if not handle.upper().startswith("0.NA/") else ""
    if not prefix:
        raise typer.BadParameter("give --admin for a prefix handle (0.NA/...)")
    return f"300:0.NA/{prefix}"

"""``tiangong edge --config edge.toml``: run a gateway; ``enrol``/``rotate``: its certificate."""

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

__all__ = ["edge_app", "edge_command", "enrol_device", "gateway_password", "rotate_device"]


def gateway_password(config: EdgeConfig) -> str | None:
    """The gateway's MQTT password, from the environment variable or file the config names.

    ``None`` when the gateway logs in with a client certificate (``[uplink.tls]``) and no
    password is configured.

    Raises:
        EdgeConfigError: neither is configured (nor TLS), or it is empty or unreadable.
    """
    uplink = config.uplink
    if uplink.tls is not None and not (uplink.password_env or uplink.password_file):
        return None
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
        " registered on the platform), or [uplink.tls] with a certificate from"
        " `tiangong edge enrol`",
    )


async def _serve(config: EdgeConfig, password: str | None, console: Console) -> None:
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


# -- certificates ---------------------------------------------------------------------------------


def _post(url: str, path: str, body: dict[str, str], ca_file: Path | None) -> dict[str, object]:
    """POST to the platform API; errors become ``EdgeConfigError`` with the platform's reason."""
    import httpx  # noqa: PLC0415 - keep --help fast

    verify: str | bool = str(ca_file) if ca_file is not None else True
    try:
        response = httpx.post(url.rstrip("/") + path, json=body, timeout=30, verify=verify)
    except httpx.HTTPError as exc:
        raise EdgeConfigError(path, None, f"cannot reach {url}: {exc}") from exc
    if response.status_code != httpx.codes.CREATED:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        if isinstance(detail, dict):
            detail = f"{detail.get('reason')}: {detail.get('message')}"
        raise EdgeConfigError(path, None, f"refused ({response.status_code}): {detail}")
    result: dict[str, object] = response.json()
    return result


def _write_identity(out: Path, key_pem: bytes, issued: dict[str, object]) -> dict[str, Path]:
    from tiangong.security.credentials import write_secret_file  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "key": out / "device-key.pem",
        "cert": out / "device.pem",
        "ca": out / "server-ca.pem",
        "tenant_ca": out / "tenant-ca.pem",
    }
    # The new key is written before the certificate that names it, so an interrupted run never
    # leaves a certificate without its key.
    write_secret_file(paths["key"], key_pem.decode("ascii"))
    paths["cert"].write_text(str(issued["certificate"]), encoding="ascii")
    paths["ca"].write_text(str(issued["server_ca_certificate"]), encoding="ascii")
    paths["tenant_ca"].write_text(str(issued["ca_certificate"]), encoding="ascii")
    return paths


def enrol_device(
    url: str, token: str, device: str, out: Path, *, ca_file: Path | None = None
) -> dict[str, Path]:
    """Generate a key and CSR, enrol with the one-time token, write key (0600) and certificate.

    Returns:
        The files written: ``key``, ``cert``, ``ca`` (the broker's server CA), ``tenant_ca``.

    Raises:
        EdgeConfigError: the platform cannot be reached or refuses (with its reason).
    """
    from tiangong.security.ca import generate_device_key_and_csr  # noqa: PLC0415

    key_pem, csr_pem = generate_device_key_and_csr(device)
    issued = _post(url, "/api/v1/enrol", {"token": token, "csr": csr_pem.decode("ascii")}, ca_file)
    return _write_identity(out, key_pem, issued)


def rotate_device(
    url: str, cert: Path, key: Path, out: Path, *, ca_file: Path | None = None
) -> dict[str, Path]:
    """Rotate: a new key and CSR, signed by the current key as proof, for a new certificate.

    Raises:
        EdgeConfigError: the files cannot be read, or the platform refuses (with its reason).
    """
    import base64  # noqa: PLC0415

    from tiangong.security.ca import (  # noqa: PLC0415
        generate_device_key_and_csr,
        sign_rotation_request,
    )

    try:
        current_cert = cert.read_bytes()
        current_key = key.read_bytes()
    except OSError as exc:
        raise EdgeConfigError(str(exc.filename), None, f"cannot read: {exc.strerror}") from exc
    from cryptography import x509  # noqa: PLC0415

    try:
        subject = x509.load_pem_x509_certificate(current_cert).subject
        device = str(subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
        new_key, csr_pem = generate_device_key_and_csr(device)
        signature = sign_rotation_request(current_key, csr_pem)
    except (ValueError, IndexError) as exc:
        raise EdgeConfigError(str(cert), None, f"not a device certificate and key: {exc}") from exc
    issued = _post(
        url,
        "/api/v1/certificates/rotate",
        {
            "certificate": current_cert.decode("ascii"),
            "csr": csr_pem.decode("ascii"),
            "signature": base64.b64encode(signature).decode("ascii"),
        },
        ca_file,
    )
    return _write_identity(out, new_key, issued)


PlatformUrl = Annotated[
    str, typer.Option("--url", help="The platform, e.g. https://iot.example:8080.")
]
ApiCaFile = Annotated[
    Path | None,
    typer.Option(
        "--api-ca", help="CA of the platform's HTTPS certificate (default: the system's)."
    ),
]


def _print_identity(paths: dict[str, Path], console: Console) -> None:
    console.print(f"wrote {paths['key']} (0600), {paths['cert']} and {paths['ca']}")
    console.print("add to the gateway configuration (the broker's TLS port in [uplink] port):")
    console.print(
        f'[uplink.tls]\nca = "{paths["ca"]}"\ncert = "{paths["cert"]}"\nkey = "{paths["key"]}"',
        markup=False,
        highlight=False,
    )


@edge_app.command("enrol")
def enrol_command(
    url: PlatformUrl,
    token: Annotated[str, typer.Option(help="The one-time enrolment token from the platform.")],
    device: Annotated[str, typer.Option(help="This device's id (the certificate's CN).")],
    out: Annotated[Path, typer.Option(help="Directory for the key and certificates.")],
    api_ca: ApiCaFile = None,
) -> None:
    """Enrol this device for a client certificate: the key is generated here and never leaves."""
    from tiangong.cli import console, err  # noqa: PLC0415 - avoid a cycle

    try:
        paths = enrol_device(url, token, device, out, ca_file=api_ca)
    except EdgeConfigError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    _print_identity(paths, console)


@edge_app.command("rotate")
def rotate_command(
    url: PlatformUrl,
    cert: Annotated[Path, typer.Option(help="The current certificate.")],
    key: Annotated[Path, typer.Option(help="Its key.")],
    out: Annotated[Path, typer.Option(help="Directory for the new key and certificate.")],
    api_ca: ApiCaFile = None,
) -> None:
    """Replace this device's certificate before it expires (within the renewal window)."""
    from tiangong.cli import console, err  # noqa: PLC0415 - avoid a cycle

    try:
        paths = rotate_device(url, cert, key, out, ca_file=api_ca)
    except EdgeConfigError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    _print_identity(paths, console)

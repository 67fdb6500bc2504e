r"""``tiangong id trust ...``: trust roots, node certificates and checking signed records.

The workflow (可信解析), for a national root 88 and an enterprise node 88.100.1::

    tiangong id trust init-root --handle 88/0.0 --dir root-trust          # root operator
    tiangong id trust keygen --prefix 88.100.1 --dir node-trust           # node operator
    tiangong id trust issue --root-dir root-trust --prefix 88.100.1 \\
        --public-key node-trust/public-key.pem --out 88.100.1-cert.json   # root operator
    tiangong id trust install --dir node-trust --cert 88.100.1-cert.json  # node operator
    tiangong id trust verify 88.100.1/PUMP-1 --server 127.0.0.1:2641 \\
        --trust-root 300:88/0.0 --trust-key root-trust/public-key.pem     # anyone
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tiangong.identity.client import ServerAddress
from tiangong.identity.handle.values import ValueReference

if TYPE_CHECKING:
    from tiangong.identity.trust import Verification

trust_app = typer.Typer(
    help="Trusted resolution (可信解析): trust roots, node certificates, signed records.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

TRUST_ROOT_ENV = "TIANGONG_ID_TRUST_ROOT"
TRUST_KEY_ENV = "TIANGONG_ID_TRUST_KEY"


def _fail(message: str, hint: str = "") -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {message}")
    if hint:
        err.print(hint)
    return typer.Exit(1)


def _algorithm(text: str) -> str:
    if text.lower() not in ("sm2", "rsa"):
        raise typer.BadParameter(f"{text!r}: use sm2 (SM2/SM3, as IDIS) or rsa (RS256)")
    return text.lower()


@trust_app.command("init-root")
def init_root_command(
    handle: Annotated[
        str, typer.Option(help="The trust root handle, e.g. 88/0.0 for the national prefix 88.")
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="New directory for the root's key and certificate.")
    ],
    algorithm: Annotated[
        str, typer.Option(help="Key algorithm: sm2 (SM2 with SM3) or rsa (RSA-2048, RS256).")
    ] = "sm2",
    years: Annotated[
        int, typer.Option(min=1, max=50, help="How long the root certificate is valid.")
    ] = 10,
) -> None:
    """Create a trust root: a key pair and its self-signed HS_CERT.

    Keep signing-key.pem offline if you can (it only issues node certificates). Publish
    publish.json at the trust handle (HS_PUBKEY at 300, HS_CERT at 400) on the node homed for its
    prefix, and give public-key.pem to every resolver operator.
    """
    from tiangong.identity.errors import TrustError  # noqa: PLC0415
    from tiangong.identity.signing import DAY, create_trust_root  # noqa: PLC0415

    try:
        files = create_trust_root(
            handle, directory, algorithm=_algorithm(algorithm), validity=years * 365 * DAY
        )
    except (TrustError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot write {directory}: {exc}", "choose a writable --dir") from exc
    console.print(f"trust root [bold]300:{handle}[/bold] created in {directory}")
    console.print(f"  private key  {files.private_key}  (mode 0600; keep it offline)")
    console.print(f"  public key   {files.public_key}  (give this to resolvers: --trust-key)")
    console.print(f"  certificate  {files.certificate}")
    console.print("To publish, put the values of publish.json at the trust handle, e.g. over REST:")
    console.print(
        f"  curl -u '300:0.NA/<prefix>:<admin secret>' -X PUT -H 'Content-Type: application/json'"
        f" --data @{files.publish} http://<root node>:<http port>/api/handles/{handle}",
        soft_wrap=True,
    )
    console.print(
        f"Resolvers then verify with: --trust-root 300:{handle} --trust-key {files.public_key}",
        soft_wrap=True,
    )


@trust_app.command("keygen")
def keygen_command(
    prefix: Annotated[
        str, typer.Option(help="The prefix of the node that will sign, e.g. 88.100.1.")
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="New directory for the node's signing key.")
    ],
    algorithm: Annotated[str, typer.Option(help="Key algorithm: sm2 or rsa.")] = "sm2",
) -> None:
    """Create a node's signing key (identity 300:0.NA/<prefix>), to be certified by its issuer."""
    from tiangong.identity.errors import TrustError  # noqa: PLC0415
    from tiangong.identity.signing import create_node_key  # noqa: PLC0415

    try:
        files = create_node_key(prefix, directory, algorithm=_algorithm(algorithm))
    except (TrustError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot write {directory}: {exc}", "choose a writable --dir") from exc
    console.print(f"signing key for [bold]300:0.NA/{prefix}[/bold] created in {directory}")
    console.print(f"Send {files.public_key} to your parent node or the root operator, who runs:")
    console.print(
        f"  tiangong id trust issue --root-dir <their dir> --prefix {prefix}"
        f" --public-key public-key.pem --out {prefix}-cert.json",
        soft_wrap=True,
    )
    console.print(f"then install it: tiangong id trust install --dir {directory} --cert FILE")


@trust_app.command("issue")
def issue_command(  # noqa: PLR0917 - typer passes each CLI option positionally
    root_dir: Annotated[
        Path,
        typer.Option(help="The issuer's trust directory: the root's, or a secondary node's."),
    ],
    prefix: Annotated[str, typer.Option(help="The prefix of the node to certify, e.g. 88.100.1.")],
    public_key: Annotated[
        Path, typer.Option(help="The node's public key (PEM, JWK or HS_PUBKEY data).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the HS_CERT value (REST JSON).")],
    days: Annotated[
        int, typer.Option(min=1, max=3650, help="Validity (capped at the issuer's own).")
    ] = 365,
    derived_prefixes: Annotated[
        bool,
        typer.Option(
            help="Also authorize prefixes derived from this one (a secondary node that will"
            " issue certificates to enterprise nodes below it)."
        ),
    ] = False,
) -> None:
    """Issue a node certificate: the HS_CERT for index 400 of 0.NA/<prefix>."""
    from tiangong.identity.errors import TrustError  # noqa: PLC0415
    from tiangong.identity.handle.json_format import value_to_json  # noqa: PLC0415
    from tiangong.identity.signing import (  # noqa: PLC0415
        DAY,
        TrustMaterial,
        read_public_key_file,
    )

    try:
        issuer = TrustMaterial.load(root_dir)
        key_data = read_public_key_file(public_key)
        value = issuer.issue(
            prefix, key_data, validity=days * DAY, derived_prefixes=derived_prefixes
        )
    except (TrustError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    try:
        out.write_text(json.dumps(value_to_json(value), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc}") from exc
    console.print(f"certificate for [bold]300:0.NA/{prefix}[/bold] by {issuer.reference}: {out}")
    console.print(
        f"Publish it at index 400 of 0.NA/{prefix} where resolvers read that handle (the parent"
        " node's delegation record), and give it to the node operator:"
        f" tiangong id trust install --dir <node dir> --cert {out}",
        soft_wrap=True,
    )


@trust_app.command("install")
def install_command(
    directory: Annotated[Path, typer.Option("--dir", help="The node's trust directory.")],
    cert: Annotated[Path, typer.Option(help="The certificate from `issue` (JSON or JWS).")],
) -> None:
    """Check an issued certificate against the node's key and keep it in the trust directory."""
    from tiangong.identity.errors import TrustError  # noqa: PLC0415
    from tiangong.identity.signing import install_certificate  # noqa: PLC0415

    try:
        material = install_certificate(directory, cert.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"cannot read {cert}: {exc}") from exc
    except TrustError as exc:
        raise _fail(str(exc)) from exc
    issued = material.parsed_certificate()
    console.print(
        f"installed: {material.reference} certified by {issued.issuer} until {issued.expires}"
    )


@trust_app.command("verify")
def verify_command(
    handle: Annotated[str, typer.Argument(help="The identifier, e.g. 88.100.1/PUMP-00042.")],
    server: Annotated[
        str, typer.Option(help="host:port of the root node (or any node) to resolve from.")
    ] = "127.0.0.1:2641",
    trust_root: Annotated[
        str | None,
        typer.Option(envvar=TRUST_ROOT_ENV, help="The trust root identity, e.g. 300:88/0.0."),
    ] = None,
    trust_key: Annotated[
        Path | None,
        typer.Option(
            envvar=TRUST_KEY_ENV, help="The trust root's public key file (from init-root)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Resolve an identifier and check its signature against the trust root.

    Exit status 0 when the record is signed and valid, 1 otherwise.
    """
    from tiangong.cli import run  # noqa: PLC0415
    from tiangong.identity.errors import HandleSyntaxError, TrustError  # noqa: PLC0415
    from tiangong.identity.resolver import Resolver  # noqa: PLC0415
    from tiangong.identity.signing import read_public_key_file, verify_resolved  # noqa: PLC0415

    if trust_root is None or trust_key is None:
        raise _fail(
            "verification needs the trust root and its key",
            f"give --trust-root 300:88/0.0 --trust-key FILE (or set {TRUST_ROOT_ENV} and"
            f" {TRUST_KEY_ENV}); the root operator publishes both",
        )
    try:
        root = ValueReference.parse(trust_root)
    except HandleSyntaxError as exc:
        raise typer.BadParameter(str(exc), param_hint="--trust-root") from exc
    try:
        address = ServerAddress.parse(server)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{server!r}: expected host:port, e.g. 127.0.0.1:2641", param_hint="--server"
        ) from exc
    try:
        key_data = read_public_key_file(trust_key)
    except TrustError as exc:
        raise _fail(str(exc), "pass the public-key.pem the root operator published") from exc

    async def go() -> None:
        resolver = Resolver([address])
        record = await resolver.resolve(handle)
        result = await verify_resolved(
            resolver, record, trust_root=root, trust_root_key_data=key_data
        )
        if as_json:
            console.print_json(json.dumps(verification_json(handle, result)))
        else:
            print_report(handle, result)
        if not result.valid:
            raise typer.Exit(1)

    run(go())


def verification_json(handle: str, result: Verification) -> dict[str, object]:
    """The report of ``verify --json``."""
    return {
        "handle": handle,
        "signed": result.signed,
        "valid": result.valid,
        "reason": result.reason,
        "signer": str(result.signer) if result.signer is not None else None,
        "chain": [str(ref) for ref in result.chain],
        "covered": list(result.covered),
        "failed": list(result.failed),
        "unsigned": list(result.unsigned),
        "missing": list(result.missing),
    }


def _indexes(indexes: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in indexes) or "-"


def print_report(handle: str, result: Verification, *, out: Console | None = None) -> None:
    """Print a verification report as a table (``verify`` and ``id resolve --verify``)."""
    if result.valid:
        verdict = "[bold green]VALID[/bold green]"
    elif not result.signed:
        verdict = "[bold yellow]NOT SIGNED[/bold yellow]"
    else:
        verdict = "[bold red]INVALID[/bold red]"
    table = Table(title=f"{handle}: {verdict}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("signed", "yes" if result.signed else "no")
    table.add_row("valid", "yes" if result.valid else "no")
    table.add_row("signer", str(result.signer) if result.signer else "-")
    table.add_row("chain", " → ".join(str(ref) for ref in result.chain) or "-")
    table.add_row("covered", _indexes(result.covered))
    table.add_row("failed (tampered)", _indexes(result.failed))
    table.add_row("unsigned", _indexes(result.unsigned))
    table.add_row("missing (not visible)", _indexes(result.missing))
    table.add_row("reason", result.reason)
    (out or console).print(table)

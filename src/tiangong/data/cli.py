"""``tiangong datacenter`` (run a sub-center or the national center) and ``tiangong datakeys``.

Register in ``tiangong.cli``::

    from tiangong.data.cli import datacenter_command, datakeys_app

    app.command("datacenter")(datacenter_command)
    app.add_typer(datakeys_app, name="datakeys")

``python -m tiangong.data.cli`` runs ``datacenter`` alone (the topology tests use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tiangong.data.errors import DataError
from tiangong.data.model import ANY, DataGrade, Level
from tiangong.files import atomic_write

if TYPE_CHECKING:
    from tiangong.data.center import CenterConfig, DataCenter

__all__ = ["datacenter_command", "datakeys_app", "read_outbox_key"]

console = Console()
err = Console(stderr=True)
log = logging.getLogger("tiangong.data.cli")

datakeys_app = typer.Typer(
    help="Signing keys of enterprises and data centers: create, show, trust.",
    no_args_is_help=True,
)


class KeyAlgorithm(StrEnum):
    """Signature algorithms of report keys."""

    ED25519 = "ed25519"
    SM2 = "sm2"


class CenterLevel(StrEnum):
    """The levels a ``tiangong datacenter`` process can run as."""

    REGIONAL = "regional"
    INDUSTRY = "industry"
    NATIONAL = "national"


def _parent_destination(text: str) -> str:
    from tiangong.data.transport import destination_for, parse_destination  # noqa: PLC0415

    try:
        if "." in text:
            parse_destination(text)
            return text
        return destination_for(Level.NATIONAL, text)
    except DataError as exc:
        raise typer.BadParameter(str(exc)) from exc


def datacenter_command(
    level: Annotated[
        CenterLevel,
        typer.Option(help="regional (区域分中心), industry (行业分中心) or national (国家中心)."),
    ],
    center_id: Annotated[
        str,
        typer.Option(
            "--id", help="This center's id (letters, digits, '-', '_'), e.g. js, C38, cn."
        ),
    ],
    region: Annotated[
        str | None,
        typer.Option(help="A regional center's GB/T 2260 code, e.g. 320000 (Jiangsu)."),
    ] = None,
    industry: Annotated[
        str | None,
        typer.Option(help="An industry center's GB/T 4754 code, e.g. C38 or C."),
    ] = None,
    nats: Annotated[
        list[str] | None,
        typer.Option(
            help="NATS server URL (repeat for a cluster), e.g. nats://127.0.0.1:4222.",
        ),
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(help="Use a local outbox directory instead of NATS (one machine)."),
    ] = None,
    outbox_key: Annotated[
        Path | None,
        typer.Option(
            help="SM4 key file (tiangong datakeys outbox-key): seal the outbox's messages at"
            " rest with SM4-GCM. Every process on the outbox needs the same key."
        ),
    ] = None,
    key_algorithm: Annotated[
        KeyAlgorithm,
        typer.Option(help="Algorithm of a key ring created now: ed25519, or sm2 (SM2/SM3)."),
    ] = KeyAlgorithm.ED25519,
    parent: Annotated[
        list[str] | None,
        typer.Option(
            help="Where aggregates go: the national center's id (cn) or national.<id>."
            " None for the national center.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Ledger, analytics store, audit log (default .tiangong/datacenter/LEVEL-ID)."
        ),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            help="Key ring (tiangong datakeys init); default DATA_DIR/keys, created if missing."
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="Export policy file (.toml or .json); default: general data only."),
    ] = None,
    breakdown_grade: Annotated[
        DataGrade,
        typer.Option(help="Highest grade whose per-enterprise breakdown is passed up."),
    ] = DataGrade.GENERAL,
    ack_wait: Annotated[
        float,
        typer.Option(min=0.5, help="Seconds before an unacked report is delivered again."),
    ] = 30.0,
    forward_delay: Annotated[
        float, typer.Option(min=0.0, help="Seconds to gather changes before forwarding.")
    ] = 1.0,
    stats_interval: Annotated[
        float, typer.Option(min=0.5, help="Seconds between statistics lines (and stats.json).")
    ] = 10.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
) -> None:
    """Run a data center: receive reports from below, validate, aggregate, forward upward.

    A regional or industry sub-center takes signed enterprise reports, checks them against
    the catalog and its keys, keeps the latest revision of each, stores them for analysis and
    forwards its own signed aggregates to the national center through the export policy.
    The national center takes the sub-centers' aggregates. Transport: NATS JetStream
    (--nats) or, on one machine, a local outbox (--outbox). Stop with Ctrl-C or SIGTERM;
    a restart resumes where it stopped.
    """
    if (nats is None) == (outbox is None):
        raise typer.BadParameter("give exactly one of --nats URL or --outbox DIR")
    lvl = Level(level.value)
    if lvl is Level.NATIONAL and parent:
        raise typer.BadParameter("the national center has no --parent")
    parents = tuple(_parent_destination(p) for p in parent or ())
    data_dir = data_dir or Path(".tiangong") / "datacenter" / f"{lvl.value}-{center_id}"
    _logging_setup(verbose)
    try:
        asyncio.run(
            _serve(
                level=lvl,
                center_id=center_id,
                region=region or ANY,
                industry=industry or ANY,
                nats=nats,
                outbox=outbox,
                outbox_key=outbox_key,
                key_algorithm=key_algorithm,
                parents=parents,
                data_dir=data_dir,
                keys_dir=keys or data_dir / "keys",
                policy_path=policy,
                breakdown_grade=breakdown_grade,
                ack_wait=ack_wait,
                forward_delay=forward_delay,
                stats_interval=stats_interval,
            )
        )
    except DataError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _logging_setup(verbose: bool) -> None:
    from rich.logging import RichHandler  # noqa: PLC0415

    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False)],
    )
    logging.getLogger("tiangong").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("nats").setLevel(logging.INFO if verbose else logging.CRITICAL)


async def _serve(
    *,
    level: Level,
    center_id: str,
    region: str,
    industry: str,
    nats: list[str] | None,
    outbox: Path | None,
    outbox_key: Path | None,
    key_algorithm: KeyAlgorithm,
    parents: tuple[str, ...],
    data_dir: Path,
    keys_dir: Path,
    policy_path: Path | None,
    breakdown_grade: DataGrade,
    ack_wait: float,
    forward_delay: float,
    stats_interval: float,
) -> None:
    from tiangong.data.catalog import standard_catalog  # noqa: PLC0415 - keep --help fast
    from tiangong.data.center import CenterConfig, DataCenter  # noqa: PLC0415
    from tiangong.data.governance import ExportPolicy  # noqa: PLC0415
    from tiangong.data.reports import KeyRing  # noqa: PLC0415
    from tiangong.data.transport import (  # noqa: PLC0415
        JetStreamTransport,
        OutboxTransport,
        ReportTransport,
    )

    ring, generated = await asyncio.to_thread(
        KeyRing.load_or_generate, keys_dir, center_id, key_algorithm.value
    )
    export_policy = (
        await asyncio.to_thread(ExportPolicy.load, policy_path) if policy_path else ExportPolicy()
    )
    config = CenterConfig(
        level=level,
        center_id=center_id,
        data_dir=data_dir,
        keys=ring,
        catalog=standard_catalog(),
        region=region,
        industry=industry,
        parents=parents,
        export_policy=export_policy,
        breakdown_max_grade=breakdown_grade,
        forward_delay=forward_delay,
    )
    transport: ReportTransport
    if nats is not None:
        transport = JetStreamTransport(servers=nats, name=config.durable, ack_wait=ack_wait)
        where = ", ".join(nats)
    else:
        assert outbox is not None
        seal_key = read_outbox_key(outbox_key) if outbox_key else None
        transport = OutboxTransport(path=outbox, ack_wait=ack_wait, seal_key=seal_key)
        where = f"outbox {outbox}" + (" (sealed with SM4-GCM)" if seal_key else "")
    _summary(config, where, generated=generated, policy_path=policy_path)

    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # Windows
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    async with transport, DataCenter(config, transport=transport) as center:
        console.print(f"[green]ready[/green]: consuming {config.destination}")
        try:
            while True:
                await asyncio.sleep(stats_interval)
                await _report_stats(center, data_dir)
        except asyncio.CancelledError:
            main.uncancel()  # a SIGTERM: stop cleanly, exit 0
            log.info("stopping")
        await _report_stats(center, data_dir)


async def _report_stats(center: DataCenter, data_dir: Path) -> None:
    s = center.stats
    log.info(
        "received %d: new %d, revised %d, duplicate %d, stale %d, rejected %d;"
        " forwarded %d, refused exports %d, cells pending %d (%.0f reports/s)",
        s.received,
        s.accepted,
        s.revised,
        s.duplicates,
        s.stale,
        s.rejected,
        s.forwarded,
        s.export_refusals,
        center.pending_cells,
        s.per_second,
    )
    doc = {
        "received": s.received,
        "accepted": s.accepted,
        "revised": s.revised,
        "duplicates": s.duplicates,
        "stale": s.stale,
        "rejected": s.rejected,
        "forwarded": s.forwarded,
        "export_refusals": s.export_refusals,
        "pending_cells": center.pending_cells,
        "rejections": dict(s.rejections),
    }
    stats = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    await asyncio.to_thread(atomic_write, data_dir / "stats.json", stats)


def _summary(
    config: CenterConfig, where: str, *, generated: bool, policy_path: Path | None
) -> None:
    table = Table(title=f"Tiangong data center {config.center_id}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    scope = {
        Level.REGIONAL: f"region {config.region} ({config.catalog.check_region(config.region)})",
        Level.INDUSTRY: f"industry {config.industry}"
        f" ({config.catalog.check_industry(config.industry)})",
        Level.NATIONAL: "all regions and industries",
    }[Level(config.level)]
    table.add_row("level", Level(config.level).value)
    table.add_row("scope", scope)
    table.add_row("transport", where)
    table.add_row("consumes", f"{config.destination} (durable {config.durable})")
    table.add_row("forwards to", ", ".join(config.parents) or "nobody (top of the hierarchy)")
    table.add_row("catalog", config.catalog.version)
    table.add_row(
        "key",
        f"{config.keys.key_id} ({'new: ' if generated else ''}{config.keys.path / 'public.pem'})",
    )
    trusted = sorted(k for k in config.keys.trusted if k != config.keys.key_id)
    table.add_row(
        "trusts", f"{len(trusted)} keys" + (f": {', '.join(trusted[:6])}" if trusted else "")
    )
    table.add_row(
        "export policy", str(policy_path) if policy_path else "default: general data only"
    )
    table.add_row("data", str(config.data_dir))
    console.print(table)
    if not trusted:
        err.print(
            "[yellow]warning:[/yellow] no trusted keys: every report will be rejected; add them"
            f" with `tiangong datakeys trust --dir {config.keys.path} --id ID --pem FILE`"
        )
    if Level(config.level) is not Level.NATIONAL and not config.parents:
        err.print("[yellow]warning:[/yellow] no --parent: aggregates are kept, not forwarded")


@datakeys_app.command("init")
def keys_init(
    directory: Annotated[Path, typer.Option("--dir", help="Key ring directory to create.")],
    key_id: Annotated[
        str, typer.Option("--id", help="Key id: the enterprise id or the center id.")
    ],
    algorithm: Annotated[
        KeyAlgorithm,
        typer.Option(help="ed25519, or sm2 (SM2 with SM3, China's national cryptography)."),
    ] = KeyAlgorithm.ED25519,
) -> None:
    """Create a key ring and print its public key for the center above."""
    from tiangong.data.reports import KeyRing  # noqa: PLC0415

    try:
        ring = KeyRing.generate(directory, key_id, algorithm.value)
    except (DataError, FileExistsError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"created {directory} (key id {ring.key_id}); public key:")
    sys.stdout.write(ring.public_pem.decode("ascii"))


@datakeys_app.command("show")
def keys_show(
    directory: Annotated[Path, typer.Option("--dir", help="Key ring directory.")],
) -> None:
    """Print the key id, the public key and the trusted key ids."""
    from tiangong.data.reports import KeyRing  # noqa: PLC0415

    try:
        ring = KeyRing.load(directory)
    except DataError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"key id: {ring.key_id} ({ring.algorithm})")
    console.print(f"trusts: {', '.join(sorted(ring.trusted))}")
    sys.stdout.write(ring.public_pem.decode("ascii"))


@datakeys_app.command("trust")
def keys_trust(
    directory: Annotated[Path, typer.Option("--dir", help="Key ring directory.")],
    key_id: Annotated[str, typer.Option("--id", help="The signer's key id.")],
    pem: Annotated[Path, typer.Option(help="The signer's public key (PEM file).")],
) -> None:
    """Accept reports signed by ``--id`` with the public key in ``--pem``."""
    from tiangong.data.reports import KeyRing  # noqa: PLC0415

    try:
        ring = KeyRing.load(directory)
        ring.trust(key_id, pem.read_bytes())
    except (DataError, OSError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{directory} now trusts {key_id}")


@datakeys_app.command("outbox-key")
def keys_outbox(
    file: Annotated[Path, typer.Option("--file", help="Where to write the new key (mode 0600).")],
) -> None:
    """Create an SM4 key for sealing an outbox at rest (tiangong datacenter --outbox-key)."""
    import os  # noqa: PLC0415

    from tiangong.security.gm import generate_sm4_key  # noqa: PLC0415

    try:
        # 0600 from the start, and never over an existing key (its messages would not open).
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(generate_sm4_key().hex() + "\n")
    console.print(f"created {file}: give it to every process on the outbox, keep it backed up")


def read_outbox_key(file: Path) -> bytes:
    """The SM4 key in ``file`` (32 hex digits).

    Raises:
        DataError: the file cannot be read or does not hold a 16-byte key in hex.
    """
    from tiangong.data.errors import TransportError  # noqa: PLC0415

    try:
        key = bytes.fromhex(file.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise TransportError(f"outbox key {file}: {exc}") from exc
    if len(key) != 16:
        raise TransportError(f"outbox key {file}: 32 hex digits (16 bytes) expected")
    if file.stat().st_mode & 0o077:
        raise TransportError(f"outbox key {file} is readable by others: chmod 600 it")
    return key


if __name__ == "__main__":
    typer.run(datacenter_command)


dataaudit_app = typer.Typer(
    help="A data center's audit log: check its hash chain, show its entries.",
    no_args_is_help=True,
)


@dataaudit_app.command("verify")
def audit_verify(
    log: Annotated[
        Path, typer.Argument(help="The audit log, e.g. DATA_DIR/audit.sqlite3.", exists=True)
    ],
    head: Annotated[
        str | None,
        typer.Option(
            help="SEQ:HASH printed by an earlier verify and kept elsewhere: entries removed from"
            " the end are then detected too."
        ),
    ] = None,
) -> None:
    """Recompute the hash chain: exit 0 if no entry was edited, inserted or removed."""
    from tiangong.data.governance import AuditLog  # noqa: PLC0415

    expect: tuple[int, str] | None = None
    if head is not None:
        seq, sep, digest = head.partition(":")
        if not sep or not seq.isdigit():
            raise typer.BadParameter(f"{head!r}: expected SEQ:HASH as printed by verify")
        expect = (int(seq), digest)
    audit = AuditLog(log)
    try:
        result = audit.verify(expect_head=expect)
        last_seq, last_hash = audit.head()
    finally:
        audit.close()
    if not result.ok:
        err.print(
            f"[bold red]broken:[/bold red] entry {result.first_broken}: {result.reason}"
            f" ({result.entries} entries checked)"
        )
        raise typer.Exit(1)
    console.print(f"intact: {result.entries} entries; head {last_seq}:{last_hash}")
    console.print("Keep the head elsewhere and pass it with --head next time.")


@dataaudit_app.command("show")
def audit_show(
    log: Annotated[Path, typer.Argument(help="The audit log.", exists=True)],
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: export, export_refused, report_received, ..."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="From this ISO time on.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the last N entries.")] = 50,
) -> None:
    """Print the last entries of an audit log."""
    from tiangong.data.governance import AuditKind, AuditLog  # noqa: PLC0415

    try:
        wanted = AuditKind(kind) if kind else None
    except ValueError as exc:
        choices = ", ".join(k.value for k in AuditKind)
        raise typer.BadParameter(f"{kind!r}: one of {choices}") from exc
    audit = AuditLog(log)
    try:
        entries = audit.entries(since=since, kind=wanted)[-limit:]
    finally:
        audit.close()
    table = Table(title=str(log))
    for column in ("seq", "at", "kind", "actor", "subject", "from", "to", "detail"):
        table.add_column(column)
    for entry in entries:
        e = entry.event
        table.add_row(
            str(entry.seq), e.at, e.kind, e.actor, e.subject, e.origin, e.destination, e.detail
        )
    console.print(table)

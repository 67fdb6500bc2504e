"""``tiangong audit verify|list`` and ``tiangong security check``.

``audit`` reads a trail straight from its database: the platform's (``--data-dir`` with its
``registry.sqlite``, or ``--metadata-url`` for PostgreSQL) or an identifier node's
(``--data-dir`` with its ``audit.sqlite3``). The checkpoint file beside it
(``audit-checkpoint.json``) is used when present, so a cut-off tail is detected too.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tiangong.security.audit import AuditEntry, AuditError, AuditTrail, AuditVerification

__all__ = ["audit_app", "security_app"]

audit_app = typer.Typer(
    help="The audit trail: check its hash chain, list its entries.", no_args_is_help=True
)
security_app = typer.Typer(
    help="Check a running deployment against the protection baseline.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Platform data dir (registry.sqlite) or identifier node data dir (audit.sqlite3).",
    ),
]
MetadataUrl = Annotated[
    str | None,
    typer.Option(
        "--metadata-url",
        envvar="TIANGONG_DATABASE_URL",
        help="The platform's metadata database (postgresql://user@host/db).",
    ),
]
Checkpoint = Annotated[
    Path | None,
    typer.Option(help="Checkpoint file (default: audit-checkpoint.json in --data-dir)."),
]


def _database_url(data_dir: Path | None, metadata_url: str | None) -> str:
    if metadata_url:
        if metadata_url.startswith("postgresql://"):
            return metadata_url.replace("postgresql://", "postgresql+psycopg://", 1)
        return metadata_url
    if data_dir is None:
        raise typer.BadParameter("give --data-dir or --metadata-url")
    for name in ("registry.sqlite", "audit.sqlite3"):
        if (data_dir / name).exists():
            return f"sqlite+aiosqlite:///{(data_dir / name).resolve()}"
    raise typer.BadParameter(f"{data_dir} holds no audit trail (registry.sqlite, audit.sqlite3)")


def _checkpoint(data_dir: Path | None, checkpoint: Path | None) -> Path | None:
    if checkpoint is not None:
        return checkpoint
    if data_dir is not None and (data_dir / "audit-checkpoint.json").exists():
        return data_dir / "audit-checkpoint.json"
    return None


async def _open_trail(url: str, checkpoint: Path | None) -> tuple[AsyncEngine, AuditTrail]:
    engine = create_async_engine(url)
    trail = AuditTrail(engine, checkpoint=checkpoint)
    async with engine.connect() as conn:
        present = await conn.run_sync(lambda sync: sa.inspect(sync).has_table(trail.table.name))
    if not present:
        await engine.dispose()
        raise AuditError(f"no audit trail in {engine.url.render_as_string()}")
    return engine, trail


async def _verify(url: str, checkpoint: Path | None) -> AuditVerification:
    engine, trail = await _open_trail(url, checkpoint)
    try:
        return await trail.verify()
    finally:
        await engine.dispose()


async def _entries(url: str, **filters: Any) -> list[AuditEntry]:
    engine, trail = await _open_trail(url, None)
    try:
        return await trail.entries(**filters)
    finally:
        await engine.dispose()


_WHAT_TO_DO = {
    "edited": "an entry was changed after it was written",
    "missing": "entries were deleted from the middle or the start",
    "reordered": "entries were moved, or one was replaced with a recomputed hash",
    "truncated": "entries were deleted from the end",
}


@audit_app.command("verify")
def audit_verify(
    data_dir: DataDir = None,
    metadata_url: MetadataUrl = None,
    checkpoint: Checkpoint = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Recompute the hash chain: exit 0 when intact, 1 when an entry was edited or removed."""
    url = _database_url(data_dir, metadata_url)
    anchor = _checkpoint(data_dir, checkpoint)
    try:
        result = asyncio.run(_verify(url, anchor))
    except (AuditError, OSError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(2) from exc
    except Exception as exc:  # an unreachable database: a message, not a traceback
        err.print(f"[bold red]error:[/bold red] cannot read the trail: {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    elif result.ok:
        anchored = (
            f", checkpoint {result.checkpoint.seq} matches"
            if result.checkpoint
            else " (no checkpoint: a cut-off tail would not show)"
        )
        console.print(
            f"[green]intact[/green]: {result.entries} entries, head {result.head_seq}"
            f" {result.head_hash[:16]}…{anchored}"
        )
    else:
        problem = result.problem.value if result.problem else "broken"
        console.print(
            f"[bold red]BROKEN[/bold red] at entry {result.first_broken} ({problem}):"
            f" {result.reason}"
        )
        console.print(
            f"What it means: {_WHAT_TO_DO.get(problem, 'the chain does not match')}. What to"
            " do: treat it as a security incident. Copy the database and the checkpoint file"
            " before anything else, find who had write access to them (database roles,"
            " backups, administrators), compare with a backup to see what changed, and record"
            " the incident. Entries after the broken one are not trustworthy until then."
        )
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("list")
def audit_list(
    data_dir: DataDir = None,
    metadata_url: MetadataUrl = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's entries.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only actors containing this.")] = None,
    action: Annotated[str | None, typer.Option(help="Only actions starting with this.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only entries from this time (UTC if no zone).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The newest entries of a trail, newest first."""
    url = _database_url(data_dir, metadata_url)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        entries = asyncio.run(
            _entries(
                url,
                tenant_id=tenant,
                actor=actor,
                action=action,
                since=since,
                limit=limit,
            )
        )
    except Exception as exc:  # an unreachable database: a message, not a traceback
        err.print(f"[bold red]error:[/bold red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        for entry in entries:
            sys.stdout.write(json.dumps(entry.to_dict(), ensure_ascii=False) + "\n")
        return
    table = Table("seq", "at (UTC)", "actor", "action", "target", "tenant", "from", "outcome")
    for e in entries:
        table.add_row(
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.actor,
            e.action,
            e.target,
            e.tenant_id or "",
            e.source,
            e.outcome,
        )
    console.print(table)


@security_app.command("check")
def security_check(
    url: Annotated[
        str | None, typer.Option(help="The platform's base URL, e.g. http://127.0.0.1:8080.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="TIANGONG_TOKEN", help="An API token (platform admin or auditor sees most)."
        ),
    ] = None,
    mqtt: Annotated[str | None, typer.Option(help="A broker's host:port to probe.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="The platform's data dir (files, CAs).")
    ] = None,
    max_platform_admins: Annotated[int, typer.Option(min=1)] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Audit a running deployment; exit 1 when a high finding exists."""
    from tiangong.security.check import check_deployment  # noqa: PLC0415

    broker: tuple[str, int] | None = None
    if mqtt:
        host, _, port = mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise typer.BadParameter("--mqtt needs host:port")
        broker = (host, int(port))
    if not (url or broker or data_dir):
        raise typer.BadParameter("give at least one of --url, --mqtt, --data-dir")
    if url and not token:
        err.print("[yellow]no --token: tokens, retention and the audit chain are skipped[/yellow]")
    report = asyncio.run(
        check_deployment(
            url=url,
            token=token,
            mqtt=broker,
            data_dir=data_dir,
            max_platform_admins=max_platform_admins,
        )
    )
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    else:
        colour = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}
        for f in report.findings:
            console.print(
                f"[{colour[f.severity.value]}]{f.severity.value.upper():6}[/] [bold]{f.id}[/]:"
                f" {f.title}\n    seen: {f.evidence}\n    fix:  {f.fix}"
            )
        verdict = "[bold red]FAIL[/]" if report.failed else "[green]PASS[/]"
        console.print(
            f"{verdict}: {len(report.findings)} finding(s); checked {', '.join(report.checked)}"
        )
    raise typer.Exit(1 if report.failed else 0)

"""``tiangong users``: create, list, change passwords of, disable and enable platform users.

Works on the platform's metadata database directly (``--data-dir`` or ``--database-url``, the
same settings the platform reads), so an operator can create the first administrator, or
recover from a lost password, without a running platform or a token. Passwords never go on
the command line (where ``ps`` and shell history would keep them): they are generated and
printed once, or read from standard input with ``--password-stdin``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from tiangong.platform.database import Database
from tiangong.platform.errors import PlatformError
from tiangong.platform.settings import PlatformSettings
from tiangong.platform.tokens import ApiRole
from tiangong.security.errors import SecurityError
from tiangong.security.users import UserService, generate_password

__all__ = ["users_app"]

_T = TypeVar("_T")

users_app = typer.Typer(
    help="Platform users: sign-in accounts with roles (see docs/security.md).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", help="The platform's data directory.", envvar="TIANGONG_DATA_DIR"),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The metadata database (default: SQLite in the data directory).",
        envvar="TIANGONG_DATABASE_URL",
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from standard input instead of generating."
    ),
]


def _run(
    data_dir: Path, database_url: str | None, work: Callable[[UserService], Awaitable[_T]]
) -> _T:
    async def main() -> _T:
        overrides: dict[str, object] = {"data_dir": data_dir}
        if database_url:
            overrides["database_url"] = database_url
        settings = PlatformSettings.load(**overrides)
        db = Database(url=settings.metadata_url())
        await db.open()
        try:
            return await work(UserService(db))
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except (PlatformError, SecurityError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def _password(from_stdin: bool) -> tuple[str, bool]:
    """The password to set and whether it was generated."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        return password, False
    return generate_password(), True


@users_app.command("create")
def create(
    username: Annotated[str, typer.Argument(help="Unique platform-wide, e.g. zhang.wei@huaxia.")],
    *,
    role: Annotated[ApiRole, typer.Option(help="The user's role.")],
    tenant: Annotated[
        str | None, typer.Option(help="The user's tenant (none for platform_admin).")
    ] = None,
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = Path(".tiangong"),
    database_url: DatabaseUrl = None,
) -> None:
    """Create a user; without --password-stdin a password is generated and printed once."""
    password, generated = _password(password_stdin)

    async def work(users: UserService) -> None:
        user = await users.create(username=username, password=password, role=role, tenant_id=tenant)
        console.print(
            f"created {user.username} ({user.role.value}, tenant {user.tenant_id or '-'})"
        )

    _run(data_dir, database_url, work)
    if generated:
        console.print(
            f"password: {password}  (shown once; stored only as an argon2id hash)",
            soft_wrap=True,
            highlight=False,
        )


@users_app.command("list")
def list_users(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's users.")] = None,
    data_dir: DataDir = Path(".tiangong"),
    database_url: DatabaseUrl = None,
) -> None:
    """List users: name, role, tenant, state and last sign-in."""
    found = _run(data_dir, database_url, lambda users: users.list(tenant))
    table = Table("user", "role", "tenant", "state", "last sign-in", "id")
    for user in found:
        table.add_row(
            user.username,
            user.role.value,
            user.tenant_id or "-",
            "disabled" if user.disabled else "active",
            user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "never",
            user.id,
        )
    console.print(table)


async def _by_name(users: UserService, username: str) -> str:
    user = await users.find(username)
    if user is None:
        raise PlatformError(f"no user {username!r}")
    return user.id


@users_app.command("passwd")
def passwd(
    username: str,
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = Path(".tiangong"),
    database_url: DatabaseUrl = None,
) -> None:
    """Set a new password (generated unless --password-stdin); ends the user's sessions."""
    password, generated = _password(password_stdin)

    async def work(users: UserService) -> None:
        await users.set_password(await _by_name(users, username), None, password)

    _run(data_dir, database_url, work)
    console.print(f"new password for {username} set; its sessions have ended")
    if generated:
        console.print(f"password: {password}  (shown once)", soft_wrap=True, highlight=False)


def _set_disabled(username: str, disabled: bool, data_dir: Path, database_url: str | None) -> None:
    async def work(users: UserService) -> None:
        await users.update(await _by_name(users, username), None, disabled=disabled)

    _run(data_dir, database_url, work)
    console.print(f"{username} {'disabled; its sessions have ended' if disabled else 'enabled'}")


@users_app.command("disable")
def disable(
    username: str, data_dir: DataDir = Path(".tiangong"), database_url: DatabaseUrl = None
) -> None:
    """Disable a user: it cannot sign in, and its sessions end at once."""
    _set_disabled(username, True, data_dir, database_url)


@users_app.command("enable")
def enable(
    username: str, data_dir: DataDir = Path(".tiangong"), database_url: DatabaseUrl = None
) -> None:
    """Enable a disabled user again."""
    _set_disabled(username, False, data_dir, database_url)

"""``tiangong idnode`` and ``tiangong id``: the commands an operator types, as processes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tiangong.identity.node.runner import NodeOptions, running_node
from tiangong.identity.node.service import NodeRole

TIANGONG = [sys.executable, "-m", "tiangong"]


async def _run(*args: str, secret: str | None = None) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TIANGONG_ID_SECRET", None)
    if secret is not None:
        env["TIANGONG_ID_SECRET"] = secret
    process = await asyncio.create_subprocess_exec(
        *TIANGONG,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_put_resolve_list_delete_from_the_command_line(tmp_path: Path) -> None:
    options = NodeOptions(
        NodeRole.ENTERPRISE, prefix="88.100.1", port=0, admin_secret=b"s3cret", data_dir=tmp_path
    )
    async with running_node(options) as node:
        server = ["--server", f"127.0.0.1:{node.server.port}"]
        code, out = await _run(
            "id", "put", "88.100.1/P1", "--value", "1:URL=https://plant/p1",
            "--value", "2:EMAIL=ops@plant", *server, secret="s3cret",
        )  # fmt: skip
        assert code == 0, out
        assert "created 88.100.1/P1" in out
        code, out = await _run("id", "resolve", "88.100.1/P1", *server)
        assert code == 0, out
        assert "https://plant/p1" in out
        assert "ops@plant" in out
        code, out = await _run("id", "list", "88.100.1", *server, secret="s3cret")
        assert "88.100.1/P1" in out
        code, out = await _run(
            "id", "delete", "88.100.1/P1", "--index", "2", *server, secret="s3cret"
        )
        assert code == 0, out
        code, out = await _run("id", "resolve", "88.100.1/P1", "--json", *server)
        assert "ops@plant" not in out
        # Mistakes say what is wrong and what to do.
        code, out = await _run("id", "put", "88.100.1/P2", "--value", "1:URL=x", *server)
        assert code == 2
        assert "set TIANGONG_ID_SECRET" in out
        code, out = await _run(
            "id", "put", "88.100.1/P2", "--value", "1:URL=x", *server, secret="wrong"
        )
        assert code == 1
        assert "AUTHENTICATION_FAILED" in out
        code, out = await _run("id", "put", "88.100.1/P2", "--value", "URL=x", *server, secret="s")
        assert code == 2
        assert "INDEX:TYPE=DATA" in out
        code, out = await _run("id", "delete", "88.100.1/P1", *server, secret="s3cret")
        assert code == 0
        code, out = await _run("id", "resolve", "88.100.1/P1", *server)
        assert code == 1
        assert "HANDLE_NOT_FOUND" in out


async def test_a_node_without_an_admin_secret_refuses_to_start(tmp_path: Path) -> None:
    env_free = {k: v for k, v in os.environ.items() if k != "TIANGONG_ID_ADMIN_SECRET"}
    env_free["COLUMNS"] = "200"
    process = await asyncio.create_subprocess_exec(
        *TIANGONG, "idnode", "--role", "enterprise", "--prefix", "88.1", "--port", "0",
        "--data-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env_free,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode == 1
    assert "give --admin-secret or set TIANGONG_ID_ADMIN_SECRET" in out.decode()


def test_every_identifier_command_has_help() -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from tiangong.cli import app  # noqa: PLC0415

    runner = CliRunner()
    for command in (
        ["idnode"], ["id"], ["id", "resolve"], ["id", "put"], ["id", "delete"], ["id", "list"],
        ["id", "trace"], ["id", "secret"], ["id", "trust"],
    ):  # fmt: skip
        shown = runner.invoke(app, [*command, "--help"])
        assert shown.exit_code == 0, (command, shown.output)
        assert "Usage" in shown.output

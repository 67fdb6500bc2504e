"""The command line, run as a user runs it: `tiangong up` in a subprocess, twice."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port

TIANGONG = [sys.executable, "-m", "tiangong"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TIANGONG, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def test_help_everywhere() -> None:
    commands = (
        [],
        ["up"],
        ["platform"],
        ["sim"],
        ["edge"],
        ["edge", "browse"],
        ["broker"],
        ["broker", "mosquitto-files"],
        ["version"],
    )
    for args in commands:
        result = run(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


def get(url: str, token: str) -> object:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
async def test_up_runs_stops_and_restarts_with_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port, mqtt = free_port(), free_port()
    args = [
        "up",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--mqtt-port",
        str(mqtt),
        "--mqtt-tls-port",
        str(free_port()),
        "--devices",
        "8",
        "--id-port",
        "0",
        "--id-http-port",
        "0",
    ]
    process = await asyncio.create_subprocess_exec(
        *TIANGONG,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert process.stdout is not None
    banner = ""
    async with asyncio.timeout(60):
        while "#token=" not in banner:
            banner += (await process.stdout.readline()).decode()
    token_file = data / "admin-token"
    token = token_file.read_text().strip()
    assert f"http://127.0.0.1:{port}/#token={token}" in banner
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    overview: dict = {}
    async with asyncio.timeout(60):
        while not overview.get("points_stored_total"):
            await asyncio.sleep(0.5)
            overview = await asyncio.to_thread(
                get, f"http://127.0.0.1:{port}/api/v1/overview", token
            )
    assert overview["devices"].get("online", 0) >= 1
    process.send_signal(2)  # Ctrl-C
    async with asyncio.timeout(30):
        rest = (await process.stdout.read()).decode()
        assert await process.wait() == 0
    assert "stopped cleanly" in rest

    # A restart keeps the token, the devices and their data.
    second = await asyncio.to_thread(run, *args, "--duration", "8")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "generated now" not in second.stdout
    assert token_file.read_text().strip() == token
    assert "stopped cleanly" in second.stdout
    assert (data / "telemetry.duckdb").exists()


def test_up_refuses_a_taken_port_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "up",
            "--data-dir",
            str(tmp_path),
            "--port",
            str(port),
            "--mqtt-port",
            str(free_port()),
            "--mqtt-tls-port",
            "0",
            "--devices",
            "1",
            "--duration",
            "5",
        )
    assert result.returncode == 1
    assert "choose another port" in result.stderr
    assert "Traceback" not in result.stderr

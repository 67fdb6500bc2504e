"""`tiangong sim` run as a user runs it, in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.servers import free_port
from tiangong.edge.config import load_config

TIANGONG = [sys.executable, "-m", "tiangong"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TIANGONG, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def test_help() -> None:
    result = run("sim", "--help")
    assert result.returncode == 0, result.stderr
    for option in (
        "--modbus-port",
        "--opcua-port",
        "--devices",
        "--data-dir",
        "--host",
        "--write-edge-config",
        "--time-scale",
        "--duration",
    ):
        assert option in result.stdout


def test_runs_writes_the_gateway_configuration_and_stops(tmp_path: Path) -> None:
    modbus, opcua = free_port(), free_port()
    edge = tmp_path / "gateway" / "edge.toml"
    result = run(
        "sim",
        "--data-dir",
        str(tmp_path / "data"),
        "--modbus-port",
        str(modbus),
        "--opcua-port",
        str(opcua),
        "--devices",
        "12",
        "--duration",
        "1",
        "--write-edge-config",
        str(edge),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"opc.tcp://127.0.0.1:{opcua}/tiangong/" in result.stdout
    assert "stopped cleanly" in result.stdout
    config = load_config(edge)
    assert len(config.devices) == 12
    assert {d.port for d in config.devices if d.protocol == "modbus"} == {modbus}
    assert (tmp_path / "data" / "opcua" / "gateway-key.pem").exists()


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "sim",
            "--data-dir",
            str(tmp_path),
            "--modbus-port",
            str(port),
            "--opcua-port",
            str(free_port()),
            "--devices",
            "3",
            "--duration",
            "1",
        )
    assert result.returncode == 1
    assert "choose another port (--modbus-port)" in result.stderr
    assert "Traceback" not in result.stderr

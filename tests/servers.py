"""Real servers for the tests: a Mosquitto process per test or session, PostgreSQL on loopback.

A test that needs a server gets it from here. When the server cannot be had, the test is
skipped on a developer machine and *fails* under ``CI=true`` (the project's rule: CI never
silently skips the real-peer tests).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose server is missing."""
    if IN_CI:
        pytest.fail(f"required server unavailable in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def mosquitto_binary() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@dataclass
class MosquittoProcess:
    """A Mosquitto broker owned by a test: its own port, config and persistence directory."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            # Run as the invoking user: Mosquitto started by root otherwise drops to the
            # 'mosquitto' user, which cannot write persistence into the test's directory.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            # Queue without a cap for offline persistent sessions, as Tiangong's docs advise.
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            + (self.extra_config or "allow_anonymous true\n")
        )

    def start(self) -> None:
        binary = mosquitto_binary()
        if binary is None:
            unavailable("mosquitto binary not installed (Debian package 'mosquitto')")
            return
        self.write_config()
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SIGTERM: Mosquitto saves its persistence
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, downtime: float = 0.0) -> None:
        self.stop()
        time.sleep(downtime)
        self.start()


def postgres_dsn(dbname: str = "postgres") -> str:
    host = os.environ.get("TIANGONG_TEST_PG_HOST", "127.0.0.1")
    port = os.environ.get("TIANGONG_TEST_PG_PORT", "5432")
    user = os.environ.get("TIANGONG_TEST_PG_USER", "postgres")
    return f"postgresql://{user}@{host}:{port}/{dbname}"

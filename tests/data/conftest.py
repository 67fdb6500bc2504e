"""Fixtures of the data system: a real nats-server with JetStream, owned by the test."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import free_port, unavailable, wait_port


def nats_server_binary() -> str | None:
    for candidate in (shutil.which("nats-server"), "/usr/sbin/nats-server"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@dataclass
class NatsServerProcess:
    """A nats-server with JetStream: its own port and store directory, killable and restartable."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = nats_server_binary()
        if binary is None:
            unavailable("nats-server binary not installed (Debian package 'nats-server')")
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "nats-server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.workdir / "store"),
                "--server_name",
                f"test-{self.port}",
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop cleanly (SIGTERM)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Crash the server (SIGKILL): what it had not written to its store is lost."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, downtime: float = 0.0, *, kill: bool = False) -> None:
        self.kill() if kill else self.stop()
        time.sleep(downtime)
        self.start()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    """A nats-server of this test's own (the test may kill and restart it)."""
    server = NatsServerProcess(workdir=tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServerProcess]:
    """One nats-server for tests that only publish and consume (use unique center ids)."""
    server = NatsServerProcess(workdir=tmp_path_factory.mktemp("nats-shared"))
    server.start()
    yield server
    server.stop()

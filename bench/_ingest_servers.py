"""Processes the ingest benchmark starts, and the one database it creates.

- ``Child``: a process of the benchmark itself (the platform, a publisher, an InfluxDB writer)
  that reports JSON lines on stdout and takes one-word commands on stdin.
- ``OwnMosquitto``: a Mosquitto broker on a free port with its own config and persistence
  directory (as ``tests/servers.py`` runs one).
- ``InfluxServer``: Debian's ``influxd`` (InfluxDB 1.x) on loopback ports, with its meta, data
  and WAL directories under a temporary directory.
- ``PostgresDatabase``: a fresh database on the local PostgreSQL server, dropped afterwards.

Every process is started in its own session (a Ctrl-C in the terminal reaches only the
benchmark, which then stops them in order) and with a parent-death signal, so that even a
killed benchmark leaves nothing running. Children also stop when their stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final, Self

import orjson
import psycopg

from _ingest_procfs import free_port
from tiangong.network.errors import MqttError
from tiangong.network.mqtt import MqttClient, ProtocolVersion

__all__ = [
    "Child",
    "ChildError",
    "InfluxServer",
    "OwnMosquitto",
    "PostgresDatabase",
    "die_with_parent",
    "forget_session",
    "influxd_binary",
    "mosquitto_binary",
    "wait_port",
]

_PR_SET_PDEATHSIG: Final = 1
#: Longest JSON line a child may write (a publisher's per-gateway counts).
_LINE_LIMIT: Final = 64 * 1024 * 1024


class ChildError(RuntimeError):
    """A process of the benchmark failed; the message carries the end of its log."""


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (children call this).

    Set by the child itself rather than through ``preexec_fn``, which is unsafe in a process
    with threads. If the parent is already gone, exit now.
    """
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(1)


def _server_argv(argv: list[str]) -> list[str]:
    """``argv`` under ``setpriv --pdeathsig TERM`` where available (a server cannot set it).

    The parent-death signal belongs to the thread that started the process, so servers are
    started from the event loop's thread, which lives as long as the benchmark.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


@contextlib.contextmanager
def _append(path: Path) -> Iterator[BinaryIO]:
    with path.open("ab") as file:
        yield file


def wait_port(host: str, port: int, within: float = 15.0) -> None:
    """Wait until something accepts TCP connections on ``host:port``.

    Raises:
        ChildError: nothing listens after ``within`` seconds.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise ChildError(f"nothing listens on {host}:{port} after {within:g}s")


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` binary, if installed."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def influxd_binary() -> str | None:
    """Path of InfluxDB 1.x's ``influxd``, if installed."""
    for candidate in (shutil.which("influxd"), "/usr/bin/influxd"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class Child:
    """A benchmark process speaking JSON lines.

    Each stdout line is an object with an ``event`` field. ``stats`` lines are kept as a
    history (``stats``, newest last); the last line of every other event is kept in ``events``.

    Args:
        name: a name for messages.
        argv: the command.
        log: file that receives the child's stderr.
    """

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.stats: list[dict[str, Any]] = []
        self.events: dict[str, dict[str, Any]] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._exited = False

    @property
    def pid(self) -> int:
        """The process id."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def latest(self) -> dict[str, Any]:
        """The newest ``stats`` line (empty before the first)."""
        return self.stats[-1] if self.stats else {}

    async def start(self) -> None:
        """Start the process."""
        with _append(self.log) as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                limit=_LINE_LIMIT,
            )
        self._reader = asyncio.create_task(self._read(), name=f"read-{self.name}")

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        try:
            while line := await self._proc.stdout.readline():
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if doc.get("event") == "stats":
                    self.stats.append(doc)
                else:
                    self.events[str(doc.get("event"))] = doc
                self._wake()
        finally:
            self._exited = True
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def expect(self, event: str, within: float) -> dict[str, Any]:
        """Wait for an ``event`` line.

        Raises:
            ChildError: the child reported an error or exited first, or ``within`` passed.
        """
        try:
            async with asyncio.timeout(within):
                while True:
                    if event in self.events:
                        return self.events[event]
                    if "error" in self.events:
                        raise ChildError(
                            f"{self.name} failed: {self.events['error'].get('message')}\n"
                            f"{_tail(self.log)}"
                        )
                    if self._exited:
                        code = await self.wait()
                        raise ChildError(
                            f"{self.name} exited ({code}) before '{event}'; its log ends:\n"
                            f"{_tail(self.log)}"
                        )
                    await self._changed.wait()
        except TimeoutError as exc:
            raise ChildError(
                f"{self.name}: no '{event}' within {within:g}s; its log ends:\n{_tail(self.log)}"
            ) from exc

    def has(self, event: str) -> bool:
        """Whether an ``event`` line arrived."""
        return event in self.events

    def send(self, command: str) -> None:
        """Write one command line to the child's stdin (ignored once it has exited)."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            proc.stdin.write(command.encode() + b"\n")

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit code."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return code

    async def terminate(self, grace: float = 20.0) -> None:
        """Close stdin, then SIGTERM, then SIGKILL: the process is gone when this returns."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await proc.wait()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await proc.wait()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class OwnMosquitto:
    """A Mosquitto broker of our own: free port, own config and persistence directory.

    Args:
        workdir: directory for config, persistence and log (created).
        binary: the ``mosquitto`` executable.
    """

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The broker's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Write the config and start the broker (from the event loop's thread)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            # Run as the invoking user: Mosquitto started by root otherwise drops to the
            # 'mosquitto' user, which cannot write persistence into our directory.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            # The platform's session is persistent: save it, but not every second (each save
            # rewrites every queued message, which would be measured as broker load).
            "autosave_interval 60\n"
            # Queue without a cap for persistent sessions, as Tiangong's docs advise, so a
            # slow consumer shows as backlog, never as silently dropped messages.
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )
        self.proc = subprocess.Popen(
            _server_argv([self.binary, "-c", str(config)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        """Wait until the broker accepts connections (blocking: run it in a thread).

        Raises:
            ChildError: it did not come up.
        """
        try:
            wait_port("127.0.0.1", self.port)
        except ChildError as exc:
            self.stop()
            raise ChildError(f"{exc}; {_tail(self.workdir / 'mosquitto.log')}") from exc

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


async def forget_session(host: str, port: int, client_id: str) -> None:
    """Remove the persistent MQTT session of ``client_id`` from the broker.

    The platform connects with a persistent session (kept for a week); on a shared broker it
    would go on queueing messages for a client that never returns.
    """
    with contextlib.suppress(OSError, MqttError, TimeoutError):
        async with (
            asyncio.timeout(10),
            MqttClient(
                host=host,
                port=port,
                client_id=client_id,
                version=ProtocolVersion.V5,
                clean_start=True,
                session_expiry=0,
                reconnect=False,
                keepalive=0,
            ),
        ):
            pass


class InfluxServer:
    """InfluxDB 1.x on loopback ports, everything under ``workdir``.

    Args:
        workdir: directory for config, meta, data, WAL and log (created).
        binary: the ``influxd`` executable.
    """

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir
        self.binary = binary
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Write the config and start ``influxd`` (from the event loop's thread)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "influxdb.conf"
        config.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            "[meta]\n"
            f'  dir = "{self.workdir}/meta"\n'
            "[data]\n"
            f'  dir = "{self.workdir}/data"\n'
            f'  wal-dir = "{self.workdir}/wal"\n'
            "  query-log-enabled = false\n"
            "[monitor]\n"
            # Its own statistics would be written into the same server while we measure it.
            "  store-enabled = false\n"
            "[http]\n"
            "  enabled = true\n"
            f'  bind-address = "127.0.0.1:{self.http_port}"\n'
            "  auth-enabled = false\n"
            "  log-enabled = false\n"
            "[continuous_queries]\n"
            "  enabled = false\n"
        )
        log = (self.workdir / "influxd.log").open("ab")
        try:
            self.proc = subprocess.Popen(
                _server_argv([self.binary, "-config", str(config)]),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()

    def wait_ready(self) -> None:
        """Wait for ``/ping`` (blocking: run it in a thread).

        Raises:
            ChildError: the server did not come up within 30 seconds.
        """
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self._url("/ping"), timeout=1) as response,
            ):
                if response.status == 204:
                    return
            time.sleep(0.1)
        tail = _tail(self.workdir / "influxd.log")
        self.stop()
        raise ChildError(f"influxd did not answer /ping within 30s; its log ends:\n{tail}")

    def _url(self, path: str, **params: str) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"http://127.0.0.1:{self.http_port}{path}{query}"

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        """Run an InfluxQL statement; returns the decoded JSON answer."""
        params = {"q": q, **({"db": db} if db else {})}
        request = urllib.request.Request(self._url("/query", **params), method="POST")
        with urllib.request.urlopen(request, timeout=600) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class PostgresDatabase:
    """A fresh database on a PostgreSQL server, dropped on exit.

    Args:
        admin_dsn: a connection to the server that may create databases.
    """

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"tiangong_ingest_{uuid.uuid4().hex[:12]}"
        self.dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=self.name)
        self.server_version = ""
        self._admin: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> Self:
        self._admin = await psycopg.AsyncConnection.connect(self.admin_dsn, autocommit=True)
        try:
            cur = await self._admin.execute("SHOW server_version")
            row = await cur.fetchone()
            self.server_version = str(row[0]) if row else ""
            await self._admin.execute(f'CREATE DATABASE "{self.name}"')
        except BaseException:
            await self._admin.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._admin is not None:
            try:
                await self._admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            finally:
                await self._admin.close()

    async def server_pids(self) -> dict[int, str]:
        """Server processes working for us: this database's backends, and the WAL writer,
        checkpointer and background writer (shared with every other database of the server).
        """
        assert self._admin is not None
        cur = await self._admin.execute(
            "SELECT pid, backend_type FROM pg_stat_activity WHERE (datname = %s AND pid <>"
            " pg_backend_pid()) OR backend_type IN ('walwriter', 'checkpointer',"
            " 'background writer')",
            [self.name],
        )
        return {int(pid): str(kind) for pid, kind in await cur.fetchall()}

    async def size_bytes(self) -> int:
        """On-disk size of the database."""
        assert self._admin is not None
        cur = await self._admin.execute("SELECT pg_database_size(%s)", [self.name])
        row = await cur.fetchone()
        return int(row[0]) if row else 0

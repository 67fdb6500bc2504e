"""Identifier resolution: resolutions/s and latency of one node over UDP, TCP and HTTP, beside NSD.

What is measured (the issue's requirement: 2 cores, 1,000,000 records, cache hit and miss):

- ``--records`` device identifiers (default 1,000,000: ``88.100.1/ID-0000000``...; a URL, four
  typed values and an HS_ADMIN each, about 400 bytes on the wire) are bulk-loaded into a fresh
  embedded store in a temporary directory, and ``tiangong idnode --role enterprise`` serves it,
  as a subprocess on free ports (``--workers`` is passed through when the command has it);
- **cached**: a hot set of ``--hot`` handles (default 1,000) resolved again and again, so the
  node's response cache answers; **uncached**: handles drawn uniformly from all N, so at most
  (cache entries / N) of them can be cache hits and the rest are store lookups;
- over **UDP** with ``bench/handle_load.c`` (a C load generator built here with ``gcc -O2``;
  no existing load tool speaks the Handle protocol): first at the most it takes (``--outstanding``
  queries in flight over ``--sockets`` source ports, as dnsperf's ``-q``/``-c``), then capped at
  half that rate, where the p99 target applies; over **TCP** with the same generator
  (``--tcp-connections`` connections, pipelined); over **HTTP** (``GET /api/handles/<h>``) with
  ``wrk`` from Debian (closed loop, ``--http-connections`` connections; its Lua script draws the
  handles the same way);
- **NSD** side by side (Debian's ``nsd`` and ``dnsperf``, when installed): a zone with one TXT
  record per identifier (``id-0000042.88.100.1.id.test TXT "<its URL>"``), NSD on a free port with
  a configuration of its own (not the system service), ``server-count`` equal to our worker count;
  ``dnsperf`` with the same hot and random sets gives the anchor's figure, and ``handle_load -m
  dns`` (the same generator, DNS queries) gives percentiles for the same load;
- the **uvloop floor** (``bench/_uvloop_floor.py``, ``--no-floor`` skips it): the issue's
  Python anchor made with our own requests and answers, a uvloop UDP server that answers the hot
  set from a dictionary and does nothing else, in as many processes as the node has workers. It
  says what any Python process reaches on this machine in the same run, so the node's cached
  figure can be read against it.

Each figure comes with the CPU the server used (its processes, from ``/proc``) and the CPU the
generator used, since both share the machine's two cores. Benchmarks measure; nothing asserts.

    .venv/bin/python bench/id_resolution.py                         # everything, 1 M records
    .venv/bin/python bench/id_resolution.py --records 100000 --duration 5 --quick
    .venv/bin/python bench/id_resolution.py --workers 1 --no-nsd --profile   # py-spy of the node
    .venv/bin/python bench/id_resolution.py --postgres postgresql://postgres@127.0.0.1/postgres \
        --no-nsd --no-floor --no-http          # the node on PostgreSQL (the scaled store)

Results are printed as a table, written to ``bench/out/id-resolution-<timestamp>.json``, and
printed as one JSON line with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from _ingest_procfs import MachineCpu, cpu_model, sample_process
from tiangong.identity.handle import codec
from tiangong.identity.handle.codec import encode_admin
from tiangong.identity.handle.messages import ResolutionResponse
from tiangong.identity.handle.values import (
    DEFAULT_ADMIN_PERMISSIONS,
    HS_ADMIN,
    AdminRecord,
    HandleRecord,
    HandleValue,
    ValueReference,
)
from tiangong.identity.store import open_store

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
GENERATOR_SOURCE = BENCH / "handle_load.c"
GENERATOR = OUT / "handle_load"
TIANGONG = ROOT / ".venv" / "bin" / "tiangong"
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
PREFIX = "88.100.1"
DNS_ZONE = f"{PREFIX}.id.test"
TIMESTAMP = 1_760_000_000
# Wide enough for the results table when the output is not a terminal.
console = Console(width=max(Console().width, 150))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Resolutions/s and latency of an identifier node (UDP, TCP, HTTP) beside NSD."
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="records loaded")
    parser.add_argument("--hot", type=int, default=1_000, help="handles in the cached (hot) set")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each one")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker counts to measure, comma-separated (if `tiangong idnode` has --workers)",
    )
    parser.add_argument(
        "--outstanding", type=int, default=200, help="UDP queries in flight (dnsperf -q)"
    )
    parser.add_argument("--sockets", type=int, default=16, help="UDP source ports (dnsperf -c)")
    parser.add_argument("--tcp-connections", type=int, default=16, help="TCP connections")
    parser.add_argument(
        "--tcp-outstanding", type=int, default=64, help="TCP requests in flight, all connections"
    )
    parser.add_argument("--http-connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--no-tcp", action="store_true", help="skip TCP")
    parser.add_argument("--no-http", action="store_true", help="skip HTTP")
    parser.add_argument("--no-nsd", action="store_true", help="skip NSD")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="serve the records from PostgreSQL instead of the embedded store: a server URL"
        " (e.g. postgresql://postgres@127.0.0.1/postgres); the database tiangong_idbench is"
        " created afresh on it. Add --no-nsd --no-floor to measure the node alone",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the bare uvloop server answering the hot set from a dict (the Python floor)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="UDP only, no half-load runs (a smoke run)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record py-spy profiles of the node (one worker) under cached and uncached load",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the store and files in this directory (reused if loaded)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------- the data


def handle_name(i: int) -> str:
    return f"{PREFIX}/ID-{i:07d}"


def dns_name(i: int) -> str:
    return f"id-{i:07d}.{DNS_ZONE}"


def url_of(i: int) -> str:
    return f"https://factory.example.com/devices/ID-{i:07d}"


_ADMIN = HandleValue(
    index=100,
    type=HS_ADMIN,
    data=encode_admin(
        AdminRecord(
            admin=ValueReference(f"0.NA/{PREFIX}", 200), permissions=DEFAULT_ADMIN_PERMISSIONS
        )
    ),
    timestamp=TIMESTAMP,
)
_MODELS = ("PUMP-X200", "VALVE-V40", "MOTOR-M7", "SENSOR-T3")


def record(i: int) -> HandleRecord:
    """Device identifier i: a URL, model, serial, maker and production date, and an HS_ADMIN."""
    return HandleRecord(
        handle_name(i),
        (
            HandleValue(1, "URL", url_of(i).encode(), timestamp=TIMESTAMP),
            HandleValue(2, "DEVICE_MODEL", _MODELS[i % 4].encode(), timestamp=TIMESTAMP),
            HandleValue(3, "SERIAL_NO", f"SN{i:010d}".encode(), timestamp=TIMESTAMP),
            HandleValue(4, "MANUFACTURER", b"91310000MA1K4XYZ0A", timestamp=TIMESTAMP),
            HandleValue(5, "PRODUCTION_DATE", b"2026-05-14", timestamp=TIMESTAMP),
            _ADMIN,
        ),
    )


def records(n: int) -> Iterator[HandleRecord]:
    """Device identifiers 0 .. n-1 (``record``)."""
    for i in range(n):
        yield record(i)


async def load_store(target: Path | str, n: int) -> float:
    """Bulk-load ``n`` records into a fresh store (a SQLite path or a PostgreSQL URL); records/s."""
    async with open_store(target) as store:
        with Progress(
            TextColumn("[bold]bulk load[/bold]"),
            BarColumn(bar_width=40),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("load", total=n)
            began = time.perf_counter()
            loaded = await store.bulk_load(
                records(n), progress=lambda k: progress.update(task, completed=k)
            )
            took = time.perf_counter() - began
    if loaded != n:
        console.print(f"[red]loaded {loaded:,} of {n:,} records[/red]")
    return loaded / took


@dataclass
class Workload:
    """The files the generators read."""

    work: Path
    records: int
    hot: list[int]
    hot_handles: Path = field(init=False)
    hot_dns: Path = field(init=False)
    dnsperf_hot: Path = field(init=False)
    dnsperf_random: Path = field(init=False)

    def __post_init__(self) -> None:
        self.hot_handles = self.work / "hot-handles.txt"
        self.hot_dns = self.work / "hot-dns.txt"
        self.dnsperf_hot = self.work / "dnsperf-hot.txt"
        self.dnsperf_random = self.work / "dnsperf-random.txt"

    def write(self) -> None:
        self.hot_handles.write_text("".join(f"{handle_name(i)}\n" for i in self.hot))
        self.hot_dns.write_text("".join(f"{dns_name(i)}\n" for i in self.hot))
        # dnsperf reads its file in order (cycling); shuffled draws make the order random.
        rng = random.Random(11)
        self.dnsperf_hot.write_text(
            "".join(f"{dns_name(rng.choice(self.hot))} TXT\n" for _ in range(200_000))
        )
        draws = min(2_000_000, max(self.records, 200_000))
        with self.dnsperf_random.open("w") as f:
            for _ in range(draws):
                f.write(f"{dns_name(rng.randrange(self.records))} TXT\n")


# ------------------------------------------------------------------------------- probing


def resolution_request(handle: str, request_id: int) -> bytes:
    """A UDP resolution request, as handle_load builds it (identifier-resolution.md §1.14)."""
    body = struct.pack(">I", len(handle)) + handle.encode() + b"\0" * 8
    header = struct.pack(
        ">IIIHBBII", 1, 0, 0x19000000, 0xFFFF, 0, 0, int(time.time()) + 43_200, len(body)
    )
    message = header + body + b"\0\0\0\0"
    envelope = struct.pack(">BBBBIIII", 2, 10, 2, 11, 0, request_id, 0, len(message))
    return envelope + message


def probe_handle(port: int, handle: str, timeout: float = 1.0) -> tuple[int, int] | None:
    """Resolve ``handle`` once over UDP: (values in the answer, answer bytes), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(resolution_request(handle, 7), ("127.0.0.1", port))
            data = sock.recv(65536)
        except OSError:
            return None
    message = codec.decode_message(data)
    if not isinstance(message.body, ResolutionResponse):
        return None
    return len(message.body.values), len(data)


def dns_query(name: str, query_id: int = 7) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + labels + struct.pack(">HH", 16, 1)


def probe_dns(port: int, name: str, timeout: float = 1.0) -> int | None:
    """Ask for ``name`` TXT once: the answer's size if it has an answer, else None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(dns_query(name), ("127.0.0.1", port))
            data = sock.recv(65536)
        except OSError:
            return None
    rcode = data[3] & 0x0F
    answers = struct.unpack(">H", data[6:8])[0]
    return len(data) if rcode == 0 and answers > 0 else None


def free_port() -> int:
    """A port free for both UDP and TCP on the loopback interface right now."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


# ------------------------------------------------------------------------------- processes


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the node's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        sample = sample_process(pid)
        if sample is not None:
            total += sample.cpu_s
    return total


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process we started, then SIGKILL it and its own group if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its group: started with a session of its own
        proc.wait(timeout=5)


def build_generator() -> Path:
    if not GENERATOR.exists() or GENERATOR.stat().st_mtime < GENERATOR_SOURCE.stat().st_mtime:
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(GENERATOR), str(GENERATOR_SOURCE)], check=True
        )
    return GENERATOR


def node_has_workers_flag() -> bool:
    out = subprocess.run(
        [str(TIANGONG), "idnode", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return "--workers" in out.stdout


@dataclass
class Server:
    """A running server under test: its process, ports, and how to read its CPU time."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    http_port: int | None = None
    log: Path | None = None

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)


def fresh_postgres_database(server_url: str) -> str:
    """Create (again) the database ``tiangong_idbench`` on the server of ``server_url``."""
    import psycopg  # noqa: PLC0415 - only for --postgres

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS tiangong_idbench")
        conn.execute("CREATE DATABASE tiangong_idbench")
    parts = urllib.parse.urlsplit(server_url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SystemExit(f"--postgres wants a postgresql:// URL, not {server_url!r}")
    return urllib.parse.urlunsplit(parts._replace(path="/tiangong_idbench"))


def start_node(
    work: Path, workers: int, *, with_flag: bool, store_url: str | None = None
) -> Server:
    port, http_port = free_port(), free_port()
    argv = [
        str(TIANGONG),
        "idnode",
        "--role",
        "enterprise",
        "--prefix",
        PREFIX,
        "--port",
        str(port),
        "--http-port",
        str(http_port),
        "--admin-secret",
        secrets.token_urlsafe(24),
        "--data-dir",
        str(work / "node"),
        # One load generator on one address: the per-source limit would measure itself.
        "--rate-limit",
        "0",
    ]
    if with_flag:
        argv += ["--workers", str(workers)]
    if store_url is not None:
        argv += ["--store", store_url]
    log = work / f"idnode-{workers}.log"
    proc = subprocess.Popen(
        argv,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    on = " on PostgreSQL" if store_url is not None else ""
    server = Server(f"tiangong{on} ({workers} worker{'s' if workers > 1 else ''})", proc, port)
    server.http_port, server.log = http_port, log
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"idnode exited: {log.read_text()[-2000:]}")
        if probe_handle(port, handle_name(0), timeout=0.3) is not None:
            return server
        time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError(f"idnode did not answer on {port}: {log.read_text()[-2000:]}")


def start_floor(work: Path, hot_handles: Path, processes: int) -> Server:
    """The bare uvloop floor (``bench/_uvloop_floor.py``) in ``processes`` processes."""
    port = free_port()
    log = work / f"floor-{processes}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("_uvloop_floor.py")),
            "--port",
            str(port),
            "--handles",
            str(hot_handles),
            "--processes",
            str(processes),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    plural = "es" if processes > 1 else ""
    server = Server(f"uvloop floor ({processes} process{plural})", proc, port)
    server.log = log
    first = hot_handles.read_text().split()[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the uvloop floor exited: {log.read_text()[-2000:]}")
        if probe_handle(port, first, timeout=0.3) is not None:
            time.sleep(0.5)  # the forked servers bind their sockets too
            return server
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError(f"the uvloop floor did not answer on {port}")


NSD_CONF = """server:
    ip-address: 127.0.0.1
    port: {port}
    server-count: {servers}
    reuseport: yes
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    database: ""
    zonelistfile: "{dir}/zone.list"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    logfile: "{dir}/nsd.log"
    hide-version: yes
    verbosity: 1
    tcp-count: 200
    round-robin: no
remote-control:
    control-enable: no
zone:
    name: "{zone}"
    zonefile: "{dir}/zone.db"
"""


def write_zone(directory: Path, n: int) -> None:
    """One TXT record per identifier, its URL as the text: the same answer as a resolution."""
    with (
        Progress(
            TextColumn("[bold]NSD zone[/bold]"),
            BarColumn(bar_width=40),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
        (directory / "zone.db").open("w") as f,
    ):
        task = progress.add_task("zone", total=n)
        f.write(
            f"$ORIGIN {DNS_ZONE}.\n$TTL 86400\n"
            f"@ IN SOA ns.{DNS_ZONE}. admin.{DNS_ZONE}. 1 3600 600 86400 3600\n"
            f"@ IN NS ns.{DNS_ZONE}.\nns IN A 127.0.0.1\n"
        )
        for i in range(n):
            f.write(f'id-{i:07d} IN TXT "{url_of(i)}"\n')
            if i % 50_000 == 0:
                progress.update(task, completed=i)
        progress.update(task, completed=n)


def start_nsd(nsd: str, directory: Path, servers: int) -> Server:
    port = free_port()
    conf = directory / f"nsd-{servers}.conf"
    conf.write_text(NSD_CONF.format(port=port, servers=servers, dir=directory, zone=DNS_ZONE))
    log = directory / f"nsd-{servers}.out"
    proc = subprocess.Popen(
        [nsd, "-d", "-c", str(conf)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"NSD (server-count {servers})", proc, port, log=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nsd exited: {log.read_text()[-2000:]}")
        if probe_dns(port, dns_name(0), timeout=0.3) is not None:
            return server
        time.sleep(0.5)
    stop_process(proc)
    raise RuntimeError(f"nsd did not answer on {port}")


# ------------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    """One row of the results."""

    server: str
    transport: str
    workload: str
    load: str
    tool: str
    figures: dict[str, Any]
    server_cpu: float  # cores, over the measured window
    machine_busy: float  # of all cores, percent

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "transport": self.transport,
            "workload": self.workload,
            "load": self.load,
            "tool": self.tool,
            "server_cpu_cores": round(self.server_cpu, 2),
            "machine_busy_percent": round(self.machine_busy, 1),
            **self.figures,
        }


class Bench:
    """Runs generators against servers and collects rows."""

    def __init__(self, args: argparse.Namespace, workload: Workload) -> None:
        self.args = args
        self.workload = workload
        self.rows: list[Measured] = []
        self.dns_answer_bytes: int | None = None

    def _run(
        self, server: Server, argv: list[str], warmup: float, duration: float
    ) -> tuple[str, float, float]:
        """Run ``argv``; returns its stdout, server CPU in cores and the machine's busy %."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(warmup)
        pids = server.pids()
        cpu0, machine0, t0 = cpu_seconds(pids), MachineCpu.read(), time.monotonic()
        time.sleep(max(duration - 0.2, 0.1))
        cpu1, machine1, t1 = cpu_seconds(pids), MachineCpu.read(), time.monotonic()
        out, errors = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {errors.decode()[-2000:]}")
        busy = (machine1.busy_s - machine0.busy_s) / max(machine1.total_s - machine0.total_s, 1e-9)
        return out.decode(), (cpu1 - cpu0) / (t1 - t0), busy * 100

    def handle_load(
        self,
        server: Server,
        *,
        transport: str,
        workload: str,
        rate: float = 0.0,
        label: str = "",
    ) -> Measured:
        args = self.args
        argv = [str(GENERATOR), "-p", str(server.port), "-l", str(args.duration)]
        argv += ["-w", str(args.warmup), "-L", label or f"{server.name} {workload}"]
        if transport == "tcp":
            argv += ["-m", "tcp", "-c", str(args.tcp_connections), "-q", str(args.tcp_outstanding)]
        else:
            argv += ["-c", str(args.sockets), "-q", str(args.outstanding)]
            if transport == "dns":
                argv += ["-m", "dns"]
        if workload == "cached":
            hot = self.workload.hot_dns if transport == "dns" else self.workload.hot_handles
            argv += ["-f", str(hot)]
        else:
            prefix = DNS_ZONE if transport == "dns" else PREFIX
            argv += ["-g", prefix, "-r", f"0:{self.workload.records}"]
        if rate > 0:
            argv += ["-Q", f"{rate:.0f}"]
        out, cpu, busy = self._run(server, argv, args.warmup, args.duration)
        figures = json.loads(out.strip().splitlines()[-1])
        row = Measured(
            server.name,
            "UDP (DNS)" if transport == "dns" else transport.upper(),
            workload,
            f"{rate:,.0f}/s" if rate > 0 else "max",
            "handle_load",
            figures,
            cpu,
            busy,
        )
        self.rows.append(row)
        self._show(row)
        return row

    def wrk(self, server: Server, *, workload: str) -> Measured | None:
        wrk = shutil.which("wrk")
        if wrk is None or server.http_port is None:
            console.print("[yellow]wrk is not installed (apt-get install wrk): no HTTP figures")
            return None
        args = self.args
        script = self.workload.work / f"wrk-{workload}.lua"
        script.write_text(wrk_script(self.workload, workload))
        argv = [
            wrk,
            "-t1",
            f"-c{args.http_connections}",
            f"-d{args.warmup + args.duration:.0f}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{server.http_port}",
        ]
        out, cpu, busy = self._run(server, argv, args.warmup, args.duration)
        line = next(x for x in out.splitlines() if x.startswith("{"))
        figures = json.loads(line)
        row = Measured(server.name, "HTTP", workload, "max", "wrk", figures, cpu, busy)
        self.rows.append(row)
        self._show(row)
        return row

    def dnsperf(self, server: Server, *, workload: str, rate: float = 0.0) -> Measured:
        args = self.args
        data = self.workload.dnsperf_hot if workload == "cached" else self.workload.dnsperf_random
        argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d", str(data)]
        argv += ["-l", f"{args.warmup + args.duration:.0f}", "-c", str(args.sockets)]
        argv += ["-q", str(args.outstanding), "-t", "2"]
        if rate > 0:
            argv += ["-Q", f"{rate:.0f}"]
        out, cpu, busy = self._run(server, argv, args.warmup, args.duration)
        figures = parse_dnsperf(out)
        row = Measured(
            server.name,
            "UDP (DNS)",
            workload,
            f"{rate:,.0f}/s" if rate > 0 else "max",
            "dnsperf",
            figures,
            cpu,
            busy,
        )
        self.rows.append(row)
        self._show(row)
        return row

    def _show(self, row: Measured) -> None:
        f = row.figures
        lost = f.get("lost", 0)
        console.print(
            f"  {row.server:<26} {row.transport:<9} {row.workload:<8} {row.load:>10} "
            f"[bold]{f.get('qps', 0):>10,.0f}/s[/bold]  p50 {_us(f.get('p50_us'))}"
            f"  p99 {_us(f.get('p99_us'))}  lost {lost:,}  server {row.server_cpu:.2f} cores"
            f"  ({row.tool})"
        )


def wrk_script(workload: Workload, kind: str) -> str:
    """A wrk script drawing handles like handle_load, printing a JSON summary at the end."""
    if kind == "cached":
        names = ", ".join(f'"{handle_name(i)}"' for i in workload.hot)
        pick = (
            f"local names = {{{names}}}\n"
            "local function pick() return names[math.random(#names)] end"
        )
    else:
        pick = (
            f"local function pick() return string.format('{PREFIX}/ID-%07d',"
            f" math.random(0, {workload.records - 1})) end"
        )
    return f"""{pick}
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/handles/" .. pick(), {{["Accept"] = "application/json"}})
end
done = function(summary, latency, requests)
  local s = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{{"sent":%d,"received":%d,"lost":%d,"non_2xx":%d,"qps":%.1f,"mean_us":%.1f,' ..
    '"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"max_us":%.1f,"seconds":%.3f}}\\n',
    summary.requests, summary.requests - e.status, e.connect + e.read + e.write + e.timeout,
    e.status, summary.requests / s, latency.mean, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, s))
end
"""


def parse_dnsperf(out: str) -> dict[str, Any]:
    """The figures of dnsperf's summary (it reports the mean latency, not percentiles)."""

    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        return float(match.group(1)) if match else 0.0

    return {
        "sent": int(number(r"Queries sent:\s+(\d+)")),
        "received": int(number(r"Queries completed:\s+(\d+)")),
        "lost": int(number(r"Queries lost:\s+(\d+)")),
        "qps": number(r"Queries per second:\s+([\d.]+)"),
        "mean_us": number(r"Average Latency \(s\):\s+([\d.]+)") * 1e6,
        "max_us": number(r"Average Latency \(s\):\s+[\d.]+ \(min [\d.]+, max ([\d.]+)\)") * 1e6,
        "stddev_us": number(r"Latency StdDev \(s\):\s+([\d.]+)") * 1e6,
        "noerror": int(number(r"NOERROR (\d+)")),
    }


def _us(value: Any) -> str:
    if value is None:
        return "     -"
    v = float(value)
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


# ------------------------------------------------------------------------------- profiling


def profile_node(bench: Bench, server: Server, workload: str) -> dict[str, Any]:
    """py-spy on the node while handle_load runs at full speed: where the time goes."""
    if not PY_SPY.exists():
        raise SystemExit(f"--profile needs py-spy at {PY_SPY}: make .venv/.installed-dev")
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    raw = OUT / f"id-resolution-{workload}-{stamp}.txt"
    svg = OUT / f"id-resolution-{workload}-{stamp}.svg"
    seconds = max(int(bench.args.duration) - 2, 3)
    argv = [str(GENERATOR), "-p", str(server.port), "-l", str(seconds + 3), "-L", "profile"]
    argv += ["-c", str(bench.args.sockets), "-q", str(bench.args.outstanding)]
    if workload == "cached":
        argv += ["-f", str(bench.workload.hot_handles)]
    else:
        argv += ["-g", PREFIX, "-r", f"0:{bench.workload.records}"]
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    spy = [str(PY_SPY), "record", "-p", str(server.proc.pid), "-d", str(seconds), "-r", "250"]
    spy += ["--subprocesses", "--nonblocking"]
    subprocess.run([*spy, "-f", "raw", "-o", str(raw)], capture_output=True, check=False)
    load.communicate()
    summary = summarize_collapsed(raw) if raw.exists() else {}
    summary["raw"] = str(raw)
    # A flame graph from the same kind of run, for reading by eye.
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    subprocess.run([*spy, "-o", str(svg)], capture_output=True, check=False)
    load.communicate()
    summary["flamegraph"] = str(svg)
    return summary


def summarize_collapsed(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of functions from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(f) for f in stack.split(";")[1:]]  # first frame: the process/thread
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = 100 / max(total, 1)
    return {
        "samples": total,
        "self": [(f, round(c * share, 1)) for f, c in own.most_common(top)],
        "inclusive": [(f, round(c * share, 1)) for f, c in inclusive.most_common(top)],
    }


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    return f"{match.group(1)} ({Path(match.group(2)).name})"


# ------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    model = cpu_model()
    versions: dict[str, str] = {}
    for tool, argv in {
        "nsd": ["nsd", "-v"],
        "dnsperf": ["dnsperf", "-h"],
        "wrk": ["wrk", "--version"],
        "gcc": ["gcc", "--version"],
    }.items():
        if shutil.which(argv[0]) is None:
            versions[tool] = "not installed"
            continue
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
        text = (out.stdout + out.stderr).strip().splitlines()
        picked = [x for x in text if "ersion" in x or x.startswith(("NSD", "wrk", "gcc"))]
        versions[tool] = (picked or text or ["unknown"])[0].strip()
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        **versions,
    }


def report(doc: dict[str, Any]) -> None:
    table = Table(
        title=f"Identifier resolution, {doc['records']:,} records, hot set {doc['hot']:,}",
        title_justify="left",
    )
    for column, justify in (
        ("server", "left"),
        ("transport", "left"),
        ("records", "left"),
        ("load", "right"),
        ("answers/s", "right"),
        ("p50", "right"),
        ("p99", "right"),
        ("max", "right"),
        ("lost", "right"),
        ("ok %", "right"),
        ("server CPU", "right"),
        ("gen CPU", "right"),
        ("tool", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in doc["results"]:
        received = r.get("received", 0) or 0
        ok = r.get("ok", r.get("noerror", received - r.get("non_2xx", 0)))
        gen_cpu = r.get("generator_cpu_s")
        table.add_row(
            r["server"],
            r["transport"],
            r["workload"],
            r["load"],
            f"{r.get('qps', 0):,.0f}",
            _us(r.get("p50_us")),
            _us(r.get("p99_us")),
            _us(r.get("max_us")),
            f"{r.get('lost', 0):,}",
            f"{100 * ok / received:.1f}" if received else "-",
            f"{r['server_cpu_cores']:.2f}",
            f"{gen_cpu / r['seconds']:.2f}" if gen_cpu is not None and r.get("seconds") else "-",
            r["tool"],
        )
    console.print(table)
    m = doc["machine"]
    console.print(
        f"[dim]{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']};"
        f" {m['nsd']}; dnsperf {m['dnsperf']}; {m['wrk']}. Node workers flag:"
        f" {'yes' if doc['workers_flag'] else 'no (one worker)'}. One answer: {doc['answer_bytes']}"
        f" bytes over UDP ({doc['answer_values']} values); NSD's: {doc.get('dns_answer_bytes')}"
        f" bytes.[/dim]"
    )
    for name, profile in doc.get("profiles", {}).items():
        console.print(f"[bold]py-spy, {name}[/bold] ({profile.get('samples', 0)} samples)")
        for frame, share in profile.get("self", [])[:12]:
            console.print(f"  self {share:5.1f} %  {frame}")
        for frame, share in profile.get("inclusive", [])[:12]:
            console.print(f"  incl {share:5.1f} %  {frame}")
        console.print(f"  [dim]{profile.get('raw')} {profile.get('flamegraph')}[/dim]")


# ------------------------------------------------------------------------------- main


def measure_node(bench: Bench, server: Server) -> None:
    args = bench.args
    for workload in ("cached", "uncached"):
        top = bench.handle_load(server, transport="udp", workload=workload)
        if not args.quick:
            bench.handle_load(
                server, transport="udp", workload=workload, rate=top.figures["qps"] / 2
            )
    if args.quick:
        return
    if not args.no_tcp:
        for workload in ("cached", "uncached"):
            bench.handle_load(server, transport="tcp", workload=workload)
    if not args.no_http:
        for workload in ("cached", "uncached"):
            bench.wrk(server, workload=workload)


def measure_nsd(bench: Bench, servers: int) -> Server | None:
    nsd = shutil.which("nsd") or ("/usr/sbin/nsd" if Path("/usr/sbin/nsd").exists() else None)
    if nsd is None or shutil.which("dnsperf") is None:
        console.print(
            "[yellow]NSD or dnsperf is not installed: no NSD figures. On Debian:"
            " apt-get install nsd dnsperf (the script starts its own nsd; the system service"
            " is not used).[/yellow]"
        )
        return None
    directory = bench.workload.work / "nsd"
    directory.mkdir(exist_ok=True)
    if not (directory / "zone.db").exists():
        write_zone(directory, bench.workload.records)
    with console.status(f"starting NSD (server-count {servers}) and loading its zone"):
        server = start_nsd(nsd, directory, servers)
    bench.dns_answer_bytes = probe_dns(server.port, dns_name(bench.workload.hot[0]))
    try:
        for workload in ("cached", "uncached"):
            top = bench.dnsperf(server, workload=workload)
            if not bench.args.quick:
                bench.dnsperf(server, workload=workload, rate=top.figures["qps"] / 2)
            top = bench.handle_load(server, transport="dns", workload=workload)
            if not bench.args.quick:
                bench.handle_load(
                    server, transport="dns", workload=workload, rate=top.figures["qps"] / 2
                )
    finally:
        stop_process(server.proc)
    return server


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    build_generator()
    info = machine()
    console.print(
        f"[dim]{info['cpu']}, {info['cores']} cores, Linux {info['kernel']},"
        f" Python {info['python']}[/dim]"
    )
    store_path = work / "node" / "handles.sqlite3"
    load_rate = None
    marker = work / "loaded"
    store_url = None
    if args.postgres:
        store_url = fresh_postgres_database(args.postgres)
        (work / "node").mkdir(parents=True, exist_ok=True)
        load_rate = asyncio.run(load_store(store_url, args.records))
        console.print(f"loaded {args.records:,} records into PostgreSQL at {load_rate:,.0f}/s")
    elif marker.exists() and marker.read_text().strip() == str(args.records):
        console.print(f"reusing the {args.records:,} records in {store_path}")
    else:
        if store_path.parent.exists():
            shutil.rmtree(store_path.parent)
        store_path.parent.mkdir(parents=True)
        load_rate = asyncio.run(load_store(store_path, args.records))
        marker.write_text(str(args.records))
        console.print(f"loaded {args.records:,} records at {load_rate:,.0f} records/s")
    hot = random.Random(3).sample(range(args.records), min(args.hot, args.records))
    workload = Workload(work, args.records, hot)
    workload.write()
    bench = Bench(args, workload)

    with_flag = node_has_workers_flag()
    worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    if not with_flag:
        console.print(
            "[yellow]`tiangong idnode` has no --workers flag yet: measuring one worker.[/yellow]"
        )
        worker_counts = [1]
    doc: dict[str, Any] = {
        "benchmark": "id_resolution",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": args.records,
        "store": "postgresql" if args.postgres else "sqlite",
        "hot": len(hot),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "outstanding": args.outstanding,
        "sockets": args.sockets,
        "load_records_per_s": load_rate,
        "workers_flag": with_flag,
        "machine": info,
        "load_average_before": Path("/proc/loadavg").read_text().split()[:3],
        "profiles": {},
    }
    for workers in worker_counts:
        with console.status(f"starting tiangong idnode ({workers} worker(s))"):
            server = start_node(work, workers, with_flag=with_flag, store_url=store_url)
        try:
            probe = probe_handle(server.port, handle_name(hot[0]))
            if probe is not None:
                doc["answer_values"], doc["answer_bytes"] = probe
            console.print(f"[bold]{server.name}[/bold] on port {server.port}")
            measure_node(bench, server)
            if args.profile and workers == 1:
                for kind in ("cached", "uncached"):
                    with console.status(f"py-spy on the node, {kind}"):
                        doc["profiles"][kind] = profile_node(bench, server, kind)
        finally:
            stop_process(server.proc)
    if not args.no_floor:
        for processes in worker_counts:
            with console.status(f"starting the uvloop floor ({processes} process(es))"):
                floor = start_floor(work, workload.hot_handles, processes)
            try:
                top = bench.handle_load(floor, transport="udp", workload="cached")
                if not args.quick:
                    bench.handle_load(
                        floor, transport="udp", workload="cached", rate=top.figures["qps"] / 2
                    )
            finally:
                stop_process(floor.proc)
    if not args.no_nsd:
        for servers in worker_counts:
            nsd = measure_nsd(bench, servers)
            if nsd is None:
                break
        doc["dns_answer_bytes"] = bench.dns_answer_bytes
    doc["results"] = [row.as_dict() for row in bench.rows]
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        doc = run(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="tiangong-idres-") as tmp:
            doc = run(args, Path(tmp))
    doc.setdefault("answer_bytes", None)
    doc.setdefault("answer_values", None)
    report(doc)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"id-resolution-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2))
    console.print(f"[dim]written to {path}[/dim]")
    if args.json:
        print(json.dumps(doc, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the ingest benchmark reads from ``/proc``: CPU time and memory of processes, the machine.

Linux only, and no third-party dependency: a process's CPU seconds come from
``/proc/<pid>/stat`` (user + system time, all threads), its resident and peak resident memory
from ``VmRSS`` and ``VmHWM`` in ``/proc/<pid>/status``, the machine's busy time from
``/proc/stat``. A process that has exited reads as ``None``.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "MachineCpu",
    "ProcessSample",
    "dir_bytes",
    "free_port",
    "machine_info",
    "pid_listening_on",
    "sample_process",
    "thread_cpu",
]

_TICKS: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One reading of a process.

    Attributes:
        cpu_s: user + system CPU seconds used so far (all threads).
        rss_kb: resident memory now, in KiB.
        hwm_kb: peak resident memory so far, in KiB.
    """

    cpu_s: float
    rss_kb: int
    hwm_kb: int


def _cpu_seconds(stat: str) -> float:
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def sample_process(pid: int) -> ProcessSample | None:
    """CPU time and memory of ``pid``, or ``None`` if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    memory = {"VmRSS": 0, "VmHWM": 0}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in memory:
            memory[key] = int(value.split()[0])
    return ProcessSample(_cpu_seconds(stat), memory["VmRSS"], memory["VmHWM"])


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` (thread id -> seconds; the main thread's id is pid)."""
    result: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return result
    for tid in tids:
        try:
            result[int(tid)] = _cpu_seconds(Path(f"/proc/{pid}/task/{tid}/stat").read_text())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return result


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """Busy and total CPU time of the whole machine (all cores), in seconds."""

    busy_s: float
    total_s: float

    @classmethod
    def read(cls) -> MachineCpu:
        """Read ``/proc/stat``."""
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is already in user).
        total = sum(fields[:8])
        idle = fields[3] + fields[4]
        return cls((total - idle) / _TICKS, total / _TICKS)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_listening_on(port: int) -> int | None:
    """The process listening on TCP ``port`` (needs permission to read other processes' fds)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue
    return None


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except FileNotFoundError:
                continue
    return total


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(mosquitto: str | None, influxd: str | None) -> dict[str, str | int | float]:
    """The machine a run measured: CPU model, cores, memory, Python, broker and InfluxDB."""
    model = cpu_model()
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
            break
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": _version([mosquitto, "-h"]) if mosquitto else "not installed",
        "influxdb": _version([influxd, "version"]) if influxd else "not installed",
    }

"""Edge gateway throughput: points per second through one gateway process, device to broker.

What is measured:

- simulated devices in processes of their own: Modbus TCP servers (pymodbus) with
  ``--modbus-devices`` register banks of ``--registers`` holding registers, and an OPC UA
  server (asyncua) with ``--opcua-devices`` objects of ``--opcua-variables`` variables that all
  change every ``--opcua-interval-ms``;
- one edge gateway process, ``EdgeGateway`` as ``tiangong edge`` runs it (uvloop): it polls
  every Modbus device every ``--poll-ms`` (one connection per device, 125 registers per
  request), subscribes to every OPC UA variable, batches every ``--flush-ms`` into frames, writes
  each frame to its SQLite forward buffer and publishes it (MQTT 5, QoS 1) to a Mosquitto broker
  of the benchmark's own on a free port;
- a subscriber process on the platform side of the broker counts the points of every frame
  that arrives, so the delivered figure is counted at the far side of the broker, not assumed.

Reported over the measured window (after ``--warmup``): points/s read by the gateway, points/s
delivered through the broker, frames/s, the gateway's CPU (one core = 100 %) and memory (RSS at
the end of the window, peak ``VmHWM``) from ``/proc``, the CPU of the devices, the broker and the
subscriber, and the read-to-arrival latency (a frame row's timestamp is when the gateway read
it; the subscriber compares it with its clock on arrival, so it includes the ``--flush-ms``
batching). At the end the devices stop, the gateway delivers what it still holds, and the
subscriber's total is compared with the points the gateway published (less its own health
figures): they must be equal. Points read can exceed points sent by the values the frame builder
merges: two readings of one device at the same millisecond (an OPC UA probe snapshot stamped in
the same millisecond as a change the server reported) make one row.

At the defaults the devices offer 130,000 points/s, above the issue's target of 100,000, and the
figures say what that costs. ``read`` is the gateway's capacity only when the offered load
(devices x registers / poll interval) exceeds it, as with ``--modbus-devices 200``: a coordinator
that cannot keep its poll interval skips ticks. ``--gc-freeze`` runs the gateway with
``gc.freeze()`` once it is up, which ``tiangong edge`` does not do (yet). With ``--profile`` the
gateway runs under cProfile (slower: read the figures for where the time goes, not for the rate).

    .venv/bin/python bench/gateway_throughput.py                 # 30 s at the defaults
    .venv/bin/python bench/gateway_throughput.py --quick         # a smoke run of a few seconds
    .venv/bin/python bench/gateway_throughput.py --modbus-devices 80 --registers 500 --poll-ms 200
    .venv/bin/python bench/gateway_throughput.py --profile       # where the gateway's time goes

Results are printed and written to ``bench/out/gateway-throughput-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from rich.console import Console
from rich.table import Table

from _edge_children import CHILDREN, GATEWAY_ID, SITE, TENANT, run_child
from _ingest_procfs import MachineCpu, ProcessSample, machine_info, sample_process
from _ingest_servers import Child, ChildError, OwnMosquitto, mosquitto_binary
from tiangong.edge.config import EdgeConfig
from tiangong.network.access import Channel, DeviceTopic

SCRIPT: Final = str(Path(__file__).resolve())
OUT_DIR: Final = Path(__file__).resolve().parent / "out"
#: Seconds the gateway is given to deliver what it holds once the devices stopped.
SETTLE_S: Final = 60.0
#: Seconds the gateway may take to stop once told to.
STOP_S: Final = 60.0
#: Registers in one Modbus read request (the protocol's limit, ``plan_reads`` uses it).
REGISTERS_PER_REQUEST: Final = 125


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=(
            "Measure points per second through one edge gateway process: Modbus TCP polls and"
            " OPC UA subscriptions in, frames through the forward buffer to a real Mosquitto,"
            " counted by a subscriber on the far side."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    run.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    run.add_argument(
        "--quick", action="store_true", help="a smoke run: 5 s, a small plant (overrides sizes)"
    )
    modbus = parser.add_argument_group("Modbus TCP devices (polled)")
    modbus.add_argument("--modbus-devices", type=int, default=50, help="devices (0: none)")
    modbus.add_argument("--registers", type=int, default=250, help="registers per device")
    modbus.add_argument("--poll-ms", type=int, default=100, help="poll interval")
    opcua = parser.add_argument_group("OPC UA devices (subscribed)")
    opcua.add_argument("--opcua-devices", type=int, default=2, help="devices (0: none)")
    opcua.add_argument("--opcua-variables", type=int, default=250, help="variables per device")
    opcua.add_argument(
        "--opcua-interval-ms", type=int, default=100, help="every variable changes this often"
    )
    gateway = parser.add_argument_group("gateway")
    gateway.add_argument("--flush-ms", type=int, default=200, help="[uplink] flush_ms")
    gateway.add_argument(
        "--profile", action="store_true", help="run the gateway under cProfile (bench/out/*.pstats)"
    )
    gateway.add_argument(
        "--gc-freeze",
        action="store_true",
        help=(
            "gc.freeze() in the gateway process once it is up (not what `tiangong edge` does"
            " today: shows what doing so would change)"
        ),
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory for JSON results")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 5.0, 2.0
        args.modbus_devices, args.registers, args.poll_ms = 10, 250, 100
        args.opcua_devices, args.opcua_variables, args.opcua_interval_ms = 1, 50, 100
    if args.modbus_devices < 0 or args.opcua_devices < 0:
        parser.error("device counts cannot be negative")
    if args.modbus_devices + args.opcua_devices == 0:
        parser.error("no devices: nothing to measure")
    if not 1 <= args.registers <= 65536 or args.opcua_variables < 1:
        parser.error("--registers must be within 1..65536, --opcua-variables at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def gateway_config(
    args: argparse.Namespace,
    *,
    data_dir: Path,
    mqtt_port: int,
    modbus_ports: list[int],
    opcua_endpoint: str | None,
    opcua_namespace: int,
) -> EdgeConfig:
    """The gateway's configuration for this run (every point sent; no deadband or window)."""
    devices: list[dict[str, Any]] = [
        {
            "id": f"dev-mb-{d:04d}",
            "protocol": "modbus",
            "host": "127.0.0.1",
            "port": modbus_ports[d // 247],
            "unit": d % 247 + 1,
            "poll_ms": args.poll_ms,
            "timeout_ms": 2000,
            "points": [
                {"property": f"r{i}", "address": i, "type": "uint16"} for i in range(args.registers)
            ],
        }
        for d in range(args.modbus_devices)
    ]
    if opcua_endpoint is not None:
        for d in range(args.opcua_devices):
            device = f"dev-ua-{d:03d}"
            devices.append(
                {
                    "id": device,
                    "protocol": "opcua",
                    "endpoint": opcua_endpoint,
                    "timeout_ms": 10_000,
                    "points": [
                        {
                            "property": f"v{v}",
                            "node": f"ns={opcua_namespace};s={device}.v{v}",
                            "sampling_ms": args.opcua_interval_ms,
                        }
                        for v in range(args.opcua_variables)
                    ],
                }
            )
    return EdgeConfig.model_validate(
        {
            "gateway": {"id": GATEWAY_ID, "tenant": TENANT, "site": SITE, "data_dir": data_dir},
            "uplink": {"host": "127.0.0.1", "port": mqtt_port, "flush_ms": args.flush_ms},
            "devices": devices,
        }
    )


def offered_rate(args: argparse.Namespace) -> float:
    """Points per second the devices offer (every register each poll, every change)."""
    modbus = args.modbus_devices * args.registers * 1000 / args.poll_ms
    opcua = args.opcua_devices * args.opcua_variables * 1000 / args.opcua_interval_ms
    return modbus + opcua


def rate_between(child: Child, key: str, first: float, last: float) -> float | None:
    """Slope of a child's counter between two times (its first and last stats inside)."""
    inside = [(s["t"], s[key]) for s in child.stats if first <= s["t"] <= last]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.5:
        return None
    (t0, v0), (t1, v1) = inside[0], inside[-1]
    return float((v1 - v0) / (t1 - t0))


def _kind_rate(child: Child, kind: str, first: float, last: float) -> float | None:
    inside = [(s["t"], s["by_kind"].get(kind, 0)) for s in child.stats if first <= s["t"] <= last]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.5:
        return None
    (t0, v0), (t1, v1) = inside[0], inside[-1]
    return float((v1 - v0) / (t1 - t0))


def _cpu_share(before: ProcessSample | None, after: ProcessSample | None, seconds: float) -> Any:
    if before is None or after is None or seconds <= 0:
        return None
    return round((after.cpu_s - before.cpu_s) / seconds * 100, 1)


class ThroughputBenchmark:
    """One run: broker, devices, subscriber, gateway; measure; stop devices; settle; verify.

    Args:
        args: the parsed command line.
        console: where progress and results go.
    """

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.workdir = Path(tempfile.mkdtemp(prefix="tiangong-edge-throughput-"))
        mosquitto = mosquitto_binary()
        if mosquitto is None:
            raise ChildError("mosquitto is not installed (Debian package 'mosquitto')")
        self.mosquitto = mosquitto

    def _child(self, name: str, *argv: str) -> Child:
        return Child(
            name,
            [sys.executable, SCRIPT, f"_{name}", *argv],
            self.workdir / f"{name}.log",
        )

    async def run(self) -> dict[str, Any]:
        """Run the benchmark; returns the results."""
        args = self.args
        async with AsyncExitStack() as stack:
            stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
            broker = OwnMosquitto(self.workdir / "mosquitto", self.mosquitto)
            broker.start()
            stack.callback(broker.stop)
            await asyncio.to_thread(broker.wait_ready)
            children: list[Child] = []

            async def start(child: Child) -> Child:
                await child.start()
                children.append(child)
                return child

            stack.push_async_callback(lambda: asyncio.gather(*(c.terminate(5) for c in children)))
            modbus = opcua = None
            modbus_ports: list[int] = []
            endpoint, namespace = None, 2
            if args.modbus_devices:
                modbus = await start(
                    self._child(
                        "modbus",
                        "--devices",
                        str(args.modbus_devices),
                        "--registers",
                        str(args.registers),
                    )
                )
            if args.opcua_devices:
                opcua = await start(
                    self._child(
                        "opcua",
                        "--devices",
                        str(args.opcua_devices),
                        "--variables",
                        str(args.opcua_variables),
                        "--interval-ms",
                        str(args.opcua_interval_ms),
                    )
                )
            if modbus is not None:
                modbus_ports = (await modbus.expect("ready", 60))["ports"]
            if opcua is not None:
                ready = await opcua.expect("ready", 300)
                endpoint, namespace = ready["endpoint"], ready["namespace"]
            config = gateway_config(
                args,
                data_dir=self.workdir / "edge",
                mqtt_port=broker.port,
                modbus_ports=modbus_ports,
                opcua_endpoint=endpoint,
                opcua_namespace=namespace,
            )
            config_path = self.workdir / "edge.json"
            config_path.write_text(config.model_dump_json())
            topic = DeviceTopic.build(TENANT, SITE, GATEWAY_ID, Channel.TELEMETRY)
            subscriber = await start(
                self._child(
                    "subscriber",
                    "--mqtt-port",
                    str(broker.port),
                    "--topic",
                    topic,
                    "--client-id",
                    "bench-subscriber",
                )
            )
            await subscriber.expect("ready", 30)
            args.out.mkdir(parents=True, exist_ok=True)
            profile = args.out / f"gateway-throughput-{self.stamp}.pstats" if args.profile else None
            gateway = await start(
                self._child(
                    "gateway",
                    "--config",
                    str(config_path),
                    *(["--profile", str(profile)] if profile else []),
                    *(["--gc-freeze"] if args.gc_freeze else []),
                )
            )
            started = await gateway.expect("started", 120)
            pids = {
                "gateway": int(started["pid"]),
                "broker": broker.pid,
                "subscriber": subscriber.pid,
                **({"modbus servers": modbus.pid} if modbus else {}),
                **({"OPC UA server": opcua.pid} if opcua else {}),
            }
            self.console.print(
                f"gateway up in {started['seconds']:.1f}s with {len(config.devices)} devices;"
                f" warming up for {args.warmup:g}s"
            )
            await asyncio.sleep(args.warmup)
            subscriber.send("mark")
            gateway.send("mark")
            t0 = time.monotonic()
            cpu0 = {name: sample_process(pid) for name, pid in pids.items()}
            machine0 = MachineCpu.read()
            await self._progress(gateway, subscriber, t0, args.duration)
            t1 = time.monotonic()
            cpu1 = {name: sample_process(pid) for name, pid in pids.items()}
            machine1 = MachineCpu.read()
            window = t1 - t0
            gateway.send("window-end")
            lag = await gateway.expect("loop_lag", 30)
            result: dict[str, Any] = {
                "offered_points_per_s": round(offered_rate(args)),
                "read_points_per_s": rate_between(gateway, "points_in", t0, t1),
                "delivered_points_per_s": rate_between(subscriber, "points", t0, t1),
                "frames_per_s": rate_between(subscriber, "frames", t0, t1),
                "bytes_per_s": rate_between(subscriber, "bytes", t0, t1),
                "window_s": round(window, 2),
                "gateway_rss_mib": round((cpu1["gateway"].rss_kb if cpu1["gateway"] else 0) / 1024),
                "cpu_percent": {name: _cpu_share(cpu0[name], cpu1[name], window) for name in pids},
                "machine_busy_percent": round(
                    (machine1.busy_s - machine0.busy_s)
                    / max(machine1.total_s - machine0.total_s, 1e-9)
                    * 100,
                    1,
                ),
                "readings_dropped": gateway.latest.get("readings_dropped", 0),
                "loop_lag_ms": {k: round(lag[k], 1) for k in ("p50", "p99", "max")},
                "gc": lag["gc"],
                "delivered_by_kind_per_s": {
                    kind: round(rate)
                    for kind in subscriber.latest.get("by_kind", {})
                    if (rate := _kind_rate(subscriber, kind, t0, t1)) is not None
                },
            }
            points = result["delivered_points_per_s"]
            frames = result["frames_per_s"]
            if points and frames:
                result["points_per_frame"] = round(points / frames)
            hwm = sample_process(pids["gateway"])
            result["gateway_peak_rss_mib"] = round(hwm.hwm_kb / 1024) if hwm else None
            # The devices stop; whatever the gateway read must arrive, exactly.
            for device_server in (modbus, opcua):
                if device_server is not None:
                    device_server.send("stop")
            for device_server in (modbus, opcua):
                if device_server is not None:
                    await device_server.expect("stopped", 30)
            result.update(await self._settle(gateway, subscriber))
            stop_began = time.monotonic()
            gateway.send("stop")
            try:
                stopped = await gateway.expect("stopped", STOP_S)
            except ChildError:
                # Reported, not fatal: the figures are in; its log says what it waited for.
                self.console.print(
                    f"[yellow]the gateway did not stop within {STOP_S:g}s;"
                    f" the end of its log:[/yellow]\n{_log_tail(gateway.log)}"
                )
                stopped = {}
            else:
                result["gateway_stop_s"] = round(time.monotonic() - stop_began, 1)
            if stopped:
                result["gateway_peak_rss_mib"] = round(stopped["hwm_kb"] / 1024)
            result["profile"] = stopped.get("profile")
            result["profile_file"] = str(profile) if profile else None
        return result

    async def _progress(self, gateway: Child, subscriber: Child, t0: float, seconds: float) -> None:
        """Wait out the window, printing the rates every few seconds."""
        end = t0 + seconds
        step = max(1.0, min(5.0, seconds / 6))
        before = (gateway.latest, subscriber.latest)
        while (now := time.monotonic()) < end:
            await asyncio.sleep(min(step, end - now))
            after = (gateway.latest, subscriber.latest)
            read, delivered = (
                (a[key] - b[key]) / max(a["t"] - b["t"], 1e-9)
                for a, b, key in zip(after, before, ("points_in", "points"), strict=True)
            )
            self.console.print(
                f"  {time.monotonic() - t0:5.1f}s  read {read:>10,.0f} points/s"
                f"  delivered {delivered:>10,.0f} points/s"
                f"  buffered {after[0].get('buffer_points', 0):>9,}"
            )
            before = after

    async def _settle(self, gateway: Child, subscriber: Child) -> dict[str, Any]:
        """Wait until the subscriber has every point the gateway read (or ``SETTLE_S``)."""
        deadline = time.monotonic() + SETTLE_S
        quiet_since = time.monotonic()
        last_read = -1
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            read = int(gateway.latest.get("points_in", 0))
            if read != last_read:
                last_read, quiet_since = read, time.monotonic()
            # Reads have stopped for longer than a flush, and everything read has arrived.
            received = int(subscriber.latest.get("points", 0))
            if time.monotonic() - quiet_since > 1.0 and received >= read:
                break
        subscriber.send("finish")
        finished = await subscriber.expect("finished", 60)
        await asyncio.sleep(0.5)  # a stats line from after the last frame
        read = int(gateway.latest.get("points_in", 0))
        # What the gateway published, less its own health figures (which the subscriber saw).
        framed = int(gateway.latest.get("sent_points", 0)) - int(finished["other_points"])
        return {
            "total_read": read,
            "total_framed": framed,
            "total_delivered": finished["points"],
            "read_equals_delivered": finished["points"] == read,
            "framed_equals_delivered": finished["points"] == framed,
            "duplicate_frames": finished["duplicate_frames"],
            "latency_ms": finished["latency_ms"],
        }


def _log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{suffix}" if abs(value) < 100 else f"{value:,.0f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value}{suffix}"


def report(console: Console, doc: dict[str, Any]) -> None:
    """Print the results table and the machine."""
    r = doc["result"]
    run = doc["run"]
    table = Table(title="Edge gateway throughput", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("offered by the devices (points/s)", _fmt(r["offered_points_per_s"]))
    table.add_row("[bold]read by the gateway (points/s)[/bold]", _fmt(r["read_points_per_s"]))
    table.add_row(
        "[bold]delivered through the broker (points/s)[/bold]", _fmt(r["delivered_points_per_s"])
    )
    kinds = r.get("delivered_by_kind_per_s") or {}
    names = {"dev-mb": "Modbus", "dev-ua": "OPC UA"}
    table.add_row(
        "  of which (points/s)",
        ", ".join(f"{names.get(k, k)} {v:,}" for k, v in sorted(kinds.items())),
    )
    table.add_row(
        "frames/s (points per frame)",
        f"{_fmt(r['frames_per_s'])} ({_fmt(r.get('points_per_frame'))})",
    )
    table.add_row("MB/s of frames", _fmt((r["bytes_per_s"] or 0) / 1e6))
    latency = r.get("latency_ms") or {}
    table.add_row(
        "read-to-subscriber latency p50 / p99 / max (ms)",
        f"{_fmt(latency.get('p50'))} / {_fmt(latency.get('p99'))} / {_fmt(latency.get('max'))}",
    )
    for name, share in r["cpu_percent"].items():
        table.add_row(f"CPU of {name} (% of one core)", _fmt(share, " %"))
    lag = r.get("loop_lag_ms") or {}
    table.add_row(
        "gateway event-loop lag p50 / p99 / max (ms)",
        f"{_fmt(lag.get('p50'))} / {_fmt(lag.get('p99'))} / {_fmt(lag.get('max'))}",
    )
    full = (r.get("gc") or {}).get("2") or {}
    table.add_row(
        "gateway full GC collections: count, total, longest (ms)",
        f"{_fmt(full.get('count'))}, {_fmt(full.get('total_ms'))}, {_fmt(full.get('max_ms'))}",
    )
    table.add_row("machine busy (all cores)", _fmt(r["machine_busy_percent"], " %"))
    table.add_row(
        "gateway RSS / peak (MiB)", f"{r['gateway_rss_mib']} / {r['gateway_peak_rss_mib']}"
    )
    table.add_row("readings dropped (processing behind)", _fmt(r["readings_dropped"]))
    table.add_row(
        "gateway stop (s)",
        _fmt(r.get("gateway_stop_s"), "")
        if r.get("gateway_stop_s") is not None
        else f"[yellow]over {STOP_S:g}[/yellow]",
    )
    table.add_row(
        "sent = delivered, after the devices stopped",
        f"{'yes' if r['framed_equals_delivered'] else '[red]NO[/red]'}"
        f" ({r['total_framed']:,} sent, {r['total_delivered']:,} delivered)",
    )
    table.add_row(
        "read, of which merged (same device, property, time)",
        f"{r['total_read']:,}, {r['total_read'] - r['total_framed']:,}",
    )
    console.print(table)
    machine = doc["machine"]
    console.print(
        f"[dim]{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB,"
        f" Linux {machine['kernel']}, Python {machine['python']}, {machine['mosquitto']};"
        f" load average {doc['load_before'][0]:.2f} before, {doc['load_after'][0]:.2f} after[/dim]"
    )
    console.print(
        f"[dim]{run['modbus_devices']} Modbus devices x {run['registers']} registers every"
        f" {run['poll_ms']} ms, {run['opcua_devices']} OPC UA devices x {run['opcua_variables']}"
        f" variables every {run['opcua_interval_ms']} ms, flush {run['flush_ms']} ms,"
        f"{' gc.freeze(),' if run['gc_freeze'] else ''}"
        f" {r['window_s']:g}s measured after {run['warmup']:g}s[/dim]"
    )
    if r.get("profile"):
        console.print(f"\n[bold]gateway under cProfile[/bold] ({r['profile_file']}), by own time:")
        for line in r["profile"][:26]:
            console.print(f"  {line}", highlight=False, markup=False)


async def bench(args: argparse.Namespace, console: Console) -> int:
    """Run, report, write the JSON."""
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    benchmark = ThroughputBenchmark(args, console)
    machine = await asyncio.to_thread(machine_info, benchmark.mosquitto, None)
    console.print(
        f"[bold]Edge gateway throughput[/bold]: {args.modbus_devices} Modbus devices x"
        f" {args.registers} registers every {args.poll_ms} ms + {args.opcua_devices} OPC UA"
        f" devices x {args.opcua_variables} variables every {args.opcua_interval_ms} ms"
        f" (offered {offered_rate(args):,.0f} points/s), {args.duration:g}s"
    )
    load_before = os.getloadavg()
    result = await benchmark.run()
    doc: dict[str, Any] = {
        "benchmark": "gateway-throughput",
        "started": benchmark.stamp,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "run": {
            name: getattr(args, name)
            for name in (
                "duration",
                "warmup",
                "modbus_devices",
                "registers",
                "poll_ms",
                "opcua_devices",
                "opcua_variables",
                "opcua_interval_ms",
                "flush_ms",
                "gc_freeze",
            )
        },
        "result": result,
    }
    report(console, doc)
    path = args.out / f"gateway-throughput-{benchmark.stamp}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    console.print(f"results written to {path}")
    return 0 if result["framed_equals_delivered"] else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: the benchmark, or one of its child processes."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CHILDREN:
        return run_child(argv)
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    try:
        return asyncio.run(bench(args, console))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[yellow]interrupted: everything the benchmark started is stopped[/yellow]")
        return 130
    except (ChildError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

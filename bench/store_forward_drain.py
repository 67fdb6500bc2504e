"""Store and forward: an hour of backlog in the gateway's buffer, drained through the broker.

What is measured:

- **fill**: a backlog of ``--minutes`` of plant data at ``--rate`` points/s (default one hour at
  10,000 points/s: 36 million points) is written into the gateway's SQLite forward buffer. It is
  *generated* rather than read from devices for an hour: a child process builds the gateway
  (``EdgeGateway``, not started) and feeds every reading through the gateway's own processing
  and frame builder (``_handle``) and its own frame writing (``_flush``: encoding, one durable
  ``ForwardBuffer.append`` per ``flush_ms`` of plant time), so the frames and the file are the
  ones an hour-long outage leaves; only the devices and the clock are skipped. The report says
  so, and gives the time this took and the file's size;
- **drain**: the gateway starts on that buffer with its uplink to a Mosquitto broker of the
  benchmark's own (as after an outage: the uplink connects and the whole buffer is backlog; the
  configured devices are unreachable, so nothing live competes) and sends everything. Drain time
  runs from the uplink's connection to the buffer first being empty (every frame acknowledged by
  the broker and deleted), measured in the gateway to the 10 ms;
- **zero loss**: a subscriber (MQTT 5, QoS 1, subscribed before the gateway starts) checks every
  point: each carries its own sequence number, derived from its (device, timestamp, property)
  and checked against them; all ``total`` numbers must be seen, ``total`` arrivals in all (so
  none twice), and their sum must be ``total * (total - 1) / 2``. The buffer must be empty at the
  end, by the gateway's count and by a query on the file after the gateway stopped.

    .venv/bin/python bench/store_forward_drain.py                  # 1 hour x 10,000 points/s
    .venv/bin/python bench/store_forward_drain.py --quick          # 1 minute, a smoke run
    .venv/bin/python bench/store_forward_drain.py --minutes 10 --rate 5000

Results are printed and written to ``bench/out/store-forward-drain-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
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

from _edge_children import CHILDREN, GATEWAY_ID, SITE, TENANT, BacklogShape, run_child
from _ingest_procfs import ProcessSample, free_port, machine_info, sample_process
from _ingest_servers import Child, ChildError, OwnMosquitto, mosquitto_binary
from tiangong.edge.config import EdgeConfig
from tiangong.network.access import Channel, DeviceTopic

SCRIPT: Final = str(Path(__file__).resolve())
OUT_DIR: Final = Path(__file__).resolve().parent / "out"
#: Seconds without a new point at the subscriber before the drain is given up.
STALL_S: Final = 120.0
#: The buffer's size limit for the run: far above the backlog, so nothing is dropped on overflow
#: (the default, 1 GiB, holds one hour at 10,000 points/s too; a bigger backlog would not fit).
BUFFER_MAX_BYTES: Final = 64 * 1024**3
MIB: Final = 1024 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=(
            "Fill the edge gateway's forward buffer with a backlog, let the uplink drain it"
            " through a real Mosquitto, and prove every point arrived exactly once."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of backlog")
    parser.add_argument("--rate", type=int, default=10_000, help="plant points/s in the backlog")
    parser.add_argument("--devices", type=int, default=100, help="devices producing them")
    parser.add_argument(
        "--period-ms", type=int, default=1000, help="each device is read once per period"
    )
    parser.add_argument("--flush-ms", type=int, default=200, help="[uplink] flush_ms")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 minute of backlog")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory for JSON results")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes = 1.0
    if args.minutes <= 0 or args.rate <= 0 or args.devices <= 0 or args.period_ms <= 0:
        parser.error("--minutes, --rate, --devices and --period-ms must be positive")
    per_period = args.rate * args.period_ms
    if per_period % (1000 * args.devices):
        parser.error(
            "--rate x --period-ms / 1000 must be a whole number of points per device"
            f" ({args.rate} x {args.period_ms} / 1000 over {args.devices} devices is not)"
        )
    return args


def backlog_shape(args: argparse.Namespace, start_ms: int) -> BacklogShape:
    """The backlog of this run."""
    points = args.rate * args.period_ms // 1000 // args.devices
    samples = round(args.minutes * 60_000 / args.period_ms)
    return BacklogShape(args.devices, points, args.period_ms, samples, start_ms)


def gateway_config(
    args: argparse.Namespace, shape: BacklogShape, *, data_dir: Path, mqtt_port: int
) -> EdgeConfig:
    """The gateway of the run: the backlog's devices, on a port where nothing answers."""
    nobody = free_port()  # the devices are unreachable: only the backlog is sent
    return EdgeConfig.model_validate(
        {
            "gateway": {"id": GATEWAY_ID, "tenant": TENANT, "site": SITE, "data_dir": data_dir},
            "uplink": {"host": "127.0.0.1", "port": mqtt_port, "flush_ms": args.flush_ms},
            "buffer": {"max_bytes": BUFFER_MAX_BYTES},
            "devices": [
                {
                    "id": shape.device(d),
                    "protocol": "modbus",
                    "host": "127.0.0.1",
                    "port": nobody,
                    "poll_ms": shape.period_ms,
                    "points": [
                        {"property": f"m{m}", "address": m, "type": "uint32"}
                        for m in range(shape.points)
                    ],
                }
                for d in range(shape.devices)
            ],
        }
    )


def file_bytes(path: Path) -> int:
    """Bytes of an SQLite database with its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total


def frames_left(path: Path) -> int:
    """Frames in the buffer file, by a query on the file itself."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM frames").fetchone()[0])
    finally:
        conn.close()


def _cpu(before: ProcessSample | None, after: ProcessSample | None, seconds: float) -> Any:
    if before is None or after is None or seconds <= 0:
        return None
    return round((after.cpu_s - before.cpu_s) / seconds * 100, 1)


class DrainBenchmark:
    """One run: fill, then drain through the broker while the subscriber checks every point.

    Args:
        args: the parsed command line.
        console: where progress and results go.
    """

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.workdir = Path(tempfile.mkdtemp(prefix="tiangong-edge-drain-"))
        mosquitto = mosquitto_binary()
        if mosquitto is None:
            raise ChildError("mosquitto is not installed (Debian package 'mosquitto')")
        self.mosquitto = mosquitto
        # An hour ago, on a whole period: the backlog is an hour old when the uplink returns.
        now_ms = int(time.time() * 1000)
        span_ms = round(args.minutes * 60_000)
        start = now_ms - span_ms
        self.shape = backlog_shape(args, start - start % args.period_ms)
        self._gateway_at_drain: tuple[ProcessSample | None, float] = (None, 0.0)

    def _child(self, name: str, *argv: str) -> Child:
        return Child(
            name,
            [sys.executable, SCRIPT, f"_{name}", *argv],
            self.workdir / f"{name}.log",
        )

    async def run(self) -> dict[str, Any]:
        """Run the benchmark; returns the results."""
        args, shape = self.args, self.shape
        result: dict[str, Any] = {}
        async with AsyncExitStack() as stack:
            stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
            children: list[Child] = []

            async def start(child: Child) -> Child:
                await child.start()
                children.append(child)
                return child

            stack.push_async_callback(lambda: asyncio.gather(*(c.terminate(5) for c in children)))
            broker = OwnMosquitto(self.workdir / "mosquitto", self.mosquitto)
            config = gateway_config(
                args, shape, data_dir=self.workdir / "edge", mqtt_port=broker.port
            )
            config_path = self.workdir / "edge.json"
            config_path.write_text(config.model_dump_json())
            buffer_path = config.gateway.data_dir / f"{GATEWAY_ID}-buffer.sqlite"

            # -- fill --------------------------------------------------------------------------
            self.console.print(
                f"filling the buffer: {shape.total:,} points ({shape.devices} devices x"
                f" {shape.points} points every {shape.period_ms} ms for {args.minutes:g} min),"
                " generated through the gateway's own processing and frame writing"
            )
            fill = await start(
                self._child("fill", "--config", str(config_path), "--shape", shape.as_json())
            )
            filled = await self._follow_fill(fill)
            fill_bytes = file_bytes(buffer_path)
            result["fill"] = {
                "generated": True,
                "seconds": round(filled["seconds"], 2),
                "points_per_s": round(filled["points"] / filled["seconds"]),
                "cpu_s": round(filled["cpu_s"], 2),
                "frames": filled["frames"],
                "points": filled["points"],
                "payload_bytes": filled["payload_bytes"],
                "file_bytes": fill_bytes,
                "bytes_per_point": round(fill_bytes / max(filled["points"], 1), 2),
                "dropped_points": filled["dropped_points"],
            }
            self.console.print(
                f"  {filled['points']:,} points in {filled['frames']:,} frames,"
                f" {fill_bytes / MIB:,.0f} MiB on disk, written in {filled['seconds']:.1f}s"
            )

            # -- drain -------------------------------------------------------------------------
            broker.start()
            stack.callback(broker.stop)
            await asyncio.to_thread(broker.wait_ready)
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
                    "--verify",
                    shape.as_json(),
                )
            )
            await subscriber.expect("ready", 60)
            gateway = await start(
                self._child(
                    "gateway",
                    "--config",
                    str(config_path),
                    "--health-interval",
                    "86400",  # only the backlog is in the buffer
                )
            )
            started = await gateway.expect("started", 300)
            pids = {
                "gateway": int(started["pid"]),
                "broker": broker.pid,
                "subscriber": subscriber.pid,
            }
            cpu0 = {name: sample_process(pid) for name, pid in pids.items()}
            cpu_t0 = time.monotonic()
            connected = await gateway.expect("connected", 60)
            self.console.print(
                f"gateway up in {started['seconds']:.1f}s with {started['buffer_frames']:,}"
                f" frames ({started['buffer_points']:,} points) to send; uplink connected"
            )
            drained, last_point_t = await self._follow_drain(gateway, subscriber, pids["gateway"])
            cpu1 = {name: sample_process(pid) for name, pid in pids.items()}
            cpu_seconds = time.monotonic() - cpu_t0
            # The gateway's share over its own drain, the others' until the last point arrived.
            at_drain, at_drain_t = self._gateway_at_drain
            cpu_percent = {
                name: _cpu(cpu0[name], cpu1[name], cpu_seconds)
                for name in pids
                if name != "gateway"
            }
            cpu_percent["gateway"] = _cpu(cpu0["gateway"], at_drain, at_drain_t - cpu_t0)
            subscriber.send("finish")
            finished = await subscriber.expect("finished", 120)
            gateway.send("stop")
            stopped = await gateway.expect("stopped", 120)
            await gateway.wait()
            left = await asyncio.to_thread(frames_left, buffer_path)
            drain_s = drained["t"] - connected["t"] if drained else None
            result["drain"] = {
                "seconds": round(drain_s, 2) if drain_s else None,
                "points_per_s": round(shape.total / drain_s) if drain_s else None,
                "frames_per_s": round(started["buffer_frames"] / drain_s) if drain_s else None,
                "mb_per_s": round(started["buffer_bytes"] / drain_s / 1e6, 2) if drain_s else None,
                "last_point_at_subscriber_s": (
                    round(last_point_t - connected["t"], 2) if last_point_t else None
                ),
                "cpu_percent": cpu_percent,
                "gateway_peak_rss_mib": round(stopped["hwm_kb"] / 1024),
                "file_bytes_after": file_bytes(buffer_path),
            }
            check = finished["check"]
            result["check"] = check
            result["buffer_points_at_stop"] = stopped["buffer_points"]
            result["frames_left_in_file"] = left
            result["zero_loss"] = bool(
                check["exactly_once"] and stopped["buffer_points"] == 0 and left == 0
            )
        return result

    async def _follow_fill(self, fill: Child) -> dict[str, Any]:
        """Wait for the fill, printing its progress."""
        waiting = asyncio.create_task(fill.expect("filled", 24 * 3600))
        total = self.shape.total
        last = time.monotonic()
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=1.0)
            if time.monotonic() - last >= 10 and fill.stats:
                last = time.monotonic()
                done = fill.latest["points"]
                self.console.print(f"  {done / total * 100:5.1f}%  {done:,} points written")
        return waiting.result()

    async def _follow_drain(
        self, gateway: Child, subscriber: Child, gateway_pid: int
    ) -> tuple[dict[str, Any] | None, float | None]:
        """Wait until the subscriber has every point (or stalls); print progress.

        The gateway's CPU time is read as soon as it reports its buffer empty
        (``_gateway_at_drain``).
        """
        total = self.shape.total
        last_print = time.monotonic()
        last_count, last_change = -1, time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            if gateway.has("drained") and self._gateway_at_drain[0] is None:
                self._gateway_at_drain = (sample_process(gateway_pid), time.monotonic())
            received = int(subscriber.latest.get("points", 0))
            now = time.monotonic()
            if received != last_count:
                last_count, last_change = received, now
            if now - last_print >= 10:
                last_print = now
                self.console.print(
                    f"  {received / total * 100:5.1f}%  {received:,} points received,"
                    f" {gateway.latest.get('buffer_points', 0):,} still buffered"
                )
            if received >= total and gateway.has("drained"):
                break
            if now - last_change > STALL_S:
                self.console.print(f"[red]no progress for {STALL_S:g}s: giving up[/red]")
                break
        drained = gateway.events.get("drained")
        return drained, subscriber.latest.get("last_t")


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}{suffix}" if abs(value) < 100 else f"{value:,.0f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value}{suffix}"


def report(console: Console, doc: dict[str, Any]) -> None:
    """Print the results table and the machine."""
    r = doc["result"]
    fill, drain, check = r["fill"], r["drain"], r["check"]
    table = Table(title="Store and forward: backlog drain", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row(
        "backlog",
        f"{fill['points']:,} points in {fill['frames']:,} frames"
        f" ({doc['run']['minutes']:g} min x {doc['run']['rate']:,} points/s)",
    )
    table.add_row(
        "fill (generated into the buffer, not read live)",
        f"{fill['seconds']:,.1f} s ({fill['points_per_s']:,} points/s)",
    )
    table.add_row(
        "buffer file after fill",
        f"{fill['file_bytes'] / MIB:,.0f} MiB ({fill['bytes_per_point']} bytes/point;"
        f" payload {fill['payload_bytes'] / MIB:,.0f} MiB)",
    )
    table.add_row("[bold]drain time (connect -> buffer empty)[/bold]", _fmt(drain["seconds"], " s"))
    table.add_row("[bold]drain rate (points/s)[/bold]", _fmt(drain["points_per_s"]))
    table.add_row(
        "drain frames/s, MB/s", f"{_fmt(drain['frames_per_s'])}, {_fmt(drain['mb_per_s'])}"
    )
    table.add_row(
        "last point at the subscriber (s after connect)", _fmt(drain["last_point_at_subscriber_s"])
    )
    for name, share in drain["cpu_percent"].items():
        until = "buffer empty" if name == "gateway" else "last point"
        table.add_row(f"CPU, {name} (% of a core, until {until})", _fmt(share, " %"))
    table.add_row("gateway peak RSS (MiB)", _fmt(drain["gateway_peak_rss_mib"]))
    table.add_row("buffer file after drain (MiB)", _fmt(drain["file_bytes_after"] / MIB))
    table.add_row(
        "received / expected points",
        f"{check['received']:,} / {check['expected']:,}",
    )
    table.add_row(
        "distinct / missing / duplicated / wrong",
        f"{check['distinct']:,} / {check['missing']:,} / {check['duplicates']:,}"
        f" / {check['mismatched']:,}",
    )
    table.add_row(
        "checksum (sum of sequence numbers)",
        f"{check['seq_sum']:,} ({'=' if check['seq_sum'] == check['expected_seq_sum'] else '!='}"
        " expected)",
    )
    table.add_row(
        "buffer empty at the end (gateway / file)",
        f"{r['buffer_points_at_stop']:,} points / {r['frames_left_in_file']:,} frames",
    )
    table.add_row(
        "[bold]zero loss, exactly once[/bold]", "yes" if r["zero_loss"] else "[red]NO[/red]"
    )
    console.print(table)
    machine = doc["machine"]
    console.print(
        f"[dim]{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB,"
        f" Linux {machine['kernel']}, Python {machine['python']}, {machine['mosquitto']};"
        f" load average {doc['load_before'][0]:.2f} before, {doc['load_after'][0]:.2f} after[/dim]"
    )
    console.print(
        "[dim]The backlog was generated straight into the forward buffer by the gateway's own"
        " processing and frame writing (EdgeGateway._handle/_flush), not read from devices"
        " for the whole span.[/dim]"
    )


async def bench(args: argparse.Namespace, console: Console) -> int:
    """Run, report, write the JSON."""
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    benchmark = DrainBenchmark(args, console)
    machine = await asyncio.to_thread(machine_info, benchmark.mosquitto, None)
    shape = benchmark.shape
    console.print(
        f"[bold]Store and forward drain[/bold]: {args.minutes:g} min x {args.rate:,} points/s"
        f" = {shape.total:,} points"
    )
    load_before = os.getloadavg()
    result = await benchmark.run()
    doc: dict[str, Any] = {
        "benchmark": "store-forward-drain",
        "started": benchmark.stamp,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "run": {
            "minutes": args.minutes,
            "rate": args.rate,
            "devices": shape.devices,
            "points_per_device": shape.points,
            "period_ms": shape.period_ms,
            "flush_ms": args.flush_ms,
        },
        "result": result,
    }
    report(console, doc)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"store-forward-drain-{benchmark.stamp}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    console.print(f"results written to {path}")
    return 0 if result["zero_loss"] else 1


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

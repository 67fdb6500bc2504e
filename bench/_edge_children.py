"""The processes of the edge gateway benchmarks, other than the benchmark itself.

``bench/gateway_throughput.py`` and ``bench/store_forward_drain.py`` start themselves again with
a hidden first argument to run one of these, so that each has its own CPU time and memory:

``_modbus``
    Modbus TCP servers (pymodbus) for a fleet of register banks: one unit id per device (up to
    247 per server, more servers beyond), ``--registers`` holding registers each, answered from
    plain lists; register 0 of every bank counts up every 100 ms.
``_opcua``
    An OPC UA server (asyncua, no security) with ``--devices`` objects of ``--variables`` Double
    variables (``ns=<ns>;s=<device>.v<i>``), every variable written with a new value every
    ``--interval-ms``.
``_gateway``
    The edge gateway under test: ``EdgeGateway`` from a configuration file, exactly as
    ``tiangong edge`` runs it (uvloop), reporting its counters. ``--profile`` records it with
    cProfile and reports the functions with the most own time.
``_fill``
    Writes a backlog into a gateway's forward buffer through the gateway's own code:
    ``EdgeGateway._handle`` (processing and the frame builder) for each reading of a
    ``BacklogShape``, and ``EdgeGateway._flush`` (frame encoding, ``ForwardBuffer.append``)
    once per ``flush_ms`` of plant time, without devices, broker or clock.
``_subscriber``
    A subscriber on the platform side of the broker (MQTT 5, QoS 1) that counts the points of
    the gateway's telemetry frames, measures read-to-arrival latency (a row's timestamp is when
    the gateway read it), and with ``--verify`` checks every point of a ``BacklogShape``
    arrives exactly once (see ``BacklogCheck``).

Protocol (as in ``_ingest_children``): one JSON object per stdout line with an ``event`` field;
one-word commands on stdin; a closed stdin means stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import logging
import os
import pstats
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from _ingest_procfs import free_port, sample_process
from _ingest_servers import die_with_parent
from tiangong.edge.adapters.base import DeviceReadings
from tiangong.edge.config import EdgeConfig
from tiangong.network.mqtt import MqttClient, ProtocolVersion, Subscription

__all__ = [
    "CHILDREN",
    "GATEWAY_ID",
    "SITE",
    "TENANT",
    "BacklogCheck",
    "BacklogShape",
    "run_child",
]

TENANT: Final = "bench"
SITE: Final = "s1"
GATEWAY_ID: Final = "gw-bench"
#: Seconds between two ``stats`` lines.
STATS_INTERVAL: Final = 0.25
#: Seconds a stopping gateway may take before its tasks are written to its log.
STOP_REPORT_S: Final = 20.0


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line to stdout."""
    sys.stdout.buffer.write(orjson.dumps({"event": event, **fields}) + b"\n")
    sys.stdout.buffer.flush()


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _command(reader: asyncio.StreamReader) -> str:
    """The next command; ``stop`` when stdin is closed."""
    line = await reader.readline()
    return line.decode().strip() if line else "stop"


def _cpu_s() -> float:
    sample = sample_process(os.getpid())
    return sample.cpu_s if sample else 0.0


# -- the backlog's shape ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BacklogShape:
    """A plant read at a fixed rate, every point numbered.

    ``devices`` devices of ``points`` points (``m0``...) are each read once per ``period_ms``,
    device ``d`` at ``phase(d)`` into the period (polls are spread out, as coordinators are).
    Sample ``k`` of device ``d`` is taken at ``start_ms + k * period_ms + phase(d)``, and its
    point ``m`` carries the value ``seq = (k * devices + d) * points + m``: every point of the
    backlog has its own number in ``0 .. total - 1``, and a receiver can recompute it from the
    point's device, timestamp and property.
    """

    devices: int
    points: int
    period_ms: int
    samples: int
    start_ms: int

    @property
    def total(self) -> int:
        """Points in the backlog."""
        return self.devices * self.points * self.samples

    def device(self, d: int) -> str:
        """Device id of device number ``d``."""
        return f"dev-{d:04d}"

    def phase(self, d: int) -> int:
        """Offset of device ``d``'s polls into the period, in ms."""
        return d * self.period_ms // self.devices

    def as_json(self) -> str:
        """For a child's command line."""
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> BacklogShape:
        """From ``as_json``."""
        return cls(**orjson.loads(text))


class BacklogCheck:
    """Proves every point of a ``BacklogShape`` was received exactly once.

    Each received value is checked against the number its (device, timestamp, property)
    must carry, and marked in a table of ``total`` entries. At the end, ``received == total``
    with every entry marked means each point arrived exactly once (``total`` arrivals covering
    ``total`` distinct numbers leave no room for a duplicate); the sum of the numbers received
    is compared with ``total * (total - 1) / 2`` as a second, independent checksum.
    """

    def __init__(self, shape: BacklogShape) -> None:
        self.shape = shape
        self.seen = np.zeros(shape.total, dtype=np.uint8)
        self.received = 0
        self.duplicates = 0
        self.mismatched = 0
        self.out_of_range = 0
        self.seq_sum = 0
        self._index = {shape.device(d): d for d in range(shape.devices)}
        self._metric = np.arange(shape.points, dtype=np.int64)[:, None]

    def device(self, name: str, ts: list[int], values: dict[str, list[Any]]) -> int:
        """Check one device's columns of a frame; returns the points taken."""
        d = self._index.get(name)
        if d is None:
            return 0
        shape = self.shape
        if len(values) != shape.points:
            self.mismatched += sum(len(c) - c.count(None) for c in values.values())
            return 0
        try:
            columns = np.array([values[f"m{m}"] for m in range(shape.points)], dtype=np.int64)
        except (KeyError, TypeError, ValueError):  # a missing property or a null value
            self.mismatched += sum(len(c) - c.count(None) for c in values.values())
            return 0
        since = np.asarray(ts, dtype=np.int64) - shape.start_ms - shape.phase(d)
        k = since // shape.period_ms
        expected = (k * shape.devices + d) * shape.points + self._metric
        bad = (since % shape.period_ms != 0) | (k < 0) | (k >= shape.samples)
        wrong = (columns != expected) | bad[None, :]
        n = columns.size
        self.received += n
        if wrong.any():
            self.mismatched += int(wrong.sum())
            columns = columns[~wrong]
        seqs = columns.ravel()
        self.duplicates += int(np.count_nonzero(self.seen[seqs]))
        self.seen[seqs] = 1
        self.seq_sum += int(seqs.sum())
        return n

    def result(self) -> dict[str, Any]:
        """What the proof found."""
        total = self.shape.total
        distinct = int(np.count_nonzero(self.seen))
        expected_sum = total * (total - 1) // 2
        return {
            "expected": total,
            "received": self.received,
            "distinct": distinct,
            "missing": total - distinct,
            "duplicates": self.duplicates,
            "mismatched": self.mismatched,
            "seq_sum": self.seq_sum,
            "expected_seq_sum": expected_sum,
            "exactly_once": (
                self.received == total
                and distinct == total
                and self.duplicates == 0
                and self.mismatched == 0
                and self.seq_sum == expected_sum
            ),
        }


# -- Modbus servers --------------------------------------------------------------------------


async def _modbus_main(args: argparse.Namespace) -> None:
    # pymodbus is imported here: only this child needs it.
    from pymodbus.constants import ExcCodes  # noqa: PLC0415
    from pymodbus.exceptions import NoSuchIdException  # noqa: PLC0415
    from pymodbus.server import ModbusTcpServer  # noqa: PLC0415
    from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: PLC0415
    from pymodbus.simulator.simcore import SimCore  # noqa: PLC0415

    class RegisterBanks(SimCore):
        """Plain lists of holding (and input) registers as pymodbus's datastore.

        Like the simulated plant's datastore, it answers from its own lists and deliberately
        does not run ``SimCore.__init__``.
        """

        def __init__(self, banks: dict[int, list[int]]) -> None:
            self.banks = banks

        def device_ids(self) -> list[int]:
            return list(self.banks)

        async def async_getValues(  # noqa: N802 - pymodbus's name
            self, device_id: int, func_code: int, address: int, count: int = 1
        ) -> list[int] | list[bool] | ExcCodes:
            bank = self.banks.get(device_id)
            if bank is None:
                raise NoSuchIdException(f"no unit {device_id}")
            if func_code not in (3, 4) or address + count > len(bank):
                return ExcCodes.ILLEGAL_ADDRESS
            return bank[address : address + count]

        async def async_setValues(  # noqa: N802 - pymodbus's name
            self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
        ) -> ExcCodes | None:
            del device_id, func_code, address, values  # the banks are read-only
            return ExcCodes.ILLEGAL_FUNCTION

    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    commands = await _stdin()
    banks = [
        [(unit * 1000 + i) & 0xFFFF for i in range(args.registers)] for unit in range(args.devices)
    ]
    servers = []
    ports = []
    for first in range(0, args.devices, 247):
        units = {u + 1: banks[first + u] for u in range(min(247, args.devices - first))}
        placeholder = SimDevice(0, simdata=SimData(0, datatype=DataType.INVALID))
        server = ModbusTcpServer(placeholder, address=("127.0.0.1", 0))
        server.context = RegisterBanks(units)
        await server.serve_forever(background=True)
        servers.append(server)
        ports.append(int(server.transport.sockets[0].getsockname()[1]))  # type: ignore[union-attr]

    async def count_up() -> None:
        tick = 0
        while True:
            await asyncio.sleep(0.1)
            tick = (tick + 1) & 0xFFFF
            for bank in banks:
                bank[0] = tick

    counter = asyncio.create_task(count_up(), name="count-up")
    emit("ready", ports=ports, pid=os.getpid())
    try:
        while await _command(commands) != "stop":
            pass
    finally:
        counter.cancel()
        for server in servers:
            server.close()
    emit("stopped", cpu_s=_cpu_s())


def _modbus_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="_modbus")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--registers", type=int, required=True)
    return parser


# -- an OPC UA server ------------------------------------------------------------------------


async def _opcua_main(args: argparse.Namespace) -> None:
    from asyncua import ua  # noqa: PLC0415
    from asyncua.server.server import Server  # noqa: PLC0415

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    commands = await _stdin()
    port = free_port()
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{port}/bench/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:tiangong:bench")
    objects = server.nodes.objects
    node_ids: list[ua.NodeId] = []
    for d in range(args.devices):
        device = f"dev-ua-{d:03d}"
        owner = await objects.add_object(ua.NodeId(device, ns), ua.QualifiedName(device, ns))
        for v in range(args.variables):
            node = await owner.add_variable(
                ua.NodeId(f"{device}.v{v}", ns), ua.QualifiedName(f"v{v}", ns), 0.0
            )
            node_ids.append(node.nodeid)
    await server.start()
    interval = args.interval_ms / 1000

    async def change() -> None:
        value = 0.0
        next_at = time.monotonic()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            value += 1.0
            now = datetime.now(UTC)
            for i, node_id in enumerate(node_ids):
                await server.write_attribute_value(
                    node_id,
                    ua.DataValue(
                        Value=ua.Variant(value + i, ua.VariantType.Double),
                        SourceTimestamp=now,
                        ServerTimestamp=now,
                    ),
                )

    changing = asyncio.create_task(change(), name="change")
    emit("ready", endpoint=endpoint, namespace=ns, pid=os.getpid())
    try:
        while await _command(commands) != "stop":
            pass
    finally:
        changing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await changing
        await server.stop()
    emit("stopped", cpu_s=_cpu_s())


def _opcua_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="_opcua")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--variables", type=int, required=True)
    parser.add_argument("--interval-ms", type=int, required=True)
    return parser


# -- the gateway -----------------------------------------------------------------------------


def _profile_summary(profiler: cProfile.Profile, path: Path, top: int = 25) -> list[str]:
    profiler.dump_stats(path)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return [line.rstrip() for line in lines[start:] if line.strip()]


async def _gateway_main(args: argparse.Namespace) -> None:
    from tiangong.edge.gateway import EdgeGateway  # noqa: PLC0415

    config = EdgeConfig.model_validate_json(await asyncio.to_thread(Path(args.config).read_bytes))
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    commands = await _stdin()
    profiler = cProfile.Profile() if args.profile else None
    began = time.monotonic()
    async with EdgeGateway(config, password=None, health_interval=args.health_interval) as gateway:
        uplink = gateway.uplink
        buffer = gateway.buffer
        emit(
            "started",
            t=time.monotonic(),
            pid=os.getpid(),
            seconds=time.monotonic() - began,
            buffer_frames=buffer.frames,
            buffer_points=buffer.points,
            buffer_bytes=(await buffer.stats()).bytes,
        )

        if args.gc_freeze:
            # What a process that owns the gateway can do once it is up: the objects of the
            # start-up (configuration, protocol stacks) leave the collector's generations, so
            # its full collections no longer scan them (see docs/benchmarks.md).
            gc.freeze()

        async def watch_uplink() -> None:
            # When the uplink is first connected, and when the buffer first runs empty after
            # having held frames: the span of a drain. Neither has an event to wait on, so
            # look every 10 ms.
            while not uplink.connected:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            emit("connected", t=time.monotonic())
            while buffer.frames == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            while buffer.frames:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            emit("drained", t=time.monotonic(), sent_points=uplink.sent_points)

        async def report() -> None:
            while True:
                emit(
                    "stats",
                    t=time.monotonic(),
                    points_in=gateway.points_in,
                    sent_points=uplink.sent_points,
                    sent_frames=uplink.sent_frames,
                    readings_dropped=gateway.readings_dropped,
                    buffer_frames=buffer.frames,
                    buffer_points=buffer.points,
                    dropped_points=buffer.dropped_points,
                    connected=uplink.connected,
                )
                await asyncio.sleep(STATS_INTERVAL)

        lags: list[float] = []
        pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            else:
                pauses[info["generation"]].append((time.perf_counter() - gc_started[0]) * 1000)

        gc.callbacks.append(on_gc)

        async def watch_loop() -> None:
            # How late a 10 ms sleep wakes up: the event loop's responsiveness, which is what
            # keeps device polls on their schedule.
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append((time.monotonic() - before - 0.01) * 1000)

        reporter = asyncio.create_task(report(), name="report")
        watcher = asyncio.create_task(watch_loop(), name="watch-loop")
        uplink_watcher = asyncio.create_task(watch_uplink(), name="watch-uplink")
        if profiler is not None:
            profiler.enable()
        try:
            while (command := await _command(commands)) != "stop":
                if command == "mark":
                    lags.clear()
                    for generation in pauses.values():
                        generation.clear()
                elif command == "window-end":
                    if profiler is not None:
                        profiler.disable()
                    window_lags = np.asarray(lags or [0.0])
                    emit(
                        "loop_lag",
                        p50=float(np.percentile(window_lags, 50)),
                        p99=float(np.percentile(window_lags, 99)),
                        max=float(window_lags.max()),
                        gc={
                            str(g): {
                                "count": len(p),
                                "total_ms": round(sum(p), 1),
                                "max_ms": round(max(p, default=0.0), 1),
                            }
                            for g, p in pauses.items()
                        },
                    )
        finally:
            if profiler is not None:
                profiler.disable()
            reporter.cancel()
            watcher.cancel()
            uplink_watcher.cancel()
        status = await gateway.status()
        # A gateway that takes long to stop is a finding: say what it is waiting for.
        slow_stop = loop.call_later(STOP_REPORT_S, _dump_tasks)
    slow_stop.cancel()
    own = sample_process(os.getpid())
    emit(
        "stopped",
        points_in=status["points_in"],
        sent_points=uplink.sent_points,
        buffer_points=status["buffer"]["points"],
        hwm_kb=own.hwm_kb if own else 0,
        profile=_profile_summary(profiler, Path(args.profile)) if profiler else None,
    )


def _dump_tasks() -> None:
    print(f"still stopping after {STOP_REPORT_S:g}s; tasks:", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=sys.stderr)


def _gateway_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="_gateway")
    parser.add_argument("--config", required=True, help="EdgeConfig as JSON")
    parser.add_argument("--profile", default="", help="record with cProfile into this file")
    parser.add_argument(
        "--health-interval", type=float, default=10.0, help="seconds between health reports"
    )
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once started")
    return parser


# -- filling the forward buffer --------------------------------------------------------------


async def _fill_main(args: argparse.Namespace) -> None:
    from tiangong.edge.gateway import EdgeGateway  # noqa: PLC0415

    config = EdgeConfig.model_validate_json(await asyncio.to_thread(Path(args.config).read_bytes))
    shape = BacklogShape.from_json(args.shape)
    # The gateway is built but not entered: no device is connected and the uplink never runs,
    # only its buffer is opened. Readings go through the same methods a running gateway uses.
    gateway = EdgeGateway(config, password=None)
    await gateway.buffer.open()
    flush_ms = config.uplink.flush_ms
    names = [f"m{m}" for m in range(shape.points)]
    devices = [shape.device(d) for d in range(shape.devices)]
    phases = [shape.phase(d) for d in range(shape.devices)]
    # Readings in time order; a flush at every flush_ms boundary of plant time.
    per_period = sorted(range(shape.devices), key=lambda d: phases[d])
    end_ms = shape.start_ms + shape.samples * shape.period_ms
    next_flush = shape.start_ms - shape.start_ms % flush_ms + flush_ms
    began = time.monotonic()
    cpu = time.process_time()
    last_report = began
    done = 0
    for k in range(shape.samples):
        base = shape.start_ms + k * shape.period_ms
        for d in per_period:
            ts = base + phases[d]
            while ts >= next_flush:
                await gateway._flush()  # the gateway's own frame writing
                next_flush += flush_ms
            first = (k * shape.devices + d) * shape.points
            gateway._handle(  # the gateway's own processing
                DeviceReadings(
                    devices[d],
                    ts,
                    dict(zip(names, range(first, first + shape.points), strict=True)),
                )
            )
        done += shape.devices * shape.points
        now = time.monotonic()
        if now - last_report >= STATS_INTERVAL:
            last_report = now
            emit("stats", t=now, points=done, frames=gateway.buffer.frames)
    await gateway._flush()
    elapsed = time.monotonic() - began
    stats = await gateway.buffer.stats()
    await gateway.buffer.close()
    emit(
        "filled",
        seconds=elapsed,
        cpu_s=time.process_time() - cpu,
        points=stats.points,
        frames=stats.frames,
        payload_bytes=stats.bytes,
        dropped_points=stats.dropped_points,
        plant_seconds=(end_ms - shape.start_ms) / 1000,
    )


def _fill_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="_fill")
    parser.add_argument("--config", required=True, help="EdgeConfig as JSON")
    parser.add_argument("--shape", required=True, help="BacklogShape as JSON")
    return parser


# -- the subscriber --------------------------------------------------------------------------


class _Counting:
    """What the subscriber counts: points, frames, bytes, latency, and the backlog proof."""

    def __init__(self, gateway: str, check: BacklogCheck | None) -> None:
        self.gateway = gateway
        self.check = check
        self.points = 0
        self.by_kind: dict[str, int] = {}  # points per device-id prefix (dev-mb, dev-ua)
        self.other_points = 0  # the gateway's own health figures and link metrics
        self.frames = 0
        self.duplicate_frames = 0  # byte-identical frames received again
        self._digests: set[int] = set()
        self.bytes = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self._latency: list[np.ndarray[Any, np.dtype[np.float64]]] = []
        self._weights: list[np.ndarray[Any, np.dtype[np.int64]]] = []

    def mark(self) -> None:
        """Start the latency figures afresh (the measured window begins)."""
        self._latency.clear()
        self._weights.clear()

    def take(self, payload: bytes) -> None:
        """Count one telemetry frame."""
        now_ms = time.time() * 1000
        document = orjson.loads(payload)
        self.frames += 1
        digest = hash(payload)
        if digest in self._digests:
            self.duplicate_frames += 1
        self._digests.add(digest)
        self.bytes += len(payload)
        points = 0
        ts_all: list[int] = []
        weights: list[int] = []
        for name, device in document.get("devices", {}).items():
            ts: list[int] = device["ts"]
            values: dict[str, list[Any]] = device["values"]
            if name == self.gateway:
                self.other_points += sum(len(c) - c.count(None) for c in values.values())
                continue
            link = [p for p in values if p.startswith("link.")]
            if link:
                self.other_points += sum(len(values[p]) - values[p].count(None) for p in link)
                values = {p: c for p, c in values.items() if not p.startswith("link.")}
                if not values:
                    continue
            if self.check is not None:
                points += self.check.device(name, ts, values)
                continue
            per_row = [0] * len(ts)
            for column in values.values():
                for row, value in enumerate(column):
                    if value is not None:
                        per_row[row] += 1
            taken = sum(per_row)
            kind = name.rsplit("-", 1)[0]
            self.by_kind[kind] = self.by_kind.get(kind, 0) + taken
            points += taken
            ts_all.extend(ts)
            weights.extend(per_row)
        if ts_all:
            self._latency.append(now_ms - np.asarray(ts_all, dtype=np.float64))
            self._weights.append(np.asarray(weights, dtype=np.int64))
        self.points += points
        t = time.monotonic()
        if self.first_t is None:
            self.first_t = t
        self.last_t = t

    def latency(self) -> dict[str, float] | None:
        """Percentiles of read-to-arrival time over the points since ``mark``, in ms."""
        if not self._latency:
            return None
        latency = np.concatenate(self._latency)
        weights = np.concatenate(self._weights)
        order = np.argsort(latency)
        latency, cumulative = latency[order], np.cumsum(weights[order])
        total = cumulative[-1]
        if total <= 0:
            return None

        def at(share: float) -> float:
            return float(latency[np.searchsorted(cumulative, share * total)])

        return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": float(latency[-1])}


async def _subscriber_main(args: argparse.Namespace) -> None:
    check = BacklogCheck(BacklogShape.from_json(args.verify)) if args.verify else None
    counting = _Counting(args.gateway, check)
    commands = await _stdin()
    async with MqttClient(
        host="127.0.0.1",
        port=args.mqtt_port,
        client_id=args.client_id,
        version=ProtocolVersion.V5,
        clean_start=True,
    ) as client:
        await client.subscribe(Subscription(args.topic, qos=1))
        emit("ready", pid=os.getpid())

        async def receive() -> None:
            while True:
                message = await client.next_message()
                counting.take(message.payload)
                client.ack(message)

        async def report() -> None:
            while True:
                emit(
                    "stats",
                    t=time.monotonic(),
                    points=counting.points,
                    by_kind=counting.by_kind,
                    other_points=counting.other_points,
                    frames=counting.frames,
                    duplicate_frames=counting.duplicate_frames,
                    bytes=counting.bytes,
                    last_t=counting.last_t,
                )
                await asyncio.sleep(STATS_INTERVAL)

        receiving = asyncio.create_task(receive(), name="receive")
        reporter = asyncio.create_task(report(), name="report")
        try:
            while (command := await _command(commands)) != "stop":
                if command == "mark":
                    counting.mark()
                elif command == "finish":
                    emit(
                        "finished",
                        points=counting.points,
                        other_points=counting.other_points,
                        frames=counting.frames,
                        duplicate_frames=counting.duplicate_frames,
                        bytes=counting.bytes,
                        first_t=counting.first_t,
                        last_t=counting.last_t,
                        latency_ms=counting.latency(),
                        check=check.result() if check is not None else None,
                        cpu_s=_cpu_s(),
                    )
        finally:
            receiving.cancel()
            reporter.cancel()


def _subscriber_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="_subscriber")
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--gateway", default=GATEWAY_ID, help="its own figures are not counted")
    parser.add_argument("--verify", default="", help="BacklogShape as JSON: check exactly once")
    return parser


# -- dispatch --------------------------------------------------------------------------------

_MAINS: Final = {
    "_modbus": (_modbus_main, _modbus_parser),
    "_opcua": (_opcua_main, _opcua_parser),
    "_gateway": (_gateway_main, _gateway_parser),
    "_fill": (_fill_main, _fill_parser),
    "_subscriber": (_subscriber_main, _subscriber_parser),
}
CHILDREN: Final = frozenset(_MAINS)


def _run_async(main: Coroutine[Any, Any, None]) -> None:
    # ``tiangong edge`` runs the gateway on uvloop; so do all the processes here.
    try:
        import uvloop  # noqa: PLC0415 - optional, as in the CLI
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def run_child(argv: list[str]) -> int:
    """Run the child process named by ``argv[0]``; returns the exit code."""
    die_with_parent()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    kind, rest = argv[0], argv[1:]
    main, parser = _MAINS[kind]
    try:
        _run_async(main(parser().parse_args(rest)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except Exception as exc:
        logging.getLogger("bench").exception("%s failed", kind)
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0

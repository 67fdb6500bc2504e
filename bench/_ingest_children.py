"""The processes of one ingest benchmark run, other than the benchmark itself.

``bench/ingest.py`` starts itself again with a hidden first argument to run one of these:

``_platform``
    The platform under test, alone in its process so that its CPU time and memory are its own:
    ``Platform(settings)`` against the broker, no embedded broker, no HTTP server. It registers
    the fleet through its registry, proves its subscription works end to end (a status message
    it publishes itself must come back committed), then reports ``stats`` lines until told to
    ``verify`` (count the stored points with real queries) and ``stop``.
``_publish``
    A publisher speaking for a share of the fleet's gateways: MQTT 5, QoS 1, a window of
    outstanding publishes, pre-encoded payloads. It publishes from ``go`` for the run's
    duration, within the credit the benchmark grants (its flow control), then reports
    ``done`` with what the broker acknowledged.
``_influx``
    An InfluxDB writer: the same data as line protocol, batches of a fixed number of lines over
    HTTP, a few connections at once, until its share of the points is written.

Protocol: one JSON object per stdout line with an ``event`` field; commands are single words
on stdin; a closed stdin means stop. Times are ``time.monotonic()`` (one clock for every
process of the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from _ingest_fleet import (
    GATEWAY_MODEL,
    HISTORY_MS,
    METER_MODEL,
    SITE,
    EnvelopeEncoder,
    FleetShape,
    LineEncoder,
    ValueBlocks,
    gateway_model,
    meter_model,
)
from _ingest_procfs import sample_process
from _ingest_servers import die_with_parent
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.errors import PublishRejectedError
from tiangong.network.mqtt import MqttClient, ProtocolVersion
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.model import Site, Tenant
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings
from tiangong.platform.tsdb.base import HOUR_MS, Aggregate

__all__ = ["CHILDREN", "run_child"]


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line to stdout."""
    sys.stdout.buffer.write(orjson.dumps({"event": event, **fields}) + b"\n")
    sys.stdout.buffer.flush()


def _shape_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--metrics", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--devices-per-message", type=int, required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--start-ms", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between stats")


def _shape(args: argparse.Namespace) -> FleetShape:
    return FleetShape(args.devices, args.metrics, args.samples, args.devices_per_message)


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _command(reader: asyncio.StreamReader) -> str:
    """The next command; ``stop`` when stdin is closed."""
    line = await reader.readline()
    return line.decode().strip() if line else "stop"


# -- the platform ----------------------------------------------------------------------------


def _metric_total(registry: CollectorRegistry, name: str) -> float:
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


async def _provision(platform: Platform, shape: FleetShape, tenant: str) -> int:
    """Register tenant, site, thing models, gateways and their children; bring them online."""
    registry = platform.registry
    await registry.create_tenant(Tenant(id=tenant, name="Ingest benchmark"))
    await registry.create_site(Site(tenant_id=tenant, id=SITE, name="Benchmark plant"))
    await registry.put_thing_model(tenant, meter_model(shape))
    await registry.put_thing_model(tenant, gateway_model())
    gateways = shape.gateways()
    total = len(gateways) + shape.devices
    done = 0
    ids: list[str] = []
    for gateway in gateways:
        await registry.register_device(
            tenant_id=tenant, site_id=SITE, device_id=gateway.id, model_id=GATEWAY_MODEL
        )
        ids.append(gateway.id)
        for child in gateway.children:
            await registry.register_device(
                tenant_id=tenant,
                site_id=SITE,
                device_id=child,
                model_id=METER_MODEL,
                gateway_id=gateway.id,
            )
            ids.append(child)
        done += 1 + len(gateway.children)
        emit("provisioning", done=done, total=total * 2)
    # The devices of a running plant are online: put them there now, so that the measured run
    # does not include the one-off lifecycle change that each device's first message causes.
    for i, device in enumerate(ids, 1):
        await registry.apply_lifecycle(device, LifecycleTrigger.CONNECT, reason="benchmark")
        if i % 100 == 0:
            emit("provisioning", done=total + i, total=total * 2)
    return total


async def _prove_subscription(platform: Platform, args: argparse.Namespace, gateway: str) -> None:
    """Publish a status message until the platform has committed it (subscription is live)."""
    topic = DeviceTopic.build(args.tenant, SITE, gateway, Channel.STATUS)
    async with (
        asyncio.timeout(60),
        MqttClient(
            host=args.mqtt_host,
            port=args.mqtt_port,
            client_id=f"{args.client_id}-probe",
            version=ProtocolVersion.V5,
        ) as client,
    ):
        before = platform.pipeline.messages_committed
        while platform.pipeline.messages_committed == before:
            await client.publish(topic, b"online", qos=1)
            for _ in range(20):
                if platform.pipeline.messages_committed != before:
                    break
                await asyncio.sleep(0.05)


async def _report(platform: Platform, interval: float) -> None:
    registry = platform.metrics.registry
    while True:
        client = platform.mqtt
        emit(
            "stats",
            t=time.monotonic(),
            points=platform.pipeline.points_committed,
            messages=platform.pipeline.messages_committed,
            pending=client.pending_messages() if client is not None else 0,
            read_pauses=client.stats.read_pauses if client is not None else 0,
            write_s=_metric_total(registry, "tiangong_store_write_seconds_sum"),
            writes=_metric_total(registry, "tiangong_store_write_seconds_count"),
            duplicates=_metric_total(registry, "tiangong_ingest_duplicate_messages_total"),
            dead_letters=_metric_total(registry, "tiangong_ingest_dead_letters_total"),
            rejected_points=registry.get_sample_value(
                "tiangong_ingest_points_total", {"outcome": "rejected"}
            )
            or 0.0,
            store_failures=_metric_total(registry, "tiangong_store_write_failures_total"),
        )
        await asyncio.sleep(interval)


async def _verify(platform: Platform, shape: FleetShape, tenant: str, start_ms: int) -> None:
    """Count what is stored with real queries; emit ``verified``."""
    store = platform.store
    began = time.monotonic()
    stored = await store.point_count(tenant)
    count_s = time.monotonic() - began
    device = shape.gateways()[0].children[0]
    series = await store.device_series(tenant, device)
    probe_points: int | None = None
    probe_latest: int | None = None
    sid = series.get("m0")
    if sid is not None:
        day = 24 * HOUR_MS
        first = start_ms - start_ms % day
        rows = await store.query(sid, first, first + 2 * HISTORY_MS, day, Aggregate.COUNT)
        probe_points = int(sum(v for _, v in rows if isinstance(v, int | float)))
        latest = await store.latest([sid])
        probe_latest = latest[sid].ts_ms if sid in latest else None
    emit(
        "verified",
        stored=stored,
        count_seconds=count_s,
        probe_device=device,
        probe_series=len(series),
        probe_points=probe_points,
        probe_latest_ms=probe_latest,
    )


async def _platform_main(args: argparse.Namespace) -> None:
    shape = _shape(args)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    settings = PlatformSettings.load(
        data_dir=Path(args.data_dir),
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        mqtt_version=5,
        mqtt_client_id=args.client_id,
        http_port=None,
        store=args.store,
        postgres_dsn=args.postgres_dsn or None,
    )
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    commands = await _stdin()
    began = time.monotonic()
    async with Platform(settings) as platform:
        emit("started", seconds=time.monotonic() - began, pid=os.getpid())
        began = time.monotonic()
        devices = await _provision(platform, shape, args.tenant)
        emit("provisioned", devices=devices, seconds=time.monotonic() - began)
        await _prove_subscription(platform, args, shape.gateways()[0].id)
        emit(
            "ready",
            points=platform.pipeline.points_committed,
            messages=platform.pipeline.messages_committed,
        )
        reporter = asyncio.create_task(_report(platform, args.interval), name="report")
        try:
            while (command := await _command(commands)) != "stop":
                if command == "verify":
                    await _verify(platform, shape, args.tenant, args.start_ms)
        finally:
            reporter.cancel()
        stopping = time.monotonic()
    own = sample_process(os.getpid())
    emit(
        "stopped",
        shutdown_s=time.monotonic() - stopping,
        hwm_kb=own.hwm_kb if own else 0,
        points=platform.pipeline.points_committed,
    )


def _platform_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest.py _platform")
    _shape_arguments(parser)
    parser.add_argument("--store", choices=["duckdb", "postgres"], required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--postgres-dsn", default="")
    parser.add_argument("--mqtt-host", required=True)
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--switch-interval", type=float, default=0.0)
    return parser


# -- a publisher -----------------------------------------------------------------------------


class _Publishing:
    """One publisher's run: ``window`` workers share a round-robin over the gateways.

    Flow control is by credit: the benchmark sends ``credit <n>``, the number of messages this
    publisher may have started in all so far; workers wait while it is used up. Credit is
    exact where pause/resume would overshoot by whatever is published while the word travels.
    """

    def __init__(
        self,
        client: MqttClient,
        encoders: list[EnvelopeEncoder],
        *,
        window: int,
        rate: float,
        duration: float,
        credit: int,
    ) -> None:
        self.client = client
        self.encoders = encoders
        self.window = window
        self.rate = rate
        self.messages = 0
        self.points = 0
        self.started = 0
        self.rejected = 0
        self.per_gateway = [0] * len(encoders)
        self.blocked_s = 0.0
        self.credit = credit if credit > 0 else None
        self._credit_changed = asyncio.Event()
        self._blocked_at: float | None = None
        self._next_seq = [0] * len(encoders)
        self._cursor = 0
        self._scheduled = 0
        loop = asyncio.get_running_loop()
        self.began = loop.time()
        self.deadline = self.began + duration
        self._origin = self.began

    @property
    def blocked(self) -> bool:
        """Whether workers are waiting for credit."""
        return self._blocked_at is not None

    def grant(self, credit: int) -> None:
        """Allow ``credit`` messages in all."""
        if self.credit is None or credit <= self.credit:
            return
        self.credit = credit
        if self._blocked_at is not None:
            waited = asyncio.get_running_loop().time() - self._blocked_at
            self.blocked_s += waited
            self._origin += waited  # a rate cap does not catch up on time spent waiting
            self._blocked_at = None
        self._credit_changed.set()
        self._credit_changed = asyncio.Event()

    def stop(self) -> None:
        """End the run now (workers finish the publish they are in)."""
        self.deadline = asyncio.get_running_loop().time()
        self._credit_changed.set()

    async def _wait_for_credit(self) -> None:
        loop = asyncio.get_running_loop()
        while self.credit is not None and self.started >= self.credit:
            if loop.time() >= self.deadline:
                return
            if self._blocked_at is None:
                self._blocked_at = loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self.deadline):
                    await self._credit_changed.wait()

    async def worker(self) -> None:
        """Publish until the deadline."""
        loop = asyncio.get_running_loop()
        n = len(self.encoders)
        while True:
            await self._wait_for_credit()
            if loop.time() >= self.deadline:
                if self._blocked_at is not None:
                    self.blocked_s += loop.time() - self._blocked_at
                    self._blocked_at = None
                return
            self.started += 1
            i = self._cursor % n
            self._cursor += 1
            seq = self._next_seq[i]
            self._next_seq[i] = seq + 1
            encoder = self.encoders[i]
            if self.rate:
                self._scheduled += encoder.points
                delay = self._origin + self._scheduled / self.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                await self.client.publish(encoder.topic, encoder.payload(seq), qos=1)
            except PublishRejectedError:
                self.rejected += 1
                continue
            self.messages += 1
            self.points += encoder.points
            self.per_gateway[i] += 1

    async def report(self, interval: float) -> None:
        """Emit ``stats`` lines."""
        while True:
            emit(
                "stats",
                t=time.monotonic(),
                messages=self.messages,
                points=self.points,
                blocked=self.blocked,
            )
            await asyncio.sleep(interval)

    async def obey(self, commands: asyncio.StreamReader) -> None:
        """Follow ``credit <n>`` and ``stop`` from the benchmark."""
        while True:
            command = await _command(commands)
            if command.startswith("credit "):
                self.grant(int(command.split()[1]))
            elif command == "stop":
                self.stop()
                return


async def _publish_main(args: argparse.Namespace) -> None:
    shape = _shape(args)
    gateways = shape.share(args.index, args.count)
    blocks = ValueBlocks(shape, seed=args.index + 1)
    encoders = [EnvelopeEncoder(args.tenant, g, shape, blocks, args.start_ms) for g in gateways]
    commands = await _stdin()
    async with MqttClient(
        host=args.mqtt_host,
        port=args.mqtt_port,
        client_id=args.client_id,
        version=ProtocolVersion.V5,
        clean_start=True,
    ) as client:
        emit("ready", gateways=len(gateways))
        if await _command(commands) != "go":
            return
        started = time.monotonic()
        cpu = time.process_time()
        run = _Publishing(
            client,
            encoders,
            window=args.window,
            rate=args.rate,
            duration=args.duration,
            credit=args.credit,
        )
        if encoders:
            reporter = asyncio.create_task(run.report(args.interval), name="report")
            obeying = asyncio.create_task(run.obey(commands), name="obey")
            try:
                async with asyncio.TaskGroup() as tasks:
                    for w in range(args.window):
                        tasks.create_task(run.worker(), name=f"publish-{w}")
            finally:
                reporter.cancel()
                obeying.cancel()
        emit(
            "done",
            t=time.monotonic(),
            elapsed=time.monotonic() - started,
            messages=run.messages,
            points=run.points,
            rejected=run.rejected,
            blocked_s=run.blocked_s,
            cpu_s=time.process_time() - cpu,
            per_gateway={g.id: n for g, n in zip(gateways, run.per_gateway, strict=True)},
        )


def _publish_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest.py _publish")
    _shape_arguments(parser)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--mqtt-host", required=True)
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0, help="points/s cap, 0 = none")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--credit", type=int, default=0, help="first credit, 0 = no flow control")
    return parser


# -- an InfluxDB writer ----------------------------------------------------------------------


class _InfluxWriting:
    """One writer's run: ``connections`` threads post batches of ``batch_lines`` lines."""

    def __init__(
        self, encoders: list[LineEncoder], *, metrics: int, lines: int, batch_lines: int
    ) -> None:
        self.metrics = metrics
        self.lines_total = lines
        self.lines_written = 0
        self.requests = 0
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._batches = self._generate(encoders, lines, batch_lines)

    @staticmethod
    def _generate(encoders: list[LineEncoder], lines: int, batch_lines: int) -> Iterator[bytes]:
        remaining = lines
        pending: list[str] = []
        seq = 0
        while remaining > 0:
            for encoder in encoders:
                pending.extend(encoder.lines(seq))
                while len(pending) >= batch_lines and remaining > 0:
                    take = min(batch_lines, remaining)
                    yield "".join(pending[:take]).encode()
                    del pending[:take]
                    remaining -= take
                if remaining <= 0:
                    return
            seq += 1

    def _next(self) -> bytes | None:
        with self._lock:
            if self.stopped.is_set():
                return None
            return next(self._batches, None)

    def connection(self, port: int, db: str, deadline: float) -> None:
        """Post batches on one HTTP connection until the share is written or time is up."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        path = f"/write?db={db}&precision=ms"
        try:
            while time.monotonic() < deadline and (body := self._next()) is not None:
                conn.request("POST", path, body, {"Content-Type": "text/plain"})
                response = conn.getresponse()
                answer = response.read()
                if response.status != 204:
                    self.failures.append(f"HTTP {response.status}: {answer[:300]!r}")
                    self.stopped.set()
                    return
                with self._lock:
                    self.lines_written += body.count(b"\n")
                    self.requests += 1
        except OSError as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            self.stopped.set()
        finally:
            conn.close()


def _influx_main(args: argparse.Namespace) -> None:
    shape = _shape(args)
    gateways = shape.share(args.index, args.count)
    blocks = ValueBlocks(shape, seed=args.index + 1)
    encoders = [LineEncoder(g, shape, blocks, args.start_ms) for g in gateways]
    lines = args.points // shape.metrics
    run = _InfluxWriting(
        encoders, metrics=shape.metrics, lines=lines if encoders else 0, batch_lines=args.batch
    )
    emit("ready", gateways=len(gateways))
    if sys.stdin.readline().strip() != "go":
        return

    def watch_stdin() -> None:
        sys.stdin.readline()  # any command, or EOF, means stop
        run.stopped.set()

    threading.Thread(target=watch_stdin, daemon=True, name="stdin").start()
    started = time.monotonic()
    cpu = time.process_time()
    deadline = started + args.max_seconds
    threads = [
        threading.Thread(
            target=run.connection, args=(args.influx_port, args.db, deadline), name=f"post-{c}"
        )
        for c in range(args.connections)
    ]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        emit(
            "stats",
            t=time.monotonic(),
            points=run.lines_written * shape.metrics,
            lines=run.lines_written,
        )
        threads[0].join(args.interval)
    emit(
        "done",
        t=time.monotonic(),
        elapsed=time.monotonic() - started,
        points=run.lines_written * shape.metrics,
        lines=run.lines_written,
        requests=run.requests,
        cpu_s=time.process_time() - cpu,
        failures=run.failures[:5],
        complete=run.lines_written >= run.lines_total,
    )


def _influx_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest.py _influx")
    _shape_arguments(parser)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--influx-port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--points", type=int, required=True, help="points this writer writes")
    parser.add_argument("--batch", type=int, default=5000, help="lines per request")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, required=True)
    return parser


# -- dispatch --------------------------------------------------------------------------------

CHILDREN = frozenset({"_platform", "_publish", "_influx"})


def _run_async(main: Coroutine[Any, Any, None]) -> None:
    # The platform's own CLI runs on uvloop; so does the platform measured here.
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
    try:
        if kind == "_platform":
            _run_async(_platform_main(_platform_parser().parse_args(rest)))
        elif kind == "_publish":
            _run_async(_publish_main(_publish_parser().parse_args(rest)))
        else:
            _influx_main(_influx_parser().parse_args(rest))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except Exception as exc:
        logging.getLogger("bench").exception("%s failed", kind)
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0

"""Reports aggregated per second at a regional sub-center, over a real nats-server.

Starts its own ``nats-server -js`` on a free port, publishes N signed enterprise reports to a
regional center's destination, then starts the center (so the whole backlog is waiting, as after
an outage) and measures how fast it drains: decode, verify the Ed25519 signature, validate
against the catalog, ledger, analytics store, re-aggregation and forwarding to the national
destination. Runs the same against the embedded outbox for comparison.

    .venv/bin/python bench/datacenter_ingest.py [--reports 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tiangong.data.catalog import standard_catalog
from tiangong.data.center import CenterConfig, DataCenter
from tiangong.data.model import Level, Measure, Period, Report, Scope, report_id_for
from tiangong.data.reports import KeyRing, encode_report
from tiangong.data.transport import (
    JetStreamTransport,
    OutboxTransport,
    ReportTransport,
    destination_for,
)

CATALOG = standard_catalog()
CITIES = ("320100", "320200", "320500", "320600")
INDUSTRIES = ("C26", "C38", "C39", "D44")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reports(n: int, ring: KeyRing) -> list[Report]:
    out = []
    days = [f"2026-12-{d:02d}" for d in range(1, 11)]
    for i in range(n):
        ent = f"E{i // len(days):06d}"
        scope = Scope(ent, Level.ENTERPRISE, CITIES[i % 4], INDUSTRIES[(i // 4) % 4])
        day = days[i % len(days)]
        out.append(
            ring.sign(
                Report(
                    report_id=report_id_for(scope, Period.DAY, day),
                    revision=1,
                    scope=scope,
                    period=Period.DAY,
                    period_start=day,
                    catalog_version=CATALOG.version,
                    measures={
                        "ENERGY_KWH": Measure(numerator=1000.0 + i),
                        "NETWORKING_RATE": Measure(numerator=8, denominator=10),
                        "OEE": Measure(numerator=12.0, denominator=20.0),
                        "OUTPUT_VALUE": Measure(numerator=5e5 + i),
                        "PEAK_POWER_KW": Measure(numerator=300.0 + i % 50),
                    },
                    created_at=datetime.now(UTC).isoformat(),
                )
            )
        )
    return out


async def run(name: str, transport: ReportTransport, root: Path, batch: list[Report]) -> None:
    keys = KeyRing.generate(root / f"keys-{name}", "js")
    keys.trust("platform", KeyRing.load(root / "platform").public_pem)
    dest = destination_for(Level.REGIONAL, "js")
    async with transport:
        t0 = time.perf_counter()
        for report in batch:
            await transport.publish(dest, encode_report(report), message_id=report.message_id)
        publish_s = time.perf_counter() - t0
        config = CenterConfig(
            level=Level.REGIONAL,
            center_id="js",
            data_dir=root / f"center-{name}",
            keys=keys,
            catalog=CATALOG,
            region="320000",
            parents=(destination_for(Level.NATIONAL, "cn"),),
            forward_delay=0.2,
        )
        t0 = time.perf_counter()
        async with DataCenter(config, transport=transport) as center:
            async with asyncio.timeout(600):
                await center.wait_idle()
            drain_s = time.perf_counter() - t0
            s = center.stats
        forwarded_backlog = await transport.backlog(
            destination_for(Level.NATIONAL, "cn"), durable="bench-national"
        )
    print(
        f"{name:9s} publish {len(batch) / publish_s:8.0f} reports/s (sequential, acked) | "
        f"center ingest+aggregate {s.accepted / drain_s:7.0f} reports/s "
        f"({s.accepted} reports, {drain_s:.2f} s, {s.forwarded} cell aggregates forwarded,"
        f" {forwarded_backlog} waiting at national)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=2000)
    args = parser.parse_args()
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        platform = KeyRing.generate(root / "platform", "platform")
        batch = reports(args.reports, platform)
        port = free_port()
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(root / "js")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(0.5)
            await run(
                "jetstream",
                JetStreamTransport(servers=f"nats://127.0.0.1:{port}", connect_timeout=10),
                root,
                batch,
            )
        finally:
            server.terminate()
            server.wait(10)
        await run("outbox", OutboxTransport(path=root / "outbox"), root, batch)


if __name__ == "__main__":
    asyncio.run(main())

"""Real ``datacenter`` processes on loopback with a real nats-server.

Two regional centers, one industry center and the national center run as processes; the test
plays the enterprises. A regional center is killed with SIGKILL mid-stream and restarted:
nothing is lost, revisions sent while it was down reach the national center, and the national
totals by region equal those by industry.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.data.conftest import NatsServerProcess
from tests.data.helpers import CATALOG, branch_total, enterprise_report, values
from tiangong.data.aggregate import Ledger, aggregate_report
from tiangong.data.model import ANY, Level, Period, Report, Scope
from tiangong.data.reports import KeyRing, encode_report
from tiangong.data.transport import JetStreamTransport, destination_for

pytestmark = pytest.mark.slow

DAYS = ("2026-12-01", "2026-12-02")
REGIONS = {"js": "320000", "zj": "330000"}
#: 24 enterprises in four cities and two industries.
CITIES = ("320100", "320500", "330100", "330200")
INDUSTRY_CODES = ("C26", "C38")


@dataclass
class CenterProcess:
    args: list[str]
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> None:
        env = {**os.environ, "COLUMNS": "200"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tiangong.data.cli", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return -9


def enterprises() -> dict[str, tuple[str, str]]:
    out = {}
    for i in range(24):
        city = CITIES[i % len(CITIES)]
        out[f"E{city}{i:03d}"] = (city, INDUSTRY_CODES[(i // 4) % 2])
    return out


def make_report(ent: str, cell: tuple[str, str], day: str, revision: int) -> Report:
    base = enterprise_report("E320500A", day=day, revision=revision)
    scope = Scope(source=ent, level=Level.ENTERPRISE, region=cell[0], industry=cell[1])
    from tiangong.data.model import Measure, report_id_for  # noqa: PLC0415

    seed = sum(map(ord, ent)) + DAYS.index(day) * 7 + revision * 1000
    measures = {
        "ENERGY_KWH": Measure(numerator=float(seed)),
        "NETWORKING_RATE": Measure(numerator=float(seed % 10), denominator=10.0),
        "PEAK_POWER_KW": Measure(numerator=float(seed % 97)),
    }
    return Report(
        report_id=report_id_for(scope, Period.DAY, day),
        revision=revision,
        scope=scope,
        period=Period.DAY,
        period_start=day,
        catalog_version=CATALOG.version,
        measures=measures,
        created_at=base.created_at,
    )


async def test_sub_center_killed_mid_stream_loses_nothing(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    ents = enterprises()
    keys_root = tmp_path / "keys"
    platform = KeyRing.generate(keys_root / "platform", "platform")  # signs for the enterprises
    rings = {c: KeyRing.generate(keys_root / c, c) for c in ("cn", "js", "zj", "mfg")}
    for sub in ("js", "zj", "mfg"):
        rings[sub].trust("platform", platform.public_pem)
        rings["cn"].trust(sub, rings[sub].public_pem)

    common = ["--nats", nats_server.url, "--ack-wait", "2", "--forward-delay", "0.2"]
    common += ["--stats-interval", "0.5"]

    def center(cid: str, *extra: str) -> CenterProcess:
        data_dir = tmp_path / "centers" / cid
        data_dir.mkdir(parents=True)
        return CenterProcess(
            args=[
                "--id",
                cid,
                "--data-dir",
                str(data_dir),
                "--keys",
                str(keys_root / cid),
                *common,
                *extra,
            ],
            data_dir=data_dir,
            log_path=tmp_path / f"{cid}.log",
        )

    centers = {
        "cn": center("cn", "--level", "national"),
        "js": center("js", "--level", "regional", "--region", "320000", "--parent", "cn"),
        "zj": center("zj", "--level", "regional", "--region", "330000", "--parent", "cn"),
        "mfg": center("mfg", "--level", "industry", "--industry", "C", "--parent", "cn"),
    }
    for proc in centers.values():
        proc.start()
    try:
        for proc in centers.values():
            await _eventually(lambda p=proc: _assert_ready(p), timeout=20)
        async with JetStreamTransport(servers=nats_server.url, connect_timeout=10) as t:
            sent: dict[str, Report] = {}

            async def send(report: Report) -> None:
                signed = platform.sign(report)
                region_center = "js" if report.scope.region.startswith("32") else "zj"
                for dest in (
                    destination_for(Level.REGIONAL, region_center),
                    destination_for(Level.INDUSTRY, "mfg"),
                ):
                    await t.publish(dest, encode_report(signed), message_id=signed.message_id)
                sent[report.report_id] = report

            batch = [(e, cell, day) for day in DAYS for e, cell in ents.items()]
            for e, cell, day in batch[:16]:
                await send(make_report(e, cell, day, 1))
            # Jiangsu has taken some of these (its stats say so) when it is killed.
            await _eventually(lambda: _assert_stats(centers["js"], "received", 2), timeout=20)
            centers["js"].kill()
            for e, cell, day in batch[16:]:
                await send(make_report(e, cell, day, 1))
            # Corrections while Jiangsu is down, one of them re-sent (a duplicate).
            for e, cell, day in batch[:4]:
                await send(make_report(e, cell, day, 2))
            await send(make_report(*batch[0], 2))
            await asyncio.sleep(0.5)
            centers["js"].start()

        def check() -> None:
            ledger = Ledger(centers["cn"].data_dir / "ledger.sqlite3")
            try:
                for day in DAYS:
                    children = ledger.children(Period.DAY, day)
                    want = aggregate_report(
                        [r for r in sent.values() if r.period_start == day],
                        scope=Scope("check", Level.NATIONAL, ANY, ANY),
                        period=Period.DAY,
                        period_start=day,
                        catalog=CATALOG,
                        revision=1,
                        created_at="2026-12-03T00:00:00+00:00",
                    )
                    by_region = branch_total(children, Level.REGIONAL, day)
                    by_industry = branch_total(children, Level.INDUSTRY, day)
                    assert values(by_region) == pytest.approx(values(want)), day
                    assert values(by_industry) == pytest.approx(values(want)), day
            finally:
                ledger.close()

        await _eventually(check, timeout=40)
        for cid, proc in centers.items():
            assert proc.stop() == 0, (cid, proc.log_path.read_text()[-3000:])
        import orjson  # noqa: PLC0415

        stats = orjson.loads((centers["js"].data_dir / "stats.json").read_bytes())
        assert stats["rejected"] == 0
        cn_stats = orjson.loads((centers["cn"].data_dir / "stats.json").read_bytes())
        assert cn_stats["rejected"] == 0
    finally:
        for proc in centers.values():
            proc.stop()


def _assert_ready(proc: CenterProcess) -> None:
    assert proc.proc is not None
    assert proc.proc.poll() is None, proc.log_path.read_text()
    assert "ready:" in proc.log_path.read_text(errors="replace")


def _assert_stats(proc: CenterProcess, key: str, at_least: int) -> None:
    import orjson  # noqa: PLC0415

    path = proc.data_dir / "stats.json"
    assert path.exists()
    assert orjson.loads(path.read_bytes())[key] >= at_least


async def _eventually(check: object, *, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            check()  # type: ignore[operator]
        except AssertionError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.3)
        else:
            return

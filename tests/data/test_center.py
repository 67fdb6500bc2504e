"""Centers in one process over a real nats-server: enterprises → regional + industry → national."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.data.conftest import NatsServerProcess
from tests.data.helpers import (
    CATALOG,
    DAY,
    ENTERPRISES,
    Topology,
    branch_total,
    enterprise_report,
    eventually,
    expected,
    values,
)
from tiangong.data.center import CenterConfig, DataCenter, EnterpriseExporter
from tiangong.data.governance import AuditKind, AuditLog, ExportPolicy, ExportRule
from tiangong.data.model import ANY, DataGrade, Level, Measure, Period, Report
from tiangong.data.reports import KeyRing, encode_report
from tiangong.data.transport import JetStreamTransport, destination_for

pytestmark = pytest.mark.slow


class Hierarchy:
    """Centers and enterprise exporters started on demand, all stopped at the end."""

    def __init__(self, root: Path, nats: NatsServerProcess, stack: contextlib.AsyncExitStack):
        self.topology = Topology(root)
        self.topology.setup_trust()
        self.root = root
        self.nats = nats
        self.stack = stack
        self.centers: dict[str, DataCenter] = {}

    async def transport(self) -> JetStreamTransport:
        return await self.stack.enter_async_context(
            JetStreamTransport(servers=self.nats.url, ack_wait=2.0, connect_timeout=10)
        )

    async def center(
        self, center_id: str, *, policy: ExportPolicy | None = None, **extra: object
    ) -> DataCenter:
        t = self.topology
        if center_id == t.national:
            level, region, industry, parents = Level.NATIONAL, ANY, ANY, ()
        elif center_id in t.regions:
            level, region, industry = Level.REGIONAL, t.regions[center_id], ANY
            parents = (destination_for(Level.NATIONAL, t.national),)
        else:
            level, region, industry = Level.INDUSTRY, ANY, t.industries[center_id]
            parents = (destination_for(Level.NATIONAL, t.national),)
        config = CenterConfig(
            level=level,
            center_id=center_id,
            data_dir=self.root / "centers" / center_id,
            keys=t.keys(center_id),
            catalog=CATALOG,
            region=region,
            industry=industry,
            parents=parents,
            export_policy=policy or ExportPolicy(),
            forward_delay=0.05,
            **extra,  # type: ignore[arg-type]
        )
        center = DataCenter(config, transport=await self.transport())
        self.centers[center_id] = await self.stack.enter_async_context(center)
        return center

    async def exporter(self, enterprise: str, *, policy: ExportPolicy | None = None):
        t = self.topology
        audit = AuditLog(self.root / "enterprises" / f"{enterprise}-audit.sqlite3")
        self.stack.callback(audit.close)
        industry = next(iter(t.industries))
        return EnterpriseExporter(
            transport=await self.transport(),
            keys=t.keys(enterprise),
            catalog=CATALOG,
            audit=audit,
            destinations=(
                destination_for(Level.REGIONAL, t.region_center_of(enterprise)),
                destination_for(Level.INDUSTRY, industry),
            ),
            policy=policy,
        )

    async def idle(self) -> None:
        async def all_idle() -> None:
            for center in self.centers.values():
                assert await center.idle(), f"{center.config.center_id} busy"

        await eventually(all_idle)
        await eventually(all_idle)  # a forward seen late by national: look twice


@pytest.fixture
async def hierarchy(tmp_path: Path, nats_server: NatsServerProcess) -> AsyncIterator[Hierarchy]:
    async with contextlib.AsyncExitStack() as stack:
        (tmp_path / "enterprises").mkdir()
        yield Hierarchy(tmp_path, nats_server, stack)


def national_children(h: Hierarchy) -> list[Report]:
    return h.centers[h.topology.national].ledger.children(Period.DAY, DAY)


def check_national(h: Hierarchy, reports: list[Report]) -> None:
    children = national_children(h)
    want = values(expected(reports))
    assert values(branch_total(children, Level.REGIONAL)) == pytest.approx(want)
    assert values(branch_total(children, Level.INDUSTRY)) == pytest.approx(want)


async def test_hierarchy_totals_revision_and_catch_up(hierarchy: Hierarchy) -> None:
    h = hierarchy
    national = await h.center("cn")
    js = await h.center("js")
    await h.center("mfg")
    # Zhejiang's center is down while its enterprises report: it catches up when it starts.
    reports = [enterprise_report(e, energy=1000.0 * (i + 1)) for i, e in enumerate(ENTERPRISES)]
    exporters = {e: await h.exporter(e) for e in ENTERPRISES}
    for report in reports:
        outcome = await exporters[report.scope.source].export(report)
        # Production volume is important data: refused at both boundaries, and audited.
        assert len(outcome.sent) == 2
        assert all(r[0].indicator == "PRODUCTION_VOLUME" for r in outcome.refused.values())
    refusals = exporters["E320500A"].audit.entries(kind=AuditKind.EXPORT_REFUSED)
    assert {e.event.destination for e in refusals} == {"regional.js", "industry.mfg"}
    assert all("PRODUCTION_VOLUME" in e.event.detail for e in refusals)

    zj = await h.center("zj")
    await h.idle()
    check_national(h, reports)
    want = values(expected(reports))
    # A ratio is Σ online / Σ registered, never a mean of ratios.
    assert want["NETWORKING_RATE"] == pytest.approx(32 / 40)
    assert "PRODUCTION_VOLUME" not in values(branch_total(national_children(h), Level.REGIONAL))
    assert js.stats.accepted == 2
    assert zj.stats.accepted == 2

    # A revision corrects every level above.
    revised = enterprise_report("E320500A", revision=2, energy=7777.0, online=10, registered=10)
    await exporters["E320500A"].export(revised)
    reports[0] = revised
    await h.idle()
    check_national(h, reports)
    assert js.stats.revised == 1
    js_children = js.ledger.children(Period.DAY, DAY)
    assert {r.revision for r in js_children if r.scope.source == "E320500A"} == {2}
    # The store of every level holds the corrected figures.
    rows = await national.store.totals(
        Period.DAY, DAY, "2026-12-02", by="region", indicators=["ENERGY_KWH"], level=Level.REGIONAL
    )
    assert sum(r.value or 0 for r in rows) == pytest.approx(7777.0 + 2000 + 3000 + 4000)
    by_industry = await national.store.totals(
        Period.DAY,
        DAY,
        "2026-12-02",
        by="industry",
        indicators=["ENERGY_KWH"],
        level=Level.INDUSTRY,
    )
    assert sum(r.value or 0 for r in by_industry) == pytest.approx(sum(r.value or 0 for r in rows))


async def test_duplicates_and_reordering_counted_once(hierarchy: Hierarchy) -> None:
    h = hierarchy
    await h.center("cn")
    js = await h.center("js")
    await h.center("mfg")
    await h.center("zj")
    t = await h.transport()
    ring = h.topology.keys("E320500A")
    dest = destination_for(Level.REGIONAL, "js")
    r1 = ring.sign(enterprise_report("E320500A", revision=1, energy=100.0))
    r2 = ring.sign(enterprise_report("E320500A", revision=2, energy=200.0))
    r3 = ring.sign(enterprise_report("E320500A", revision=3, energy=300.0))
    # Re-ordered (3 before 1 and 2) and duplicated: by the transport's window (same id) and
    # after it (a re-send under a new message id).
    for report, suffix in [(r3, ""), (r1, ""), (r3, ""), (r2, ""), (r3, "#resend"), (r1, "#x")]:
        await t.publish(dest, encode_report(report), message_id=report.message_id + suffix)
    other = enterprise_report("E320100B", energy=50.0)
    await t.publish(dest, encode_report(h.topology.keys("E320100B").sign(other)), message_id="o")
    await h.idle()
    assert (js.stats.accepted, js.stats.duplicates, js.stats.stale) == (2, 1, 3)
    held = js.ledger.children(Period.DAY, DAY)
    assert {r.scope.source: r.measures["ENERGY_KWH"].numerator for r in held} == {
        "E320500A": 300.0,
        "E320100B": 50.0,
    }
    children = national_children(h)
    assert values(branch_total(children, Level.REGIONAL))["ENERGY_KWH"] == pytest.approx(350.0)


async def test_bad_reports_rejected_with_reason(hierarchy: Hierarchy, tmp_path: Path) -> None:
    h = hierarchy
    # Jiangsu trusts a Zhejiang enterprise's key, yet refuses its report: out of its region.
    h.topology.keys("js").trust("E330100C", h.topology.keys("E330100C").public_pem)
    js = await h.center("js")
    t = await h.transport()
    dest = destination_for(Level.REGIONAL, "js")
    ring = h.topology.keys("E320500A")
    good = enterprise_report("E320500A")
    stranger = KeyRing.generate(tmp_path / "stranger", "E320500A-forged")
    unknown = dataclasses.replace(good, measures={"NO_SUCH_THING": Measure(numerator=1)})
    outside = enterprise_report("E330100C")  # Zhejiang's enterprise, sent to Jiangsu
    bad = {
        "malformed": b"{not json",
        "unsigned": encode_report(good),
        "forged": encode_report(stranger.sign(good)),
        "tampered": encode_report(
            dataclasses.replace(ring.sign(good), measures={"ENERGY_KWH": Measure(numerator=1e9)})
        ),
        "uncatalogued": encode_report(ring.sign(unknown)),
        "outside": encode_report(h.topology.keys("E330100C").sign(outside)),
    }
    for name, data in bad.items():
        await t.publish(dest, data, message_id=name)
    await t.publish(dest, encode_report(ring.sign(good)), message_id="good")
    await h.idle()
    assert js.stats.rejected == len(bad)
    assert js.stats.accepted == 1  # the good one was not blocked behind the bad ones
    reasons = {
        e.event.subject: e.event.detail for e in js.audit.entries(kind=AuditKind.REPORT_REJECTED)
    }
    assert set(reasons) == set(bad)
    assert "JSON" in reasons["malformed"]
    assert reasons["unsigned"] == "unsigned"
    assert "unknown signer" in reasons["forged"]
    assert reasons["tampered"] == "bad signature"
    assert "NO_SUCH_THING" in reasons["uncatalogued"]
    assert "outside" in reasons["outside"]
    assert js.audit.verify().ok


async def test_important_data_refused_upward_and_audited(hierarchy: Hierarchy) -> None:
    """The enterprise may give production volume to its region; the region may not pass it on."""
    h = hierarchy
    await h.center("cn")
    js = await h.center("js")
    to_region = ExportPolicy(
        rules=(ExportRule(destination="regional.js", max_grade=DataGrade.IMPORTANT),)
    )
    exporter = await h.exporter("E320500A", policy=to_region)
    outcome = await exporter.export(enterprise_report("E320500A", volume=42.0))
    assert "regional.js" in outcome.sent
    assert "regional.js" not in outcome.refused
    await h.idle()
    held = js.ledger.children(Period.DAY, DAY)
    assert held[0].measures["PRODUCTION_VOLUME"].numerator == 42.0
    refused = js.audit.entries(kind=AuditKind.EXPORT_REFUSED)
    assert refused
    assert refused[0].event.destination == "national.cn"
    assert "PRODUCTION_VOLUME" in refused[0].event.detail
    assert js.stats.export_refusals >= 1
    (cell,) = national_children(h)
    assert "PRODUCTION_VOLUME" not in cell.measures
    assert "ENERGY_KWH" in cell.measures
    forwarded = js.audit.entries(kind=AuditKind.REPORT_FORWARDED)
    assert forwarded
    assert forwarded[-1].event.destination == "national.cn"


async def test_center_restart_resumes_and_revisions_grow(hierarchy: Hierarchy) -> None:
    """A sub-center stopped mid-stream resumes its consumer; its next revision is higher."""
    h = hierarchy
    await h.center("cn")
    t = await h.transport()
    dest = destination_for(Level.REGIONAL, "js")
    ring = h.topology.keys("E320500A")
    # First life of the Jiangsu center: one report, forwarded with revision 1.
    async with contextlib.AsyncExitStack() as life:
        first = Hierarchy.__new__(Hierarchy)
        first.__dict__.update(h.__dict__, stack=life, centers={})
        js = await first.center("js")
        await t.publish(
            dest, encode_report(ring.sign(enterprise_report("E320500A"))), message_id="a"
        )
        await first.idle()
    # While it is down: a correction arrives.
    corrected = enterprise_report("E320500A", revision=2, energy=5.0)
    await t.publish(dest, encode_report(ring.sign(corrected)), message_id="b")
    js = await h.center("js")
    await h.idle()
    assert js.stats.revised == 1
    (cell,) = national_children(h)
    assert cell.measures["ENERGY_KWH"].numerator == 5.0
    assert cell.revision == 2

import dataclasses
import sqlite3

import pytest

from tiangong.data.catalog import standard_catalog
from tiangong.data.errors import DataError, ExportRefused
from tiangong.data.governance import (
    RAW_TELEMETRY,
    AuditEvent,
    AuditKind,
    AuditLog,
    Dataset,
    ExportPolicy,
    ExportRule,
    SharingPolicy,
)
from tiangong.data.model import DataDomain, DataGrade, Measure

from .generated import enterprise_report

SOURCE = "91320500MA00000001"


def report():
    return enterprise_report(
        SOURCE,
        "320500",
        "C38",
        {
            "ENERGY_KWH": Measure(numerator=100.0),  # general
            "PRODUCTION_VOLUME": Measure(numerator=5.0),  # important
            "PROFIT_CNY": Measure(numerator=7.0),  # important
            "ENERGY_RESERVE_T": Measure(numerator=9.0),  # core
        },
    )


def test_default_policy_lets_only_general_data_out():
    decision = ExportPolicy().decide(report(), "rc-320000")
    assert decision.allowed is not None
    assert set(decision.allowed.measures) == {"ENERGY_KWH"}
    assert decision.allowed.signature == ""  # reduced: the sender signs what it sends
    refused = {r.indicator: r for r in decision.refused}
    assert set(refused) == {"PRODUCTION_VOLUME", "PROFIT_CNY", "ENERGY_RESERVE_T"}
    assert refused["ENERGY_RESERVE_T"].grade is DataGrade.CORE
    assert "may not leave" in refused["PROFIT_CNY"].rule
    error = decision.error()
    assert isinstance(error, ExportRefused)
    assert "ENERGY_RESERVE_T" in str(error)
    assert error.rule


def test_nothing_refused_keeps_the_report_untouched():
    r = dataclasses.replace(report(), measures={"ENERGY_KWH": Measure(numerator=1.0)})
    decision = ExportPolicy().decide(r, "rc")
    assert decision.allowed is r
    assert decision.refused == ()
    assert decision.error() is None


def test_rules_by_source_and_destination_allow_and_deny():
    policy = ExportPolicy(
        rules=(
            ExportRule(destination="national", max_grade=DataGrade.IMPORTANT),
            ExportRule(
                source=SOURCE,
                destination="national",
                max_grade=DataGrade.IMPORTANT,
                deny=frozenset({"PROFIT_CNY"}),
            ),
            ExportRule(
                source=SOURCE,
                destination="partner",
                allow=frozenset({"PROFIT_CNY", "ENERGY_RESERVE_T"}),
            ),
        )
    )
    national = policy.decide(report(), "national")
    assert national.allowed is not None
    assert set(national.allowed.measures) == {"ENERGY_KWH", "PRODUCTION_VOLUME"}
    assert {r.indicator for r in national.refused} == {"PROFIT_CNY", "ENERGY_RESERVE_T"}
    other = dataclasses.replace(report(), scope=dataclasses.replace(report().scope, source="x"))
    assert set(policy.decide(other, "national").allowed.measures) == {
        "ENERGY_KWH",
        "PRODUCTION_VOLUME",
        "PROFIT_CNY",
    }
    # allow lifts an important indicator but never a core one without a core grade.
    partner = policy.decide(report(), "partner")
    assert set(partner.allowed.measures) == {"ENERGY_KWH", "PROFIT_CNY"}
    assert {r.indicator for r in partner.refused} == {"PRODUCTION_VOLUME", "ENERGY_RESERVE_T"}


def test_unknown_indicator_fails_closed_and_all_refused_gives_none():
    r = dataclasses.replace(report(), measures={"MYSTERY": Measure(numerator=1.0)})
    decision = ExportPolicy(default_max_grade=DataGrade.CORE).decide(
        r, "x", catalog=standard_catalog()
    )
    assert decision.allowed is None
    assert decision.refused[0].grade is DataGrade.CORE


def test_breakdown_is_filtered_too():
    r = dataclasses.replace(
        report(),
        measures={"ENERGY_KWH": Measure(numerator=1.0)},
        breakdown={
            "e1": {"ENERGY_KWH": Measure(numerator=1.0), "PROFIT_CNY": Measure(numerator=2.0)}
        },
    )
    decision = ExportPolicy().decide(r, "national")
    assert decision.allowed.breakdown == {"e1": {"ENERGY_KWH": Measure(numerator=1.0)}}
    assert [x.indicator for x in decision.refused] == ["PROFIT_CNY"]


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_policy_files(tmp_path, suffix):
    policy = ExportPolicy(
        rules=(
            ExportRule(
                source="a",
                destination="b",
                max_grade=DataGrade.IMPORTANT,
                allow=frozenset({"X"}),
                deny=frozenset({"Y"}),
            ),
        ),
        default_max_grade=DataGrade.GENERAL,
    )
    path = tmp_path / f"policy{suffix}"
    policy.save(path)
    assert ExportPolicy.load(path) == policy
    path.write_text(
        "[[rule]]\nmax_grade = 'secret'\n"
        if suffix == ".toml"
        else '{"rule": [{"max_grade": "secret"}]}'
    )
    with pytest.raises(DataError):
        ExportPolicy.load(path)


def test_raw_telemetry_only_leaves_when_explicitly_shared():
    policy = SharingPolicy(shared={"raw_telemetry": frozenset({"oem-service"})})
    assert not policy.may_share(RAW_TELEMETRY, "national")
    assert policy.may_share(RAW_TELEMETRY, "oem-service")
    derived = Dataset("monthly_kpis", DataGrade.GENERAL, DataDomain.MANAGEMENT)
    assert policy.may_share(derived, "national")
    secret = Dataset("recipes", DataGrade.IMPORTANT, DataDomain.RD)
    assert not policy.may_share(secret, "national")


def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(
            AuditEvent(
                kind=AuditKind.EXPORT if i % 2 else AuditKind.EXPORT_REFUSED,
                actor="ent-1",
                subject=f"report-{i}@1",
                origin="ent-1",
                destination="rc-320000",
                detail=f"detail {i}",
            )
        )


def test_audit_log_appends_verifies_and_filters(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        fill(log, 6)
        head = log.head()
        assert head[0] == 6
    with AuditLog(path) as log:  # survives reopening
        assert log.verify().ok
        assert log.verify().entries == 6
        assert log.verify(expect_head=head).ok
        refused = log.entries(kind=AuditKind.EXPORT_REFUSED)
        assert [e.event.subject for e in refused] == ["report-0@1", "report-2@1", "report-4@1"]
        assert all(e.event.at for e in refused)
        assert len(log.entries(since="2000-01-01")) == 6
        assert log.entries(since="2999-01-01") == []
        # The triggers stop a careless edit.
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            log._db.execute("DELETE FROM audit WHERE seq = 1")


def tamper(path, *statements):
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("DROP TRIGGER audit_no_delete")
    for s in statements:
        db.execute(s)
    db.commit()
    db.close()


def test_audit_chain_detects_an_edited_entry(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        fill(log, 5)
    tamper(path, "UPDATE audit SET detail = 'nothing to see' WHERE seq = 3")
    with AuditLog(path) as log:
        result = log.verify()
    assert not result.ok
    assert result.first_broken == 3
    assert "hash" in result.reason


def test_audit_chain_detects_a_removed_entry(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        fill(log, 5)
    tamper(path, "DELETE FROM audit WHERE seq = 2")
    with AuditLog(path) as log:
        result = log.verify()
    assert result.first_broken == 2
    assert "missing" in result.reason


def test_audit_chain_detects_a_rehashed_edit_and_truncation(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        fill(log, 5)
        head = log.head()
    # Renumbering after a deletion still breaks the link of the next entry.
    tamper(path, "DELETE FROM audit WHERE seq = 2", "UPDATE audit SET seq = seq - 1 WHERE seq > 2")
    with AuditLog(path) as log:
        assert log.verify().first_broken == 2
    path2 = tmp_path / "audit2.sqlite"
    with AuditLog(path2) as log:
        fill(log, 5)
        head = log.head()
    tamper(path2, "DELETE FROM audit WHERE seq = 5")
    with AuditLog(path2) as log:
        assert log.verify().ok  # a shorter chain is self-consistent ...
        assert log.verify(expect_head=head).first_broken == 5  # ... the anchor exposes it


def test_the_audit_command_says_intact_or_names_the_broken_entry(tmp_path):
    from typer.testing import CliRunner  # noqa: PLC0415

    from tiangong.cli import app  # noqa: PLC0415

    path = tmp_path / "audit.sqlite"
    with AuditLog(path) as log:
        fill(log, 5)
        seq, digest = log.head()
    runner = CliRunner()
    done = runner.invoke(app, ["dataaudit", "verify", str(path)], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert f"head {seq}:{digest}" in done.output
    shown = runner.invoke(app, ["dataaudit", "show", str(path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    # The last entry removed: only the anchored head notices.
    tamper(path, f"DELETE FROM audit WHERE seq = {seq}")
    done = runner.invoke(app, ["dataaudit", "verify", str(path)], env={"COLUMNS": "200"})
    assert done.exit_code == 0
    done = runner.invoke(
        app, ["dataaudit", "verify", str(path), "--head", f"{seq}:{digest}"], env={"COLUMNS": "200"}
    )
    assert done.exit_code == 1
    tamper(path, "UPDATE audit SET detail = 'nothing to see' WHERE seq = 2")
    done = runner.invoke(app, ["dataaudit", "verify", str(path)], env={"COLUMNS": "200"})
    assert done.exit_code == 1
    assert "entry 2" in done.output

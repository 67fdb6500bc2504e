import contextlib
import dataclasses
import os
import stat

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tiangong.data.catalog import standard_catalog
from tiangong.data.errors import ReportError
from tiangong.data.model import Level, Measure, Period, Report, Scope, report_id_for
from tiangong.data.reports import (
    MAX_REPORT_BYTES,
    KeyRing,
    decode_report,
    encode_report,
    sign_report,
    signing_bytes,
    validate_report,
    verify_report,
)

from .generated import enterprise_report


def sample() -> Report:
    return enterprise_report(
        "91320500MA00000001",
        "320500",
        "C38",
        {
            "ENERGY_KWH": Measure(numerator=1234.5),
            "NETWORKING_RATE": Measure(numerator=80, denominator=100),
            "OEE": Measure(numerator=0.75 * 16, denominator=16),
            "PEAK_POWER_KW": Measure(numerator=310.0),
        },
    )


def center_report() -> Report:
    scope = Scope(source="rc-320000", level=Level.REGIONAL, region="320500", industry="C38")
    return Report(
        report_id=report_id_for(scope, Period.MONTH, "2026-01-01"),
        revision=2,
        scope=scope,
        period=Period.MONTH,
        period_start="2026-01-01",
        catalog_version="2026.1",
        measures={"ENTERPRISES_REPORTING": Measure(members=frozenset({"b", "a"}))},
        created_at="2026-02-01T00:00:00+00:00",
        breakdown={"a": {"ENERGY_KWH": Measure(numerator=1.0)}},
    )


def test_round_trip_and_canonical_bytes():
    for report in (sample(), center_report()):
        data = encode_report(report)
        assert decode_report(data) == report
        assert encode_report(decode_report(data)) == data
    # Integer-valued numbers and reordered keys encode to the same bytes.
    doc = orjson.loads(encode_report(sample()))
    shuffled = orjson.dumps(dict(reversed(list(doc.items()))))
    assert encode_report(decode_report(shuffled)) == encode_report(sample())
    assert b'"n":80.0' in encode_report(sample())
    assert b'"m":["a","b"]' in encode_report(center_report())


def test_sign_and_verify():
    key = Ed25519PrivateKey.generate()
    signed = sign_report(sample(), key, "ent-1")
    assert signed.signer == "ent-1"
    assert signed.signature
    keys = {"ent-1": key.public_key()}
    verify_report(signed, keys)
    verify_report(decode_report(encode_report(signed)), keys)
    assert signing_bytes(signed) == signing_bytes(dataclasses.replace(signed, signature="x"))

    with pytest.raises(ReportError, match="unsigned"):
        verify_report(sample(), keys)
    with pytest.raises(ReportError, match="unknown signer"):
        verify_report(signed, {"other": key.public_key()})
    tampered = dataclasses.replace(
        signed, measures={**signed.measures, "ENERGY_KWH": Measure(numerator=1.0)}
    )
    with pytest.raises(ReportError, match="bad signature"):
        verify_report(tampered, keys)
    # The signer is covered: relabelling the key id breaks the signature too.
    other = Ed25519PrivateKey.generate()
    relabelled = dataclasses.replace(signed, signer="ent-2")
    with pytest.raises(ReportError, match="bad signature"):
        verify_report(relabelled, {"ent-2": other.public_key()})
    with pytest.raises(ReportError, match="bad signature"):
        verify_report(dataclasses.replace(signed, signature="!!notbase64"), keys)
    # Tampering with the wire bytes is caught after decoding.
    wire = encode_report(signed).replace(b"1234.5", b"1234.6")
    with pytest.raises(ReportError, match="bad signature"):
        verify_report(decode_report(wire), keys)


def test_key_ring(tmp_path):
    ring = KeyRing.generate(tmp_path / "keys", "ent-1")
    mode = stat.S_IMODE(os.stat(tmp_path / "keys" / "private.pem").st_mode)
    assert mode == 0o600
    with pytest.raises(FileExistsError):
        KeyRing.generate(tmp_path / "keys", "ent-1")
    center = KeyRing.generate(tmp_path / "center", "rc-320000")
    center.trust("ent-1", ring.public_pem)
    loaded = KeyRing.load(tmp_path / "center")
    assert set(loaded.trusted) == {"ent-1", "rc-320000"}
    verify_report(ring.sign(sample()), loaded.trusted)
    with pytest.raises(ReportError):
        center.trust("../evil", ring.public_pem)
    with pytest.raises(ReportError):
        KeyRing.load(tmp_path / "missing")


def test_validate_accepts_good_reports():
    catalog = standard_catalog()
    validate_report(sample(), catalog)
    validate_report(center_report(), catalog)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: dataclasses.replace(r, measures={"NOPE": Measure()}), "unknown indicator"),
        (lambda r: dataclasses.replace(r, catalog_version="2027.1"), "catalog version"),
        (
            lambda r: dataclasses.replace(r, measures={"ENERGY_KWH": Measure(1, 2)}),
            "no denominator",
        ),
        (
            lambda r: dataclasses.replace(r, measures={"NETWORKING_RATE": Measure(1, -2)}),
            "denominator >= 0",
        ),
        (lambda r: dataclasses.replace(r, period_start="2026-01-15"), "not the start"),
        (lambda r: dataclasses.replace(r, period_start="Jan 2026"), "not an ISO date"),
        (
            lambda r: dataclasses.replace(r, scope=dataclasses.replace(r.scope, region="999999")),
            "region",
        ),
        (
            lambda r: dataclasses.replace(r, scope=dataclasses.replace(r.scope, industry="*")),
            "names its region and industry",
        ),
        (lambda r: dataclasses.replace(r, report_id="x"), "report_id"),
        (
            lambda r: dataclasses.replace(r, breakdown={"a": {"ENERGY_KWH": Measure()}}),
            "no breakdown",
        ),
        (lambda r: dataclasses.replace(r, created_at="yesterday"), "created_at"),
    ],
)
def test_validate_refuses(change, reason):
    with pytest.raises(ReportError, match=reason):
        validate_report(change(sample()), standard_catalog())


def test_validate_hourly_and_daily_starts():
    catalog = standard_catalog()
    for period, start in ((Period.HOUR, "2026-01-01T08:00"), (Period.DAY, "2026-01-01")):
        r = sample()
        r = dataclasses.replace(
            r,
            period=period,
            period_start=start,
            report_id=report_id_for(r.scope, period, start),
        )
        validate_report(r, catalog)
    bad = dataclasses.replace(sample(), period=Period.HOUR, period_start="2026-01-01T08:30")
    with pytest.raises(ReportError):
        validate_report(bad, catalog)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"[]", "JSON object"),
        (b"{}", "missing fields"),
        (b'{"x": 1}', "unknown fields"),
        (b"x" * (MAX_REPORT_BYTES + 1), "too large"),
    ],
)
def test_decode_malformed(data, reason):
    with pytest.raises(ReportError, match=reason):
        decode_report(data)


def test_decode_field_errors():
    good = orjson.loads(encode_report(center_report()))
    cases = [
        ("revision", -1, "revision"),
        ("revision", True, "revision"),
        ("revision", "2", "revision"),
        ("period", "week", "period"),
        ("scope", {"source": "a"}, "scope"),
        ("measures", [], "measures"),
        ("measures", {"A": {"n": "1"}}, "must be a number"),
        ("measures", {"A": {"n": 1, "z": 1}}, "unknown fields"),
        ("measures", {"A": {"d": 1}}, "missing"),
        ("measures", {"A": {"n": 1e400}}, "number"),
        ("measures", {"A": {"n": 1, "m": [1]}}, "list of strings"),
        ("breakdown", [], "breakdown"),
        ("signer", 5, "signer"),
    ]
    for key, value, reason in cases:
        doc = {**good, key: value}
        with pytest.raises(ReportError, match=reason):
            decode_report(orjson.dumps(doc, option=orjson.OPT_PASSTHROUGH_DATACLASS))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes_only_report_error(data):
    with contextlib.suppress(ReportError):
        decode_report(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            "report_id",
            "revision",
            "scope",
            "period",
            "period_start",
            "catalog_version",
            "measures",
            "created_at",
            "breakdown",
            "signer",
            "signature",
        ]
    ),
    json_values,
)
def test_fuzz_fields_only_report_error(key, value):
    doc = orjson.loads(encode_report(center_report()))
    doc[key] = value
    try:
        data = orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):
        return
    try:
        report = decode_report(data)
    except ReportError:
        return
    # Whatever decodes also validates with only ReportError and re-encodes stably.
    with contextlib.suppress(ReportError):
        validate_report(report, standard_catalog())
    assert decode_report(encode_report(report)) == report

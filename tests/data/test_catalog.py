import pytest

from tiangong.data.catalog import (
    ENERGY_INDUSTRIES,
    KGCE_PER_KWH,
    Catalog,
    kwh_to_tce,
    province_of,
    section_of,
    standard_catalog,
)
from tiangong.data.errors import CatalogError
from tiangong.data.model import ANY, Aggregation, DataGrade


def test_standard_catalog_has_the_required_indicators_with_their_rules():
    c = standard_catalog()
    assert c.version == "2026.2"
    assert c.major == "2026"
    assert len(c.indicators) >= 30
    expected = {
        "ENERGY_KWH": Aggregation.SUM,
        "ENERGY_TCE": Aggregation.SUM,
        "OUTPUT_VALUE": Aggregation.SUM,
        "PRODUCTION_VOLUME": Aggregation.SUM,
        "DEVICES_REGISTERED": Aggregation.SUM,
        "DEVICES_ONLINE": Aggregation.SUM,
        "NETWORKING_RATE": Aggregation.RATIO_OF_SUMS,
        "DATA_COVERAGE": Aggregation.RATIO_OF_SUMS,
        "OEE": Aggregation.WEIGHTED_MEAN,
        "ALARMS": Aggregation.SUM,
        "SECURITY_EVENTS": Aggregation.SUM,
        "ENERGY_INTENSITY": Aggregation.RATIO_OF_SUMS,
        "ENTERPRISES_REPORTING": Aggregation.DISTINCT_COUNT,
        "PEAK_POWER_KW": Aggregation.MAX,
    }
    for code, rule in expected.items():
        spec = c.spec(code)
        assert spec.aggregation is rule
        assert spec.name_zh
        assert spec.name_en
        assert spec.unit
    grades = {s.grade for s in c.indicators.values()}
    assert grades == {DataGrade.GENERAL, DataGrade.IMPORTANT, DataGrade.CORE}


def test_unknown_indicator_is_a_catalog_error():
    with pytest.raises(CatalogError, match="NOPE"):
        standard_catalog().spec("NOPE")


def test_dimension_codes_ship_as_package_data():
    c = standard_catalog()
    assert c.check_region("320500") == "苏州市"
    assert c.check_region("320200") == "无锡市"
    assert c.check_region("110000") == "北京市"
    assert c.check_region("310000") == "上海市"
    assert c.check_region("440300") == "深圳市"
    assert c.check_industry("D44") == "电力、热力生产和供应业"
    assert c.check_industry("B06") == "煤炭开采和洗选业"
    assert c.check_industry("C") == "制造业"
    assert all(f"C{n}" in c.industries for n in range(13, 44))
    assert set("ABCDEFGHIJKLMNOPQRST") <= set(c.industries)
    assert all(code in c.industries for code in ENERGY_INDUSTRIES)
    assert c.check_region(ANY)
    assert c.check_industry(ANY)
    with pytest.raises(CatalogError):
        c.check_region("999999")
    with pytest.raises(CatalogError):
        c.check_industry("Z99")


def test_json_round_trip_and_malformed_input():
    c = standard_catalog()
    again = Catalog.from_json(c.to_json())
    assert again == c
    assert again.to_json() == c.to_json()
    for bad in (b"", b"[]", b'{"version": ""}', b'{"version": "1", "indicators": [1]}'):
        with pytest.raises(CatalogError):
            Catalog.from_json(bad)
    doc = c.to_json().replace(b'"sum"', b'"median"', 1)
    with pytest.raises(CatalogError):
        Catalog.from_json(doc)


def test_conversions_and_hierarchies():
    assert KGCE_PER_KWH == 0.1229
    assert kwh_to_tce(10_000) == pytest.approx(1.229)
    assert province_of("320500") == "320000"
    assert province_of(ANY) == ANY
    assert section_of("C38") == "C"

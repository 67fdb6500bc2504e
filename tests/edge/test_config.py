"""Edge configuration: valid files load; each kind of mistake names its line and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiangong.edge.config import EdgeConfig, ModbusDevice, OpcUaDevice, load_config, parse_config
from tiangong.edge.errors import EdgeConfigError

GOOD = """\
[gateway]
id = "gw-1"
tenant = "acme"
site = "p1"

[uplink]
host = "127.0.0.1"
port = 1884
protocol = "sparkplug"

[buffer]
max_bytes = 104857600

[[devices]]
id = "cnc-001"
protocol = "modbus"
host = "127.0.0.1"
port = 5020
unit = 1

[devices.network]
access = "5g"
slice = "1-000001"
five_qi = 82

[[devices.points]]
property = "spindle_temp"
address = 10
type = "int16"
scale = 0.1

[[devices.points]]
property = "power"
table = "input"
address = 20
type = "float32"
word_order = "little"

[[devices]]
id = "pump-001"
protocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840/tiangong/"

[[devices.points]]
property = "flow"
node = "ns=2;s=pump-001.flow"
deadband = 0.5

[[rules]]
name = "hot spindle"
device = "cnc-001"
property = "spindle_temp"
op = ">"
value = 70
"""


def test_good_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert isinstance(config, EdgeConfig)
    cnc, pump = config.devices
    assert isinstance(cnc, ModbusDevice)
    assert isinstance(pump, OpcUaDevice)
    assert cnc.network.access == "5g"
    assert cnc.points[1].word_order == "little"
    assert config.uplink.protocol == "sparkplug"


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            count += 1
            if count == occurrence:
                return number
    raise AssertionError(needle)


@pytest.mark.parametrize(
    ("old", "new", "needle", "occurrence", "words"),
    [
        (
            'type = "float32"',
            'type = "float33"',
            'type = "float33"',
            1,
            "devices[0].points[1].type",
        ),
        ("address = 20", "address = 70000", "address = 70000", 1, "less than or equal to 65535"),
        ("scale = 0.1", "scael = 0.1", "scael", 1, "Extra inputs are not permitted"),
        ("port = 5020", 'port = "5020x"', 'port = "5020x"', 1, "valid integer"),
        ("five_qi = 82", "five_qi = 82\nbogus = 1", "bogus", 1, "devices[0].network.bogus"),
        (
            'property = "flow"',
            'property = "spindle temp"',
            'property = "spindle temp"',
            1,
            "should match pattern",
        ),
        (
            'endpoint = "opc.tcp://127.0.0.1:4840/tiangong/"',
            'endpoint = "http://x"',
            'endpoint = "http://x"',
            1,
            "devices[1].endpoint",
        ),
    ],
)
def test_mistakes_name_the_line(
    old: str, new: str, needle: str, occurrence: int, words: str
) -> None:
    text = replace(old, new)
    with pytest.raises(EdgeConfigError) as info:
        parse_config(text)
    assert info.value.line == line_of(text, needle, occurrence), str(info.value)
    assert words in str(info.value)
    assert str(info.value).startswith(f"edge.toml:{info.value.line}: ")


def test_semantic_mistakes_are_explained() -> None:
    coil_as_float = replace('table = "input"', 'table = "coil"')
    with pytest.raises(EdgeConfigError, match="coils and discrete inputs are type 'bool'"):
        parse_config(coil_as_float)
    duplicate = replace('property = "power"', 'property = "spindle_temp"')
    with pytest.raises(EdgeConfigError, match="maps \\['spindle_temp'\\] more than once"):
        parse_config(duplicate)
    bad_rule = replace(
        'device = "cnc-001"\nproperty = "spindle_temp"', 'device = "cnc-001"\nproperty = "torque"'
    )
    with pytest.raises(EdgeConfigError, match="has no point 'torque'"):
        parse_config(bad_rule)
    wifi_slice = replace('access = "5g"', 'access = "wifi"')
    with pytest.raises(EdgeConfigError, match="describe 5G access only"):
        parse_config(wifi_slice)
    secure_without_keys = replace(
        'endpoint = "opc.tcp://127.0.0.1:4840/tiangong/"',
        'endpoint = "opc.tcp://127.0.0.1:4840/tiangong/"\nsecurity_policy = "Basic256Sha256"\n'
        'security_mode = "SignAndEncrypt"',
    )
    with pytest.raises(EdgeConfigError, match="needs certificate and private_key"):
        parse_config(secure_without_keys)


def test_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    broken = GOOD.replace("unit = 1", "unit = = 1")
    with pytest.raises(EdgeConfigError) as info:
        parse_config(broken)
    assert info.value.line == line_of(broken, "unit = = 1")
    assert "not valid TOML" in str(info.value)
    with pytest.raises(EdgeConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.toml")
    no_gateway = GOOD.replace('[gateway]\nid = "gw-1"\ntenant = "acme"\nsite = "p1"\n', "")
    with pytest.raises(EdgeConfigError, match="gateway: Field required"):
        parse_config(no_gateway)

"""The generated protobuf module is fresh, and the schema has the standard's numbers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tiangong.network.sparkplug import _generated_sparkplug_b_pb2 as pb
from tiangong.network.sparkplug.codec import DataType

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "tiangong" / "network" / "sparkplug"


def test_committed_module_matches_a_fresh_generation(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_sparkplug.py"), "--out-dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("_generated_sparkplug_b_pb2.py", "_generated_sparkplug_b_pb2.pyi"):
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        committed = (PACKAGE / name).read_text(encoding="utf-8")
        assert committed == fresh, f"{name} is stale: run tools/generate_sparkplug.py"
        assert fresh.startswith("# GENERATED FILE, DO NOT EDIT")


# Field numbers of the Sparkplug 3.0 specification (chapter "Payloads"); they are the wire.
STANDARD_FIELDS = {
    pb.Payload: {"timestamp": 1, "metrics": 2, "seq": 3, "uuid": 4, "body": 5},
    pb.Payload.Metric: {
        "name": 1,
        "alias": 2,
        "timestamp": 3,
        "datatype": 4,
        "is_historical": 5,
        "is_transient": 6,
        "is_null": 7,
        "metadata": 8,
        "properties": 9,
        "int_value": 10,
        "long_value": 11,
        "float_value": 12,
        "double_value": 13,
        "boolean_value": 14,
        "string_value": 15,
        "bytes_value": 16,
        "dataset_value": 17,
        "template_value": 18,
        "extension_value": 19,
    },
    pb.Payload.MetaData: {
        "is_multi_part": 1,
        "content_type": 2,
        "size": 3,
        "seq": 4,
        "file_name": 5,
        "file_type": 6,
        "md5": 7,
        "description": 8,
    },
    pb.Payload.PropertyValue: {
        "type": 1,
        "is_null": 2,
        "int_value": 3,
        "long_value": 4,
        "float_value": 5,
        "double_value": 6,
        "boolean_value": 7,
        "string_value": 8,
        "propertyset_value": 9,
        "propertysets_value": 10,
        "extension_value": 11,
    },
    pb.Payload.PropertySet: {"keys": 1, "values": 2},
    pb.Payload.PropertySetList: {"propertyset": 1},
    pb.Payload.DataSet: {"num_of_columns": 1, "columns": 2, "types": 3, "rows": 4},
    pb.Payload.DataSet.Row: {"elements": 1},
    pb.Payload.DataSet.DataSetValue: {
        "int_value": 1,
        "long_value": 2,
        "float_value": 3,
        "double_value": 4,
        "boolean_value": 5,
        "string_value": 6,
        "extension_value": 7,
    },
    pb.Payload.Template: {
        "version": 1,
        "metrics": 2,
        "parameters": 3,
        "template_ref": 4,
        "is_definition": 5,
    },
    pb.Payload.Template.Parameter: {
        "name": 1,
        "type": 2,
        "int_value": 3,
        "long_value": 4,
        "float_value": 5,
        "double_value": 6,
        "boolean_value": 7,
        "string_value": 8,
        "extension_value": 9,
    },
}


@pytest.mark.parametrize("message", list(STANDARD_FIELDS), ids=lambda m: m.DESCRIPTOR.full_name)
def test_field_numbers_are_the_standards(message: type) -> None:
    descriptor = message.DESCRIPTOR
    assert descriptor.full_name.startswith("org.eclipse.tahu.protobuf.Payload")
    numbers = {name: f.number for name, f in descriptor.fields_by_name.items()}
    assert numbers == STANDARD_FIELDS[message]


def test_value_fields_are_one_oneof() -> None:
    oneof = pb.Payload.Metric.DESCRIPTOR.oneofs_by_name["value"]
    assert {f.number for f in oneof.fields} == set(range(10, 20))


def test_extension_ranges_are_open() -> None:
    assert pb.Payload.DESCRIPTOR.extension_ranges[0][0] == 6


def test_datatype_enum_matches_the_schema_and_the_standard() -> None:
    schema = {v.name: v.number for v in pb.DESCRIPTOR.enum_types_by_name["DataType"].values}
    assert len(schema) == 35
    assert schema["Int8"] == 1
    assert schema["UInt64"] == 8
    assert schema["DateTime"] == 13
    assert schema["Template"] == 19
    assert schema["PropertySetList"] == 21
    assert schema["Int8Array"] == 22
    assert schema["DateTimeArray"] == 34
    for name, number in schema.items():
        python_name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()
        assert DataType[python_name] == number
    assert len(DataType) == len(schema)

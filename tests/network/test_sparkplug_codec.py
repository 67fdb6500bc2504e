"""Sparkplug B codec: values, payloads, topics and STATE, in memory."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiangong.network.errors import (
    SparkplugMetricError,
    SparkplugPayloadError,
    SparkplugTopicError,
)
from tiangong.network.sparkplug import _generated_sparkplug_b_pb2 as pb
from tiangong.network.sparkplug.codec import (
    COMPRESSED_UUID,
    MAX_INFLATED_BYTES,
    DataSet,
    DataType,
    EdgeNodeDescriptor,
    ExtensionValue,
    HostState,
    MessageType,
    MetaData,
    Metric,
    PayloadData,
    PropertyValue,
    SparkplugTopic,
    StateTopic,
    Template,
    TemplateParameter,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
    parse_topic,
    resolve_datatype,
    validate_value,
)

U64 = 2**64 - 1

SCALARS: dict[DataType, st.SearchStrategy[object]] = {
    DataType.INT8: st.integers(-(2**7), 2**7 - 1),
    DataType.INT16: st.integers(-(2**15), 2**15 - 1),
    DataType.INT32: st.integers(-(2**31), 2**31 - 1),
    DataType.INT64: st.integers(-(2**63), 2**63 - 1),
    DataType.UINT8: st.integers(0, 2**8 - 1),
    DataType.UINT16: st.integers(0, 2**16 - 1),
    DataType.UINT32: st.integers(0, 2**32 - 1),
    DataType.UINT64: st.integers(0, U64),
    DataType.FLOAT: st.floats(width=32, allow_nan=False),
    DataType.DOUBLE: st.floats(allow_nan=False),
    DataType.BOOLEAN: st.booleans(),
    DataType.STRING: st.text(),
    DataType.DATE_TIME: st.integers(0, U64),
    DataType.TEXT: st.text(),
    DataType.UUID: st.uuids().map(str),
    DataType.BYTES: st.binary(),
    DataType.FILE: st.binary(),
}

ARRAYS: dict[DataType, st.SearchStrategy[object]] = {
    DataType.INT8_ARRAY: st.lists(SCALARS[DataType.INT8]),
    DataType.INT16_ARRAY: st.lists(SCALARS[DataType.INT16]),
    DataType.INT32_ARRAY: st.lists(SCALARS[DataType.INT32]),
    DataType.INT64_ARRAY: st.lists(SCALARS[DataType.INT64]),
    DataType.UINT8_ARRAY: st.lists(SCALARS[DataType.UINT8]),
    DataType.UINT16_ARRAY: st.lists(SCALARS[DataType.UINT16]),
    DataType.UINT32_ARRAY: st.lists(SCALARS[DataType.UINT32]),
    DataType.UINT64_ARRAY: st.lists(SCALARS[DataType.UINT64]),
    DataType.FLOAT_ARRAY: st.lists(SCALARS[DataType.FLOAT]),
    DataType.DOUBLE_ARRAY: st.lists(SCALARS[DataType.DOUBLE]),
    DataType.BOOLEAN_ARRAY: st.lists(st.booleans()),
    DataType.STRING_ARRAY: st.lists(st.text().filter(lambda s: "\x00" not in s)),
    DataType.DATE_TIME_ARRAY: st.lists(SCALARS[DataType.DATE_TIME]),
}


def roundtrip(metric: Metric) -> Metric:
    [decoded] = decode_payload(encode_payload(PayloadData(metrics=(metric,)))).metrics
    return decoded


# --- scalar and array values -------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(SCALARS), ids=lambda d: d.name)
@given(data=st.data())
def test_every_scalar_datatype_round_trips(datatype: DataType, data: st.DataObject) -> None:
    value = data.draw(SCALARS[datatype])
    metric = Metric(name="m", alias=7, timestamp=1_700_000_000_000, datatype=datatype, value=value)
    assert roundtrip(metric) == metric


@pytest.mark.parametrize("datatype", list(SCALARS), ids=lambda d: d.name)
@given(data=st.data())
def test_scalar_sent_without_datatype_resolves_from_the_birth(
    datatype: DataType, data: st.DataObject
) -> None:
    value = data.draw(SCALARS[datatype])
    sent = Metric(alias=3, datatype=datatype, value=value)
    wire = pb.Payload()
    wire.ParseFromString(encode_payload(PayloadData(metrics=(sent,))))
    wire.metrics[0].ClearField("datatype")  # DATA messages may leave it out
    [received] = decode_payload(wire.SerializeToString()).metrics
    assert received.datatype is DataType.UNKNOWN
    assert resolve_datatype(received, datatype) == sent


@pytest.mark.parametrize("datatype", list(ARRAYS), ids=lambda d: d.name)
@given(data=st.data())
def test_every_array_datatype_round_trips(datatype: DataType, data: st.DataObject) -> None:
    value = tuple(data.draw(ARRAYS[datatype]))
    metric = Metric(name="a", datatype=datatype, value=value)
    assert roundtrip(metric) == metric


@pytest.mark.parametrize("datatype", [DataType.FLOAT, DataType.DOUBLE])
def test_nan_round_trips(datatype: DataType) -> None:
    decoded = roundtrip(Metric(name="x", datatype=datatype, value=math.nan))
    assert isinstance(decoded.value, float)
    assert math.isnan(decoded.value)


def test_arrays_use_the_specifications_layout() -> None:
    booleans = (False, False, True, True, False, True, False, False, True, True, False, True)
    msg = pb.Payload()
    msg.ParseFromString(
        encode_payload(
            PayloadData(
                metrics=(
                    Metric(name="b", datatype=DataType.BOOLEAN_ARRAY, value=booleans),
                    Metric(name="s", datatype=DataType.STRING_ARRAY, value=("ABC", "hello")),
                    Metric(name="i", datatype=DataType.INT32_ARRAY, value=(123456789, 987654321)),
                )
            )
        )
    )
    assert msg.metrics[0].bytes_value == bytes([0x0C, 0, 0, 0, 0x34, 0xD0])
    assert msg.metrics[1].bytes_value == b"ABC\x00hello\x00"
    assert msg.metrics[2].bytes_value == bytes.fromhex("15cd5b07b168de3a")


def test_signed_integers_are_two_complement_of_the_field_and_of_their_own_width() -> None:
    msg = pb.Payload()
    msg.ParseFromString(
        encode_payload(
            PayloadData(
                metrics=(
                    Metric(name="a", datatype=DataType.INT8, value=-1),
                    Metric(name="b", datatype=DataType.INT64, value=-2),
                )
            )
        )
    )
    assert msg.metrics[0].int_value == 0xFFFFFFFF  # as Tahu's Java and C encoders write it
    assert msg.metrics[1].long_value == U64 - 1
    # Tahu's Python encoder writes Int8/Int16 as 8/16-bit two's complement: read both.
    for datatype, wire, expected in [
        (DataType.INT8, 0xFF, -1),
        (DataType.INT8, 0x80, -128),
        (DataType.INT16, 0xFFFE, -2),
        (DataType.INT8, 0xFFFFFF80, -128),
        (DataType.INT32, 0x7FFFFFFF, 2**31 - 1),
    ]:
        raw = pb.Payload()
        raw.metrics.add(name="x", datatype=int(datatype), int_value=wire)
        assert decode_payload(raw.SerializeToString()).metrics[0].value == expected


@pytest.mark.parametrize(
    ("datatype", "wire"),
    [(DataType.INT8, 0x1FF), (DataType.UINT8, 256), (DataType.UINT16, 70000)],
)
def test_out_of_range_wire_values_are_refused(datatype: DataType, wire: int) -> None:
    raw = pb.Payload()
    raw.metrics.add(name="x", datatype=int(datatype), int_value=wire)
    with pytest.raises(SparkplugPayloadError) as caught:
        decode_payload(raw.SerializeToString())
    assert caught.value.reason == "bad_metric"


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (DataType.INT8, 128),
        (DataType.UINT32, -1),
        (DataType.UINT64, 2**64),
        (DataType.INT32, True),
        (DataType.INT32, 1.5),
        (DataType.FLOAT, 1e39),
        (DataType.BOOLEAN, 1),
        (DataType.STRING, b"bytes"),
        (DataType.STRING, "\ud800"),
        (DataType.BYTES, "text"),
        (DataType.DATE_TIME, -1),
        (DataType.UINT8_ARRAY, (1, 256)),
        (DataType.STRING_ARRAY, ("a\x00b",)),
        (DataType.BOOLEAN_ARRAY, (1, 0)),
        (DataType.DATA_SET, "not a data set"),
        (DataType.PROPERTY_SET, 1),
    ],
)
def test_values_that_do_not_fit_are_refused(datatype: DataType, value: object) -> None:
    with pytest.raises(SparkplugMetricError) as caught:
        validate_value(datatype, value, "m")
    assert caught.value.metric == "m"
    assert caught.value.datatype == int(datatype)


def test_value_without_datatype_is_refused() -> None:
    with pytest.raises(SparkplugMetricError):
        encode_payload(PayloadData(metrics=(Metric(name="x", value=1),)))


def test_null_metric() -> None:
    metric = Metric(name="x", alias=1, datatype=DataType.INT32, is_null=True)
    assert roundtrip(metric) == metric
    with pytest.raises(SparkplugMetricError):
        encode_payload(
            PayloadData(metrics=(Metric(name="x", datatype=DataType.INT32, value=1, is_null=True),))
        )


# --- structured values -------------------------------------------------------------------------


def test_data_set_round_trips() -> None:
    dataset = DataSet(
        columns=("id", "label", "level", "ok"),
        types=(DataType.INT32, DataType.STRING, DataType.DOUBLE, DataType.BOOLEAN),
        rows=((1, "a", 0.5, True), (-2, None, 1e300, False)),
    )
    metric = Metric(name="table", datatype=DataType.DATA_SET, value=dataset)
    assert roundtrip(metric) == metric


def test_template_definition_and_instance_round_trip() -> None:
    definition = Template(
        metrics=(
            Metric(name="speed", datatype=DataType.FLOAT, value=0.0),
            Metric(
                name="nested",
                datatype=DataType.TEMPLATE,
                value=Template(template_ref="Inner", metrics=()),
            ),
        ),
        parameters=(
            TemplateParameter("max", DataType.INT32, -5),
            TemplateParameter("unit", DataType.STRING),
        ),
        is_definition=True,
        version="1.0",
    )
    instance = Template(
        template_ref="Motor", metrics=(Metric(name="speed", datatype=DataType.FLOAT, value=3.5),)
    )
    for template in (definition, instance):
        metric = Metric(name="Motor", datatype=DataType.TEMPLATE, value=template)
        assert roundtrip(metric) == metric


def test_properties_metadata_and_flags_round_trip() -> None:
    metric = Metric(
        name="file",
        alias=9,
        timestamp=5,
        datatype=DataType.FILE,
        value=b"\x00\x01",
        is_historical=True,
        is_transient=True,
        properties={
            "Quality": PropertyValue(DataType.INT32, 192),
            "engUnit": PropertyValue(DataType.STRING, "degC"),
            "missing": PropertyValue(DataType.DOUBLE, None),
            "nested": PropertyValue(
                DataType.PROPERTY_SET, {"k": PropertyValue(DataType.INT64, -1)}
            ),
            "list": PropertyValue(
                DataType.PROPERTY_SET_LIST, ({"a": PropertyValue(DataType.BOOLEAN, True)}, {})
            ),
        },
        metadata=MetaData(file_name="a.bin", file_type="bin", size=2, md5="x", is_multi_part=False),
    )
    assert roundtrip(metric) == metric


def test_extension_values_are_kept_as_bytes() -> None:
    raw = pb.Payload()
    metric = raw.metrics.add(name="ext", datatype=int(DataType.UNKNOWN))
    metric.extension_value.SetInParent()
    # An unknown field 1 (varint 5) inside MetricValueExtension, as a third party would send it.
    metric.extension_value.MergeFromString(b"\x08\x05")
    [decoded] = decode_payload(raw.SerializeToString()).metrics
    assert decoded.value == ExtensionValue(b"\x08\x05")
    assert roundtrip(decoded) == decoded


def test_payload_fields_round_trip() -> None:
    payload = PayloadData(timestamp=1, metrics=(), seq=255, uuid="schema-1", body=b"\xff")
    assert decode_payload(encode_payload(payload)) == payload
    assert decode_payload(b"") == PayloadData()


# --- garbage -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello world",
        b"\xff\xff\xff\xff",
        b"\x0a\x03abc",  # field 1 (timestamp, a varint) sent length-delimited
        b"\x12\x05\x0a\x03ab",  # truncated metric
        b"\x12\x04\x0a\x02\xff\xfe",  # metric name that is not UTF-8
        b"\x12\x02\x20\x63",  # datatype 99
    ],
)
def test_garbage_is_a_payload_error(garbage: bytes) -> None:
    with pytest.raises(SparkplugPayloadError):
        decode_payload(garbage)


def test_truncated_payload_is_a_payload_error() -> None:
    good = encode_payload(
        PayloadData(
            timestamp=1,
            seq=0,
            metrics=(Metric(name="a long metric name", datatype=DataType.STRING, value="x" * 40),),
        )
    )
    with pytest.raises(SparkplugPayloadError):
        decode_payload(good[: len(good) // 2])


@given(st.binary(max_size=200))
def test_decoder_raises_only_payload_errors(data: bytes) -> None:
    with contextlib.suppress(SparkplugPayloadError):
        decode_payload(data)


def _raw_metric(datatype: DataType, **fields: object) -> bytes:
    raw = pb.Payload()
    raw.metrics.add(name="x", datatype=int(datatype), **fields)
    return bytes(raw.SerializeToString())


@pytest.mark.parametrize(
    "payload",
    [
        _raw_metric(DataType.BOOLEAN_ARRAY, bytes_value=b"\x01\x00"),  # shorter than the count
        _raw_metric(DataType.BOOLEAN_ARRAY, bytes_value=b"\x09\x00\x00\x00\xff"),  # 9 bits, 1 byte
        _raw_metric(DataType.STRING_ARRAY, bytes_value=b"abc"),  # no terminating NUL
        _raw_metric(DataType.STRING_ARRAY, bytes_value=b"\xff\x00"),  # not UTF-8
        _raw_metric(DataType.INT32_ARRAY, bytes_value=b"\x00\x00\x00"),  # not whole items
        _raw_metric(DataType.INT32, string_value="1"),  # wrong value field
        _raw_metric(DataType.PROPERTY_SET, int_value=1),  # not a metric value type
        _raw_metric(DataType.DATA_SET, bytes_value=b""),
    ],
)
def test_values_in_the_wrong_shape_are_payload_errors(payload: bytes) -> None:
    with pytest.raises(SparkplugPayloadError):
        decode_payload(payload)


def test_structures_that_do_not_add_up_are_payload_errors() -> None:
    properties = pb.Payload()
    metric = properties.metrics.add(name="x", datatype=int(DataType.INT8), int_value=1)
    metric.properties.keys.extend(["a", "b"])
    metric.properties.values.add(type=int(DataType.INT8), int_value=1)
    table = pb.Payload()
    dataset = table.metrics.add(name="t", datatype=int(DataType.DATA_SET)).dataset_value
    dataset.columns.extend(["a", "b"])
    dataset.types.append(int(DataType.INT8))
    rows = pb.Payload()
    dataset = rows.metrics.add(name="t", datatype=int(DataType.DATA_SET)).dataset_value
    dataset.columns.append("a")
    dataset.types.append(int(DataType.INT8))
    dataset.rows.add().elements.add(int_value=1)
    dataset.rows.add()
    for raw in (properties, table, rows):
        with pytest.raises(SparkplugPayloadError):
            decode_payload(raw.SerializeToString())


def test_structures_that_do_not_add_up_are_refused_on_encoding() -> None:
    for value in (
        DataSet(columns=("a", "b"), types=(DataType.INT8,)),
        DataSet(columns=("a",), types=(DataType.INT8,), rows=((1, 2),)),
    ):
        with pytest.raises(SparkplugMetricError):
            validate_value(DataType.DATA_SET, value)
    for prop in (
        PropertyValue(DataType.PROPERTY_SET, 1),
        PropertyValue(DataType.PROPERTY_SET_LIST, {"a": PropertyValue(DataType.INT8, 1)}),
        PropertyValue(DataType.BYTES, b"x"),
    ):
        metric = Metric(name="m", datatype=DataType.INT8, value=1, properties={"p": prop})
        with pytest.raises(SparkplugMetricError):
            encode_payload(PayloadData(metrics=(metric,)))
    with pytest.raises(SparkplugMetricError):
        validate_value(DataType.TEMPLATE, DataSet(columns=(), types=()))
    with pytest.raises(SparkplugMetricError):
        encode_payload(
            PayloadData(
                metrics=(
                    Metric(
                        name="m", datatype=DataType.BYTES, value=b"", metadata=MetaData(size=-1)
                    ),
                )
            )
        )


def test_extension_values_round_trip_everywhere() -> None:
    extension = ExtensionValue(b"\x08\x05")
    metric = Metric(
        name="m",
        datatype=DataType.TEMPLATE,
        value=Template(parameters=(TemplateParameter("p", DataType.INT32, extension),)),
        properties={"p": PropertyValue(DataType.INT32, extension)},
    )
    assert roundtrip(metric) == metric
    table = DataSet(columns=("a",), types=(DataType.INT32,), rows=((extension,),))
    metric = Metric(name="t", datatype=DataType.DATA_SET, value=table)
    assert roundtrip(metric) == metric
    with pytest.raises(SparkplugMetricError):
        encode_payload(PayloadData(metrics=(Metric(name="e", value=ExtensionValue(b"\xff")),)))


# --- an independent encoder --------------------------------------------------------------------


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, body: bytes) -> bytes:
    tag = _varint(number << 3 | wire_type)
    if wire_type == 2:
        return tag + _varint(len(body)) + body
    return tag + body


def test_decodes_a_payload_written_byte_by_byte_from_the_specification() -> None:
    # Written from the standard's field numbers with a hand-rolled protobuf writer: neither
    # the codec nor the generated module nor the protobuf library is involved.
    metric_int = (
        _field(1, 2, b"Inputs/A")  # name
        + _field(2, 0, _varint(12))  # alias
        + _field(3, 0, _varint(1_486_144_502_122))  # timestamp
        + _field(4, 0, _varint(2))  # datatype Int16
        + _field(10, 0, _varint(0xFFFFFFFF - 99))  # int_value: -100 sign-extended
    )
    metric_float = (
        _field(1, 2, b"Supply Voltage")
        + _field(4, 0, _varint(9))  # Float
        + _field(12, 5, struct.pack("<f", 12.5))  # float_value (fixed32)
    )
    metric_null = _field(1, 2, b"Nothing") + _field(4, 0, _varint(10)) + _field(7, 0, _varint(1))
    metric_bytes = _field(1, 2, b"Blob") + _field(4, 0, _varint(17)) + _field(16, 2, b"\x00\x01")
    metric_flags = (
        _field(2, 0, _varint(300))  # alias only, no name, as in DATA
        + _field(5, 0, _varint(1))  # is_historical
        + _field(6, 0, _varint(1))  # is_transient
        + _field(4, 0, _varint(12))
        + _field(15, 2, "grüß".encode())
    )
    payload = (
        _field(1, 0, _varint(1_486_144_502_122))
        + b"".join(
            _field(2, 2, m)
            for m in (metric_int, metric_float, metric_null, metric_bytes, metric_flags)
        )
        + _field(3, 0, _varint(7))
        + _field(4, 2, b"my-uuid")
        + _field(5, 2, b"raw body")
    )
    decoded = decode_payload(payload)
    assert decoded.timestamp == 1_486_144_502_122
    assert decoded.seq == 7
    assert decoded.uuid == "my-uuid"
    assert decoded.body == b"raw body"
    assert decoded.metrics == (
        Metric(
            name="Inputs/A",
            alias=12,
            timestamp=1_486_144_502_122,
            datatype=DataType.INT16,
            value=-100,
        ),
        Metric(name="Supply Voltage", datatype=DataType.FLOAT, value=12.5),
        Metric(name="Nothing", datatype=DataType.DOUBLE, is_null=True),
        Metric(name="Blob", datatype=DataType.BYTES, value=b"\x00\x01"),
        Metric(
            alias=300,
            datatype=DataType.STRING,
            value="grüß",
            is_historical=True,
            is_transient=True,
        ),
    )


def test_decodes_a_payload_filled_field_by_field_with_the_protobuf_classes() -> None:
    raw = pb.Payload()
    raw.timestamp = 1000
    raw.seq = 0
    bd_seq = raw.metrics.add()
    bd_seq.name = "bdSeq"
    bd_seq.alias = 1
    bd_seq.timestamp = 1000
    bd_seq.datatype = 4  # Int64
    bd_seq.long_value = 3
    rebirth = raw.metrics.add()
    rebirth.name = "Node Control/Rebirth"
    rebirth.datatype = 11  # Boolean
    rebirth.boolean_value = False
    table = raw.metrics.add()
    table.name = "Table"
    table.datatype = 16  # DataSet
    table.dataset_value.num_of_columns = 2
    table.dataset_value.columns.extend(["a", "b"])
    table.dataset_value.types.extend([7, 12])  # UInt32, String
    row = table.dataset_value.rows.add()
    row.elements.add().int_value = 4000000000
    row.elements.add().string_value = "x"
    prop = table.properties
    prop.keys.append("Quality")
    prop.values.add(type=3, int_value=500)
    decoded = decode_payload(raw.SerializeToString())
    assert decoded.seq == 0
    assert decoded.metrics[0] == Metric(
        name="bdSeq", alias=1, timestamp=1000, datatype=DataType.INT64, value=3
    )
    assert decoded.metrics[1].value is False
    assert decoded.metrics[2].value == DataSet(
        columns=("a", "b"), types=(DataType.UINT32, DataType.STRING), rows=((4000000000, "x"),)
    )
    assert decoded.metrics[2].properties == {"Quality": PropertyValue(DataType.INT32, 500)}


# --- topics ------------------------------------------------------------------------------------

ids = st.text(st.characters(codec="utf-8", exclude_characters="+/#\x00"), min_size=1, max_size=20)


@given(group=ids, node=ids, device=ids, kind=st.sampled_from(list(MessageType)))
def test_topics_build_and_parse_back(group: str, node: str, device: str, kind: MessageType) -> None:
    if kind is MessageType.STATE:
        topic: SparkplugTopic | StateTopic = StateTopic(node)
    else:
        topic = SparkplugTopic(
            kind, EdgeNodeDescriptor(group, node), device if kind.device_level else None
        )
    text = str(topic)
    assert text.startswith("spBv1.0/")
    assert parse_topic(text) == topic


def test_topic_examples_from_the_specification() -> None:
    parsed = parse_topic("spBv1.0/Sparkplug B Devices/DDATA/Raspberry Pi/Pibrella")
    assert parsed == SparkplugTopic(
        MessageType.DDATA, EdgeNodeDescriptor("Sparkplug B Devices", "Raspberry Pi"), "Pibrella"
    )
    assert parse_topic("spBv1.0/STATE/scada-1") == StateTopic("scada-1")
    # A group may be called STATE: the number of levels tells the two apart.
    assert parse_topic("spBv1.0/STATE/NBIRTH/n") == SparkplugTopic(
        MessageType.NBIRTH, EdgeNodeDescriptor("STATE", "n")
    )


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("spAv1.0/G/NDATA/N", "not_sparkplug"),
        ("devices/x/telemetry", "not_sparkplug"),
        ("spBv1.0", "not_sparkplug"),
        ("spBv1.0/G/NDATA", "bad_shape"),
        ("spBv1.0/G/DDATA/N/D/extra", "bad_shape"),
        ("spBv1.0/G/XDATA/N", "unknown_type"),
        ("spBv1.0/G/STATE/N", "bad_shape"),
        ("spBv1.0/G/NBIRTH/N/D", "unexpected_device"),
        ("spBv1.0/G/NDEATH/N/D", "unexpected_device"),
        ("spBv1.0/G/NCMD/N/D", "unexpected_device"),
        ("spBv1.0/G/DBIRTH/N", "missing_device"),
        ("spBv1.0/G/DCMD/N", "missing_device"),
        ("spBv1.0//NDATA/N", "bad_id"),
        ("spBv1.0/G/NDATA/", "bad_id"),
        ("spBv1.0/G/DDATA/N/", "bad_id"),
        ("spBv1.0/G/DDATA/N/+", "bad_id"),
        ("spBv1.0/#/NDATA/N", "bad_id"),
        ("spBv1.0/STATE/", "bad_id"),
    ],
)
def test_bad_topics_are_refused(topic: str, reason: str) -> None:
    with pytest.raises(SparkplugTopicError) as caught:
        parse_topic(topic)
    assert caught.value.reason == reason
    assert caught.value.topic == topic


@pytest.mark.parametrize("bad", ["", "a+b", "a/b", "a#", "a\x00b", "\udc80"])
def test_ids_are_validated_on_building(bad: str) -> None:
    with pytest.raises(SparkplugTopicError):
        EdgeNodeDescriptor("G", bad)
    with pytest.raises(SparkplugTopicError):
        SparkplugTopic(MessageType.DDATA, EdgeNodeDescriptor("G", "N"), bad)
    with pytest.raises(SparkplugTopicError):
        StateTopic(bad)


# --- STATE -------------------------------------------------------------------------------------


@given(online=st.booleans(), timestamp=st.integers(0, U64))
def test_state_round_trips(online: bool, timestamp: int) -> None:
    state = HostState(online=online, timestamp=timestamp)
    encoded = encode_state(state)
    assert json.loads(encoded) == {"online": online, "timestamp": timestamp}
    assert decode_state(encoded) == state


@pytest.mark.parametrize(
    "payload",
    [
        b"ONLINE",  # Sparkplug 2.2 wording, not 3.0
        b"\xff",
        b"[]",
        b'{"online": "true", "timestamp": 1}',
        b'{"online": true}',
        b'{"online": true, "timestamp": -1}',
        b'{"online": true, "timestamp": true}',
        b'{"online": true, "timestamp": 1.5}',
    ],
)
def test_bad_state_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(SparkplugPayloadError) as caught:
        decode_state(payload)
    assert caught.value.reason == "bad_state"


@pytest.mark.parametrize("algorithm", [None, "DEFLATE", "GZIP"])
def test_compressed_payloads_are_inflated(algorithm: str | None) -> None:
    inner = PayloadData(
        timestamp=5, seq=7, metrics=(Metric(name="t", datatype=DataType.DOUBLE, value=21.5),)
    )
    plain = encode_payload(inner)
    body = gzip.compress(plain) if algorithm == "GZIP" else zlib.compress(plain)
    metrics = (
        (Metric(name="algorithm", datatype=DataType.STRING, value=algorithm),) if algorithm else ()
    )
    outer = PayloadData(timestamp=5, metrics=metrics, uuid=COMPRESSED_UUID, body=body)
    decoded = decode_payload(encode_payload(outer))
    assert decoded.seq == 7
    assert decoded.metrics[0].value == 21.5


@pytest.mark.parametrize(
    ("algorithm", "body", "reason"),
    [
        ("LZ4", zlib.compress(b""), "unknown compression"),
        ("DEFLATE", b"not deflate", "DEFLATE body"),
        ("DEFLATE", zlib.compress(bytes(MAX_INFLATED_BYTES + 1)), "inflates beyond"),
    ],
)
def test_bad_compressed_payloads_are_refused(algorithm: str, body: bytes, reason: str) -> None:
    outer = PayloadData(
        metrics=(Metric(name="algorithm", datatype=DataType.STRING, value=algorithm),),
        uuid=COMPRESSED_UUID,
        body=body,
    )
    with pytest.raises(SparkplugPayloadError, match=reason):
        decode_payload(encode_payload(outer))

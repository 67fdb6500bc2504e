"""The device access scheme: topics, payload shapes, authorization rules, Mosquitto files."""

from __future__ import annotations

import contextlib

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiangong.network.access import (
    Channel,
    DeviceTopic,
    decode_events,
    decode_status,
    decode_telemetry,
    parse_topic,
)
from tiangong.network.access.authorization import Principal, Role, may_publish, may_subscribe
from tiangong.network.access.payload import DeviceStatus, PayloadLimits
from tiangong.network.errors import PayloadError, TopicError
from tiangong.network.mosquitto import render_acl, render_passwd

NOW = 1_763_712_000_000


def test_topic_round_trip() -> None:
    topic = DeviceTopic.build("acme", "plant-1", "pump.01", Channel.COMMAND_REQUEST)
    assert topic == "tg/v1/acme/plant-1/pump.01/cmd/req"
    parsed = parse_topic(topic)
    assert (parsed.tenant, parsed.site, parsed.device, parsed.channel) == (
        "acme",
        "plant-1",
        "pump.01",
        Channel.COMMAND_REQUEST,
    )
    assert str(parsed) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "tg/v1/acme/plant/dev",  # no channel
        "tg/v2/acme/plant/dev/telemetry",  # other scheme version
        "tg/v1/acme/plant/dev/nope",  # unknown channel
        "tg/v1/acme/plant/-dev/telemetry",  # name must start with a letter or digit
        "tg/v1/ac me/plant/dev/telemetry",  # space
        "x/v1/acme/plant/dev/telemetry",
    ],
)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


def test_build_refuses_bad_names() -> None:
    with pytest.raises(TopicError):
        DeviceTopic.build("acme", "plant/1", "dev", Channel.TELEMETRY)


def test_single_sample_with_and_without_time() -> None:
    [one] = decode_telemetry(b'{"ts": 5, "values": {"t": 1.5, "s": "on"}}', device="d", now_ms=NOW)
    assert one.ts.tolist() == [5]
    assert one.values == {"t": [1.5], "s": ["on"]}
    assert not one.stamped_on_arrival
    [two] = decode_telemetry(b'{"values": {"t": 2}}', device="d", now_ms=NOW)
    assert two.ts.tolist() == [NOW]
    assert two.stamped_on_arrival


def test_iso_timestamps() -> None:
    [one] = decode_telemetry(
        b'{"ts": "2025-11-21T08:00:00+08:00", "values": {"t": 1}}', device="d", now_ms=NOW
    )
    assert one.ts.tolist() == [1_763_683_200_000]
    with pytest.raises(PayloadError) as info:
        decode_telemetry(
            b'{"ts": "2025-11-21T08:00:00", "values": {"t": 1}}', device="d", now_ms=NOW
        )
    assert info.value.reason == "bad_timestamp"


def test_rows_fill_missing_metrics_with_none() -> None:
    payload = orjson.dumps(
        {
            "samples": [
                {"ts": 1, "values": {"a": 1}},
                {"ts": 2, "values": {"b": 2}},
                {"values": {"a": 3}},
            ]
        }
    )
    [rows] = decode_telemetry(payload, device="d", now_ms=NOW)
    assert rows.ts.tolist() == [1, 2, NOW]
    assert rows.values == {"a": [1, None, 3], "b": [None, 2, None]}
    assert rows.stamped_on_arrival


def test_columns_and_gateway_envelope() -> None:
    payload = orjson.dumps(
        {
            "devices": {
                "c1": {"ts": [1, 2, 3], "values": {"a": [1, 2, 3], "b": [0.5, None, 1]}},
                "c2": {"ts": 9, "values": {"a": 4}, "units": {"a": "kW"}},
            }
        }
    )
    c1, c2 = decode_telemetry(payload, device="gw", now_ms=NOW)
    assert c1.device == "c1"
    assert c1.point_count == 6
    assert isinstance(c1.ts, np.ndarray)
    assert c1.ts.dtype == np.int64
    assert c2.units == {"a": "kW"}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{oops", "malformed_json"),
        (b"[1, 2]", "bad_shape"),
        (b'{"ts": 1}', "bad_shape"),
        (b'{"values": {"a": [1, 2]}}', "bad_shape"),
        (b'{"ts": [1, 2], "values": {"a": [1]}}', "length_mismatch"),
        (b'{"ts": ["x"], "values": {"a": [1]}}', "bad_timestamp"),
        (b'{"ts": true, "values": {"a": 1}}', "bad_timestamp"),
        (b'{"values": {"bad name": 1}}', "bad_name"),
        (b'{"devices": {"../x": {"values": {"a": 1}}}}', "bad_name"),
        (b'{"devices": [1]}', "bad_shape"),
        (b'{"samples": [{"ts": 1}]}', "bad_shape"),
        (b'{"values": {"a": 1}, "units": {"a": 5}}', "bad_shape"),
    ],
)
def test_payload_errors_name_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_telemetry(payload, device="d", now_ms=NOW)
    assert info.value.reason == reason


def test_limits_bound_one_message() -> None:
    limits = PayloadLimits(max_samples=10, max_devices=2, max_metrics=3)
    with pytest.raises(PayloadError, match="too_large"):
        decode_telemetry(
            orjson.dumps({"ts": list(range(11)), "values": {}}),
            device="d",
            now_ms=NOW,
            limits=limits,
        )
    with pytest.raises(PayloadError, match="too_large"):
        decode_telemetry(
            orjson.dumps({"values": {f"m{i}": 1 for i in range(4)}}),
            device="d",
            now_ms=NOW,
            limits=limits,
        )
    devices = {f"d{i}": {"values": {"a": 1}} for i in range(3)}
    with pytest.raises(PayloadError, match="too_large"):
        decode_telemetry(orjson.dumps({"devices": devices}), device="g", now_ms=NOW, limits=limits)


@given(st.binary(max_size=200))
def test_fuzz_decoders_raise_only_payload_errors(data: bytes) -> None:
    for decode in (decode_telemetry, decode_events):
        with contextlib.suppress(PayloadError):
            decode(data, device="d", now_ms=NOW)
    with contextlib.suppress(PayloadError):
        decode_status(data)


def test_events_and_status() -> None:
    [event] = decode_events(
        b'{"ts": 7, "event": "fault", "data": {"code": "E1"}}', device="d", now_ms=NOW
    )
    assert (event.device, event.ts, event.event, event.data) == ("d", 7, "fault", {"code": "E1"})
    many = decode_events(
        b'{"events": [{"event": "a"}, {"event": "b", "device": "child"}]}', device="gw", now_ms=NOW
    )
    assert [(e.device, e.event, e.stamped_on_arrival) for e in many] == [
        ("gw", "a", True),
        ("child", "b", True),
    ]
    assert decode_status(b"online") == DeviceStatus(online=True)
    assert decode_status(b' {"state": "offline"} ') == DeviceStatus(online=False)
    gateway = decode_status(b'{"state": "online", "devices": {"c-1": "offline", "c-2": "online"}}')
    assert gateway == DeviceStatus(online=True, devices={"c-1": False, "c-2": True})
    with pytest.raises(PayloadError):
        decode_status(b"maybe")
    with pytest.raises(PayloadError, match="c-1"):
        decode_status(b'{"state": "online", "devices": {"c-1": "asleep"}}')


DEVICE = Principal("pump-1", Role.DEVICE, tenant="acme", site="p1", device="pump-1")
SERVICE = Principal("tiangong-platform", Role.SERVICE)


@pytest.mark.parametrize(
    ("principal", "topic", "allowed"),
    [
        (DEVICE, "tg/v1/acme/p1/pump-1/telemetry", True),
        (DEVICE, "tg/v1/acme/p1/pump-1/status", True),
        (DEVICE, "tg/v1/acme/p1/pump-1/cmd/res", True),
        (DEVICE, "tg/v1/acme/p1/pump-1/cmd/req", False),  # only the platform sends requests
        (DEVICE, "tg/v1/acme/p1/pump-2/telemetry", False),  # another device's topic
        (DEVICE, "tg/v1/other/p1/pump-1/telemetry", False),  # another tenant
        (DEVICE, "tg/v1/acme/p2/pump-1/telemetry", False),  # another site
        (DEVICE, "elsewhere", False),
        (SERVICE, "tg/v1/acme/p1/pump-1/cmd/req", True),
        (SERVICE, "tg/v1/acme/p1/pump-1/telemetry", False),  # the platform never poses as one
    ],
)
def test_publish_rules(principal: Principal, topic: str, allowed: bool) -> None:
    assert may_publish(principal, topic) is allowed


@pytest.mark.parametrize(
    ("principal", "topic_filter", "allowed"),
    [
        (DEVICE, "tg/v1/acme/p1/pump-1/cmd/req", True),
        (DEVICE, "tg/v1/acme/p1/+/telemetry", False),
        (DEVICE, "tg/v1/#", False),
        (DEVICE, "#", False),
        (SERVICE, "tg/v1/+/+/+/telemetry", True),
        (SERVICE, "$share/g/tg/v1/+/+/+/telemetry", True),
        (SERVICE, "$SYS/#", False),
    ],
)
def test_subscribe_rules(principal: Principal, topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(principal, topic_filter) is allowed


def test_mosquitto_files() -> None:
    assert render_passwd([("d1", "$7$101$abc$def")]) == "d1:$7$101$abc$def\n"
    with pytest.raises(ValueError):
        render_passwd([("a:b", "$7$1$x$y")])
    acl = render_acl([("acme", "p1", "d1")], service_users=["tiangong-platform"])
    assert "user d1\ntopic write tg/v1/acme/p1/d1/cmd/res\n" in acl
    assert "topic read tg/v1/acme/p1/d1/cmd/req" in acl
    assert "user tiangong-platform\ntopic read tg/v1/#\n" in acl

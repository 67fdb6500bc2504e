"""The Handle.Net REST JSON value format: examples from the reference, round trips, errors."""

from __future__ import annotations

import base64
import ipaddress
import sys
import types
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.identity.test_handle_codec import admins, references, sites, value_lists
from tiangong.identity.errors import CodecError
from tiangong.identity.handle import codec
from tiangong.identity.handle.json_format import (
    error_entity,
    http_status,
    record_to_json,
    value_from_json,
    value_to_json,
)
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.handle.values import (
    DEFAULT_PERMISSIONS,
    SECRET_PERMISSIONS,
    AdminPermission,
    AdminRecord,
    HandleRecord,
    HandleValue,
    Interface,
    InterfaceKind,
    Permission,
    ServerInfo,
    SiteInfo,
    Transport,
    TtlType,
    ValueList,
    ValueReference,
)

FAST = settings(max_examples=60, deadline=None)

# From the reference (§2.2, hdlproxy REST-API.txt).
EXAMPLE = {
    "responseCode": 1,
    "handle": "4263537/4000",
    "values": [
        {
            "index": 1,
            "type": "URL",
            "data": {"format": "string", "value": "http://www.handle.net/index.html"},
            "ttl": 86400,
            "timestamp": "2001-11-21T16:21:35Z",
        },
        {
            "index": 100,
            "type": "HS_ADMIN",
            "data": {
                "format": "admin",
                "value": {"handle": "0.NA/4263537", "index": 200, "permissions": "011111111111"},
            },
            "ttl": 86400,
            "timestamp": "2000-04-10T22:41:46Z",
        },
    ],
}


def test_reference_example_reads_and_writes_back() -> None:
    values = tuple(value_from_json(v, now=0) for v in EXAMPLE["values"])  # type: ignore[attr-defined]
    url, admin = values
    assert url.data == b"http://www.handle.net/index.html"
    assert url.timestamp == 1006359695
    assert codec.decode_admin(admin.data) == AdminRecord(
        ValueReference("0.NA/4263537", 200), AdminPermission(0x07FF)
    )
    record = HandleRecord("4263537/4000", (admin, url))
    assert record_to_json(record) == EXAMPLE  # values come out sorted by index


def test_pyhandle_admin_with_string_index() -> None:
    value = value_from_json(
        {
            "index": 100,
            "type": "HS_ADMIN",
            "data": {
                "format": "admin",
                "value": {"handle": "0.NA/88.100.1", "index": "200", "permissions": "011111110011"},
            },
        },
        now=1_700_000_000,
    )
    assert value.data == bytes.fromhex("07f30000000d302e4e412f38382e3130302e31000000c8")
    assert value.timestamp == 1_700_000_000
    assert value.ttl == 86400


@pytest.mark.parametrize(
    ("text", "bits"), [("*", 0x0FFF), ("1", 0x001), ("100000000000", 0x800), ("0", 0)]
)
def test_admin_permission_strings(text: str, bits: int) -> None:
    admin = {"handle": "0.NA/1", "index": 300, "permissions": text}
    value = value_from_json(
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": admin}}, now=0
    )
    assert codec.decode_admin(value.data).permissions == bits


def test_bare_string_data_and_formats() -> None:
    assert (
        value_from_json({"index": 1, "type": "URL", "data": "http://x"}, now=0).data == b"http://x"
    )
    hex_value = value_from_json(
        {"index": 2, "type": "X", "data": {"format": "hex", "value": "00ff"}}, now=0
    )
    assert hex_value.data == b"\x00\xff"
    b64 = value_from_json(
        {"index": 3, "type": "X", "data": {"format": "base64", "value": "AP8="}}, now=0
    )
    assert b64.data == b"\x00\xff"


def test_binary_data_is_written_as_base64_text_as_string() -> None:
    binary = value_to_json(HandleValue(1, "X", b"\x00\x01"))
    assert binary["data"] == {"format": "base64", "value": base64.b64encode(b"\x00\x01").decode()}
    text = value_to_json(HandleValue(1, "DESC", "多行\n文本".encode()))
    assert text["data"] == {"format": "string", "value": "多行\n文本"}
    assert value_to_json(HandleValue(1, "X", b"\xff"))["data"]["format"] == "base64"  # type: ignore[index]


def test_permissions_ttl_timestamp_references() -> None:
    value = HandleValue(
        index=5,
        type="URL",
        data=b"x",
        ttl=2_000_000_000,
        ttl_type=TtlType.ABSOLUTE,
        timestamp=0,
        permissions=Permission.ADMIN_READ | Permission.ADMIN_WRITE,
        references=(ValueReference("88.1/a", 3),),
    )
    out = value_to_json(value)
    assert out["permissions"] == "1100"
    assert out["ttl"] == "2033-05-18T03:33:20Z"
    assert "timestamp" not in out
    assert out["references"] == [{"handle": "88.1/a", "index": 3}]
    assert value_from_json(out, now=0) == value
    default = value_to_json(HandleValue(1, "URL", b"x", timestamp=1))
    assert "permissions" not in default
    assert default["timestamp"] == "1970-01-01T00:00:01Z"


def test_secret_keys_default_to_no_public_read() -> None:
    read = value_from_json({"index": 300, "type": "HS_SECKEY", "data": "secret"}, now=0)
    assert read.permissions == SECRET_PERMISSIONS
    # A secret key that is public says so explicitly, so it reads back the same.
    public = HandleValue(300, "HS_SECKEY", b"s", permissions=DEFAULT_PERMISSIONS)
    assert value_to_json(public)["permissions"] == "1110"
    assert value_from_json(value_to_json(public), now=0) == public


def test_site_and_vlist_formats() -> None:
    server = ServerInfo(
        1,
        ipaddress.IPv4Address("192.0.2.1"),
        (Interface(InterfaceKind.ADMIN_AND_QUERY, Transport.TCP, 2641),),
    )
    site = SiteInfo(servers=(server,), attributes=(("desc", "node"),))
    out = value_to_json(HandleValue(1, "HS_SITE", codec.encode_site(site), timestamp=1))
    data = out["data"]
    assert isinstance(data, dict)
    assert data["format"] == "site"
    assert data["value"]["servers"][0]["interfaces"] == [
        {"query": True, "admin": True, "protocol": "TCP", "port": 2641}
    ]
    assert data["value"]["protocolVersion"] == "2.10"
    assert value_from_json(out, now=0).data == codec.encode_site(site)
    members = ValueList((ValueReference("0.NA/88.1", 300),))
    vlist = value_to_json(HandleValue(2, "HS_VLIST", codec.encode_value_list(members), timestamp=1))
    assert vlist["data"] == {"format": "vlist", "value": [{"handle": "0.NA/88.1", "index": 300}]}


def test_structured_type_with_bad_data_falls_back_to_bytes() -> None:
    out = value_to_json(HandleValue(100, "HS_ADMIN", b"not an admin record"))
    assert out["data"] == {"format": "string", "value": "not an admin record"}


@pytest.fixture
def fake_keys() -> Iterator[None]:
    module = types.ModuleType("tiangong.identity.keys")

    def to_jwk(data: bytes) -> dict[str, object]:
        if not data.startswith(b"KEY"):
            raise CodecError("unknown key type")
        return {"kty": "RSA", "n": data[3:].decode(), "e": "AQAB"}

    def from_jwk(jwk: Mapping[str, object]) -> bytes:
        if jwk.get("kty") != "RSA":
            raise CodecError("unsupported kty")
        return b"KEY" + str(jwk["n"]).encode()

    module.public_key_to_jwk = to_jwk  # type: ignore[attr-defined]
    module.public_key_from_jwk = from_jwk  # type: ignore[attr-defined]
    saved = sys.modules.get("tiangong.identity.keys")
    sys.modules["tiangong.identity.keys"] = module
    yield
    if saved is None:
        del sys.modules["tiangong.identity.keys"]
    else:
        sys.modules["tiangong.identity.keys"] = saved


@pytest.mark.usefixtures("fake_keys")
def test_public_keys_as_jwk() -> None:
    value = HandleValue(300, "HS_PUBKEY", b"KEYabc", timestamp=1)
    out = value_to_json(value)
    assert out["data"] == {"format": "key", "value": {"kty": "RSA", "n": "abc", "e": "AQAB"}}
    assert value_from_json(out, now=0) == value
    unknown = value_to_json(HandleValue(300, "HS_PUBKEY", b"\x00\x01"))
    assert unknown["data"] == {"format": "base64", "value": "AAE="}
    with pytest.raises(CodecError, match="value 7: key data") as info:
        value_from_json(
            {"index": 7, "type": "HS_PUBKEY", "data": {"format": "key", "value": {"kty": "EC"}}},
            now=0,
        )
    assert info.value.response_code == ResponseCode.INVALID_VALUE


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"index": 1, "data": {"format": "base64", "value": "!!"}}, "value 1: .*base64"),
        ({"index": 2, "data": {"format": "hex", "value": "0g"}}, "value 2: .*hex"),
        ({"index": 3, "data": {"format": "bogus", "value": ""}}, "value 3: unknown data format"),
        ({"index": 4, "data": "x", "permissions": "11x0"}, "value 4: permissions"),
        ({"index": 5, "data": {"format": "admin",
                               "value": {"handle": "h", "index": 1, "permissions": "2"}}},
         "value 5: admin permissions"),
        ({"index": "six", "data": "x"}, "value six: index"),
        ({"index": 7, "data": 3}, "value 7: data must be a JSON object"),
        ({"index": 8, "data": "x", "ttl": "yesterday"}, "value 8: ttl"),
        ({"index": 9, "data": "x", "timestamp": 5}, "value 9: timestamp"),
        ({"index": 10, "data": "x", "references": [{"handle": "h"}]}, "value 10: references"),
        ({"index": 11, "data": {"format": "vlist", "value": "x"}}, "value 11: vlist"),
        ({"index": 12, "data": {"format": "site", "value": {"servers": [{"address": "nowhere"}]}}},
         "value 12: site servers"),
    ],
)  # fmt: skip
def test_errors_name_the_value_and_the_problem(obj: dict[str, object], message: str) -> None:
    with pytest.raises(CodecError, match=message) as info:
        value_from_json(obj, now=0)
    assert info.value.response_code == ResponseCode.INVALID_VALUE


def test_value_must_be_an_object() -> None:
    with pytest.raises(CodecError) as info:
        value_from_json([1, 2], now=0)  # type: ignore[arg-type]
    assert info.value.response_code == ResponseCode.INVALID_VALUE


_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
json_values = st.builds(
    HandleValue,
    index=st.integers(-(2**31), 2**31 - 1),
    type=st.sampled_from(["URL", "EMAIL", "DESC", "X", ""]),
    data=st.one_of(st.binary(max_size=40), _TEXT.map(str.encode)),
    ttl=st.integers(0, 2**31 - 1),
    ttl_type=st.just(TtlType.RELATIVE),
    timestamp=st.integers(1, 2**32 - 1),
    permissions=st.integers(0, 15).map(Permission),
    references=st.lists(references, max_size=2).map(tuple),
)


@FAST
@given(json_values)
def test_values_round_trip(value: HandleValue) -> None:
    assert value_from_json(value_to_json(value), now=0) == value


@FAST
@given(st.integers(0, 2**31 - 1))
def test_absolute_ttl_round_trips(ttl: int) -> None:
    value = HandleValue(1, "URL", b"x", ttl=ttl, ttl_type=TtlType.ABSOLUTE, timestamp=1)
    assert value_from_json(value_to_json(value), now=0) == value


@FAST
@given(admins)
def test_admin_round_trips(admin: AdminRecord) -> None:
    value = HandleValue(100, "HS_ADMIN", codec.encode_admin(admin), timestamp=1)
    assert value_from_json(value_to_json(value), now=0) == value


@FAST
@given(value_lists)
def test_vlist_round_trips(members: ValueList) -> None:
    value = HandleValue(200, "HS_VLIST", codec.encode_value_list(members), timestamp=1)
    assert value_from_json(value_to_json(value), now=0) == value


@FAST
@given(sites)
def test_site_round_trips(site: SiteInfo) -> None:
    # JSON carries the hash filter and server keys as text and keys; keep those expressible.
    site = SiteInfo(
        servers=tuple(ServerInfo(s.server_id, s.address, s.interfaces) for s in site.servers),
        serial=site.serial,
        primary=site.primary,
        multi_primary=site.multi_primary,
        hash_option=site.hash_option,
        attributes=site.attributes,
        protocol_major=site.protocol_major,
        protocol_minor=site.protocol_minor,
        data_format_version=site.data_format_version,
    )
    value = HandleValue(1, "HS_SITE", codec.encode_site(site), timestamp=1)
    assert codec.decode_site(value_from_json(value_to_json(value), now=0).data) == site


@pytest.mark.parametrize(
    ("code", "kwargs", "status"),
    [
        (1, {}, 200),
        (1, {"created": True}, 201),
        (2, {}, 500),
        (100, {}, 404),
        (101, {}, 409),
        (102, {}, 400),
        (200, {"resolution": True}, 200),
        (200, {}, 400),
        (201, {}, 409),
        (202, {}, 400),
        (301, {}, 400),
        (402, {}, 401),
        (400, {}, 403),
        (401, {}, 403),
        (403, {}, 403),
    ],
)
def test_http_status(code: int, kwargs: dict[str, bool], status: int) -> None:
    assert http_status(code, **kwargs) == status


def test_error_entity() -> None:
    assert error_entity(100, "88.1/x", "Handle Not Found") == {
        "responseCode": 100,
        "handle": "88.1/x",
        "message": "Handle Not Found",
    }
    assert error_entity(ResponseCode.INVALID_HANDLE) == {"responseCode": 102}

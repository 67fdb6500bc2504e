"""The Handle binary codec: worked examples, round trips, old formats, UDP and TCP framing.

The strategies at the top are shared with the JSON and fuzz tests.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiangong.identity.errors import CodecError
from tiangong.identity.handle import codec
from tiangong.identity.handle.codec import (
    MessageDecodeError,
    TcpMessageReader,
    UdpReassembler,
)
from tiangong.identity.handle.messages import (
    Challenge,
    ChallengeAnswer,
    CreateHandleResponse,
    Credential,
    Envelope,
    ErrorResponse,
    GenericResponse,
    HandleRequest,
    Header,
    ListResponse,
    Message,
    ReferralResponse,
    RemoveValuesRequest,
    RequestDigest,
    ResolutionRequest,
    ResolutionResponse,
    SiteInfoResponse,
    ValuesRequest,
    VerifyRequest,
    VerifyResponse,
)
from tiangong.identity.handle.protocol import (
    MAX_UDP_DATA,
    DigestAlgorithm,
    OpCode,
    OpFlag,
    ResponseCode,
)
from tiangong.identity.handle.values import (
    AdminPermission,
    AdminRecord,
    HandleValue,
    HashOption,
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

_CHARS = st.characters(exclude_categories=["Cs"])
text = st.text(alphabet=_CHARS, max_size=24)
handles = st.text(alphabet=_CHARS, min_size=1, max_size=40)
i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
small_bytes = st.binary(max_size=48)

references = st.builds(ValueReference, handle=handles, index=i32)
values = st.builds(
    HandleValue,
    index=i32,
    type=text,
    data=small_bytes,
    ttl=i32,
    ttl_type=st.sampled_from(TtlType),
    timestamp=u32,
    permissions=st.integers(0, 15).map(Permission),
    references=st.lists(references, max_size=3).map(tuple),
)
admins = st.builds(
    AdminRecord, admin=references, permissions=st.integers(0, 0x0FFF).map(AdminPermission)
)
value_lists = st.builds(ValueList, members=st.lists(references, max_size=4).map(tuple))


def _expressible_ipv6(address: ipaddress.IPv6Address) -> bool:
    # ::/96 reads back as IPv4 in HS_SITE (as in CNRI), and so do v4-mapped addresses.
    return address.packed[:12] not in (bytes(12), bytes(10) + b"\xff\xff")


ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address).filter(_expressible_ipv6)
addresses: st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address] = st.one_of(
    st.ip_addresses(v=4), ipv6
)
interfaces = st.builds(
    Interface,
    kind=st.sampled_from(InterfaceKind),
    transport=st.sampled_from(Transport),
    port=i32,
)
servers = st.builds(
    ServerInfo,
    server_id=i32,
    address=addresses,
    interfaces=st.lists(interfaces, max_size=3).map(tuple),
    public_key=small_bytes,
)
sites = st.builds(
    SiteInfo,
    servers=st.lists(servers, max_size=3).map(tuple),
    serial=st.integers(0, 0xFFFF),
    primary=st.booleans(),
    multi_primary=st.booleans(),
    hash_option=st.sampled_from(HashOption),
    hash_filter=small_bytes,
    attributes=st.lists(st.tuples(text, text), max_size=3).map(tuple),
    protocol_major=st.integers(0, 255),
    protocol_minor=st.integers(0, 255),
    data_format_version=st.integers(0, 0xFFFF),
)

digests = st.one_of(
    st.none(),
    st.sampled_from([DigestAlgorithm.MD5, DigestAlgorithm.SHA1, DigestAlgorithm.SHA256]).map(
        lambda alg: RequestDigest(alg, bytes(range({1: 16, 2: 20, 3: 32}[alg])))
    ),
    st.binary(max_size=32).map(lambda d: RequestDigest(DigestAlgorithm.OLD_FORMAT, d)),
)

_MASK = 0xFFF00004
envelopes = st.builds(
    Envelope,
    major=st.just(2),
    minor=st.integers(5, 40),  # 2.5+: no response-code translation, current body formats
    suggested_major=st.integers(1, 3),
    suggested_minor=st.integers(0, 255),
    compressed=st.just(False),
    encrypted=st.just(False),
    truncated=st.booleans(),
    session_id=u32,
    request_id=u32,
    sequence=u32,
    message_length=st.just(0),
)
credentials = st.one_of(
    st.none(),
    st.builds(
        Credential,
        signer=text,
        signer_index=i32,
        type=st.sampled_from(["HS_SIGNED", "HS_MAC"]),
        digest_algorithm=st.sampled_from(["SHA-256", "SHA1", "HMAC-SHA256", "SM3"]),
        signature=st.binary(max_size=64),
        version=st.integers(0, 255),
        options=st.integers(0, 0xFFFF),
    ),
)

_HANDLE_OPS = [
    OpCode.GET_SITEINFO,
    OpCode.DELETE_HANDLE,
    OpCode.LIST_HANDLES,
    OpCode.LIST_NA,
    OpCode.LIST_HOMED_NAS,
    OpCode.HOME_NA,
    OpCode.UNHOME_NA,
]
_GENERIC_OK_OPS = [
    OpCode.DELETE_HANDLE,
    OpCode.ADD_VALUE,
    OpCode.MODIFY_VALUE,
    OpCode.REMOVE_VALUE,
    OpCode.HOME_NA,
    OpCode.UNHOME_NA,
    OpCode.SESSION_TERMINATE,
]
_ERROR_CODES = [
    rc
    for rc in ResponseCode
    if rc
    not in (
        ResponseCode.REQUEST,
        ResponseCode.SUCCESS,
        ResponseCode.SERVICE_REFERRAL,
        ResponseCode.PREFIX_REFERRAL,
        ResponseCode.AUTHENTICATION_NEEDED,
    )
]

value_tuples = st.lists(values, max_size=3).map(tuple)

op_bodies = st.one_of(
    st.tuples(
        st.just(OpCode.RESOLUTION),
        st.just(ResponseCode.REQUEST),
        st.builds(
            ResolutionRequest,
            handle=handles,
            indexes=st.lists(i32, max_size=4).map(tuple),
            types=st.lists(text, max_size=3).map(tuple),
        ),
    ),
    st.tuples(
        st.sampled_from(_HANDLE_OPS),
        st.just(ResponseCode.REQUEST),
        st.builds(HandleRequest, handle=handles, index=st.none()),
    ),
    st.tuples(
        st.just(OpCode.LOGIN_IDIS),
        st.just(ResponseCode.REQUEST),
        st.builds(HandleRequest, handle=handles, index=i32),
    ),
    st.tuples(
        st.sampled_from([OpCode.CREATE_HANDLE, OpCode.ADD_VALUE, OpCode.MODIFY_VALUE]),
        st.just(ResponseCode.REQUEST),
        st.builds(ValuesRequest, handle=handles, values=value_tuples),
    ),
    st.tuples(
        st.just(OpCode.REMOVE_VALUE),
        st.just(ResponseCode.REQUEST),
        st.builds(
            RemoveValuesRequest, handle=handles, indexes=st.lists(i32, max_size=4).map(tuple)
        ),
    ),
    st.tuples(
        st.just(OpCode.CHALLENGE_RESPONSE),
        st.just(ResponseCode.REQUEST),
        st.builds(
            ChallengeAnswer,
            auth_type=st.sampled_from(["HS_PUBKEY", "HS_SECKEY"]),
            user=handles,
            user_index=i32,
            signed_response=small_bytes,
        ),
    ),
    st.tuples(
        st.just(OpCode.VERIFY_RESPONSE),
        st.just(ResponseCode.REQUEST),
        st.builds(
            VerifyRequest,
            handle=handles,
            index=i32,
            nonce=st.binary(min_size=16, max_size=16),
            request_digest=st.binary(max_size=32),
            signed_response=small_bytes,
        ),
    ),
    st.tuples(
        st.just(OpCode.RESOLUTION),
        st.just(ResponseCode.SUCCESS),
        st.builds(ResolutionResponse, handle=handles, values=value_tuples, digest=digests),
    ),
    st.tuples(
        st.just(OpCode.GET_SITEINFO),
        st.just(ResponseCode.SUCCESS),
        st.builds(SiteInfoResponse, site=sites, digest=digests),
    ),
    st.tuples(
        st.just(OpCode.CREATE_HANDLE),
        st.just(ResponseCode.SUCCESS),
        st.one_of(
            st.builds(CreateHandleResponse, handle=handles, digest=digests),
            st.builds(GenericResponse, digest=digests),
        ),
    ),
    st.tuples(
        st.sampled_from([OpCode.LIST_HANDLES, OpCode.LIST_NA, OpCode.LIST_HOMED_NAS]),
        st.just(ResponseCode.SUCCESS),
        st.builds(ListResponse, handles=st.lists(handles, max_size=4).map(tuple), digest=digests),
    ),
    st.tuples(
        st.just(OpCode.VERIFY_RESPONSE),
        st.just(ResponseCode.SUCCESS),
        st.builds(VerifyResponse, valid=st.booleans(), digest=digests),
    ),
    st.tuples(
        st.sampled_from(_GENERIC_OK_OPS),
        st.just(ResponseCode.SUCCESS),
        st.builds(GenericResponse, digest=digests),
    ),
    st.tuples(
        st.sampled_from(list(OpCode)),
        st.sampled_from([ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL]),
        st.builds(ReferralResponse, handle=handles, values=value_tuples, digest=digests),
    ),
    st.tuples(
        st.sampled_from(list(OpCode)),
        st.just(ResponseCode.AUTHENTICATION_NEEDED),
        st.builds(Challenge, nonce=st.binary(min_size=16, max_size=16), digest=digests),
    ),
    st.tuples(
        st.sampled_from(list(OpCode)),
        st.sampled_from(_ERROR_CODES),
        st.builds(ErrorResponse, message=text, digest=digests),
    ),
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """A message whose decoding gives it back (but for the computed message length)."""
    op, rc, body = draw(op_bodies)
    flags = draw(u32) & _MASK
    if rc is not ResponseCode.REQUEST:
        # The encoder sets RD exactly when the response carries a digest.
        has_digest = getattr(body, "digest", None) is not None
        flags = (flags | OpFlag.RD) if has_digest else (flags & ~int(OpFlag.RD))
    header = Header(
        op=op,
        response=rc,
        flags=OpFlag(flags),
        site_serial=draw(st.integers(0, 0xFFFF)),
        recursion=draw(st.integers(0, 255)),
        expiration=draw(st.integers(1, 2**32 - 1)),
    )
    return Message(header=header, body=body, envelope=draw(envelopes), credential=draw(credentials))


# ------------------------------------------------------------------------------- tests

WORKED_REQUEST = bytes.fromhex(
    "020a020b0000000012345678000000000000003800000001000000001900000"
    "0ffff00006554 99c00000001c0000001038382e3130302e312f4142432d313233"
    "000000000000000000000000".replace(" ", "")
)
WORKED_ADMIN = bytes.fromhex("07f30000000d302e4e412f38382e3130302e31000000c8")
FAST = settings(max_examples=60, deadline=None)


def roundtrip(message: Message) -> Message:
    data = codec.encode_message(message)
    decoded = codec.decode_message(data)
    assert decoded.envelope.message_length == len(data) - 20
    return decoded


def same_as_sent(message: Message) -> Message:
    return replace(message, envelope=replace(message.envelope, message_length=0))


# --------------------------------------------------------------------- worked examples


def test_worked_resolution_request_decodes_and_reencodes_exactly() -> None:
    message = codec.decode_message(WORKED_REQUEST)
    assert message.envelope == Envelope(
        major=2, minor=10, suggested_major=2, suggested_minor=11, request_id=0x12345678,
        message_length=56,
    )  # fmt: skip
    assert message.header == Header(
        op=OpCode.RESOLUTION,
        flags=OpFlag.REC | OpFlag.CA | OpFlag.PO,
        site_serial=0xFFFF,
        expiration=0x655499C0,
    )
    assert message.body == ResolutionRequest("88.100.1/ABC-123")
    assert message.credential is None
    assert codec.encode_message(message) == WORKED_REQUEST


def test_worked_request_built_from_scratch() -> None:
    message = Message(
        header=Header(op=OpCode.RESOLUTION, flags=OpFlag(0x19000000)),
        body=ResolutionRequest("88.100.1/ABC-123"),
        envelope=Envelope(request_id=0x12345678),
    )
    assert codec.encode_message(message, now=0x655499C0 - 43_200) == WORKED_REQUEST


def test_worked_hs_admin_data() -> None:
    admin = AdminRecord(ValueReference("0.NA/88.100.1", 200), AdminPermission(0x07F3))
    assert codec.encode_admin(admin) == WORKED_ADMIN
    assert codec.decode_admin(WORKED_ADMIN) == admin
    # The legacy layout (record sized for 4 permission bytes) has 2 extra bytes at the end.
    assert codec.decode_admin(WORKED_ADMIN + b"\x00\x00") == admin
    with pytest.raises(CodecError) as info:
        codec.decode_admin(WORKED_ADMIN + b"\x00")
    assert info.value.response_code == ResponseCode.INVALID_VALUE


def test_worked_url_value_layout() -> None:
    url = b"https://example.com/items/ABC"
    value = HandleValue(index=1, type="URL", data=url, timestamp=0x65549900)
    expected = (
        bytes.fromhex("00000001 65549900 00 00015180 0e 00000003".replace(" ", ""))
        + b"URL"
        + struct.pack(">I", len(url))
        + url
        + bytes(4)
    )
    assert codec.encode_value(value) == expected
    assert codec.decode_value(expected) == value


# ---------------------------------------------------------------------------- round trips


@FAST
@given(messages())
def test_every_body_type_round_trips(message: Message) -> None:
    assert same_as_sent(roundtrip(message)) == message


@FAST
@given(values)
def test_values_round_trip(value: HandleValue) -> None:
    assert codec.decode_value(codec.encode_value(value)) == value


@FAST
@given(st.lists(values, max_size=5))
def test_value_lists_round_trip(items: list[HandleValue]) -> None:
    assert codec.decode_values(codec.encode_values(items)) == tuple(items)


@FAST
@given(admins)
def test_admin_round_trips(admin: AdminRecord) -> None:
    assert codec.decode_admin(codec.encode_admin(admin)) == admin


@FAST
@given(value_lists)
def test_vlist_round_trips(value_list: ValueList) -> None:
    assert codec.decode_value_list(codec.encode_value_list(value_list)) == value_list


@FAST
@given(sites)
def test_site_round_trips(site: SiteInfo) -> None:
    assert codec.decode_site(codec.encode_site(site)) == site


@FAST
@given(credentials.filter(lambda c: c is not None))
def test_credentials_round_trip(credential: Credential) -> None:
    assert codec.decode_credential(codec.encode_credential(credential)) == credential


# ---------------------------------------------------------------------------- HS_SITE


def _one_server_site(address: str) -> SiteInfo:
    server = ServerInfo(
        1, ipaddress.ip_address(address), (Interface(InterfaceKind.QUERY, Transport.UDP, 2641),)
    )
    return SiteInfo(servers=(server,))


def test_site_ipv4_is_zero_padded_like_cnri() -> None:
    data = codec.encode_site(_one_server_site("192.0.2.7"))
    address_at = data.index(bytes(12) + bytes([192, 0, 2, 7]))
    mapped = data[:address_at] + bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])
    mapped += data[address_at + 16 :]
    for layout in (data, mapped):
        assert codec.decode_site(layout).servers[0].address == ipaddress.IPv4Address("192.0.2.7")


def test_site_ipv6_kept() -> None:
    site = _one_server_site("2001:db8::1")
    assert codec.decode_site(codec.encode_site(site)) == site


def test_site_unknown_interface_protocol_is_invalid_value() -> None:
    data = bytearray(codec.encode_site(_one_server_site("192.0.2.7")))
    data[-5] = 9  # the protocol byte of the last interface
    with pytest.raises(CodecError, match="protocol 9") as info:
        codec.decode_site(bytes(data))
    assert info.value.response_code == ResponseCode.INVALID_VALUE


def _expected_server(site: SiteInfo, part: bytes) -> ServerInfo:
    digest = hashlib.md5(part.upper()).digest()
    n = int.from_bytes(digest[-4:], "big", signed=True)
    return site.servers[abs(n) % len(site.servers)]


@pytest.mark.parametrize("handle", ["88.100.1/abc-123", "88.100.1/XYZ", "88.100", "0.NA/88.1"])
@pytest.mark.parametrize("option", list(HashOption))
def test_site_server_selection(handle: str, option: HashOption) -> None:
    servers = tuple(ServerInfo(n, ipaddress.IPv4Address(f"10.0.0.{n}"), ()) for n in range(1, 6))
    site = SiteInfo(servers=servers, hash_option=option)
    raw = handle.encode()
    prefix, slash, suffix = raw.partition(b"/")
    part = {
        HashOption.BY_PREFIX: prefix if slash else b"0.NA",
        HashOption.BY_SUFFIX: suffix if slash else raw,
        HashOption.BY_HANDLE: raw,
    }[option]
    assert codec.site_server_for(site, handle) == _expected_server(site, part)
    assert codec.site_server_for(site, handle.lower()) == codec.site_server_for(site, handle)


def test_site_server_selection_needs_servers() -> None:
    with pytest.raises(CodecError):
        codec.site_server_for(SiteInfo(servers=()), "88.1/x")


# --------------------------------------------------------------- digests and signatures


def _request(**envelope: int) -> bytes:
    message = Message(
        header=Header(op=OpCode.RESOLUTION, flags=OpFlag.RD, expiration=1),
        body=ResolutionRequest("88.100.1/ABC-123", (1,), ("URL",)),
        envelope=Envelope(**envelope),  # type: ignore[arg-type]
    )
    return codec.encode_message(message)


def test_request_digest_covers_header_and_body_only() -> None:
    data = _request(request_id=7)
    digest = codec.request_digest(data[20:])
    assert digest.algorithm is DigestAlgorithm.SHA256
    body_length = struct.unpack(">I", data[40:44])[0]
    assert digest.digest == hashlib.sha256(data[20 : 44 + body_length]).digest()
    # Another envelope (request id, UDP sequence) does not change the digest.
    assert codec.request_digest(_request(request_id=8, sequence=3)[20:]) == digest
    assert (
        codec.request_digest(data[20:], DigestAlgorithm.MD5).digest
        == hashlib.md5(data[20 : 44 + body_length]).digest()
    )
    old = codec.request_digest(data[20:], DigestAlgorithm.OLD_FORMAT)
    assert old.digest == hashlib.md5(data[20 : 44 + body_length]).digest()


@pytest.mark.parametrize("algorithm", list(DigestAlgorithm))
def test_response_carries_digest_and_sets_rd(algorithm: DigestAlgorithm) -> None:
    digest = codec.request_digest(_request()[20:], algorithm)
    response = Message(
        header=Header(op=OpCode.DELETE_HANDLE, response=ResponseCode.SUCCESS, expiration=1),
        body=GenericResponse(digest=digest),
    )
    data = codec.encode_message(response)
    flags = struct.unpack(">I", data[28:32])[0]
    assert flags & OpFlag.RD
    assert codec.decode_message(data).body == GenericResponse(digest=digest)
    # Without a digest the RD flag is cleared even if the header copied it from the request.
    plain = replace(
        response, header=replace(response.header, flags=OpFlag.RD), body=GenericResponse()
    )
    assert not struct.unpack(">I", codec.encode_message(plain)[28:32])[0] & OpFlag.RD


def test_wrong_digest_size_is_refused() -> None:
    response = Message(
        header=Header(op=OpCode.DELETE_HANDLE, response=ResponseCode.SUCCESS),
        body=GenericResponse(digest=RequestDigest(DigestAlgorithm.SHA256, b"short")),
    )
    with pytest.raises(CodecError, match="32 bytes"):
        codec.encode_message(response)


def _signed(major: int, minor: int, credential: Credential | None = None) -> tuple[bytes, Envelope]:
    envelope = Envelope(
        major=major, minor=minor, suggested_major=2, suggested_minor=11,
        session_id=0x01020304, request_id=0x05060708,
    )  # fmt: skip
    message = Message(
        header=Header(op=OpCode.DELETE_HANDLE, expiration=1),
        body=HandleRequest("88.1/x"),
        envelope=envelope,
        credential=credential,
    )
    data = codec.encode_message(message)
    return data[20:], envelope


def test_signed_part_versions() -> None:
    after, envelope = _signed(2, 5)
    header_and_body = after[: len(after) - 4]
    assert codec.signed_part(after, envelope=envelope) == header_and_body
    after, envelope = _signed(2, 7)
    assert codec.signed_part(after, envelope=envelope, session_counter=9) == (
        bytes([2, 7]) + struct.pack(">III", 0x01020304, 0x05060708, 9) + header_and_body
    )
    after, envelope = _signed(2, 10)
    assert codec.signed_part(after, envelope=envelope, session_counter=9) == (
        bytes([2, 10, 2, 11]) + struct.pack(">III", 0x01020304, 0x05060708, 9) + header_and_body
    )
    # 2.6 wrote the prefix with an offset bug; its layout is kept so old signatures verify.
    after, envelope = _signed(2, 6)
    assert codec.signed_part(after, envelope=envelope, session_counter=9) == (
        bytes([2, 6, 1, 2]) + struct.pack(">I", 9) + bytes(6) + header_and_body
    )


def test_signed_part_reads_the_session_counter_from_the_credential() -> None:
    credential = Credential("", 42, "HS_MAC", "HMAC-SHA256", b"\x01" * 32)
    after, envelope = _signed(2, 10, credential)
    part = codec.signed_part(after, envelope=envelope)
    assert part[12:16] == struct.pack(">I", 42)


# ------------------------------------------------------------------------- old formats


def test_rfc_envelope_without_suggested_version() -> None:
    data = bytearray(WORKED_REQUEST)
    data[2] = 0x00
    data[3] = 0x00
    message = codec.decode_message(bytes(data))
    assert (message.envelope.suggested_major, message.envelope.suggested_minor) == (2, 10)


def test_message_without_credential_length_is_accepted() -> None:
    data = bytearray(WORKED_REQUEST[:-4])
    data[16:20] = struct.pack(">I", len(data) - 20)
    assert codec.decode_message(bytes(data)).body == ResolutionRequest("88.100.1/ABC-123")


def test_old_challenge_format_for_version_2_0() -> None:
    envelope = Envelope(major=2, minor=0, suggested_major=0, suggested_minor=0)
    digest = RequestDigest(DigestAlgorithm.OLD_FORMAT, hashlib.md5(b"x").digest())
    challenge = Message(
        header=Header(
            op=OpCode.CREATE_HANDLE, response=ResponseCode.AUTHENTICATION_NEEDED, expiration=1
        ),
        body=Challenge(nonce=b"n" * 16, digest=digest),
        envelope=envelope,
    )
    data = codec.encode_message(challenge)
    # str nonce; str digest, and no RD flag.
    assert data[44:] == struct.pack(">I", 16) + b"n" * 16 + struct.pack(
        ">I", 16
    ) + digest.digest + bytes(4)
    assert not struct.unpack(">I", data[28:32])[0] & OpFlag.RD
    assert codec.decode_message(data).body == Challenge(nonce=b"n" * 16, digest=digest)


def test_old_digest_format_in_responses() -> None:
    old = RequestDigest(DigestAlgorithm.OLD_FORMAT, hashlib.md5(b"request").digest())
    response = Message(
        header=Header(op=OpCode.RESOLUTION, response=ResponseCode.HANDLE_NOT_FOUND, expiration=1),
        body=ErrorResponse("no such handle", digest=old),
    )
    data = codec.encode_message(response)
    assert data[44:48] == struct.pack(">I", 16)  # algorithm byte 0 is the length's top byte
    assert codec.decode_message(data).body == response.body


def test_responses_to_peers_older_than_2_5_translate_codes() -> None:
    envelope = Envelope(major=2, minor=4, suggested_major=0, suggested_minor=0)
    backup = Message(
        header=Header(op=OpCode.ADD_VALUE, response=ResponseCode.SERVER_BACKUP, expiration=1),
        body=ErrorResponse("read only"),
        envelope=envelope,
    )
    data = codec.encode_message(backup)
    assert struct.unpack(">I", data[24:28])[0] == 303
    decoded = codec.decode_message(data)
    assert decoded.header.response is ResponseCode.SERVER_BACKUP
    assert decoded.body == ErrorResponse("read only")
    invalid = replace(backup, header=replace(backup.header, response=ResponseCode.INVALID_VALUE))
    assert struct.unpack(">I", codec.encode_message(invalid)[24:28])[0] == 201


def test_old_error_without_message() -> None:
    envelope = Envelope(major=2, minor=0, suggested_major=0, suggested_minor=0)
    data = bytearray(
        codec.encode_message(
            Message(
                header=Header(op=OpCode.RESOLUTION, response=ResponseCode.ERROR, expiration=1),
                body=ErrorResponse(""),
                envelope=envelope,
            )
        )
    )
    stripped = bytes(data[:44]) + bytes(4)  # no message string, credential length 0
    stripped = (
        stripped[:16]
        + struct.pack(">I", 28)
        + stripped[20:40]
        + struct.pack(">I", 0)
        + stripped[44:]
    )
    assert codec.decode_message(stripped).body == ErrorResponse("")


def test_idis_auth_bytes_in_resolution_requests_are_tolerated() -> None:
    body_end = len(WORKED_REQUEST) - 4
    extra = struct.pack(">I", 3) + b"abc"
    data = bytearray(WORKED_REQUEST[:body_end] + extra + bytes(4))
    data[16:20] = struct.pack(">I", len(data) - 20)
    data[40:44] = struct.pack(">I", 28 + len(extra))
    assert codec.decode_message(bytes(data)).body == ResolutionRequest("88.100.1/ABC-123")
    data[40:44] = struct.pack(">I", 28 + 2)
    data[16:20] = struct.pack(">I", len(data) - 20 - 5)
    with pytest.raises(CodecError):
        codec.decode_message(bytes(data[:-5]))


def test_idis_login_success_body_is_ignored() -> None:
    response = Message(
        header=Header(op=OpCode.LOGIN_IDIS, response=ResponseCode.SUCCESS, expiration=1),
        body=GenericResponse(),
    )
    data = bytearray(codec.encode_message(response))
    data[40:44] = struct.pack(">I", 5)
    data[16:20] = struct.pack(">I", 24 + 5 + 4)
    raw = bytes(data[:44]) + b"hello" + bytes(4)
    assert codec.decode_message(raw).body == GenericResponse()


# --------------------------------------------------------------------- refusing things


def _with_op(op_code: int) -> bytes:
    data = bytearray(WORKED_REQUEST)
    data[20:24] = struct.pack(">I", op_code)
    return bytes(data)


def test_unknown_op_code_keeps_what_a_server_needs_to_answer() -> None:
    with pytest.raises(MessageDecodeError) as info:
        codec.decode_message(_with_op(9999))
    error = info.value
    assert error.response_code == ResponseCode.OPERATION_NOT_SUPPORTED
    assert error.envelope is not None
    assert error.envelope.request_id == 0x12345678
    assert error.op_code == 9999
    assert error.is_request
    reply = codec.encode_error_reply(error, now=0)
    assert reply is not None
    envelope = codec.decode_envelope(reply)
    assert envelope.request_id == 0x12345678
    op, rc = struct.unpack(">II", reply[20:28])
    assert (op, rc) == (9999, ResponseCode.OPERATION_NOT_SUPPORTED)
    assert len(reply) == 20 + envelope.message_length


def test_known_but_unsupported_request_op() -> None:
    with pytest.raises(MessageDecodeError) as info:
        codec.decode_message(_with_op(OpCode.SESSION_SETUP))
    assert info.value.response_code == ResponseCode.OPERATION_NOT_SUPPORTED
    assert info.value.header is not None
    assert info.value.header.op is OpCode.SESSION_SETUP


def test_no_error_reply_to_responses_or_bad_envelopes() -> None:
    response = codec.encode_message(
        Message(
            header=Header(op=OpCode.RESOLUTION, response=ResponseCode.ERROR),
            body=ErrorResponse("x"),
        )
    )
    broken = response[:44] + b"\xff" * (len(response) - 44)
    with pytest.raises(MessageDecodeError) as info:
        codec.decode_message(broken)
    assert codec.encode_error_reply(info.value) is None
    assert codec.encode_error_reply(MessageDecodeError("no envelope")) is None


def test_bad_handle_is_invalid_handle() -> None:
    data = bytearray(WORKED_REQUEST)
    data[48] = 0xFF
    with pytest.raises(CodecError, match="UTF-8") as info:
        codec.decode_message(bytes(data))
    assert info.value.response_code == ResponseCode.INVALID_HANDLE
    long = Message(header=Header(op=OpCode.RESOLUTION), body=ResolutionRequest("x" * 2049))
    with pytest.raises(CodecError) as info:
        codec.decode_message(codec.encode_message(long))
    assert info.value.response_code == ResponseCode.INVALID_HANDLE


def test_encrypted_envelopes_are_refused_until_decrypted() -> None:
    data = bytearray(WORKED_REQUEST)
    data[2] |= 0x40
    with pytest.raises(MessageDecodeError) as info:
        codec.decode_message(bytes(data))
    assert info.value.response_code == ResponseCode.OPERATION_NOT_SUPPORTED
    envelope = replace(codec.decode_envelope(bytes(data)), encrypted=False)
    assert codec.decode_after_envelope(envelope, bytes(data[20:])).body == ResolutionRequest(
        "88.100.1/ABC-123"
    )


def test_body_must_fit_the_header() -> None:
    message = Message(header=Header(op=OpCode.RESOLUTION), body=ErrorResponse("x"))
    with pytest.raises(CodecError, match="ResolutionRequest"):
        codec.encode_message(message)
    login = Message(header=Header(op=OpCode.LOGIN_IDIS), body=HandleRequest("88.1/admin"))
    with pytest.raises(CodecError, match="index"):
        codec.encode_message(login)


def test_out_of_range_fields_are_codec_errors() -> None:
    message = Message(header=Header(op=OpCode.RESOLUTION), body=ResolutionRequest("x", (2**40,)))
    with pytest.raises(CodecError, match="out of range"):
        codec.encode_message(message)
    with pytest.raises(CodecError):
        codec.encode_value(HandleValue(index=2**32, type="URL", data=b""))


def test_too_big_messages_are_refused() -> None:
    value = HandleValue(index=1, type="BIG", data=bytes(300_000))
    message = Message(
        header=Header(op=OpCode.CREATE_HANDLE), body=ValuesRequest("88.1/x", (value,))
    )
    with pytest.raises(CodecError, match="at most"):
        codec.encode_message(message)


# --------------------------------------------------------------------------------- UDP


def _big_response(n_values: int = 12) -> Message:
    vals = tuple(
        HandleValue(index=i, type="URL", data=f"https://example.com/{i}/".encode() * 4)
        for i in range(n_values)
    )
    return Message(
        header=Header(op=OpCode.RESOLUTION, response=ResponseCode.SUCCESS, expiration=1),
        body=ResolutionResponse("88.100.1/ABC-123", vals),
        envelope=Envelope(request_id=77),
    )


def test_small_message_is_one_udp_packet() -> None:
    data = codec.encode_message(_big_response(1))
    packets = codec.split_for_udp(codec.decode_envelope(data), data[20:])
    assert packets == [data]
    assert UdpReassembler().feed_raw(packets[0]) == data


@FAST
@given(st.integers(2, 40), st.randoms(use_true_random=False))
def test_udp_split_and_reassemble_in_any_order(n_values: int, rnd: object) -> None:
    message = _big_response(n_values)
    data = codec.encode_message(message)
    packets = codec.split_for_udp(message.envelope, data[20:])
    assert all(len(p) <= 512 for p in packets)
    if len(packets) > 1:
        assert all(codec.decode_envelope(p).truncated for p in packets)
        assert [codec.decode_envelope(p).sequence for p in packets] == list(range(len(packets)))
    order = [*packets, packets[0]]  # a duplicate too
    rnd.shuffle(order)  # type: ignore[attr-defined]
    reassembler = UdpReassembler()
    results = [reassembler.feed_raw(p, peer="a", now=0.0) for p in order]
    done = [r for r in results if r is not None]
    assert done
    assert done[0] == data
    assert codec.decode_message(done[0]).body == message.body
    # A duplicate after completion starts a partial message that only ages out.
    assert reassembler.buffered_bytes <= MAX_UDP_DATA


def test_udp_reassembly_is_bounded() -> None:
    reassembler = UdpReassembler(max_partial=2, max_age=1.0)
    message = _big_response()
    for request_id in (1, 2, 3):
        env = replace(message.envelope, request_id=request_id)
        data = codec.encode_message(replace(message, envelope=env))
        first = codec.split_for_udp(env, data[20:])[0]
        assert reassembler.feed(first, now=0.0) is None
    assert reassembler.pending == 2
    # Expired partial messages go when the next packet arrives.
    env = replace(message.envelope, request_id=4)
    data = codec.encode_message(replace(message, envelope=env))
    reassembler.feed(codec.split_for_udp(env, data[20:])[0], now=5.0)
    assert reassembler.pending == 1
    small = UdpReassembler(max_buffered=MAX_UDP_DATA * 2)
    packets = codec.split_for_udp(env, data[20:])
    for packet in packets[:-1]:
        small.feed(packet, now=0.0)
    assert small.buffered_bytes <= MAX_UDP_DATA * 2


def test_udp_packets_that_cannot_belong_to_a_message() -> None:
    message = _big_response()
    data = codec.encode_message(message)
    packets = codec.split_for_udp(message.envelope, data[20:])
    reassembler = UdpReassembler()
    with pytest.raises(CodecError, match="holds"):
        reassembler.feed(packets[0][:-1])
    bad_number = bytearray(packets[0])
    bad_number[12:16] = struct.pack(">I", 999)
    with pytest.raises(CodecError, match="out of range"):
        reassembler.feed(bytes(bad_number))
    reassembler.feed(packets[0], now=0.0)
    other_length = bytearray(packets[1])
    other_length[16:20] = struct.pack(">I", len(data) - 20 + 492)
    with pytest.raises(CodecError, match="earlier packets"):
        reassembler.feed(bytes(other_length), now=0.0)
    assert reassembler.pending == 0
    with pytest.raises(CodecError):
        reassembler.feed(b"\x02\x0a")


# --------------------------------------------------------------------------------- TCP


def test_tcp_reader_byte_by_byte() -> None:
    first = codec.encode_message(_big_response(3))
    second = WORKED_REQUEST
    stream = first + second
    reader = TcpMessageReader()
    got: list[Message] = []
    for i in range(len(stream)):
        got.extend(reader.feed(stream[i : i + 1]))
    assert [m.body for m in got] == [
        codec.decode_message(first).body,
        ResolutionRequest("88.100.1/ABC-123"),
    ]
    assert reader.buffered == 0


def test_tcp_reader_bad_length_breaks_the_stream() -> None:
    reader = TcpMessageReader()
    bad = bytearray(WORKED_REQUEST)
    bad[16:20] = struct.pack(">I", 0xFFFFFFF0)
    with pytest.raises(CodecError, match="close the connection"):
        reader.feed(bytes(bad))
    with pytest.raises(CodecError, match="unusable"):
        reader.feed(WORKED_REQUEST)


def test_tcp_reader_bad_body_does_not_lose_other_messages() -> None:
    reader = TcpMessageReader()
    stream = WORKED_REQUEST + _with_op(9999) + WORKED_REQUEST
    assert len(reader.feed(stream)) == 1
    with pytest.raises(MessageDecodeError):
        reader.feed(b"")
    assert len(reader.feed(b"")) == 1
    assert reader.feed_raw(WORKED_REQUEST) == [WORKED_REQUEST]

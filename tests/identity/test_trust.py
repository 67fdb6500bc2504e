"""Trusted resolution: JWS, certificates, record signatures and chain verification."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiangong.identity import keys, trust
from tiangong.identity.errors import TrustError
from tiangong.identity.handle.values import (
    HS_ADMIN,
    HS_CERT,
    HS_SIGNATURE,
    URL,
    HandleRecord,
    HandleValue,
    Permission,
    ValueReference,
    handle_key,
)
from tiangong.identity.keys import PrivateKeyObject
from tiangong.identity.sm2 import Sm2PrivateKey

NOW = 1_750_000_000
DAY = 86_400
ROOT = ValueReference("88.111.1/0.0", 300)
PREFIX_ADMIN = ValueReference("0.NA/88.100", 300)
HANDLE = "88.100/PUMP-1"


@pytest.fixture(scope="module")
def root_key() -> rsa.RSAPrivateKey:
    return keys.generate_rsa_key()


@pytest.fixture(scope="module")
def prefix_key() -> rsa.RSAPrivateKey:
    return keys.generate_rsa_key()


def pub(key: PrivateKeyObject) -> bytes:
    return keys.encode_public_key(keys.public_key_of(key))


class Store:
    """Values by reference, as a resolver would fetch them."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], HandleValue] = {}
        self.fetched: list[ValueReference] = []

    def put(self, ref: ValueReference, type_: str, data: str) -> None:
        self.values[(handle_key(ref.handle), ref.index)] = HandleValue(
            ref.index, type_, data.encode()
        )

    async def fetch(self, ref: ValueReference) -> HandleValue | None:
        self.fetched.append(ref)
        return self.values.get((handle_key(ref.handle), ref.index))


def cert_ref(subject: ValueReference) -> ValueReference:
    return ValueReference(subject.handle, trust.DEFAULT_CERT_INDEX)


def make_store(root_key: PrivateKeyObject, prefix_key: PrivateKeyObject) -> Store:
    store = Store()
    root_cert = trust.self_signed_root(
        ROOT, root_key, not_before=NOW - DAY, expires=NOW + 365 * DAY, serial=1, now=NOW - DAY
    )
    store.put(cert_ref(ROOT), HS_CERT, root_cert)
    prefix_cert = trust.issue_certificate(
        ROOT,
        root_key,
        PREFIX_ADMIN,
        pub(prefix_key),
        perms=[trust.PERM_HANDLES_UNDER_THIS_PREFIX],
        not_before=NOW - DAY,
        expires=NOW + 30 * DAY,
        serial="88.100-1",
        now=NOW - DAY,
    )
    store.put(cert_ref(PREFIX_ADMIN), HS_CERT, prefix_cert)
    return store


def record_values() -> list[HandleValue]:
    return [
        HandleValue(1, URL, b"https://example.com/pump-1"),
        HandleValue(2, "name", "水泵 1".encode()),
        HandleValue(100, HS_ADMIN, b"\x07\xf3admin", permissions=Permission.ADMIN_READ),
    ]


def signed_record(
    key: PrivateKeyObject,
    values: Sequence[HandleValue] | None = None,
    *,
    handle: str = HANDLE,
    signer: ValueReference = PREFIX_ADMIN,
    expires: int = NOW + DAY,
    chain: Sequence[ValueReference] = (),
) -> HandleRecord:
    values = list(values if values is not None else record_values())
    jws = trust.sign_values(
        values, handle=handle, signer=signer, key=key, expires=expires, now=NOW - 60, chain=chain
    )
    return HandleRecord(handle, (*values, HandleValue(400, HS_SIGNATURE, jws.encode())))


async def verify(
    record: HandleRecord, store: Store, root_key: PrivateKeyObject, **kwargs: object
) -> trust.Verification:
    return await trust.verify_record(
        record,
        fetch=store.fetch,
        trust_root=kwargs.pop("trust_root", ROOT),  # type: ignore[arg-type]
        trust_root_public_key_data=pub(root_key),
        now=kwargs.pop("now", NOW),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ canonical bytes


def test_canonical_bytes_follow_the_handle_value_encoding() -> None:
    value = HandleValue(1, URL, b"http://www.handle.net/index.html"[:29], timestamp=123)
    expected = bytes.fromhex("00 00015180 0e 00000003 55524c 0000001d") + value.data
    assert trust.canonical_value_bytes(value) == expected + b"\x00\x00\x00\x00"
    # The timestamp is not covered; TTL, permissions and references are.
    assert trust.canonical_value_bytes(replace(value, timestamp=999)) == expected + bytes(4)
    assert trust.canonical_value_bytes(replace(value, ttl=60)) != expected + bytes(4)
    with_ref = replace(value, references=(ValueReference("0.NA/88", 7),))
    assert trust.canonical_value_bytes(with_ref).endswith(
        bytes.fromhex("00000001 00000007") + b"0.NA/88" + bytes.fromhex("00000007")
    )


# ------------------------------------------------------------------ happy paths


async def test_valid_rsa_chain(root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey) -> None:
    store = make_store(root_key, prefix_key)
    result = await verify(signed_record(prefix_key), store, root_key)
    assert result.valid, result.reason
    assert result.signed
    assert result.signer == PREFIX_ADMIN
    assert result.chain == (cert_ref(PREFIX_ADMIN), cert_ref(ROOT))
    assert result.covered == (1, 2, 100)
    assert result.failed == result.unsigned == result.missing == ()


async def test_valid_sm2_signer_under_rsa_root(root_key: rsa.RSAPrivateKey) -> None:
    sm2_key = Sm2PrivateKey.generate()
    store = make_store(root_key, sm2_key)
    record = signed_record(sm2_key)
    token = record.of_type(HS_SIGNATURE)[0].data.decode()
    assert trust.jws_parse(token).alg == "SM2256"
    assert trust.parse_signature(token).digest_algorithm == "SM3"
    result = await verify(record, store, root_key)
    assert result.valid, result.reason


async def test_all_sm2_chain_and_datetime_times() -> None:
    root_key, prefix_key = Sm2PrivateKey.generate(), Sm2PrivateKey.generate()
    store = make_store(root_key, prefix_key)
    now = datetime.fromtimestamp(NOW, tz=UTC)
    result = await verify(signed_record(prefix_key), store, root_key, now=now)
    assert result.valid, result.reason


async def test_values_instead_of_record_need_a_handle(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key)
    result = await verify(record.values, store, root_key, handle=HANDLE)  # type: ignore[arg-type]
    assert result.valid
    with pytest.raises(TypeError):
        await verify(record.values, store, root_key)  # type: ignore[arg-type]


async def test_explicit_chain_claim_at_other_indexes(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    moved = ValueReference(PREFIX_ADMIN.handle, 401)
    store.values[(handle_key(moved.handle), 401)] = replace(
        store.values.pop((handle_key(PREFIX_ADMIN.handle), 400)), index=401
    )
    without_chain = await verify(signed_record(prefix_key), store, root_key)
    assert not without_chain.valid
    assert "no HS_CERT at 400:0.NA/88.100" in without_chain.reason
    with_chain = await verify(signed_record(prefix_key, chain=[moved]), store, root_key)
    assert with_chain.valid, with_chain.reason
    assert with_chain.chain == (moved, cert_ref(ROOT))


async def test_missing_values_are_not_an_error(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key)
    public_only = HandleRecord(HANDLE, tuple(v for v in record.values if v.index != 100))
    result = await verify(public_only, store, root_key)
    assert result.valid, result.reason
    assert result.missing == (100,)


# ------------------------------------------------------------------ detection


async def test_tampered_value_is_reported(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key)
    tampered = tuple(
        replace(v, data=b"https://evil.example/") if v.index == 1 else v for v in record.values
    )
    result = await verify(HandleRecord(HANDLE, tampered), store, root_key)
    assert result.signed
    assert not result.valid
    assert result.failed == (1,)
    assert result.covered == (2, 100)
    assert "do not match" in result.reason


async def test_changed_ttl_is_tampering(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key)
    changed = tuple(replace(v, ttl=1) if v.index == 2 else v for v in record.values)
    result = await verify(HandleRecord(HANDLE, changed), store, root_key)
    assert result.failed == (2,)


async def test_value_added_after_signing_is_unsigned(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key)
    added = HandleRecord(HANDLE, (*record.values, HandleValue(3, URL, b"https://added/")))
    result = await verify(added, store, root_key)
    assert not result.valid
    assert result.unsigned == (3,)
    assert result.failed == ()
    assert "not covered" in result.reason


async def test_unsigned_record(root_key: rsa.RSAPrivateKey) -> None:
    result = await verify(HandleRecord(HANDLE, tuple(record_values())), Store(), root_key)
    assert not result.signed
    assert not result.valid
    assert result.unsigned == (1, 2, 100)


@pytest.mark.parametrize(
    ("now", "words"),
    [(NOW + 2 * DAY, "the signature expired"), (NOW - 2 * DAY, "not valid before")],
)
async def test_signature_outside_its_period(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey, now: int, words: str
) -> None:
    store = make_store(root_key, prefix_key)
    result = await verify(signed_record(prefix_key), store, root_key, now=now)
    assert not result.valid
    assert words in result.reason


async def test_expired_certificate(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    # The signature is good for a year, the prefix certificate only for 30 days.
    record = signed_record(prefix_key, expires=NOW + 365 * DAY)
    result = await verify(record, store, root_key, now=NOW + 31 * DAY)
    assert not result.valid
    assert "certificate of 300:0.NA/88.100 expired" in result.reason


async def test_chain_not_ending_at_the_root(prefix_key: rsa.RSAPrivateKey) -> None:
    rogue_root = ValueReference("0.NA/99", 300)
    rogue_key = Sm2PrivateKey.generate()
    store = make_store(rogue_key, prefix_key)  # certificates exist, but under the wrong handle
    store.values.clear()
    store.put(
        cert_ref(rogue_root),
        HS_CERT,
        trust.self_signed_root(
            rogue_root, rogue_key, not_before=NOW - DAY, expires=NOW + DAY, serial=1
        ),
    )
    store.put(
        cert_ref(PREFIX_ADMIN),
        HS_CERT,
        trust.issue_certificate(
            rogue_root,
            rogue_key,
            PREFIX_ADMIN,
            pub(prefix_key),
            perms=["everything"],
            not_before=NOW - DAY,
            expires=NOW + DAY,
            serial=2,
        ),
    )
    result = await verify(signed_record(prefix_key), store, rogue_key)
    assert not result.valid
    assert "ends at 300:0.NA/99, not the root 300:88.111.1/0.0" in result.reason


async def test_wrong_root_key(root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey) -> None:
    store = make_store(root_key, prefix_key)
    other = Sm2PrivateKey.generate()
    result = await verify(signed_record(prefix_key), store, other)
    assert not result.valid
    assert "other than the configured root key" in result.reason


async def test_root_index_zero_accepts_any_index(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    any_index = ValueReference(ROOT.handle.lower(), 0)
    result = await verify(signed_record(prefix_key), store, root_key, trust_root=any_index)
    assert result.valid, result.reason


async def test_bad_signature_bytes(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key)
    token = record.of_type(HS_SIGNATURE)[0].data.decode()
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 1
    forged = f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"
    values = tuple(v for v in record.values if v.type != HS_SIGNATURE)
    bad = HandleRecord(HANDLE, (*values, HandleValue(400, HS_SIGNATURE, forged.encode())))
    result = await verify(bad, store, root_key)
    assert not result.valid
    assert "does not verify" in result.reason


async def test_signer_key_not_the_certified_one(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    result = await verify(signed_record(Sm2PrivateKey.generate()), store, root_key)
    assert not result.valid
    assert "does not verify" in result.reason


async def test_signature_moved_to_another_handle(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key)
    moved = HandleRecord("88.100/PUMP-2", record.values)
    result = await verify(moved, store, root_key)
    assert not result.valid
    assert "signs '88.100/PUMP-1', not '88.100/PUMP-2'" in result.reason


async def test_certificate_permissions_limit_the_handles(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key, handle="88.200/PUMP-1")
    result = await verify(record, store, root_key)
    assert not result.valid
    assert "does not authorize signing 88.200/PUMP-1" in result.reason


def test_permission_rules() -> None:
    under = trust.CertPermission(trust.PERM_HANDLES_UNDER_THIS_PREFIX, "0.NA/88.100")
    assert under.authorizes("88.100/X")
    assert under.authorizes("88.100/x")
    assert not under.authorizes("88.1000/X")
    assert not under.authorizes("0.NA/88.100.1")
    derived = trust.CertPermission(trust.PERM_DERIVED_PREFIXES, "0.NA/88.100")
    assert derived.authorizes("0.NA/88.100.1")
    assert derived.authorizes("88.100.1/X")
    assert not derived.authorizes("0.NA/88.100")
    this = trust.CertPermission(trust.PERM_THIS_HANDLE, "88.100/X")
    assert this.authorizes("88.100/x")
    assert not this.authorizes("88.100/Y")
    assert trust.CertPermission(trust.PERM_EVERYTHING).authorizes("anything/at-all")
    assert not trust.CertPermission("bogus", "0.NA/88").authorizes("88/X")
    with pytest.raises(ValueError, match="unknown certificate permission"):
        trust.issue_certificate(
            ROOT,
            Sm2PrivateKey(7),
            PREFIX_ADMIN,
            pub(Sm2PrivateKey(8)),
            perms=["bogus"],
            not_before=0,
            expires=1,
            serial=1,
        )


async def chain_of(length: int, root_key: PrivateKeyObject) -> tuple[Store, PrivateKeyObject]:
    """ROOT → CA1 → … → CA{length-1} → the signer: ``length`` certificates below the root."""
    store = make_store(root_key, root_key)
    issuer, issuer_key = ROOT, root_key
    for n in range(1, length + 1):
        subject = ValueReference(f"0.NA/88.100.{n}", 300) if n < length else PREFIX_ADMIN
        subject_key = Sm2PrivateKey.generate()
        cert = trust.issue_certificate(
            issuer,
            issuer_key,
            subject,
            pub(subject_key),
            perms=["everything"],
            not_before=NOW - DAY,
            expires=NOW + DAY,
            serial=n,
        )
        store.put(cert_ref(subject), HS_CERT, cert)
        issuer, issuer_key = subject, subject_key
    return store, issuer_key


async def test_long_chain_limit(root_key: rsa.RSAPrivateKey) -> None:
    store, signer_key = await chain_of(9, root_key)  # 9 certificates + the root's own = 10
    record = signed_record(signer_key)
    too_long = await verify(record, store, root_key)
    assert not too_long.valid
    assert "longer than 8" in too_long.reason
    assert len(too_long.chain) == 8
    allowed = await verify(record, store, root_key, max_chain_length=10)
    assert allowed.valid, allowed.reason
    assert len(allowed.chain) == 10


async def test_chain_loop_is_detected(root_key: rsa.RSAPrivateKey) -> None:
    a, b = ValueReference("0.NA/1", 300), ValueReference("0.NA/2", 300)
    ka, kb = Sm2PrivateKey.generate(), Sm2PrivateKey.generate()
    store = Store()
    for issuer, ikey, subject, skey in ((b, kb, a, ka), (a, ka, b, kb)):
        cert = trust.issue_certificate(
            issuer,
            ikey,
            subject,
            pub(skey),
            perms=["everything"],
            not_before=NOW - DAY,
            expires=NOW + DAY,
            serial=1,
        )
        store.put(cert_ref(subject), HS_CERT, cert)
    result = await verify(signed_record(ka, signer=a), store, root_key)
    assert not result.valid
    assert "loops" in result.reason


async def test_first_valid_signature_wins(
    root_key: rsa.RSAPrivateKey, prefix_key: rsa.RSAPrivateKey
) -> None:
    store = make_store(root_key, prefix_key)
    record = signed_record(prefix_key)
    junk = HandleValue(399, HS_SIGNATURE, b"not a jws")
    result = await verify(HandleRecord(HANDLE, (*record.values, junk)), store, root_key)
    assert result.valid, result.reason
    only_junk = HandleRecord(HANDLE, (*record_values(), junk))
    result = await verify(only_junk, store, root_key)
    assert result.signed
    assert not result.valid
    assert "HS_SIGNATURE at index 399" in result.reason


# ------------------------------------------------------------------ JWS strictness


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header: object, payload: bytes = b"{}", signature: bytes = b"sig") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(payload)}.{_b64(signature)}"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        _token({"alg": "none"}),
        _token({"alg": "HS256"}),
        _token({"alg": "ES256"}),
        _token({"typ": "JWT"}),
        _token(["RS256"]),
        _token({"alg": "RS256", "crit": ["exp"]}),
        _token({"alg": "RS256"}, signature=b""),
        _token({"alg": "RS256"}) + "=",
        _token({"alg": "RS256"}).replace("-", "+") + "+/",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2lnZ",  # 5 characters: no byte string encodes to that
        "eyJhbGciOiJSUzI1NiJ9.e30.c2l",  # non-zero trailing bits: not canonical
        "eyJhbGciOiJSUzI1NiIsImFsZyI6IlJTMjU2In0.e30.c2ln",  # duplicate "alg"
        "x" * (trust.MAX_JWS_LENGTH + 1),
    ],
)
def test_jws_parse_rejects(token: str) -> None:
    with pytest.raises(TrustError):
        trust.jws_parse(token)


def test_jws_round_trip_and_wrong_key_type(prefix_key: rsa.RSAPrivateKey) -> None:
    token = trust.jws_sign(b'{"hello":"world"}', prefix_key)
    jws = trust.jws_parse(token)
    assert jws.alg == "RS256"
    assert jws.payload == b'{"hello":"world"}'
    assert trust.jws_verify(jws, prefix_key.public_key())
    assert not trust.jws_verify(jws, Sm2PrivateKey(99).public_key)
    sm2_token = trust.jws_sign(b"{}", Sm2PrivateKey(99))
    sm2_jws = trust.jws_parse(sm2_token)
    assert trust.jws_verify(sm2_jws, Sm2PrivateKey(99).public_key)
    assert not trust.jws_verify(sm2_jws, prefix_key.public_key())


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200)
    | st.from_regex(r"[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}")
)
def test_jws_parse_only_raises_trust_error(token: str) -> None:
    with contextlib.suppress(TrustError):
        trust.jws_parse(token)


_claim_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["iss", "sub", "exp", "nbf", "digests", "chain", "perms", "publicKey"]),
        _claim_values,
    )
)
def test_malformed_claims_never_escape_as_exceptions(claims: dict[str, object]) -> None:
    key = Sm2PrivateKey(4242)
    token = trust.jws_sign(json.dumps(claims).encode(), key)
    for parse in (trust.parse_signature, trust.parse_certificate):
        with contextlib.suppress(TrustError):
            parse(token)
    store = Store()
    store.put(ValueReference("0.NA/88.100", 400), HS_CERT, token)
    record = HandleRecord(
        HANDLE, (*record_values(), HandleValue(400, HS_SIGNATURE, token.encode()))
    )
    result = asyncio.run(
        trust.verify_record(
            record,
            fetch=store.fetch,
            trust_root=ROOT,
            trust_root_public_key_data=pub(key),
            now=NOW,
        )
    )
    assert not result.valid

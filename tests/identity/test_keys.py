"""HS_PUBKEY data, JWK, PEM and the SM2/SM3 primitives."""

from __future__ import annotations

import contextlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from gmssl import sm3 as gmssl_sm3  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from tiangong.identity import keys
from tiangong.identity.errors import CodecError
from tiangong.identity.handle.values import PublicKey
from tiangong.identity.sm2 import (
    DEFAULT_USER_ID,
    Sm2Error,
    Sm2PrivateKey,
    Sm2PublicKey,
    decode_signature,
    encode_signature,
    sm3,
)

# Made with OpenSSL 3.0: `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2`, then
# `openssl pkeyutl -sign -rawin -digest sm3 -pkeyopt distid:88.1000.1/ADMIN` over b"tiangong".
OPENSSL_SM2_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqBHM9VAYItBG0wawIBAQQgsMEzOIli+Im3OAbT
6cM9BEPfocaN3WHHN8qYTWw+W7ehRANCAATHXazSPm8Jw1Z62dpBOdQ8I2vdJJzc
fzPAzDnml1Hru3V4v/BzDXg9+f7/zZS2LtMAwN41iaHR24xUCcZed7K8
-----END PRIVATE KEY-----
"""
OPENSSL_SM2_PUBLIC = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAEx12s0j5vCcNWetnaQTnUPCNr3SSc
3H8zwMw55pdR67t1eL/wcw14Pfn+/82Uti7TAMDeNYmh0duMVAnGXneyvA==
-----END PUBLIC KEY-----
"""
OPENSSL_SM2_SIGNATURE = bytes.fromhex(
    "3046022100a4a90906101bd38cec95f903f44ea907ade253500be7764ee2383df2705f7adf022100e9cc16"
    "8cd8f71fe07b3d95081af41c0333d5c96ff9387ea7fc88d3ec89b50f6d"
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return keys.generate_rsa_key()


@pytest.fixture(scope="module")
def sm2_key() -> Sm2PrivateKey:
    return keys.generate_sm2_key()


# ------------------------------------------------------------------ SM3 / SM2


def test_sm3_known_answers() -> None:
    # GB/T 32905-2016 Appendix A, examples 1 and 2.
    assert sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=200))
def test_sm3_agrees_with_gmssl(data: bytes) -> None:
    assert sm3(data).hex() == gmssl_sm3.sm3_hash(list(data))


def test_sm2_verifies_openssl_signature_with_identifier_user_id() -> None:
    public = Sm2PublicKey.from_pem(OPENSSL_SM2_PUBLIC)
    assert public.verify(OPENSSL_SM2_SIGNATURE, b"tiangong", user_id=b"88.1000.1/ADMIN")
    assert not public.verify(OPENSSL_SM2_SIGNATURE, b"tiangong")  # default user ID: other Z
    assert not public.verify(OPENSSL_SM2_SIGNATURE, b"tiangonG", user_id=b"88.1000.1/ADMIN")


def test_sm2_pem_is_byte_identical_to_openssl() -> None:
    private = Sm2PrivateKey.from_pem(OPENSSL_SM2_KEY)
    assert private.to_pem() == OPENSSL_SM2_KEY
    assert private.public_key.to_pem() == OPENSSL_SM2_PUBLIC
    assert Sm2PublicKey.from_pem(OPENSSL_SM2_PUBLIC) == private.public_key


@pytest.mark.parametrize("encoding", ["der", "raw"])
@pytest.mark.parametrize("user_id", [DEFAULT_USER_ID, "88.100.1/设备".encode()])
def test_sm2_sign_verify_round_trip(sm2_key: Sm2PrivateKey, encoding: str, user_id: bytes) -> None:
    signature = sm2_key.sign(b"message", user_id=user_id, encoding=encoding)  # type: ignore[arg-type]
    public = sm2_key.public_key
    assert public.verify(signature, b"message", user_id=user_id, encoding=encoding)  # type: ignore[arg-type]
    assert not public.verify(signature, b"messagE", user_id=user_id, encoding=encoding)  # type: ignore[arg-type]
    assert not public.verify(signature, b"message", user_id=b"other", encoding=encoding)  # type: ignore[arg-type]
    other = Sm2PrivateKey.generate().public_key
    assert not other.verify(signature, b"message", user_id=user_id, encoding=encoding)  # type: ignore[arg-type]


def test_sm2_rejects_bad_points_and_scalars() -> None:
    with pytest.raises(Sm2Error):
        Sm2PublicKey(1, 2)
    with pytest.raises(Sm2Error):
        Sm2PrivateKey(0)
    with pytest.raises(Sm2Error):
        Sm2PublicKey.from_bytes(b"\x04" + b"\x00" * 10)


def test_sm2_signature_out_of_range_does_not_verify(sm2_key: Sm2PrivateKey) -> None:
    assert not sm2_key.public_key.verify(encode_signature(0, 1), b"m")
    assert not sm2_key.public_key.verify(b"\x30\x00", b"m")
    r, s = decode_signature(sm2_key.sign(b"m"))
    assert decode_signature(encode_signature(r, s, encoding="raw"), "raw") == (r, s)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_sm2_verify_never_raises_on_garbage(signature: bytes) -> None:
    key = Sm2PublicKey.from_pem(OPENSSL_SM2_PUBLIC)
    assert key.verify(signature, b"m") in (True, False)
    assert key.verify(signature[:64].ljust(64, b"\x01"), b"m", encoding="raw") in (True, False)


# ------------------------------------------------------------------ HS_PUBKEY data


def test_rsa_public_key_encoding_matches_hdllib_layout(rsa_key: rsa.RSAPrivateKey) -> None:
    public = rsa_key.public_key()
    data = keys.encode_public_key(public)
    numbers = public.public_numbers()
    modulus = b"\x00" + numbers.n.to_bytes(256, "big")  # top bit set: Java adds a sign byte
    expected = (
        struct.pack(">I", 11)
        + b"RSA_PUB_KEY"
        + b"\x00\x00"
        + struct.pack(">I", 3)
        + b"\x01\x00\x01"
        + struct.pack(">I", len(modulus))
        + modulus
        + b"\x00\x00\x00\x00"
    )
    assert data == expected
    decoded = keys.decode_public_key(data)
    assert decoded == PublicKey("RSA_PUB_KEY", (b"\x01\x00\x01", modulus), 0)
    loaded = keys.load_public_key(data)
    assert isinstance(loaded, rsa.RSAPublicKey)
    assert loaded.public_numbers() == numbers
    # Without CNRI's trailer the data still decodes (other writers omit it).
    assert keys.decode_public_key(data[:-4]) == decoded
    assert keys.encode_public_key(decoded) == data


def test_sm2_public_key_data_round_trip(sm2_key: Sm2PrivateKey) -> None:
    data = keys.encode_public_key(sm2_key.public_key)
    decoded = keys.decode_public_key(data)
    assert decoded.key_type == keys.SM2_PUB_KEY
    assert decoded.fields[0].startswith(b"-----BEGIN PUBLIC KEY-----")
    assert keys.load_public_key(data) == sm2_key.public_key


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x00\x0bRSA_PUB_KEY",
        struct.pack(">I", 7) + b"XYZ_KEY" + b"\x00\x00",
        struct.pack(">I", 0xFFFFFFFF) + b"RSA",
        struct.pack(">I", 11) + b"RSA_PUB_KEY\x00\x00" + struct.pack(">I", 1) + b"\x03",
        struct.pack(">I", 11) + b"SM2_PUB_KEY\x00\x00" + struct.pack(">I", 3) + b"abc" + b"junk",
    ],
)
def test_decode_rejects_malformed(data: bytes) -> None:
    with pytest.raises(CodecError):
        keys.load_public_key(data)


def test_load_rejects_dsa_and_bad_sm2() -> None:
    dsa = keys.encode_public_key(PublicKey("DSA_PUB_KEY", (b"\x01", b"\x02", b"\x03", b"\x04")))
    assert keys.decode_public_key(dsa).key_type == "DSA_PUB_KEY"
    with pytest.raises(CodecError):
        keys.load_public_key(dsa)
    bad_sm2 = keys.encode_public_key(PublicKey("SM2_PUB_KEY", (b"not pem",)))
    with pytest.raises(CodecError):
        keys.load_public_key(bad_sm2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_public_key_only_raises_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        keys.load_public_key(data)


def test_same_public_key_ignores_incidental_encoding(rsa_key: rsa.RSAPrivateKey) -> None:
    data = keys.encode_public_key(rsa_key.public_key())
    assert keys.same_public_key(data, data[:-4])
    assert not keys.same_public_key(
        data, keys.encode_public_key(Sm2PrivateKey.generate().public_key)
    )
    assert not keys.same_public_key(data, b"junk")


# ------------------------------------------------------------------ JWK


def test_rsa_jwk_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    data = keys.encode_public_key(rsa_key.public_key())
    jwk = keys.public_key_to_jwk(data)
    assert jwk["kty"] == "RSA"
    assert jwk["e"] == "AQAB"
    assert keys.public_key_from_jwk(jwk) == data


def test_sm2_jwk_round_trip(sm2_key: Sm2PrivateKey) -> None:
    data = keys.encode_public_key(sm2_key.public_key)
    jwk = keys.public_key_to_jwk(data)
    assert jwk["kty"] == "EC"
    assert jwk["crv"] == "SM2"
    assert keys.public_key_from_jwk(jwk) == data
    assert keys.public_key_from_jwk({"kty": "SM2", "x": jwk["x"], "y": jwk["y"]}) == data


def test_dsa_jwk_round_trip() -> None:
    data = keys.encode_public_key(PublicKey("DSA_PUB_KEY", (b"\x05", b"\x07", b"\x02", b"\x03")))
    jwk = keys.public_key_to_jwk(data)
    assert jwk == {"kty": "DSA", "q": "BQ", "p": "Bw", "g": "Ag", "y": "Aw"}
    assert keys.public_key_from_jwk(jwk) == data


@pytest.mark.parametrize(
    "jwk",
    [
        {},
        {"kty": "oct", "k": "AA"},
        {"kty": "RSA", "n": 5, "e": "AQAB"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},  # a 17-bit modulus
        {"kty": "RSA", "n": "A+/", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "SM2", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "SM2", "x": "A" * 43, "y": "A" * 43},  # not on the curve
    ],
)
def test_jwk_rejects_bad_keys(jwk: dict[str, object]) -> None:
    with pytest.raises(CodecError):
        keys.public_key_from_jwk(jwk)


# ------------------------------------------------------------------ private keys and secrets


def test_rsa_pem_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = keys.private_key_to_pem(rsa_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = keys.load_private_key(pem)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.private_numbers() == rsa_key.private_numbers()
    encrypted = keys.private_key_to_pem(rsa_key, passphrase=b"pw")
    assert b"ENCRYPTED" in encrypted
    again = keys.load_private_key(encrypted, passphrase=b"pw")
    assert isinstance(again, rsa.RSAPrivateKey)
    with pytest.raises(ValueError, match="not an RSA or SM2"):
        keys.load_private_key(encrypted, passphrase=b"wrong")


def test_sm2_pem_and_hex_load(sm2_key: Sm2PrivateKey) -> None:
    assert keys.load_private_key(keys.private_key_to_pem(sm2_key)) == sm2_key
    assert keys.load_private_key(sm2_key.to_bytes().hex().encode()) == sm2_key
    with pytest.raises(ValueError, match="unencrypted"):
        keys.private_key_to_pem(sm2_key, passphrase=b"pw")
    with pytest.raises(ValueError, match="not an RSA or SM2"):
        keys.load_private_key(b"garbage")


def test_secret_key_forms() -> None:
    assert keys.encode_secret_key("pässword") == "pässword".encode()
    # hdllib's hashed form: lower-case hex SHA-1.
    assert keys.hashed_secret_key("password") == b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"

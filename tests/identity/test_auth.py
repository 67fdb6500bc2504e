"""Challenge answers (HS_SECKEY, HS_PUBKEY) and admin identities, in memory."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from tiangong.identity import auth, keys
from tiangong.identity.errors import AuthenticationError
from tiangong.identity.handle.values import ValueReference
from tiangong.identity.sm2 import Sm2PrivateKey

NONCE = bytes(range(16))
DIGEST = hashlib.sha256(b"the encoded request").digest()
SECRET = b"correct horse"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return keys.generate_rsa_key()


@pytest.fixture(scope="module")
def sm2_key() -> Sm2PrivateKey:
    return keys.generate_sm2_key()


def test_new_nonce_is_16_fresh_bytes() -> None:
    a, b = auth.new_nonce(), auth.new_nonce()
    assert len(a) == len(b) == 16
    assert a != b


# ------------------------------------------------------------------ HS_SECKEY


@pytest.mark.parametrize("algorithm", list(auth.SecretKeyAlgorithm))
def test_secret_key_answer_round_trip(algorithm: auth.SecretKeyAlgorithm) -> None:
    answer = auth.secret_key_answer(SECRET, NONCE, DIGEST, algorithm)
    assert auth.verify_secret_key_answer(SECRET, NONCE, DIGEST, answer)
    assert not auth.verify_secret_key_answer(b"wrong", NONCE, DIGEST, answer)
    assert not auth.verify_secret_key_answer(SECRET, NONCE[::-1], DIGEST, answer)
    assert not auth.verify_secret_key_answer(SECRET, NONCE, DIGEST[:-1] + b"\x00", answer)


def test_known_answer_forms() -> None:
    data = NONCE + DIGEST
    hmac_sha1 = auth.secret_key_answer(SECRET, NONCE, DIGEST, auth.HMAC_SHA1)
    assert hmac_sha1 == b"\x12" + hmac.new(SECRET, data, "sha1").digest()
    sha1 = auth.secret_key_answer(SECRET, NONCE, DIGEST, auth.SecretKeyAlgorithm.SHA1)
    assert sha1 == b"\x02" + hashlib.sha1(SECRET + data + SECRET).digest()
    old = auth.secret_key_answer(SECRET, NONCE, DIGEST, auth.SecretKeyAlgorithm.MD5_OLD_FORMAT)
    assert old == hashlib.md5(SECRET + data + SECRET).digest()


def test_pbkdf2_answer_layout_and_parameters() -> None:
    answer = auth.secret_key_answer(SECRET, NONCE, DIGEST)
    assert answer[0] == 0x22
    (salt_len,) = struct.unpack_from(">I", answer, 1)
    assert salt_len == 16
    salt = answer[5:21]
    iterations, key_bits, mac_len = struct.unpack_from(">III", answer, 21)
    assert (iterations, key_bits, mac_len) == (10_000, 160, 20)
    key = hashlib.pbkdf2_hmac("sha1", SECRET, salt, 10_000, 20)
    assert answer[33:] == hmac.new(key, NONCE + DIGEST, "sha1").digest()
    assert len(answer) == 53
    # A fresh salt each time.
    assert auth.secret_key_answer(SECRET, NONCE, DIGEST) != answer


def test_pbkdf2_widens_secret_bytes_like_java() -> None:
    secret = "pässwörd".encode("latin-1")
    answer = auth.secret_key_answer(secret, NONCE, DIGEST)
    salt = answer[5:21]
    key = hashlib.pbkdf2_hmac("sha1", "pässwörd".encode(), salt, 10_000, 20)
    assert answer[33:] == hmac.new(key, NONCE + DIGEST, "sha1").digest()


def _pbkdf2_answer(iterations: int, key_bits: int, trailing: bytes = b"") -> bytes:
    salt = b"s" * 16
    mac = b"m" * 20
    if iterations > 0:
        key = hashlib.pbkdf2_hmac("sha1", SECRET, salt, iterations, max(key_bits // 8, 1))
        mac = hmac.new(key, NONCE + DIGEST, "sha1").digest()
    body = struct.pack(">I", 16) + salt + struct.pack(">II", iterations, key_bits)
    return b"\x22" + body + struct.pack(">I", len(mac)) + mac + trailing


def test_pbkdf2_verifier_bounds_attacker_parameters() -> None:
    assert auth.verify_secret_key_answer(SECRET, NONCE, DIGEST, _pbkdf2_answer(1000, 256))
    assert not auth.verify_secret_key_answer(SECRET, NONCE, DIGEST, _pbkdf2_answer(200_001, 160))
    assert not auth.verify_secret_key_answer(SECRET, NONCE, DIGEST, _pbkdf2_answer(0, 160))
    assert not auth.verify_secret_key_answer(SECRET, NONCE, DIGEST, _pbkdf2_answer(10, 12))
    assert not auth.verify_secret_key_answer(SECRET, NONCE, DIGEST, _pbkdf2_answer(10, 160, b"x"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_secret_key_verifier_never_raises(answer: bytes) -> None:
    assert auth.verify_secret_key_answer(SECRET, NONCE, DIGEST, answer) is False


# ------------------------------------------------------------------ HS_PUBKEY


def test_rsa_answer_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    data = keys.encode_public_key(rsa_key.public_key())
    answer = auth.public_key_answer(rsa_key, NONCE, DIGEST, user="0.NA/88.100")
    assert answer.startswith(b"\x00\x00\x00\x07SHA-256")
    assert auth.verify_public_key_answer(data, NONCE, DIGEST, answer, user="0.NA/88.100")
    assert not auth.verify_public_key_answer(data, b"x" * 16, DIGEST, answer, user="0.NA/88.100")
    other = keys.encode_public_key(keys.generate_sm2_key().public_key)
    assert not auth.verify_public_key_answer(other, NONCE, DIGEST, answer, user="0.NA/88.100")


def test_sm2_answer_uses_the_user_as_sm2_id(sm2_key: Sm2PrivateKey) -> None:
    data = keys.encode_public_key(sm2_key.public_key)
    user = "88.1000.1/ADMIN"
    answer = auth.public_key_answer(sm2_key, NONCE, DIGEST, user=user)
    assert answer.startswith(b"\x00\x00\x00\x03SM3")
    assert auth.verify_public_key_answer(data, NONCE, DIGEST, answer, user=user)
    assert not auth.verify_public_key_answer(data, NONCE, DIGEST, answer, user="88.1000.1/OTHER")
    # The same signature under a hash name that does not fit SM2 is refused.
    relabelled = b"\x00\x00\x00\x07SHA-256" + answer[7:]
    assert not auth.verify_public_key_answer(data, NONCE, DIGEST, relabelled, user=user)


def test_sm2_raw_signature_answer_accepted(sm2_key: Sm2PrivateKey) -> None:
    data = keys.encode_public_key(sm2_key.public_key)
    raw = sm2_key.sign(NONCE + DIGEST, user_id=b"u", encoding="raw")
    answer = struct.pack(">I", 3) + b"SM3" + struct.pack(">I", 64) + raw
    assert auth.verify_public_key_answer(data, NONCE, DIGEST, answer, user="u")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_public_key_verifier_never_raises(answer: bytes) -> None:
    data = keys.encode_public_key(Sm2PrivateKey(12345).public_key)
    assert auth.verify_public_key_answer(data, NONCE, DIGEST, answer, user="u") is False
    assert auth.verify_public_key_answer(answer, NONCE, DIGEST, answer, user="u") is False


# ------------------------------------------------------------------ identities


@pytest.mark.parametrize(
    "username", ["300:0.NA/88.100.1", "300%3A0.NA%2F88.100.1", "300%3a0.NA/88.100.1"]
)
def test_parse_basic_user(username: str) -> None:
    assert auth.parse_basic_user(username) == ValueReference("0.NA/88.100.1", 300)


@pytest.mark.parametrize("username", ["", "admin", "x:0.NA/1", "300:", "%ff%fe:0.NA/1"])
def test_parse_basic_user_rejects(username: str) -> None:
    with pytest.raises(AuthenticationError):
        auth.parse_basic_user(username)


def test_answer_challenge_for_both_identity_kinds(rsa_key: rsa.RSAPrivateKey) -> None:
    ref = ValueReference("0.NA/88.100", 300)
    secret_identity = auth.AdminIdentity(ref, secret=SECRET)
    kind, answer = auth.answer_challenge(secret_identity, NONCE, DIGEST)
    assert kind == "HS_SECKEY"
    assert auth.verify_secret_key_answer(SECRET, NONCE, DIGEST, answer)
    assert SECRET.decode() not in repr(secret_identity)

    key_identity = auth.AdminIdentity(ref, private_key=rsa_key)
    kind, answer = auth.answer_challenge(key_identity, NONCE, DIGEST)
    assert kind == "HS_PUBKEY"
    data = keys.encode_public_key(rsa_key.public_key())
    assert auth.verify_public_key_answer(data, NONCE, DIGEST, answer, user=ref.handle)

    with pytest.raises(ValueError, match="exactly one"):
        auth.AdminIdentity(ref)
    with pytest.raises(ValueError, match="exactly one"):
        auth.AdminIdentity(ref, secret=SECRET, private_key=rsa_key)

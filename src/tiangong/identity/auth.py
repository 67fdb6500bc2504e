"""Admin authentication: answers to a 402 challenge and their checks, without I/O.

A server challenges an admin request with a 16-byte nonce and the digest of the request; the
client proves who it is by signing or MAC-ing ``nonce ‖ requestDigest`` with the key of its
identity ``index:handle``. The result is the ``signedResponse`` of the CHALLENGE_RESPONSE (op
200) body, whose shape depends on the key type:

* **HS_SECKEY** — ``byte algorithm; MAC``. The algorithm codes are hdllib's ``HASH_CODE_*``.
  Protocol 2.7 and later use PBKDF2-HMAC-SHA1 (0x22), whose MAC is itself structured::

      str salt (16 random bytes); int iterations (10000); int keyLengthBits (160); str mac

  where ``mac = HMAC-SHA1(PBKDF2-HMAC-SHA1(secret, salt, iterations, keyLength), data)``. The
  verifier takes salt, iterations and length from the answer (bounded, so an answer cannot make
  the server spin). Java's PBKDF2 hashes a password of *chars*; hdllib widens each secret byte
  to one char, which Java then encodes as UTF-8, so bytes ≥ 0x80 become two bytes. We do the
  same, which is what makes non-ASCII secrets interoperate.
  Older forms are kept for verification: HMAC-SHA1 (0x12), HMAC-SHA256 (0x13) and the
  ``digest(key ‖ data ‖ key)`` forms with MD5 (1), SHA-1 (2), SHA-256 (3), and protocol ≤ 2.0's
  bare 16-byte MD5 with no algorithm byte at all ("old format", code 0).
* **HS_PUBKEY** — ``str hashAlgorithm; str signature``: RSA answers ``"SHA-256"`` and a PKCS#1
  v1.5 signature (``"SHA1"``/``"SHA-1"`` are accepted from old clients); SM2 answers ``"SM3"``
  and a DER SM2 signature whose user ID is the admin's handle, as IDIS does (a raw 64-byte
  ``r ‖ s`` is accepted too).

Every comparison of secret-derived bytes is constant-time. Verifiers answer ``False`` for
anything malformed instead of raising, so a server maps every failure to one response code.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tiangong.identity.errors import AuthenticationError, CodecError, HandleSyntaxError
from tiangong.identity.handle.values import HS_PUBKEY, HS_SECKEY, ValueReference
from tiangong.identity.keys import PrivateKeyObject, load_public_key
from tiangong.identity.sm2 import Sm2PrivateKey, Sm2PublicKey

NONCE_SIZE = 16


class SecretKeyAlgorithm(IntEnum):
    """hdllib's hash codes, as the first byte of an HS_SECKEY answer."""

    MD5_OLD_FORMAT = 0x00
    MD5 = 0x01
    SHA1 = 0x02
    SHA256 = 0x03
    HMAC_SHA1 = 0x12
    HMAC_SHA256 = 0x13
    PBKDF2_HMAC_SHA1 = 0x22


PBKDF2_HMAC_SHA1 = SecretKeyAlgorithm.PBKDF2_HMAC_SHA1
HMAC_SHA1 = SecretKeyAlgorithm.HMAC_SHA1
HMAC_SHA256 = SecretKeyAlgorithm.HMAC_SHA256

PBKDF2_SALT_SIZE = 16
PBKDF2_ITERATIONS = 10_000
PBKDF2_KEY_BITS = 160
# What a verifier accepts from an answer: generous for other clients, bounded against abuse.
PBKDF2_MAX_ITERATIONS = 100_000
PBKDF2_MAX_KEY_BITS = 1024

RSA_HASH_NAME = b"SHA-256"
SM2_HASH_NAME = b"SM3"
_RSA_HASHES: dict[bytes, type[hashes.HashAlgorithm]] = {
    b"SHA-256": hashes.SHA256,
    b"SHA256": hashes.SHA256,
    b"SHA1": hashes.SHA1,
    b"SHA-1": hashes.SHA1,
}
_MAX_SIGNATURE = 2048  # bytes: a 16384-bit RSA signature


def new_nonce() -> bytes:
    """A fresh challenge nonce: 16 random bytes."""
    return os.urandom(NONCE_SIZE)


# ------------------------------------------------------------------ HS_SECKEY


def secret_key_answer(
    secret: bytes,
    nonce: bytes,
    request_digest: bytes,
    algorithm: int = PBKDF2_HMAC_SHA1,
) -> bytes:
    """The ``signedResponse`` of an HS_SECKEY answer (``byte algorithm; MAC``).

    ``MD5_OLD_FORMAT`` gives the bare 16-byte digest that protocol 2.0 clients send.
    """
    algorithm = SecretKeyAlgorithm(algorithm)
    data = nonce + request_digest
    if algorithm is SecretKeyAlgorithm.MD5_OLD_FORMAT:
        return _keyed_digest("md5", secret, data)
    if algorithm is SecretKeyAlgorithm.PBKDF2_HMAC_SHA1:
        salt = os.urandom(PBKDF2_SALT_SIZE)
        mac = _pbkdf2_mac(secret, data, salt, PBKDF2_ITERATIONS, PBKDF2_KEY_BITS)
        body = _str(salt) + struct.pack(">II", PBKDF2_ITERATIONS, PBKDF2_KEY_BITS) + _str(mac)
        return bytes([algorithm]) + body
    return bytes([algorithm]) + _simple_mac(algorithm, secret, data)


def verify_secret_key_answer(
    secret: bytes, nonce: bytes, request_digest: bytes, signed_response: bytes
) -> bool:
    """Whether ``signed_response`` is a right HS_SECKEY answer with ``secret``.

    Every algorithm of ``SecretKeyAlgorithm`` is accepted; the 16-byte old format is recognized
    by its length, which no framed answer has.
    """
    data = nonce + request_digest
    if len(signed_response) == 16:
        return hmac.compare_digest(_keyed_digest("md5", secret, data), signed_response)
    if not signed_response:
        return False
    try:
        algorithm = SecretKeyAlgorithm(signed_response[0])
    except ValueError:
        return False
    body = signed_response[1:]
    if algorithm is SecretKeyAlgorithm.PBKDF2_HMAC_SHA1:
        parsed = _parse_pbkdf2(body)
        if parsed is None:
            return False
        salt, iterations, key_bits, mac = parsed
        expected = _pbkdf2_mac(secret, data, salt, iterations, key_bits)
        return hmac.compare_digest(expected, mac)
    if algorithm is SecretKeyAlgorithm.MD5_OLD_FORMAT:
        return False  # the old format has no algorithm byte: 16 bytes, handled above
    return hmac.compare_digest(_simple_mac(algorithm, secret, data), body)


def _simple_mac(algorithm: SecretKeyAlgorithm, secret: bytes, data: bytes) -> bytes:
    if algorithm is SecretKeyAlgorithm.HMAC_SHA1:
        return hmac.new(secret, data, "sha1").digest()
    if algorithm is SecretKeyAlgorithm.HMAC_SHA256:
        return hmac.new(secret, data, "sha256").digest()
    names = {
        SecretKeyAlgorithm.MD5: "md5",
        SecretKeyAlgorithm.SHA1: "sha1",
        SecretKeyAlgorithm.SHA256: "sha256",
    }
    return _keyed_digest(names[algorithm], secret, data)


def _keyed_digest(name: str, secret: bytes, data: bytes) -> bytes:
    # hdllib's pre-HMAC construction, digest(key ‖ data ‖ key); kept only for old peers.
    return hashlib.new(name, secret + data + secret, usedforsecurity=False).digest()


def _java_password(secret: bytes) -> bytes:
    # hdllib: char[] from (byte & 0xFF); Java's PBKDF2 then encodes the chars as UTF-8.
    return secret.decode("latin-1").encode("utf-8")


def _pbkdf2_mac(secret: bytes, data: bytes, salt: bytes, iterations: int, key_bits: int) -> bytes:
    key = hashlib.pbkdf2_hmac("sha1", _java_password(secret), salt, iterations, key_bits // 8)
    return hmac.new(key, data, "sha1").digest()


def _parse_pbkdf2(body: bytes) -> tuple[bytes, int, int, bytes] | None:
    try:
        salt, pos = _read_str(body, 0)
        iterations, key_bits = struct.unpack_from(">II", body, pos)
        mac, pos = _read_str(body, pos + 8)
    except (struct.error, ValueError):
        return None
    if pos != len(body):
        return None
    if not 1 <= iterations <= PBKDF2_MAX_ITERATIONS:
        return None
    if key_bits % 8 or not 8 <= key_bits <= PBKDF2_MAX_KEY_BITS:
        return None
    return salt, iterations, key_bits, mac


# ------------------------------------------------------------------ HS_PUBKEY


def public_key_answer(
    private_key: PrivateKeyObject, nonce: bytes, request_digest: bytes, *, user: str
) -> bytes:
    """The ``signedResponse`` of an HS_PUBKEY answer (``str hashAlgorithm; str signature``).

    ``user`` is the admin's handle: SM2 uses it as the signer's user ID (IDIS); RSA ignores it.
    """
    data = nonce + request_digest
    if isinstance(private_key, Sm2PrivateKey):
        signature = private_key.sign(data, user_id=user.encode("utf-8"))
        return _str(SM2_HASH_NAME) + _str(signature)
    signature = private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return _str(RSA_HASH_NAME) + _str(signature)


def verify_public_key_answer(
    public_key_data: bytes,
    nonce: bytes,
    request_digest: bytes,
    signed_response: bytes,
    *,
    user: str,
) -> bool:
    """Whether ``signed_response`` is a right HS_PUBKEY answer by the key in ``public_key_data``.

    ``public_key_data`` is the HS_PUBKEY value's data. Malformed answers, unusable keys (DSA,
    DH, bad data) and a hash name that does not fit the key all give ``False``.
    """
    try:
        hash_name, pos = _read_str(signed_response, 0)
        signature, pos = _read_str(signed_response, pos)
    except (struct.error, ValueError):
        return False
    if pos != len(signed_response) or len(signature) > _MAX_SIGNATURE:
        return False
    try:
        key = load_public_key(public_key_data)
    except CodecError:
        return False
    data = nonce + request_digest
    if isinstance(key, Sm2PublicKey):
        if hash_name.upper() != SM2_HASH_NAME:
            return False
        user_id = user.encode("utf-8")
        if key.verify(signature, data, user_id=user_id, encoding="der"):
            return True
        return len(signature) == 64 and key.verify(signature, data, user_id=user_id, encoding="raw")
    hash_type = _RSA_HASHES.get(hash_name.upper())
    if hash_type is None:
        return False
    return _rsa_verify(key, signature, data, hash_type())


def _rsa_verify(
    key: rsa.RSAPublicKey, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm
) -> bool:
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------ identities


def parse_basic_user(username: str) -> ValueReference:
    """The admin identity named by an HTTP Basic username: ``300:0.NA/88.100.1``.

    pyhandle percent-encodes it (``300%3A0.NA%2F88.100.1``); both forms are accepted. A bad
    name raises ``AuthenticationError`` (the REST layer answers 401).
    """
    try:
        text = unquote(username, errors="strict") if "%" in username else username
        return ValueReference.parse(text)
    except (HandleSyntaxError, UnicodeDecodeError) as exc:
        raise AuthenticationError(f"{username!r} is not an admin identity index:handle") from exc


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    """Who an admin client is: the value reference of its key and the key itself.

    Exactly one of ``secret`` (for an HS_SECKEY at ``reference``) and ``private_key`` (for an
    HS_PUBKEY there) is set.
    """

    reference: ValueReference
    secret: bytes | None = None
    private_key: PrivateKeyObject | None = None

    def __post_init__(self) -> None:
        if (self.secret is None) == (self.private_key is None):
            raise ValueError("an AdminIdentity has exactly one of secret and private_key")

    def __repr__(self) -> str:
        # Never print a secret into a log.
        kind = HS_SECKEY if self.secret is not None else HS_PUBKEY
        return f"AdminIdentity({self.reference}, {kind})"

    @property
    def auth_type(self) -> str:
        """``HS_SECKEY`` or ``HS_PUBKEY``: the type of the value the identity proves itself with."""
        return HS_SECKEY if self.secret is not None else HS_PUBKEY


def answer_challenge(
    identity: AdminIdentity,
    nonce: bytes,
    request_digest: bytes,
    *,
    secret_algorithm: int = PBKDF2_HMAC_SHA1,
) -> tuple[str, bytes]:
    """``(auth_type, signed_response)`` answering a challenge as ``identity``.

    ``secret_algorithm`` lets a client talking to a pre-2.7 server use HMAC-SHA1 instead.
    """
    if identity.secret is not None:
        answer = secret_key_answer(identity.secret, nonce, request_digest, secret_algorithm)
        return HS_SECKEY, answer
    assert identity.private_key is not None  # __post_init__ guarantees one of the two
    answer = public_key_answer(
        identity.private_key, nonce, request_digest, user=identity.reference.handle
    )
    return HS_PUBKEY, answer


def _str(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_str(data: bytes, pos: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", data, pos)
    end = pos + 4 + length
    if end > len(data):
        raise ValueError("truncated string")
    return data[pos + 4 : end], end

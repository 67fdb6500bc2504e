"""SM2 signatures and the SM3 hash (China's national cryptography, 国密), typed.

Strategy: SM3 comes from ``cryptography`` (OpenSSL's implementation, maintained and fast); the
SM2 curve arithmetic comes from ``gmssl`` (pure Python, untyped), which this module isolates so
that nothing else imports it. Everything around the arithmetic is done here, because gmssl
leaves it to its caller or gets it wrong:

* the per-signature nonce ``k`` is drawn from ``secrets`` (gmssl's own default uses ``random``,
  which is not a cryptographic generator, and a predictable ``k`` reveals the private key);
* public keys are checked to lie on the curve before use (gmssl does no point validation);
* the public key is set on gmssl's object directly (its constructor strips *every* leading
  ``0``/``4`` hex digit, not just the ``04`` point prefix, corrupting some keys);
* ``r`` and ``s`` are range-checked before verifying;
* ``Z_A`` (GB/T 32918.2 §5.5) is computed here so that any user ID works: the default
  ``1234567812345678`` (GM/T 0009) or, as IDIS does for challenge answers, the identifier string.

Signatures are DER ``SEQUENCE { INTEGER r, INTEGER s }`` (GM/T 0009, what BouncyCastle's
``SM3withSM2`` produces) or the raw 64-byte ``r ‖ s`` (the JWS convention for EC signatures).

Keys are stored as PKCS#8 / X.509 SubjectPublicKeyInfo with the ``id-ecPublicKey`` algorithm and
the ``sm2p256v1`` curve (OID 1.2.156.10197.1.301), as OpenSSL 3 and GmSSL write them.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import hashes

# The untyped library stays behind this one import (see the module docstring).
from gmssl import sm2 as _gmssl_sm2  # type: ignore[import-untyped]

SignatureEncoding = Literal["der", "raw"]

DEFAULT_USER_ID = b"1234567812345678"
"""The user ID GM/T 0009 prescribes when the parties agree on no other."""

# sm2p256v1, GB/T 32918.5 (the recommended curve).
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

_COORD = 32
_MAX_USER_ID_BYTES = 8191  # ENTL_A is a 16-bit count of *bits*

# DER templates: id-ecPublicKey + sm2p256v1, exactly as OpenSSL writes them.
_OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")
_OID_SM2P256V1 = bytes.fromhex("06082a811ccf5501822d")
_ALGORITHM_ID = b"\x30" + bytes([len(_OID_EC_PUBLIC_KEY) + len(_OID_SM2P256V1)])
_ALGORITHM_ID += _OID_EC_PUBLIC_KEY + _OID_SM2P256V1


class Sm2Error(ValueError):
    """An SM2 key or encoding that is not valid (off the curve, out of range, bad DER)."""


def sm3(data: bytes) -> bytes:
    """The SM3 digest (GB/T 32905) of ``data``: 32 bytes."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _on_curve(x: int, y: int) -> bool:
    if not (0 <= x < P and 0 <= y < P):
        return False
    return (y * y - (x * x * x + A * x + B)) % P == 0


@dataclass(frozen=True, slots=True)
class Sm2PublicKey:
    """A point on sm2p256v1, validated on construction."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not _on_curve(self.x, self.y):
            raise Sm2Error("the point is not on the SM2 curve")

    @classmethod
    def from_bytes(cls, data: bytes) -> Sm2PublicKey:
        """Decode the uncompressed point ``04 ‖ x ‖ y`` (65 bytes) or bare ``x ‖ y`` (64)."""
        if len(data) == 1 + 2 * _COORD and data[0] == 0x04:
            data = data[1:]
        if len(data) != 2 * _COORD:
            raise Sm2Error(f"an SM2 public key is 64 or 65 bytes, not {len(data)}")
        return cls(int.from_bytes(data[:_COORD], "big"), int.from_bytes(data[_COORD:], "big"))

    def to_bytes(self) -> bytes:
        """The uncompressed point ``04 ‖ x ‖ y`` (65 bytes)."""
        return b"\x04" + self.x.to_bytes(_COORD, "big") + self.y.to_bytes(_COORD, "big")

    def to_der(self) -> bytes:
        """The X.509 SubjectPublicKeyInfo DER."""
        bit_string = _der(0x03, b"\x00" + self.to_bytes())
        return _der(0x30, _ALGORITHM_ID + bit_string)

    def to_pem(self) -> str:
        """The SubjectPublicKeyInfo as PEM text (``-----BEGIN PUBLIC KEY-----``)."""
        return _pem("PUBLIC KEY", self.to_der())

    @classmethod
    def from_der(cls, der: bytes) -> Sm2PublicKey:
        """Decode an SM2 SubjectPublicKeyInfo (raises ``Sm2Error`` on anything else)."""
        spki, rest = _read_tlv(der, 0x30)
        if rest:
            raise Sm2Error("trailing bytes after the SubjectPublicKeyInfo")
        algorithm, rest = _read_tlv(spki, 0x30)
        _check_algorithm(algorithm)
        bits, rest = _read_tlv(rest, 0x03)
        if rest or not bits or bits[0] != 0:
            raise Sm2Error("malformed public key BIT STRING")
        return cls.from_bytes(bits[1:])

    @classmethod
    def from_pem(cls, text: str | bytes) -> Sm2PublicKey:
        """Decode PEM ``PUBLIC KEY`` text."""
        return cls.from_der(_unpem(text, "PUBLIC KEY"))

    def z_value(self, user_id: bytes = DEFAULT_USER_ID) -> bytes:
        """``Z_A = SM3(ENTL_A ‖ ID_A ‖ a ‖ b ‖ x_G ‖ y_G ‖ x_A ‖ y_A)`` (GB/T 32918.2 §5.5)."""
        if len(user_id) > _MAX_USER_ID_BYTES:
            raise Sm2Error("the SM2 user ID is longer than 8191 bytes")
        parts = [(len(user_id) * 8).to_bytes(2, "big"), user_id]
        parts += [v.to_bytes(_COORD, "big") for v in (A, B, GX, GY, self.x, self.y)]
        return sm3(b"".join(parts))

    def verify(
        self,
        signature: bytes,
        message: bytes,
        *,
        user_id: bytes = DEFAULT_USER_ID,
        encoding: SignatureEncoding = "der",
    ) -> bool:
        """Whether ``signature`` is this key's SM2 signature of ``message`` (SM3, ``user_id``)."""
        try:
            r, s = decode_signature(signature, encoding)
        except Sm2Error:
            return False
        if not (1 <= r < N and 1 <= s < N):
            return False
        e = sm3(self.z_value(user_id) + message)
        return _gm_verify(self, r, s, e)


@dataclass(frozen=True, slots=True)
class Sm2PrivateKey:
    """An SM2 private scalar ``d`` in ``[1, n-2]`` and its public point."""

    d: int = field(repr=False)
    public_key: Sm2PublicKey = field(init=False, repr=True)

    def __post_init__(self) -> None:
        if not 1 <= self.d <= N - 2:
            raise Sm2Error("the SM2 private key is out of range")
        x, y = _gm_multiply_base(self.d)
        object.__setattr__(self, "public_key", Sm2PublicKey(x, y))

    @classmethod
    def generate(cls) -> Sm2PrivateKey:
        """A new random key (from ``secrets``)."""
        return cls(secrets.randbelow(N - 2) + 1)

    def to_bytes(self) -> bytes:
        """The private scalar as 32 big-endian bytes."""
        return self.d.to_bytes(_COORD, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Sm2PrivateKey:
        """Decode a 32-byte big-endian private scalar."""
        if len(data) != _COORD:
            raise Sm2Error(f"an SM2 private key is 32 bytes, not {len(data)}")
        return cls(int.from_bytes(data, "big"))

    def to_der(self) -> bytes:
        """Unencrypted PKCS#8 ``PrivateKeyInfo`` holding an RFC 5915 ``ECPrivateKey``."""
        ec_private_key = _der(
            0x30,
            _der(0x02, b"\x01")
            + _der(0x04, self.to_bytes())
            + _der(0xA1, _der(0x03, b"\x00" + self.public_key.to_bytes())),
        )
        return _der(0x30, _der(0x02, b"\x00") + _ALGORITHM_ID + _der(0x04, ec_private_key))

    def to_pem(self) -> str:
        """PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``), readable by OpenSSL 3 and GmSSL."""
        return _pem("PRIVATE KEY", self.to_der())

    @classmethod
    def from_der(cls, der: bytes) -> Sm2PrivateKey:
        """Decode an unencrypted PKCS#8 SM2 key (raises ``Sm2Error`` on anything else)."""
        info, rest = _read_tlv(der, 0x30)
        if rest:
            raise Sm2Error("trailing bytes after the PrivateKeyInfo")
        version, rest = _read_tlv(info, 0x02)
        if version != b"\x00":
            raise Sm2Error("unsupported PKCS#8 version")
        algorithm, rest = _read_tlv(rest, 0x30)
        _check_algorithm(algorithm)
        octets, _attributes = _read_tlv(rest, 0x04)
        ec_key, rest = _read_tlv(octets, 0x30)
        if rest:
            raise Sm2Error("trailing bytes after the ECPrivateKey")
        ec_version, rest = _read_tlv(ec_key, 0x02)
        if ec_version != b"\x01":
            raise Sm2Error("unsupported ECPrivateKey version")
        scalar, rest = _read_tlv(rest, 0x04)
        key = cls.from_bytes(scalar)
        # Optional [0] parameters and [1] public key: when present they must agree.
        while rest:
            tag = rest[0]
            content, rest = _read_tlv(rest, tag)
            if tag == 0xA1:
                bits, tail = _read_tlv(content, 0x03)
                if tail or bits[:1] != b"\x00":
                    raise Sm2Error("malformed ECPrivateKey public key")
                if Sm2PublicKey.from_bytes(bits[1:]) != key.public_key:
                    raise Sm2Error("the ECPrivateKey public key does not match its private key")
            elif tag == 0xA0:
                if content != _OID_SM2P256V1:
                    raise Sm2Error("the ECPrivateKey is not on sm2p256v1")
            else:
                raise Sm2Error(f"unexpected ECPrivateKey field tag {tag:#x}")
        return key

    @classmethod
    def from_pem(cls, text: str | bytes) -> Sm2PrivateKey:
        """Decode PEM ``PRIVATE KEY`` text."""
        return cls.from_der(_unpem(text, "PRIVATE KEY"))

    def sign(
        self,
        message: bytes,
        *,
        user_id: bytes = DEFAULT_USER_ID,
        encoding: SignatureEncoding = "der",
    ) -> bytes:
        """The SM2 signature of ``message`` with the SM3 digest and ``user_id``."""
        e = sm3(self.public_key.z_value(user_id) + message)
        while True:
            # A draw that gives r = 0, r + k = n or s = 0 is redrawn (GB/T 32918.2 §6.1).
            k = secrets.randbelow(N - 1) + 1
            rs = _gm_sign(self, e, k)
            if rs is not None:
                return encode_signature(*rs, encoding=encoding)


def encode_signature(r: int, s: int, *, encoding: SignatureEncoding = "der") -> bytes:
    """``(r, s)`` as DER ``SEQUENCE { r, s }`` or raw 64-byte ``r ‖ s``."""
    if encoding == "raw":
        return r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")
    return _der(0x30, _der_integer(r) + _der_integer(s))


def decode_signature(data: bytes, encoding: SignatureEncoding = "der") -> tuple[int, int]:
    """Parse a signature in ``encoding``; raises ``Sm2Error`` when it is malformed."""
    if encoding == "raw":
        if len(data) != 2 * _COORD:
            raise Sm2Error("a raw SM2 signature is 64 bytes")
        return int.from_bytes(data[:_COORD], "big"), int.from_bytes(data[_COORD:], "big")
    body, rest = _read_tlv(data, 0x30)
    if rest:
        raise Sm2Error("trailing bytes after the signature")
    r_bytes, body = _read_tlv(body, 0x02)
    s_bytes, body = _read_tlv(body, 0x02)
    if body:
        raise Sm2Error("extra fields in the signature")
    return _parse_der_integer(r_bytes), _parse_der_integer(s_bytes)


# ------------------------------------------------------------------ gmssl boundary


def _gm(private: int | None, public: Sm2PublicKey | None) -> _gmssl_sm2.CryptSM2:
    crypt = _gmssl_sm2.CryptSM2(
        private_key="" if private is None else f"{private:064x}", public_key=""
    )
    if public is not None:
        # Set directly: the constructor's lstrip("04") would mangle some keys.
        crypt.public_key = f"{public.x:064x}{public.y:064x}"
    return crypt


def _gm_multiply_base(d: int) -> tuple[int, int]:
    point = _gm(None, None)._kg(d, _gmssl_sm2.default_ecc_table["g"])
    if not isinstance(point, str) or len(point) != 4 * _COORD:
        raise Sm2Error("SM2 scalar multiplication failed")
    return int(point[: 2 * _COORD], 16), int(point[2 * _COORD :], 16)


def _gm_sign(key: Sm2PrivateKey, e: bytes, k: int) -> tuple[int, int] | None:
    result = _gm(key.d, key.public_key).sign(e, f"{k:064x}")
    if not isinstance(result, str):
        return None
    return decode_signature(bytes.fromhex(result), "raw")


def _gm_verify(key: Sm2PublicKey, r: int, s: int, e: bytes) -> bool:
    try:
        return bool(_gm(None, key).verify(f"{r:064x}{s:064x}", e))
    except (ValueError, TypeError, IndexError, ZeroDivisionError):
        # gmssl trips over the point at infinity instead of reporting a bad signature.
        return False


# ------------------------------------------------------------------ minimal DER


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # keeps a sign byte when needed
    return _der(0x02, raw)


def _parse_der_integer(raw: bytes) -> int:
    if not raw:
        raise Sm2Error("empty DER INTEGER")
    if raw[0] & 0x80:
        raise Sm2Error("negative DER INTEGER")
    if len(raw) > 1 and raw[0] == 0 and not raw[1] & 0x80:
        raise Sm2Error("non-minimal DER INTEGER")
    return int.from_bytes(raw, "big")


def _read_tlv(data: bytes, tag: int) -> tuple[bytes, bytes]:
    """``(content, rest)`` of one DER element with ``tag`` at the start of ``data``."""
    if len(data) < 2 or data[0] != tag:
        raise Sm2Error(f"expected DER tag {tag:#x}")
    first = data[1]
    pos = 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < pos + count:
            raise Sm2Error("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise Sm2Error("non-minimal DER length")
        pos += count
    if len(data) < pos + length:
        raise Sm2Error("truncated DER element")
    return data[pos : pos + length], data[pos + length :]


def _check_algorithm(algorithm: bytes) -> None:
    if algorithm != _OID_EC_PUBLIC_KEY + _OID_SM2P256V1:
        raise Sm2Error("not an SM2 (id-ecPublicKey, sm2p256v1) key")


def _pem(label: str, der: bytes) -> str:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def _unpem(text: str | bytes, label: str) -> bytes:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise Sm2Error("PEM text is not ASCII") from exc
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start = text.find(begin)
    stop = text.find(end, start + len(begin))
    if start < 0 or stop < 0:
        raise Sm2Error(f"no PEM {label} block")
    body = "".join(text[start + len(begin) : stop].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Sm2Error("bad base64 in PEM") from exc

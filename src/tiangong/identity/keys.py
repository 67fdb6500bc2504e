"""Admin keys: HS_PUBKEY value data, key objects, JWK, PEM files and HS_SECKEY data.

Three forms of one public key meet here:

* **HS_PUBKEY data** (the bytes of the value, §1.11 of the protocol notes)::

      str keyType; int2 flags; <fields as str, in wire order>

  ``RSA_PUB_KEY``: ``str exponent; str modulus`` and then four zero bytes (CNRI's encoder
  allocates room for one more length it never writes; we write them too, so our data is
  byte-identical to hdllib's, and accept their absence on input). Integers are written the way
  Java's ``BigInteger.toByteArray`` writes them (two's complement, so a leading zero byte when
  the top bit is set). ``DSA_PUB_KEY`` (``q p g y``) and ``DH_PUB_KEY`` (``y p g``) decode to
  ``PublicKey`` but cannot be used to verify anything here. IDIS's ``SM2_PUB_KEY`` carries one
  field, the PEM text of an X.509 SubjectPublicKeyInfo on sm2p256v1.
* **``values.PublicKey``** — the data decoded but not interpreted (``decode_public_key``).
* **key objects** — ``cryptography``'s ``RSAPublicKey`` or our ``Sm2PublicKey``
  (``load_public_key``), which is what verifies signatures.

The REST JSON ``"format": "key"`` form is a JWK: ``{"kty": "RSA", "n", "e"}``,
``{"kty": "DSA", "q", "p", "g", "y"}`` (CNRI's GsonUtility) and, for SM2, the RFC 7518 EC shape
with a curve name ``{"kty": "EC", "crv": "SM2", "x", "y"}`` (``x``/``y`` 32 bytes each).
``{"kty": "SM2", "x", "y"}`` is accepted on input too. Integers are unsigned big-endian in
unpadded base64url.

HS_SECKEY data is the secret itself (the bytes the admin types as a password). hdllib can also
*hash* a password before using it: the key is then the lower-case hex of SHA-1(password), and
the HS_SECKEY value stores that hex text (``hashed_secret_key``). Either way the server sees only
the bytes in the value; nothing marks which form was used.

Private keys on disk: RSA as PKCS#8 PEM (optionally encrypted with a passphrase); SM2 as
unencrypted PKCS#8 PEM on sm2p256v1 (what OpenSSL 3 and GmSSL write), or a 64-character hex
private scalar (what gmssl users keep) on input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tiangong.identity.errors import CodecError
from tiangong.identity.handle.values import PublicKey
from tiangong.identity.sm2 import Sm2Error, Sm2PrivateKey, Sm2PublicKey

RSA_PUB_KEY = "RSA_PUB_KEY"
DSA_PUB_KEY = "DSA_PUB_KEY"
DH_PUB_KEY = "DH_PUB_KEY"
SM2_PUB_KEY = "SM2_PUB_KEY"

PublicKeyObject = rsa.RSAPublicKey | Sm2PublicKey
PrivateKeyObject = rsa.RSAPrivateKey | Sm2PrivateKey

_FIELD_COUNTS = {RSA_PUB_KEY: 2, DSA_PUB_KEY: 4, DH_PUB_KEY: 3, SM2_PUB_KEY: 1}
_CNRI_TRAILER = b"\x00\x00\x00\x00"
_MAX_FIELD = 64 * 1024  # far above any real key; bounds what a hostile value can make us copy
_MIN_RSA_BITS = 1024
_MAX_RSA_BITS = 16384
_INVALID_VALUE = 202  # protocol response code INVALID_VALUE: a value whose data is malformed


# ------------------------------------------------------------------ HS_PUBKEY data


def encode_public_key(key: PublicKeyObject | PublicKey) -> bytes:
    """The HS_PUBKEY value data of an RSA or SM2 public key (or of a decoded ``PublicKey``)."""
    if isinstance(key, PublicKey):
        return _encode_fields(key)
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        fields = (_java_bigint(numbers.e), _java_bigint(numbers.n))
        return _encode_fields(PublicKey(RSA_PUB_KEY, fields))
    if isinstance(key, Sm2PublicKey):
        return _encode_fields(PublicKey(SM2_PUB_KEY, (key.to_pem().encode("ascii"),)))
    raise TypeError(f"cannot encode a {type(key).__name__} as HS_PUBKEY data")


def decode_public_key(data: bytes) -> PublicKey:
    """Decode HS_PUBKEY value data into its type, flags and fields; ``CodecError`` if malformed."""
    reader = _Reader(data)
    try:
        key_type = reader.string().decode("ascii")
    except UnicodeDecodeError as exc:
        raise CodecError("HS_PUBKEY key type is not ASCII", _INVALID_VALUE) from exc
    count = _FIELD_COUNTS.get(key_type)
    if count is None:
        raise CodecError(f"unknown HS_PUBKEY key type {key_type!r}", _INVALID_VALUE)
    flags = reader.int2()
    fields = tuple(reader.string() for _ in range(count))
    rest = reader.rest()
    if rest not in (b"", _CNRI_TRAILER):
        raise CodecError(f"{len(rest)} unexpected bytes after the HS_PUBKEY fields", _INVALID_VALUE)
    return PublicKey(key_type=key_type, fields=fields, flags=flags)


def load_public_key(data: bytes | PublicKey) -> PublicKeyObject:
    """The usable key object of HS_PUBKEY data; ``CodecError`` if malformed or unsupported."""
    key = data if isinstance(data, PublicKey) else decode_public_key(data)
    if key.key_type == RSA_PUB_KEY:
        exponent, modulus = (int.from_bytes(f, "big") for f in key.fields)
        if not _MIN_RSA_BITS <= modulus.bit_length() <= _MAX_RSA_BITS:
            raise CodecError(f"RSA modulus of {modulus.bit_length()} bits", _INVALID_VALUE)
        try:
            return rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError as exc:
            raise CodecError(f"invalid RSA public key: {exc}", _INVALID_VALUE) from exc
    if key.key_type == SM2_PUB_KEY:
        try:
            return Sm2PublicKey.from_pem(key.fields[0])
        except Sm2Error as exc:
            raise CodecError(f"invalid SM2 public key: {exc}", _INVALID_VALUE) from exc
    raise CodecError(f"{key.key_type} keys are not supported for signatures", _INVALID_VALUE)


def public_key_of(private_key: PrivateKeyObject) -> PublicKeyObject:
    """The public half of a private key."""
    if isinstance(private_key, Sm2PrivateKey):
        return private_key.public_key
    return private_key.public_key()


def same_public_key(a: bytes, b: bytes) -> bool:
    """Whether two HS_PUBKEY data hold the same key, whatever their incidental encoding.

    Flags, the CNRI trailer, a sign byte on an RSA integer or the line breaks of SM2 PEM text
    differ between writers; the key numbers do not. Malformed data equals nothing.
    """
    try:
        return _key_identity(load_public_key(a)) == _key_identity(load_public_key(b))
    except CodecError:
        return False


def _key_identity(key: PublicKeyObject) -> tuple[str, int, int]:
    if isinstance(key, Sm2PublicKey):
        return ("SM2", key.x, key.y)
    numbers = key.public_numbers()
    return ("RSA", numbers.n, numbers.e)


# ------------------------------------------------------------------ JWK


def public_key_to_jwk(data: bytes) -> dict[str, object]:
    """The JWK of HS_PUBKEY data (RSA, DSA or SM2); ``CodecError`` for other or bad data."""
    key = decode_public_key(data)
    if key.key_type == RSA_PUB_KEY:
        exponent, modulus = key.fields
        return {"kty": "RSA", "n": _b64_uint(modulus), "e": _b64_uint(exponent)}
    if key.key_type == DSA_PUB_KEY:
        q, p, g, y = key.fields
        return {
            "kty": "DSA",
            "q": _b64_uint(q),
            "p": _b64_uint(p),
            "g": _b64_uint(g),
            "y": _b64_uint(y),
        }
    if key.key_type == SM2_PUB_KEY:
        sm2_key = load_public_key(key)
        assert isinstance(sm2_key, Sm2PublicKey)
        point = sm2_key.to_bytes()
        return {"kty": "EC", "crv": "SM2", "x": _b64url(point[1:33]), "y": _b64url(point[33:])}
    raise CodecError(f"no JWK form for {key.key_type}", _INVALID_VALUE)


def public_key_from_jwk(jwk: Mapping[str, object]) -> bytes:
    """HS_PUBKEY data from a JWK (the shapes of ``public_key_to_jwk``); ``CodecError`` if bad."""
    kty = jwk.get("kty")
    if kty == "RSA":
        n, e = (_jwk_uint(jwk, name) for name in ("n", "e"))
        fields = (_java_bigint(e), _java_bigint(n))
        data = _encode_fields(PublicKey(RSA_PUB_KEY, fields))
        load_public_key(data)  # refuse what could never verify
        return data
    if kty == "DSA":
        q, p, g, y = (_java_bigint(_jwk_uint(jwk, name)) for name in ("q", "p", "g", "y"))
        return _encode_fields(PublicKey(DSA_PUB_KEY, (q, p, g, y)))
    if kty == "SM2" or (kty == "EC" and jwk.get("crv") == "SM2"):
        x, y = (_jwk_bytes(jwk, name) for name in ("x", "y"))
        if len(x) != 32 or len(y) != 32:
            raise CodecError("SM2 JWK x and y must be 32 bytes each", _INVALID_VALUE)
        try:
            return encode_public_key(Sm2PublicKey.from_bytes(x + y))
        except Sm2Error as exc:
            raise CodecError(f"invalid SM2 JWK: {exc}", _INVALID_VALUE) from exc
    raise CodecError(f"unsupported JWK kty {kty!r} (crv {jwk.get('crv')!r})", _INVALID_VALUE)


# ------------------------------------------------------------------ private keys


def generate_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A new RSA key with public exponent 65537."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def generate_sm2_key() -> Sm2PrivateKey:
    """A new SM2 key on sm2p256v1."""
    return Sm2PrivateKey.generate()


def private_key_to_pem(key: PrivateKeyObject, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of a private key; RSA keys may be encrypted, SM2 keys are written in clear.

    SM2 encryption would need PBES2 with SM4, which neither ``cryptography`` nor gmssl writes
    interoperably; protect an SM2 key file with file permissions instead.
    """
    if isinstance(key, Sm2PrivateKey):
        if passphrase is not None:
            raise ValueError("SM2 private keys are written unencrypted (see the docstring)")
        return key.to_pem().encode("ascii")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(data: bytes, passphrase: bytes | None = None) -> PrivateKeyObject:
    """Load an RSA (PKCS#8 or PKCS#1 PEM) or SM2 (PKCS#8 PEM or 64 hex digits) private key.

    Raises ``ValueError`` when the data is neither.
    """
    text = data.strip()
    if len(text) == 64 and all(c in b"0123456789abcdefABCDEF" for c in text):
        try:
            return Sm2PrivateKey.from_bytes(bytes.fromhex(text.decode("ascii")))
        except Sm2Error as exc:
            raise ValueError(f"invalid SM2 private key: {exc}") from exc
    try:
        return Sm2PrivateKey.from_pem(text)
    except Sm2Error:
        pass  # not an SM2 key: try the formats cryptography reads
    try:
        key = serialization.load_pem_private_key(text, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not an RSA or SM2 private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        # The file's contents, not the caller's argument, have the wrong type: a ValueError.
        raise ValueError(f"unsupported private key type {type(key).__name__}")  # noqa: TRY004
    return key


# ------------------------------------------------------------------ HS_SECKEY data


def encode_secret_key(secret: str | bytes) -> bytes:
    """HS_SECKEY value data of a secret: its UTF-8 bytes, unchanged."""
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def hashed_secret_key(password: str | bytes) -> bytes:
    """The hashed form hdllib makes of a password: the lower-case hex of SHA-1(password), as bytes.

    An admin whose HS_SECKEY holds this uses it (not the password) as the secret key.
    """
    raw = password.encode("utf-8") if isinstance(password, str) else password
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest().encode("ascii")


# ------------------------------------------------------------------ helpers


class _Reader:
    """Bounds-checked reader of the Handle binary primitives."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise CodecError("HS_PUBKEY data is truncated", _INVALID_VALUE)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def int2(self) -> int:
        value: int = struct.unpack(">H", self._take(2))[0]
        return value

    def string(self) -> bytes:
        (length,) = struct.unpack(">I", self._take(4))
        if length > _MAX_FIELD:
            raise CodecError(f"HS_PUBKEY field of {length} bytes", _INVALID_VALUE)
        return self._take(length)

    def rest(self) -> bytes:
        return self._data[self._pos :]


def _encode_fields(key: PublicKey) -> bytes:
    parts = [_str(key.key_type.encode("ascii")), struct.pack(">H", key.flags & 0xFFFF)]
    parts += [_str(f) for f in key.fields]
    if key.key_type == RSA_PUB_KEY:
        parts.append(_CNRI_TRAILER)
    return b"".join(parts)


def _str(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _java_bigint(value: int) -> bytes:
    """``BigInteger.toByteArray`` of a non-negative integer (sign byte when the top bit is set)."""
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_uint(field: bytes) -> str:
    return _b64url(field.lstrip(b"\x00") or b"\x00")


def _jwk_bytes(jwk: Mapping[str, object], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise CodecError(f"JWK member {name!r} is missing or not a string", _INVALID_VALUE)
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CodecError(f"JWK member {name!r} is not base64url", _INVALID_VALUE) from exc
    if _b64url(decoded) != value.rstrip("="):
        raise CodecError(f"JWK member {name!r} is not canonical base64url", _INVALID_VALUE)
    return decoded


def _jwk_uint(jwk: Mapping[str, object], name: str) -> int:
    return int.from_bytes(_jwk_bytes(jwk, name), "big")

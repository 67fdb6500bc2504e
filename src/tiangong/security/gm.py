"""China's national cryptography (国密) for the whole platform: SM3, SM4 and SM2 with SM3.

One place to import the commercial cryptography algorithms from:

* **SM3** (GB/T 32905) digests and HMAC-SM3, from ``cryptography`` (OpenSSL's implementation).
* **SM4** (GB/T 32907) block cipher, from ``cryptography`` (OpenSSL's ``SM4``), used here only in
  **GCM** mode (GB/T 36624 lists SM4-GCM among the authenticated modes; RFC 8998 uses it in
  TLS): confidentiality *and* tamper detection in one primitive, no separate MAC to get wrong.
  ``seal``/``open_sealed`` write ``version ‖ nonce ‖ ciphertext ‖ tag``, with a fresh random
  96-bit nonce per message (a nonce is never reused with one key unless ~2^32 messages are
  sealed under it; rotate keys long before that) and optional associated data that is
  authenticated but not encrypted (what the ciphertext belongs to, so it cannot be moved).
* **SM2** (GB/T 32918) signatures with SM3: ``tiangong.identity.sm2`` is the implementation
  (it isolates the untyped ``gmssl`` and fixes what it leaves to callers); this module
  re-exports it so that reports, the identifier system and anything else use the same code.

No I/O here; keys are bytes, and where they are kept is the caller's concern.
"""

from __future__ import annotations

import hmac as _hmac
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tiangong.identity.sm2 import (
    DEFAULT_USER_ID,
    Sm2Error,
    Sm2PrivateKey,
    Sm2PublicKey,
    sm3,
)
from tiangong.security.errors import SecurityError

__all__ = [
    "DEFAULT_USER_ID",
    "SM4_KEY_BYTES",
    "SealError",
    "Sm2Error",
    "Sm2PrivateKey",
    "Sm2PublicKey",
    "generate_sm4_key",
    "hmac_sm3",
    "hmac_sm3_verify",
    "is_sealed",
    "open_sealed",
    "seal",
    "sm3",
    "sm4_encrypt_block",
]

#: SM4 keys and blocks are 128 bits.
SM4_KEY_BYTES: Final = 16
SM4_BLOCK_BYTES: Final = 16
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
#: First byte of a sealed message: the format (SM4-GCM, 96-bit nonce, 128-bit tag).
_FORMAT_SM4_GCM: Final = b"\x01"
_OVERHEAD: Final = 1 + _NONCE_BYTES + _TAG_BYTES


class SealError(SecurityError):
    """A sealed message that cannot be opened: wrong key, tampered, truncated or unknown format."""


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC-SM3 of ``data`` (32 bytes)."""
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def hmac_sm3_verify(key: bytes, data: bytes, tag: bytes) -> bool:
    """Whether ``tag`` is the HMAC-SM3 of ``data`` (constant-time comparison)."""
    return _hmac.compare_digest(hmac_sm3(key, data), tag)


def generate_sm4_key() -> bytes:
    """A new random SM4 key (16 bytes from the OS's generator)."""
    return os.urandom(SM4_KEY_BYTES)


def _check_key(key: bytes) -> None:
    if len(key) != SM4_KEY_BYTES:
        raise SealError(f"an SM4 key is {SM4_KEY_BYTES} bytes, not {len(key)}")


def sm4_encrypt_block(key: bytes, block: bytes) -> bytes:
    """The raw SM4 encryption of one 16-byte block (for known-answer tests, not for data)."""
    _check_key(key)
    if len(block) != SM4_BLOCK_BYTES:
        raise SealError("an SM4 block is 16 bytes")
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()  # noqa: S305 - one block
    return encryptor.update(block) + encryptor.finalize()


def seal(key: bytes, plaintext: bytes, *, associated_data: bytes = b"") -> bytes:
    """Encrypt and authenticate ``plaintext`` with SM4-GCM under ``key``.

    Args:
        key: a 16-byte SM4 key.
        plaintext: what to protect.
        associated_data: authenticated, not encrypted, not stored: what the message is bound
            to (its name, destination); ``open_sealed`` must be given the same.

    Returns:
        ``0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)``.
    """
    _check_key(key)
    nonce = os.urandom(_NONCE_BYTES)
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    if associated_data:
        encryptor.authenticate_additional_data(associated_data)
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return _FORMAT_SM4_GCM + nonce + ciphertext + encryptor.tag


def open_sealed(key: bytes, sealed: bytes, *, associated_data: bytes = b"") -> bytes:
    """Decrypt a message written by ``seal``, checking that nothing was changed.

    Raises:
        SealError: the key is wrong, the message (or its associated data) was altered or cut,
            or it is not in a known format.
    """
    _check_key(key)
    if len(sealed) < _OVERHEAD or sealed[:1] != _FORMAT_SM4_GCM:
        raise SealError("not an SM4-GCM sealed message (too short or unknown format)")
    nonce = sealed[1 : 1 + _NONCE_BYTES]
    tag = sealed[-_TAG_BYTES:]
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
    if associated_data:
        decryptor.authenticate_additional_data(associated_data)
    try:
        return decryptor.update(sealed[1 + _NONCE_BYTES : -_TAG_BYTES]) + decryptor.finalize()
    except InvalidTag:
        raise SealError("the sealed message was altered or the key is wrong") from None


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` looks like a sealed message (its format byte; not a proof)."""
    return len(data) >= _OVERHEAD and data[:1] == _FORMAT_SM4_GCM

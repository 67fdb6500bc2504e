"""Generated secrets and how they are kept.

Device secrets and API tokens are 256-bit random values generated here and shown once. Only
hashes are stored.

- **Device secrets** are hashed in Mosquitto's own password-file format
  (``$7$<iterations>$<salt>$<PBKDF2-HMAC-SHA512>``), so the same stored hash authenticates a
  device on the embedded broker and can be written to a Mosquitto ``password_file`` unchanged.
  A slow hash protects *guessable* passwords; these secrets are 256 random bits, which no
  amount of hashing makes easier or harder to guess, so the iteration count stays low
  (Mosquitto's default) to keep a reconnect storm of thousands of devices cheap.
- **API tokens** are ``tg_`` plus 43 URL-safe characters and are stored as SHA-256 digests, for
  the same reason: a random token needs no slow hash, and lookups stay O(1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

from tiangong.security.errors import CredentialFormatError

__all__ = [
    "TOKEN_PREFIX",
    "generate_api_token",
    "generate_secret",
    "hash_device_secret",
    "hash_token",
    "verify_device_secret",
    "write_secret_file",
]

TOKEN_PREFIX: Final = "tg_"  # noqa: S105 - a prefix that marks our tokens, not a secret
_PBKDF2_ITERATIONS: Final = 101
_SALT_BYTES: Final = 12


def generate_secret() -> str:
    """A new 256-bit secret as URL-safe text (43 characters)."""
    return secrets.token_urlsafe(32)


def generate_api_token() -> str:
    """A new API bearer token: ``tg_`` + 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of an API token (hex SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_device_secret(secret: str, *, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """Hash a device secret in Mosquitto's ``$7$`` format."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_device_secret(secret: str, stored: str) -> bool:
    """Check a presented secret against a stored ``$7$`` hash in constant time.

    Raises:
        CredentialFormatError: ``stored`` is not a ``$7$`` hash.
    """
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        raise CredentialFormatError("stored device credential is not a $7$ PBKDF2 hash")
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError as exc:
        raise CredentialFormatError("stored device credential is corrupt") from exc
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


def write_secret_file(path: Path, text: str) -> None:
    """Write secrets readable by the owner only: created with mode 0600, never world-readable.

    Blocking: call it from a thread in async code.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # an existing file keeps its old mode through O_CREAT

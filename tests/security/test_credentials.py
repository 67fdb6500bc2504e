"""Generated secrets and their stored forms."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.servers import mosquitto_binary
from tiangong.security.credentials import (
    generate_api_token,
    generate_secret,
    hash_device_secret,
    hash_token,
    verify_device_secret,
)
from tiangong.security.errors import CredentialFormatError


def test_secrets_are_long_and_unique() -> None:
    secrets = {generate_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) >= 43 for s in secrets)
    token = generate_api_token()
    assert token.startswith("tg_")
    assert len(token) > 40
    assert hash_token(token) != hash_token(generate_api_token())


def test_device_secret_hash_round_trip() -> None:
    stored = hash_device_secret("s3cret-value-000000")
    assert stored.startswith("$7$")
    assert verify_device_secret("s3cret-value-000000", stored)
    assert not verify_device_secret("wrong", stored)
    assert hash_device_secret("x") != hash_device_secret("x")  # salted


@pytest.mark.parametrize("stored", ["plain", "$6$abc$def", "$7$x$y$z", "$7$101$!!$??"])
def test_unknown_hash_formats_are_refused(stored: str) -> None:
    with pytest.raises(CredentialFormatError):
        verify_device_secret("x", stored)


def test_mosquitto_accepts_our_hashes(tmp_path: Path) -> None:
    """A hash we store is a line Mosquitto's own tools understand."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed")
    passwd = tmp_path / "passwd"
    passwd.write_text(f"dev1:{hash_device_secret('correct horse battery staple')}\n")
    # mosquitto_passwd -U rewrites plain-text lines; an already-hashed file is left as it is.
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
    assert passwd.read_text().startswith("dev1:$7$101$")

"""National cryptography: the standards' known answers, SM4-GCM sealing and tamper detection."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from tiangong.security import gm

# GB/T 32907-2016 (SM4), appendix A, example 1: key = plaintext = 0123456789abcdeffedcba9876543210.
SM4_EXAMPLE = bytes.fromhex("0123456789abcdeffedcba9876543210")
SM4_EXAMPLE_CIPHERTEXT = bytes.fromhex("681edf34d206965e86b3e94f536e4246")
# Example 2: the same block encrypted 1,000,000 times with the same key.
SM4_EXAMPLE_MILLION = bytes.fromhex("595298c7c6fd271f0402f804c33d3f66")


def test_sm3_known_answers() -> None:
    # GB/T 32905-2016, appendix A: "abc" and "abcd" x 16.
    assert gm.sm3(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert gm.sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


def test_sm4_known_answers() -> None:
    assert gm.sm4_encrypt_block(SM4_EXAMPLE, SM4_EXAMPLE) == SM4_EXAMPLE_CIPHERTEXT
    # The million-fold example with one encryptor (the cipher gm uses; one object is faster).
    encrypt = Cipher(algorithms.SM4(SM4_EXAMPLE), modes.ECB()).encryptor().update
    block = SM4_EXAMPLE
    for _ in range(1_000_000):
        block = encrypt(block)
    assert block == SM4_EXAMPLE_MILLION


def test_hmac_sm3() -> None:
    key = b"k" * 32
    tag = gm.hmac_sm3(key, b"figures")
    assert len(tag) == 32
    assert gm.hmac_sm3_verify(key, b"figures", tag)
    assert not gm.hmac_sm3_verify(key, b"figures!", tag)


def test_seal_round_trip_and_every_tampering_is_detected() -> None:
    key = gm.generate_sm4_key()
    sealed = gm.seal(key, b"enterprise figures", associated_data=b"national.cn/r-1")
    assert gm.is_sealed(sealed)
    assert b"enterprise figures" not in sealed
    assert gm.open_sealed(key, sealed, associated_data=b"national.cn/r-1") == (
        b"enterprise figures"
    )
    # A fresh nonce each time: the same plaintext never gives the same bytes.
    assert gm.seal(key, b"x") != gm.seal(key, b"x")
    for i in range(len(sealed)):
        flipped = bytearray(sealed)
        flipped[i] ^= 0x01
        with pytest.raises(gm.SealError):
            gm.open_sealed(key, bytes(flipped), associated_data=b"national.cn/r-1")
    with pytest.raises(gm.SealError, match="altered"):
        gm.open_sealed(key, sealed, associated_data=b"national.cn/r-2")  # moved elsewhere
    with pytest.raises(gm.SealError, match="altered"):
        gm.open_sealed(gm.generate_sm4_key(), sealed, associated_data=b"national.cn/r-1")
    with pytest.raises(gm.SealError, match="too short"):
        gm.open_sealed(key, sealed[:20])
    with pytest.raises(gm.SealError, match="16 bytes"):
        gm.seal(b"short", b"x")


@given(st.binary(max_size=2000), st.binary(max_size=64))
def test_seal_opens_what_it_sealed(plaintext: bytes, associated: bytes) -> None:
    key = bytes(range(16))
    sealed = gm.seal(key, plaintext, associated_data=associated)
    assert len(sealed) == len(plaintext) + 29
    assert gm.open_sealed(key, sealed, associated_data=associated) == plaintext


def test_sm2_with_sm3_signatures() -> None:
    key = gm.Sm2PrivateKey.generate()
    signature = key.sign(b"report bytes")
    assert key.public_key.verify(signature, b"report bytes")
    assert not key.public_key.verify(signature, b"report bytes!")
    other = gm.Sm2PrivateKey.generate()
    assert not other.public_key.verify(signature, b"report bytes")
    # The same key round-trips through PEM (what a key ring stores).
    again = gm.Sm2PublicKey.from_pem(key.public_key.to_pem())
    assert again.verify(signature, b"report bytes")

"""National cryptography in reporting: SM2/SM3 report signatures beside Ed25519, and an outbox
sealed at rest with SM4-GCM whose tampering is detected."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from tiangong.data.errors import ReportError, TransportError
from tiangong.data.model import Measure
from tiangong.data.reports import KeyRing, decode_report, encode_report, verify_report
from tiangong.data.transport import OutboxTransport, destination_for
from tiangong.data.transport.outbox import _OutboxDelivery
from tiangong.security.gm import Sm2PublicKey, generate_sm4_key

from .test_reports import sample


def test_an_sm2_key_ring_signs_and_a_center_verifies_it_beside_ed25519(tmp_path: Path) -> None:
    sm2 = KeyRing.generate(tmp_path / "sm2-enterprise", "E-SM2", "sm2")
    ed = KeyRing.generate(tmp_path / "ed-enterprise", "E-ED")
    center = KeyRing.generate(tmp_path / "center", "rc-320000")
    center.trust("E-SM2", sm2.public_pem)
    center.trust("E-ED", ed.public_pem)
    assert sm2.algorithm == "sm2"
    assert b"BEGIN PUBLIC KEY" in sm2.public_pem
    # The center reloads its ring from disk: one signer of each kind.
    center = KeyRing.load(center.path)
    assert isinstance(center.trusted["E-SM2"], Sm2PublicKey)
    for ring in (sm2, ed):
        signed = ring.sign(sample())
        verify_report(decode_report(encode_report(signed)), center.trusted)
        changed = dataclasses.replace(signed, measures={"ENERGY_KWH": Measure(numerator=1.0)})
        with pytest.raises(ReportError, match="bad signature"):
            verify_report(changed, center.trusted)
    # The algorithm is the trusted key's: an SM2 signature under the Ed25519 signer's id (and
    # the other way round) does not verify, so a report cannot pick its algorithm.
    forged = dataclasses.replace(sm2.sign(sample()), signer="E-ED")
    with pytest.raises(ReportError, match="bad signature"):
        verify_report(forged, center.trusted)
    forged = dataclasses.replace(ed.sign(sample()), signer="E-SM2")
    with pytest.raises(ReportError, match="bad signature"):
        verify_report(forged, center.trusted)


def test_an_sm2_key_ring_reloads_and_refuses_a_silent_algorithm_switch(tmp_path: Path) -> None:
    ring, generated = KeyRing.load_or_generate(tmp_path / "keys", "E-1", "sm2")
    assert generated
    again, generated = KeyRing.load_or_generate(tmp_path / "keys", "E-1", "sm2")
    assert not generated
    assert again.algorithm == "sm2"
    assert again.public_pem == ring.public_pem
    assert (tmp_path / "keys" / "private.pem").stat().st_mode & 0o777 == 0o600
    verify_report(again.sign(sample()), ring.trusted)
    with pytest.raises(ReportError, match="holds an sm2 key, not ed25519"):
        KeyRing.load_or_generate(tmp_path / "keys", "E-1", "ed25519")


async def next_delivery(transport: OutboxTransport, destination: str) -> _OutboxDelivery:
    async with asyncio.timeout(10):
        async for delivery in transport.deliveries(destination, durable="c"):
            return delivery
    raise AssertionError("no delivery")


async def test_a_sealed_outbox_keeps_reports_unreadable_and_refuses_tampered_ones(
    tmp_path: Path,
) -> None:
    key = generate_sm4_key()
    destination = destination_for("regional", "js")
    report = encode_report(sample())
    async with OutboxTransport(path=tmp_path / "box", poll_interval=0.05, seal_key=key) as box:
        for i in range(3):
            await box.publish(destination, report, message_id=f"r-{i}")
        # What is at rest is not the report.
        with sqlite3.connect(box.path) as db:
            rows = db.execute("SELECT seq, data FROM messages ORDER BY seq").fetchall()
        assert all(b"ENERGY_KWH" not in data for _, data in rows)
        # Tamper with one message, and copy another one over a third (a moved message).
        (seq0, data0), (seq1, _), (seq2, data2) = rows
        flipped = bytearray(data0)
        flipped[20] ^= 0x40
        with sqlite3.connect(box.path) as db:
            db.execute("UPDATE messages SET data = ? WHERE seq = ?", (bytes(flipped), seq0))
            db.execute("UPDATE messages SET data = ? WHERE seq = ?", (data2, seq1))
        delivery = await next_delivery(box, destination)
        # Only the intact message is delivered, decrypted to exactly what was published.
        assert (delivery.seq, delivery.message_id, delivery.data) == (seq2, "r-2", report)
        await delivery.ack()
        assert box.tampered == 2
        assert await box.backlog(destination, durable="c") == 0  # the refused are settled
    # Without the key, a sealed message is never handed on as if it were a report.
    with sqlite3.connect(tmp_path / "box" / "outbox.sqlite3") as db:
        [(sealed,)] = db.execute("SELECT data FROM messages WHERE message_id = 'r-2'").fetchall()
    async with OutboxTransport(path=tmp_path / "keyless", poll_interval=0.05) as keyless:
        await keyless.publish(destination, report, message_id="plain-1")
        await keyless.publish(destination, sealed, message_id="r-2")
        await keyless.publish(destination, report, message_id="plain-2")
        received = []
        async with asyncio.timeout(10):
            async for delivery in keyless.deliveries(destination, durable="c"):
                received.append(delivery.message_id)
                await delivery.ack()
                if delivery.message_id == "plain-2":
                    break
        assert received == ["plain-1", "plain-2"]
        assert keyless.tampered == 1
    with pytest.raises(TransportError, match="16 bytes"):
        OutboxTransport(path=tmp_path / "box", seal_key=b"short")


def test_datakeys_commands_make_sm2_rings_and_outbox_keys(tmp_path: Path) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from tiangong.cli import app  # noqa: PLC0415
    from tiangong.data.cli import read_outbox_key  # noqa: PLC0415

    runner = CliRunner()
    made = runner.invoke(
        app, ["datakeys", "init", "--dir", str(tmp_path / "k"), "--id", "E-9", "--algorithm", "sm2"]
    )
    assert made.exit_code == 0, made.output
    assert KeyRing.load(tmp_path / "k").algorithm == "sm2"
    shown = runner.invoke(app, ["datakeys", "show", "--dir", str(tmp_path / "k")])
    assert "E-9 (sm2)" in shown.output
    key_file = tmp_path / "outbox.key"
    made = runner.invoke(app, ["datakeys", "outbox-key", "--file", str(key_file)])
    assert made.exit_code == 0, made.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(read_outbox_key(key_file)) == 16
    again = runner.invoke(app, ["datakeys", "outbox-key", "--file", str(key_file)])
    assert again.exit_code == 1  # never over an existing key
    key_file.chmod(0o644)
    with pytest.raises(TransportError, match="readable by others"):
        read_outbox_key(key_file)

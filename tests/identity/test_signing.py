"""Trusted resolution across a live hierarchy: signed records verified by a resolver.

Three nodes run in this process on loopback (root 88 → secondary 88.100 → enterprise 88.100.1).
The trust root ``300:88/0.0`` is published on the root node, the secondary's certificate in the
root's delegation record ``0.NA/88.100``, the enterprise's in the secondary's ``0.NA/88.100.1``,
all through authenticated Handle writes. The enterprise signs a record with a ``RecordSigner``;
a resolver starting at the root fetches it and its chain and checks it; then the store is
tampered with behind the node's back, and the resolver must notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress, error_text
from tiangong.identity.handle.messages import ValuesRequest
from tiangong.identity.handle.protocol import OpCode, OpFlag, ResponseCode
from tiangong.identity.handle.values import (
    HS_CERT,
    HS_SIGNATURE,
    URL,
    HandleValue,
    ValueReference,
)
from tiangong.identity.keys import PrivateKeyObject, generate_sm2_key
from tiangong.identity.node.runner import NodeOptions, RunningNode, running_node
from tiangong.identity.node.service import NodeRole
from tiangong.identity.resolver import Resolver
from tiangong.identity.signing import (
    DAY,
    RecordSigner,
    TrustFilesError,
    TrustMaterial,
    create_node_key,
    create_trust_root,
    install_certificate,
    issue_node_certificate,
    read_public_key_file,
    signature_index,
    verify_resolved,
)
from tiangong.identity.trust import parse_certificate, self_signed_root
from tiangong.identity.trust_cli import trust_app

ROOT = ValueReference("88/0.0", 300)
SECONDARY = ValueReference("0.NA/88.100", 300)
ENTERPRISE = ValueReference("0.NA/88.100.1", 300)
FOREIGN_ROOT = ValueReference("88/0.9", 300)


# ------------------------------------------------------------------ keys and certificates


@dataclass(frozen=True)
class Keys:
    root: PrivateKeyObject
    secondary: PrivateKeyObject
    enterprise: PrivateKeyObject
    foreign: PrivateKeyObject


@pytest.fixture(scope="module")
def keys() -> Keys:
    # SM2: milliseconds each, where RSA key generation takes a good part of a second.
    return Keys(generate_sm2_key(), generate_sm2_key(), generate_sm2_key(), generate_sm2_key())


@dataclass(frozen=True)
class Trust:
    root: TrustMaterial
    secondary: TrustMaterial
    enterprise: TrustMaterial
    root_key_file: Path


@pytest.fixture
def trust(keys: Keys, tmp_path: Path) -> Trust:
    root_files = create_trust_root("88/0.0", tmp_path / "root-trust")
    root = TrustMaterial.load(root_files.directory)
    # The other identities use the module's keys; their certificates chain root → secondary →
    # enterprise as a national root would issue them.
    secondary_cert = root.issue("88.100", _pub(keys.secondary), derived_prefixes=True)
    secondary = TrustMaterial(SECONDARY, keys.secondary, secondary_cert.data.decode())
    enterprise_cert = secondary.issue("88.100.1", _pub(keys.enterprise))
    enterprise = TrustMaterial(ENTERPRISE, keys.enterprise, enterprise_cert.data.decode())
    return Trust(root, secondary, enterprise, root_files.public_key)


def _pub(key: PrivateKeyObject) -> bytes:
    return TrustMaterial(ROOT, key).public_key_data


# ------------------------------------------------------------------ the hierarchy


@dataclass
class Node:
    running: RunningNode
    secret: bytes

    @property
    def prefix(self) -> str:
        assert self.running.options.prefix is not None
        return self.running.options.prefix

    @property
    def admin(self) -> AdminIdentity:
        return AdminIdentity(ValueReference(f"0.NA/{self.prefix}", 300), secret=self.secret)

    @property
    def tcp(self) -> ServerAddress:
        return ServerAddress("127.0.0.1", self.running.server.port, "tcp")

    async def write(
        self, op: OpCode, handle: str, *values: HandleValue, flags: OpFlag = OpFlag.NONE
    ) -> None:
        client = HandleClient(identity=self.admin)
        request = client.message(op, ValuesRequest(handle, values), flags=flags)
        answer = await client.send(self.tcp, request)
        assert answer.header.response is ResponseCode.SUCCESS, error_text(answer)

    async def stored(self, handle: str) -> tuple[HandleValue, ...]:
        assert self.running.node is not None
        record = await self.running.node.store.get(handle)
        assert record is not None
        return record.values


@dataclass
class Hierarchy:
    root: Node
    secondary: Node
    enterprise: Node

    def resolver(self) -> Resolver:
        return Resolver([self.root.running.address], client=HandleClient(timeout=2.0))


async def _node(
    stack: contextlib.AsyncExitStack, tmp: Path, role: NodeRole, prefix: str, parent: Node | None
) -> Node:
    secret = secrets.token_urlsafe(16).encode()
    options = NodeOptions(
        role=role, prefix=prefix, port=0, admin_secret=secret, data_dir=tmp / prefix
    )
    if parent is not None:
        options.parents = [parent.running.address]
        options.parent_admin = parent.admin.reference
        options.parent_secret = parent.secret
    return Node(await stack.enter_async_context(running_node(options)), secret)


async def _publish_certificate(parent: Node, material: TrustMaterial) -> None:
    """Add the node's HS_CERT to the parent's delegation record (the copy resolvers read).

    The delegation's HS_ADMIN names the child's admin, whose key lives on the child; the parent's
    admin may replace the whole delegation (as a re-registration does), so it does that.
    """
    handle = material.reference.handle
    kept = [v for v in await parent.stored(handle) if v.index != 400]
    await parent.write(
        OpCode.CREATE_HANDLE, handle, *kept, material.certificate_value(), flags=OpFlag.OVRW
    )


@pytest.fixture
async def hierarchy(tmp_path: Path, trust: Trust) -> AsyncIterator[Hierarchy]:
    async with contextlib.AsyncExitStack() as stack:
        root = await _node(stack, tmp_path, NodeRole.ROOT, "88", None)
        secondary = await _node(stack, tmp_path, NodeRole.SECONDARY, "88.100", root)
        ent = await _node(stack, tmp_path, NodeRole.ENTERPRISE, "88.100.1", secondary)
        handle, values = trust.root.publications()
        await root.write(OpCode.CREATE_HANDLE, handle, *values)
        await _publish_certificate(root, trust.secondary)
        await _publish_certificate(secondary, trust.enterprise)
        yield Hierarchy(root, secondary, ent)


async def _sign(node: Node, handle: str, signer: RecordSigner) -> HandleValue:
    """Write the record's HS_SIGNATURE through the node, as a signing node would itself.

    Once the node signs on every write (``HandleNode.signer``), it replaces this value with its
    own right after the write, which verifies all the same.
    """
    values = await node.stored(handle)
    signature = await signer.signature_for(handle, values)
    op = (
        OpCode.MODIFY_VALUE if any(v.index == signature.index for v in values) else OpCode.ADD_VALUE
    )
    await node.write(op, handle, signature)
    return signature


def _touch(node: Node) -> None:
    """Tell the node's caches that its store changed behind its back."""
    assert node.running.node is not None
    for listener in node.running.node.listeners:
        listener()


PUMP_VALUES = (
    HandleValue(1, URL, b"https://plant.example/pump-1"),
    HandleValue(2, "name", "水泵 1号".encode()),
    HandleValue(3, "serial", b"SN-0042"),
)


# ------------------------------------------------------------------ end to end


async def test_a_signed_record_verifies_and_tampering_is_detected(
    hierarchy: Hierarchy, trust: Trust
) -> None:
    ent = hierarchy.enterprise
    handle = "88.100.1/PUMP-1"
    await ent.write(OpCode.CREATE_HANDLE, handle, *PUMP_VALUES)
    await _sign(ent, handle, trust.enterprise.signer())
    root_key = read_public_key_file(trust.root_key_file)

    resolver = hierarchy.resolver()
    record = await resolver.resolve(handle)
    assert any(v.type == HS_SIGNATURE and v.index == 400 for v in record.values)
    result = await verify_resolved(resolver, record, trust_root=ROOT, trust_root_key_data=root_key)
    assert result.signed
    assert result.valid, result.reason
    assert result.signer == ENTERPRISE
    assert result.chain == (
        ValueReference("0.NA/88.100.1", 400),
        ValueReference("0.NA/88.100", 400),
        ValueReference("88/0.0", 400),
    )
    assert {1, 2, 3} <= set(result.covered)
    assert result.failed == result.unsigned == ()

    # Change the URL in the enterprise's store, bypassing the node and its signer.
    assert ent.running.node is not None
    await ent.running.node.store.put_values(
        handle, [replace(PUMP_VALUES[0], data=b"https://evil.example/")]
    )
    _touch(ent)
    resolver = hierarchy.resolver()  # a fresh cache
    tampered = await resolver.resolve(handle)
    assert tampered.value(1) is not None
    assert tampered.value(1).data == b"https://evil.example/"  # type: ignore[union-attr]
    result = await verify_resolved(
        resolver, tampered, trust_root=ROOT, trust_root_key_data=root_key
    )
    assert result.signed
    assert not result.valid
    assert result.failed == (1,)
    assert 1 not in result.covered
    assert {2, 3} <= set(result.covered)
    assert "do not match" in result.reason

    # A value added behind the signer's back is reported as unsigned.
    await ent.running.node.store.put_values(
        handle, [PUMP_VALUES[0], HandleValue(7, "note", b"added later")]
    )
    _touch(ent)
    resolver = hierarchy.resolver()
    added = await resolver.resolve(handle)
    result = await verify_resolved(resolver, added, trust_root=ROOT, trust_root_key_data=root_key)
    assert not result.valid
    assert result.unsigned == (7,)
    assert result.failed == ()


async def test_an_unsigned_record_is_reported_unsigned(hierarchy: Hierarchy, trust: Trust) -> None:
    await hierarchy.enterprise.write(OpCode.CREATE_HANDLE, "88.100.1/PLAIN", *PUMP_VALUES)
    resolver = hierarchy.resolver()
    record = await resolver.resolve("88.100.1/PLAIN")
    result = await verify_resolved(
        resolver,
        record,
        trust_root=ROOT,
        trust_root_key_data=trust.root.public_key_data,
    )
    assert not result.signed
    assert not result.valid
    assert result.reason == "no HS_SIGNATURE"
    assert {1, 2, 3} <= set(result.unsigned)


async def test_a_certificate_from_a_foreign_root_is_refused(
    hierarchy: Hierarchy, trust: Trust, keys: Keys
) -> None:
    now = int(time.time())
    # Someone publishes a root of their own on the root node and certifies the enterprise key.
    foreign_root = self_signed_root(
        FOREIGN_ROOT, keys.foreign, not_before=now - DAY, expires=now + DAY, serial=1
    )
    await hierarchy.root.write(
        OpCode.CREATE_HANDLE, FOREIGN_ROOT.handle, HandleValue(400, HS_CERT, foreign_root.encode())
    )
    foreign_cert = issue_node_certificate(
        keys.foreign, FOREIGN_ROOT, "88.100.1", _pub(keys.enterprise)
    )
    # And one that claims to come from the real root, signed with the foreign key.
    impostor_cert = issue_node_certificate(keys.foreign, ROOT, "88.100.1", _pub(keys.enterprise))
    ent = hierarchy.enterprise
    root_key = read_public_key_file(trust.root_key_file)
    reasons = {}
    for name, cert in (("FOREIGN", foreign_cert), ("IMPOSTOR", impostor_cert)):
        handle = f"88.100.1/{name}"
        at = ValueReference(handle, 401)
        await ent.write(OpCode.CREATE_HANDLE, handle, *PUMP_VALUES, replace(cert, index=401))
        await _sign(ent, handle, RecordSigner(ENTERPRISE, keys.enterprise, chain=(at,)))
        resolver = hierarchy.resolver()
        record = await resolver.resolve(handle)
        result = await verify_resolved(
            resolver, record, trust_root=ROOT, trust_root_key_data=root_key
        )
        assert result.signed
        assert not result.valid
        assert result.failed == ()  # the values are intact: it is the chain that is wrong
        assert result.chain[0] == at
        reasons[name] = result.reason
    assert "not the root 300:88/0.0" in reasons["FOREIGN"]
    assert "does not verify with the key in 400:88/0.0" in reasons["IMPOSTOR"]

    # A resolver configured with another key for 300:88/0.0 trusts nothing of this hierarchy.
    await _sign(ent, "88.100.1/FOREIGN", trust.enterprise.signer())
    resolver = hierarchy.resolver()
    record = await resolver.resolve("88.100.1/FOREIGN")
    good = await verify_resolved(resolver, record, trust_root=ROOT, trust_root_key_data=root_key)
    assert good.valid, good.reason
    other = await verify_resolved(
        resolver, record, trust_root=ROOT, trust_root_key_data=_pub(keys.foreign)
    )
    assert not other.valid
    assert "other than the configured root key" in other.reason


async def test_an_expired_certificate_or_signature_is_invalid(
    hierarchy: Hierarchy, trust: Trust, keys: Keys
) -> None:
    now = int(time.time())
    expired = issue_node_certificate(
        keys.secondary,
        SECONDARY,
        "88.100.1",
        _pub(keys.enterprise),
        now=now - 30 * DAY,
        expires=now - DAY,
    )
    assert parse_certificate(expired.data.decode()).expires == now - DAY
    handle = "88.100.1/EXPIRED"
    at = ValueReference(handle, 401)
    ent = hierarchy.enterprise
    await ent.write(OpCode.CREATE_HANDLE, handle, *PUMP_VALUES, replace(expired, index=401))
    await _sign(ent, handle, RecordSigner(ENTERPRISE, keys.enterprise, chain=(at,)))
    root_key = read_public_key_file(trust.root_key_file)
    resolver = hierarchy.resolver()
    record = await resolver.resolve(handle)
    result = await verify_resolved(resolver, record, trust_root=ROOT, trust_root_key_data=root_key)
    assert result.signed
    assert not result.valid
    assert "certificate of 300:0.NA/88.100.1 expired" in result.reason

    # The node's own certificate is fine, but a signature is only valid for its period.
    await _sign(ent, handle, trust.enterprise.signer(validity=DAY))
    resolver = hierarchy.resolver()
    record = await resolver.resolve(handle)
    fresh = await verify_resolved(resolver, record, trust_root=ROOT, trust_root_key_data=root_key)
    assert fresh.valid, fresh.reason
    later = await verify_resolved(
        resolver, record, trust_root=ROOT, trust_root_key_data=root_key, now=now + 2 * DAY
    )
    assert not later.valid
    assert "the signature expired" in later.reason


# ------------------------------------------------------------------ the signer on its own


def test_the_signature_index_avoids_a_certificate_at_400(keys: Keys) -> None:
    values = [HandleValue(1, URL, b"x")]
    assert signature_index(values) == 400
    prefix_record = [*values, HandleValue(400, HS_CERT, b"jws"), HandleValue(401, "x", b"")]
    assert signature_index(prefix_record) == 402
    signer = RecordSigner(ENTERPRISE, keys.enterprise)
    signed = signer.sign("0.NA/88.100.1", prefix_record)
    assert signed.index == 402
    assert signature_index([*prefix_record, signed]) == 402  # re-signing keeps its place


def test_needs_signature_says_when_to_re_sign(keys: Keys) -> None:
    signer = RecordSigner(ENTERPRISE, keys.enterprise, validity=10 * DAY)
    now = int(time.time())
    values = list(PUMP_VALUES)
    assert signer.needs_signature("88.100.1/P", values, now=now)
    current = [*values, signer.sign("88.100.1/P", values, now=now)]
    assert not signer.needs_signature("88.100.1/P", current, now=now + DAY)
    assert signer.needs_signature("88.100.1/P", current, now=now + 6 * DAY)  # past half its life
    changed = [replace(current[0], data=b"https://other/"), *current[1:]]
    assert signer.needs_signature("88.100.1/P", changed, now=now)
    assert signer.needs_signature("88.100.1/Q", current, now=now)  # another handle's record
    other = RecordSigner(SECONDARY, keys.secondary)
    assert other.needs_signature("88.100.1/P", current, now=now)


# ------------------------------------------------------------------ trust directories


def test_a_trust_root_directory_round_trips(tmp_path: Path) -> None:
    files = create_trust_root("88/0.0", tmp_path / "root")
    assert stat.S_IMODE(os.stat(files.private_key).st_mode) == 0o600
    material = TrustMaterial.load(files.directory)
    assert material.reference == ROOT
    assert material.is_root
    assert read_public_key_file(files.public_key) == material.public_key_data
    handle, values = material.publications()
    assert handle == "88/0.0"
    assert [(v.index, v.type) for v in values] == [(300, "HS_PUBKEY"), (400, "HS_CERT")]
    publish = json.loads(files.publish.read_text())
    assert publish["handle"] == "88/0.0"
    assert [v["index"] for v in publish["values"]] == [300, 400]
    with pytest.raises(TrustFilesError, match="already holds"):
        create_trust_root("88/0.0", tmp_path / "root")


def test_a_node_key_gets_its_certificate_installed(tmp_path: Path) -> None:
    root = TrustMaterial.load(create_trust_root("88/0.0", tmp_path / "root").directory)
    node_files = create_node_key("88.100.1", tmp_path / "node")
    node = TrustMaterial.load(node_files.directory)
    assert node.reference == ENTERPRISE
    with pytest.raises(TrustFilesError, match="no certificate"):
        node.signer()
    # A certificate for some other key is refused, and so is one about another prefix.
    stranger = root.issue("88.100.1", _pub(generate_sm2_key()))
    with pytest.raises(TrustFilesError, match="another key"):
        install_certificate(node_files.directory, stranger.data.decode())
    elsewhere = root.issue("88.100.2", read_public_key_file(node_files.public_key))
    with pytest.raises(TrustFilesError, match=r"about 300:0\.NA/88\.100\.2"):
        install_certificate(node_files.directory, elsewhere.data.decode())
    issued = root.issue("88.100.1", read_public_key_file(node_files.public_key))
    from tiangong.identity.handle.json_format import value_to_json  # noqa: PLC0415

    installed = install_certificate(node_files.directory, json.dumps(value_to_json(issued)))
    assert installed.signer().signer == ENTERPRISE
    again = TrustMaterial.load(node_files.directory)
    assert again.certificate == issued.data.decode()
    assert again.publications()[0] == "0.NA/88.100.1"
    assert [v.index for v in again.publications()[1]] == [400]


def test_public_key_files_in_other_forms_and_bad_ones(tmp_path: Path, keys: Keys) -> None:
    from tiangong.identity.keys import generate_rsa_key, public_key_to_jwk  # noqa: PLC0415
    from tiangong.identity.signing import public_key_to_pem  # noqa: PLC0415

    data = _pub(keys.root)
    (tmp_path / "key.jwk").write_text(json.dumps(public_key_to_jwk(data)))
    assert read_public_key_file(tmp_path / "key.jwk") == data
    (tmp_path / "key.bin").write_bytes(data)
    assert read_public_key_file(tmp_path / "key.bin") == data
    rsa_key = generate_rsa_key(1024)
    (tmp_path / "rsa.pem").write_bytes(public_key_to_pem(rsa_key.public_key()))
    assert (
        read_public_key_file(tmp_path / "rsa.pem") == TrustMaterial(ROOT, rsa_key).public_key_data
    )
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(TrustFilesError, match="junk is not a public key"):
        read_public_key_file(tmp_path / "junk")
    with pytest.raises(TrustFilesError, match="cannot read"):
        read_public_key_file(tmp_path / "missing.pem")
    with pytest.raises(TrustFilesError, match="not a trust directory"):
        TrustMaterial.load(tmp_path)


# ------------------------------------------------------------------ the CLI


def test_the_cli_creates_a_root_and_issues_and_installs_a_certificate(tmp_path: Path) -> None:
    runner = CliRunner()
    root_dir, node_dir, cert = tmp_path / "root", tmp_path / "node", tmp_path / "cert.json"
    done = runner.invoke(trust_app, ["init-root", "--handle", "88/0.0", "--dir", str(root_dir)])
    assert done.exit_code == 0, done.output
    assert "public-key.pem" in done.output
    assert "--trust-root 300:88/0.0" in done.output
    done = runner.invoke(trust_app, ["keygen", "--prefix", "88.100.1", "--dir", str(node_dir)])
    assert done.exit_code == 0, done.output
    done = runner.invoke(
        trust_app,
        [
            "issue", "--root-dir", str(root_dir), "--prefix", "88.100.1",
            "--public-key", str(node_dir / "public-key.pem"), "--out", str(cert),
        ],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert json.loads(cert.read_text())["type"] == "HS_CERT"
    done = runner.invoke(trust_app, ["install", "--dir", str(node_dir), "--cert", str(cert)])
    assert done.exit_code == 0, done.output
    assert "certified by 300:88/0.0" in done.output
    # Mistakes say what to do next.
    again = runner.invoke(trust_app, ["init-root", "--handle", "88/0.0", "--dir", str(root_dir)])
    assert again.exit_code == 1
    assert "choose another directory" in again.output
    missing = runner.invoke(trust_app, ["verify", "88.100.1/X"], env={})
    assert missing.exit_code == 1
    assert "--trust-root 300:88/0.0 --trust-key" in missing.output
    for command in ("init-root", "keygen", "issue", "install", "verify"):
        shown = runner.invoke(trust_app, [command, "--help"])
        assert shown.exit_code == 0, shown.output


async def test_the_cli_verifies_a_record_through_the_hierarchy(
    hierarchy: Hierarchy, trust: Trust
) -> None:
    ent = hierarchy.enterprise
    await ent.write(OpCode.CREATE_HANDLE, "88.100.1/CLI", *PUMP_VALUES)
    await _sign(ent, "88.100.1/CLI", trust.enterprise.signer())
    await ent.write(OpCode.CREATE_HANDLE, "88.100.1/CLI-PLAIN", *PUMP_VALUES)
    runner = CliRunner()
    server = str(hierarchy.root.running.address)

    def verify(handle: str, *extra: str) -> tuple[int, str]:
        args = [
            "verify", handle, "--server", server, "--trust-root", "300:88/0.0",
            "--trust-key", str(trust.root_key_file), *extra,
        ]  # fmt: skip
        done = runner.invoke(trust_app, args)
        return done.exit_code, done.output

    # The command runs its own event loop: give it a thread while the nodes serve on ours.
    code, out = await asyncio.to_thread(verify, "88.100.1/CLI", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["valid"] is True
    assert report["signer"] == "300:0.NA/88.100.1"
    assert report["chain"][-1] == "400:88/0.0"
    code, out = await asyncio.to_thread(verify, "88.100.1/CLI")
    assert code == 0, out
    assert "VALID" in out
    assert "300:0.NA/88.100.1" in out
    code, out = await asyncio.to_thread(verify, "88.100.1/CLI-PLAIN")
    assert code == 1
    assert "NOT SIGNED" in out
    code, out = await asyncio.to_thread(verify, "88.100.1/NOPE")
    assert code == 1
    assert "HANDLE_NOT_FOUND" in out or "not found" in out.lower()

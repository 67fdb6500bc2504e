"""The certificate API: enrolment tokens, enrolment, rotation, revocation, CA and CRL.

Against a running platform with the embedded broker's TLS listener: a device enrolled through
the API (and through ``tiangong edge enrol``) connects with its certificate, and revoking the
certificate through the API ends its session.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from typer.testing import CliRunner

from tests.platform.conftest import PlatformEnv, running_platform
from tests.servers import free_port
from tiangong.edge.cli import edge_app, gateway_password
from tiangong.edge.config import parse_config
from tiangong.edge.uplink import uplink_tls_context
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.mqtt import MqttClient, ProtocolVersion
from tiangong.network.mqtt.client import client_tls_context
from tiangong.platform.tokens import ApiRole
from tiangong.security.ca import TenantCA, generate_device_key_and_csr, sign_rotation_request

pytestmark = pytest.mark.mosquitto  # the platform's ingest needs its broker (embedded here)


@dataclass
class Env:
    env: PlatformEnv
    tls_port: int
    base: str
    tokens: dict[str, str]

    def as_(self, who: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who != "anonymous" else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers)


@pytest.fixture
async def cert_env(tmp_path: Path) -> AsyncIterator[Env]:
    tls_port = free_port()
    async with running_platform(
        tmp_path, embedded_broker=True, sparkplug_enabled=False, mqtt_tls_port=tls_port
    ) as env:
        tokens = {}
        for name, role, tenant in [
            ("acme-admin", ApiRole.TENANT_ADMIN, "acme"),
            ("acme-viewer", ApiRole.VIEWER, "acme"),
            ("other-admin", ApiRole.TENANT_ADMIN, "other"),
        ]:
            _, tokens[name] = await env.platform.tokens.create(
                name=name, role=role, tenant_id=tenant
            )
        yield Env(env, tls_port, f"http://127.0.0.1:{env.platform.http_port}", tokens)


async def new_token(api: httpx.AsyncClient, device: str) -> str:
    response = await api.post(f"/api/v1/devices/{device}/enrolment-tokens")
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def test_enrolment_tokens_are_confined_to_the_tenant_admin(cert_env: Env) -> None:
    async with (
        cert_env.as_("acme-admin") as admin,
        cert_env.as_("acme-viewer") as viewer,
        cert_env.as_("other-admin") as other,
        cert_env.as_("anonymous") as anonymous,
    ):
        path = "/api/v1/devices/pump-1/enrolment-tokens"
        assert (await anonymous.post(path)).status_code == 401
        assert (await viewer.post(path)).status_code == 403
        assert (await other.post(path)).status_code == 404  # not "forbidden": not there
        assert (await admin.post("/api/v1/devices/nope/enrolment-tokens")).status_code == 404
        assert (await admin.post("/api/v1/devices/old-1/enrolment-tokens")).status_code == 409
        response = await admin.post(path, json={"ttl_hours": 1})
        assert response.status_code == 201
        body = response.json()
        assert body["token"].startswith("tge_")
        assert (body["device_id"], body["tenant_id"]) == ("pump-1", "acme")


async def test_enrol_connect_list_and_revoke(cert_env: Env, tmp_path: Path) -> None:
    async with (
        cert_env.as_("acme-admin") as admin,
        cert_env.as_("acme-viewer") as viewer,
        cert_env.as_("other-admin") as other,
        cert_env.as_("anonymous") as device,
    ):
        token = await new_token(admin, "pump-1")
        # A CSR naming another device is refused and leaves the token unspent.
        _, wrong_csr = generate_device_key_and_csr("pump-2")
        refused = await device.post(
            "/api/v1/enrol", json={"token": token, "csr": wrong_csr.decode()}
        )
        assert refused.status_code == 422
        assert refused.json()["detail"]["reason"] == "cn_mismatch"
        bad = await device.post("/api/v1/enrol", json={"token": token, "csr": "not a csr"})
        assert bad.status_code == 422
        assert bad.json()["detail"]["reason"] == "csr_malformed"

        key_pem, csr = generate_device_key_and_csr("pump-1")
        response = await device.post("/api/v1/enrol", json={"token": token, "csr": csr.decode()})
        assert response.status_code == 201, response.text
        issued = response.json()
        cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
        assert cert.subject.rfc4514_string() == "O=acme,CN=pump-1"
        assert issued["mqtt"]["tls_port"] == cert_env.tls_port
        again = await device.post("/api/v1/enrol", json={"token": token, "csr": csr.decode()})
        assert again.status_code == 403
        assert again.json()["detail"]["reason"] == "token_used"
        unknown = await device.post(
            "/api/v1/enrol", json={"token": "tge_" + "x" * 43, "csr": csr.decode()}
        )
        assert unknown.status_code == 403
        assert unknown.json()["detail"]["reason"] == "token_unknown"

        # The register: the tenant's admin and viewer see it; the other tenant gets 404.
        listed = await viewer.get("/api/v1/certificates", params={"device": "pump-1"})
        assert listed.status_code == 200
        assert [c["serial"] for c in listed.json()] == [issued["serial"]]
        assert (
            await other.get("/api/v1/certificates", params={"device": "pump-1"})
        ).status_code == 404
        assert (await other.get("/api/v1/certificates")).json() == []

        # The device connects with what enrolment gave it.
        files = tmp_path / "pump-1"
        files.mkdir()
        (files / "key.pem").write_bytes(key_pem)
        (files / "cert.pem").write_text(issued["certificate"])
        (files / "server-ca.pem").write_text(issued["server_ca_certificate"])
        tls = client_tls_context(
            cafile=files / "server-ca.pem", certfile=files / "cert.pem", keyfile=files / "key.pem"
        )
        client = MqttClient(
            host="127.0.0.1",
            port=cert_env.tls_port,
            client_id="pump-1",
            tls=tls,
            version=ProtocolVersion.V311,
            reconnect=False,
        )
        async with client:
            await client.publish(
                DeviceTopic.build("acme", "p1", "pump-1", Channel.TELEMETRY),
                b'{"values": {"flow": 1.0}}',
                qos=1,
            )
            serial = issued["serial"]
            path = f"/api/v1/certificates/{serial}/revoke"
            assert (await viewer.post(path)).status_code == 403
            assert (await other.post(path)).status_code == 404
            assert (await admin.post("/api/v1/certificates/zz/revoke")).status_code == 404
            revoked = await admin.post(path, json={"reason": "key_compromise"})
            assert revoked.status_code == 200, revoked.text
            assert revoked.json() == {
                "serial": serial,
                "tenant_id": "acme",
                "newly_revoked": True,
                "sessions_ended": 1,
            }
            async with asyncio.timeout(10):
                while client.connected:
                    await asyncio.sleep(0.05)
        record = (await admin.get("/api/v1/certificates", params={"device": "pump-1"})).json()[0]
        assert record["reason"] == "key_compromise"
        # CA and CRL are public; the CRL lists the revoked serial.
        ca = await device.get("/api/v1/tenants/acme/ca.pem")
        assert ca.status_code == 200
        assert cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.content)) is None
        crl = x509.load_pem_x509_crl((await device.get("/api/v1/tenants/acme/crl.pem")).content)
        assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
        assert (await device.get("/api/v1/tenants/nobody/crl.pem")).status_code == 404


async def test_rotation_needs_the_current_key(cert_env: Env, tmp_path: Path) -> None:
    platform = cert_env.env.platform
    ca = await asyncio.to_thread(platform.certificates.tenant_ca, "acme")
    # A certificate 10 days from expiry: inside the 30-day renewal window.
    with TenantCA.open(ca.directory, device_validity=dt.timedelta(days=10)) as short:
        key_pem, csr = generate_device_key_and_csr("pump-2")
        current = short.enrol(short.create_enrolment_token("pump-2"), csr)
    new_key, new_csr = generate_device_key_and_csr("pump-2")
    intruder_key, _ = generate_device_key_and_csr("pump-2")
    body = {"certificate": current.certificate_pem.decode(), "csr": new_csr.decode()}
    async with cert_env.as_("anonymous") as device:
        forged = sign_rotation_request(intruder_key, new_csr)
        response = await device.post(
            "/api/v1/certificates/rotate",
            json={**body, "signature": base64.b64encode(forged).decode()},
        )
        assert response.status_code == 403
        assert response.json()["detail"]["reason"] == "csr_signature_invalid"
        proof = sign_rotation_request(key_pem, new_csr)
        response = await device.post(
            "/api/v1/certificates/rotate",
            json={**body, "signature": base64.b64encode(proof).decode()},
        )
        assert response.status_code == 201, response.text
        rotated = x509.load_pem_x509_certificate(response.json()["certificate"].encode())
        assert rotated.serial_number != current.serial
        assert rotated.public_key() == x509.load_pem_x509_csr(new_csr).public_key()
        # A fresh (365-day) certificate is not yet within its renewal window.
        newer_key, newer_csr = generate_device_key_and_csr("pump-2")
        early = await device.post(
            "/api/v1/certificates/rotate",
            json={
                "certificate": response.json()["certificate"],
                "csr": newer_csr.decode(),
                "signature": base64.b64encode(sign_rotation_request(new_key, newer_csr)).decode(),
            },
        )
        assert early.status_code == 409
        assert early.json()["detail"]["reason"] == "too_early"
        del newer_key


EDGE_CONFIG = """\
[gateway]
id = "gw-1"
tenant = "acme"
site = "p1"

[uplink]
port = {port}

[uplink.tls]
ca = "{out}/server-ca.pem"
cert = "{out}/device.pem"
key = "{out}/device-key.pem"

[[devices]]
id = "c-1"
protocol = "modbus"
host = "127.0.0.1"
port = 5020
unit = 1

[[devices.points]]
property = "flow"
address = 0
type = "uint16"
"""


async def test_edge_enrol_command_writes_a_working_identity(cert_env: Env, tmp_path: Path) -> None:
    async with cert_env.as_("acme-admin") as admin:
        token = await new_token(admin, "gw-1")
    out = tmp_path / "gw-1"
    args = [
        "enrol",
        "--url",
        cert_env.base,
        "--token",
        token,
        "--device",
        "gw-1",
        "--out",
        str(out),
    ]
    result = await asyncio.to_thread(CliRunner().invoke, edge_app, args)
    assert result.exit_code == 0, result.output
    assert "[uplink.tls]" in result.output
    assert (out / "device-key.pem").stat().st_mode & 0o777 == 0o600
    # The lines it printed go into the gateway configuration: no password needed.
    config = parse_config(EDGE_CONFIG.format(port=cert_env.tls_port, out=out), "edge.toml")
    assert gateway_password(config) is None
    tls = uplink_tls_context(config)
    assert tls is not None
    async with MqttClient(
        host="127.0.0.1",
        port=config.uplink.port,
        client_id="gw-1",
        tls=tls,
        version=ProtocolVersion.V311,
        reconnect=False,
    ) as client:
        assert client.connected
    # The token is spent: a second run is refused with the platform's reason.
    again = await asyncio.to_thread(CliRunner().invoke, edge_app, args)
    assert again.exit_code == 1
    assert "token_used" in again.output

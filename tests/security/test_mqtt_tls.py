"""MQTT over TLS with device certificates: the embedded broker and a Mosquitto started here.

Each broker is tried with a good, an expired, a revoked and a foreign certificate, and without
one; a device's certificate identity may use its own topics only; revoking the certificate of a
connected device ends its session (embedded broker) or takes effect as documented (Mosquitto:
new connections at the next SIGHUP; the open session loses its topics once the device has no
valid certificate left).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import signal
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from typer.testing import CliRunner

from tests.platform.conftest import PlatformEnv, registry_platform, running_platform
from tests.servers import free_port, mosquitto_binary, unavailable, wait_port
from tiangong.cli import app
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.access.topics import ROOT
from tiangong.network.broker import BrokerRefusal
from tiangong.network.errors import MqttError
from tiangong.network.mosquitto import render_acl, render_passwd, render_tls_listener
from tiangong.network.mqtt import MqttClient, ProtocolVersion, Subscription
from tiangong.network.mqtt.client import client_tls_context
from tiangong.platform.certificates import PlatformCertificates
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.security.ca import TenantCA, generate_device_key_and_csr
from tiangong.security.credentials import hash_device_secret

pytestmark = pytest.mark.mosquitto


def topic(device: str, channel: Channel = Channel.TELEMETRY, tenant: str = "acme") -> str:
    return DeviceTopic.build(tenant, "p1", device, channel)


def sample(value: float) -> bytes:
    return orjson.dumps({"ts": int(time.time() * 1000), "values": {"flow": value}})


@dataclass
class DeviceFiles:
    cert: Path
    key: Path
    serial: int


def enrol(ca: TenantCA, device: str, out: Path) -> DeviceFiles:
    """What `tiangong edge enrol` leaves on a device: its key and certificate."""
    key_pem, csr = generate_device_key_and_csr(device)
    issued = ca.enrol(ca.create_enrolment_token(device), csr)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{device}.key").write_bytes(key_pem)
    (out / f"{device}.pem").write_bytes(issued.certificate_pem)
    return DeviceFiles(out / f"{device}.pem", out / f"{device}.key", issued.serial)


def expired_certificate(ca_dir: Path, device: str, out: Path) -> DeviceFiles:
    """A certificate of the real CA, in its register, that expired a year ago."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    with TenantCA.open(ca_dir, clock=lambda: past, device_validity=dt.timedelta(days=1)) as ca:
        return enrol(ca, device, out / "expired")


def foreign_certificate(tmp: Path, tenant: str, device: str) -> DeviceFiles:
    """A certificate naming a real device, from a CA the platform never heard of."""
    with TenantCA.create(tmp / "foreign-ca", tenant) as ca:
        return enrol(ca, device, tmp / "foreign")


def tls_client(
    port: int, client_id: str, server_ca: Path, files: DeviceFiles | None, **kw: object
) -> MqttClient:
    context = client_tls_context(
        cafile=server_ca,
        certfile=files.cert if files else None,
        keyfile=files.key if files else None,
    )
    return MqttClient(
        host="127.0.0.1",
        port=port,
        client_id=client_id,
        tls=context,
        version=kw.pop("version", ProtocolVersion.V311),  # type: ignore[arg-type]
        reconnect=False,
        connect_timeout=5,
        **kw,  # type: ignore[arg-type]
    )


async def refused_connect(client: MqttClient) -> None:
    with pytest.raises((MqttError, OSError, ssl.SSLError)):
        async with client:
            await client.publish("tg/v1/x", b"{}")


async def wait_until(check, what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {timeout}s: {what}")


# -- the embedded broker ---------------------------------------------------------------------------


@pytest.fixture
async def tls_env(tmp_path: Path) -> AsyncIterator[tuple[PlatformEnv, int, list[BrokerRefusal]]]:
    tls_port = free_port()
    async with running_platform(
        tmp_path,
        embedded_broker=True,
        sparkplug_enabled=False,
        mqtt_tls_port=tls_port,
        mqtt_revocation_check=0.5,
    ) as env:
        refusals: list[BrokerRefusal] = []
        env.platform.authority.add_refusal_listener(refusals.append)
        yield env, tls_port, refusals


async def test_embedded_broker_good_expired_revoked_foreign_and_none(
    tls_env: tuple[PlatformEnv, int, list[BrokerRefusal]], tmp_path: Path
) -> None:
    env, port, refusals = tls_env
    certs = env.platform.certificates
    ca = await asyncio.to_thread(certs.tenant_ca, "acme")
    server_ca = certs.server_identity().ca_file
    good = await asyncio.to_thread(enrol, ca, "pump-1", tmp_path / "dev")
    revoked = await asyncio.to_thread(enrol, ca, "pump-2", tmp_path / "dev")
    await certs.revoke("acme", revoked.serial, broker=env.platform.broker)
    expired = await asyncio.to_thread(expired_certificate, ca.directory, "c-1", tmp_path)
    foreign = await asyncio.to_thread(foreign_certificate, tmp_path, "acme", "c-2")

    # Good: the certificate alone logs the device in; its telemetry is stored.
    async with tls_client(port, "pump-1", server_ca, good) as pump:
        await pump.publish(topic("pump-1"), sample(3.0), qos=1)

        async def stored() -> bool:
            return await env.stored() >= 1

        await env.wait_for(stored)
        sessions = env.platform.broker.certificate_sessions()  # type: ignore[union-attr]
        assert sessions == {"pump-1": ("acme", good.serial)}

    await refused_connect(tls_client(port, "pump-2", server_ca, revoked))
    await refused_connect(tls_client(port, "c-1", server_ca, expired))
    await refused_connect(tls_client(port, "c-2", server_ca, foreign))
    await refused_connect(tls_client(port, "anon", server_ca, None))
    await wait_until(lambda: len(refusals) >= 4, "four refusals reported")
    kinds = [r.kind for r in refusals]
    assert kinds == [
        "certificate_revoked",
        "certificate_expired",
        "certificate_foreign",
        "certificate_unknown",
    ]
    assert refusals[0].device_id == "pump-2"
    assert refusals[0].tenant_id == "acme"
    assert all(r.source.startswith("127.0.0.1:") for r in refusals)
    assert "no client certificate" in refusals[3].detail
    metrics = (await env.api.get("/metrics")).text
    assert 'tiangong_broker_refusals_total{kind="certificate_revoked"} 1.0' in metrics
    assert 'tiangong_broker_refusals_total{kind="certificate_foreign"} 1.0' in metrics


async def test_certificate_from_another_tenants_ca_is_foreign(
    tls_env: tuple[PlatformEnv, int, list[BrokerRefusal]], tmp_path: Path
) -> None:
    # Tenant "other" has a CA the broker trusts; its CA signs a certificate naming acme's
    # pump-1. The handshake passes (the bundle trusts every tenant CA); the identity check
    # does not.
    env, port, refusals = tls_env
    certs = env.platform.certificates
    other = await asyncio.to_thread(certs.tenant_ca, "other")
    server_ca = certs.server_identity().ca_file
    impostor = await asyncio.to_thread(enrol, other, "pump-1", tmp_path / "impostor")
    await refused_connect(tls_client(port, "pump-1", server_ca, impostor))
    await wait_until(lambda: len(refusals) >= 1, "the refusal reported")
    assert refusals[0].kind == "certificate_foreign"
    assert refusals[0].tenant_id == "other"
    # A device of its own tenant connects with a certificate of a CA created after the start.
    own = await asyncio.to_thread(enrol, other, "o-pump", tmp_path / "own")
    async with tls_client(port, "o-pump", server_ca, own) as client:
        await client.publish(topic("o-pump", tenant="other"), sample(1.0), qos=1)


async def test_certificate_identity_topic_authorization(
    tls_env: tuple[PlatformEnv, int, list[BrokerRefusal]], tmp_path: Path
) -> None:
    env, port, refusals = tls_env
    certs = env.platform.certificates
    ca = await asyncio.to_thread(certs.tenant_ca, "acme")
    server_ca = certs.server_identity().ca_file
    good = await asyncio.to_thread(enrol, ca, "pump-1", tmp_path / "dev")
    async with tls_client(port, "pump-1", server_ca, good) as pump:
        await pump.publish(topic("pump-1"), sample(1.0), qos=1)
        await pump.publish(topic("pump-2"), sample(2.0), qos=1)  # another device's topic
        await pump.publish(topic("o-pump", tenant="other"), sample(3.0), qos=1)  # other tenant
        for denied in ("#", f"{ROOT}/other/#", topic("pump-2", Channel.COMMAND_REQUEST)):
            with pytest.raises(MqttError):
                await pump.subscribe(Subscription(denied, qos=1))
        # Its own command topic is allowed.
        await pump.subscribe(Subscription(topic("pump-1", Channel.COMMAND_REQUEST), qos=1))
    await wait_until(lambda: len(refusals) >= 5, "five topic refusals")
    assert sorted((r.kind, r.topic) for r in refusals) == sorted(
        [
            ("topic_publish", topic("pump-2")),
            ("topic_publish", topic("o-pump", tenant="other")),
            ("topic_subscribe", "#"),
            ("topic_subscribe", f"{ROOT}/other/#"),
            ("topic_subscribe", topic("pump-2", Channel.COMMAND_REQUEST)),
        ]
    )
    assert {r.device_id for r in refusals} == {"pump-1"}
    assert await env.platform.store.device_series("acme", "pump-2") == {}


async def test_revocation_ends_the_live_session(
    tls_env: tuple[PlatformEnv, int, list[BrokerRefusal]], tmp_path: Path
) -> None:
    env, port, refusals = tls_env
    certs = env.platform.certificates
    ca = await asyncio.to_thread(certs.tenant_ca, "acme")
    server_ca = certs.server_identity().ca_file
    pump1 = await asyncio.to_thread(enrol, ca, "pump-1", tmp_path / "dev")
    pump2 = await asyncio.to_thread(enrol, ca, "pump-2", tmp_path / "dev")

    # Through the platform (what the API does): the session ends at once.
    async with tls_client(port, "pump-1", server_ca, pump1) as client:
        assert client.connected
        done = await certs.revoke("acme", pump1.serial, broker=env.platform.broker)
        assert done.serials == [pump1.serial]
        assert done.sessions_ended == 1
        await wait_until(lambda: not client.connected, "pump-1 disconnected")
    await refused_connect(tls_client(port, "pump-1", server_ca, pump1))

    # Behind the platform's back (another process sharing the CA directory): the periodic
    # check (mqtt_revocation_check, 0.5 s here) finds it.
    async with tls_client(port, "pump-2", server_ca, pump2) as client:
        with TenantCA.open(ca.directory) as elsewhere:
            elsewhere.revoke(pump2.serial)
        await wait_until(lambda: not client.connected, "pump-2 disconnected by the sweep")
    assert env.platform.broker.certificate_sessions() == {}  # type: ignore[union-attr]
    assert [r.kind for r in refusals] == ["certificate_revoked"]


async def test_require_certificates_turns_password_logins_off(tmp_path: Path) -> None:
    async with running_platform(
        tmp_path,
        embedded_broker=True,
        sparkplug_enabled=False,
        mqtt_tls_port=free_port(),
        mqtt_require_certificates=True,
    ) as env:
        refusals: list[BrokerRefusal] = []
        env.platform.authority.add_refusal_listener(refusals.append)
        with pytest.raises(MqttError):
            async with env.client("pump-1", version=ProtocolVersion.V311, reconnect=False):
                pass
        assert refusals[0].kind == "credentials"
        assert "mqtt_require_certificates" in refusals[0].detail
        # The platform's own ingest connection still works (it is connected: the fixture
        # waited for it).
        assert env.platform.mqtt is not None
        assert env.platform.mqtt.connected


# -- Mosquitto ------------------------------------------------------------------------------------


@dataclass
class TlsMosquitto:
    proc: asyncio.subprocess.Process
    port: int
    plain_port: int
    server_ca: Path
    files: dict[str, Path]
    workdir: Path

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


SERVICE_SECRET = "service-secret-for-this-test-only"


def mosquitto_conf(workdir: Path, plain_port: int, acl: Path, passwd: Path, extra: str) -> Path:
    """A mosquitto.conf: no anonymous users, ``acl`` and ``passwd``, a password listener on
    ``plain_port``, a log file in ``workdir``, and ``extra`` (the TLS listener)."""
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"user {getpass.getuser()}\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"acl_file {acl}\n"
        f"password_file {passwd}\n"
        f"listener {plain_port} 127.0.0.1\n"
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        f"log_dest file {workdir / 'mosquitto.log'}\n" + extra
    )
    return conf


def require_mosquitto() -> str:
    """The mosquitto binary, or the test fails (CI) or is skipped (elsewhere)."""
    binary = mosquitto_binary()
    if binary is None:
        unavailable("mosquitto binary not installed (Debian package 'mosquitto')")
    assert binary is not None
    return binary


@contextlib.asynccontextmanager
async def mosquitto_running(conf: Path, *ports: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """Mosquitto on ``conf``, once it listens on ``ports``; terminated on the way out."""
    binary = require_mosquitto()
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-c",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for port in ports:
            await asyncio.to_thread(wait_port, port)
        yield proc
    finally:
        proc.terminate()
        await proc.wait()


def write_mosquitto_files(
    certs: PlatformCertificates, registry: object, workdir: Path, port: int, plain_port: int
) -> dict[str, Path]:
    """What `tiangong broker mosquitto-files --tls-port` writes, plus a password listener for
    the platform's service user (which sends commands)."""
    files = certs.write_mosquitto_tls(workdir / "tls")
    certified = certs.certified_devices(registry)  # type: ignore[arg-type]
    (workdir / "acl").write_text(
        render_acl([], service_users=["tiangong-platform"], certificate_devices=certified)
    )
    (workdir / "passwd").write_text(
        render_passwd([("tiangong-platform", hash_device_secret(SERVICE_SECRET))])
    )
    (workdir / "passwd").chmod(0o600)
    listener = render_tls_listener(
        port=port,
        bind="127.0.0.1",
        cafile=str(files["cafile"]),
        certfile=str(files["certfile"]),
        keyfile=str(files["keyfile"]),
        crlfile=str(files["crlfile"]),
    )
    mosquitto_conf(workdir, plain_port, workdir / "acl", workdir / "passwd", listener)
    return files


@pytest.fixture
async def mosquitto_tls(tmp_path: Path) -> AsyncIterator[tuple[PlatformEnv, TlsMosquitto]]:
    require_mosquitto()  # before the platform starts
    # The platform only provides the registry and the CAs here: no broker of its own.
    async with registry_platform(tmp_path) as env:
        certs = env.platform.certificates
        ca = await asyncio.to_thread(certs.tenant_ca, "acme")
        await asyncio.to_thread(certs.tenant_ca, "other")
        devices = tmp_path / "dev"
        for device in ("pump-1", "pump-2"):
            await asyncio.to_thread(enrol, ca, device, devices)
        workdir = tmp_path / "mosquitto"
        workdir.mkdir()
        port, plain_port = free_port(), free_port()
        files = write_mosquitto_files(certs, env.platform.registry, workdir, port, plain_port)
        async with mosquitto_running(workdir / "mosquitto.conf", port, plain_port) as proc:
            yield env, TlsMosquitto(proc, port, plain_port, files["server_ca"], files, workdir)


def device_files(tmp_path: Path, device: str) -> DeviceFiles:
    cert = tmp_path / "dev" / f"{device}.pem"
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    return DeviceFiles(cert, tmp_path / "dev" / f"{device}.key", serial)


async def test_mosquitto_good_expired_revoked_foreign_and_none(
    mosquitto_tls: tuple[PlatformEnv, TlsMosquitto], tmp_path: Path
) -> None:
    env, broker = mosquitto_tls
    certs = env.platform.certificates
    ca = certs.tenant_ca("acme")
    pump1, pump2 = device_files(tmp_path, "pump-1"), device_files(tmp_path, "pump-2")
    v5 = {"version": ProtocolVersion.V5}
    expired = await asyncio.to_thread(expired_certificate, ca.directory, "c-1", tmp_path)
    foreign = await asyncio.to_thread(foreign_certificate, tmp_path, "acme", "c-2")
    other = await asyncio.to_thread(certs.tenant_ca, "other")
    impostor = await asyncio.to_thread(enrol, other, "pump-1", tmp_path / "impostor")

    async with tls_client(broker.port, "pump-1", broker.server_ca, pump1, **v5) as client:
        await client.publish(topic("pump-1"), sample(1.0), qos=1)
        # Topic authorization through the generated ACL: MQTT 5 PUBACK says "not authorized".
        with pytest.raises(MqttError):
            await client.publish(topic("pump-2"), sample(1.0), qos=1)
        with pytest.raises(MqttError):
            await client.publish(topic("o-pump", tenant="other"), sample(1.0), qos=1)
        # Mosquitto grants a subscription to "#" and applies the read rules to every message:
        # of pump-2's telemetry and pump-1's command, only the command arrives.
        await client.subscribe(Subscription("#", qos=1))
        async with tls_client(broker.port, "pump-2", broker.server_ca, pump2, **v5) as pump:
            await pump.publish(topic("pump-2"), sample(1.0), qos=1)
        async with MqttClient(
            host="127.0.0.1",
            port=broker.plain_port,
            client_id="service",
            username="tiangong-platform",
            password=SERVICE_SECRET,
            reconnect=False,
        ) as service:
            await service.publish(topic("pump-1", Channel.COMMAND_REQUEST), b"{}", qos=1)
        async with asyncio.timeout(10):
            first = await client.next_message()
        assert first.topic == topic("pump-1", Channel.COMMAND_REQUEST)
    await refused_connect(tls_client(broker.port, "c-1", broker.server_ca, expired, **v5))
    await refused_connect(tls_client(broker.port, "c-2", broker.server_ca, foreign, **v5))
    await refused_connect(tls_client(broker.port, "anon", broker.server_ca, None, **v5))

    # Another tenant's CA naming acme's pump-1: Mosquitto accepts the certificate (the
    # bundle trusts both CAs), but its identity "O=other,CN=pump-1" owns no topic of acme's.
    async with tls_client(broker.port, "imp", broker.server_ca, impostor, **v5) as client:
        with pytest.raises(MqttError):
            await client.publish(topic("pump-1"), sample(9.0), qos=1)

    # Revocation: pump-2 connected, then its only certificate is revoked and the files are
    # written again. Until SIGHUP nothing changes; after it, new connections are refused and
    # the ACL no longer names the identity, so the open session cannot publish any more.
    async with tls_client(broker.port, "pump-2", broker.server_ca, pump2, **v5) as live:
        await live.publish(topic("pump-2"), sample(1.0), qos=1)
        ca.revoke(pump2.serial)
        write_mosquitto_files(
            certs, env.platform.registry, broker.workdir, broker.port, broker.plain_port
        )
        async with tls_client(broker.port, "pump-2b", broker.server_ca, pump2, **v5) as before:
            await before.publish(topic("pump-2"), sample(2.0), qos=1)  # not reloaded yet
        marks = broker.log().count("Reloading config")
        broker.reload()
        await wait_until(lambda: broker.log().count("Reloading config") > marks, "the reload")
        await refused_connect(tls_client(broker.port, "pump-2c", broker.server_ca, pump2, **v5))
        assert live.connected  # Mosquitto keeps sessions open across a reload...
        with pytest.raises(MqttError):  # ...but the identity has lost its topics
            await live.publish(topic("pump-2"), sample(3.0), qos=1)
    # The device with a valid certificate is unaffected by all of this.
    async with tls_client(broker.port, "pump-1", broker.server_ca, pump1, **v5) as client:
        await client.publish(topic("pump-1"), sample(4.0), qos=1)


async def test_mosquitto_files_command_writes_the_tls_listener(tmp_path: Path) -> None:
    async with registry_platform(tmp_path) as env:
        certs = env.platform.certificates
        ca = await asyncio.to_thread(certs.tenant_ca, "acme")
        await asyncio.to_thread(enrol, ca, "pump-1", tmp_path / "dev")
        out = tmp_path / "mosquitto-files"
        args = ["broker", "mosquitto-files", "--out", str(out), "--tls-port", "8884"]
        args += ["--data-dir", str(tmp_path / "data")]
        result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    acl = (out / "acl").read_text()
    assert "user O=acme,CN=pump-1\n" in acl
    assert "user O=acme,CN=pump-2\n" not in acl  # no certificate, no certificate identity
    listener = (out / "tls-listener.conf").read_text()
    assert listener.startswith("listener 8884 ")
    assert "require_certificate true\nuse_subject_as_username true\n" in listener
    # Group-readable for Mosquitto's user, never by others.
    assert (out / "tls" / "server-key.pem").stat().st_mode & 0o777 == 0o640
    assert (out / "passwd").stat().st_mode & 0o777 == 0o640
    crl = x509.load_pem_x509_crl((out / "tls" / "crl.pem").read_bytes())
    assert crl.issuer == ca.certificate.subject


# -- a Mosquitto kept in step by the platform --------------------------------------------------


async def test_platform_keeps_mosquitto_in_step_without_an_operator(tmp_path: Path) -> None:
    """TIANGONG_MOSQUITTO_FILES: the platform writes Mosquitto's password file, ACL and TLS files
    and makes it reload (SIGHUP through its pid file) whenever they change. No step of the test
    writes a file or sends a signal: a new device can log in, a revoked certificate is refused
    and its open session muted, a decommissioned device is locked out, within seconds."""
    require_mosquitto()
    workdir = tmp_path / "mosquitto"
    files = workdir / "files"
    pid_file = workdir / "mosquitto.pid"
    tls_port, plain_port = free_port(), free_port()
    async with registry_platform(
        tmp_path,
        mosquitto_files=files,
        mosquitto_tls_port=tls_port,
        mosquitto_pid_file=pid_file,
        mosquitto_check=0.5,
    ) as env:
        keeper = env.platform.mosquitto
        assert keeper is not None
        # The devices' passwords (registered as the platform started), group-readable for
        # Mosquitto's user only. Mosquitto is not running yet: the reload waits for it.
        await wait_until(lambda: "pump-1:$7$" in (files / "passwd").read_text(), "passwd")
        assert (files / "passwd").stat().st_mode & 0o777 == 0o640
        assert "old-1" not in (files / "passwd").read_text()  # decommissioned
        assert not (files / "tls-listener.conf").exists()  # no tenant CA yet
        # The first certificates: the CA comes with them, and the TLS files follow.
        ca = await asyncio.to_thread(env.platform.certificates.tenant_ca, "acme")
        pump1 = await asyncio.to_thread(enrol, ca, "pump-1", tmp_path / "dev")
        pump2 = await asyncio.to_thread(enrol, ca, "pump-2", tmp_path / "dev")
        await wait_until((files / "tls-listener.conf").exists, "the TLS files")
        await wait_until(lambda: "O=acme,CN=pump-2" in (files / "acl").read_text(), "the ACL")
        # The platform's tls-listener.conf is included from its directory.
        extra = f"pid_file {pid_file}\ninclude_dir {files}\n"
        conf = mosquitto_conf(workdir, plain_port, files / "acl", files / "passwd", extra)
        async with mosquitto_running(conf, tls_port, plain_port):
            server_ca = files / "tls" / "server-ca.pem"
            v5 = {"version": ProtocolVersion.V5}

            def log() -> str:
                return (workdir / "mosquitto.log").read_text(errors="replace")

            def password_client(device: str, secret: str) -> MqttClient:
                return MqttClient(
                    host="127.0.0.1",
                    port=plain_port,
                    client_id=device,
                    username=device,
                    password=secret,
                    reconnect=False,
                    connect_timeout=5,
                )

            # A device registered while Mosquitto runs can log in within seconds.
            registry = env.platform.registry
            _, secret = await registry.register_device(
                tenant_id="acme", site_id="p1", device_id="pump-9", model_id="pump"
            )

            async def logs_in(device: str, password: str) -> bool:
                try:
                    async with password_client(device, password) as client:
                        await client.publish(topic(device), sample(1.0), qos=1)
                except (MqttError, OSError):
                    return False
                return True

            async with asyncio.timeout(15):
                while not await logs_in("pump-9", secret):
                    await asyncio.sleep(0.2)

            # Revocation through the API while pump-2 is connected: the request itself has the
            # files written and Mosquitto reloaded.
            async with tls_client(tls_port, "pump-2", server_ca, pump2, **v5) as live:
                await live.publish(topic("pump-2"), sample(1.0), qos=1)
                reloads = log().count("Reloading config")
                answer = await env.api.post(f"/api/v1/certificates/{pump2.serial:x}/revoke")
                assert answer.status_code == 200, answer.text
                await wait_until(lambda: log().count("Reloading config") > reloads, "a reload")
                await refused_connect(tls_client(tls_port, "pump-2b", server_ca, pump2, **v5))
                with pytest.raises(MqttError):  # the open session has lost its topics
                    await live.publish(topic("pump-2"), sample(2.0), qos=1)
            async with tls_client(tls_port, "pump-1", server_ca, pump1, **v5) as client:
                await client.publish(topic("pump-1"), sample(3.0), qos=1)

            # Decommissioned: locked out at the next look.
            await registry.apply_lifecycle("pump-9", LifecycleTrigger.DECOMMISSION, reason="t")
            async with asyncio.timeout(15):
                while await logs_in("pump-9", secret):
                    await asyncio.sleep(0.2)
            assert keeper.stats.reload_failures > 0  # before Mosquitto ran
            assert keeper.stats.reloads >= 3  # the first, the revocation, the decommission
            assert not keeper.reload_pending

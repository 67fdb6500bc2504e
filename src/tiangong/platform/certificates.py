"""The platform's certificate authorities: one per tenant for devices, one for its own servers.

Layout under the data directory::

    ca/<tenant>/            the tenant's device CA (``security.ca.TenantCA``), created on demand
    server-tls/ca.pem       the platform's server CA (devices trust it to reach the broker)
    server-tls/ca-key.pem   its key (0600)
    server-tls/server.pem   the broker's TLS certificate (serverAuth; SAN: localhost, 127.0.0.1
                            and the configured host names), reissued when it nears expiry or the
                            names change
    server-tls/server-key.pem

A broker verifying devices of every tenant trusts the bundle of all tenant CAs
(:meth:`PlatformCertificates.ca_bundle_pem`); that a certificate belongs to the tenant it
names is then checked against that tenant's own CA and register on every connect (see
``platform.broker_access``), so one tenant's CA can never vouch for another tenant's device.

The methods block (files, SQLite, signing); async code calls them through
``asyncio.to_thread`` except for the cheap lookups the broker makes on connect.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import secrets
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiangong.files import atomic_write
from tiangong.network.access.topics import is_valid_name
from tiangong.platform.model import DeviceState
from tiangong.security.ca import (
    CA_CERT_FILE,
    CertificateAuthorityError,
    CertificateRecord,
    TenantCA,
)
from tiangong.security.credentials import write_secret_file

if TYPE_CHECKING:
    from tiangong.network.broker import EmbeddedBroker
    from tiangong.platform.registry import DeviceRegistry

__all__ = [
    "BROKER_SECRET_MODE",
    "PlatformCertificates",
    "Revocation",
    "ServerIdentity",
]

_log = logging.getLogger(__name__)

#: The broker's private key and password file: the owner writes, the group (Mosquitto's) reads.
BROKER_SECRET_MODE: Final = 0o640
_SERVER_DIR: Final = "server-tls"
_SERVER_VALIDITY: Final = dt.timedelta(days=397)  # the CA/B Forum ceiling for server certs
_SERVER_RENEW_BEFORE: Final = dt.timedelta(days=30)
_BACKDATE: Final = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """The files of the broker's TLS identity.

    Attributes:
        ca_file: The server CA certificate (what devices trust to reach the broker).
        cert_file: The server certificate.
        key_file: Its private key (0600).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class Revocation:
    """What a revocation did.

    Attributes:
        serials: The serials newly revoked (empty if they already were).
        sessions_ended: Live broker sessions that used them and were ended.
    """

    serials: list[int]
    sessions_ended: int


def _names_san(hostnames: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys(["localhost", "127.0.0.1", *hostnames]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return names


class PlatformCertificates:
    """The tenants' device CAs and the platform's server identity, kept in ``directory``.

    Args:
        directory: The platform's data directory (CAs live below it).
        server_hostnames: Names the broker's certificate must also be valid for.
        device_validity: Lifetime of device certificates.
        renewal_window: How long before expiry a device may rotate.
        clock: The current time (aware); tests pass a controllable one.
    """

    def __init__(
        self,
        directory: Path,
        *,
        server_hostnames: Sequence[str] = (),
        device_validity: dt.timedelta = dt.timedelta(days=365),
        renewal_window: dt.timedelta = dt.timedelta(days=30),
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.ca_root = directory / "ca"
        self.server_dir = directory / _SERVER_DIR
        self.server_hostnames = list(server_hostnames)
        self._options: dict[str, object] = {
            "device_validity": device_validity,
            "renewal_window": renewal_window,
        }
        if clock is not None:
            self._options["clock"] = clock
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._cas: dict[str, TenantCA] = {}
        self._lock = threading.Lock()
        self._new_ca_listeners: list[Callable[[TenantCA], None]] = []

    # -- tenant CAs ------------------------------------------------------------------------------

    def add_new_ca_listener(self, listener: Callable[[TenantCA], None]) -> None:
        """Call ``listener`` with every tenant CA created from now on (brokers trust it)."""
        self._new_ca_listeners.append(listener)

    def tenants(self) -> list[str]:
        """Tenants that have a CA."""
        if not self.ca_root.is_dir():
            return []
        return sorted(p.name for p in self.ca_root.iterdir() if (p / CA_CERT_FILE).is_file())

    def existing_ca(self, tenant_id: str) -> TenantCA | None:
        """The tenant's CA if it has one (never creates one: a connect must not)."""
        if not is_valid_name(tenant_id):
            return None
        with self._lock:
            ca = self._cas.get(tenant_id)
            if ca is not None:
                return ca
            directory = self.ca_root / tenant_id
            if not (directory / CA_CERT_FILE).is_file():
                return None
            ca = TenantCA.open(directory, **self._options)  # type: ignore[arg-type]
            self._cas[tenant_id] = ca
            return ca

    def tenant_ca(self, tenant_id: str) -> TenantCA:
        """The tenant's CA, created on first use.

        Raises:
            ValueError: ``tenant_id`` is not a valid platform name.
            CertificateAuthorityError: The CA directory is damaged or unsafe.
        """
        ca = self.existing_ca(tenant_id)
        if ca is not None:
            return ca
        with self._lock:
            ca = self._cas.get(tenant_id)
            if ca is None:
                ca = TenantCA.create(
                    self.ca_root / tenant_id,
                    tenant_id,
                    **self._options,  # type: ignore[arg-type]
                )
                self._cas[tenant_id] = ca
                _log.info("certificates: created the device CA of tenant %s", tenant_id)
                created = True
            else:
                created = False
        if created:
            for listener in self._new_ca_listeners:
                listener(ca)
        return ca

    def ca_bundle_pem(self) -> bytes:
        """Every tenant's CA certificate, concatenated: what brokers verify devices against."""
        return b"".join((self.ca_root / t / CA_CERT_FILE).read_bytes() for t in self.tenants())

    def crl_bundle_pem(self) -> bytes:
        """A fresh CRL of every tenant CA, concatenated (OpenSSL wants one per CA it trusts)."""
        out = b""
        for tenant in self.tenants():
            ca = self.existing_ca(tenant)
            if ca is not None:
                out += ca.crl_pem()
        return out

    def find_certificate(
        self, serial: int, tenants: Iterable[str] | None = None
    ) -> tuple[str, CertificateRecord] | None:
        """The tenant and register row of certificate ``serial``, searching ``tenants`` (or all)."""
        for tenant in self.tenants() if tenants is None else tenants:
            ca = self.existing_ca(tenant)
            if ca is None:
                continue
            for record in ca.certificates():
                if record.serial == serial:
                    return tenant, record
        return None

    async def revoke(
        self,
        tenant_id: str,
        serial_or_device: int | str,
        *,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
        broker: EmbeddedBroker | None = None,
    ) -> Revocation:
        """Revoke a certificate (or all of a device's) and end the sessions that used it."""
        import asyncio  # noqa: PLC0415 - the rest of this module is synchronous

        ca = self.existing_ca(tenant_id)
        if ca is None:
            return Revocation([], 0)
        serials = await asyncio.to_thread(ca.revoke, serial_or_device, reason)
        ended = 0
        if broker is not None and serials:
            ended = await broker.disconnect_certificates(tenant_id, serials)
        _log.info("certificates: %d revoked, %d live sessions ended", len(serials), ended)
        return Revocation(serials, ended)

    async def sweep(self, broker: EmbeddedBroker) -> int:
        """End broker sessions whose certificate was revoked elsewhere or has expired since.

        Revocations through the API end sessions at once; this catches those made by another
        process sharing the CA directory (``TenantCA`` reads its register on every call) and
        certificates that expire during a long session.

        Returns:
            The number of sessions ended.
        """
        import asyncio  # noqa: PLC0415

        by_tenant: dict[str | None, set[int]] = {}
        for tenant, serial in broker.certificate_sessions().values():
            by_tenant.setdefault(tenant, set()).add(serial)
        ended = 0
        now = self._clock()
        for tenant, serials in by_tenant.items():
            ca = self.existing_ca(tenant) if tenant is not None else None
            if ca is None:
                continue
            records = await asyncio.to_thread(ca.certificates)
            gone = {
                r.serial
                for r in records
                if r.serial in serials and (r.revoked_at is not None or r.not_after <= now)
            }
            if gone:
                ended += await broker.disconnect_certificates(tenant, gone)
        return ended

    def certified_devices(self, registry: DeviceRegistry) -> list[tuple[str, str, str]]:
        """(tenant, site, device) of registered, active devices holding a valid certificate.

        What a generated Mosquitto ACL gives a certificate identity: a device whose
        certificates are all revoked or expired is left out, so after the next SIGHUP even
        its open session can no longer publish or receive.
        """
        now = self._clock()
        out = []
        for tenant in self.tenants():
            ca = self.existing_ca(tenant)
            if ca is None:
                continue
            valid = {
                r.device_id
                for r in ca.certificates()
                if r.revoked_at is None and r.not_before <= now < r.not_after
            }
            for device_id in sorted(valid):
                entry = registry.lookup(device_id)
                if entry is None or entry.device.tenant_id != tenant:
                    continue
                if entry.device.state is DeviceState.DECOMMISSIONED:
                    continue
                out.append((tenant, entry.device.site_id, device_id))
        return out

    def close(self) -> None:
        """Close every open CA."""
        with self._lock:
            for ca in self._cas.values():
                ca.close()
            self._cas.clear()

    # -- the server identity ---------------------------------------------------------------------

    def server_identity(self) -> ServerIdentity:
        """The broker's TLS identity, created or reissued as needed.

        A new certificate is issued when there is none, when it expires within 30 days, or
        when the configured host names changed.
        """
        ident = ServerIdentity(
            ca_file=self.server_dir / "ca.pem",
            cert_file=self.server_dir / "server.pem",
            key_file=self.server_dir / "server-key.pem",
        )
        with self._lock:
            ca_key, ca_cert = self._server_ca()
            if self._server_cert_current(ident, ca_cert):
                return ident
            key = ec.generate_private_key(ec.SECP256R1())
            now = self._clock()
            cert = (
                x509.CertificateBuilder()
                .subject_name(
                    x509.Name(
                        [
                            x509.NameAttribute(NameOID.COMMON_NAME, "Tiangong MQTT broker"),
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tiangong"),
                        ]
                    )
                )
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(secrets.randbits(127) | 1)
                .not_valid_before(now - _BACKDATE)
                .not_valid_after(min(now + _SERVER_VALIDITY, ca_cert.not_valid_after_utc))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
                )
                .add_extension(
                    x509.SubjectAlternativeName(_names_san(self.server_hostnames)), critical=False
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                    critical=False,
                )
                .sign(ca_key, hashes.SHA256())
            )
            write_secret_file(ident.key_file, _key_pem(key))
            ident.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            _log.info("certificates: issued the broker's server certificate")
            return ident

    def _server_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key_path, cert_path = self.server_dir / "ca-key.pem", self.server_dir / "ca.pem"
        if key_path.is_file() and cert_path.is_file():
            if key_path.stat().st_mode & 0o077:
                raise CertificateAuthorityError(f"{key_path} is accessible by group or others")
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise CertificateAuthorityError(f"{key_path} is not an EC key")
            return loaded, x509.load_pem_x509_certificate(cert_path.read_bytes())
        self.server_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = self._clock()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "Tiangong server CA"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tiangong"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(secrets.randbits(127) | 1)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_secret_file(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _log.info("certificates: created the platform's server CA in %s", self.server_dir)
        return key, cert

    def _server_cert_current(self, ident: ServerIdentity, ca_cert: x509.Certificate) -> bool:
        if not (ident.cert_file.is_file() and ident.key_file.is_file()):
            return False
        cert = x509.load_pem_x509_certificate(ident.cert_file.read_bytes())
        if cert.issuer != ca_cert.subject:
            return False
        if cert.not_valid_after_utc - _SERVER_RENEW_BEFORE <= self._clock():
            return False
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        return set(san) == set(_names_san(self.server_hostnames))

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context for the broker: our identity, client certificates required.

        Clients must chain to one of the tenant CAs; CAs created later are added to the same
        context as they are created, so a new tenant's devices connect without a restart.
        """
        ident = self.server_identity()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(ident.cert_file, ident.key_file)
        context.verify_mode = ssl.CERT_REQUIRED
        bundle = self.ca_bundle_pem()
        if bundle:
            context.load_verify_locations(cadata=bundle.decode("ascii"))

        def trust(ca: TenantCA) -> None:
            context.load_verify_locations(cadata=ca.certificate_pem().decode("ascii"))

        self.add_new_ca_listener(trust)
        return context

    # -- Mosquitto -------------------------------------------------------------------------------

    def write_mosquitto_tls(self, out: Path) -> dict[str, Path]:
        """Write what a Mosquitto TLS listener needs into ``out``.

        ``ca-bundle.pem`` (the tenants' CAs), ``crl.pem`` (a fresh CRL of each), and the
        broker's ``server.pem``/``server-key.pem``/``server-ca.pem``. The CRLs are valid for an
        hour (``TenantCA.crl_validity``): write again at least every half hour (and after every
        revocation) and send Mosquitto SIGHUP, or OpenSSL refuses every client once a CRL's
        ``nextUpdate`` has passed.

        Returns:
            The paths by role: ``cafile``, ``crlfile``, ``certfile``, ``keyfile``, ``server_ca``.
        """
        out.mkdir(parents=True, exist_ok=True)
        ident = self.server_identity()
        paths = {
            "cafile": out / "ca-bundle.pem",
            "crlfile": out / "crl.pem",
            "certfile": out / "server.pem",
            "keyfile": out / "server-key.pem",
            "server_ca": out / "server-ca.pem",
        }
        atomic_write(paths["cafile"], self.ca_bundle_pem())
        atomic_write(paths["crlfile"], self.crl_bundle_pem())
        atomic_write(paths["certfile"], ident.cert_file.read_bytes())
        atomic_write(paths["server_ca"], ident.ca_file.read_bytes())
        # Group-readable: Mosquitto runs as its own user; give the directory its group.
        atomic_write(paths["keyfile"], ident.key_file.read_bytes(), mode=BROKER_SECRET_MODE)
        return paths


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")

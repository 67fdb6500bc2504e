"""The platform's answer to the embedded broker: who a client is, and device presence.

Devices log in either with user name = device name and password = the secret issued at
registration (the plain listener), or with the client certificate their tenant's CA issued
them (the TLS listener; see ``platform.certificates``). Decommissioned devices, wrong secrets,
and unknown, revoked, expired or foreign certificates are refused, each with its own reason.
With ``mqtt_require_certificates`` set, device passwords are refused altogether. The platform's
own ingest connection logs in as a service account whose secret is generated at each start and
never leaves the process. Connects and disconnects seen by the broker become lifecycle changes
(the same changes that status messages and last wills cause on external brokers).

Every refusal becomes one ``BrokerRefusal``: counted in the metrics, logged, and handed to the
refusal listeners (the security monitor).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tiangong.network.access.authorization import Principal, Role
from tiangong.network.broker import BrokerRefusal, CertificateLogin
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.metrics import PlatformMetrics
from tiangong.platform.model import DeviceState
from tiangong.platform.registry import DeviceRegistry
from tiangong.security.ca import CertificateRejected, RejectionReason
from tiangong.security.credentials import generate_secret

if TYPE_CHECKING:
    from tiangong.platform.certificates import PlatformCertificates

__all__ = ["SERVICE_USER", "RefusalListener", "RegistryBrokerAuthority", "certificate_identity"]

_log = logging.getLogger(__name__)

#: User name of the platform's own MQTT connection.
SERVICE_USER: Final = "tiangong-platform"

RefusalListener = Callable[[BrokerRefusal], None]

_REJECTION_KINDS: Final = {
    RejectionReason.MALFORMED: "certificate_unknown",
    RejectionReason.UNTRUSTED: "certificate_foreign",
    RejectionReason.UNKNOWN: "certificate_unknown",
    RejectionReason.NOT_YET_VALID: "certificate_expired",
    RejectionReason.EXPIRED: "certificate_expired",
    RejectionReason.REVOKED: "certificate_revoked",
    RejectionReason.NOT_CLIENT_CERTIFICATE: "certificate_unknown",
    RejectionReason.POLICY: "certificate_unknown",
}
_URN_PREFIX: Final = "urn:tiangong:"


def certificate_identity(cert: x509.Certificate) -> tuple[str | None, str | None]:
    """The (tenant, device) a device certificate claims: O and CN, confirmed by the SAN URI.

    Either is ``None`` when missing, or when the subject and the SAN URI disagree (a
    certificate our CA issued always has both, equal).
    """

    def first(oid: x509.ObjectIdentifier) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        value = values[0].value if values else None
        return value.decode() if isinstance(value, bytes) else value

    tenant = first(x509.NameOID.ORGANIZATION_NAME)
    device = first(x509.NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris and f"{_URN_PREFIX}{tenant}:{device}" not in uris:
        return None, None
    return tenant, device


class RegistryBrokerAuthority:
    """A ``BrokerAuthority`` backed by the device registry and the tenants' CAs.

    Args:
        registry: the device registry.
        metrics: the platform's metrics.
        certificates: the tenants' CAs (``None``: no TLS listener, certificates refused).
        require_certificates: refuse device password logins (the service account still logs in
            with its in-process secret).
    """

    def __init__(
        self,
        registry: DeviceRegistry,
        metrics: PlatformMetrics,
        *,
        certificates: PlatformCertificates | None = None,
        require_certificates: bool = False,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.certificates = certificates
        self.require_certificates = require_certificates
        self.service_secret = generate_secret()
        self.presence: asyncio.Queue[tuple[str, LifecycleTrigger, str]] = asyncio.Queue(10_000)
        self._refusal_listeners: list[RefusalListener] = []

    def add_refusal_listener(self, listener: RefusalListener) -> None:
        """Call ``listener`` (synchronously; it must not block) with every refusal."""
        self._refusal_listeners.append(listener)

    # -- authentication --------------------------------------------------------------------------

    def authenticate(
        self, username: str | None, password: str | None, *, source: str
    ) -> Principal | BrokerRefusal:
        """Check a client's user name and password."""

        def refuse(kind: str, detail: str, entry_tenant: str | None = None) -> BrokerRefusal:
            return BrokerRefusal(
                kind=kind,
                username=username,
                tenant_id=entry_tenant,
                device_id=username if entry_tenant else None,
                topic=None,
                source=source,
                detail=detail,
            )

        if not username or password is None:
            return refuse("credentials", "no user name or password")
        if username == SERVICE_USER:
            if password == self.service_secret:
                return Principal(username=username, role=Role.SERVICE)
            return refuse("credentials", "wrong password for the platform's service account")
        entry = self.registry.lookup(username)
        if entry is None:
            return refuse("credentials", "unknown device")
        device = entry.device
        if device.state is DeviceState.DECOMMISSIONED:
            return refuse("decommissioned", "the device is decommissioned", device.tenant_id)
        if self.require_certificates:
            return refuse(
                "credentials",
                "password logins are off (mqtt_require_certificates); use a client certificate",
                device.tenant_id,
            )
        if not self.registry.verify_secret(username, password):
            return refuse("credentials", "wrong password", device.tenant_id)
        return Principal(
            username=username,
            role=Role.DEVICE,
            tenant=device.tenant_id,
            site=device.site_id,
            device=device.id,
        )

    def authenticate_certificate(
        self, certificate_der: bytes, *, source: str
    ) -> CertificateLogin | BrokerRefusal:
        """Check a TLS client certificate against its tenant's CA register and the registry.

        The TLS handshake has already proven the client holds the key and that the certificate
        chains to one of the tenants' CAs; here the certificate must also be issued by the CA of
        the tenant it names, be in that CA's register, unrevoked and unexpired, and name a
        registered, not decommissioned device of that tenant.
        """
        try:
            cert = x509.load_der_x509_certificate(certificate_der)
        except ValueError as exc:
            return self._certificate_refusal("certificate_unknown", None, None, source, str(exc))
        tenant, device_id = certificate_identity(cert)
        if tenant is None or device_id is None:
            return self._certificate_refusal(
                "certificate_foreign",
                tenant,
                device_id,
                source,
                "the certificate's subject and SAN do not name a Tiangong device",
            )
        ca = self.certificates.existing_ca(tenant) if self.certificates is not None else None
        if ca is None:
            return self._certificate_refusal(
                "certificate_foreign", tenant, device_id, source, "no CA for this tenant"
            )
        try:
            verified = ca.verify_client(cert.public_bytes(serialization.Encoding.PEM))
        except CertificateRejected as exc:
            return self._certificate_refusal(
                _REJECTION_KINDS[exc.reason], tenant, device_id, source, str(exc)
            )
        entry = self.registry.lookup(device_id)
        if entry is None:
            return self._certificate_refusal(
                "certificate_unknown", tenant, device_id, source, "no such device in the registry"
            )
        if entry.device.tenant_id != tenant:
            return self._certificate_refusal(
                "certificate_foreign",
                tenant,
                device_id,
                source,
                f"the device belongs to another tenant than the CA of {tenant!r}",
            )
        device = entry.device
        if device.state is DeviceState.DECOMMISSIONED:
            return self._certificate_refusal(
                "decommissioned", tenant, device_id, source, "the device is decommissioned"
            )
        principal = Principal(
            username=device.id,
            role=Role.DEVICE,
            tenant=device.tenant_id,
            site=device.site_id,
            device=device.id,
        )
        return CertificateLogin(
            principal=principal, serial=verified.serial, not_after=verified.not_after
        )

    @staticmethod
    def _certificate_refusal(
        kind: str, tenant: str | None, device: str | None, source: str, detail: str
    ) -> BrokerRefusal:
        return BrokerRefusal(
            kind=kind,
            username=device,
            tenant_id=tenant,
            device_id=device,
            topic=None,
            source=source,
            detail=detail,
        )

    # -- presence and refusals -------------------------------------------------------------------

    def _presence(self, principal: Principal, trigger: LifecycleTrigger, reason: str) -> None:
        if principal.role is not Role.DEVICE or principal.device is None:
            return
        try:
            self.presence.put_nowait((principal.device, trigger, reason))
        except asyncio.QueueFull:
            _log.warning("presence queue full; %s of %s dropped", trigger, principal.device)

    def connected(self, principal: Principal) -> None:
        """A device connected to the embedded broker."""
        self._presence(principal, LifecycleTrigger.CONNECT, "mqtt connected")

    def disconnected(self, principal: Principal) -> None:
        """A device's connection ended."""
        self._presence(principal, LifecycleTrigger.DISCONNECT, "mqtt disconnected")

    def refused(self, refusal: BrokerRefusal) -> None:
        """Count, log and pass on a refusal."""
        self.metrics.broker_refusals.labels(refusal.kind).inc()
        if refusal.kind.startswith("topic_"):
            action = refusal.kind.removeprefix("topic_")
            self.metrics.broker_acl_denials.labels(action).inc()
            _log.warning(
                "broker: %s from %s refused %s on %r (not its topic)",
                refusal.username,
                refusal.source,
                action,
                refusal.topic,
            )
        else:
            self.metrics.broker_auth_failures.inc()
            _log.warning(
                "broker: refused connection of %r from %s: %s (%s)",
                refusal.username or "<anonymous>",
                refusal.source,
                refusal.kind,
                refusal.detail,
            )
        for listener in self._refusal_listeners:
            try:
                listener(refusal)
            except Exception:  # noqa: BLE001 - a listener's bug must not break the broker
                _log.exception("broker: refusal listener failed")

"""The platform's answer to the embedded broker: who a client is, and device presence.

Devices log in with user name = device name and password = the secret issued at
registration; decommissioned devices and wrong secrets are refused. The platform's own ingest
connection logs in as a service account whose secret is generated at each start and never
leaves the process. Connects and disconnects seen by the broker become lifecycle changes
(the same changes that status messages and last wills cause on external brokers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from tiangong.network.access.authorization import Principal, Role
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.metrics import PlatformMetrics
from tiangong.platform.registry import DeviceRegistry
from tiangong.security.credentials import generate_secret

__all__ = ["SERVICE_USER", "RegistryBrokerAuthority"]

_log = logging.getLogger(__name__)

#: User name of the platform's own MQTT connection.
SERVICE_USER: Final = "tiangong-platform"


class RegistryBrokerAuthority:
    """A ``BrokerAuthority`` backed by the device registry.

    Args:
        registry: the device registry.
        metrics: the platform's metrics.
    """

    def __init__(self, registry: DeviceRegistry, metrics: PlatformMetrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self.service_secret = generate_secret()
        self.presence: asyncio.Queue[tuple[str, LifecycleTrigger, str]] = asyncio.Queue(10_000)

    def authenticate(self, username: str | None, password: str | None) -> Principal | None:
        """Check a client's credentials."""
        if not username or password is None:
            return None
        if username == SERVICE_USER:
            if password == self.service_secret:
                return Principal(username=username, role=Role.SERVICE)
            return None
        if not self.registry.verify_secret(username, password):
            return None
        entry = self.registry.lookup(username)
        if entry is None:  # pragma: no cover - verify_secret found it a moment ago
            return None
        device = entry.device
        return Principal(
            username=username,
            role=Role.DEVICE,
            tenant=device.tenant_id,
            site=device.site_id,
            device=device.id,
        )

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

    def denied(self, principal: Principal | None, action: str, topic: str) -> None:
        """Count and log a refusal."""
        if action == "connect":
            self.metrics.broker_auth_failures.inc()
            _log.warning("broker: refused connection of %r (bad or revoked credentials)", topic)
            return
        self.metrics.broker_acl_denials.labels(action).inc()
        who = principal.username if principal else "?"
        _log.warning("broker: %s refused %s on %r (not its topic)", who, action, topic)

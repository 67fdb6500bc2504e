"""HTTP push adapter: devices that can only POST JSON to the gateway.

They call ``POST /push/<device id>`` on the gateway's listener with
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from tiangong.edge.adapters.base import DeviceReadings, ReadingSink
from tiangong.edge.adapters.pushed import PushedValues
from tiangong.edge.config import HttpDevice
from tiangong.edge.errors import CommandError, EdgeConfigError

__all__ = ["HttpAdapter"]


class HttpAdapter:
    """A device that pushes over HTTP.

    Args:
        config: the device's configuration.

    Raises:
        EdgeConfigError: the token's environment variable is not set.
    """

    polled = False

    def __init__(self, config: HttpDevice) -> None:
        self.config = config
        self.device_id = config.id
        self.poll_interval = min(5.0, config.stale_after_s / 2)
        token = os.environ.get(config.token_env)
        if not token or len(token) < 16:
            raise EdgeConfigError(
                "edge config",
                None,
                f"device {config.id!r}: environment variable {config.token_env} must hold its"
                " push token (at least 16 characters)",
            )
        self._token = token
        self.values = PushedValues(
            config.id, {p.property: p.field for p in config.points}, config.stale_after_s
        )
        self._props = [p.property for p in config.points]

    def authorized(self, presented: str) -> bool:
        """Whether a presented bearer token is the device's (constant-time comparison)."""
        return hmac.compare_digest(presented.encode(), self._token.encode())

    def push(self, payload: bytes) -> int:
        """Take a POSTed document; returns how many values it carried.

        Raises:
            CommandError: ``bad_payload`` for anything but JSON.
        """
        return self.values.accept(payload, self._props)

    async def connect(self, sink: ReadingSink) -> None:
        """Nothing to open: the device comes to us."""
        self.values.sink = sink

    async def read(self) -> DeviceReadings:
        """Prove the device alive (it pushed within ``stale_after_s``)."""
        return self.values.snapshot()

    async def write(self, prop: str, value: Any) -> None:
        """Push devices take no writes."""
        del value
        raise CommandError(prop, "not_writable", f"{self.device_id} is read-only (HTTP push)")

    async def call(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """Push devices take no commands."""
        del params
        raise CommandError(command, "unknown_command", f"{self.device_id} takes no commands")

    async def close(self) -> None:
        """Nothing to close."""
        self.values.sink = None

"""MQTT adapter: devices that publish JSON on a local broker the gateway subscribes to.

The local broker is the plant's own, not the platform's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from tiangong.edge.adapters.base import DeviceReadings, ReadingSink
from tiangong.edge.adapters.pushed import PushedValues
from tiangong.edge.config import MqttDevice
from tiangong.edge.errors import CommandError, DeviceRefusedError, DeviceUnreachableError
from tiangong.network.errors import ConnectRefusedError, MqttError
from tiangong.network.mqtt import MqttClient, Subscription

__all__ = ["MqttAdapter", "topic_matches"]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches an MQTT ``topic_filter`` (``+`` and ``#`` wildcards)."""
    filter_parts = topic_filter.split("/")
    topic_parts = topic.split("/")
    for i, part in enumerate(filter_parts):
        if part == "#":
            return True
        if i >= len(topic_parts) or (part != "+" and part != topic_parts[i]):
            return False
    return len(filter_parts) == len(topic_parts)


class MqttAdapter:
    """A device on a local MQTT broker.

    Args:
        config: the device's configuration.
    """

    polled = False

    def __init__(self, config: MqttDevice) -> None:
        self.config = config
        self.device_id = config.id
        self.poll_interval = min(5.0, config.stale_after_s / 2)
        self.values = PushedValues(
            config.id, {p.property: p.field for p in config.points}, config.stale_after_s
        )
        self.topics: dict[str, list[str]] = {}
        for point in config.points:
            self.topics.setdefault(point.topic, []).append(point.property)
        self._client: MqttClient | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, sink: ReadingSink) -> None:
        """Connect to the local broker and subscribe to the device's topics."""
        await self.close()
        self.values.sink = sink
        password = os.environ.get(self.config.password_env) if self.config.password_env else None
        client = MqttClient(
            host=self.config.host,
            port=self.config.port,
            client_id=f"tiangong-edge-{self.device_id}",
            username=self.config.username,
            password=password,
            reconnect=False,
        )
        try:
            await client.__aenter__()
        except ConnectRefusedError as exc:
            raise DeviceRefusedError(self.device_id, f"local broker refused us: {exc}") from exc
        except (OSError, MqttError) as exc:
            raise DeviceUnreachableError(self.device_id, f"local broker: {exc}") from exc
        self._client = client
        try:
            await client.subscribe(*(Subscription(t, qos=1) for t in self.topics))
        except MqttError as exc:
            await self.close()
            raise DeviceRefusedError(self.device_id, f"cannot subscribe: {exc}") from exc
        self._reader = asyncio.get_running_loop().create_task(
            self._read_messages(client), name=f"mqtt-device-{self.device_id}"
        )

    async def _read_messages(self, client: MqttClient) -> None:
        while True:
            message = await client.next_message()
            client.ack(message)
            for topic_filter, props in self.topics.items():
                if topic_matches(topic_filter, message.topic):
                    with contextlib.suppress(CommandError):  # counted in values.rejected
                        self.values.accept(message.payload, props)

    async def read(self) -> DeviceReadings:
        """Prove the device alive (it published within ``stale_after_s``)."""
        if self._client is None or not self._client.connected:
            raise DeviceUnreachableError(self.device_id, "local broker connection lost")
        return self.values.snapshot()

    async def write(self, prop: str, value: Any) -> None:
        """MQTT devices take no writes through the gateway."""
        del value
        raise CommandError(prop, "not_writable", f"{self.device_id} is read-only (MQTT)")

    async def call(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """MQTT devices take no commands through the gateway."""
        del params
        raise CommandError(command, "unknown_command", f"{self.device_id} takes no commands")

    async def close(self) -> None:
        """Disconnect."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

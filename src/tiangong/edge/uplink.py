"""The uplink: from the forward buffer to the platform's broker, and commands back.

Theory of operation
-------------------
Every frame is in the buffer before the uplink sees it (``ForwardBuffer.append`` returned its
sequence number). ``forwarding.ForwardQueue`` decides what goes next: **live** frames, handed over
as they are written, alternating with the **backlog** of buffered frames from before (an outage,
a restart), read oldest first; so after an outage the backlog drains in order at full speed and
live data still goes out at once. At most ``window`` frames are in flight (QoS 1, awaiting
PUBACK); a frame is deleted from the buffer only when acknowledged. While the broker is away the
MQTT client keeps the in-flight publishes and sends them again after reconnecting, so nothing is
lost; the platform recognises any frame delivered twice.

Status: the gateway's status topic carries ``{"state": "online", "devices": {id: "online" |
"offline"}}`` (retained), re-published when a device's availability changes; the MQTT will sets
``{"state": "offline"}``. Commands arrive on the gateway's ``cmd/req`` topic as
``{"id", "device", "command", "params"}`` and are answered on ``cmd/res`` with
``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"reason", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tiangong.edge.buffer import ForwardBuffer, StoredFrame
from tiangong.edge.config import EdgeConfig
from tiangong.edge.coordinator import LinkQuality
from tiangong.edge.errors import CommandError, EdgeConfigError
from tiangong.edge.forwarding import ForwardQueue
from tiangong.edge.link_meter import LinkMeter
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.errors import MqttError
from tiangong.network.mqtt import MqttClient, ProtocolVersion, Subscription, Will
from tiangong.network.mqtt.client import InboundMessage, client_tls_context

__all__ = ["CommandRequest", "Uplink", "parse_command", "uplink_tls_context"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command from the platform for a device behind the gateway."""

    id: str
    device: str
    command: str
    params: dict[str, Any]


CommandHandler = Callable[[CommandRequest], Awaitable[dict[str, Any]]]


def uplink_tls_context(config: EdgeConfig) -> ssl.SSLContext | None:
    """The TLS context of ``[uplink.tls]``, or ``None`` for a plain connection.

    Raises:
        EdgeConfigError: a file is missing or not what it should be.
    """
    tls = config.uplink.tls
    if tls is None:
        return None
    try:
        return client_tls_context(cafile=tls.ca, certfile=tls.cert, keyfile=tls.key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise EdgeConfigError("edge config", None, f"uplink.tls: {exc}") from exc


class UplinkBase:
    """What every uplink keeps and tells the gateway: its buffer, client, figures and status.

    The JSON ``Uplink`` and the ``SparkplugUplink`` differ in what they put on the wire, not in
    this; both begin with ``UplinkBase.__init__``.

    Args:
        config: the gateway configuration.
        password: the gateway's MQTT password.
        buffer: the forward buffer.
        on_command: executes a command, returning its result or raising ``CommandError``.
        devices_status: the current availability of each device ("online"/"offline").
        window: frames in flight at most.
    """

    def __init__(
        self,
        *,
        config: EdgeConfig,
        password: str | None,
        buffer: ForwardBuffer,
        on_command: CommandHandler,
        devices_status: Callable[[], dict[str, str]],
        window: int = 16,
    ) -> None:
        self.config = config
        self._window_size = window
        self._window = asyncio.Semaphore(window)
        self.buffer = buffer
        self._password = password
        self._tls = uplink_tls_context(config)  # a bad file fails the start, not each attempt
        self._on_command = on_command
        self._devices_status = devices_status
        self._queue = ForwardQueue(buffer)
        self._status_dirty = asyncio.Event()
        self.client: MqttClient | None = None
        self.sent_frames = 0
        self.sent_points = 0
        self.link = LinkMeter()
        #: Broker connections accepted (a Sparkplug session each).
        self.sessions = 0

    def status_changed(self) -> None:
        """A device's availability changed: tell the platform soon (status, or births/deaths)."""
        self._status_dirty.set()

    @property
    def password(self) -> str | None:
        """The gateway's password (also the bearer token of its status endpoint)."""
        return self._password

    @property
    def rtt_ms(self) -> float | None:
        """Median time from publishing a frame to its last PUBACK, over recent frames."""
        return self.link.rtt_ms

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self.client is not None and self.client.connected

    @property
    def reconnects(self) -> int:
        """Connections to the broker after the first."""
        return max(self.sessions - 1, 0)

    def link_quality(self) -> LinkQuality:
        """The uplink's figures: PUBACK round trips, jitter, failed publishes and connects."""
        return self.link.quality(self.reconnects)


class Uplink(UplinkBase):
    """Sends buffered frames to the platform; receives commands (``UplinkBase``'s arguments)."""

    #: Connection failures of the current client already recorded in the link figures.
    _failures_seen = 0

    @functools.cached_property
    def topics(self) -> dict[Channel, str]:
        """The gateway's own topic of each channel."""
        gateway = self.config.gateway
        return {
            channel: DeviceTopic.build(gateway.tenant, gateway.site, gateway.id, channel)
            for channel in Channel
        }

    # -- feeding ---------------------------------------------------------------------------------

    def offer(self, frame: StoredFrame) -> None:
        """A frame was just buffered: send it soon."""
        self._queue.offer(frame)

    # -- running ---------------------------------------------------------------------------------

    def _status_payload(self) -> bytes:
        return orjson.dumps({"state": "online", "devices": self._devices_status()})

    async def _on_connect(self, client: MqttClient, _present: bool) -> None:
        # Link figures: every connection after the first means the one before was lost, and
        # each attempt the client made in between failed.
        self.sessions += 1
        if self.sessions > 1:
            self.link.failed()
        for _ in range(client.stats.connection_failures - self._failures_seen):
            self.link.failed()
        self._failures_seen = client.stats.connection_failures
        await client.publish(
            self.topics[Channel.STATUS], self._status_payload(), qos=1, retain=True
        )

    async def run(self) -> None:
        """Connect (retrying) and keep sending until cancelled."""
        uplink = self.config.uplink
        delay = 0.5
        while True:
            client = MqttClient(
                host=uplink.host,
                port=uplink.port,
                tls=self._tls,
                client_id=self.config.gateway.id,
                username=uplink.username or self.config.gateway.id,
                password=self._password,
                version=ProtocolVersion(uplink.mqtt_version),
                clean_start=False,
                session_expiry=24 * 3600,
                keepalive=20,
                will=Will(
                    topic=self.topics[Channel.STATUS],
                    payload=orjson.dumps({"state": "offline"}),
                    qos=1,
                    retain=True,
                ),
                on_connect=self._on_connect,
            )
            try:
                self._failures_seen = 0
                async with client:
                    self.client = client
                    delay = 0.5
                    await client.subscribe(
                        Subscription(self.topics[Channel.COMMAND_REQUEST], qos=1)
                    )
                    try:
                        async with asyncio.TaskGroup() as tasks:
                            tasks.create_task(self._send_loop(client), name="uplink-send")
                            tasks.create_task(self._command_loop(client), name="uplink-commands")
                            tasks.create_task(self._status_loop(client), name="uplink-status")
                    finally:
                        # A clean DISCONNECT makes the broker discard the will: say goodbye.
                        await asyncio.shield(self._goodbye(client))
            except (OSError, MqttError) as exc:
                self.link.failed()
                _log.warning(
                    "uplink to %s:%d unavailable (%s); retrying in %.1fs (data is buffered)",
                    uplink.host,
                    uplink.port,
                    exc,
                    delay,
                )
            finally:
                self.client = None
            # Jittered: after a broker restart a plant's gateways must not all come back at once.
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311
            delay = min(delay * 2, 30.0)

    async def _goodbye(self, client: MqttClient) -> None:
        if not client.connected:
            return
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(2.0):
                await client.publish(
                    self.topics[Channel.STATUS],
                    orjson.dumps({"state": "offline"}),
                    qos=1,
                    retain=True,
                )

    async def _send_loop(self, client: MqttClient) -> None:
        # A new client: everything unacknowledged in the buffer is backlog again.
        self._queue.restart()
        async with asyncio.TaskGroup() as tasks:
            while True:
                await self._window.acquire()
                try:
                    frame = await self._queue.next_frame()
                except BaseException:
                    self._window.release()
                    raise
                tasks.create_task(self._publish(client, frame), name=f"uplink-frame-{frame.seq}")

    async def _publish(self, client: MqttClient, frame: StoredFrame) -> None:
        channel = Channel.EVENTS if frame.channel == "events" else Channel.TELEMETRY
        started = time.monotonic()
        try:
            await client.publish(self.topics[channel], frame.payload, qos=1)
        except MqttError as exc:
            self.link.failed()
            _log.warning(
                "uplink: frame %d not delivered now (%s); it stays buffered", frame.seq, exc
            )
            return
        finally:
            self._window.release()
            self._queue.settled(frame.seq)
        self.link.succeeded((time.monotonic() - started) * 1000)
        await self.buffer.ack([frame.seq])
        self.sent_frames += 1
        self.sent_points += frame.points

    async def _status_loop(self, client: MqttClient) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            await client.publish(
                self.topics[Channel.STATUS], self._status_payload(), qos=1, retain=True
            )

    async def _command_loop(self, client: MqttClient) -> None:
        while True:
            message = await client.next_message()
            client.ack(message)
            asyncio.get_running_loop().create_task(self._command(client, message))

    async def _command(self, client: MqttClient, message: InboundMessage) -> None:
        request_id = None
        try:
            request = parse_command(message.payload)
            request_id = request.id
            result = await self._on_command(request)
            answer: dict[str, Any] = {"id": request_id, "ok": True, "result": result}
        except CommandError as exc:
            answer = {
                "id": request_id,
                "ok": False,
                "error": {"reason": exc.reason, "message": f"{exc.command}: {exc.detail}"},
            }
        except Exception as exc:  # noqa: BLE001 - a device error must come back as an answer
            answer = {
                "id": request_id,
                "ok": False,
                "error": {"reason": "device_error", "message": str(exc)},
            }
        with contextlib.suppress(MqttError):
            await client.publish(self.topics[Channel.COMMAND_RESULT], orjson.dumps(answer), qos=1)


def parse_command(payload: bytes) -> CommandRequest:
    """Decode a command request.

    Raises:
        CommandError: ``bad_request`` for anything but ``{id, device, command, params}``.
    """
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise CommandError("?", "bad_request", f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise CommandError("?", "bad_request", "expected {id, device, command, params}")
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise CommandError("?", "bad_request", "params must be an object")
    return CommandRequest(
        id=doc["id"],
        device=str(doc.get("device", "")),
        command=str(doc.get("command", "")),
        params=params,
    )

"""The edge gateway, assembled: ``async with EdgeGateway(config, password=...)``.

::

    devices --adapters/coordinators--> readings queue --processing--> frame builder
        --every flush_ms--> forward buffer (on disk) --> uplink --> platform broker
    platform --cmd/req--> uplink --> coordinator --> adapter --> device --> cmd/res

Everything runs as named tasks of one TaskGroup: one coordinator per device, the processing loop,
the flush loop, the uplink, the health loop (the gateway's own telemetry and every device's link
figures) and, when push devices are configured, the HTTP listener.

The uplink speaks the platform's JSON scheme (``uplink.Uplink``) or, with ``[uplink] protocol =
"sparkplug"``, Sparkplug B (``sparkplug_uplink.SparkplugUplink``); both take frames from the buffer
in the same order and tell the platform of every device's availability.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final, Self

import orjson

from tiangong.edge.adapters.base import DeviceAdapter, DeviceReadings
from tiangong.edge.buffer import ForwardBuffer, StoredFrame
from tiangong.edge.config import EdgeConfig
from tiangong.edge.coordinator import Availability, DeviceCoordinator
from tiangong.edge.errors import CommandError, EdgeConfigError
from tiangong.edge.forwarding import GatewayUplink
from tiangong.edge.frames import Frame, FrameBuilder
from tiangong.edge.processing import EdgeProcessor, LocalAlarm
from tiangong.edge.uplink import CommandRequest, Uplink
from tiangong.network.http_listener import HttpListener

__all__ = ["EdgeGateway", "make_adapter"]

_log = logging.getLogger(__name__)

#: Readings waiting for processing; a pushing device beyond it loses readings (counted).
READINGS_QUEUE: Final = 50_000
#: Least time between two ``buffer_overflow`` events.
OVERFLOW_EVENT_INTERVAL_S: Final = 60.0


def make_adapter(device: Any) -> DeviceAdapter:
    """The adapter for a configured device.

    Raises:
        EdgeConfigError: the protocol has no adapter.
    """
    match device.protocol:
        case "modbus":
            from tiangong.edge.adapters.modbus import ModbusAdapter  # noqa: PLC0415

            return ModbusAdapter(device)
        case "opcua":
            from tiangong.edge.adapters.opcua import OpcUaAdapter  # noqa: PLC0415

            return OpcUaAdapter(device)
        case "mqtt":
            from tiangong.edge.adapters.mqtt import MqttAdapter  # noqa: PLC0415

            return MqttAdapter(device)
        case "http":
            from tiangong.edge.adapters.http import HttpAdapter  # noqa: PLC0415

            return HttpAdapter(device)
    raise EdgeConfigError("edge config", None, f"no adapter for protocol {device.protocol!r}")


class EdgeGateway:
    """A running gateway.

    Args:
        config: the validated configuration.
        password: the gateway's MQTT password on the platform's broker.
        adapters: adapters to use instead of building them from the configuration (tests).
        health_interval: seconds between the gateway's own telemetry reports.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        password: str | None,
        adapters: dict[str, DeviceAdapter] | None = None,
        health_interval: float = 10.0,
    ) -> None:
        self.config = config
        self.health_interval = health_interval
        data_dir = config.gateway.data_dir
        self.buffer = ForwardBuffer(
            data_dir / f"{config.gateway.id}-buffer.sqlite",
            max_bytes=config.buffer.max_bytes,
            overflow=config.buffer.overflow,
        )
        self.processor = EdgeProcessor(config)
        self.builder = FrameBuilder()
        self._readings: asyncio.Queue[DeviceReadings] = asyncio.Queue(READINGS_QUEUE)
        adapters = adapters or {d.id: make_adapter(d) for d in config.devices}
        self.coordinators = {
            device_id: DeviceCoordinator(
                adapter, sink=self._accept, on_availability=self._availability
            )
            for device_id, adapter in adapters.items()
        }
        self.uplink: GatewayUplink
        if config.uplink.protocol == "sparkplug":
            from tiangong.edge.sparkplug_uplink import SparkplugUplink  # noqa: PLC0415

            self.uplink = SparkplugUplink(
                config=config,
                password=password,
                buffer=self.buffer,
                on_command=self._command,
                devices_status=self.devices_status,
            )
        else:
            self.uplink = Uplink(
                config=config,
                password=password,
                buffer=self.buffer,
                on_command=self._command,
                devices_status=self.devices_status,
            )
        self.points_in = 0
        self.readings_dropped = 0
        self._events: list[dict[str, Any]] = []
        self._dropped_reported = 0  # buffer.dropped_points already told upstream
        self._overflow_reported_at = -OVERFLOW_EVENT_INTERVAL_S
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self.http_port: int | None = None
        self._http: HttpListener | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self.buffer.open()
            self._stack.push_async_callback(self.buffer.close)
            tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            for device_id, coordinator in self.coordinators.items():
                self._tasks.append(tasks.create_task(coordinator.run(), name=f"device-{device_id}"))
            for name, coro in (
                ("processing", self._process_loop()),
                ("flush", self._flush_loop()),
                ("uplink", self.uplink.run()),
                ("health", self._health_loop()),
            ):
                self._tasks.append(tasks.create_task(coro, name=f"edge-{name}"))
            await self._start_http(tasks)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.stop()
        for task in self._tasks:
            if task.get_name() != "edge-uplink":
                task.cancel()
        # What was read is written to the buffer before stopping: nothing read is lost.
        with contextlib.suppress(Exception):
            self._drain_queue()
            await self._flush()
        for task in self._tasks:
            task.cancel()
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _start_http(self, tasks: asyncio.TaskGroup) -> None:
        if not any(d.protocol == "http" for d in self.config.devices):
            return
        from tiangong.edge.http import start_http  # noqa: PLC0415

        self._http = await start_http(self, tasks)
        self.http_port = self._http.port

    # -- devices ---------------------------------------------------------------------------------

    def _accept(self, readings: DeviceReadings) -> None:
        try:
            self._readings.put_nowait(readings)
        except asyncio.QueueFull:
            self.readings_dropped += 1
            if self.readings_dropped % 1000 == 1:
                _log.warning(
                    "edge: processing is behind; %d readings dropped", self.readings_dropped
                )

    def _availability(self, device: str, availability: Availability, reason: str) -> None:
        _log.info("device %s is %s (%s)", device, availability.value, reason)
        self.uplink.status_changed()

    def devices_status(self) -> dict[str, str]:
        """Availability of every device, as the status message reports it."""
        return {
            device_id: "online" if c.availability is Availability.ONLINE else "offline"
            for device_id, c in self.coordinators.items()
        }

    async def _command(self, request: CommandRequest) -> dict[str, Any]:
        coordinator = self.coordinators.get(request.device)
        if coordinator is None:
            raise CommandError(
                request.command, "unknown_device", f"no device {request.device!r} on this gateway"
            )
        if request.command == "write":
            if len(request.params) != 1:
                raise CommandError("write", "bad_request", "write takes exactly one property")
            [(prop, value)] = request.params.items()
            await coordinator.write(prop, value)
            return {"written": prop, "value": value}
        return await coordinator.call(request.command, request.params)

    # -- processing ------------------------------------------------------------------------------

    def _handle(self, readings: DeviceReadings) -> None:
        for name, data in readings.events:
            self._events.append(self._event(name, data, device=readings.device, ts=readings.ts_ms))
        if not readings.values:
            return
        self.points_in += len(readings.values)
        values, alarms = self.processor.process(readings)
        for value in values:
            self.builder.add(value.device, value.prop, value.ts_ms, value.value)
        for alarm in alarms:
            self._alarm_event(alarm)

    def _drain_queue(self) -> None:
        while not self._readings.empty():
            self._handle(self._readings.get_nowait())

    async def _process_loop(self) -> None:
        max_points = self.config.uplink.max_batch_points
        while True:
            self._handle(await self._readings.get())
            self._drain_queue()
            if self.builder.points >= max_points:
                await self._flush()

    async def _flush_loop(self) -> None:
        interval = self.config.uplink.flush_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for value in self.processor.flush_windows(int(time.time() * 1000)):
                self.builder.add(value.device, value.prop, value.ts_ms, value.value)
            await self._flush()

    async def _flush(self) -> None:
        async with self._flush_lock:
            frames: list[Frame] = []
            frame = self.builder.take()
            if frame is not None:
                frames.append(frame)
            if self._events:
                events, self._events = self._events, []
                frames.append(
                    Frame(
                        orjson.dumps({"events": events}),
                        len(events),
                        min(e["ts"] for e in events),
                        channel="events",
                    )
                )
            for frame in frames:
                seq = await self.buffer.append(frame)
                if seq is not None:
                    self.uplink.offer(
                        StoredFrame(
                            seq, frame.channel, frame.payload, frame.points, frame.first_ts_ms
                        )
                    )
            self._report_overflow()

    def _report_overflow(self) -> None:
        """A ``buffer_overflow`` event for points the overflow policy dropped (either policy).

        At most one per ``OVERFLOW_EVENT_INTERVAL_S`` with the points dropped since the last:
        an uplink down for a day must not fill the buffer with events about the buffer.
        """
        dropped = self.buffer.dropped_points - self._dropped_reported
        now = time.monotonic()
        if dropped <= 0 or now - self._overflow_reported_at < OVERFLOW_EVENT_INTERVAL_S:
            return
        self._events.append(
            self._event(
                "buffer_overflow",
                {
                    "points": dropped,
                    "policy": self.config.buffer.overflow,
                    "max_bytes": self.config.buffer.max_bytes,
                },
            )
        )
        self._dropped_reported = self.buffer.dropped_points
        self._overflow_reported_at = now

    def _event(
        self, name: str, data: dict[str, Any], *, device: str | None = None, ts: int | None = None
    ) -> dict[str, Any]:
        """An entry of an events frame: the gateway's own (now) unless a device's is given."""
        return {
            "ts": int(time.time() * 1000) if ts is None else ts,
            "event": name,
            "device": self.config.gateway.id if device is None else device,
            "data": data,
        }

    def _alarm_event(self, alarm: LocalAlarm) -> None:
        _log.warning(
            "edge alarm %s: %s on %s.%s (value %g)",
            "raised" if alarm.active else "cleared",
            alarm.rule,
            alarm.device,
            alarm.prop,
            alarm.value,
        )
        self._events.append(
            self._event(
                "edge_alarm",
                {
                    "rule": alarm.rule,
                    "device": alarm.device,
                    "property": alarm.prop,
                    "state": "raised" if alarm.active else "cleared",
                    "severity": alarm.severity.value,
                    "value": alarm.value,
                },
            )
        )

    async def _health_loop(self) -> None:
        gateway = self.config.gateway.id
        while True:
            await asyncio.sleep(self.health_interval)
            now = int(time.time() * 1000)
            stats = await self.buffer.stats()
            values: dict[str, Any] = {
                "devices_configured": len(self.coordinators),
                "devices_online": sum(
                    c.availability is Availability.ONLINE for c in self.coordinators.values()
                ),
                "buffer_points": stats.points,
                "buffer_bytes": stats.bytes,
                "buffer_age_s": (now - stats.oldest_ts_ms) / 1000 if stats.oldest_ts_ms else 0.0,
                "dropped_points": stats.dropped_points,
                "points_in": self.points_in,
                "uplink_reconnects": self.uplink.reconnects,
            }
            if self.uplink.rtt_ms is not None:
                values["uplink_rtt_ms"] = round(self.uplink.rtt_ms, 3)
            # The uplink is the gateway's own link: its figures sit beside its devices' in the
            # platform's links view.
            values.update(self.uplink.link_quality().as_values())
            for prop, value in values.items():
                self.builder.add(gateway, prop, now, value)
            for device_id, coordinator in self.coordinators.items():
                for prop, value in coordinator.link_quality().as_values().items():
                    self.builder.add(device_id, prop, now, value)

    # -- status ----------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """What the gateway's status page and ``GET /status`` show."""
        stats = await self.buffer.stats()
        return {
            "gateway": self.config.gateway.id,
            "uplink": {
                "connected": self.uplink.connected,
                "rtt_ms": self.uplink.rtt_ms,
                "sent_points": self.uplink.sent_points,
            },
            "buffer": {
                "frames": stats.frames,
                "points": stats.points,
                "bytes": stats.bytes,
                "dropped_points": stats.dropped_points,
            },
            "devices": {
                device_id: {
                    "availability": c.availability.value,
                    **c.link_quality().as_values(),
                }
                for device_id, c in self.coordinators.items()
            },
            "alarms": [
                {
                    "rule": a.rule,
                    "device": a.device,
                    "property": a.prop,
                    "active": a.active,
                    "severity": a.severity.value,
                    "value": a.value,
                }
                for a in self.processor.alarms.values()
            ],
            "points_in": self.points_in,
            "readings_dropped": self.readings_dropped,
        }

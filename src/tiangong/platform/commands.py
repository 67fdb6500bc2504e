"""Commands downstream: the platform asks a device to write a setpoint or run a method.

A command goes to the device's own ``cmd/req`` topic, or, for a device behind an edge gateway, to
the gateway's, naming the device. The answer comes back on the same device's ``cmd/res`` topic
and is matched by request id; an answer from any other topic is ignored (a device cannot answer
for another). Requests are checked against the thing model first: ``write`` needs a writable
property and a value of its type and range; any other command must be declared with its
parameters.

A device born through the Sparkplug B host (``platform.sparkplug``) takes ``write`` only, sent
as NCMD or DCMD under the metric's Sparkplug name and datatype. Sparkplug commands are QoS 0 and
have no answer: ``send`` returns once the command is handed to the broker connection, with a
result that says it was sent and not confirmed.

Request:  ``{"id": "<uuid>", "device": "<device>", "command": "<command>", "params": {...}}``
Answer:   ``{"id": ..., "ok": true, "result": {...}}`` or
          ``{"id": ..., "ok": false, "error": {"reason": "...", "message": "..."}}``
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.errors import MqttError
from tiangong.network.mqtt import MqttClient
from tiangong.platform.errors import ConflictError, PlatformError, ValidationError
from tiangong.platform.model import DataType, Device, DeviceState, PropertySpec, ThingModel
from tiangong.platform.registry import DeviceRegistry, DirectoryEntry

__all__ = ["CommandFailedError", "CommandService", "CommandTimeoutError", "SparkplugCommands"]

_log = logging.getLogger(__name__)


class CommandFailedError(PlatformError):
    """The device (or its gateway) answered that the command failed.

    Attributes:
        reason: the device's reason code (``not_writable``, ``device_offline``...).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class CommandTimeoutError(PlatformError):
    """No answer in time (the device or its gateway is unreachable or too slow)."""


class SparkplugCommands(Protocol):
    """Where writes to Sparkplug devices go (the Sparkplug host service)."""

    def handles(self, device_id: str) -> bool:
        """Whether commands to this device go out over Sparkplug."""

    async def write(
        self, entry: DirectoryEntry, values: Mapping[str, Any], *, wait_s: float = 10.0
    ) -> dict[str, Any]:
        """Send a write as NCMD/DCMD; returns once it is sent (it is never confirmed)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    responder: str  # topic the answer must come from


def _check_value(spec: PropertySpec, value: Any) -> None:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    match spec.type:
        case DataType.FLOAT | DataType.INT:
            if not numeric or (spec.type is DataType.INT and float(value) != int(value)):
                raise ValidationError(f"{spec.id} takes a {spec.type.value}, not {value!r}")
            if (spec.min is not None and value < spec.min) or (
                spec.max is not None and value > spec.max
            ):
                raise ValidationError(f"{spec.id}: {value} is outside [{spec.min}, {spec.max}]")
        case DataType.BOOL:
            if not isinstance(value, bool):
                raise ValidationError(f"{spec.id} takes true or false, not {value!r}")
        case DataType.ENUM:
            if value not in (spec.enum or []):
                raise ValidationError(f"{spec.id} takes one of {spec.enum}, not {value!r}")
        case DataType.STRING:
            if not isinstance(value, str):
                raise ValidationError(f"{spec.id} takes a string, not {value!r}")


def check_command(model: ThingModel, command: str, params: dict[str, Any]) -> None:
    """Refuse a command its thing model does not allow.

    Raises:
        ValidationError: unknown command, unknown or read-only property, bad parameter.
    """
    if command == "write":
        if len(params) != 1:
            raise ValidationError('write takes exactly one property: {"<property>": value}')
        [(prop, value)] = params.items()
        spec = next((p for p in model.properties if p.id == prop), None)
        if spec is None:
            raise ValidationError(f"thing model {model.id!r} has no property {prop!r}")
        if not spec.writable:
            raise ValidationError(f"{prop} is read-only in thing model {model.id!r}")
        _check_value(spec, value)
        return
    declared = next((c for c in model.commands if c.id == command), None)
    if declared is None:
        names = ["write", *(c.id for c in model.commands)]
        raise ValidationError(f"thing model {model.id!r} has no command {command!r} ({names})")
    specs = {p.id: p for p in declared.params}
    unknown = set(params) - set(specs)
    if unknown:
        raise ValidationError(f"{command} has no parameters {sorted(unknown)}")
    for name, spec in specs.items():
        if name not in params:
            raise ValidationError(f"{command} needs parameter {name!r}")
        _check_value(spec, params[name])


class CommandService:
    """Sends commands and waits for their answers.

    Args:
        registry: the device registry (targets, thing models, gateways).
        sparkplug: the route for devices born through the Sparkplug host, if it runs.
    """

    def __init__(
        self, registry: DeviceRegistry, *, sparkplug: SparkplugCommands | None = None
    ) -> None:
        self.registry = registry
        self.sparkplug = sparkplug
        self.client: MqttClient | None = None
        self._pending: dict[str, _Pending] = {}

    def _route(self, device: Device) -> Device:
        if device.gateway_id is None:
            return device
        entry = self.registry.lookup(device.gateway_id)
        if entry is None:
            raise ConflictError(f"gateway {device.gateway_id!r} of {device.id!r} is not registered")
        return entry.device

    async def send(
        self, device: Device, command: str, params: dict[str, Any], *, wait_s: float = 10.0
    ) -> dict[str, Any]:
        """Send a command and wait for its answer.

        For a Sparkplug device the answer is ``{"sent": true, "confirmed": false, ...}`` as soon
        as the NCMD/DCMD is handed to the broker connection.

        Raises:
            ValidationError: the thing model does not allow it (or it is not a ``write`` to a
                Sparkplug device).
            ConflictError: the device (or its gateway) is not online, or ingest is not
                connected to the broker.
            CommandFailedError: the device answered with an error.
            CommandTimeoutError: no answer within ``wait_s`` seconds.
        """
        entry = self.registry.lookup(device.id)
        if entry is None:
            raise ConflictError(f"device {device.id!r} is not registered")
        if self.sparkplug is not None and self.sparkplug.handles(device.id):
            if command != "write":
                raise ValidationError(
                    f"{device.id} is a Sparkplug B device: it takes only"
                    ' write ({"<property>": value}), sent as a Sparkplug command;'
                    f" {command!r} has no Sparkplug equivalent"
                )
            check_command(entry.model, command, params)
            return await self.sparkplug.write(entry, params, wait_s=wait_s)
        check_command(entry.model, command, params)
        target = self._route(device)
        current = entry.device
        if current.state is not DeviceState.ONLINE:
            raise ConflictError(f"{device.id} is {current.state.value}; it cannot take commands")
        if target.state is not DeviceState.ONLINE:
            raise ConflictError(
                f"{device.id}'s gateway {target.id} is {target.state.value}; retry when it is back"
            )
        client = self.client
        if client is None or not client.connected:
            raise ConflictError("the platform is not connected to the broker; retry shortly")
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        responder = DeviceTopic.build(
            target.tenant_id, target.site_id, target.id, Channel.COMMAND_RESULT
        )
        self._pending[request_id] = _Pending(future, responder)
        request = {"id": request_id, "device": device.id, "command": command, "params": params}
        topic = DeviceTopic.build(
            target.tenant_id, target.site_id, target.id, Channel.COMMAND_REQUEST
        )
        try:
            async with asyncio.timeout(wait_s):
                await client.publish(topic, orjson.dumps(request), qos=1)
                answer = await future
        except TimeoutError as exc:
            raise CommandTimeoutError(
                f"no answer from {target.id} within {wait_s:g}s; is it reachable?"
            ) from exc
        except MqttError as exc:
            raise ConflictError(f"could not send the command: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)
        if answer.get("ok") is True:
            result = answer.get("result")
            return result if isinstance(result, dict) else {"result": result}
        raw_error = answer.get("error")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        raise CommandFailedError(
            str(error.get("reason", "device_error")), str(error.get("message", "failed"))
        )

    def answer(self, topic: str, payload: bytes) -> bool:
        """Take a message from a ``cmd/res`` topic; returns whether it answered a request."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        request_id = doc.get("id") if isinstance(doc, dict) else None
        pending = self._pending.get(request_id) if isinstance(request_id, str) else None
        if pending is None:
            return False
        if topic != pending.responder:
            _log.warning(
                "commands: answer to %s from %s ignored (not the target)", request_id, topic
            )
            return False
        if not pending.future.done():
            pending.future.set_result(doc)
        return True

"""OPC UA adapter (asyncua client): subscriptions, security, writes and method calls.

Each configured point becomes a monitored item with its own sampling interval and, when it has
a deadband, an absolute deadband filter evaluated by the server, so unchanged values never cross
the network. Security is None, or Basic256Sha256 with Sign or SignAndEncrypt and certificates.
asyncua's own reconnect supervisor is off: the coordinator reconnects, the same way for every
protocol, and re-creates the subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from tiangong.edge.adapters.base import DeviceReadings, ReadingSink
from tiangong.edge.config import OpcUaDevice, OpcUaEventSource
from tiangong.edge.errors import (
    CommandError,
    DeviceRefusedError,
    DeviceUnreachableError,
    EdgeConfigError,
)

__all__ = ["OpcUaAdapter", "application_uri", "open_session", "parse_event_message"]

_log = logging.getLogger(__name__)


def _ms(timestamp: Any) -> int:
    if timestamp is None:
        return int(time.time() * 1000)
    return int(timestamp.timestamp() * 1000)


def _plain(value: Any) -> Any:
    """A value as the platform takes it (numbers, booleans, strings)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def application_uri(certificate: Path) -> str | None:
    """The application URI in an X.509 certificate's subjectAltName (DER or PEM file)."""
    data = certificate.read_bytes()
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data)
        )
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


class _Handler:
    """Receives data changes from asyncua and hands them to the gateway as readings.

    asyncua delivers each monitored item's change on its own (asyncua 2 from a task of its own).
    The changes delivered together are gathered and handed over once the event loop has run
    every delivery it had queued: one reading per source timestamp, so a server that samples
    many variables at once costs the gateway one reading instead of one per variable.
    """

    def __init__(self, adapter: OpcUaAdapter, sink: ReadingSink) -> None:
        self.adapter = adapter
        self.sink = sink
        self._pending: dict[int, dict[str, Any]] = {}  # source ts -> property -> value
        self._scheduled = False

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        item = data.monitored_item
        # The client handle says which point it is (see ``_subscribe``): no node id to format.
        prop = self.adapter.by_handle.get(item.ClientHandle)
        if prop is None:
            prop = self.adapter.by_node.get(node.nodeid.to_string())
            if prop is None:
                return
        value = item.Value
        status = getattr(value, "StatusCode", None)
        if status is not None and not status.is_good():
            return  # no value to report; the coordinator's probe notices a lost machine
        ts = _ms(getattr(value, "SourceTimestamp", None))
        values = self._pending.get(ts)
        if values is None:
            values = self._pending[ts] = {}
        values[prop] = _plain(val)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._hand_over)

    def _hand_over(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        now = int(time.time() * 1000)
        for ts, values in pending.items():
            self.sink(DeviceReadings(self.adapter.device_id, ts, values, now))

    def status_change_notification(self, status: Any) -> None:
        self.adapter.subscription_status = status

    def event_notification(self, event: Any) -> None:
        source = getattr(event, "SourceNode", None)
        configured = self.adapter.event_sources.get(source.to_string() if source else "")
        message = getattr(getattr(event, "Message", None), "Text", None) or ""
        name, data = parse_event_message(message)
        if configured is not None and configured.event is not None:
            name = configured.event
        if name is None:
            _log.warning(
                "opcua %s: event without an id (%r); set event = ... for its source",
                self.adapter.device_id,
                message,
            )
            return
        data |= {"message": message, "severity": getattr(event, "Severity", None)}
        ts = _ms(getattr(event, "Time", None))
        self.sink(
            DeviceReadings(self.adapter.device_id, ts, {}, int(time.time() * 1000), [(name, data)])
        )


_EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def parse_event_message(message: str) -> tuple[str | None, dict[str, Any]]:
    """``"<event id>: key=value, ..."`` as (event id, data); (None, {}) for any other text."""
    head, _, rest = message.partition(":")
    if not _EVENT_ID.match(head.strip()):
        return None, {}
    data: dict[str, Any] = {}
    for pair in rest.split(","):
        key, sep, value = pair.strip().partition("=")
        if sep and key:
            data[key.strip()] = value.strip()
    return head.strip(), data


async def open_session(
    endpoint: str,
    *,
    name: str,
    timeout_s: float,
    security_policy: str = "None",
    security_mode: str = "None",
    certificate: Path | None = None,
    private_key: Path | None = None,
    server_certificate: Path | None = None,
) -> Client:
    """A connected asyncua client, over a secured channel when a policy is given.

    Raises:
        OSError, TimeoutError: the server is unreachable.
        UaError: the server refused the session.
        Exception: asyncua raises plain exceptions for certificate problems.
    """
    client = Client(url=endpoint, timeout=timeout_s)
    client.application_uri = f"urn:tiangong:edge:{name}"
    if certificate is not None:
        # The server checks the URI we announce against our certificate's subjectAltName.
        client.application_uri = application_uri(certificate) or client.application_uri
    if security_policy != "None":
        parts = [security_policy, security_mode, str(certificate), str(private_key)]
        if server_certificate is not None:
            parts.append(str(server_certificate))
        await client.set_security_string(",".join(parts))
    await client.connect()
    return client


class OpcUaAdapter:
    """An OPC UA server (the part of it that is one machine).

    Args:
        config: the device's configuration.
    """

    polled = False

    def __init__(self, config: OpcUaDevice) -> None:
        self.config = config
        self.device_id = config.id
        # A pushing device: ``read`` is the coordinator's liveness probe and snapshot.
        self.poll_interval = 5.0
        self.by_node = {
            ua.NodeId.from_string(p.node).to_string(): p.property for p in config.points
        }
        # Monitored items are created with client handles 1, 2, ... in the points' order.
        self.by_handle: dict[int, str] = {
            handle: p.property for handle, p in enumerate(config.points, start=1)
        }
        self.writable = {p.property for p in config.points if p.writable}
        self.methods = {m.command: m for m in config.methods}
        # Event sources by their node id as the server reports it in SourceNode.
        self.event_sources: dict[str, OpcUaEventSource] = {}
        for source in config.events:
            try:
                self.event_sources[ua.NodeId.from_string(source.source).to_string()] = source
            except (ValueError, UaError) as exc:
                raise EdgeConfigError(
                    "edge config",
                    None,
                    f"device {config.id!r}: events source {source.source!r} is not a node id",
                ) from exc
        self._client: Client | None = None
        self._nodes: dict[str, Node] = {}
        self.subscription_status: Any = None

    async def connect(self, sink: ReadingSink) -> None:
        """Connect, secure the channel if configured, and subscribe to every point."""
        await self.close()
        config = self.config
        try:
            client = await open_session(
                config.endpoint,
                name=self.device_id,
                timeout_s=config.timeout_ms / 1000,
                security_policy=config.security_policy,
                security_mode=config.security_mode,
                certificate=config.certificate,
                private_key=config.private_key,
                server_certificate=config.server_certificate,
            )
        except (OSError, TimeoutError) as exc:
            raise DeviceUnreachableError(self.device_id, f"cannot connect: {exc}") from exc
        except UaError as exc:
            raise DeviceRefusedError(self.device_id, f"server refused us: {exc}") from exc
        except Exception as exc:  # asyncua raises plain exceptions for certificate problems
            raise DeviceRefusedError(self.device_id, f"cannot open a session: {exc}") from exc
        self._client = client
        try:
            await self._subscribe(client, sink)
        except (OSError, TimeoutError, UaError) as exc:
            await self.close()
            raise DeviceRefusedError(self.device_id, f"cannot subscribe: {exc}") from exc

    async def _subscribe(self, client: Client, sink: ReadingSink) -> None:
        config = self.config
        fastest = min(p.sampling_ms for p in config.points) or 100
        subscription = await client.create_subscription(fastest, _Handler(self, sink))
        requests = []
        self._nodes = {}
        for handle, point in enumerate(config.points, start=1):
            node = client.get_node(point.node)
            self._nodes[point.property] = node
            parameters = ua.MonitoringParameters()
            parameters.ClientHandle = handle
            parameters.SamplingInterval = float(point.sampling_ms)
            parameters.QueueSize = 10
            parameters.DiscardOldest = True
            if point.deadband is not None:
                deadband = ua.DataChangeFilter()
                deadband.Trigger = ua.DataChangeTrigger.StatusValue
                deadband.DeadbandType = ua.DeadbandType.Absolute
                deadband.DeadbandValue = point.deadband
                parameters.Filter = deadband
            read_id = ua.ReadValueId()
            read_id.NodeId = node.nodeid
            read_id.AttributeId = AttributeIds.Value
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = read_id
            request.MonitoringMode = ua.MonitoringMode.Reporting
            request.RequestedParameters = parameters
            requests.append(request)
        results = await subscription.create_monitored_items(requests)
        for source in config.events:
            try:
                await subscription.subscribe_events(
                    client.get_node(source.source), ObjectIds.BaseEventType
                )
            except UaStatusCodeError as exc:
                raise DeviceRefusedError(
                    self.device_id, f"events of {source.source} refused: {exc}"
                ) from exc
        refused = [
            point.node
            for point, result in zip(config.points, results, strict=True)
            if isinstance(result, ua.StatusCode) and not result.is_good()
        ]
        if refused:
            raise DeviceRefusedError(self.device_id, f"nodes refused: {', '.join(refused)}")

    def _require(self) -> Client:
        if self._client is None:
            raise DeviceUnreachableError(self.device_id, "not connected")
        return self._client

    async def read(self) -> DeviceReadings:
        """Read every point once (the coordinator's probe)."""
        client = self._require()
        props = list(self._nodes)
        try:
            results = await client.read_attributes([self._nodes[p] for p in props])
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise DeviceUnreachableError(self.device_id, f"read failed: {exc}") from exc
        except UaError as exc:
            raise DeviceRefusedError(self.device_id, f"read refused: {exc}") from exc
        values: dict[str, Any] = {}
        bad: dict[str, str] = {}
        for prop, result in zip(props, results, strict=True):
            status = result.StatusCode
            if status is not None and not status.is_good():
                bad[prop] = status.name
            elif result.Value is not None:
                values[prop] = _plain(result.Value.Value)
        if bad and not values:
            # E.g. BadNoCommunication: the server is up but has lost the machine behind it.
            statuses = ", ".join(sorted(set(bad.values())))
            raise DeviceUnreachableError(self.device_id, f"every variable is {statuses}")
        if bad:
            _log.debug("%s: variables without a good value: %s", self.device_id, bad)
        now = int(time.time() * 1000)
        return DeviceReadings(self.device_id, now, values, now)

    async def write(self, prop: str, value: Any) -> None:
        """Write a writable variable, with the variant type the server declares for it."""
        node = self._nodes.get(prop)
        if node is None:
            raise CommandError(prop, "unknown_point", f"{self.device_id} has no point {prop!r}")
        if prop not in self.writable:
            raise CommandError(prop, "not_writable", f"{self.device_id}.{prop} is read-only")
        self._require()
        try:
            variant_type = await node.read_data_type_as_variant_type()
            await node.write_value(ua.DataValue(ua.Variant(value, variant_type)))
        except UaStatusCodeError as exc:
            raise DeviceRefusedError(self.device_id, f"write of {prop} refused: {exc}") from exc
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise DeviceUnreachableError(self.device_id, f"write failed: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise CommandError(prop, "bad_value", str(exc)) from exc

    async def call(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """Call the method mapped to ``command`` with the parameters in order."""
        method = self.methods.get(command)
        if method is None:
            raise CommandError(command, "unknown_command", f"{self.device_id} has no {command!r}")
        client = self._require()
        owner = client.get_node(method.object)
        try:
            outputs = await owner.call_method(
                ua.NodeId.from_string(method.method), *params.values()
            )
        except UaStatusCodeError as exc:
            raise DeviceRefusedError(self.device_id, f"{command} failed: {exc}") from exc
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise DeviceUnreachableError(self.device_id, f"{command} failed: {exc}") from exc
        if outputs is None:
            return {}
        if isinstance(outputs, list):
            return {"outputs": [_plain(o) for o in outputs]}
        return {"output": _plain(outputs)}

    async def close(self) -> None:
        """Disconnect (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError, TimeoutError, ConnectionError, UaError):
                await client.disconnect()  # the session is gone either way

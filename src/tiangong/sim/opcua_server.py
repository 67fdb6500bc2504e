"""The simulated plant's OPC UA server: an address space per machine, values from the physics.

Address space (namespace ``urn:tiangong:sim:factory``, index 2)::

    Objects/
      Factory                          ns=2;s=Factory                 (FolderType)
        <site>                         ns=2;s=Factory.<site>          (FolderType)
          <device>                     ns=2;s=<device>                (BaseObjectType, events)
            <property>                 ns=2;s=<device>.<property>     one variable per property
              EngineeringUnits         ns=2;s=<device>.<property>.EngineeringUnits
              EURange                  ns=2;s=<device>.<property>.EURange
            Start(), ResetCounters()   ns=2;s=<device>.<command>      one method per command

Variables have the OPC UA type that says what they are: ``AnalogItemType`` (Double, with
``EURange`` from the thing model's min/max and ``EngineeringUnits``), ``AnalogUnitType`` for
numbers with a unit but no full range (counters are Int64), ``MultiStateDiscreteType`` for enums
(UInt32 index, ``EnumStrings``), ``TwoStateDiscreteType`` for booleans. Units are UNECE Rec 20
codes in ``EUInformation``, as OPC 10000-8 prescribes. Writable properties (setpoints) are
writable variables; a write outside the thing model's range is refused with ``BadOutOfRange``.
A machine's events (a fault, a repair) are OPC UA events of its object. A device still
awaiting commissioning has its nodes, with status ``BadNoCommunication``, as an aggregating
server shows a PLC it cannot reach.

Security: endpoints with no security and with Basic256Sha256 SignAndEncrypt. A client that
signs must present a certificate from the trusted directory (see ``certificates``), reread when
the directory changes, so trusting a client needs no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, Final, cast

from asyncua import ua
from asyncua.common.callback import CallbackService, CallbackType, ServerItemCallback
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509

from tiangong.platform.model import DataType, PropertySpec, Severity, Site, ThingModel
from tiangong.resource import AsyncResource
from tiangong.sim.certificates import SERVER_APPLICATION_URI, OpcUaPki
from tiangong.sim.errors import MachineInputError, PortUnavailableError
from tiangong.sim.factory import DeviceSpec
from tiangong.sim.layout import NAMESPACE_INDEX, NAMESPACE_URI
from tiangong.sim.machines import Machine, MachineReading
from tiangong.sim.thing_models import THING_MODELS, from_wire, to_wire

__all__ = ["ENDPOINT_PATH", "OpcUaPlantServer", "engineering_units"]

_log = logging.getLogger(__name__)

#: Path of the endpoint URL: ``opc.tcp://<host>:<port>/tiangong/``.
ENDPOINT_PATH: Final = "/tiangong/"

_UNECE_NAMESPACE: Final = "http://www.opcfoundation.org/UA/units/un/cefact"
#: Thing-model unit -> UNECE Rec 20 common code, display name, description.
_UNECE: Final[dict[str, tuple[str, str, str]]] = {
    "degC": ("CEL", "°C", "degree Celsius"),
    "kW": ("KWT", "kW", "kilowatt"),
    "kWh": ("KWH", "kWh", "kilowatt hour"),
    "bar": ("BAR", "bar", "bar [unit of pressure]"),
    "m3/h": ("MQH", "m³/h", "cubic metre per hour"),
    "mm/s": ("C16", "mm/s", "millimetre per second"),
    "mm/min": ("H81", "mm/min", "millimetre per minute"),
    "rpm": ("RPM", "r/min", "revolutions per minute"),
    "%": ("P1", "%", "percent"),
    "h": ("HUR", "h", "hour"),
    "s": ("SEC", "s", "second"),
    "V": ("VLT", "V", "volt"),
    "A": ("AMP", "A", "ampere"),
    "pcs": ("H87", "pcs", "piece"),
}
#: Severity of a machine event as an OPC UA event severity (1..1000).
_SEVERITY: Final[dict[Severity, int]] = {
    Severity.CRITICAL: 900,
    Severity.MAJOR: 700,
    Severity.MINOR: 500,
    Severity.WARNING: 300,
    Severity.INFO: 100,
}
_VARIANT: Final[dict[DataType, tuple[ua.VariantType, int]]] = {
    DataType.FLOAT: (ua.VariantType.Double, ObjectIds.Double),
    DataType.INT: (ua.VariantType.Int64, ObjectIds.Int64),
    DataType.ENUM: (ua.VariantType.UInt32, ObjectIds.UInt32),
    DataType.BOOL: (ua.VariantType.Boolean, ObjectIds.Boolean),
    DataType.STRING: (ua.VariantType.String, ObjectIds.String),
}


def engineering_units(unit: str) -> ua.EUInformation:
    """The OPC UA ``EUInformation`` of a thing-model unit (UNECE code where one exists)."""
    known = _UNECE.get(unit)
    if known is None:
        # OPC 10000-8: UnitId -1 when the unit has no UNECE code.
        return ua.EUInformation(
            NamespaceUri=NAMESPACE_URI,
            UnitId=-1,
            DisplayName=ua.LocalizedText(unit),
            Description=ua.LocalizedText(unit),
        )
    code, display, description = known
    unit_id = 0
    for char in code:  # OPC 10000-8 5.6.3: the code's ASCII bytes as an Int32
        unit_id = (unit_id << 8) | ord(char)
    return ua.EUInformation(
        NamespaceUri=_UNECE_NAMESPACE,
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(display),
        Description=ua.LocalizedText(description),
    )


# asyncua annotates with marker subclasses of the builtins (ua.Int32 is an int subclass), so
# the typed constructors below wrap plain values in them.


def _node(identifier: str) -> ua.NodeId:
    """A node id of the plant's namespace."""
    return ua.NodeId(ua.String(identifier), ua.Int16(NAMESPACE_INDEX))


def _std(object_id: int) -> ua.NodeId:
    """A node id of the standard namespace (0)."""
    return ua.NodeId(ua.Int32(object_id))


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _camel(command: str) -> str:
    """``reset_counters`` -> ``ResetCounters`` (the browse name of a method)."""
    return "".join(part.capitalize() for part in command.split("_"))


def _object(
    node_id: ua.NodeId,
    parent: ua.NodeId,
    browse: str,
    display: str,
    *,
    folder: bool,
    description: str = "",
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id
    item.BrowseName = ua.QualifiedName(browse, NAMESPACE_INDEX)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = _std(ObjectIds.Organizes)
    item.TypeDefinition = _std(ObjectIds.FolderType if folder else ObjectIds.BaseObjectType)
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(display)
    attrs.Description = ua.LocalizedText(description or display)
    attrs.EventNotifier = 0 if folder else ua.EventNotifier.SubscribeToEvents.mask
    item.NodeAttributes = attrs
    return item


def _variable(
    node_id: ua.NodeId,
    parent: ua.NodeId,
    *,
    browse: ua.QualifiedName,
    value: ua.Variant,
    data_type: int,
    type_definition: int,
    prop: bool = False,
    writable: bool = False,
    display: str | None = None,
    description: str = "",
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id
    item.BrowseName = browse
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = _std(ObjectIds.HasProperty if prop else ObjectIds.HasComponent)
    item.TypeDefinition = _std(type_definition)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(display or browse.Name)
    attrs.Description = ua.LocalizedText(description or display or browse.Name)
    attrs.DataType = _std(data_type)
    attrs.Value = value
    if isinstance(value.Value, list):
        attrs.ValueRank = ua.ValueRank.OneDimension
        attrs.ArrayDimensions = [0]
    else:
        attrs.ValueRank = ua.ValueRank.Scalar
    access = ua.AccessLevel.CurrentRead.mask
    if writable:
        access |= ua.AccessLevel.CurrentWrite.mask
    attrs.AccessLevel = access
    attrs.UserAccessLevel = access
    attrs.MinimumSamplingInterval = 0.0
    item.NodeAttributes = attrs
    return item


def _initial(spec: PropertySpec) -> ua.Variant:
    variant_type, _ = _VARIANT[spec.type]
    zero: Any = {
        DataType.FLOAT: 0.0,
        DataType.INT: 0,
        DataType.ENUM: 0,
        DataType.BOOL: False,
        DataType.STRING: "",
    }[spec.type]
    return ua.Variant(zero, variant_type)


class _TrustedDirectory:
    """Certificate validation against a directory of trusted client certificates.

    The directory is reread when its listing changes, so a client is trusted by copying its
    certificate there, without a restart.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store = TrustStore([directory], [])
        self.validator = CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION
            | CertificateValidatorOptions.PEER_CLIENT,
            self.store,
        )
        self._listing: tuple[tuple[str, int, int], ...] | None = None

    def _list(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        for path in sorted(self.directory.glob("*")):
            with contextlib.suppress(OSError):
                stat = path.stat()
                entries.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    async def __call__(self, certificate: x509.Certificate, app: ua.ApplicationDescription) -> None:
        listing = await asyncio.to_thread(self._list)
        if listing != self._listing:
            await self.store.load_trust()
            self._listing = listing
        await self.validator.validate(certificate, app)


class OpcUaPlantServer(AsyncResource):
    """An OPC UA server for a set of machines (see the module docstring).

    Args:
        sites: the plant's sites (folders under ``Factory``).
        devices: the devices served.
        machines: device id -> its machine; a device without one is awaiting commissioning.
        host: address to listen on.
        port: port to listen on (0: any free port; see ``port`` once started).
        pki: where the certificates are (generated when missing).

    Attributes:
        port: the port listened on, once started.
    """

    def __init__(
        self,
        *,
        sites: Sequence[Site],
        devices: Sequence[DeviceSpec],
        machines: Mapping[str, Machine],
        host: str,
        port: int,
        pki: OpcUaPki,
    ) -> None:
        self.sites = sites
        self.devices = devices
        self.machines = machines
        self.host = host
        self.port = port
        self.pki = pki
        self._server: Server | None = None
        self._writable: dict[ua.NodeId, tuple[str, PropertySpec]] = {}
        self._events: dict[str, EventGenerator] = {}

    @property
    def endpoint(self) -> str:
        """The endpoint URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}"

    async def open(self) -> None:
        """Listen (the port is known once this returns)."""
        await asyncio.to_thread(self.pki.ensure, host=self.host)
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Tiangong simulated plant")
        await server.set_application_uri(SERVER_APPLICATION_URI)
        server.set_security_policy(
            [
                ua.SecurityPolicyType.NoSecurity,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        )
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        await server.load_certificate(str(self.pki.server_certificate))
        await server.load_private_key(str(self.pki.server_key))
        server.set_certificate_validator(_TrustedDirectory(self.pki.trusted))
        index = await server.register_namespace(NAMESPACE_URI)
        if index != NAMESPACE_INDEX:  # the node ids the gateway is configured with depend on it
            raise RuntimeError(f"namespace {NAMESPACE_URI} got index {index}")
        await self._build(server)
        server.subscribe_server_callback(CallbackType.PreWrite, self._check_write)
        server.subscribe_server_callback(CallbackType.PostWrite, self._apply_write)
        try:
            await server.start()
        except OSError as exc:
            raise PortUnavailableError(
                "opcua", self.host, self.port, exc.strerror or str(exc)
            ) from exc
        self._server = server
        assert server.bserver is not None
        self.port = server.bserver.port
        _log.info("opcua: %d devices at %s", len(self.devices), self.endpoint)

    async def close(self) -> None:
        """Stop listening; clients are disconnected."""
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def _build(self, server: Server) -> None:
        session = server.nodes.objects.session
        factory = _node("Factory")
        objects = _std(ObjectIds.ObjectsFolder)
        items = [
            _object(factory, objects, "Factory", "Factory", folder=True, description="The plant")
        ]
        used_sites = {spec.site for spec in self.devices}
        items.extend(
            _object(_node(f"Factory.{site.id}"), factory, site.id, site.name, folder=True)
            for site in self.sites
            if site.id in used_sites
        )
        silent: list[ua.NodeId] = []
        for spec in self.devices:
            model = THING_MODELS[spec.kind]
            device = _node(spec.id)
            items.append(
                _object(
                    device,
                    _node(f"Factory.{spec.site}"),
                    spec.id,
                    spec.name or spec.id,
                    folder=False,
                    description=model.name,
                )
            )
            for prop in model.properties:
                items.extend(self._property_items(spec.id, prop))
                if spec.id not in self.machines:
                    silent.append(_node(f"{spec.id}.{prop.id}"))
        for result in await session.add_nodes(items):
            result.StatusCode.check()
        for spec in self.devices:
            await self._methods(server, spec, THING_MODELS[spec.kind])
        offline = ua.DataValue(StatusCode=_status(StatusCodes.BadNoCommunication))
        for node_id in silent:
            await server.write_attribute_value(node_id, offline)

    def _property_items(self, device: str, prop: PropertySpec) -> list[ua.AddNodesItem]:
        _, data_type = _VARIANT[prop.type]
        node_id = _node(f"{device}.{prop.id}")
        ranged = prop.min is not None and prop.max is not None
        if prop.type is DataType.ENUM:
            type_definition = ObjectIds.MultiStateDiscreteType
        elif prop.type is DataType.BOOL:
            type_definition = ObjectIds.TwoStateDiscreteType
        elif prop.type in (DataType.FLOAT, DataType.INT) and ranged:
            type_definition = ObjectIds.AnalogItemType
        elif prop.type in (DataType.FLOAT, DataType.INT) and prop.unit:
            type_definition = ObjectIds.AnalogUnitType
        else:
            type_definition = ObjectIds.BaseDataVariableType
        items = [
            _variable(
                node_id,
                _node(device),
                browse=ua.QualifiedName(prop.id, NAMESPACE_INDEX),
                value=_initial(prop),
                data_type=data_type,
                type_definition=type_definition,
                writable=prop.writable,
                display=prop.name or prop.id,
                description=prop.description or prop.name,
            )
        ]
        if prop.writable:
            self._writable[node_id] = (device, prop)

        def child(name: str, value: ua.Variant, child_type: int) -> ua.AddNodesItem:
            return _variable(
                _node(f"{device}.{prop.id}.{name}"),
                node_id,
                browse=ua.QualifiedName(name, 0),
                value=value,
                data_type=child_type,
                type_definition=ObjectIds.PropertyType,
                prop=True,
            )

        if prop.unit:
            eu = ua.Variant(engineering_units(prop.unit), ua.VariantType.ExtensionObject)
            items.append(child("EngineeringUnits", eu, ObjectIds.EUInformation))
        if ranged and prop.type in (DataType.FLOAT, DataType.INT):
            assert prop.min is not None
            assert prop.max is not None
            eu_range = ua.Range(Low=float(prop.min), High=float(prop.max))
            items.append(
                child(
                    "EURange",
                    ua.Variant(eu_range, ua.VariantType.ExtensionObject),
                    ObjectIds.Range,
                )
            )
        if prop.type is DataType.ENUM:
            assert prop.enum is not None
            labels = [ua.LocalizedText(label) for label in prop.enum]
            items.append(
                child(
                    "EnumStrings",
                    ua.Variant(labels, ua.VariantType.LocalizedText),
                    ObjectIds.LocalizedText,
                )
            )
        if prop.type is DataType.BOOL:
            for name, text in (("TrueState", "true"), ("FalseState", "false")):
                label = ua.Variant(ua.LocalizedText(text), ua.VariantType.LocalizedText)
                items.append(child(name, label, ObjectIds.LocalizedText))
        return items

    async def _methods(self, server: Server, spec: DeviceSpec, model: ThingModel) -> None:
        device = server.get_node(_node(spec.id))
        for command in model.commands:

            async def call(
                _parent: ua.NodeId, *_args: Any, name: str = command.id
            ) -> list[ua.Variant] | ua.StatusCode:
                machine = self.machines.get(spec.id)
                if machine is None:
                    return _status(StatusCodes.BadNoCommunication)
                try:
                    machine.command(name)
                except MachineInputError:
                    return _status(StatusCodes.BadMethodInvalid)
                _log.info("opcua: %s.%s called", spec.id, name)
                return []

            await device.add_method(
                _node(f"{spec.id}.{command.id}"),
                ua.QualifiedName(_camel(command.id), NAMESPACE_INDEX),
                call,
                [],
                [],
            )

    async def _check_write(self, event: ServerItemCallback, _service: CallbackService) -> None:
        """Refuse setpoints outside the thing model's range before they are stored."""
        params = cast("ua.WriteParameters", event.request_params)
        for write in params.NodesToWrite:
            target = self._writable.get(write.NodeId)
            if target is None or write.AttributeId != AttributeIds.Value:
                continue
            variant = write.Value.Value
            if variant is None or not isinstance(variant.Value, int | float | bool):
                raise ua.uaerrors.BadTypeMismatch
            try:
                from_wire(target[1], variant.Value)
            except ValueError as exc:
                raise ua.uaerrors.BadOutOfRange from exc

    async def _apply_write(self, event: ServerItemCallback, _service: CallbackService) -> None:
        """Hand accepted setpoints to their machines."""
        params = cast("ua.WriteParameters", event.request_params)
        results = cast("list[ua.StatusCode]", event.response_params)
        for write, result in zip(params.NodesToWrite, results, strict=True):
            target = self._writable.get(write.NodeId)
            if target is None or not result.is_good() or write.Value.Value is None:
                continue
            device, spec = target
            machine = self.machines.get(device)
            if machine is not None:
                machine.write(spec.id, from_wire(spec, write.Value.Value.Value))
                _log.info("opcua: %s.%s set to %s", device, spec.id, write.Value.Value.Value)

    async def publish(self, device: str, reading: MachineReading, now: float) -> None:
        """Show a machine's reading taken at ``now`` (epoch seconds).

        Its values go to its variables, its events become OPC UA events of its object.
        """
        server = self._server
        if server is None:
            return
        at = ua.DateTime.fromtimestamp(now, UTC)
        spec_of = THING_MODELS[self.machines[device].kind]
        for prop, value in reading.values.items():
            spec = spec_of.property(prop)
            if spec is None:
                continue
            variant_type, _ = _VARIANT[spec.type]
            await server.write_attribute_value(
                _node(f"{device}.{prop}"),
                ua.DataValue(
                    Value=ua.Variant(to_wire(spec, value), variant_type),
                    SourceTimestamp=at,
                    ServerTimestamp=at,
                ),
            )
        for name, data in reading.events:
            generator = self._events.get(device)
            if generator is None:
                generator = await server.get_event_generator(ObjectIds.BaseEventType, _node(device))
                self._events[device] = generator
            event_spec = next((e for e in spec_of.events if e.id == name), None)
            severity = event_spec.severity if event_spec is not None else Severity.INFO
            generator.event.Severity = _SEVERITY[severity]
            details = ", ".join(f"{k}={v}" for k, v in data.items())
            await generator.trigger(at, f"{name}: {details}" if details else name)

"""Thing models from Sparkplug B birth certificates, and the metric <-> property mapping (sans-I/O).

Strategy
--------
A Sparkplug birth certificate (NBIRTH, DBIRTH) declares every metric of a node or device with
its name and datatype, so it says what a thing model would: this module turns one into the
other, deterministically, so that the same birth always gives the same model document (and
``DeviceRegistry.put_thing_model`` then recognises it and creates no new version).

* **Property ids.** A metric name that is already a valid property id (``flow``,
  ``link.rtt_ms``; Tiangong's own gateway uses property ids as metric names) maps to itself.
  Otherwise the folder separator ``/`` becomes ``.`` and spaces become ``_``
  (``Inputs/Temperature`` -> ``Inputs.Temperature``); a name that still is not valid, or whose
  id another metric of the same birth already has, gets the cleaned-up text plus ``-`` and 8 hex
  digits of a BLAKE2b hash of the original name. The original name is the property's display
  name, and commands are sent under it.
* **Datatypes.** Integer datatypes and DateTime (ms since the epoch) become ``int``, Float and
  Double ``float``, Boolean ``bool``, String, Text and UUID ``string``. Arrays, DataSet,
  Template, Bytes, File and property sets have no thing-model type: they are left out of the
  model and their values are not stored.
* **Protocol metrics.** ``bdSeq`` and ``Node Control/*`` are the session's own, never stored.
* **Units.** A string metric property ``engUnit`` (Ignition's name) or ``unit`` becomes the
  property's unit.
* **Writable.** Sparkplug has no read-only flag; every stored metric except ``Properties/*``
  (descriptive metadata by convention) is writable, by NCMD or DCMD.
* **Model ids.** ``spb-<device id>``: one model per device, because the registry pins a device
  to a version of one model id; a birth with another metric set is a new version of the same
  id, and the device moves to it. Ids longer than 64 characters are shortened with a hash.
  Models whose id is not the device's ``spb-`` id were chosen by a person and are never changed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from tiangong.network.access.topics import is_valid_name
from tiangong.network.sparkplug import BDSEQ_METRIC, MetricValue, PropertySet
from tiangong.network.sparkplug import DataType as SparkplugType
from tiangong.platform.model import DataType, PropertySpec, ThingModel

__all__ = [
    "MODEL_PREFIX",
    "DeviceBinding",
    "MetricBinding",
    "bind_birth",
    "birth_model",
    "command_value",
    "is_protocol_metric",
    "map_metric_names",
    "model_id_for",
    "platform_type",
    "undeclared_metrics",
]

#: Prefix of the thing-model ids the Sparkplug host derives from births (reserved for it).
MODEL_PREFIX: Final = "spb-"
#: Metrics under this folder are the node's session control (rebirth, next server...).
_CONTROL_FOLDER: Final = "Node Control/"
#: Metrics under this folder describe the node or device and are not written to.
_READ_ONLY_FOLDER: Final = "Properties/"
#: Metric properties that carry an engineering unit, in order of preference.
_UNIT_KEYS: Final = ("engUnit", "unit")
_MAX_ID: Final = 64
_HASH_HEX: Final = 8

_PLATFORM_TYPES: Final[dict[SparkplugType, DataType]] = {
    SparkplugType.INT8: DataType.INT,
    SparkplugType.INT16: DataType.INT,
    SparkplugType.INT32: DataType.INT,
    SparkplugType.INT64: DataType.INT,
    SparkplugType.UINT8: DataType.INT,
    SparkplugType.UINT16: DataType.INT,
    SparkplugType.UINT32: DataType.INT,
    SparkplugType.UINT64: DataType.INT,
    SparkplugType.DATE_TIME: DataType.INT,
    SparkplugType.FLOAT: DataType.FLOAT,
    SparkplugType.DOUBLE: DataType.FLOAT,
    SparkplugType.BOOLEAN: DataType.BOOL,
    SparkplugType.STRING: DataType.STRING,
    SparkplugType.TEXT: DataType.STRING,
    SparkplugType.UUID: DataType.STRING,
}
_INVALID_CHARS: Final = re.compile(r"[^A-Za-z0-9_.\-]")
_SIMPLE: Final = str.maketrans({"/": ".", " ": "_"})


def platform_type(datatype: SparkplugType) -> DataType | None:
    """The thing-model type that stores a Sparkplug datatype, or ``None`` if none does."""
    return _PLATFORM_TYPES.get(datatype)


def is_protocol_metric(name: str) -> bool:
    """Whether a metric belongs to the Sparkplug session (``bdSeq``, ``Node Control/*``)."""
    return name == BDSEQ_METRIC or name.startswith(_CONTROL_FOLDER)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=_HASH_HEX // 2).hexdigest()


def _hashed(name: str, *, prefix: str = "m") -> str:
    cleaned = _INVALID_CHARS.sub("_", name.translate(_SIMPLE)).lstrip("_.-")
    stem = cleaned[: _MAX_ID - _HASH_HEX - 1] or prefix
    return f"{stem}-{_digest(name)}"


def map_metric_names(names: Iterable[str]) -> dict[str, str]:
    """Property ids for the metric names of one birth certificate (see the module docstring).

    Valid ids are kept first, then the others are mapped in sorted order, so the result depends
    on the set of names only, never on their order in the payload.
    """
    unique = set(names)
    mapping = {name: name for name in unique if is_valid_name(name)}
    taken = set(mapping.values())
    for name in sorted(unique - set(mapping)):
        candidate = name.translate(_SIMPLE)
        if not is_valid_name(candidate) or candidate in taken:
            candidate = _hashed(name)
        mapping[name] = candidate
        taken.add(candidate)
    return mapping


def model_id_for(device_id: str) -> str:
    """The id of the thing model the Sparkplug host derives for a device."""
    model_id = MODEL_PREFIX + device_id
    if len(model_id) <= _MAX_ID:
        return model_id
    keep = _MAX_ID - len(MODEL_PREFIX) - _HASH_HEX - 1
    return f"{MODEL_PREFIX}{device_id[:keep]}-{_digest(device_id)}"


@dataclass(frozen=True, slots=True)
class MetricBinding:
    """How one Sparkplug metric of a device is stored: as which property, of which type.

    Attributes:
        metric: the metric's name in Sparkplug (commands are sent under it).
        property_id: the thing-model property that stores it.
        datatype: its Sparkplug datatype (commands are encoded with it).
        type: the thing-model type of the property.
        unit: the unit its birth declared, if any.
    """

    metric: str
    property_id: str
    datatype: SparkplugType
    type: DataType
    unit: str | None = None

    @property
    def writable(self) -> bool:
        """Whether the platform may write it (everything but ``Properties/*``)."""
        return not self.metric.startswith(_READ_ONLY_FOLDER)


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """The stored metrics of one node or device, as its last birth certificate declared them.

    Attributes:
        metrics: bindings by Sparkplug metric name.
        unsupported: metrics whose datatype has no thing-model type (not stored).
    """

    metrics: Mapping[str, MetricBinding]
    unsupported: tuple[str, ...] = ()

    def by_property(self, property_id: str) -> MetricBinding | None:
        """The binding that stores ``property_id``, if any."""
        return next((b for b in self.metrics.values() if b.property_id == property_id), None)


def _unit(properties: PropertySet) -> str | None:
    for key in _UNIT_KEYS:
        prop = properties.get(key)
        if prop is not None and isinstance(prop.value, str) and prop.value.strip():
            return prop.value.strip()
    return None


def bind_birth(
    metrics: Iterable[tuple[str, SparkplugType]],
    properties: Mapping[str, PropertySet] | None = None,
) -> DeviceBinding:
    """Bind the metrics of a birth certificate to property ids and types.

    Args:
        metrics: (name, datatype) of every metric of the birth.
        properties: metric properties by metric name, for units.
    """
    stored: list[tuple[str, SparkplugType, DataType]] = []
    unsupported: list[str] = []
    for name, datatype in metrics:
        if is_protocol_metric(name):
            continue
        kind = platform_type(datatype)
        if kind is None:
            unsupported.append(name)
        else:
            stored.append((name, datatype, kind))
    ids = map_metric_names(name for name, _, _ in stored)
    props = properties or {}
    bindings = {
        name: MetricBinding(name, ids[name], datatype, kind, _unit(props.get(name, {})))
        for name, datatype, kind in stored
    }
    return DeviceBinding(bindings, tuple(sorted(unsupported)))


def birth_model(device_id: str, binding: DeviceBinding, *, where: str) -> ThingModel:
    """The thing model a birth certificate describes (always the same for the same birth).

    Args:
        device_id: the platform device the model is for.
        binding: the birth's metrics.
        where: the Sparkplug address of the device, for the description.
    """
    properties = [
        PropertySpec(
            id=b.property_id,
            name=b.metric,
            type=b.type,
            unit=b.unit,
            writable=b.writable,
            description=f"Sparkplug metric {b.metric!r} ({b.datatype.name})",
        )
        for b in sorted(binding.metrics.values(), key=lambda b: b.property_id)
    ]
    return ThingModel(
        id=model_id_for(device_id),
        name=f"Sparkplug {device_id}",
        description=f"Derived from the Sparkplug B birth certificate of {where}.",
        properties=properties,
    )


def command_value(
    binding: MetricBinding, value: object, spec: PropertySpec | None = None
) -> MetricValue:
    """Turn a value accepted by the thing model into the metric's Sparkplug value.

    An enum label becomes its index for an integer metric; integers and floats are converted to
    the datatype's kind (the model check already refused fractions for ``int`` properties).

    Raises:
        ValueError: the value cannot be carried by the metric's datatype.
    """
    datatype = binding.datatype
    if spec is not None and spec.enum is not None and isinstance(value, str):
        if datatype in (SparkplugType.STRING, SparkplugType.TEXT):
            return value
        return spec.enum.index(value)
    if _PLATFORM_TYPES.get(datatype) is DataType.INT and isinstance(value, int | float):
        if isinstance(value, bool) or value != int(value):
            raise ValueError(f"{binding.metric} takes a whole number, not {value!r}")
        return int(value)
    if datatype in (SparkplugType.FLOAT, SparkplugType.DOUBLE) and isinstance(value, int | float):
        if isinstance(value, bool):
            raise ValueError(f"{binding.metric} takes a number, not {value!r}")
        return float(value)
    if isinstance(value, bool | str):
        return value
    raise ValueError(f"{binding.metric} ({datatype.name}) cannot take {value!r}")


def undeclared_metrics(model: ThingModel, binding: DeviceBinding) -> Sequence[str]:
    """Metrics of ``binding`` that ``model`` declares no property for (empty: it covers all)."""
    return [b.metric for b in binding.metrics.values() if model.property(b.property_id) is None]

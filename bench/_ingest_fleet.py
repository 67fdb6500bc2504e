"""The simulated fleet of the ingest benchmark: names, thing model and pre-encoded payloads.

Every process of a run (the platform, which registers the fleet, and the publishers, which
speak for it) derives the same fleet from the same ``FleetShape``, so nothing but a handful of
numbers crosses a process boundary.

The fleet is gateways, each with ``devices_per_message`` child devices of one thing model
(``meter``, metrics ``m0``..). One MQTT message is one gateway's columnar envelope::

    {"devices": {"<child>": {"ts": [...], "values": {"m0": [...], ...}}, ...}}

Strategy: encode the values once, up front (a few variants per run, so the data is not one
repeated block), and per message only encode the timestamps and join pre-encoded pieces. Every
message of a gateway covers the next ``samples`` sampling instants of its children, so no two
messages are alike (the platform recognises a redelivery by the digest of topic and payload,
and would not store a repeated message twice). The same values feed the InfluxDB line protocol,
one line per device and instant with every metric a field.

Time: samples are ``SAMPLE_STEP_MS`` apart and start ``HISTORY_MS`` before the run, which leaves
room for more than half a million messages per gateway before the data would reach the present
(the platform refuses samples more than five minutes in the future).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import orjson

from tiangong.network.access import Channel, DeviceTopic
from tiangong.platform.model import DataType, PropertySpec, ThingModel

__all__ = [
    "GATEWAY_MODEL",
    "HISTORY_MS",
    "MEASUREMENT",
    "METER_MODEL",
    "SAMPLE_STEP_MS",
    "SITE",
    "EnvelopeEncoder",
    "FleetShape",
    "Gateway",
    "LineEncoder",
    "ValueBlocks",
    "gateway_model",
    "meter_model",
]

#: Milliseconds between two samples of a device (100 Hz).
SAMPLE_STEP_MS: Final = 10
#: How far before the run the first sample lies.
HISTORY_MS: Final = 7 * 24 * 3_600_000
#: The one site of the benchmark tenant.
SITE: Final = "plant-1"
#: Thing model of the child devices.
METER_MODEL: Final = "meter"
#: Thing model of the gateways (they carry no metrics of their own).
GATEWAY_MODEL: Final = "gateway"
#: InfluxDB measurement of the same data (one per device kind).
MEASUREMENT: Final = "meter"
#: Distinct value blocks per run.
VARIANTS: Final = 16


@dataclass(frozen=True, slots=True)
class Gateway:
    """A gateway and the child devices it publishes for.

    Attributes:
        id: the gateway's device id (its topic names it).
        children: ids of its child devices.
    """

    id: str
    children: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FleetShape:
    """The size of the simulated fleet and of its messages.

    Attributes:
        devices: child devices in all.
        metrics: metrics per device.
        samples: samples per device per message.
        devices_per_message: children per gateway, i.e. devices in one envelope.
    """

    devices: int
    metrics: int
    samples: int
    devices_per_message: int

    def __post_init__(self) -> None:
        for name in ("devices", "metrics", "samples", "devices_per_message"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def metric_names(self) -> list[str]:
        """``m0``, ``m1``, ... ."""
        return [f"m{i}" for i in range(self.metrics)]

    @property
    def points_per_device_message(self) -> int:
        """Points one device contributes to one message."""
        return self.metrics * self.samples

    def gateways(self) -> list[Gateway]:
        """Every gateway with its children (the last one may have fewer)."""
        result = []
        per = self.devices_per_message
        for g, first in enumerate(range(0, self.devices, per)):
            last = min(first + per, self.devices)
            result.append(
                Gateway(f"gw-{g:05d}", tuple(f"dev-{g:05d}-{c:03d}" for c in range(last - first)))
            )
        return result

    def share(self, index: int, count: int) -> list[Gateway]:
        """The gateways publisher ``index`` of ``count`` speaks for."""
        return self.gateways()[index::count]


def meter_model(shape: FleetShape) -> ThingModel:
    """The child devices' thing model: ``metrics`` floats with a (never violated) range."""
    return ThingModel(
        id=METER_MODEL,
        name="Benchmark meter",
        properties=[
            PropertySpec(id=name, type=DataType.FLOAT, min=-1e6, max=1e6)
            for name in shape.metric_names
        ],
    )


def gateway_model() -> ThingModel:
    """The gateways' thing model (no metrics of their own)."""
    return ThingModel(id=GATEWAY_MODEL, name="Benchmark gateway")


class ValueBlocks:
    """Pre-generated values of one device's message, in a few variants.

    Values are random walks rounded to two decimals, as a sensor reports them.

    Args:
        shape: the fleet shape.
        seed: random seed (each publisher uses its own).
        variants: how many distinct blocks.
    """

    def __init__(self, shape: FleetShape, *, seed: int, variants: int = VARIANTS) -> None:
        rng = np.random.default_rng(seed)
        self.variants = variants
        self.json: list[bytes] = []
        self.fields: list[list[str]] = []
        for _ in range(variants):
            start = rng.uniform(10.0, 100.0, size=(shape.metrics, 1))
            walk = start + np.cumsum(rng.normal(0.0, 0.05, size=(shape.metrics, shape.samples)), 1)
            values = np.round(walk, 2).tolist()
            self.json.append(orjson.dumps(dict(zip(shape.metric_names, values, strict=True))))
            self.fields.append(
                [
                    ",".join(
                        f"{name}={values[m][i]!r}" for m, name in enumerate(shape.metric_names)
                    )
                    for i in range(shape.samples)
                ]
            )


class EnvelopeEncoder:
    """Builds the successive messages of one gateway.

    Args:
        tenant: tenant of the fleet.
        gateway: the gateway.
        shape: the fleet shape.
        blocks: pre-encoded values.
        start_ms: time of the first sample.
    """

    def __init__(
        self, tenant: str, gateway: Gateway, shape: FleetShape, blocks: ValueBlocks, start_ms: int
    ) -> None:
        self.gateway = gateway
        self.topic = DeviceTopic.build(tenant, SITE, gateway.id, Channel.TELEMETRY)
        self.points = len(gateway.children) * shape.points_per_device_message
        self._samples = shape.samples
        self._start_ms = start_ms
        self._blocks = blocks
        self._heads = [
            (b"," if j else b"") + b'"' + child.encode() + b'":{"ts":'
            for j, child in enumerate(gateway.children)
        ]

    def timestamps(self, sequence: int) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
        """Sample times of message number ``sequence``."""
        first = self._start_ms + sequence * self._samples * SAMPLE_STEP_MS
        return np.arange(
            first, first + self._samples * SAMPLE_STEP_MS, SAMPLE_STEP_MS, dtype=np.int64
        )

    def payload(self, sequence: int) -> bytes:
        """Message number ``sequence`` of this gateway (0, 1, ...)."""
        ts = orjson.dumps(self.timestamps(sequence), option=orjson.OPT_SERIALIZE_NUMPY)
        blocks = self._blocks.json
        n = self._blocks.variants
        parts = [b'{"devices":{']
        for j, head in enumerate(self._heads):
            parts.extend((head, ts, b',"values":', blocks[(sequence + j) % n], b"}"))
        parts.append(b"}}")
        return b"".join(parts)


class LineEncoder:
    """The same messages as ``EnvelopeEncoder``, in InfluxDB line protocol (ms precision).

    Args:
        gateway: the gateway whose children's data this is.
        shape: the fleet shape.
        blocks: pre-encoded values.
        start_ms: time of the first sample.
    """

    def __init__(
        self, gateway: Gateway, shape: FleetShape, blocks: ValueBlocks, start_ms: int
    ) -> None:
        self.gateway = gateway
        self.points = len(gateway.children) * shape.points_per_device_message
        self._samples = shape.samples
        self._start_ms = start_ms
        self._blocks = blocks
        self._prefixes = [f"{MEASUREMENT},device={child} " for child in gateway.children]

    def lines(self, sequence: int) -> Iterator[str]:
        """The lines of message number ``sequence``, one per device and sampling instant."""
        first = self._start_ms + sequence * self._samples * SAMPLE_STEP_MS
        stamps = [str(first + i * SAMPLE_STEP_MS) for i in range(self._samples)]
        n = self._blocks.variants
        for j, prefix in enumerate(self._prefixes):
            fields = self._blocks.fields[(sequence + j) % n]
            for f, t in zip(fields, stamps, strict=True):
                yield f"{prefix}{f} {t}\n"

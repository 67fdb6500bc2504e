"""Sparkplug B in the platform: any standards-compliant edge node publishing to the broker.

- ``host_service``: the host application's connection, STATE, births -> devices and thing
  models, data -> the ingest pipeline, deaths -> the lifecycle, writes -> NCMD/DCMD
- ``thing_models``: thing models from birth certificates, metric names <-> property ids

The protocol itself (codec, session state machines) is ``tiangong.network.sparkplug``. See
``docs/sparkplug.md`` for the operator's view.
"""

from tiangong.platform.sparkplug.host_service import (
    SPARKPLUG_ATTRIBUTE,
    SparkplugEvent,
    SparkplugHostService,
    SparkplugIngest,
    SparkplugPresence,
    SparkplugRefusal,
    SparkplugSamples,
)
from tiangong.platform.sparkplug.thing_models import (
    MODEL_PREFIX,
    DeviceBinding,
    MetricBinding,
    bind_birth,
    birth_model,
    map_metric_names,
    model_id_for,
)

__all__ = [
    "MODEL_PREFIX",
    "SPARKPLUG_ATTRIBUTE",
    "DeviceBinding",
    "MetricBinding",
    "SparkplugEvent",
    "SparkplugHostService",
    "SparkplugIngest",
    "SparkplugPresence",
    "SparkplugRefusal",
    "SparkplugSamples",
    "bind_birth",
    "birth_model",
    "map_metric_names",
    "model_id_for",
]

"""Which thing models the health service judges, and how: the thing model → method mapping.

A device is judged by the profile of its thing model's id (``HealthSettings.profiles``):

- ``RulModelProfile``: the device reports the cycles of a machine a trained remaining-useful-life
  model knows (``tiangong.apps.phm``, C-MAPSS turbofan): a cycle counter and the 21 sensors. The
  estimate is the model's, in cycles, with the model version that made it.
- ``ConditionProfile`` (``condition.py``): a wearing machine without a trained model: health index
  from its own healthy baseline, RUL in hours by trend extrapolation.

Default mapping (the simulator's kinds; a tenant whose thing models have other ids adds its own):

=============  =================  ==============================================================
thing model    method             indicators (end-of-life limit)
=============  =================  ==============================================================
``turbofan``   RUL model          C-MAPSS sensors s1..s21 per cycle (RUL capped at 125 cycles)
``cnc``        baseline + trend   vibration per unit spindle load (4 x baseline), while running
``pump``       baseline + trend   vibration per unit flow (4 x baseline), while running
``compressor`` baseline + trend   power while loading (+12 %), discharge temperature while
                                  loading or unloading (+25 K)
=============  =================  ==============================================================

The limits are where the machine is taken to be at the end of its life: vibration velocity about
four times its new level is ISO 10816-3 zone D for a machine that starts in zone A; a screw
compressor drawing 10 to 15 % more power at full load, or running 20 to 25 K hotter, is due for an
air-end overhaul. They are configuration: change them per kind.

Every profile also carries a ``MaintenancePolicy``: the thresholds that open a work order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from tiangong.apps.health.anomaly import AnomalySettings
from tiangong.apps.health.condition import ConditionIndicator, ConditionProfile
from tiangong.apps.health.errors import HealthConfigError

__all__ = [
    "DEFAULT_PROFILES",
    "HealthSettings",
    "MaintenancePolicy",
    "Profile",
    "ProfileEntry",
    "RulModelProfile",
]


@dataclass(frozen=True, slots=True)
class MaintenancePolicy:
    """When a low estimate opens a maintenance work order.

    Attributes:
        health_below: a health index below this opens an order (cause ``health_low``); None:
            the health index opens none (for a RUL model it is only RUL / cap).
        rul_below: a RUL below this (in the profile's unit: cycles or hours) opens an order
            (cause ``rul_low``); None: RUL opens none.
        confirm: consecutive estimates beyond a threshold before an order opens (one noisy
            estimate does not send a technician).
    """

    health_below: float | None = 0.3
    rul_below: float | None = None
    confirm: int = 3

    def __post_init__(self) -> None:
        if self.health_below is not None and not 0 <= self.health_below <= 1:
            raise HealthConfigError("health_below is a health index, 0..1")
        if self.confirm < 1:
            raise HealthConfigError("confirm must be at least 1")


@dataclass(frozen=True, slots=True)
class RulModelProfile:
    """A device whose cycles a trained RUL model reads (C-MAPSS layout).

    Attributes:
        cycle_metric: the property counting cycles.
        sensor_prefix: sensors are ``<prefix>1`` .. ``<prefix>21``.
        setting_prefix: settings are ``<prefix>1`` .. ``<prefix>3`` (stored, not used by FD001).
        history: cycles kept per device (the model looks back about 40; 60 is enough).
        min_cycles: fewest cycles before a first estimate.
        model_version: the registry version to use (None: the shipped model).
    """

    cycle_metric: str = "cycle"
    sensor_prefix: str = "s"
    setting_prefix: str = "setting"
    history: int = 60
    min_cycles: int = 15
    model_version: str | None = None

    def __post_init__(self) -> None:
        if self.min_cycles < 1 or self.history < self.min_cycles:
            raise HealthConfigError("history >= min_cycles >= 1")

    @property
    def sensors(self) -> tuple[str, ...]:
        """The 21 sensor properties, in C-MAPSS order."""
        return tuple(f"{self.sensor_prefix}{i}" for i in range(1, 22))


Profile = RulModelProfile | ConditionProfile


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """A thing model's health method and its maintenance policy."""

    method: Profile
    policy: MaintenancePolicy = field(default_factory=MaintenancePolicy)

    @property
    def method_name(self) -> str:
        """``rul-model`` or ``baseline``."""
        return "rul-model" if isinstance(self.method, RulModelProfile) else "baseline"

    @property
    def rul_unit(self) -> str:
        """``cycles`` (RUL model) or ``hours`` (trend)."""
        return "cycles" if isinstance(self.method, RulModelProfile) else "hours"


_RUNNING: Final = frozenset({"running"})

DEFAULT_PROFILES: Final[dict[str, ProfileEntry]] = {
    "turbofan": ProfileEntry(
        RulModelProfile(), MaintenancePolicy(health_below=None, rul_below=30.0, confirm=3)
    ),
    "cnc": ProfileEntry(
        ConditionProfile(
            indicators=(
                ConditionIndicator("vibration", rise=3.0, per="spindle_load", per_min=5.0),
            ),
            operating=_RUNNING,
        ),
        MaintenancePolicy(health_below=0.3, rul_below=24.0),
    ),
    "pump": ProfileEntry(
        ConditionProfile(
            indicators=(ConditionIndicator("vibration", rise=3.0, per="flow", per_min=5.0),),
            operating=_RUNNING,
        ),
        MaintenancePolicy(health_below=0.3, rul_below=24.0),
    ),
    "compressor": ProfileEntry(
        ConditionProfile(
            indicators=(
                ConditionIndicator("power", rise=0.12, states=frozenset({"loading"})),
                ConditionIndicator("discharge_temp", rise=25.0, relative=False),
            ),
            operating=frozenset({"loading", "unloading"}),
        ),
        MaintenancePolicy(health_below=0.3, rul_below=24.0),
    ),
}
"""The simulator's kinds (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Configuration of the health service.

    Attributes:
        profiles: thing model id -> its health method and maintenance policy.
        anomalies: thresholds of the sensor anomaly detectors.
        anomaly_metrics: which metrics are watched for anomalies: ``"all"`` (every float
            property that is not writable) or ``"profiled"`` (only devices with a profile).
        queue_size: commit groups waiting for the service; beyond, a group is dropped and counted
            (ingest never waits for the health service).
        history_every_s: seconds between stored history points per device (the latest estimate
            is always kept).
        latest_every_s: seconds between writes of a device's latest estimate.
        event_poll_s: seconds between looks for ``repaired`` device events.
        max_series: series with an anomaly detector (beyond, new series are not watched).
        max_loop_share: most of the event loop's time the service's own computing takes (it
            pauses after each group in proportion; beyond, the queue fills and drops).
    """

    profiles: dict[str, ProfileEntry] = field(default_factory=lambda: dict(DEFAULT_PROFILES))
    anomalies: AnomalySettings = field(default_factory=AnomalySettings)
    anomaly_metrics: str = "all"
    queue_size: int = 256
    history_every_s: float = 60.0
    latest_every_s: float = 5.0
    event_poll_s: float = 10.0
    max_series: int = 200_000
    max_loop_share: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.max_loop_share <= 1:
            raise HealthConfigError("max_loop_share is a share, more than 0 and at most 1")
        if self.anomaly_metrics not in ("all", "profiled"):
            raise HealthConfigError("anomaly_metrics is 'all' or 'profiled'")
        if self.queue_size < 1:
            raise HealthConfigError("queue_size must be at least 1")

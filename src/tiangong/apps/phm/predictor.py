"""Estimating one device's remaining useful life from its recent cycles.

This is the API the platform calls: a device's recent cycles of the 21 sensors (and, optionally,
the 3 operational settings) in, the cycles left, a health index and the model version out. The
model's features look back up to 40 cycles (and exponentially weighted means further), so
estimates are best with the last 50 or more cycles of a device; fewer still give an estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiangong.apps.phm.errors import FeatureError
from tiangong.apps.phm.features import as_sensor_rows
from tiangong.apps.phm.model import RulModel
from tiangong.apps.phm.registry import ModelRegistry, ModelVersion

__all__ = ["RulEstimate", "RulPredictor"]


@dataclass(frozen=True, slots=True)
class RulEstimate:
    """A remaining-useful-life estimate of one device.

    Attributes:
        rul_cycles: cycles of operation left, estimated; at most the model's cap (125), which
            means "healthy, no sign of wear yet".
        health_index: ``rul_cycles / cap``: 1 healthy, 0 at the end of life.
        model_version: the version of the model that made the estimate.
        cycles_seen: how many cycles the estimate is based on.
    """

    rul_cycles: float
    health_index: float
    model_version: str
    cycles_seen: int


class RulPredictor:
    """Estimates remaining useful life with one loaded model version.

    Args:
        model: the model.
        version: its registry metadata.
    """

    def __init__(self, model: RulModel, version: ModelVersion) -> None:
        self.model = model
        self.version = version

    @classmethod
    def from_registry(cls, registry: ModelRegistry, version: str | None = None) -> RulPredictor:
        """Load a version (default: the shipped model; ``"latest"``: the newest).

        Raises:
            ModelRegistryError: the version is unknown or its files fail their checks.
        """
        model, entry = registry.load(version)
        return cls(model, entry)

    def estimate(self, cycles: Sequence[Mapping[str, float]] | NDArray[np.float64]) -> RulEstimate:
        """Estimate the cycles left after the last of a device's recent cycles.

        Args:
            cycles: oldest first; dictionaries with ``cycle`` and ``s1``..``s21`` (settings
                ``setting1``..``setting3`` may be present and are ignored), or an array of
                ``cycle, setting1..3, s1..s21`` (25 columns) or ``s1..s21`` (21 columns).

        Raises:
            FeatureError: a value is missing or not a number, or cycles do not increase.
        """
        numbers, sensors = as_sensor_rows(cycles)
        if numbers.size > 1 and bool(np.any(np.diff(numbers) <= 0)):
            raise FeatureError("cycle numbers must increase")
        rul = self.model.estimate_engine(numbers, sensors)
        return RulEstimate(
            rul_cycles=rul,
            health_index=float(np.clip(rul / self.model.rul_cap, 0.0, 1.0)),
            model_version=self.version.version,
            cycles_seen=int(numbers.size),
        )

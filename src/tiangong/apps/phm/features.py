"""Features of an engine's recent cycles for the remaining-useful-life model.

Strategy: the sensors of C-MAPSS are noisy and degrade slowly, so the model does not look at a
single cycle but at smoothed views of the recent history of the informative sensors:
exponentially weighted means (short and long memory), means over the last N cycles, and
least-squares slopes over the last N cycles. A fleet *degradation index* (the mean of the
z-normalised sensors, each signed so that it rises with wear) averages out much of the noise and
gets the same views. Everything is causal: the features of cycle ``t`` use cycles up to ``t``
only, so the features of a truncated engine are those of the full engine at its last kept cycle.

Sensors that are constant in FD001 (1, 5, 6, 10, 16, 18, 19) and the operational settings
(one operating condition) carry no information about wear and are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tiangong.apps.phm.cmapss import SENSOR_COUNT, CmapssRecording
from tiangong.apps.phm.errors import FeatureError

__all__ = [
    "INFORMATIVE_SENSORS",
    "FeatureSpec",
    "as_sensor_rows",
    "engine_features",
    "fleet_features",
]

INFORMATIVE_SENSORS: tuple[int, ...] = (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
"""The 1-based numbers of the FD001 sensors that change with wear."""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What the features are, and the fleet statistics they were normalised with.

    The spec is stored with each model version, so a model is always fed the features it was
    trained on.

    Attributes:
        sensors: 1-based sensor numbers used.
        ewm_alphas: smoothing factors of the exponentially weighted means.
        mean_windows: lengths (cycles) of the trailing means.
        slope_windows: lengths (cycles) of the trailing least-squares slopes.
        sensor_mean: per sensor, its mean over the training fleet (for the degradation index).
        sensor_scale: per sensor, its standard deviation over the training fleet, signed so that
            the normalised value rises with wear.
    """

    sensors: tuple[int, ...] = INFORMATIVE_SENSORS
    ewm_alphas: tuple[float, ...] = (0.3, 0.1, 0.03)
    mean_windows: tuple[int, ...] = (5, 15, 30)
    slope_windows: tuple[int, ...] = (15, 40)
    sensor_mean: tuple[float, ...] = field(default=())
    sensor_scale: tuple[float, ...] = field(default=())

    @property
    def fitted(self) -> bool:
        """Whether the fleet statistics are set (by :meth:`fit`)."""
        return len(self.sensor_mean) == len(self.sensors) == len(self.sensor_scale)

    def fit(self, recording: CmapssRecording) -> FeatureSpec:
        """This spec with the fleet statistics of ``recording`` (run-to-failure data)."""
        values = recording.sensors[:, [s - 1 for s in self.sensors]]
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        std[std == 0] = 1.0
        # The sign of each sensor's trend with wear: its correlation with the cycles left.
        remaining = recording.remaining_cycles().astype(np.float64)
        sign = np.array(
            [-1.0 if np.corrcoef(column, remaining)[0, 1] > 0 else 1.0 for column in values.T]
        )
        return FeatureSpec(
            sensors=self.sensors,
            ewm_alphas=self.ewm_alphas,
            mean_windows=self.mean_windows,
            slope_windows=self.slope_windows,
            sensor_mean=tuple(float(v) for v in mean),
            sensor_scale=tuple(float(v) for v in std * sign),
        )

    @property
    def names(self) -> list[str]:
        """The feature names, in column order."""
        signals = [f"s{s}" for s in self.sensors] + ["index"]
        views = (
            [f"ewm{a:g}" for a in self.ewm_alphas]
            + [f"mean{w}" for w in self.mean_windows]
            + [f"slope{w}" for w in self.slope_windows]
        )
        return ["cycle"] + [f"{signal}_{view}" for view in views for signal in signals]

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> FeatureSpec:
        """The spec from :meth:`to_json`'s dictionary.

        Raises:
            FeatureError: a key is missing or of the wrong type.
        """
        try:
            spec = cls(
                sensors=tuple(int(v) for v in document["sensors"]),
                ewm_alphas=tuple(float(v) for v in document["ewm_alphas"]),
                mean_windows=tuple(int(v) for v in document["mean_windows"]),
                slope_windows=tuple(int(v) for v in document["slope_windows"]),
                sensor_mean=tuple(float(v) for v in document["sensor_mean"]),
                sensor_scale=tuple(float(v) for v in document["sensor_scale"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FeatureError(f"malformed feature spec: {exc!r}") from exc
        if not spec.fitted or not all(1 <= s <= SENSOR_COUNT for s in spec.sensors):
            raise FeatureError("malformed feature spec: sensors and statistics do not match")
        return spec


def engine_features(
    spec: FeatureSpec, cycles: NDArray[np.int64], sensors: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The features of every cycle of one engine (causal: row ``t`` uses rows up to ``t``).

    Args:
        spec: a fitted feature spec.
        cycles: the cycle numbers, increasing, shape ``(n,)``.
        sensors: all 21 sensors, shape ``(n, 21)``.

    Returns:
        An array of shape ``(n, len(spec.names))``.

    Raises:
        FeatureError: the spec is not fitted, or the arrays are empty or of the wrong shape.
    """
    if not spec.fitted:
        raise FeatureError("the feature spec has no fleet statistics; fit it first")
    if sensors.ndim != 2 or sensors.shape[1] != SENSOR_COUNT or sensors.shape[0] == 0:
        raise FeatureError(f"expected cycles x {SENSOR_COUNT} sensors, got {sensors.shape}")
    if cycles.shape != (sensors.shape[0],):
        raise FeatureError("one cycle number per row of sensors is needed")
    picked = sensors[:, [s - 1 for s in spec.sensors]]
    normalised = (picked - np.asarray(spec.sensor_mean)) / np.asarray(spec.sensor_scale)
    # The signals: each sensor as measured, and the degradation index in units of fleet spread.
    signals = np.column_stack((picked, normalised.mean(axis=1)))
    columns = [cycles.astype(np.float64)[:, None]]
    columns.extend(_ewm(signals, alpha) for alpha in spec.ewm_alphas)
    columns.extend(_trailing_mean(signals, window) for window in spec.mean_windows)
    columns.extend(_trailing_slope(signals, window) for window in spec.slope_windows)
    return np.hstack(columns)


def fleet_features(spec: FeatureSpec, recording: CmapssRecording) -> NDArray[np.float64]:
    """The features of every row of a recording, engine by engine."""
    out = np.empty((len(recording), len(spec.names)), dtype=np.float64)
    for _engine, rows in recording.engine_slices():
        out[rows] = engine_features(spec, recording.cycles[rows], recording.sensors[rows])
    return out


def _ewm(values: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    out = np.empty_like(values)
    out[0] = values[0]
    keep = 1.0 - alpha
    for row in range(1, values.shape[0]):
        out[row] = keep * out[row - 1] + alpha * values[row]
    return out


def _window_sums(values: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Sum of each row and up to ``window - 1`` rows before it."""
    cumulative = np.vstack((np.zeros((1, *values.shape[1:])), np.cumsum(values, axis=0)))
    ends = np.arange(1, values.shape[0] + 1)
    starts = np.maximum(ends - window, 0)
    result: NDArray[np.float64] = cumulative[ends] - cumulative[starts]
    return result


def _trailing_mean(values: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    counts = np.minimum(np.arange(1, values.shape[0] + 1), window).astype(np.float64)
    return _window_sums(values, window) / counts[:, None]


def _trailing_slope(values: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Least-squares slope per cycle over each row's trailing window (0 for a single row)."""
    n = np.minimum(np.arange(1, values.shape[0] + 1), window).astype(np.float64)[:, None]
    # Positions relative to the first row keep the sums small and the arithmetic exact enough.
    x = np.arange(values.shape[0], dtype=np.float64)[:, None]
    sx = _window_sums(x, window)
    sxx = _window_sums(x * x, window)
    sy = _window_sums(values, window)
    sxy = _window_sums(x * values, window)
    denominator = n * sxx - sx * sx
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, (n * sxy - sx * sy) / safe, 0.0)


def as_sensor_rows(
    rows: Sequence[Mapping[str, float]] | NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Cycle numbers and the 21 sensors from rows given as dictionaries or as an array.

    Dictionaries name the values ``cycle``, ``setting1``..``setting3`` and ``s1``..``s21``
    (settings are optional: the model does not use them). An array has the C-MAPSS layout
    without the unit: ``cycle, setting1..3, s1..s21`` (25 columns), or just ``s1..s21`` (21
    columns, cycles then numbered from 1).

    Raises:
        FeatureError: a value is missing, not a number, or the array is of another shape.
    """
    if isinstance(rows, np.ndarray):
        table = np.asarray(rows, dtype=np.float64)
        if table.ndim != 2 or table.shape[0] == 0:
            raise FeatureError(f"expected a 2-D array of cycles, got shape {table.shape}")
        if table.shape[1] == 4 + SENSOR_COUNT:
            return table[:, 0].astype(np.int64), table[:, 4:]
        if table.shape[1] == SENSOR_COUNT:
            return np.arange(1, table.shape[0] + 1, dtype=np.int64), table
        raise FeatureError(
            f"expected {4 + SENSOR_COUNT} or {SENSOR_COUNT} columns, got {table.shape[1]}"
        )
    if not rows:
        raise FeatureError("no cycles given")
    names = [f"s{j}" for j in range(1, SENSOR_COUNT + 1)]
    try:
        cycles = np.array([int(row["cycle"]) for row in rows], dtype=np.int64)
        sensors = np.array([[float(row[name]) for name in names] for row in rows])
    except KeyError as exc:
        raise FeatureError(f"a cycle has no value for {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise FeatureError(f"a value is not a number: {exc}") from exc
    return cycles, sensors

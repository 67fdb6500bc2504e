"""Validation of decoded samples against a device's thing model (sans-I/O, vectorized).

For each metric of a ``DeviceSamples`` the validator keeps the values that are of the declared
type, in range, in the declared unit and stamped within the accepted time window, and counts
the rest as rejections with a stable reason code. One bad value never rejects its neighbours:
the good values of the same message are kept.

Speed: a clean numeric column (the common case) is converted with one ``numpy.asarray`` call
and checked with array comparisons; only columns with nulls or mixed types take the per-value
path. Booleans inside a numeric column are read as 0/1 (numpy's coercion), which we accept.

Reason codes: ``unknown_metric``, ``unit_mismatch``, ``timestamp_out_of_range``,
``wrong_type``, ``not_integer``, ``out_of_range``, ``unknown_label``, ``too_long``,
``nul_character`` (U+0000 in a string: PostgreSQL cannot store it, so no backend accepts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from tiangong.network.access.payload import DeviceSamples
from tiangong.platform.model import LINK_PROPERTIES, DataType, PropertySpec, ThingModel

__all__ = ["ModelValidator", "Rejection", "TimeWindow", "ValidatedSamples"]

#: Longest string value accepted.
MAX_TEXT: Final = 1024

Mask = npt.NDArray[np.bool_]
Float64s = npt.NDArray[np.float64]
Int64s = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Accepted sample times relative to arrival.

    Attributes:
        max_future_ms: how far ahead of the platform clock a sample may be (clock skew).
        max_age_ms: how old a sample may be (an edge buffer draining after an outage).
    """

    max_future_ms: int = 5 * 60_000
    max_age_ms: int = 30 * 24 * 3_600_000


@dataclass(slots=True)
class Rejection:
    """Values refused for one reason: which device and metric, why, how many, an example."""

    device: str
    metric: str | None
    reason: str
    detail: str
    count: int


@dataclass(slots=True)
class ValidatedSamples:
    """What survived validation, per metric, as columns."""

    device: str
    numeric: dict[str, tuple[Int64s, Float64s]] = field(default_factory=dict)
    text: dict[str, tuple[Int64s, list[str]]] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Number of values kept."""
        return sum(len(ts) for ts, _ in self.numeric.values()) + sum(
            len(ts) for ts, _ in self.text.values()
        )

    @property
    def rejected(self) -> int:
        """Number of values refused."""
        return sum(r.count for r in self.rejections)


class ModelValidator:
    """Validates samples against one thing model version (build once, use for every message).

    Args:
        model: the thing model.
        window: accepted time window.
    """

    def __init__(self, model: ThingModel, window: TimeWindow | None = None) -> None:
        self.model = model
        self.window = window or TimeWindow()
        self._specs: dict[str, PropertySpec] = {
            **LINK_PROPERTIES,
            **{p.id: p for p in model.properties},
        }
        self._labels: dict[str, dict[str, int]] = {
            p.id: {label: i for i, label in enumerate(p.enum or [])}
            for p in model.properties
            if p.type is DataType.ENUM
        }

    def validate(self, samples: DeviceSamples, now_ms: int) -> ValidatedSamples:
        """Split ``samples`` into accepted columns and counted rejections."""
        out = ValidatedSamples(device=samples.device)
        ts = samples.ts
        in_window: Mask = (ts <= now_ms + self.window.max_future_ms) & (
            ts >= now_ms - self.window.max_age_ms
        )
        all_in_window = bool(in_window.all())
        for metric, column in samples.values.items():
            spec = self._specs.get(metric)
            if spec is None:
                self._reject_all(out, metric, column, "unknown_metric", "not in the thing model")
                continue
            unit = samples.units.get(metric)
            if unit is not None and unit != spec.unit:
                self._reject_all(
                    out, metric, column, "unit_mismatch", f"sent {unit!r}, model says {spec.unit!r}"
                )
                continue
            if spec.type is DataType.STRING:
                self._text(out, spec, ts, column, in_window)
            elif spec.type is DataType.ENUM:
                self._enum(out, spec, ts, column, in_window)
            else:
                self._numeric(out, spec, ts, column, in_window, all_in_window=all_in_window)
        return out

    @staticmethod
    def _reject(out: ValidatedSamples, metric: str, reason: str, detail: str, count: int) -> None:
        if count:
            out.rejections.append(Rejection(out.device, metric, reason, detail, count))

    def _reject_all(
        self, out: ValidatedSamples, metric: str, column: list[Any], reason: str, detail: str
    ) -> None:
        count = len(column) - column.count(None)
        self._reject(out, metric, reason, detail, count)

    def _window(self, out: ValidatedSamples, metric: str, keep: Mask, in_window: Mask) -> Mask:
        outside = keep & ~in_window
        n = int(outside.sum())
        if n:
            self._reject(
                out,
                metric,
                "timestamp_out_of_range",
                "sample time outside the accepted window (is it in ms since the epoch?)",
                n,
            )
            return keep & in_window
        return keep

    def _numeric(
        self,
        out: ValidatedSamples,
        spec: PropertySpec,
        ts: Int64s,
        column: list[Any],
        in_window: Mask,
        *,
        all_in_window: bool,
    ) -> None:
        values: Float64s
        arr = np.asarray(column) if column else np.empty(0, dtype=np.float64)
        if arr.ndim == 1 and arr.dtype.kind in "fi" and spec.type is not DataType.BOOL:
            values = arr.astype(np.float64, copy=False)
            keep: Mask = np.ones(len(values), dtype=np.bool_)
        elif arr.ndim == 1 and arr.dtype.kind == "b" and spec.type is DataType.BOOL:
            values = arr.astype(np.float64)
            keep = np.ones(len(values), dtype=np.bool_)
        else:
            values, keep = self._numeric_slow(out, spec, column)
        if spec.type is DataType.INT:
            fractional = keep & (values != np.floor(values))
            n = int(fractional.sum())
            if n:
                self._reject(out, spec.id, "not_integer", "an int property got a fraction", n)
                keep &= ~fractional
        if spec.min is not None or spec.max is not None:
            bad = np.zeros(len(values), dtype=np.bool_)
            if spec.min is not None:
                bad |= values < spec.min
            if spec.max is not None:
                bad |= values > spec.max
            bad &= keep
            n = int(bad.sum())
            if n:
                example = float(values[np.argmax(bad)])
                self._reject(
                    out,
                    spec.id,
                    "out_of_range",
                    f"e.g. {example:g} outside [{spec.min}, {spec.max}] {spec.unit or ''}".rstrip(),
                    n,
                )
                keep &= ~bad
        if not all_in_window:
            keep = self._window(out, spec.id, keep, in_window)
        if keep.all():
            out.numeric[spec.id] = (ts, values)
        elif keep.any():
            out.numeric[spec.id] = (ts[keep], values[keep])

    def _numeric_slow(
        self, out: ValidatedSamples, spec: PropertySpec, column: list[Any]
    ) -> tuple[Float64s, Mask]:
        values = np.zeros(len(column), dtype=np.float64)
        keep = np.zeros(len(column), dtype=np.bool_)
        wrong = 0
        example: Any = None
        want_bool = spec.type is DataType.BOOL
        for i, v in enumerate(column):
            if v is None:
                continue
            if want_bool:
                if isinstance(v, bool) or (type(v) is int and v in (0, 1)):
                    values[i] = float(v)
                    keep[i] = True
                    continue
            elif type(v) in (int, float):
                values[i] = float(v)
                keep[i] = True
                continue
            wrong += 1
            if example is None:
                example = v
        if wrong:
            shown = repr(example)[:40]
            self._reject(
                out, spec.id, "wrong_type", f"expected {spec.type.value}, got {shown}", wrong
            )
        return values, keep

    def _enum(
        self,
        out: ValidatedSamples,
        spec: PropertySpec,
        ts: Int64s,
        column: list[Any],
        in_window: Mask,
    ) -> None:
        labels = self._labels[spec.id]
        values = np.zeros(len(column), dtype=np.float64)
        keep = np.zeros(len(column), dtype=np.bool_)
        unknown = 0
        example: Any = None
        for i, v in enumerate(column):
            if v is None:
                continue
            index = labels.get(v) if isinstance(v, str) else None
            if index is None and type(v) is int and 0 <= v < len(labels):
                index = v
            if index is None:
                unknown += 1
                example = example if example is not None else v
                continue
            values[i] = index
            keep[i] = True
        if unknown:
            self._reject(
                out, spec.id, "unknown_label", f"{example!r} is not one of {spec.enum}", unknown
            )
        keep = self._window(out, spec.id, keep, in_window)
        if keep.any():
            out.numeric[spec.id] = (ts[keep], values[keep])

    def _text(
        self,
        out: ValidatedSamples,
        spec: PropertySpec,
        ts: Int64s,
        column: list[Any],
        in_window: Mask,
    ) -> None:
        keep = np.zeros(len(column), dtype=np.bool_)
        wrong = too_long = nul = 0
        for i, v in enumerate(column):
            if v is None:
                continue
            if not isinstance(v, str):
                wrong += 1
            elif len(v) > MAX_TEXT:
                too_long += 1
            elif "\x00" in v:
                nul += 1
            else:
                keep[i] = True
        self._reject(out, spec.id, "wrong_type", "expected a string", wrong)
        self._reject(out, spec.id, "too_long", f"strings are limited to {MAX_TEXT}", too_long)
        self._reject(out, spec.id, "nul_character", "strings may not contain U+0000", nul)
        keep = self._window(out, spec.id, keep, in_window)
        if keep.any():
            idx = np.flatnonzero(keep)
            out.text[spec.id] = (ts[idx], [column[i] for i in idx])

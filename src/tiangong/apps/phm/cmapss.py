"""Reading NASA C-MAPSS turbofan files.

A C-MAPSS file is plain text, one operating cycle per line, 26 numbers separated by blanks: the
unit (engine) number, the cycle, 3 operational settings and 21 sensor measurements. Rows of one
engine are contiguous and its cycles increase. A training file runs every engine to failure; a
test file stops each engine some cycles before failure, and a separate RUL file gives, one line
per engine in unit order, the cycles that remained after the last one.

The reader checks all of that and names the first offending line, so a truncated download or a
file of another layout fails with a reason instead of training on nonsense.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tiangong.apps.phm.errors import CmapssFormatError

__all__ = [
    "COLUMN_COUNT",
    "SENSOR_COUNT",
    "SETTING_COUNT",
    "CmapssRecording",
    "bundled_cmapss_file",
    "read_cmapss",
    "read_rul",
]

SETTING_COUNT = 3
SENSOR_COUNT = 21
COLUMN_COUNT = 2 + SETTING_COUNT + SENSOR_COUNT


@dataclass(frozen=True, slots=True)
class CmapssRecording:
    """The cycles of a fleet of engines, one row per engine and cycle, rows of an engine together.

    Attributes:
        units: the engine (unit) number of each row, shape ``(n,)``.
        cycles: the cycle number of each row, increasing within an engine, shape ``(n,)``.
        settings: the 3 operational settings, shape ``(n, 3)``.
        sensors: the 21 sensor measurements, shape ``(n, 21)``; column ``j`` is sensor ``j + 1``.
        source: where the rows came from (a path, or a description), for messages.
        digest: SHA-256 (hex) of the file's bytes, or of the arrays for a derived recording.
    """

    units: NDArray[np.int64]
    cycles: NDArray[np.int64]
    settings: NDArray[np.float64]
    sensors: NDArray[np.float64]
    source: str
    digest: str

    def __len__(self) -> int:
        return int(self.units.shape[0])

    @property
    def engines(self) -> NDArray[np.int64]:
        """The engine numbers, in file order."""
        return self.units[self.engine_starts()]

    def engine_starts(self) -> NDArray[np.intp]:
        """The first row of each engine."""
        if len(self) == 0:
            return np.zeros(0, dtype=np.intp)
        changes = np.flatnonzero(self.units[1:] != self.units[:-1]) + 1
        return np.concatenate(([0], changes)).astype(np.intp)

    def engine_slices(self) -> Iterator[tuple[int, slice]]:
        """Yield ``(engine number, row slice)`` for each engine, in file order."""
        starts = self.engine_starts()
        ends = np.append(starts[1:], len(self))
        for start, end in zip(starts, ends, strict=True):
            yield int(self.units[start]), slice(int(start), int(end))

    def select(self, engines: Sequence[int] | NDArray[np.int64]) -> CmapssRecording:
        """The rows of the given engines (in this recording's order)."""
        mask = np.isin(self.units, np.asarray(engines, dtype=np.int64))
        return self._subset(mask, f"{self.source} (engines {len(set(map(int, engines)))})")

    def truncate(self, last_cycles: dict[int, int]) -> CmapssRecording:
        """Keep, for each listed engine, only its cycles up to ``last_cycles[engine]``.

        Engines that are not listed keep all their cycles. This is how a test set is made from
        run-to-failure data.
        """
        limit = np.array(
            [last_cycles.get(int(unit), np.iinfo(np.int64).max) for unit in self.units],
            dtype=np.int64,
        )
        return self._subset(self.cycles <= limit, f"{self.source} (truncated)")

    def remaining_cycles(self) -> NDArray[np.int64]:
        """For run-to-failure data: the cycles left after each row (0 on an engine's last)."""
        out = np.empty(len(self), dtype=np.int64)
        for _engine, rows in self.engine_slices():
            out[rows] = self.cycles[rows][-1] - self.cycles[rows]
        return out

    def _subset(self, mask: NDArray[np.bool_], source: str) -> CmapssRecording:
        units, cycles = self.units[mask], self.cycles[mask]
        settings, sensors = self.settings[mask], self.sensors[mask]
        digest = hashlib.sha256()
        for array in (units, cycles, settings, sensors):
            digest.update(np.ascontiguousarray(array).tobytes())
        return CmapssRecording(units, cycles, settings, sensors, source, digest.hexdigest())


def bundled_cmapss_file(name: str) -> Path:
    """The path of a C-MAPSS file shipped with Tiangong (``train_FD001.txt``, ``RUL_FD001.txt``).

    Raises:
        CmapssFormatError: no such file is shipped.
    """
    path = Path(str(resources.files("tiangong.apps.phm") / "data" / "cmapss" / name))
    if not path.is_file():
        raise CmapssFormatError("no such file is shipped with Tiangong", path=path)
    return path


def read_cmapss(path: Path | str) -> CmapssRecording:
    """Read a C-MAPSS training or test file.

    Raises:
        CmapssFormatError: the file is missing, empty, or a line has the wrong number of
            columns, a non-numeric value, a non-integer unit or cycle, an engine whose rows are
            not together, or cycles that do not increase.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CmapssFormatError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        where = raw[: exc.start].count(b"\n") + 1
        raise CmapssFormatError("not a text file (non-ASCII byte)", path=path, line=where) from exc

    rows: list[list[float]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue  # blank lines, such as a trailing one, carry nothing
        if len(fields) != COLUMN_COUNT:
            raise CmapssFormatError(
                f"{len(fields)} columns, expected {COLUMN_COUNT} (unit, cycle, "
                f"{SETTING_COUNT} settings, {SENSOR_COUNT} sensors)",
                path=path,
                line=number,
            )
        try:
            values = [float(field) for field in fields]
        except ValueError as exc:
            bad = next(field for field in fields if not _is_number(field))
            raise CmapssFormatError(f"not a number: {bad!r}", path=path, line=number) from exc
        if not all(np.isfinite(values)):
            raise CmapssFormatError("a value is not finite", path=path, line=number)
        rows.append(values)
        line_numbers.append(number)
    if not rows:
        raise CmapssFormatError("no cycles in the file", path=path)

    table = np.asarray(rows, dtype=np.float64)
    ids = table[:, :2]
    bad_id = np.flatnonzero((ids != np.round(ids)).any(axis=1) | (ids < 1).any(axis=1))
    if bad_id.size:
        raise CmapssFormatError(
            "unit and cycle must be positive integers", path=path, line=line_numbers[bad_id[0]]
        )
    units = table[:, 0].astype(np.int64)
    cycles = table[:, 1].astype(np.int64)
    same_engine = units[1:] == units[:-1]
    not_increasing = np.flatnonzero(same_engine & (cycles[1:] <= cycles[:-1]))
    if not_increasing.size:
        row = int(not_increasing[0]) + 1
        raise CmapssFormatError(
            f"cycles of engine {units[row]} do not increase ({cycles[row - 1]} then {cycles[row]})",
            path=path,
            line=line_numbers[row],
        )
    starts = np.concatenate(([0], np.flatnonzero(~same_engine) + 1))
    seen: set[int] = set()
    for start in starts:
        unit = int(units[start])
        if unit in seen:
            raise CmapssFormatError(
                f"engine {unit} appears again after other engines; its rows must be together",
                path=path,
                line=line_numbers[start],
            )
        seen.add(unit)
    return CmapssRecording(
        units=units,
        cycles=cycles,
        settings=table[:, 2 : 2 + SETTING_COUNT].copy(),
        sensors=table[:, 2 + SETTING_COUNT :].copy(),
        source=str(path),
        digest=hashlib.sha256(raw).hexdigest(),
    )


def read_rul(path: Path | str, *, engines: int | None = None) -> NDArray[np.int64]:
    """Read a C-MAPSS RUL file: one non-negative integer per line, one line per test engine.

    Args:
        path: the file.
        engines: if given, the number of lines the file must have (the test set's engines).

    Raises:
        CmapssFormatError: the file is missing, a line is not a non-negative integer, or the
            number of lines differs from ``engines``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CmapssFormatError(f"cannot read: {exc}", path=path) from exc
    values: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        field = line.strip()
        if not field:
            continue
        try:
            value = float(field)
        except ValueError as exc:
            raise CmapssFormatError(
                f"expected one integer per line, got {field!r}", path=path, line=number
            ) from exc
        if value < 0 or value != round(value):
            raise CmapssFormatError(
                f"remaining cycles must be a non-negative integer, got {field!r}",
                path=path,
                line=number,
            )
        values.append(int(value))
    if not values:
        raise CmapssFormatError("no values in the file", path=path)
    if engines is not None and len(values) != engines:
        raise CmapssFormatError(
            f"{len(values)} values for {engines} test engines", path=path, line=None
        )
    return np.asarray(values, dtype=np.int64)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True

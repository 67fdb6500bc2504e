"""A simulated engine test cell that replays NASA C-MAPSS turbofan trajectories.

The RUL model of ``tiangong.apps.phm`` reads the 21 sensors of a turbofan engine per operating
cycle. A test cell is where such readings come from in a plant: an engine runs a cycle, the cell
records the settings and the sensors. ``TurbofanTestCell`` replays real trajectories of the
shipped FD001 training file (100 engines run to failure), one cycle per reading, so the platform's
health service applies the trained model to genuine data:

- the engine is chosen from a hash of the device name, and the replay starts somewhere in the
  first half of its life (like the wearing machines, a cell is not new when the demo starts);
- at the engine's last recorded cycle it fails: a ``fault`` event with code ``WEAR_FAILURE``;
  after a changeover pause (shortened by ``time_scale``) a ``repaired`` event, and the next
  engine of the file starts at cycle 1;
- properties: ``state`` (running/down), ``engine`` (the FD001 unit being replayed, so anyone can
  compare an estimate with the file), ``cycle``, ``setting1..3`` and ``s1..s21``.

The shipped model was trained on all 100 engines of this file, so its estimates in the demo are
better than on an engine it never saw; ``docs/benchmarks.md`` has the figures on held-out engines.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any, Final

from tiangong.apps.phm.cmapss import CmapssRecording, bundled_cmapss_file, read_cmapss
from tiangong.sim.machines import WEAR_FAILURE, Machine, MachineReading

__all__ = ["CHANGEOVER_S", "TurbofanTestCell", "fd001_training"]

#: Pause between a failed engine and the next one, in real seconds (divided by ``time_scale``).
CHANGEOVER_S: Final = (120.0, 300.0)


@functools.cache
def fd001_training() -> CmapssRecording:
    """The shipped FD001 training trajectories (read once per process)."""
    return read_cmapss(bundled_cmapss_file("train_FD001.txt"))


class TurbofanTestCell(Machine):
    """An engine test cell replaying C-MAPSS FD001 run-to-failure trajectories.

    Args:
        name: device name (chooses the engine and the starting cycle).
        time_scale: shortens the changeover between engines (the cycles come one per reading).
    """

    kind = "turbofan"
    interval = 3.0

    def __init__(self, name: str, **kw: Any) -> None:
        kw["fault_rate_per_h"] = 0.0  # the trajectory's end is the cell's only failure
        super().__init__(name, **kw)
        self.time_scale = float(kw.get("time_scale", 1.0))
        self.recording = fd001_training()
        self.slices = list(self.recording.engine_slices())
        self.index = zlib.crc32(f"engine:{name}".encode()) % len(self.slices)
        _, rows = self.slices[self.index]
        self.row = rows.start + int(self.rng.uniform(0.0, 0.5) * (rows.stop - rows.start))
        self.failures = 0
        self.changeover = False

    @property
    def engine(self) -> int:
        """The FD001 unit number being replayed."""
        return self.slices[self.index][0]

    def _next_engine(self) -> None:
        self.index = (self.index + 1) % len(self.slices)
        self.row = self.slices[self.index][1].start

    def _step(self, now: float, dt: float) -> MachineReading:  # noqa: ARG002 - a cycle per reading
        events: list[tuple[str, dict[str, Any]]] = []
        if self.changeover:
            if now < self.down_until:
                return MachineReading({"state": "down", "engine": self.engine})
            self.changeover = False
            self._next_engine()
            events.append(("repaired", {"failures": self.failures}))
        rec = self.recording
        row = self.row
        values: dict[str, Any] = {
            "state": "running",
            "engine": self.engine,
            "cycle": int(rec.cycles[row]),
        }
        for i in range(3):
            values[f"setting{i + 1}"] = float(rec.settings[row, i])
        for i in range(21):
            values[f"s{i + 1}"] = float(rec.sensors[row, i])
        if row + 1 >= self.slices[self.index][1].stop:
            self.failures += 1
            self.changeover = True
            pause = self.rng.uniform(*CHANGEOVER_S) / self.time_scale
            self.down_until = now + pause
            events.append(
                (
                    "fault",
                    {"code": WEAR_FAILURE, "expected_downtime_s": round(pause)},
                )
            )
        else:
            self.row = row + 1
        return MachineReading(values, events)

"""Which machine states count as what, each machine's planned run time per unit, the shifts.

**Production profiles.** A thing model takes part in OEE when it has a profile: its state enum
and the class of each label (see :class:`~tiangong.apps.oee.core.StateClass`), its good and
scrap counters and a default planned run time per unit (PRI). The built-in ones:

======== ================================= =============================== ============ ======
model    producing / setup / waiting        down                            counters     PRI
======== ================================= =============================== ============ ======
cnc      running / setup / idle             down (reason: ``fault`` code)   parts_good,  40 s
                                                                            parts_bad
line     running / - / starved, blocked     stopped (reason: ``fault``)     good_count,  1 s
                                                                            reject_count
======== ================================= =============================== ============ ======

The defaults are the simulator's nameplate rates: a simulated CNC job has a programmed cycle
of 40 to 120 s, so 40 s is the best cycle it is able to run; a simulated line runs at most 60
units a minute. A device's own PRI, when set, wins: the device attribute ``ideal_cycle_s``
(seconds per unit, ``PATCH /api/v1/devices/{id}`` with ``{"attributes": {"ideal_cycle_s":
"55"}}``), then the ``[ideal_cycle_s]`` table of ``oee.toml`` by device id, then by model id.

**oee.toml** (optional, in the platform's data directory)::

    max_gap_s = 300                  # a state sample holds at most this long
    [ideal_cycle_s]                  # by device id or model id
    cnc = 45
    "cnc-007" = 90
    [[sites."huaxia/suzhou".shifts]] # tenant/site; the zone is the site's
    name = "day"
    start = "08:00"
    hours = 12
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from tiangong.apps.oee.calendar import DEFAULT_SHIFTS, Shift
from tiangong.apps.oee.core import StateClass
from tiangong.apps.oee.errors import OeeConfigError, ShiftCalendarError

__all__ = [
    "CYCLE_ATTRIBUTE",
    "PROFILES",
    "OeeConfig",
    "ProductionProfile",
]

#: The device attribute holding a device's own planned run time per unit, in seconds.
CYCLE_ATTRIBUTE: Final = "ideal_cycle_s"

P, S, W, D = StateClass.PRODUCING, StateClass.SETUP, StateClass.WAITING, StateClass.DOWN


@dataclass(frozen=True, slots=True)
class ProductionProfile:
    """How one thing model's telemetry becomes OEE.

    Attributes:
        state_metric: the enum property holding the machine state.
        classes: state label -> class.
        good_metric: the cumulative good-parts counter.
        bad_metric: the cumulative scrap counter (``None``: the machine counts no scrap).
        ideal_cycle_s: the default planned run time per unit, seconds.
    """

    state_metric: str
    classes: Mapping[str, StateClass]
    good_metric: str
    bad_metric: str | None
    ideal_cycle_s: float | None


PROFILES: Final[Mapping[str, ProductionProfile]] = MappingProxyType(
    {
        "cnc": ProductionProfile(
            "state",
            MappingProxyType({"running": P, "setup": S, "idle": W, "down": D}),
            "parts_good",
            "parts_bad",
            40.0,
        ),
        "line": ProductionProfile(
            "state",
            MappingProxyType({"running": P, "starved": W, "blocked": W, "stopped": D}),
            "good_count",
            "reject_count",
            1.0,
        ),
    }
)


def _positive(value: object, what: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OeeConfigError(f"{what} must be a number", path=path)
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise OeeConfigError(f"{what} must be above 0", path=path)
    return number


@dataclass(frozen=True, slots=True)
class OeeConfig:
    """The OEE app's settings.

    Attributes:
        max_gap_s: how long a state sample holds without a newer one.
        fault_tolerance_s: how early a fault event may come before its down time.
        ideal_cycle_s: PRI by device id or thing-model id (seconds).
        shifts: the shifts of a site, by ``(tenant, site)``; others get the default.
    """

    max_gap_s: float = 300.0
    fault_tolerance_s: float = 30.0
    ideal_cycle_s: Mapping[str, float] = field(default_factory=dict)
    shifts: Mapping[tuple[str, str], tuple[Shift, ...]] = field(default_factory=dict)

    def shifts_of(self, tenant_id: str, site_id: str) -> tuple[Shift, ...]:
        """The shifts of a site."""
        return self.shifts.get((tenant_id, site_id), DEFAULT_SHIFTS)

    def cycle_of(
        self, device_id: str, model_id: str, attributes: Mapping[str, str]
    ) -> float | None:
        """A device's PRI: its attribute, else the configuration, else its profile's default."""
        own = attributes.get(CYCLE_ATTRIBUTE)
        if own is not None:
            try:
                number = float(own)
            except ValueError:
                number = math.nan
            if math.isfinite(number) and number > 0:
                return number
        if device_id in self.ideal_cycle_s:
            return self.ideal_cycle_s[device_id]
        if model_id in self.ideal_cycle_s:
            return self.ideal_cycle_s[model_id]
        profile = PROFILES.get(model_id)
        return None if profile is None else profile.ideal_cycle_s

    @classmethod
    def load(cls, path: Path) -> OeeConfig:
        """Read ``oee.toml``; the defaults when the file does not exist.

        Raises:
            OeeConfigError: a file that is not valid TOML or not a valid configuration.
        """
        try:
            doc: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise OeeConfigError(str(exc), path=path) from exc
        cycles = {
            str(k): _positive(v, f"ideal_cycle_s.{k}", path)
            for k, v in dict(doc.get("ideal_cycle_s", {})).items()
        }
        shifts: dict[tuple[str, str], tuple[Shift, ...]] = {}
        for key, site in dict(doc.get("sites", {})).items():
            tenant, _, site_id = str(key).partition("/")
            if not site_id:
                raise OeeConfigError(f"sites.{key}: name sites as 'tenant/site'", path=path)
            try:
                shifts[(tenant, site_id)] = tuple(
                    Shift(
                        str(s["name"]),
                        time.fromisoformat(str(s["start"])),
                        _positive(s["hours"], f"sites.{key}.hours", path),
                    )
                    for s in site["shifts"]
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise OeeConfigError(f"sites.{key}: {exc}", path=path) from exc
        try:
            return cls(
                max_gap_s=_positive(doc.get("max_gap_s", 300.0), "max_gap_s", path),
                fault_tolerance_s=_positive(
                    doc.get("fault_tolerance_s", 30.0), "fault_tolerance_s", path
                ),
                ideal_cycle_s=cycles,
                shifts=shifts,
            )
        except ShiftCalendarError as exc:  # pragma: no cover - shifts are checked per calendar
            raise OeeConfigError(str(exc), path=path) from exc

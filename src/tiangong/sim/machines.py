"""Simulated machines: plausible, correlated signals, free of I/O.

Each machine advances in steps of real time and returns its property values. The physics is
simple but coupled the way plant engineers expect: a job sets the load, load sets electrical
power, power heats the machine with a thermal time constant, wear raises vibration, and faults
stop the machine for a while (raising an event). Every machine is seeded from its name, so a
factory replays the same story for the same device names.

Machines take inputs the way real ones do: writable setpoints (a CNC's feed override, a pump's
speed setpoint, a compressor's unload pressure and remote enable) and commands (``start``,
``stop``, ``reset_counters``), through ``Machine.write`` and ``Machine.command``.

**Slow wear.** A share of the machines that can wear (``wear_share``, 1 in 5 by default, chosen
from a hash of the name) carries a ``Degradation``: the P-F curve of condition monitoring.
Operating hours accumulate towards a drawn service life; the degradation level rises with the
square of the used life, so vibration, temperature and power creep up slowly and then faster,
until the machine fails (state ``down``, a ``fault`` event with code ``WEAR_FAILURE``). After a
repair downtime the wear is reset (a ``repaired`` event) and a new life is drawn. Wear has its
own random generator, seeded from the name, so it never changes the rest of the physics, and
``time_scale`` compresses operating hours and repair time (not the rest of the physics) so a
demo sees a failure in minutes instead of days.

Kinds (thing model ids): ``cnc`` machining center, ``pump`` centrifugal pump, ``compressor``
screw air compressor, ``meter`` power meter of a workshop feeder, ``line`` assembly line
counter, ``turbofan`` engine test cell replaying C-MAPSS trajectories (``turbofan.py``).
"""

from __future__ import annotations

import abc
import math
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from tiangong.sim.errors import MachineInputError

__all__ = [
    "DEFAULT_WEAR_SHARE",
    "KINDS",
    "WEAR_FAILURE",
    "Degradation",
    "Machine",
    "MachineReading",
    "make_machine",
    "wears",
]

#: Share of the machines that can wear which do (1 in 5).
DEFAULT_WEAR_SHARE: Final = 0.2
#: Fault code of a failure at the end of slow wear.
WEAR_FAILURE: Final = "WEAR_FAILURE"
#: Service life from new to failure, in operating hours (drawn per machine and per life).
_LIFE_H: Final = (120.0, 480.0)
#: Repair downtime after a wear failure, in hours.
_REPAIR_H: Final = (4.0, 12.0)


@dataclass(slots=True)
class MachineReading:
    """One step's output: property values and any events raised."""

    values: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _approach(current: float, target: float, dt: float, tau: float) -> float:
    """First-order lag: move ``current`` toward ``target`` with time constant ``tau``."""
    return target + (current - target) * math.exp(-dt / tau)


def wears(name: str, share: float = DEFAULT_WEAR_SHARE) -> bool:
    """Whether the machine named ``name`` is one of the ``share`` that slowly wear out.

    A hash of the name, so the same devices wear in every run and every process.
    """
    return zlib.crc32(f"wear:{name}".encode()) / 2**32 < share


class Degradation:
    """Slow wear of one machine towards a failure (the P-F curve), free of I/O.

    Args:
        name: device name (seeds the wear's own random generator).
        time_scale: how many times faster than real time operating hours accumulate and
            repairs take (1 for real time).

    Attributes:
        life_h: operating hours from new to failure, for the current life.
        hours: operating hours used of it.
        failed: whether the machine is down for repair after a wear failure.
        failures: wear failures so far.
    """

    def __init__(self, name: str, *, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError("time_scale must be positive")
        self.rng = random.Random(zlib.crc32(f"wear/{name}".encode()))  # noqa: S311 - simulation
        self.time_scale = time_scale
        self.life_h = self.rng.uniform(*_LIFE_H)
        # Machines are not new when the simulation starts: some already show early symptoms.
        self.hours = self.life_h * self.rng.uniform(0.0, 0.6)
        self.failed = False
        self.failures = 0

    @property
    def level(self) -> float:
        """Degradation from 0 (as new) to 1 (failure): the square of the used life.

        The square gives the P-F curve's shape: years of little change, then a steepening
        rise in the last part of the life, which is what predictive maintenance looks for.
        """
        return min(self.hours / self.life_h, 1.0) ** 2

    def advance(self, dt: float, *, operating: bool) -> bool:
        """Add ``dt`` real seconds (operating hours only while ``operating``); True on failure."""
        if self.failed:
            return False
        if operating:
            self.hours += dt * self.time_scale / 3600.0
        if self.hours >= self.life_h:
            self.failed = True
            self.failures += 1
            return True
        return False

    def repair_downtime_s(self) -> float:
        """Real seconds the repair after a failure takes (scaled like the wear)."""
        return self.rng.uniform(*_REPAIR_H) * 3600.0 / self.time_scale

    def renew(self) -> None:
        """After the repair: as new, with a freshly drawn service life."""
        self.failed = False
        self.hours = 0.0
        self.life_h = self.rng.uniform(*_LIFE_H)


class Machine(abc.ABC):
    """Base of the simulated machines.

    Args:
        name: device name (seeds the random generator).
        fault_rate_per_h: mean faults per hour of operation.
        wear_share: share of the machines of kinds that wear which slowly wear out.
        time_scale: acceleration of the slow wear (see ``Degradation``).

    Attributes:
        degradation: the slow wear, for the machines that have it.
    """

    kind = "machine"
    #: Seconds between readings.
    interval = 2.0
    #: Whether machines of this kind wear out slowly (rotating machines do).
    can_wear: ClassVar[bool] = False
    #: Writable properties (setpoints): each is the machine's attribute of the same name,
    #: with the limits the machine clamps it to (``None``: a boolean).
    writable: ClassVar[Mapping[str, tuple[float, float] | None]] = {}
    #: Commands the machine takes: each is its method of the same name.
    commands: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        name: str,
        *,
        fault_rate_per_h: float = 0.6,
        wear_share: float = DEFAULT_WEAR_SHARE,
        time_scale: float = 1.0,
    ) -> None:
        self.name = name
        self.rng = random.Random(zlib.crc32(name.encode()))  # noqa: S311 - simulation, not crypto
        self.fault_rate_per_h = fault_rate_per_h
        self.ambient = 22.0 + self.rng.uniform(-3, 3)
        self.down_until = 0.0
        self.wear = self.rng.uniform(0.0, 0.3)
        self.t = 0.0
        self.degradation = (
            Degradation(name, time_scale=time_scale)
            if self.can_wear and wears(name, wear_share)
            else None
        )

    @property
    def degradation_level(self) -> float:
        """0 (as new, or no slow wear) to 1 (about to fail)."""
        return self.degradation.level if self.degradation is not None else 0.0

    def write(self, prop: str, value: float | bool) -> None:
        """Set a writable property (a setpoint); the machine clamps it to what it can do.

        Raises:
            MachineInputError: the property is not writable on this machine.
        """
        if prop not in self.writable:
            raise MachineInputError(self.name, prop, f"not a writable property of a {self.kind}")
        limits = self.writable[prop]
        if limits is None:
            setattr(self, prop, bool(value))
        else:
            setattr(self, prop, min(max(float(value), limits[0]), limits[1]))

    def command(self, command: str) -> None:
        """Execute a command.

        Raises:
            MachineInputError: the machine has no such command.
        """
        if command not in self.commands:
            raise MachineInputError(self.name, command, f"not a command of a {self.kind}")
        getattr(self, command)()

    def _wear(self, now: float, dt: float, *, operating: bool) -> tuple[str, dict[str, Any]] | None:
        """Advance the slow wear; the failure or the end of its repair, as an event."""
        wear = self.degradation
        if wear is None:
            return None
        if wear.failed:
            if now < self.down_until:
                return None
            wear.renew()
            return ("repaired", {"failures": wear.failures})
        if not wear.advance(dt, operating=operating):
            return None
        downtime = wear.repair_downtime_s()
        self.down_until = max(self.down_until, now + downtime)
        return ("fault", {"code": WEAR_FAILURE, "expected_downtime_s": round(downtime)})

    def _maybe_fault(
        self, now: float, dt: float, codes: list[str]
    ) -> tuple[str, dict[str, Any]] | None:
        if now < self.down_until:
            return None
        if self.rng.random() < self.fault_rate_per_h * dt / 3600.0:
            self.down_until = now + self.rng.uniform(60, 300)
            code = self.rng.choice(codes)
            return ("fault", {"code": code, "expected_downtime_s": round(self.down_until - now)})
        return None

    def down(self, now: float) -> bool:
        """Whether the machine is stopped by a fault."""
        return now < self.down_until

    def step(self, now: float) -> MachineReading:
        """Advance to ``now`` (epoch seconds) and read the machine."""
        dt = 0.0 if self.t == 0 else max(now - self.t, 0.0)
        self.t = now
        return self._step(now, dt)

    @abc.abstractmethod
    def _step(self, now: float, dt: float) -> MachineReading:
        """Advance by ``dt`` seconds to ``now`` and read the machine."""


class CncMachine(Machine):
    """A machining center: jobs with cycle times, spindle load, power, heat, parts.

    The feed override (percent, written by the operator or the platform) scales the feed rate
    and the cycle time, and with them the spindle load; 0 is a feed hold.
    """

    kind = "cnc"
    interval = 1.0
    can_wear = True
    writable: ClassVar[Mapping[str, tuple[float, float] | None]] = {"feed_override": (0.0, 150.0)}
    commands = ("reset_counters",)

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.spindle_temp = self.ambient + 5
        self.job_left = 0.0
        self.job_load = 60.0
        self.speed = 8000.0
        self.cycle_s = self.rng.uniform(40, 120)
        self.cycle_progress = 0.0
        self.parts_good = 0
        self.parts_bad = 0
        self.setup_left = 0.0
        self.feed_override = 100.0
        self.cutting = False

    def reset_counters(self) -> None:
        """Command: zero the part counters (a new shift, a new order)."""
        self.parts_good = self.parts_bad = 0

    def _step(self, now: float, dt: float) -> MachineReading:
        events = []
        fault = self._maybe_fault(now, dt, ["SPINDLE_OVERLOAD", "TOOL_BREAKAGE", "COOLANT_LOW"])
        if fault:
            events.append(fault)
        worn = self._wear(now, dt, operating=self.cutting)
        if worn:
            events.append(worn)
        feed = self.feed_override / 100.0
        if self.down(now):
            state, load, speed = "down", 0.0, 0.0
        elif self.setup_left > 0:
            self.setup_left -= dt
            state, load, speed = "setup", 0.0, 0.0
        else:
            if self.job_left <= 0:
                self.job_left = self.rng.uniform(600, 2400)
                self.job_load = self.rng.uniform(45, 85)
                self.speed = self.rng.choice([6000.0, 8000.0, 10000.0, 12000.0])
                self.cycle_s = self.rng.uniform(40, 120)
                self.setup_left = self.rng.uniform(30, 120)
                events.append(("job_started", {"cycle_s": round(self.cycle_s, 1)}))
            self.job_left -= dt
            state = "running"
            # Cutting force grows with the feed; the spindle still turns in a feed hold.
            load = max(0.0, self.job_load * (0.4 + 0.6 * feed) + self.rng.gauss(0, 4))
            speed = self.speed + self.rng.gauss(0, 40)
            self.cycle_progress += dt * feed
            while self.cycle_progress >= self.cycle_s:
                self.cycle_progress -= self.cycle_s
                scrap_p = 0.01 + 0.04 * self.wear
                if self.rng.random() < scrap_p:
                    self.parts_bad += 1
                else:
                    self.parts_good += 1
        self.cutting = state == "running"
        worn_level = self.degradation_level
        power = 1.8 + 0.16 * load + (0.3 if state == "setup" else 0.0) + self.rng.gauss(0, 0.1)
        power *= 1.0 + 0.12 * worn_level  # a worn spindle bearing takes more power
        self.spindle_temp = _approach(
            self.spindle_temp,
            self.ambient + 0.45 * load + 8 * self.wear + 20 * worn_level,
            dt,
            240.0,
        )
        if self.rng.random() < dt / 7200:  # bearing trouble, slowly visible in temp/vibration
            self.wear = min(self.wear + 0.2, 1.0)
        vibration = (0.8 + 3.5 * self.wear) * (load / 70 if load else 0.1) * (
            1.0 + 3.0 * worn_level
        ) + abs(self.rng.gauss(0, 0.15))
        return MachineReading(
            {
                "state": state,
                "spindle_speed": round(max(speed, 0.0), 1),
                "spindle_load": round(min(load, 120.0), 2),
                "feed_rate": round(speed * 0.12 * feed if state == "running" else 0.0, 1),
                "power": round(max(power, 0.0), 3),
                "spindle_temp": round(self.spindle_temp + self.rng.gauss(0, 0.1), 2),
                "vibration": round(min(vibration, 50.0), 3),
                "parts_good": self.parts_good,
                "parts_bad": self.parts_bad,
                "feed_override": round(self.feed_override, 1),
                "door_closed": state == "running",
            },
            events,
        )


class Pump(Machine):
    """A centrifugal cooling-water pump: demand sets speed, speed sets flow, head and power.

    The drive follows the cooling demand up to the speed setpoint (percent of rated speed);
    ``stop`` and ``start`` switch the pump off and on remotely.
    """

    kind = "pump"
    interval = 2.0
    can_wear = True
    writable: ClassVar[Mapping[str, tuple[float, float] | None]] = {"speed_setpoint": (30.0, 105.0)}
    commands = ("start", "stop")

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.motor_temp = self.ambient + 10
        self.rated_flow = self.rng.choice([80.0, 120.0, 200.0])
        self.speed_setpoint = 100.0
        self.run_request = True
        self.turning = False

    def start(self) -> None:
        """Command: run (once a fault, if any, has cleared)."""
        self.run_request = True

    def stop(self) -> None:
        """Command: stop."""
        self.run_request = False

    def _step(self, now: float, dt: float) -> MachineReading:
        events = []
        fault = self._maybe_fault(now, dt, ["DRY_RUN", "MOTOR_OVERTEMP", "SEAL_LEAK"])
        if fault:
            events.append(fault)
        worn = self._wear(now, dt, operating=self.turning)
        if worn:
            events.append(worn)
        hour = (now / 3600 + 8) % 24  # local plant hours (UTC+8)
        demand = 0.55 + 0.35 * math.sin((hour - 6) / 24 * 2 * math.pi) + self.rng.gauss(0, 0.03)
        down = self.down(now)
        running = not down and self.run_request
        self.turning = running
        speed_ratio = min(max(demand, 0.3), 1.05, self.speed_setpoint / 100.0) if running else 0.0
        worn_level = self.degradation_level
        flow = self.rated_flow * speed_ratio + (self.rng.gauss(0, 1.5) if running else 0.0)
        pressure = 1.2 + 3.6 * speed_ratio**2 + (self.rng.gauss(0, 0.04) if running else 0.0)
        power = 0.0 if not running else 0.06 * self.rated_flow * speed_ratio**3 + 0.8
        power *= 1.0 + 0.12 * worn_level
        self.motor_temp = _approach(
            self.motor_temp,
            self.ambient + 6 * power**0.7 + (20 * worn_level if running else 0.0),
            dt,
            600.0,
        )
        vibration = (1.2 + 4.0 * self.wear) * speed_ratio * (1.0 + 3.0 * worn_level) + abs(
            self.rng.gauss(0, 0.2)
        )
        return MachineReading(
            {
                "state": "down" if down else "running" if running else "stopped",
                "flow": round(max(flow, 0.0), 2),
                "pressure": round(max(pressure, 0.0), 3),
                "power": round(max(power + (self.rng.gauss(0, 0.05) if running else 0.0), 0.0), 3),
                "motor_temp": round(self.motor_temp, 2),
                "vibration": round(min(vibration, 50.0), 3),
                "speed_setpoint": round(self.speed_setpoint, 1),
            },
            events,
        )


class AirCompressor(Machine):
    """A load/unload screw compressor: the receiver pressure saw-tooths between setpoints.

    It unloads at the pressure setpoint and loads again 1 bar below it; with remote enable off
    it stands idle and the receiver drains.
    """

    kind = "compressor"
    interval = 2.0
    can_wear = True
    writable: ClassVar[Mapping[str, tuple[float, float] | None]] = {
        "pressure_setpoint": (6.0, 10.0),
        "enabled": None,
    }

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.pressure = 7.0
        self.loading = True
        self.discharge_temp = self.ambient + 40
        self.run_hours = self.rng.uniform(2_000, 20_000)
        self.rated_kw = self.rng.choice([37.0, 55.0, 75.0])
        self.pressure_setpoint = 7.5
        self.enabled = True
        self.compressing = False

    def _step(self, now: float, dt: float) -> MachineReading:
        events = []
        fault = self._maybe_fault(now, dt, ["HIGH_DISCHARGE_TEMP", "OIL_FILTER_CLOGGED"])
        if fault:
            events.append(fault)
        worn = self._wear(now, dt, operating=self.compressing)
        if worn:
            events.append(worn)
        use = 0.35 + 0.15 * math.sin(now / 900) + self.rng.gauss(0, 0.02)  # bar/min of draw
        idle = False
        if self.down(now):
            state, power = "down", 0.0
            self.pressure = max(self.pressure - use * dt / 60, 0.0)
        elif not self.enabled:
            state, power, idle = "idle", 0.0, True
            self.loading = False
            self.pressure = max(self.pressure - use * dt / 60, 0.0)
        else:
            if self.loading:
                self.pressure += (0.9 - use) * dt / 60
                if self.pressure >= self.pressure_setpoint:
                    self.loading = False
            else:
                self.pressure -= use * dt / 60
                if self.pressure <= self.pressure_setpoint - 1.0:
                    self.loading = True
            state = "loading" if self.loading else "unloading"
            power = self.rated_kw * (1.0 if self.loading else 0.28) + self.rng.gauss(0, 0.4)
            self.run_hours += dt / 3600
        self.compressing = state in ("loading", "unloading")
        worn_level = self.degradation_level
        power *= 1.0 + 0.12 * worn_level
        target = (
            self.ambient + 10
            if idle
            else self.ambient + (62 if self.loading else 45) + 20 * self.wear + 25 * worn_level
        )
        self.discharge_temp = _approach(self.discharge_temp, target, dt, 300.0)
        return MachineReading(
            {
                "state": state,
                "pressure": round(self.pressure, 3),
                "power": round(max(power, 0.0), 2),
                "discharge_temp": round(self.discharge_temp, 2),
                "run_hours": round(self.run_hours, 3),
                "pressure_setpoint": round(self.pressure_setpoint, 2),
                "enabled": self.enabled,
            },
            events,
        )


class PowerMeter(Machine):
    """A workshop feeder meter: a daily load shape, three-phase voltage and current, energy."""

    kind = "meter"
    interval = 5.0

    def __init__(self, name: str, **kw: Any) -> None:
        kw["fault_rate_per_h"] = 0.0  # meters do not break in this simulation
        super().__init__(name, **kw)
        self.base_kw = self.rng.uniform(120, 400)
        self.energy = self.rng.uniform(1e5, 1e6)

    def _step(self, now: float, dt: float) -> MachineReading:
        hour = (now / 3600 + 8) % 24
        shift = 1.0 if 8 <= hour < 20 else 0.55  # day shift and night shift
        kw = self.base_kw * shift * (0.9 + 0.1 * math.sin(now / 600)) + self.rng.gauss(0, 3)
        self.energy += kw * dt / 3600
        voltage = 380 + self.rng.gauss(0, 2.5) - 0.01 * kw
        pf = min(0.99, 0.86 + 0.08 * shift + self.rng.gauss(0, 0.005))
        current = kw * 1000 / (math.sqrt(3) * voltage * pf)
        return MachineReading(
            {
                "active_power": round(kw, 2),
                "energy": round(self.energy, 3),
                "voltage": round(voltage, 2),
                "current": round(current, 2),
                "power_factor": round(pf, 4),
            }
        )


class LineCounter(Machine):
    """An assembly line's counter: speed, good and rejected units, stops."""

    kind = "line"
    interval = 2.0
    commands = ("reset_counters",)

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.rate = self.rng.uniform(20, 60)  # units per minute at full speed
        self.good = 0
        self.rejected = 0
        self.carry = 0.0
        self.starved_until = 0.0

    def reset_counters(self) -> None:
        """Command: zero the unit counters."""
        self.good = self.rejected = 0

    def _step(self, now: float, dt: float) -> MachineReading:
        events = []
        fault = self._maybe_fault(now, dt, ["JAM", "SAFETY_STOP"])
        if fault:
            events.append(fault)
        if self.down(now):
            state, speed = "stopped", 0.0
        elif now < self.starved_until:
            state, speed = "starved", 0.0
        else:
            if self.rng.random() < dt / 1800:  # upstream shortage now and then
                self.starved_until = now + self.rng.uniform(30, 180)
            state = "running"
            speed = self.rate * (0.92 + self.rng.gauss(0, 0.03))
        self.carry += speed * dt / 60
        made = int(self.carry)
        self.carry -= made
        bad = sum(1 for _ in range(made) if self.rng.random() < 0.02)
        self.good += made - bad
        self.rejected += bad
        return MachineReading(
            {
                "state": state,
                "line_speed": round(speed, 2),
                "good_count": self.good,
                "reject_count": self.rejected,
            },
            events,
        )


# The engine test cell builds on Machine above (the package imports this module first, so the
# cycle machines -> turbofan -> machines always finds Machine defined).
from tiangong.sim.turbofan import TurbofanTestCell  # noqa: E402

KINDS: Final[dict[str, type[Machine]]] = {
    "cnc": CncMachine,
    "pump": Pump,
    "compressor": AirCompressor,
    "meter": PowerMeter,
    "line": LineCounter,
    "turbofan": TurbofanTestCell,
}


def make_machine(
    kind: str, name: str, *, wear_share: float = DEFAULT_WEAR_SHARE, time_scale: float = 1.0
) -> Machine:
    """A machine of a kind, named (and seeded) ``name``.

    Args:
        kind: the thing model id (a key of ``KINDS``).
        name: the device name.
        wear_share: share of the machines that can wear which slowly wear out.
        time_scale: acceleration of the slow wear (and of the repairs after it).
    """
    return KINDS[kind](name, wear_share=wear_share, time_scale=time_scale)

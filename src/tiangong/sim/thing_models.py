"""Thing models of the simulated machine kinds, and the demo's alarm rules.

These are ordinary thing models: the simulator registers them like any tenant would import
its own, and they double as examples of the thing-model JSON (``tiangong sim models``).
"""

from __future__ import annotations

import math
from typing import Any, Final

from tiangong.platform.alarms.rules import RateOfChangeRule, RuleScope, ThresholdRule
from tiangong.platform.model import (
    CommandSpec,
    DataType,
    EventSpec,
    PropertySpec,
    Severity,
    ThingModel,
)

__all__ = ["DEMO_RULES", "THING_MODELS", "from_wire", "to_wire"]

F, INT, E, B = DataType.FLOAT, DataType.INT, DataType.ENUM, DataType.BOOL

_FAULT = EventSpec(
    id="fault",
    name="Fault / 故障",
    severity=Severity.MAJOR,
    description="The machine stopped on a fault; code WEAR_FAILURE ends slow wear.",
    fields=[
        PropertySpec(id="code", name="Fault code", type=DataType.STRING),
        PropertySpec(id="expected_downtime_s", name="Expected downtime", type=INT, unit="s", min=0),
    ],
)
_REPAIRED = EventSpec(
    id="repaired",
    name="Repaired after a wear failure / 维修完成",
    description="Wear reset after the repair that followed a WEAR_FAILURE fault.",
    fields=[PropertySpec(id="failures", name="Wear failures so far", type=INT, min=0)],
)
_RESET_COUNTERS = CommandSpec(id="reset_counters", name="Reset counters / 计数清零")

#: The 21 C-MAPSS sensors (Saxena et al., PHM08): symbol, description, unit.
_CMAPSS_SENSORS: Final = (
    ("T2", "Total temperature at fan inlet", "degR"),
    ("T24", "Total temperature at LPC outlet", "degR"),
    ("T30", "Total temperature at HPC outlet", "degR"),
    ("T50", "Total temperature at LPT outlet", "degR"),
    ("P2", "Pressure at fan inlet", "psia"),
    ("P15", "Total pressure in bypass duct", "psia"),
    ("P30", "Total pressure at HPC outlet", "psia"),
    ("Nf", "Physical fan speed", "rpm"),
    ("Nc", "Physical core speed", "rpm"),
    ("epr", "Engine pressure ratio (P50/P2)", None),
    ("Ps30", "Static pressure at HPC outlet", "psia"),
    ("phi", "Ratio of fuel flow to Ps30", "pps/psi"),
    ("NRf", "Corrected fan speed", "rpm"),
    ("NRc", "Corrected core speed", "rpm"),
    ("BPR", "Bypass ratio", None),
    ("farB", "Burner fuel-air ratio", None),
    ("htBleed", "Bleed enthalpy", None),
    ("Nf_dmd", "Demanded fan speed", "rpm"),
    ("PCNfR_dmd", "Demanded corrected fan speed", "rpm"),
    ("W31", "HPT coolant bleed", "lbm/s"),
    ("W32", "LPT coolant bleed", "lbm/s"),
)

_TURBOFAN = ThingModel(
    id="turbofan",
    name="Turbofan engine test cell / 涡扇发动机试车台",
    description=(
        "One reading per engine operating cycle: the 3 operational settings and the 21 sensors "
        "of NASA C-MAPSS; the health service applies the trained RUL model to them."
    ),
    properties=[
        PropertySpec(id="state", name="State", type=E, enum=["running", "down"]),
        PropertySpec(id="engine", name="Engine (FD001 unit replayed)", type=INT, min=1),
        PropertySpec(id="cycle", name="Operating cycle", type=INT, min=1),
        *(
            PropertySpec(id=f"setting{i}", name=f"Operational setting {i}", type=F)
            for i in range(1, 4)
        ),
        *(
            PropertySpec(id=f"s{i}", name=f"{symbol}: {text}", type=F, unit=unit)
            for i, (symbol, text, unit) in enumerate(_CMAPSS_SENSORS, start=1)
        ),
    ],
    events=[_FAULT, _REPAIRED],
)

THING_MODELS: Final[dict[str, ThingModel]] = {
    "cnc": ThingModel(
        id="cnc",
        name="CNC machining center / 数控加工中心",
        description="Vertical machining center with spindle monitoring and part counters.",
        properties=[
            PropertySpec(
                id="state", name="State", type=E, enum=["idle", "setup", "running", "down"]
            ),
            PropertySpec(
                id="spindle_speed", name="Spindle speed", type=F, unit="rpm", min=0, max=24_000
            ),
            PropertySpec(id="spindle_load", name="Spindle load", type=F, unit="%", min=0, max=150),
            PropertySpec(
                id="feed_rate", name="Feed rate", type=F, unit="mm/min", min=0, max=30_000
            ),
            PropertySpec(id="power", name="Power", type=F, unit="kW", min=0, max=60),
            PropertySpec(
                id="spindle_temp", name="Spindle temperature", type=F, unit="degC", min=-20, max=150
            ),
            PropertySpec(
                id="vibration", name="Vibration velocity", type=F, unit="mm/s", min=0, max=50
            ),
            PropertySpec(id="parts_good", name="Good parts", type=INT, unit="pcs", min=0),
            PropertySpec(id="parts_bad", name="Scrapped parts", type=INT, unit="pcs", min=0),
            PropertySpec(
                id="feed_override",
                name="Feed override",
                type=F,
                unit="%",
                min=0,
                max=150,
                writable=True,
                description="Scales the programmed feed; 0 holds the feed.",
            ),
            PropertySpec(id="door_closed", name="Guard door closed", type=B),
        ],
        events=[_FAULT, EventSpec(id="job_started", name="Job started"), _REPAIRED],
        commands=[_RESET_COUNTERS],
    ),
    "pump": ThingModel(
        id="pump",
        name="Cooling water pump / 冷却水泵",
        properties=[
            PropertySpec(id="state", name="State", type=E, enum=["running", "down", "stopped"]),
            PropertySpec(id="flow", name="Flow", type=F, unit="m3/h", min=0, max=500),
            PropertySpec(
                id="pressure", name="Discharge pressure", type=F, unit="bar", min=0, max=16
            ),
            PropertySpec(id="power", name="Power", type=F, unit="kW", min=0, max=200),
            PropertySpec(
                id="motor_temp", name="Motor temperature", type=F, unit="degC", min=-20, max=180
            ),
            PropertySpec(
                id="vibration", name="Vibration velocity", type=F, unit="mm/s", min=0, max=50
            ),
            PropertySpec(
                id="speed_setpoint",
                name="Speed setpoint",
                type=F,
                unit="%",
                min=30,
                max=105,
                writable=True,
                description="The drive follows the cooling demand up to this share of rated speed.",
            ),
        ],
        events=[_FAULT, _REPAIRED],
        commands=[
            CommandSpec(id="start", name="Start / 启动"),
            CommandSpec(id="stop", name="Stop / 停止"),
        ],
    ),
    "compressor": ThingModel(
        id="compressor",
        name="Screw air compressor / 螺杆空压机",
        properties=[
            PropertySpec(
                id="state", name="State", type=E, enum=["loading", "unloading", "idle", "down"]
            ),
            PropertySpec(
                id="pressure", name="Receiver pressure", type=F, unit="bar", min=0, max=13
            ),
            PropertySpec(id="power", name="Power", type=F, unit="kW", min=0, max=250),
            PropertySpec(
                id="discharge_temp",
                name="Discharge temperature",
                type=F,
                unit="degC",
                min=-20,
                max=150,
            ),
            PropertySpec(id="run_hours", name="Running hours", type=F, unit="h", min=0),
            PropertySpec(
                id="pressure_setpoint",
                name="Unload pressure",
                type=F,
                unit="bar",
                min=6,
                max=10,
                writable=True,
                description="Unloads at this pressure and loads again 1 bar below it.",
            ),
            PropertySpec(
                id="enabled",
                name="Remote enable",
                type=B,
                writable=True,
                description="Off: the compressor stands idle.",
            ),
        ],
        events=[_FAULT, _REPAIRED],
    ),
    "meter": ThingModel(
        id="meter",
        name="Feeder power meter / 车间电能表",
        properties=[
            PropertySpec(
                id="active_power", name="Active power", type=F, unit="kW", min=-5000, max=5000
            ),
            PropertySpec(id="energy", name="Active energy", type=F, unit="kWh", min=0),
            PropertySpec(id="voltage", name="Line voltage", type=F, unit="V", min=0, max=500),
            PropertySpec(id="current", name="Current", type=F, unit="A", min=0, max=10_000),
            PropertySpec(id="power_factor", name="Power factor", type=F, min=0, max=1),
        ],
    ),
    "line": ThingModel(
        id="line",
        name="Assembly line counter / 装配线计数器",
        properties=[
            PropertySpec(
                id="state", name="State", type=E, enum=["running", "starved", "blocked", "stopped"]
            ),
            PropertySpec(
                id="line_speed", name="Line speed", type=F, unit="pcs/min", min=0, max=600
            ),
            PropertySpec(id="good_count", name="Good units", type=INT, unit="pcs", min=0),
            PropertySpec(id="reject_count", name="Rejected units", type=INT, unit="pcs", min=0),
        ],
        events=[_FAULT],
        commands=[_RESET_COUNTERS],
    ),
    "turbofan": _TURBOFAN,
}

DEMO_RULES: Final[list[ThresholdRule | RateOfChangeRule]] = [
    ThresholdRule(
        name="Spindle overheating",
        metric="spindle_temp",
        op=">",
        value=58.0,
        clear_value=55.0,
        duration_s=30,
        severity=Severity.MAJOR,
        scope=RuleScope(model_id="cnc"),
    ),
    ThresholdRule(
        name="Pump vibration above ISO 10816 zone B",
        metric="vibration",
        op=">",
        value=4.5,
        duration_s=20,
        severity=Severity.MINOR,
        scope=RuleScope(model_id="pump"),
    ),
    ThresholdRule(
        name="Compressed air pressure low",
        metric="pressure",
        op="<",
        value=6.0,
        duration_s=30,
        severity=Severity.CRITICAL,
        scope=RuleScope(model_id="compressor"),
    ),
    ThresholdRule(
        name="Feeder voltage out of band",
        metric="voltage",
        op="<",
        value=372.0,
        duration_s=15,
        severity=Severity.WARNING,
        scope=RuleScope(model_id="meter"),
    ),
    RateOfChangeRule(
        name="Spindle temperature rising fast",
        metric="spindle_temp",
        max_rate=0.05,
        window_s=60,
        duration_s=20,
        severity=Severity.WARNING,
        scope=RuleScope(model_id="cnc"),
    ),
]


def to_wire(spec: PropertySpec, value: Any) -> float | int | bool | str:
    """A machine's value as industrial protocols carry it: an enum as its label's index.

    Raises:
        ValueError: an enum label the thing model does not know.
    """
    if spec.type is DataType.ENUM:
        assert spec.enum is not None  # guaranteed by PropertySpec's validation
        return spec.enum.index(value)
    if spec.type is DataType.BOOL:
        return bool(value)
    if spec.type is DataType.INT:
        return int(value)
    if spec.type is DataType.STRING:
        return str(value)
    return float(value)


def from_wire(spec: PropertySpec, value: float | bool) -> float | bool:
    """A value written by a client, as the machine takes it, checked against the thing model.

    Raises:
        ValueError: the value is outside the property's range (or not a boolean for a bool).
    """
    if spec.type is DataType.BOOL:
        return bool(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{spec.id}: {number} is not a number")
    if (spec.min is not None and number < spec.min) or (spec.max is not None and number > spec.max):
        raise ValueError(f"{spec.id}: {number:g} is outside [{spec.min}, {spec.max}]")
    return number

"""The shift calendar of a site: shifts, production days, and the periods OEE is reported for.

A calendar is a list of shifts, each a start on the local wall clock and a length in hours, in
the site's time zone (``Site.timezone``). The default is three 8-hour shifts starting at 06:00
(``A`` 06:00-14:00, ``B`` 14:00-22:00, ``C`` 22:00-06:00 the next morning).

**Production day.** A day's shifts start with the first shift of the list; a shift starting on
the wall clock before the first one belongs to the same production day (the ``C`` shift that
starts at 22:00 on 1 December and ends at 06:00 on the 2nd is 1 December's). ``by=day`` reports
the union of one production day's shifts; time that no shift covers is not planned and counts
nowhere.

**Boundaries.** Shift starts and ends are wall-clock times, turned into UTC with the zone's
rules: on a daylight-saving change the night shift is an hour shorter or longer, and two
adjacent shifts always share their boundary to the millisecond, so every sample and every
state interval is split exactly there.
"""

from __future__ import annotations

import enum
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

from tiangong.apps.oee.errors import ShiftCalendarError

__all__ = [
    "DEFAULT_SHIFTS",
    "CalendarPeriod",
    "Grouping",
    "Shift",
    "ShiftCalendar",
]


class Grouping(enum.StrEnum):
    """How figures are split in time."""

    SHIFT = "shift"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class Shift:
    """One shift of the calendar.

    Attributes:
        name: as the plant calls it (``A``, ``early``, ``夜班``).
        start: its start on the local wall clock.
        hours: its length on the wall clock.
    """

    name: str
    start: time
    hours: float


DEFAULT_SHIFTS: Final = (
    Shift("A", time(6), 8.0),
    Shift("B", time(14), 8.0),
    Shift("C", time(22), 8.0),
)


@dataclass(frozen=True, slots=True)
class CalendarPeriod:
    """One reported period: a shift, or a production day.

    Attributes:
        key: ``2026-12-01/A`` for a shift, ``2026-12-01`` for a day.
        day: the production day.
        shift: the shift's name (``None`` for a day).
        start_ms: the period's start (UTC ms), clipped to the query.
        end_ms: its end (exclusive), clipped to the query.
        planned: the planned (shift) intervals inside it, sorted, not overlapping.
    """

    key: str
    day: date
    shift: str | None
    start_ms: int
    end_ms: int
    planned: tuple[tuple[int, int], ...] = field(default=())

    @property
    def planned_ms(self) -> int:
        """Planned time in the period."""
        return sum(end - start for start, end in self.planned)


def _to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ShiftCalendar:
    """A site's shifts in its time zone.

    Raises:
        ShiftCalendarError: an unknown zone, no shifts, a shift of no or negative length, two
            shifts with one name, or shifts that overlap or together exceed 24 hours.
    """

    timezone: str = "UTC"
    shifts: tuple[Shift, ...] = DEFAULT_SHIFTS

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ShiftCalendarError(f"unknown time zone {self.timezone!r}") from exc
        if not self.shifts:
            raise ShiftCalendarError("a shift calendar needs at least one shift")
        names = [s.name for s in self.shifts]
        if len(set(names)) != len(names):
            raise ShiftCalendarError(f"shift names must be unique: {names}")
        # Offsets in minutes from the first shift's start, on the wall clock.
        offsets = self._offsets()
        previous_end = 0.0
        for shift, offset in zip(self.shifts, offsets, strict=True):
            if not 0 < shift.hours <= 24:
                raise ShiftCalendarError(f"shift {shift.name!r}: hours must be in (0, 24]")
            if offset < previous_end:
                raise ShiftCalendarError(f"shift {shift.name!r} starts before the one before ends")
            previous_end = offset + shift.hours * 60
        if previous_end > 24 * 60:
            raise ShiftCalendarError("the shifts of a day end more than 24 hours after they start")

    def _offsets(self) -> list[float]:
        first = self.shifts[0].start
        base = first.hour * 60 + first.minute + first.second / 60
        out = []
        for shift in self.shifts:
            minutes = shift.start.hour * 60 + shift.start.minute + shift.start.second / 60
            out.append((minutes - base) % (24 * 60))
        return out

    @classmethod
    def with_zone(cls, timezone: str, shifts: Sequence[Shift] = DEFAULT_SHIFTS) -> ShiftCalendar:
        """A calendar of ``shifts`` in ``timezone`` (a site's zone)."""
        return cls(timezone=timezone, shifts=tuple(shifts))

    def _shift_bounds(self, day: date) -> list[tuple[Shift, int, int]]:
        """The UTC bounds of each shift of production day ``day``."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        first = datetime.combine(day, self.shifts[0].start)
        out = []
        for shift, offset in zip(self.shifts, self._offsets(), strict=True):
            # Wall-clock arithmetic, then the zone's rules: adjacent shifts share boundaries.
            start = first + timedelta(minutes=offset)
            end = start + timedelta(hours=shift.hours)
            out.append(
                (
                    shift,
                    _to_ms(start.replace(tzinfo=zone)),
                    _to_ms(end.replace(tzinfo=zone)),
                )
            )
        return out

    def periods(self, start_ms: int, end_ms: int, by: Grouping) -> list[CalendarPeriod]:
        """The shifts or production days overlapping ``[start_ms, end_ms)``, clipped to it."""
        if end_ms <= start_ms:
            return []
        zone = zoneinfo.ZoneInfo(self.timezone)
        first_day = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(zone).date()
        last_day = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(zone).date()
        out: list[CalendarPeriod] = []
        day = first_day - timedelta(days=1)
        while day <= last_day:
            bounds = self._shift_bounds(day)
            clipped = [
                (shift, max(s, start_ms), min(e, end_ms))
                for shift, s, e in bounds
                if s < end_ms and e > start_ms
            ]
            if by is Grouping.SHIFT:
                out.extend(
                    CalendarPeriod(
                        key=f"{day.isoformat()}/{shift.name}",
                        day=day,
                        shift=shift.name,
                        start_ms=s,
                        end_ms=e,
                        planned=((s, e),),
                    )
                    for shift, s, e in clipped
                )
            elif clipped:
                next_day = self._shift_bounds(day + timedelta(days=1))[0][1]
                out.append(
                    CalendarPeriod(
                        key=day.isoformat(),
                        day=day,
                        shift=None,
                        start_ms=max(bounds[0][1], start_ms),
                        end_ms=min(next_day, end_ms),
                        planned=tuple((s, e) for _, s, e in clipped),
                    )
                )
            day += timedelta(days=1)
        return out

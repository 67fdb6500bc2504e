"""Time-of-use electricity tariffs (分时电价: 峰 peak, 平 flat, 谷 valley, 尖峰 critical peak).

A tariff divides the *local* day of a site into bands, each of one period, and prices each
period in CNY per kWh. Bands are given to the minute (``"08:00"``-``"12:00"``, ``"24:00"`` for
the end of the day) and must cover the day exactly once; the split of consumption is exact at
band boundaries (see :func:`tiangong.apps.energy.core.summarize`).

The default, :data:`CHINA_INDUSTRIAL_DEFAULT`, has the shape of a typical Chinese general
industrial schedule in Asia/Shanghai time: valley 00:00-08:00, peak 08:00-12:00 and 17:00-21:00,
flat 12:00-17:00 and 21:00-24:00. Its prices (peak 1.10, flat 0.65, valley 0.30 CNY/kWh) are
illustrative, not any grid company's price list: they keep the peak/valley ratio of at least
3:1 asked by the NDRC notice on time-of-use pricing (发改价格 [2021] 1093 号). Configure the
local grid company's current list per site (:class:`TariffBook`).
"""

from __future__ import annotations

import enum
import math
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from tiangong.apps.energy.errors import TariffError
from tiangong.files import atomic_write

__all__ = [
    "CHINA_INDUSTRIAL_DEFAULT",
    "MINUTES_PER_DAY",
    "Tariff",
    "TariffBand",
    "TariffBook",
    "TouPeriod",
]

MINUTES_PER_DAY: Final = 1440


class TouPeriod(enum.StrEnum):
    """A time-of-use period."""

    CRITICAL = "critical"  # 尖峰
    PEAK = "peak"  # 峰
    FLAT = "flat"  # 平
    VALLEY = "valley"  # 谷


def _minute_of(text: str, *, tariff: str) -> int:
    try:
        hours, minutes = text.split(":")
        value = int(hours) * 60 + int(minutes)
    except ValueError:
        raise TariffError(f"{text!r} is not a time of day like '08:30'", tariff=tariff) from None
    if not 0 <= int(minutes) < 60 or not 0 <= value <= MINUTES_PER_DAY:
        raise TariffError(f"{text!r} is not a time of day between 00:00 and 24:00", tariff=tariff)
    return value


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True, slots=True)
class TariffBand:
    """One band of the local day: ``[start, end)`` in minutes after local midnight."""

    start_minute: int
    end_minute: int
    period: TouPeriod


@dataclass(frozen=True, slots=True)
class Tariff:
    """A time-of-use tariff.

    Attributes:
        name: what it is (a grid company's schedule and voltage class, say).
        timezone: IANA zone the bands are in (Asia/Shanghai for China).
        bands: the local day's bands, in order, covering ``[00:00, 24:00)`` exactly once.
        prices: CNY per kWh of each period used by a band.

    Raises:
        TariffError: bands with holes or overlaps, a period without a price, a negative or
            infinite price, an unknown time zone, a name longer than 200 characters, a currency
            that is not three letters.
    """

    name: str
    timezone: str
    bands: tuple[TariffBand, ...]
    prices: Mapping[TouPeriod, float]
    currency: str = "CNY"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise TariffError(f"unknown time zone {self.timezone!r}", tariff=self.name) from None
        object.__setattr__(self, "_zone", zone)
        at = 0
        for band in self.bands:
            if band.start_minute != at:
                raise TariffError(
                    f"bands must cover the day once, in order: {_clock(at)} expected, "
                    f"{_clock(band.start_minute)} found",
                    tariff=self.name,
                )
            if band.end_minute <= band.start_minute:
                raise TariffError(
                    f"band {_clock(band.start_minute)}-{_clock(band.end_minute)} is empty",
                    tariff=self.name,
                )
            at = band.end_minute
        if at != MINUTES_PER_DAY:
            raise TariffError(f"bands end at {_clock(at)}, not 24:00", tariff=self.name)
        for band in self.bands:
            price = self.prices.get(band.period)
            if price is None:
                raise TariffError(f"no price for the {band.period} period", tariff=self.name)
        for period, price in self.prices.items():
            if not 0.0 <= price < math.inf:  # also refuses NaN
                raise TariffError(f"price of {period} is {price}", tariff=self.name)
        if not 0 < len(self.name) <= 200:
            raise TariffError("a tariff's name has 1 to 200 characters", tariff=self.name[:40])
        if not (self.currency.isascii() and self.currency.isalpha() and len(self.currency) == 3):
            raise TariffError(
                f"currency {self.currency[:20]!r} is not an ISO 4217 code like CNY",
                tariff=self.name,
            )

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The time zone of the bands."""
        return self._zone

    def price(self, period: TouPeriod) -> float:
        """CNY per kWh in ``period`` (0 for a period the tariff does not use)."""
        return float(self.prices.get(period, 0.0))

    def periods_between(self, start_ms: int, end_ms: int) -> list[tuple[int, int, TouPeriod]]:
        """``[start, end)`` cut at every band boundary: ``(from_ms, to_ms, period)`` in order.

        Boundaries are local wall-clock times, so a day with a daylight-saving change has its
        bands at the right instants (China has none; the code does not assume it).
        """
        if end_ms <= start_ms:
            return []
        first = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(self._zone).date()
        last = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(self._zone).date()
        out: list[tuple[int, int, TouPeriod]] = []
        day = first - timedelta(days=1)
        while day <= last:
            for band in self.bands:
                lo = max(self._instant(day, band.start_minute), start_ms)
                hi = min(self._instant(day, band.end_minute), end_ms)
                if lo < hi:
                    if out and out[-1][2] is band.period and out[-1][1] == lo:
                        out[-1] = (out[-1][0], hi, band.period)
                    else:
                        out.append((lo, hi, band.period))
            day += timedelta(days=1)
        return out

    def _instant(self, day: date, minute: int) -> int:
        """Epoch ms of a local wall-clock minute of ``day`` (24:00 = the next midnight)."""
        if minute == MINUTES_PER_DAY:
            day += timedelta(days=1)
            minute = 0
        when = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=self._zone)
        return int(when.timestamp() * 1000)

    def to_json(self) -> dict[str, Any]:
        """The tariff as JSON-ready data (the shape :meth:`from_json` reads)."""
        return {
            "name": self.name,
            "timezone": self.timezone,
            "currency": self.currency,
            "bands": [
                {
                    "from": _clock(b.start_minute),
                    "to": _clock(b.end_minute),
                    "period": b.period.value,
                }
                for b in self.bands
            ],
            "prices": {p.value: v for p, v in self.prices.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tariff:
        """Read a tariff from its JSON form.

        Raises:
            TariffError: the document is not a valid tariff.
        """
        name = str(data.get("name", "tariff"))
        try:
            bands = tuple(
                TariffBand(
                    _minute_of(str(b["from"]), tariff=name),
                    _minute_of(str(b["to"]), tariff=name),
                    TouPeriod(b["period"]),
                )
                for b in data["bands"]
            )
            prices = {TouPeriod(k): float(v) for k, v in dict(data["prices"]).items()}
            return cls(
                name=name,
                timezone=str(data.get("timezone", "Asia/Shanghai")),
                bands=bands,
                prices=prices,
                currency=str(data.get("currency", "CNY")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TariffError(f"not a tariff document ({exc})", tariff=name) from exc


def _bands(*spec: tuple[str, str, TouPeriod]) -> tuple[TariffBand, ...]:
    return tuple(
        TariffBand(_minute_of(a, tariff="default"), _minute_of(b, tariff="default"), p)
        for a, b, p in spec
    )


#: A typical Chinese general industrial schedule (module docstring); prices are illustrative.
CHINA_INDUSTRIAL_DEFAULT: Final = Tariff(
    name="China general industrial TOU (illustrative prices)",
    timezone="Asia/Shanghai",
    bands=_bands(
        ("00:00", "08:00", TouPeriod.VALLEY),
        ("08:00", "12:00", TouPeriod.PEAK),
        ("12:00", "17:00", TouPeriod.FLAT),
        ("17:00", "21:00", TouPeriod.PEAK),
        ("21:00", "24:00", TouPeriod.FLAT),
    ),
    prices={TouPeriod.PEAK: 1.10, TouPeriod.FLAT: 0.65, TouPeriod.VALLEY: 0.30},
)


@dataclass(slots=True)
class TariffBook:
    """The tariff of each site, and the one for sites without their own.

    Attributes:
        default: the tariff of sites not listed.
        sites: ``(tenant, site)`` -> tariff.
    """

    default: Tariff = CHINA_INDUSTRIAL_DEFAULT
    sites: dict[tuple[str, str], Tariff] = field(default_factory=dict)

    def for_site(self, tenant_id: str, site_id: str) -> Tariff:
        """The tariff that prices a site's consumption."""
        return self.sites.get((tenant_id, site_id), self.default)

    def set(self, tenant_id: str, site_id: str, tariff: Tariff) -> None:
        """Give a site its own tariff."""
        self.sites[(tenant_id, site_id)] = tariff

    def remove(self, tenant_id: str, site_id: str) -> bool:
        """Price a site by the default tariff again; whether it had its own."""
        return self.sites.pop((tenant_id, site_id), None) is not None

    def to_json(self) -> dict[str, Any]:
        """The book as JSON-ready data (the shape :meth:`from_json` reads)."""
        return {
            "default": self.default.to_json(),
            "sites": [
                {"tenant": tenant, "site": site, "tariff": tariff.to_json()}
                for (tenant, site), tariff in sorted(self.sites.items())
            ],
        }

    def save(self, path: Path) -> None:
        """Write the book to ``path`` in one step (:meth:`load` reads it). Blocking."""
        atomic_write(path, orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: Path) -> TariffBook:
        """Read a book from a JSON file (:meth:`from_json`); the default book if it is missing.

        Raises:
            TariffError: the file is unreadable or holds an invalid tariff.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise TariffError(f"cannot read {path}: {exc}", tariff=str(path)) from exc
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TariffError(f"{path} is not JSON: {exc}", tariff=str(path)) from exc
        if not isinstance(data, dict):
            raise TariffError(f"{path} is not a JSON object", tariff=str(path))
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TariffBook:
        """Read ``{"default": tariff?, "sites": [{"tenant", "site", "tariff"}...]}``.

        Raises:
            TariffError: a tariff in it is not valid.
        """
        default = data.get("default")
        book = cls(Tariff.from_json(default) if default else CHINA_INDUSTRIAL_DEFAULT)
        entries: Iterable[Mapping[str, Any]] = data.get("sites", [])
        for entry in entries:
            try:
                tenant, site, tariff = str(entry["tenant"]), str(entry["site"]), entry["tariff"]
            except (KeyError, TypeError) as exc:
                raise TariffError(f"a site entry lacks {exc}", tariff="book") from exc
            book.set(tenant, site, Tariff.from_json(tariff))
        return book

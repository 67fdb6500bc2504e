"""Exceptions of the energy app.

Tree::

    EnergyError
    ├── TariffError          a time-of-use tariff that is not valid (bands not covering the day
    │                        exactly once, a negative or missing price, an unknown time zone)
    └── EnergyQueryError     a consumption or anomaly query that cannot be answered (an empty or
                             too long range, an unknown aggregation)
"""

from __future__ import annotations

__all__ = ["EnergyError", "EnergyQueryError", "TariffError"]


class EnergyError(Exception):
    """Root of all errors of the energy app."""


class TariffError(EnergyError):
    """A time-of-use tariff that is not valid.

    Attributes:
        tariff: the tariff's name.
    """

    def __init__(self, message: str, *, tariff: str) -> None:
        super().__init__(f"tariff {tariff!r}: {message}")
        self.tariff = tariff


class EnergyQueryError(EnergyError):
    """A query that cannot be answered as asked (the message says why)."""

"""Exceptions of the OEE app.

Tree::

    OeeError
    ├── ShiftCalendarError    a shift calendar that cannot be used (overlapping shifts, bad zone)
    └── OeeConfigError        an ``oee.toml`` that cannot be read (carries the path)
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["OeeConfigError", "OeeError", "ShiftCalendarError"]


class OeeError(Exception):
    """Root of all errors of the OEE app."""


class ShiftCalendarError(OeeError):
    """A shift calendar that cannot be used."""


class OeeConfigError(OeeError):
    """An OEE configuration file that cannot be read.

    Attributes:
        path: the file.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path

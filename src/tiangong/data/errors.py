"""Exceptions of the data system.

Tree::

    DataError
    ├── CatalogError      an unknown indicator, dimension code or catalog version
    ├── ReportError       a report that is malformed, unsigned, wrongly signed or inconsistent
    ├── ExportRefused     governance stopped a transfer at the boundary (carries the rule)
    └── TransportError    the transport (JetStream, outbox) failed
"""

from __future__ import annotations


class DataError(Exception):
    """Root of all data-system errors."""


class CatalogError(DataError):
    """An indicator, dimension code or catalog version that the catalog does not know."""


class ReportError(DataError):
    """A report that cannot be accepted; the message says why (it is also the rejection reason)."""


class ExportRefused(DataError):  # noqa: N818 - the domain's word: a refused export
    """A transfer that the export policy does not allow."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class TransportError(DataError):
    """The report transport failed (server unreachable, stream missing)."""

"""Time-series storage.

One interface (``TimeSeriesStore``), an embedded DuckDB backend and a PostgreSQL backend.
"""

from tiangong.platform.tsdb.base import (
    Aggregate,
    LatestValue,
    PointBatch,
    SeriesKey,
    TimeSeriesStore,
)

__all__ = ["Aggregate", "LatestValue", "PointBatch", "SeriesKey", "TimeSeriesStore"]

"""Resources opened and closed with the event loop: a database store, a service with a worker.

``AsyncResource`` gives a class with ``async open()`` and ``async close()`` the async context
manager that every such class in Tiangong offers (``async with Store(...) as store:``), so that
the pair is written once.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource(abc.ABC):
    """Something to ``open`` before use and ``close`` after; ``async with`` does both."""

    __slots__ = ()

    @abc.abstractmethod
    async def open(self) -> None:
        """Acquire what the resource needs (connections, tables, worker tasks)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release it; the resource cannot be used afterwards."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

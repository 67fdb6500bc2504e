"""Honouring a cancellation that a library swallowed (Python 3.11).

Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives as the awaited operation
completes (fixed in 3.12). pymodbus connects with it and nats-py's requests (every JetStream
publish) use it, so a task cancelled at that moment runs on: its TaskGroup, and the shutdown of
the process around it, then wait for it for ever (seen: a gateway that ignored SIGTERM, and a
platform whose indicator reporter kept reporting while the platform stopped). A task's pending
cancellation requests stay counted, so long-running loops call :func:`raise_if_cancelling` after
each call into such a library.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelling"]


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task has a cancellation request pending."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

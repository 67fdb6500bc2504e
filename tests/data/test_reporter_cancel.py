"""The platform's reporter stops when cancelled even if nats-py swallows the cancellation.

Python 3.11's ``asyncio.wait_for`` (nats-py's publish and fetch use it) can lose a cancellation
that arrives as the awaited request completes; a real nats-server cannot be timed to hit that
window, so the round below swallows the cancellation on purpose (the fault injection the project
allows). Before the fix the reporter then reported on for ever and the platform's shutdown hung.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from tiangong.data.enterprise import EnterpriseReporter


class SwallowingReporter(EnterpriseReporter):
    rounds = 0

    async def one_round(self) -> None:
        self.rounds += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            return  # the library's bug: the cancellation is lost here


async def test_a_swallowed_cancellation_still_stops_the_reporter(tmp_path: Path) -> None:
    reporter = SwallowingReporter(
        cast(Any, None), cast(Any, None), state_file=tmp_path / "state.json", interval=0.01
    )
    task = asyncio.create_task(reporter.run())
    await asyncio.sleep(0.02)  # inside a round
    task.cancel()
    async with asyncio.timeout(5):  # without the fix: a reporter that never stops
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert reporter.rounds == 1

"""Forwarding order: a frame is handed to the uplink at most once per connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tiangong.edge.buffer import ForwardBuffer, StoredFrame
from tiangong.edge.forwarding import ForwardQueue
from tiangong.edge.frames import Frame


async def buffered(buffer: ForwardBuffer, first_ts: int) -> StoredFrame:
    frame = Frame(b'{"devices": {}}', 1, first_ts)
    seq = await buffer.append(frame)
    assert seq is not None
    return StoredFrame(seq, frame.channel, frame.payload, frame.points, frame.first_ts_ms)


async def nothing_to_send(queue: ForwardQueue) -> bool:
    try:
        await asyncio.wait_for(queue.next_frame(), 0.2)
    except TimeoutError:
        return True
    return False


@pytest.fixture
async def buffer(tmp_path: Path):
    buffer = ForwardBuffer(tmp_path / "buffer.sqlite", max_bytes=1024**3)
    await buffer.open()
    yield buffer
    await buffer.close()


async def test_a_frame_settled_while_a_backlog_read_held_it_is_not_sent_again(
    buffer: ForwardBuffer,
) -> None:
    old = await buffered(buffer, 1)  # from before this connection
    queue = ForwardQueue(buffer)
    queue.restart()
    live = await buffered(buffer, 2)
    queue.offer(live)

    assert (await queue.next_frame()).seq == live.seq  # live first
    # The backlog read finds both frames while the live one is in flight: the old one goes out,
    # the live one stays in the read backlog.
    assert (await queue.next_frame()).seq == old.seq
    queue.settled(live.seq)  # its PUBACK arrives; its deletion is still to come
    await buffer.ack([live.seq])

    assert await nothing_to_send(queue)  # not the live frame a second time


async def test_after_a_restart_every_unacknowledged_frame_goes_out_again(
    buffer: ForwardBuffer,
) -> None:
    first = await buffered(buffer, 1)
    second = await buffered(buffer, 2)
    queue = ForwardQueue(buffer)
    queue.restart()
    sent = [(await queue.next_frame()).seq for _ in range(2)]
    assert sent == [first.seq, second.seq]
    for seq in sent:
        queue.settled(seq)  # failed: the connection went away before the PUBACK
    assert await nothing_to_send(queue)

    queue.restart()  # the next connection
    assert [(await queue.next_frame()).seq for _ in range(2)] == [first.seq, second.seq]

"""A TCP proxy that makes a link worse on purpose: delay, jitter, loss and cuts.

``tc netem`` would be the natural tool, but this machine's kernel has no netem qdisc, so the
tests put this proxy between a client and its real server instead. Every chunk read on one side
is delivered to the other after ``delay_s`` (plus up to ``jitter_s``), in order; with probability
``loss`` a chunk is lost. TCP itself never loses bytes, so a lost chunk models what a lossy radio
link does to a request/response protocol: the request (or its answer) never arrives and the
client times out. ``cut()`` stops all traffic without closing the connections (a cable pulled
somewhere between the two ends); ``heal()`` lets traffic through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from types import TracebackType
from typing import Self


class FaultyLink:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port`` with faults."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay_s: float = 0.0,
        jitter_s: float = 0.0,
        loss: float = 0.0,
        seed: int = 7,
    ) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.loss = loss
        self.port = 0
        self.chunks_lost = 0
        self.connections = 0
        self._random = random.Random(seed)
        self._cut = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._closing = True
        self._server.close()
        await self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.drop_connections()

    def cut(self) -> None:
        """Stop forwarding anything (connections stay open, data is held back)."""
        self._cut.set()

    def heal(self) -> None:
        """Forward again."""
        self._cut.clear()

    async def drop_connections(self) -> None:
        """Reset every open connection (a router restarting)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Every transport is aborted on every way out, or a connection accepted while the proxy
        # closes would leak its socket into a later test (an "unclosed transport" warning).
        if self._closing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        except BaseException:
            writer.transport.abort()
            raise
        if self._closing:
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        # Chunks are stamped with their delivery time and delivered in order by a second task,
        # so a slow link stays a pipe (throughput is kept, latency added) rather than a stall.
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, chunk = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                while self._cut.is_set():
                    await asyncio.sleep(0.01)
                sink.write(chunk)
                await sink.drain()
            sink.close()

        delivery = asyncio.create_task(deliver())
        try:
            while chunk := await source.read(65536):
                if self.loss and self._random.random() < self.loss:
                    self.chunks_lost += 1
                    continue
                due = time.monotonic() + self.delay_s + self._random.uniform(0, self.jitter_s)
                await queue.put((due, chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            await queue.put(None)
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await delivery

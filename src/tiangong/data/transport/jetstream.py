"""Reports over NATS JetStream: one stream per level, one durable pull consumer per center.

Strategy:

* **Streams.** ``TG_REPORTS_REGIONAL`` holds ``tg.reports.regional.>``, likewise for
  ``INDUSTRY`` and ``NATIONAL``; a center's destination ``regional.east`` is the subject
  ``tg.reports.regional.east``. Streams are file-backed, created idempotently (created if
  missing, updated if their configuration changed) by whichever side touches them first.
* **Publish.** ``Nats-Msg-Id`` is ``<destination>/<message id>``, so the stream drops a
  re-publish of the same report revision within ``duplicate_window``; the call returns after
  the server's publish ack (the message is on disk), and retries with backoff until
  ``publish_timeout`` while the connection is down. Retries are safe because of the id.
  No ``Nats-Expected-Stream`` header is sent: it breaks mirrored streams (nats-server #5240).
* **Consume.** A durable pull consumer per center with explicit acks, ``ack_wait`` and a
  bounded ``max_ack_pending``: a center that crashes with unacked reports gets them again
  after ``ack_wait``; one that is down finds its position kept by the server.
* **Connection.** The client reconnects forever with backoff; the delivery loop keeps
  fetching across reconnects and re-creates its consumer if the server lost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from tiangong.cancellation import raise_if_cancelling
from tiangong.data.errors import TransportError
from tiangong.data.model import Level
from tiangong.data.transport.base import Backoff, parse_destination
from tiangong.resource import AsyncResource

__all__ = ["JetStreamTransport", "stream_name", "subject_for"]

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
REPORT_ID_HEADER = "Tg-Message-Id"
_STREAM_IN_USE = 10058  # "stream name already in use with a different configuration"
_SUBJECTS_OVERLAP = 10065  # "subjects overlap with an existing stream" (also a creation race)


def stream_name(level: Level) -> str:
    """The stream of one level's destinations: ``TG_REPORTS_REGIONAL``."""
    return f"TG_REPORTS_{level.value.upper()}"


def subject_for(destination: str) -> str:
    """The subject of a destination: ``regional.east`` → ``tg.reports.regional.east``."""
    level, center_id = parse_destination(destination)
    return f"tg.reports.{level.value}.{center_id}"


@dataclass(slots=True)
class _JetStreamDelivery:
    """A JetStream message as a ``Delivery``."""

    msg: Msg
    message_id: str
    attempt: int

    @property
    def data(self) -> bytes:
        """The report's bytes."""
        return self.msg.data

    async def ack(self) -> None:
        """Ack to the server (at most once)."""
        await self._settle(self.msg.ack())

    async def nak(self, delay: float | None = None) -> None:
        """Ask for redelivery, after ``delay`` seconds."""
        await self._settle(self.msg.nak(delay=delay))

    async def term(self) -> None:
        """Never redeliver this message."""
        await self._settle(self.msg.term())

    async def _settle(self, action: Awaitable[None]) -> None:
        try:
            await action
        except nats.errors.Error as exc:
            # Unsettled: the server redelivers after ack_wait, which idempotency absorbs.
            raise TransportError(f"cannot settle {self.message_id}: {exc}") from exc


class JetStreamTransport(AsyncResource):
    """The report transport on a NATS JetStream server or cluster.

    Args:
        servers: NATS URLs (``nats://127.0.0.1:4222``); several for a cluster.
        name: The connection's name in the server's monitoring.
        domain: The JetStream domain to use (a leaf node's island), or None for the local one.
        replicas: Stream replicas (3 on a 3-node cluster).
        duplicate_window: Seconds during which a re-published message id is dropped.
        max_age: Seconds a report stays in its stream (a center down longer loses it).
        ack_wait: Seconds before an unacked delivery is delivered again.
        max_ack_pending: Deliveries a consumer may hold unacked (backpressure).
        fetch_batch: Messages asked for per pull request.
        publish_timeout: Seconds ``publish`` keeps retrying before ``TransportError``.
        connect_timeout: Seconds to wait for the first connection (None: forever).
        user: Optional user name; ``password`` its password.
        password: Optional password.
    """

    def __init__(
        self,
        *,
        servers: Sequence[str] | str = "nats://127.0.0.1:4222",
        name: str = "tiangong-data",
        domain: str | None = None,
        replicas: int = 1,
        duplicate_window: float = 3600.0,
        max_age: float = 30 * 86400.0,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1024,
        fetch_batch: int = 128,
        publish_timeout: float = 60.0,
        connect_timeout: float | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers:
            raise TransportError("no NATS server given")
        if replicas < 1 or max_ack_pending < 1 or fetch_batch < 1:
            raise TransportError("replicas, max_ack_pending and fetch_batch must be >= 1")
        if min(duplicate_window, max_age, ack_wait, publish_timeout) <= 0:
            raise TransportError("windows and timeouts must be positive")
        self.name = name
        self.domain = domain
        self.replicas = replicas
        self.duplicate_window = duplicate_window
        self.max_age = max_age
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self.fetch_batch = fetch_batch
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.user = user
        self.password = password
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: set[Level] = set()
        self._stream_lock = asyncio.Lock()
        self._backoff = Backoff()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to NATS (reconnecting for ever once connected).

        Raises:
            TransportError: NATS does not answer within ``connect_timeout``.
        """

        async def on_error(exc: Exception) -> None:
            log.debug("NATS: %s", exc)

        async def on_disconnected() -> None:
            if self._nc is not None and not self._nc.is_closed:
                log.warning("NATS: disconnected, reconnecting")

        async def on_reconnected() -> None:
            log.info("NATS: reconnected")

        try:
            async with asyncio.timeout(self.connect_timeout):
                self._nc = await nats.connect(
                    self.servers,
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    user=self.user,
                    password=self.password,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise TransportError(f"cannot connect to NATS at {', '.join(self.servers)}") from exc
        self._js = self._nc.jetstream(domain=self.domain)

    async def close(self) -> None:
        """Close the connection; unacked deliveries come again to the next consumer."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await nc.close()

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (``TransportError`` outside ``async with``)."""
        if self._js is None:
            raise TransportError("the JetStream transport is not open")
        return self._js

    @property
    def connected(self) -> bool:
        """True while the connection to a server is up."""
        return self._nc is not None and self._nc.is_connected

    # -- streams and consumers ---------------------------------------------------------------

    def stream_config(self, level: Level) -> StreamConfig:
        """The configuration of one level's stream."""
        return StreamConfig(
            name=stream_name(level),
            description=f"Tiangong indicator reports to {level.value} centers",
            subjects=[f"tg.reports.{level.value}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=self.duplicate_window,
            max_age=self.max_age,
        )

    async def ensure_stream(self, level: Level) -> None:
        """Create (or bring up to date) the stream of ``level``; idempotent."""
        if level in self._streams:
            return
        async with self._stream_lock:
            if level in self._streams:
                return
            config = self.stream_config(level)
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code not in (_STREAM_IN_USE, _SUBJECTS_OVERLAP):
                    raise
                # Another center created it at the same moment (the server can answer that
                # race with "subjects overlap"); only a stream of another name is a conflict.
                try:
                    await self.js.stream_info(stream_name(level))
                except nats.js.errors.NotFoundError:
                    raise exc from None
                await self.js.update_stream(config)
            self._streams.add(level)

    def consumer_config(self, destination: str, durable: str) -> ConsumerConfig:
        """The durable pull consumer of a center."""
        return ConsumerConfig(
            name=durable,
            durable_name=durable,
            description=f"Tiangong center consuming {destination}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            filter_subject=subject_for(destination),
        )

    async def ensure_consumer(self, destination: str, durable: str) -> None:
        """Create the durable consumer of ``destination`` if missing (or update it)."""
        level, _ = parse_destination(destination)
        await self.ensure_stream(level)
        await self.js.add_consumer(stream_name(level), self.consumer_config(destination, durable))

    # -- the ReportTransport contract --------------------------------------------------------

    async def publish(self, destination: str, data: bytes, *, message_id: str) -> None:
        """Publish and wait for the stream's ack; retry (same id) while the server is away."""
        level, _ = parse_destination(destination)
        subject = subject_for(destination)
        headers = {MSG_ID_HEADER: f"{destination}/{message_id}", REPORT_ID_HEADER: message_id}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        attempt = 0
        while True:
            raise_if_cancelling()  # a retry must not outlive a stop nats-py swallowed
            try:
                await self.ensure_stream(level)
                await self.js.publish(subject, data, timeout=5.0, headers=dict(headers))
            except (nats.errors.Error, OSError) as exc:
                if isinstance(exc, nats.js.errors.BadRequestError):
                    raise TransportError(f"{destination}: refused by JetStream: {exc}") from exc
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TransportError(
                        f"{destination}: no publish ack within {self.publish_timeout:.0f}s"
                        f" ({type(exc).__name__})"
                    ) from exc
                await asyncio.sleep(min(self._backoff.delay(attempt), remaining))
                attempt += 1
            else:
                return

    async def deliveries(
        self, destination: str, *, durable: str
    ) -> AsyncIterator[_JetStreamDelivery]:
        """Pull from the durable consumer forever; survive reconnects and a lost consumer."""
        level, _ = parse_destination(destination)
        sub: JetStreamContext.PullSubscription | None = None
        failures = 0
        try:
            while True:
                raise_if_cancelling()  # nats-py's fetch (asyncio.wait_for) may swallow a stop
                try:
                    if sub is None:
                        await self.ensure_consumer(destination, durable)
                        sub = await self.js.pull_subscribe_bind(
                            durable=durable, stream=stream_name(level)
                        )
                    msgs = await sub.fetch(self.fetch_batch, timeout=2.0)
                except nats.errors.TimeoutError:
                    failures = 0
                    continue  # nothing to deliver right now
                except nats.js.errors.NotFoundError:
                    log.warning("%s: consumer %s missing, re-creating", destination, durable)
                    self._streams.discard(level)
                    await _drop(sub)
                    sub = None
                    await asyncio.sleep(self._backoff.delay(failures))
                    failures += 1
                    continue
                except (nats.errors.Error, OSError) as exc:
                    log.debug("%s: fetch failed: %s", destination, exc)
                    if isinstance(exc, nats.errors.ConnectionClosedError):
                        raise TransportError("the NATS connection is closed") from exc
                    await asyncio.sleep(self._backoff.delay(failures))
                    failures += 1
                    continue
                failures = 0
                for msg in msgs:
                    headers = msg.headers or {}
                    message_id = headers.get(REPORT_ID_HEADER) or headers.get(MSG_ID_HEADER, "")
                    yield _JetStreamDelivery(
                        msg=msg, message_id=message_id, attempt=msg.metadata.num_delivered
                    )
        finally:
            await _drop(sub)

    async def backlog(self, destination: str, *, durable: str) -> int:
        """Messages not yet delivered plus delivered but unacked, for the durable consumer."""
        level, _ = parse_destination(destination)
        try:
            info = await self.js.consumer_info(stream_name(level), durable)
        except nats.js.errors.NotFoundError:
            try:
                stream = await self.js.stream_info(
                    stream_name(level), subjects_filter=subject_for(destination)
                )
            except nats.js.errors.NotFoundError:
                return 0
            return sum((stream.state.subjects or {}).values())
        except nats.errors.Error as exc:
            raise TransportError(f"{destination}: cannot read consumer {durable}") from exc
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def _drop(sub: JetStreamContext.PullSubscription | None) -> None:
    if sub is not None:
        with contextlib.suppress(nats.errors.Error, OSError):
            await sub.unsubscribe()

"""Identifiers for the platform's devices and product batches (标识注册), kept in step with it.

Every device of the enterprise gets ``<prefix>/<device id>`` on the enterprise's identifier
node, and every product batch ``<prefix>/<batch id>`` (by convention ``BATCH-...``), with typed
values that point back to the platform. The value types (one per index, data UTF-8 text):

=====  ================  ==============================================================
index  type              data
=====  ================  ==============================================================
1      ``URL``           device: its dashboard page, ``<platform>/#/devices/<id>``
2      ``TG.RECORD``     device: its REST record, ``<platform>/api/v1/devices/<id>``
3      ``TG.MODEL``      device: its pinned thing model, ``<model id>@v<version>``
4      ``TG.MAKER``      who made it: the device's ``maker``/``manufacturer``/``vendor``
                         attribute, else the enterprise; for a batch, the enterprise
5      ``TG.SITE``       where it is: ``<tenant>/<site>``
6      ``TG.STATE``      device: lifecycle state (provisioned, online, offline, ...)
7      ``TG.NAME``       display name (device name; a batch's product)
8      ``TG.KIND``       ``device`` or ``batch``
9      ``TG.PRODUCED``   batch: when it was produced, ISO 8601 with offset
10     ``TG.LINE``       batch: the line's identifier; ``references`` → ``(line, 1)``
20...  ``TG.COMPONENT``  batch: one per component identifier (often another enterprise's);
                         ``references`` → ``(component, 1)``; ``tiangong id trace`` follows
=====  ================  ==============================================================

Strategy: the registry calls our listener synchronously on every change; the listener only
computes the values and puts them in a bounded, coalescing map of pending writes keyed by
identifier (a device changing twice before it is written is written once, with its latest
values), so the ingest path never waits for the identifier node. Named writer tasks take the
oldest pending identifier and create it with ``OVRW`` over TCP (idempotent: the record is
replaced), answering the node's challenge with the enterprise admin's secret. A write that
fails (node down, timeout, busy, refused) goes back to the head of the map and all writers
pause with an exponential backoff with jitter; each failure is counted. Values equal to those
last written are skipped, so a rotated secret or a restart costs no write. When the map is full
a device change is dropped and counted, and once the writers have caught up every device is
re-enqueued from the registry (a resync), so nothing is lost for long. ``publish_batch``
waits for room instead: the caller is a producer that can take backpressure.

At start every existing device of the tenant is enqueued, so a node that was down or new
catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress, error_text
from tiangong.identity.errors import IdentityError
from tiangong.identity.handle.messages import ValuesRequest
from tiangong.identity.handle.protocol import OpCode, OpFlag, ResponseCode
from tiangong.identity.handle.values import URL, HandleValue, ValueReference
from tiangong.identity.trace import COMPONENT
from tiangong.platform.model import Device
from tiangong.platform.registry import DeviceRegistry
from tiangong.security.audit import AuditError

if TYPE_CHECKING:
    from tiangong.security.audit import AuditTrail

__all__ = [
    "COMPONENT",
    "IdentifierPublisher",
    "PublisherStats",
    "batch_values",
    "device_values",
]

_log = logging.getLogger(__name__)

RECORD: Final = "TG.RECORD"
MODEL: Final = "TG.MODEL"
MAKER: Final = "TG.MAKER"
SITE: Final = "TG.SITE"
STATE: Final = "TG.STATE"
NAME: Final = "TG.NAME"
KIND: Final = "TG.KIND"
PRODUCED: Final = "TG.PRODUCED"
LINE: Final = "TG.LINE"

#: Index of the first ``TG.COMPONENT`` value of a batch.
FIRST_COMPONENT_INDEX: Final = 20
#: Components one batch may list (its record must stay a reasonable Handle message).
MAX_COMPONENTS: Final = 1000

_MAKER_ATTRIBUTES: Final = ("maker", "manufacturer", "vendor")

#: The node refused the record itself: writing it again cannot succeed.
_PERMANENT: Final = frozenset(
    {
        ResponseCode.INVALID_HANDLE,
        ResponseCode.INVALID_VALUE,
        ResponseCode.PROTOCOL_ERROR,
        ResponseCode.OPERATION_NOT_SUPPORTED,
    }
)


def _value(index: int, type_: str, text: str, *, refers_to: str | None = None) -> HandleValue:
    references = (ValueReference(refers_to, 1),) if refers_to else ()
    return HandleValue(index=index, type=type_, data=text.encode("utf-8"), references=references)


def device_values(
    device: Device, *, platform_url: str | None, maker: str
) -> tuple[HandleValue, ...]:
    """The values of a device's identifier (see the module's table).

    Args:
        device: the registered device.
        platform_url: the platform's public base URL (``http://host:8080/``); without it the
            ``URL`` and ``TG.RECORD`` values are left out.
        maker: the enterprise, for a device whose attributes do not say who made it.
    """
    values: list[HandleValue] = []
    if platform_url:
        base = platform_url.rstrip("/")
        values.append(_value(1, URL, f"{base}/#/devices/{device.id}"))
        values.append(_value(2, RECORD, f"{base}/api/v1/devices/{device.id}"))
    made_by = next(
        (device.attributes[k] for k in _MAKER_ATTRIBUTES if device.attributes.get(k)), ""
    )
    values += [
        _value(3, MODEL, f"{device.model_id}@v{device.model_version}"),
        _value(4, MAKER, made_by or maker),
        _value(5, SITE, f"{device.tenant_id}/{device.site_id}"),
        _value(6, STATE, device.state.value),
        _value(7, NAME, device.name),
        _value(8, KIND, "device"),
    ]
    return tuple(v for v in values if v.data)


def batch_values(
    *,
    maker: str,
    site: str,
    produced_at: datetime,
    components: Sequence[str],
    line: str | None = None,
    product: str | None = None,
) -> tuple[HandleValue, ...]:
    """The values of a product batch's identifier (see the module's table).

    Args:
        maker: the enterprise that made it.
        site: ``<tenant>/<site>`` where it was made.
        produced_at: when (timezone-aware).
        components: identifiers of what went into it (``88.100.2/LOT-MOTOR-0001``).
        line: the identifier of the line that made it.
        product: what it is, for people.

    Raises:
        ValueError: a naive time, a component that is not ``prefix/suffix``, too many.
    """
    if produced_at.tzinfo is None:
        raise ValueError("produced_at must be timezone-aware")
    if len(components) > MAX_COMPONENTS:
        raise ValueError(f"a batch lists at most {MAX_COMPONENTS} components")
    for component in (*components, *([line] if line else [])):
        prefix, sep, suffix = component.partition("/")
        if not (prefix and sep and suffix):
            raise ValueError(f"{component!r} is not an identifier (prefix/suffix)")
    values = [
        _value(4, MAKER, maker),
        _value(5, SITE, site),
        _value(7, NAME, product or ""),
        _value(8, KIND, "batch"),
        _value(9, PRODUCED, produced_at.isoformat()),
    ]
    if line:
        values.append(_value(10, LINE, line, refers_to=line))
    values += [
        _value(FIRST_COMPONENT_INDEX + n, COMPONENT, component, refers_to=component)
        for n, component in enumerate(dict.fromkeys(components))
    ]
    return tuple(v for v in values if v.data)


@dataclass
class PublisherStats:
    """What the publisher has done.

    Attributes:
        published: records written.
        unchanged: updates skipped because the node already has those values.
        failures: failed write attempts (each followed by a backoff and a retry).
        rejected: records the node refused as invalid (dropped; retrying cannot help).
        overflowed: device updates dropped because the queue was full (a resync follows).
        resyncs: times every device was re-enqueued after an overflow.
        pending: identifiers waiting to be written, and in flight.
    """

    published: int = 0
    unchanged: int = 0
    failures: int = 0
    rejected: int = 0
    overflowed: int = 0
    resyncs: int = 0
    pending: int = 0


class IdentifierPublisher:
    """Keeps an enterprise node's identifiers in step with the platform's devices and batches.

    An async context manager: entering starts the writers, subscribes to the registry and
    enqueues every existing device; leaving waits up to ``drain_timeout`` for pending writes,
    then stops.

    Args:
        node: the enterprise identifier node (written over TCP).
        identity: the enterprise admin, ``300:0.NA/<prefix>`` with its secret.
        prefix: the enterprise prefix, e.g. ``88.100.1``.
        registry: the platform's registry (``None``: batches only, no devices).
        tenant_id: publish only this tenant's devices (``None``: every device); also the
            tenant part of a batch's ``TG.SITE``.
        platform_url: the platform's public base URL for the ``URL`` and ``TG.RECORD`` values.
        maker: the enterprise's name (``TG.MAKER`` of batches, and of devices that name none).
        queue_size: pending identifiers at most.
        writers: concurrent writes.
        timeout: seconds one write may take.
        retry_initial: first backoff after a failure, in seconds.
        retry_max: longest backoff.
        drain_timeout: seconds to wait for pending writes when leaving.
        client: the Handle client (default: one with ``identity`` and ``timeout``).
        audit: the platform's audit trail: every identifier written, and every one the node
            refused, is recorded there (``identifier.write``), with the admin identity used.
            Failed attempts that are retried are counted in ``stats``, not recorded.
    """

    def __init__(
        self,
        *,
        node: ServerAddress,
        identity: AdminIdentity,
        prefix: str,
        registry: DeviceRegistry | None = None,
        tenant_id: str | None = None,
        platform_url: str | None = None,
        maker: str = "",
        queue_size: int = 10_000,
        writers: int = 4,
        timeout: float = 3.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        drain_timeout: float = 2.0,
        client: HandleClient | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        if not prefix or "/" in prefix:
            raise ValueError(f"{prefix!r} is not a prefix (e.g. 88.100.1)")
        if queue_size < 1 or writers < 1:
            raise ValueError("queue_size and writers must be at least 1")
        if not 0 < retry_initial <= retry_max:
            raise ValueError("need 0 < retry_initial <= retry_max")
        self.node = ServerAddress(node.host, node.port, "tcp")
        self.prefix = prefix
        self.registry = registry
        self.tenant_id = tenant_id
        self.platform_url = platform_url
        self.maker = maker or prefix
        self.queue_size = queue_size
        self.writers = writers
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.drain_timeout = drain_timeout
        self.client = client or HandleClient(identity=identity, timeout=timeout)
        self.audit = audit
        self._actor = str(identity.reference)
        self.stats = PublisherStats()
        self._pending: OrderedDict[str, tuple[HandleValue, ...]] = OrderedDict()
        self._in_flight: set[str] = set()
        # Last values written, of devices only (batches are written once; the map stays as
        # big as the fleet, not as the production history).
        self._written: dict[str, tuple[HandleValue, ...]] = {}
        self._devices: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()
        self._resync_due = False
        self._retry_at = 0.0
        self._delay = retry_initial
        self._failing = False
        self._running = False
        self._stack = contextlib.AsyncExitStack()

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._running = True
        self._stack.callback(self._stop)
        workers = [
            tasks.create_task(self._writer(), name=f"identifier-writer-{n}")
            for n in range(self.writers)
        ]
        self._stack.callback(lambda: [w.cancel() for w in workers])
        if self.registry is not None:
            self.registry.add_listener(self._on_device)
            self._enqueue_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self.drain_timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.drain_timeout):
                    await self.drained()
        await self._stack.__aexit__(exc_type, exc, tb)

    def _stop(self) -> None:
        # The registry has no way to remove a listener: ours goes quiet instead.
        self._running = False
        self._room.set()  # a publish_batch waiting for room gives up

    # -- API -------------------------------------------------------------------------------------

    def handle_for(self, suffix: str) -> str:
        """The identifier of ``suffix`` under this enterprise's prefix."""
        return f"{self.prefix}/{suffix}"

    async def publish_batch(
        self,
        batch_id: str,
        *,
        site: str,
        produced_at: datetime,
        components: Sequence[str],
        line: str | None = None,
        product: str | None = None,
    ) -> str:
        """Queue the identifier of a product batch; returns it (``<prefix>/<batch_id>``).

        Waits while the queue is full (backpressure); the write itself happens in the
        background, retried until the node takes it.

        Args:
            batch_id: the suffix, by convention ``BATCH-...`` (a supplier's ``LOT-...``).
            site: the site id where it was made (``TG.SITE`` is ``<tenant>/<site>``).
            produced_at: when (timezone-aware).
            components: identifiers of what went into it, held by any enterprise's node.
            line: the device id of the line that made it (a device of this enterprise).
            product: what it is, for people.

        Raises:
            ValueError: a malformed batch id, component or time.
        """
        if not batch_id or batch_id.startswith("/"):
            raise ValueError(f"{batch_id!r} is not a batch id")
        values = batch_values(
            maker=self.maker,
            site=f"{self.tenant_id}/{site}" if self.tenant_id else site,
            produced_at=produced_at,
            components=components,
            line=self.handle_for(line) if line else None,
            product=product,
        )
        handle = self.handle_for(batch_id)
        while self._running and len(self._pending) >= self.queue_size:
            self._room.clear()
            await self._room.wait()
        if not self._running:
            raise RuntimeError("the identifier publisher is not running")
        self._enqueue(handle, values)
        return handle

    async def drained(self) -> None:
        """Wait until nothing is pending or in flight (bound it with ``asyncio.timeout``)."""
        while self._pending or self._in_flight or self._resync_due:
            self._idle.clear()
            await self._idle.wait()

    # -- queueing --------------------------------------------------------------------------------

    def _on_device(self, device: Device) -> None:
        """Registry listener: called synchronously on every change; never blocks."""
        if not self._running or (self.tenant_id is not None and device.tenant_id != self.tenant_id):
            return
        values = device_values(device, platform_url=self.platform_url, maker=self.maker)
        self._devices.add(device.id)
        if not self._enqueue(self.handle_for(device.id), values, droppable=True):
            self._resync_due = True

    def _enqueue_all(self) -> None:
        assert self.registry is not None
        for device in list(self.registry.devices_in_memory()):
            self._on_device(device)

    def _enqueue(
        self, handle: str, values: tuple[HandleValue, ...], *, droppable: bool = False
    ) -> bool:
        """Put a write in the map; False if it was dropped because the map is full."""
        if handle in self._pending:
            self._pending[handle] = values  # coalesce: the latest values win, place kept
        elif self._written.get(handle) == values and handle not in self._in_flight:
            self.stats.unchanged += 1
            return True
        elif droppable and len(self._pending) >= self.queue_size:
            self.stats.overflowed += 1
            return False
        else:
            self._pending[handle] = values
        self.stats.pending = len(self._pending) + len(self._in_flight)
        self._wake.set()
        return True

    def _next(self) -> tuple[str, tuple[HandleValue, ...]] | None:
        for handle in self._pending:
            if handle not in self._in_flight:
                return handle, self._pending.pop(handle)
        return None

    # -- writing ---------------------------------------------------------------------------------

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self._retry_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            item = self._next()
            if item is None:
                self._after_change()
                self._wake.clear()
                await self._wake.wait()
                continue
            handle, values = item
            self._in_flight.add(handle)
            try:
                await self._write(handle, values)
            finally:
                self._in_flight.discard(handle)
                self._after_change()

    async def _write(self, handle: str, values: tuple[HandleValue, ...]) -> None:
        request = self.client.message(
            OpCode.CREATE_HANDLE, ValuesRequest(handle, values), flags=OpFlag.OVRW
        )
        try:
            answer = await self.client.send(self.node, request)
        except (TimeoutError, OSError, IdentityError) as exc:
            self._failed(handle, values, f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
            return
        code = answer.header.response
        if code is ResponseCode.SUCCESS:
            if handle.partition("/")[2] in self._devices:
                self._written[handle] = values
            self.stats.published += 1
            if self._failing:
                _log.info("identifier node %s is taking writes again", self.node)
            self._failing = False
            self._delay = self.retry_initial
            await self._audit(handle, values, "ok")
            return
        if code in _PERMANENT:
            self.stats.rejected += 1
            _log.error("identifier node refused %s: %s (dropped)", handle, error_text(answer))
            await self._audit(handle, values, f"refused:{code.name}", error_text(answer))
            return
        self._failed(handle, values, error_text(answer))

    async def _audit(
        self, handle: str, values: tuple[HandleValue, ...], outcome: str, reason: str = ""
    ) -> None:
        """Record a write the node took or refused (the write is done: a failure is logged)."""
        if self.audit is None:
            return
        detail: dict[str, object] = {
            "node": f"{self.node.host}:{self.node.port}",
            "indexes": [v.index for v in values],
            "kind": "device" if handle.partition("/")[2] in self._devices else "batch",
        }
        if reason:
            detail["reason"] = reason
        try:
            await self.audit.record(
                actor=self._actor,
                action="identifier.write",
                target=handle,
                tenant_id=self.tenant_id,
                outcome=outcome,
                detail=detail,
            )
        except AuditError:
            _log.exception("identifier write of %s not audited", handle)

    def _failed(self, handle: str, values: tuple[HandleValue, ...], reason: str) -> None:
        self.stats.failures += 1
        if handle not in self._pending:  # a newer version queued meanwhile wins
            self._pending[handle] = values
            self._pending.move_to_end(handle, last=False)
        delay = self._delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
        self._retry_at = asyncio.get_running_loop().time() + delay
        self._delay = min(self._delay * 2, self.retry_max)
        log = _log.debug if self._failing else _log.warning
        log(
            "identifier node %s: writing %s failed (%s); retrying in %.1fs",
            self.node,
            handle,
            reason,
            delay,
        )
        self._failing = True

    def _after_change(self) -> None:
        if self._resync_due and len(self._pending) < self.queue_size // 2 + 1:
            self._resync_due = False
            self.stats.resyncs += 1
            if self.registry is not None:
                self._enqueue_all()
        self.stats.pending = len(self._pending) + len(self._in_flight)
        if len(self._pending) < self.queue_size:
            self._room.set()
        if not self._pending and not self._in_flight and not self._resync_due:
            self._idle.set()
        if self._pending:
            self._wake.set()

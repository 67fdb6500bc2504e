"""Request limits of the REST API: rate per client address and per credential, sizes.

An ASGI middleware in front of every route (dashboard files included), so one client cannot
starve the others:

* **Rate.** Two token buckets must both pass: one per client address (the TCP peer) and one per
  credential (a digest of the ``Authorization`` header, or of the ``Cookie`` header for a
  browser session). The address bucket stops a client that rotates made-up tokens; the
  credential bucket stops one token used from many addresses. Refused: ``429`` with
  ``Retry-After`` (whole seconds) and ``{"detail", "reason": "rate_limited", "limit"}``.
  Buckets live in ``tiangong.security.ratelimit.TokenBuckets``: O(1) per request and bounded
  memory, whatever the number of clients.
* **Body size.** A ``Content-Length`` above the limit is refused with ``413`` before the body is
  read; a body sent without one (chunked) is read up to the limit and refused when it goes
  beyond (the rest is read and dropped, up to 1 MiB, so the client sees the answer), so memory
  stays bounded.
* **URL and headers.** A request line longer than ``max_url_bytes`` gets ``414``; more header
  bytes than ``max_header_bytes`` or more than ``max_headers`` headers get ``431``.

Every refusal is counted in ``tiangong_api_refused_total{reason}``. The limits are read from the
platform's settings when the first request arrives (the platform may start in the app's
lifespan); a rate of 0 turns that bucket off. The address is the TCP peer: behind a reverse
proxy every client shares the proxy's address, so give the proxy the per-client limits, or raise
``api_rate_limit`` here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from tiangong.platform.settings import PlatformSettings
from tiangong.security.ratelimit import TokenBuckets

__all__ = ["ApiLimits", "RequestLimits", "request_limits"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Bytes of a refused body of unknown length read and dropped so the client sees the 413.
DRAIN_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The API's limits (``PlatformSettings.api_*``; see ``docs/api.md``).

    Attributes:
        address_rate: requests per second per client address (0: no limit).
        address_burst: requests a client address may send at once.
        credential_rate: requests per second per token or session (0: no limit).
        credential_burst: requests a token or session may send at once.
        max_body_bytes: largest request body.
        max_url_bytes: longest path plus query string.
        max_header_bytes: most header bytes (names and values).
        max_headers: most header lines.
        max_clients: addresses and credentials tracked each (memory bound).
    """

    address_rate: float = 200.0
    address_burst: float = 1000.0
    credential_rate: float = 100.0
    credential_burst: float = 500.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_clients: int = 65_536


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    reason: str
    detail: str
    limit: str | None = None  # which bucket refused a 429
    retry_after: float = 0.0


class _BodyTooLargeError(Exception):
    """The body went past the limit while it was read."""


def _buckets(rate: float, burst: float, max_keys: int) -> TokenBuckets[bytes] | None:
    if rate <= 0:
        return None
    return TokenBuckets(rate=rate, burst=max(burst, 1.0), max_keys=max_keys)


class ApiLimits:
    """The ASGI middleware (``app.add_middleware(ApiLimits)``).

    Args:
        app: the application behind it.
        limits: fixed limits; by default those of the platform the app serves.
        refused: called with the reason of every refusal (by default the platform's
            ``tiangong_api_refused_total`` counter).
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: RequestLimits | None = None,
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self._limits = limits
        self._refused = refused
        self._ready = False
        self._addresses: TokenBuckets[bytes] | None = None
        self._credentials: TokenBuckets[bytes] | None = None

    def _configure(self, scope: Scope) -> bool:
        """Take the limits and counter from the platform once it is there."""
        if self._limits is None or self._refused is None:
            app = scope.get("app")
            platform = getattr(getattr(app, "state", None), "platform", None)
            if platform is None:
                return False  # no platform yet: nothing to protect, nothing to count
            if self._limits is None:
                self._limits = request_limits(platform.settings)
            if self._refused is None:
                counter = platform.metrics.api_refused
                self._refused = lambda reason: counter.labels(reason).inc()
        limits = self._limits
        self._addresses = _buckets(limits.address_rate, limits.address_burst, limits.max_clients)
        self._credentials = _buckets(
            limits.credential_rate, limits.credential_burst, limits.max_clients
        )
        self._ready = True
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check one request, then pass it on or refuse it."""
        if scope["type"] != "http" or (not self._ready and not self._configure(scope)):
            await self.app(scope, receive, send)
            return
        limits = self._limits
        assert limits is not None
        refusal = self._check(scope, limits)
        if refusal is not None:
            await self._refuse(send, refusal)
            return
        length, chunked = _content_length(scope)
        if length is not None and length > limits.max_body_bytes:
            await self._refuse(send, _Refusal(413, "body_too_large", _too_large(limits)))
            return
        if chunked and scope["method"] in _BODY_METHODS:
            try:
                receive = await _buffered(receive, limits.max_body_bytes)
            except _BodyTooLargeError:
                await self._refuse(send, _Refusal(413, "body_too_large", _too_large(limits)))
                return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, limits: RequestLimits) -> _Refusal | None:
        """Why the request is refused, or None to go on."""
        url_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if url_bytes > limits.max_url_bytes:
            return _Refusal(414, "url_too_long", f"the URL is over {limits.max_url_bytes} bytes")
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        credential = b""
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"authorization" or (name == b"cookie" and not credential):
                credential = value
        if size > limits.max_header_bytes or len(headers) > limits.max_headers:
            detail = (
                f"headers are limited to {limits.max_headers} lines and"
                f" {limits.max_header_bytes} bytes"
            )
            return _Refusal(431, "headers_too_large", detail)
        client = scope.get("client")
        address = str(client[0]).encode() if client else b"unknown"
        if self._addresses is not None:
            decision = self._addresses.check(address)
            if not decision.allowed:
                detail = "too many requests from this address; slow down"
                return _Refusal(429, "rate_limited", detail, "address", decision.retry_after)
        if credential and self._credentials is not None:
            key = hashlib.blake2b(credential, digest_size=16).digest()
            decision = self._credentials.check(key)
            if not decision.allowed:
                detail = "too many requests with this credential; slow down"
                return _Refusal(429, "rate_limited", detail, "credential", decision.retry_after)
        return None

    async def _refuse(self, send: Send, refusal: _Refusal) -> None:
        if self._refused is not None:
            self._refused(f"rate_{refusal.limit}" if refusal.limit else refusal.reason)
        body: dict[str, Any] = {"detail": refusal.detail, "reason": refusal.reason}
        headers = [(b"content-type", b"application/json")]
        if refusal.limit is not None:
            seconds = max(1, math.ceil(refusal.retry_after))
            body |= {"limit": refusal.limit, "retry_after": seconds}
            headers.append((b"retry-after", b"%d" % seconds))
        else:
            # The body may be unread: do not keep the connection for a next request.
            headers.append((b"connection", b"close"))
        payload = orjson.dumps(body)
        headers.append((b"content-length", b"%d" % len(payload)))
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _too_large(limits: RequestLimits) -> str:
    return f"the request body is over {limits.max_body_bytes} bytes"


def _content_length(scope: Scope) -> tuple[int | None, bool]:
    """The declared body length, and whether the body comes without one."""
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value), False
            except ValueError:
                return None, True  # the server refuses a malformed length before us
    return None, True


async def _buffered(receive: Receive, limit: int) -> Receive:
    """Read a body of unknown length up to ``limit`` bytes and replay it to the app."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            first = message  # a disconnect: hand it on as it is
            break
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            await _drain(receive, message, DRAIN_BYTES)
            raise _BodyTooLargeError
        chunks.append(body)
        if not message.get("more_body", False):
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            break
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return replay


async def _drain(receive: Receive, message: Message, budget: int) -> None:
    """Read and drop the rest of a refused body, up to ``budget`` bytes.

    A client still sending when the refusal arrives would otherwise see a reset instead of the
    413; past the budget the connection is closed anyway.
    """
    while message.get("more_body", False) and budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))


def request_limits(settings: PlatformSettings) -> RequestLimits:
    """The limits a platform's settings give (``api_*``)."""
    return RequestLimits(
        address_rate=settings.api_rate_limit,
        address_burst=settings.api_burst,
        credential_rate=settings.api_token_rate_limit,
        credential_burst=settings.api_token_burst,
        max_body_bytes=settings.api_max_body_bytes,
    )

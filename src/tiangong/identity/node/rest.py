"""The Handle.Net-compatible HTTP JSON API of a node (``/api/handles``, server ≥ 8.1 semantics).

Strategy: this module only translates. Query strings, Basic credentials and JSON bodies become
``HandleNode`` calls; ``NodeError`` codes become Handle.Net's JSON entities
(``{"responseCode", "handle", "message"}``) with the HTTP status ``json_format.http_status``
gives them. The value JSON itself (``data.format`` and friends) belongs to ``json_format``; what
a request may do belongs to the node. Clients written for CNRI's server (pyhandle/b2handle, hdl
proxies, curl scripts) therefore work unchanged against a Tiangong node.

Endpoints:

* ``GET /api/handles/{handle}``: resolve; ``index=``/``type=`` repeatable (OR'ed, a type ending
  in "." matches its subtypes), ``publicOnly`` (default true anonymously, false when
  authenticated), ``auth`` accepted and ignored (a node is always authoritative).
  A filter that matches nothing, or a handle without (readable) values, answers HTTP 200 with
  ``responseCode`` 200 and ``"values": []``, as Handle.Net does.
  A handle this node delegated answers HTTP **200** with ``responseCode`` 303 (PREFIX_REFERRAL)
  and the delegating prefix handle's HS_SITE.PREFIX values: the request was understood and the
  answer is "ask there", which a resolver follows itself. An HTTP 3xx would need a ``Location``
  this node cannot name (the child's HTTP interface is not part of HS_SITE), and a 4xx would
  read as a client error to HTTP-only tools.
* ``PUT /api/handles/{handle}``: the body is ``{"values": [...]}``, a bare array, or one value.
  Without ``index=`` the whole record is created or replaced (``overwrite``, default true);
  with ``index=`` (repeatable, or ``various`` for every value in the body) only those values
  are added or replaced (``overwrite=false``: added, 409/201 if one exists). 201 when the
  handle was created or values were added with ``overwrite=false``, 200 otherwise (pyhandle
  takes either); 409/101 for ``overwrite=false`` on an existing handle.
* ``DELETE /api/handles/{handle}``: the whole handle; with ``index=`` only those values.
* ``GET /api/handles?prefix=P[&page=N&pageSize=M]``: the handles under P (needs LIST_HANDLES):
  ``{"responseCode":1, "prefix", "totalCount", "handles"[, "page", "pageSize"]}``. ``page`` is
  zero-based; ``pageSize=0`` gives only the count; a missing or negative one lists everything.
  ``totalCount`` is a decimal string, as CNRI's server writes it.
* ``GET /api/prefixes``: (Tiangong extension) ``{"responseCode":1, "prefixes": [...]}``, the
  prefixes homed here, so a client can tell which node to ask.
* ``GET /healthz``: liveness.

Authentication is HTTP Basic: the user name is ``index:handle`` (UTF-8, percent-encoded as
pyhandle sends it, ``300%3A0.NA/88.100.1``, or plain ``300:0.NA/88.100.1``, in which case the
handle ends at the next ``:``), the password is the secret of that identity's HS_SECKEY value
(sent as is, or percent-encoded). Credentials are checked whenever they are sent, reads too.
No credentials on a write: 401 with ``responseCode`` 402 and ``WWW-Authenticate: Basic``.
Credentials that do not verify: 401 with ``responseCode`` 403 (a 401, not Handle.Net's generic
403 for "other authentication errors", because RFC 7235 says a refused credential is a 401 and
pyhandle reports exactly 401 as an authentication error). Authenticated but not named in
HS_ADMIN: 403 with the node's ``responseCode`` (401 INSUFFICIENT_PERMISSIONS). Handle.Net's
``Authorization: Handle`` session and client-certificate schemes are not offered: such requests
get the 401/402 challenge for Basic.

Bad input never produces a 500: an unreadable body or value is 400/202 naming the value, a bad
query parameter 400/4 naming the parameter, a body over ``max_body_bytes`` 413.

Rate: with ``over_rate`` (the ``NodeServer``'s per-address check, shared with UDP and TCP), a
client address over its rate gets HTTP 429 with ``Retry-After: 1`` and ``responseCode`` 3
(SERVER_TOO_BUSY, the Handle protocol's nearest code) before its request is read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from tiangong import __version__
from tiangong.identity.auth import parse_basic_user
from tiangong.identity.errors import AuthenticationError, CodecError, HandleSyntaxError
from tiangong.identity.handle.json_format import (
    error_entity,
    http_status,
    value_from_json,
    value_to_json,
)
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.handle.values import HS_SECKEY, HandleRecord, HandleValue
from tiangong.identity.node.service import (
    ANONYMOUS,
    WRITE_SOURCE,
    HandleNode,
    Identity,
    NodeError,
    Referral,
)

__all__ = ["HANDLES_PATH", "SourceRateLimit", "create_rest_app"]

log = logging.getLogger(__name__)

HANDLES_PATH: Final = "/api/handles"
PREFIXES_PATH: Final = "/api/prefixes"
LIST_PAGE: Final = 1000
MAX_VALUE_INDEX: Final = 2**31 - 1  # the stores' int32 index column
BASIC_CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="handle"'}

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class HandleJSONResponse(Response):
    """``application/json`` written by orjson.

    FastAPI's own ``ORJSONResponse`` is deprecated (it now serializes response models itself);
    these entities are plain dicts built here, so a small orjson response is all that is needed.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """The JSON bytes of ``content``."""
        return orjson.dumps(content)


class _RefusalError(Exception):
    """An answer other than success, already in Handle.Net form (raised inside this module)."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        handle: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.handle = handle

    def response(self) -> HandleJSONResponse:
        """The JSON entity, with a Basic challenge on a 401."""
        entity = error_entity(self.code, self.handle, self.message)
        headers = BASIC_CHALLENGE if self.status == 401 else None
        return HandleJSONResponse(entity, status_code=self.status, headers=headers)


def _node_refusal(handle: str | None, exc: NodeError, *, resolution: bool = False) -> _RefusalError:
    status = http_status(exc.code, resolution=resolution)
    return _RefusalError(status, int(exc.code), exc.message, handle=handle)


def _bad_parameter(name: str, raw: str, expected: str) -> _RefusalError:
    return _RefusalError(
        400,
        ResponseCode.PROTOCOL_ERROR,
        f"query parameter {name}={raw!r} is not {expected}",
    )


def _bool_param(request: Request, name: str, *, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _bad_parameter(name, raw, "true or false")


def _int_param(request: Request, name: str, *, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _bad_parameter(name, raw, "an integer") from None


def _indexes(raw: list[str]) -> list[int]:
    indexes: list[int] = []
    for item in raw:
        try:
            index = int(item)
        except ValueError:
            raise _bad_parameter("index", item, "a value index (an integer)") from None
        if index < 0 or index > 0xFFFFFFFF:
            raise _bad_parameter("index", item, "a value index between 0 and 2^32-1")
        indexes.append(index)
    return indexes


def _split_basic(decoded: str) -> tuple[str, str]:
    """``user:password`` where the user is ``index:handle`` percent-encoded, or plain."""
    head, sep, rest = decoded.partition(":")
    if not sep:
        raise ValueError("no ':' between user and password")
    if head.isdigit():
        # Plain "300:0.NA/88.100.1:secret": the handle runs to the next colon.
        handle, sep, password = rest.partition(":")
        if not sep:
            raise ValueError("no ':' between user and password")
        return f"{head}:{handle}", password
    return head, rest


def _secret_matches(password: str, secret: bytes) -> bool:
    """Constant-time comparison with the HS_SECKEY secret (raw, or percent-decoded)."""
    if not secret:
        return False  # an empty HS_SECKEY proves nothing
    candidates = [password.encode("utf-8")]
    if "%" in password:
        candidates.append(unquote_to_bytes(password))
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate, secret)
    return matched


def _value_label(position: int, item: object) -> str:
    if isinstance(item, dict):
        index, type_ = item.get("index"), item.get("type")
        if index is not None and type_ is not None:
            return f"value {index!r} ({type_!r})"
        if index is not None:
            return f"value {index!r}"
    return f"value #{position + 1}"


class _HandleApi:
    """The endpoints, bound to one node."""

    def __init__(self, node: HandleNode, max_body_bytes: int) -> None:
        self.node = node
        self.max_body_bytes = max_body_bytes

    # ------------------------------------------------------------ request parts

    async def identity(self, request: Request) -> Identity:
        """Who sent ``request``: anonymous without ``Authorization``, else a verified identity.

        Also notes the peer for the node's audit trail (each request runs in its own context).
        """
        if request.client is not None:
            WRITE_SOURCE.set(f"http:{request.client.host}")
        header = request.headers.get("authorization")
        if header is None:
            return ANONYMOUS
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise _RefusalError(
                401,
                ResponseCode.AUTHENTICATION_NEEDED,
                f"the {scheme!r} authorization scheme is not supported here; use Basic with "
                "index:handle as the user and the HS_SECKEY secret as the password",
            )
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            user, password = _split_basic(decoded)
            reference = parse_basic_user(user)
        except (
            binascii.Error,
            UnicodeError,
            ValueError,
            HandleSyntaxError,
            AuthenticationError,
        ) as exc:
            raise _RefusalError(
                401, ResponseCode.AUTHENTICATION_FAILED, f"unreadable Basic credentials: {exc}"
            ) from exc
        key = await self.node.key_value(reference)
        if key is None or key.type.upper() != HS_SECKEY or not _secret_matches(password, key.data):
            # One message for an unknown identity and a wrong secret.
            raise _RefusalError(
                401,
                ResponseCode.AUTHENTICATION_FAILED,
                f"authentication as {reference} failed",
            )
        return Identity(reference=reference)

    async def body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it passes ``max_body_bytes``."""
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise _RefusalError(
                    400, ResponseCode.PROTOCOL_ERROR, "Content-Length is not a number"
                ) from None
            if length > self.max_body_bytes:
                raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> _RefusalError:
        return _RefusalError(
            413,
            ResponseCode.PROTOCOL_ERROR,
            f"request body larger than {self.max_body_bytes} bytes",
        )

    def values(self, handle: str, body: bytes) -> list[HandleValue]:
        """The handle values of a PUT body (``{"values": [...]}``, an array, or one value)."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _RefusalError(
                400, ResponseCode.INVALID_VALUE, f"request body is not JSON: {exc}", handle=handle
            ) from exc
        items: object
        if isinstance(document, dict) and "values" in document:
            items = document["values"]
        elif isinstance(document, list):
            items = document
        elif isinstance(document, dict):
            items = [document]
        else:
            items = None
        if not isinstance(items, list):
            raise _RefusalError(
                400,
                ResponseCode.INVALID_VALUE,
                'request body must be {"values": [...]}, an array of values, or one value',
                handle=handle,
            )
        now = int(self.node.clock())
        values: list[HandleValue] = []
        for position, item in enumerate(items):
            label = _value_label(position, item)
            if not isinstance(item, dict):
                raise _RefusalError(
                    400, ResponseCode.INVALID_VALUE, f"{label} is not an object", handle=handle
                )
            try:
                value = value_from_json(item, now=now)
            except CodecError as exc:  # its message names the value already
                raise _RefusalError(
                    400, ResponseCode.INVALID_VALUE, str(exc), handle=handle
                ) from exc
            except (ValueError, TypeError, KeyError, OverflowError) as exc:
                raise _RefusalError(
                    400, ResponseCode.INVALID_VALUE, f"{label} is invalid: {exc}", handle=handle
                ) from exc
            if not 0 < value.index <= MAX_VALUE_INDEX:
                raise _RefusalError(
                    400,
                    ResponseCode.INVALID_VALUE,
                    f"{label}: the index must be between 1 and {MAX_VALUE_INDEX}",
                    handle=handle,
                )
            values.append(value)
        return values

    # ------------------------------------------------------------ endpoints

    async def get_handle(self, request: Request, handle: str) -> Response:
        """Resolve ``handle`` (or list, for ``GET /api/handles/?prefix=``)."""
        if not handle:
            return await self.list_handles(request)
        identity = await self.identity(request)
        indexes = _indexes(request.query_params.getlist("index"))
        types = [t for t in request.query_params.getlist("type") if t]
        public_only = _bool_param(request, "publicOnly", default=not identity.authenticated)
        _bool_param(request, "auth", default=False)  # validated, then ignored: we are the source
        if not public_only and not identity.authenticated:
            raise _RefusalError(
                401,
                ResponseCode.AUTHENTICATION_NEEDED,
                "publicOnly=false needs authentication",
                handle=handle,
            )
        try:
            answer = await self.node.resolve(
                handle,
                indexes=indexes,
                types=types,
                public_only=public_only,
                identity=identity,
            )
        except NodeError as exc:
            if exc.code == ResponseCode.VALUES_NOT_FOUND:
                return self._no_values(handle, exc.message)
            raise _node_refusal(handle, exc, resolution=True) from exc
        if isinstance(answer, Referral):
            return self._referral(handle, answer)
        return self._record(handle, answer)

    def _record(self, handle: str, record: HandleRecord) -> Response:
        if not record.values:
            return self._no_values(handle, f"handle {handle!r} has no values")
        values = sorted(record.values, key=lambda v: v.index)
        return HandleJSONResponse(
            {
                "responseCode": int(ResponseCode.SUCCESS),
                "handle": handle,
                "values": [value_to_json(v) for v in values],
            }
        )

    @staticmethod
    def _no_values(handle: str, message: str) -> Response:
        # "values" stays present: pyhandle reads it from an empty-handle answer.
        return HandleJSONResponse(
            {
                "responseCode": int(ResponseCode.VALUES_NOT_FOUND),
                "handle": handle,
                "message": message,
                "values": [],
            },
            status_code=http_status(ResponseCode.VALUES_NOT_FOUND, resolution=True),
        )

    @staticmethod
    def _referral(handle: str, referral: Referral) -> Response:
        values = sorted(referral.values, key=lambda v: v.index)
        return HandleJSONResponse(
            {
                "responseCode": int(referral.code),
                "handle": handle,
                "message": f"{handle!r} is served elsewhere: see the sites in {referral.handle}",
                "referral": referral.handle,
                "values": [value_to_json(v) for v in values],
            }
        )

    async def put_handle(self, request: Request, handle: str) -> Response:
        """Create or replace ``handle``, or add/replace the values named by ``index=``."""
        if not handle:
            raise _RefusalError(
                400, ResponseCode.INVALID_HANDLE, "no handle in the path", handle=""
            )
        identity = await self.identity(request)
        overwrite = _bool_param(request, "overwrite", default=True)
        raw_indexes = request.query_params.getlist("index")
        values = self.values(handle, await self.body(request))
        try:
            if raw_indexes:
                selected = self._selected(handle, values, raw_indexes)
                created = await self._put_values(handle, selected, identity, overwrite=overwrite)
            else:
                created = await self.node.create(
                    handle, values, identity=identity, overwrite=overwrite
                )
        except NodeError as exc:
            raise _node_refusal(handle, exc) from exc
        return HandleJSONResponse(
            {"responseCode": int(ResponseCode.SUCCESS), "handle": handle},
            status_code=http_status(ResponseCode.SUCCESS, created=created),
        )

    @staticmethod
    def _selected(handle: str, values: list[HandleValue], raw: list[str]) -> list[HandleValue]:
        """The body values the ``index=`` parameters name (``various``: all of them)."""
        if any(item.lower() == "various" for item in raw):
            return values
        wanted = set(_indexes(raw))
        present = {v.index for v in values}
        missing = sorted(wanted - present)
        if missing:
            raise _RefusalError(
                400,
                ResponseCode.INVALID_VALUE,
                f"index {', '.join(map(str, missing))} is in the query but not in the body",
                handle=handle,
            )
        return [v for v in values if v.index in wanted]

    async def _put_values(
        self, handle: str, values: list[HandleValue], identity: Identity, *, overwrite: bool
    ) -> bool:
        if overwrite:
            return await self.node.put_values(handle, values, identity=identity)
        try:
            await self.node.add_values(handle, values, identity=identity)
        except NodeError as exc:
            if exc.code != ResponseCode.HANDLE_NOT_FOUND:
                raise
            return await self.node.create(handle, values, identity=identity, overwrite=False)
        return True

    async def delete_handle(self, request: Request, handle: str) -> Response:
        """Delete ``handle``, or only the values named by ``index=``."""
        if not handle:
            raise _RefusalError(
                400, ResponseCode.INVALID_HANDLE, "no handle in the path", handle=""
            )
        identity = await self.identity(request)
        indexes = _indexes(request.query_params.getlist("index"))
        try:
            if indexes:
                await self.node.remove_values(handle, indexes, identity=identity)
            else:
                await self.node.delete(handle, identity=identity)
        except NodeError as exc:
            raise _node_refusal(handle, exc) from exc
        return HandleJSONResponse({"responseCode": int(ResponseCode.SUCCESS), "handle": handle})

    async def list_handles(self, request: Request) -> Response:
        """``GET /api/handles?prefix=``: the handles under a prefix, optionally one page."""
        prefix = request.query_params.get("prefix")
        if not prefix:
            raise _RefusalError(
                400, ResponseCode.PROTOCOL_ERROR, "GET /api/handles needs ?prefix=<prefix>"
            )
        page = _int_param(request, "page", default=-1)
        page_size = _int_param(request, "pageSize", default=-1)
        identity = await self.identity(request)
        handles: list[str] = []
        after: str | None = None
        try:
            while True:
                batch = await self.node.list_handles(
                    prefix, identity=identity, after=after, limit=LIST_PAGE
                )
                handles.extend(batch)
                if len(batch) < LIST_PAGE:
                    break
                after = batch[-1]
        except NodeError as exc:
            raise _node_refusal(None, exc) from exc
        entity: dict[str, Any] = {
            "responseCode": int(ResponseCode.SUCCESS),
            "prefix": prefix,
            "totalCount": str(len(handles)),
        }
        if page >= 0 and page_size >= 0:
            entity["page"] = page
            entity["pageSize"] = page_size
            start = page * page_size
            entity["handles"] = handles[start : start + page_size]
        else:
            entity["handles"] = handles
        return HandleJSONResponse(entity)

    async def prefixes(self) -> Response:
        """``GET /api/prefixes``: the prefixes homed on this node (Tiangong extension)."""
        prefixes = await self.node.homed_prefixes()
        return HandleJSONResponse(
            {"responseCode": int(ResponseCode.SUCCESS), "prefixes": sorted(prefixes)}
        )

    async def healthz(self) -> Response:
        """Liveness, and the role of this node."""
        return HandleJSONResponse({"status": "ok", "role": self.node.role.value})


async def _refusal_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _RefusalError)
    return exc.response()


async def _http_error_handler(_request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route, wrong method) in Handle.Net's entity form."""
    assert isinstance(exc, StarletteHTTPException)
    return _RefusalError(
        exc.status_code, ResponseCode.OPERATION_NOT_SUPPORTED, str(exc.detail)
    ).response()


async def _validation_handler(_request: Request, exc: Exception) -> Response:
    """FastAPI's request validation (should not trigger: parameters are parsed here)."""
    return _RefusalError(400, ResponseCode.PROTOCOL_ERROR, f"malformed request: {exc}").response()


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _RefusalError(500, ResponseCode.ERROR, "internal error").response()


_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_RATE_LIMITED: Final = orjson.dumps(
    error_entity(
        ResponseCode.SERVER_TOO_BUSY,
        None,
        "rate limited: too many requests from this address; retry later",
    )
)


class SourceRateLimit:
    """ASGI middleware: 429 / ``responseCode`` 3 for a client address over its rate.

    Args:
        app: the application behind it.
        over_rate: says whether a request from an address is over its rate (and counts it).
    """

    def __init__(
        self,
        app: Callable[[_Scope, _Receive, _Send], Awaitable[None]],
        over_rate: Callable[[object], bool],
    ) -> None:
        self.app = app
        self.over_rate = over_rate

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Refuse the request or pass it on."""
        client = scope.get("client")
        if scope["type"] == "http" and client and self.over_rate(client[0]):
            headers = [
                (b"content-type", b"application/json"),
                (b"retry-after", b"1"),
                (b"content-length", b"%d" % len(_RATE_LIMITED)),
            ]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": _RATE_LIMITED})
            return
        await self.app(scope, receive, send)


def create_rest_app(
    node: HandleNode,
    *,
    max_body_bytes: int = 1_048_576,
    over_rate: Callable[[object], bool] | None = None,
) -> FastAPI:
    """The Handle.Net-compatible REST API of ``node`` (see the module docstring).

    Args:
        node: the node whose records are served; it is started and closed by its owner.
        max_body_bytes: the largest PUT body accepted; a larger one is answered 413.
        over_rate: the per-address rate check (``NodeServer.over_rate``); None: no limit.

    Raises:
        ValueError: ``max_body_bytes`` is not positive.
    """
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be positive, not {max_body_bytes}")
    api = _HandleApi(node, max_body_bytes)
    app = FastAPI(
        title="Tiangong Handle node",
        version=__version__,
        description=(
            "Handle.Net-compatible REST API (server 8.1 and later): resolve, create, modify and "
            "delete handles under the prefixes homed on this node. Writes need HTTP Basic with "
            "`index:handle` and the identity's HS_SECKEY secret."
        ),
        default_response_class=HandleJSONResponse,
    )
    app.state.node = node
    app.add_exception_handler(_RefusalError, _refusal_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _unexpected_handler)

    routes: list[tuple[str, Callable[..., Awaitable[Response]], str]] = [
        (HANDLES_PATH, api.list_handles, "GET"),
        (HANDLES_PATH + "/{handle:path}", api.get_handle, "GET"),
        (HANDLES_PATH + "/{handle:path}", api.put_handle, "PUT"),
        (HANDLES_PATH + "/{handle:path}", api.delete_handle, "DELETE"),
        (PREFIXES_PATH, api.prefixes, "GET"),
        ("/healthz", api.healthz, "GET"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], tags=["handles"])
    if over_rate is not None:
        app.add_middleware(SourceRateLimit, over_rate=over_rate)
    return app

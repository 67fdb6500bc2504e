"""The resolver's REST API: ``GET /api/handles/{handle}`` answered through the hierarchy.

The same JSON shapes as a node's Handle.Net-compatible API (``node/rest.py``). A resolver
holds no records, so it takes no writes: PUT and DELETE get 405. A client address over its
rate gets 429 with ``responseCode`` 3, as from a node (``SourceRateLimit``).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from tiangong.identity.errors import ResolutionError
from tiangong.identity.handle.json_format import error_entity, http_status, record_to_json
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.node.rest import SourceRateLimit
from tiangong.identity.resolver import ResolverNode


def _json(status: int, entity: dict[str, object]) -> Response:
    return Response(orjson.dumps(entity), status_code=status, media_type="application/json")


def create_resolver_rest_app(
    node: ResolverNode, *, over_rate: Callable[[object], bool] | None = None
) -> FastAPI:
    """The resolver's HTTP API.

    Args:
        node: the resolver.
        over_rate: the per-address rate check (``NodeServer.over_rate``); None: no limit.
    """
    app = FastAPI(title="Tiangong identifier resolver", docs_url=None, redoc_url=None)
    if over_rate is not None:
        app.add_middleware(SourceRateLimit, over_rate=over_rate)

    @app.get("/api/handles/{handle:path}")
    async def get_handle(handle: str, request: Request) -> Response:
        indexes: list[int] = []
        for raw in request.query_params.getlist("index"):
            if not raw.isdigit():
                entity = error_entity(ResponseCode.ERROR, handle, f"index={raw!r} is not a number")
                return _json(400, entity)
            indexes.append(int(raw))
        types = [t for t in request.query_params.getlist("type") if t]
        try:
            record = await node.resolver.resolve(handle, indexes=indexes, types=types)
        except ResolutionError as exc:
            code = int(exc.response_code)
            return _json(http_status(code, resolution=True), error_entity(code, handle, str(exc)))
        entity = record_to_json(record)
        entity["handle"] = handle
        return _json(200, entity)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "ok", "role": "resolver"})

    return app

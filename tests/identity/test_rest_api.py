"""The Handle.Net-compatible REST API of a node, over real HTTP against a real node.

A ``HandleNode`` over the embedded store in the test's directory, bootstrapped for 88.100.1,
is served by uvicorn on a free loopback port; httpx sends the requests a Handle.Net client
would, and the answers are checked against the Handle.Net 8.1+ contract (JSON entities,
response codes, HTTP statuses, Basic authentication with ``index:handle``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from tests.servers import free_port
from tiangong.identity.handle.json_format import value_to_json
from tiangong.identity.handle.values import (
    AdminPermission,
    Interface,
    InterfaceKind,
    ServerInfo,
    SiteInfo,
    Transport,
)
from tiangong.identity.node.rest import create_rest_app
from tiangong.identity.node.service import HandleNode, NodeRole, site_value
from tiangong.identity.store import open_store

PREFIX = "88.100.1"
ADMIN = f"300:0.NA/{PREFIX}"
MAX_BODY = 64 * 1024


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the test owns the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def basic(user: str, password: str | bytes, *, encode_user: bool = True) -> dict[str, str]:
    """An Authorization header the way pyhandle builds it (user percent-encoded)."""
    secret = password.decode() if isinstance(password, bytes) else password
    name = quote(user, safe="") if encode_user else user
    token = base64.b64encode(f"{name}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def admin_json(handle: str, index: int, permissions: AdminPermission, at: int) -> dict[str, Any]:
    return {
        "index": at,
        "type": "HS_ADMIN",
        "data": {
            "format": "admin",
            "value": {
                "handle": handle,
                "index": index,
                "permissions": format(int(permissions), "012b"),
            },
        },
    }


def secret_json(secret: str, at: int = 300) -> dict[str, Any]:
    return {
        "index": at,
        "type": "HS_SECKEY",
        "data": {"format": "string", "value": secret},
        "permissions": "1100",
    }


def url_json(index: int, url: str, type_: str = "URL") -> dict[str, Any]:
    return {"index": index, "type": type_, "data": {"format": "string", "value": url}}


@dataclass
class RestNode:
    node: HandleNode
    base: str
    secret: bytes
    http: httpx.AsyncClient

    @property
    def admin(self) -> dict[str, str]:
        return basic(ADMIN, self.secret)

    def url(self, handle: str) -> str:
        return f"/api/handles/{handle}"


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[RestNode]:
    async with open_store(tmp_path / "handles.sqlite") as store:
        node = HandleNode(store, role=NodeRole.ENTERPRISE)
        secret = secrets.token_urlsafe(24).encode()
        await node.bootstrap(PREFIX, secret)
        port = free_port()
        server = _QuietServer(
            uvicorn.Config(
                create_rest_app(node, max_body_bytes=MAX_BODY),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        task = asyncio.create_task(server.serve(), name="rest-api")
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "uvicorn stopped while starting"
                await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                yield RestNode(node=node, base=base, secret=secret, http=http)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length), so the server must count as it reads."""
    for part in parts:
        yield part


async def create(rest: RestNode, handle: str, values: list[dict[str, Any]]) -> None:
    response = await rest.http.put(rest.url(handle), json={"values": values}, headers=rest.admin)
    assert response.status_code == 201, response.text


# -- resolution --------------------------------------------------------------------------------


async def test_resolve_prefix_handle_hides_the_secret_from_anonymous_readers(rest: RestNode):
    response = await rest.http.get(rest.url(f"0.NA/{PREFIX}"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["responseCode"] == 1
    assert body["handle"] == f"0.NA/{PREFIX}"
    types = {v["type"] for v in body["values"]}
    assert "HS_ADMIN" in types
    assert "HS_SECKEY" not in types
    indexes = [v["index"] for v in body["values"]]
    assert indexes == sorted(indexes)

    # Authenticated, publicOnly defaults to false: the administrator reads its own key.
    mine = await rest.http.get(rest.url(f"0.NA/{PREFIX}"), headers=rest.admin)
    assert mine.status_code == 200
    assert "HS_SECKEY" in {v["type"] for v in mine.json()["values"]}
    public = await rest.http.get(
        rest.url(f"0.NA/{PREFIX}"), params={"publicOnly": "true"}, headers=rest.admin
    )
    assert "HS_SECKEY" not in {v["type"] for v in public.json()["values"]}
    # Asking for private values without credentials is a 401 challenge.
    anonymous = await rest.http.get(rest.url(f"0.NA/{PREFIX}"), params={"publicOnly": "false"})
    assert anonymous.status_code == 401
    assert anonymous.json()["responseCode"] == 402


async def test_create_resolve_and_filter(rest: RestNode):
    handle = f"{PREFIX}/PUMP-1"
    await create(
        rest,
        handle,
        [
            url_json(1, "https://plant.example/pump-1"),
            url_json(2, "https://mirror.example/pump-1", "URL.MIRROR"),
            {"index": 3, "type": "EMAIL", "data": "ops@plant.example"},  # bare string data
            admin_json(ADMIN.split(":", 1)[1], 300, AdminPermission(0x0FFF), 100),
        ],
    )
    response = await rest.http.get(rest.url(handle))
    body = response.json()
    assert response.status_code == 200
    assert body["responseCode"] == 1
    assert [v["index"] for v in body["values"]] == [1, 2, 3, 100]
    assert body["values"][0]["data"] == {
        "format": "string",
        "value": "https://plant.example/pump-1",
    }
    assert body["values"][2]["data"]["value"] == "ops@plant.example"

    async def indexes(**params: Any) -> list[int]:
        answer = await rest.http.get(rest.url(handle), params=params)
        assert answer.status_code == 200, answer.text
        return [v["index"] for v in answer.json()["values"]]

    assert await indexes(index=3) == [3]
    assert await indexes(index=[1, 3]) == [1, 3]
    assert await indexes(type="URL") == [1, 2]  # subtypes of URL match URL
    assert await indexes(type="URL.") == [1, 2]
    assert await indexes(type="url.mirror") == [2]
    assert await indexes(type="EMAIL", index=1) == [1, 3]  # index and type filters are OR'ed
    assert await indexes(auth="true") == [1, 2, 3, 100]  # accepted, ignored

    nothing = await rest.http.get(rest.url(handle), params={"type": "CHECKSUM"})
    assert nothing.status_code == 200
    assert nothing.json() == {
        "responseCode": 200,
        "handle": handle,
        "message": nothing.json()["message"],
        "values": [],
    }

    # Handles are case-insensitive; the answer echoes the handle as asked for.
    lower = await rest.http.get(rest.url(f"{PREFIX}/pump-1"))
    assert lower.status_code == 200
    assert lower.json()["handle"] == f"{PREFIX}/pump-1"


async def test_not_found_and_not_responsible(rest: RestNode):
    missing = await rest.http.get(rest.url(f"{PREFIX}/NOPE"))
    assert missing.status_code == 404
    assert missing.json()["responseCode"] == 100
    assert missing.json()["handle"] == f"{PREFIX}/NOPE"
    elsewhere = await rest.http.get(rest.url("20.500.1/X"))
    assert elsewhere.status_code == 400
    assert elsewhere.json()["responseCode"] == 301
    bad_index = await rest.http.get(rest.url(f"{PREFIX}/X"), params={"index": "one"})
    assert bad_index.status_code == 400
    assert "index" in bad_index.json()["message"]


async def test_delegated_prefix_answers_a_referral(rest: RestNode):
    site = SiteInfo(
        servers=(
            ServerInfo(
                server_id=1,
                address=ipaddress.ip_address("127.0.0.2"),
                interfaces=(Interface(InterfaceKind.ADMIN_AND_QUERY, Transport.TCP, 2641),),
            ),
        )
    )
    child = f"{PREFIX}.7"
    await create(rest, f"0.NA/{child}", [value_to_json(site_value(site))])
    response = await rest.http.get(rest.url(f"{child}/ANY"))
    assert response.status_code == 200
    body = response.json()
    assert body["responseCode"] == 303
    assert body["handle"] == f"{child}/ANY"
    assert [v["type"] for v in body["values"]] == ["HS_SITE.PREFIX"]
    assert body["values"][0]["data"]["format"] == "site"


# -- writes ------------------------------------------------------------------------------------


async def test_put_forms_overwrite_and_conflict(rest: RestNode):
    handle = f"{PREFIX}/VALVE-9"
    # A bare array, created: 201.
    first = await rest.http.put(
        rest.url(handle), json=[url_json(1, "https://a.example")], headers=rest.admin
    )
    assert first.status_code == 201
    assert first.json() == {"responseCode": 1, "handle": handle}
    # overwrite=false on an existing handle: 409 / 101.
    conflict = await rest.http.put(
        rest.url(handle),
        params={"overwrite": "false"},
        json={"values": [url_json(1, "https://b.example")]},
        headers=rest.admin,
    )
    assert conflict.status_code == 409
    assert conflict.json()["responseCode"] == 101
    # One value, replacing the record (overwrite defaults to true): 200.
    replaced = await rest.http.put(
        rest.url(handle), json=url_json(5, "https://c.example"), headers=rest.admin
    )
    assert replaced.status_code == 200
    assert replaced.json()["responseCode"] == 1
    record = (await rest.http.get(rest.url(handle))).json()
    urls = [v for v in record["values"] if v["type"] == "URL"]
    assert [(v["index"], v["data"]["value"]) for v in urls] == [(5, "https://c.example")]
    # The creator was made the administrator of the record it created without HS_ADMIN.
    assert any(v["type"] == "HS_ADMIN" for v in record["values"])
    # A new handle with overwrite=false: 201.
    fresh = await rest.http.put(
        rest.url(f"{PREFIX}/VALVE-10"),
        params={"overwrite": "false"},
        json={"values": [url_json(1, "https://d.example")], "ignored": True},
        headers=rest.admin,
    )
    assert fresh.status_code == 201


async def test_modify_add_and_remove_by_index(rest: RestNode):
    handle = f"{PREFIX}/MOTOR-3"
    await create(
        rest,
        handle,
        [url_json(1, "https://one.example"), url_json(2, "https://two.example", "DOC")],
    )
    changed = await rest.http.put(
        rest.url(handle),
        params={"index": 2, "overwrite": "true"},
        json={
            "values": [
                url_json(1, "https://ignored.example"),  # not named by index=: left alone
                url_json(2, "https://two-v2.example", "DOC"),
            ]
        },
        headers=rest.admin,
    )
    assert changed.status_code == 200, changed.text
    added = await rest.http.put(
        rest.url(handle),
        params={"index": [3, 4]},
        json={"values": [url_json(3, "https://3.example", "A"), url_json(4, "x", "B")]},
        headers=rest.admin,
    )
    assert added.status_code in (200, 201), added.text
    record = {v["index"]: v for v in (await rest.http.get(rest.url(handle))).json()["values"]}
    assert record[1]["data"]["value"] == "https://one.example"
    assert record[2]["data"]["value"] == "https://two-v2.example"
    assert {3, 4} <= record.keys()

    # index= names a value the body lacks.
    lacking = await rest.http.put(
        rest.url(handle), params={"index": 9}, json=[url_json(8, "x")], headers=rest.admin
    )
    assert lacking.status_code == 400
    assert lacking.json()["responseCode"] == 202
    assert "9" in lacking.json()["message"]
    # overwrite=false with index=: adding an index that exists is a conflict.
    exists = await rest.http.put(
        rest.url(handle),
        params={"index": 1, "overwrite": "false"},
        json=[url_json(1, "x")],
        headers=rest.admin,
    )
    assert exists.status_code == 409
    assert exists.json()["responseCode"] == 201
    # ... and adding a new one with overwrite=false is a creation.
    new_value = await rest.http.put(
        rest.url(handle),
        params={"index": 7, "overwrite": "false"},
        json=[url_json(7, "x", "C")],
        headers=rest.admin,
    )
    assert new_value.status_code == 201

    removed = await rest.http.delete(rest.url(handle), params={"index": [3, 4]}, headers=rest.admin)
    assert removed.status_code == 200
    assert removed.json() == {"responseCode": 1, "handle": handle}
    again = await rest.http.delete(rest.url(handle), params={"index": 3}, headers=rest.admin)
    assert again.status_code == 400  # 200 VALUES_NOT_FOUND outside resolution: pyhandle's case
    assert again.json()["responseCode"] == 200
    left = [v["index"] for v in (await rest.http.get(rest.url(handle))).json()["values"]]
    assert 3 not in left
    assert 4 not in left
    assert 1 in left


async def test_delete_handle(rest: RestNode):
    handle = f"{PREFIX}/GONE"
    await create(rest, handle, [url_json(1, "https://gone.example")])
    deleted = await rest.http.delete(rest.url(handle), headers=rest.admin)
    assert deleted.status_code == 200
    assert deleted.json() == {"responseCode": 1, "handle": handle}
    assert (await rest.http.get(rest.url(handle))).status_code == 404
    twice = await rest.http.delete(rest.url(handle), headers=rest.admin)
    assert twice.status_code == 404
    assert twice.json() == {
        "responseCode": 100,
        "handle": handle,
        "message": twice.json()["message"],
    }


async def test_list_handles_and_prefixes(rest: RestNode):
    for n in range(5):
        await create(rest, f"{PREFIX}/ITEM-{n}", [url_json(1, f"https://item.example/{n}")])
    listed = await rest.http.get("/api/handles", params={"prefix": PREFIX}, headers=rest.admin)
    assert listed.status_code == 200
    body = listed.json()
    assert body["responseCode"] == 1
    assert body["prefix"] == PREFIX
    assert body["totalCount"] == "5"
    assert sorted(body["handles"]) == [f"{PREFIX}/ITEM-{n}" for n in range(5)]

    page = await rest.http.get(
        "/api/handles", params={"prefix": PREFIX, "page": 1, "pageSize": 2}, headers=rest.admin
    )
    assert page.json()["handles"] == body["handles"][2:4]
    assert page.json()["page"] == 1
    assert page.json()["pageSize"] == 2
    count = await rest.http.get(
        "/api/handles", params={"prefix": PREFIX, "pageSize": 0, "page": 0}, headers=rest.admin
    )
    assert count.json()["handles"] == []
    assert count.json()["totalCount"] == "5"
    slash = await rest.http.get("/api/handles/", params={"prefix": PREFIX}, headers=rest.admin)
    assert slash.status_code == 200
    assert slash.json()["totalCount"] == "5"

    anonymous = await rest.http.get("/api/handles", params={"prefix": PREFIX})
    assert anonymous.status_code == 401
    assert anonymous.json()["responseCode"] == 402
    no_prefix = await rest.http.get("/api/handles", headers=rest.admin)
    assert no_prefix.status_code == 400
    bad_page = await rest.http.get(
        "/api/handles", params={"prefix": PREFIX, "page": "x"}, headers=rest.admin
    )
    assert bad_page.status_code == 400
    elsewhere = await rest.http.get("/api/handles", params={"prefix": "99.1"}, headers=rest.admin)
    assert elsewhere.status_code == 400
    assert elsewhere.json()["responseCode"] == 301

    prefixes = await rest.http.get("/api/prefixes")
    assert prefixes.json() == {"responseCode": 1, "prefixes": [PREFIX]}
    health = await rest.http.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"


# -- authentication and authorization ----------------------------------------------------------


async def test_writes_need_credentials_that_verify(rest: RestNode):
    handle = f"{PREFIX}/LOCKED"
    anonymous = await rest.http.put(rest.url(handle), json=[url_json(1, "x")])
    assert anonymous.status_code == 401
    assert anonymous.json()["responseCode"] == 402
    assert anonymous.headers["www-authenticate"] == 'Basic realm="handle"'
    assert (await rest.http.delete(rest.url(f"0.NA/{PREFIX}"))).status_code == 401

    wrong = await rest.http.put(
        rest.url(handle), json=[url_json(1, "x")], headers=basic(ADMIN, "not-the-secret")
    )
    assert wrong.status_code == 401
    assert wrong.json()["responseCode"] == 403
    assert "www-authenticate" in wrong.headers
    unknown = await rest.http.put(
        rest.url(handle), json=[url_json(1, "x")], headers=basic(f"301:0.NA/{PREFIX}", "x")
    )
    assert unknown.status_code == 401
    assert unknown.json()["responseCode"] == 403
    # A wrong secret is refused on reads as well: credentials are checked when given.
    assert (
        await rest.http.get(rest.url(f"0.NA/{PREFIX}"), headers=basic(ADMIN, "no"))
    ).status_code == 401

    for header in (
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"notanindex:secret").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    ):
        garbage = await rest.http.put(
            rest.url(handle), json=[url_json(1, "x")], headers={"Authorization": header}
        )
        assert garbage.status_code == 401, header
        assert garbage.json()["responseCode"] == 403, header
    other_scheme = await rest.http.put(
        rest.url(handle),
        json=[url_json(1, "x")],
        headers={"Authorization": 'Handle clientCert="true"'},
    )
    assert other_scheme.status_code == 401
    assert other_scheme.json()["responseCode"] == 402

    # The user name percent-encoded (pyhandle's form) and plain both work.
    encoded = await rest.http.put(
        rest.url(handle), json=[url_json(1, "x")], headers=basic(ADMIN, rest.secret)
    )
    assert encoded.status_code == 201
    plain = await rest.http.put(
        rest.url(handle),
        json=[url_json(1, "y")],
        headers=basic(ADMIN, rest.secret, encode_user=False),
    )
    assert plain.status_code == 200


async def test_permissions_from_hs_admin_directly_and_through_a_group(rest: RestNode):
    admin_handle = f"0.NA/{PREFIX}"
    # Two more identities with their own secrets, and a group holding the second one.
    await create(rest, f"{PREFIX}/user-add", [secret_json("add-secret")])
    await create(rest, f"{PREFIX}/user-grp", [secret_json("grp-secret")])
    await create(
        rest,
        f"{PREFIX}/group",
        [
            {
                "index": 200,
                "type": "HS_VLIST",
                "data": {
                    "format": "vlist",
                    "value": [{"handle": f"{PREFIX}/user-grp", "index": 300}],
                },
            }
        ],
    )
    target = f"{PREFIX}/TARGET"
    await create(
        rest,
        target,
        [
            url_json(1, "https://target.example"),
            admin_json(admin_handle, 300, AdminPermission(0x0FFF), 100),
            admin_json(f"{PREFIX}/user-add", 300, AdminPermission.ADD_VALUE, 101),
            admin_json(
                f"{PREFIX}/group",
                200,
                AdminPermission.MODIFY_VALUE | AdminPermission.REMOVE_VALUE,
                102,
            ),
        ],
    )
    adder = basic(f"300:{PREFIX}/user-add", "add-secret")
    member = basic(f"300:{PREFIX}/user-grp", "grp-secret")

    # ADD_VALUE only: may add a value ...
    added = await rest.http.put(
        rest.url(target), params={"index": 2}, json=[url_json(2, "x", "NOTE")], headers=adder
    )
    assert added.status_code in (200, 201), added.text
    # ... but not change one, remove one, replace or delete the record.
    for response in (
        await rest.http.put(
            rest.url(target), params={"index": 1}, json=[url_json(1, "y")], headers=adder
        ),
        await rest.http.delete(rest.url(target), params={"index": 2}, headers=adder),
        await rest.http.delete(rest.url(target), headers=adder),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["responseCode"] in (400, 401)
        assert response.json()["handle"] == target

    # Through the group: may modify and remove values, not delete the handle.
    modified = await rest.http.put(
        rest.url(target), params={"index": 1}, json=[url_json(1, "z")], headers=member
    )
    assert modified.status_code == 200, modified.text
    removed = await rest.http.delete(rest.url(target), params={"index": 2}, headers=member)
    assert removed.status_code == 200, removed.text
    refused = await rest.http.delete(rest.url(target), headers=member)
    assert refused.status_code == 403
    # Neither may create handles under the prefix (ADD_HANDLE on 0.NA/88.100.1).
    create_refused = await rest.http.put(
        rest.url(f"{PREFIX}/NEW"), json=[url_json(1, "x")], headers=member
    )
    assert create_refused.status_code == 403
    record = (await rest.http.get(rest.url(target))).json()
    assert {v["index"]: v for v in record["values"]}[1]["data"]["value"] == "z"


# -- malformed requests ------------------------------------------------------------------------


async def test_malformed_bodies_and_parameters_are_4xx_never_500(rest: RestNode):
    handle = f"{PREFIX}/BAD"
    h = {**rest.admin, "Content-Type": "application/json"}

    async def put(content: bytes, **params: Any) -> httpx.Response:
        return await rest.http.put(rest.url(handle), content=content, params=params, headers=h)

    for content in (b"", b"{not json", b"42", b'"text"', b'{"values": 3}', b"[1, 2]", b"null"):
        response = await put(content)
        assert response.status_code == 400, content
        assert response.json()["responseCode"] == 202, content

    cases: list[tuple[dict[str, Any], str]] = [
        ({"index": 1, "type": "URL", "data": {"format": "string", "value": 5}}, "value 1"),
        ({"index": "one", "type": "URL", "data": "x"}, "one"),
        ({"index": 1, "type": "URL", "data": {"format": "nonsense", "value": "x"}}, "value 1"),
        ({"index": 1, "type": "URL", "data": {"format": "base64", "value": "@@@"}}, "value 1"),
        ({"index": 1, "type": "URL", "data": "x", "ttl": "soon"}, "value 1"),
        ({"index": 1, "type": "URL", "data": "x", "permissions": "12"}, "value 1"),
        (
            {
                "index": 100,
                "type": "HS_ADMIN",
                "data": {
                    "format": "admin",
                    "value": {"handle": "x", "index": 1, "permissions": "z"},
                },
            },
            "value 100",
        ),
        ({"index": 0, "type": "URL", "data": "x"}, "value 0"),
        ({"index": 2**40, "type": "URL", "data": "x"}, "value"),
    ]
    for value, named in cases:
        response = await rest.http.put(
            rest.url(handle), json={"values": [value]}, headers=rest.admin
        )
        assert response.status_code == 400, (value, response.text)
        assert response.json()["responseCode"] == 202, value
        assert named in response.json()["message"], (named, response.json()["message"])

    duplicate = await rest.http.put(
        rest.url(handle), json=[url_json(1, "a"), url_json(1, "b")], headers=rest.admin
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["responseCode"] == 202

    for params in ({"overwrite": "maybe"}, {"index": "x"}, {"index": "-1"}):
        response = await put(b"[]", **params)
        assert response.status_code == 400, params

    too_big = await put(b"[" + b" " * (MAX_BODY + 10) + b"]")
    assert too_big.status_code == 413
    chunked = await rest.http.put(
        rest.url(handle),
        content=chunks([b"[", b" " * MAX_BODY, b" " * 100, b"]"]),
        headers=h,
    )
    assert chunked.status_code == 413

    unknown_route = await rest.http.get("/api/nothing")
    assert unknown_route.status_code == 404
    assert "responseCode" in unknown_route.json()
    wrong_method = await rest.http.post(rest.url(handle), json=[])
    assert wrong_method.status_code == 405
    assert (await rest.http.put("/api/handles/", json=[], headers=rest.admin)).status_code == 400
    assert (await rest.http.get(rest.url(f"{PREFIX}/BAD"))).status_code == 404  # nothing stored


async def test_secret_forms_and_an_empty_secret(rest: RestNode):
    await create(rest, f"{PREFIX}/user-odd", [secret_json("p%:x é")])
    await create(rest, f"{PREFIX}/user-empty", [secret_json("")])
    target = f"{PREFIX}/ODD-TARGET"
    await create(
        rest,
        target,
        [
            url_json(1, "https://odd.example"),
            admin_json(f"{PREFIX}/user-odd", 300, AdminPermission(0x0FFF), 100),
            admin_json(f"{PREFIX}/user-empty", 300, AdminPermission(0x0FFF), 101),
        ],
    )
    user = f"300:{PREFIX}/user-odd"
    for password in ("p%:x é", quote("p%:x é", safe="")):  # raw, and percent-encoded too
        answer = await rest.http.put(
            rest.url(target),
            params={"index": 1},
            json=[url_json(1, "y")],
            headers=basic(user, password),
        )
        assert answer.status_code == 200, (password, answer.text)
    empty = await rest.http.put(
        rest.url(target),
        params={"index": 1},
        json=[url_json(1, "z")],
        headers=basic(f"300:{PREFIX}/user-empty", ""),
    )
    assert empty.status_code == 401
    assert empty.json()["responseCode"] == 403

"""The real pyhandle (EUDAT's Handle.Net client, unmodified) against a Tiangong node over HTTP.

pyhandle is synchronous (requests), so the node runs in a thread of its own with its own event
loop: a ``HandleNode`` over the embedded store, bootstrapped for 88.100.1, served by uvicorn on
a free loopback port. Everything pyhandle sends goes to that port; nothing leaves the machine.

pyhandle writes plain HTTP when given an ``http://`` URL (it only follows an http→https
redirect if a server sends one), so no TLS is needed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.servers import free_port
from tiangong.identity.node.rest import create_rest_app
from tiangong.identity.node.service import HandleNode, NodeRole
from tiangong.identity.store import open_store

with warnings.catch_warnings():
    # pyhandle 1.5 has regular-expression and docstring literals with invalid escape sequences
    # ("\s", "\*"); compiling them warns (DeprecationWarning on 3.11, SyntaxWarning from 3.12)
    # when no cached bytecode exists. Only that warning, and only while importing pyhandle.
    warnings.filterwarnings(
        "ignore", message="invalid escape sequence", category=DeprecationWarning
    )
    warnings.filterwarnings("ignore", message="invalid escape sequence", category=SyntaxWarning)
    from pyhandle.client.resthandleclient import RESTHandleClient
    from pyhandle.handleexceptions import (
        HandleAlreadyExistsException,
        HandleAuthenticationError,
        HandleNotFoundException,
    )

PREFIX = "88.100.1"
USER = f"300:0.NA/{PREFIX}"


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers (it runs in a thread the test owns)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class NodeThread:
    """A Handle node with its REST API, on an event loop in a thread of its own."""

    def __init__(self, db: Path, secret: bytes) -> None:
        self.db = db
        self.secret = secret
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: _QuietServer | None = None
        self._thread = threading.Thread(target=self._run, name="handle-node", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the node did not start within 20 s")
        if self._error is not None:
            raise RuntimeError("the node failed to start") from self._error

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(15)
        assert not self._thread.is_alive(), "the node thread did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with open_store(self.db) as store:
            node = HandleNode(store, role=NodeRole.ENTERPRISE)
            await node.bootstrap(PREFIX, self.secret)
            server = _QuietServer(
                uvicorn.Config(
                    create_rest_app(node),
                    host="127.0.0.1",
                    port=self.port,
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                )
            )
            self._server = server
            task = asyncio.create_task(server.serve(), name="rest-api")
            async with asyncio.timeout(15):
                while not server.started:
                    if task.done():
                        await task  # raises what stopped it
                        raise RuntimeError("uvicorn exited while starting")
                    await asyncio.sleep(0.01)
            self._ready.set()
            await task


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    secret = secrets.token_urlsafe(24).encode()
    running = NodeThread(tmp_path_factory.mktemp("pyhandle") / "handles.sqlite", secret)
    with pytest.MonkeyPatch.context() as env:
        # requests honours proxy variables; loopback must never go through one.
        env.setenv("NO_PROXY", "127.0.0.1,localhost")
        env.setenv("no_proxy", "127.0.0.1,localhost")
        running.start()
        try:
            _check_default_owner_group(running)
            yield running
        finally:
            running.stop()


def _check_default_owner_group(node: NodeThread) -> None:
    """Check ``200:0.NA/<prefix>`` is the administrators' group, as on Handle.Net servers.

    pyhandle names ``200:0.NA/<prefix>`` in the HS_ADMIN of every handle it creates (unless a
    ``handleowner`` is configured). A node's bootstrap puts an HS_VLIST there listing
    ``300:0.NA/<prefix>``, so handles pyhandle registers stay administrable by the identity
    that registered them.
    """
    with httpx.Client(base_url=node.base, trust_env=False) as http:
        record = http.get(f"/api/handles/0.NA/{PREFIX}", params={"index": 200}).json()
    assert record["responseCode"] == 1, record
    [group] = record["values"]
    assert group["type"] == "HS_VLIST"
    assert group["data"]["value"] == [{"handle": f"0.NA/{PREFIX}", "index": 300}]


@pytest.fixture
def client(node: NodeThread) -> RESTHandleClient:
    return RESTHandleClient.instantiate_with_username_and_password(
        node.base, USER, node.secret.decode()
    )


def new_handle() -> str:
    return f"{PREFIX}/{uuid.uuid4().hex[:12].upper()}"


def test_register_retrieve_modify_delete(client: RESTHandleClient, node: NodeThread):
    handle = new_handle()
    assert client.register_handle(handle, "https://plant.example/a", checksum="c0ffee") == handle
    with pytest.raises(HandleAlreadyExistsException):
        client.register_handle(handle, "https://plant.example/other")

    record = client.retrieve_handle_record(handle)
    assert record is not None
    assert record["URL"] == "https://plant.example/a"
    assert record["CHECKSUM"] == "c0ffee"
    assert "HS_ADMIN" in record
    assert client.get_value_from_handle(handle, "URL") == "https://plant.example/a"
    assert client.get_value_from_handle(handle, "NOPE") is None
    document = client.retrieve_handle_record_json(handle)
    assert document["handle"] == handle
    assert [v["index"] for v in document["values"]] == [1, 2, 100]
    admin = next(v for v in document["values"] if v["type"] == "HS_ADMIN")
    assert admin["data"]["value"]["handle"] == f"0.NA/{PREFIX}"
    assert int(admin["data"]["value"]["index"]) == 200

    # Modify one value and add another: PUT ?index=1&index=3&overwrite=true.
    assert client.modify_handle_value(handle, URL="https://plant.example/b", OWNER="acme") == handle
    assert client.get_value_from_handle(handle, "URL") == "https://plant.example/b"
    assert client.get_value_from_handle(handle, "OWNER") == "acme"
    assert client.get_value_from_handle(handle, "CHECKSUM") == "c0ffee"

    assert client.delete_handle_value(handle, "CHECKSUM") == handle
    assert client.get_value_from_handle(handle, "CHECKSUM") is None
    assert client.delete_handle_value(handle, "CHECKSUM") is None  # nothing to delete

    # Overwrite the whole record.
    assert client.register_handle(handle, "https://plant.example/c", overwrite=True) == handle
    assert client.retrieve_handle_record(handle)["URL"] == "https://plant.example/c"
    assert "OWNER" not in client.retrieve_handle_record(handle)

    assert client.delete_handle(handle) == handle
    assert client.retrieve_handle_record(handle) is None
    with pytest.raises(HandleNotFoundException):
        client.delete_handle(handle)
    with pytest.raises(HandleNotFoundException):
        client.get_value_from_handle(handle, "URL")


def test_generated_handle_and_anonymous_reader(client: RESTHandleClient, node: NodeThread):
    handle = client.generate_and_register_handle(PREFIX, "https://plant.example/gen", EXTRA="1")
    assert handle.startswith(f"{PREFIX}/")

    reader = RESTHandleClient.instantiate_for_read_access(node.base)
    assert reader.get_value_from_handle(handle, "URL") == "https://plant.example/gen"
    assert reader.retrieve_handle_record(handle)["EXTRA"] == "1"
    assert reader.retrieve_handle_record(new_handle()) is None
    # The prefix handle's secret is not public.
    prefix_record = reader.retrieve_handle_record_json(f"0.NA/{PREFIX}")
    assert "HS_SECKEY" not in {v["type"] for v in prefix_record["values"]}
    # A read-only client cannot write (pyhandle refuses before sending anything).
    with pytest.raises(HandleAuthenticationError):
        reader.register_handle(new_handle(), "https://plant.example/x")
    client.delete_handle(handle)


def test_wrong_password_is_an_authentication_error(node: NodeThread):
    impostor = RESTHandleClient.instantiate_with_username_and_password(
        node.base, USER, "not-the-secret"
    )
    with pytest.raises(HandleAuthenticationError):
        impostor.register_handle(new_handle(), "https://plant.example/x")
    with pytest.raises(HandleNotFoundException):
        # The user handle must exist: pyhandle checks it when the client is made.
        RESTHandleClient.instantiate_with_username_and_password(
            node.base, f"300:{PREFIX}/NO-SUCH-USER", "x"
        )

"""Serving an ASGI application (the platform's API, the gateway's endpoints) on a bound socket.

Binding ourselves, before anything else starts, turns a taken port into a clear error instead
of uvicorn's ``sys.exit()`` from inside a task group, and tells us the port when 0 was asked
for. uvicorn's signal handlers are left out: the process owner shuts everything down in order.

``X-Forwarded-For`` is believed only from the proxies named (none by default). uvicorn's own
default believes it from 127.0.0.1, so any local process could pose as any address and slip
past the per-address limits and the audit trail's "from where".
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn

from tiangong.network.errors import NetworkError

__all__ = ["HttpListener", "bind_listener"]


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port).

    Raises:
        NetworkError: the address is taken or not ours; the message says which.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NetworkError(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another port"
        ) from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class HttpListener:
    """An ASGI app served on a bound socket as a task.

    Args:
        app: the application.
        sock: a socket from ``bind_listener``.
        trusted_proxies: addresses or networks (``10.0.0.5``, ``10.0.0.0/24``) of reverse
            proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` name the client.
    """

    def __init__(
        self, app: Any, sock: socket.socket, *, trusted_proxies: Sequence[str] = ()
    ) -> None:
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        host = str(sock.getsockname()[0])
        self._server = _QuietServer(
            uvicorn.Config(
                app,
                host=host,
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                proxy_headers=bool(trusted_proxies),
                forwarded_allow_ips=list(trusted_proxies),
            )
        )
        self.task: asyncio.Task[None] | None = None

    def start(self, tasks: asyncio.TaskGroup | None, name: str) -> asyncio.Task[None]:
        """Serve as a task of ``tasks`` (None: a task of its own; ``stop`` ends it)."""
        serving = self._server.serve(sockets=[self.sock])
        spawn = asyncio.create_task if tasks is None else tasks.create_task
        self.task = spawn(serving, name=name)
        return self.task

    async def stop(self) -> None:
        """Let uvicorn finish its shutdown (it closes the socket) for up to five seconds."""
        self._server.should_exit = True
        if self.task is not None:
            await asyncio.wait([self.task], timeout=5.0)
        self.sock.close()

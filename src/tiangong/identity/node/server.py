"""The node's listeners: the binary Handle protocol over UDP and TCP, and the REST API over HTTP.

All three share one dispatcher (binary) or one ``HandleNode`` (REST), so a value written over
HTTP resolves over UDP at once. Bad input never stops a listener: a datagram or frame that does
not decode is answered with an error code when its header could be read (so the client stops
waiting), counted, and dropped otherwise. In-flight requests are bounded; beyond the bound a
node answers SERVER_TOO_BUSY (3) instead of queueing without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Hashable
from dataclasses import dataclass
from types import TracebackType

from tiangong.identity.errors import CodecError
from tiangong.identity.handle import codec
from tiangong.identity.handle.messages import Message
from tiangong.identity.handle.protocol import ENVELOPE_SIZE, MAX_UDP_PACKET, OpCode, ResponseCode
from tiangong.identity.node.dispatch import Answerer, Dispatcher
from tiangong.identity.node.response_cache import ResponseCache

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4096
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
TCP_IDLE_TIMEOUT = 60.0
MAX_TCP_CONNECTIONS = 1024


@dataclass
class ListenerStats:
    """What the listeners saw (beside the node's own counters)."""

    udp_requests: int = 0
    tcp_requests: int = 0
    malformed: int = 0
    busy: int = 0
    tcp_connections: int = 0


def _error_reply(exc: CodecError) -> bytes | None:
    """Bytes of an error response to an undecodable message, if one is due."""
    if isinstance(exc, codec.MessageDecodeError):
        return codec.encode_error_reply(exc)
    return None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.reassembler = codec.UdpReassembler()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        server = self.server
        server.stats.udp_requests += 1
        cached = server.responses.answer(data)
        if cached is not None:
            # The hot path: a repeated public resolution answered from encoded bytes.
            if self.transport is not None:
                self.transport.sendto(cached, addr)
            return
        try:
            raw = self.reassembler.feed_raw(data, peer=addr)
            if raw is None:
                return  # more packets of this message to come
            message = codec.decode_message(raw)
        except CodecError as exc:
            server.stats.malformed += 1
            reply = _error_reply(exc)
            if reply is not None and self.transport is not None:
                self.transport.sendto(reply, addr)
            return
        if message.header.op is OpCode.RESOLUTION:
            # A miss on the embedded store: answered here and now, no task per request.
            try:
                immediate = server.dispatcher.answer_now(message, raw[ENVELOPE_SIZE:])
            except Exception:  # a bug must not take the listener down with it
                log.exception("UDP request from %s failed", addr)
                return
            if immediate is not None:
                sent = self._send(immediate, addr)
                if sent is not None:
                    server.responses.remember(raw, message, immediate, sent)
                return
        if server.in_flight >= server.max_in_flight:
            server.stats.busy += 1
            self._send(
                server.dispatcher.error(message, ResponseCode.SERVER_TOO_BUSY, "busy", b""),
                addr,
            )
            return
        server.in_flight += 1
        task = asyncio.ensure_future(self._answer(message, raw, addr))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)

    async def _answer(self, message: Message, raw: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            response = await self.server.dispatcher.answer(
                message, raw[ENVELOPE_SIZE:], peer=("udp", addr)
            )
            data = self._send(response, addr)
            if data is not None:
                self.server.responses.remember(raw, message, response, data)
        except Exception:  # a bug must not take the listener down with it
            log.exception("UDP request from %s failed", addr)
        finally:
            self.server.in_flight -= 1

    def _send(self, response: Message, addr: tuple[str | object, ...]) -> bytes | None:
        if self.transport is None:
            return None
        data = codec.encode_message(response)
        if len(data) <= MAX_UDP_PACKET:
            self.transport.sendto(data, addr)
            return data
        for packet in codec.split_for_udp(response.envelope, data[ENVELOPE_SIZE:]):
            self.transport.sendto(packet, addr)
        return None


class NodeServer:
    """Serve one node on UDP and TCP (same port) and optionally HTTP.

    Use as ``async with NodeServer(node, host=..., port=...) as server``; ``port=0`` picks a free
    port (``server.port`` then says which, for TCP and UDP alike).
    """

    def __init__(
        self,
        node: Answerer,
        *,
        host: str = "127.0.0.1",
        port: int = 2641,
        http_port: int | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        reuse_port: bool = False,
        response_cache_entries: int = 100_000,
    ) -> None:
        self.node = node
        self.reuse_port = reuse_port
        self.responses = ResponseCache(node, entries=response_cache_entries)
        self._watch: asyncio.Task[None] | None = None
        self.dispatcher = Dispatcher(node)
        self.host = host
        self.port = port
        self.http_port = http_port
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.stats = ListenerStats()
        self.tasks: set[asyncio.Future[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._http: asyncio.Task[None] | None = None
        self._http_server: object | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> NodeServer:
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(
            self._serve_tcp,
            self.host,
            self.port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        self.port = int(self._tcp.sockets[0].getsockname()[1])
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self),
            local_addr=(self.host, self.port),
            reuse_port=self.reuse_port or None,
        )
        self._udp = udp
        sock = udp.get_extra_info("socket")
        if sock is not None:
            # Bursts of small datagrams overflow the default receive buffer (~200 KiB) and are
            # lost before we read them; a few MiB absorbs a burst (the kernel caps it at rmem_max).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        self._watch = asyncio.create_task(self.responses.watch())
        if self.http_port is not None:
            await self._start_http()
        log.info("Handle node on %s:%s (udp+tcp)%s", self.host, self.port, self._http_note())
        return self

    def _http_note(self) -> str:
        return f", http {self.http_port}" if self.http_port is not None else ""

    async def _start_http(self) -> None:
        import uvicorn  # noqa: PLC0415

        from tiangong.identity.node.resolver_rest import create_resolver_rest_app  # noqa: PLC0415
        from tiangong.identity.node.rest import create_rest_app  # noqa: PLC0415
        from tiangong.identity.node.service import HandleNode  # noqa: PLC0415
        from tiangong.identity.resolver import ResolverNode  # noqa: PLC0415

        if isinstance(self.node, HandleNode):
            app = create_rest_app(self.node)
        elif isinstance(self.node, ResolverNode):
            app = create_resolver_rest_app(self.node)
        else:
            raise TypeError(f"no REST API for {type(self.node).__name__}")
        config = uvicorn.Config(
            app, host=self.host, port=self.http_port or 0, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        self._http_server = server
        self._http = asyncio.create_task(server.serve())
        async with asyncio.timeout(10):
            while not server.started:
                if self._http.done():
                    self._http.result()  # raises the bind error
                await asyncio.sleep(0.02)
        if not self.http_port:
            self.http_port = int(server.servers[0].sockets[0].getsockname()[1])

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._connections):
            task.cancel()
        for future in list(self.tasks):
            future.cancel()
        if self._http_server is not None and self._http is not None:
            self._http_server.should_exit = True  # type: ignore[attr-defined]
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(5):
                    await self._http
        if self._tcp is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._tcp.wait_closed()

    # ------------------------------------------------------------ TCP

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        self.stats.tcp_connections += 1
        peer = writer.get_extra_info("peername")
        stream = codec.TcpMessageReader()
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    data = await reader.read(65536)
                if not data:
                    break
                try:
                    frames = stream.feed_raw(data)
                except CodecError as exc:
                    # A bad length breaks the framing: answer if we can, then hang up.
                    self.stats.malformed += 1
                    reply = _error_reply(exc)
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
                    break
                for raw in frames:
                    self.stats.tcp_requests += 1
                    cached = self.responses.answer(raw)
                    if cached is not None:
                        writer.write(cached)
                        continue
                    try:
                        message = codec.decode_message(raw)
                    except CodecError as exc:
                        self.stats.malformed += 1
                        reply = _error_reply(exc)
                        if reply is not None:
                            writer.write(reply)
                        continue
                    response = None
                    if message.header.op is OpCode.RESOLUTION:
                        response = self.dispatcher.answer_now(message, raw[ENVELOPE_SIZE:])
                    if response is None:
                        response = await self.dispatcher.answer(
                            message, raw[ENVELOPE_SIZE:], peer=_tcp_peer(peer)
                        )
                    data = codec.encode_message(response)
                    writer.write(data)
                    self.responses.remember(raw, message, response, data)
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("TCP connection from %s failed", peer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _tcp_peer(peer: object) -> Hashable:
    # A TCP client may answer a challenge on a new connection; key by address, not by port.
    if isinstance(peer, tuple) and peer:
        return ("tcp", peer[0])
    return ("tcp", str(peer))

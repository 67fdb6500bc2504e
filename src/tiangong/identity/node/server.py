"""The node's listeners: the binary Handle protocol over UDP and TCP, and the REST API over HTTP.

All three share one dispatcher (binary) or one ``HandleNode`` (REST), so a value written over
HTTP resolves over UDP at once. Bad input never stops a listener: a datagram or frame that does
not decode is answered with an error code when its header could be read (so the client stops
waiting), counted, and dropped otherwise. In-flight requests are bounded; beyond the bound a
node answers SERVER_TOO_BUSY (3) instead of queueing without limit.

Per-source limits (``rate_limit``/``burst``): one token bucket per client IP address, shared by
UDP, TCP and the REST API (``tiangong.security.ratelimit``; bounded memory, O(1) per request).
The check is the first thing a datagram meets, before the response cache, so it must stay a
dict lookup and some arithmetic. The Handle protocol has no "rate limited" code; the closest is
SERVER_TOO_BUSY (3), which clients treat as "try later or elsewhere". Over TCP (the address is
proven by the handshake) every refused request gets it. Over UDP the source may be forged, so
answering every refused datagram would make the node a reflector aimed at the forged address:
only every ``udp_slip``-th refused datagram is answered with SERVER_TOO_BUSY (as DNS response
rate limiting "slips" a truncated answer), the others are dropped, and a real client learns
that it is limited on its next retry. Addresses in ``rate_exempt`` (a node's own parent,
children or resolvers) are not limited. TCP connections are also capped per source address
(``max_connections_per_source``) beside the overall cap.
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
from tiangong.network.http_listener import HttpListener, bind_listener
from tiangong.security.ratelimit import ConcurrencyLimit, TokenBuckets

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4096
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
TCP_IDLE_TIMEOUT = 60.0
MAX_TCP_CONNECTIONS = 1024
MAX_TCP_CONNECTIONS_PER_SOURCE = 64
RATE_LIMITED_TEXT = "rate limited: too many requests from this address; retry later"


@dataclass
class ListenerStats:
    """What the listeners saw (beside the node's own counters)."""

    udp_requests: int = 0
    tcp_requests: int = 0
    malformed: int = 0
    busy: int = 0
    tcp_connections: int = 0
    rate_limited: int = 0
    connections_refused: int = 0


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
        rate = server.rate
        if rate is not None and addr[0] not in server.rate_exempt and not rate.take(addr[0]):
            self._refuse(data, addr)
            return
        cached = server.responses.answer(data)
        if cached is not None:
            # The hot path: a repeated public resolution answered from encoded bytes.
            if self.transport is not None:
                self.transport.sendto(cached, addr)
            return
        try:
            # The miss path of a plain resolution: the store's encoded answer under a header.
            plain = server.dispatcher.answer_plain_now(data)
        except Exception:  # a bug must not take the listener down; the full path decides
            log.exception("UDP request from %s: the encoded-answer path failed", addr)
            plain = None
        if plain is not None and len(plain) <= MAX_UDP_PACKET:
            if self.transport is not None:
                self.transport.sendto(plain, addr)
            server.responses.remember_answer(data, plain)
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

    def _refuse(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        """A datagram over its source's rate: dropped, or now and then answered (docstring)."""
        server = self.server
        server.stats.rate_limited += 1
        if server.stats.rate_limited % server.udp_slip or self.transport is None:
            return
        try:
            message = codec.decode_message(data)
        except CodecError:
            return  # not worth an answer
        if message.header.response is not ResponseCode.REQUEST:
            return  # never answer a response (two nodes could loop)
        reply = server.dispatcher.error(
            message, ResponseCode.SERVER_TOO_BUSY, RATE_LIMITED_TEXT, b""
        )
        self._send(reply, addr)

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
        rate_limit: float | None = None,
        burst: float | None = None,
        rate_exempt: frozenset[str] = frozenset(),
        udp_slip: int = 2,
        max_connections_per_source: int = MAX_TCP_CONNECTIONS_PER_SOURCE,
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
        self._http: HttpListener | None = None
        self._connections: set[asyncio.Task[None]] = set()
        #: Requests per source address (UDP, TCP and REST alike); None: no limit.
        self.rate: TokenBuckets[object] | None = None
        if rate_limit:
            self.rate = TokenBuckets(
                rate=rate_limit, burst=burst or 2 * rate_limit, max_keys=65_536
            )
        self.rate_exempt = rate_exempt
        self.udp_slip = max(1, udp_slip)
        self.sources: ConcurrencyLimit[object] = ConcurrencyLimit(
            per_key=max_connections_per_source, total=MAX_TCP_CONNECTIONS
        )

    def over_rate(self, address: object) -> bool:
        """Whether a request from ``address`` is over its rate (and counted if so)."""
        if self.rate is None or address in self.rate_exempt:
            return False
        if self.rate.take(address):
            return False
        self.stats.rate_limited += 1
        return True

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
        from tiangong.identity.node.resolver_rest import create_resolver_rest_app  # noqa: PLC0415
        from tiangong.identity.node.rest import create_rest_app  # noqa: PLC0415
        from tiangong.identity.node.service import HandleNode  # noqa: PLC0415
        from tiangong.identity.resolver import ResolverNode  # noqa: PLC0415

        if isinstance(self.node, HandleNode):
            app = create_rest_app(self.node, over_rate=self.over_rate)
        elif isinstance(self.node, ResolverNode):
            app = create_resolver_rest_app(self.node, over_rate=self.over_rate)
        else:
            raise TypeError(f"no REST API for {type(self.node).__name__}")
        # No X-Forwarded-For (HttpListener's default): the per-source limits count the address
        # that connected. A taken port is a NetworkError here, before anything is served.
        listener = HttpListener(app, bind_listener(self.host, self.http_port or 0))
        listener.start(None, f"idnode-http:{listener.port}")
        self._http = listener
        self.http_port = listener.port

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
        if self._http is not None:
            await self._http.stop()
        if self._tcp is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._tcp.wait_closed()

    # ------------------------------------------------------------ TCP

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        source = peer[0] if isinstance(peer, tuple) and peer else str(peer)
        if not self.sources.acquire(source):
            self.stats.connections_refused += 1
            writer.close()
            return
        self._connections.add(task)
        self.stats.tcp_connections += 1
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
                    if self.over_rate(source):
                        self._refuse_tcp(raw, writer)
                        continue
                    cached = self.responses.answer(raw)
                    if cached is not None:
                        writer.write(cached)
                        continue
                    try:
                        plain = self.dispatcher.answer_plain_now(raw)
                    except Exception:  # the full path below decides
                        log.exception("TCP request from %s: the encoded-answer path failed", peer)
                        plain = None
                    if plain is not None:
                        writer.write(plain)
                        self.responses.remember_answer(raw, plain)
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
            self.sources.release(source)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _refuse_tcp(self, raw: bytes, writer: asyncio.StreamWriter) -> None:
        """Answer a TCP request over its source's rate with SERVER_TOO_BUSY."""
        try:
            message = codec.decode_message(raw)
        except CodecError as exc:
            self.stats.malformed += 1
            reply = _error_reply(exc)
            if reply is not None:
                writer.write(reply)
            return
        if message.header.response is ResponseCode.REQUEST:
            error = self.dispatcher.error(
                message, ResponseCode.SERVER_TOO_BUSY, RATE_LIMITED_TEXT, b""
            )
            writer.write(codec.encode_message(error))


def _tcp_peer(peer: object) -> Hashable:
    # A TCP client may answer a challenge on a new connection; key by address, not by port.
    if isinstance(peer, tuple) and peer:
        return ("tcp", peer[0])
    return ("tcp", str(peer))

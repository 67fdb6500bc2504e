"""A Handle protocol client: one request to one server over UDP or TCP, answering challenges.

The resolver, the CLI and the nodes themselves (registering a prefix at their parent) use it.
UDP is tried first for resolutions (one round trip, no connection); a truncated or failed UDP
answer falls back to TCP, as Handle clients do. Writes go over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from dataclasses import dataclass, replace

from tiangong.identity import auth
from tiangong.identity.errors import CodecError, ResolutionError
from tiangong.identity.handle import codec
from tiangong.identity.handle.messages import (
    Body,
    Challenge,
    ChallengeAnswer,
    Envelope,
    ErrorResponse,
    Header,
    Message,
    ResolutionRequest,
)
from tiangong.identity.handle.protocol import (
    DEFAULT_RESOLUTION_FLAGS,
    ENVELOPE_SIZE,
    DigestAlgorithm,
    OpCode,
    OpFlag,
    ResponseCode,
)

DEFAULT_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where a Handle server listens."""

    host: str
    port: int
    transport: str = "udp"  # "udp" or "tcp"

    @classmethod
    def parse(cls, text: str, *, default_port: int = 2641) -> ServerAddress:
        """Parse ``host:port`` (or ``host``)."""
        host, sep, port = text.rpartition(":")
        if not sep:
            return cls(text, default_port)
        if not port.isdigit():
            raise ValueError(f"{text!r} is not host:port")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reassembler = codec.UdpReassembler()
        self.answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            message = self.reassembler.feed(data, peer=addr)
        except CodecError as exc:
            if not self.answer.done():
                self.answer.set_exception(exc)
            return
        if message is not None and not self.answer.done():
            self.answer.set_result(message)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


_request_ids = itertools.count(secrets.randbelow(1 << 30) + 1)


def next_request_id() -> int:
    """A fresh request id (unique in this process, wrapping at 2^31)."""
    return next(_request_ids) & 0x7FFFFFFF


class HandleClient:
    """Send requests to Handle servers; answer 402 challenges with ``identity`` if given."""

    def __init__(
        self,
        *,
        identity: auth.AdminIdentity | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.identity = identity
        self.timeout = timeout

    def message(self, op: OpCode, body: Body, *, flags: OpFlag = OpFlag.NONE) -> Message:
        """A request message with a fresh request id."""
        return Message(
            header=Header(op=op, flags=flags),
            body=body,
            envelope=Envelope(request_id=next_request_id()),
        )

    async def resolve(
        self,
        server: ServerAddress,
        handle: str,
        *,
        indexes: tuple[int, ...] = (),
        types: tuple[str, ...] = (),
        flags: OpFlag = DEFAULT_RESOLUTION_FLAGS,
    ) -> Message:
        """Send one resolution request to ``server`` and return its answer (any response code)."""
        body = ResolutionRequest(handle, indexes, types)
        request = self.message(OpCode.RESOLUTION, body, flags=flags)
        return await self.send(server, request)

    async def send(self, server: ServerAddress, request: Message) -> Message:
        """Send ``request``; answer a challenge if one comes back and we have an identity."""
        data = codec.encode_message(request)
        if server.transport == "udp" and len(data) <= 512:
            try:
                answer = await self._udp(server, data)
            except (TimeoutError, OSError, CodecError):
                answer = None
            if answer is not None and not answer.envelope.truncated:
                return await self._maybe_challenge(server, request, data, answer)
        answer = await self._tcp(server, data)
        return await self._maybe_challenge(replace(server, transport="tcp"), request, data, answer)

    async def _maybe_challenge(
        self, server: ServerAddress, request: Message, data: bytes, answer: Message
    ) -> Message:
        if answer.header.response is not ResponseCode.AUTHENTICATION_NEEDED:
            return answer
        if self.identity is None:
            return answer
        challenge = answer.body
        if not isinstance(challenge, Challenge):
            raise ResolutionError("a 402 answer without a challenge", ResponseCode.PROTOCOL_ERROR)
        ours = codec.request_digest(data[ENVELOPE_SIZE:], DigestAlgorithm.SHA256)
        if (
            challenge.digest is not None
            and challenge.digest.digest
            != codec.request_digest(data[ENVELOPE_SIZE:], challenge.digest.algorithm).digest
        ):
            # The server asks us to sign something that is not our request: refuse.
            raise ResolutionError(
                "challenge for a request we did not send", ResponseCode.AUTHEN_ERROR
            )
        auth_type, signed = auth.answer_challenge(self.identity, challenge.nonce, ours.digest)
        answer_message = Message(
            header=Header(op=OpCode.CHALLENGE_RESPONSE),
            body=ChallengeAnswer(
                auth_type=auth_type,
                user=self.identity.reference.handle,
                user_index=self.identity.reference.index,
                signed_response=signed,
            ),
            envelope=request.envelope,
        )
        return await self._tcp(server, codec.encode_message(answer_message))

    async def _udp(self, server: ServerAddress, data: bytes) -> Message:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _UdpExchange, remote_addr=(server.host, server.port)
        )
        try:
            transport.sendto(data)
            async with asyncio.timeout(self.timeout):
                return await protocol.answer
        finally:
            transport.close()

    async def _tcp(self, server: ServerAddress, data: bytes) -> Message:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            try:
                writer.write(data)
                await writer.drain()
                stream = codec.TcpMessageReader()
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        raise ResolutionError(
                            f"{server} closed the connection without an answer",
                            ResponseCode.ERROR,
                        )
                    messages = stream.feed(chunk)
                    if messages:
                        return messages[0]
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


def error_text(message: Message) -> str:
    """The reason an error response gives (or its response code's name)."""
    body = message.body
    code = message.header.response
    if isinstance(body, ErrorResponse) and body.message:
        return f"{code.name} ({int(code)}): {body.message}"
    return f"{code.name} ({int(code)})"

"""Binary Handle requests to node operations and back, including the 402 challenge round trip.

Transport-neutral: the UDP and TCP servers hand in decoded messages with the raw bytes they came
in (the challenge signs a digest of exactly those bytes) and send back what this returns.

Authentication follows RFC 3652 §3.5: a write arrives without credentials; the node answers
402 with a fresh nonce and the digest of the request; the client answers with op 200 on the same
request id, signing nonce ‖ digest with the key at ``index:handle``; the node checks it against
that identity's HS_SECKEY or HS_PUBKEY and only then performs the original request. Pending
challenges are kept per (peer, session, request id) for ``CHALLENGE_TTL`` seconds, at most
``MAX_PENDING`` of them, so a flood of unanswered writes cannot grow memory.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Protocol

from tiangong.identity import auth
from tiangong.identity.errors import IdentityError
from tiangong.identity.handle import codec
from tiangong.identity.handle.codec import request_digest
from tiangong.identity.handle.messages import (
    Body,
    Challenge,
    ChallengeAnswer,
    CreateHandleResponse,
    ErrorResponse,
    GenericResponse,
    HandleRequest,
    Header,
    ListResponse,
    Message,
    ReferralResponse,
    RemoveValuesRequest,
    RequestDigest,
    ResolutionRequest,
    ResolutionResponse,
    SiteInfoResponse,
    ValuesRequest,
)
from tiangong.identity.handle.protocol import DigestAlgorithm, OpCode, OpFlag, ResponseCode
from tiangong.identity.handle.values import (
    HS_PUBKEY,
    HS_SECKEY,
    HandleRecord,
    HandleValue,
    SiteInfo,
    ValueReference,
)
from tiangong.identity.node.service import (
    ANONYMOUS,
    WRITE_SOURCE,
    HandleNode,
    Identity,
    NodeError,
    Referral,
)
from tiangong.identity.store.base import WouldBlock

log = logging.getLogger(__name__)

_RD = int(OpFlag.RD)
_ECHOED_FLAGS = int(OpFlag.RD | OpFlag.PO | OpFlag.KC)
CHALLENGE_TTL = 30.0
MAX_PENDING = 10_000
LIST_PAGE = 1000

WRITE_OPS = frozenset(
    {
        OpCode.CREATE_HANDLE,
        OpCode.DELETE_HANDLE,
        OpCode.ADD_VALUE,
        OpCode.REMOVE_VALUE,
        OpCode.MODIFY_VALUE,
        OpCode.LIST_HANDLES,
        OpCode.HOME_NA,
        OpCode.UNHOME_NA,
    }
)


def _peer_text(peer: Hashable) -> str:
    """``tcp:192.0.2.7`` from the transports' peer keys (``("tcp", host)``, ``("udp", addr)``)."""
    if isinstance(peer, tuple) and len(peer) == 2:
        transport, address = peer
        host = address[0] if isinstance(address, tuple) and address else address
        return f"{transport}:{host}"
    return str(peer)


def _target(body: Body) -> str:
    handle = getattr(body, "handle", "")
    return handle if isinstance(handle, str) else ""


class Answerer(Protocol):
    """What the dispatcher needs from a node (``HandleNode``, or a resolver node)."""

    site: SiteInfo | None

    async def resolve(
        self,
        handle: str,
        *,
        indexes: tuple[int, ...] = (),
        types: tuple[str, ...] = (),
        public_only: bool = True,
        identity: Identity = ANONYMOUS,
    ) -> HandleRecord | Referral:
        """Resolve a handle or refer."""
        ...


@dataclass(slots=True)
class _Pending:
    request: Message
    digest: bytes
    nonce: bytes
    expires: float


class Dispatcher:
    """Turns one request message into its response message(s) for one node."""

    def __init__(self, node: Answerer) -> None:
        self.node = node
        self.writable: HandleNode | None = node if isinstance(node, HandleNode) else None
        self._pending: OrderedDict[Hashable, _Pending] = OrderedDict()
        self._now = time.monotonic

    async def answer(self, message: Message, raw: bytes, peer: Hashable) -> Message:
        """The response to ``message`` (whose header+body bytes are ``raw``) from ``peer``."""
        header = message.header
        if not message.is_request:
            return self.error(
                message, ResponseCode.PROTOCOL_ERROR, "a server only takes requests", raw
            )
        try:
            if header.op is OpCode.CHALLENGE_RESPONSE:
                return await self._challenge_answered(message, peer)
            if header.op in WRITE_OPS:
                return self._challenge(message, raw, peer)
            return await self._perform(message, ANONYMOUS, raw)
        except NodeError as exc:
            return self.error(message, exc.code, exc.message, raw)
        except IdentityError as exc:
            return self.error(message, ResponseCode.ERROR, str(exc), raw)

    # ------------------------------------------------------------ challenge

    def _challenge(self, message: Message, raw: bytes, peer: Hashable) -> Message:
        if self.writable is None:
            raise NodeError(ResponseCode.OPERATION_NOT_SUPPORTED, "this node only resolves")
        self._expire()
        nonce = auth.new_nonce()
        digest = request_digest(raw, DigestAlgorithm.SHA256)
        key = (peer, message.envelope.session_id, message.envelope.request_id)
        self._pending[key] = _Pending(message, digest.digest, nonce, self._now() + CHALLENGE_TTL)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        return self.reply(message, ResponseCode.AUTHENTICATION_NEEDED, Challenge(nonce, digest))

    async def _challenge_answered(self, message: Message, peer: Hashable) -> Message:
        body = message.body
        if not isinstance(body, ChallengeAnswer):
            raise NodeError(ResponseCode.PROTOCOL_ERROR, "op 200 without a challenge answer")
        key = (peer, message.envelope.session_id, message.envelope.request_id)
        pending = self._pending.pop(key, None)
        if pending is None or pending.expires < self._now():
            raise NodeError(ResponseCode.AUTHEN_TIMEOUT, "no open challenge for this request id")
        original = pending.request
        # The node's audit trail records where each write decision came from.
        source = WRITE_SOURCE.set(_peer_text(peer))
        try:
            identity = await self._verify(body, pending)
            if identity is None:
                if self.writable is not None:
                    self.writable.stats.refused += 1
                    await self.writable.audit_write(
                        f"op.{original.header.op.name.lower()}",
                        _target(original.body),
                        actor=f"{body.user_index}:{body.user}",
                        outcome=f"refused:{ResponseCode.AUTHENTICATION_FAILED.name}",
                        detail={"reason": "the challenge answer does not verify"},
                    )
                return self.error(
                    original,
                    ResponseCode.AUTHENTICATION_FAILED,
                    f"the answer for {body.user_index}:{body.user} does not verify",
                    b"",
                )
            return await self._perform(original, identity, b"")
        except NodeError as exc:
            # The answer to the original request, not to the challenge answer.
            return self.error(original, exc.code, exc.message, b"")
        finally:
            WRITE_SOURCE.reset(source)

    async def _verify(self, answer: ChallengeAnswer, pending: _Pending) -> Identity | None:
        assert self.writable is not None
        reference = ValueReference(handle=answer.user, index=answer.user_index)
        key = await self.writable.key_value(reference)
        if key is None:
            return None
        kind = key.type.upper()
        if kind == HS_SECKEY and answer.auth_type.upper() == HS_SECKEY:
            ok = auth.verify_secret_key_answer(
                key.data, pending.nonce, pending.digest, answer.signed_response
            )
        elif kind == HS_PUBKEY and answer.auth_type.upper() == HS_PUBKEY:
            ok = auth.verify_public_key_answer(
                key.data, pending.nonce, pending.digest, answer.signed_response, user=answer.user
            )
        else:
            ok = False
        return Identity(reference) if ok else None

    def _expire(self) -> None:
        now = self._now()
        while self._pending:
            key, oldest = next(iter(self._pending.items()))
            if oldest.expires >= now:
                break
            del self._pending[key]

    # ------------------------------------------------------------ operations

    async def _perform(self, message: Message, identity: Identity, raw: bytes) -> Message:
        header, body = message.header, message.body
        op = header.op
        if op is OpCode.RESOLUTION and isinstance(body, ResolutionRequest):
            return await self._resolve(message, body, identity, raw)
        if op is OpCode.GET_SITEINFO:
            site = self.node.site
            if site is None:
                raise NodeError(ResponseCode.OPERATION_NOT_SUPPORTED, "this node has no site")
            return self.reply(message, ResponseCode.SUCCESS, SiteInfoResponse(site))
        if op in (OpCode.LIST_HOMED_NAS, OpCode.LIST_NA):
            node = self._writable()
            prefixes = await node.homed_prefixes()
            return self.reply(message, ResponseCode.SUCCESS, ListResponse(tuple(prefixes)))
        node = self._writable()
        if op is OpCode.CREATE_HANDLE and isinstance(body, ValuesRequest):
            overwrite = bool(header.flags & OpFlag.OVRW)
            await node.create(body.handle, body.values, identity=identity, overwrite=overwrite)
            return self.reply(message, ResponseCode.SUCCESS, CreateHandleResponse(body.handle))
        if op is OpCode.ADD_VALUE and isinstance(body, ValuesRequest):
            if header.flags & OpFlag.OVRW:
                await node.put_values(body.handle, body.values, identity=identity)
            else:
                await node.add_values(body.handle, body.values, identity=identity)
        elif op is OpCode.MODIFY_VALUE and isinstance(body, ValuesRequest):
            await node.modify_values(body.handle, body.values, identity=identity)
        elif op is OpCode.REMOVE_VALUE and isinstance(body, RemoveValuesRequest):
            await node.remove_values(body.handle, body.indexes, identity=identity)
        elif op is OpCode.DELETE_HANDLE and isinstance(body, HandleRequest):
            await node.delete(body.handle, identity=identity)
        elif op is OpCode.LIST_HANDLES and isinstance(body, HandleRequest):
            handles = await node.list_handles(body.handle, identity=identity, limit=LIST_PAGE)
            return self.reply(message, ResponseCode.SUCCESS, ListResponse(tuple(handles)))
        elif op in (OpCode.HOME_NA, OpCode.UNHOME_NA) and isinstance(body, HandleRequest):
            await node.home(body.handle, identity=identity, home=op is OpCode.HOME_NA)
        else:
            raise NodeError(
                ResponseCode.OPERATION_NOT_SUPPORTED, f"operation {op.name} is not supported"
            )
        return self.reply(message, ResponseCode.SUCCESS, GenericResponse())

    async def _resolve(
        self, message: Message, body: ResolutionRequest, identity: Identity, raw: bytes
    ) -> Message:
        public_only = bool(message.header.flags & OpFlag.PO) or not identity.authenticated
        result = await self.node.resolve(
            body.handle,
            indexes=body.indexes,
            types=body.types,
            public_only=public_only,
            identity=identity,
        )
        return self._resolution_reply(message, result, raw)

    def answer_now(self, message: Message, raw: bytes) -> Message | None:
        """The answer to an anonymous resolution, computed at once, or None.

        None when the message is not a plain resolution or the node cannot answer without
        waiting (``WouldBlock``): then ``answer`` is the way.
        """
        body = message.body
        node = self.writable
        if node is None or not isinstance(body, ResolutionRequest) or not message.is_request:
            return None
        try:
            result = node.resolve_now(body.handle, indexes=body.indexes, types=body.types)
        except WouldBlock:
            return None
        except NodeError as exc:
            return self.error(message, exc.code, exc.message, raw)
        return self._resolution_reply(message, result, raw)

    def answer_plain_now(self, data: bytes) -> bytes | None:
        """The encoded answer to a plain public resolution, from the store's encoded answers.

        The miss path without objects (``codec.plain_resolution_handle``,
        ``HandleNode.public_answer_now``); None whenever the request or its answer needs more,
        and then ``answer_now`` or ``answer`` is the way.
        """
        node = self.writable
        if node is None:
            return None
        handle = codec.plain_resolution_handle(data)
        if handle is None:
            return None
        body = node.public_answer_now(handle)
        if body is None:
            return None
        return codec.encode_resolution_answer(data, body)

    def _resolution_reply(
        self, message: Message, result: HandleRecord | Referral, raw: bytes
    ) -> Message:
        digest = self._digest_for(message, raw)
        if isinstance(result, Referral):
            if message.header.flags & OpFlag.DNRF:
                raise NodeError(ResponseCode.SERVER_NOT_RESPONSIBLE, "referral not wanted (DNRF)")
            return self.reply(
                message, result.code, ReferralResponse(result.handle, result.values, digest)
            )
        values: tuple[HandleValue, ...] = result.values
        return self.reply(
            message, ResponseCode.SUCCESS, ResolutionResponse(result.handle, values, digest)
        )

    def _writable(self) -> HandleNode:
        if self.writable is None:
            raise NodeError(ResponseCode.OPERATION_NOT_SUPPORTED, "this node only resolves")
        return self.writable

    # ------------------------------------------------------------ building responses

    # Flag arithmetic on plain ints: IntFlag's operators run Python code, and these run for
    # every request on the hot path (measured: a third of a cache miss's own time).

    @staticmethod
    def _digest_for(message: Message, raw: bytes) -> RequestDigest | None:
        if raw and int(message.header.flags) & _RD:
            return request_digest(raw, DigestAlgorithm.SHA256)
        return None

    @staticmethod
    def reply(message: Message, code: ResponseCode, body: Body) -> Message:
        """A response to ``message`` with the same ids and op code."""
        request = message.header
        header = Header(
            op=request.op,
            response=code,
            flags=OpFlag(int(request.flags) & _ECHOED_FLAGS),
            recursion=request.recursion,
        )
        envelope = message.envelope
        if envelope.truncated or envelope.sequence:  # the encoder computes message_length
            envelope = replace(envelope, truncated=False, sequence=0)
        return Message(header=header, body=body, envelope=envelope)

    def error(self, message: Message, code: ResponseCode, text: str, raw: bytes) -> Message:
        """An error response with a reason the client can show."""
        return self.reply(message, code, ErrorResponse(text, self._digest_for(message, raw)))

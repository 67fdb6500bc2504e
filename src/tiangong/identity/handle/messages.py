"""Typed Handle protocol messages: envelope, header and one body type per message shape.

The codec (``codec.py``) turns bytes into these and back; servers and clients work only with
these. Which body a message carries follows from its header: a response code of 0 means a
request (the body shape follows the op code), 1 a success (the shape again follows the op code),
402 a challenge, 302/303 a referral, and anything else an error with a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tiangong.identity.handle.protocol import (
    COMPATIBILITY_MAJOR,
    COMPATIBILITY_MINOR,
    MAJOR_VERSION,
    MINOR_VERSION,
    UNKNOWN_SITE_SERIAL,
    DigestAlgorithm,
    OpCode,
    OpFlag,
    ResponseCode,
)
from tiangong.identity.handle.values import HandleValue, SiteInfo


@dataclass(frozen=True, slots=True)
class Envelope:
    """The 20-byte message envelope (RFC 3652 §2.2.1 plus the suggested-version extension)."""

    major: int = COMPATIBILITY_MAJOR
    minor: int = COMPATIBILITY_MINOR
    suggested_major: int = MAJOR_VERSION
    suggested_minor: int = MINOR_VERSION
    compressed: bool = False
    encrypted: bool = False
    truncated: bool = False
    session_id: int = 0
    request_id: int = 0
    sequence: int = 0
    message_length: int = 0  # filled in by the encoder


@dataclass(frozen=True, slots=True)
class Header:
    """The 24-byte message header."""

    op: OpCode
    response: ResponseCode = ResponseCode.REQUEST
    flags: OpFlag = OpFlag.NONE
    site_serial: int = UNKNOWN_SITE_SERIAL
    recursion: int = 0
    expiration: int = 0  # Unix seconds; 0 lets the encoder use now + 12 h


@dataclass(frozen=True, slots=True)
class RequestDigest:
    """A digest of the request a response answers (present when the request set RD)."""

    algorithm: DigestAlgorithm
    digest: bytes


# ---------------------------------------------------------------- request bodies


@dataclass(frozen=True, slots=True)
class ResolutionRequest:
    """op 1: resolve ``handle``, optionally only some indexes and/or types."""

    handle: str
    indexes: tuple[int, ...] = ()
    types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HandleRequest:
    """A request whose body is one handle.

    Used by GET_SITEINFO (handle ``/``), DELETE_HANDLE, LIST_HANDLES, LIST_HOMED_NAS and LIST_NA
    (a prefix handle), HOME_NA / UNHOME_NA and LOGIN_IDIS (with ``index``).
    """

    handle: str
    index: int | None = None  # only LOGIN_IDIS carries one


@dataclass(frozen=True, slots=True)
class ValuesRequest:
    """CREATE_HANDLE, ADD_VALUE, MODIFY_VALUE: a handle and the values to write."""

    handle: str
    values: tuple[HandleValue, ...]


@dataclass(frozen=True, slots=True)
class RemoveValuesRequest:
    """op 103: remove the values at ``indexes``."""

    handle: str
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ChallengeAnswer:
    """op 200: the answer to a 402 challenge, sent with the challenge's session/request ids.

    ``signed_response`` is, for HS_PUBKEY, ``str hashAlg; str signature``; for HS_SECKEY,
    ``byte digestAlg; MAC`` (see ``tiangong.identity.auth``).
    """

    auth_type: str  # "HS_PUBKEY" or "HS_SECKEY"
    user: str  # the admin identity's handle
    user_index: int
    signed_response: bytes


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """op 201: ask the user's home server whether a secret-key answer is right."""

    handle: str
    index: int
    nonce: bytes
    request_digest: bytes
    signed_response: bytes


# ---------------------------------------------------------------- response bodies


@dataclass(frozen=True, slots=True)
class GenericResponse:
    """A success with nothing to say (writes, HOME_NA, ...)."""

    digest: RequestDigest | None = None


@dataclass(frozen=True, slots=True)
class ResolutionResponse:
    """rc 1 to op 1: the handle and the values that matched."""

    handle: str
    values: tuple[HandleValue, ...]
    digest: RequestDigest | None = None


@dataclass(frozen=True, slots=True)
class SiteInfoResponse:
    """rc 1 to op 2: the server's own site."""

    site: SiteInfo
    digest: RequestDigest | None = None


@dataclass(frozen=True, slots=True)
class CreateHandleResponse:
    """rc 1 to op 100 when the server minted the suffix: the handle it created."""

    handle: str
    digest: RequestDigest | None = None


@dataclass(frozen=True, slots=True)
class ListResponse:
    """rc 1 to LIST_HANDLES / LIST_HOMED_NAS: one part of the list (CN flag: more follow)."""

    handles: tuple[str, ...]
    digest: RequestDigest | None = None


@dataclass(frozen=True, slots=True)
class ReferralResponse:
    """rc 302 (service referral) or 303 (prefix referral): where to ask instead.

    ``values`` are HS_SITE / HS_SITE.PREFIX / HS_SERV / HS_SERV.PREFIX records.
    """

    handle: str
    values: tuple[HandleValue, ...] = ()
    digest: RequestDigest | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """rc 402: prove who you are by signing ``nonce`` together with the request digest."""

    nonce: bytes
    digest: RequestDigest | None = None


@dataclass(frozen=True, slots=True)
class VerifyResponse:
    """rc 1 to op 201."""

    valid: bool
    digest: RequestDigest | None = None


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Any other response code: a human-readable reason."""

    message: str = ""
    digest: RequestDigest | None = None


Body = (
    ResolutionRequest
    | HandleRequest
    | ValuesRequest
    | RemoveValuesRequest
    | ChallengeAnswer
    | VerifyRequest
    | GenericResponse
    | ResolutionResponse
    | SiteInfoResponse
    | CreateHandleResponse
    | ListResponse
    | ReferralResponse
    | Challenge
    | VerifyResponse
    | ErrorResponse
)


@dataclass(frozen=True, slots=True)
class Credential:
    """The signature section of a message (RFC 3652 §2.2.4)."""

    signer: str  # the signer's handle (empty in CNRI's server signatures)
    signer_index: int
    type: str  # "HS_SIGNED" | "HS_MAC"
    digest_algorithm: str  # "SHA-256", "SHA1", "HMAC-SHA256", "SM3"
    signature: bytes
    version: int = 0
    options: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    """A whole Handle message."""

    header: Header
    body: Body
    envelope: Envelope = field(default_factory=Envelope)
    credential: Credential | None = None

    @property
    def is_request(self) -> bool:
        """Whether this is a request (response code 0)."""
        return self.header.response is ResponseCode.REQUEST

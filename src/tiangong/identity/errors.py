"""Exceptions of the identifier system (标识解析).

Tree::

    IdentityError
    ├── HandleSyntaxError     a handle or prefix that is not well formed
    ├── CodecError            bytes that are not a Handle message or value (with a response code)
    ├── HandleStoreError      the record store failed or refused (duplicate, missing)
    ├── AuthenticationError   a challenge answer that does not verify, an unknown key
    ├── TrustError            a signed record whose signature or certificate chain does not verify
    └── ResolutionError       a resolver that could not reach an answer (with the last code)
"""

from __future__ import annotations


class IdentityError(Exception):
    """Root of all identifier-system errors."""


class HandleSyntaxError(IdentityError):
    """A handle or prefix is not well formed (empty, too long, not UTF-8)."""


class CodecError(IdentityError):
    """Bytes that do not decode as a Handle message, envelope or value.

    ``response_code`` is what a server answers the sender with (4 = protocol error by default).
    """

    def __init__(self, message: str, response_code: int = 4) -> None:
        super().__init__(message)
        self.response_code = response_code


class HandleStoreError(IdentityError):
    """The handle store failed or refused an operation."""


class HandleExistsError(HandleStoreError):
    """A create for a handle that already exists."""


class HandleNotFoundError(HandleStoreError):
    """An operation on a handle that does not exist."""


class ValueExistsError(HandleStoreError):
    """An add for a value index the handle already has."""


class ValueNotFoundError(HandleStoreError):
    """A modify or remove of a value index the handle does not have."""


class AuthenticationError(IdentityError):
    """A challenge answer did not verify, or the key it names does not exist."""


class TrustError(IdentityError):
    """A signed record's signature, certificate or chain did not verify."""


class ResolutionError(IdentityError):
    """A resolver could not reach an answer; ``response_code`` is the last one it saw."""

    def __init__(self, message: str, response_code: int = 2) -> None:
        super().__init__(message)
        self.response_code = response_code

"""Trusted resolution (可信解析): signed records and the certificate chains behind them.

Theory of operation. This is the CNRI Handle v9 trust model, which IDIS adopted with SM2:

* An **HS_CERT** value holds a compact JWS whose claims say "issuer ``iss`` vouches that
  ``sub`` (an ``index:handle`` admin identity) holds ``publicKey`` (a JWK) and may sign
  ``perms``", valid from ``nbf`` to ``exp``. A trust root's certificate is self-issued
  (``iss == sub``).
* An **HS_SIGNATURE** value holds a compact JWS whose claims name the signed handle (``sub``),
  the signer (``iss``), a validity period, and ``digests``: for each signed value, its index and
  the base64 digest of its canonical bytes (below). Per-value digests let a resolver that may
  only see some values (permissions filter the rest) still check those it sees.
* Both may carry ``chain``: the ``index:handle`` references of the certificates to follow,
  first the one about the issuer, then the one about *its* issuer, and so on. Without one, the
  certificate about an issuer is looked for at index 400 (``DEFAULT_CERT_INDEX``) of the
  issuer's handle, where IDIS keeps it.

Verification walks up from the record's signature: fetch the certificate about the current
issuer, check that its subject *is* that issuer, that its key verifies the JWS below it, that it
is within its validity period and that its permissions cover the record's handle; stop at the
configured trust root (its handle, and its index unless the configured index is 0), whose key
must be the configured one. At most ``MAX_CHAIN_LENGTH`` certificates are followed.

**Canonical bytes of a value** (what each digest is over) are those of hdllib's
``HandleValueDigester``, so that signatures interoperate: the Handle binary encoding of the value
without its first 8 bytes (index and timestamp)::

    byte ttlType; int ttl; byte permissions; str type; str data;
    int referenceCount; referenceCount * (str handle; int index)

The index is bound by the digest entry it sits in; the timestamp is left out because a server
rewrites it. So a change of type, data, TTL, permissions or references breaks the digest.
HS_SIGNATURE and HS_CERT values are never digested (they protect themselves and change when a
record is re-signed): ``sign_values`` skips them and verification neither covers nor flags them.

**Algorithms.** ``RS256`` is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518), value digests SHA-256.
``SM2256`` is SM2 with SM3 and the default user ID ``1234567812345678`` (a JWS has no identifier
to use instead), its signature the raw 64-byte ``r ‖ s`` as for JWS EC algorithms; its value
digests are SM3. Nothing else is accepted: not ``none``, not a header with ``crit``, not a
base64url that is padded or not canonical, not a key of the wrong type for ``alg``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tiangong.identity.errors import CodecError, HandleSyntaxError, TrustError
from tiangong.identity.handle.values import (
    HS_CERT,
    HS_SIGNATURE,
    PREFIX_HANDLE_NAMESPACE,
    HandleRecord,
    HandleValue,
    ValueReference,
    handle_key,
)
from tiangong.identity.keys import (
    PrivateKeyObject,
    PublicKeyObject,
    encode_public_key,
    load_public_key,
    public_key_from_jwk,
    public_key_of,
    public_key_to_jwk,
    same_public_key,
)
from tiangong.identity.sm2 import Sm2PrivateKey, Sm2PublicKey, sm3

ALG_RS256 = "RS256"
ALG_SM2256 = "SM2256"
ALGORITHMS = (ALG_RS256, ALG_SM2256)

DIGEST_SHA256 = "SHA-256"
DIGEST_SM3 = "SM3"

DEFAULT_CERT_INDEX = 400
MAX_CHAIN_LENGTH = 8
MAX_JWS_LENGTH = 64 * 1024  # characters; a certificate with an RSA-4096 key is about 2 KiB

PERM_EVERYTHING = "everything"
PERM_THIS_HANDLE = "thisHandle"
PERM_DERIVED_PREFIXES = "derivedPrefixes"
PERM_HANDLES_UNDER_THIS_PREFIX = "handlesUnderThisPrefix"
PERMISSIONS = (
    PERM_EVERYTHING,
    PERM_THIS_HANDLE,
    PERM_DERIVED_PREFIXES,
    PERM_HANDLES_UNDER_THIS_PREFIX,
)

Timestamp = int | datetime
"""Unix seconds, or a timezone-aware ``datetime``."""

Fetch = Callable[[ValueReference], Awaitable[HandleValue | None]]
"""Resolves one value by reference (``None`` if the handle or index does not exist)."""

_B64URL_CHARS = re.compile(r"[A-Za-z0-9_-]*")
_UNDIGESTED_TYPES = (HS_SIGNATURE, HS_CERT)


# ------------------------------------------------------------------ compact JWS


@dataclass(frozen=True, slots=True)
class Jws:
    """A parsed compact JWS (not yet verified)."""

    header: dict[str, Any]
    payload: bytes
    signature: bytes
    signing_input: bytes  # ASCII "base64url(header).base64url(payload)", what was signed

    @property
    def alg(self) -> str:
        """The ``alg`` of the protected header (one of ``ALGORITHMS``)."""
        alg: str = self.header["alg"]
        return alg


def jws_sign(payload: bytes, key: PrivateKeyObject) -> str:
    """Sign ``payload`` as a compact JWS: RS256 for an RSA key, SM2256 for an SM2 key."""
    alg = ALG_SM2256 if isinstance(key, Sm2PrivateKey) else ALG_RS256
    header = json.dumps({"alg": alg}, separators=(",", ":")).encode("ascii")
    signing_input = f"{_b64url(header)}.{_b64url(payload)}".encode("ascii")
    if isinstance(key, Sm2PrivateKey):
        signature = key.sign(signing_input, encoding="raw")
    else:
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{_b64url(signature)}"


def jws_parse(token: str) -> Jws:
    """Parse a compact JWS strictly; ``TrustError`` for anything malformed or unsupported."""
    if not isinstance(token, str) or len(token) > MAX_JWS_LENGTH:
        raise TrustError("not a JWS of acceptable size")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise TrustError("a compact JWS has three dot-separated parts")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(_b64url_decode(header_b64), "JWS header")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise TrustError(f"JWS algorithm {alg!r} is not accepted (only {', '.join(ALGORITHMS)})")
    if "crit" in header:
        raise TrustError("JWS header has critical extensions this verifier does not know")
    signature = _b64url_decode(signature_b64)
    if not signature:
        raise TrustError("JWS has an empty signature")
    return Jws(
        header=header,
        payload=_b64url_decode(payload_b64),
        signature=signature,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
    )


def jws_verify(jws: Jws, key: PublicKeyObject) -> bool:
    """Whether ``key`` made ``jws``'s signature; ``False`` also for a key of the wrong type."""
    if jws.alg == ALG_SM2256:
        if not isinstance(key, Sm2PublicKey):
            return False
        return key.verify(jws.signature, jws.signing_input, encoding="raw")
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------ claims


@dataclass(frozen=True, slots=True)
class CertPermission:
    """What a certificate lets its subject sign: ``perm`` over ``handle`` (a prefix handle).

    ``everything`` needs no handle. A permission given to ``issue_certificate`` without a handle
    is written with the subject's handle.
    """

    perm: str
    handle: str | None = None

    def authorizes(self, handle: str) -> bool:
        """Whether this permission covers signing the record of ``handle`` (hdllib's rules)."""
        if self.perm == PERM_EVERYTHING:
            return True
        if self.handle is None:
            return False
        if self.perm == PERM_THIS_HANDLE:
            return handle_key(handle) == handle_key(self.handle) or _under_prefix(
                handle, self.handle
            )
        if self.perm == PERM_HANDLES_UNDER_THIS_PREFIX:
            return _under_prefix(handle, self.handle)
        if self.perm == PERM_DERIVED_PREFIXES:
            zero_na = _zero_na_handle(handle)
            return _derived_from(handle, self.handle) or (
                zero_na is not None and _derived_from(zero_na, self.handle)
            )
        return False


@dataclass(frozen=True, slots=True)
class Certificate:
    """The claims of an HS_CERT JWS."""

    issuer: ValueReference
    subject: ValueReference
    public_key: bytes  # HS_PUBKEY data of the subject's key
    perms: tuple[CertPermission, ...]
    not_before: int | None
    expires: int | None
    issued_at: int | None
    serial: str | int | None
    chain: tuple[ValueReference, ...]
    jws: Jws

    @property
    def self_issued(self) -> bool:
        """Whether the certificate is issued by its own subject (a root)."""
        return _same_reference(self.issuer, self.subject)


@dataclass(frozen=True, slots=True)
class RecordSignature:
    """The claims of an HS_SIGNATURE JWS."""

    issuer: ValueReference
    handle: str
    digest_algorithm: str
    digests: dict[int, bytes]
    not_before: int | None
    expires: int | None
    issued_at: int | None
    chain: tuple[ValueReference, ...]
    jws: Jws


def parse_certificate(token: str) -> Certificate:
    """Parse (without verifying) an HS_CERT JWS; ``TrustError`` if it is not one."""
    jws = jws_parse(token)
    claims = _json_object(jws.payload, "certificate claims")
    jwk = claims.get("publicKey")
    if not isinstance(jwk, dict):
        raise TrustError("certificate has no publicKey JWK")
    try:
        public_key = public_key_from_jwk(jwk)
    except CodecError as exc:
        raise TrustError(f"certificate publicKey: {exc}") from exc
    raw_perms = claims.get("perms")
    if not isinstance(raw_perms, list):
        raise TrustError("certificate has no perms list")
    perms = tuple(_parse_permission(p) for p in raw_perms)
    return Certificate(
        issuer=_reference_claim(claims, "iss"),
        subject=_reference_claim(claims, "sub"),
        public_key=public_key,
        perms=perms,
        not_before=_int_claim(claims, "nbf"),
        expires=_int_claim(claims, "exp"),
        issued_at=_int_claim(claims, "iat"),
        serial=_serial_claim(claims),
        chain=_chain_claim(claims),
        jws=jws,
    )


def parse_signature(token: str) -> RecordSignature:
    """Parse (without verifying) an HS_SIGNATURE JWS; ``TrustError`` if it is not one."""
    jws = jws_parse(token)
    claims = _json_object(jws.payload, "signature claims")
    handle = claims.get("sub")
    if not isinstance(handle, str) or not handle:
        raise TrustError("signature has no subject handle")
    block = claims.get("digests")
    if not isinstance(block, dict):
        raise TrustError("signature has no digests")
    algorithm = block.get("alg")
    entries = block.get("digests")
    if not isinstance(algorithm, str) or not isinstance(entries, list):
        raise TrustError("signature digests need alg and a digests list")
    digests: dict[int, bytes] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise TrustError("a digest entry is not an object")
        index, digest = entry.get("index"), entry.get("digest")
        if type(index) is not int or not isinstance(digest, str):
            raise TrustError("a digest entry needs an integer index and a digest string")
        if index in digests:
            raise TrustError(f"two digests for index {index}")
        try:
            digests[index] = base64.b64decode(digest, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TrustError(f"digest of index {index} is not base64") from exc
    return RecordSignature(
        issuer=_reference_claim(claims, "iss"),
        handle=handle,
        digest_algorithm=algorithm,
        digests=digests,
        not_before=_int_claim(claims, "nbf"),
        expires=_int_claim(claims, "exp"),
        issued_at=_int_claim(claims, "iat"),
        chain=_chain_claim(claims),
        jws=jws,
    )


# ------------------------------------------------------------------ issuing


def issue_certificate(
    issuer: ValueReference,
    issuer_key: PrivateKeyObject,
    subject: ValueReference,
    subject_public_key_data: bytes,
    *,
    perms: Sequence[str | CertPermission],
    not_before: Timestamp,
    expires: Timestamp,
    serial: str | int,
    now: Timestamp | None = None,
    chain: Sequence[ValueReference] = (),
) -> str:
    """The JWS of an HS_CERT value: ``issuer`` certifies ``subject``'s key and permissions.

    ``subject_public_key_data`` is HS_PUBKEY data. ``chain`` names the certificates above
    ``issuer`` when they are not at index 400 of each issuer's handle.
    """
    permissions = [_permission_for(p, subject) for p in perms]
    claims: dict[str, object] = {
        "iss": str(issuer),
        "sub": str(subject),
        "iat": _epoch(now if now is not None else int(time.time())),
        "nbf": _epoch(not_before),
        "exp": _epoch(expires),
        "sn": serial,
        "publicKey": public_key_to_jwk(subject_public_key_data),
        "perms": [_permission_json(p) for p in permissions],
    }
    if chain:
        claims["chain"] = [str(ref) for ref in chain]
    return jws_sign(_json_bytes(claims), issuer_key)


def self_signed_root(
    root: ValueReference,
    key: PrivateKeyObject,
    *,
    not_before: Timestamp,
    expires: Timestamp,
    serial: str | int,
    perms: Sequence[str | CertPermission] = (PERM_EVERYTHING,),
    now: Timestamp | None = None,
) -> str:
    """The self-issued HS_CERT of a trust root (store it at ``root``'s handle, index 400)."""
    return issue_certificate(
        root,
        key,
        root,
        encode_public_key(public_key_of(key)),
        perms=perms,
        not_before=not_before,
        expires=expires,
        serial=serial,
        now=now,
    )


def canonical_value_bytes(value: HandleValue) -> bytes:
    """The bytes a value's digest is over (see the module docstring)."""
    parts = [
        struct.pack(">BIB", int(value.ttl_type), value.ttl & 0xFFFFFFFF, int(value.permissions)),
        _str(value.type.encode("utf-8")),
        _str(value.data),
        struct.pack(">I", len(value.references)),
    ]
    for ref in value.references:
        parts += [_str(ref.handle.encode("utf-8")), struct.pack(">I", ref.index & 0xFFFFFFFF)]
    return b"".join(parts)


def value_digest(value: HandleValue, algorithm: str) -> bytes:
    """The ``algorithm`` (``SHA-256`` or ``SM3``) digest of ``value``'s canonical bytes."""
    data = canonical_value_bytes(value)
    name = _digest_name(algorithm)
    if name == DIGEST_SM3:
        return sm3(data)
    return hashlib.sha256(data).digest()


def sign_values(
    values: Sequence[HandleValue],
    *,
    handle: str,
    signer: ValueReference,
    key: PrivateKeyObject,
    expires: Timestamp,
    now: Timestamp,
    not_before: Timestamp | None = None,
    chain: Sequence[ValueReference] = (),
) -> str:
    """The JWS of an HS_SIGNATURE value over ``values`` of ``handle``, signed as ``signer``.

    HS_SIGNATURE and HS_CERT values among ``values`` are skipped. Digests are SHA-256 for an
    RSA key and SM3 for an SM2 key.
    """
    algorithm = DIGEST_SM3 if isinstance(key, Sm2PrivateKey) else DIGEST_SHA256
    entries = [
        {"index": v.index, "digest": base64.b64encode(value_digest(v, algorithm)).decode()}
        for v in values
        if not _undigested(v)
    ]
    claims: dict[str, object] = {
        "iss": str(signer),
        "sub": handle,
        "iat": _epoch(now),
        "nbf": _epoch(not_before if not_before is not None else now),
        "exp": _epoch(expires),
        "digests": {"alg": algorithm, "digests": entries},
    }
    if chain:
        claims["chain"] = [str(ref) for ref in chain]
    return jws_sign(_json_bytes(claims), key)


# ------------------------------------------------------------------ verifying


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of checking a record's signature.

    ``valid`` means: a signature that verifies through an unbroken, unexpired, authorized chain
    to the configured root, and every value present (other than HS_SIGNATURE/HS_CERT) covered by
    a matching digest. ``failed`` are indexes whose value no longer matches its digest
    (tampered); ``unsigned`` are values the signature does not mention (added after signing);
    ``missing`` are signed indexes absent from the record, which is not an error (the resolver
    may not see them). ``chain`` lists the certificates followed, nearest first.
    """

    signed: bool
    valid: bool
    reason: str
    signer: ValueReference | None = None
    chain: tuple[ValueReference, ...] = ()
    covered: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    unsigned: tuple[int, ...] = ()
    missing: tuple[int, ...] = ()


async def verify_record(
    record: HandleRecord | Sequence[HandleValue],
    *,
    fetch: Fetch,
    trust_root: ValueReference,
    trust_root_public_key_data: bytes,
    now: Timestamp,
    handle: str | None = None,
    max_chain_length: int = MAX_CHAIN_LENGTH,
) -> Verification:
    """Check the HS_SIGNATURE values of a record against the trust root.

    ``record`` is a ``HandleRecord`` or its values (then ``handle`` names it). ``fetch`` gets the
    certificates of the chain. With several signatures, the first valid one is reported, else
    the first one's failure. Never raises for bad data (that is a ``Verification`` with a
    reason); exceptions from ``fetch`` propagate.
    """
    if isinstance(record, HandleRecord):
        values, handle = record.values, record.handle if handle is None else handle
    else:
        values = tuple(record)
        if handle is None:
            raise TypeError("verify_record needs handle= when given values, not a HandleRecord")
    signatures = [v for v in values if v.type_matches(HS_SIGNATURE)]
    if not signatures:
        unsigned = tuple(sorted(v.index for v in values if not _undigested(v)))
        return Verification(signed=False, valid=False, reason="no HS_SIGNATURE", unsigned=unsigned)
    at = _epoch(now)
    results = []
    for value in sorted(signatures, key=lambda v: v.index):
        result = await _verify_one(
            value,
            values,
            handle,
            fetch=fetch,
            trust_root=trust_root,
            root_key=trust_root_public_key_data,
            now=at,
            max_chain_length=max_chain_length,
        )
        if result.valid:
            return result
        results.append(result)
    return results[0]


async def _verify_one(
    signature_value: HandleValue,
    values: Sequence[HandleValue],
    handle: str,
    *,
    fetch: Fetch,
    trust_root: ValueReference,
    root_key: bytes,
    now: int,
    max_chain_length: int,
) -> Verification:
    where = f"HS_SIGNATURE at index {signature_value.index}"
    try:
        signature = parse_signature(_value_text(signature_value))
        actual = {
            v.index: value_digest(v, signature.digest_algorithm)
            for v in values
            if not _undigested(v)
        }
    except TrustError as exc:
        return Verification(signed=True, valid=False, reason=f"{where}: {exc}")

    covered = tuple(sorted(i for i, d in actual.items() if signature.digests.get(i) == d))
    failed = tuple(sorted(i for i in actual if i in signature.digests and i not in covered))
    unsigned = tuple(sorted(i for i in actual if i not in signature.digests))
    missing = tuple(sorted(i for i in signature.digests if i not in actual))

    chain: list[ValueReference] = []

    def outcome(reason: str, *, valid: bool = False) -> Verification:
        return Verification(
            signed=True,
            valid=valid,
            reason=reason,
            signer=signature.issuer,
            chain=tuple(chain),
            covered=covered,
            failed=failed,
            unsigned=unsigned,
            missing=missing,
        )

    if handle_key(signature.handle) != handle_key(handle):
        return outcome(f"{where} signs {signature.handle!r}, not {handle!r}")
    period = _period_problem("the signature", signature.not_before, signature.expires, now)
    if period:
        return outcome(f"{where}: {period}")

    # Walk up the chain (theory of operation in the module docstring).
    below: Jws = signature.jws
    issuer = signature.issuer
    pending = list(signature.chain)
    seen: set[tuple[str, int]] = set()
    while True:
        if len(chain) >= max_chain_length:
            return outcome(f"certificate chain longer than {max_chain_length}")
        ref = pending.pop(0) if pending else ValueReference(issuer.handle, DEFAULT_CERT_INDEX)
        ident = (handle_key(ref.handle), ref.index)
        if ident in seen:
            return outcome(f"certificate chain loops at {ref}")
        seen.add(ident)
        cert_value = await fetch(ref)
        if cert_value is None or not cert_value.type_matches(HS_CERT):
            return outcome(f"no HS_CERT at {ref} for issuer {issuer}")
        chain.append(ref)
        try:
            cert = parse_certificate(_value_text(cert_value))
            issuer_key = load_public_key(cert.public_key)
        except (TrustError, CodecError) as exc:
            return outcome(f"HS_CERT at {ref}: {exc}")
        if not _same_reference(cert.subject, issuer):
            return outcome(f"HS_CERT at {ref} is about {cert.subject}, not the issuer {issuer}")
        if not jws_verify(below, issuer_key):
            return outcome(f"signature by {issuer} does not verify with the key in {ref}")
        period = _period_problem(f"the certificate of {issuer}", cert.not_before, cert.expires, now)
        if period:
            return outcome(period)
        if not any(p.authorizes(handle) for p in cert.perms):
            return outcome(f"the certificate of {issuer} does not authorize signing {handle}")
        if _is_trust_root(cert.subject, trust_root):
            if not same_public_key(cert.public_key, root_key):
                return outcome(f"{cert.subject} has a key other than the configured root key")
            if cert.self_issued and not jws_verify(cert.jws, issuer_key):
                return outcome(f"the root certificate at {ref} is not self-signed by its key")
            break
        if cert.self_issued:
            return outcome(f"certificate chain ends at {cert.subject}, not the root {trust_root}")
        below, issuer = cert.jws, cert.issuer
        if not pending:
            pending = list(cert.chain)

    if failed:
        return outcome(f"values {list(failed)} do not match their signed digests")
    if unsigned:
        return outcome(f"values {list(unsigned)} are not covered by the signature")
    return outcome(f"signed by {signature.issuer} through {len(chain)} certificates", valid=True)


# ------------------------------------------------------------------ helpers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not _B64URL_CHARS.fullmatch(text) or len(text) % 4 == 1:
        raise TrustError("JWS part is not unpadded base64url")
    decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(decoded) != text:
        raise TrustError("JWS part is not canonical base64url")
    return decoded


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise TrustError(f"duplicate JSON member {name!r}")
        result[name] = value
    return result


def _reject_constant(name: str) -> Any:
    raise TrustError(f"JSON constant {name} is not allowed")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TrustError(f"{what} is not UTF-8 JSON") from exc
    if not isinstance(parsed, dict):
        raise TrustError(f"{what} is not a JSON object")
    return parsed


def _json_bytes(claims: dict[str, object]) -> bytes:
    return json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reference_claim(claims: dict[str, Any], name: str) -> ValueReference:
    text = claims.get(name)
    if not isinstance(text, str):
        raise TrustError(f"claim {name!r} is missing")
    return _parse_reference(text, name)


def _parse_reference(text: str, what: str) -> ValueReference:
    try:
        return ValueReference.parse(text)
    except HandleSyntaxError as exc:
        raise TrustError(f"{what} {text!r} is not index:handle") from exc


def _int_claim(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise TrustError(f"claim {name!r} is not an integer")
    return value


def _serial_claim(claims: dict[str, Any]) -> str | int | None:
    value = claims.get("sn")
    if value is None or type(value) in (str, int):
        return value
    raise TrustError("claim 'sn' is not a string or integer")


def _chain_claim(claims: dict[str, Any]) -> tuple[ValueReference, ...]:
    value = claims.get("chain")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TrustError("claim 'chain' is not a list of index:handle strings")
    return tuple(_parse_reference(v, "chain entry") for v in value)


def _parse_permission(raw: object) -> CertPermission:
    if isinstance(raw, str):
        raw = {"perm": raw}
    if not isinstance(raw, dict):
        raise TrustError("a certificate permission is not an object")
    perm, handle = raw.get("perm"), raw.get("handle")
    if not isinstance(perm, str) or not (handle is None or isinstance(handle, str)):
        raise TrustError("a certificate permission needs perm (and optionally handle) strings")
    return CertPermission(perm=perm, handle=handle)


def _permission_for(perm: str | CertPermission, subject: ValueReference) -> CertPermission:
    if isinstance(perm, str):
        perm = CertPermission(perm)
    if perm.perm not in PERMISSIONS:
        raise ValueError(f"unknown certificate permission {perm.perm!r}")
    if perm.handle is None and perm.perm != PERM_EVERYTHING:
        return CertPermission(perm.perm, subject.handle)
    return perm


def _permission_json(perm: CertPermission) -> dict[str, str]:
    if perm.handle is None:
        return {"perm": perm.perm}
    return {"handle": perm.handle, "perm": perm.perm}


def _epoch(value: Timestamp) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime is ambiguous; give a timezone")
        return int(value.timestamp())
    if type(value) is not int:
        raise TypeError("a timestamp is Unix seconds (int) or an aware datetime")
    return value


def _period_problem(what: str, not_before: int | None, expires: int | None, now: int) -> str:
    if expires is None:
        return f"{what} has no expiry"
    if now > expires:
        return f"{what} expired at {expires}"
    if not_before is not None and now < not_before:
        return f"{what} is not valid before {not_before}"
    return ""


def _digest_name(algorithm: str) -> str:
    normalized = algorithm.upper().replace("-", "")
    if normalized == "SHA256":
        return DIGEST_SHA256
    if normalized == "SM3":
        return DIGEST_SM3
    raise TrustError(f"unsupported value digest algorithm {algorithm!r}")


def _undigested(value: HandleValue) -> bool:
    return any(value.type_matches(t) for t in _UNDIGESTED_TYPES)


def _value_text(value: HandleValue) -> str:
    try:
        return value.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TrustError(f"the {value.type} value at index {value.index} is not text") from exc


def _same_reference(a: ValueReference, b: ValueReference) -> bool:
    return a.index == b.index and handle_key(a.handle) == handle_key(b.handle)


def _is_trust_root(subject: ValueReference, root: ValueReference) -> bool:
    if handle_key(subject.handle) != handle_key(root.handle):
        return False
    return root.index in (0, subject.index)


def _under_prefix(handle: str, prefix_handle: str) -> bool:
    # hdllib: only a 0.NA/ prefix handle has handles under it.
    marker = PREFIX_HANDLE_NAMESPACE + "/"
    if not handle_key(prefix_handle).startswith(marker):
        return False
    prefix = handle_key(prefix_handle)[len(marker) :]
    return handle_key(handle).startswith(prefix + "/")


def _derived_from(handle: str, ancestor: str) -> bool:
    if not handle_key(handle).startswith(PREFIX_HANDLE_NAMESPACE + "/"):
        return False
    return handle_key(handle).startswith(handle_key(ancestor) + ".")


def _zero_na_handle(handle: str) -> str | None:
    prefix, slash, _ = handle.partition("/")
    return f"{PREFIX_HANDLE_NAMESPACE}/{prefix}" if slash else None


def _str(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data

"""Signed records in operation: node signer, operators' trust files, resolver-side check.

The signer a node runs, the trust files operators keep, and the check a resolver makes. The
cryptography (JWS, HS_CERT and HS_SIGNATURE claims, chain walking) is in ``trust``; this module
puts it to work across the hierarchy.

Theory of operation
-------------------
* **Trust root.** A key pair whose public key is published as HS_PUBKEY at index 300 of a trust
  handle (``88/0.0`` for a national root with prefix 88, as IDIS uses ``88.111.1/0.0``), with a
  self-signed HS_CERT at index 400 of the same handle. Resolvers are configured with the root's
  reference (``300:88/0.0``) and its public key, from a file: nothing fetched over the network is
  trusted unless it chains to that key.
* **Node certificates.** A node that signs has its own key and an HS_CERT about the identity
  ``300:0.NA/<prefix>``, issued by the root (or by a node above it that has a certificate with
  ``derivedPrefixes``), granting ``handlesUnderThisPrefix`` (and ``thisHandle``) for its prefix.
  It is published at index 400 of ``0.NA/<prefix>`` *where resolvers read that handle*: in the
  parent's delegation record, which is the copy a resolver is referred to.
* **Signing.** After each write, a node with a ``RecordSigner`` (re)computes the record's
  HS_SIGNATURE (index 400, or the next free index above it if 400 holds something else, such as
  the HS_CERT of a prefix handle) over all of the record's other values, including those the
  public cannot read: a resolver checks the values it sees and reports the rest as ``missing``.
* **Verifying.** ``verify_resolved`` fetches the certificates of the chain through the same
  ``Resolver`` that fetched the record and reports a ``trust.Verification``: signed or not, valid
  or not, the signer, the chain followed, and the covered / failed (tampered) / unsigned indexes.

Trust directory (``TrustMaterial.save`` / ``load``)::

    trust.json         {"reference": "300:88/0.0", "root": true}  who the key speaks as
    signing-key.pem    the private key, PKCS#8 PEM, mode 0600
    public-key.pem     the public key, SubjectPublicKeyInfo PEM (what a resolver is given)
    certificate.jws    the HS_CERT JWS about ``reference`` (self-signed for a root)
    publish.json       the values to publish, Handle REST JSON: {"handle": ..., "values": [...]}
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tiangong.identity.errors import CodecError, HandleSyntaxError, ResolutionError, TrustError
from tiangong.identity.handle.json_format import value_from_json, value_to_json
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.handle.values import (
    DEFAULT_PERMISSIONS,
    HS_CERT,
    HS_PUBKEY,
    HS_SIGNATURE,
    HandleRecord,
    HandleValue,
    ValueReference,
    handle_key,
    prefix_handle,
    validate_handle,
)
from tiangong.identity.keys import (
    PrivateKeyObject,
    PublicKeyObject,
    encode_public_key,
    generate_rsa_key,
    generate_sm2_key,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_from_jwk,
    public_key_of,
    same_public_key,
)
from tiangong.identity.resolver import Resolver
from tiangong.identity.sm2 import Sm2Error, Sm2PublicKey
from tiangong.identity.trust import (
    DEFAULT_CERT_INDEX,
    PERM_DERIVED_PREFIXES,
    PERM_EVERYTHING,
    PERM_HANDLES_UNDER_THIS_PREFIX,
    PERM_THIS_HANDLE,
    Certificate,
    CertPermission,
    Timestamp,
    Verification,
    issue_certificate,
    parse_certificate,
    parse_signature,
    self_signed_root,
    sign_values,
    value_digest,
    verify_record,
)

__all__ = [
    "DAY",
    "DEFAULT_CERTIFICATE_VALIDITY",
    "DEFAULT_ROOT_VALIDITY",
    "DEFAULT_SIGNATURE_VALIDITY",
    "SIGNATURE_INDEX",
    "SIGNER_KEY_INDEX",
    "RecordSigner",
    "TrustFiles",
    "TrustFilesError",
    "TrustMaterial",
    "certificate_from_text",
    "create_node_key",
    "create_trust_root",
    "install_certificate",
    "issue_node_certificate",
    "public_key_to_pem",
    "read_public_key_file",
    "signature_index",
    "verify_resolved",
]

DAY = 86_400
DEFAULT_SIGNATURE_VALIDITY = 30 * DAY
DEFAULT_CERTIFICATE_VALIDITY = 365 * DAY
DEFAULT_ROOT_VALIDITY = 10 * 365 * DAY
SIGNATURE_INDEX = 400
"""Where a record's HS_SIGNATURE goes (the next free index above it if 400 is taken)."""
SIGNER_KEY_INDEX = 300
"""The index of a signer's identity: ``300:0.NA/<prefix>``, ``300:88/0.0`` for a root."""

METADATA_FILE = "trust.json"
PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "public-key.pem"
CERTIFICATE_FILE = "certificate.jws"
PUBLISH_FILE = "publish.json"

Algorithm = str
"""``"sm2"`` (SM2 with SM3, what IDIS uses) or ``"rsa"`` (RSA-2048, RS256)."""


class TrustFilesError(TrustError):
    """A trust directory or key file is missing, incomplete or does not fit together."""


# ------------------------------------------------------------------ signing


def signature_index(values: Sequence[HandleValue]) -> int:
    """Where the HS_SIGNATURE of a record with ``values`` belongs.

    An existing HS_SIGNATURE keeps its index; otherwise 400, or the lowest free index above it
    when 400 holds another value (the HS_CERT of a prefix handle, say).
    """
    for value in sorted(values, key=lambda v: v.index):
        if value.type_matches(HS_SIGNATURE):
            return value.index
    used = {v.index for v in values}
    index = SIGNATURE_INDEX
    while index in used:
        index += 1
    return index


class RecordSigner:
    """Signs records as ``signer`` (the identity its certificate is about) with ``key``.

    ``chain`` names the certificates to follow when they are not at index 400 of each issuer's
    handle. ``validity`` is how long a signature is valid (seconds): records must be re-signed
    before then (``needs_signature`` says when).
    """

    def __init__(
        self,
        signer: ValueReference,
        key: PrivateKeyObject,
        *,
        chain: tuple[ValueReference, ...] = (),
        validity: float = DEFAULT_SIGNATURE_VALIDITY,
    ) -> None:
        if validity <= 0:
            raise ValueError("a signature's validity must be positive (seconds)")
        self.signer = signer
        self.key = key
        self.chain = chain
        self.validity = validity

    def __repr__(self) -> str:
        return f"RecordSigner({self.signer}, validity={self.validity:g}s)"

    def sign(
        self, handle: str, values: Sequence[HandleValue], *, now: Timestamp | None = None
    ) -> HandleValue:
        """The HS_SIGNATURE value over ``values`` of ``handle`` (synchronously; see below)."""
        at = _now(now)
        jws = sign_values(
            values,
            handle=handle,
            signer=self.signer,
            key=self.key,
            expires=at + int(self.validity),
            now=at,
            chain=self.chain,
        )
        return HandleValue(
            index=signature_index(values),
            type=HS_SIGNATURE,
            data=jws.encode("ascii"),
            timestamp=at,
            permissions=DEFAULT_PERMISSIONS,  # public read: every resolver must see it
        )

    async def signature_for(
        self, handle: str, values: Sequence[HandleValue], *, now: Timestamp | None = None
    ) -> HandleValue:
        """The HS_SIGNATURE value over ``values`` (the record's values as stored, all of them).

        HS_SIGNATURE and HS_CERT values among ``values`` are not signed. The signature runs in
        a worker thread: SM2 in pure Python takes milliseconds, too long for the event loop.
        """
        return await asyncio.to_thread(self.sign, handle, tuple(values), now=now)

    def needs_signature(
        self, handle: str, values: Sequence[HandleValue], *, now: Timestamp | None = None
    ) -> bool:
        """Whether the record's HS_SIGNATURE is missing, not ours, stale or past half its life.

        A periodic task calls this on every record to re-sign before signatures expire.
        """
        at = _now(now)
        current = [v for v in values if v.type_matches(HS_SIGNATURE)]
        if len(current) != 1:
            return True
        try:
            signature = parse_signature(current[0].data.decode("utf-8"))
            digests = {
                v.index: value_digest(v, signature.digest_algorithm)
                for v in values
                if not (v.type_matches(HS_SIGNATURE) or v.type_matches(HS_CERT))
            }
        except (TrustError, UnicodeDecodeError):
            return True
        if (
            signature.issuer.index != self.signer.index
            or handle_key(signature.issuer.handle) != handle_key(self.signer.handle)
            or handle_key(signature.handle) != handle_key(handle)
        ):
            return True
        if signature.expires is None or signature.expires - at < self.validity / 2:
            return True
        return digests != signature.digests


# ------------------------------------------------------------------ certificates


def issue_node_certificate(
    issuer_key: PrivateKeyObject,
    issuer: ValueReference,
    node_prefix: str,
    node_public_key: bytes,
    *,
    validity: float = DEFAULT_CERTIFICATE_VALIDITY,
    derived_prefixes: bool = False,
    serial: str | int | None = None,
    now: Timestamp | None = None,
    not_before: Timestamp | None = None,
    expires: Timestamp | None = None,
    chain: Sequence[ValueReference] = (),
) -> HandleValue:
    """The HS_CERT value (index 400 of ``0.NA/<node_prefix>``) for a node's signing key.

    The subject is ``300:0.NA/<node_prefix>``; ``node_public_key`` is its HS_PUBKEY data (see
    ``read_public_key_file``). It may sign the prefix handle and every handle under the prefix;
    with ``derived_prefixes`` (a secondary node) also the records under prefixes derived from it,
    so that it can issue certificates to the enterprise nodes below. ``expires`` overrides
    ``validity``.
    """
    at = _now(now)
    subject_handle = prefix_handle(node_prefix)
    try:
        validate_handle(subject_handle)
    except HandleSyntaxError as exc:
        raise ValueError(f"{node_prefix!r} is not a prefix: {exc}") from exc
    subject = ValueReference(subject_handle, SIGNER_KEY_INDEX)
    perms = [
        CertPermission(PERM_THIS_HANDLE, subject_handle),
        CertPermission(PERM_HANDLES_UNDER_THIS_PREFIX, subject_handle),
    ]
    if derived_prefixes:
        perms.append(CertPermission(PERM_DERIVED_PREFIXES, subject_handle))
    try:
        load_public_key(node_public_key)
    except CodecError as exc:
        raise ValueError(f"the node's public key cannot sign: {exc}") from exc
    jws = issue_certificate(
        issuer,
        issuer_key,
        subject,
        node_public_key,
        perms=perms,
        not_before=not_before if not_before is not None else at - 300,  # allow clock skew
        expires=expires if expires is not None else at + int(validity),
        serial=serial if serial is not None else secrets.token_hex(8),
        now=at,
        chain=chain,
    )
    return HandleValue(
        index=DEFAULT_CERT_INDEX, type=HS_CERT, data=jws.encode("ascii"), timestamp=at
    )


def certificate_from_text(text: str) -> str:
    """The JWS of a certificate given as a JWS, an HS_CERT value's REST JSON, or a record's.

    ``tiangong id trust issue`` writes the value JSON; a raw JWS is accepted too.
    """
    text = text.strip()
    if not text.startswith("{"):
        parse_certificate(text)
        return text
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise TrustFilesError(f"not a JWS and not JSON: {exc}") from exc
    candidates = obj.get("values", [obj]) if isinstance(obj, dict) else obj
    if not isinstance(candidates, list):
        raise TrustFilesError("expected an HS_CERT value or a list of values")
    for item in candidates:
        if not isinstance(item, dict) or str(item.get("type", "")).upper() != HS_CERT:
            continue
        try:
            value = value_from_json(item, now=0)
        except CodecError as exc:
            raise TrustFilesError(f"unreadable HS_CERT value: {exc}") from exc
        jws = value.data.decode("utf-8", errors="replace")
        parse_certificate(jws)
        return jws
    raise TrustFilesError("no HS_CERT value in the JSON")


# ------------------------------------------------------------------ trust directories


@dataclass(frozen=True, slots=True)
class TrustFiles:
    """Where the files of a trust directory are."""

    directory: Path

    @property
    def metadata(self) -> Path:
        """``trust.json``: the identity the key speaks as."""
        return self.directory / METADATA_FILE

    @property
    def private_key(self) -> Path:
        """``signing-key.pem`` (mode 0600)."""
        return self.directory / PRIVATE_KEY_FILE

    @property
    def public_key(self) -> Path:
        """``public-key.pem``: give it to the issuer, or (for a root) to every resolver."""
        return self.directory / PUBLIC_KEY_FILE

    @property
    def certificate(self) -> Path:
        """``certificate.jws``: the HS_CERT about this identity."""
        return self.directory / CERTIFICATE_FILE

    @property
    def publish(self) -> Path:
        """``publish.json``: the handle and values to publish, Handle REST JSON."""
        return self.directory / PUBLISH_FILE


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    """A signing identity: who it is, its private key, and its certificate (once issued)."""

    reference: ValueReference
    key: PrivateKeyObject
    certificate: str | None = None  # the HS_CERT JWS about ``reference``
    chain: tuple[ValueReference, ...] = ()

    @property
    def public_key_data(self) -> bytes:
        """HS_PUBKEY data of the key."""
        return encode_public_key(public_key_of(self.key))

    @property
    def is_root(self) -> bool:
        """Whether the certificate is self-issued (a trust root)."""
        return self.certificate is not None and self.parsed_certificate().self_issued

    @property
    def certificate_location(self) -> ValueReference:
        """Where the certificate is published: index 400 of the identity's handle."""
        return ValueReference(self.reference.handle, DEFAULT_CERT_INDEX)

    def parsed_certificate(self) -> Certificate:
        """The certificate's claims; ``TrustFilesError`` if there is none yet."""
        if self.certificate is None:
            raise TrustFilesError(
                f"no certificate for {self.reference} yet: have it issued"
                " (`tiangong id trust issue`) and install it (`tiangong id trust install`)"
            )
        return parse_certificate(self.certificate)

    def certificate_value(self) -> HandleValue:
        """The HS_CERT value to publish at ``certificate_location``."""
        self.parsed_certificate()
        assert self.certificate is not None
        return HandleValue(
            DEFAULT_CERT_INDEX, HS_CERT, self.certificate.encode("ascii"), timestamp=_now(None)
        )

    def public_key_value(self) -> HandleValue:
        """The HS_PUBKEY value at the identity's index (published for a trust root)."""
        return HandleValue(
            self.reference.index, HS_PUBKEY, self.public_key_data, timestamp=_now(None)
        )

    def publications(self) -> tuple[str, list[HandleValue]]:
        """The handle and values to publish: a root's HS_PUBKEY and HS_CERT; a node's HS_CERT."""
        values = [self.certificate_value()]
        if self.is_root:
            values.insert(0, self.public_key_value())
        return self.reference.handle, values

    def signer(self, *, validity: float = DEFAULT_SIGNATURE_VALIDITY) -> RecordSigner:
        """A ``RecordSigner`` for this identity (it needs the certificate installed)."""
        certificate = self.parsed_certificate()
        if not same_public_key(certificate.public_key, self.public_key_data):
            raise TrustFilesError(
                f"the certificate of {self.reference} is for another key: install the one"
                " issued for this directory's public-key.pem"
            )
        return RecordSigner(self.reference, self.key, chain=self.chain, validity=validity)

    def issue(
        self,
        node_prefix: str,
        node_public_key: bytes,
        *,
        validity: float = DEFAULT_CERTIFICATE_VALIDITY,
        derived_prefixes: bool = False,
        now: Timestamp | None = None,
    ) -> HandleValue:
        """Issue a node certificate as this identity (see ``issue_node_certificate``).

        The certificate does not outlive this identity's own.
        """
        own = self.parsed_certificate()
        at = _now(now)
        expires = at + int(validity)
        if own.expires is not None:
            expires = min(expires, own.expires)
        if expires <= at:
            raise TrustFilesError(f"the certificate of {self.reference} has expired: renew it")
        return issue_node_certificate(
            self.key,
            self.reference,
            node_prefix,
            node_public_key,
            derived_prefixes=derived_prefixes,
            now=at,
            expires=expires,
        )

    def save(self, directory: Path) -> TrustFiles:
        """Write the trust directory (the private key with mode 0600)."""
        files = TrustFiles(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _write_private(files.private_key, private_key_to_pem(self.key))
        files.public_key.write_bytes(public_key_to_pem(public_key_of(self.key)))
        metadata: dict[str, object] = {"reference": str(self.reference)}
        if self.chain:
            metadata["chain"] = [str(ref) for ref in self.chain]
        if self.certificate is not None:
            files.certificate.write_text(self.certificate + "\n", encoding="ascii")
            metadata["root"] = self.is_root
            handle, values = self.publications()
            publish = {"handle": handle, "values": [value_to_json(v) for v in values]}
            files.publish.write_text(json.dumps(publish, indent=2) + "\n", encoding="utf-8")
        files.metadata.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        return files

    @classmethod
    def load(cls, directory: Path) -> TrustMaterial:
        """Read a trust directory written by ``save``; ``TrustFilesError`` says what is wrong."""
        files = TrustFiles(directory)
        if not files.metadata.is_file():
            raise TrustFilesError(
                f"{directory} is not a trust directory (no {METADATA_FILE}): create one with"
                " `tiangong id trust init-root` or `tiangong id trust keygen`"
            )
        try:
            metadata = json.loads(files.metadata.read_text(encoding="utf-8"))
            reference = ValueReference.parse(str(metadata["reference"]))
            chain = tuple(ValueReference.parse(str(r)) for r in metadata.get("chain", []))
        except (ValueError, KeyError, TypeError, AttributeError, HandleSyntaxError) as exc:
            raise TrustFilesError(f"{files.metadata} is unreadable: {exc}") from exc
        try:
            key = load_private_key(files.private_key.read_bytes())
        except FileNotFoundError as exc:
            raise TrustFilesError(f"{files.private_key} is missing") from exc
        except ValueError as exc:
            raise TrustFilesError(f"{files.private_key}: {exc}") from exc
        certificate = None
        if files.certificate.is_file():
            certificate = files.certificate.read_text(encoding="ascii").strip()
            parse_certificate(certificate)
        return cls(reference, key, certificate, chain)


def create_trust_root(
    handle: str,
    directory: Path,
    *,
    algorithm: Algorithm = "sm2",
    validity: float = DEFAULT_ROOT_VALIDITY,
    now: Timestamp | None = None,
) -> TrustFiles:
    """Create a trust root for ``handle`` (e.g. ``88/0.0``): key pair and self-signed HS_CERT.

    The root identity is ``300:<handle>``; publish ``publish.json`` (HS_PUBKEY at 300, HS_CERT
    at 400) at ``handle`` on the node homed for its prefix, and give ``public-key.pem`` to the
    resolvers. Refuses a directory that already holds a trust identity.
    """
    handle = _checked_handle(handle)
    _refuse_existing(directory)
    key = _generate(algorithm)
    at = _now(now)
    reference = ValueReference(handle, SIGNER_KEY_INDEX)
    certificate = self_signed_root(
        reference,
        key,
        not_before=at - 300,
        expires=at + int(validity),
        serial=secrets.token_hex(8),
        perms=(PERM_EVERYTHING,),
        now=at,
    )
    return TrustMaterial(reference, key, certificate).save(directory)


def create_node_key(
    node_prefix: str, directory: Path, *, algorithm: Algorithm = "sm2"
) -> TrustFiles:
    """Create the signing key of the node homed for ``node_prefix`` (no certificate yet).

    Send ``public-key.pem`` to the issuer; install what comes back with ``install_certificate``.
    """
    handle = _checked_handle(prefix_handle(node_prefix))
    _refuse_existing(directory)
    material = TrustMaterial(ValueReference(handle, SIGNER_KEY_INDEX), _generate(algorithm))
    return material.save(directory)


def install_certificate(
    directory: Path, certificate_text: str, *, now: Timestamp | None = None
) -> TrustMaterial:
    """Check an issued certificate against the directory's identity and key, and keep it."""
    material = TrustMaterial.load(directory)
    jws = certificate_from_text(certificate_text)
    certificate = parse_certificate(jws)
    if certificate.subject != material.reference:
        raise TrustFilesError(
            f"the certificate is about {certificate.subject}, but this directory is"
            f" {material.reference}"
        )
    if not same_public_key(certificate.public_key, material.public_key_data):
        raise TrustFilesError(
            "the certificate is for another key than this directory's public-key.pem:"
            " send that file to the issuer again"
        )
    at = _now(now)
    if certificate.expires is not None and certificate.expires < at:
        raise TrustFilesError(f"the certificate expired at {certificate.expires}: renew it")
    installed = TrustMaterial(material.reference, material.key, jws, material.chain)
    installed.save(directory)
    return installed


# ------------------------------------------------------------------ public key files


def public_key_to_pem(key: PublicKeyObject) -> bytes:
    """SubjectPublicKeyInfo PEM of an RSA or SM2 public key."""
    if isinstance(key, Sm2PublicKey):
        return key.to_pem().encode("ascii")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def read_public_key_file(path: Path) -> bytes:
    """HS_PUBKEY data from a public key file: PEM (RSA or SM2), a JWK, or HS_PUBKEY bytes.

    Raises ``TrustFilesError`` naming the file when it is none of these.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrustFilesError(f"cannot read the public key file {path}: {exc}") from exc
    text = raw.strip()
    try:
        if text.startswith(b"-----BEGIN PUBLIC KEY-----"):
            try:
                return encode_public_key(Sm2PublicKey.from_pem(text))
            except Sm2Error:
                pem_key = serialization.load_pem_public_key(text)
                if not isinstance(pem_key, rsa.RSAPublicKey):
                    raise TrustFilesError(
                        f"{type(pem_key).__name__} keys cannot sign records (RSA or SM2 only)"
                    ) from None
                return encode_public_key(pem_key)
        if text.startswith(b"{"):
            jwk = json.loads(text)
            if isinstance(jwk, dict) and "data" in jwk:  # a Handle REST HS_PUBKEY value
                return value_from_json(jwk, now=0).data
            return public_key_from_jwk(jwk)
        load_public_key(raw)  # binary HS_PUBKEY data, as stored in a handle
    except (ValueError, TypeError, CodecError, UnsupportedAlgorithm, TrustError) as exc:
        raise TrustFilesError(
            f"{path} is not a public key (expected PEM, a JWK or HS_PUBKEY data): {exc}"
        ) from exc
    return raw


# ------------------------------------------------------------------ verification


async def verify_resolved(
    resolver: Resolver,
    record: HandleRecord,
    *,
    trust_root: ValueReference,
    trust_root_key_data: bytes,
    now: Timestamp | None = None,
) -> Verification:
    """Check ``record``'s signature, fetching the certificate chain through ``resolver``.

    ``trust_root`` is the configured root identity (``300:88/0.0``) and ``trust_root_key_data``
    its HS_PUBKEY data (``read_public_key_file``). Never raises for what the network returns: a
    certificate that cannot be fetched makes the result invalid with the reason.
    """

    async def fetch(ref: ValueReference) -> HandleValue | None:
        try:
            found = await resolver.resolve(ref.handle, indexes=(ref.index,))
        except ResolutionError as exc:
            if exc.response_code in (ResponseCode.HANDLE_NOT_FOUND, ResponseCode.VALUES_NOT_FOUND):
                return None
            raise
        return found.value(ref.index)

    try:
        return await verify_record(
            record,
            fetch=fetch,
            trust_root=trust_root,
            trust_root_public_key_data=trust_root_key_data,
            now=_now(now),
        )
    except ResolutionError as exc:
        signed = any(v.type_matches(HS_SIGNATURE) for v in record.values)
        return Verification(
            signed=signed, valid=False, reason=f"a certificate could not be fetched: {exc}"
        )


# ------------------------------------------------------------------ helpers


def _now(now: Timestamp | None) -> int:
    if now is None:
        return int(time.time())
    if isinstance(now, int):
        return now
    if now.tzinfo is None:
        raise ValueError("a naive datetime is ambiguous; give a timezone")
    return int(now.timestamp())


def _generate(algorithm: Algorithm) -> PrivateKeyObject:
    if algorithm.lower() == "sm2":
        return generate_sm2_key()
    if algorithm.lower() == "rsa":
        return generate_rsa_key()
    raise ValueError(f"unknown key algorithm {algorithm!r} (sm2 or rsa)")


def _checked_handle(handle: str) -> str:
    try:
        return validate_handle(handle)
    except HandleSyntaxError as exc:
        raise ValueError(str(exc)) from exc


def _refuse_existing(directory: Path) -> None:
    if (directory / METADATA_FILE).exists() or (directory / PRIVATE_KEY_FILE).exists():
        raise TrustFilesError(
            f"{directory} already holds a signing identity; choose another directory"
            " (never overwrite a key that certificates were issued for)"
        )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the mode of os.open only applies when the file is new
        os.write(fd, data)
    finally:
        os.close(fd)

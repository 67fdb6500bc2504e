"""The per-tenant device certificate authority.

Every tenant has its own CA, so a device certificate from one tenant can never authenticate
against another tenant's broker listener, and a tenant's CA can be rotated or revoked alone.

Theory of operation
-------------------
A CA lives in one directory::

    ca-key.pem     the CA private key (PKCS #8 PEM, mode 0600, optionally passphrase-encrypted)
    ca.pem         the self-signed CA certificate (CN=Tiangong device CA <tenant>, O=<tenant>)
    ca.sqlite3     issued certificates, revocations and enrolment tokens

*Enrolment.* An operator creates a one-time token for a device id; only its SHA-256 digest is
stored (a 256-bit random token needs no slow hash). The device generates its own key pair and
presents the token with a CSR; the CA checks the token (known, unused, unexpired), the CSR's
signature and its CN, and issues a client certificate: CN=<device>, O=<tenant>, SAN URI
``urn:tiangong:<tenant>:<device>``, EKU clientAuth, a random 128-bit serial. Everything else
the CSR asks for is ignored: the CA, not the device, decides what a certificate says.

*Rotation.* A device whose certificate is within the renewal window of its expiry presents it
(the certificate of its authenticated TLS session) with a new CSR and gets a new certificate.
The old one stays valid until it expires, so a device can switch over without a gap.

*Revocation.* Revoking writes to the database; :meth:`TenantCA.verify_client`,
:meth:`TenantCA.is_revoked`, :meth:`TenantCA.revoked_serials` and :meth:`TenantCA.crl_pem`
all read it on every call, so a revocation takes effect for every process sharing the
directory as soon as the transaction commits. CRLs are signed on demand with a short
``nextUpdate`` (one hour by default), so a relying party that caches one is never far behind.

All database writes run in ``BEGIN IMMEDIATE`` transactions, so two processes cannot spend
the same token twice. The methods block (SQLite, signing): call them from a thread in async
code.

Exceptions::

    SecurityError                       (tiangong.security.errors)
    ├── CertificateAuthorityError       the CA directory is missing, incomplete or unsafe
    ├── EnrolmentError                  a token, CSR or rotation request is refused (.reason)
    └── CertificateRejected             a presented client certificate is refused (.reason)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Self, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tiangong.network.access.topics import is_valid_name
from tiangong.security.credentials import hash_token, write_secret_file
from tiangong.security.errors import SecurityError

__all__ = [
    "CA_CERT_FILE",
    "CA_DB_FILE",
    "CA_KEY_FILE",
    "CAKeyType",
    "CertificateAuthorityError",
    "CertificateRecord",
    "CertificateRejected",
    "DevicePublicKey",
    "EnrolmentError",
    "EnrolmentFailure",
    "IssuedCertificate",
    "RejectionReason",
    "TenantCA",
    "VerifiedDevice",
    "device_uri",
    "generate_device_key_and_csr",
    "sign_rotation_request",
    "verify_rotation_request",
]

CA_KEY_FILE: Final = "ca-key.pem"
CA_CERT_FILE: Final = "ca.pem"
CA_DB_FILE: Final = "ca.sqlite3"

#: Key algorithms a tenant CA can be created with.
CAKeyType: TypeAlias = Literal["ec-p256", "ec-p384", "rsa-3072"]
#: Public keys a device certificate may carry: what TLS client authentication and RFC 5280
#: path validators (OpenSSL, cryptography's verifier) accept everywhere.
DevicePublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_CAPrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_ENROLMENT_TOKEN_PREFIX: Final = "tge_"  # noqa: S105 - marks the token kind, not a secret
_ALLOWED_CURVES: Final = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_MIN_RSA_BITS: Final = 2048
#: Devices' clocks drift (and some boot at the epoch until NTP syncs); backdating notBefore
#: keeps a freshly issued certificate from being "not yet valid" on a slightly slow peer.
_BACKDATE: Final = dt.timedelta(minutes=5)
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"  # fixed width, so text order is time order in SQL

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    serial      TEXT PRIMARY KEY,   -- hex: 128-bit serials do not fit SQLite's INTEGER
    device_id   TEXT NOT NULL,
    not_before  TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,   -- hex SHA-256 of the DER certificate
    revoked_at  TEXT,
    reason      TEXT,
    pem         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_by_device ON certificates (device_id);
CREATE TABLE IF NOT EXISTS enrolment_tokens (
    token_hash TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    serial     TEXT
);
"""


class CertificateAuthorityError(SecurityError):
    """The CA directory is missing, incomplete, already in use or unsafe (key file mode)."""


class EnrolmentFailure(enum.Enum):
    """Why an enrolment or rotation request was refused."""

    # Reason codes, not secrets (S105 matches the word "token").
    TOKEN_UNKNOWN = "token unknown"  # noqa: S105
    TOKEN_USED = "token already used"  # noqa: S105
    TOKEN_EXPIRED = "token expired"  # noqa: S105
    CSR_MALFORMED = "CSR is not a PEM certificate signing request"
    CSR_SIGNATURE_INVALID = "CSR signature does not verify"
    CN_MISMATCH = "CSR common name is not the enrolled device id"
    KEY_UNSUPPORTED = "public key type or size is not accepted"
    DEVICE_MISMATCH = "presented certificate belongs to another device"
    TOO_EARLY = "certificate is not yet within its renewal window"


class EnrolmentError(SecurityError):
    """An enrolment or rotation request was refused.

    Attributes:
        reason: Why, as a fixed code (the message adds detail).
        device_id: The device the request was for, when known.
    """

    def __init__(
        self, reason: EnrolmentFailure, detail: str = "", *, device_id: str | None = None
    ) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.device_id = device_id


class RejectionReason(enum.Enum):
    """Why a presented client certificate was refused."""

    MALFORMED = "not a PEM X.509 certificate"
    UNTRUSTED = "not issued by this CA"
    UNKNOWN = "signed by this CA but not in its register"
    NOT_YET_VALID = "not yet valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NOT_CLIENT_CERTIFICATE = "not a TLS client certificate"
    POLICY = "fails RFC 5280 path validation"


# The name is the one the security issue uses and reads as the event at the raise site.
class CertificateRejected(SecurityError):  # noqa: N818
    """A presented client certificate was refused.

    Attributes:
        reason: Why, as a fixed code (the message adds detail).
        serial: The certificate's serial number, when it could be read.
        device_id: The device named by the certificate, when it could be read.
    """

    def __init__(
        self,
        reason: RejectionReason,
        detail: str = "",
        *,
        serial: int | None = None,
        device_id: str | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.serial = serial
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate the CA has just issued.

    Attributes:
        device_id: The device it identifies (its CN).
        serial: Its serial number.
        not_before: Start of validity (UTC).
        not_after: End of validity (UTC).
        fingerprint: Hex SHA-256 of its DER encoding.
        certificate_pem: The certificate, PEM.
        ca_certificate_pem: The issuing CA's certificate, PEM (the device's trust anchor).
    """

    device_id: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    certificate_pem: bytes
    ca_certificate_pem: bytes


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """One row of the CA's register of issued certificates.

    Attributes:
        serial: Serial number.
        device_id: The device it identifies.
        not_before: Start of validity (UTC).
        not_after: End of validity (UTC).
        fingerprint: Hex SHA-256 of its DER encoding.
        revoked_at: When it was revoked (UTC), or ``None``.
        reason: The revocation reason, or ``None``.
    """

    serial: int
    device_id: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    revoked_at: dt.datetime | None
    reason: x509.ReasonFlags | None


@dataclass(frozen=True, slots=True)
class VerifiedDevice:
    """The identity proven by a client certificate that passed :meth:`TenantCA.verify_client`.

    Attributes:
        tenant_id: The CA's tenant.
        device_id: The device (the certificate's CN).
        serial: The certificate's serial number.
        not_after: When the certificate expires (UTC).
        fingerprint: Hex SHA-256 of its DER encoding.
    """

    tenant_id: str
    device_id: str
    serial: int
    not_after: dt.datetime
    fingerprint: str


def device_uri(tenant_id: str, device_id: str) -> str:
    """The SAN URI that names a device in its certificate: ``urn:tiangong:<tenant>:<device>``."""
    return f"urn:tiangong:{tenant_id}:{device_id}"


def generate_device_key_and_csr(device_id: str) -> tuple[bytes, bytes]:
    """A new EC P-256 key and a CSR with CN=``device_id``, both PEM (for simulators and tests).

    Returns:
        ``(key_pem, csr_pem)``; the key is unencrypted PKCS #8.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


_ROTATION_CONTEXT: Final = b"tiangong certificate rotation v1\x00"


def _rotation_message(csr_pem: bytes) -> bytes:
    # A context prefix, so a signature made for rotation can never pass for anything else
    # the device key signs (TLS handshakes sign their own, differently framed, transcripts).
    return _ROTATION_CONTEXT + x509.load_pem_x509_csr(csr_pem).public_bytes(
        serialization.Encoding.DER
    )


def sign_rotation_request(current_key_pem: bytes, csr_pem: bytes) -> bytes:
    """Sign a rotation CSR with the device's *current* key (proof of possession).

    The new CSR is signed by its own new key (proving that one); this signature by the key of
    the certificate being replaced proves the request comes from the holder of the current
    identity. Both together are what ``POST /api/v1/certificates/rotate`` checks.

    Raises:
        ValueError: The key or the CSR cannot be read, or the key type is not EC or RSA.
    """
    key = serialization.load_pem_private_key(current_key_pem, None)
    message = _rotation_message(csr_pem)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding  # noqa: PLC0415

        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    raise ValueError(f"unsupported device key type {type(key).__name__}")


def verify_rotation_request(current_cert_pem: bytes, csr_pem: bytes, signature: bytes) -> None:
    """Check :func:`sign_rotation_request`'s signature against the current certificate's key.

    Raises:
        EnrolmentError: ``CSR_MALFORMED`` for unreadable input, ``CSR_SIGNATURE_INVALID`` when
            the signature does not verify.
    """
    try:
        cert = x509.load_pem_x509_certificate(current_cert_pem)
        message = _rotation_message(csr_pem)
    except ValueError as exc:
        raise EnrolmentError(EnrolmentFailure.CSR_MALFORMED, str(exc)) from exc
    public_key = cert.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            from cryptography.hazmat.primitives.asymmetric import padding  # noqa: PLC0415

            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise EnrolmentError(EnrolmentFailure.KEY_UNSUPPORTED, type(public_key).__name__)
    except InvalidSignature as exc:
        raise EnrolmentError(
            EnrolmentFailure.CSR_SIGNATURE_INVALID,
            "the rotation request is not signed by the current certificate's key",
        ) from exc


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _to_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(_TIME_FORMAT)


def _from_text(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=dt.UTC)


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _signature_hash(key: _CAPrivateKey) -> hashes.SHA256 | hashes.SHA384:
    # Match the hash strength to the key, as CA/B Forum and NIST SP 800-57 pair them.
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _new_ca_key(key_type: CAKeyType) -> _CAPrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported CA key type {key_type!r}")


def _random_serial() -> int:
    # 128 random bits as the brief asks; RFC 5280 allows up to 20 octets and positive only.
    while True:
        serial = secrets.randbits(128)
        if serial:
            return serial


def _check_name(kind: str, name: str) -> None:
    if not is_valid_name(name):
        raise ValueError(f"{kind} {name!r} is not a valid platform name")


def _common_name(name: x509.Name) -> str | None:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode()


class TenantCA:
    """A tenant's device certificate authority, kept in one directory.

    Use :meth:`create` for a new CA and :meth:`open` for an existing one; close it (or use it
    as a context manager) to release the database. Methods are thread-safe and block.
    """

    def __init__(
        self,
        directory: Path,
        *,
        tenant_id: str,
        key: _CAPrivateKey,
        certificate: x509.Certificate,
        db: sqlite3.Connection,
        device_validity: dt.timedelta,
        renewal_window: dt.timedelta,
        crl_validity: dt.timedelta,
        clock: Callable[[], dt.datetime],
    ) -> None:
        """Use :meth:`create` or :meth:`open`; this only assembles loaded parts."""
        if device_validity <= dt.timedelta(0) or crl_validity <= dt.timedelta(0):
            raise ValueError("device_validity and crl_validity must be positive")
        if renewal_window < dt.timedelta(0):
            raise ValueError("renewal_window must not be negative")
        self.directory = directory
        self.tenant_id = tenant_id
        self._key = key
        self._certificate = certificate
        self._db = db
        self._lock = threading.Lock()
        self.device_validity = device_validity
        self.renewal_window = renewal_window
        self.crl_validity = crl_validity
        self._clock = clock
        self._store = Store([certificate])
        self._ca_ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path | str,
        tenant_id: str,
        *,
        key_type: CAKeyType = "ec-p256",
        validity_days: int = 3650,
        passphrase: bytes | None = None,
        device_validity: dt.timedelta = dt.timedelta(days=365),
        renewal_window: dt.timedelta = dt.timedelta(days=30),
        crl_validity: dt.timedelta = dt.timedelta(hours=1),
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> Self:
        """Create a new CA for ``tenant_id`` in ``directory`` (created if missing).

        Args:
            directory: Where the CA lives; must not already hold a CA.
            tenant_id: The tenant, a valid platform name.
            key_type: The CA key algorithm.
            validity_days: Lifetime of the CA certificate.
            passphrase: Encrypts the key file when given; ``None`` leaves it protected by its
                0600 mode only.
            device_validity: Lifetime of issued device certificates (capped at the CA's).
            renewal_window: How long before expiry a device may rotate its certificate.
            crl_validity: How far ahead a CRL's ``nextUpdate`` lies.
            clock: The current time (aware); tests pass a controllable one.

        Raises:
            CertificateAuthorityError: ``directory`` already holds a CA.
            ValueError: A bad tenant id, key type or duration.
        """
        _check_name("tenant id", tenant_id)
        if validity_days <= 0:
            raise ValueError("validity_days must be positive")
        directory = Path(directory)
        existing = [n for n in (CA_KEY_FILE, CA_CERT_FILE, CA_DB_FILE) if (directory / n).exists()]
        if existing:
            raise CertificateAuthorityError(f"{directory} already holds CA files {existing}")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

        key = _new_ca_key(key_type)
        now = clock()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"Tiangong device CA {tenant_id}"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, tenant_id),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=validity_days))
            # pathlen 0: this CA signs devices only, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, _signature_hash(key))
        )

        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        write_secret_file(directory / CA_KEY_FILE, key_pem.decode("ascii"))
        (directory / CA_CERT_FILE).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        db = cls._connect(directory / CA_DB_FILE)
        with db:
            db.execute("INSERT INTO meta (key, value) VALUES ('tenant_id', ?)", (tenant_id,))
            db.execute("INSERT INTO meta (key, value) VALUES ('crl_number', '0')")
        return cls(
            directory,
            tenant_id=tenant_id,
            key=key,
            certificate=certificate,
            db=db,
            device_validity=device_validity,
            renewal_window=renewal_window,
            crl_validity=crl_validity,
            clock=clock,
        )

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        passphrase: bytes | None = None,
        device_validity: dt.timedelta = dt.timedelta(days=365),
        renewal_window: dt.timedelta = dt.timedelta(days=30),
        crl_validity: dt.timedelta = dt.timedelta(hours=1),
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> Self:
        """Open the CA kept in ``directory``; the options are those of :meth:`create`.

        Raises:
            CertificateAuthorityError: Files are missing, the key is readable by others than
                its owner, or the key does not match the certificate.
        """
        directory = Path(directory)
        missing = [
            n for n in (CA_KEY_FILE, CA_CERT_FILE, CA_DB_FILE) if not (directory / n).is_file()
        ]
        if missing:
            raise CertificateAuthorityError(f"{directory} is not a CA directory: missing {missing}")
        key_path = directory / CA_KEY_FILE
        # Refuse a key others can read, as ssh does: a copied or restored file with a loose
        # mode means the key may already have leaked, and silently using it would hide that.
        if os.name == "posix" and key_path.stat().st_mode & 0o077:
            raise CertificateAuthorityError(f"{key_path} is accessible by group or others")
        try:
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), passphrase)
            certificate = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        except (ValueError, TypeError) as exc:
            raise CertificateAuthorityError(f"cannot load the CA in {directory}: {exc}") from exc
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise CertificateAuthorityError(f"unsupported CA key type {type(loaded).__name__}")
        if loaded.public_key() != certificate.public_key():
            raise CertificateAuthorityError(f"{key_path} does not match {CA_CERT_FILE}")
        db = cls._connect(directory / CA_DB_FILE)
        row = db.execute("SELECT value FROM meta WHERE key = 'tenant_id'").fetchone()
        if row is None:
            db.close()
            raise CertificateAuthorityError(f"{directory / CA_DB_FILE} names no tenant")
        return cls(
            directory,
            tenant_id=str(row[0]),
            key=loaded,
            certificate=certificate,
            db=db,
            device_validity=device_validity,
            renewal_window=renewal_window,
            crl_validity=crl_validity,
            clock=clock,
        )

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE) where a
        # read-check-write must not interleave with another process's.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode = WAL")  # readers (brokers' checks) never block writers
        db.executescript(_SCHEMA)
        return db

    def close(self) -> None:
        """Close the database; the object is unusable afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the CA clock must return timezone-aware datetimes")
        # Certificates and the register hold whole seconds; comparing at the same precision
        # keeps "expired" meaning the same in SQL, in Python and to OpenSSL.
        return now.astimezone(dt.UTC).replace(microsecond=0)

    # -- the CA certificate -------------------------------------------------------------------

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate."""
        return self._certificate

    def certificate_pem(self) -> bytes:
        """The CA certificate, PEM: the trust anchor for brokers and devices."""
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    # -- enrolment ----------------------------------------------------------------------------

    def create_enrolment_token(
        self, device_id: str, *, ttl: dt.timedelta = dt.timedelta(hours=24)
    ) -> str:
        """A new single-use enrolment token for ``device_id``; shown once, stored hashed.

        Raises:
            ValueError: ``device_id`` is not a valid platform name or ``ttl`` is not positive.
        """
        _check_name("device id", device_id)
        if ttl <= dt.timedelta(0):
            raise ValueError("ttl must be positive")
        token = _ENROLMENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO enrolment_tokens (token_hash, device_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (hash_token(token), device_id, _to_text(now), _to_text(now + ttl)),
            )
        return token

    def enrol(self, token: str, csr_pem: bytes) -> IssuedCertificate:
        """Spend ``token`` and issue a client certificate for the CSR's key.

        The CSR's CN must be the device id the token was created for; a CSR without a CN gets
        it. A refused CSR leaves the token unspent, so the device can retry.

        Raises:
            EnrolmentError: The token is unknown, used or expired, or the CSR is malformed,
                badly signed, names another device or carries an unsupported key.
        """
        now = self._now()
        with self._transaction() as db:
            row = db.execute(
                "SELECT device_id, expires_at, used_at FROM enrolment_tokens WHERE token_hash = ?",
                (hash_token(token),),
            ).fetchone()
            if row is None:
                raise EnrolmentError(EnrolmentFailure.TOKEN_UNKNOWN)
            device_id, expires_at, used_at = str(row[0]), str(row[1]), row[2]
            if used_at is not None:
                raise EnrolmentError(
                    EnrolmentFailure.TOKEN_USED, f"at {used_at}", device_id=device_id
                )
            if now >= _from_text(expires_at):
                raise EnrolmentError(
                    EnrolmentFailure.TOKEN_EXPIRED, f"at {expires_at}", device_id=device_id
                )
            public_key = self._check_csr(csr_pem, device_id)
            issued = self._issue(db, device_id, public_key, now)
            db.execute(
                "UPDATE enrolment_tokens SET used_at = ?, serial = ? WHERE token_hash = ?",
                (_to_text(now), format(issued.serial, "x"), hash_token(token)),
            )
        return issued

    def issue_for(self, device_id: str, public_key: DevicePublicKey) -> IssuedCertificate:
        """Issue a certificate for a key an operator vouches for, without a token or CSR.

        Raises:
            ValueError: ``device_id`` is not a valid platform name.
            EnrolmentError: The key type or size is not accepted.
        """
        _check_name("device id", device_id)
        self._check_key(public_key, device_id)
        now = self._now()
        with self._transaction() as db:
            return self._issue(db, device_id, public_key, now)

    def rotate(
        self, device_id: str, csr_pem: bytes, *, presented_cert_pem: bytes
    ) -> IssuedCertificate:
        """Issue a successor to the device's current certificate, within the renewal window.

        ``presented_cert_pem`` must be the certificate of the device's authenticated TLS
        session, which proves possession of its key; the old certificate stays valid until it
        expires unless revoked.

        Raises:
            CertificateRejected: The presented certificate does not verify.
            EnrolmentError: It belongs to another device, is not yet within the renewal
                window, or the CSR is refused.
        """
        verified = self.verify_client(presented_cert_pem)
        if verified.device_id != device_id:
            raise EnrolmentError(
                EnrolmentFailure.DEVICE_MISMATCH,
                f"certificate is for {verified.device_id!r}",
                device_id=device_id,
            )
        now = self._now()
        opens = verified.not_after - self.renewal_window
        if now < opens:
            raise EnrolmentError(
                EnrolmentFailure.TOO_EARLY,
                f"certificate expires {_to_text(verified.not_after)}, renewal opens"
                f" {_to_text(opens)}",
                device_id=device_id,
            )
        public_key = self._check_csr(csr_pem, device_id)
        with self._transaction() as db:
            # Re-read under the write lock: a revocation may have landed since verify_client.
            if self._revoked_at(db, verified.serial) is not None:
                raise CertificateRejected(
                    RejectionReason.REVOKED, serial=verified.serial, device_id=device_id
                )
            return self._issue(db, device_id, public_key, now)

    def _check_csr(self, csr_pem: bytes, device_id: str) -> DevicePublicKey:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise EnrolmentError(
                EnrolmentFailure.CSR_MALFORMED, str(exc), device_id=device_id
            ) from exc
        if not csr.is_signature_valid:
            raise EnrolmentError(EnrolmentFailure.CSR_SIGNATURE_INVALID, device_id=device_id)
        common_name = _common_name(csr.subject)
        if common_name is not None and common_name != device_id:
            raise EnrolmentError(
                EnrolmentFailure.CN_MISMATCH,
                f"CSR names {common_name!r}, token is for {device_id!r}",
                device_id=device_id,
            )
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise EnrolmentError(
                EnrolmentFailure.KEY_UNSUPPORTED, type(public_key).__name__, device_id=device_id
            )
        self._check_key(public_key, device_id)
        return public_key

    @staticmethod
    def _check_key(public_key: DevicePublicKey, device_id: str) -> None:
        if isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < _MIN_RSA_BITS:
                raise EnrolmentError(
                    EnrolmentFailure.KEY_UNSUPPORTED,
                    f"RSA {public_key.key_size} bits",
                    device_id=device_id,
                )
        elif not isinstance(public_key.curve, _ALLOWED_CURVES):
            raise EnrolmentError(
                EnrolmentFailure.KEY_UNSUPPORTED,
                f"curve {public_key.curve.name}",
                device_id=device_id,
            )

    def _issue(
        self,
        db: sqlite3.Connection,
        device_id: str,
        public_key: DevicePublicKey,
        now: dt.datetime,
    ) -> IssuedCertificate:
        # A leaf must not outlive its issuer: validators would reject it after the CA expires.
        not_after = min(now + self.device_validity, self._certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, device_id),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.tenant_id),
                    ]
                )
            )
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(device_uri(self.tenant_id, device_id))]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ca_ski),
                critical=False,
            )
        )
        serial = _random_serial()
        # A collision of 128 random bits is practically impossible, but a duplicate serial
        # would make revocation ambiguous, so it is checked rather than assumed.
        while db.execute(
            "SELECT 1 FROM certificates WHERE serial = ?", (format(serial, "x"),)
        ).fetchone():
            serial = _random_serial()
        certificate = builder.serial_number(serial).sign(self._key, _signature_hash(self._key))
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        fingerprint = _fingerprint(certificate)
        db.execute(
            "INSERT INTO certificates (serial, device_id, not_before, not_after, fingerprint, pem)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                format(serial, "x"),
                device_id,
                _to_text(certificate.not_valid_before_utc),
                _to_text(certificate.not_valid_after_utc),
                fingerprint,
                pem.decode("ascii"),
            ),
        )
        return IssuedCertificate(
            device_id=device_id,
            serial=serial,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            fingerprint=fingerprint,
            certificate_pem=pem,
            ca_certificate_pem=self.certificate_pem(),
        )

    # -- revocation ---------------------------------------------------------------------------

    def revoke(
        self,
        serial_or_device: int | str,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
    ) -> list[int]:
        """Revoke one certificate (by serial) or every unrevoked certificate of a device (by id).

        Revoking an already revoked certificate keeps its first date and reason.

        Returns:
            The serials newly revoked (empty if there were none).

        Raises:
            ValueError: ``reason`` is ``remove_from_crl``, which only delta CRLs may carry.
        """
        if reason is x509.ReasonFlags.remove_from_crl:
            raise ValueError("remove_from_crl is not a revocation reason")
        now = _to_text(self._now())
        column, key = (
            ("serial", format(serial_or_device, "x"))
            if isinstance(serial_or_device, int)
            else ("device_id", serial_or_device)
        )
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT serial FROM certificates WHERE {column} = ? AND revoked_at IS NULL",  # noqa: S608 - column is one of two literals
                (key,),
            ).fetchall()
            db.executemany(
                "UPDATE certificates SET revoked_at = ?, reason = ? WHERE serial = ?",
                [(now, reason.value, row[0]) for row in rows],
            )
        return [int(row[0], 16) for row in rows]

    @staticmethod
    def _revoked_at(db: sqlite3.Connection, serial: int) -> str | None:
        row = db.execute(
            "SELECT revoked_at FROM certificates WHERE serial = ?", (format(serial, "x"),)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def is_revoked(self, serial: int) -> bool:
        """Whether the certificate with ``serial`` is revoked (``False`` for unknown serials)."""
        with self._lock:
            return self._revoked_at(self._db, serial) is not None

    def revoked_serials(self) -> set[int]:
        """Serials of all revoked certificates, for brokers' and ingest's per-connection checks."""
        with self._lock:
            rows = self._db.execute(
                "SELECT serial FROM certificates WHERE revoked_at IS NOT NULL"
            ).fetchall()
        return {int(row[0], 16) for row in rows}

    def crl_pem(self) -> bytes:
        """A freshly signed CRL of every revoked certificate, PEM, valid for ``crl_validity``.

        Each call increments the CRL number (RFC 5280 §5.2.3), so relying parties can tell
        a newer CRL from an older one.
        """
        now = self._now()
        with self._transaction() as db:
            number = int(
                db.execute("SELECT value FROM meta WHERE key = 'crl_number'").fetchone()[0]
            )
            number += 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'crl_number'", (str(number),))
            rows = db.execute(
                "SELECT serial, revoked_at, reason FROM certificates WHERE revoked_at IS NOT NULL"
            ).fetchall()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._certificate.subject)
            .last_update(now)
            .next_update(now + self.crl_validity)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ca_ski),
                critical=False,
            )
        )
        for serial, revoked_at, reason in rows:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(_from_text(revoked_at))
            )
            flag = x509.ReasonFlags(reason)
            # RFC 5280 §5.3.1: omit the reason code rather than write "unspecified".
            if flag is not x509.ReasonFlags.unspecified:
                entry = entry.add_extension(x509.CRLReason(flag), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self._key, _signature_hash(self._key))
        return crl.public_bytes(serialization.Encoding.PEM)

    # -- verification -------------------------------------------------------------------------

    def verify_client(self, cert_pem: bytes) -> VerifiedDevice:
        """Check a presented client certificate and return the device it proves.

        It must be issued by this CA and present in its register, time-valid now, unrevoked,
        carry the clientAuth EKU, and pass cryptography's RFC 5280 client path validation.

        Raises:
            CertificateRejected: With the first reason found.
        """
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise CertificateRejected(RejectionReason.MALFORMED, str(exc)) from exc
        serial = cert.serial_number
        device_id = _common_name(cert.subject)

        def reject(reason: RejectionReason, detail: str = "") -> CertificateRejected:
            return CertificateRejected(reason, detail, serial=serial, device_id=device_id)

        try:
            cert.verify_directly_issued_by(self._certificate)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise reject(RejectionReason.UNTRUSTED, str(exc) or "bad signature") from exc
        now = self._now()
        if now < cert.not_valid_before_utc:
            raise reject(RejectionReason.NOT_YET_VALID, f"from {cert.not_valid_before_utc}")
        if now > cert.not_valid_after_utc:
            raise reject(RejectionReason.EXPIRED, f"at {cert.not_valid_after_utc}")
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            raise reject(RejectionReason.NOT_CLIENT_CERTIFICATE)
        with self._lock:
            row = self._db.execute(
                "SELECT device_id, revoked_at, reason, fingerprint FROM certificates"
                " WHERE serial = ?",
                (format(serial, "x"),),
            ).fetchone()
        fingerprint = _fingerprint(cert)
        # Our signature on a certificate we never recorded means a lost register or a stolen
        # key; either way it must not authenticate anyone.
        if row is None or row[3] != fingerprint or row[0] != device_id:
            raise reject(RejectionReason.UNKNOWN)
        if row[1] is not None:
            raise reject(RejectionReason.REVOKED, f"at {row[1]} ({row[2]})")
        # The checks above give precise reasons; the RFC 5280 validator is the backstop for
        # everything they do not look at (critical extensions, key usage, name chaining).
        verifier = PolicyBuilder().store(self._store).time(now).build_client_verifier()
        try:
            verifier.verify(cert, [])
        except VerificationError as exc:
            raise reject(RejectionReason.POLICY, str(exc)) from exc
        assert device_id is not None  # the register row matched it
        return VerifiedDevice(
            tenant_id=self.tenant_id,
            device_id=device_id,
            serial=serial,
            not_after=cert.not_valid_after_utc,
            fingerprint=fingerprint,
        )

    # -- the register -------------------------------------------------------------------------

    def certificates(self, device_id: str | None = None) -> list[CertificateRecord]:
        """Issued certificates, of one device or all, oldest first."""
        query = (
            "SELECT serial, device_id, not_before, not_after, fingerprint, revoked_at, reason"
            " FROM certificates"
        )
        params: tuple[str, ...] = ()
        if device_id is not None:
            query += " WHERE device_id = ?"
            params = (device_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY not_before, serial", params).fetchall()
        return [
            CertificateRecord(
                serial=int(serial, 16),
                device_id=device,
                not_before=_from_text(not_before),
                not_after=_from_text(not_after),
                fingerprint=fingerprint,
                revoked_at=None if revoked_at is None else _from_text(revoked_at),
                reason=None if reason is None else x509.ReasonFlags(reason),
            )
            for serial, device, not_before, not_after, fingerprint, revoked_at, reason in rows
        ]

    def expiring(self, within: dt.timedelta) -> list[CertificateRecord]:
        """Devices about to lose their identity, soonest first.

        Lists each device's newest unrevoked, unexpired certificate where it expires within
        ``within`` from now; a device that has already rotated is not listed for its old one.
        """
        now = self._now()
        newest: dict[str, CertificateRecord] = {}
        for record in self.certificates():
            if record.revoked_at is not None or record.not_after <= now:
                continue
            current = newest.get(record.device_id)
            if current is None or record.not_after > current.not_after:
                newest[record.device_id] = record
        return sorted(
            (r for r in newest.values() if r.not_after <= now + within),
            key=lambda r: r.not_after,
        )

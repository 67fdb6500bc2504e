"""Canonical encoding, signing and validation of indicator reports.

Encoding: a report is canonical JSON (orjson, keys sorted, numbers always written as floats,
members sorted, default fields omitted), so the same figures always give the same bytes and a
signature over them survives any number of decode/encode round trips. A measure is
``{"n": numerator, "d": denominator, "m": [members]}`` with ``d`` omitted when 0 and ``m`` when
empty. ``decode_report`` is strict: unknown fields, wrong types, non-finite numbers and
oversized input are a ``ReportError`` saying which field is wrong, and nothing else escapes it.

Signature: over ``signing_bytes`` (the canonical bytes without the signature; the signer's key
id is covered, so it cannot be swapped), with the signer's key, which is either **Ed25519**
(``cryptography``; the default) or **SM2 with SM3** (GB/T 32918, GM/T 0009 default user ID,
DER signature; ``tiangong.security.gm``) for an enterprise or center that must use China's
national cryptography. The algorithm belongs to the key, not to the report: a key ring holds
each trusted signer's public key of either kind, and ``verify_report`` checks with the
algorithm of the key it holds for the report's signer, so a report cannot choose a weaker
algorithm for itself. Ed25519 is fast (tens of thousands of verifications per second in C),
small and deterministic; SM2 here is pure Python arithmetic (gmssl), about 8 ms to sign and
15 ms to verify, which suits one report per enterprise every few minutes but not a national
center verifying tens of thousands a second: choose SM2 where the rules ask for it.

Only ``KeyRing`` does I/O (a directory of PEM files); the rest is sans-I/O.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tiangong.data.catalog import Catalog
from tiangong.data.errors import CatalogError, ReportError
from tiangong.data.model import ANY, Level, Measure, Period, Report, Scope, report_id_for
from tiangong.security.gm import Sm2Error, Sm2PrivateKey, Sm2PublicKey

__all__ = [
    "MAX_REPORT_BYTES",
    "KeyRing",
    "ReportPublicKey",
    "ReportSigningKey",
    "SignatureAlgorithm",
    "check_period_start",
    "decode_report",
    "encode_report",
    "sign_report",
    "signing_bytes",
    "validate_report",
    "verify_report",
]

#: Largest encoded report accepted: a national cell report with an enterprise breakdown of a
#: few thousand enterprises fits; anything larger is refused before parsing.
MAX_REPORT_BYTES: Final = 4 * 1024 * 1024

_KEY_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TOP_KEYS: Final = frozenset(
    {
        "report_id",
        "revision",
        "scope",
        "period",
        "period_start",
        "catalog_version",
        "measures",
        "created_at",
        "breakdown",
        "signer",
        "signature",
    }
)
_REQUIRED: Final = _TOP_KEYS - {"breakdown", "signer", "signature"}
_SCOPE_KEYS: Final = frozenset({"source", "level", "region", "industry"})
_MEASURE_KEYS: Final = frozenset({"n", "d", "m"})

#: A report signer's key: Ed25519 or SM2 (with SM3).
ReportSigningKey = Ed25519PrivateKey | Sm2PrivateKey
#: A trusted signer's public key, whose type says how its reports are verified.
ReportPublicKey = Ed25519PublicKey | Sm2PublicKey
SignatureAlgorithm = Literal["ed25519", "sm2"]


# -- encoding -------------------------------------------------------------------------------------


def _measure_doc(m: Measure) -> dict[str, Any]:
    doc: dict[str, Any] = {"n": float(m.numerator)}
    if m.denominator:
        doc["d"] = float(m.denominator)
    if m.members:
        doc["m"] = sorted(m.members)
    return doc


def _doc(report: Report, *, with_signature: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "report_id": report.report_id,
        "revision": report.revision,
        "scope": {
            "source": report.scope.source,
            "level": report.scope.level.value,
            "region": report.scope.region,
            "industry": report.scope.industry,
        },
        "period": report.period.value,
        "period_start": report.period_start,
        "catalog_version": report.catalog_version,
        "measures": {code: _measure_doc(m) for code, m in report.measures.items()},
        "created_at": report.created_at,
    }
    if report.breakdown:
        doc["breakdown"] = {
            key: {code: _measure_doc(m) for code, m in measures.items()}
            for key, measures in report.breakdown.items()
        }
    if report.signer:
        doc["signer"] = report.signer
    if with_signature and report.signature:
        doc["signature"] = report.signature
    return doc


def encode_report(report: Report) -> bytes:
    """The canonical JSON bytes of ``report``, signature included.

    Raises:
        ReportError: a value that JSON cannot carry (a non-finite number).
    """
    try:
        return orjson.dumps(_doc(report, with_signature=True), option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ReportError(f"report cannot be encoded: {exc}") from exc


def signing_bytes(report: Report) -> bytes:
    """The canonical bytes the signature covers: everything but ``signature`` itself."""
    return orjson.dumps(_doc(report, with_signature=False), option=orjson.OPT_SORT_KEYS)


# -- decoding -------------------------------------------------------------------------------------


def _str(doc: Mapping[str, Any], key: str, where: str = "") -> str:
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise ReportError(f"{where}{key} must be a string")
    return value


def _number(value: Any, where: str) -> float:
    # bool is an int subclass; True is not a figure.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"{where} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise ReportError(f"{where} is out of range") from None
    if not math.isfinite(number):
        raise ReportError(f"{where} must be finite")
    return number


def _measure(value: Any, where: str) -> Measure:
    if not isinstance(value, dict):
        raise ReportError(f"{where} must be an object")
    extra = value.keys() - _MEASURE_KEYS
    if extra:
        raise ReportError(f"{where} has unknown fields {sorted(extra)}")
    if "n" not in value:
        raise ReportError(f"{where}.n is missing")
    members = value.get("m", [])
    if not isinstance(members, list) or not all(isinstance(x, str) for x in members):
        raise ReportError(f"{where}.m must be a list of strings")
    return Measure(
        numerator=_number(value["n"], f"{where}.n"),
        denominator=_number(value.get("d", 0.0), f"{where}.d"),
        members=frozenset(members),
    )


def _measures(value: Any, where: str) -> dict[str, Measure]:
    if not isinstance(value, dict):
        raise ReportError(f"{where} must be an object")
    return {code: _measure(m, f"{where}.{code}") for code, m in value.items()}


def decode_report(data: bytes) -> Report:
    """Parse a report; ``ReportError`` with the reason for anything malformed.

    Accepts any JSON spelling of a report (key order, whitespace), not only canonical bytes;
    the signature is checked over the re-encoded canonical form. No other exception escapes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ReportError("a report is bytes")
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"report too large: {len(data)} bytes > {MAX_REPORT_BYTES}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ReportError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReportError("a report is a JSON object")
    extra = doc.keys() - _TOP_KEYS
    if extra:
        raise ReportError(f"unknown fields {sorted(extra)}")
    missing = _REQUIRED - doc.keys()
    if missing:
        raise ReportError(f"missing fields {sorted(missing)}")
    revision = doc["revision"]
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise ReportError("revision must be an integer >= 0")
    scope_doc = doc["scope"]
    if not isinstance(scope_doc, dict) or scope_doc.keys() != _SCOPE_KEYS:
        raise ReportError(f"scope must be an object with exactly {sorted(_SCOPE_KEYS)}")
    try:
        level = Level(_str(scope_doc, "level", "scope."))
    except ValueError:
        raise ReportError(f"scope.level {scope_doc['level']!r} is not a level") from None
    try:
        period = Period(_str(doc, "period"))
    except ValueError:
        raise ReportError(f"period {doc['period']!r} is not a period") from None
    breakdown_doc = doc.get("breakdown", {})
    if not isinstance(breakdown_doc, dict):
        raise ReportError("breakdown must be an object")
    return Report(
        report_id=_str(doc, "report_id"),
        revision=revision,
        scope=Scope(
            source=_str(scope_doc, "source", "scope."),
            level=level,
            region=_str(scope_doc, "region", "scope."),
            industry=_str(scope_doc, "industry", "scope."),
        ),
        period=period,
        period_start=_str(doc, "period_start"),
        catalog_version=_str(doc, "catalog_version"),
        measures=_measures(doc["measures"], "measures"),
        created_at=_str(doc, "created_at"),
        breakdown={
            key: _measures(value, f"breakdown.{key}") for key, value in breakdown_doc.items()
        },
        signer=_str(doc, "signer"),
        signature=_str(doc, "signature"),
    )


# -- signatures -----------------------------------------------------------------------------------


def sign_report(report: Report, key: ReportSigningKey, key_id: str) -> Report:
    """A copy of ``report`` signed with ``key`` under ``key_id`` (the signer is signed too).

    An Ed25519 key gives an Ed25519 signature, an SM2 key an SM2-with-SM3 signature (DER).
    """
    unsigned = dataclasses.replace(report, signer=key_id, signature="")
    signature = key.sign(signing_bytes(unsigned))
    return dataclasses.replace(unsigned, signature=base64.b64encode(signature).decode("ascii"))


def verify_report(report: Report, keys: Mapping[str, ReportPublicKey]) -> None:
    """Check the signature of ``report`` against the trusted ``keys`` (key id → public key).

    The algorithm is the trusted key's (see the module docstring), never the report's choice.

    Raises:
        ReportError: "unsigned", "unknown signer ..." or "bad signature".
    """
    if not report.signature or not report.signer:
        raise ReportError("unsigned")
    public = keys.get(report.signer)
    if public is None:
        raise ReportError(f"unknown signer {report.signer!r}")
    if not _signature_holds(public, report):
        raise ReportError("bad signature")


def _signature_holds(public: ReportPublicKey, report: Report) -> bool:
    try:
        signature = base64.b64decode(report.signature, validate=True)
        if isinstance(public, Sm2PublicKey):
            return public.verify(signature, signing_bytes(report))
        public.verify(signature, signing_bytes(report))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


# -- validation against the catalog ---------------------------------------------------------------


def check_period_start(period: Period, period_start: str) -> datetime:
    """Parse ``period_start``; ``ReportError`` unless it is the canonical start of a period.

    Hours are ``YYYY-MM-DDTHH:00``, days ``YYYY-MM-DD``, months ``YYYY-MM-01``.
    """
    try:
        start = datetime.fromisoformat(period_start)
    except ValueError:
        raise ReportError(f"period_start {period_start!r} is not an ISO date") from None
    if period is Period.HOUR:
        canonical = start.strftime("%Y-%m-%dT%H:00")
    elif period is Period.DAY:
        canonical = start.strftime("%Y-%m-%d")
    else:
        canonical = start.strftime("%Y-%m-01")
    if canonical != period_start or start.tzinfo is not None:
        raise ReportError(
            f"period_start {period_start!r} is not the start of a {period} (use {canonical!r})"
        )
    return start


def validate_report(report: Report, catalog: Catalog) -> None:
    """Raise ``ReportError`` unless ``report`` is consistent with ``catalog``.

    Checks: the catalog's major version; known indicators with measures shaped for their
    aggregation; a canonical ``period_start``; known region and industry codes (an enterprise
    names both, a center may use ``ANY``); the ``report_id`` derived from scope and period; a
    breakdown only on a center's report, keyed by non-empty child ids, with valid measures.
    """
    if report.catalog_version.split(".", 1)[0] != catalog.major:
        raise ReportError(
            f"catalog version {report.catalog_version!r} does not match {catalog.version!r}"
        )
    if report.revision < 0:
        raise ReportError("revision must be >= 0")
    if not report.scope.source:
        raise ReportError("scope.source is empty")
    check_period_start(report.period, report.period_start)
    try:
        datetime.fromisoformat(report.created_at)
    except ValueError:
        raise ReportError(f"created_at {report.created_at!r} is not an ISO time") from None
    try:
        catalog.check_region(report.scope.region)
        catalog.check_industry(report.scope.industry)
    except CatalogError as exc:
        raise ReportError(str(exc)) from None
    if report.scope.level is Level.ENTERPRISE and ANY in (
        report.scope.region,
        report.scope.industry,
    ):
        raise ReportError("an enterprise report names its region and industry")
    expected = report_id_for(report.scope, report.period, report.period_start)
    if report.report_id != expected:
        raise ReportError(f"report_id {report.report_id!r} should be {expected!r}")
    _check_measures(report.measures, catalog, "")
    if report.breakdown and report.scope.level is Level.ENTERPRISE:
        raise ReportError("an enterprise report has no breakdown")
    for key, measures in report.breakdown.items():
        if not key:
            raise ReportError("breakdown key is empty")
        _check_measures(measures, catalog, f"breakdown {key}: ")


def _check_measures(measures: Mapping[str, Measure], catalog: Catalog, where: str) -> None:
    for code, measure in measures.items():
        try:
            spec = catalog.spec(code)
        except CatalogError as exc:
            raise ReportError(f"{where}{exc}") from None
        try:
            measure.check(spec.aggregation, code)
        except ReportError as exc:
            raise ReportError(f"{where}{exc}") from None


# -- keys -----------------------------------------------------------------------------------------


def _check_key_id(key_id: str) -> str:
    if not _KEY_ID.fullmatch(key_id):
        raise ReportError(f"key id {key_id!r}: use letters, digits, '.', '_' or '-'")
    return key_id


@dataclass
class KeyRing:
    """A directory of keys: this node's signing key and the public keys it trusts.

    Layout: ``key_id`` (text), ``private.pem`` (PKCS#8, mode 0600), ``public.pem`` and
    ``trusted/<key id>.pem`` for each trusted signer (this node's own key included, so a node
    can verify what it signed). Each key is Ed25519 or SM2, as its PEM says; a ring may trust
    signers of both kinds.

    Attributes:
        path: the directory.
        key_id: this node's key id (its ``signer`` in reports).
        private_key: this node's signing key.
        trusted: key id → public key of every signer this node accepts reports from.
    """

    path: Path
    key_id: str
    private_key: ReportSigningKey
    trusted: dict[str, ReportPublicKey] = field(default_factory=dict)

    @property
    def algorithm(self) -> SignatureAlgorithm:
        """This node's signature algorithm: ``ed25519`` or ``sm2``."""
        return "sm2" if isinstance(self.private_key, Sm2PrivateKey) else "ed25519"

    @classmethod
    def load_or_generate(
        cls, path: Path | str, key_id: str, algorithm: SignatureAlgorithm = "ed25519"
    ) -> tuple[KeyRing, bool]:
        """The key ring kept at ``path`` from an earlier run, or a new one for ``key_id``.

        Returns:
            The key ring and whether it was generated now (its public key is new: trust it).

        Raises:
            ReportError: the kept key is of another algorithm than ``algorithm`` (a silent
                switch would leave the center above with the wrong key).
        """
        if (Path(path) / "key_id").exists():
            ring = cls.load(path)
            if ring.algorithm != algorithm:
                raise ReportError(
                    f"the key ring {path} holds an {ring.algorithm} key, not {algorithm}: move"
                    " it away to generate a new one, and give the center above its public key"
                )
            return ring, False
        return cls.generate(path, key_id, algorithm), True

    @classmethod
    def generate(
        cls, path: Path | str, key_id: str, algorithm: SignatureAlgorithm = "ed25519"
    ) -> KeyRing:
        """Create ``path`` with a new key pair named ``key_id``; refuses to overwrite a key.

        Args:
            path: the directory.
            key_id: the key's id.
            algorithm: ``ed25519`` (default) or ``sm2`` (SM2 with SM3, national cryptography).
        """
        directory = Path(path)
        _check_key_id(key_id)
        if algorithm not in {"ed25519", "sm2"}:
            raise ReportError(f"unknown signature algorithm {algorithm!r}: ed25519 or sm2")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "trusted").mkdir(exist_ok=True)
        key: ReportSigningKey
        if algorithm == "sm2":
            key = Sm2PrivateKey.generate()
            pem = key.to_pem().encode("ascii")
        else:
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        # Created with 0600 from the start: a chmod after writing leaves a window where the
        # key is readable by others. O_EXCL refuses to overwrite an existing identity.
        fd = os.open(directory / "private.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        (directory / "key_id").write_text(key_id + "\n", encoding="utf-8")
        ring = cls(path=directory, key_id=key_id, private_key=key)
        (directory / "public.pem").write_bytes(ring.public_pem)
        ring.trust(key_id, ring.public_pem)
        return ring

    @classmethod
    def load(cls, path: Path | str) -> KeyRing:
        """Load a key ring written by ``generate``/``trust``; ``ReportError`` if unusable."""
        directory = Path(path)
        try:
            key_id = (directory / "key_id").read_text(encoding="utf-8").strip()
            key = _private_key((directory / "private.pem").read_bytes())
        except (OSError, ValueError) as exc:
            raise ReportError(f"cannot load key ring {directory}: {exc}") from exc
        if key is None:
            raise ReportError(f"{directory / 'private.pem'} is not an Ed25519 or SM2 key")
        ring = cls(path=directory, key_id=_check_key_id(key_id), private_key=key)
        for pem in sorted((directory / "trusted").glob("*.pem")):
            ring.trusted[pem.stem] = _public_key(pem.read_bytes(), pem.stem)
        return ring

    @property
    def public_pem(self) -> bytes:
        """This node's public key, PEM, to hand to the center above."""
        if isinstance(self.private_key, Sm2PrivateKey):
            return self.private_key.public_key.to_pem().encode("ascii")
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def trust(self, key_id: str, public_pem: bytes | str) -> None:
        """Trust ``public_pem`` as the key of ``key_id`` (written to ``trusted/``)."""
        _check_key_id(key_id)
        data = public_pem.encode("ascii") if isinstance(public_pem, str) else public_pem
        self.trusted[key_id] = _public_key(data, key_id)
        (self.path / "trusted").mkdir(exist_ok=True)
        (self.path / "trusted" / f"{key_id}.pem").write_bytes(data)

    def sign(self, report: Report) -> Report:
        """``report`` signed with this node's key."""
        return sign_report(report, self.private_key, self.key_id)


def _private_key(data: bytes) -> ReportSigningKey | None:
    """An Ed25519 or SM2 PKCS#8 key from PEM; None for another kind of key."""
    try:
        return Sm2PrivateKey.from_pem(data)
    except Sm2Error:
        pass  # not SM2 (cryptography cannot read SM2 keys, so SM2 is tried first)
    key = serialization.load_pem_private_key(data, password=None)
    return key if isinstance(key, Ed25519PrivateKey) else None


def _public_key(data: bytes, key_id: str) -> ReportPublicKey:
    try:
        return Sm2PublicKey.from_pem(data)
    except Sm2Error:
        pass  # not SM2: try Ed25519
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ReportError(f"public key of {key_id!r} is not PEM: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ReportError(f"public key of {key_id!r} is neither Ed25519 nor SM2")
    return key

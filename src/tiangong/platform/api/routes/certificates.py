"""Device certificates: enrolment tokens, enrolment, rotation, revocation, CA and CRL.

A tenant administrator creates a one-time enrolment token for one of its devices and hands it
to the device (or to whoever installs it). The device generates its own key, and presents the
token with a CSR at ``POST /api/v1/enrol``: that request carries no bearer token, the one-time
token is the credential. Rotation (``POST /api/v1/certificates/rotate``) carries no bearer
token either: the device proves it holds its current certificate's key by signing the new CSR
with it (``security.ca.sign_rotation_request``), and the new CSR is signed by the new key.

Revoking a certificate ends, at once, the embedded broker's sessions that logged in with it.
The CA certificate and the CRL of a tenant are public, as RFC 5280 intends for relying parties
(brokers, devices); everything else is confined to the caller's tenant, and another tenant's
device or certificate answers 404 like one that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from typing import Annotated, Any, Literal

from cryptography import x509
from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from tiangong.network.access.topics import is_valid_name
from tiangong.platform.api.auth import (
    DevicesRead,
    DevicesWrite,
    PlatformDep,
    client_address,
    tenant_for_read,
)
from tiangong.platform.model import DeviceState
from tiangong.platform.service import Platform
from tiangong.security.ca import (
    CertificateRecord,
    CertificateRejected,
    EnrolmentError,
    EnrolmentFailure,
    IssuedCertificate,
    verify_rotation_request,
)

router = APIRouter(tags=["certificates"])

#: Largest PEM accepted in a request (a CSR or certificate with a 4096-bit RSA key is ~2 KiB).
_MAX_PEM: int = 16 * 1024

_TOKEN_PROBLEMS = frozenset(
    {EnrolmentFailure.TOKEN_UNKNOWN, EnrolmentFailure.TOKEN_USED, EnrolmentFailure.TOKEN_EXPIRED}
)

RevocationReason = Literal[
    "unspecified",
    "key_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
]


class EnrolmentTokenIn(BaseModel):
    """How long the token stays valid."""

    ttl_hours: float = Field(default=24.0, gt=0, le=24 * 30)


class EnrolmentTokenOut(BaseModel):
    """A one-time enrolment token: shown once, stored only as a digest."""

    device_id: str
    tenant_id: str
    token: str
    expires_at: dt.datetime


class EnrolIn(BaseModel):
    """A device's enrolment: its one-time token and a CSR for the key it generated."""

    token: str = Field(min_length=8, max_length=200)
    csr: str = Field(min_length=1, max_length=_MAX_PEM, description="PEM CSR, CN = device id")


class RotateIn(BaseModel):
    """A rotation request: the current certificate, a CSR for a new key, and the proof."""

    certificate: str = Field(min_length=1, max_length=_MAX_PEM, description="current, PEM")
    csr: str = Field(min_length=1, max_length=_MAX_PEM, description="PEM CSR for the new key")
    signature: str = Field(
        min_length=1,
        max_length=2048,
        description="base64 signature over the CSR by the current key (sign_rotation_request)",
    )


class MqttTlsEndpoint(BaseModel):
    """Where a device with a certificate connects."""

    host: str
    tls_port: int | None


class CertificateOut(BaseModel):
    """A certificate just issued, with what the device needs to trust the broker."""

    device_id: str
    tenant_id: str
    serial: str = Field(description="hex")
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    certificate: str
    ca_certificate: str = Field(description="the tenant's device CA")
    server_ca_certificate: str = Field(description="the CA of the platform broker's certificate")
    mqtt: MqttTlsEndpoint


class CertificateRecordOut(BaseModel):
    """One certificate in a tenant's register."""

    serial: str
    device_id: str
    tenant_id: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    revoked_at: dt.datetime | None
    reason: str | None


class RevokeIn(BaseModel):
    """Why a certificate is revoked (RFC 5280 reason)."""

    reason: RevocationReason = "unspecified"


class RevokeOut(BaseModel):
    """What a revocation did."""

    serial: str
    tenant_id: str
    newly_revoked: bool
    sessions_ended: int


def _refuse(code: int, failure: EnrolmentFailure | str, message: str) -> HTTPException:
    reason = failure.name.lower() if isinstance(failure, EnrolmentFailure) else failure
    return HTTPException(code, {"reason": reason, "message": message})


def _enrolment_status(exc: EnrolmentError) -> int:
    if exc.reason in _TOKEN_PROBLEMS or exc.reason is EnrolmentFailure.DEVICE_MISMATCH:
        return status.HTTP_403_FORBIDDEN
    if exc.reason is EnrolmentFailure.TOO_EARLY:
        return status.HTTP_409_CONFLICT
    return status.HTTP_422_UNPROCESSABLE_CONTENT


def _issued(platform: Platform, tenant: str, issued: IssuedCertificate) -> CertificateOut:
    server_ca = platform.certificates.server_identity().ca_file.read_text(encoding="ascii")
    return CertificateOut(
        device_id=issued.device_id,
        tenant_id=tenant,
        serial=format(issued.serial, "x"),
        not_before=issued.not_before,
        not_after=issued.not_after,
        fingerprint_sha256=issued.fingerprint,
        certificate=issued.certificate_pem.decode("ascii"),
        ca_certificate=issued.ca_certificate_pem.decode("ascii"),
        server_ca_certificate=server_ca,
        mqtt=MqttTlsEndpoint(
            host=platform.settings.mqtt_host, tls_port=platform.settings.mqtt_tls_port
        ),
    )


def _record(tenant: str, record: CertificateRecord) -> CertificateRecordOut:
    return CertificateRecordOut(
        serial=format(record.serial, "x"),
        device_id=record.device_id,
        tenant_id=tenant,
        not_before=record.not_before,
        not_after=record.not_after,
        fingerprint_sha256=record.fingerprint,
        revoked_at=record.revoked_at,
        reason=None if record.reason is None else record.reason.name,
    )


async def _audit(platform: Platform, request: Request, **entry: Any) -> None:
    audit = getattr(platform, "audit", None)
    if audit is not None:
        await audit.record(source=client_address(request), **entry)


def _own_device(platform: Platform, device_id: str, scope: str | None) -> tuple[str, DeviceState]:
    entry = platform.registry.lookup(device_id)
    if entry is None or (scope is not None and entry.device.tenant_id != scope):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id!r} not found")
    return entry.device.tenant_id, entry.device.state


@router.post(
    "/api/v1/devices/{device_id}/enrolment-tokens",
    response_model=EnrolmentTokenOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_enrolment_token(
    device_id: str,
    platform: PlatformDep,
    principal: DevicesWrite,
    request: Request,
    body: Annotated[EnrolmentTokenIn | None, Body()] = None,
) -> EnrolmentTokenOut:
    """A one-time token with which the device enrols for a certificate (shown only now)."""
    tenant, state = _own_device(platform, device_id, principal.scope)
    if state is DeviceState.DECOMMISSIONED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {device_id!r} is decommissioned")
    ttl = dt.timedelta(hours=(body or EnrolmentTokenIn()).ttl_hours)
    ca = await asyncio.to_thread(platform.certificates.tenant_ca, tenant)
    token = await asyncio.to_thread(ca.create_enrolment_token, device_id, ttl=ttl)
    await _audit(
        platform,
        request,
        actor=principal.name,
        action="certificate.enrolment_token",
        target=device_id,
        tenant_id=tenant,
        detail={"ttl_hours": ttl.total_seconds() / 3600},
    )
    return EnrolmentTokenOut(
        device_id=device_id,
        tenant_id=tenant,
        token=token,
        expires_at=dt.datetime.now(dt.UTC) + ttl,
    )


@router.post("/api/v1/enrol", response_model=CertificateOut, status_code=status.HTTP_201_CREATED)
async def enrol(body: EnrolIn, platform: PlatformDep, request: Request) -> CertificateOut:
    """Spend a one-time token and get a client certificate for the CSR's key.

    No bearer token: the enrolment token is the credential. 403 for an unknown, used or
    expired token; 422 for a CSR that is malformed, badly signed, names another device or
    carries a key that is not accepted (the token then stays unspent).
    """
    csr = body.csr.encode("utf-8", "replace")
    last: EnrolmentError | None = None
    for tenant in await asyncio.to_thread(platform.certificates.tenants):
        ca = await asyncio.to_thread(platform.certificates.tenant_ca, tenant)
        try:
            issued = await asyncio.to_thread(ca.enrol, body.token, csr)
        except EnrolmentError as exc:
            if exc.reason is EnrolmentFailure.TOKEN_UNKNOWN:
                last = exc
                continue
            await _audit(
                platform,
                request,
                actor=exc.device_id or "?",
                action="certificate.enrol",
                target=exc.device_id or "",
                tenant_id=tenant,
                outcome="refused",
                detail={"reason": exc.reason.name.lower()},
            )
            raise _refuse(_enrolment_status(exc), exc.reason, str(exc)) from exc
        await _audit(
            platform,
            request,
            actor=issued.device_id,
            action="certificate.enrol",
            target=format(issued.serial, "x"),
            tenant_id=tenant,
            detail={"device": issued.device_id},
        )
        await platform.broker_files_changed()  # a new identity for Mosquitto's ACL
        return _issued(platform, tenant, issued)
    failure = last.reason if last is not None else EnrolmentFailure.TOKEN_UNKNOWN
    raise _refuse(status.HTTP_403_FORBIDDEN, failure, failure.value)


@router.post(
    "/api/v1/certificates/rotate",
    response_model=CertificateOut,
    status_code=status.HTTP_201_CREATED,
)
async def rotate(body: RotateIn, platform: PlatformDep, request: Request) -> CertificateOut:
    """A successor certificate for a device within its renewal window.

    Proof: the current certificate (valid, unrevoked, in its CA's register), a CSR for the new
    key (signed by that key), and a signature over the CSR by the current key. 403 when the
    current certificate or the proof is refused; 409 before the renewal window opens.
    """
    current = body.certificate.encode("utf-8", "replace")
    csr = body.csr.encode("utf-8", "replace")
    try:
        signature = base64.b64decode(body.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _refuse(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "signature_malformed", "signature is not base64"
        ) from exc
    try:
        cert = x509.load_pem_x509_certificate(current)
    except ValueError as exc:
        raise _refuse(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "certificate_malformed",
            "certificate is not a PEM X.509 certificate",
        ) from exc
    from tiangong.platform.broker_access import certificate_identity  # noqa: PLC0415

    tenant, device_id = certificate_identity(cert)
    ca = platform.certificates.existing_ca(tenant) if tenant else None
    if ca is None or device_id is None:
        raise _refuse(
            status.HTTP_403_FORBIDDEN, "untrusted", "the certificate is not from a tenant CA here"
        )
    try:
        verify_rotation_request(current, csr, signature)
        issued = await asyncio.to_thread(ca.rotate, device_id, csr, presented_cert_pem=current)
    except CertificateRejected as exc:
        raise _refuse(status.HTTP_403_FORBIDDEN, exc.reason.name.lower(), str(exc)) from exc
    except EnrolmentError as exc:
        code = _enrolment_status(exc)
        if exc.reason is EnrolmentFailure.CSR_SIGNATURE_INVALID and "rotation" in str(exc):
            code = status.HTTP_403_FORBIDDEN
        raise _refuse(code, exc.reason, str(exc)) from exc
    await _audit(
        platform,
        request,
        actor=device_id,
        action="certificate.rotate",
        target=format(issued.serial, "x"),
        tenant_id=tenant,
        detail={"replaces": format(cert.serial_number, "x")},
    )
    assert tenant is not None
    return _issued(platform, tenant, issued)


def _serial(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such certificate") from exc
    if not 0 < value < 2**160:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such certificate")
    return value


@router.post("/api/v1/certificates/{serial}/revoke", response_model=RevokeOut)
async def revoke(
    serial: str,
    platform: PlatformDep,
    principal: DevicesWrite,
    request: Request,
    body: Annotated[RevokeIn | None, Body()] = None,
) -> RevokeOut:
    """Revoke a certificate: refused from the next connect, live sessions ended at once."""
    number = _serial(serial)
    scope = principal.scope
    found = await asyncio.to_thread(
        platform.certificates.find_certificate, number, None if scope is None else [scope]
    )
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such certificate")
    tenant, record = found
    reason = x509.ReasonFlags[(body or RevokeIn()).reason]
    done = await platform.certificates.revoke(tenant, number, reason=reason, broker=platform.broker)
    await platform.broker_files_changed()  # Mosquitto: new CRL and ACL, reloaded
    ended = done.sessions_ended
    await _audit(
        platform,
        request,
        actor=principal.name,
        action="certificate.revoke",
        target=format(number, "x"),
        tenant_id=tenant,
        detail={"device": record.device_id, "reason": reason.name, "sessions_ended": ended},
    )
    return RevokeOut(
        serial=format(number, "x"),
        tenant_id=tenant,
        newly_revoked=bool(done.serials),
        sessions_ended=ended,
    )


@router.get("/api/v1/certificates", response_model=list[CertificateRecordOut])
async def list_certificates(
    platform: PlatformDep,
    principal: DevicesRead,
    device: Annotated[str | None, Query(description="only this device's")] = None,
    tenant: Annotated[str | None, Query(description="platform administrators: one tenant")] = None,
) -> list[CertificateRecordOut]:
    """The certificate register: serials, validity, revocations (never keys)."""
    wanted = tenant_for_read(principal, tenant)
    if device is not None:
        owner, _ = _own_device(platform, device, principal.scope)
        if wanted is not None and owner != wanted:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device!r} not found")
        wanted = owner
    tenants = (
        [wanted] if wanted is not None else await asyncio.to_thread(platform.certificates.tenants)
    )
    out: list[CertificateRecordOut] = []
    for name in tenants:
        ca = platform.certificates.existing_ca(name)
        if ca is None:
            continue
        records = await asyncio.to_thread(ca.certificates, device)
        out += [_record(name, r) for r in records]
    return out


def _public_ca(platform: Platform, tenant: str) -> Any:
    ca = platform.certificates.existing_ca(tenant) if is_valid_name(tenant) else None
    if ca is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"tenant {tenant!r} has no device CA (it is created with the first enrolment token)",
        )
    return ca


@router.get("/api/v1/tenants/{tenant_id}/ca.pem", response_class=Response)
async def tenant_ca_certificate(tenant_id: str, platform: PlatformDep) -> Response:
    """The tenant's device CA certificate (public: brokers and devices trust it)."""
    ca = _public_ca(platform, tenant_id)
    return Response(ca.certificate_pem(), media_type="application/x-pem-file")


@router.get("/api/v1/tenants/{tenant_id}/crl.pem", response_class=Response)
async def tenant_crl(tenant_id: str, platform: PlatformDep) -> Response:
    """A freshly signed CRL of the tenant's CA (public, valid for an hour)."""
    ca = _public_ca(platform, tenant_id)
    crl = await asyncio.to_thread(ca.crl_pem)
    return Response(crl, media_type="application/x-pem-file")

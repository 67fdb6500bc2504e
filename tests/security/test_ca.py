"""The per-tenant device certificate authority."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from tiangong.security.ca import (
    CA_KEY_FILE,
    CertificateAuthorityError,
    CertificateRejected,
    EnrolmentError,
    EnrolmentFailure,
    RejectionReason,
    TenantCA,
    device_uri,
    generate_device_key_and_csr,
)
from tiangong.security.errors import SecurityError

OPENSSL = Path("/usr/bin/openssl")
START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ca(tmp_path: Path, clock: Clock) -> Iterator[TenantCA]:
    authority = TenantCA.create(tmp_path / "ca", "acme", clock=clock)
    yield authority
    authority.close()


def _enrol(ca: TenantCA, device_id: str) -> tuple[bytes, bytes]:
    """Enrol ``device_id``; returns (key_pem, cert_pem)."""
    key_pem, csr_pem = generate_device_key_and_csr(device_id)
    issued = ca.enrol(ca.create_enrolment_token(device_id), csr_pem)
    return key_pem, issued.certificate_pem


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str | None) -> bytes:
    names = [] if cn is None else [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    return csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _ca_public_key(authority: TenantCA) -> ec.EllipticCurvePublicKey:
    key = authority.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


# -- the CA itself ------------------------------------------------------------------------------


def test_create_writes_ca_certificate_and_private_key_file(ca: TenantCA) -> None:
    cert = x509.load_pem_x509_certificate((ca.directory / "ca.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "O=acme,CN=Tiangong device CA acme"
    assert cert.issuer == cert.subject
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    assert cert.not_valid_after_utc - START >= dt.timedelta(days=3650)
    assert stat.S_IMODE((ca.directory / CA_KEY_FILE).stat().st_mode) == 0o600
    assert (ca.directory / "ca.sqlite3").is_file()


def test_create_refuses_a_directory_that_holds_a_ca(ca: TenantCA) -> None:
    with pytest.raises(CertificateAuthorityError, match="already holds"):
        TenantCA.create(ca.directory, "acme")


def test_create_validates_tenant_and_key_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tenant id"):
        TenantCA.create(tmp_path / "a", "no/slashes")
    with pytest.raises(ValueError, match="key type"):
        TenantCA.create(tmp_path / "b", "acme", key_type="dsa-1024")  # type: ignore[arg-type]


def test_open_refuses_missing_files_and_a_loose_key_mode(ca: TenantCA, tmp_path: Path) -> None:
    with pytest.raises(CertificateAuthorityError, match="not a CA directory"):
        TenantCA.open(tmp_path / "nothing-here")
    (ca.directory / CA_KEY_FILE).chmod(0o644)
    with pytest.raises(CertificateAuthorityError, match="group or others"):
        TenantCA.open(ca.directory)


def test_rsa_ca_with_passphrase_round_trips(tmp_path: Path, clock: Clock) -> None:
    with TenantCA.create(
        tmp_path / "rsa", "acme", key_type="rsa-3072", passphrase=b"pw", clock=clock
    ) as authority:
        assert b"ENCRYPTED" in (authority.directory / CA_KEY_FILE).read_bytes()
        _key, cert_pem = _enrol(authority, "dev-1")
    with pytest.raises(CertificateAuthorityError):
        TenantCA.open(tmp_path / "rsa", passphrase=b"wrong")
    with TenantCA.open(tmp_path / "rsa", passphrase=b"pw", clock=clock) as reopened:
        assert reopened.verify_client(cert_pem).device_id == "dev-1"


# -- enrolment ----------------------------------------------------------------------------------


def test_enrol_issues_a_client_certificate(ca: TenantCA) -> None:
    key_pem, csr_pem = generate_device_key_and_csr("press-7")
    token = ca.create_enrolment_token("press-7")
    issued = ca.enrol(token, csr_pem)

    cert = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert cert.subject.rfc4514_string() == "O=acme,CN=press-7"
    assert cert.issuer == ca.certificate.subject
    assert cert.serial_number == issued.serial
    assert 0 < issued.serial < 2**128
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:tiangong:acme:press-7"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issued.not_after - issued.not_before == dt.timedelta(days=365, minutes=5)
    assert issued.fingerprint == cert.fingerprint(hashes.SHA256()).hex()
    # The certificate is for the device's own key.
    key = serialization.load_pem_private_key(key_pem, None)
    assert cert.public_key() == key.public_key()

    # Independent RFC 5280 client path validation by cryptography's verifier.
    verifier = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .time(START + dt.timedelta(days=1))
        .build_client_verifier()
    )
    verified_client = verifier.verify(cert, [])
    assert verified_client.subjects == [
        x509.UniformResourceIdentifier(device_uri("acme", "press-7"))
    ]

    device = ca.verify_client(issued.certificate_pem)
    assert (device.tenant_id, device.device_id, device.serial) == ("acme", "press-7", issued.serial)
    assert ca.certificates("press-7")[0].serial == issued.serial


def test_token_is_single_use(ca: TenantCA) -> None:
    token = ca.create_enrolment_token("dev-1")
    ca.enrol(token, generate_device_key_and_csr("dev-1")[1])
    with pytest.raises(EnrolmentError) as caught:
        ca.enrol(token, generate_device_key_and_csr("dev-1")[1])
    assert caught.value.reason is EnrolmentFailure.TOKEN_USED
    assert caught.value.device_id == "dev-1"
    assert isinstance(caught.value, SecurityError)


def test_unknown_token_refused(ca: TenantCA) -> None:
    with pytest.raises(EnrolmentError) as caught:
        ca.enrol("tge_not-a-token", generate_device_key_and_csr("dev-1")[1])
    assert caught.value.reason is EnrolmentFailure.TOKEN_UNKNOWN


def test_expired_token_refused(ca: TenantCA, clock: Clock) -> None:
    token = ca.create_enrolment_token("dev-1", ttl=dt.timedelta(hours=1))
    clock.advance(dt.timedelta(hours=1))
    with pytest.raises(EnrolmentError) as caught:
        ca.enrol(token, generate_device_key_and_csr("dev-1")[1])
    assert caught.value.reason is EnrolmentFailure.TOKEN_EXPIRED


def test_tokens_are_stored_hashed(ca: TenantCA) -> None:
    token = ca.create_enrolment_token("dev-1")
    assert token.encode() not in (ca.directory / "ca.sqlite3").read_bytes()


def test_cn_mismatch_refused_and_token_survives(ca: TenantCA) -> None:
    token = ca.create_enrolment_token("dev-1")
    with pytest.raises(EnrolmentError) as caught:
        ca.enrol(token, generate_device_key_and_csr("dev-2")[1])
    assert caught.value.reason is EnrolmentFailure.CN_MISMATCH
    # A refused CSR does not spend the token: the device can fix its CSR and retry.
    assert ca.enrol(token, generate_device_key_and_csr("dev-1")[1]).device_id == "dev-1"


def test_csr_without_cn_gets_the_device_id(ca: TenantCA) -> None:
    csr = _csr(ec.generate_private_key(ec.SECP256R1()), None)
    issued = ca.enrol(ca.create_enrolment_token("dev-1"), csr)
    cert = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1"


def test_bad_csr_signature_refused(ca: TenantCA) -> None:
    _key, csr_pem = generate_device_key_and_csr("dev-1")
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    # Change the signed subject after signing: the signature no longer covers it.
    tampered = x509.load_der_x509_csr(der.replace(b"dev-1", b"dev-2"))
    with pytest.raises(EnrolmentError) as caught:
        ca.enrol(
            ca.create_enrolment_token("dev-2"),
            tampered.public_bytes(serialization.Encoding.PEM),
        )
    assert caught.value.reason is EnrolmentFailure.CSR_SIGNATURE_INVALID


def test_malformed_csr_and_unsupported_keys_refused(ca: TenantCA) -> None:
    token = ca.create_enrolment_token("dev-1")
    with pytest.raises(EnrolmentError) as caught:
        ca.enrol(
            token, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
    assert caught.value.reason is EnrolmentFailure.CSR_MALFORMED

    ed_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1")]))
        .sign(ed25519.Ed25519PrivateKey.generate(), None)
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(EnrolmentError) as caught:
        ca.enrol(token, ed_csr)
    assert caught.value.reason is EnrolmentFailure.KEY_UNSUPPORTED

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(EnrolmentError) as caught:
        ca.enrol(token, _csr(weak, "dev-1"))
    assert caught.value.reason is EnrolmentFailure.KEY_UNSUPPORTED
    with pytest.raises(ValueError, match="device id"):
        ca.create_enrolment_token("bad id")


def test_issue_for_an_operator_supplied_key(ca: TenantCA) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issued = ca.issue_for("gw-1", key.public_key())
    assert ca.verify_client(issued.certificate_pem).device_id == "gw-1"


# -- verification and revocation ---------------------------------------------------------------


def test_verify_client_rejects_foreign_malformed_and_time_invalid(
    ca: TenantCA, tmp_path: Path, clock: Clock
) -> None:
    with TenantCA.create(tmp_path / "other", "acme", clock=clock) as other:
        _key, foreign = _enrol(other, "dev-1")
    with pytest.raises(CertificateRejected) as caught:
        ca.verify_client(foreign)
    assert caught.value.reason is RejectionReason.UNTRUSTED

    with pytest.raises(CertificateRejected) as caught:
        ca.verify_client(b"not a certificate")
    assert caught.value.reason is RejectionReason.MALFORMED

    _key, cert_pem = _enrol(ca, "dev-1")
    clock.advance(dt.timedelta(days=366))
    with pytest.raises(CertificateRejected) as caught:
        ca.verify_client(cert_pem)
    assert caught.value.reason is RejectionReason.EXPIRED
    assert caught.value.device_id == "dev-1"
    clock.now = START - dt.timedelta(hours=1)
    with pytest.raises(CertificateRejected) as caught:
        ca.verify_client(cert_pem)
    assert caught.value.reason is RejectionReason.NOT_YET_VALID


def test_revocation_is_immediate_in_verify_and_crl(ca: TenantCA) -> None:
    _k1, cert_1 = _enrol(ca, "dev-1")
    _k2, cert_2 = _enrol(ca, "dev-2")
    serial_1 = x509.load_pem_x509_certificate(cert_1).serial_number
    assert ca.revoked_serials() == set()
    assert not ca.is_revoked(serial_1)

    assert ca.revoke(serial_1, x509.ReasonFlags.key_compromise) == [serial_1]
    assert ca.revoke(serial_1) == []  # already revoked: first date and reason stay

    with pytest.raises(CertificateRejected) as caught:
        ca.verify_client(cert_1)
    assert caught.value.reason is RejectionReason.REVOKED
    assert caught.value.serial == serial_1
    assert ca.is_revoked(serial_1)
    assert ca.revoked_serials() == {serial_1}
    assert ca.verify_client(cert_2).device_id == "dev-2"

    crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert crl.is_signature_valid(_ca_public_key(ca))
    assert crl.issuer == ca.certificate.subject
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(hours=1)
    entry = crl.get_revoked_certificate_by_serial_number(serial_1)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    assert len(crl) == 1
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    next_crl = x509.load_pem_x509_crl(ca.crl_pem())
    assert next_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > number

    # By device id: every unrevoked certificate of the device.
    assert ca.revoke("dev-2", x509.ReasonFlags.cessation_of_operation) == [
        x509.load_pem_x509_certificate(cert_2).serial_number
    ]
    assert len(x509.load_pem_x509_crl(ca.crl_pem())) == 2
    with pytest.raises(ValueError, match="remove_from_crl"):
        ca.revoke(serial_1, x509.ReasonFlags.remove_from_crl)


def test_revocation_reaches_another_process_sharing_the_directory(
    ca: TenantCA, clock: Clock
) -> None:
    _key, cert_pem = _enrol(ca, "dev-1")
    with TenantCA.open(ca.directory, clock=clock) as broker_side:
        assert broker_side.verify_client(cert_pem).device_id == "dev-1"
        ca.revoke("dev-1")
        with pytest.raises(CertificateRejected, match="revoked"):
            broker_side.verify_client(cert_pem)


# -- rotation -----------------------------------------------------------------------------------


def test_rotation_inside_the_window(ca: TenantCA, clock: Clock) -> None:
    _key, old_pem = _enrol(ca, "dev-1")
    clock.advance(dt.timedelta(days=340))
    _new_key, csr = generate_device_key_and_csr("dev-1")
    new = ca.rotate("dev-1", csr, presented_cert_pem=old_pem)
    assert new.not_after == clock.now + dt.timedelta(days=365)
    # The old certificate stays valid until it expires, so the device can switch over.
    assert ca.verify_client(old_pem).device_id == "dev-1"
    assert ca.verify_client(new.certificate_pem).serial == new.serial
    assert len(ca.certificates("dev-1")) == 2


def test_rotation_outside_the_window_refused(ca: TenantCA, clock: Clock) -> None:
    _key, old_pem = _enrol(ca, "dev-1")
    clock.advance(dt.timedelta(days=300))
    with pytest.raises(EnrolmentError) as caught:
        ca.rotate("dev-1", generate_device_key_and_csr("dev-1")[1], presented_cert_pem=old_pem)
    assert caught.value.reason is EnrolmentFailure.TOO_EARLY
    assert "renewal opens" in str(caught.value)

    clock.advance(dt.timedelta(days=70))  # now expired
    with pytest.raises(CertificateRejected) as rejected:
        ca.rotate("dev-1", generate_device_key_and_csr("dev-1")[1], presented_cert_pem=old_pem)
    assert rejected.value.reason is RejectionReason.EXPIRED


def test_rotation_refuses_revoked_and_other_devices_certificates(
    ca: TenantCA, clock: Clock
) -> None:
    _k1, cert_1 = _enrol(ca, "dev-1")
    _k2, cert_2 = _enrol(ca, "dev-2")
    clock.advance(dt.timedelta(days=350))
    with pytest.raises(EnrolmentError) as caught:
        ca.rotate("dev-1", generate_device_key_and_csr("dev-1")[1], presented_cert_pem=cert_2)
    assert caught.value.reason is EnrolmentFailure.DEVICE_MISMATCH
    with pytest.raises(EnrolmentError) as caught:
        ca.rotate("dev-1", generate_device_key_and_csr("dev-2")[1], presented_cert_pem=cert_1)
    assert caught.value.reason is EnrolmentFailure.CN_MISMATCH
    ca.revoke("dev-1")
    with pytest.raises(CertificateRejected) as rejected:
        ca.rotate("dev-1", generate_device_key_and_csr("dev-1")[1], presented_cert_pem=cert_1)
    assert rejected.value.reason is RejectionReason.REVOKED


def test_expiring_lists_each_devices_newest_certificate(ca: TenantCA, clock: Clock) -> None:
    _k1, cert_1 = _enrol(ca, "dev-1")
    clock.advance(dt.timedelta(days=10))
    _enrol(ca, "dev-2")
    clock.advance(dt.timedelta(days=330))  # dev-1 expires in 25 days, dev-2 in 35
    assert [r.device_id for r in ca.expiring(dt.timedelta(days=30))] == ["dev-1"]
    assert [r.device_id for r in ca.expiring(dt.timedelta(days=40))] == ["dev-1", "dev-2"]
    ca.rotate("dev-1", generate_device_key_and_csr("dev-1")[1], presented_cert_pem=cert_1)
    assert ca.expiring(dt.timedelta(days=30)) == []


# -- persistence --------------------------------------------------------------------------------


def test_reopened_ca_keeps_everything(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "ca"
    with TenantCA.create(directory, "acme", clock=clock) as first:
        _k1, cert_1 = _enrol(first, "dev-1")
        _k2, cert_2 = _enrol(first, "dev-2")
        first.revoke("dev-2", x509.ReasonFlags.superseded)
        pending = first.create_enrolment_token("dev-3")
        used = first.create_enrolment_token("dev-4")
        first.enrol(used, generate_device_key_and_csr("dev-4")[1])
        ca_pem = first.certificate_pem()
        crl_number = (
            x509.load_pem_x509_crl(first.crl_pem())
            .extensions.get_extension_for_class(x509.CRLNumber)
            .value.crl_number
        )

    with TenantCA.open(directory, clock=clock) as second:
        assert second.tenant_id == "acme"
        assert second.certificate_pem() == ca_pem
        assert second.verify_client(cert_1).device_id == "dev-1"
        with pytest.raises(CertificateRejected, match="revoked"):
            second.verify_client(cert_2)
        assert [r.reason for r in second.certificates("dev-2")] == [x509.ReasonFlags.superseded]
        assert second.enrol(pending, generate_device_key_and_csr("dev-3")[1]).device_id == "dev-3"
        with pytest.raises(EnrolmentError, match="already used"):
            second.enrol(used, generate_device_key_and_csr("dev-4")[1])
        crl = x509.load_pem_x509_crl(second.crl_pem())
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == (
            crl_number + 1
        )
        assert crl.is_signature_valid(_ca_public_key(second))
    assert stat.S_IMODE((directory / CA_KEY_FILE).stat().st_mode) == 0o600


# -- interoperability with OpenSSL --------------------------------------------------------------


@pytest.mark.skipif(not OPENSSL.exists(), reason="needs /usr/bin/openssl")
def test_openssl_verifies_good_and_rejects_revoked_device(tmp_path: Path) -> None:
    # The real clock: OpenSSL checks validity and CRL freshness against the system time.
    with TenantCA.create(tmp_path / "ca", "acme") as authority:
        _k1, good = _enrol(authority, "good-1")
        _k2, bad = _enrol(authority, "bad-1")
        authority.revoke("bad-1", x509.ReasonFlags.key_compromise)
        (tmp_path / "ca-cert.pem").write_bytes(authority.certificate_pem())
        (tmp_path / "crl.pem").write_bytes(authority.crl_pem())
    (tmp_path / "good.pem").write_bytes(good)
    (tmp_path / "bad.pem").write_bytes(bad)

    def openssl_verify(leaf: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(OPENSSL), "verify", "-CAfile", "ca-cert.pem", "-crl_check",
                "-CRLfile", "crl.pem", "-purpose", "sslclient", leaf,
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )  # fmt: skip

    ok = openssl_verify("good.pem")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "good.pem: OK" in ok.stdout
    revoked = openssl_verify("bad.pem")
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr


# -- the rotation proof and the platform's certificates ------------------------------------------


def test_rotation_proof_binds_the_current_key_to_the_new_csr(tmp_path: Path) -> None:
    from tiangong.security.ca import (  # noqa: PLC0415
        EnrolmentError,
        EnrolmentFailure,
        generate_device_key_and_csr,
        sign_rotation_request,
        verify_rotation_request,
    )

    with TenantCA.create(tmp_path / "ca", "acme") as ca:
        key_pem, csr = generate_device_key_and_csr("pump-1")
        current = ca.enrol(ca.create_enrolment_token("pump-1"), csr).certificate_pem
    _, new_csr = generate_device_key_and_csr("pump-1")
    _, other_csr = generate_device_key_and_csr("pump-1")
    other_key, _ = generate_device_key_and_csr("pump-1")
    proof = sign_rotation_request(key_pem, new_csr)
    verify_rotation_request(current, new_csr, proof)  # passes
    for cert, request, signature in [
        (current, other_csr, proof),  # the proof is for another CSR
        (current, new_csr, sign_rotation_request(other_key, new_csr)),  # by another key
    ]:
        with pytest.raises(EnrolmentError) as refused:
            verify_rotation_request(cert, request, signature)
        assert refused.value.reason is EnrolmentFailure.CSR_SIGNATURE_INVALID
    with pytest.raises(EnrolmentError) as malformed:
        verify_rotation_request(current, b"not a csr", proof)
    assert malformed.value.reason is EnrolmentFailure.CSR_MALFORMED


def test_platform_server_certificate_follows_the_configured_names(tmp_path: Path) -> None:
    from tiangong.platform.certificates import PlatformCertificates  # noqa: PLC0415

    first = PlatformCertificates(tmp_path, server_hostnames=["broker.plant.example"])
    ident = first.server_identity()
    cert = x509.load_pem_x509_certificate(ident.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "broker.plant.example"]
    assert stat.S_IMODE(ident.key_file.stat().st_mode) == 0o600
    assert first.server_identity().cert_file.read_bytes() == ident.cert_file.read_bytes()
    # Another name: a new certificate from the same server CA.
    second = PlatformCertificates(tmp_path, server_hostnames=["10.0.3.7"])
    reissued = x509.load_pem_x509_certificate(second.server_identity().cert_file.read_bytes())
    assert reissued.serial_number != cert.serial_number
    assert reissued.issuer == cert.issuer
    ips = reissued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in ips.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.3.7"]
    # Tenant CAs: created on demand, never by a lookup.
    assert second.existing_ca("acme") is None
    assert second.tenant_ca("acme").tenant_id == "acme"
    assert second.tenants() == ["acme"]
    assert second.existing_ca("../etc") is None
    second.close()
    first.close()

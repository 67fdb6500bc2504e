"""The OPC UA certificates: generated once with what OPC UA requires, then kept."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tiangong.sim.certificates import GATEWAY_APPLICATION_URI, SERVER_APPLICATION_URI, OpcUaPki


def test_generated_once_then_kept(tmp_path: Path) -> None:
    pki = OpcUaPki.in_data_dir(tmp_path)
    written = pki.ensure(host="127.0.0.1")
    assert set(written) == {
        pki.server_certificate,
        pki.server_key,
        pki.gateway_certificate,
        pki.gateway_key,
    }
    for key in (pki.server_key, pki.gateway_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (pki.trusted / pki.gateway_certificate.name).read_bytes() == (
        pki.gateway_certificate.read_bytes()
    )
    before = pki.server_certificate.read_bytes()
    assert pki.ensure(host="127.0.0.1") == []
    assert pki.server_certificate.read_bytes() == before


def test_what_opc_ua_requires_of_the_certificates(tmp_path: Path) -> None:
    pki = OpcUaPki.in_data_dir(tmp_path)
    pki.ensure(host="10.1.2.3")
    for path, uri, usage in (
        (pki.server_certificate, SERVER_APPLICATION_URI, ExtendedKeyUsageOID.SERVER_AUTH),
        (pki.gateway_certificate, GATEWAY_APPLICATION_URI, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        cert = x509.load_der_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert cert.public_key().key_size >= 2048
        assert cert.signature_hash_algorithm is not None
        assert cert.signature_hash_algorithm.name == "sha256"
        key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert key_usage.digital_signature
        assert key_usage.key_encipherment
        assert key_usage.data_encipherment
        assert key_usage.content_commitment
        assert usage in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    server = x509.load_der_x509_certificate(pki.server_certificate.read_bytes())
    ips = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.1.2.3" in {str(ip) for ip in ips.get_values_for_type(x509.IPAddress)}

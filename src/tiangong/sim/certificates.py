"""X.509 application instance certificates for the simulated plant's OPC UA server.

OPC UA's secure channel (Basic256Sha256 here) authenticates both ends with X.509 application
instance certificates (OPC 10000-6, 6.2.2): an RSA key of 2048 bits or more, SHA-256
signatures, the application URI as a ``URI`` subjectAltName (peers reject a certificate without
it) plus the host's DNS names and addresses, key usage digitalSignature, nonRepudiation,
keyEncipherment and dataEncipherment, and extended key usage serverAuth and/or clientAuth.

A self-signed application certificate is its own issuer, so it is marked ``cA`` (path length 0)
with keyCertSign: X.509 path validation, as asyncua's trust store runs it with cryptography,
only accepts a certificate as a trust anchor when it may sign, and a trust list of
self-signed application certificates is how OPC UA deployments without a CA work.

Where the files are (``OpcUaPki``), under the data directory::

    opcua/
      server-cert.der     the server's certificate (what a client pins as server_certificate)
      server-key.pem      its key (mode 0600)
      gateway-cert.der    a client certificate for the demo edge gateway
      gateway-key.pem     its key (mode 0600)
      trusted/            client certificates the server accepts, one DER or PEM file each;
                          gateway-cert.der is copied here. To let another client in, copy its
                          certificate here: the server rereads the directory when it changes.

Files that exist are kept (a restart keeps the same identities); missing ones are generated.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiangong.security.credentials import write_secret_file

__all__ = ["GATEWAY_APPLICATION_URI", "SERVER_APPLICATION_URI", "OpcUaPki", "self_signed"]

#: The simulated plant's OPC UA server.
SERVER_APPLICATION_URI = "urn:tiangong:sim:opcua-server"
#: The demo edge gateway's OPC UA client (the URI in its generated certificate).
GATEWAY_APPLICATION_URI = "urn:tiangong:edge:gateway"

_VALIDITY = dt.timedelta(days=3650)


def self_signed(
    *,
    common_name: str,
    application_uri: str,
    hosts: Sequence[str],
    server: bool,
    client: bool,
) -> tuple[bytes, bytes]:
    """A new self-signed application instance certificate.

    Args:
        common_name: the subject's CN (the application's name).
        application_uri: the application URI (OPC UA requires it in subjectAltName).
        hosts: DNS names and IP addresses the application is reached at.
        server: whether it authenticates a server (serverAuth).
        client: whether it authenticates a client (clientAuth).

    Returns:
        The certificate (DER) and its RSA-2048 private key (PEM, PKCS#8, unencrypted).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tiangong"),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in dict.fromkeys(hosts):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    usages: list[x509.ObjectIdentifier] = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate clocks a little behind
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.DER), key_pem


def _hosts(host: str) -> list[str]:
    """Names a client may use to reach a server listening on ``host``."""
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    if host not in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        names.insert(0, host)
    return names


@dataclass(frozen=True, slots=True)
class OpcUaPki:
    """Where the simulated plant keeps its OPC UA certificates (see the module docstring).

    Attributes:
        root: the directory (``<data dir>/opcua``).
    """

    root: Path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> OpcUaPki:
        """The layout under a data directory."""
        return cls(data_dir / "opcua")

    @property
    def server_certificate(self) -> Path:
        """The server's certificate (DER)."""
        return self.root / "server-cert.der"

    @property
    def server_key(self) -> Path:
        """The server's private key (PEM)."""
        return self.root / "server-key.pem"

    @property
    def gateway_certificate(self) -> Path:
        """The demo gateway's client certificate (DER)."""
        return self.root / "gateway-cert.der"

    @property
    def gateway_key(self) -> Path:
        """The demo gateway's private key (PEM)."""
        return self.root / "gateway-key.pem"

    @property
    def trusted(self) -> Path:
        """Directory of trusted client certificates."""
        return self.root / "trusted"

    def ensure(self, *, host: str) -> list[Path]:
        """Generate what is missing; return the files written.

        The gateway's certificate is trusted (copied into ``trusted``) when it is generated.
        Blocking: call it from a thread in async code.

        Args:
            host: the address the server listens on (added to its subjectAltName).
        """
        written: list[Path] = []
        self.trusted.mkdir(parents=True, exist_ok=True)
        if not (self.server_certificate.exists() and self.server_key.exists()):
            cert, key = self_signed(
                common_name="Tiangong simulated plant OPC UA server",
                application_uri=SERVER_APPLICATION_URI,
                hosts=_hosts(host),
                server=True,
                client=True,  # OPC UA servers act as clients too (discovery registration)
            )
            write_secret_file(self.server_key, key.decode())
            self.server_certificate.write_bytes(cert)
            written += [self.server_certificate, self.server_key]
        if not (self.gateway_certificate.exists() and self.gateway_key.exists()):
            cert, key = self_signed(
                common_name="Tiangong edge gateway",
                application_uri=GATEWAY_APPLICATION_URI,
                hosts=_hosts(""),
                server=False,
                client=True,
            )
            write_secret_file(self.gateway_key, key.decode())
            self.gateway_certificate.write_bytes(cert)
            shutil.copyfile(self.gateway_certificate, self.trusted / self.gateway_certificate.name)
            written += [self.gateway_certificate, self.gateway_key]
        return written

"""Certificates the tests make (P-256 keys, valid from a day ago for three days): a CA of
the test's own that issues server certificates (MTA-STS, DANE), and self-signed ones for
localhost (HTTPS in front of the server, pebble's own port)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyPair = tuple[Path, Path]
"""(certificate PEM file, private key PEM file)"""


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2)))


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class CA:
    """A certificate authority of the test's own; ``path`` is its certificate, for a
    ``[tls] ca_file`` that trusts it."""

    def __init__(self, directory: Path, common_name: str = "Mailhaven test CA") -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (_builder(common_name, self.name, self.key)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                  encipher_only=False, decipher_only=False), True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), False)
                     .sign(self.key, hashes.SHA256()))
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def sha256(self) -> bytes:
        """SHA-256 of the CA certificate (DER), as a DANE-TA 2 0 1 record has it."""
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).digest()

    def issue(self, stem: str, names: list[str]) -> KeyPair:
        """A server certificate for ``names`` (the first also its CN), in ``stem``.crt/.key."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (_builder(names[0], self.name, key)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False)
                .sign(self.key, hashes.SHA256()))
        return _write(self.dir, stem, cert, key)


def spki_sha256(cert_path: Path) -> bytes:
    """SHA-256 of a certificate's SubjectPublicKeyInfo, as a DANE-EE 3 1 1 record has it."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return hashlib.sha256(cert.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def self_signed(directory: Path, stem: str, common_name: str = "localhost") -> KeyPair:
    """A self-signed certificate for localhost and 127.0.0.1 (a CA too, so it can be the
    ``cafile`` that trusts itself), in ``stem``.crt/.key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (_builder(common_name, name, key)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    return _write(directory, stem, cert, key)

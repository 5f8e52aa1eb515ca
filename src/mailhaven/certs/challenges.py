"""Answers to the CA's challenges, shared by the ACME thread and the listeners.

- http-01 (RFC 8555 8.3): ``GET /.well-known/acme-challenge/TOKEN`` answers the key
  authorization, on the http listener and the plain ``acme_http`` one.
- tls-alpn-01 (RFC 8737): a handshake whose SNI names a domain under validation gets a
  context whose only ALPN protocol is ``acme-tls/1`` and whose certificate carries the
  acmeIdentifier extension. The switch happens in the server context's SNI callback, so
  every implicit-TLS listener (HTTPS, 465, 993, 995) answers. Python's ssl module does not
  show the client's ALPN offer before the certificate is chosen, so during the seconds a
  name is under validation any client asking for it gets the validation certificate.

The ACME thread adds and removes entries; the event loop only reads them (single dict
operations, atomic under the GIL).
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
import tempfile
from pathlib import Path
from typing import Any

ACME_TLS_ALPN = "acme-tls/1"  # RFC 8737 6.2
ACME_IDENTIFIER_OID = "1.3.6.1.5.5.7.1.31"  # RFC 8737 6.1, id-pe-acmeIdentifier
CHALLENGE_PATH = "/.well-known/acme-challenge/"  # RFC 8555 8.3


def alpn_certificate(domain: str, key_authorization: str) -> tuple[bytes, bytes]:
    """RFC 8737 3: a self-signed certificate for ``domain`` alone, with a critical
    acmeIdentifier extension holding the SHA-256 digest of the key authorization."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    # The extension value is the DER of an OCTET STRING of the 32-byte digest (RFC 8737 3).
    value = bytes([0x04, len(digest)]) + digest
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(ACME_IDENTIFIER_OID), value),
                       critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _context_for(cert_pem: bytes, key_pem: bytes, scratch: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ACME_TLS_ALPN])  # RFC 8737 4: the only protocol offered
    # load_cert_chain reads files only: a private directory, removed at once.
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        path = Path(tmp) / "challenge.pem"
        path.write_bytes(key_pem + cert_pem)
        ctx.load_cert_chain(path)
    return ctx


class Challenges:
    """What is under validation now: http-01 tokens and tls-alpn-01 contexts by name."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.http: dict[str, str] = {}
        self.alpn: dict[str, ssl.SSLContext] = {}

    def add_http(self, token: str, key_authorization: str) -> None:
        self.http[token] = key_authorization

    def add_alpn(self, domain: str, key_authorization: str) -> None:
        cert, key = alpn_certificate(domain, key_authorization)
        self.alpn[domain.lower()] = _context_for(cert, key, self.scratch)

    def remove(self, token: str, domain: str) -> None:
        self.http.pop(token, None)
        self.alpn.pop(domain.lower(), None)

    def http_answer(self, token: str) -> str | None:
        return self.http.get(token)

    def sni(self, sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        """The server context's SNI callback: switch to the validation context (RFC 8737 3)."""
        if server_name and self.alpn:
            alpn = self.alpn.get(server_name.lower().rstrip("."))
            if alpn is not None:
                sslobj.context = alpn

"""TLS contexts: the configured certificate, or a self-signed one generated once."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from .config import Config
from .datadir import FILE_MODE, private_dir


def ensure_self_signed(data_dir: Path, hostname: str) -> tuple[Path, Path]:
    """Create ``DATA/tls/cert.pem`` and ``key.pem`` on first use; reuse them afterwards."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    tls_dir = data_dir / "tls"
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    private_dir(tls_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                   x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.replace(tmp_key, key_path)
    fd = os.open(cert_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def cert_files(config: Config) -> tuple[Path, Path]:
    """The ACME certificate once there is one, else ``[tls]``'s, else the self-signed one."""
    if config.acme.directory:
        from .certs.files import cert_paths

        cert, key = cert_paths(config.data_dir)
        if cert.exists() and key.exists():
            return cert, key
    if config.tls.cert:
        return Path(config.tls.cert), Path(config.tls.key)
    return ensure_self_signed(config.data_dir, config.hostname)


def server_context(config: Config) -> ssl.SSLContext:
    cert, key = cert_files(config)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def swap_certificate(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Give ``ctx`` a new chain and key, on the event loop's thread. Handshakes from now on
    present it; connections already encrypted keep theirs (OpenSSL copies the certificate
    into each connection when it begins), so nothing is restarted or dropped."""
    ctx.load_cert_chain(cert, key)


def client_context(verify: bool = True, cafile: str | None = None) -> ssl.SSLContext:
    """For outbound SMTP and the user agent. ``verify=False`` is opportunistic TLS."""
    ctx = ssl.create_default_context(cafile=cafile)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx

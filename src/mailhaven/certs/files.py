"""Where the ACME account and certificate live: ``DATA/acme/`` (0700), keys 0600.

``cert.pem`` is the full chain the CA returned, ``key.pem`` its private key. Both are
replaced atomically (written aside, then renamed), key first, so a process that starts
while a renewal writes reads either the old pair or the new one.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from ..datadir import FILE_MODE, private_dir


@dataclass(frozen=True)
class CertInfo:
    names: frozenset[str]
    not_before: datetime.datetime
    not_after: datetime.datetime

    def renew_at(self) -> datetime.datetime:
        """Two thirds into the lifetime (as Let's Encrypt advises for its 90-day certificates)."""
        return self.not_before + (self.not_after - self.not_before) * 2 / 3


def acme_dir(data_dir: Path) -> Path:
    return private_dir(data_dir / "acme")


def cert_paths(data_dir: Path) -> tuple[Path, Path]:
    base = data_dir / "acme"
    return base / "cert.pem", base / "key.pem"


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_certificate(data_dir: Path, fullchain_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    acme_dir(data_dir)
    cert, key = cert_paths(data_dir)
    write_private(key, key_pem)
    write_private(cert, fullchain_pem)
    return cert, key


def read_info(cert_path: Path) -> CertInfo | None:
    """The names and validity of the first certificate in ``cert_path``, or None."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = frozenset(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = frozenset()
    return CertInfo(names, cert.not_valid_before_utc, cert.not_valid_after_utc)

"""DKIM signing of outbound mail (RFC 6376 with rsa-sha256, RFC 8463 with ed25519-sha256).

Keys live in ``DATA/dkim/<domain>/<selector>.<algorithm>.key`` (``rsa``: PEM PKCS#8;
``ed25519``: the base64 seed dkimpy expects), created by ``mailhaven dkim generate``.
The queue signs each message as it leaves, with every key of the domain in the From:
header (so a domain can publish an RSA and an Ed25519 selector side by side and be
verifiable by old and new verifiers alike). Canonicalisation relaxed/relaxed; the signed
header fields are the ones a forwarder must not change, From: signed twice so nobody
can add a second one (RFC 6376 8.15).
"""

from __future__ import annotations

import base64
import email.utils
import os
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..datadir import private_dir

SIGNED_HEADERS = (b"from", b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                  b"in-reply-to", b"references", b"mime-version", b"content-type",
                  b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post")
ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}


@dataclass(frozen=True, kw_only=True)
class Key:
    domain: str
    selector: str
    algorithm: str
    """``rsa`` or ``ed25519``."""
    private: bytes
    """What dkimpy's ``sign`` takes: PEM for RSA, the base64 seed for Ed25519."""
    path: Path

    def public_record(self) -> str:
        """The TXT record for ``<selector>._domainkey.<domain>``."""
        if self.algorithm == "ed25519":
            seed = base64.b64decode(self.private)
            public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
        key = serialization.load_pem_private_key(self.private, password=None)
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def key_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "dkim"


def generate(data_dir: Path, domain: str, selector: str, algorithm: str = "rsa", bits: int = 2048) -> Key:
    domain = domain.lower().rstrip(".")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} (rsa or ed25519)")
    if not selector or not all(c.isalnum() or c in "-_" for c in selector):
        raise ValueError(f"invalid selector {selector!r}")
    folder = key_dir(data_dir) / domain
    private_dir(folder)
    path = folder / f"{selector}.{algorithm}.key"
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another selector")
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    else:
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        private = base64.b64encode(seed)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
        f.flush()
        os.fsync(f.fileno())
    return Key(domain=domain, selector=selector, algorithm=algorithm, private=private, path=path)


def load_keys(data_dir: Path) -> list[Key]:
    keys: list[Key] = []
    root = key_dir(data_dir)
    if not root.is_dir():
        return keys
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.key")):
            selector, _, algorithm = path.name[: -len(".key")].rpartition(".")
            if algorithm in ALGORITHMS and selector:
                keys.append(Key(domain=folder.name, selector=selector, algorithm=algorithm,
                                private=path.read_bytes().strip(), path=path))
    return keys


class Signer:
    def __init__(self, keys: list[Key]) -> None:
        self.by_domain: dict[str, list[Key]] = {}
        for key in keys:
            self.by_domain.setdefault(key.domain, []).append(key)

    @classmethod
    def load(cls, data_dir: Path, config: Any = None) -> Signer:
        return cls(load_keys(data_dir))

    def domain_of(self, message: bytes) -> str | None:
        end = message.find(b"\r\n\r\n")
        header = message[: end + 4] if end >= 0 else message
        parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
        addresses = email.utils.getaddresses(parsed.get_all("From", []))
        if len(addresses) != 1:
            return None
        return addresses[0][1].rpartition("@")[2].lower() or None

    def sign(self, message: bytes) -> bytes:
        """DKIM-Signature header lines to put in front of ``message`` (``b""`` without a key
        for its From: domain)."""
        domain = self.domain_of(message)
        keys = self.by_domain.get(domain or "", [])
        out = b""
        for key in keys:
            present = [h for h in SIGNED_HEADERS if h == b"from" or _has_header(message, h)]
            out += dkim.sign(message, key.selector.encode(), key.domain.encode(), key.private,
                             canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=ALGORITHMS[key.algorithm],
                             include_headers=present, linesep=b"\r\n")
        return out


def _has_header(message: bytes, name: bytes) -> bool:
    end = message.find(b"\r\n\r\n")
    header = (message[:end] if end >= 0 else message).lower()
    return header.startswith(name + b":") or (b"\n" + name + b":") in header

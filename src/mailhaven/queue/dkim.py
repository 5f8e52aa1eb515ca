"""DKIM signing of outbound mail (RFC 6376 with rsa-sha256, RFC 8463 with ed25519-sha256).

Keys live in ``DATA/dkim/<domain>/<selector>.<algorithm>.key`` (``rsa``: PEM PKCS#8;
``ed25519``: the base64 seed dkimpy expects), created by ``mailhaven dkim generate``.
The queue signs each message as it leaves, with every key of the domain in the From:
header (so a domain can publish an RSA and an Ed25519 selector side by side and be
verifiable by old and new verifiers alike). Canonicalisation relaxed/relaxed; the signed
header fields are the ones a forwarder must not change, From: signed twice so nobody
can add a second one (RFC 6376 8.15).

Signing never holds the message: :class:`BodyHash` computes ``bh=`` over the body a piece
at a time (RFC 6376 3.4.3/3.4.4, 3.7), only the header block is parsed (up to
:data:`HEADER_LIMIT`), and dkimpy signs the header fields with that body hash.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import dkim
import dkim.crypto
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..datadir import private_dir
from ..message.lineends import LineEndStream

SIGNED_HEADERS = (b"from", b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                  b"in-reply-to", b"references", b"mime-version", b"content-type",
                  b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post")
ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
HEADER_LIMIT = 1024 * 1024
"""A header block longer than this is not signed (the message still goes)."""
_WSP = re.compile(rb"[\t ]+")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_PARTIAL_LIMIT = 64 * 1024


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
        return self.sign_pieces([message])

    def sign_pieces(self, pieces: Iterable[bytes]) -> bytes:
        """:meth:`sign` for a message given a piece at a time (its file, read in chunks):
        holds its header block and one piece, never the body. The body hashed is the one
        sent: line ends normalised, ending with CRLF (what ``DotStuffer`` sends)."""
        lines = LineEndStream()
        head = bytearray()
        body: BodyHash | None = None
        keys: list[Key] = []

        def take(data: bytes) -> bool:
            """False once the message turns out not to need signing."""
            nonlocal body, keys
            if body is not None:
                body.feed(data)
                return True
            start = max(0, len(head) - 3)
            head.extend(data)
            end = head.find(b"\r\n\r\n", start)
            if end < 0:
                return len(head) <= HEADER_LIMIT
            rest = bytes(head[end + 4:])
            del head[end + 4:]
            keys = self.by_domain.get(self.domain_of(bytes(head)) or "", [])
            if not keys:
                return False
            body = BodyHash(b"relaxed")
            body.feed(rest)
            return True

        for piece in pieces:
            if not take(lines.feed(piece)):
                return b""
        if not take(lines.finish()):
            return b""
        if body is None:                          # RFC 5322 2.1: a message of header only
            keys = self.by_domain.get(self.domain_of(bytes(head)) or "", [])
            body = BodyHash(b"relaxed")
        header = bytes(head)
        bodyhash = body.digest()
        out = b""
        for key in keys:
            present = [h for h in SIGNED_HEADERS if h == b"from" or _has_header(header, h)]
            out += HeaderSigner(header, ALGORITHMS[key.algorithm]).sign_with_body_hash(
                key, include_headers=present, bodyhash=bodyhash)
        return out


class BodyHash:
    """The body hash (RFC 6376 3.7) over pieces of a CRLF-only body, canonicalised as it
    goes: ``relaxed`` (3.4.4: WSP runs become one SP, WSP before a line end goes) or
    ``simple`` (3.4.3); empty lines at the end are held back and dropped (both), since
    whether a blank line is "at the end" is known only when content follows or not.
    ``limit``: only the first that many canonical bytes are hashed (the ``l=`` tag, 3.5).
    Holds one partial line at most (a very long one is hashed in pieces); complete lines
    are canonicalised a piece at a time, not one by one."""

    def __init__(self, canon: bytes = b"relaxed", hasher: Callable[[], Any] = hashlib.sha256,
                 limit: int | None = None) -> None:
        if canon not in (b"relaxed", b"simple"):
            raise ValueError(f"unknown body canonicalization {canon!r}")
        self.relaxed = canon == b"relaxed"
        self._hash = hasher()
        self._left = limit                        # bytes still to hash under l=, None: all
        self._partial = b""
        self._blank = 0                           # empty lines not yet known to be inside
        self._in_line = False                     # part of the current line already hashed
        self._any = False

    @property
    def full(self) -> bool:
        """True once ``l=`` bytes are hashed: the rest of the body changes nothing."""
        return self._left == 0

    def feed(self, data: bytes) -> None:
        """``data``: CRLF line ends only; a piece must not end between CR and LF."""
        data = self._partial + data
        cut = data.rfind(b"\r\n")
        if cut >= 0:
            self._lines(data[:cut + 2])
            data = data[cut + 2:]
        self._partial = data
        if len(data) > _PARTIAL_LIMIT:
            self._part_of_line()

    def digest(self) -> bytes:
        """The base64 ``bh=`` value; the body ends here (a last line without CRLF counts
        as ended by one, as dkimpy does)."""
        if self._partial or self._in_line:
            self._lines(self._partial + b"\r\n")
            self._partial = b""
        if not self._any and not self.relaxed:
            self._update(b"\r\n")                # 3.4.3: an empty body is one CRLF
        return base64.b64encode(self._hash.digest())

    def _update(self, data: bytes) -> None:
        if self._left is None:
            self._hash.update(data)
        elif self._left:
            self._hash.update(data[:self._left])
            self._left = max(0, self._left - len(data))

    def _lines(self, block: bytes) -> None:
        """Complete lines, each ending with CRLF: canonicalised together, the empty lines
        at their end held back."""
        if self.relaxed:
            block = _WSP.sub(b" ", _TRAILING_WSP.sub(b"\r\n", block))
        end = len(block)
        while end >= 2 and block.startswith(b"\r\n", end - 2):
            end -= 2
        empty = (len(block) - end) // 2           # CRLFs at the end; the first may end a line
        if end:
            self._flush_blank()
            self._update(block[:end + 2])
            empty -= 1
        elif self._in_line:                       # the rest of a line hashed in part
            self._update(b"\r\n")
            empty -= 1
        self._in_line = False
        self._blank += empty

    def _part_of_line(self) -> None:
        """Hash the first part of a long unfinished line, holding back its trailing WSP
        (which a CRLF after it would remove)."""
        data = self._partial
        keep = len(data) - len(data.rstrip(b" \t")) if self.relaxed else 0
        head, tail = data[:len(data) - keep], data[len(data) - keep:]
        if head:
            self._flush_blank()
            self._update(_WSP.sub(b" ", head) if self.relaxed else head)
            self._in_line = True
        self._partial = b" " if (tail and self.relaxed) else tail

    def _flush_blank(self) -> None:
        if self._blank:
            self._update(b"\r\n" * self._blank)
            self._blank = 0
        self._any = True


class HeaderSigner(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's signer given the header block only and a body hash computed elsewhere:
    the DKIM-Signature fields of RFC 6376 3.5, then the header hash and signature (3.7)
    by dkimpy's own ``gen_header``, as its ``sign`` does."""

    def __init__(self, header: bytes, algorithm: bytes) -> None:
        super().__init__(header, signature_algorithm=algorithm, linesep=b"\r\n")

    def sign_with_body_hash(self, key: Key, *, include_headers: list[bytes], bodyhash: bytes) -> bytes:
        if self.signature_algorithm == b"ed25519-sha256":
            pk: Any = nacl.signing.SigningKey(key.private, encoder=nacl.encoding.Base64Encoder)
        else:
            pk = dkim.crypto.parse_pem_private_key(key.private)
        canon = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        include = tuple(h.lower() for h in include_headers)
        self.include_headers = include
        self.hasher = dkim.HASH_ALGORITHMS[self.signature_algorithm]
        domain, selector = key.domain.encode(), key.selector.encode()
        fields = [
            (b"v", b"1"), (b"a", self.signature_algorithm), (b"c", canon.to_c_value()),
            (b"d", domain), (b"i", b"@" + domain), (b"q", b"dns/txt"), (b"s", selector),
            (b"t", str(int(time.time())).encode()), (b"h", b" : ".join(include)),
            (b"bh", bodyhash), (b"b", b"0" * 60),
        ]
        return b"DKIM-Signature: " + bytes(self.gen_header(fields, include, canon, b"DKIM-Signature", pk))


def _has_header(message: bytes, name: bytes) -> bool:
    end = message.find(b"\r\n\r\n")
    header = (message[:end] if end >= 0 else message).lower()
    return header.startswith(name + b":") or (b"\n" + name + b":") in header

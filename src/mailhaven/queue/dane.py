"""DANE for outbound SMTP (RFC 7672): TLSA records, published in DNSSEC-signed zones, say
which certificate an MX host must present, so neither a forged DNS answer nor a stripped
STARTTLS can send a domain's mail elsewhere or in clear text.

Only answers a validating resolver marked authentic (the AD bit, RFC 4035 3.2.3) count:
``[dns] nameservers`` should name one (unbound, a local validating resolver). DANE then
applies to an MX host when the domain's MX RRset, the host's address records and its
``_25._tcp.<host>`` TLSA RRset are all secure (2.2). Such a host must do STARTTLS and its
certificate must match a usable TLSA record (3.1): DANE-EE (3) against the server's own
certificate or key, names and dates not checked (3.1.1); DANE-TA (2) against a trust
anchor the server sends in its chain, which must then issue the server certificate for the
MX name or the domain (3.1.2, 3.2.2). PKIX-TA/PKIX-EE (0, 1) and unknown parameters are
unusable (3.1.3); a host with only unusable records still gets mandatory TLS, unverified,
as Postfix does. A TLSA lookup that fails (SERVFAIL: a bogus signature, a timeout) makes
the host unusable for this attempt: it is skipped, and the message waits if none is left.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import (
    Criticality,
    DNSName,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

DANE_TA, DANE_EE = 2, 3                  # RFC 7218 names of RFC 6698 2.1.1 usages
FULL, SPKI = 0, 1                        # selectors (6698 2.1.2)
EXACT, SHA256, SHA512 = 0, 1, 2          # matching types (6698 2.1.3)


@dataclass(frozen=True)
class TLSA:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        """RFC 7672 3.1.3: SMTP uses only DANE-TA and DANE-EE, with known parameters."""
        return self.usage in (DANE_TA, DANE_EE) and self.selector in (FULL, SPKI) \
            and self.mtype in (EXACT, SHA256, SHA512)


class LookupFailed(Exception):
    """The TLSA RRset could not be had securely (bogus, SERVFAIL, timeout): the host is
    not to be used this time (RFC 7672 2.2)."""


def secure(answer: Any) -> bool:
    """Did the validating resolver vouch for this answer (AD)?"""
    return bool(answer.response.flags & dns.flags.AD)


async def lookup(resolver: Any, host: str, port: int = 25) -> tuple[TLSA, ...] | None:
    """The host's TLSA records when they are secure, None when it has none or they are not
    signed; :class:`LookupFailed` when the lookup fails."""
    name = f"_{port}._tcp.{host.rstrip('.')}"
    try:
        answer = await resolver.resolve(name, "TLSA")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None          # an insecure denial counts as none too: nothing to hold the host to
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise LookupFailed(f"TLSA lookup of {name} failed: {exc}") from None
    if not secure(answer):
        return None
    return tuple(TLSA(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert)) for r in answer)


def _selected(cert: x509.Certificate, selector: int) -> bytes:
    if selector == FULL:
        return cert.public_bytes(Encoding.DER)
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == SHA256:
        return hashlib.sha256(data).digest()
    if mtype == SHA512:
        return hashlib.sha512(data).digest()
    return data


def _matches(record: TLSA, cert: x509.Certificate) -> bool:
    return _digest(_selected(cert, record.selector), record.mtype) == record.data


def verify(records: tuple[TLSA, ...], chain_der: list[bytes], names: tuple[str, ...]) -> str | None:
    """None when the presented chain (leaf first) satisfies a usable record; else why not."""
    usable = [r for r in records if r.usable]
    if not usable:
        return None                      # mandatory TLS, nothing to authenticate against
    if not chain_der:
        return "the server presented no certificate"
    chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    leaf = chain[0]
    for record in usable:
        if record.usage == DANE_EE and _matches(record, leaf):
            return None                  # 3.1.1: the key is the identity; names, dates ignored
    for record in usable:
        if record.usage != DANE_TA:
            continue
        for anchor in chain[1:]:
            if _matches(record, anchor) and _issued_by(leaf, chain[1:], anchor, names):
                return None
    return "the certificate matches none of the TLSA records (" + ", ".join(
        f"{r.usage} {r.selector} {r.mtype}" for r in usable) + ")"


_CA_POLICY = ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
_EE_POLICY = ExtensionPolicy.permit_all().require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)


def _issued_by(leaf: x509.Certificate, intermediates: list[x509.Certificate], anchor: x509.Certificate,
               names: tuple[str, ...]) -> bool:
    """3.1.2 / 3.2.2: a chain from ``leaf`` up to ``anchor``, valid now, for one of ``names``."""
    now = datetime.datetime.now(datetime.UTC)
    for name in names:
        try:
            # The Web PKI's extension rules are not DANE's: signatures, dates and the name
            # are checked; which optional extensions a private CA sets is its own affair.
            verifier = (PolicyBuilder().store(Store([anchor])).time(now)
                        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
                        .build_server_verifier(DNSName(name.rstrip("."))))
            verifier.verify(leaf, [c for c in intermediates if c != anchor])
            return True
        except (VerificationError, ValueError):
            continue
    return False


def presented_chain(ssl_object: Any) -> list[bytes]:
    """DER certificates the server sent, leaf first (Python 3.11 has no public API for the
    unverified chain; ``_sslobj.get_unverified_chain`` is what 3.13 made public)."""
    inner = getattr(ssl_object, "_sslobj", ssl_object)
    chain = inner.get_unverified_chain() or []
    return [cert.public_bytes(2) for cert in chain]      # _ssl.ENCODING_DER

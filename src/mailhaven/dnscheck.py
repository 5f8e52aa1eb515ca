"""``mailhaven dns check DOMAIN``: ask the configured resolver for each record
``dns records`` suggests and say, per record, ``ok``, ``missing`` or ``different``.

A record counts as ok when it does what the suggested one does, not only when it is the
same text: an SPF record that authorises the MX hosts, a DMARC record with a policy, an
MX or SRV record that names this server (RFC 6186 3). The MTA-STS ``id`` and the DKIM key
must match exactly: a stale id keeps senders on an old policy (RFC 8461 3.1), another key
fails every signature. Beyond the domain's own records: each address of the hostname
must have a PTR naming it again, and a TLSA record for the SMTP port, where one is
published, must match the certificate this server presents (RFC 7672).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver
import dns.reversename
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .dnsrecords import Record
from .queue import dane

OK = "ok"
MISSING = "missing"
DIFFERENT = "different"
ERROR = "error"

Lookup = Callable[[str, str], Awaitable[list[str]]]


@dataclass(frozen=True, kw_only=True)
class Finding:
    record: Record
    status: str
    found: tuple[str, ...] = ()
    """What the resolver answered, where it is not what was expected."""


class LookupFailed(Exception):
    """The resolver did not answer (timeout, SERVFAIL): nothing can be said about the record."""


def resolver_lookup(resolver: dns.asyncresolver.Resolver) -> Lookup:
    """``lookup(name, rtype)`` -> the answers as text (TXT strings joined); [] for NXDOMAIN
    or no records of the type."""

    async def lookup(name: str, rtype: str) -> list[str]:
        try:
            answer = await resolver.resolve(name + ".", rtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
            raise LookupFailed(f"{name} {rtype}: {exc}") from None
        if answer.rdtype == dns.rdatatype.TXT:
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return [r.to_text() for r in answer]

    return lookup


def _tags(value: str) -> dict[str, str]:
    """``v=DKIM1; k=rsa; p=...`` -> {"v": "DKIM1", ...} (RFC 6376 3.2 tag-lists)."""
    tags = {}
    for part in value.split(";"):
        key, sep, tag_value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(tag_value.split())
    return tags


def _starts(values: list[str], prefix: str) -> list[str]:
    return [v for v in values if v.strip().lower().startswith(prefix.lower())]


def _host(value: str) -> str:
    return value.lower().rstrip(".")


async def check_record(record: Record, lookup: Lookup, host: str) -> Finding:
    host = _host(host)
    kind = record.kind
    if kind == "cname":
        return await _check_alias(record, lookup, host)
    values = await lookup(record.name, record.rtype)
    if kind == "mx":
        found = values
        good = any(_host(v.split()[-1]) == host for v in values)
    elif kind == "spf":
        found = _starts(values, "v=spf1 ")  # RFC 7208 4.5: the version term starts the record
        terms = {t.lower().lstrip("+") for v in found for t in v.split()}
        good = len(found) == 1 and bool(terms & {"mx", f"a:{host}", f"mx:{record.name}"})
    elif kind == "dkim":
        found = values
        want = _tags(record.value).get("p")
        good = any(_tags(v).get("p") == want for v in values)
    elif kind == "dmarc":
        found = _starts(values, "v=DMARC1")
        good = len(found) == 1 and _tags(found[0]).get("p", "").lower() in ("none", "quarantine", "reject")
    elif kind == "mta-sts":
        found = _starts(values, "v=STSv1")
        good = len(found) == 1 and _tags(found[0]).get("id") == _tags(record.value)["id"]
    elif kind == "tls-rpt":
        found = _starts(values, "v=TLSRPTv1")
        good = len(found) == 1 and "rua" in _tags(found[0])
    elif kind == "srv":
        found = values
        _, _, port, _ = record.value.split()
        good = any(v.split()[2] == port and _host(v.split()[3]) == host for v in values)
    else:
        raise ValueError(f"unknown record kind {kind!r}")
    if not found:
        return Finding(record=record, status=MISSING)
    return Finding(record=record, status=OK if good else DIFFERENT, found=() if good else tuple(found))


async def _check_alias(record: Record, lookup: Lookup, host: str) -> Finding:
    """A CNAME to this server, or addresses of its own that are this server's."""
    targets = await lookup(record.name, "CNAME")
    if any(_host(t) == host for t in targets):
        return Finding(record=record, status=OK)
    if targets:
        return Finding(record=record, status=DIFFERENT, found=tuple(targets))
    addresses = set(await lookup(record.name, "A")) | set(await lookup(record.name, "AAAA"))
    if not addresses:
        return Finding(record=record, status=MISSING)
    ours = set(await lookup(host, "A")) | set(await lookup(host, "AAAA"))
    if addresses & ours:
        return Finding(record=record, status=OK)
    return Finding(record=record, status=DIFFERENT, found=tuple(sorted(addresses)))


async def check_host_addresses(host: str, lookup: Lookup) -> Finding:
    """The hostname itself must resolve, or no MX, SRV or CNAME naming it is any use."""
    record = Record(name=_host(host), rtype="A", value="(this server's address)", kind="address")
    found = await lookup(record.name, "A") + await lookup(record.name, "AAAA")
    return Finding(record=record, status=OK if found else MISSING)


async def check_reverse(host: str, lookup: Lookup) -> list[Finding]:
    """Each address of the hostname must map back to it (PTR), as receivers check of the
    address mail comes from (forward-confirmed reverse DNS; RFC 8601 2.7.3 ``iprev``)."""
    host = _host(host)
    findings = []
    for address in await lookup(host, "A") + await lookup(host, "AAAA"):
        name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        record = Record(name=name, rtype="PTR", value=f"{host}.", kind="ptr")
        values = await lookup(name, "PTR")
        if not values:
            findings.append(Finding(record=record, status=MISSING))
        else:
            good = any(_host(v) == host for v in values)
            findings.append(Finding(record=record, status=OK if good else DIFFERENT,
                                    found=() if good else tuple(values)))
    return findings


def tlsa_value(certificate: bytes) -> str:
    """DANE-EE, SPKI, SHA-256 (``3 1 1``) of a DER certificate: the record RFC 7671 5.1
    recommends, which survives renewals that keep the key."""
    spki = x509.load_der_x509_certificate(certificate).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


async def check_tlsa(host: str, lookup: Lookup, chain: list[bytes]) -> list[Finding]:
    """TLSA for SMTP (RFC 7672) is optional; once published, it must match the certificate
    the SMTP listener presents, or DANE senders stop delivering here."""
    host = _host(host)
    name = f"_25._tcp.{host}"
    values = await lookup(name, "TLSA")
    if not values or not chain:
        return []
    record = Record(name=name, rtype="TLSA", value=tlsa_value(chain[0]), kind="tlsa")
    published = []
    for value in values:
        usage, selector, mtype, *data = value.split()
        try:
            published.append(dane.TLSA(int(usage), int(selector), int(mtype), bytes.fromhex("".join(data))))
        except ValueError:
            continue
    usable = [r for r in published if r.usable]
    if usable and dane.verify(tuple(usable), chain, (host,)) is None:
        return [Finding(record=record, status=OK)]
    return [Finding(record=record, status=DIFFERENT, found=tuple(values))]


async def check_all(records: list[Record], lookup: Lookup, host: str,
                    chain: list[bytes] | None = None) -> list[Finding]:
    """Every record in turn; when the resolver does not answer the first question, the rest
    are reported unresolved without waiting out a timeout each. ``chain``: the SMTP
    certificate chain (DER, leaf first) that published TLSA records must match."""
    try:
        findings = [await check_host_addresses(host, lookup)]
    except LookupFailed as exc:
        address = Record(name=_host(host), rtype="A", value="(this server's address)", kind="address")
        return [Finding(record=r, status=ERROR, found=(str(exc),)) for r in [address, *records]]
    for extra in (check_reverse(host, lookup), check_tlsa(host, lookup, chain or [])):
        try:
            findings.extend(await extra)
        except LookupFailed as exc:
            findings.append(Finding(record=Record(name=_host(host), rtype="PTR", value="", kind="ptr"),
                                    status=ERROR, found=(str(exc),)))
    for record in records:
        try:
            findings.append(await check_record(record, lookup, host))
        except LookupFailed as exc:
            findings.append(Finding(record=record, status=ERROR, found=(str(exc),)))
    return findings

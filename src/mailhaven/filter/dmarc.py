"""DMARC (RFC 7489): policy discovery, identifier alignment and the disposition.

The record parser and the evaluation are plain functions; :class:`DmarcChecker` adds the
DNS (dnspython's async resolver) and the Public Suffix List.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from functools import lru_cache

import dns.asyncresolver
import dns.exception
import dns.resolver
from publicsuffixlist import PublicSuffixList

from ..message.headerfields import crlf_ascii, plain_fields
from .dkimverify import DkimResult
from .spf import SpfResult

POLICIES = ("none", "quarantine", "reject")


class DmarcRecordError(ValueError):
    """A ``v=DMARC1`` record whose tags are malformed."""


@dataclass(frozen=True, kw_only=True)
class DmarcRecord:
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    """RFC 7489 6.3 rua: where aggregate reports go (URIs as written, ``!size`` kept)."""


@dataclass(frozen=True, kw_only=True)
class DmarcResult:
    result: str
    """pass, fail, none, temperror, permerror."""
    from_domain: str
    policy: str = "none"
    """The policy that applied (p, or sp for a subdomain), before pct."""
    disposition: str = "none"
    """What to do: none, quarantine or reject (after pct, RFC 7489 6.6.4)."""
    reason: str = ""
    dkim_aligned: bool = False
    """An aligned DKIM signature passed (RFC 7489 7.2 policy_evaluated/dkim)."""
    spf_aligned: bool = False
    record: DmarcRecord | None = None


def parse_record(text: str) -> DmarcRecord:
    """RFC 7489 6.3 / 6.4: ``v=DMARC1; p=...`` with v first."""
    tags: dict[str, str] = {}
    parts = [p.strip() for p in text.split(";")]
    if not parts or parts[0].replace(" ", "").upper() != "V=DMARC1":
        raise DmarcRecordError("not a DMARC1 record")
    for part in parts[1:]:
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise DmarcRecordError(f"bad tag {part!r}")
        tags.setdefault(key.strip().lower(), value.strip())
    p = tags.get("p", "").lower()
    if p not in POLICIES:                                   # RFC 7489 6.3: p is required
        raise DmarcRecordError(f"bad p={p!r}")
    sp = tags.get("sp", p).lower()
    if sp not in POLICIES:
        sp = p
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    if adkim not in ("r", "s") or aspf not in ("r", "s"):
        raise DmarcRecordError("bad alignment mode")
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        raise DmarcRecordError("bad pct") from None
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    return DmarcRecord(p=p, sp=sp, adkim=adkim, aspf=aspf, pct=max(0, min(100, pct)), rua=rua)


ORGANIZATIONAL_ENTRIES = 10_000
"""Organizational domains remembered by a DmarcChecker (emptied when full)."""


MEMO_VALUE = 512
"""From: values up to this many characters are remembered (1,024 of them)."""


def from_domain(header: bytes) -> str | None:
    """RFC 7489 6.6.1: the one domain of RFC5322.From; None when there is not exactly one."""
    # The parser's fields of a plain ASCII CRLF header (headerfields.py), cheaper.
    fields = plain_fields(header.decode("ascii")) if crlf_ascii(header) else None
    if fields is None:
        parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
        return _domain_of(tuple(str(v) for v in parsed.get_all("From") or []))
    return _domain_of(tuple(v for k, v in fields if k.lower() == "from"))


def _domain_of(values: tuple[str, ...]) -> str | None:
    """The one domain of these From: values (None: not exactly one), remembered for short
    ones: a sender's From: comes again and again."""
    return _short_domain_of(values) if sum(map(len, values)) <= MEMO_VALUE else _parse_domain(values)


def _parse_domain(values: tuple[str, ...]) -> str | None:
    domains = {addr.rpartition("@")[2].strip().rstrip(".").lower()
               for _, addr in getaddresses(list(values)) if "@" in addr}
    if len(values) != 1 or len(domains) != 1:
        return None
    domain = domains.pop()
    return domain or None


_short_domain_of = lru_cache(maxsize=1024)(_parse_domain)


class DmarcChecker:
    def __init__(self, resolver: dns.asyncresolver.Resolver, psl: PublicSuffixList | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.resolver = resolver
        self.psl = psl or PublicSuffixList()
        self.rand = rand
        self._organizational: dict[str, str] = {}

    def organizational(self, domain: str) -> str:
        """RFC 7489 3.2: the public suffix plus one label (remembered per domain: every
        message asks, for its From domain, SPF and DKIM domains)."""
        org = self._organizational.get(domain)
        if org is None:
            if len(self._organizational) >= ORGANIZATIONAL_ENTRIES:
                self._organizational.clear()
            org = self._organizational[domain] = self.psl.privatesuffix(domain) or domain
        return org

    def aligned(self, a: str, b: str, mode: str) -> bool:
        """RFC 7489 3.1.1 / 3.1.2: strict is equal, relaxed is the same organizational domain."""
        a, b = a.lower().rstrip("."), b.lower().rstrip(".")
        if mode == "s":
            return a == b
        return self.organizational(a) == self.organizational(b)

    async def _records(self, name: str) -> list[str]:
        try:
            answer = await self.resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        out = []
        for r in answer:
            text = b"".join(r.strings).decode("utf-8", "replace")
            if text.replace(" ", "").upper().startswith("V=DMARC1"):   # RFC 7489 6.6.3 step 2
                out.append(text)
        return out

    async def discover(self, domain: str) -> tuple[DmarcRecord | None, bool]:
        """RFC 7489 6.6.3: ``_dmarc.<From domain>``, else ``_dmarc.<organizational>``.
        Returns (record, found at the organizational domain)."""
        org = self.organizational(domain)
        for name, at_org in ((domain, False), (org, True)):
            if at_org and org == domain:
                break
            records = await self._records(f"_dmarc.{name}")
            if len(records) == 1:
                return parse_record(records[0]), at_org
            if len(records) > 1:
                return None, at_org                          # step 5: more than one: none
        return None, False

    async def check(self, header: bytes, spf: SpfResult | None, dkim: list[DkimResult]) -> DmarcResult:
        domain = from_domain(header)
        if domain is None:
            return DmarcResult(result="permerror", from_domain="", reason="not exactly one From domain")
        try:
            record, at_org = await self.discover(domain)
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            return DmarcResult(result="temperror", from_domain=domain, reason=str(exc))
        except DmarcRecordError as exc:
            return DmarcResult(result="permerror", from_domain=domain, reason=str(exc))
        if record is None:
            return DmarcResult(result="none", from_domain=domain)
        policy = record.sp if at_org else record.p                # RFC 7489 6.3 sp=
        dkim_ok = any(r.result == "pass" and self.aligned(r.domain, domain, record.adkim) for r in dkim)
        spf_ok = spf is not None and spf.result == "pass" and self.aligned(spf.domain, domain, record.aspf)
        if dkim_ok or spf_ok:                                     # RFC 7489 4.2
            return DmarcResult(result="pass", from_domain=domain, policy=policy, dkim_aligned=dkim_ok,
                               spf_aligned=spf_ok, record=record)
        disposition = policy
        if record.pct < 100 and self.rand() * 100 >= record.pct:  # RFC 7489 6.6.4: one step down
            disposition = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
        return DmarcResult(result="fail", from_domain=domain, policy=policy, disposition=disposition,
                           record=record)

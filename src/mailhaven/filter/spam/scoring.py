"""One score per inbound message, the tests that made it, and the action it calls for.

Points follow SpamAssassin's defaults where it has the same test (``50_scores.cf``):
GTUBE 1000, bad greetings and no reverse DNS around 1, SPF/DKIM/DMARC failures adding and
passes taking a little off. The action: ``reject`` at ``[spam] reject_score``, ``junk`` at
``junk_score``, ``defer`` (greylisting, when on) at ``greylist_score`` until a retry
comes after ``greylist_delay``, else ``deliver``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from functools import lru_cache
from typing import Any, BinaryIO

import dns.asyncresolver

from ...config import Config
from ..dkimverify import DkimResult
from ..dmarc import DmarcResult
from ..spf import SpfResult
from . import bayes
from .dnsbl import listed_in, listed_in_memo
from .gtube import has_gtube
from .rdns import helo_problems, reverse_dns, reverse_dns_memo
from .tokens import MAX_INPUT, tokenize

POINTS = {
    "GTUBE": 1000.0,
    "USER_BLOCKLIST": 100.0,
    "USER_ALLOWLIST": -100.0,
    "SPF_PASS": -0.1,
    "SPF_SOFTFAIL": 0.7,
    "SPF_FAIL": 1.5,
    "DKIM_VALID": -0.1,
    "DKIM_INVALID": 1.0,
    "DMARC_PASS": -0.5,
    "DMARC_NONE_FAIL": 2.0,         # failed, the domain asks for nothing (p=none)
    "DMARC_POLICY_FAIL": 3.5,       # failed, p=quarantine or p=reject
    "RDNS_NONE": 1.0,
    "RDNS_UNCONFIRMED": 0.5,
    "HELO_BARE_IP": 1.5,
    "HELO_NOT_FQDN": 1.0,
    "HELO_OURS": 2.5,
}

GREYLIST_EXPIRE = 86400.0
"""A greylisted triplet must be retried within this long (Postgrey's default is 2 days)."""

SPAM_FIELDS = (b"x-spam-score:", b"x-spam-status:", b"x-spam-flag:")


@dataclass(frozen=True, kw_only=True)
class SpamResult:
    score: float
    required: float
    tests: tuple[tuple[str, float], ...]
    action: str
    """``deliver``, ``junk``, ``reject`` (550 5.7.1) or ``defer`` (451 4.7.1, greylisting)."""

    def header(self) -> bytes:
        """``X-Spam-Score`` (read by Sieve spamtest) and SpamAssassin's ``X-Spam-Status``,
        folded between words and after the commas of the test list (RFC 5322 2.2.3)."""
        return _spam_fields("Yes" if self.score >= self.required else "No", f"{self.score:.1f}",
                            f"{self.required:.1f}", tuple(name for name, _ in self.tests))


@lru_cache(maxsize=256)
def _spam_fields(flag: str, score: str, required: str, tests: tuple[str, ...]) -> bytes:
    """:meth:`SpamResult.header`, folded once per verdict: most messages from a sender get
    the same score from the same tests."""
    names = [f"{name}," for name in tests] or ["none"]
    names[-1] = names[-1].rstrip(",")
    words = [f"{flag},", f"score={score}", f"required={required}", "tests=" + names[0], *names[1:]]
    lines, line = [], "X-Spam-Status:"
    for i, word in enumerate(words):
        glue = "" if i > 3 else " "                       # the test names run on after "tests="
        if len(line) + len(glue) + len(word) > 78 and line.strip():
            lines.append(line)
            line, glue = "\t", ""
        line += glue + word
    lines.append(line)
    return (f"X-Spam-Score: {score}\r\n" + "\r\n".join(lines) + "\r\n").encode()


def strip_spam_fields(head: bytes) -> bytes:
    """The header section without X-Spam-* fields someone upstream wrote (our verdict alone
    reaches Sieve and the user)."""
    if b"x-spam-" not in head.lower():
        return head                         # most messages: no such field
    out, skipping = [], False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        skipping = line.lower().startswith(SPAM_FIELDS)
        if not skipping:
            out.append(line)
    return b"".join(out)


def _network(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _senders(head: bytes, mail_from: str) -> set[str]:
    """MAIL FROM and the From: addresses, lower-case."""
    found = {mail_from.lower()} if mail_from else set()
    froms = []
    for line in head.decode("utf-8", "replace").replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n"):
        if line.lower().startswith("from:"):
            froms.append(line[5:])
    found.update(_from_addresses(tuple(froms)) if sum(map(len, froms)) <= MEMO_FROM else _parse_from(tuple(froms)))
    return found


MEMO_FROM = 512
"""From: values up to this many characters are remembered (a sender's comes again and again)."""


def _parse_from(froms: tuple[str, ...]) -> frozenset[str]:
    return frozenset(addr.lower() for _, addr in getaddresses(list(froms)) if "@" in addr)


_from_addresses = lru_cache(maxsize=1024)(_parse_from)


def _matches(entry: str, address: str) -> bool:
    if "@" in entry:
        return entry == address
    domain = address.rpartition("@")[2]
    return domain == entry or domain.endswith("." + entry)


LOOKUP_ENTRIES = 10_000
"""Client addresses whose DNS list and reverse DNS outcomes a SpamChecker keeps (emptied when full)."""

OWN_DOMAINS_TTL = 1.0
"""Seconds the list of our domains is reused for the HELO checks (as smtp/server.py's
RecipientCache: a domain added by the CLI counts a second later at most)."""


class SpamChecker:
    """One per process, inside the InboundFilter."""

    def __init__(self, config: Config, resolver: dns.asyncresolver.Resolver) -> None:
        self.settings = config.spam
        self.timeout = config.filter.timeout
        self.hostname = config.hostname.lower()
        self.resolver = resolver
        self._lookups: dict[str, tuple[float, list[Any]]] = {}
        """Client address -> (fresh until, [DNSBL zones, DNSWL zones, reverse DNS]) made
        of remembered answers (dnsmemo.py), kept until the first of them expires: the
        same outcome without walking the answers again (in process, the three lists
        and a PTR whose name resolves back: 22 -> 1 us a message; no PTR: 6 -> 1 us)."""
        self._own: tuple[float, frozenset[str]] = (0.0, frozenset())
        """(valid until, our domains): read at most once a second, not once a message
        (a store read was 3% of an inbound message's CPU at 4 KB)."""

    async def _own_domains(self, store: Any) -> frozenset[str]:
        now = time.monotonic()
        if self._own[0] <= now:
            self._own = (now + OWN_DOMAINS_TTL, frozenset(d.name.lower() for d in await store.list_domains()))
        return self._own[1]

    def start_lookups(self, ip: str) -> asyncio.Future[Any]:
        """DNSBL, DNSWL and reverse DNS of the client, started while SPF and DKIM run."""
        s = self.settings
        now = time.time()
        known = self._lookups.get(ip)
        if known is None or known[0] <= now:
            expiry = [math.inf]
            blocked = listed_in_memo(self.resolver, ip, s.dnsbl, expiry)
            allowed = listed_in_memo(self.resolver, ip, s.dnswl, expiry) if blocked is not None else None
            rdns = reverse_dns_memo(self.resolver, ip, expiry) if allowed is not None else None
            if rdns is not None:
                if len(self._lookups) >= LOOKUP_ENTRIES:
                    self._lookups.clear()
                known = self._lookups[ip] = (expiry[0], [blocked, allowed, rdns])
        if known is not None and known[0] > now:
            # All remembered (the usual case: a client sends many): no lookup, no task.
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(known[1])
            return done
        return asyncio.gather(listed_in(self.resolver, ip, s.dnsbl, self.timeout),
                              listed_in(self.resolver, ip, s.dnswl, self.timeout),
                              reverse_dns(self.resolver, ip, self.timeout))

    async def check(self, content: BinaryIO, *, head: bytes, lookups: asyncio.Future[Any], ip: str, helo: str,
                    mail_from: str, spf: SpfResult | None, dkim: list[DkimResult] | None,
                    dmarc: DmarcResult | None, store: Any, accounts: Sequence[int],
                    recipients: Sequence[str]) -> SpamResult:
        s = self.settings
        tests: list[tuple[str, float]] = []

        def hit(name: str, points: float | None = None) -> None:
            tests.append((name, POINTS[name] if points is None else points))

        if has_gtube(content):
            hit("GTUBE")
        tests.extend(self._auth(spf, dkim, dmarc))
        blocked, allowed, rdns = await lookups
        for zone in blocked:
            tests.append((f"DNSBL({zone})", s.dnsbl_points))
        for zone in allowed:
            tests.append((f"DNSWL({zone})", -s.dnswl_points))
        if rdns == "none":
            hit("RDNS_NONE")
        elif rdns == "unconfirmed":
            hit("RDNS_UNCONFIRMED")
        own = {self.hostname}
        if store is not None:
            own.update(await self._own_domains(store))
        for name in helo_problems(helo, own):
            hit(name)
        if store is not None and accounts:
            # The lists and the classifiers' totals: one store read a message (store.spam_state).
            state = await store.spam_state(accounts)
            tests.extend(self._lists(state.lists, accounts, head, mail_from, spf, dkim, dmarc))
            if s.bayes:
                found = await self._bayes(store, accounts, content, state.totals)
                if found is not None:
                    tests.append(found)
        score = round(sum(points for _, points in tests), 3)
        action = "deliver"
        if score >= s.reject_score:
            action = "reject"
        elif s.greylist and score >= s.greylist_score and store is not None:
            key = f"{_network(ip)} {mail_from.lower()} {','.join(sorted(r.lower() for r in recipients))}"
            if not await store.greylist_pass(key, now=time.time(), delay=s.greylist_delay, expire=GREYLIST_EXPIRE):
                action = "defer"
        if action == "deliver" and score >= s.junk_score:
            action = "junk"
        return SpamResult(score=score, required=s.junk_score, tests=tuple(tests), action=action)

    @staticmethod
    def _auth(spf: SpfResult | None, dkim: list[DkimResult] | None,
              dmarc: DmarcResult | None) -> list[tuple[str, float]]:
        names = []
        if spf is not None:
            names.append({"pass": "SPF_PASS", "softfail": "SPF_SOFTFAIL", "fail": "SPF_FAIL"}.get(spf.result, ""))
        results = {d.result for d in dkim or []}
        if "pass" in results:
            names.append("DKIM_VALID")
        elif "fail" in results:
            names.append("DKIM_INVALID")
        if dmarc is not None and dmarc.result == "pass":
            names.append("DMARC_PASS")
        elif dmarc is not None and dmarc.result == "fail":
            names.append("DMARC_POLICY_FAIL" if dmarc.policy in ("quarantine", "reject") else "DMARC_NONE_FAIL")
        return [(n, POINTS[n]) for n in names if n]

    @staticmethod
    def _lists(lists: dict[int, dict[str, str]], accounts: Sequence[int], head: bytes, mail_from: str,
               spf: SpfResult | None, dkim: list[DkimResult] | None,
               dmarc: DmarcResult | None) -> list[tuple[str, float]]:
        """An entry counts when every recipient account has it. Allow entries only count for
        an authenticated sender domain (DMARC pass, SPF pass or a passing DKIM d=), so a
        forged From: of a friend gains nothing."""
        if not all(lists.get(a) for a in accounts):
            return []                   # an account without entries: none is common (most mail)
        senders = _senders(head, mail_from)
        verified = {d.domain.lower() for d in dkim or [] if d.result == "pass"}
        if spf is not None and spf.result == "pass":
            verified.add(spf.domain.lower())
        if dmarc is not None and dmarc.result == "pass":
            verified.add(dmarc.from_domain.lower())
        kinds: list[set[str]] = []
        for account_id in accounts:
            found = set()
            for entry, kind in lists[account_id].items():
                for sender in senders:
                    if not _matches(entry, sender):
                        continue
                    if kind == "block":
                        found.add("block")
                    elif sender.rpartition("@")[2] in verified:
                        found.add("allow")
            kinds.append(found)
        common = set.intersection(*kinds)
        if "block" in common:
            return [("USER_BLOCKLIST", POINTS["USER_BLOCKLIST"])]
        if "allow" in common:
            return [("USER_ALLOWLIST", POINTS["USER_ALLOWLIST"])]
        return []

    async def _bayes(self, store: Any, accounts: Sequence[int], content: BinaryIO,
                     totals: dict[int, tuple[int, int]]) -> tuple[str, float] | None:
        """The recipient's own classifier when there is one recipient account that has
        learnt enough, else the global one (when it has). ``totals``: (spam, ham) learnt
        by each, as store.spam_state read them. The message is read and tokenized only
        when one of them is ready (no untrained classifier costs a store read)."""
        least = self.settings.bayes_min_messages

        def ready(scope: int) -> bool:
            nspam, nham = totals.get(scope, (0, 0))
            return nspam >= least and nham >= least

        if len(accounts) == 1 and ready(accounts[0]):
            scope = accounts[0]
        elif ready(0):
            scope = 0
        else:
            return None
        content.seek(0)
        tokens = await asyncio.to_thread(tokenize, content.read(MAX_INPUT))
        nspam, nham, counts = await store.spam_token_counts(scope, tokens)
        probability = bayes.spam_probability(counts, nspam, nham)
        return None if probability is None else bayes.band(probability)

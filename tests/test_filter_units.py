"""filter/ pieces on their own: the DMARC record parser, policy discovery (sp=, pct=,
the organizational domain) against tests/dnsserver.py, and the removal of forged
Authentication-Results fields, fuzzed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dns.resolver as dns_resolver
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsserver import DNSServer
from mailhaven.config import Config, DNSConfig
from mailhaven.filter.authresults import authserv_id_of, split_fields, strip_ours
from mailhaven.filter.dkimverify import DkimResult
from mailhaven.filter.dmarc import DmarcChecker, DmarcRecordError, parse_record
from mailhaven.filter.spf import SpfMemo, SpfResult, check_spf
from mailhaven.queue.mx import configured_resolver, make_resolver

RECORDS = {
    "_dmarc.org.example": {"TXT": ['"v=DMARC1; p=reject; sp=quarantine; aspf=s"']},
    "_dmarc.half.example": {"TXT": ['"v=DMARC1; p=reject; pct=50"']},
    "_dmarc.two.example": {"TXT": ['"v=DMARC1; p=reject"', '"v=DMARC1; p=none"']},
    "_dmarc.bad.example": {"TXT": ['"v=DMARC1; p=bogus"']},
    "spf.example": {"TXT": ['"v=spf1 ip4:192.0.2.1 -all"']},
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    with DNSServer(RECORDS) as server:
        yield server


def checker(dns: DNSServer, rand: float = 0.0) -> DmarcChecker:
    config = Config(dns=DNSConfig(nameservers=(f"127.0.0.1:{dns.port}",), timeout=2.0))
    return DmarcChecker(make_resolver(config), rand=lambda: rand)


def spf(domain: str, result: str = "pass") -> SpfResult:
    return SpfResult(result=result, identity="mailfrom", domain=domain, sender=f"x@{domain}")


def test_parse_record() -> None:
    r = parse_record("v=DMARC1; p=quarantine; adkim=s; pct=20; rua=mailto:a@b.example")
    assert (r.p, r.sp, r.adkim, r.aspf, r.pct) == ("quarantine", "quarantine", "s", "r", 20)
    for bad in ("p=reject", "v=DMARC1; p=maybe", "v=DMARC1; p=none; adkim=x", "v=DMARC1; p=none; pct=x"):
        with pytest.raises(DmarcRecordError):
            parse_record(bad)


def test_organizational_domain_and_alignment(dns: DNSServer) -> None:
    c = checker(dns)
    assert c.organizational("a.b.example.co.uk") == "example.co.uk"   # Public Suffix List
    assert c.aligned("mail.org.example", "org.example", "r")
    assert not c.aligned("mail.org.example", "org.example", "s")
    assert not c.aligned("evil.example", "org.example", "r")


async def test_subdomain_policy_and_strict_spf(dns: DNSServer) -> None:
    head = b"From: a@news.org.example\r\n"
    # RFC 7489 6.6.3: no record at news.org.example, so org.example's sp= applies.
    r = await checker(dns).check(head, spf("news.org.example"), [])
    assert (r.result, r.policy) == ("pass", "quarantine")
    # aspf=s: an SPF pass for the organizational domain does not align with the subdomain.
    r = await checker(dns).check(head, spf("org.example"), [])
    assert (r.result, r.policy, r.disposition) == ("fail", "quarantine", "quarantine")
    # relaxed DKIM alignment (adkim defaults to r) passes it.
    dkim = [DkimResult(result="pass", domain="org.example", selector="s", b="x")]
    assert (await checker(dns).check(head, spf("org.example"), dkim)).result == "pass"


async def test_pct_steps_the_policy_down(dns: DNSServer) -> None:
    head = b"From: a@half.example\r\n"
    sampled = await checker(dns, rand=0.1).check(head, None, [])
    spared = await checker(dns, rand=0.9).check(head, None, [])
    assert (sampled.disposition, spared.disposition) == ("reject", "quarantine")   # RFC 7489 6.6.4


async def test_no_usable_record(dns: DNSServer) -> None:
    assert (await checker(dns).check(b"From: a@two.example\r\n", None, [])).result == "none"
    assert (await checker(dns).check(b"From: a@bad.example\r\n", None, [])).result == "permerror"
    assert (await checker(dns).check(b"From: a@x.example, b@y.example\r\n", None, [])).result == "permerror"


def test_strip_ours_examples() -> None:
    head = (b"Received: x\r\nAuthentication-Results: MX.Example.;\r\n dkim=pass\r\n"
            b"Authentication-Results: (c) mx.example 1; spf=pass\r\n"
            b"Authentication-Results: mx.example.evil; spf=pass\r\nSubject: s\r\n")
    kept, removed = strip_ours(head, "mx.example")
    assert removed == 2
    assert kept == b"Received: x\r\nAuthentication-Results: mx.example.evil; spf=pass\r\nSubject: s\r\n"


field_names = st.sampled_from(["Authentication-Results", "authentication-results", "Subject", "X-A"])
values = st.text(alphabet=st.sampled_from(list("mx.example ;()=\t1ab")), max_size=30)


@given(st.lists(st.tuples(field_names, values, st.booleans()), max_size=8))
def test_strip_ours_fuzz(fields: list[tuple[str, str, bool]]) -> None:
    head = b"".join(f"{n}:{v}\r\n{' more' + chr(13) + chr(10) if fold else ''}".encode()
                    for n, v, fold in fields)
    kept, removed = strip_ours(head, "mx.example")
    assert all(authserv_id_of(f) != "mx.example" for f in split_fields(kept))
    assert len(split_fields(kept)) + removed == len(split_fields(head))
    assert set(split_fields(kept)) <= set(split_fields(head))


def test_header_values_are_tokens_or_quoted() -> None:
    from mailhaven.filter.authresults import header

    dkim = [DkimResult(result="pass", domain="good.example", selector="s1", b="ab/c+d=e")]
    text = header("mx.example", spf("good.example"), dkim, None).decode()
    assert text == ("Authentication-Results: mx.example;\r\n\tspf=pass smtp.mailfrom=x@good.example;\r\n"
                    '\tdkim=pass header.d=good.example header.s=s1 header.b="ab/c+d=e"\r\n')


class CountingResolver(dns_resolver.Resolver):
    """The blocking resolver pyspf uses, counting the names it is asked."""

    asked = 0

    def resolve(self, *args: Any, **kwargs: Any) -> dns_resolver.Answer:  # type: ignore[override]
        type(self).asked += 1
        return super().resolve(*args, **kwargs)


async def test_spf_outcome_kept_while_its_dns_answers_are(dns: DNSServer) -> None:
    """The second message from the same address, sender and HELO asks no DNS and gets the
    same result; once the answers' TTL (60 s here) is over, or after a temperror, the
    check runs again."""
    config = Config(dns=DNSConfig(nameservers=(f"127.0.0.1:{dns.port}",), timeout=2.0))
    resolver = configured_resolver(CountingResolver, config)
    resolver.cache = dns_resolver.LRUCache(100)
    now = [time.time()]
    memo = SpfMemo(clock=lambda: now[0])
    first = await check_spf(resolver, "192.0.2.1", "a@spf.example", "h.example", 2.0, memo)
    assert first.result == "pass"
    asked = CountingResolver.asked
    assert asked > 0
    again = await check_spf(resolver, "192.0.2.1", "a@spf.example", "h.example", 2.0, memo)
    assert again == first and CountingResolver.asked == asked
    other = await check_spf(resolver, "192.0.2.9", "a@spf.example", "h.example", 2.0, memo)
    assert other.result == "fail" and CountingResolver.asked > asked         # another address: checked
    asked = CountingResolver.asked
    now[0] += 61                                          # past the TXT record's TTL
    assert (await check_spf(resolver, "192.0.2.1", "a@spf.example", "h.example", 2.0, memo)) == first
    assert CountingResolver.asked > asked

    dead = Config(dns=DNSConfig(nameservers=("127.0.0.1:9",), timeout=0.3))
    down = configured_resolver(CountingResolver, dead)
    down.cache = dns_resolver.LRUCache(100)
    for _ in range(2):
        asked = CountingResolver.asked
        failed = await check_spf(down, "192.0.2.1", "a@spf.example", "h.example", 1.0, memo)
        assert failed.result == "temperror" and CountingResolver.asked > asked   # never kept


# -- the plain header reader (message/headerfields.py) against the stdlib's -------------

_HEADER_PIECES = st.sampled_from([
    "From", "from", "FROM", "To", "Subject", "X-A", "Received", "From ", ":", ": ", " :", " ", "\t",
    "\r\n", "\r\n ", "\r\n\t", "\n", "\r", "\r\n\r\n", "a@b.example", "<c@d.example>", "Bob", "\"B, o\"",
    ",", "(x)", "@", ".", "=?utf-8?q?a?=", "\u00e9", "\x00", "x",
])


@given(st.lists(_HEADER_PIECES, max_size=30))
def test_plain_header_fields_are_the_stdlib_fields(pieces: list[str]) -> None:
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    from mailhaven.filter import dmarc
    from mailhaven.message.headerfields import crlf_ascii, plain_fields

    head = "".join(pieces).encode("utf-8")
    for block in (head, head + b"\r\n", b"From: x@y.example\r\n" + head + b"\r\n\r\n"):
        stdlib = BytesHeaderParser(policy=compat32).parsebytes(block)
        fields = plain_fields(block.decode("ascii")) if crlf_ascii(block) else None
        if fields is not None:
            assert fields == [(k, str(v)) for k, v in stdlib.items()]
            assert not stdlib.defects and not stdlib.get_payload()
        values = tuple(str(v) for v in stdlib.get_all("From") or [])
        assert dmarc.from_domain(block) == dmarc._parse_domain(values)


def test_plain_header_fields_cover_ordinary_mail() -> None:
    from mailhaven.message.headerfields import crlf_ascii, plain_fields

    head = ("Received: from a.example\r\n\tby b.example; Thu, 3 Dec 2026 10:00:00 +0000\r\n"
            "From:  Bob <bob@a.example>\r\nSubject: hi\r\n  there\r\n\r\n")
    assert plain_fields(head) == [("Received", "from a.example\r\n\tby b.example; Thu, 3 Dec 2026 10:00:00 +0000"),
                                  ("From", "Bob <bob@a.example>"), ("Subject", "hi\r\n  there")]
    assert crlf_ascii(head.encode())
    assert plain_fields("From: a\nTo: b\n") == [("From", "a"), ("To", "b")]    # LF endings: split too,
    assert not crlf_ascii(b"From: a\nTo: b\n")                                    # not the narrow case
    assert not crlf_ascii("To: \u00e9\r\n".encode()) and not crlf_ascii(b"From x\r\nTo: b\r\n")
    assert plain_fields("From x\r\nTo: b\r\n") == [("To", "b")]                 # the unix-from line skipped
    assert plain_fields("To: b\r\nFrom : a\r\n") is None                      # obs blanks before the colon

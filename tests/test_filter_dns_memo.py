"""The inbound filter's DNS memo (filter/dnsmemo.py) and its fast path for unsigned mail:
what a caller sees is what dnspython alone would answer, against tests/dnsserver.py."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.nameserver
import dns.resolver
import pytest

from dnsserver import DNSServer
from mailhaven.config import Config, DNSConfig, FilterConfig, SpamConfig
from mailhaven.filter import inbound
from mailhaven.filter.dnsmemo import MemoResolver


def resolver(kind: type[Any], server: DNSServer) -> Any:
    r = kind(configure=False)
    r.nameservers = [dns.nameserver.Do53Nameserver(server.host, server.port)]
    r.cache = dns.resolver.LRUCache(100)
    return r


def outcome(r: Any, name: str, rdtype: str) -> str:
    try:
        return sorted(x.to_text() for x in asyncio.run(r.resolve(name, rdtype)))[0]
    except dns.resolver.NXDOMAIN:
        return "NXDOMAIN"
    except dns.resolver.NoAnswer:
        return "NoAnswer"


def test_memo_answers_as_dnspython_and_forgets_at_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    with DNSServer({"_dmarc.memo.example": {"TXT": ['"v=DMARC1; p=none"']}}) as server:
        memo, plain = resolver(MemoResolver, server), resolver(dns.asyncresolver.Resolver, server)
        for name, rdtype in [("_dmarc.memo.example", "TXT"), ("nx.memo.example", "TXT"),
                             ("_dmarc.memo.example", "A")] * 2:
            before = len(server.queries)
            mine = outcome(memo, name, rdtype)
            asked = len(server.queries) - before
            before = len(server.queries)
            assert mine == outcome(plain, name, rdtype)
            assert asked == len(server.queries) - before       # never fewer questions than dnspython
        assert outcome(memo, "_dmarc.memo.example", "TXT") == '"v=DMARC1; p=none"'
        server.records["_dmarc.memo.example"] = {"TXT": ['"v=DMARC1; p=reject"']}
        assert outcome(memo, "_dmarc.memo.example", "TXT") == '"v=DMARC1; p=none"'   # within its 60 s TTL
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 61)
        assert outcome(memo, "_dmarc.memo.example", "TXT") == '"v=DMARC1; p=reject"'


UNSIGNED = b"From: a@memo.example\r\nTo: b@memo.example\r\nSubject: plain\r\n\r\nHello.\r\n"
SIGNED = (b"DKIM-Signature: v=1; a=rsa-sha256; d=memo.example; s=sel; h=from; bh=AAAA; b=BBBB\r\n"
          + UNSIGNED)
ARC = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=memo.example; s=sel; b=CCCC\r\n" + UNSIGNED


@pytest.mark.parametrize(("message", "dkim_called", "arc_called"),
                         [(UNSIGNED, False, False), (SIGNED, True, False), (ARC, False, True)])
def test_dkimpy_runs_only_for_signed_mail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, message: bytes,
                                          dkim_called: bool, arc_called: bool) -> None:
    called: list[str] = []
    real_dkim, real_arc = inbound.verify_dkim, inbound.verify_arc

    async def dkim_spy(*args: Any) -> Any:
        called.append("dkim")
        return await real_dkim(*args)

    async def arc_spy(*args: Any) -> Any:
        called.append("arc")
        return await real_arc(*args)

    monkeypatch.setattr(inbound, "verify_dkim", dkim_spy)
    monkeypatch.setattr(inbound, "verify_arc", arc_spy)
    with DNSServer({}) as server:
        config = Config(hostname="mx.memo.example", data_dir=tmp_path,
                        dns=DNSConfig(nameservers=[f"{server.host}:{server.port}"]),
                        filter=FilterConfig(spf=False), spam=SpamConfig(enabled=False))
        verdict = asyncio.run(inbound.InboundFilter(config).check(
            io.BytesIO(message), len(message), ip="192.0.2.1", helo="client.memo.example",
            mail_from="a@memo.example"))
    assert ("dkim" in called) == dkim_called and ("arc" in called) == arc_called
    assert (verdict.dkim == []) == (not dkim_called)
    assert verdict.arc is not None and (verdict.arc.result == "none") == (not arc_called)
    assert b"dkim=none" in verdict.header or dkim_called


LOOKUPS = {
    "2.2.0.192.bl.memo.example": {"A": ["127.0.0.2"]},                  # listed
    "2.2.0.192.wl.memo.example": {"A": ["127.0.0.255"]},                # DNSWL's "refused": no listing
    "3.2.0.192.bl.memo.example": {"A": ["127.255.255.254"]},
    "3.2.0.192.wl.memo.example": {"A": ["127.0.10.1"]},
    "2.2.0.192.in-addr.arpa": {"PTR": ["mail.memo.example."]},
    "mail.memo.example": {"A": ["192.0.2.2"], "AAAA": ["2001:db8::2"]},    # forward-confirmed
    "3.2.0.192.in-addr.arpa": {"PTR": ["other.memo.example."]},
    "other.memo.example": {"A": ["192.0.2.99"], "AAAA": ["2001:db8::99"]},  # unconfirmed
}


@pytest.mark.parametrize("ip", ["192.0.2.2", "192.0.2.3"])
def test_remembered_lookups_answer_as_the_lookups_without_a_task(tmp_path: Path, ip: str) -> None:
    """With every answer remembered, the spam checker's DNSBL, DNSWL and reverse DNS come
    from the memo in sequence (a finished future, no task): the same answers as the lookups."""
    from mailhaven.filter.spam.dnsbl import listed_in, listed_in_memo
    from mailhaven.filter.spam.rdns import reverse_dns, reverse_dns_memo
    from mailhaven.filter.spam.scoring import SpamChecker

    async def run(server: DNSServer) -> None:
        memo = resolver(MemoResolver, server)
        bl, wl = ("bl.memo.example",), ("wl.memo.example",)
        assert listed_in_memo(memo, ip, bl) is None and reverse_dns_memo(memo, ip) is None   # nothing known
        config = Config(hostname="mx.memo.example", data_dir=tmp_path, spam=SpamConfig(dnsbl=bl, dnswl=wl))
        checker = SpamChecker(config, memo)
        first = checker.start_lookups(ip)
        assert not first.done()
        found = await first
        assert found == [await listed_in(memo, ip, bl, 5), await listed_in(memo, ip, wl, 5),
                         await reverse_dns(memo, ip, 5)]
        assert found[2] == ("pass" if ip.endswith(".2") else "unconfirmed") and found[0] == (
            ["bl.memo.example"] if ip.endswith(".2") else [])
        assert found == [listed_in_memo(memo, ip, bl), listed_in_memo(memo, ip, wl), reverse_dns_memo(memo, ip)]
        asked = len(server.queries)
        again = checker.start_lookups(ip)
        assert again.done() and again.result() == found and len(server.queries) == asked

    with DNSServer(LOOKUPS) as server:
        asyncio.run(run(server))


def test_remembered_spf_is_the_check_result() -> None:
    from mailhaven.filter.spf import SpfMemo, check_spf, remembered_spf

    memo = SpfMemo()
    assert remembered_spf("192.0.2.1", "a@Memo.Example", "c.example", memo) is None
    for mail_from in ("a@Memo.Example", ""):
        sender = mail_from or "postmaster@c.example"
        memo.put(("192.0.2.1", sender, "c.example"), time.time() + 60, ("pass", "matched"))
        known = remembered_spf("192.0.2.1", mail_from, "c.example", memo)
        assert known is not None and known.result == "pass"
        assert known == asyncio.run(check_spf(None, "192.0.2.1", mail_from, "c.example", 5, memo))  # type: ignore[arg-type]


def test_a_lookup_in_flight_is_not_asked_again() -> None:
    """Fifty callers asking the same name at once (the first messages of fifty new
    sessions) make one query, and each gets its answer or its NXDOMAIN; before, fifty
    queries went out, and a reply lost in that burst cost its caller dnspython's lifetime."""
    with DNSServer({"_dmarc.burst.example": {"TXT": ['"v=DMARC1; p=none"']}}) as server:
        memo = resolver(MemoResolver, server)

        async def burst(name: str) -> list[str]:
            async def one() -> str:
                try:
                    return (await memo.resolve(name, "TXT"))[0].to_text()
                except dns.resolver.NXDOMAIN:
                    return "NXDOMAIN"
            return await asyncio.gather(*(one() for _ in range(50)))

        before = len(server.queries)
        assert asyncio.run(burst("_dmarc.burst.example")) == ['"v=DMARC1; p=none"'] * 50
        assert len(server.queries) - before == 1
        before = len(server.queries)
        assert asyncio.run(burst("nx.burst.example")) == ["NXDOMAIN"] * 50
        assert len(server.queries) - before == 1


def test_a_cancelled_first_asker_leaves_the_others_their_answer() -> None:
    with DNSServer({"_dmarc.cancel.example": {"TXT": ['"v=DMARC1; p=none"']}}) as server:
        memo = resolver(MemoResolver, server)

        async def run() -> str:
            first = asyncio.ensure_future(memo.resolve("_dmarc.cancel.example", "TXT"))
            await asyncio.sleep(0)                  # the first is in flight
            second = asyncio.ensure_future(memo.resolve("_dmarc.cancel.example", "TXT"))
            await asyncio.sleep(0)
            first.cancel()
            return (await second)[0].to_text()

        assert asyncio.run(run()) == '"v=DMARC1; p=none"'

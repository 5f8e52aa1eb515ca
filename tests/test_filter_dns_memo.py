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

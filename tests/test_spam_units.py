"""The spam filter's pure parts (filter/spam/): GTUBE scan across chunks, DNSBL query names
(RFC 5782 2.1 / 2.4), HELO tests, the tokenizer's bounds, Robinson-Fisher combining, the
X-Spam-* header and the removal of upstream ones."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Sequence

import dns.asyncresolver
import dns.resolver
import pytest

from mailhaven.config import Config, SpamConfig
from mailhaven.filter.spam import bayes
from mailhaven.filter.spam.dnsbl import _listing, query_name
from mailhaven.filter.spam.gtube import CHUNK, GTUBE, has_gtube
from mailhaven.filter.spam.rdns import helo_problems
from mailhaven.filter.spam.scoring import SpamChecker, SpamResult, strip_spam_fields
from mailhaven.filter.spam.tokens import MAX_TOKENS, tokenize
from mailhaven.store.api import SpamState


def test_gtube_found_across_a_chunk_boundary() -> None:
    body = b"x" * (CHUNK - 10) + GTUBE + b"\r\n"
    assert has_gtube(io.BytesIO(body))
    assert not has_gtube(io.BytesIO(body.replace(b"GTUBE", b"GTUBF")))


def test_dnsbl_query_names() -> None:
    assert query_name("192.0.2.99", "zen.example") == "99.2.0.192.zen.example"
    assert query_name("::ffff:192.0.2.99", "bl.example.") == "99.2.0.192.bl.example"
    six = query_name("2001:db8::1", "bl.example")
    assert six is not None and six.startswith("1.0.0.0.") and six.endswith(".8.b.d.0.1.0.0.2.bl.example")
    assert query_name("not an ip", "bl.example") is None
    assert _listing(["127.0.0.2"]) and not _listing(["127.255.255.254"]) and not _listing(["127.0.0.255"]) and not _listing(["192.0.2.1"])


@pytest.mark.parametrize(("helo", "found"), [
    ("mx.lancs.example", []), ("[192.0.2.1]", []), ("[IPv6:2001:db8::1]", []),
    ("192.0.2.1", ["HELO_BARE_IP"]), ("localhost", ["HELO_NOT_FQDN"]),
    ("Mail.Test.Example.", ["HELO_OURS"]), ("nyu.example", ["HELO_OURS"]),
])
def test_helo_problems(helo: str, found: list[str]) -> None:
    assert helo_problems(helo, {"mail.test.example", "nyu.example"}) == found


def test_tokens_of_subject_headers_text_and_html_bounded() -> None:
    raw = (b"From: Spammer <win@prizes.example>\r\nSubject: You WON a prize\r\n"
           b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
           b"Claim now\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>Visit <a href='https://win.prizes.example/x'>"
           b"here</a> &amp; collect</p>\r\n--b--\r\n")
    tokens = tokenize(raw)
    assert {"subject:won", "subject:prize", "from:prizes.example", "claim", "visit", "collect",
            "url:win.prizes.example"} <= set(tokens)
    assert "href" not in tokens and "<p>" not in tokens
    many = b"Subject: x\r\n\r\n" + b" ".join(b"word%d" % i for i in range(5000))
    assert len(tokenize(many)) == MAX_TOKENS


def test_robinson_fisher_combining() -> None:
    spammy = {"viagra": (40, 0), "cheap": (30, 2)}
    hammy = {"lunch": (0, 40), "meeting": (1, 30)}
    assert bayes.spam_probability(spammy, 50, 50) > 0.99  # type: ignore[operator]
    assert bayes.spam_probability(hammy, 50, 50) < 0.01  # type: ignore[operator]
    assert bayes.spam_probability({"the": (25, 25)}, 50, 50) is None        # tells nothing
    assert bayes.token_probability(0, 0, 10, 10) == bayes.PRIOR
    assert bayes.band(0.995) == ("BAYES_99", 3.5) and bayes.band(0.0)[0] == "BAYES_00"


def test_spam_header_is_folded_and_strips_upstream_fields() -> None:
    result = SpamResult(score=7.25, required=5.0, action="junk",
                        tests=tuple((f"DNSBL(zone{i}.blocklist.example)", 3.0) for i in range(6)))
    header = result.header().decode()
    assert header.startswith("X-Spam-Score: 7.2\r\nX-Spam-Status: Yes, score=7.2 required=5.0")
    assert all(len(line) <= 78 for line in header.split("\r\n") if not line.startswith("X-Spam-Status"))
    assert "\r\n\t" in header and header.endswith("\r\n")
    head = (b"Subject: hi\r\nX-Spam-Status: No,\r\n score=-9\r\nX-Spam-Score: -9\r\n"
            b"x-spam-flag: NO\r\nTo: bob@nyu.example\r\n")
    assert strip_spam_fields(head) == b"Subject: hi\r\nTo: bob@nyu.example\r\n"


class CountingStore:
    """The store methods the spam check calls, with the classifiers' totals given and
    every read recorded: ("state", accounts) or ("tokens", scope)."""

    def __init__(self, totals: dict[int, tuple[int, int]]) -> None:
        self.totals = totals
        self.reads: list[tuple[str, object]] = []

    async def list_domains(self) -> list[object]:
        return []

    async def spam_state(self, account_ids: Sequence[int]) -> SpamState:
        self.reads.append(("state", tuple(account_ids)))
        return SpamState(lists={}, totals={k: v for k, v in self.totals.items() if k in (0, *account_ids)})

    async def spam_token_counts(self, scope: int, tokens: Sequence[str]) -> tuple[int, int, dict[str, tuple[int, int]]]:
        self.reads.append(("tokens", scope))
        assert tokens, "the totals come with spam_state"
        spam, ham = self.totals.get(scope, (0, 0))
        return spam, ham, {}


def _bayes_reads(totals: dict[int, tuple[int, int]], accounts: Sequence[int]) -> list[tuple[str, object]]:
    store = CountingStore(totals)
    checker = SpamChecker(Config(spam=SpamConfig(bayes_min_messages=10)), dns.asyncresolver.Resolver(configure=False))

    async def main() -> None:
        lookups = asyncio.get_running_loop().create_future()
        lookups.set_result([[], [], "ok"])
        await checker.check(io.BytesIO(b"Subject: hi\r\n\r\nlunch at noon\r\n"), head=b"Subject: hi\r\n",
                            lookups=lookups, ip="192.0.2.1", helo="mx.sender.example", mail_from="a@sender.example",
                            spf=None, dkim=None, dmarc=None, store=store, accounts=accounts,
                            recipients=["bob@nyu.example"])

    asyncio.run(main())
    return store.reads


def test_untrained_system_costs_one_store_read_per_message() -> None:
    """The lists and every classifier's totals come in one read; an untrained classifier
    costs nothing more."""
    assert _bayes_reads({}, [7]) == [("state", (7,))]
    assert _bayes_reads({7: (3, 3), 0: (12, 3)}, [7]) == [("state", (7,))]
    assert _bayes_reads({}, [7, 8]) == [("state", (7, 8))]


def test_own_classifier_first_then_the_global_one() -> None:
    assert _bayes_reads({7: (10, 11), 0: (30, 30)}, [7]) == [("state", (7,)), ("tokens", 7)]
    assert _bayes_reads({7: (10, 9), 0: (30, 30)}, [7]) == [("state", (7,)), ("tokens", 0)]
    assert _bayes_reads({7: (10, 11), 0: (30, 30)}, [7, 8]) == [("state", (7, 8)), ("tokens", 0)]


class FakeMemo:
    """A resolver's memo (filter/dnsmemo.py) holding NXDOMAIN for every name, each fresh
    until ``until[rdtype]`` (then refreshed for a minute, as a new lookup would), with
    every ``remembered`` call recorded."""

    def __init__(self, until: dict[str, float]) -> None:
        self.until = until
        self.asked: list[tuple[str, str]] = []

    def remembered(self, qname: str, rdtype: str, expiry: list[float] | None = None) -> Exception:
        self.asked.append((str(qname), rdtype))
        if self.until.get(rdtype, 0.0) <= time.time():
            self.until[rdtype] = time.time() + 60
        if expiry is not None:
            expiry[0] = min(expiry[0], self.until[rdtype])
        return dns.resolver.NXDOMAIN()


def test_remembered_lookups_of_a_client_are_kept_until_the_first_answer_expires() -> None:
    memo = FakeMemo({"A": time.time() + 60, "PTR": time.time() + 0.3})
    checker = SpamChecker(Config(spam=SpamConfig(dnsbl=("bl.example",), dnswl=("wl.example",))),
                          dns.asyncresolver.Resolver(configure=False))
    checker.resolver = memo  # type: ignore[assignment]

    async def outcome() -> object:
        return await checker.start_lookups("192.0.2.7")

    assert asyncio.run(outcome()) == [[], [], "none"]
    first = list(memo.asked)
    assert ("7.2.0.192.bl.example", "A") in first and ("7.2.0.192.in-addr.arpa.", "PTR") in first
    assert asyncio.run(outcome()) == [[], [], "none"]
    assert memo.asked == first                                  # nothing walked again
    time.sleep(0.35)                                            # the PTR answer expired
    assert asyncio.run(outcome()) == [[], [], "none"]
    assert memo.asked == first * 2

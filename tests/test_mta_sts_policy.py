"""RFC 8461's policy and TXT record grammar, and which MX names a policy allows (4.1)."""

from __future__ import annotations

import pytest

from mailhaven.queue.mtasts import NoMatchingMX, PolicyError, apply, parse_policy, parse_txt
from mailhaven.queue.mx import Hop

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"


def test_policy_fields_and_mx_patterns() -> None:
    policy = parse_policy(POLICY)
    assert (policy.mode, policy.mx, policy.max_age) == ("enforce", ("mail.example.com", "*.example.net"), 604800)
    assert policy.text.split("\n") == POLICY.strip().split("\r\n")
    assert policy.matches("MAIL.example.com.")
    assert policy.matches("mx1.example.net")
    assert not policy.matches("example.net")              # the wildcard needs one label
    assert not policy.matches("a.b.example.net")          # and only one
    assert not policy.matches("mail.example.com.evil.example")
    assert parse_policy(POLICY.replace("\r\n", "\n")) == policy        # LF alone is accepted
    assert parse_policy("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 9999999999\nx-new: 1\n"
                        ).max_age == 31557600                          # capped; unknown keys ignored
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n").mx == ()


@pytest.mark.parametrize("text", [
    "mode: enforce\nversion: STSv1\nmx: a.example\nmax_age: 1\n",       # version must come first
    "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
    "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
    "version: STSv1\nmode: enforce\nmax_age: 1\n",                       # no mx
    "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: soon\n",
    "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n<html>\n",
])
def test_malformed_policies_are_no_policy(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_txt_record() -> None:
    assert parse_txt(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert parse_txt(["v=spf1 -all", "v=STSv1;id=abc"]) == "abc"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None        # 3.1: more than one
    assert parse_txt(["v=STSv1; id=has-dash"]) is None
    assert parse_txt(["v=STSv10; id=a"]) is None
    assert parse_txt([]) is None


def test_enforce_keeps_matching_hops_and_requires_tls() -> None:
    hops = [Hop(name="mail.example.com", port=25, addresses=("192.0.2.1",), preference=10),
            Hop(name="backup.example.org", port=25, addresses=("192.0.2.2",), preference=20)]
    policy = parse_policy(POLICY)
    kept = apply(policy, hops)
    assert [(h.name, h.tls, h.policy) for h in kept] == [("mail.example.com", "required", "mta-sts")]
    assert apply(parse_policy(POLICY.replace("enforce", "testing")), hops) == hops
    assert apply(None, hops) == hops
    with pytest.raises(NoMatchingMX):
        apply(policy, hops[1:])

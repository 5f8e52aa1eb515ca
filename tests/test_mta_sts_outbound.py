"""MTA-STS when sending (RFC 8461), over real sockets: a sending Mailhaven whose resolver is
a DNS server of the test, and two receiving Mailhaven instances, each on port 25 of its own
loopback address, with the policies served over HTTPS by Debian's nginx (in front of the
receivers' own policy route, or as a fixed file).

- nyu.example: enforce, its MX matches the policy and has a certificate from the test's CA:
  delivered, over verified TLS.
- bad.example: enforce, its MX matches but presents a self-signed certificate: not delivered
  (without MTA-STS it would be, opportunistic TLS accepts any certificate).
- other.example: enforce, but its MX is not one the policy names: not delivered, and still
  not once its TXT record is gone (the cached policy holds for its max_age, 5.1).
- testing.example: the same mismatch in mode testing: delivered.

Then the sender's TLS reports (RFC 8460) for those sessions go to each domain's ``rua``, and
the receiving side reads them back with ``mailhaven tlsrpt show``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, wait_for
from dnsserver import DNSServer, can_bind
from mx_client import inbox, submit
from peers import NGINX, nginx, require, running
from testcerts import CA

GOOD_IP, BAD_IP, HTTPS_IP = "127.0.0.40", "127.0.0.41", "127.0.0.42"

RECORDS: dict[str, dict[str, list[str]]] = {
    "nyu.example": {"MX": ["10 mx.nyu.example."]},
    "_mta-sts.nyu.example": {"TXT": ['"v=STSv1; id=20261202a"']},
    "mx.nyu.example": {"A": [GOOD_IP]},
    "bad.example": {"MX": ["10 mx.bad.example."]},
    "_mta-sts.bad.example": {"TXT": ['"v=STSv1; id=1"']},
    "mx.bad.example": {"A": [BAD_IP]},
    "other.example": {"MX": ["10 mx.other.example."]},
    "_mta-sts.other.example": {"TXT": ['"v=STSv1; id=1"']},
    "mx.other.example": {"A": [GOOD_IP]},
    "testing.example": {"MX": ["10 mx.other.example."]},
    "_mta-sts.testing.example": {"TXT": ['"v=STSv1; id=1"']},
    # TLS reports (RFC 8460 3): nyu.example's to itself, the failing domains' to nyu.example.
    "_smtp._tls.nyu.example": {"TXT": ['"v=TLSRPTv1; rua=mailto:postmaster@nyu.example"']},
    "_smtp._tls.bad.example": {"TXT": ['"v=TLSRPTv1;rua=mailto:tlsrpt@nyu.example"']},
    "_smtp._tls.other.example": {"TXT": ['"v=TLSRPTv1; rua=https://reports.example/x,mailto:tlsrpt@nyu.example"']},
    **{f"mta-sts.{d}": {"A": [HTTPS_IP]} for d in ("nyu.example", "bad.example", "other.example",
                                                   "testing.example")},
}

FIXED = {   # policies nginx serves itself (the receivers' route would name their own host)
    "other.example": "version: STSv1\\r\\nmode: enforce\\r\\nmx: mx.nyu.example\\r\\nmax_age: 86400\\r\\n",
    "testing.example": "version: STSv1\\r\\nmode: testing\\r\\nmx: mx.nyu.example\\r\\nmax_age: 86400\\r\\n",
}


def policy_host(directory: Path, ca: CA, backends: dict[str, int]) -> contextlib.AbstractContextManager[None]:
    """nginx on HTTPS_IP:443 answering for every mta-sts.<domain> name."""
    cert, key = ca.issue("mta-sts", [f"mta-sts.{d}" for d in [*backends, *FIXED]])
    servers = []
    for domain, port in backends.items():
        servers.append(f"""server {{ listen {HTTPS_IP}:443 ssl; server_name mta-sts.{domain};
    ssl_certificate {cert}; ssl_certificate_key {key};
    location / {{ proxy_pass http://{GOOD_IP if domain == "nyu.example" else BAD_IP}:{port};
                 proxy_set_header Host $host; }} }}""")
    for domain, policy in FIXED.items():
        servers.append(f"""server {{ listen {HTTPS_IP}:443 ssl; server_name mta-sts.{domain};
    ssl_certificate {cert}; ssl_certificate_key {key};
    location = /.well-known/mta-sts.txt {{ default_type text/plain; return 200 "{policy}"; }} }}""")
    return nginx(directory, "\n".join(servers), (HTTPS_IP, 443))


def _need_peers() -> None:
    missing = [f"cannot listen on {ip}:{port}" for ip, port in ((GOOD_IP, 25), (BAD_IP, 25), (HTTPS_IP, 443))
               if not can_bind(ip, port)]
    if not os.path.exists(NGINX):
        missing.append("nginx is not installed")
    require(missing)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _need_peers()
    root = tmp_path_factory.mktemp("mtasts")
    ca = CA(root)
    good_cert, good_key = ca.issue("mx", ["mx.nyu.example"])
    queue = '[queue]\nretry = ["1s"]\nwarn_after = "1h"\nexpire = "1h"\npoll = "1s"\n'
    with DNSServer(RECORDS) as dns:
        dns_conf = f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n[filter]\nenabled = false\n'
        good = ServerProcess(root / "good", host=GOOD_IP, ports={"smtp": 25}, hostname="mx.nyu.example",
                             extra_config=f'[tls]\ncert = "{good_cert}"\nkey = "{good_key}"\n' + dns_conf)
        bad = ServerProcess(root / "bad", host=BAD_IP, ports={"smtp": 25}, hostname="mx.bad.example",
                            extra_config=dns_conf)
        sender = ServerProcess(root / "sender", hostname="mail.lancs.example",
                               extra_config=f'[tls]\nca_file = "{ca.path}"\n' + dns_conf + queue)
        with running(good, bad, sender):
            good.add_users("bob@nyu.example", "bob@other.example", "bob@testing.example",
                           "postmaster@nyu.example", "tlsrpt@nyu.example")
            bad.add_user("bob@bad.example")
            sender.add_user("alice@lancs.example")
            with policy_host(root, ca, {"nyu.example": good.port("http"), "bad.example": bad.port("http")}):
                yield {"good": good, "bad": bad, "sender": sender, "dns": dns}


def _submit(sender: ServerProcess, rcpt: str, subject: str) -> None:
    submit(sender, "alice@lancs.example", rcpt, subject)


def _queued(sender: ServerProcess, rcpt: str) -> list[dict[str, Any]]:
    return [e for e in json.loads(sender.admin("queue", "list", "--json").stdout) if e["to"] == rcpt]


def _deferred(sender: ServerProcess, rcpt: str, attempts: int = 1) -> dict[str, Any]:
    entries = wait_for(lambda: [e for e in _queued(sender, rcpt) if e["attempts"] >= attempts],
                       what=f"a deferred attempt for {rcpt}")
    return dict(entries[0])


def test_enforce_delivers_to_a_matching_mx_with_a_valid_certificate(net: dict[str, Any]) -> None:
    _submit(net["sender"], "bob@nyu.example", "over verified TLS")
    wait_for(lambda: inbox(net["good"], "bob@nyu.example"), what="delivery to nyu.example")
    assert _queued(net["sender"], "bob@nyu.example") == []
    log = net["sender"].log_text()
    assert "policy fetched" in log and "domain=nyu.example" in log


def test_enforce_refuses_an_mx_whose_certificate_does_not_verify(net: dict[str, Any]) -> None:
    _submit(net["sender"], "bob@bad.example", "self-signed MX")
    entry = _deferred(net["sender"], "bob@bad.example")
    assert "required by mta-sts" in entry["last_reply"] and entry["state"] == "queued"
    assert inbox(net["bad"], "bob@bad.example") == []


def test_enforce_refuses_an_mx_the_policy_does_not_name_and_the_cache_holds(net: dict[str, Any]) -> None:
    sender, dns = net["sender"], net["dns"]
    _submit(sender, "bob@other.example", "wrong MX")
    entry = _deferred(sender, "bob@other.example")
    assert "MTA-STS policy" in entry["last_reply"] and "4.7.5" in entry["last_reply"]
    # The TXT record goes (an attacker on the DNS path, say): the policy cached for its
    # max_age still holds, so the next attempts are still refused.
    del dns.records["_mta-sts.other.example"]
    entry = _deferred(sender, "bob@other.example", attempts=entry["attempts"] + 2)
    assert "MTA-STS policy" in entry["last_reply"]
    assert inbox(net["good"], "bob@other.example") == []


def test_testing_mode_delivers_despite_a_mismatch(net: dict[str, Any]) -> None:
    _submit(net["sender"], "bob@testing.example", "testing only")
    wait_for(lambda: inbox(net["good"], "bob@testing.example"), what="delivery to testing.example")


def test_tls_reports_are_sent_to_each_policy_domains_rua(net: dict[str, Any]) -> None:
    sender, good = net["sender"], net["good"]
    _submit(sender, "bob@nyu.example", "one more over verified TLS")
    wait_for(lambda: len(inbox(good, "bob@nyu.example")) >= 1, what="a delivery to nyu.example")
    for rcpt in ("bob@bad.example", "bob@other.example"):       # failures counted today
        if not _queued(sender, rcpt):
            _submit(sender, rcpt, "count a failure")
            _deferred(sender, rcpt)
    out = sender.admin("tlsrpt", "send", "--include-today").stdout
    assert out.startswith("3 TLS report(s) queued"), out

    def reports(address: str) -> dict[str, dict[str, Any]]:
        found = json.loads(good.admin("tlsrpt", "show", address, "--json").stdout)
        return {r["policies"][0]["policy"]["policy-domain"]: r for r in found}

    own = wait_for(lambda: reports("postmaster@nyu.example"), what="nyu.example's TLS report")["nyu.example"]
    assert set(own) >= {"organization-name", "date-range", "contact-info", "report-id", "policies"}
    assert own["organization-name"] == "mail.lancs.example"
    entry = own["policies"][0]
    assert entry["policy"]["policy-type"] == "sts" and entry["policy"]["mx-host"] == ["mx.nyu.example"]
    assert entry["policy"]["policy-string"][:2] == ["version: STSv1", "mode: enforce"]
    assert entry["summary"]["total-successful-session-count"] >= 1
    assert entry["summary"]["total-failure-session-count"] == 0

    others = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(reports("tlsrpt@nyu.example")),
                      what="the reports about bad.example and other.example")
    bad = others["bad.example"]["policies"][0]
    assert bad["summary"]["total-failure-session-count"] >= 1
    assert {(f["result-type"], f["receiving-mx-hostname"], f["receiving-ip"]) for f in bad["failure-details"]} \
        == {("certificate-not-trusted", "mx.bad.example", BAD_IP)}
    other = others["other.example"]["policies"][0]
    assert other["summary"]["total-successful-session-count"] == 0
    assert {f["result-type"] for f in other["failure-details"]} == {"validation-failure"}
    text = good.admin("tlsrpt", "show", "tlsrpt@nyu.example").stdout
    assert "bad.example (sts): 0 successful" in text and "certificate-not-trusted mx.bad.example" in text


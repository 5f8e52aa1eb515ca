"""Issue 3's scenario, end to end: two Mailhaven servers, each an MX on port 25 of its own
loopback address, found through a real DNS server; Alice submits on lancs.example, her
queue delivers to nyu.example over SMTP.

Each server is a ``mailhaven serve`` process; the DNS server answers MX and A records;
Alice uses smtplib with STARTTLS and AUTH on submission; Bob's mail is read back through
the admin command line. Retry intervals are one second so the waiting stays short.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import smtplib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest

from conftest import ServerProcess, wait_for
from dnsserver import DNSServer, can_bind

LANCS_IP, NYU_IP = "127.0.0.2", "127.0.0.3"
PASSWORD = "s3cret"


def _require_port_25() -> None:
    for ip in (LANCS_IP, NYU_IP):
        if not can_bind(ip, 25):
            reason = f"cannot listen on {ip}:25 (needs root or CAP_NET_BIND_SERVICE)"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)


RECORDS = {
    "lancs.example": {"MX": ["10 mx.lancs.example."]},
    "mx.lancs.example": {"A": [LANCS_IP]},
    "nyu.example": {"MX": ["10 mx.nyu.example."]},
    "mx.nyu.example": {"A": [NYU_IP]},
    "nullmx.example": {"MX": ["0 ."]},
}


def _config(dns_port: int) -> str:
    return (f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\ntimeout = "2s"\n'
            '[queue]\nretry = ["1s"]\nwarn_after = "1h"\nexpire = "1h"\npoll = "1s"\n')


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _require_port_25()
    root = tmp_path_factory.mktemp("twoservers")
    with DNSServer(RECORDS) as dns:
        lancs = ServerProcess(root / "lancs", host=LANCS_IP, ports={"smtp": 25}, hostname="mx.lancs.example",
                              extra_config=_config(dns.port))
        nyu = ServerProcess(root / "nyu", host=NYU_IP, ports={"smtp": 25}, hostname="mx.nyu.example",
                            extra_config=_config(dns.port))
        lancs.write_config()
        for algorithm, selector in (("rsa", "r1"), ("ed25519", "e1")):
            out = lancs.admin("dkim", "generate", "lancs.example", "--algorithm", algorithm, "--selector", selector)
            name, _, record = out.stdout.strip().splitlines()[-1].partition(" IN TXT ")
            dns.records[name.rstrip(".")] = {"TXT": [record]}
        lancs.start()
        nyu.start()
        try:
            lancs.add_user("alice@lancs.example", PASSWORD)
            nyu.add_user("bob@nyu.example", PASSWORD)
            nyu.add_user("carol@nyu.example", PASSWORD)
            yield {"lancs": lancs, "nyu": nyu, "dns": dns}
        finally:
            lancs.stop()
            nyu.stop()



def inbox(srv: ServerProcess, user: str) -> list[dict[str, Any]]:
    return json.loads(srv.admin("mailbox", "list", user, "--json").stdout)  # type: ignore[no-any-return]


def raw_message(srv: ServerProcess, user: str, uid: int) -> bytes:
    return srv.admin("mailbox", "show", user, str(uid)).stdout.encode()


def queue(srv: ServerProcess) -> list[dict[str, Any]]:
    return json.loads(srv.admin("queue", "list", "--json").stdout)  # type: ignore[no-any-return]


def submit(lancs: ServerProcess, to: list[str], subject: str, body: str = "Hello Bob.\r\n",
           size: int = 0) -> None:
    msg = (f"From: Alice <alice@lancs.example>\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n\r\n{body}"
           + "x" * size)
    context = ssl._create_unverified_context()  # the server's certificate is self-signed
    with smtplib.SMTP(LANCS_IP, lancs.port("submission"), timeout=30) as s:
        s.starttls(context=context)
        s.login("alice@lancs.example", PASSWORD)
        assert s.sendmail("alice@lancs.example", to, msg.encode()) == {}


def by_subject(srv: ServerProcess, user: str, subject: str) -> list[dict[str, Any]]:
    return [m for m in inbox(srv, user) if m["subject"] == subject]


def test_alice_writes_to_bob(net: dict[str, Any]) -> None:
    lancs, nyu = net["lancs"], net["nyu"]
    submit(lancs, ["bob@nyu.example"], "Lunch on Friday")
    got = wait_for(lambda: by_subject(nyu, "bob@nyu.example", "Lunch on Friday"), what="delivery to Bob")
    raw = raw_message(nyu, "bob@nyu.example", got[0]["uid"])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    received = msg.get_all("Received")
    assert any("by mx.nyu.example" in r for r in received)        # Bob's server, over SMTP
    assert any("by mx.lancs.example" in r and "ESMTPSA" in r for r in received)   # Alice's submission
    assert msg["Return-Path"] == "<alice@lancs.example>"
    assert "mx.lancs.example" in next(r for r in received if "by mx.nyu.example" in r)
    assert queue(lancs) == []
    assert ("nyu.example", "MX") in net["dns"].queries
    # Signed by lancs.example with both keys; verified against the keys the DNS server publishes.
    signatures = msg.get_all("DKIM-Signature")
    assert len(signatures) == 2 and all("d=lancs.example" in s for s in signatures)
    for index in range(2):
        assert dkim.DKIM(raw).verify(idx=index, dnsfunc=dns_txt(net["dns"].port)), f"signature {index}"
    tampered = raw.replace(b"Hello Bob.", b"Hello Eve.")
    with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
        dkim.DKIM(tampered).verify(idx=0, dnsfunc=dns_txt(net["dns"].port))


def dns_txt(port: int) -> Callable[..., bytes]:
    """dkimpy's DNS hook, asking the test's DNS server over the network."""
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


def test_full_mailbox_is_retried_until_it_fits(net: dict[str, Any]) -> None:
    lancs, nyu = net["lancs"], net["nyu"]
    nyu.admin("user", "set", "bob@nyu.example", "--quota", "2K")
    try:
        submit(lancs, ["bob@nyu.example"], "Big report", size=4000)
        entry = wait_for(lambda: [e for e in queue(lancs) if e["attempts"] >= 1], what="a deferred attempt")[0]
        assert entry["last_reply"].startswith("452 4.2.2"), entry
        assert entry["state"] == "queued"
        wait_for(lambda: [e for e in queue(lancs) if e["attempts"] >= 2], what="a second attempt")
        assert not by_subject(nyu, "bob@nyu.example", "Big report")
        nyu.admin("user", "set", "bob@nyu.example", "--quota", "1M")
        wait_for(lambda: by_subject(nyu, "bob@nyu.example", "Big report"), what="delivery after the quota rose")
        wait_for(lambda: queue(lancs) == [], what="an empty queue")
    finally:
        nyu.admin("user", "set", "bob@nyu.example", "--quota", "1G")


def test_server_down_then_back(net: dict[str, Any]) -> None:
    lancs, nyu = net["lancs"], net["nyu"]
    nyu.stop()
    try:
        submit(lancs, ["bob@nyu.example"], "While you were out")
        entry = wait_for(lambda: [e for e in queue(lancs) if e["attempts"] >= 1], what="a failed attempt")[0]
        assert "127.0.0.3" in entry["last_reply"] or "mx.nyu.example" in entry["last_reply"]
    finally:
        nyu.start()
    wait_for(lambda: by_subject(nyu, "bob@nyu.example", "While you were out"), timeout=60,
             what="delivery once Bob's server is back")
    wait_for(lambda: queue(lancs) == [], what="an empty queue")


def test_unknown_user_bounces_to_alice(net: dict[str, Any]) -> None:
    lancs = net["lancs"]
    submit(lancs, ["nobody@nyu.example"], "Are you there?")
    dsn = wait_for(lambda: [m for m in inbox(lancs, "alice@lancs.example")
                            if m["subject"].startswith("Undelivered Mail")], what="a DSN in Alice's INBOX")
    raw = raw_message(lancs, "alice@lancs.example", dsn[-1]["uid"])
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/rfc822"]
    status = parts[1].as_string()
    assert "Final-Recipient: rfc822; nobody@nyu.example" in status
    assert "Action: failed" in status and "Status: 5.1.1" in status
    assert "Remote-MTA: dns; mx.nyu.example" in status
    assert "Are you there?" in parts[2].as_string()
    assert queue(lancs) == []


def test_several_recipients_at_several_domains(net: dict[str, Any]) -> None:
    lancs, nyu = net["lancs"], net["nyu"]
    submit(lancs, ["bob@nyu.example", "carol@nyu.example", "x@nullmx.example"], "Party")
    wait_for(lambda: by_subject(nyu, "bob@nyu.example", "Party"), what="Bob's copy")
    wait_for(lambda: by_subject(nyu, "carol@nyu.example", "Party"), what="Carol's copy")
    dsn = wait_for(lambda: [m for m in inbox(lancs, "alice@lancs.example")
                            if m["subject"].startswith("Undelivered Mail")
                            and b"x@nullmx.example" in raw_message(lancs, "alice@lancs.example", m["uid"])],
                   what="a DSN for the null-MX recipient")
    raw = raw_message(lancs, "alice@lancs.example", dsn[-1]["uid"])
    assert b"Status: 5.1.10" in raw and b"bob@nyu.example" not in raw.split(b"message/rfc822")[0]
    wait_for(lambda: queue(lancs) == [], what="an empty queue")


def test_swaks_submits_with_auth(net: dict[str, Any], tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("swaks") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("swaks is not installed")
        pytest.skip("swaks is not installed")
    lancs, nyu = net["lancs"], net["nyu"]
    out = subprocess.run(
        ["swaks", "--server", f"{LANCS_IP}:{lancs.port('submission')}", "--tls", "--auth", "PLAIN",
         "--auth-user", "alice@lancs.example", "--auth-password", PASSWORD, "--from", "alice@lancs.example",
         "--to", "bob@nyu.example", "--header", "Subject: via swaks", "--body", "hi"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: by_subject(nyu, "bob@nyu.example", "via swaks"), what="swaks' message at Bob's")

"""Sieve redirect over real sockets: Bob's script on nyu.example (a ``mailhaven serve`` on
port 25 of its own loopback address) redirects to carol@remote.example, whose MX (found
through a real DNS server) is a plain SMTP peer that records the envelope. The copy
leaves with an SRS0 envelope sender in nyu.example and a Delivered-To: line; a message
already carrying that line is kept instead (a loop); a bounce sent to the SRS address is
forwarded to the original sender, and a forged SRS address is refused. Aliases with
external targets forward the same way; every forwarded copy carries an ARC set sealed
with nyu.example's DKIM key that dkimpy and mailauth (npm) verify."""

from __future__ import annotations

import base64
import json
import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest

from conftest import ServerProcess, run_cli, wait_for
from dnsserver import DNSServer, can_bind
from smtpsink import SmtpSink

NYU_IP, REMOTE_IP = "127.0.0.6", "127.0.0.7"

RECORDS = {
    "nyu.example": {"MX": ["10 mx.nyu.example."]},
    "mx.nyu.example": {"A": [NYU_IP]},
    "remote.example": {"MX": ["10 mx.remote.example."]},
    "lancs.example": {"MX": ["10 mx.remote.example."]},
    "mx.remote.example": {"A": [REMOTE_IP]},
}

SCRIPT = '''require ["copy"];
if header :is "subject" "copy me" { redirect :copy "carol@remote.example"; stop; }
redirect "carol@remote.example";
'''

VACATION = '''require ["vacation", "vacation-seconds"];
vacation :seconds 3600 :addresses ["victor@nyu.example"] "I am away until Monday.";
'''


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for ip in (NYU_IP, REMOTE_IP):
        if not can_bind(ip, 25):
            if os.environ.get("CI") == "true":
                pytest.fail(f"cannot listen on {ip}:25")
            pytest.skip(f"cannot listen on {ip}:25 (needs root or CAP_NET_BIND_SERVICE)")
    root = tmp_path_factory.mktemp("redirect")
    with DNSServer(RECORDS) as dns, SmtpSink(REMOTE_IP) as sink:
        nyu = ServerProcess(root / "nyu", host=NYU_IP, ports={"smtp": 25}, hostname="mx.nyu.example",
                            extra_config=f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n'
                                         '[queue]\nretry = ["1s"]\nwarn_after = "1h"\nexpire = "1h"\npoll = "1s"\n')
        made = run_cli(root / "nyu", "dkim", "generate", "nyu.example", "--selector", "arc").stdout
        record = made.split(" IN TXT ", 1)[1].strip()
        dns.records["arc._domainkey.nyu.example"] = {"TXT": [record]}      # the seal's key
        nyu.start()
        try:
            nyu.add_user("bob@nyu.example")
            nyu.add_user("ann@nyu.example")
            nyu.admin("alias", "add", "fwd@nyu.example", "ann@nyu.example", "Carol@Remote.example")
            nyu.admin("alias", "add", "out@nyu.example", "dave@remote.example")
            script = root / "bob.sieve"
            script.write_text(SCRIPT)
            nyu.admin("sieve", "put", "bob@nyu.example", str(script))
            nyu.add_user("vic@nyu.example")
            away = root / "vic.sieve"
            away.write_text(VACATION)
            nyu.admin("sieve", "put", "vic@nyu.example", str(away))
            yield {"nyu": nyu, "sink": sink, "dns": dns}
        finally:
            nyu.stop()


def _send(mail_from: str, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP(NYU_IP, 25, timeout=30) as smtp:
        assert smtp.sendmail(mail_from, [rcpt], data) == {}


def _inbox_count(nyu: ServerProcess) -> int:
    import json
    return len(json.loads(nyu.admin("mailbox", "list", "bob@nyu.example", "--json").stdout))


def _arrived(sink: SmtpSink, subject: bytes) -> list[Any]:
    return [m for m in sink.messages if b"Subject: " + subject + b"\r\n" in m.data]


def test_redirect_leaves_with_srs_and_a_bounce_comes_back(net: dict[str, Any]) -> None:
    nyu, sink = net["nyu"], net["sink"]
    _send("alice@lancs.example", "bob@nyu.example",
          b"From: alice@lancs.example\r\nTo: bob@nyu.example\r\nSubject: forward me\r\n\r\nHi.\r\n")
    got = wait_for(lambda: _arrived(sink, b"forward me"), what="the redirected copy at remote.example")[0]
    assert got.rcpt_to == ["carol@remote.example"]
    local, _, domain = got.mail_from.partition("@")
    assert local.startswith("SRS0=") and local.endswith("=lancs.example=alice") and domain == "nyu.example"
    seal, _, rest = got.data.partition(b"\r\nDelivered-To: bob@nyu.example\r\n")
    assert seal.startswith(b"ARC-Seal: i=1; ") and rest                # the ARC set, then our line
    assert b"Return-Path:" not in got.data
    assert _inbox_count(nyu) == 0                                  # redirect cancels the implicit keep

    _send("alice@lancs.example", "bob@nyu.example",
          b"From: alice@lancs.example\r\nTo: bob@nyu.example\r\nSubject: copy me\r\n\r\nHi.\r\n")
    wait_for(lambda: _arrived(sink, b"copy me"), what="the :copy redirect")
    assert _inbox_count(nyu) == 1                                  # RFC 3894: kept as well

    # The bounce of the forwarded copy, sent to the SRS address, reaches Alice.
    with smtplib.SMTP(NYU_IP, 25, timeout=30) as smtp:
        assert smtp.sendmail("", [got.mail_from], b"From: MAILER-DAEMON@remote.example\r\n"
                             b"Subject: bounce of forward me\r\n\r\nUndeliverable.\r\n") == {}
        forged = got.mail_from.replace("SRS0=", "SRS0=X", 1)
        code, _ = smtp.docmd("MAIL FROM:<>")
        assert code == 250
        code, _ = smtp.docmd(f"RCPT TO:<{forged}>")
        assert code == 550                                         # not ours: no open relay
    bounce = wait_for(lambda: _arrived(sink, b"bounce of forward me"), what="the bounce at Alice's MX")[0]
    assert bounce.rcpt_to == ["alice@lancs.example"] and bounce.mail_from == ""


def test_a_message_that_was_here_before_is_not_redirected_again(net: dict[str, Any]) -> None:
    nyu, sink = net["nyu"], net["sink"]
    before = _inbox_count(nyu)
    _send("alice@lancs.example", "bob@nyu.example",
          b"Delivered-To: bob@nyu.example\r\nFrom: alice@lancs.example\r\nTo: bob@nyu.example\r\n"
          b"Subject: looping\r\n\r\nAgain.\r\n")
    wait_for(lambda: _inbox_count(nyu) == before + 1, what="the looping message kept in INBOX")
    _send("alice@lancs.example", "bob@nyu.example",          # another recipient's line: no loop
          b"Delivered-To: dave@elsewhere.example\r\nFrom: alice@lancs.example\r\nSubject: onward\r\n\r\nOn.\r\n")
    wait_for(lambda: _arrived(sink, b"onward"), what="the redirect of a message from elsewhere")
    assert not _arrived(sink, b"looping") and _inbox_count(nyu) == before + 1


def test_srs_addresses_reverse_only_with_our_key_and_in_time() -> None:
    from mailhaven.sieve import srs

    key, now = b"k" * 32, 1_800_000_000.0
    address = srs.forward("Alice@Lancs.example", "nyu.example", key, now)
    assert address.startswith("SRS0=") and address.endswith("=Lancs.example=Alice@nyu.example")
    assert srs.reverse(address, key, now + 86400 * 20) == "Alice@Lancs.example"
    assert srs.reverse(address.upper(), key, now) == "ALICE@LANCS.EXAMPLE"       # case-insensitive hash
    assert srs.reverse(address, b"x" * 32, now) is None                          # another server's
    assert srs.reverse(address, key, now + 86400 * 22) is None                   # expired
    assert srs.reverse(address.replace("=Alice@", "=Eve@"), key, now) is None    # tampered
    assert srs.forward("", "nyu.example", key, now) == ""                        # bounces stay bounces
    assert srs.forward(address, "nyu.example", key, now) == address              # not rewritten twice


def test_vacation_replies_once_per_sender_and_never_to_a_list(net: dict[str, Any]) -> None:
    nyu, sink = net["nyu"], net["sink"]
    _send("alice@lancs.example", "vic@nyu.example",
          b"From: alice@lancs.example\r\nTo: Vic <vic@nyu.example>\r\nSubject: meeting\r\n"
          b"Message-ID: <m1@lancs.example>\r\n\r\nTomorrow?\r\n")
    reply = wait_for(lambda: _arrived(sink, b"Auto: meeting"), what="the vacation reply")[0]
    assert reply.mail_from == "" and reply.rcpt_to == ["alice@lancs.example"]    # RFC 3834 3.3
    assert b"\r\nAuto-Submitted: auto-replied\r\n" in reply.data
    assert b"\r\nIn-Reply-To: <m1@lancs.example>\r\n" in reply.data
    assert b"\r\nReferences: <m1@lancs.example>\r\n" in reply.data
    assert b"From: vic@nyu.example\r\n" in reply.data and b"I am away until Monday." in reply.data

    _send("alice@lancs.example", "vic@nyu.example",                  # within the hour: no second reply
          b"From: alice@lancs.example\r\nTo: vic@nyu.example\r\nSubject: meeting again\r\n\r\n?\r\n")
    _send("owner-dev@lists.example.org", "vic@nyu.example",          # a list message: never
          b"From: dave@lancs.example\r\nTo: dev@lists.example.org, vic@nyu.example\r\nSubject: release\r\n"
          b"List-Id: <dev.lists.example.org>\r\n\r\nOut.\r\n")
    _send("erin@lancs.example", "vic@nyu.example",                   # Bcc: vic is not in To/Cc
          b"From: erin@lancs.example\r\nTo: team@lancs.example\r\nSubject: bcc note\r\n\r\nFYI\r\n")
    _send("frank@lancs.example", "vic@nyu.example",                  # :addresses names victor@
          b"From: frank@lancs.example\r\nTo: victor@nyu.example\r\nSubject: alias note\r\n\r\nHi\r\n")
    wait_for(lambda: _arrived(sink, b"Auto: alias note"), what="the reply for an :addresses match")
    import time
    time.sleep(2)                                                     # the queue polls every second
    assert len(_arrived(sink, b"Auto: meeting")) == 1
    assert not _arrived(sink, b"Auto: meeting again") and not _arrived(sink, b"Auto: release")
    assert not _arrived(sink, b"Auto: bcc note")
    import json
    assert len(json.loads(nyu.admin("mailbox", "list", "vic@nyu.example", "--json").stdout)) == 5   # all kept


MAILAUTH = Path(__file__).parent / "mailauth" / "node_modules" / ".bin" / "mailauth"


def _arc_chain(dns: DNSServer, data: bytes, tmp: Path) -> tuple[str, str]:
    """The chain's status by dkimpy and by mailauth (npm), keys from the test's DNS table."""
    from dns import rdata as dns_rdata

    def key(name: str) -> list[list[str]]:
        return [[s.decode() for s in dns_rdata.from_text("IN", "TXT", v).strings]  # type: ignore[attr-defined]
                for v in dns.records.get(name, {}).get("TXT", [])]

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        text = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        found = key(text)
        return "".join(found[0]).encode() if found else None

    cv, _, reason = dkim.arc_verify(data, dnsfunc=dnsfunc)
    if not MAILAUTH.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("mailauth is required under CI=true")
        pytest.skip("mailauth not installed (npm ci in tests/mailauth)")
    names = ("arc._domainkey.nyu.example", "l._domainkey.lists.example")
    (tmp / "dns.json").write_text(json.dumps({n: {"TXT": key(n)} for n in names if key(n)}))
    (tmp / "msg.eml").write_bytes(data)
    out = subprocess.run([str(MAILAUTH), "report", "--client-ip", NYU_IP, "--sender", "x@nyu.example",
                          "--helo", "mx.nyu.example", "--mta", "mx.remote.example", "--dns-cache",
                          str(tmp / "dns.json"), str(tmp / "msg.eml")],
                         capture_output=True, text=True, timeout=60, check=True)
    return cv.decode(), str(json.loads(out.stdout)["arc"]["status"]["result"])


def test_alias_forwards_to_external_targets_with_srs_and_an_arc_seal(net: dict[str, Any], tmp_path: Path) -> None:
    nyu, sink, dns = net["nyu"], net["sink"], net["dns"]
    assert "carol@remote.example" in nyu.admin("alias", "list").stdout     # the CLI took an external target
    _send("alice@lancs.example", "fwd@nyu.example",
          b"From: alice@lancs.example\r\nTo: fwd@nyu.example\r\nSubject: alias fwd\r\n\r\nHi all.\r\n")
    got = wait_for(lambda: _arrived(sink, b"alias fwd"), what="the forwarded copy at remote.example")[0]
    assert got.rcpt_to == ["carol@remote.example"]
    local, _, domain = got.mail_from.partition("@")
    assert local.startswith("SRS0=") and local.endswith("=lancs.example=alice") and domain == "nyu.example"
    assert got.data.startswith(b"ARC-Seal: i=1; ") and b"\r\nDelivered-To: fwd@nyu.example\r\n" in got.data
    assert b"ARC-Authentication-Results: i=1; mx.nyu.example" in got.data
    assert len(json.loads(nyu.admin("mailbox", "list", "ann@nyu.example", "--json").stdout)) == 1   # and kept
    assert _arc_chain(dns, got.data, tmp_path) == ("pass", "pass")

    # Bob's Sieve redirect of a message a list sealed already: our seal extends its chain (i=2).
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    dns.records["l._domainkey.lists.example"] = {"TXT": [" ".join(f'"{record[i:i + 200]}"'
                                                                  for i in range(0, len(record), 200))]}
    listed = (b"Authentication-Results: lists.example; spf=pass smtp.mailfrom=alice@lancs.example\r\n"
              b"From: alice@lancs.example\r\nTo: dev@lists.example\r\nSubject: sealed twice\r\n\r\nHi.\r\n")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    listed = b"".join(dkim.arc_sign(listed, b"l", b"lists.example", pem, b"lists.example",
                                    include_headers=[b"from", b"to", b"subject"])) + listed
    _send("owner-dev@lists.example", "bob@nyu.example", listed)
    twice = wait_for(lambda: _arrived(sink, b"sealed twice"), what="the redirected list message")[0]
    assert twice.data.startswith(b"ARC-Seal: i=2; cv=pass; ")
    assert _arc_chain(dns, twice.data, tmp_path) == ("pass", "pass")

    # An alias with only external targets: a message that already went through it is a loop.
    with smtplib.SMTP(NYU_IP, 25, timeout=30) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("alice@lancs.example", ["out@nyu.example"],
                          b"Delivered-To: out@nyu.example\r\nFrom: alice@lancs.example\r\n"
                          b"Subject: alias loop\r\n\r\nAgain.\r\n")
        assert refused.value.smtp_code == 554 and refused.value.smtp_error.startswith(b"5.4.6")
        assert smtp.sendmail("alice@lancs.example", ["out@nyu.example"],
                             b"From: alice@lancs.example\r\nSubject: alias out\r\n\r\nOut.\r\n") == {}
    out = wait_for(lambda: _arrived(sink, b"alias out"), what="the external-only alias's copy")[0]
    assert out.rcpt_to == ["dave@remote.example"] and not _arrived(sink, b"alias loop")

"""ARC (RFC 8617) on arrival, over real sockets against ``mailhaven serve``: a mailing list
(lists.example) changed Alice's message (good.example, ``p=reject``) so her DKIM signature
broke, and sealed it with dkimpy; DNS from tests/dnsserver.py. A chain sealed by a trusted
sealer whose ARC-Authentication-Results said dmarc=pass overrides the DMARC failure; an
untrusted sealer's or a broken chain does not. The ARC verdicts are checked against the
independent ``mailauth`` (npm) on the same messages and DNS data."""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from dns import rdata as dns_rdata

from conftest import ServerProcess
from dkimkeys import rsa_pair
from dnsserver import DNSServer, txt
from mx_client import fetch_by_subject, send_mx

HOST = "127.0.0.1"
OUTSIDE = "127.0.0.2"          # in no SPF record: Alice's own SPF fails for the list's copy
AUTHSERV = "mail.test.example"
PEM, PUB = rsa_pair()
MAILAUTH = Path(__file__).parent / "mailauth" / "node_modules" / ".bin" / "mailauth"


RECORDS = {
    "good.example": {"TXT": [txt("v=spf1 ip4:127.0.0.1 -all")]},
    "sel._domainkey.good.example": {"TXT": [txt(f"v=DKIM1; k=rsa; p={PUB}")]},
    "_dmarc.good.example": {"TXT": [txt("v=DMARC1; p=reject")]},
    "arc._domainkey.lists.example": {"TXT": [txt(f"v=DKIM1; k=rsa; p={PUB}")]},
    "arc._domainkey.evil.example": {"TXT": [txt(f"v=DKIM1; k=rsa; p={PUB}")]},
    "lists.example": {"TXT": [txt("v=spf1 -all")]},
    "evil.example": {"TXT": [txt("v=spf1 -all")]},
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with DNSServer(RECORDS) as dns:
        server = ServerProcess(tmp_path_factory.mktemp("arc") / "data", hostname=AUTHSERV, extra_config=(
            f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n'
            '[filter]\narc_trusted = ["lists.example"]\n'))
        server.start()
        server.add_user("bob@nyu.example")
        try:
            yield server
        finally:
            server.stop()


def list_copy(subject: str, sealer: str, author: str = "alice@good.example") -> bytes:
    """Alice's signed message as the list at ``sealer`` passes it on: its own verdict in an
    Authentication-Results field, a changed Subject (her signature breaks), then sealed."""
    original = (f"From: {author}\r\nTo: dev@{sealer}\r\nSubject: {subject}\r\n"
                f"Message-ID: <{subject.replace(' ', '.')}@good.example>\r\n\r\nHello list.\r\n").encode()
    signed = dkim.sign(original, b"sel", b"good.example", PEM, include_headers=[b"from", b"subject"]) + original
    ar = (f"Authentication-Results: {sealer}; dkim=pass header.d=good.example header.s=sel; "
          "spf=pass smtp.mailfrom=alice@good.example; dmarc=pass header.from=good.example\r\n").encode()
    changed = ar + signed.replace(f"Subject: {subject}".encode(), f"Subject: [dev] {subject}".encode())
    seal = dkim.arc_sign(changed, b"arc", sealer.encode(), PEM, sealer.encode(),
                         include_headers=[b"from", b"to", b"subject", b"message-id"])
    assert seal, "dkimpy made no ARC set"
    return b"".join(seal) + changed


def send(srv: ServerProcess, mail_from: str, msg: bytes) -> None:
    send_mx(srv, mail_from, ["bob@nyu.example"], msg, source=OUTSIDE)


def stored_ar(srv: ServerProcess, subject: str) -> str | None:
    header = fetch_by_subject(srv, subject, section="BODY.PEEK[HEADER.FIELDS (AUTHENTICATION-RESULTS)]")
    if header is None:
        return None
    text = re.sub(r"\r\n[ \t]+", " ", header.decode())
    ours = [line for line in text.split("\r\n") if line.lower().startswith(f"authentication-results: {AUTHSERV}")]
    return ours[0] if ours else None


def test_trusted_sealer_overrides_a_dmarc_failure(srv: ServerProcess) -> None:
    send(srv, "bounce@lists.example", list_copy("release notes", "lists.example"))
    ar = stored_ar(srv, "[dev] release notes")
    assert ar is not None, "refused or lost: the trusted ARC chain did not override"
    assert "dkim=fail" in ar or "dkim=neutral" in ar
    assert "dmarc=fail header.from=good.example policy.dmarc=reject" in ar
    assert "policy overridden: trusted ARC sealer lists.example" in ar
    assert re.search(r"arc=pass \(i=1 as\.d=lists\.example\) header\.oldest-pass=0", ar), ar


def test_untrusted_sealer_or_broken_chain_does_not(srv: ServerProcess) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:      # sealed fine, but not by one we trust
        send(srv, "bounce@evil.example", list_copy("evil notes", "evil.example"))
    assert refused.value.smtp_code == 550
    broken = list_copy("broken notes", "lists.example").replace(b"Hello list.", b"Hello sucker.")
    with pytest.raises(smtplib.SMTPDataError):                  # the AMS no longer verifies
        send(srv, "bounce@lists.example", broken)
    assert stored_ar(srv, "evil notes") is None and stored_ar(srv, "broken notes") is None


def test_no_chain_is_arc_none(srv: ServerProcess) -> None:
    send(srv, "x@lists.example", b"From: x@lists.example\r\nTo: bob@nyu.example\r\nSubject: plain\r\n\r\nHi\r\n")
    ar = stored_ar(srv, "plain")
    assert ar is not None and "arc=none" in ar and "smtp.remote-ip=127.0.0.2" in ar


def mailauth_arc(msg: bytes, mail_from: str, tmp: Path) -> str:
    if not MAILAUTH.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("mailauth is required under CI=true")
        pytest.skip("mailauth not installed (npm ci in tests/mailauth)")
    cache: dict[str, dict[str, list[list[str]]]] = {}
    for name, types in RECORDS.items():
        cache[name] = {"TXT": [[s.decode() for s in dns_rdata.from_text("IN", "TXT", v).strings]  # type: ignore[attr-defined]
                               for v in types["TXT"]]}
    (tmp / "dns.json").write_text(json.dumps(cache))
    (tmp / "msg.eml").write_bytes(msg)
    out = subprocess.run([str(MAILAUTH), "report", "--client-ip", OUTSIDE, "--sender", mail_from,
                          "--helo", "client.example", "--mta", AUTHSERV, "--dns-cache", str(tmp / "dns.json"),
                          str(tmp / "msg.eml")], capture_output=True, text=True, timeout=60, check=True)
    return str(json.loads(out.stdout)["arc"]["status"]["result"])


def test_arc_verdicts_agree_with_mailauth(srv: ServerProcess, tmp_path: Path) -> None:
    author = "y@lists.example"                                  # no DMARC policy: never refused
    cases = [("agree pass", list_copy("agree pass", "lists.example", author)),
             ("agree fail", list_copy("agree fail", "lists.example", author).replace(b"Hello list.", b"Bye.")),
             ("agree none", b"From: y@lists.example\r\nTo: bob@nyu.example\r\nSubject: agree none\r\n\r\nHi\r\n")]
    for name, msg in cases:
        theirs = mailauth_arc(msg, "bounce@lists.example", tmp_path)
        send(srv, "bounce@lists.example", msg)
        subject = re.search(rb"Subject: ((?:\[dev\] )?agree \w+)", msg).group(1).decode()  # type: ignore[union-attr]
        ar = stored_ar(srv, subject)
        assert ar is not None, name
        ours = re.search(r"\barc=(\w+)", ar)
        assert ours is not None and ours.group(1) == theirs, (name, ar, theirs)

"""Inbound trust on port 25 (filter/): SPF, DKIM, DMARC and Authentication-Results, over
real sockets against ``mailhaven serve``, with DNS from tests/dnsserver.py, clients on
loopback addresses inside and outside the SPF records, and messages signed by dkimpy."""

from __future__ import annotations

import json
import os
import re
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from dns import rdata as dns_rdata

from conftest import ServerProcess
from dkimkeys import ed25519_pair, rsa_pair
from dnsserver import DNSServer, txt
from mx_client import fetch_by_subject, send_mx

HOST = "127.0.0.1"
INSIDE = "127.0.0.1"      # listed in the SPF records below
OUTSIDE = "127.0.0.2"     # not listed
AUTHSERV = "mail.test.example"

RSA_PEM, RSA_PUB = rsa_pair()
ED_PRIV, ED_PUB = ed25519_pair()


RECORDS = {
    "good.example": {"TXT": [txt(f"v=spf1 ip4:{INSIDE} -all")]},
    "sel._domainkey.good.example": {"TXT": [txt(f"v=DKIM1; k=rsa; p={RSA_PUB}")]},
    "_dmarc.good.example": {"TXT": [txt("v=DMARC1; p=reject")]},
    "quar.example": {"TXT": [txt(f"v=spf1 ip4:{INSIDE} -all")]},
    "sel._domainkey.quar.example": {"TXT": [txt(f"v=DKIM1; k=rsa; p={RSA_PUB}")]},
    "_dmarc.quar.example": {"TXT": [txt("v=DMARC1; p=quarantine; adkim=s")]},
    "ed.example": {"TXT": [txt("v=spf1 -all")]},
    "ed._domainkey.ed.example": {"TXT": [txt(f"v=DKIM1; k=ed25519; p={ED_PUB}")]},
    "_dmarc.ed.example": {"TXT": [txt("v=DMARC1; p=reject")]},
    "none.example": {"A": ["192.0.2.1"]},                  # no SPF, no DMARC
    "helo.good.example": {"TXT": [txt(f"v=spf1 ip4:{INSIDE} -all")]},
    # RFC 7208 4.6.4: three lookups that find nothing (the limit is two) -> permerror
    "void.example": {"TXT": [txt("v=spf1 a:nx1.void.example a:nx2.void.example a:nx3.void.example "
                                 f"ip4:{INSIDE} -all")]},
    # eleven DNS-querying terms (the limit is ten) -> permerror
    "many.example": {"TXT": [txt("v=spf1 " + " ".join(f"a:h{i}.many.example" for i in range(11))
                                 + f" ip4:{INSIDE} -all")]},
    **{f"h{i}.many.example": {"A": ["192.0.2.9"]} for i in range(11)},
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    with DNSServer(RECORDS) as server:
        yield server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, dns: DNSServer) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("filter") / "data"
    server = ServerProcess(data, hostname=AUTHSERV,
                           extra_config=f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n')
    server.start()
    server.add_user("bob@nyu.example")
    try:
        yield server
    finally:
        server.stop()


def message(sender: str, subject: str, extra: bytes = b"") -> bytes:
    return extra + (f"From: {sender}\r\nTo: bob@nyu.example\r\nSubject: {subject}\r\n"
                    f"Message-ID: <{subject.replace(' ', '.')}@x>\r\n\r\nHello Bob.\r\n").encode()


def sign(msg: bytes, domain: str, selector: str = "sel", ed: bool = False) -> bytes:
    if ed:
        sig = dkim.sign(msg, selector.encode(), domain.encode(), ED_PRIV,
                        signature_algorithm=b"ed25519-sha256", include_headers=[b"from", b"subject"])
    else:
        sig = dkim.sign(msg, selector.encode(), domain.encode(), RSA_PEM, include_headers=[b"from", b"subject"])
    return sig + msg


def send(srv: ServerProcess, mail_from: str, msg: bytes, source: str = INSIDE) -> None:
    send_mx(srv, mail_from, ["bob@nyu.example"], msg, source=source)


fetch = fetch_by_subject
"""The stored message with this subject in ``folder``, read over IMAP."""


def auth_results(stored: bytes) -> list[str]:
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = re.sub(r"\r\n[ \t]+", " ", head)
    return [line.split(":", 1)[1].strip() for line in unfolded.split("\r\n")
            if line.lower().startswith("authentication-results:")]


def test_spf_dkim_dmarc_pass(srv: ServerProcess) -> None:
    send(srv, "alice@good.example", sign(message("alice@good.example", "all pass"), "good.example"))
    stored = fetch(srv, "all pass")
    assert stored is not None
    (ar,) = auth_results(stored)
    assert ar.startswith(f"{AUTHSERV};")
    assert "spf=pass smtp.mailfrom=alice@good.example" in ar
    assert "dkim=pass header.d=good.example header.s=sel" in ar
    assert "dmarc=pass header.from=good.example" in ar


def test_ed25519_signature_passes_dmarc_without_spf(srv: ServerProcess) -> None:
    send(srv, "news@ed.example", sign(message("news@ed.example", "ed signed"), "ed.example", "ed", ed=True))
    stored = fetch(srv, "ed signed")
    assert stored is not None
    (ar,) = auth_results(stored)
    assert "spf=fail" in ar and "dkim=pass header.d=ed.example header.s=ed" in ar
    assert "dmarc=pass" in ar


def test_forged_authentication_results_removed(srv: ServerProcess) -> None:
    forged = (f"Authentication-Results: {AUTHSERV};\r\n\tdkim=pass header.d=bank.example\r\n"
              f"Authentication-Results: (comment) {AUTHSERV.upper()}; dmarc=pass\r\n"
              "Authentication-Results: other.example; spf=pass\r\n").encode()
    send(srv, "someone@none.example", message("someone@none.example", "forged ar", forged))
    stored = fetch(srv, "forged ar")
    assert stored is not None
    ars = auth_results(stored)
    assert len(ars) == 2 and ars[1] == "other.example; spf=pass"
    assert "bank.example" not in ars[0] and ars[0].startswith(f"{AUTHSERV};")
    assert b"bank.example" not in stored


def test_no_dmarc_record_is_none(srv: ServerProcess) -> None:
    send(srv, "someone@none.example", message("someone@none.example", "no policy"), source=OUTSIDE)
    stored = fetch(srv, "no policy")
    assert stored is not None
    (ar,) = auth_results(stored)
    assert "spf=none" in ar and "dkim=none" in ar and "dmarc=none header.from=none.example" in ar


def test_null_sender_checks_helo_over_bdat(srv: ServerProcess) -> None:
    body = message("mailer-daemon@good.example", "bounce by bdat")
    with socket.create_connection((HOST, srv.port("smtp")), timeout=30) as s:
        s.settimeout(30)
        f = s.makefile("rb")

        def reply() -> bytes:
            lines = [f.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(f.readline())
            return lines[-1]

        reply()
        for cmd in (b"EHLO helo.good.example", b"MAIL FROM:<>", b"RCPT TO:<bob@nyu.example>"):
            s.sendall(cmd + b"\r\n")
            assert reply()[:1] == b"2", cmd
        s.sendall(b"BDAT %d LAST\r\n" % len(body) + body)
        assert reply().startswith(b"250")
        s.sendall(b"QUIT\r\n")
    stored = fetch(srv, "bounce by bdat")
    assert stored is not None
    (ar,) = auth_results(stored)
    assert "spf=pass smtp.helo=helo.good.example" in ar               # RFC 7208 2.4


@pytest.mark.parametrize("domain", ["void.example", "many.example"])
def test_spf_lookup_limits_are_permerror(srv: ServerProcess, domain: str) -> None:
    send(srv, f"a@{domain}", message(f"a@{domain}", f"limits {domain}"))
    stored = fetch(srv, f"limits {domain}")
    assert stored is not None
    (ar,) = auth_results(stored)
    assert f"spf=permerror smtp.mailfrom=a@{domain}" in ar           # RFC 7208 4.6.4


def test_dmarc_reject_refused_at_end_of_data(srv: ServerProcess) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(srv, "alice@good.example", message("alice@good.example", "forged bank"), source=OUTSIDE)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1")
    assert fetch(srv, "forged bank") is None


def test_dkim_fail_and_quarantine_goes_to_junk(srv: ServerProcess) -> None:
    signed = sign(message("alice@quar.example", "tampered"), "quar.example")
    tampered = signed.replace(b"Hello Bob.", b"Pay me now.")
    send(srv, "alice@quar.example", tampered, source=OUTSIDE)
    assert fetch(srv, "tampered") is None
    stored = fetch(srv, "tampered", folder="Junk")
    assert stored is not None
    (ar,) = auth_results(stored)
    assert "spf=fail" in ar and "dkim=neutral header.d=quar.example" in ar    # body hash did not verify
    assert "dmarc=fail header.from=quar.example policy.dmarc=quarantine" in ar


def test_checks_can_be_turned_off(tmp_path: Path, dns: DNSServer) -> None:
    server = ServerProcess(tmp_path / "data", hostname=AUTHSERV, extra_config=(
        f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[filter]\ndmarc = false\ndkim_max_size = "2K"\n')).start()
    try:
        server.add_user("bob@nyu.example")
        send(server, "alice@good.example", message("alice@good.example", "no dmarc"), source=OUTSIDE)
        stored = fetch(server, "no dmarc")
        assert stored is not None
        (ar,) = auth_results(stored)
        assert "spf=fail" in ar and "dmarc" not in ar
        big = sign(message("alice@good.example", "too big to verify") + b"x" * 3000 + b"\r\n", "good.example")
        send(server, "alice@good.example", big)
        stored = fetch(server, "too big to verify")
        assert stored is not None and stored.endswith(big)
        (ar,) = auth_results(stored)
        assert "spf=pass" in ar and "dkim=policy header.d=good.example" in ar
    finally:
        server.stop()


def test_bad_filter_value_stops_start_up(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", extra_config='[filter]\nspf = "yes"\n')
    with pytest.raises(RuntimeError) as failed:
        server.start(timeout=20)
    assert "filter.spf: expected true or false" in str(failed.value)


# -- the same verdicts from an independent implementation: mailauth (npm) --------------------

MAILAUTH = Path(__file__).parent / "mailauth" / "node_modules" / ".bin" / "mailauth"


def need_mailauth() -> None:
    """mailauth is installed by scripts/test (npm ci in tests/mailauth); never skipped under CI."""
    if not MAILAUTH.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("mailauth is required under CI=true")
        pytest.skip("mailauth not installed (npm ci in tests/mailauth)")


def dns_cache() -> dict[str, dict[str, list[list[str]] | list[str]]]:
    """RECORDS, the table tests/dnsserver.py serves, in mailauth's --dns-cache form."""
    out: dict[str, dict[str, list[list[str]] | list[str]]] = {}
    for name, types in RECORDS.items():
        for rdtype, values in types.items():
            if rdtype == "TXT":
                out.setdefault(name, {})["TXT"] = [
                    [s.decode() for s in dns_rdata.from_text("IN", "TXT", v).strings]  # type: ignore[attr-defined]
                    for v in values]
            else:
                out.setdefault(name, {})[rdtype] = list(values)
    return out


def mailauth(msg: bytes, ip: str, mail_from: str, tmp: Path) -> dict[str, object]:
    (tmp / "dns.json").write_text(json.dumps(dns_cache()))
    (tmp / "msg.eml").write_bytes(msg)
    out = subprocess.run([str(MAILAUTH), "report", "--client-ip", ip, "--sender", mail_from,
                          "--helo", "client.example", "--mta", AUTHSERV, "--dns-cache", str(tmp / "dns.json"),
                          str(tmp / "msg.eml")], capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(out.stdout)
    return {
        "spf": report["spf"]["status"]["result"],
        "dkim": [r["status"]["result"] for r in report["dkim"]["results"]],
        "dmarc": report["dmarc"]["status"]["result"],
    }


def ours(ar: str) -> dict[str, object]:
    found = re.findall(r"\b(spf|dkim|dmarc)=(\w+)", ar)
    return {
        "spf": next(r for m, r in found if m == "spf"),
        "dkim": [r for m, r in found if m == "dkim" and r != "none"] or ["none"],
        "dmarc": next(r for m, r in found if m == "dmarc"),
    }


def test_verdicts_agree_with_mailauth(srv: ServerProcess, tmp_path: Path) -> None:
    need_mailauth()
    tampered = sign(message("alice@quar.example", "x tampered"), "quar.example").replace(b"Hello", b"Pay")
    cases = [
        ("alice@good.example", INSIDE, sign(message("alice@good.example", "x pass"), "good.example"), "INBOX"),
        ("news@ed.example", INSIDE, sign(message("news@ed.example", "x ed"), "ed.example", "ed", ed=True), "INBOX"),
        ("alice@quar.example", OUTSIDE, tampered, "Junk"),
        ("someone@none.example", OUTSIDE, message("someone@none.example", "x none"), "INBOX"),
        ("alice@quar.example", OUTSIDE, sign(message("alice@quar.example", "x hdr"), "quar.example")
         .replace(b"Subject: x hdr", b"Subject: x hdr changed"), "Junk"),
        ("alice@good.example", OUTSIDE, sign(message("alice@good.example", "x relaxed"), "good.example"), "INBOX"),
    ]
    for mail_from, ip, msg, folder in cases:
        send(srv, mail_from, msg, source=ip)
        subject = re.search(rb"\r\nSubject: (.*)\r\n", msg).group(1).decode()  # type: ignore[union-attr]
        stored = fetch(srv, subject, folder)
        assert stored is not None, subject
        (ar,) = auth_results(stored)
        theirs = mailauth(msg, ip, mail_from, tmp_path)
        if theirs["dkim"] == []:
            theirs["dkim"] = ["none"]
        assert ours(ar) == theirs, (subject, ar, theirs)
    # The refused one: mailauth also finds a DMARC failure of a p=reject domain.
    forged = message("alice@good.example", "x forged")
    with pytest.raises(smtplib.SMTPDataError):
        send(srv, "alice@good.example", forged, source=OUTSIDE)
    assert mailauth(forged, OUTSIDE, "alice@good.example", tmp_path)["dmarc"] == "fail"

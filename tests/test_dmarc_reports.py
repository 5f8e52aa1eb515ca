"""DMARC aggregate reports (RFC 7489 7.2) over real sockets against ``mailhaven serve``:
mail arrives on port 25 from domains whose DMARC records (tests/dnsserver.py) ask for
reports; ``mailhaven dmarc send-reports`` mails each domain's gzipped XML report through
the outbound queue to an SMTP peer (tests/smtpsink.py), only to destinations that agreed
(7.1); reports about our own domain sent to ``[dmarc] receive`` are parsed and shown by
``mailhaven dmarc reports``."""

from __future__ import annotations

import email
import gzip
import io
import json
import smtplib
import zipfile
from collections.abc import Iterator
from email.policy import default
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from conftest import ServerProcess, free_port, wait_for
from dnsserver import DNSServer
from mx_client import send_mx
from smtpsink import SmtpSink

INSIDE, OUTSIDE = "127.0.0.1", "127.0.0.2"
RECORDS = {
    "good.example": {"TXT": [f'"v=spf1 ip4:{INSIDE} -all"']},
    "_dmarc.good.example": {"TXT": ['"v=DMARC1; p=reject; rua=mailto:agg@good.example"']},
    "ext.example": {"TXT": [f'"v=spf1 ip4:{INSIDE} -all"']},
    "_dmarc.ext.example": {"TXT": ['"v=DMARC1; p=none; rua=mailto:dmarc@collector.example!10m"']},
    "ext.example._report._dmarc.collector.example": {"TXT": ['"v=DMARC1"']},     # 7.1: agreed
    "nover.example": {"TXT": [f'"v=spf1 ip4:{INSIDE} -all"']},
    "_dmarc.nover.example": {"TXT": ['"v=DMARC1; p=none; rua=mailto:dmarc@collector.example"']},
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port = free_port()
    with DNSServer(RECORDS) as dns, SmtpSink("127.0.0.1", port) as sink:
        srv = ServerProcess(tmp_path_factory.mktemp("dmarc") / "data", extra_config=(
            f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n'
            '[queue]\nretry = ["1s"]\npoll = "1s"\n'
            '[dmarc]\nreceive = "dmarc@nyu.example"\norg_name = "mail.test.example"\n'
            f'[relay]\ntls = "none"\n[relay.routes]\n"good.example" = "127.0.0.1:{port}"\n'
            f'"collector.example" = "127.0.0.1:{port}"\n'))
        srv.start()
        try:
            srv.add_users("bob@nyu.example", "dmarc@nyu.example")
            yield {"srv": srv, "sink": sink}
        finally:
            srv.stop()


def send(srv: ServerProcess, sender: str, rcpt: str, data: bytes, source: str = INSIDE) -> None:
    send_mx(srv, sender, [rcpt], data, source=source)


def note(sender: str, subject: str) -> bytes:
    return f"From: {sender}\r\nTo: bob@nyu.example\r\nSubject: {subject}\r\n\r\nHi.\r\n".encode()


def report_of(data: bytes) -> tuple[str, ET.Element]:
    msg = email.message_from_bytes(data, policy=default)
    (part,) = [p for p in msg.walk() if p.get_content_type() == "application/gzip"]
    return part.get_filename() or "", ET.fromstring(gzip.decompress(part.get_payload(decode=True)))


def test_aggregate_reports_go_to_rua_through_the_queue(net: dict[str, Any]) -> None:
    srv, sink = net["srv"], net["sink"]
    send(srv, "alice@good.example", "bob@nyu.example", note("alice@good.example", "one"))
    send(srv, "alice@good.example", "bob@nyu.example", note("alice@good.example", "two"))
    with pytest.raises(smtplib.SMTPDataError):                       # p=reject: refused, and reported
        send(srv, "alice@good.example", "bob@nyu.example", note("alice@good.example", "forged"), OUTSIDE)
    send(srv, "x@ext.example", "bob@nyu.example", note("x@ext.example", "ext"))
    send(srv, "x@nover.example", "bob@nyu.example", note("x@nover.example", "nover"))

    out = srv.admin("dmarc", "send-reports").stdout
    assert "report for good.example queued to agg@good.example" in out
    assert "report for ext.example queued to dmarc@collector.example" in out
    assert "nover.example" not in out                                  # RFC 7489 7.1: not authorised
    got = wait_for(lambda: len(sink.messages) >= 2 and sink.messages, what="two reports at the sink")
    by_rcpt = {m.rcpt_to[0]: m for m in got}
    assert set(by_rcpt) == {"agg@good.example", "dmarc@collector.example"}

    name, feedback = report_of(by_rcpt["agg@good.example"].data)
    assert name.startswith("mail.test.example!good.example!") and name.endswith(".xml.gz")   # 7.2.1.1
    subject = str(email.message_from_bytes(by_rcpt["agg@good.example"].data, policy=default)["Subject"])
    assert subject.startswith("Report Domain: good.example Submitter: mail.test.example Report-ID: <")
    assert feedback.findtext("report_metadata/org_name") == "mail.test.example"
    assert feedback.findtext("policy_published/domain") == "good.example"
    assert feedback.findtext("policy_published/p") == "reject"
    rows = {r.findtext("row/source_ip"): r for r in feedback.findall("record")}
    assert set(rows) == {INSIDE, OUTSIDE}
    ok, bad = rows[INSIDE], rows[OUTSIDE]
    assert ok.findtext("row/count") == "2" and ok.findtext("row/policy_evaluated/disposition") == "none"
    assert ok.findtext("row/policy_evaluated/spf") == "pass" and ok.findtext("row/policy_evaluated/dkim") == "fail"
    assert ok.findtext("auth_results/spf/result") == "pass" and ok.findtext("identifiers/header_from") == "good.example"
    assert bad.findtext("row/count") == "1" and bad.findtext("row/policy_evaluated/disposition") == "reject"
    assert bad.findtext("auth_results/spf/result") == "fail"
    assert "no reports to send" in srv.admin("dmarc", "send-reports").stdout    # each row reported once


GOOGLE_STYLE = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <report_id>1234567890123456789</report_id>
    <date_range><begin>1796169600</begin><end>1796255999</end></date_range>
  </report_metadata>
  <policy_published><domain>nyu.example</domain><adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp>
    <pct>100</pct></policy_published>
  <record>
    <row><source_ip>198.51.100.7</source_ip><count>3</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>nyu.example</header_from></identifiers>
    <auth_results><dkim><domain>nyu.example</domain><result>pass</result></dkim>
      <spf><domain>bounce.example</domain><result>pass</result></spf></auth_results>
  </record>
</feedback>
"""


def test_reports_about_our_domains_are_kept_and_shown(net: dict[str, Any]) -> None:
    srv = net["srv"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("google.com!nyu.example!1796169600!1796255999.xml", GOOGLE_STYLE)
    msg = email.message.EmailMessage()
    msg["From"], msg["To"] = "noreply-dmarc-support@reporter.example", "dmarc@nyu.example"
    msg["Subject"] = "Report domain: nyu.example Submitter: google.com Report-ID: 1234567890123456789"
    msg.set_content("A report.")
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="zip",
                       filename="google.com!nyu.example!1796169600!1796255999.zip")
    other = email.message.EmailMessage()                                  # about someone else's domain
    other["From"], other["To"], other["Subject"] = "r@reporter.example", "dmarc@nyu.example", "other"
    other.set_content("x")
    other.add_attachment(gzip.compress(GOOGLE_STYLE.replace(b"nyu.example", b"elsewhere.example")),
                         maintype="application", subtype="gzip", filename="r!elsewhere.example!1!2.xml.gz")
    for m in (msg, msg, other):                                           # the same report twice: kept once
        send(srv, "noreply-dmarc-support@reporter.example", "dmarc@nyu.example", m.as_bytes())
    shown = json.loads(srv.admin("dmarc", "reports", "nyu.example", "--json").stdout)
    assert [(r["org_name"], r["report_id"], r["begin"]) for r in shown] == \
        [("google.com", "1234567890123456789", 1796169600)]
    assert shown[0]["records"] == [{"source_ip": "198.51.100.7", "count": 3, "disposition": "none",
                                    "dkim": "pass", "spf": "fail", "header_from": "nyu.example"}]
    text = srv.admin("dmarc", "reports", "nyu.example").stdout
    assert "google.com" in text and "198.51.100.7" in text
    assert "no DMARC reports" in srv.admin("dmarc", "reports", "elsewhere.example").stdout

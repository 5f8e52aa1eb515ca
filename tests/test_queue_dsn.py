"""RFC 3464 reports from queue/dsn.py, read back with the stdlib email package; every
corpus message as the original."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from mailhaven.queue.api import OutboundRecipient
from mailhaven.queue.dsn import DSNRecipient, build_dsn, wants_dsn

ORIGINAL = b"From: alice@lancs.example\r\nTo: bob@nyu.example\r\nSubject: Lunch\r\n\r\nSee you.\r\n"


def report(original: bytes = ORIGINAL, ret: str | None = None, **rcpt: object) -> email.message.EmailMessage:
    fields = {"address": "bob@nyu.example", "orcpt": "rfc822;Bob@NYU.example", "action": "failed",
              "status": "5.1.1", "remote_mta": "mx.nyu.example", "diagnostic": "550 5.1.1 no such user",
              "last_attempt": 1795500000.0, **rcpt}
    raw = build_dsn(reporting_mta="mx.lancs.example", original=original, envelope_from="alice@lancs.example",
                    envid="ENV-42", ret=ret, arrival=1795400000.0, now=1795500000.0,
                    recipients=[DSNRecipient(**fields)])  # type: ignore[arg-type]
    assert b"\n" not in raw.replace(b"\r\n", b"")              # CRLF throughout
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_failure_report_fields() -> None:
    msg = report()
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mx.lancs.example>"
    assert msg["Auto-Submitted"] == "auto-replied" and msg["To"] == "alice@lancs.example"
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"
    text, status, original = msg.iter_parts()
    assert "<bob@nyu.example>: 550 5.1.1 no such user" in text.get_content()
    blocks = status.as_string().split("\n\n")
    body = status.get_payload()
    per_message = body[0] if isinstance(body, list) else None
    assert per_message is not None and per_message["Reporting-MTA"] == "dns; mx.lancs.example"
    assert per_message["Original-Envelope-Id"] == "ENV-42" and per_message["Arrival-Date"]
    per_rcpt = body[1]
    assert per_rcpt["Original-Recipient"] == "rfc822;Bob@NYU.example"
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@nyu.example"
    assert (per_rcpt["Action"], per_rcpt["Status"]) == ("failed", "5.1.1")
    assert per_rcpt["Remote-MTA"] == "dns; mx.nyu.example"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert per_rcpt["Last-Attempt-Date"] and per_rcpt["Will-Retry-Until"] is None
    assert len(blocks) >= 2
    assert original.get_content_type() == "message/rfc822"
    assert original.get_content()["Subject"] == "Lunch"


def test_headers_only_and_delay() -> None:
    msg = report(ret="HDRS", action="delayed", status="4.2.2", will_retry_until=1795900000.0)
    assert msg["Subject"].startswith("Delayed Mail")
    _, status, original = msg.iter_parts()
    assert original.get_content_type() == "text/rfc822-headers"
    assert "See you." not in original.as_string() and "Subject: Lunch" in original.as_string()
    assert status.get_payload()[1]["Will-Retry-Until"]


def test_utf8_original_uses_rfc6533_types() -> None:
    msg = report(original="From: jörg@lancs.example\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode(),
                 address="jörg@nyu.example")
    _, status, original = msg.iter_parts()
    assert status.get_content_type() == "message/global-delivery-status"
    assert original.get_content_type() == "message/global"
    assert "Final-Recipient: utf-8; jörg@nyu.example".encode() in msg.as_bytes()


@pytest.mark.parametrize("notify,action,expected", [
    (None, "failed", True), (None, "delayed", True), (None, "relayed", False),
    (frozenset({"NEVER"}), "failed", False), (frozenset({"SUCCESS"}), "relayed", True),
    (frozenset({"SUCCESS"}), "failed", False), (frozenset({"FAILURE", "DELAY"}), "delayed", True),
])
def test_notify_rules(notify: frozenset[str] | None, action: str, expected: bool) -> None:
    assert wants_dsn(OutboundRecipient(address="b@y", notify=notify), action) is expected


def test_every_corpus_message_as_the_original(corpus_files: list[Path]) -> None:
    for path in corpus_files:
        raw = path.read_bytes()
        for ret in (None, "HDRS"):
            msg = report(original=raw, ret=ret)
            parts = list(msg.iter_parts())
            assert len(parts) == 3, path
            assert parts[1].get_content_type().endswith("delivery-status"), path

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


async def test_report_on_a_large_original_never_reads_its_body(store: object) -> None:
    """The queue's failure report on a 20 MB original reads its header section from the
    blob file, not the whole message (traced allocations stay small: they were 2-3x the
    message, read whole to keep only its header)."""
    import time
    import tracemalloc
    from types import SimpleNamespace
    from typing import Any

    from mailhaven.config import Config
    from mailhaven.queue.delivery import Outcome
    from mailhaven.queue.runner import QueueRunner
    from mailhaven.store.api import QueueEntry

    s: Any = store
    writer = s.blob_writer()
    writer.write(ORIGINAL.replace(b"\r\n\r\n", b"\r\nContent-Type: text/plain\r\n\r\n"))
    for _ in range(20):
        writer.write(b"a line of the large body\r\n" * 40_000)          # ~1 MB a piece
    blob = await writer.finish()
    runner = QueueRunner(SimpleNamespace(store=s, config=Config(hostname="mx.lancs.example")))
    sent: list[Any] = []

    async def enqueue(message: Any) -> None:
        sent.append(message)

    runner.enqueue = enqueue  # type: ignore[method-assign]
    now = time.time()
    entry = QueueEntry(id=1, msg="m1", blob_id=blob.id, size=blob.size, mail_from="alice@lancs.example",
                       rcpt="bob@nyu.example", domain="nyu.example", notify=None, orcpt=None, envid=None,
                       ret=None, body="7BIT", smtputf8=False, submitted_by=None, created=now, state="queued",
                       attempts=1, next_attempt=now, last_reply="", warned=False, lease_owner=None,
                       lease_until=None)
    tracemalloc.start()
    try:
        await runner._report(entry, "failed", Outcome(code=550, enhanced="5.1.1", text="no such user"), now)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (dsn,) = sent
    msg = email.message_from_bytes(await s.read_blob(dsn.blob.id), policy=email.policy.default)
    returned = msg.get_payload()[2]  # type: ignore[index]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"Subject: Lunch" in returned.get_payload(decode=True) and b"a line" not in returned.as_bytes()
    assert peak < 4 * 1024 * 1024, peak

"""The vacation reply's decisions and text (sieve/vacation.py), without sockets: who gets
no reply (RFC 5230 4.5, 4.6, RFC 3834 2) and what the reply says (RFC 5230 5, RFC 3834 3).
The end-to-end path over SMTP is in test_sieve_redirect.py."""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import compat32

from mailhaven.sieve.actions import Vacation
from mailhaven.sieve.vacation import build_reply, reply_from, should_reply

OWN = {"vic@nyu.example"}


def _h(raw: bytes):
    return BytesHeaderParser(policy=compat32).parsebytes(raw + b"\r\n")


def test_who_gets_no_reply() -> None:
    to_vic = b"From: a@x.example\r\nTo: Vic <VIC@nyu.example>\r\nSubject: s\r\n"
    assert should_reply(_h(to_vic), "a@x.example", OWN, ()) is None
    assert should_reply(_h(to_vic), "", OWN, ()) == "null sender"
    assert should_reply(_h(to_vic), "vic@nyu.example", OWN, ()) == "own address"
    assert should_reply(_h(to_vic), "owner-dev@x.example", OWN, ()) == "robot sender"
    assert should_reply(_h(to_vic), "MAILER-DAEMON@x.example", OWN, ()) == "robot sender"
    assert should_reply(_h(to_vic + b"Auto-Submitted: auto-generated\r\n"), "a@x.example", OWN, ()) == "auto-submitted"
    assert should_reply(_h(to_vic + b"Auto-Submitted: no\r\n"), "a@x.example", OWN, ()) is None
    assert should_reply(_h(to_vic + b"List-Unsubscribe: <mailto:u@x>\r\n"), "a@x.example", OWN, ()) == "list message"
    assert should_reply(_h(to_vic + b"Precedence: Bulk\r\n"), "a@x.example", OWN, ()) == "bulk precedence"
    other = b"From: a@x.example\r\nTo: team@x.example\r\nCc: victor@nyu.example\r\n"
    assert should_reply(_h(other), "a@x.example", OWN, ()) == "not addressed to us"
    assert should_reply(_h(other), "a@x.example", OWN, ("Victor@nyu.example",)) is None
    assert should_reply(_h(b"Resent-To: vic@nyu.example\r\n"), "a@x.example", OWN, ()) is None


def test_the_reply() -> None:
    header = _h(b"From: a@x.example\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <2@x>\r\n"
                b"References: <0@x>\r\n <1@x>\r\n")
    reply = build_reply(header, Vacation(reason="Away.\nBack Monday.", seconds=60, handle="h"),
                        to="a@x.example", sender="vic@nyu.example", hostname="nyu.example")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"\r\nTo: <a@x.example>\r\n" in head and head.startswith(b"From: vic@nyu.example\r\n")
    assert b"\r\nSubject: =?utf-8?" in head                            # "Auto: Grüße", encoded
    assert b"\r\nAuto-Submitted: auto-replied\r\n" in head
    assert b"\r\nIn-Reply-To: <2@x>\r\nReferences: <0@x> <1@x> <2@x>" in head
    assert body == b"Away.\r\nBack Monday.\r\n"
    sneaky = Vacation(reason="x", seconds=60, handle="h", subject="hi\r\nBcc: everyone@x.example",
                      sender="boss@bank.example")
    reply = build_reply(header, sneaky, to="a@x.example", sender=reply_from(sneaky, "vic@nyu.example", OWN),
                        hostname="nyu.example")
    assert b"\r\nBcc:" not in reply and b"Subject: hi Bcc: everyone@x.example\r\n" in reply
    assert reply.startswith(b"From: vic@nyu.example\r\n")            # not in someone else's name
    assert reply_from(Vacation(reason="x", seconds=1, handle="h", sender="Vic <vic@nyu.example>"),
                      "vic@nyu.example", OWN) == "Vic <vic@nyu.example>"

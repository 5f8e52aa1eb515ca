"""Sieve extensions where Pigeonhole cannot be the reference (it ignores :index on date) or
where our settings matter: regex, date/currentdate, index, spamtest/virustest with the
``[sieve]`` settings, and the configurable redirect limit at delivery over real sockets."""

from __future__ import annotations

import datetime as dt
import imaplib
import smtplib

import pytest

from conftest import ServerProcess, free_port, wait_for
from mailhaven.sieve import SieveError, SieveMessage, compile_script, run
from mailhaven.sieve.interpreter import Environment
from smtpsink import SmtpSink

MESSAGE = (b"Received: from a by b; Tue, 3 Jun 2025 23:59:58 +0000\r\n"
           b"Received: from c by a; Mon, 2 Jun 2025 10:00:00 +0200\r\n"
           b"Date: Tue, 03 Jun 2025 17:45:07 -0700\r\nFrom: dave@example.net\r\n"
           b"To: bob@example.com\r\nTo: carol@example.org, eve@example.org\r\n"
           b"Subject: Order 4711\r\nX-Filter-Score: 6.3\r\n\r\nbody\r\n")


def folders(script: str, env: Environment | None = None) -> list[str]:
    outcome = run(compile_script(script), SieveMessage(raw=MESSAGE, mail_from="dave@example.net",
                                                       rcpt_to="bob@example.com"), env=env)
    assert outcome.error is None, outcome.error
    return [a.mailbox or "" for a in outcome.actions if a.kind == "fileinto"]


def test_date_index_picks_the_field_rfc_5260_6() -> None:
    script = ('require ["fileinto", "date", "index", "variables"];\n'
              'if date :index 2 :originalzone :matches "received" "date" "*" { fileinto "second/${1}"; }\n'
              'if date :index 1 :last :zone "+0000" :matches "received" "time" "*" { fileinto "last/${1}"; }\n'
              'if date :index 3 :matches "received" "date" "*" { fileinto "none"; }')
    assert folders(script) == ["second/2025-06-02", "last/08:00:00"]


def test_address_index_and_currentdate_with_an_injected_clock() -> None:
    script = ('require ["fileinto", "index", "date", "variables"];\n'
              'if address :index 2 :matches "to" "*" { fileinto "to2/${1}"; }\n'
              'if currentdate :zone "-0500" :matches "iso8601" "*" { fileinto "now/${1}"; }\n'
              'if currentdate :zone "+0000" :is "weekday" "0" { fileinto "sunday"; }')
    sunday = dt.datetime(2026, 3, 1, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert folders(script, Environment(now=sunday)) == [
        "to2/carol@example.org", "now/2026-02-28T22:04:05-05:00", "sunday"]


def test_spamtest_reads_the_configured_header() -> None:
    script = ('require ["fileinto", "spamtestplus", "virustest", "variables"];\n'
              'if spamtest :matches "*" { fileinto "s${1}"; }\n'
              'if spamtest :percent :matches "*" { fileinto "p${1}"; }\n'
              'if virustest :matches "*" { fileinto "v${1}"; }')
    assert folders(script) == ["s0", "p0", "v0"]                        # X-Spam-Score absent: untested
    env = Environment(spam_header="X-Filter-Score", spam_max=8.0, virus_header="X-Filter-Score", virus_max=6.0)
    assert folders(script, env) == ["s8", "p78", "v5"]                  # 1 + 9 * 6.3 / 8; 100 * 6.3 / 8


@pytest.mark.parametrize(("script", "where"), [
    ('require "regex";\nif header :regex "subject" "(unclosed" { keep; }', "line 2"),
    ('require ["regex", "comparator-i;ascii-numeric"];\nif header :regex :comparator "i;ascii-numeric" '
     '"subject" "1" { keep; }', "line 2"),
    ('require ["index"];\nif header :last :is "subject" "x" { keep; }', "line 2"),
    ('require ["date"];\nif currentdate :is "fortnight" "1" { keep; }', "line 2"),
    ('require "spamtest";\nif spamtest :percent "1" { keep; }', "line 2"),         # needs spamtestplus
])
def test_errors_at_upload(script: str, where: str) -> None:
    with pytest.raises(SieveError) as err:
        compile_script(script)
    assert str(err.value).startswith(where)


def test_redirect_limit_spamtest_header_and_editheader_at_delivery(tmp_path) -> None:
    sink_port = free_port()
    with SmtpSink("127.0.0.1", sink_port) as sink:
        _delivery(tmp_path, sink, sink_port)


def _delivery(tmp_path, sink: SmtpSink, sink_port: int) -> None:
    srv = ServerProcess(tmp_path / "data", extra_config=(
        '[sieve]\nmax_redirects = 1\nspamtest_header = "X-Filter-Score"\nspamtest_max = 8.0\n'
        f'[relay]\ntls = "none"\nroutes = {{"example.org" = "127.0.0.1:{sink_port}"}}\n')).start()
    try:
        srv.add_user("bob@example.com")
        script = tmp_path / "s.sieve"
        script.write_text('require ["fileinto", "mailbox", "spamtest", "relational", "comparator-i;ascii-numeric"];\n'
                          'if spamtest :value "ge" :comparator "i;ascii-numeric" "8" { fileinto :create "Spam"; stop; }\n'
                          'if header :contains "subject" "fwd" { redirect "a@example.org"; redirect "b@example.org"; }\n')
        srv.admin("sieve", "put", "bob@example.com", str(script))
        srv.add_user("carol@example.com")
        edits = tmp_path / "e.sieve"
        edits.write_text('require ["editheader", "fileinto", "mailbox"];\naddheader "X-Sorted" "by Sieve";\n'
                         'deleteheader "x-filter-score";\nfileinto :create "Edited";\n')
        srv.admin("sieve", "put", "carol@example.com", str(edits))
        srv.add_user("dan@example.com")                                 # RFC 6609: personal includes
        main, orders = tmp_path / "main.sieve", tmp_path / "orders.sieve"
        main.write_text('require ["include", "variables", "fileinto", "mailbox"];\nglobal "box";\n'
                        'set "box" "Orders";\ninclude :personal "orders";\nfileinto :create "NotOrders";\n')
        orders.write_text('require ["include", "variables", "fileinto", "mailbox"];\nglobal "box";\n'
                          'if header :contains "subject" "order" { fileinto :create "${box}/2025"; stop; }\n')
        srv.admin("sieve", "put", "dan@example.com", "main", str(main))
        srv.admin("sieve", "put", "dan@example.com", "orders", str(orders))
        srv.add_user("erin@example.com")                                # RFC 7352: remembered in the store
        dup = tmp_path / "dup.sieve"
        dup.write_text('require "duplicate";\nif duplicate :header "subject" { discard; }\n')
        srv.admin("sieve", "put", "erin@example.com", str(dup))
        srv.add_user("fay@example.com")                                 # RFC 8579, RFC 8580
        su = tmp_path / "su.sieve"
        su.write_text('require ["fileinto", "special-use", "vacation", "fcc", "imap4flags"];\n'
                      'vacation :fcc "Outbox" :specialuse "\\\\Sent" :flags "\\\\Seen" "Away until Monday.";\n'
                      'fileinto :specialuse "\\\\Junk" "Spam";\n')
        srv.admin("sieve", "put", "fay@example.com", str(su))
        srv.add_user("gus@example.com")                                 # RFC 5435/5436 through the queue
        note = tmp_path / "note.sieve"
        note.write_text('require ["enotify", "variables"];\nif header :matches "subject" "*" { set "s" "${1}"; }\n'
                        'notify :importance "1" :message "Mail: ${s}" "mailto:pager@example.org?body=Look";\n')
        srv.admin("sieve", "put", "gus@example.com", str(note))
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as smtp:
            smtp.sendmail("dave@example.net", ["bob@example.com", "carol@example.com", "dan@example.com"], MESSAGE)
            for _ in range(3):
                smtp.sendmail("dave@example.net", ["erin@example.com"], MESSAGE)
            smtp.sendmail("dave@example.net", ["fay@example.com"], MESSAGE.replace(b"To: bob@", b"To: fay@"))
            smtp.sendmail("dave@example.net", ["gus@example.com"], MESSAGE)
            smtp.sendmail("dave@example.net", ["gus@example.com"], b"Auto-Submitted: auto-generated\r\n" + MESSAGE)
            smtp.sendmail("dave@example.net", ["erin@example.com"], MESSAGE.replace(b"Order 4711", b"Other"))
            smtp.sendmail("dave@example.net", ["bob@example.com"], MESSAGE.replace(b"Order 4711", b"fwd twice").replace(b"X-Filter-Score", b"X-Other"))
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=30)
        try:
            imap.login("bob@example.com", "s3cret")
            assert imap.select("Spam") == ("OK", [b"1"])                # 6.3 of 8: spamtest 8
            assert imap.select("INBOX") == ("OK", [b"1"])               # two redirects > 1: implicit keep
            _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert b"fwd twice" in data[0][1]
        finally:
            imap.logout()
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=30)
        try:
            imap.login("carol@example.com", "s3cret")
            assert imap.select("Edited") == ("OK", [b"1"])             # RFC 5293: carol's copy edited
            _, data = imap.fetch("1", "(BODY.PEEK[HEADER])")
            assert data[0][1].startswith(b"X-Sorted: by Sieve\r\n") and b"X-Filter-Score" not in data[0][1]
        finally:
            imap.logout()
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=30)
        try:
            imap.login("dan@example.com", "s3cret")
            assert imap.select("Orders/2025") == ("OK", [b"1"])
            assert imap.select("INBOX") == ("OK", [b"0"])
        finally:
            imap.logout()
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=30)
        try:
            imap.login("erin@example.com", "s3cret")
            assert imap.select("INBOX") == ("OK", [b"2"])               # the 2nd and 3rd were duplicates
        finally:
            imap.logout()
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=30)
        try:
            imap.login("fay@example.com", "s3cret")
            assert imap.select("Junk") == ("OK", [b"1"])                # the \Junk mailbox, not "Spam"
            assert imap.select("Sent") == ("OK", [b"1"])                # the reply, filed by :fcc
            _, data = imap.fetch("1", "(FLAGS BODY.PEEK[])")
            assert b"\\Seen" in data[0][0] and b"Away until Monday." in data[0][1]
            assert b"To: <dave@example.net>" in data[0][1] and b"Auto-Submitted: auto-replied" in data[0][1]
        finally:
            imap.logout()
        got = wait_for(lambda: sink.messages, what="the notification at the relay")
        assert len(got) == 1 and got[0].mail_from == "" and got[0].rcpt_to == ["pager@example.org"]
        assert b"Subject: Mail: Order 4711" in got[0].data and b"Auto-Submitted: auto-notified" in got[0].data
        assert b"Importance: high" in got[0].data and b"\r\n\r\nLook" in got[0].data
        assert b"From: gus@example.com" in got[0].data
    finally:
        srv.stop()

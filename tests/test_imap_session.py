"""The IMAP session in memory against a real SQLite store: every command family."""

from __future__ import annotations

import base64
import re

from imap_harness import Client, deliver, make_account, untagged
from mailhaven.store.api import FlagMode

SIMPLE = (b"From: Bob Example <bob@example.org>\r\nTo: alice@example.com\r\nSubject: Lunch plans\r\n"
          b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\n"
          b"Shall we meet at noon?\r\n")
MULTI = (b"From: carol@example.net\r\nTo: alice@example.com, Dave <dave@example.com>\r\n"
         b"Subject: =?utf-8?q?Re=3A_Report?=\r\nDate: Tue, 2 Jan 2024 11:00:00 +0100\r\n"
         b"Message-ID: <m2@example.net>\r\nIn-Reply-To: <m1@example.org>\r\nReferences: <m1@example.org>\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
         b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached report.\r\n"
         b"--XX\r\nContent-Type: application/octet-stream; name=\"r.bin\"\r\n"
         b"Content-Disposition: attachment; filename=\"r.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         + base64.encodebytes(b"\x00\x01binary\xff").replace(b"\n", b"\r\n")
         + b"--XX--\r\nepilogue\r\n")


async def setup(store, *messages: bytes):  # type: ignore[no-untyped-def]
    acct = await make_account(store)
    for raw in messages:
        await deliver(store, acct.id, raw)
    c = Client(store)
    await c.login()
    return acct, c


async def test_greeting_and_capabilities_before_login(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    local = Client(store)
    assert local.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2")
    out = await local.cmd("CAPABILITY")
    assert b"AUTH=PLAIN" in out and b"LOGINDISABLED" not in out and b"STARTTLS" in out
    remote = Client(store, peer="192.0.2.7")
    out = await remote.cmd("CAPABILITY")
    assert b"LOGINDISABLED" in out and b"AUTH=PLAIN" not in out
    out = await remote.cmd('LOGIN alice@example.com s3cret', expect="NO")
    assert b"PRIVACYREQUIRED" in out
    tls = Client(store, peer="192.0.2.7", tls=True)
    out = await tls.cmd("CAPABILITY")
    assert b"LOGINDISABLED" not in out and b"STARTTLS" not in out
    await tls.login()


async def test_login_failures_are_delayed_then_bye(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    c = Client(store)
    for _ in range(4):
        out = await c.cmd("LOGIN alice@example.com wrong", expect="NO")
        assert b"AUTHENTICATIONFAILED" in out
    assert c.sleeps == [1.0, 2.0, 4.0, 8.0]
    out = await c.send(b"x LOGIN alice@example.com wrong\r\n")
    assert b"* BYE" in out and c.session.closing


async def test_authenticate_plain_with_and_without_initial_response(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    token = base64.b64encode(b"\x00alice@example.com\x00s3cret").decode()
    c = Client(store)
    out = await c.cmd(f"AUTHENTICATE PLAIN {token}")
    assert b"t1 OK [CAPABILITY" in out
    c = Client(store)
    out = await c.send(b"a AUTHENTICATE PLAIN\r\n")
    assert out == b"+ \r\n"
    out = await c.send(token.encode() + b"\r\n")
    assert out.startswith(b"a OK")
    c = Client(store)
    await c.send(b"a AUTHENTICATE PLAIN\r\n")
    assert (await c.send(b"*\r\n")).startswith(b"a BAD")
    out = await c.send(b"b AUTHENTICATE LOGIN\r\n")
    assert out == b"+ " + base64.b64encode(b"Username:") + b"\r\n"
    await c.send(base64.b64encode(b"alice@example.com") + b"\r\n")
    out = await c.send(base64.b64encode(b"bad") + b"\r\n")
    assert out.startswith(b"b NO [AUTHENTICATIONFAILED]")


async def test_state_table(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    c = Client(store)
    await c.cmd("SELECT INBOX", expect="BAD")
    await c.cmd("FETCH 1 FLAGS", expect="BAD")
    await c.login()
    await c.cmd("LOGIN a b", expect="BAD")
    await c.cmd("FETCH 1 FLAGS", expect="BAD")
    await c.cmd("UID LIST \"\" *", expect="BAD")
    await c.cmd("FROBNICATE", expect="BAD")


async def test_select_examine_and_readonly(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store, SIMPLE, MULTI)
    out = await c.cmd("SELECT INBOX")
    assert b"* 2 EXISTS" in out and b"* 2 RECENT" in out and b"[UIDVALIDITY " in out
    assert b"[UIDNEXT 3]" in out and b"[PERMANENTFLAGS (" in out and b"[READ-WRITE]" in out
    assert b"[UNSEEN 1]" in out and b"[HIGHESTMODSEQ " in out
    out = await c.cmd("EXAMINE INBOX")
    assert b"* OK [CLOSED]" in out and b"[READ-ONLY]" in out
    await c.cmd("STORE 1 +FLAGS (\\Seen)", expect="NO")
    await c.cmd("FETCH 1 BODY[]")
    out = await c.cmd("FETCH 1 FLAGS")
    assert b"\\Seen" not in out  # EXAMINE never sets \Seen
    await c.cmd("SELECT Nope", expect="NO")
    assert c.session.selected is None
    await c.cmd("FETCH 1 FLAGS", expect="BAD")


async def test_append_fetch_roundtrip_and_uidplus(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store)
    await c.cmd("SELECT INBOX")
    out = await c.send(b'a APPEND INBOX (\\Flagged $Work) "17-Jul-1996 02:44:25 -0700" {%d}\r\n' % len(MULTI))
    assert out == b"+ Ready for literal data\r\n"
    out = await c.send(MULTI + b"\r\n")
    assert re.search(rb"a OK \[APPENDUID \d+ 1\]", out), out
    assert b"* 1 EXISTS" in out
    out = await c.cmd("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert b"INTERNALDATE \"17-Jul-1996 09:44:25 +0000\"" in out
    assert b"RFC822.SIZE %d" % len(MULTI) in out
    assert b"BODY[] {%d}\r\n" % len(MULTI) + MULTI + b")" in out
    assert b"\\Flagged" in out and b"$Work" in out
    # MULTIAPPEND with a non-synchronizing literal
    out = await c.send(b"b APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(SIMPLE), SIMPLE, len(SIMPLE), SIMPLE))
    assert re.search(rb"b OK \[APPENDUID \d+ 2:3\]", out), out
    out = await c.send(b"u APPEND INBOX UTF8 (~{%d+}\r\n%s)\r\n" % (len(SIMPLE), SIMPLE))
    assert re.search(rb"u OK \[APPENDUID \d+ 4\]", out), out
    out = await c.cmd("APPEND Nowhere {3+}\r\nabc", expect="NO")
    assert b"[TRYCREATE]" in out


async def test_append_too_big_is_refused_before_the_literal(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store)
    limit = c.session.config.limits.message_size
    out = await c.send(b"a APPEND INBOX {%d}\r\n" % (limit + 1))
    assert out.startswith(b"a NO [TOOBIG]")
    out = await c.cmd("NOOP")
    assert b"OK" in out


async def test_fetch_structure_sections_and_binary(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store, MULTI)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("FETCH 1 (BODYSTRUCTURE ENVELOPE)")
    # 0 lines: the line break before the delimiter is the delimiter's (RFC 2046 5.1.1; Dovecot's count)
    assert b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 20 0 NIL NIL NIL NIL)' in out
    assert b'"application" "octet-stream" ("name" "r.bin")' in out
    assert b'"mixed" ("boundary" "XX") NIL NIL NIL)' in out
    assert b'"=?utf-8?q?Re=3A_Report?="' in out  # ENVELOPE keeps encoded words
    assert b'((NIL NIL "alice" "example.com")("Dave" NIL "dave" "example.com"))' in out
    assert b'"<m1@example.org>" "<m2@example.net>")' in out
    out = await c.cmd("FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS (subject FROM)])")
    assert b"BODY[1] {20}\r\nSee attached report." in out
    assert b"BODY[2.MIME] {" in out and b"Content-Transfer-Encoding: base64\r\n\r\n" in out
    assert b"BODY[HEADER.FIELDS (SUBJECT FROM)] {" in out
    assert b"From: carol@example.net\r\nSubject: =?utf-8?q?Re=3A_Report?=\r\n\r\n" in out
    out = await c.cmd("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BODY.PEEK[TEXT]<0.8>)")
    assert b"BINARY[2] ~{9}\r\n\x00\x01binary\xff" in out
    assert b"BINARY.SIZE[2] 9" in out
    assert b"BODY[TEXT]<0> {8}\r\npreamble" in out
    out = await c.cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Subject From To Date Message-ID In-Reply-To References MIME-Version)])")
    assert b"Content-Type: multipart/mixed" in out and b"Subject" not in out
    out = await c.cmd("FETCH 1 (FLAGS)")
    assert b"\\Seen" not in out
    out = await c.cmd("FETCH 1 BODY[1]")
    assert b"FLAGS (\\Recent \\Seen)" in out
    await c.cmd("FETCH 1 BODY[1.2.3.4]")
    await c.cmd("FETCH 1 BODY[MIME]", expect="BAD")
    await c.cmd("FETCH 1 (BODY[HEADER.FIELDS ()])", expect="BAD")
    await c.cmd("FETCH 2 FLAGS", expect="BAD")


async def test_fetch_nested_message_rfc822(store) -> None:  # type: ignore[no-untyped-def]
    raw = (b"From: a@b.c\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
           b"--b1\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n"
           b"From: x@y.z\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
           b"--b2\r\nContent-Type: text/plain\r\n\r\nplain inner\r\n--b2\r\nContent-Type: text/html\r\n\r\n"
           b"<p>html</p>\r\n--b2--\r\n\r\n--b1--\r\n")
    _, c = await setup(store, raw)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("FETCH 1 (BODY.PEEK[2.HEADER] BODY.PEEK[2.1] BODY.PEEK[2.2] BODY.PEEK[2.TEXT] BODYSTRUCTURE BODY)")
    assert b"BODY[2.HEADER] {" in out and b"Subject: inner\r\n" in out
    assert b"BODY[2.1] {11}\r\nplain inner" in out
    assert b"BODY[2.2] {11}\r\n<p>html</p>" in out
    assert b'"message" "rfc822" NIL NIL NIL "7bit"' in out
    assert (b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 0)'     # no line break of its own
            b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 0) "alternative")') in out


async def test_store_flags_and_condstore(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store, SIMPLE, SIMPLE, SIMPLE)
    await c.cmd("SELECT INBOX (CONDSTORE)")
    out = await c.cmd("STORE 1:2 +FLAGS (\\Flagged Custom)")
    assert re.search(rb"\* 1 FETCH \(FLAGS \(\\Flagged \\Recent Custom\) MODSEQ \(\d+\)\)", out), out
    out = await c.cmd("STORE 1 -FLAGS.SILENT (Custom)")
    assert b"FETCH" not in out
    out = await c.cmd("UID STORE 3 FLAGS (\\Seen)")
    assert b"* 3 FETCH (UID 3 FLAGS (\\Recent \\Seen) MODSEQ" in out
    out = await c.cmd("FETCH 1:3 (MODSEQ)")
    modseqs = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", out)]
    out = await c.cmd(f"STORE 1:3 (UNCHANGEDSINCE {min(modseqs)}) +FLAGS (\\Answered)")
    assert b"[MODIFIED" in out
    out = await c.cmd("SEARCH MODSEQ 1")
    assert re.search(rb"\* SEARCH 1 2 3 \(MODSEQ \d+\)", out), out
    await c.cmd("STORE 1 +FLAGS (\\Bogus)", expect="BAD")
    out = await c.cmd("FETCH 1 (FLAGS) (CHANGEDSINCE 1)")
    assert b"MODSEQ" in out


async def test_search_keys_and_esearch(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store, SIMPLE, MULTI, SIMPLE.replace(b"Lunch", b"Dinner"))
    await c.cmd("SELECT INBOX")
    await c.cmd("STORE 2 +FLAGS (\\Flagged)")
    cases = {
        "ALL": b"1 2 3", "FLAGGED": b"2", "UNFLAGGED": b"1 3", "SUBJECT lunch": b"1",
        "FROM carol": b"2", "TO dave": b"2", "BODY noon": b"1 3", "TEXT attached": b"2",
        'HEADER Message-ID "m2@example"': b"2", "OR FLAGGED SUBJECT dinner": b"2 3",
        "NOT FLAGGED": b"1 3", "2:3 NOT 3": b"2", "UID 1,3": b"1 3", f"LARGER {len(SIMPLE) + 1}": b"2",
        "SENTON 2-Jan-2024": b"2", "SENTBEFORE 2-Jan-2024": b"1 3", "SINCE 1-Jan-2020": b"1 2 3",
        "BEFORE 1-Jan-2020": b"", "KEYWORD Nothing": b"", "(FLAGGED OR SEEN DELETED)": b"",
        "CHARSET UTF-8 SUBJECT Lunch": b"1", "YOUNGER 3600": b"1 2 3", "OLDER 3600": b"",
        "NEW": b"1 2 3", "OLD": b"", "RECENT": b"1 2 3", "HEADER X-Missing \"\"": b"",
    }
    for criteria, expected in cases.items():
        out = await c.cmd(f"SEARCH {criteria}")
        line = untagged(out, "SEARCH")[0]
        assert line == (b"* SEARCH " + expected).rstrip(), (criteria, out)
    out = await c.cmd("SEARCH CHARSET KOI8-R ALL", expect="NO")
    assert b"BADCHARSET" in out
    await c.cmd("SEARCH BOGUS", expect="BAD")
    out = await c.cmd("SEARCH RETURN (MIN MAX COUNT ALL) NOT FLAGGED")
    assert b'* ESEARCH (TAG "t' in out and b"MIN 1 MAX 3 ALL 1,3 COUNT 2" in out
    out = await c.cmd("UID SEARCH RETURN (SAVE) SUBJECT lunch")
    assert b"ESEARCH" not in out
    out = await c.cmd("FETCH $ (UID)")
    assert b"* 1 FETCH (UID 1)" in out and b"* 3 FETCH" not in out


async def test_copy_move_expunge(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store, SIMPLE, MULTI, SIMPLE)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("COPY 1:2 Archive")
    assert re.search(rb"\[COPYUID \d+ 1:2 1:2\]", out)
    out = await c.cmd("MOVE 2 Trash")
    assert re.search(rb"\* OK \[COPYUID \d+ 2 1\]", out) and b"* 2 EXPUNGE" in out
    out = await c.cmd("COPY 1 Missing", expect="NO")
    assert b"TRYCREATE" in out
    await c.cmd("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    out = await c.cmd("UID EXPUNGE 3")
    assert b"* 2 EXPUNGE" in out and b"* 1 EXPUNGE" not in out
    out = await c.cmd("EXPUNGE")
    assert b"* 1 EXPUNGE" in out
    out = await c.cmd("STATUS Archive (MESSAGES UIDNEXT UNSEEN SIZE DELETED)")
    assert re.search(rb'\* STATUS "Archive" \(MESSAGES 2 UIDNEXT 3 UNSEEN 2 SIZE \d+ DELETED 0\)', out), out
    await c.cmd("STORE 1 +FLAGS (\\Deleted)", expect="BAD")  # mailbox is empty now


async def test_close_expunges_silently_and_unselect(store) -> None:  # type: ignore[no-untyped-def]
    acct, c = await setup(store, SIMPLE, SIMPLE)
    await c.cmd("SELECT INBOX")
    await c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    out = await c.cmd("CLOSE")
    assert b"EXPUNGE" not in out
    box = await store.get_mailbox(acct.id, "INBOX")
    assert box.messages == 1
    await c.cmd("SELECT INBOX")
    await c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await c.cmd("UNSELECT")
    assert (await store.get_mailbox(acct.id, "INBOX")).messages == 1


async def test_mailbox_management_and_list(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store)
    await c.cmd("CREATE Projects/2024/Q1/")
    await c.cmd("CREATE Projects", expect="NO")
    await c.cmd('CREATE "Entw&APw-rfe"')
    await c.cmd("CREATE Saved (USE (\\Archive))")
    await c.cmd("CREATE Bad (USE (\\Bogus))", expect="NO")
    out = await c.cmd('LIST "" "%"')
    assert b'* LIST (\\HasChildren) "/" "Projects"' in out
    assert b'"Entw&APw-rfe"' in out
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in out
    out = await c.cmd('LIST "" "Projects/*"')
    assert b'"Projects/2024/Q1"' in out
    out = await c.cmd('LIST "" ""')
    assert b'* LIST (\\Noselect) "/" ""' in out
    out = await c.cmd('LIST (SPECIAL-USE) "" "*"')
    assert b"INBOX" not in out and b"\\Archive" in out and b'"Saved"' in out
    out = await c.cmd('LIST "" "INBOX" RETURN (STATUS (MESSAGES UIDVALIDITY) SUBSCRIBED)')
    assert b'\\Subscribed) "/" "INBOX"' in out and b'* STATUS "INBOX" (MESSAGES 0 UIDVALIDITY' in out
    await c.cmd('LIST "" "INBOX" RETURN (STATUS (MESSAGES BOGUS))', expect="BAD")   # was a KeyError
    await c.cmd("RENAME Projects Work")
    out = await c.cmd('LIST "" "Work/*"')
    assert b'"Work/2024/Q1"' in out
    await c.cmd("RENAME Work Sent", expect="NO")
    await c.cmd("DELETE Work/2024/Q1")
    await c.cmd("DELETE INBOX", expect="NO")
    await c.cmd("DELETE Nope", expect="NO")
    await c.cmd("SUBSCRIBE Work")
    await c.cmd("UNSUBSCRIBE Sent")
    out = await c.cmd('LSUB "" "*"')
    assert b'"Work"' in out and b'"Sent"' not in out
    out = await c.cmd("NAMESPACE")
    assert b'* NAMESPACE (("" "/")) NIL NIL' in out
    await c.cmd("ENABLE UTF8=ACCEPT")
    out = await c.cmd('LIST "" "Entw*"')
    assert '"Entwürfe"'.encode() in out


async def test_quota(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store, quota=10 * 1024)
    c = Client(store)
    await c.login()
    out = await c.cmd("GETQUOTAROOT INBOX")
    assert b'* QUOTAROOT "INBOX" ""' in out and b'* QUOTA "" (STORAGE 0 10)' in out
    big = b"Subject: big\r\n\r\n" + b"x" * 11000
    out = await c.cmd(f"APPEND INBOX {{{len(big)}+}}\r\n".encode().decode() + big.decode(), expect="NO")
    assert b"OVERQUOTA" in out
    await c.cmd("SETQUOTA \"\" (STORAGE 1)", expect="NO")


async def test_enable_qresync_and_vanished(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store, SIMPLE, SIMPLE, SIMPLE)
    out = await c.cmd("ENABLE QRESYNC CONDSTORE BOGUS")
    assert b"* ENABLED QRESYNC CONDSTORE" in out
    out = await c.cmd("SELECT INBOX")
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))  # type: ignore[union-attr]
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", out).group(1))  # type: ignore[union-attr]
    await c.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
    out = await c.cmd("EXPUNGE")
    assert b"* VANISHED 2" in out
    await c.cmd("UID STORE 3 +FLAGS (\\Seen)")
    await c.cmd("UNSELECT")
    out = await c.cmd(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3))")
    assert b"* VANISHED (EARLIER) 2" in out
    assert b"FETCH (UID 3 FLAGS (\\Seen) MODSEQ" in out
    out = await c.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert b"* VANISHED (EARLIER) 2" in out and b"UID 3" in out and b"UID 1 " not in out
    # RFC 7162 3.2.5.2: known UIDs plus sequence-match data (sequence numbers paired with UIDs).
    await c.cmd("UNSELECT")
    out = await c.cmd(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3 (1:3 1:3)))")
    assert b"* VANISHED (EARLIER) 2" in out and b"FETCH (UID 3 FLAGS (\\Seen)" in out
    await c.cmd("UNSELECT")
    await c.cmd(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3 (1:3 1,3)))", expect="BAD")
    await c.cmd(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3 (1:* 1:3)))", expect="BAD")
    await c.cmd(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3 (1:3)))", expect="BAD")


async def test_sort_and_thread(store) -> None:  # type: ignore[no-untyped-def]
    reply = (b"From: zed@example.org\r\nSubject: Re: Lunch plans\r\nDate: Wed, 3 Jan 2024 09:00:00 +0000\r\n"
             b"Message-ID: <m3@x>\r\nIn-Reply-To: <m1@example.org>\r\nReferences: <m1@example.org>\r\n\r\nok\r\n")
    _, c = await setup(store, reply, SIMPLE, MULTI)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("SORT (DATE) UTF-8 ALL")
    assert b"* SORT 2 3 1" in out
    out = await c.cmd("SORT (REVERSE ARRIVAL) UTF-8 ALL")
    assert b"* SORT 3 2 1" in out
    out = await c.cmd("UID SORT (FROM) UTF-8 ALL")
    assert b"* SORT 2 3 1" in out
    out = await c.cmd("SORT (SUBJECT DATE) UTF-8 ALL")
    assert b"* SORT 2 1 3" in out
    out = await c.cmd("THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert b"* THREAD (2 1)(3)" in out
    out = await c.cmd("THREAD REFERENCES UTF-8 ALL")
    assert b"* THREAD (2 (3)(1))" in out  # children by sent date
    await c.cmd("THREAD BOGUS UTF-8 ALL", expect="BAD")


async def test_esort_answers_in_sort_order(store) -> None:  # type: ignore[no-untyped-def]
    """RFC 5267 3: SORT RETURN gives an ESEARCH whose MIN and MAX are the first and last in
    the sort order and whose ALL keeps that order; SAVE keeps the set for $; MODSEQ as in
    RFC 7162 3.1.5, for SORT itself too."""
    reply = (b"From: zed@example.org\r\nSubject: Re: Lunch plans\r\nDate: Wed, 3 Jan 2024 09:00:00 +0000\r\n"
             b"Message-ID: <m3@x>\r\n\r\nok\r\n")
    _, c = await setup(store, reply, SIMPLE, MULTI, SIMPLE)
    assert b"ESORT" in await c.cmd("CAPABILITY")
    await c.cmd("SELECT INBOX")
    assert b"* SORT 2 4 3 1" in await c.cmd("SORT (DATE) UTF-8 ALL")
    for command, answer in (("SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL", b"\") MIN 2 MAX 1 ALL 2,4,3,1 COUNT 4"),
                            ("SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL", b"\") ALL 4,3,2,1"),
                            ("SORT RETURN (ALL) (ARRIVAL) UTF-8 ALL", b"\") ALL 1:4"),
                            ("UID SORT RETURN (MAX) (DATE) UTF-8 2:4", b"\") UID MAX 3"),
                            ("SORT RETURN (COUNT) (DATE) UTF-8 SUBJECT nothing-like-this", b"\") COUNT 0")):
        out = await c.cmd(command)
        assert b'* ESEARCH (TAG "' in out and answer + b"\r\n" in out, command
    await c.cmd("SORT RETURN (MIN SAVE) (DATE) UTF-8 ALL")
    out = await c.cmd("FETCH $ (UID)")
    assert b"* 2 FETCH (UID 2)" in out and out.count(b"* ") == 1
    await c.cmd("SORT RETURN (BOGUS) (DATE) UTF-8 ALL", expect="BAD")
    await c.cmd("STORE 3 +FLAGS (\\Flagged)")
    out = await c.cmd("SORT (DATE) UTF-8 MODSEQ 1")
    assert re.search(rb"\* SORT 2 4 3 1 \(MODSEQ \d+\)\r\n", out)
    out = await c.cmd("SORT RETURN (MAX) (DATE) UTF-8 MODSEQ 1")
    assert re.search(rb" MAX 1 MODSEQ \d+\r\n", out)


async def test_malformed_commands_bad_then_bye(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store)
    out = await c.send(b"a FETCH (\r\nb NOOP\r\n")
    assert b"a BAD" in out and b"b OK" in out
    for i in range(8):
        await c.send(f"x{i} BOGUS\r\n".encode())
    out = await c.send(b"y BOGUS\r\n")
    assert b"* BYE Too many errors" in out and c.session.closing


async def test_id_and_enable(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store)
    out = await c.cmd('ID ("name" "pytest" "version" "1")')
    assert b'* ID ("name" "Mailhaven"' in out
    await c.cmd("ID NIL")
    out = await c.cmd("ENABLE IMAP4rev2")
    assert b"* ENABLED IMAP4rev2" in out
    out = await c.cmd("SELECT INBOX")
    assert b"RECENT" not in out and b'* LIST () "/" "INBOX"' in out
    out = await c.cmd("SEARCH ALL")
    assert b"* ESEARCH (TAG" in out and b"* SEARCH" not in out


async def test_idle(store) -> None:  # type: ignore[no-untyped-def]
    acct, c = await setup(store)
    await c.cmd("SELECT INBOX")
    out = await c.send(b"i IDLE\r\n")
    assert out == b"+ idling\r\n"
    await deliver(store, acct.id, SIMPLE)
    out = await c.poll()
    assert out == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    out = await c.send(b"DONE\r\n")
    assert out == b"i OK IDLE terminated\r\n"
    await c.send(b"j IDLE\r\n")
    out = await c.send(b"NOPE\r\n")
    assert out.startswith(b"j BAD")


def _scram_client_final(password: str, client_first_bare: str, server_first: str) -> tuple[str, bytes]:
    import hashlib
    import hmac

    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salt = base64.b64decode(attrs["s"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    expected = b"v=" + base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest())
    return f"{without_proof},p={base64.b64encode(proof).decode()}", expected


async def test_authenticate_scram_sha_256(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    for password, ok in (("s3cret", True), ("wrong", False)):
        assert b"AUTH=SCRAM-SHA-256" not in Client(store, peer="192.0.2.9").greeting
        c = Client(store, peer="192.0.2.9", tls=True)
        assert b"AUTH=SCRAM-SHA-256" in c.greeting
        bare = "n=alice@example.com,r=abcdefghijkl"
        out = await c.send(b"a AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(("n,," + bare).encode()) + b"\r\n")
        assert out.startswith(b"+ ")
        server_first = base64.b64decode(out[2:].strip()).decode()
        assert server_first.startswith("r=abcdefghijkl")
        final, expected = _scram_client_final(password, bare, server_first)
        out = await c.send(base64.b64encode(final.encode()) + b"\r\n")
        if not ok:
            assert out.startswith(b"a NO [AUTHENTICATIONFAILED]")
            continue
        assert base64.b64decode(out[2:].strip()) == expected
        out = await c.send(b"\r\n")
        assert out.startswith(b"a OK") and c.session.account_id is not None


async def test_list_subscribed_recursivematch(store) -> None:  # type: ignore[no-untyped-def]
    _, c = await setup(store)
    await c.cmd("CREATE Foo/Bar")
    await c.cmd("SUBSCRIBE Foo/Bar")
    out = await c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert b'* LIST (\\HasChildren) "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))' in out
    out = await c.cmd('LIST (SUBSCRIBED) "" "*"')
    assert b'"Foo/Bar"' in out and b'"Foo"' not in out
    # RFC 5258 example 9: a subscribed mailbox with subscribed children carries CHILDINFO too.
    await c.cmd("CREATE Eps/Mamba")
    await c.cmd("SUBSCRIBE Eps")
    await c.cmd("SUBSCRIBE Eps/Mamba")
    out = await c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "E*"')
    assert b'* LIST (\\HasChildren \\Subscribed) "/" "Eps" ("CHILDINFO" ("SUBSCRIBED"))' in out
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "Eps/Mamba"\r\n' in out
    out = await c.cmd('LIST (SUBSCRIBED) "" "E*"')
    assert b"CHILDINFO" not in out                           # only with RECURSIVEMATCH


async def test_select_fast_path_matches_list_messages(store) -> None:  # type: ignore[no-untyped-def]
    """The optional ``list_message_columns`` store method agrees with ``list_messages``."""
    acct, c = await setup(store, SIMPLE, MULTI, SIMPLE)
    box = await store.get_mailbox(acct.id, "INBOX")
    await store.set_flags(box.id, [2], ["\\Seen", "$Later"], FlagMode.ADD)
    cols = await store.list_message_columns(box.id)
    full = await store.list_messages(box.id)
    assert list(zip(cols.uids, [frozenset(f.split()) for f in cols.flags], cols.modseq, cols.dates, cols.sizes,
                    strict=True)) == [(m.uid, m.flags, m.modseq, m.internal_date, m.size) for m in full]
    out = await c.cmd("SELECT INBOX")
    assert b"$Later" in out
    out = await c.cmd("FETCH 1:3 (FLAGS RFC822.SIZE)")
    assert b"* 2 FETCH (FLAGS (\\Recent \\Seen $Later) RFC822.SIZE %d)" % len(MULTI) in out


async def test_select_of_a_big_mailbox_allocates_no_object_per_message(store) -> None:  # type: ignore[no-untyped-def]
    """SELECT fills the view from typed arrays: the peak of what it allocates (store reader
    thread included) stays near the arrays' ~32 bytes a message (plus the process's copy of
    them, and the \\Recent set this first SELECT fills: ~130 bytes), not a tuple, ints, a float
    and a string per row besides (~300 bytes)."""
    import tracemalloc

    acct, c = await setup(store, SIMPLE, MULTI)
    box = await store.get_mailbox(acct.id, "INBOX")
    while (n := len(await store.list_messages(box.id))) < 4000:
        await store.copy(box.id, range(1, n + 1), box.id)
    await store.set_flags(box.id, range(1, n + 1, 3), ["\\Seen"], FlagMode.ADD)
    tracemalloc.start()
    try:
        out = await c.cmd("SELECT INBOX")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert b"* %d EXISTS" % n in out
    # PostgreSQL: asyncpg's batches of Records on top (242 bytes; 314 reading every row at once).
    limit = 260 if hasattr(store, "pool") else 200
    assert peak / n < limit, f"{peak / n:.0f} bytes a message"
    out = await c.cmd("FETCH 4 (FLAGS RFC822.SIZE)")
    assert b"* 4 FETCH (FLAGS (\\Recent \\Seen) RFC822.SIZE %d)" % len(MULTI) in out


async def test_fetch_bodies_beside_a_large_message_keep_the_column_path(store) -> None:  # type: ignore[no-untyped-def]
    """FETCH 1:* BODY.PEEK[] over small messages and one past 1 MB: the large one goes out
    from its file on its own, the small ones around it are still read in one ``get_raw``
    trip (a chunk holding a large message used to send all its neighbours the slow way)."""
    large = SIMPLE + (b"y" * 78 + b"\r\n") * 16000                  # ~1.3 MB
    acct, c = await setup(store, SIMPLE, MULTI, large, SIMPLE, MULTI)
    await c.cmd("SELECT INBOX")
    asked: list[list[int]] = []
    real = store.get_raw

    async def counted(mailbox_id: int, uids: object) -> object:
        asked.append(sorted(uids))  # type: ignore[call-overload]
        return await real(mailbox_id, asked[-1])

    store.get_raw = counted
    out = await c.cmd("FETCH 1:* (BODY.PEEK[])")
    for n, raw in enumerate((SIMPLE, MULTI, large, SIMPLE, MULTI), 1):
        assert b"* %d FETCH (BODY[] {%d}\r\n" % (n, len(raw)) + raw + b")\r\n" in out
    assert [1, 2] in asked and [4, 5] in asked and not any(3 in a for a in asked)


async def test_literal_limits_before_login_and_nonsync_too_big(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    c = Client(store)
    out = await c.send(b"a LOGIN {20000}\r\n")
    assert out.startswith(b"a BAD [TOOBIG]")
    out = await c.send(b"b LOGIN {10000+}\r\n" + b"x" * 10000 + b" y\r\nc NOOP\r\n")
    assert b"b BAD [TOOBIG]" in out and b"c OK" in out
    await c.login()
    limit = c.session.config.limits.message_size
    c.reader.max_literal = limit + 10   # the parser's own cap is above APPENDLIMIT here
    out = await c.send(b"d APPEND INBOX {%d+}\r\n" % (limit + 1) + b"z" * (limit + 1) + b"\r\ne NOOP\r\n")
    assert b"d NO [TOOBIG]" in out and b"e OK" in out


async def test_authenticate_refused_without_tls_from_untrusted_peer(store) -> None:  # type: ignore[no-untyped-def]
    await make_account(store)
    c = Client(store, peer="192.0.2.7")
    for mech in ("PLAIN", "SCRAM-SHA-256"):
        out = await c.cmd(f"AUTHENTICATE {mech}", expect="NO")
        assert b"PRIVACYREQUIRED" in out


async def test_8bit_headers_in_envelope_as_dovecot_sends_them(store) -> None:  # type: ignore[no-untyped-def]
    """8-bit header bytes reach the client unchanged, in literals, without UTF8=ACCEPT too:
    what Dovecot 2.3 answers for these two messages, byte for byte (checked against it),
    and what BODY[HEADER] shows. Latin-1 bytes are not replaced (U+FFFD lost them); of two
    Subject fields the last counts, runs of blanks in it are one space; the folded
    Message-ID keeps its leading blank and Date its trailing one."""
    utf8 = ("From: Jörg Müller <joerg@bücher.example>\r\nTo: alice@example.com\r\nSubject: Grüße aus Köln\r\n"
            "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <u1@example.org>\r\n\r\nHallo\r\n").encode()
    latin1 = (b"From: Ren\xe9 <rene@example.org>\r\nSubject: caf\xe9  au   lait\r\nSubject: second\t one \r\n"
              b"Date: Mon, 1 Jan 2024 10:00:00 +0000 \r\nMessage-ID:\r\n <u2@example.org>\r\n\r\nHallo\r\n")
    _, c = await setup(store, utf8, latin1)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("FETCH 1:2 (ENVELOPE)")
    jorg = b'(({13}\r\nJ\xc3\xb6rg M\xc3\xbcller NIL "joerg" {15}\r\nb\xc3\xbccher.example))'
    assert (b'* 1 FETCH (ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0000" {17}\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln '
            + b" ".join([jorg] * 3) + b' ((NIL NIL "alice" "example.com")) NIL NIL NIL "<u1@example.org>"))') in out
    rene = b'(({4}\r\nRen\xe9 NIL "rene" "example.org"))'
    assert (b'* 2 FETCH (ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0000 " "second one" ' + b" ".join([rene] * 3)
            + b' NIL NIL NIL NIL " <u2@example.org>"))') in out
    await c.cmd("UNSELECT")
    await c.cmd("ENABLE UTF8=ACCEPT")
    await c.cmd("SELECT INBOX")
    out = await c.cmd("FETCH 1:2 (ENVELOPE)")
    assert '"Grüße aus Köln"'.encode() in out and '"bücher.example"'.encode() in out
    assert b'(({4}\r\nRen\xe9 NIL "rene" "example.org"))' in out    # not UTF-8: a literal still


async def test_select_from_the_index_cache_matches_the_store(store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """SELECT served from the per-process index plus the changes since it was taken shows
    exactly what a load from the store shows, after flags, expunges, arrivals and moves."""
    from mailhaven.imap import mailbox as mailbox_module

    monkeypatch.setattr(mailbox_module, "INDEX_CACHE_MIN", 1)
    acct, c = await setup(store, SIMPLE, MULTI, SIMPLE, MULTI)
    other = Client(store)
    await other.login()
    await c.cmd("SELECT INBOX")                                   # loads and caches
    await c.cmd("UNSELECT")
    await other.cmd("SELECT INBOX")                               # from the cache
    await other.cmd("STORE 1 +FLAGS (\\Flagged)")
    await other.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await other.cmd("EXPUNGE")
    await other.cmd("CREATE Kept")
    await other.cmd("UID MOVE 3 Kept")
    await deliver(store, acct.id, SIMPLE)
    await other.cmd("UNSELECT")

    async def view(client: Client) -> bytes:
        out = await client.cmd("SELECT INBOX")
        fetched = await client.cmd("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE MODSEQ)")
        await client.cmd("UNSELECT")
        exists = re.search(rb"\* (\d+) EXISTS", out)
        return (exists.group(1) if exists else b"?") + b"\n" + b"\n".join(
            line for line in fetched.split(b"\r\n") if line.startswith(b"* ") and b" FETCH " in line)

    cached = await view(c)
    mailbox_module_cache = store.__dict__.get("_imap_index_cache", {})
    assert mailbox_module_cache                                   # the cache was used and kept
    mailbox_module_cache.clear()
    fresh = await view(c)
    assert re.sub(rb" ?\\Recent ?", b"", cached) == re.sub(rb" ?\\Recent ?", b"", fresh)   # c took the new one first
    assert cached.startswith(b"3\n") and b"\\Flagged" in cached


async def test_recent_is_claimed_by_one_session(store) -> None:  # type: ignore[no-untyped-def]
    """RFC 3501 2.3.2: a message is \\Recent in the first session told of it and no other;
    EXAMINE shows recent mail without taking it; IMAP4rev2 never shows it."""
    acct, a = await setup(store, SIMPLE, MULTI)
    b = Client(store)
    await b.login()
    out = await b.cmd("STATUS INBOX (RECENT MESSAGES)")
    assert b"(RECENT 2 MESSAGES 2)" in out
    out = await b.cmd("EXAMINE INBOX")
    assert b"* 2 RECENT" in out
    out = await b.cmd("FETCH 1:* FLAGS")
    assert out.count(b"\\Recent") == 2
    out = await a.cmd("SELECT INBOX")               # a takes both
    assert b"* 2 RECENT" in out
    out = await a.cmd("SEARCH RECENT")
    assert b"* SEARCH 1 2\r\n" in out
    out = await a.cmd("SEARCH NEW")
    assert b"* SEARCH 1 2\r\n" in out
    await a.cmd("STORE 1 +FLAGS (\\Seen)")
    out = await a.cmd("SEARCH NEW")
    assert b"* SEARCH 2\r\n" in out
    out = await a.cmd("SEARCH OLD")
    assert b"* SEARCH\r\n" in out
    out = await a.cmd("FETCH 1 FLAGS")
    assert b"FLAGS (\\Recent \\Seen)" in out
    out = await b.cmd("STATUS INBOX (RECENT)")
    assert b"(RECENT 0)" in out
    out = await b.cmd("SELECT INBOX")               # too late: a was first
    assert b"* 0 RECENT" in out
    out = await b.cmd("SEARCH OLD")
    assert b"* SEARCH 1 2\r\n" in out
    out = await b.cmd("FETCH 1:* FLAGS")
    assert b"\\Recent" not in out
    await deliver(store, acct.id, SIMPLE.replace(b"<m1@", b"<m3@"))
    out_b = await b.cmd("NOOP")                      # b hears of it first: recent in b only
    assert b"* 3 EXISTS" in out_b and b"* 1 RECENT" in out_b
    out_a = await a.cmd("NOOP")
    assert b"* 3 EXISTS" in out_a and b"* 2 RECENT" in out_a
    out = await a.cmd("UID SEARCH RECENT")
    assert b"* SEARCH 1 2\r\n" in out
    out = await b.cmd("UID SEARCH RECENT")
    assert b"* SEARCH 3\r\n" in out
    await b.cmd("UID STORE 3 +FLAGS (\\Deleted)")
    out = await b.cmd("EXPUNGE")
    assert b"* 3 EXPUNGE" in out
    assert b.session.selected is not None and not b.session.selected.recent
    rev2 = Client(store)
    await rev2.login()
    await rev2.cmd("ENABLE IMAP4rev2")
    await deliver(store, acct.id, SIMPLE.replace(b"<m1@", b"<m4@"))
    out = await rev2.cmd("SELECT INBOX")
    assert b"RECENT" not in out
    out = await rev2.cmd("FETCH 1:* FLAGS")
    assert b"\\Recent" not in out
    out = await a.cmd("NOOP")                        # rev2 took the new one all the same
    assert b"* 3 EXISTS" in out and b"* 2 RECENT" in out


async def test_recent_uid_survives_reopen_and_old_databases(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What was claimed stays claimed after a restart; a database from before \\Recent
    existed counts the mail already there as not recent."""
    import sqlite3

    from mailhaven.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path)
    await store.open()
    acct = await make_account(store)
    await deliver(store, acct.id, SIMPLE)
    box = await store.get_mailbox(acct.id, "INBOX")
    assert (box.recent_uid, box.recent) == (1, 1)
    assert await store.claim_recent(box.id, 2) == 1
    assert await store.claim_recent(box.id, 2) == 2          # nothing left to take
    assert await store.claim_recent(box.id, 1) == 2          # never goes back
    await deliver(store, acct.id, MULTI)
    assert (await store.get_mailbox(acct.id, "INBOX")).recent == 1
    await store.close()
    conn = sqlite3.connect(tmp_path / "mailhaven.db")
    conn.execute("ALTER TABLE mailboxes DROP COLUMN recent_uid")  # as an older version left it
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        box = await store.get_mailbox(acct.id, "INBOX")
        assert (box.recent_uid, box.recent, box.messages) == (3, 0, 2)
    finally:
        await store.close()


async def test_summaries_move_out_of_the_rows_of_an_older_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Older versions kept each summary in its messages row; opening moves them to
    message_data once, and everything reads as before (ENVELOPE rendered at FETCH time)."""
    import sqlite3

    from mailhaven.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path)
    await store.open()
    acct = await make_account(store)
    for raw in (SIMPLE, MULTI):
        await deliver(store, acct.id, raw)
    c = Client(store)
    await c.login()
    await c.cmd("SELECT INBOX")
    before = await c.cmd("FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY.PEEK[1])")
    columns_before = await c.cmd("FETCH 1:2 (UID ENVELOPE BODYSTRUCTURE)")
    await store.close()
    conn = sqlite3.connect(tmp_path / "mailhaven.db")       # as the version before this one left it
    conn.execute("ALTER TABLE messages ADD COLUMN summary TEXT NOT NULL DEFAULT ''")
    conn.execute("UPDATE messages SET summary = (SELECT summary FROM message_data d WHERE d.id = messages.id)")
    conn.execute("DROP TABLE message_data")
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        columns = {r[1] for r in store.db.read_sync(lambda c: c.execute("PRAGMA table_info(messages)").fetchall())}
        assert "summary" not in columns
        inbox = await store.get_mailbox(acct.id, "INBOX")
        messages = await store.get_messages(inbox.id, [1, 2], with_summary=False, imap_wire=True)
        assert [m.wire for m in messages] == [None, None] and all(m.summary["imap"] for m in messages)
        c = Client(store)
        await c.login()
        await c.cmd("SELECT INBOX")
        assert await c.cmd("FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY.PEEK[1])") == before
        assert await c.cmd("FETCH 1:2 (UID ENVELOPE BODYSTRUCTURE)") == columns_before   # no forms: rendered
        await store.copy(inbox.id, [2], (await store.create_mailbox(acct.id, "Copies")).id)
        assert (await store.get_messages((await store.get_mailbox(acct.id, "Copies")).id, [1]))[0].summary
    finally:
        await store.close()


async def test_column_fetch_fast_path_answers_as_the_general_one(store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """FETCH of UID/FLAGS/RFC822.SIZE/INTERNALDATE, the stored ENVELOPE/BODYSTRUCTURE and
    BODY.PEEK[] only is served from the view's columns and plain store tuples; its bytes
    (keywords announced first, \\Recent, numbers with an expunge pending) must be those of
    the general path: two sessions in the same state, one on each path."""
    from mailhaven.imap import fetch

    acct = await make_account(store)
    for flags in (("\\Seen",), (), ("$Label1", "\\Flagged"), ("$Label1",), ("$Junk",), ()):
        await deliver(store, acct.id, MULTI if len(flags) % 2 else SIMPLE, flags=flags)
    other, fast, general = Client(store), Client(store), Client(store)
    for c in (other, fast, general):
        await c.login()
        await c.cmd("SELECT INBOX")
    await other.cmd("UID STORE 2 +FLAGS (\\Deleted)")
    await other.cmd("EXPUNGE")                               # pending in both views: numbers kept
    real = fetch._by_columns
    taken: list[str] = []

    def spy(s, items):  # type: ignore[no-untyped-def]
        if real(s, items):
            taken.append(" ".join(i.label for i in items))
            return True
        return False

    async def both(command: str) -> tuple[bytes, bytes]:
        monkeypatch.setattr(fetch, "_by_columns", spy)
        a = await fast.cmd(command)
        monkeypatch.setattr(fetch, "_by_columns", lambda s, items: False)
        b = await general.cmd(command)
        monkeypatch.setattr(fetch, "_by_columns", real)
        return a, b

    for command in ("FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)", "UID FETCH 2:5 FLAGS",
                    "FETCH 3,1,5 (FLAGS UID)", "FETCH 1:* FAST", "UID FETCH 1:* (INTERNALDATE)",
                    "FETCH 1:* (ENVELOPE BODYSTRUCTURE)", "FETCH 1:* ALL", "UID FETCH 1,3:* (FLAGS BODY.PEEK[])",
                    "FETCH 2:4 (RFC822.SIZE BODY.PEEK[] UID ENVELOPE)", "UID FETCH 5:6 (BODYSTRUCTURE)",
                    "UID FETCH 3 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] FLAGS)", "FETCH 1:* (BODY.PEEK[HEADER])",
                    "FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS.NOT (Subject Date)])", "FETCH 1 (BODY.PEEK[]<0.10>)",
                    "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (To MIME-Version)]<4.20> BODY.PEEK[HEADER]<300>)",
                    "FETCH 2,4 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[] FLAGS)", "FETCH 3 BODY.PEEK[HEADER.FIELDS (From)]", "UID FETCH 999 UID"):
        taken.clear()
        a, b = await both(command)
        assert a == b, command
        assert taken, command
    monkeypatch.setattr(fetch, "_by_columns", spy)
    for command in ("FETCH 1 (BODY[HEADER])", "FETCH 1 (BODY[])", "FETCH 1 (BODY)", "FETCH 1 (BODY.PEEK[1])",
                    "FETCH 1 (BODY.PEEK[TEXT])", "FETCH 1 (BODY.PEEK[1.HEADER])"):
        taken.clear()
        await other.cmd(command)
        assert not taken, command                            # \\Seen, BODY, parts, TEXT: general
    monkeypatch.setattr(fetch, "_by_columns", real)
    await other.cmd("UID STORE 4 +FLAGS ($New)")             # a keyword neither session was told of
    await deliver(store, acct.id, SIMPLE)                    # \\Recent: the fast session claims it
    await both("NOOP")                                       # EXISTS, RECENT, FLAGS with $New
    a, b = await both("UID FETCH 1:* (UID FLAGS)")
    assert b"(UID 4 FLAGS ($Label1 $New))" in a and b"(UID 7 FLAGS (\\Recent))" in a
    unrecent = re.compile(rb"\\Recent|\* \d+ RECENT\r\n")
    assert unrecent.sub(b"", a) == unrecent.sub(b"", b)


async def test_recreated_mailbox_reports_new_messages_not_old_expunges(store) -> None:  # type: ignore[no-untyped-def]
    """DELETE then CREATE of the same name (SQLite may reuse the mailbox id): a session on the
    new mailbox is told of an APPEND as EXISTS, never as an EXPUNGE of the old mailbox's
    message with the same UID (imaptest's append and copy scripts found this)."""
    acct = await make_account(store)
    c, other = Client(store), Client(store)
    for s in (c, other):
        await s.login()
    await c.cmd("CREATE Fresh")
    await c.cmd("SELECT Fresh")
    assert b"* 1 EXISTS" in await c.send(b"a1 APPEND Fresh {8+}\r\nX: y\r\n\r\n\r\n")
    await c.cmd("SELECT INBOX")
    await c.cmd("DELETE Fresh")
    await c.cmd("CREATE Fresh")
    await c.cmd("SELECT Fresh")
    await other.cmd("SELECT Fresh")
    for n in (1, 2):
        out = await c.send(b"a2 APPEND Fresh {8+}\r\nX: y\r\n\r\n\r\n")
        assert b"EXPUNGE" not in out and b"* %d EXISTS" % n in out, out
    out = await other.cmd("NOOP")
    assert b"EXPUNGE" not in out and b"* 2 EXISTS" in out, out
    assert b"* 2 FETCH (UID 2 FLAGS (" in await c.cmd("FETCH 1:2 (UID FLAGS)")
    assert acct is not None


async def test_search_empty_header_string_and_esearch_extremes(store) -> None:  # type: ignore[no-untyped-def]
    """SUBJECT "" matches messages that have a Subject field, not those without (as HEADER
    does, RFC 9051 6.4.4); RETURN (MIN) / (MAX) report the MODSEQ of the message returned
    (RFC 4731 3.2) and SAVE with them keeps only those (RFC 5182 2.4). imaptest's
    search-header and esearch-condstore scripts check both."""
    _, c = await setup(store, SIMPLE, SIMPLE.replace(b"Subject: Lunch plans\r\n", b""), MULTI)
    await c.cmd("SELECT INBOX")
    assert b"* SEARCH 1 3\r\n" in await c.cmd('SEARCH SUBJECT ""')
    assert b"* SEARCH 2\r\n" in await c.cmd('SEARCH NOT SUBJECT ""')
    assert b"* SEARCH 1 2 3\r\n" in await c.cmd('SEARCH BODY ""')
    await c.cmd("STORE 3 +FLAGS (\\Seen)")
    await c.cmd("STORE 1 +FLAGS (\\Seen)")                # 1 now has the highest MODSEQ
    fetched = await c.cmd("FETCH 1:3 (MODSEQ)")
    modseq = {int(n): int(v) for n, v in re.findall(rb"\* (\d) FETCH \(MODSEQ \((\d+)\)\)", fetched)}
    out = await c.cmd("SEARCH RETURN (MAX) MODSEQ 1 ALL")
    assert f"MAX 3 MODSEQ {modseq[3]}\r\n".encode() in out, out
    out = await c.cmd("SEARCH RETURN (MIN MAX) MODSEQ 1 ALL")
    assert f"MIN 1 MAX 3 MODSEQ {modseq[1]}\r\n".encode() in out, out
    out = await c.cmd("SEARCH RETURN (COUNT) MODSEQ 1 2:3")
    assert f"COUNT 2 MODSEQ {max(modseq[2], modseq[3])}\r\n".encode() in out, out
    await c.cmd("SEARCH RETURN (SAVE MIN) ALL")
    assert b"* SEARCH 1\r\n" in await c.cmd("SEARCH $")
    await c.cmd("SEARCH RETURN (SAVE MAX MIN) ALL")
    assert b"* SEARCH 1 3\r\n" in await c.cmd("SEARCH $")
    await c.cmd("SEARCH RETURN (SAVE MIN COUNT) ALL")
    assert b"* SEARCH 1 2 3\r\n" in await c.cmd("SEARCH $")


async def test_lsub_percent_lists_unsubscribed_parents_and_recursivematch_errors(store) -> None:  # type: ignore[no-untyped-def]
    """RFC 3501 6.3.9: with "%", an unsubscribed parent of a subscribed mailbox is listed
    \\Noselect; RFC 5258 3: RECURSIVEMATCH alone or with only REMOTE is BAD (imaptest's
    subscribe and listext scripts)."""
    await make_account(store)
    c = Client(store)
    await c.login()
    for name in ("Top/Mid/Leaf", "Top/Other", "Top/Sub", "Solo", "Gone/Child"):
        await c.cmd(f"CREATE {name}")
    for name in ("Top/Mid/Leaf", "Top/Sub", "Gone/Child"):
        await c.cmd(f"SUBSCRIBE {name}")
    await c.cmd("DELETE Gone/Child")                         # stays subscribed (RFC 3501 6.3.6)
    await c.cmd("DELETE Gone")
    out = await c.cmd('LSUB "" "Top/%"')
    assert b'* LSUB (\\Noselect) "/" "Top/Mid"\r\n' in out and b'* LSUB () "/" "Top/Sub"\r\n' in out
    assert b"Leaf" not in out and b"Top/Other" not in out
    out = await c.cmd('LSUB "" "%"')
    assert b'* LSUB (\\Noselect) "/" "Top"\r\n' in out and b'* LSUB (\\Noselect) "/" "Gone"\r\n' in out
    assert b"Solo" not in out and out.count(b'"Top"') == 1
    out = await c.cmd('LSUB "" "*"')
    assert b'"Top/Mid/Leaf"' in out and b'"Top/Mid"' not in out and b'"Top"' not in out
    await c.cmd('LIST (RECURSIVEMATCH) "" "*"', expect="BAD")
    await c.cmd('LIST (RECURSIVEMATCH REMOTE) "" "*"', expect="BAD")
    await c.cmd('LIST (REMOTE) "" "%"')
    await c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')


async def test_append_stores_bare_lf_messages_with_crlf(store) -> None:  # type: ignore[no-untyped-def]
    """A message APPENDed with bare LF line ends is stored, sized and served with CRLF
    (RFC 5322 lines; Dovecot converts on output to the same effect); a literal8's binary
    part is stored base64 (RFC 3516 4.4, as Dovecot): BODY[TEXT] carries no NUL and
    BINARY[] gives the header and the bytes sent, BINARY.SIZE[1] their count."""
    await make_account(store)
    c = Client(store)
    await c.login()
    lf = b"From: a@b.example\nSubject: lf\n\nline one\nline two\r\nlast\n"
    crlf = b"From: a@b.example\r\nSubject: lf\r\n\r\nline one\r\nline two\r\nlast\r\n"
    await c.send(b"a1 APPEND INBOX {%d+}\r\n" % len(lf) + lf + b"\r\n")
    # Content-* fields count with MIME-Version (RFC 2045 4, as Dovecot reads them).
    binary = b"From: a@b.example\nMIME-Version: 1.0\nContent-Transfer-Encoding: binary\n\n\x00\n\x01\n"
    await c.send(b"a2 APPEND INBOX ~{%d+}\r\n" % len(binary) + binary + b"\r\n")
    await c.cmd("SELECT INBOX")
    out = await c.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[] BODYSTRUCTURE)")
    assert b"RFC822.SIZE %d " % len(crlf) in out and b"BODY[] {%d}\r\n" % len(crlf) + crlf in out
    assert b' "7bit" 26 3 ' in out                        # size and lines of the CRLF body
    out = await c.cmd("FETCH 2 (BODY.PEEK[TEXT] BINARY.SIZE[1] BINARY.PEEK[])")
    stored_header = b"From: a@b.example\nMIME-Version: 1.0\nContent-Transfer-Encoding: base64\n\n"
    assert b"BODY[TEXT] {10}\r\nAAoBCg==\r\n BINARY.SIZE[1] 4 " in out, out
    assert b"BINARY[] ~{%d}\r\n" % (len(stored_header) + 4) + stored_header + b"\x00\n\x01\n)" in out, out


async def test_a_stored_nul_is_sent_as_0x80_in_ordinary_literals(store) -> None:  # type: ignore[no-untyped-def]
    """RFC 9051 4.3: no NUL in a literal. A message APPENDed with one (as real clients do) is
    served with 0x80 in its place, as Dovecot does, sizes unchanged, by every FETCH path."""
    await make_account(store)
    c = Client(store)
    await c.login()
    msg = b"From: a@b.example\r\nSubject: nul\r\n\r\nx\x00y\r\n"
    await c.send(b"a1 APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    await c.cmd("SELECT INBOX")
    for items in ("BODY.PEEK[]", "BODY.PEEK[TEXT]", "RFC822", "BODY.PEEK[1]", "RFC822.TEXT"):
        out = await c.cmd(f"FETCH 1 ({items})")
        assert b"\x00" not in out and b"x\x80y\r\n" in out, (items, out)
    out = await c.cmd("FETCH 1 (RFC822.SIZE)")
    assert b"RFC822.SIZE %d" % len(msg) in out


async def test_search_finds_forwarded_message_headers(store) -> None:  # type: ignore[no-untyped-def]
    """The header of a message forwarded as message/rfc822 is part of the outer body
    (RFC 9051 6.4.4 BODY/TEXT), so its sender and subject are found; the preview is not
    padded with them."""
    raw = (b"From: a@b.example\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
           b"see below\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n"
           b"From: Original Sender <orig@elsewhere.example>\r\nSubject: quarterly figures\r\n\r\n"
           b"inner text\r\n--B--\r\n")
    acct, c = await setup(store, raw, SIMPLE)
    await c.cmd("SELECT INBOX")
    assert b"* SEARCH 1\r\n" in await c.cmd("SEARCH BODY elsewhere.example")
    assert b"* SEARCH 1\r\n" in await c.cmd('SEARCH TEXT "quarterly figures"')
    assert b"* SEARCH\r\n" in await c.cmd("SEARCH SUBJECT quarterly")      # not the outer subject
    box = await store.get_mailbox(acct.id, "INBOX")
    [m] = await store.get_messages(box.id, [1])
    assert m.summary["preview"] == "see below inner text"


async def test_fetch_preview(store) -> None:  # type: ignore[no-untyped-def]
    """RFC 8970 PREVIEW: the readable text's first 256 characters, whitespace collapsed,
    as computed at delivery; (LAZY) answers the same, other modifiers are BAD; non-ASCII
    text goes as a literal to a session without UTF8=ACCEPT."""
    _, c = await setup(store, SIMPLE, b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                      b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xc3\xa9   au\r\n  lait "
                                      + b"x" * 400 + b"\r\n")
    assert b" PREVIEW" in await c.cmd("CAPABILITY")
    await c.cmd("SELECT INBOX")
    assert b'* 1 FETCH (UID 1 PREVIEW "Shall we meet at noon?")' in await c.cmd("UID FETCH 1 (PREVIEW)")
    assert b'PREVIEW "Shall we meet at noon?"' in await c.cmd("FETCH 1 (FLAGS PREVIEW (LAZY))")
    out = await c.cmd("FETCH 2 PREVIEW")
    text = "Café au lait " + "x" * 243
    assert b"PREVIEW {%d}\r\n" % len(text.encode()) + text.encode() + b")" in out
    await c.cmd("FETCH 1 (PREVIEW (FAST))", expect="BAD")


def _numbered(n: int) -> bytes:
    return f"From: a{n}@example.org\r\nSubject: s{n}\r\n\r\nbody {n}\r\n".encode()


async def test_context_search_updates_and_partial(store) -> None:  # type: ignore[no-untyped-def]
    """RFC 5267 4 (imaptest's search-context-update scripts, on six messages): an updating
    search tells ADDTO and REMOVEFROM as flags change, REMOVEFROM before the EXPUNGEs of
    its messages, new mail as ADDTO after EXISTS, nothing after CANCELUPDATE; PARTIAL
    answers a window of the result."""
    acct, c = await setup(store, *(_numbered(n) for n in range(1, 7)))
    assert b"CONTEXT=SEARCH" in await c.cmd("CAPABILITY")
    await c.cmd("SELECT INBOX")
    out = await c.send(b"u1 SEARCH RETURN (UPDATE) BODY body SEEN\r\n")
    assert out == b'* ESEARCH (TAG "u1")\r\nu1 OK SEARCH completed\r\n'
    out = await c.cmd("STORE 1,2,5 +FLAGS (\\Seen)")
    assert b'* ESEARCH (TAG "u1") ADDTO (0 1:2,5)\r\n' in out
    out = await c.cmd("STORE 1,2 -FLAGS (\\Seen)")
    assert b'* ESEARCH (TAG "u1") REMOVEFROM (0 1:2)\r\n' in out
    out = await c.cmd("STORE 3:6 +FLAGS.SILENT (\\Deleted)")
    assert b"ESEARCH" not in out
    out = await c.cmd("EXPUNGE")
    assert out.index(b'* ESEARCH (TAG "u1") REMOVEFROM (0 5)\r\n') < out.index(b" EXPUNGE\r\n")
    assert out.count(b" EXPUNGE\r\n") == 4
    # Another session's change and a delivery: told at the next command.
    other = Client(store)
    await other.login()
    await other.cmd("SELECT INBOX")
    await other.cmd("STORE 2 +FLAGS (\\Seen)")
    await deliver(store, acct.id, _numbered(7), flags=("\\Seen",))
    out = await c.cmd("NOOP")
    assert b'* ESEARCH (TAG "u1") ADDTO (0 2:3)\r\n' in out
    assert out.index(b"* 3 EXISTS") < out.index(b"ADDTO")
    out = await c.send(b"u2 UID SEARCH RETURN (UPDATE ALL) SUBJECT s1\r\n")
    assert b'* ESEARCH (TAG "u2") UID ALL 1\r\n' in out
    out = await c.cmd("STORE 1 +FLAGS (\\Seen)")
    assert b'* ESEARCH (TAG "u1") ADDTO (0 1)\r\n' in out and b'"u2"' not in out
    await c.cmd('CANCELUPDATE "u1"')
    await c.cmd('CANCELUPDATE "u1"', expect="BAD")
    out = await c.cmd("STORE 1:3 -FLAGS (\\Seen)")
    assert b"ESEARCH" not in out
    await other.cmd("UID STORE 1 +FLAGS (\\Deleted)")
    await other.cmd("UID EXPUNGE 1")
    out = await c.cmd("FETCH 1:* (UID)")                   # no EXPUNGE allowed: numbers stay
    assert b'* ESEARCH (TAG "u2") UID REMOVEFROM (0 1)\r\n' in out and b"EXPUNGE" not in out
    out = await c.cmd("NOOP")
    assert b"* 1 EXPUNGE" in out
    # PARTIAL: a window of result positions (reversed ends are put in order).
    for options, answer in (("PARTIAL 2:1", b" PARTIAL (1:2 1:2)"), ("PARTIAL 2:9 COUNT", b" COUNT 2 PARTIAL (2:9 2)"),
                            ("PARTIAL 5:6", b" PARTIAL (5:6 NIL)")):
        assert answer + b"\r\n" in await c.cmd(f"SEARCH RETURN ({options}) ALL"), options
    for bad in ("PARTIAL 1", "PARTIAL 1:*", "PARTIAL *:1", "PARTIAL 0:2", "PARTIAL"):
        await c.cmd(f"SEARCH RETURN ({bad}) ALL", expect="BAD")
    await c.cmd("SORT RETURN (UPDATE) (DATE) UTF-8 ALL", expect="BAD")    # CONTEXT=SORT is not offered
    # The contexts end with the selection.
    await c.send(b"u3 SEARCH RETURN (UPDATE) SEEN\r\n")
    await c.cmd("SELECT INBOX")
    out = await c.cmd("STORE 1 +FLAGS (\\Seen)")
    assert b"ESEARCH" not in out


async def test_catenate_builds_messages_from_text_and_urls(store) -> None:  # type: ignore[no-untyped-def]
    """RFC 4469: APPEND ... CATENATE puts literal text and parts of messages named by IMAP
    URLs (RFC 5092) together; a URL for anything but a message of this account is refused
    with BADURL and nothing is appended; a missing target mailbox is TRYCREATE first."""
    _, c = await setup(store, MULTI)
    assert b"CATENATE" in await c.cmd("CAPABILITY")
    out = await c.cmd("SELECT INBOX")
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))  # type: ignore[union-attr]
    whole = await c.cmd("FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[2] BODY.PEEK[2.MIME])")
    header, part2, mime2 = [whole[m.end():m.end() + int(m.group(1))] for m in re.finditer(rb"\{(\d+)\}\r\n", whole)]
    text = b"From: me@example.com\r\nSubject: fwd\r\n\r\nSee below.\n"
    out = await c.send(b'a1 APPEND INBOX CATENATE (TEXT {%d+}\r\n%s URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2.MIME" '
                       b'URL "imap://alice%%40example.com@mail.test/INBOX/;UID=1/;SECTION=2" URL "/INBOX/;UID=1/;PARTIAL=0.4")\r\n'
                       % (len(text), text, uidvalidity))
    assert b"a1 OK [APPENDUID" in out
    out = await c.cmd("FETCH 2 (BODY.PEEK[])")
    assert b"See below.\r\n" + mime2 + part2 + header[:4] + b")" in out
    for url in ("/INBOX;UIDVALIDITY=1/;UID=1", "/INBOX/;UID=9", "/Nowhere/;UID=1",
                "imap://alice%40example.com@elsewhere.example/INBOX/;UID=1", "imap://bob@mail.test/INBOX/;UID=1",
                "/INBOX/;UID=1;URLAUTH=anonymous:internal:x",
                "http://example.com/"):
        out = await c.send(b'b APPEND INBOX CATENATE (URL "%s")\r\n' % url.encode())
        assert out.startswith(b'b NO [BADURL "'), (url, out)
    out = await c.send(b'c APPEND Nowhere CATENATE (URL "/Nowhere/;UID=1")\r\n')
    assert out.startswith(b"c NO [TRYCREATE]")
    assert (await c.send(b"d APPEND INBOX CATENATE (TEXT)\r\n")).startswith(b"d BAD")
    out = await c.cmd("STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 2" in out                                         # none of the refused ones


async def test_nul_in_a_body_is_sent_as_0x80_in_literals(store) -> None:  # type: ignore[no-untyped-def]
    """RFC 9051 4.3: no NUL in a literal; Dovecot sends 0x80 for each in BODY[] and RFC822,
    BINARY[] (literal8) keeps it."""
    raw = b"From: a@b.example\r\nSubject: nul\r\n\r\nbefore\x00after\r\n"
    _, c = await setup(store, raw)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("FETCH 1 (BODY.PEEK[] BODY.PEEK[TEXT]<3.6> RFC822.TEXT BINARY.PEEK[1])")
    assert b"\x00" not in out.split(b"BINARY[1]")[0]
    assert b"BODY[] {%d}\r\n" % len(raw) + raw.replace(b"\x00", b"\x80") in out
    assert b"BODY[TEXT]<3> {6}\r\nore\x80af" in out
    assert b"BINARY[1] ~{14}\r\nbefore\x00after\r\n" in out


async def test_nul_is_0x80_in_whole_mailbox_fetches_too(store) -> None:  # type: ignore[no-untyped-def]
    """The bulk path (BODY.PEEK[] of many messages, served from columns) substitutes as well."""
    raw = b"From: a@b.example\r\nSubject: nul\r\n\r\nbefore\x00after\r\n"
    _, c = await setup(store, raw, raw)
    await c.cmd("SELECT INBOX")
    out = await c.cmd("FETCH 1:* (UID BODY.PEEK[])")
    assert b"\x00" not in out and out.count(raw.replace(b"\x00", b"\x80")) == 2


async def test_imaptest_findings_on_condstore_groups_and_threads(store) -> None:  # type: ignore[no-untyped-def]
    """What imaptest's esearch-condstore, search-addresses, sort-addresses and thread scripts
    found, in one session: FETCH MODSEQ tells HIGHESTMODSEQ (RFC 7162 3.1); SEARCH TO finds a
    group's name; SORT (CC) keys on a leading group's name (RFC 5256 3, as Dovecot); a
    References loop leaves the message a root over its would-be parent."""
    def msg(headers: str) -> bytes:
        return (headers.replace("\n", "\r\n") + "\r\n\r\nbody\r\n").encode()

    acct, c = await setup(
        store,
        msg("Message-ID: <a@b>\nCc: user2@domain2.org"),
        msg("Message-ID: <b@b>\nReferences: <a@b> <c@b>\nCc: user2: blah@domain1.org;\nTo: team: x@y.example;"),
        msg("Message-ID: <c@b>\nReferences: <b@b>\nCc: user1@domain1.org"),
    )
    await c.cmd("SELECT INBOX")
    out = await c.cmd("FETCH 1 MODSEQ")
    assert re.search(rb"^\* OK \[HIGHESTMODSEQ \d+\]", out, re.M), out
    assert b"* SEARCH 2\r\n" in await c.cmd("SEARCH TO team")
    assert b"* SORT 3 1 2\r\n" in await c.cmd("SORT (CC) US-ASCII ALL")
    assert b"* SORT 1 2 3\r\n" in await c.cmd("SORT (REVERSE CC) US-ASCII ALL")
    assert b"* THREAD (1)(3 2)\r\n" in await c.cmd("THREAD REFERENCES US-ASCII ALL")   # same dates: UID order

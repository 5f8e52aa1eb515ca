"""Sieve at local delivery, over real sockets: a script put with the CLI sorts mail sent
with smtplib to the running server; imaplib reads the result. fileinto :create with a
flag, discard, reject (550 5.7.1 at the end of DATA), the implicit keep."""

from __future__ import annotations

import imaplib
import smtplib

import pytest

from conftest import ServerProcess

SCRIPT = r'''require ["fileinto", "imap4flags", "mailbox", "reject", "envelope"];
if header :contains "list-id" "dev.lists.example.org" {
    addflag "\\Flagged";
    addflag "$List";
    fileinto :create "Lists/dev";
    stop;
}
if header :is "subject" "junk" { discard; stop; }
if envelope :is "from" "pest@spam.example" { reject "I do not want mail from you"; }
'''

LIST_MAIL = (b"From: Alice <alice@example.org>\r\nTo: dev@lists.example.org\r\n"
             b"Subject: [dev] Release 2.0\r\nList-Id: Developers <dev.lists.example.org>\r\n\r\nOut now.\r\n")
PLAIN_MAIL = b"From: carol@example.net\r\nTo: bob@nyu.example\r\nSubject: lunch?\r\n\r\nNoon?\r\n"
JUNK_MAIL = b"From: carol@example.net\r\nTo: bob@nyu.example\r\nSubject: junk\r\n\r\nBuy!\r\n"


def _send(srv: ServerProcess, mail_from: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as smtp:
        smtp.sendmail(mail_from, ["bob@nyu.example"], data)


def test_script_sorts_flags_discards_and_rejects(server: ServerProcess, tmp_path) -> None:
    server.add_user("bob@nyu.example")
    script = tmp_path / "bob.sieve"
    script.write_text(SCRIPT)
    server.admin("sieve", "put", "bob@nyu.example", str(script))

    _send(server, "owner-dev@lists.example.org", LIST_MAIL)
    _send(server, "carol@example.net", PLAIN_MAIL)
    _send(server, "carol@example.net", JUNK_MAIL)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(server, "pest@spam.example", PLAIN_MAIL)
    assert refused.value.smtp_code == 550
    assert b"5.7.1 I do not want mail from you" in refused.value.smtp_error

    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        imap.login("bob@nyu.example", "s3cret")
        typ, boxes = imap.list()
        assert typ == "OK" and any(b'"Lists/dev"' in b or b" Lists/dev" in b for b in boxes), boxes
        typ, data = imap.select('"Lists/dev"')
        assert typ == "OK" and data == [b"1"]
        typ, data = imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        meta = data[0][0]
        assert b"\\Flagged" in meta and b"$List" in meta and b"\\Seen" not in meta
        assert b"Release 2.0" in data[0][1]
        typ, data = imap.select("INBOX")
        assert data == [b"1"]                       # lunch kept; junk discarded; pest refused
        typ, data = imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"lunch?" in data[0][1] and b"\\Flagged" not in data[0][0]
    finally:
        imap.logout()

    server.admin("sieve", "remove", "bob@nyu.example")      # no script: INBOX again
    _send(server, "carol@example.net", JUNK_MAIL)
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        imap.login("bob@nyu.example", "s3cret")
        assert imap.select("INBOX")[1] == [b"2"]
    finally:
        imap.logout()


def test_jmap_submission_to_a_local_user_runs_their_script(server: ServerProcess, tmp_path) -> None:
    from test_jmap_api import MAIL, api, roles, session

    server.add_user("alice@example.org")
    server.add_user("bob@example.org")
    script = tmp_path / "bob.sieve"
    script.write_text('require ["fileinto", "imap4flags", "mailbox"];\n'
                      'if address :is "from" "alice@example.org" { fileinto :create :flags "$Alice" "People/Alice"; }\n')
    server.admin("sieve", "put", "bob@example.org", str(script))
    account = session(server)["primaryAccounts"][MAIL]
    out = api(server, [
        ["Email/set", {"accountId": account, "create": {"m": {
            "mailboxIds": {roles(server)["drafts"]: True}, "from": [{"email": "alice@example.org"}],
            "to": [{"email": "bob@example.org"}], "subject": "from JMAP",
            "bodyValues": {"b": {"value": "Hi Bob"}}, "textBody": [{"partId": "b", "type": "text/plain"}]}}}, "e"],
        ["EmailSubmission/set", {"accountId": account, "create": {"s": {"emailId": "#m"}}}, "s"]])
    assert "s" in out[1][1]["created"], out
    imap = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        imap.login("bob@example.org", "s3cret")
        assert imap.select('"People/Alice"')[1] == [b"1"]
        typ, data = imap.fetch("1", "(FLAGS)")
        assert b"$Alice" in data[0]
        assert imap.select("INBOX")[1] == [b"0"]
    finally:
        imap.logout()

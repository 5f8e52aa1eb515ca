"""Mail into a running Mailhaven as another MTA sends it, and read back as the recipient:
port 25 with smtplib from a loopback address of the test's choosing (SPF, DNSBL and PTR
checks see that address), then the stored message found by Subject over IMAP; and a local
user's submission of a short message (port 587, AUTH), with the mailbox list to see it arrive."""

from __future__ import annotations

import imaplib
import json
import smtplib
from typing import Any

from conftest import ServerProcess

HOST = "127.0.0.1"


def send_mx(srv: ServerProcess, mail_from: str, rcpts: list[str], msg: bytes | str, *, source: str | None = HOST,
            helo: str = "client.example", timeout: float = 30) -> None:
    """One transaction on port 25 from ``source`` (None: whichever address the kernel picks)."""
    address = (source, 0) if source is not None else None
    with smtplib.SMTP(HOST, srv.port("smtp"), local_hostname=helo, source_address=address, timeout=timeout) as s:
        s.sendmail(mail_from, rcpts, msg)


def fetch_by_subject(srv: ServerProcess, subject: str, folder: str = "INBOX", *, user: str = "bob@nyu.example",
                     password: str = "s3cret", section: str = "BODY.PEEK[]") -> bytes | None:
    """``section`` of the last message in ``folder`` whose Subject contains ``subject``, or None."""
    imap = imaplib.IMAP4(HOST, srv.port("imap"))
    try:
        imap.login(user, password)
        imap.select(folder, readonly=True)
        _, found = imap.search(None, "SUBJECT", f'"{subject}"')
        uids = found[0].split()
        if not uids:
            return None
        _, parts = imap.fetch(uids[-1], f"({section})")
        body = parts[0]
        assert isinstance(body, tuple)
        return body[1]
    finally:
        imap.logout()


def submit(srv: ServerProcess, user: str, rcpt: str, subject: str, password: str = "s3cret") -> None:
    """``user`` sends a short message to ``rcpt`` on the submission port (after AUTH)."""
    with smtplib.SMTP(srv.host, srv.port("submission"), timeout=30) as smtp:
        smtp.login(user, password)
        smtp.sendmail(user, [rcpt], f"From: {user}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nHello.\r\n".encode())


def inbox(srv: ServerProcess, address: str) -> list[dict[str, Any]]:
    """The messages of ``address``'s INBOX, as ``mailhaven mailbox list --json`` shows them."""
    return list(json.loads(srv.admin("mailbox", "list", address, "--json").stdout))

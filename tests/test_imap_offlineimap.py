"""offlineimap (Debian's offlineimap3) syncing a Mailhaven account both ways: messages and
folders down to a Maildir, then a flag set and a message added locally go back up."""

from __future__ import annotations

import imaplib
import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if shutil.which("offlineimap") is None:
        reason = "offlineimap is not installed (apt-get install offlineimap3)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    s = ServerProcess(tmp_path_factory.mktemp("offlineimap") / "data").start()
    try:
        s.add_user("alice@example.org", PASSWORD)
        yield s
    finally:
        s.stop()


def run(rc: Path) -> None:
    out = subprocess.run(["offlineimap", "-c", str(rc), "-o", "-u", "basic"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "ERROR" not in out.stdout + out.stderr, out.stdout[-2000:] + out.stderr[-2000:]


def test_sync_both_ways(srv: ServerProcess, tmp_path: Path) -> None:
    for i in range(3):
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
            s.sendmail("carol@outside.example", ["alice@example.org"],
                       f"From: carol@outside.example\r\nSubject: sync {i}\r\nMessage-ID: <o{i}@x>\r\n\r\nbody {i}\r\n".encode())
    mail = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(f"""[general]
accounts = test
metadata = {tmp_path / 'meta'}

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {mail}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {srv.port('imap')}
remoteuser = alice@example.org
remotepass = {PASSWORD}
ssl = no
starttls = no
""")
    run(rc)
    inbox = mail / "INBOX"
    files = sorted((inbox / "cur").glob("*")) + sorted((inbox / "new").glob("*"))
    assert len(files) == 3
    assert {p.name for p in mail.iterdir()} >= {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    # Locally: mark the first read, add a new message; sync; the server has both.
    first = files[0]
    first.rename(inbox / "cur" / (first.name.split(":2,")[0] + ":2,S"))
    (inbox / "new" / "local.1.host").write_bytes(b"From: alice@example.org\r\nSubject: written offline\r\n\r\nhi\r\n")
    run(rc)
    with imaplib.IMAP4("127.0.0.1", srv.port("imap")) as imap:
        imap.login("alice@example.org", PASSWORD)
        imap.select("INBOX", readonly=True)
        _, seen = imap.search(None, "SEEN")
        _, offline = imap.search(None, 'SUBJECT "written offline"')
        _, total = imap.search(None, "ALL")
    assert len(seen[0].split()) == 1 and len(offline[0].split()) == 1 and len(total[0].split()) == 4
    run(rc)                                                        # a third run changes nothing
    assert len(list((inbox / "cur").glob("*")) + list((inbox / "new").glob("*"))) == 4

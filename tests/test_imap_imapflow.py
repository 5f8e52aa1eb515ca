"""imapflow (npm, the most used Node.js IMAP client) against a real Mailhaven: login, LIST,
IDLE seeing a delivery made over SMTP, FETCH with body structure and partial bodies,
APPEND, SEARCH, MOVE, and a QRESYNC resync after reconnecting.

tests/js/imapflow_session.mjs drives the client and prints what imapflow returned at each
step; this test delivers, changes the mailbox between sessions and asserts on every step.
scripts/test installs node (apt, when missing) and the pinned imapflow (npm ci in tests/js).
"""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess

JS = Path(__file__).resolve().parent / "js"
USER, PASSWORD = "bob@example.org", "imapflow-pw"

MULTIPART = (b"From: Carol <carol@example.net>\r\nTo: bob@example.org\r\nSubject: while you idle\r\n"
             b"Message-ID: <idle-1@example.net>\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
             b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello from Carol, over SMTP.\r\n"
             b"--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Disposition: attachment; "
             b"filename=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n")


def _require_imapflow() -> str:
    node = shutil.which("node")
    reason = None
    if node is None:
        reason = "node is not installed (apt-get install nodejs npm)"
    elif not (JS / "node_modules" / "imapflow").is_dir():
        reason = "imapflow is not installed (cd tests/js && npm ci)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert node is not None
    return node


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    _require_imapflow()
    s = ServerProcess(tmp_path_factory.mktemp("imapflow") / "data").start()
    try:
        s.add_user(USER, PASSWORD)
        yield s
    finally:
        s.stop()


def deliver(srv: ServerProcess, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
        s.sendmail("carol@example.net", [USER], raw)


class Driver:
    """The node process: read its steps, answer where it waits."""

    def __init__(self, srv: ServerProcess) -> None:
        self.proc = subprocess.Popen(
            [_require_imapflow(), str(JS / "imapflow_session.mjs")], cwd=JS, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "IMAP_PORT": str(srv.port("imap")), "IMAP_USER": USER, "IMAP_PASS": PASSWORD})
        self.steps: dict[str, dict[str, Any]] = {}

    def until(self, step: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while step not in self.steps:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=10)
                raise AssertionError(f"imapflow stopped before {step!r}: {self.proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            record = json.loads(line)
            self.steps[record.pop("step")] = record
        return self.steps[step]

    def go_on(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()


def test_imapflow_session(srv: ServerProcess) -> None:
    for i in range(3):
        deliver(srv, b"From: Dave <dave@example.net>\r\nTo: bob@example.org\r\nSubject: earlier %d\r\n"
                     b"Message-ID: <early-%d@example.net>\r\n\r\nearlier message %d\r\n" % (i, i, i))
    d = Driver(srv)
    try:
        login = d.until("login")
        assert login["authenticated"] in (True, USER)
        assert {"IDLE", "MOVE", "QRESYNC", "CONDSTORE"} <= set(login["capabilities"])
        assert "QRESYNC" in login["enabled"]

        listing = d.until("list")
        assert {"INBOX", "Archive", "Sent", "Trash"} <= set(listing["paths"])
        assert listing["specialUse"]["INBOX"] == "\\Inbox" and listing["specialUse"]["Sent"] == "\\Sent"

        ready = d.until("idle-ready")
        assert ready["exists"] == 3 and ready["idling"] is True
        deliver(srv, MULTIPART)                 # over SMTP while imapflow sits in IDLE
        d.go_on()
        idle = d.until("idle")
        assert (idle["prevCount"], idle["count"], idle["path"]) == (3, 4, "INBOX")

        fetched = d.until("fetch")
        assert fetched["subject"] == "while you idle"
        assert fetched["from"] == [{"name": "Carol", "address": "carol@example.net"}]
        bs = fetched["bodyStructure"]
        assert bs["type"] == "multipart/mixed" and bs["parameters"] == {"boundary": "b1"}
        text, pdf = bs["childNodes"]
        assert (text["part"], text["type"], text["parameters"], text["size"], text["lineCount"]) == (
            "1", "text/plain", {"charset": "utf-8"}, 28, 0)
        assert (pdf["part"], pdf["type"], pdf["encoding"], pdf["disposition"], pdf["dispositionParameters"]) == (
            "2", "application/pdf", "base64", "attachment", {"filename": "r.pdf"})
        assert len(fetched["source"]) == 40                           # BODY.PEEK[]<0.40>
        assert fetched["bodyParts"]["1"] == "llo f"                    # BODY.PEEK[1]<2.5>
        assert fetched["bodyParts"]["2"] == "JVBERi0xLjQK"

        appended = d.until("append")
        assert appended["destination"] == "Archive" and appended["uid"] == 1
        assert int(appended["uidValidity"]) > 0

        search = d.until("search")
        assert search["bySubject"] == [fetched["uid"]]
        assert search["byFrom"] == [fetched["uid"]]
        assert sorted(search["unseen"]) == [1, 2, 3, fetched["uid"]]

        moved = d.until("move")
        assert moved["destination"] == "Archive"
        assert moved["uidMap"] == [[fetched["uid"], 2]] and moved["existsAfter"] == 3

        state = d.until("qresync-state")
        assert state["uids"] == [1, 2, 3] and state["archiveMessages"] == 2
        # Meanwhile, another client: flag UID 2, expunge UID 3.
        imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
        imap.login(USER, PASSWORD)
        imap.select("INBOX")
        imap.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
        imap.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
        imap.expunge()
        imap.select("Archive", readonly=True)                         # the moved message, same bytes
        _, data = imap.uid("FETCH", "2", "(BODY.PEEK[]<0.40>)")
        assert data[0][1].decode("latin-1") == fetched["source"]      # type: ignore[index, union-attr]
        imap.logout()
        d.go_on()

        resync = d.until("qresync")
        assert "QRESYNC" in resync["enabled"]
        assert resync["uidValidity"] == state["uidValidity"]
        assert int(resync["highestModseq"]) > int(state["highestModseq"])
        assert resync["exists"] == 2
        # VANISHED (EARLIER): UID 3, and UID 4 too when the modseq imapflow kept predates the MOVE
        assert 3 in [v["uid"] for v in resync["vanished"]]
        assert {v["uid"] for v in resync["vanished"]} <= {3, 4}
        assert all(v["vanished"] and v["earlier"] for v in resync["vanished"])
        assert [(f["uid"], "\\Flagged" in f["flags"]) for f in resync["flags"]] == [(2, True)]
        d.until("done")
        assert d.proc.wait(timeout=30) == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        d.proc.communicate()                                         # and close its three pipes

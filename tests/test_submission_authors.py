"""The author check of submitted mail cannot be walked around (issue 14 item 7): a header is
read as ENVELOPE and JMAP will read it, so a second From hidden behind a line that is no
field or written ``From :``, two From fields, or a Sender of another user are refused with
5.7.1 on SMTP submission (smtplib) and ``forbiddenFrom`` on JMAP EmailSubmission/set."""

from __future__ import annotations

import base64
import json
import smtplib
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess

ALICE, BOB, PASSWORD = "alice@example.org", "bob@example.org", "s3cret"
BODY = b"To: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
REFUSED = {
    "hidden behind a line with no colon": b"From: alice@example.org\r\nX\r\nFrom: bob@example.org\r\n",
    "blank before the colon": b"From: alice@example.org\r\nFrom : bob@example.org\r\n",
    "two From fields": b"From: alice@example.org\r\nFrom: alice@example.org\r\n",
    "a Sender of another user": b"From: alice@example.org\r\nSender: bob@example.org\r\n",
    "a second address in From": b"From: alice@example.org, bob@example.org\r\n",
    "an encoded word that is no address": b"From: =?utf-8?q?alice=40example=2Eorg?= <bob@example.org>\r\n",
    "no From at all": b"Reply-To: alice@example.org\r\n",
}
ACCEPTED = {
    "her own From": b"From: Alice <alice@example.org>\r\n",
    "her own From and Sender": b"From: Alice <alice@example.org>\r\nSender: alice@example.org\r\n",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("authors") / "data").start()
    try:
        s.add_user(ALICE, PASSWORD)
        s.add_user(BOB, PASSWORD)
        yield s
    finally:
        s.stop()


def submit(srv: ServerProcess, message: bytes) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30) as s:
        s.starttls(context=ctx)
        s.login(ALICE, PASSWORD)
        try:
            s.sendmail(ALICE, [BOB], message)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
    return 250, b""


@pytest.mark.parametrize("name", REFUSED)
def test_smtp_submission_refuses(srv: ServerProcess, name: str) -> None:
    code, text = submit(srv, REFUSED[name] + BODY)
    assert code == 553 and text.startswith(b"5.7.1"), (code, text)


@pytest.mark.parametrize("name", ACCEPTED)
def test_smtp_submission_accepts(srv: ServerProcess, name: str) -> None:
    assert submit(srv, ACCEPTED[name] + BODY) == (250, b"")


def http(srv: ServerProcess, path: str, body: bytes, ctype: str = "application/json") -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.port('http')}{path}", data=body, method="POST",
        headers={"Content-Type": ctype,
                 "Authorization": "Basic " + base64.b64encode(f"{ALICE}:{PASSWORD}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


def drafts_id(srv: ServerProcess) -> str:
    out = http(srv, "/jmap/api", json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                                             "methodCalls": [["Mailbox/query", {"accountId": "A1",
                                                              "filter": {"role": "drafts"}}, "m"]]}).encode())
    return out["methodResponses"][0][1]["ids"][0]  # type: ignore[no-any-return]


def submission_result(srv: ServerProcess, message: bytes) -> dict[str, Any]:
    blob = http(srv, "/jmap/upload/A1/", message, "message/rfc822")["blobId"]
    using = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:submission"]
    out = http(srv, "/jmap/api", json.dumps({"using": using, "methodCalls": [
        ["Email/import", {"accountId": "A1", "emails": {"i": {"blobId": blob, "mailboxIds": {drafts_id(srv): True}}}},
         "i"],
        ["EmailSubmission/set", {"accountId": "A1", "create": {"s": {"emailId": "#i"}}}, "s"],
    ]}).encode())["methodResponses"]
    assert out[0][0] == "Email/import" and "i" in (out[0][1].get("created") or {}), out
    assert out[1][0] == "EmailSubmission/set", out
    return out[1][1]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", REFUSED)
def test_jmap_submission_refuses(srv: ServerProcess, name: str) -> None:
    result = submission_result(srv, REFUSED[name] + BODY)
    assert result["created"] is None and result["notCreated"]["s"]["type"] == "forbiddenFrom", result


@pytest.mark.parametrize("name", ACCEPTED)
def test_jmap_submission_accepts(srv: ServerProcess, name: str) -> None:
    result = submission_result(srv, ACCEPTED[name] + BODY)
    assert "s" in (result["created"] or {}), result

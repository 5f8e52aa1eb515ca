"""Sending rate limits over real sockets (SMTP and JMAP) against ``mailhaven serve`` (filter/ratelimit.py):
per client address and per sender domain on port 25, per account on submission (messages
and recipients); over a limit the command gets 451 4.7.1 and the server logs it."""

from __future__ import annotations

import base64
import json
import smtplib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, free_port

# A week-long window: the counts cannot restart in the middle of the test.
LIMITS = """[ratelimit]
window = "7d"
messages_per_address = 3
messages_per_sender_domain = 2
account_messages = 2
account_recipients = 3
exempt = ["127.0.0.4"]
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data: Path = tmp_path_factory.mktemp("ratelimit") / "data"
    server = ServerProcess(data, hostname="mx.nyu.example", extra_config=LIMITS + (
        f'[relay]\nhost = "127.0.0.1:{free_port()}"\ntls = "none"\n'))
    server.start()
    server.add_user("bob@nyu.example")
    server.add_user("alice@nyu.example", "alice-pw")
    try:
        yield server
    finally:
        server.stop()


def message(sender: str, subject: str) -> str:
    return f"From: {sender}\r\nTo: bob@nyu.example\r\nSubject: {subject}\r\n\r\nHello.\r\n"


def send_25(srv: ServerProcess, sender: str, source: str = "127.0.0.1") -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=(source, 0), timeout=10) as client:
        client.sendmail(sender, ["bob@nyu.example"], message(sender, "rate"))


def test_port_25_limits_per_client_address_and_sender_domain(srv: ServerProcess) -> None:
    for n in (1, 2, 3):
        send_25(srv, f"a@d{n}.example")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send_25(srv, "a@d4.example")                        # the fourth from 127.0.0.1
    assert refused.value.smtp_code == 451 and refused.value.smtp_error.startswith(b"4.7.1")
    send_25(srv, "b@D1.example", source="127.0.0.2")        # d1's second; another address is fine
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send_25(srv, "c@d1.example", source="127.0.0.3")    # d1's third, from a fresh address
    assert refused.value.smtp_code == 451
    send_25(srv, "", source="127.0.0.3")                    # the null sender counts for the address only
    for _ in range(5):
        send_25(srv, "d@d1.example", source="127.0.0.4")    # an exempt network is not counted
    log = srv.log_text()
    assert "rate limit reached" in log and "ip:127.0.0.1" in log and "from:d1.example" in log


def test_submission_limits_messages_and_recipients_per_account(srv: ServerProcess) -> None:
    def submit(rcpts: list[str]) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=10) as client:
            client.starttls()
            client.login("alice@nyu.example", "alice-pw")
            return client.sendmail("alice@nyu.example", rcpts, message("alice@nyu.example", "out"))

    assert submit(["x1@far.example", "x2@far.example"]) == {}
    refused = submit(["x3@far.example", "x4@far.example", "bob@nyu.example"])
    assert refused == {"x4@far.example": (451, b"4.7.1 Sending rate limit reached, try again later")}
    with pytest.raises(smtplib.SMTPSenderRefused) as third:
        submit(["x5@far.example"])                          # the account's third message
    assert third.value.smtp_code == 451
    assert "acct-msg:" in srv.log_text()


def test_jmap_submission_counts_against_the_same_account_limits(srv: ServerProcess) -> None:
    srv.add_user("carol@nyu.example", "carol-pw")
    auth = "Basic " + base64.b64encode(b"carol@nyu.example:carol-pw").decode()
    base = f"http://127.0.0.1:{srv.port('http')}"

    def api(calls: list[Any]) -> list[Any]:
        body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail",
                                     "urn:ietf:params:jmap:submission"], "methodCalls": calls}).encode()
        req = urllib.request.Request(f"{base}/jmap/api", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": auth})
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read())["methodResponses"]  # type: ignore[no-any-return]

    with urllib.request.urlopen(urllib.request.Request(f"{base}/jmap/session", headers={"Authorization": auth}),
                                timeout=30) as res:
        account = json.loads(res.read())["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    boxes = api([["Mailbox/get", {"accountId": account, "ids": None}, "m"]])[0][1]["list"]
    drafts = next(b["id"] for b in boxes if b["role"] == "drafts")

    def submit(n: int, rcpts: list[str]) -> dict[str, Any]:
        email = {"mailboxIds": {drafts: True}, "from": [{"email": "carol@nyu.example"}],
                 "to": [{"email": r} for r in rcpts], "subject": f"jmap {n}",
                 "bodyValues": {"b": {"value": "hi"}}, "textBody": [{"partId": "b", "type": "text/plain"}]}
        responses = api([["Email/set", {"accountId": account, "create": {"m": email}}, "0"],
                         ["EmailSubmission/set", {"accountId": account, "create": {"s": {"emailId": "#m"}}}, "1"]])
        return responses[1][1]  # type: ignore[no-any-return]

    assert submit(1, ["y1@far.example", "y2@far.example"])["created"]
    over_recipients = submit(2, ["y3@far.example", "y4@far.example"])      # 4 recipients > 3
    assert over_recipients["notCreated"]["s"]["type"] == "forbiddenToSend"
    over_messages = submit(3, ["y5@far.example"])                          # the third message > 2
    assert over_messages["notCreated"]["s"]["type"] == "forbiddenToSend"

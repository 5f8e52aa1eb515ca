"""Encoded words name, they never make an address (RFC 2047 section 5; issue 14 item 6):
``=?utf-8?q?bob=40a=2Eexample_=28?= <alice@a.example>`` is from alice@a.example, in every
reader of addresses: the summary, JMAP (Email/get and header:From:asAddresses), the search
index (Email/query from), the CLI agent's display and reply. (The webmail's message list:
tests/test_webmail_js.py; DSNs address the envelope sender and copy the header raw, they
parse no address field.)"""

from __future__ import annotations

import base64
import email
import json
import smtplib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess
from mailhaven.message.summary import parse_addresses, summarize
from mailhaven.ua.compose import draft_from_message, reply
from mailhaven.ua.render import render

FORGED = b"=?utf-8?q?bob=40a=2Eexample_=28?= <alice@a.example>"
SPLIT = b"=?utf-8?q?x=2C_mallory=40evil=2Eexample?= <ok@good.example>"
MESSAGE = (b"From: " + FORGED + b"\r\nTo: " + SPLIT + b", =?utf-8?q?J=C3=B6rg?= <j@x.example>\r\n"
           b"Subject: forged\r\n\r\nhello\r\n")


def test_summary_parses_before_decoding() -> None:
    s = summarize(MESSAGE)
    assert s["from"] == [{"name": "bob@a.example (", "email": "alice@a.example"}]
    assert s["to"] == [{"name": "x, mallory@evil.example", "email": "ok@good.example"},
                       {"name": "Jörg", "email": "j@x.example"}]
    assert parse_addresses(['"=?utf-8?b?w6k=?=" <e@x.example>']) == [{"name": "é", "email": "e@x.example"}]


def test_cli_agent_shows_and_answers_the_real_address() -> None:
    msg = email.message_from_bytes(MESSAGE)
    shown = render(msg)
    assert 'From: "bob@a.example (" <alice@a.example>' in shown, shown
    assert '"x, mallory@evil.example" <ok@good.example>, Jörg <j@x.example>' in shown, shown
    answer = reply(msg, "me@x.example", {"me@x.example"}, reply_all=True)
    assert [a.rpartition("<")[2].rstrip(">") for a in answer.to] == ["alice@a.example"], answer.to
    assert "mallory@evil.example>" not in " ".join(answer.to + answer.cc)
    assert draft_from_message(msg).sender.endswith("<alice@a.example>")


USER, PASSWORD = "alice@example.org", "s3cret"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("addr") / "data").start()
    try:
        s.add_user(USER, PASSWORD)
        yield s
    finally:
        s.stop()


def api(srv: ServerProcess, calls: list[Any]) -> list[Any]:
    body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                       "methodCalls": calls}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.port('http')}/jmap/api", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())["methodResponses"]  # type: ignore[no-any-return]


def test_jmap_and_search_see_the_real_sender(srv: ServerProcess) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
        s.sendmail("alice@a.example", [USER], MESSAGE.replace(b"To: ", b"To: alice@example.org, ", 1))
    found = api(srv, [
        ["Email/query", {"accountId": "A1", "filter": {"from": "alice@a.example"}}, "q"],
        ["Email/get", {"accountId": "A1", "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": ["from", "to", "header:From:asAddresses", "header:To:asAddresses"]}, "g"],
    ])
    emails = found[1][1]["list"]
    assert len(emails) == 1, found
    e = emails[0]
    assert e["from"] == [{"name": "bob@a.example (", "email": "alice@a.example"}]
    assert e["header:From:asAddresses"] == e["from"]
    assert {"name": "x, mallory@evil.example", "email": "ok@good.example"} in e["to"]
    assert all(a["email"] != "mallory@evil.example" for a in e["header:To:asAddresses"])

"""JMAP Email/get of large messages: bodyStructure, textBody/attachments and bodyValues
come from the stored structure and the needed part bytes of the file, the same answer the
stdlib gives on the whole message, and four at once do not grow the server with their
size (it used to read and parse each message whole)."""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess
from test_large_messages import big_message, peak_growth_mb

PASSWORD = "s3cret"
SIZE = 40 * 1000 * 1000
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("jmapget") / "data",
                      extra_config='[limits]\nmessage_size = "100M"\nimap_literal = "100M"\n').start()
    try:
        s.add_users(*(f"get{i}@example.com" for i in range(4)), password=PASSWORD)
        yield s
    finally:
        s.stop()


def jmap(srv: ServerProcess, user: str, calls: list[Any]) -> list[Any]:
    auth = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port('http')}/jmap/api", method="POST",
                                 data=json.dumps({"using": USING, "methodCalls": calls}).encode(),
                                 headers={"Authorization": auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as res:
        return json.loads(res.read())["methodResponses"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stored(srv: ServerProcess) -> dict[str, bytes]:
    msgs = {}
    for i in range(4):
        user = f"get{i}@example.com"
        raw = big_message(SIZE, user, f"get{i}", seed=20 + i)
        with imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=300) as m:
            m.login(user, PASSWORD)
            typ, data = m.append("INBOX", None, None, raw)
            assert typ == "OK", data
        msgs[user] = raw
    return msgs


def account_of(srv: ServerProcess, user: str) -> str:
    auth = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port('http')}/.well-known/jmap",
                                 headers={"Authorization": auth})
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.loads(res.read())["primaryAccounts"]["urn:ietf:params:jmap:mail"]  # type: ignore[no-any-return]


def get(srv: ServerProcess, user: str) -> dict[str, Any]:
    account = account_of(srv, user)
    got = jmap(srv, user, [
        ["Email/query", {"accountId": account}, "q"],
        ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": ["bodyStructure", "textBody", "attachments", "bodyValues", "size"],
                       "fetchTextBodyValues": True}, "g"]])
    return got[1][1]["list"][0]  # type: ignore[no-any-return]


def test_large_email_get_matches_the_whole_message(srv: ServerProcess, stored: dict[str, bytes]) -> None:
    user = "get0@example.com"
    raw = stored[user]
    got = get(srv, user)
    whole = email.message_from_bytes(raw, policy=email.policy.compat32)
    text, attachment = whole.get_payload()
    assert got["size"] == len(raw)
    assert [p["partId"] for p in got["textBody"]] == ["1"]
    assert [(p["partId"], p["size"], p["name"]) for p in got["attachments"]] == [
        ("2", len(attachment.get_payload(decode=True)), "get0.bin")]
    assert [p["size"] for p in got["bodyStructure"]["subParts"]] == [
        len(text.get_payload(decode=True)), len(attachment.get_payload(decode=True))]
    assert got["bodyValues"]["1"]["value"] == text.get_payload(decode=True).decode()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_memory_stays_flat_with_four_large_email_gets(srv: ServerProcess, stored: dict[str, bytes]) -> None:
    assert srv.proc is not None
    growth = peak_growth_mb(srv.proc.pid, [lambda u=u: get(srv, u) and None for u in stored])
    assert growth < 100, f"Email/get of 4 x 40 MB grew the server {growth:.0f} MB"

"""A seeded, bounded fuzzer over every JMAP method's arguments (issue 14 item 8), against
the real server over HTTP: arguments of the wrong type, unknown shapes and odd values
must give a method-level error such as ``invalidArguments`` (RFC 8620 3.6.2), never
``serverFail``, an HTTP 500 or a traceback in the server log.

``MAILHAVEN_FUZZ_CALLS`` sets how many calls (default 3,000); ``MAILHAVEN_FUZZ_SEED`` the seed.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import random
import smtplib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess

CORE, MAIL, SUB = "urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:submission"
QUOTA = "urn:ietf:params:jmap:quota"
USER, PASSWORD = "alice@example.org", "s3cret"
METHODS = [
    "Core/echo", "Email/changes", "Email/copy", "Email/get", "Email/import", "Email/parse", "Email/query",
    "Email/queryChanges", "Email/set", "EmailSubmission/changes", "EmailSubmission/get", "EmailSubmission/query",
    "EmailSubmission/set", "Identity/changes", "Identity/get", "Identity/set", "Mailbox/changes", "Mailbox/get",
    "Mailbox/query", "Mailbox/queryChanges", "Mailbox/set", "Quota/get", "SearchSnippet/get", "Thread/changes",
    "Thread/get",
]
ARGUMENTS = [
    "ids", "properties", "filter", "sort", "position", "anchor", "anchorOffset", "limit", "calculateTotal",
    "collapseThreads", "sinceState", "sinceQueryState", "maxChanges", "upToId", "create", "update", "destroy",
    "ifInState", "onDestroyRemoveEmails", "onSuccessUpdateEmail", "onSuccessDestroyEmail", "blobIds", "emails",
    "fromAccountId", "bodyProperties", "fetchTextBodyValues", "fetchHTMLBodyValues", "fetchAllBodyValues",
    "maxBodyValueBytes", "emailIds", "identityId", "envelope",
]
PROPERTIES = [
    "id", "name", "parentId", "role", "sortOrder", "isSubscribed", "mailboxIds", "keywords", "from", "to", "cc",
    "bcc", "replyTo", "sender", "subject", "sentAt", "receivedAt", "messageId", "inReplyTo", "references",
    "bodyValues", "textBody", "htmlBody", "attachments", "bodyStructure", "blobId", "emailId", "identityId",
    "envelope", "mailFrom", "rcptTo", "email", "parameters", "partId", "type", "charset", "value", "header:X-A",
    "header:Subject:asText", "headers", "textSignature", "inMailbox", "inMailboxOtherThan", "text", "operator",
    "conditions", "hasKeyword", "before", "after", "minSize", "property", "isAscending", "keyword", "collation",
    "identityIds", "threadIds", "mailboxIds/M1", "keywords/$seen", "undoStatus", "$seen", "size", "emailIds",
]


def fuzz_value(rng: random.Random, depth: int, ids: list[str]) -> Any:
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), 3.5, 10**30])
    if kind == 3:
        return rng.choice(["", "x", "#c", "#", "A1", "M1", "E1", "T1", "S1", "I0", "B" + "0" * 64, "P1-1",
                           "a@b", "alice@example.org", "\x00", "é" * 3, "inbox", "$seen", "2024-01-01T00:00:00Z",
                           "/", "~", "*", "text/plain", "1", "99999999999999999999"])
    if kind in (4, 5):
        return rng.choice(ids)
    if kind == 6:
        return rng.choice(PROPERTIES)
    if kind == 7:
        return rng.random() * 1e6
    if kind in (8, 9):
        return [fuzz_value(rng, depth + 1, ids) for _ in range(rng.randrange(4))]
    return {rng.choice(PROPERTIES + ids + ARGUMENTS): fuzz_value(rng, depth + 1, ids)
            for _ in range(rng.randrange(5))}


TYPED = {
    "ids": "ids", "properties": "props", "bodyProperties": "props", "filter": "obj", "sort": "objs",
    "position": "int", "anchor": "id", "anchorOffset": "int", "limit": "int", "calculateTotal": "bool",
    "collapseThreads": "bool", "sinceState": "id", "sinceQueryState": "id", "maxChanges": "int", "upToId": "id",
    "create": "map", "update": "map", "destroy": "ids", "ifInState": "id", "onDestroyRemoveEmails": "bool",
    "onSuccessUpdateEmail": "map", "onSuccessDestroyEmail": "ids", "blobIds": "ids", "emails": "map",
    "fromAccountId": "id", "fetchTextBodyValues": "bool", "fetchHTMLBodyValues": "bool",
    "fetchAllBodyValues": "bool", "maxBodyValueBytes": "int", "emailIds": "ids", "identityId": "id",
    "envelope": "obj",
}


def fuzz_object(rng: random.Random, ids: list[str]) -> dict[str, Any]:
    return {rng.choice(PROPERTIES): fuzz_value(rng, 1, ids) for _ in range(rng.randrange(6))}


def typed_value(rng: random.Random, kind: str, ids: list[str]) -> Any:
    """A value of the argument's own type with odd contents: reaches past the type checks."""
    if kind == "ids":
        return [rng.choice(ids + ["#c", "x", "E0", "M99"]) for _ in range(rng.randrange(4))]
    if kind == "props":
        return rng.sample(PROPERTIES, rng.randrange(4))
    if kind == "obj":
        return fuzz_object(rng, ids)
    if kind == "objs":
        return [fuzz_object(rng, ids) for _ in range(rng.randrange(3))]
    if kind == "int":
        return rng.choice([0, 1, 5, -3, 2**53 - 1])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "id":
        return rng.choice(ids + ["0", "1", "x", "#c"])
    return {rng.choice(ids + ["c", "#c", "x"]): fuzz_object(rng, ids) for _ in range(rng.randrange(3))}


def fuzz_call(rng: random.Random, account: str, ids: list[str], n: int) -> list[Any]:
    name = rng.choice(METHODS)
    args: dict[str, Any] = {}
    if rng.random() < 0.9:
        args["accountId"] = account
    for _ in range(rng.randrange(5)):
        arg = rng.choice(ARGUMENTS)
        args[arg] = typed_value(rng, TYPED[arg], ids) if rng.random() < 0.7 else fuzz_value(rng, 0, ids)
    if rng.random() < 0.1:
        args["#ids"] = {"resultOf": f"f{max(0, n - 1)}", "name": rng.choice(METHODS),
                        "path": rng.choice(["/ids", "/list/*/id", "", "/x", "/list/0"])}
    return [name, args, f"f{n}"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("jmapfuzz") / "data").start()
    try:
        s.add_user(USER, PASSWORD)
        yield s
    finally:
        s.stop()


def post(srv: ServerProcess, calls: list[Any]) -> tuple[int, Any]:
    body = json.dumps({"using": [CORE, MAIL, SUB, QUOTA], "methodCalls": calls}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.port('http')}/jmap/api", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_fuzzed_arguments_never_fail_the_server(srv: ServerProcess) -> None:
    for i in range(3):
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
            s.sendmail("carol@outside.example", [USER], f"From: carol@outside.example\r\nTo: {USER}\r\n"
                       f"Subject: fuzz {i}\r\n\r\nhello\r\n".encode())
    status, first = post(srv, [["Mailbox/get", {"accountId": "A1"}, "m"],
                               ["Email/query", {"accountId": "A1"}, "q"]])
    assert status == 200, first
    ids = [m["id"] for m in first["methodResponses"][0][1]["list"]] + first["methodResponses"][1][1]["ids"]
    seed = int(os.environ.get("MAILHAVEN_FUZZ_SEED", "14"))
    total = int(os.environ.get("MAILHAVEN_FUZZ_CALLS", "3000"))
    rng = random.Random(seed)
    failures: list[tuple[Any, Any]] = []
    sent = 0
    outcomes: collections.Counter[str] = collections.Counter()
    while sent < total:
        calls = [fuzz_call(rng, "A1", ids, n) for n in range(min(20, total - sent))]
        sent += len(calls)
        status, answer = post(srv, calls)
        if status != 200:
            if status != 400:
                failures.append((calls, (status, answer)))
            continue
        for response in answer["methodResponses"]:
            outcomes[response[1].get("type", "") if response[0] == "error" else "ok"] += 1
            if response[0] == "error" and response[1].get("type") == "serverFail":
                call = next(c for c in calls if c[2] == response[2])
                failures.append((call, response))
    print(f"{sent} calls (seed {seed}):", dict(outcomes.most_common()))
    assert outcomes["ok"] > total // 10, outcomes          # the fuzzer reaches past the type checks
    log = srv.log_text()
    assert "Traceback" not in log, log[-4000:]
    assert not failures, f"{len(failures)} failures (seed {seed}), first: {failures[:3]}"

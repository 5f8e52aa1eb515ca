"""Every /set response as RFC 8620 5.3 shapes it (issue 15 section 3): created, updated,
destroyed, notCreated, notUpdated, notDestroyed all present, null when empty, including
EmailSubmission/set and the implicit Email/set of onSuccessUpdateEmail /
onSuccessDestroyEmail; and a patch applied whole, then validated (RFC 8621 7.5.1's patch in
either key order)."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess

CORE, MAIL, SUB = "urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:submission"
USER, PASSWORD = "alice@example.org", "s3cret"
SET_KEYS = {"accountId", "oldState", "newState", "created", "updated", "destroyed", "notCreated", "notUpdated",
            "notDestroyed"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("jmapset") / "data").start()
    try:
        s.add_users(USER, "bob@example.org", password=PASSWORD)
        yield s
    finally:
        s.stop()


def api(srv: ServerProcess, calls: list[Any]) -> list[Any]:
    body = json.dumps({"using": [CORE, MAIL, SUB], "methodCalls": calls}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.port('http')}/jmap/api", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())["methodResponses"]  # type: ignore[no-any-return]


def roles(srv: ServerProcess) -> dict[str, str]:
    boxes = api(srv, [["Mailbox/get", {"accountId": "A1", "ids": None}, "m"]])[0][1]["list"]
    return {b["role"]: b["id"] for b in boxes if b["role"]}


def assert_set_shape(response: list[Any]) -> None:
    name, args, _ = response
    assert name.endswith("/set"), response
    assert SET_KEYS <= set(args), (name, sorted(SET_KEYS - set(args)))
    for key in ("created", "updated", "notCreated", "notUpdated", "notDestroyed"):
        assert args[key] is None or (isinstance(args[key], dict) and args[key]), (name, key, args[key])
    assert args["destroyed"] is None or (isinstance(args["destroyed"], list) and args["destroyed"])


def draft(r: dict[str, str], subject: str) -> dict[str, Any]:
    return {"mailboxIds": {r["drafts"]: True}, "keywords": {"$draft": True, "$seen": True},
            "from": [{"email": USER}], "to": [{"email": "bob@example.org"}], "subject": subject,
            "bodyValues": {"b": {"value": "hi"}}, "textBody": [{"partId": "b", "type": "text/plain"}]}


def test_every_set_response_has_every_property(srv: ServerProcess) -> None:
    r = roles(srv)
    out = api(srv, [
        ["Mailbox/set", {"accountId": "A1", "create": {"x": {"name": "Projects"}}}, "1"],
        ["Email/set", {"accountId": "A1", "create": {"m": draft(r, "one")}}, "2"],
        ["Identity/set", {"accountId": "A1"}, "3"],
        ["EmailSubmission/set", {"accountId": "A1", "create": {"s": {"emailId": "#m"}},
                                 "onSuccessUpdateEmail": {"#s": {"keywords/$draft": None}}}, "4"],
        ["Email/set", {"accountId": "A1", "create": {"n": draft(r, "two")}}, "5"],
        ["EmailSubmission/set", {"accountId": "A1", "create": {"s2": {"emailId": "#n"}},
                                 "onSuccessDestroyEmail": ["#s2"]}, "6"],
    ])
    names = [resp[0] for resp in out]
    assert names == ["Mailbox/set", "Email/set", "Identity/set", "EmailSubmission/set", "Email/set", "Email/set",
                     "EmailSubmission/set", "Email/set"], names
    for resp in out:
        assert_set_shape(resp)
    assert out[3][1]["created"]["s"]["id"] and out[4][1]["updated"] and out[4][1]["created"] is None
    assert out[7][1]["destroyed"] and out[7][1]["notDestroyed"] is None


@pytest.mark.parametrize("order", ["drafts first", "sent first"])
def test_rfc8621_7_5_1_patch_in_either_order(srv: ServerProcess, order: str) -> None:
    r = roles(srv)
    patch = {f"mailboxIds/{r['drafts']}": None, f"mailboxIds/{r['sent']}": True, "keywords/$draft": None}
    if order == "sent first":
        patch = dict(reversed(list(patch.items())))
    out = api(srv, [
        ["Email/set", {"accountId": "A1", "create": {"m": draft(r, f"patch {order}")}}, "e"],
        ["EmailSubmission/set", {"accountId": "A1", "create": {"s": {"emailId": "#m"}},
                                 "onSuccessUpdateEmail": {"#s": patch}}, "s"],
        ["Email/get", {"accountId": "A1", "ids": ["#m"], "properties": ["mailboxIds", "keywords"]}, "g"],
    ])
    implicit = out[2]
    assert implicit[0] == "Email/set" and implicit[1]["notUpdated"] is None, implicit
    email = out[3][1]["list"][0]
    assert email["mailboxIds"] == {r["sent"]: True} and "$draft" not in email["keywords"], email


def test_invalid_patch_changes_nothing(srv: ServerProcess) -> None:
    r = roles(srv)
    created = api(srv, [["Email/set", {"accountId": "A1", "create": {"m": draft(r, "keep")}}, "e"]])
    eid = created[0][1]["created"]["m"]["id"]
    out = api(srv, [
        ["Email/set", {"accountId": "A1", "update": {eid: {
            "mailboxIds/M999999": True, "keywords/$flagged": True, f"mailboxIds/{r['drafts']}": None}}}, "u"],
        ["Email/get", {"accountId": "A1", "ids": [eid], "properties": ["mailboxIds", "keywords"]}, "g"],
    ])
    assert out[0][1]["notUpdated"][eid]["type"] == "invalidProperties", out[0]
    assert_set_shape(out[0])
    email = out[1][1]["list"][0]
    assert email["mailboxIds"] == {r["drafts"]: True} and "$flagged" not in email["keywords"], email

"""JMAP over real HTTP against a running server (RFC 8620, 8621, 9425): the session,
request-level and method-level errors, result references, mailboxes, emails, blobs,
push, submission, and IMAP and JMAP seeing each other's changes."""

from __future__ import annotations

import base64
import imaplib
import json
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess

CORE, MAIL, SUB = "urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:submission"
QUOTA = "urn:ietf:params:jmap:quota"
PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("jmap") / "data").start()
    try:
        s.add_user("alice@example.org", PASSWORD)
        s.add_user("bob@example.org", PASSWORD, quota="10M")
        yield s
    finally:
        s.stop()


def http(srv: ServerProcess, method: str, path: str, body: bytes | None = None, *, user: str = "alice@example.org",
         headers: dict[str, str] | None = None, auth: str | None = None) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{srv.port('http')}{path}"
    h = {"Content-Type": "application/json", **(headers or {})}
    if auth is None:
        h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    elif auth:
        h["Authorization"] = auth
    req = urllib.request.Request(url, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def api(srv: ServerProcess, calls: list[list[Any]], user: str = "alice@example.org",
        using: list[str] | None = None) -> list[list[Any]]:
    status, _, body = http(srv, "POST", "/jmap/api",
                           json.dumps({"using": using or [CORE, MAIL, SUB, QUOTA], "methodCalls": calls}).encode(), user=user)
    assert status == 200, body
    return json.loads(body)["methodResponses"]  # type: ignore[no-any-return]


def one(srv: ServerProcess, name: str, args: dict[str, Any], user: str = "alice@example.org") -> dict[str, Any]:
    account = session(srv, user)["primaryAccounts"][MAIL]
    (resp,) = api(srv, [[name, {"accountId": account, **args}, "c"]], user)
    assert resp[0] == name, resp
    return resp[1]  # type: ignore[no-any-return]


def session(srv: ServerProcess, user: str = "alice@example.org") -> dict[str, Any]:
    status, _, body = http(srv, "GET", "/.well-known/jmap", user=user)
    assert status == 200
    return json.loads(body)  # type: ignore[no-any-return]


def roles(srv: ServerProcess, user: str = "alice@example.org") -> dict[str, str]:
    return {m["role"]: m["id"] for m in one(srv, "Mailbox/get", {"ids": None}, user)["list"] if m["role"]}


def deliver(srv: ServerProcess, to: str, subject: str, body: str = "Hello there.") -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
        s.sendmail("carol@outside.example", [to],
                   f"From: Carol <carol@outside.example>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode())


def test_session_resource(srv: ServerProcess) -> None:
    s = session(srv)
    assert s["username"] == "alice@example.org"
    account = s["primaryAccounts"][MAIL]
    assert s["accounts"][account]["isPersonal"] and CORE in s["capabilities"]
    for key in ("apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl", "state"):
        assert key in s
    assert "{blobId}" in s["downloadUrl"] and "{accountId}" in s["uploadUrl"]
    status, headers, _ = http(srv, "GET", "/.well-known/jmap", auth="")
    assert status == 401 and "Basic" in headers.get("www-authenticate", "")
    assert http(srv, "GET", "/.well-known/jmap", user="alice@example.org",
                auth="Basic " + base64.b64encode(b"alice@example.org:wrong").decode())[0] == 401


def test_request_level_errors(srv: ServerProcess) -> None:
    status, headers, body = http(srv, "POST", "/jmap/api", b"{not json")
    assert status == 400 and json.loads(body)["type"] == "urn:ietf:params:jmap:error:notJSON"
    status, _, body = http(srv, "POST", "/jmap/api", json.dumps({"using": [CORE]}).encode())
    assert json.loads(body)["type"] == "urn:ietf:params:jmap:error:notRequest"
    status, _, body = http(srv, "POST", "/jmap/api", json.dumps(
        {"using": [CORE, "urn:example:nope"], "methodCalls": []}).encode())
    assert json.loads(body)["type"] == "urn:ietf:params:jmap:error:unknownCapability"
    calls = [["Core/echo", {}, str(i)] for i in range(65)]
    status, _, body = http(srv, "POST", "/jmap/api", json.dumps({"using": [CORE], "methodCalls": calls}).encode())
    problem = json.loads(body)
    assert status == 400 and problem["type"].endswith(":limit") and problem["limit"] == "maxCallsInRequest"


def test_method_errors_and_echo(srv: ServerProcess) -> None:
    account = session(srv)["primaryAccounts"][MAIL]
    out = api(srv, [
        ["Core/echo", {"hello": [1, 2]}, "a"],
        ["Nope/get", {}, "b"],
        ["Mailbox/get", {"accountId": "A999"}, "c"],
        ["Email/get", {"accountId": account, "ids": "E1"}, "d"],
        ["Email/query", {"accountId": account, "filter": {"madeUp": 1}}, "e"],
        ["Email/changes", {"accountId": account, "sinceState": "x"}, "f"],
        ["Email/set", {"accountId": account, "ifInState": "0", "destroy": []}, "g"],
    ])
    assert out[0] == ["Core/echo", {"hello": [1, 2]}, "a"]
    assert [r[1]["type"] for r in out[1:]] == ["unknownMethod", "accountNotFound", "invalidArguments",
                                               "unsupportedFilter", "cannotCalculateChanges", "stateMismatch"]
    (resp,) = api(srv, [["Mailbox/get", {"accountId": account}, "x"]], using=[CORE])
    assert resp[1]["type"] == "unknownMethod"                      # MAIL not in using


def test_mailbox_set_and_query(srv: ServerProcess) -> None:
    r = roles(srv)
    assert {"inbox", "sent", "drafts", "trash", "junk", "archive"} <= set(r)
    created = one(srv, "Mailbox/set", {"create": {
        "p": {"name": "Projects", "parentId": None},
        "c": {"name": "Mailhaven", "parentId": "#p"}}})
    assert set(created["created"]) == {"p", "c"}
    child = created["created"]["c"]["id"]
    got = {m["id"]: m for m in one(srv, "Mailbox/get", {"ids": None})["list"]}
    assert got[child]["parentId"] == created["created"]["p"]["id"] and got[child]["name"] == "Mailhaven"
    dup = one(srv, "Mailbox/set", {"create": {"d": {"name": "Projects"}}})
    assert dup["notCreated"]["d"]["type"] == "invalidProperties"
    found = one(srv, "Mailbox/query", {"filter": {"parentId": created["created"]["p"]["id"]}})
    assert found["ids"] == [child]
    renamed = one(srv, "Mailbox/set", {"update": {child: {"name": "Haven"}}})
    assert child in renamed["updated"]
    assert one(srv, "Mailbox/set", {"destroy": [created["created"]["p"]["id"]]})["notDestroyed"][
        created["created"]["p"]["id"]]["type"] == "mailboxHasChild"
    assert one(srv, "Mailbox/set", {"destroy": [r["inbox"]]})["notDestroyed"][r["inbox"]]["type"] == "forbidden"
    gone = one(srv, "Mailbox/set", {"destroy": [child, created["created"]["p"]["id"]]})
    assert len(gone["destroyed"]) == 2


def test_email_query_get_set_with_result_references(srv: ServerProcess) -> None:
    for i in range(3):
        deliver(srv, "alice@example.org", f"Quarterly report {i}", body=f"numbers part {i} zebra")
    account = session(srv)["primaryAccounts"][MAIL]
    r = roles(srv)
    out = api(srv, [
        ["Email/query", {"accountId": account, "filter": {"inMailbox": r["inbox"], "text": "zebra"},
                         "sort": [{"property": "receivedAt", "isAscending": False}], "calculateTotal": True}, "q"],
        ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": ["subject", "from", "threadId", "keywords", "preview", "textBody", "bodyValues"],
                       "fetchTextBodyValues": True}, "g"],
        ["Thread/get", {"accountId": account,
                        "#ids": {"resultOf": "g", "name": "Email/get", "path": "/list/*/threadId"}}, "t"],
        ["SearchSnippet/get", {"accountId": account, "filter": {"text": "zebra"},
                               "#emailIds": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}, "s"],
    ])
    query, get, threads, snippets = (o[1] for o in out)
    assert query["total"] == 3 and len(query["ids"]) == 3
    subjects = [e["subject"] for e in get["list"]]
    assert subjects == ["Quarterly report 2", "Quarterly report 1", "Quarterly report 0"]
    first = get["list"][0]
    assert first["from"] == [{"name": "Carol", "email": "carol@outside.example"}]
    assert "zebra" in first["bodyValues"][first["textBody"][0]["partId"]]["value"]
    assert len(threads["list"]) == 3 and all(t["emailIds"] for t in threads["list"])
    assert "<mark>zebra</mark>" in snippets["list"][0]["preview"]
    page = one(srv, "Email/query", {"filter": {"text": "zebra"}, "position": 1, "limit": 1})
    assert page["ids"] == [query["ids"][1]] and page["position"] == 1
    # Keywords: set $flagged, remove $seen; stale ifInState refused.
    target = query["ids"][0]
    state = one(srv, "Email/get", {"ids": [target], "properties": ["keywords"]})["state"]
    upd = one(srv, "Email/set", {"ifInState": state, "update": {target: {"keywords/$flagged": True}}})
    assert target in upd["updated"]
    (stale,) = api(srv, [["Email/set", {"accountId": account, "ifInState": state, "update": {}}, "z"]])
    assert stale[1]["type"] == "stateMismatch"
    got = one(srv, "Email/get", {"ids": [target, "E999999", "bogus"], "properties": ["keywords"]})
    assert got["list"][0]["keywords"] == {"$flagged": True} and set(got["notFound"]) == {"E999999", "bogus"}
    changes = one(srv, "Email/changes", {"sinceState": state})
    assert target in changes["updated"]


def test_imap_and_jmap_see_each_others_flags(srv: ServerProcess) -> None:
    deliver(srv, "bob@example.org", "Shared view")
    account = session(srv, "bob@example.org")["primaryAccounts"][MAIL]
    (jid,) = one(srv, "Email/query", {"filter": {"text": "Shared view"}}, "bob@example.org")["ids"]
    state = one(srv, "Email/get", {"ids": [jid], "properties": ["keywords"]}, "bob@example.org")["state"]
    with imaplib.IMAP4("127.0.0.1", srv.port("imap")) as imap:
        imap.login("bob@example.org", PASSWORD)
        imap.select("INBOX")
        typ, data = imap.uid("SEARCH", "SUBJECT", '"Shared view"')
        uid = data[0].split()[-1]
        imap.uid("STORE", uid, "+FLAGS", r"(\Flagged \Seen)")
        changes = one(srv, "Email/changes", {"sinceState": state}, "bob@example.org")
        assert jid in changes["updated"]
        got = one(srv, "Email/get", {"ids": [jid], "properties": ["keywords"]}, "bob@example.org")
        assert got["list"][0]["keywords"] == {"$flagged": True, "$seen": True}
        api(srv, [["Email/set", {"accountId": account, "update": {jid: {"keywords/$seen": None}}}, "u"]],
            "bob@example.org")
        imap.noop()
        typ, data = imap.uid("FETCH", uid, "(FLAGS)")
        assert b"\\Seen" not in data[0] and b"\\Flagged" in data[0]


def test_blobs_import_parse_and_download(srv: ServerProcess) -> None:
    s = session(srv)
    account = s["primaryAccounts"][MAIL]
    raw = (b"From: Dave <dave@outside.example>\r\nTo: alice@example.org\r\nSubject: Imported\r\n"
           b"Message-ID: <imp-1@outside.example>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=data.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(bytes(range(256))) + b"\r\n--b--\r\n")
    status, _, body = http(srv, "POST", s["uploadUrl"].split("127.0.0.1", 1)[1].split("/", 1)[1].join(["/", ""])
                           .replace("{accountId}", account), raw, headers={"Content-Type": "message/rfc822"})
    assert status == 201, body
    blob = json.loads(body)["blobId"]
    parsed = one(srv, "Email/parse", {"blobIds": [blob, "Bnope"], "properties": ["subject", "messageId", "attachments"]})
    assert parsed["parsed"][blob]["subject"] == "Imported" and parsed["notFound"] == ["Bnope"]
    created = one(srv, "Email/import", {"emails": {"m": {"blobId": blob, "mailboxIds": {roles(srv)["archive"]: True},
                                                         "keywords": {"$seen": True}}}})["created"]["m"]
    got = one(srv, "Email/get", {"ids": [created["id"]], "properties": ["attachments", "mailboxIds", "keywords"]})
    (att,) = got["list"][0]["attachments"]
    assert att["name"] == "data.bin" and att["size"] == 256
    url = (s["downloadUrl"].replace("{accountId}", account).replace("{blobId}", att["blobId"])
           .replace("{name}", "data.bin").replace("{type}", "application/octet-stream"))
    status, headers, data = http(srv, "GET", "/" + url.split("/", 3)[3])
    assert status == 200 and data == bytes(range(256)) and "attachment" in headers["content-disposition"]
    # Another account may not read it.
    status, _, _ = http(srv, "GET", "/" + url.split("/", 3)[3], user="bob@example.org")
    assert status == 404


def test_push_after_smtp_delivery(srv: ServerProcess) -> None:
    s = session(srv)
    events: list[str] = []
    ready = threading.Event()

    def listen() -> None:
        sock = socket.create_connection(("127.0.0.1", srv.port("http")), timeout=20)
        token = base64.b64encode(f"alice@example.org:{PASSWORD}".encode()).decode()
        sock.sendall((f"GET /jmap/eventsource?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Basic {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
        buf = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and buf.count(b"event: state") < 2:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
            if b"event: state" in buf:
                ready.set()
        events.append(buf.decode(errors="replace"))
        sock.close()

    t = threading.Thread(target=listen)
    t.start()
    assert ready.wait(10)
    started = time.monotonic()
    deliver(srv, "alice@example.org", "Push me")
    t.join(15)
    assert events and events[0].count("event: state") >= 2, events
    assert time.monotonic() - started < 15
    last = events[0].rsplit("data: ", 1)[1].split("\n", 1)[0]
    change = json.loads(last)
    assert change["@type"] == "StateChange" and s["primaryAccounts"][MAIL] in change["changed"]


def test_submission_to_a_local_user_and_quota(srv: ServerProcess) -> None:
    account = session(srv)["primaryAccounts"][MAIL]
    r = roles(srv)
    out = api(srv, [
        ["Email/set", {"accountId": account, "create": {"m": {
            "mailboxIds": {r["drafts"]: True}, "keywords": {"$draft": True, "$seen": True},
            "from": [{"name": "Alice", "email": "alice@example.org"}], "to": [{"email": "bob@example.org"}],
            "bcc": [{"email": "bob@example.org"}], "subject": "Über JMAP",
            "bodyValues": {"b": {"value": "Grüße, Bob!"}}, "textBody": [{"partId": "b", "type": "text/plain"}]}}},
         "e"],
        ["EmailSubmission/set", {"accountId": account, "create": {"s": {"emailId": "#m"}},
                                 "onSuccessUpdateEmail": {"#s": {"mailboxIds": {r["sent"]: True},
                                                                 "keywords/$draft": None}}}, "s"],
    ])
    assert "m" in out[0][1]["created"] and "s" in out[1][1]["created"]
    assert out[2][0] == "Email/set" and out[2][2] == "s"                 # the implicit Email/set
    bob = one(srv, "Email/query", {"filter": {"subject": "Über JMAP"}}, "bob@example.org")["ids"]
    assert len(bob) == 1
    got = one(srv, "Email/get", {"ids": bob, "properties": ["subject", "bcc", "textBody", "bodyValues"],
                                 "fetchTextBodyValues": True}, "bob@example.org")["list"][0]
    assert got["subject"] == "Über JMAP" and got["bcc"] is None            # Bcc is not sent
    assert "Grüße, Bob!" in next(iter(got["bodyValues"].values()))["value"]
    sent = one(srv, "Email/query", {"filter": {"inMailbox": r["sent"], "subject": "Über JMAP"}})["ids"]
    assert len(sent) == 1
    forged = api(srv, [["Email/set", {"accountId": account, "create": {"f": {
        "mailboxIds": {r["drafts"]: True}, "from": [{"email": "ceo@example.org"}], "to": [{"email": "bob@example.org"}],
        "subject": "forged"}}}, "e"], ["EmailSubmission/set", {"accountId": account, "create": {"s": {"emailId": "#f"}}},
                                       "s"]])
    assert forged[1][1]["notCreated"]["s"]["type"] == "forbiddenFrom"
    quota = one(srv, "Quota/get", {"ids": None}, "bob@example.org")["list"][0]
    assert quota["resourceType"] == "octets" and quota["hardLimit"] == 10 * 1024 * 1024 and quota["used"] > 0


def test_bearer_tokens(srv: ServerProcess, tmp_path: Path) -> None:
    token = srv.admin("token", "create", "alice@example.org", "--label", "phone").stdout.strip()
    assert token.startswith("mh_")
    status, _, body = http(srv, "GET", "/.well-known/jmap", auth=f"Bearer {token}")
    assert status == 200 and json.loads(body)["username"] == "alice@example.org"
    listing = srv.admin("token", "list", "alice@example.org").stdout
    prefix = listing.split()[0]
    srv.admin("token", "revoke", "alice@example.org", prefix)
    assert http(srv, "GET", "/.well-known/jmap", auth=f"Bearer {token}")[0] == 401

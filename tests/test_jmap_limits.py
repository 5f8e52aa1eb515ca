"""Bounds on what one JMAP request may cost (issue 14 items 1 and 8), over real sockets
against the real server: result references that double the response at every step,
JSON nested too deep, too many calls, and the other protocols staying responsive
meanwhile."""

from __future__ import annotations

import base64
import imaplib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess

CORE, MAIL = "urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"
USER, PASSWORD = "alice@example.org", "s3cret"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("jmaplimits") / "data").start()
    try:
        s.add_user(USER, PASSWORD)
        yield s
    finally:
        s.stop()


def post(srv: ServerProcess, body: bytes, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.port('http')}/jmap/api", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def rss_kib(srv: ServerProcess) -> int:
    assert srv.proc is not None
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def doubling_echo(steps: int) -> bytes:
    """Issue 14 item 1: each Core/echo refers twice to the previous result."""
    calls: list[list[Any]] = [["Core/echo", {"seed": "x" * 1000}, "c0"]]
    for i in range(1, steps + 1):
        ref = {"resultOf": f"c{i - 1}", "name": "Core/echo", "path": ""}
        calls.append(["Core/echo", {"#a": ref, "#b": ref}, f"c{i}"])
    return json.dumps({"using": [CORE], "methodCalls": calls}).encode()


def imap_login_seconds(srv: ServerProcess) -> float:
    start = time.monotonic()
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=60)
    m.login(USER, PASSWORD)
    took = time.monotonic() - start
    m.logout()
    return took


def imap_greeting_seconds(srv: ServerProcess) -> float:
    """Connect, greeting, NOOP: the event loop's latency without a password hash in it."""
    start = time.monotonic()
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=60)
    m.noop()
    took = time.monotonic() - start
    m.logout()
    return took


def smtp_ehlo_seconds(srv: ServerProcess) -> float:
    import smtplib

    start = time.monotonic()
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=60) as s:
        s.ehlo("probe.example")
    return time.monotonic() - start


def test_doubling_references_are_refused_and_others_stay_served(srv: ServerProcess) -> None:
    baseline = max(imap_login_seconds(srv) for _ in range(5))
    quiet = max(max(imap_greeting_seconds(srv), smtp_ehlo_seconds(srv)) for _ in range(5))
    before = rss_kib(srv)
    stop = threading.Event()
    logins: list[float] = []
    probes: list[float] = []
    peak = [before]

    def watch() -> None:
        while not stop.is_set():
            logins.append(imap_login_seconds(srv))
            probes.append(imap_greeting_seconds(srv))
            probes.append(smtp_ehlo_seconds(srv))
            peak[0] = max(peak[0], rss_kib(srv))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.monotonic()
        status, problem = post(srv, doubling_echo(17))
        took = time.monotonic() - started
        until = time.monotonic() + 3
        while time.monotonic() < until:                  # again and again: nothing is left behind
            assert post(srv, doubling_echo(17))[0] == 400
    finally:
        stop.set()
        watcher.join()
    peak[0] = max(peak[0], rss_kib(srv))
    assert status == 400, problem
    assert problem["type"] == "urn:ietf:params:jmap:error:limit"        # RFC 8620 3.6.1
    assert problem["limit"] in ("maxSizeResponse", "maxSizeRequest")
    assert took < 10, took
    growth_mib = (peak[0] - before) / 1024
    assert growth_mib < 60, f"RSS grew {growth_mib:.0f} MiB"
    assert logins, "no IMAP login completed during the attack"
    print(f"refused in {took:.2f}s; RSS +{growth_mib:.1f} MiB; IMAP login max {max(logins) * 1000:.0f} ms "
          f"(baseline {baseline * 1000:.0f} ms) over {len(logins)} logins; IMAP greeting+NOOP and "
          f"SMTP greeting+EHLO max {max(probes) * 1000:.0f} ms (quiet {quiet * 1000:.0f} ms)")
    assert max(logins) < baseline + 0.15, (max(logins), baseline)
    assert max(probes) < quiet + 0.1, (probes, quiet)
    # A modest chain still works: 8 doublings of 1 KB stay far below the limits.
    status, ok = post(srv, doubling_echo(8))
    assert status == 200 and len(ok["methodResponses"]) == 9


def test_too_many_calls_is_a_limit_problem(srv: ServerProcess) -> None:
    calls = [["Core/echo", {}, f"c{i}"] for i in range(65)]
    status, problem = post(srv, json.dumps({"using": [CORE], "methodCalls": calls}).encode())
    assert status == 400 and problem["type"].endswith(":limit") and problem["limit"] == "maxCallsInRequest"


def test_deeply_nested_json_is_not_a_server_error(srv: ServerProcess) -> None:
    status, problem = post(srv, b"[" * 100_000)
    assert status == 400, problem
    assert problem["type"].rpartition(":")[2] in ("notJSON", "limit")
    nested: Any = "x"
    for _ in range(500):
        nested = [nested]
    body = json.dumps({"using": [CORE], "methodCalls": [["Core/echo", {"v": nested}, "c"]]}).encode()
    status, problem = post(srv, body)
    assert status == 400 and problem["type"].endswith(":limit"), problem
    # The server still answers.
    status, ok = post(srv, json.dumps({"using": [CORE], "methodCalls": [["Core/echo", {"v": 1}, "c"]]}).encode())
    assert status == 200 and ok["methodResponses"][0][1] == {"v": 1}


def deep_message(levels: int) -> bytes:
    raw = b"From: a@b.example\r\nTo: alice@example.org\r\nSubject: deep\r\n"
    for i in range(levels):
        raw += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
    raw += b"Content-Type: text/plain\r\n\r\nhello from the bottom\r\n"
    for i in reversed(range(levels)):
        raw += b"--b%d--\r\n" % i
    return raw


def many_headers_message(lines: int) -> bytes:
    return (b"From: a@b.example\r\nTo: alice@example.org\r\nSubject: many headers\r\n"
            + b"X-Filler: b\r\n" * lines + b"\r\nthe body\r\n")


def deliver_raw(srv: ServerProcess, raw: bytes) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=120) as s:
        s.sendmail("a@b.example", [USER], raw)


def email_get(srv: ServerProcess, subject: str, props: list[str]) -> tuple[float, dict[str, Any]]:
    calls = [["Email/query", {"accountId": "A1", "filter": {"subject": subject}}, "q"],
             ["Email/get", {"accountId": "A1", "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                            "properties": props, "fetchAllBodyValues": True}, "g"]]
    started = time.monotonic()
    status, answer = post(srv, json.dumps({"using": [CORE, MAIL], "methodCalls": calls}).encode())
    took = time.monotonic() - started
    assert status == 200, answer
    (resp,) = [r for r in answer["methodResponses"] if r[2] == "g"]
    assert resp[0] == "Email/get", resp
    assert len(resp[1]["list"]) == 1, resp
    return took, resp[1]["list"][0]


BODY_PROPS = ["subject", "from", "bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues",
              "headers", "preview", "hasAttachment"]


def test_a_message_nested_1000_levels_deep(srv: ServerProcess) -> None:
    deliver_raw(srv, deep_message(1000))
    took, email = email_get(srv, "deep", BODY_PROPS)
    assert email["subject"] == "deep" and email["from"] == [{"name": None, "email": "a@b.example"}]
    depth, node = 0, email["bodyStructure"]
    while node.get("subParts"):
        node, depth = node["subParts"][0], depth + 1
    assert 10 <= depth <= 40, depth                      # bounded, not 1,000 levels of JSON
    assert took < 5, took
    assert "Traceback" not in srv.log_text()


def test_a_million_header_lines(srv: ServerProcess) -> None:
    stop = threading.Event()
    probes: list[float] = []

    def watch() -> None:
        while not stop.is_set():
            probes.append(imap_greeting_seconds(srv))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.monotonic()
        deliver_raw(srv, many_headers_message(1_000_000))
        delivered = time.monotonic() - started
        took, email = email_get(srv, "many headers", BODY_PROPS)
    finally:
        stop.set()
        watcher.join()
    assert email["subject"] == "many headers"
    assert 100 <= len(email["headers"]) <= 1000, len(email["headers"])
    assert len(json.dumps(email)) < 200_000
    assert took < 5, took
    print(f"delivery {delivered * 1000:.0f} ms; Email/get {took * 1000:.0f} ms; IMAP greeting+NOOP max {max(probes) * 1000:.0f} ms")
    assert max(probes) < 0.5, max(probes)
    assert "Traceback" not in srv.log_text()


def test_a_large_request_does_not_stall_others(srv: ServerProcess) -> None:
    # 9 MB of small numbers: millions of JSON values to parse, walk and refuse.
    body = json.dumps({"using": [CORE], "methodCalls": [["Core/echo", {"v": [0] * 3_000_000}, "c"]]}).encode()
    assert len(body) < 10 * 1024 * 1024
    allowed = json.dumps({"using": [CORE], "methodCalls": [["Core/echo", {"v": ["x" * 36] * 200_000}, "c"]]}).encode()
    assert 7_000_000 < len(allowed) < 10 * 1024 * 1024
    quiet = max(imap_greeting_seconds(srv) for _ in range(5))
    stop = threading.Event()
    probes: list[float] = []

    def watch() -> None:
        while not stop.is_set():
            probes.append(imap_greeting_seconds(srv))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            status, problem = post(srv, body)
            assert status == 400 and problem["type"].endswith(":limit"), problem
        # Within every limit: 200,000 strings, 8 MB parsed, walked, echoed and serialised.
        status, echoed = post(srv, allowed)
        assert status == 200 and len(echoed["methodResponses"][0][1]["v"]) == 200_000
    finally:
        stop.set()
        watcher.join()
    print(f"IMAP greeting+NOOP max {max(probes) * 1000:.0f} ms over {len(probes)} (quiet {quiet * 1000:.0f} ms)")
    assert max(probes) < quiet + 0.15, (sorted(probes)[-5:], quiet)

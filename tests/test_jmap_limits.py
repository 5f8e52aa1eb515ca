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


def test_doubling_references_are_refused_and_others_stay_served(srv: ServerProcess) -> None:
    baseline = max(imap_login_seconds(srv) for _ in range(5))
    before = rss_kib(srv)
    stop = threading.Event()
    logins: list[float] = []
    probes: list[float] = []
    peak = [before]

    def watch() -> None:
        while not stop.is_set():
            logins.append(imap_login_seconds(srv))
            probes.append(imap_greeting_seconds(srv))
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
          f"(baseline {baseline * 1000:.0f} ms) over {len(logins)} logins; greeting+NOOP max "
          f"{max(probes) * 1000:.0f} ms")
    assert max(logins) < baseline + 0.15, (max(logins), baseline)
    assert max(probes) < 0.15, probes
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

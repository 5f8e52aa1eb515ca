"""The shared login throttle over real sockets against `mailhaven serve` (issue 14, items 5, 11).

A guesser at 127.0.0.2 is slowed down, then refused on IMAP, SMTP AUTH, POP3, HTTP Basic
and the webmail form, even with the right password, while the owner at 127.0.0.3 logs in
everywhere; the block survives a restart, is shared by two servers on one store, and
`mailhaven security blocked|unblock` lists and lifts it. Clients are the stdlib's
(imaplib, smtplib, poplib, http.client), bound to a source address.
"""

from __future__ import annotations

import base64
import http.client
import imaplib
import json
import poplib
import smtplib
import socket
import time
import urllib.parse
from typing import Any

import pytest

from conftest import ServerProcess, run_cli

GUESSER, OWNER = "127.0.0.2", "127.0.0.3"
USER, PASSWORD = "alice@lancs.example", "alice-pw"
HOST = "127.0.0.1"

THROTTLE = """
[security]
login_failures_per_address = 8
login_failures_per_account = 3
login_delay = "0.2s"
login_max_delay = "0.8s"
login_window = "10m"
login_block = "10m"
"""


class IMAP(imaplib.IMAP4):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__(HOST, port, timeout=20)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


class POP3(poplib.POP3):
    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__(HOST, port, timeout=20)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def imap_login(srv: ServerProcess, source: str, user: str, password: str) -> tuple[str, float]:
    """'ok', 'no' (wrong password) or 'bye' (refused: connection closed), and the answer time."""
    client = IMAP(srv.port("imap"), source)
    started = time.monotonic()
    try:
        client.login(user, password)
        outcome = "ok"
    except imaplib.IMAP4.abort:
        outcome = "bye"
    except imaplib.IMAP4.error:
        outcome = "no"
    elapsed = time.monotonic() - started
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        pass
    return outcome, elapsed


def smtp_login(srv: ServerProcess, source: str, user: str, password: str) -> tuple[int, float]:
    with smtplib.SMTP(HOST, srv.port("submission"), timeout=20, source_address=(source, 0)) as s:
        s.ehlo()
        started = time.monotonic()
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())
        return code, time.monotonic() - started


def pop_login(srv: ServerProcess, source: str, user: str, password: str) -> tuple[str, float]:
    client = POP3(srv.port("pop3"), source)
    client.user(user)
    started = time.monotonic()
    try:
        client.pass_(password)
        outcome = "ok"
    except poplib.error_proto as exc:
        outcome = exc.args[0].decode()
    elapsed = time.monotonic() - started
    try:
        client.quit()
    except (poplib.error_proto, OSError):
        pass
    return outcome, elapsed


def http_basic(srv: ServerProcess, source: str, user: str, password: str) -> tuple[int, float]:
    conn = http.client.HTTPConnection(HOST, srv.port("http"), timeout=20, source_address=(source, 0))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    started = time.monotonic()
    conn.request("GET", "/jmap/session", headers={"Authorization": "Basic " + token})
    status = conn.getresponse().status
    conn.close()
    return status, time.monotonic() - started


def webmail_login(srv: ServerProcess, source: str, user: str, password: str) -> int:
    conn = http.client.HTTPConnection(HOST, srv.port("http"), timeout=20, source_address=(source, 0))
    body = urllib.parse.urlencode({"username": user, "password": password})
    conn.request("POST", "/login", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    status = conn.getresponse().status
    conn.close()
    return status


def guess_until_blocked(srv: ServerProcess) -> list[float]:
    """Eight wrong passwords from the guesser across four protocols; the answer times."""
    times = []
    for _ in range(2):
        outcome, t = imap_login(srv, GUESSER, USER, "wrong")
        assert outcome == "no"
        times.append(t)
    for _ in range(2):
        code, t = smtp_login(srv, GUESSER, "carol@lancs.example", "wrong")
        assert code == 535
        times.append(t)
    for _ in range(2):
        outcome, t = pop_login(srv, GUESSER, "dave@lancs.example", "wrong")
        assert outcome.startswith("-ERR [AUTH] Authentication failed"), outcome
        times.append(t)
    status, t = http_basic(srv, GUESSER, "erin@lancs.example", "wrong")
    assert status == 401
    times.append(t)
    status, t = http_basic(srv, GUESSER, "erin@lancs.example", "wrong")   # the 8th: blocked now
    assert status == 429
    times.append(t)
    return times


def assert_guesser_refused(srv: ServerProcess) -> None:
    """The right password from the guessing address is refused on every protocol."""
    assert imap_login(srv, GUESSER, USER, PASSWORD)[0] == "bye"
    assert smtp_login(srv, GUESSER, USER, PASSWORD)[0] == 421
    with smtplib.SMTP(HOST, srv.port("submission"), timeout=20, source_address=(GUESSER, 0)) as s:
        s.ehlo()
        assert s.docmd("AUTH", "LOGIN")[0] == 421           # not even a challenge
    outcome = pop_login(srv, GUESSER, USER, PASSWORD)[0]
    assert outcome.startswith("-ERR [AUTH] Too many failed logins"), outcome
    assert http_basic(srv, GUESSER, USER, PASSWORD)[0] == 429
    assert webmail_login(srv, GUESSER, USER, PASSWORD) == 429


def assert_owner_logs_in(srv: ServerProcess, source: str = OWNER) -> None:
    assert imap_login(srv, source, USER, PASSWORD)[0] == "ok"
    assert smtp_login(srv, source, USER, PASSWORD)[0] == 235
    assert pop_login(srv, source, USER, PASSWORD)[0] == "ok"
    assert http_basic(srv, source, USER, PASSWORD)[0] == 200
    assert webmail_login(srv, source, USER, PASSWORD) == 303


def blocked_json(srv: ServerProcess) -> list[dict[str, Any]]:
    return list(json.loads(srv.admin("security", "blocked", "--json").stdout))


@pytest.fixture
def srv(make_server: Any) -> ServerProcess:
    server: ServerProcess = make_server("throttle", extra_config=THROTTLE)
    server.add_user(USER, PASSWORD)
    return server


def test_guessing_is_slowed_then_refused_everywhere_but_not_the_owner(srv: ServerProcess) -> None:
    times = guess_until_blocked(srv)
    # The answers wait 0.2, 0.4, 0.8, 0.8 ... s: the delay grows with the address's failures.
    for expected, took in zip((0.2, 0.4, 0.8, 0.8, 0.8, 0.8, 0.8), times, strict=False):
        assert took >= expected - 0.05, times
    assert_guesser_refused(srv)
    assert "login blocked" in srv.log_text() and GUESSER in srv.log_text()
    assert_owner_logs_in(srv)                       # never a lock-out of the account itself
    assert_guesser_refused(srv)                     # the owner's success lifts nothing


def test_block_survives_restart_and_the_cli_lists_and_lifts_it(srv: ServerProcess) -> None:
    guess_until_blocked(srv)
    srv.stop()
    srv.start()
    assert_guesser_refused(srv)
    listed = blocked_json(srv)
    assert {(r["address"], r["account"]) for r in listed} >= {(GUESSER, None)}
    assert all(r["blocked_until"] > time.time() + 60 for r in listed)
    text = srv.admin("security", "blocked").stdout
    assert GUESSER in text and "failures" in text
    out = srv.admin("security", "unblock", GUESSER).stdout
    assert f"unblocked {GUESSER}" in out
    assert blocked_json(srv) == []
    assert_owner_logs_in(srv, GUESSER)              # lifted for every protocol at once
    assert srv.admin("security", "unblock", "not-an-ip", check=False).returncode == 1


def test_parallel_guessing_gains_nothing(srv: ServerProcess) -> None:
    """Sixteen connections guessing at once from one address: the answers still come one
    delay after another, and no more than the limit's worth of passwords is checked."""
    import concurrent.futures

    def guess(i: int) -> str:
        return imap_login(srv, GUESSER, f"user{i}@lancs.example", "wrong")[0]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(guess, range(16)))
    elapsed = time.monotonic() - started
    # Eight passwords checked (login_failures_per_address): seven answered NO, the eighth
    # and every later one BYE; the eight delays came one after another.
    assert sorted(outcomes) == ["bye"] * 9 + ["no"] * 7, outcomes
    assert elapsed >= 0.2 + 0.4 + 0.8 * 6 - 0.2
    assert_guesser_refused(srv)


@pytest.fixture
def pg_config(pg_store_config: str) -> str:
    return pg_store_config


def test_two_postgres_nodes_share_blocks(make_server: Any, pg_config: str) -> None:
    a: ServerProcess = make_server("node-a", extra_config=THROTTLE + pg_config)
    b: ServerProcess = make_server("node-b", extra_config=THROTTLE + pg_config)
    a.add_user(USER, PASSWORD)
    guess_until_blocked(a)
    assert_guesser_refused(b)
    assert_owner_logs_in(b)
    assert [r["address"] for r in blocked_json(b)].count(GUESSER) == 1
    b.admin("security", "unblock", GUESSER)
    assert smtp_login(a, GUESSER, USER, PASSWORD)[0] == 235


def test_blocks_from_the_cli_store_are_seen_by_the_server(srv: ServerProcess) -> None:
    """SQLite + CLI: the CLI is another process on the same database."""
    guess_until_blocked(srv)
    result = run_cli(srv.data, "security", "blocked")
    assert GUESSER in result.stdout

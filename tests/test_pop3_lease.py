"""The POP3 maildrop lock (RFC 1939 8, RFC 2449 [IN-USE]) holds across server processes
(issue 14 item 11): two PostgreSQL nodes, or a server started after another was killed,
poplib as the client.

A session on server A keeps the maildrop from server B for as long as it lasts (the
lease is renewed), gives it up at QUIT, and a killed server's lease expires after
``[limits] pop3_lock_lease``.
"""

from __future__ import annotations

import os
import poplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess

USER, PASSWORD = "bob@nyu.example", "s3cret"
LEASE = '[limits]\npop3_lock_lease = "2s"\n'


def pop(srv: ServerProcess) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=20)


def login(srv: ServerProcess) -> tuple[poplib.POP3 | None, str]:
    client = pop(srv)
    client.user(USER)
    try:
        client.pass_(PASSWORD)
    except poplib.error_proto as exc:
        client.quit()
        return None, exc.args[0].decode()
    return client, "+OK"


def in_use_across(a: ServerProcess, b: ServerProcess) -> None:
    held, answer = login(a)
    assert held is not None, answer
    other, answer = login(b)
    assert other is None and answer.startswith("-ERR [IN-USE]"), answer
    time.sleep(2.5)                                        # longer than the lease: it was renewed
    assert login(b)[1].startswith("-ERR [IN-USE]")
    held.quit()
    other, answer = login(b)                               # released at QUIT
    assert other is not None, answer
    assert login(a)[1].startswith("-ERR [IN-USE]")         # and now B holds it
    other.quit()


@pytest.mark.skipif(os.environ.get("MAILHAVEN_TEST_STORE") == "postgres",
                    reason="SQLite's case: under the PostgreSQL suite each ServerProcess gets a "
                           "schema of its own, so the restarted server would not share the lease "
                           "(test_maildrop_lock_holds_across_postgres_nodes covers PostgreSQL)")
def test_a_killed_servers_lock_expires(make_server: Any, tmp_path: Path) -> None:
    """One `serve` per data directory (DATA/serve.lock), so on SQLite the next process is
    the one started after a crash: it finds the dead one's lease and waits for it to end."""
    lease = '[limits]\npop3_lock_lease = "20s"\n'      # longer than a start-up on a busy machine
    a: ServerProcess = make_server("shared", extra_config=lease)
    a.add_user(USER, PASSWORD)
    held, answer = login(a)
    assert held is not None, answer
    a.kill()                                               # no QUIT, no release: only expiry frees it
    killed = time.monotonic()
    b = ServerProcess(tmp_path / "shared", extra_config=lease).start()
    try:
        assert login(b)[1].startswith("-ERR [IN-USE]")
        assert time.monotonic() - killed < 20
        deadline = killed + 60
        while True:
            other, answer = login(b)
            if other is not None or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert other is not None, answer
        other.quit()
    finally:
        b.stop()


@pytest.fixture
def pg_nodes(make_server: Any, pg_store_config: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    config = LEASE + pg_store_config
    a: ServerProcess = make_server("node-a", extra_config=config)
    b: ServerProcess = make_server("node-b", extra_config=config)
    a.add_user(USER, PASSWORD)
    yield a, b
    a.stop()
    b.stop()


def test_maildrop_lock_holds_across_postgres_nodes(pg_nodes: tuple[ServerProcess, ServerProcess]) -> None:
    in_use_across(*pg_nodes)

"""Ids in the log, the Received: trace, the reply to DATA and the queue are never given out
twice (issue 14, item 10: ``s000003.0`` named two messages): not after a restart, not by an
SMTP worker process beside the main one, not by another PostgreSQL node."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
from pathlib import Path

from conftest import ServerProcess, free_port, mailhaven_env

ACCEPTED = re.compile(r"Message accepted as (\S+)")
BODY = b"From: alice@ids.example\r\nSubject: ids\r\n\r\nHello.\r\n"


def _data(smtp: smtplib.SMTP, sender: str, rcpt: str) -> str:
    smtp.ehlo()
    assert smtp.mail(sender)[0] == 250 and smtp.rcpt(rcpt)[0] == 250
    code, text = smtp.data(BODY)
    assert code == 250, text
    match = ACCEPTED.search(text.decode())
    assert match, text
    return match.group(1)


def _one_run(srv: ServerProcess) -> tuple[list[str], list[int], list[str]]:
    """(transaction ids of two inbound and two submitted messages, the queue ids those got,
    the log's connection ids); the queue is emptied afterwards."""
    txids = []
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as smtp:     # an SMTP worker
            txids.append(_data(smtp, "someone@elsewhere.example", "alice@ids.example"))
        with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30) as smtp:  # the main process
            smtp.ehlo()
            smtp.login("alice@ids.example", "s3cret")
            txids.append(_data(smtp, "alice@ids.example", "bob@remote.example"))
    queue = json.loads(srv.admin("queue", "list", "--json").stdout)
    *_, left = srv.admin_each(*(["queue", "delete", str(entry["id"])] for entry in queue), ["queue", "list", "--json"])
    assert json.loads(left) == []
    cids = re.findall(r"\bcid=(\S+)", srv.log_text())
    return txids, [e["id"] for e in queue], cids


def test_ids_are_never_given_out_again(tmp_path: Path) -> None:
    nowhere = free_port()     # the smarthost does not answer: submitted mail stays queued
    srv = ServerProcess(tmp_path / "data", extra_config=(
        f'[smtp]\nworkers = 1\n[relay]\nhost = "127.0.0.1:{nowhere}"\ntls = "none"\n'))
    srv.start()
    try:
        srv.add_user("alice@ids.example")
        tx1, queue1, _ = _one_run(srv)
        srv.stop()
        srv.log_path.rename(srv.data.parent / "first.log")
        srv.start()
        tx2, queue2, cids2 = _one_run(srv)
    finally:
        srv.stop()
    cids1 = re.findall(r"\bcid=(\S+)", (srv.data.parent / "first.log").read_text())
    assert len(set(tx1 + tx2)) == 8, (tx1, tx2)
    assert len(queue1) == len(queue2) == 2 and not set(queue1) & set(queue2), (queue1, queue2)
    assert cids1 and cids2 and not set(cids1) & set(cids2)
    # Two processes at once (the main one and its SMTP worker) never share a connection id.
    worker = {t.rpartition(".")[0].rpartition(".")[0] for t in tx1[0::2]}
    main = {t.rpartition(".")[0].rpartition(".")[0] for t in tx1[1::2]}
    assert worker and main and not worker & main


def test_processes_started_together_get_different_ids() -> None:
    """As PostgreSQL nodes or workers starting in the same instant would."""
    script = "from mailhaven import logs; print(logs.connection_id('s'))"
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=mailhaven_env())
             for _ in range(8)]
    ids = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert len(set(ids)) == 8, ids


async def test_an_older_queue_table_keeps_its_rows_and_stops_reusing_ids(tmp_path: Path) -> None:
    import sqlite3

    from mailhaven.queue.api import OutboundMessage, OutboundRecipient
    from mailhaven.store.sqlite import SQLiteStore
    from mailhaven.store.sqlitequeue import SCHEMA

    (tmp_path / "data").mkdir()
    old = sqlite3.connect(tmp_path / "data" / "mailhaven.db")
    old.executescript(SCHEMA.replace("AUTOINCREMENT", ""))       # as older versions made it
    old.execute("INSERT INTO queue (id, msg, blob_id, size, mail_from, rcpt, domain, body, smtputf8, created, "
                "state, next_attempt) VALUES (7, 'm', 'b', 1, 'a@x.example', 'b@y.example', 'y.example', '7BIT', "
                "0, 1.0, 'held', 1.0)")
    old.commit()
    old.close()
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    try:
        (kept,) = await store.queue_list()
        assert (kept.id, kept.rcpt, kept.state) == (7, "b@y.example", "held")
        await store.queue_delete(7)
        blob = await store.put_blob(BODY)
        (new,) = await store.queue_enqueue(OutboundMessage(
            blob=blob, mail_from="a@x.example", recipients=(OutboundRecipient(address="c@z.example"),)))
        assert new > 7
    finally:
        await store.close()

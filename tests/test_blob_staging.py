"""SQLite: a small blob finished with ``deferred=True`` (SMTP DATA) is written by the next
write transaction, so the delivery that names it commits both with one fsync; its bytes are
readable meanwhile, and a transaction that fails keeps it for the next one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailhaven.store.sqlite import SQLiteStore

RAW = b"From: alice@lancs.example\r\nTo: bob@nyu.example\r\nSubject: staged\r\n\r\nThe heron waits.\r\n"


async def blob_rows(store: SQLiteStore) -> int:
    return int(await store.db.read(lambda c: c.execute("SELECT count(*) FROM blob_data").fetchone()[0]))


async def test_a_deferred_blob_commits_with_the_delivery_that_names_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        commits_before = await blob_rows(store)
        writer = store.blob_writer()
        writer.write(RAW)
        ref = await writer.finish(deferred=True)
        assert await blob_rows(store) == commits_before          # nothing written yet
        assert await store.read_blob(ref.id) == RAW              # but readable (staged)
        [result] = await store.deliver(ref, [bob.id])
        assert result.message is not None
        assert await blob_rows(store) == commits_before + 1
    finally:
        await store.close()
    store = SQLiteStore(tmp_path)                                # what a restart finds
    await store.open()
    try:
        inbox = await store.get_mailbox(bob.id, "INBOX")
        [(_, data)] = await store.get_raw(inbox.id, [1])
        assert data == RAW
    finally:
        await store.close()


async def test_a_failed_transaction_keeps_the_blob_staged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        writer = store.blob_writer()
        writer.write(RAW)
        ref = await writer.finish(deferred=True)
        real = store.blobs._insert_staged
        calls = []

        def failing(conn: sqlite3.Connection):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 1:
                raise sqlite3.OperationalError("database or disk is full")
            return real(conn)

        monkeypatch.setattr(store.db, "_batch_hooks", [failing])
        with pytest.raises(Exception):                           # noqa: B017 - the delivery fails whole
            await store.deliver(ref, [bob.id])
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert inbox.uidnext == 1                                # no row names the blob
        [result] = await store.deliver(ref, [bob.id])            # the next transaction writes it
        assert result.message is not None
        assert await store.read_blob(ref.id) == RAW
        assert await blob_rows(store) == 1
    finally:
        await store.close()


@pytest.mark.parametrize("spill", [False, True])
async def test_a_blob_is_its_pieces_whatever_the_caller_does_with_them(tmp_path: Path, spill: bool) -> None:
    """The writer keeps small blobs as the pieces written (issue 18: no growing buffer);
    a bytearray written may change afterwards without changing the blob, in memory or
    spilled to a file past the inline size."""
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        piece = bytearray(b"x" * 1000)
        pieces = [b"Subject: pieces\r\n\r\n", bytes(piece), piece, b"end\r\n"]
        if spill:
            pieces.insert(2, b"y" * store.blobs.inline_max)
        expected = b"".join(bytes(p) for p in pieces)
        writer = store.blob_writer()
        for p in pieces:
            writer.write(p)
        piece[:] = b"z" * 1000                          # the caller reuses its buffer
        ref = await writer.finish(deferred=True)
        assert ref.size == len(expected)
        assert await store.read_blob(ref.id) == expected
    finally:
        await store.close()

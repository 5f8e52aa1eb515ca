"""SQLite keeps message summaries compressed (issue 18's storage target), and reads the
JSON text rows that older versions wrote."""

from __future__ import annotations

import json
from pathlib import Path

from mailhaven.store.sqlite import SQLiteStore

USER = "size@example.org"


def message(n: int) -> bytes:
    words = " ".join(f"word{i}" for i in range(60))
    return (f"From: Sender {n} <sender{n}@example.net>\r\nTo: {USER}\r\nSubject: summary size {n}\r\n"
            f"Message-ID: <size-{n}@example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            f"{words}\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>{words}</p>\r\n--b--\r\n").encode()


async def test_summaries_stored_compressed_and_old_text_rows_still_read(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("example.org")
        account = await store.add_account(USER, "pw")
        for n in (1, 2):
            await store.deliver(await store.put_blob(message(n)), [account.id])
        inbox = await store.get_mailbox(account.id, "INBOX")
        [first, second] = await store.get_messages(inbox.id, [1, 2])
        stored = store.db.read_sync(lambda c: c.execute("SELECT id, summary FROM message_data ORDER BY id").fetchall())
        for (_, value), msg in zip(stored, (first, second), strict=True):
            assert len(value) < len(json.dumps(msg.summary)) / 2     # compressed: under half the JSON text
        # A row as an older version wrote it: the JSON text.
        await store.db.write(lambda c: c.execute("UPDATE message_data SET summary=? WHERE id=?",
                                                 (json.dumps(second.summary), stored[1][0])))
        [again] = await store.get_messages(inbox.id, [2])
        assert again.summary == second.summary
        assert again.summary["subject"] == "summary size 2"
        # A copy carries either form along.
        archive = await store.create_mailbox(account.id, "Kept")
        pairs = await store.copy(inbox.id, [1, 2], archive.id)
        copies = await store.get_messages(archive.id, [dst for _, dst in pairs])
        assert [m.summary for m in copies] == [first.summary, second.summary]
    finally:
        await store.close()

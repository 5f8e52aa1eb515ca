"""SQLite store: the full-text search index (FTS5 trigram), filled in the background from
``fts_pending``, searched, and rebuilt by ``reindex``. Mixed into
:class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from typing import TYPE_CHECKING

from ..message.summary import LARGE_MESSAGE
from .api import Message, NotFound
from .db import Database, WriteContext
from .sqliterows import _INSERT_DATA, _INSERT_PENDING, _prepare, _prepare_file, _Prepared

if TYPE_CHECKING:
    from .blobs import FileBlobStore

_log = logging.getLogger("mailhaven.store")

# Search fields -> FTS columns (None: every column).
_FTS_FIELDS: dict[str, str | None] = {
    "subject": "subject", "from": "sender", "to": "recipients", "cc": "cc", "bcc": "bcc",
    "body": "body", "header": "headers", "text": None,
}

INDEX_QUIET = 0.0
"""Seconds without a new message before pending search text is indexed (and then only
while no write waits for the writer thread). 0: right away, between deliveries; it was
1 s, which left a burst's whole indexing for after it, every message searchable late."""
INDEX_POLL = 0.02
"""Seconds between looks at the backlog while nothing was indexed."""
INDEX_BACKLOG = 20_000
"""Pending messages beyond which indexing goes on under load too."""
INDEX_CHUNK = 200
"""Most messages indexed per write transaction."""
INDEX_SLICE = 0.01
"""Seconds of indexing per write transaction, at most (about): a delivery waiting for the
write lock behind the indexer waits no longer than this."""


def _index_some(conn: sqlite3.Connection) -> int:
    """Move pending rows into the trigram index for up to INDEX_SLICE seconds (at most
    INDEX_CHUNK rows, at least one); returns how many."""
    deadline = time.monotonic() + INDEX_SLICE
    done = []
    rows = conn.execute("SELECT id, subject, sender, recipients, cc, bcc, body, headers FROM fts_pending "
                        "ORDER BY id LIMIT ?", (INDEX_CHUNK,))
    for r in rows:                          # read a row at a time: the slice may end at the first
        conn.execute("INSERT INTO messages_fts (rowid, subject, sender, recipients, cc, bcc, body, headers) "
                     "VALUES (?,?,?,?,?,?,?,?)", tuple(r))
        done.append((r[0],))
        if time.monotonic() >= deadline:
            break
    rows.close()
    conn.executemany("DELETE FROM fts_pending WHERE id=?", done)
    return len(done)


class IndexMethods:
    if TYPE_CHECKING:
        db: Database
        blobs: FileBlobStore
        _index_pending: int
        _last_indexed_write: float

        async def list_messages(self, mailbox_id: int, *, with_summary: bool = False) -> list[Message]: ...

    # -- the search index, filled in the background -----------------------------------
    def _index_later(self) -> None:
        self._index_pending += 1
        self._last_indexed_write = time.monotonic()

    async def _index_loop(self) -> None:
        """Move pending search text into the trigram index an INDEX_SLICE per transaction,
        whenever no delivery is waiting for the writer thread (or the backlog passes
        INDEX_BACKLOG), so a delivery waits at most one slice behind it and the index is
        current soon after a burst. A slice queued beside deliveries shares their commit.
        Searches do not wait for it: they flush first."""
        moved = 0
        while True:
            # Slice after slice while there is work; deliveries queue for the lock between them.
            await asyncio.sleep(0 if moved else INDEX_POLL)
            moved = 0
            if not self._index_pending:
                continue
            quiet = time.monotonic() - self._last_indexed_write >= INDEX_QUIET and not self.db.writes_waiting()
            if quiet or self._index_pending >= INDEX_BACKLOG:
                try:
                    moved = await self.db.write(_index_some, durable=False)
                except sqlite3.Error as exc:          # busy or locked: try again later
                    _log.warning("search indexing failed: %s", exc)
                    continue
                self._index_pending = max(0, self._index_pending - moved) if moved else 0

    async def flush_index(self) -> None:
        """Index every pending message now (before a search)."""
        while await self.db.write(_index_some, durable=False):
            pass
        self._index_pending = 0

    async def reindex(self, batch: int = 200) -> int:
        """Recompute every message's summary, IMAP wire forms and search text from its bytes
        (after an upgrade changed how they are computed); returns how many messages. Runs
        beside a serving process: a batch per transaction, rows that went meanwhile skipped."""
        done = last = 0
        while True:
            def page(c: sqlite3.Connection, after: int = last) -> list[sqlite3.Row]:
                return c.execute("SELECT id, blob_id FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                                 (after, batch)).fetchall()

            rows = await self.db.read(page)
            if not rows:
                return done
            last = rows[-1][0]

            def work(rows: list[sqlite3.Row] = rows) -> list[tuple[int, _Prepared]]:
                out = []
                for row in rows:
                    try:
                        path = self.blobs.file_path(row[1])
                        if path is not None and os.path.getsize(path) > LARGE_MESSAGE:
                            out.append((row[0], _prepare_file(path)))     # as delivery made it
                        else:
                            out.append((row[0], _prepare(self.blobs.read_sync(row[1]))))
                    except (OSError, NotFound):
                        continue                    # missing bytes: `store check` reports them
                return out

            prepared = await asyncio.to_thread(work)

            def write(ctx: WriteContext, prepared: list[tuple[int, _Prepared]] = prepared) -> int:
                conn = ctx.conn
                n = 0
                for message_id, p in prepared:
                    if conn.execute("SELECT 1 FROM messages WHERE id=?", (message_id,)).fetchone() is None:
                        continue                    # expunged meanwhile
                    conn.execute(_INSERT_DATA, (message_id, p.stored_summary, *(p.wire or (None, None))))
                    conn.execute("DELETE FROM messages_fts WHERE rowid=?", (message_id,))
                    conn.execute("DELETE FROM fts_pending WHERE id=?", (message_id,))
                    conn.execute(_INSERT_PENDING, (message_id, *p.fts))
                    n += 1
                ctx.after_commit(self._index_later)
                return n

            done += await self.db.write_ctx(write)

    async def search_text(self, mailbox_id: int, field: str, text: str) -> set[int]:
        if field not in _FTS_FIELDS:
            raise ValueError(f"unknown search field {field!r}")
        column = _FTS_FIELDS[field]
        needle = text.strip()
        if not needle:
            return {m.uid for m in await self.list_messages(mailbox_id)}

        if self._index_pending or await self.db.read(
                lambda c: c.execute("SELECT EXISTS (SELECT 1 FROM fts_pending)").fetchone()[0]):
            await self.flush_index()      # (other processes, SMTP workers or imports, add some too)

        def find(conn: sqlite3.Connection) -> set[int]:
            cols = [column] if column else ["subject", "sender", "recipients", "cc", "bcc", "body", "headers"]
            if len(needle) >= 3:
                # The trigram tokenizer matches substrings (case-insensitively) through the index.
                quoted = '"' + needle.replace('"', '""') + '"'
                query = " OR ".join(f"{c} : {quoted}" for c in cols) if column else quoted
                # MATCH in a subquery: one index lookup, not one MATCH per message of the
                # mailbox (the join form ran ~100x slower on a 1,000-message mailbox).
                sql = ("SELECT uid FROM messages WHERE mailbox_id=? AND id IN "
                       "(SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)")
                return {r[0] for r in conn.execute(sql, (mailbox_id, query))}
            like = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            cond = " OR ".join(f"f.{c} LIKE ? ESCAPE '\\'" for c in cols)
            sql = (f"SELECT m.uid FROM messages m JOIN messages_fts f ON f.rowid = m.id "
                   f"WHERE m.mailbox_id=? AND ({cond})")
            return {r[0] for r in conn.execute(sql, (mailbox_id, *([like] * len(cols))))}

        return await self.db.read(find)

"""SQLite store: the full-text search index (FTS5 trigram), filled in the background from
``fts_pending``, searched, and rebuilt by ``reindex``. Mixed into
:class:`mailhaven.store.sqlite.SQLiteStore`.

The index (``search_index``) is contentless (``content=''``) and records which trigrams
each column holds, not where (``detail=column``, see trigram.py). The text it took is
kept once, in ``search_text``: to check the index's candidates, to take a message out
again (FTS5 before 3.43 deletes from a contentless table only given the values it
indexed), for COPY, for needles too short for trigrams, and for ``migrate-to-postgres``."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ..message.summary import LARGE_MESSAGE
from .api import Message, NotFound
from .db import Database, WriteContext
from .sqliterows import (
    _INSERT_DATA,
    _INSERT_HEADER,
    _INSERT_PENDING,
    _prepare,
    _prepare_file,
    _Prepared,
)
from .trigram import like_matcher, matcher, trigram_query

if TYPE_CHECKING:
    from .blobs import FileBlobStore

_log = logging.getLogger("mailhaven.store")

SEARCH_COLUMNS = ("subject", "sender", "recipients", "cc", "bcc", "body", "headers")
"""The index's columns, in the order of :func:`mailhaven.message.summary.search_fields`."""
_COLUMNS = ", ".join(SEARCH_COLUMNS)
_DELETE_INDEX = f"INSERT INTO search_index (search_index, rowid, {_COLUMNS}) VALUES ('delete',?,?,?,?,?,?,?,?)"

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
CHECKPOINT_EVERY = 0.25
"""Seconds between checkpoints of the WAL (:meth:`Database.checkpoint`) while writes go on."""
INDEX_SLICE_BYTES = 256 * 1024
"""Bytes of search text indexed per write transaction, at most (and at least one message):
6-12 ms of the writer's CPU measured, what a delivery queued behind the slice waits for
(one waiting before it makes the slice a single message). Counted in bytes, not timed:
the slice is a few statements over a set of rows, with the GIL released while they run."""


FIELD_SEPARATOR = "\x00"
"""Between the fields in ``search_text`` (no field holds one: :func:`clean_fields`)."""


def clean_fields(fields: Sequence[str | None]) -> tuple[str, ...]:
    """The fields as indexed and kept: NUL (which no search string holds) made a space."""
    return tuple((f or "").replace(FIELD_SEPARATOR, " ") for f in fields)


def unpack_text(stored: str) -> tuple[str, ...]:
    """The fields of a ``search_text`` row (:data:`_SLICE_KEEP`)."""
    return tuple(stored.split(FIELD_SEPARATOR))


def field_of(stored: str, at: int) -> str:
    """Field ``at`` of a ``search_text`` row: ``unpack_text(stored)[at]`` without splitting
    the rest (a SUBJECT or FROM search checks its candidates' first fields, not their bodies)."""
    start = 0
    for _ in range(at):
        start = stored.find(FIELD_SEPARATOR, start) + 1
        if not start:
            raise IndexError(at)
    end = stored.find(FIELD_SEPARATOR, start)
    return stored[start:] if end < 0 else stored[start:end]


def text_of(conn: sqlite3.Connection, message_id: int) -> tuple[str, ...] | None:
    """A message's search fields, indexed or still pending (None: neither, e.g. gone)."""
    row = conn.execute("SELECT text FROM search_text WHERE id=?", (message_id,)).fetchone()
    if row is not None:
        return unpack_text(row[0])
    row = conn.execute(f"SELECT {_COLUMNS} FROM fts_pending WHERE id=?", (message_id,)).fetchone()
    return tuple(f or "" for f in row) if row is not None else None


def unindex(conn: sqlite3.Connection, message_ids: Iterable[int]) -> None:
    """Take messages out of the search index and the backlog (expunge, mailbox or account
    removal, reindex). The contentless index is told the very values it indexed."""
    for message_id in message_ids:
        row = conn.execute("SELECT text FROM search_text WHERE id=?", (message_id,)).fetchone()
        if row is not None:
            conn.execute(_DELETE_INDEX, (message_id, *unpack_text(row[0])))
            conn.execute("DELETE FROM search_text WHERE id=?", (message_id,))
        conn.execute("DELETE FROM fts_pending WHERE id=?", (message_id,))


_SLICE_ROWS = ("SELECT id, " + " + ".join(f"ifnull(length(CAST({c} AS BLOB)), 0)" for c in SEARCH_COLUMNS)
               + ", instr(" + " || ".join(f"ifnull(CAST({c} AS BLOB), x'')" for c in SEARCH_COLUMNS)
               + ", x'00') FROM fts_pending ORDER BY id LIMIT ?")
"""The backlog's first rows: id, bytes of text, whether a field holds a NUL."""
_FIELDS = ", ".join(f"ifnull({c}, '')" for c in SEARCH_COLUMNS)
_SLICE_INDEX = f"INSERT INTO search_index (rowid, {_COLUMNS}) SELECT id, {_FIELDS} FROM fts_pending WHERE id <= ?"
_SLICE_KEEP = ("INSERT INTO search_text (id, text) SELECT id, "
               + " || char(0) || ".join(f"ifnull({c}, '')" for c in SEARCH_COLUMNS)
               + " FROM fts_pending WHERE id <= ?")
"""A message's fields as ``search_text`` keeps them: joined by NUL (concatenation keeps
NULs; the fields hold none by then). Not compressed: a search checks every candidate's
text (trigram.py), and zlib took ~25 us a message to undo against ~2 us to look through
the text (compressed, the copy was 1.0 KB a message instead of 2.0: 0.1x of the raw)."""


def _index_some(conn: sqlite3.Connection, write_waiting: Callable[[], bool] | None = None) -> int:
    """Move the backlog's first rows into the trigram index, INDEX_SLICE_BYTES of text at
    most (INDEX_CHUNK rows, at least one; only one when ``write_waiting()`` says a write,
    a delivery, is queued for the writer already). Returns how many.

    The rows move in three statements over the set (index, kept text, backlog), not four
    per row: each statement gives the GIL back and takes it again, which the event loop
    and the summarising threads, busy in a burst, make slow."""
    budget = 0 if write_waiting is not None and write_waiting() else INDEX_SLICE_BYTES
    last, total, dirty = None, 0, []
    rows = conn.execute(_SLICE_ROWS, (INDEX_CHUNK,))
    for message_id, size, nul in rows:      # a row at a time: the sizes read the text
        if last is not None and total + size > budget:
            break
        last, total = message_id, total + size
        if nul:
            dirty.append(message_id)
    rows.close()
    if last is None:
        return 0
    for message_id in dirty:                # NUL separates the kept fields: made a space
        row = conn.execute(f"SELECT {_COLUMNS} FROM fts_pending WHERE id=?", (message_id,)).fetchone()
        conn.execute(f"UPDATE fts_pending SET ({_COLUMNS}) = (?,?,?,?,?,?,?) WHERE id=?",
                     (*clean_fields(tuple(row)), message_id))
    conn.execute(_SLICE_INDEX, (last,))
    conn.execute(_SLICE_KEEP, (last,))
    return conn.execute("DELETE FROM fts_pending WHERE id <= ?", (last,)).rowcount


class IndexMethods:
    if TYPE_CHECKING:
        db: Database
        blobs: FileBlobStore
        _index_pending: int
        _last_indexed_write: float
        _foreign_commits: int
        _indexer: asyncio.Task[None] | None

        async def list_messages(self, mailbox_id: int, *, with_summary: bool = False) -> list[Message]: ...

    # -- the search index, filled in the background -----------------------------------
    def _index_later(self) -> None:
        self._index_pending += 1
        self._last_indexed_write = time.monotonic()

    def index_elsewhere(self) -> None:
        """This process (an SMTP worker) leaves the search index and the WAL checkpoints to
        the main process, which hears of its deliveries (:meth:`delivered_elsewhere`): one
        indexer instead of one per process, whose slices took the write lock from the other
        workers' deliveries, and the indexing CPU off the workers' event-loop threads."""
        if self._indexer is not None:
            self._indexer.cancel()
            self._indexer = None

    def delivered_elsewhere(self) -> None:
        """Another process sharing the database (an SMTP worker) delivered a message: index
        it here, and count its commit toward the next checkpoint."""
        self._foreign_commits += 1
        self._index_later()

    async def _index_loop(self) -> None:
        """Move pending search text into the trigram index an INDEX_SLICE_BYTES per transaction,
        whenever no delivery is waiting for the writer thread (or the backlog passes
        INDEX_BACKLOG), so a delivery waits at most one slice behind it and the index is
        current soon after a burst. A slice queued beside deliveries shares their commit.
        Searches do not wait for it: they flush first."""
        moved = 0
        checkpointed, last_checkpoint = self.db.commits + self._foreign_commits, time.monotonic()
        while True:
            # Slice after slice while there is work; deliveries queue for the lock between them.
            await asyncio.sleep(0 if moved else INDEX_POLL)
            moved = 0
            now = time.monotonic()
            commits = self.db.commits + self._foreign_commits
            if commits != checkpointed and now - last_checkpoint >= CHECKPOINT_EVERY:
                # The WAL copied into the database beside the writer, not by a delivery's commit.
                checkpointed, last_checkpoint = commits, now
                try:
                    await asyncio.to_thread(self.db.checkpoint)
                except sqlite3.Error as exc:
                    _log.warning("checkpoint failed: %s", exc)
            if not self._index_pending:
                continue
            quiet = time.monotonic() - self._last_indexed_write >= INDEX_QUIET and not self.db.writes_waiting()
            if quiet or self._index_pending >= INDEX_BACKLOG:
                try:
                    moved = await self.db.write(lambda c: _index_some(c, self.db.writes_waiting),
                                                durable=False)
                except sqlite3.Error as exc:          # busy or locked: try again later
                    _log.warning("search indexing failed: %s", exc)
                    continue
                self._index_pending = max(0, self._index_pending - moved) if moved else 0

    async def flush_index(self) -> None:
        """Index every pending message now (before a search)."""
        while await self.db.write(lambda c: _index_some(c, self.db.writes_waiting), durable=False):
            pass
        self._index_pending = 0

    async def reindex(self, batch: int = 200) -> int:
        """Recompute every message's summary, IMAP wire forms, header block and search text
        from its bytes (after an upgrade changed how they are computed); returns how many
        messages. Runs beside a serving process: a batch per transaction, rows that went
        meanwhile skipped."""
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
                    if p.header is not None:
                        conn.execute(_INSERT_HEADER, (message_id, p.header))
                    unindex(conn, (message_id,))
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
            if FIELD_SEPARATOR in needle:
                return set()                # (JMAP may send one) no field holds it
            at = SEARCH_COLUMNS.index(column) if column else 0
            if len(needle) >= 3:
                # Messages with every trigram of the needle in the column (trigram.py): exact
                # for three characters, else candidates checked against their kept text.
                # MATCH in a subquery: one index lookup, not one MATCH per message of the
                # mailbox (the join form ran ~100x slower on a 1,000-message mailbox).
                query, exact = trigram_query(needle, column)
                matched = "m.id IN (SELECT rowid FROM search_index WHERE search_index MATCH ?)"
                if exact:
                    return {r[0] for r in conn.execute(
                        f"SELECT uid FROM messages m WHERE mailbox_id=? AND {matched}", (mailbox_id, query))}
                found = matcher(needle)
                rows = conn.execute("SELECT m.uid, t.text FROM messages m JOIN search_text t ON t.id = m.id "
                                    f"WHERE m.mailbox_id=? AND {matched}", (mailbox_id, query))
            else:
                # One or two characters make no trigram: the mailbox's kept text is scanned,
                # matched as LIKE matches (ASCII letters either case), as the LIKE over the
                # index's copy did.
                found = like_matcher(needle)
                rows = conn.execute("SELECT m.uid, t.text FROM messages m JOIN search_text t ON t.id = m.id "
                                    "WHERE m.mailbox_id=?", (mailbox_id,))
            if column is None:              # any field: the joined text (NUL is in no needle)
                return {uid for uid, stored in rows if found(stored)}
            return {uid for uid, stored in rows if found(field_of(stored, at))}

        return await self.db.read(find)

"""SQLite store: the full-text search index (FTS5 trigram), filled in the background from
``fts_pending``, searched, and rebuilt by ``reindex``. Mixed into
:class:`mailhaven.store.sqlite.SQLiteStore`.

The index lives in a database of its own, ``DATA/search.db`` (searchdb.py: the file, the
hand-off from ``mailhaven.db``, the slices), so that indexing never holds the write lock
deliveries take. The index (``search_index``) is contentless (``content=''``) and records
which trigrams each column holds, not where (``detail=column``, see trigram.py). The text
it took is kept once, in ``search_text``: to check the index's candidates, to take a
message out again (FTS5 before 3.43 deletes from a contentless table only given the values
it indexed), for COPY, for needles too short for trigrams, and for ``migrate-to-postgres``."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import TYPE_CHECKING

from .api import Message, NotFound, StorageFull
from .db import Database, WriteContext
from .searchdb import (  # noqa: F401 - their home was here; other modules import them from here
    ALIAS,
    FIELD_SEPARATOR,
    SEARCH_COLUMNS,
    SearchDatabase,
    Slice,
    clean_fields,
    forget_indexed,
    text_of,
    unindex,
    unpack_text,
)
from .sqliterefill import unlist_refill
from .sqliterows import (
    _INSERT_DATA,
    _INSERT_HEADER,
    _INSERT_PENDING,
    _prepare,
    _prepare_file,
    _Prepared,
    from_stored,
)
from .trigram import like_matcher, matcher, trigram_query

if TYPE_CHECKING:
    from .blobs import FileBlobStore

_log = logging.getLogger("mailhaven.store")

# Search fields -> FTS columns (None: every column).
_FTS_FIELDS: dict[str, str | None] = {
    "subject": "subject", "from": "sender", "to": "recipients", "cc": "cc", "bcc": "bcc",
    "body": "body", "header": "headers", "text": None,
}

INDEX_QUIET = 0.0
"""Seconds without a new message before pending search text is indexed. 0: right away,
beside deliveries; it was 1 s, which left a burst's whole indexing for after it, every
message searchable late."""
INDEX_POLL = 0.02
"""Seconds between looks at the backlog while nothing was indexed."""
INDEX_GATHER = 0.1
"""Seconds the indexer lets new text gather after a slice smaller than INDEX_CHUNK. A slice
is one FTS5 transaction (a segment written and merged) and one fsync of search.db, whatever
its size: slicing every INDEX_POLL during a stream of 4 KB deliveries made slices of a few
messages and cost about 0.4 ms of CPU a message (issue 18; bench/smtp_inbound.py, 10 x 2,000 x
4 KB: 2.27-2.46 ms a message against 1.74-2.23 with 0.1 s here, 1.90-2.13 before the index had
its own database). Searches never wait for it: they index what is pending first."""
INDEX_BACKLOG = 20_000
"""Pending messages beyond which indexing goes on however busy delivery is."""
INDEX_CHUNK = 200
"""Most messages indexed per slice (one transaction of search.db)."""
INDEX_LOOK_EVERY = 5.0
"""Seconds between looks at mailhaven.db's backlog while this process knows of none."""
CHECKPOINT_EVERY = 0.25
"""Seconds between checkpoints of the WAL (:meth:`Database.checkpoint`) while writes go on."""
INDEX_SLICE_BYTES = 256 * 1024
"""Bytes of search text indexed per slice, at most (and at least one message). A slice holds
search.db's write lock, not mailhaven.db's: no delivery waits for it. Larger slices cost
less CPU a message (each FTS5 transaction writes a segment and merges), smaller ones let a
search's flush and the WAL's fsync come sooner."""


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


def _backlog(conn: sqlite3.Connection) -> int:
    """Pending messages and listed drops, in mailhaven.db."""
    return int(conn.execute("SELECT (SELECT count(*) FROM fts_pending) + (SELECT count(*) FROM search_drops)")
               .fetchone()[0])


_UNDROPPED = "m.id NOT IN (SELECT id FROM search_drops)"
"""A message whose id waits to be taken out of the index: what the index holds for it may
be another (expunged) message's text (searchdb.py)."""


class IndexMethods:
    if TYPE_CHECKING:
        db: Database
        blobs: FileBlobStore
        _index_pending: int
        _last_indexed_write: float
        _foreign_commits: int
        _indexer: asyncio.Task[None] | None
        search: SearchDatabase
        _slicing: asyncio.Lock
        _refill_wanted: bool

        async def _refill_mailbox(self, mailbox_id: int) -> None: ...

        async def list_messages(self, mailbox_id: int, *, with_summary: bool = False) -> list[Message]: ...

    # -- the search index, filled in the background -----------------------------------
    def _index_later(self, count: int = 1) -> None:
        self._index_pending += count
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

    def _kept_text(self, conn: sqlite3.Connection, message_id: int) -> tuple[str, ...] | None:
        """A message's search fields, pending or indexed (:func:`searchdb.text_of`), in a
        write transaction on ``mailhaven.db`` (a copy gives them to the new message)."""
        return text_of(conn, self.search, message_id)

    async def _index_slice(self) -> int:
        """One slice into search.db (on a thread: no write lock of mailhaven.db is held for
        it), then what it took deleted from mailhaven.db in a short transaction beside
        deliveries (lost in a crash, the slice is applied again). Returns how much it did (0: the
        backlog is empty). One slice at a time in this process, so a search's flush does
        not index again what the background indexer has taken but not yet cleared."""
        async with self._slicing:
            done: Slice = await asyncio.to_thread(self.search.index_some, INDEX_SLICE_BYTES, INDEX_CHUNK)
            if done.done:
                # A few rows: committed on the loop with the deliveries of its pass (db.py), so
                # it holds the connection for its own statements, not for the GIL hand-offs a
                # job on the writer thread waits for while the loop is busy.
                def forget_slice(ctx: WriteContext) -> int:
                    return forget_indexed(ctx.conn, done)

                await self.db.write_ctx(forget_slice, on_loop=True)
            return done.done

    async def _index_loop(self) -> None:
        """Move pending search text into the trigram index, INDEX_SLICE_BYTES per slice, soon
        after it arrives (INDEX_QUIET), so the index is current soon after a burst. Searches
        do not wait for it: they flush first. Also checkpoints mailhaven.db's WAL."""
        moved = 0
        checkpointed, last_checkpoint = self.db.commits + self._foreign_commits, time.monotonic()
        last_look = last_checkpoint
        while True:
            # Another slice at once only while a full slice's worth waits; after a smaller one,
            # let deliveries gather for INDEX_GATHER (each slice is an FTS5 segment and an fsync).
            await asyncio.sleep(0 if self._index_pending >= INDEX_CHUNK else INDEX_GATHER if moved else INDEX_POLL)
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
                if now - last_look < INDEX_LOOK_EVERY:
                    continue
                # Drops (expunges) and text other processes left (a CLI reindex) tell no one.
                last_look = now
                self._index_pending = await self.db.read(_backlog)
                if not self._index_pending:
                    continue
            if time.monotonic() - self._last_indexed_write >= INDEX_QUIET or self._index_pending >= INDEX_BACKLOG:
                try:
                    moved = await self._index_slice()
                except (sqlite3.Error, StorageFull) as exc:   # busy, locked or a full disk: later
                    _log.warning("search indexing failed: %s", exc)
                    continue
                self._index_pending = max(0, self._index_pending - moved) if moved else 0

    async def flush_index(self) -> None:
        """Index every pending message, and apply every listed drop, now (before a search)."""
        while await self._index_slice():
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
                # Every message's text is pending: a refill of a lost index (sqliterefill.py)
                # has nothing left to do.
                await self.db.write(unlist_refill)
                self._refill_wanted = False
                return done
            last = rows[-1][0]

            def work(rows: list[sqlite3.Row] = rows) -> list[tuple[int, _Prepared]]:
                out = []
                for row in rows:
                    try:
                        out.append((row[0], from_stored(self.blobs, row[1], _prepare, _prepare_file)))
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

        if self._refill_wanted:           # the index was lost: this mailbox's messages first
            await self._refill_mailbox(mailbox_id)
        if self._index_pending or await self.db.read(lambda c: c.execute(
                "SELECT EXISTS (SELECT 1 FROM fts_pending) OR EXISTS (SELECT 1 FROM search_drops)").fetchone()[0]):
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
                matched = (f"m.id IN (SELECT rowid FROM {ALIAS}.search_index WHERE search_index MATCH ?) "
                           f"AND {_UNDROPPED}")
                if exact:
                    return {r[0] for r in conn.execute(
                        f"SELECT uid FROM messages m WHERE mailbox_id=? AND {matched}", (mailbox_id, query))}
                found = matcher(needle)
                rows = conn.execute(f"SELECT m.uid, t.text FROM messages m JOIN {ALIAS}.search_text t ON t.id = m.id "
                                    f"WHERE m.mailbox_id=? AND {matched}", (mailbox_id, query))
            else:
                # One or two characters make no trigram: the mailbox's kept text is scanned,
                # matched as LIKE matches (ASCII letters either case), as the LIKE over the
                # index's copy did.
                found = like_matcher(needle)
                rows = conn.execute(f"SELECT m.uid, t.text FROM messages m JOIN {ALIAS}.search_text t "
                                    f"ON t.id = m.id WHERE m.mailbox_id=? AND {_UNDROPPED}", (mailbox_id,))
            if column is None:              # any field: the joined text (NUL is in no needle)
                return {uid for uid, stored in rows if found(stored)}
            return {uid for uid, stored in rows if found(field_of(stored, at))}

        return await self.db.read(find)

"""SQLite store: the search index refilled from the messages' bytes when ``DATA/search.db``
was lost (or did not match). Mixed into :class:`mailhaven.store.sqlite.SQLiteStore`.

search.db is derived data (searchdb.py). Opened without it while messages are stored (a
backup restored without it, the file deleted or lost), the store makes it anew, empty, and
the messages whose text it held are neither pending nor indexed: no search finds them. The
same follows when opening finds a search.db that is not this mailhaven.db's (searchdb.py's
pairing: restored from another backup, or copied from elsewhere) and empties it. So,
before it makes search.db anew or empties it, opening lists a refill in mailhaven.db (the
one row of ``search_refill``); the refill puts each such message's search text, extracted
again from its bytes as a delivery extracts it, into ``fts_pending``, a batch at a time,
and the indexer takes it from there as from a delivery. The row goes once nothing is left.

What is left is derived each time, never counted or kept as a cursor: a message is left
while its text is neither pending nor in ``search_text``, or a drop of its id is listed
(what the index holds under it may be an expunged message's). A batch is one short write
transaction that pends text only for a message still there with the same bytes (``id``
and ``blob_id``: an id may be given again) and whose text is not pending already
(``INSERT OR IGNORE``). Pending text is never changed, so the hand-off's invariant holds
(searchdb.py); a SIGKILL at any moment loses at most a batch's work, never a message, and
indexes none twice (a slice replaces whatever the index holds under its ids).

During a refill: a delivery pends its own text; an expunge takes the message's row, so a
batch after it skips the message, and takes its pending text with a drop listed, as for
any message; a copy of a message not refilled yet pends nothing (searchdb.text_of) and is
left like it, found by the next pass. A search refills the messages left in its mailbox
first, in any process, so it answers as if the index were whole; with more than
:data:`SEARCH_REFILL_MAX` left there it answers from what is indexed so far, and says so
in the log (once a mailbox).

Who refills: ``mailhaven serve`` (app.py calls :meth:`refill_in_background` after opening
the store), without holding anything up: the text is computed on a thread a batch at a
time, with a pause after each batch as long as the batch took (at most about half a core,
and the event loop keeps its turns), and each batch's rows go in one short transaction of
the delivery path's writer. One-shot commands and SMTP workers that open the store do not
start it (the row stays for ``serve``); their searches refill their own mailbox as above,
a whole batch or none.

``mailhaven store reindex`` beside a refill: both pend text, reindex replacing it (with a
drop listed), the refill never replacing it; each message ends up indexed once, with its
text. A reindex that went through every message deletes the row.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from .api import NotFound, StorageFull
from .db import Database, WriteContext
from .searchdb import ALIAS, SEARCH_COLUMNS
from .sqliterows import _search_fields_of, _search_fields_of_file, from_stored

if TYPE_CHECKING:
    from .blobs import FileBlobStore

_log = logging.getLogger("mailhaven.store")

T = TypeVar("T")

REFILL_BATCH = 20
"""Most messages a refill batch takes (one thread job, one write transaction): about 35 ms
of extraction for the corpus mix. The extraction holds the GIL, so deliveries on the event
loop wait for it in 5 ms turns while a batch runs; short batches spread that out (bench/
search_refill.py, 1,000 corpus messages: deliveries' p95 20 ms at 20 a batch, 34 ms at 100,
8-15 ms with no refill; medians within the machine's noise)."""
REFILL_BATCH_BYTES = 4 * 1024 * 1024
"""Message bytes a batch reads, at most (and at least one message)."""
REFILL_PAUSE = 1.0
"""Pause after a batch, as a share of the time the batch took: 1.0, the refill takes at
most about half of one core, and deliveries and sessions get the GIL between batches."""
REFILL_RETRY = 5.0
"""Seconds before a batch that failed (a locked database, a full disk) is tried again."""
SEARCH_REFILL_MAX = 2_000
"""A search refills the messages left in its mailbox first when they are at most this many
(a few seconds' work); with more it answers from what is indexed so far."""

_LEFT = ("NOT EXISTS (SELECT 1 FROM fts_pending p WHERE p.id = m.id) "
         f"AND (NOT EXISTS (SELECT 1 FROM {ALIAS}.search_text t WHERE t.id = m.id) "
         "OR EXISTS (SELECT 1 FROM search_drops d WHERE d.id = m.id))")
"""A message whose text is neither pending nor indexed (on a reader: search.db attached)."""
_PEND = (f"INSERT OR IGNORE INTO fts_pending (id, {', '.join(SEARCH_COLUMNS)}) SELECT ?,?,?,?,?,?,?,? "
         "WHERE EXISTS (SELECT 1 FROM messages WHERE id=? AND blob_id=?)")
"""A message's text pended, unless the message went (or its id names other bytes now) or
its text is pending already."""


def mark_refill(conn: sqlite3.Connection) -> bool:
    """On ``mailhaven.db``, before search.db is made anew: a refill listed if a message's
    text is not pending (its text was in the lost index). Returns whether one is listed."""
    if conn.execute("SELECT EXISTS (SELECT 1 FROM messages m WHERE NOT EXISTS "
                    "(SELECT 1 FROM fts_pending p WHERE p.id = m.id))").fetchone()[0]:
        conn.execute("INSERT INTO search_refill (since) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM search_refill)",
                     (time.time(),))
    return refill_listed(conn)


def refill_listed(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM search_refill").fetchone() is not None


def unlist_refill(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM search_refill")


def _count_left(mailbox_id: int | None) -> Callable[[sqlite3.Connection], int]:
    def count(conn: sqlite3.Connection) -> int:
        if mailbox_id is None:
            return int(conn.execute(f"SELECT count(*) FROM messages m WHERE {_LEFT}").fetchone()[0])
        return int(conn.execute(f"SELECT count(*) FROM messages m WHERE m.mailbox_id=? AND {_LEFT}",
                                (mailbox_id,)).fetchone()[0])
    return count


def _rows_left(after: int, mailbox_id: int | None, skip: frozenset[int]
               ) -> Callable[[sqlite3.Connection], list[tuple[int, str, int]]]:
    """The next batch's messages left (id, blob_id, size), in id order after ``after``; none
    of ``skip`` (their bytes are missing)."""
    def rows(conn: sqlite3.Connection) -> list[tuple[int, str, int]]:
        where = "m.id > ?" if mailbox_id is None else "m.mailbox_id = ? AND m.id > ?"
        args = (after,) if mailbox_id is None else (mailbox_id, after)
        out: list[tuple[int, str, int]] = []
        total = 0
        cur = conn.execute(f"SELECT m.id, m.blob_id, m.size FROM messages m WHERE {where} AND {_LEFT} "
                           "ORDER BY m.id", args)
        try:
            for message_id, blob_id, size in cur:
                if message_id in skip:
                    continue
                if out and (len(out) >= REFILL_BATCH or total + size > REFILL_BATCH_BYTES):
                    break
                out.append((message_id, blob_id, size))
                total += size
        finally:
            cur.close()
        return out
    return rows


async def _in_thread(fn: Callable[[], T]) -> T:
    """``fn`` on a thread; cancelled, the caller waits for the thread to end all the same
    (the store must not close under it)."""
    job = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise


class RefillMethods:
    if TYPE_CHECKING:
        db: Database
        blobs: FileBlobStore
        _refill_wanted: bool
        _refiller: asyncio.Task[int] | None
        _refilling: asyncio.Lock
        _refill_warned: set[int]

        def _index_later(self, count: int = 1) -> None: ...

    def refill_in_background(self) -> None:
        """Start refilling a lost search index (see the module's docstring), if one is
        listed; for ``mailhaven serve`` (app.py), right after :meth:`open`."""
        if self._refill_wanted and self._refiller is None:
            self._refiller = asyncio.create_task(self.refill_search_index())

    async def _stop_refill(self) -> None:
        """Cancel a refill under way (at close); its batch in progress ends first or is lost whole."""
        if self._refiller is not None:
            self._refiller.cancel()
            try:
                await self._refiller
            except BaseException:  # noqa: BLE001,S110 - cancelled or failed, it is over
                pass
            self._refiller = None

    async def refill_search_index(self) -> int:
        """Pend the text of every message left (neither pending nor indexed), if a refill is
        listed; then unlist it. Returns how many messages' text it pended."""
        if not await self.db.read(refill_listed):
            self._refill_wanted = False
            return 0
        left = await self.db.read(_count_left(None))
        _log.warning("refilling the search index (search.db was made anew or emptied) from the bytes of %d message(s), "
                     "in the background; until it ends, a search refills its own mailbox first", left)
        started = time.monotonic()
        pended = 0
        missing: set[int] = set()
        while True:
            # Passes until one finds nothing left: a copy of a message not refilled yet, made
            # behind this pass's cursor, is left too.
            after, found = 0, 0
            while True:
                try:
                    batch = await self._refill_batch(after, None, missing)
                except (sqlite3.Error, StorageFull) as exc:
                    _log.warning("search index refill: a batch failed, tried again in %.0f s: %s", REFILL_RETRY, exc)
                    await asyncio.sleep(REFILL_RETRY)
                    continue
                if batch is None:
                    break
                after, n, seen, took = batch
                pended += n
                found += seen
                await asyncio.sleep(took * REFILL_PAUSE)
            if not found:
                break
        await self.db.write(unlist_refill)
        self._refill_wanted = False
        _log.info("search index refilled: %d message(s) pended for indexing in %.1f s%s", pended,
                     time.monotonic() - started,
                     f"; {len(missing)} skipped, their bytes are missing (`mailhaven store check`)" if missing else "")
        return pended

    async def _refill_mailbox(self, mailbox_id: int) -> None:
        """Before a search in ``mailbox_id`` while a refill is listed: the messages left there
        pended first (at most :data:`SEARCH_REFILL_MAX`), so the search finds them."""
        left = await self.db.read(_count_left(mailbox_id))
        if not left:
            return
        if left > SEARCH_REFILL_MAX:
            if mailbox_id in self._refill_warned:
                return
            self._refill_warned.add(mailbox_id)         # once a mailbox, not once a search
            _log.warning("search in mailbox %d answered from the part of the index refilled so far: "
                         "%d of its messages are still to be refilled", mailbox_id, left)
            return
        after = 0
        missing: set[int] = set()
        while (batch := await self._refill_batch(after, mailbox_id, missing)) is not None:
            after = batch[0]

    async def _refill_batch(self, after: int, mailbox_id: int | None, missing: set[int]
                            ) -> tuple[int, int, int, float] | None:
        """One batch of the messages left after id ``after`` (in ``mailbox_id``; None: all):
        their text extracted on a thread, then pended in one transaction. None: nothing
        left; else (the last id looked at, messages pended, messages looked at, seconds the
        extraction took). ``missing`` gains the messages whose bytes are missing."""
        async with self._refilling:      # a search's batches and the background's take turns
            rows = await self.db.read(_rows_left(after, mailbox_id, frozenset(missing)))
            if not rows:
                return None
            started = time.monotonic()
            texts, lost = await _in_thread(lambda: self._extract(rows))
            took = time.monotonic() - started
            missing.update(lost)

            def pend(ctx: WriteContext) -> int:
                n = 0
                for message_id, blob_id, fields in texts:
                    n += ctx.conn.execute(_PEND, (message_id, *fields, message_id, blob_id)).rowcount
                if n:
                    ctx.after_commit(lambda: self._index_later(n))
                return n

            n = await self.db.write_ctx(pend) if texts else 0
            return rows[-1][0], n, len(rows), took

    def _extract(self, rows: list[tuple[int, str, int]]) -> tuple[list[tuple[int, str, tuple[str, ...]]], list[int]]:
        """On a thread: the search text of each message, from its bytes, as a delivery
        computes it (a large one from its file, in bounded memory); and the ids whose bytes
        are missing."""
        out: list[tuple[int, str, tuple[str, ...]]] = []
        lost: list[int] = []
        for message_id, blob_id, _size in rows:
            try:
                fields = from_stored(self.blobs, blob_id, _search_fields_of, _search_fields_of_file)
            except (OSError, NotFound):
                lost.append(message_id)
                continue
            out.append((message_id, blob_id, fields))
        return out, lost

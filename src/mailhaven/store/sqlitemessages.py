"""SQLite store: messages (deliver, append, fetch, flags, expunge, copy, move, changes).
Mixed into :class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import asyncio
import bisect
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from typing import TYPE_CHECKING, Any

from ..message.summary import LARGE_MESSAGE, message_ids
from .api import (
    BlobRef,
    DeliveryResult,
    FlagMode,
    InvalidName,
    MailboxChanges,
    Message,
    MessageColumns,
    NotFound,
    QuotaExceeded,
)
from .blobs import INLINE_JOIN
from .db import Database, WriteContext
from .headerblock import unpack
from .names import normalize_mailbox_name
from .sqliteindex import unindex
from .sqliterows import (
    _INSERT_DATA,
    _INSERT_HEADER,
    _INSERT_PENDING,
    _SUMMARY_COLUMNS,
    PLAIN_ON_LOOP_MAX,
    SUMMARY_ON_LOOP_MAX,
    _flags_text,
    _message,
    _message_rows,
    _prepare,
    _prepare_file,
    _Prepared,
    _select,
    _uid_row_iter,
    _uid_rows,
    decode_summary,
    plain_text_message,
)

if TYPE_CHECKING:
    from .blobs import FileBlobStore

LOOP_READ_BYTES = 256 * 1024
"""Inline message bytes :meth:`MessageMethods.get_raw` reads on the event loop before it
leaves the rest to a reader thread. POP3's read-ahead batch read on a thread beside the
loop made the two take turns at the GIL, three futex calls a message; read on the loop, a
RETR cost 86 -> 63 us of server CPU (issue 18). IMAP's 1 MB BODY[] chunks: no change."""

SMALL_READ = 4
"""Messages (rows and inline bytes, at most INLINE_MAX each) read right on the event loop
instead of on a reader thread: the one-message FETCH a client sends for each new message
waited for a thread hop longer than the read takes (issue 18: 0.42-1.43x Dovecot)."""


_RAW_SELECT = f"SELECT m.uid, m.blob_id, b.data FROM messages m {INLINE_JOIN}"
_RAW_ONE = f"{_RAW_SELECT} WHERE m.mailbox_id=? AND m.uid=?"
_HEADER_SELECT = "SELECT m.uid, h.header FROM messages m JOIN message_headers h ON h.id = m.id"
_HEADER_ONE = f"{_HEADER_SELECT} WHERE m.mailbox_id=? AND m.uid=?"


_CHARGE = ("UPDATE accounts SET modseq = modseq + 1, used = used + ? "
           "WHERE id=? AND (? OR quota IS NULL OR used + ? <= quota) RETURNING modseq")
"""A delivery's quota check, modseq and space used in one statement (they were three, with
the SELECT of the row written, of a delivery's dozen: issue 18); no row when the account
is missing or the message would take it over its quota."""

_NEXT_UID = "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = ? WHERE id=? RETURNING uidnext - 1"
_DELIVERY_UID = ("UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = ? WHERE id = ifnull("
                 "(SELECT id FROM mailboxes WHERE account_id=? AND name=?), "
                 "(SELECT id FROM mailboxes WHERE account_id=? AND name='INBOX')) RETURNING id, uidnext - 1")
"""A delivery's mailbox (the one named, else INBOX) and its UID in one statement (they
were two of a delivery's ten: issue 18)."""
_INSERT_MESSAGE = (
    "INSERT INTO messages (id, mailbox_id, account_id, uid, blob_id, size, internal_date, flags, modseq, "
    "thread_id, message_id) SELECT n, ?, ?, ?, ?, ?, ?, ?, ?, ifnull(?, ifnull(n, 0)), ? "
    "FROM (SELECT CASE WHEN top < 9223372036854775807 THEN top + 1 END AS n FROM (SELECT ifnull(max(id), 0) AS top FROM messages)) "
    f"RETURNING {_SUMMARY_COLUMNS}")
"""A message's row, with the id SQLite would choose for it (an INTEGER PRIMARY KEY without
AUTOINCREMENT takes the largest plus one) named, so that a message starting a thread names
its own id as the thread's in the same statement, not in an UPDATE of the row just written
(issue 18). At the largest id SQLite chooses one itself (NULL here): thread 0, then set."""


class MessageMethods:
    if TYPE_CHECKING:
        db: Database
        blobs: FileBlobStore

        def _index_later(self) -> None: ...

        def _kept_text(self, conn: sqlite3.Connection, message_id: int) -> tuple[str, ...] | None: ...

        @staticmethod
        def _bump_modseq(conn: sqlite3.Connection, account_id: int) -> int: ...

        def _publish(self, ctx: WriteContext, account_id: int, mailbox_id: int | None, kind: str,
                     modseq: int) -> None: ...

        async def flush_index(self) -> None: ...

    # -- messages -----------------------------------------------------------
    @staticmethod
    def _thread_id(conn: sqlite3.Connection, account_id: int, summary: dict[str, Any]) -> int | None:
        refs = message_ids(summary.get("references", "")) + message_ids(summary.get("in_reply_to", ""))
        if refs:
            marks = ",".join("?" * len(refs))
            row = conn.execute(
                f"SELECT thread_id FROM messages WHERE account_id=? AND message_id IN ({marks}) LIMIT 1",
                (account_id, *refs),
            ).fetchone()
            if row is not None:
                return int(row[0])
        own = summary.get("message_id", "")
        if own:
            # A reply that arrived before its parent: adopt the child's thread (indexed).
            row = conn.execute("SELECT thread_id FROM message_refs WHERE account_id=? AND ref=? LIMIT 1",
                               (account_id, own)).fetchone()
            if row is not None:
                return int(row[0])
        return None

    def _insert_message(self, ctx: WriteContext, account_id: int, mailbox_id: int, blob: BlobRef,
                        flags: str, internal_date: float, prepared: _Prepared, modseq: int,
                        *, charged: bool = False, uid: int | None = None) -> sqlite3.Row:
        """The message's rows; ``charged``: the account's ``used`` already counts it
        (:data:`_CHARGE`); ``uid``: taken from the mailbox already (:data:`_DELIVERY_UID`).
        Its ``messages`` row comes back from the statement that wrote it (RETURNING), not
        from a SELECT after."""
        summary, fts, wire = prepared.summary, prepared.fts, prepared.wire
        conn = ctx.conn
        if uid is None:
            uid = conn.execute(_NEXT_UID, (modseq, mailbox_id)).fetchone()[0]
        thread_id = self._thread_id(conn, account_id, summary)
        message_id = summary.get("message_id", "")
        row = conn.execute(
            _INSERT_MESSAGE,
            (mailbox_id, account_id, uid, blob.id, blob.size, internal_date, flags, modseq, thread_id, message_id),
        ).fetchone()
        new_id = row["id"]
        conn.execute(_INSERT_DATA, (new_id, prepared.stored_summary, *(wire or (None, None))))
        if prepared.header is not None:
            conn.execute(_INSERT_HEADER, (new_id, prepared.header))
        if thread_id is None:
            thread_id = new_id
            if row["thread_id"] != new_id:      # the id SQLite chose itself (see _INSERT_MESSAGE)
                row = conn.execute(f"UPDATE messages SET thread_id=id WHERE id=? RETURNING {_SUMMARY_COLUMNS}",
                                   (new_id,)).fetchone()
        refs = message_ids(summary.get("references", "")) + message_ids(summary.get("in_reply_to", ""))
        if refs:
            conn.executemany("INSERT INTO message_refs VALUES (?,?,?)",
                             [(account_id, r, thread_id) for r in dict.fromkeys(refs)])
        if fts is not None:
            # Indexed later, in batches (see _index_loop): the trigram index was a third of
            # the CPU of every inbound message.
            conn.execute(_INSERT_PENDING, (new_id, *fts))
            ctx.after_commit(self._index_later)
        if not charged:
            conn.execute("UPDATE accounts SET used = used + ? WHERE id=?", (blob.size, account_id))
        return row  # type: ignore[no-any-return]

    async def _summary_for(self, blob: BlobRef, summary: dict[str, Any] | None) -> _Prepared:
        def work(raw: bytes) -> _Prepared:
            return _prepare(raw, summary)

        if blob.size <= PLAIN_ON_LOOP_MAX:
            raw = self.blobs.recent(blob.id)
            if raw is not None and (blob.size <= SUMMARY_ON_LOOP_MAX or plain_text_message(raw)):
                return work(raw)
        path = self.blobs.file_path(blob.id) if summary is None and blob.size > LARGE_MESSAGE else None
        if path is not None:
            return await asyncio.to_thread(_prepare_file, path)
        return await asyncio.to_thread(lambda: work(self.blobs.read_sync(blob.id)))

    async def deliver(self, blob: BlobRef, account_ids: Iterable[int], *, mailbox: str = "INBOX",
                      flags: Iterable[str] = (), internal_date: float | None = None,
                      summary: dict[str, Any] | None = None, ignore_quota: bool = False) -> list[DeliveryResult]:
        ids = list(dict.fromkeys(account_ids))
        prepared = await self._summary_for(blob, summary)
        flag_text = _flags_text(flags)
        when = internal_date if internal_date is not None else time.time()
        mailbox = normalize_mailbox_name(mailbox)

        def deliver(ctx: WriteContext) -> list[tuple[int, sqlite3.Row | None]]:
            conn = ctx.conn
            out: list[tuple[int, sqlite3.Row | None]] = []
            for account_id in ids:
                charged = conn.execute(_CHARGE, (blob.size, account_id, ignore_quota, blob.size)).fetchone()
                if charged is None:
                    if conn.execute("SELECT 1 FROM accounts WHERE id=?", (account_id,)).fetchone() is None:
                        raise NotFound(f"no account {account_id}")
                    out.append((account_id, None))              # over quota: nothing changed
                    continue
                modseq = int(charged[0])
                box = conn.execute(_DELIVERY_UID, (modseq, account_id, mailbox, account_id)).fetchone()
                if box is None:
                    raise NotFound(f"account {account_id} has no INBOX")
                row = self._insert_message(ctx, account_id, box[0], blob, flag_text, when, prepared, modseq,
                                           charged=True, uid=box[1])
                self._publish(ctx, account_id, box[0], "exists", modseq)
                out.append((account_id, row))
            return out

        rows = await self.db.write_ctx(deliver, on_loop=True)    # a few rows: db.py
        # The summary computed here, not decoded back (issue 18: 2% of an inbound message's
        # CPU); the other accounts' Messages (and a caller's summary) get their own copies.
        computed = summary is None
        return [
            DeliveryResult(account_id=a, message=_message(r, True, summary=prepared.summary if i == 0 and computed
                                                          else decode_summary(prepared.stored_summary))
                           if r is not None else None, over_quota=r is None)
            for i, (a, r) in enumerate(rows)
        ]

    async def append(self, mailbox_id: int, blob: BlobRef, *, flags: Iterable[str] = (),
                     internal_date: float | None = None, summary: dict[str, Any] | None = None) -> Message:
        prepared = await self._summary_for(blob, summary)
        flag_text = _flags_text(flags)
        when = internal_date if internal_date is not None else time.time()

        def append(ctx: WriteContext) -> sqlite3.Row:
            conn = ctx.conn
            box = conn.execute("SELECT account_id FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
            if box is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            account_id = box[0]
            acct = conn.execute("SELECT quota, used FROM accounts WHERE id=?", (account_id,)).fetchone()
            if acct["quota"] is not None and acct["used"] + blob.size > acct["quota"]:
                raise QuotaExceeded("over quota")
            modseq = self._bump_modseq(conn, account_id)
            row = self._insert_message(ctx, account_id, mailbox_id, blob, flag_text, when, prepared, modseq)
            self._publish(ctx, account_id, mailbox_id, "exists", modseq)
            return row

        return _message(await self.db.write_ctx(append, on_loop=True), True,
                        summary=prepared.summary if summary is None else decode_summary(prepared.stored_summary))

    async def list_messages(self, mailbox_id: int, *, with_summary: bool = False) -> list[Message]:
        rows = await self.db.read(lambda c: c.execute(
            f"{_select(with_summary)} WHERE m.mailbox_id=? ORDER BY m.uid",
            (mailbox_id,)).fetchall())
        return [_message(r, with_summary) for r in rows]

    async def get_messages(self, mailbox_id: int, uids: Iterable[int], *,
                           with_summary: bool = True, imap_wire: bool = False) -> list[Message]:
        wanted = sorted(set(uids))
        rows = await self.db.read(lambda conn: _message_rows(conn, mailbox_id, wanted, with_summary, imap_wire))
        return [_message(r, with_summary, imap_wire) for r in rows]

    async def get_messages_raw(self, mailbox_id: int, uids: Iterable[int], *,
                               with_summary: bool = True, imap_wire: bool = False) -> list[tuple[Message, bytes]]:
        wanted = sorted(set(uids))

        def find(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[bytes]]:
            rows = _message_rows(conn, mailbox_id, wanted, with_summary, imap_wire)
            return rows, self.blobs.read_many_in(conn, [r["blob_id"] for r in rows])

        def find_inline(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[bytes]] | None:
            rows = _message_rows(conn, mailbox_id, wanted, with_summary, imap_wire)
            data = self.blobs.read_inline_in(conn, [r["blob_id"] for r in rows])
            return None if data is None else (rows, data)

        found = self.db.read_sync(find_inline) if len(wanted) <= SMALL_READ else None
        rows, data = found if found is not None else await self.db.read(find)
        return [(_message(r, with_summary, imap_wire), d) for r, d in zip(rows, data, strict=True)]

    async def get_wire_forms(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes | None, bytes | None]]:
        wanted = sorted(set(uids))
        return await self.db.read(lambda conn: _uid_rows(
            conn, "SELECT m.uid, d.imap_envelope, d.imap_body FROM messages m "
                  "LEFT JOIN message_data d ON d.id = m.id", mailbox_id, wanted))

    async def get_raw(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes]]:
        wanted = sorted(set(uids))
        if len(wanted) == 1:    # the one-message FETCH of header fields: one statement
            found = self.blobs.complete_rows(self.db.query_sync(_RAW_ONE, (mailbox_id, wanted[0])), files=False)
            if found is not None:
                return found
        found, rest = self.db.read_sync(lambda conn: self._raw_on_loop(conn, mailbox_id, wanted))
        if rest:
            found += await self.db.read(lambda conn: self.blobs.complete_rows(
                _uid_rows(conn, _RAW_SELECT, mailbox_id, rest), files=True) or [])
        return found

    async def get_headers(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes]]:
        wanted = sorted(set(uids))
        if len(wanted) == 1:
            return self.get_header_now(mailbox_id, wanted[0])
        rows = await self.db.read(lambda conn: _uid_rows(conn, _HEADER_SELECT, mailbox_id, wanted))
        return [(uid, unpack(stored)) for uid, stored in rows]

    def get_header_now(self, mailbox_id: int, uid: int) -> list[tuple[int, bytes]]:
        # The one-message header FETCH: one statement on the loop's reader connection (no
        # thread hop, no BEGIN/COMMIT); the (mailbox_id, uid) index gives the id, which is
        # the header row's key.
        return [(u, unpack(stored)) for u, stored in self.db.query_sync(_HEADER_ONE, (mailbox_id, uid))]

    def _raw_on_loop(self, conn: sqlite3.Connection, mailbox_id: int,
                     wanted: list[int]) -> tuple[list[tuple[int, bytes]], list[int]]:
        """:meth:`get_raw`'s rows read on the event loop, in UID order, while their bytes are
        inline (or in memory) and up to :data:`LOOP_READ_BYTES`; and the UIDs left for a
        reader thread (from the first row whose bytes are in a file, or past the cap)."""
        out: list[tuple[int, bytes]] = []
        total = 0
        rest_from = len(wanted)
        with closing(_uid_row_iter(conn, _RAW_SELECT, mailbox_id, wanted)) as rows:
            for uid, blob_id, data in rows:
                if data is None and (data := self.blobs.recent(blob_id)) is None:
                    rest_from = bisect.bisect_left(wanted, uid)
                    break
                out.append((uid, data))
                total += len(data)
                if total >= LOOP_READ_BYTES:
                    rest_from = bisect.bisect_right(wanted, uid)
                    break
        return out, wanted[rest_from:]

    async def get_messages_by_id(self, ids: Iterable[int], *, with_summary: bool = True) -> list[Message]:
        wanted = list(dict.fromkeys(ids))

        def find(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            out: list[sqlite3.Row] = []
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                out += conn.execute(f"{_select(with_summary)} WHERE m.id IN "
                                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
            return out

        by_id = {r["id"]: r for r in await self.db.read(find)}
        return [_message(by_id[i], with_summary) for i in wanted if i in by_id]

    async def set_flags(self, mailbox_id: int, uids: Iterable[int], flags: Iterable[str], mode: FlagMode,
                        *, unchanged_since: int | None = None) -> tuple[list[Message], list[int]]:
        wanted = sorted(set(uids))
        new_flags = set(flags)

        def result_of(current: str) -> str:
            flags = set(current.split())
            if mode is FlagMode.ADD:
                flags |= new_flags
            elif mode is FlagMode.REMOVE:
                flags -= new_flags
            else:
                flags = set(new_flags)
            return _flags_text(flags)

        def update(ctx: WriteContext) -> tuple[list[Message], list[int]]:
            conn = ctx.conn
            box = conn.execute("SELECT account_id FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
            if box is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            account_id = box[0]
            modseq: int | None = None
            changed: list[Message] = []
            failed: list[int] = []
            # current flags text -> (new text, new set): a mailbox holds few distinct sets
            results: dict[str, tuple[str, frozenset[str]]] = {}
            cur = conn.cursor()
            cur.row_factory = None              # plain tuples: a STORE 1:* reads every row
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                rows = cur.execute(
                    f"SELECT {_SUMMARY_COLUMNS} FROM messages WHERE mailbox_id=? AND uid IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY uid", (mailbox_id, *chunk)).fetchall()
                updates: list[tuple[str, int, int]] = []
                for row_id, _, uid, blob_id, size, internal_date, current, row_modseq, thread_id in rows:
                    # RFC 7162 3.1.3: fail messages modified after UNCHANGEDSINCE.
                    if unchanged_since is not None and row_modseq > unchanged_since:
                        failed.append(uid)
                        continue
                    result = results.get(current)
                    if result is None:
                        text = result_of(current)
                        result = results[current] = (text, frozenset(text.split()))
                    if result[0] == current:
                        continue
                    if modseq is None:
                        modseq = self._bump_modseq(conn, account_id)
                    updates.append((result[0], modseq, row_id))
                    changed.append(Message(
                        id=row_id, mailbox_id=mailbox_id, uid=uid, blob_id=blob_id, size=size,
                        internal_date=internal_date, flags=result[1], modseq=modseq, thread_id=thread_id))
                cur.executemany("UPDATE messages SET flags=?, modseq=? WHERE id=?", updates)
            if modseq is not None:
                conn.execute("UPDATE mailboxes SET highestmodseq=? WHERE id=?", (modseq, mailbox_id))
                self._publish(ctx, account_id, mailbox_id, "flags", modseq)
            return changed, sorted(failed)

        return await self.db.write_ctx(update)

    def _remove_rows(self, conn: sqlite3.Connection, account_id: int, mailbox_id: int, uids: list[int],
                     modseq: int, adjust_quota: bool = True) -> list[int]:
        removed: list[int] = []
        for i in range(0, len(uids), 500):
            chunk = uids[i:i + 500]
            rows = conn.execute(
                f"SELECT id, uid, size FROM messages WHERE mailbox_id=? AND uid IN ({','.join('?' * len(chunk))})",
                (mailbox_id, *chunk)).fetchall()
            for row in rows:
                conn.execute("INSERT INTO expunged VALUES (?,?,?,?,?)",
                             (mailbox_id, account_id, row["id"], row["uid"], modseq))
                unindex(conn, (row["id"],))
                conn.execute("DELETE FROM message_data WHERE id=?", (row["id"],))
                conn.execute("DELETE FROM message_headers WHERE id=?", (row["id"],))
                conn.execute("DELETE FROM messages WHERE id=?", (row["id"],))
                if adjust_quota:
                    conn.execute("UPDATE accounts SET used = MAX(0, used - ?) WHERE id=?", (row["size"], account_id))
                removed.append(row["uid"])
        if removed:
            conn.execute("UPDATE mailboxes SET highestmodseq=? WHERE id=?", (modseq, mailbox_id))
        return sorted(removed)

    async def expunge(self, mailbox_id: int, uids: Iterable[int]) -> list[int]:
        wanted = sorted(set(uids))

        def expunge(ctx: WriteContext) -> list[int]:
            conn = ctx.conn
            box = conn.execute("SELECT account_id FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
            if box is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            if not wanted:
                return []
            modseq = self._bump_modseq(conn, box[0])
            removed = self._remove_rows(conn, box[0], mailbox_id, wanted, modseq)
            if removed:
                self._publish(ctx, box[0], mailbox_id, "expunge", modseq)
            return removed

        return await self.db.write_ctx(expunge)

    def _copy_rows(self, conn: sqlite3.Connection, account_id: int, src: int, uids: list[int], dst: int,
                   modseq: int, check_quota: bool) -> list[tuple[int, int]]:
        pairs: list[tuple[int, int]] = []
        rows: list[sqlite3.Row] = []
        for i in range(0, len(uids), 500):
            chunk = uids[i:i + 500]
            rows += conn.execute(
                "SELECT m.*, d.summary, d.imap_envelope, d.imap_body FROM messages m "
                "LEFT JOIN message_data d ON d.id = m.id "
                f"WHERE m.mailbox_id=? AND m.uid IN ({','.join('?' * len(chunk))}) ORDER BY m.uid",
                (src, *chunk)).fetchall()
        if check_quota:
            acct = conn.execute("SELECT quota, used FROM accounts WHERE id=?", (account_id,)).fetchone()
            if acct["quota"] is not None and acct["used"] + sum(r["size"] for r in rows) > acct["quota"]:
                raise QuotaExceeded("over quota")
        for row in rows:
            uid = conn.execute(
                "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq=? WHERE id=? RETURNING uidnext - 1",
                (modseq, dst)).fetchone()[0]
            new_id = conn.execute(
                "INSERT INTO messages (mailbox_id, account_id, uid, blob_id, size, internal_date, flags, modseq, "
                "thread_id, message_id) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id",
                (dst, account_id, uid, row["blob_id"], row["size"], row["internal_date"], row["flags"], modseq,
                 row["thread_id"], row["message_id"])).fetchone()[0]
            conn.execute(_INSERT_DATA, (new_id, row["summary"] or "{}", row["imap_envelope"], row["imap_body"]))
            conn.execute("INSERT INTO message_headers SELECT ?, header FROM message_headers WHERE id=?",
                         (new_id, row["id"]))
            text = self._kept_text(conn, row["id"])          # indexed or not yet: the copy waits its turn
            if text is not None:
                conn.execute(_INSERT_PENDING, (new_id, *text))
            if check_quota:
                conn.execute("UPDATE accounts SET used = used + ? WHERE id=?", (row["size"], account_id))
            pairs.append((row["uid"], uid))
        return pairs

    def _move_rows(self, conn: sqlite3.Connection, account_id: int, src: int, uids: list[int], dst: int,
                   modseq: int) -> list[tuple[int, int]]:
        """In place: the row keeps its id (the JMAP Email id, RFC 8621 4.1.1), gets a new UID in
        the destination, and the source logs the old UID as expunged (QRESYNC VANISHED)."""
        pairs: list[tuple[int, int]] = []
        for i in range(0, len(uids), 500):
            chunk = uids[i:i + 500]
            rows = conn.execute(
                f"SELECT id, uid FROM messages WHERE mailbox_id=? AND uid IN ({','.join('?' * len(chunk))}) "
                "ORDER BY uid", (src, *chunk)).fetchall()
            for row in rows:
                uid = conn.execute(
                    "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq=? WHERE id=? RETURNING uidnext - 1",
                    (modseq, dst)).fetchone()[0]
                conn.execute("INSERT INTO expunged VALUES (?,?,?,?,?)", (src, account_id, row["id"], row["uid"], modseq))
                conn.execute("UPDATE messages SET mailbox_id=?, uid=?, modseq=? WHERE id=?", (dst, uid, modseq, row["id"]))
                pairs.append((row["uid"], uid))
        if pairs:
            conn.execute("UPDATE mailboxes SET highestmodseq=? WHERE id=?", (modseq, src))
        return pairs

    async def _copy_or_move(self, src: int, uids: Iterable[int], dst: int, move: bool) -> list[tuple[int, int]]:
        wanted = sorted(set(uids))

        def run(ctx: WriteContext) -> list[tuple[int, int]]:
            conn = ctx.conn
            boxes = {r["id"]: r["account_id"] for r in conn.execute(
                "SELECT id, account_id FROM mailboxes WHERE id IN (?,?)", (src, dst))}
            if src not in boxes or dst not in boxes:
                raise NotFound("no such mailbox")
            if boxes[src] != boxes[dst]:
                raise InvalidName("cannot copy between accounts")
            account_id = boxes[src]
            if not wanted:
                return []
            modseq = self._bump_modseq(conn, account_id)
            if move:
                pairs = self._move_rows(conn, account_id, src, wanted, dst, modseq)
                if pairs:
                    self._publish(ctx, account_id, src, "expunge", modseq)
            else:
                pairs = self._copy_rows(conn, account_id, src, wanted, dst, modseq, check_quota=True)
            if pairs:
                self._publish(ctx, account_id, dst, "exists", modseq)
            return pairs

        return await self.db.write_ctx(run)

    async def copy(self, src_mailbox_id: int, uids: Iterable[int], dst_mailbox_id: int) -> list[tuple[int, int]]:
        return await self._copy_or_move(src_mailbox_id, uids, dst_mailbox_id, move=False)

    async def move(self, src_mailbox_id: int, uids: Iterable[int], dst_mailbox_id: int) -> list[tuple[int, int]]:
        return await self._copy_or_move(src_mailbox_id, uids, dst_mailbox_id, move=True)

    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges:
        # The commonest answer (a session catching up after its own command): nothing since.
        # Every change raises the mailbox's highestmodseq, so one row read on the loop tells.
        rows = self.db.query_sync("SELECT highestmodseq FROM mailboxes WHERE id=?", (mailbox_id,))
        if rows and rows[0][0] <= modseq:
            return MailboxChanges(changed=[], expunged=[], highestmodseq=rows[0][0])

        def find(conn: sqlite3.Connection) -> MailboxChanges:
            box = conn.execute("SELECT highestmodseq FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
            if box is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            rows = conn.execute(f"{_select(False)} WHERE mailbox_id=? AND modseq>? "
                                "ORDER BY uid", (mailbox_id, modseq)).fetchall()
            gone = [r[0] for r in conn.execute(
                "SELECT uid FROM expunged WHERE mailbox_id=? AND modseq>? ORDER BY uid", (mailbox_id, modseq))]
            return MailboxChanges(changed=[_message(r, False) for r in rows], expunged=gone,
                                  highestmodseq=box[0])

        return await self.db.read(find)

    async def account_changes_since(self, account_id: int, modseq: int) -> tuple[list[Message], list[int], int]:
        def find(conn: sqlite3.Connection) -> tuple[list[Message], list[int], int]:
            current = conn.execute("SELECT modseq FROM accounts WHERE id=?", (account_id,)).fetchone()
            if current is None:
                raise NotFound(f"no account {account_id}")
            # Mailbox by mailbox (messages_mailbox_modseq): there is no (account, modseq)
            # index, a B-tree page more for every delivery to write (sqliteschema.py).
            rows = conn.execute(f"{_select(False)} WHERE mailbox_id IN (SELECT id FROM mailboxes "
                                "WHERE account_id=?) AND modseq>? ORDER BY id", (account_id, modseq)).fetchall()
            gone = [r[0] for r in conn.execute(
                "SELECT DISTINCT message_id FROM expunged e WHERE account_id=? AND modseq>? "
                "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = e.message_id) ORDER BY message_id",
                (account_id, modseq))]
            return [_message(r, False) for r in rows], gone, int(current[0])

        return await self.db.read(find)

    # -- IMAP fast path (optional; imap/selected.py falls back to list_messages) ----
    async def list_message_columns(self, mailbox_id: int) -> MessageColumns:
        """What an IMAP SELECT needs, as typed arrays filled straight from the cursor: no
        Message, tuple or list of rows per message (100,000 rows were ~25 MB of objects)."""
        return await self.db.read(lambda c: MessageColumns.from_rows(c.execute(
            "SELECT uid, flags, modseq, internal_date, size FROM messages WHERE mailbox_id=? ORDER BY uid",
            (mailbox_id,))))

"""PostgreSQL store, part two: messages (deliver, append, flags, expunge, copy, move,
changes, search). Mixed into :class:`mailhaven.store.postgres.PostgresStore`.

Lock order, the same in every transaction: account rows (ascending id), then mailbox
rows, then message rows. It makes writes to one account serial on every node and keeps
them from deadlocking each other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from ..imap.render import wire_forms
from ..message.summary import LARGE_MESSAGE, message_ids, search_fields, summarize, summarize_view
from .api import (
    BlobRef,
    Change,
    DeliveryResult,
    FlagMode,
    InvalidName,
    MailboxChanges,
    Message,
    MessageColumns,
    NotFound,
    QuotaExceeded,
)
from .blobview import BlobView
from .headerblock import header_block, pack, unpack
from .names import normalize_mailbox_name
from .pgblobs import BLOB_BYTES, BlobNotFound

if TYPE_CHECKING:
    from .pgblobs import PgBlobStore

T = TypeVar("T")

SEEN = "\\Seen"
COLUMNS_BATCH = 1024
"""Rows per cursor fetch of ``list_message_columns`` (100 round trips for a 100k mailbox;
256 saved another ~35 bytes a message at four times the trips)."""
MSG_COLUMNS = ("id", "mailbox_id", "uid", "blob_id", "size", "internal_date", "flags", "modseq",
               "thread_id")
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "subject": ("subject",), "from": ("sender",), "to": ("recipients",), "cc": ("cc",),
    "bcc": ("bcc",), "body": ("body",), "header": ("headers",),
    "text": ("subject", "sender", "recipients", "cc", "bcc", "body", "headers"),
}


def cols(with_summary: bool, prefix: str = "", imap_wire: bool = False) -> str:
    names = MSG_COLUMNS + (("summary",) if with_summary else ())
    out = ", ".join(prefix + n for n in names)
    if imap_wire:
        out += f", {prefix}imap_envelope, {prefix}imap_body"
        if not with_summary:                # only where no wire forms were stored
            out += f", CASE WHEN {prefix}imap_envelope IS NULL THEN {prefix}summary END AS summary"
    return out


def clean(text: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def message(row: asyncpg.Record, with_summary: bool, imap_wire: bool = False) -> Message:
    wire = None
    if imap_wire:
        envelope = row["imap_envelope"]
        wire = (bytes(envelope), bytes(row["imap_body"])) if envelope is not None else None
        text = row["summary"]
        summary = json.loads(text) if text is not None else {}
    else:
        summary = json.loads(row["summary"]) if with_summary else {}
    return Message(id=row["id"], mailbox_id=row["mailbox_id"], uid=row["uid"], blob_id=row["blob_id"],
                   size=row["size"], internal_date=row["internal_date"], flags=frozenset(row["flags"]),
                   modseq=row["modseq"], thread_id=row["thread_id"], summary=summary, wire=wire)


class Tx:
    """One write transaction: its connection and the changes to publish after COMMIT."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.changes: list[Change] = []

    def publish(self, account_id: int, mailbox_id: int | None, kind: str, modseq: int) -> None:
        self.changes.append(Change(account_id=account_id, mailbox_id=mailbox_id, kind=kind, modseq=modseq))


async def lock_account(conn: asyncpg.Connection, account_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT quota, used FROM accounts WHERE id=$1 FOR UPDATE", account_id)
    if row is None:
        raise NotFound(f"no account {account_id}")
    return row


async def bump_modseq(conn: asyncpg.Connection, account_id: int, used_delta: int = 0) -> int:
    """The account's next MODSEQ (and its quota usage moved by ``used_delta``)."""
    modseq = await conn.fetchval(
        "UPDATE accounts SET modseq = modseq + 1, used = GREATEST(0, used + $2) WHERE id=$1 "
        "RETURNING modseq", account_id, used_delta)
    if modseq is None:
        raise NotFound(f"no account {account_id}")
    return int(modseq)


async def mailbox_account(conn: asyncpg.Connection, mailbox_id: int) -> int:
    """Lock the account owning the mailbox; NotFound when the mailbox is gone."""
    account_id = await conn.fetchval("SELECT account_id FROM mailboxes WHERE id=$1", mailbox_id)
    if account_id is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    await lock_account(conn, account_id)
    # Re-read under the account lock: a concurrent delete may have removed it meanwhile.
    if await conn.fetchval("SELECT 1 FROM mailboxes WHERE id=$1", mailbox_id) is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return int(account_id)


class _Prepared:
    """What a delivery stores besides the blob reference, computed before the transaction."""

    def __init__(self, summary: dict[str, Any], text: tuple[str, ...], header: bytes | None = None) -> None:
        self.summary_json = json.dumps(summary)  # ASCII: survives any odd character
        self.message_id = clean(str(summary.get("message_id", "") or ""))
        self.parent_ids = list(dict.fromkeys(
            message_ids(clean(str(summary.get("references", "") or "")))
            + message_ids(clean(str(summary.get("in_reply_to", "") or "")))))
        self.text = text
        self.summary = summary
        self.wire = wire_forms(summary) or (None, None)
        self.header = header
        """:func:`headerblock.pack` of the header block; None: not kept."""


def _prepare(raw: bytes, summary: dict[str, Any] | None = None, *, whole: bool = True) -> _Prepared:
    """What is stored beside a message: its summary (``summary``, else computed), search text
    and header block (``whole``: ``raw`` is the whole message, not its start)."""
    s = summary if summary is not None else summarize(raw)
    block = header_block(raw, whole=whole)
    return _Prepared(s, tuple(clean(f) for f in search_fields(raw, s)), None if block is None else pack(block))


def _prepare_view(view: BlobView) -> _Prepared:
    """:func:`_prepare` of a large message in bounded memory (off the event loop)."""
    s, prefix = summarize_view(view)
    return _prepare(prefix, s, whole=False)


class MessageMethods:
    if TYPE_CHECKING:
        blobs: PgBlobStore

        @property
        def pool(self) -> asyncpg.Pool: ...

        async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T: ...

        async def read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T: ...

    # -- storing ------------------------------------------------------------
    async def _prepare(self, blob: BlobRef, summary: dict[str, Any] | None) -> _Prepared:
        if summary is None and blob.size > LARGE_MESSAGE:     # never read whole: a range at a time
            view = BlobView(self.blobs.read_range, blob.id, blob.size)
            return await asyncio.to_thread(_prepare_view, view)
        raw = await self.blobs.read(blob.id)

        return await asyncio.to_thread(_prepare, raw, summary)

    async def reindex(self, batch: int = 200) -> int:
        """Recompute every message's summary, IMAP wire forms, header block and search text from
        its bytes (after an upgrade changed how they are computed); returns how many messages. Once per
        blob (copies share it); a batch per transaction, beside serving nodes."""
        done = 0
        last = ""
        while True:
            async def page(c: asyncpg.Connection, after: str = last) -> list[asyncpg.Record]:
                return await c.fetch(  # type: ignore[no-any-return]
                    "SELECT DISTINCT blob_id FROM messages WHERE blob_id > $1 ORDER BY blob_id LIMIT $2", after, batch)

            blob_ids = [r[0] for r in await self.read(page)]
            if not blob_ids:
                return done
            last = blob_ids[-1]
            prepared = []
            for blob_id in blob_ids:       # a large message a range at a time, as at delivery
                blob = BlobRef(id=blob_id, size=await self.blobs.size(blob_id))
                prepared.append((blob_id, await self._prepare(blob, None)))

            async def write(tx: Tx, prepared: list[tuple[str, _Prepared]] = prepared) -> int:
                n = 0
                for blob_id, p in prepared:
                    status = await tx.conn.execute(
                        "UPDATE messages SET summary = $2, imap_envelope = $3, imap_body = $4, header = $5 "
                        "WHERE blob_id = $1", blob_id, p.summary_json, *p.wire, p.header)
                    n += int(status.split()[-1])
                    await tx.conn.execute(
                        "INSERT INTO blob_text (blob_id, subject, sender, recipients, cc, bcc, body, headers) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (blob_id) DO UPDATE SET "
                        "subject = $2, sender = $3, recipients = $4, cc = $5, bcc = $6, body = $7, headers = $8",
                        blob_id, *p.text)
                return n

            done += await self.write(write)

    @staticmethod
    async def _insert_message(conn: asyncpg.Connection, account_id: int, mailbox_id: int, blob: BlobRef,
                              flags: list[str], internal_date: float, p: _Prepared,
                              modseq: int) -> asyncpg.Record:
        # One round trip: the next UID (RFC 9051 2.3.1.1, strictly ascending), a fresh id,
        # the blob's search text (once per blob), and the row. Its thread: a parent's
        # (References/In-Reply-To), else a reply's that arrived first, else its own id.
        row = await conn.fetchrow(
            "WITH u AS (UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = $3 WHERE id = $2 "
            "RETURNING uidnext - 1 AS uid), n AS (SELECT nextval('messages_id_seq') AS id), "
            "t AS (INSERT INTO blob_text (blob_id, subject, sender, recipients, cc, bcc, body, headers) "
            "VALUES ($4, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT (blob_id) DO NOTHING) "
            "INSERT INTO messages (id, mailbox_id, account_id, uid, blob_id, size, internal_date, flags, "
            "modseq, thread_id, message_id, parent_ids, summary, imap_envelope, imap_body, header) "
            "SELECT n.id, $2, $1, u.uid, $4, $5, $6, $7, $3, COALESCE("
            "(SELECT m.thread_id FROM messages m WHERE m.account_id = $1 AND m.message_id = ANY($9::text[]) "
            "LIMIT 1), "
            "(SELECT m.thread_id FROM messages m WHERE $8 <> '' AND m.parent_ids @> ARRAY[$8::text] "
            "AND m.account_id = $1 LIMIT 1), n.id), $8, $9, $10, $18, $19, $20 "
            f"FROM u, n RETURNING {cols(True)}",
            account_id, mailbox_id, modseq, blob.id, blob.size, internal_date, flags,
            p.message_id, p.parent_ids, p.summary_json, *p.text, *p.wire, p.header)
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return row

    async def deliver(self, blob: BlobRef, account_ids: Iterable[int], *, mailbox: str = "INBOX",
                      flags: Iterable[str] = (), internal_date: float | None = None,
                      summary: dict[str, Any] | None = None, ignore_quota: bool = False) -> list[DeliveryResult]:
        ids = list(dict.fromkeys(account_ids))
        p = await self._prepare(blob, summary)
        flag_list = sorted(set(flags))
        when = internal_date if internal_date is not None else time.time()
        mailbox = normalize_mailbox_name(mailbox)

        async def deliver(tx: Tx) -> list[tuple[int, asyncpg.Record | None]]:
            conn = tx.conn
            if len(ids) > 1:
                # Several accounts: lock them in id order, so concurrent deliveries never deadlock.
                await conn.execute("SELECT 1 FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                                   ids)
            out: list[tuple[int, asyncpg.Record | None]] = []
            for account_id in ids:
                # Lock, quota check, next MODSEQ and the target mailbox in one statement.
                got = await conn.fetchrow(
                    "UPDATE accounts SET modseq = modseq + 1, used = used + $2 "
                    "WHERE id = $1 AND ($4 OR quota IS NULL OR used + $2 <= quota) RETURNING modseq, "
                    "(SELECT id FROM mailboxes WHERE account_id = $1 AND name IN ($3, 'INBOX') "
                    "ORDER BY name = $3 DESC LIMIT 1) AS box", account_id, blob.size, mailbox, ignore_quota)
                if got is None:
                    if await conn.fetchval("SELECT 1 FROM accounts WHERE id=$1", account_id) is None:
                        raise NotFound(f"no account {account_id}")
                    out.append((account_id, None))  # over quota: nothing stored for this one
                    continue
                modseq, box = got["modseq"], got["box"]
                row = await self._insert_message(conn, account_id, box, blob, flag_list, when, p, modseq)
                tx.publish(account_id, box, "exists", modseq)
                out.append((account_id, row))
            return out

        rows = await self.write(deliver)
        return [DeliveryResult(account_id=a, message=message(r, True) if r is not None else None,
                               over_quota=r is None) for a, r in rows]

    async def append(self, mailbox_id: int, blob: BlobRef, *, flags: Iterable[str] = (),
                     internal_date: float | None = None, summary: dict[str, Any] | None = None) -> Message:
        p = await self._prepare(blob, summary)
        flag_list = sorted(set(flags))
        when = internal_date if internal_date is not None else time.time()

        async def append(tx: Tx) -> asyncpg.Record:
            conn = tx.conn
            account_id = await mailbox_account(conn, mailbox_id)
            acct = await lock_account(conn, account_id)
            if acct["quota"] is not None and acct["used"] + blob.size > acct["quota"]:
                raise QuotaExceeded("over quota")
            modseq = await bump_modseq(conn, account_id, blob.size)
            row = await self._insert_message(conn, account_id, mailbox_id, blob, flag_list, when, p, modseq)
            tx.publish(account_id, mailbox_id, "exists", modseq)
            return row

        return message(await self.write(append), True)

    # -- reading ------------------------------------------------------------
    async def list_messages(self, mailbox_id: int, *, with_summary: bool = False) -> list[Message]:
        rows = await self.pool.fetch(
            f"SELECT {cols(with_summary)} FROM messages WHERE mailbox_id=$1 ORDER BY uid", mailbox_id)
        return [message(r, with_summary) for r in rows]

    async def list_message_columns(self, mailbox_id: int) -> MessageColumns:
        """What an IMAP SELECT needs, as typed arrays (as SQLiteStore), read through a
        cursor :data:`COLUMNS_BATCH` rows at a time (never a Record per message at once)."""
        out = MessageColumns()
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(
                "SELECT uid, array_to_string(flags, ' '), modseq, internal_date, size FROM messages "
                "WHERE mailbox_id=$1 ORDER BY uid", mailbox_id)
            while batch := await cursor.fetch(COLUMNS_BATCH):
                out.extend(batch)
        return out

    async def get_messages(self, mailbox_id: int, uids: Iterable[int], *,
                           with_summary: bool = True, imap_wire: bool = False) -> list[Message]:
        rows = await self.pool.fetch(
            f"SELECT {cols(with_summary, imap_wire=imap_wire)} FROM messages WHERE mailbox_id=$1 "
            "AND uid = ANY($2::bigint[]) ORDER BY uid", mailbox_id, sorted(set(uids)))
        return [message(r, with_summary, imap_wire) for r in rows]

    async def get_messages_raw(self, mailbox_id: int, uids: Iterable[int], *,
                               with_summary: bool = True, imap_wire: bool = False) -> list[tuple[Message, bytes]]:
        rows = await self.pool.fetch(
            f"SELECT m.*, {BLOB_BYTES.format('m.blob_id')} AS raw FROM (SELECT "
            f"{cols(with_summary, imap_wire=imap_wire)} FROM messages WHERE mailbox_id=$1 "
            "AND uid = ANY($2::bigint[])) m ORDER BY uid", mailbox_id, sorted(set(uids)))
        out = []
        for r in rows:
            if r["raw"] is None:
                raise BlobNotFound(f"no blob {r['blob_id']}")   # as read_blobs says it
            out.append((message(r, with_summary, imap_wire), bytes(r["raw"])))
        return out

    async def get_wire_forms(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes | None, bytes | None]]:
        rows = await self.pool.fetch(
            "SELECT uid, imap_envelope, imap_body FROM messages WHERE mailbox_id=$1 "
            "AND uid = ANY($2::bigint[]) ORDER BY uid", mailbox_id, sorted(set(uids)))
        return [(r[0], r[1], r[2]) for r in rows]

    async def get_raw(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes]]:
        rows = await self.pool.fetch(
            f"SELECT m.uid, m.blob_id, {BLOB_BYTES.format('m.blob_id')} FROM messages m "
            "WHERE m.mailbox_id=$1 AND m.uid = ANY($2::bigint[]) ORDER BY m.uid", mailbox_id, sorted(set(uids)))
        out = []
        for uid, blob_id, data in rows:
            if data is None:
                raise BlobNotFound(f"no blob {blob_id}")
            out.append((uid, bytes(data)))
        return out

    async def get_headers(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes]]:
        rows = await self.pool.fetch(
            "SELECT uid, header FROM messages WHERE mailbox_id=$1 AND uid = ANY($2::bigint[]) "
            "AND header IS NOT NULL ORDER BY uid", mailbox_id, sorted(set(uids)))
        return [(uid, unpack(stored)) for uid, stored in rows]

    def get_header_now(self, mailbox_id: int, uid: int) -> None:
        return None             # every query waits on the server: get_headers

    async def get_messages_by_id(self, ids: Iterable[int], *, with_summary: bool = True) -> list[Message]:
        wanted = list(dict.fromkeys(ids))
        rows = await self.pool.fetch(
            f"SELECT {cols(with_summary)} FROM messages WHERE id = ANY($1::bigint[])", wanted)
        by_id = {r["id"]: r for r in rows}
        return [message(by_id[i], with_summary) for i in wanted if i in by_id]

    # -- changing -----------------------------------------------------------
    async def set_flags(self, mailbox_id: int, uids: Iterable[int], flags: Iterable[str], mode: FlagMode,
                        *, unchanged_since: int | None = None) -> tuple[list[Message], list[int]]:
        wanted = sorted(set(uids))
        new_flags = set(flags)

        async def update(tx: Tx) -> tuple[list[asyncpg.Record], list[int]]:
            conn = tx.conn
            account_id = await mailbox_account(conn, mailbox_id)
            rows = await conn.fetch(
                "SELECT id, uid, flags, modseq FROM messages WHERE mailbox_id=$1 AND uid = ANY($2::bigint[]) "
                "ORDER BY uid FOR UPDATE", mailbox_id, wanted)
            failed: list[int] = []
            ids: list[int] = []
            texts: list[str] = []
            for row in rows:
                # RFC 7162 3.1.3: fail messages modified after UNCHANGEDSINCE.
                if unchanged_since is not None and row["modseq"] > unchanged_since:
                    failed.append(row["uid"])
                    continue
                current = set(row["flags"])
                if mode is FlagMode.ADD:
                    result = current | new_flags
                elif mode is FlagMode.REMOVE:
                    result = current - new_flags
                else:
                    result = set(new_flags)
                if result != current:
                    ids.append(row["id"])
                    texts.append(" ".join(sorted(result)))
            if not ids:
                return [], failed
            modseq = await bump_modseq(conn, account_id)
            changed = await conn.fetch(
                "UPDATE messages m SET flags = string_to_array(x.f, ' '), modseq = $3 "
                "FROM unnest($1::bigint[], $2::text[]) AS x(id, f) WHERE m.id = x.id "
                f"RETURNING {cols(False, 'm.')}", ids, texts, modseq)
            await conn.execute("UPDATE mailboxes SET highestmodseq=$1 WHERE id=$2", modseq, mailbox_id)
            tx.publish(account_id, mailbox_id, "flags", modseq)
            return sorted(changed, key=lambda r: r["uid"]), failed

        rows, failed = await self.write(update)
        return [message(r, False) for r in rows], sorted(failed)

    @staticmethod
    async def _remove_rows(conn: asyncpg.Connection, account_id: int, mailbox_id: int, uids: list[int],
                           modseq: int, adjust_quota: bool = True) -> list[int]:
        rows = await conn.fetch(
            "WITH d AS (DELETE FROM messages WHERE mailbox_id=$1 AND uid = ANY($2::bigint[]) "
            "RETURNING id, uid, size), e AS (INSERT INTO expunged SELECT $1, $3, d.id, d.uid, $4 FROM d) "
            "SELECT uid, size FROM d", mailbox_id, uids, account_id, modseq)
        if rows:
            await conn.execute("UPDATE mailboxes SET highestmodseq=$1 WHERE id=$2", modseq, mailbox_id)
            if adjust_quota:
                await conn.execute("UPDATE accounts SET used = GREATEST(0, used - $2) WHERE id=$1",
                                   account_id, sum(r["size"] for r in rows))
        return sorted(r["uid"] for r in rows)

    async def expunge(self, mailbox_id: int, uids: Iterable[int]) -> list[int]:
        wanted = sorted(set(uids))

        async def expunge(tx: Tx) -> list[int]:
            account_id = await mailbox_account(tx.conn, mailbox_id)
            if not wanted:
                return []
            modseq = await bump_modseq(tx.conn, account_id)
            removed = await self._remove_rows(tx.conn, account_id, mailbox_id, wanted, modseq)
            if removed:
                tx.publish(account_id, mailbox_id, "expunge", modseq)
            return removed

        return await self.write(expunge)

    @staticmethod
    async def _move_rows(conn: asyncpg.Connection, account_id: int, src: int, uids: list[int], dst: int,
                         modseq: int) -> list[tuple[int, int]]:
        """In place: the row keeps its id (the JMAP Email id), gets a new UID in the destination,
        and the source logs the old UID as expunged (QRESYNC VANISHED)."""
        rows = await conn.fetch(
            "SELECT id, uid FROM messages WHERE mailbox_id=$1 AND uid = ANY($2::bigint[]) ORDER BY uid FOR UPDATE",
            src, uids)
        if not rows:
            return []
        first = await conn.fetchval(
            "UPDATE mailboxes SET uidnext = uidnext + $3, highestmodseq = $2 WHERE id = $1 "
            "RETURNING uidnext - $3", dst, modseq, len(rows))
        new_uids = list(range(first, first + len(rows)))
        await conn.execute(
            "INSERT INTO expunged SELECT $1, $2, x.id, x.uid, $3 FROM unnest($4::bigint[], $5::bigint[]) AS x(id, uid)",
            src, account_id, modseq, [r["id"] for r in rows], [r["uid"] for r in rows])
        await conn.execute(
            "UPDATE messages m SET mailbox_id = $1, uid = x.uid, modseq = $2 "
            "FROM unnest($3::bigint[], $4::bigint[]) AS x(id, uid) WHERE m.id = x.id",
            dst, modseq, [r["id"] for r in rows], new_uids)
        await conn.execute("UPDATE mailboxes SET highestmodseq=$1 WHERE id=$2", modseq, src)
        return [(r["uid"], u) for r, u in zip(rows, new_uids, strict=True)]

    @staticmethod
    async def _copy_rows(conn: asyncpg.Connection, account_id: int, src: int, uids: list[int], dst: int,
                         modseq: int, check_quota: bool) -> list[tuple[int, int]]:
        rows = await conn.fetch(
            "SELECT id, uid, size FROM messages WHERE mailbox_id=$1 AND uid = ANY($2::bigint[]) ORDER BY uid",
            src, uids)
        if not rows:
            return []
        total = sum(r["size"] for r in rows)
        if check_quota:
            acct = await conn.fetchrow("SELECT quota, used FROM accounts WHERE id=$1", account_id)
            if acct["quota"] is not None and acct["used"] + total > acct["quota"]:
                raise QuotaExceeded("over quota")
        # A block of consecutive UIDs in the destination, in source UID order.
        first = await conn.fetchval(
            "UPDATE mailboxes SET uidnext = uidnext + $3, highestmodseq = $2 WHERE id = $1 "
            "RETURNING uidnext - $3", dst, modseq, len(rows))
        new_uids = list(range(first, first + len(rows)))
        await conn.execute(
            "INSERT INTO messages (mailbox_id, account_id, uid, blob_id, size, internal_date, flags, modseq, "
            "thread_id, message_id, parent_ids, summary, imap_envelope, imap_body, header) "
            "SELECT $3, m.account_id, x.uid, m.blob_id, m.size, m.internal_date, m.flags, $4, m.thread_id, "
            "m.message_id, m.parent_ids, m.summary, m.imap_envelope, m.imap_body, m.header "
            "FROM unnest($1::bigint[], $2::bigint[]) AS x(src, uid) JOIN messages m ON m.id = x.src "
            "ORDER BY x.uid", [r["id"] for r in rows], new_uids, dst, modseq)
        if check_quota:
            await conn.execute("UPDATE accounts SET used = used + $2 WHERE id=$1", account_id, total)
        return [(r["uid"], u) for r, u in zip(rows, new_uids, strict=True)]

    async def _copy_or_move(self, src: int, uids: Iterable[int], dst: int, move: bool) -> list[tuple[int, int]]:
        wanted = sorted(set(uids))

        async def run(tx: Tx) -> list[tuple[int, int]]:
            conn = tx.conn
            boxes = {r["id"]: r["account_id"] for r in await conn.fetch(
                "SELECT id, account_id FROM mailboxes WHERE id = ANY($1::bigint[])", [src, dst])}
            if src not in boxes or dst not in boxes:
                raise NotFound("no such mailbox")
            if boxes[src] != boxes[dst]:
                raise InvalidName("cannot copy between accounts")
            account_id = await mailbox_account(conn, src)
            if await conn.fetchval("SELECT 1 FROM mailboxes WHERE id=$1", dst) is None:
                raise NotFound("no such mailbox")
            if not wanted:
                return []
            modseq = await bump_modseq(conn, account_id)
            if move:
                pairs = await self._move_rows(conn, account_id, src, wanted, dst, modseq)
                if pairs:
                    tx.publish(account_id, src, "expunge", modseq)
            else:
                pairs = await self._copy_rows(conn, account_id, src, wanted, dst, modseq, check_quota=True)
            if pairs:
                tx.publish(account_id, dst, "exists", modseq)
            return pairs

        return await self.write(run)

    async def copy(self, src_mailbox_id: int, uids: Iterable[int], dst_mailbox_id: int) -> list[tuple[int, int]]:
        return await self._copy_or_move(src_mailbox_id, uids, dst_mailbox_id, move=False)

    async def move(self, src_mailbox_id: int, uids: Iterable[int], dst_mailbox_id: int) -> list[tuple[int, int]]:
        return await self._copy_or_move(src_mailbox_id, uids, dst_mailbox_id, move=True)

    # -- changes and search ---------------------------------------------------
    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges:
        async def find(conn: asyncpg.Connection) -> MailboxChanges:
            highest = await conn.fetchval("SELECT highestmodseq FROM mailboxes WHERE id=$1", mailbox_id)
            if highest is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            rows = await conn.fetch(f"SELECT {cols(False)} FROM messages WHERE mailbox_id=$1 AND modseq > $2 "
                                    "ORDER BY uid", mailbox_id, modseq)
            gone = await conn.fetch("SELECT uid FROM expunged WHERE mailbox_id=$1 AND modseq > $2 ORDER BY uid",
                                    mailbox_id, modseq)
            return MailboxChanges(changed=[message(r, False) for r in rows], expunged=[r[0] for r in gone],
                                  highestmodseq=highest)

        return await self.read(find)

    async def account_changes_since(self, account_id: int, modseq: int) -> tuple[list[Message], list[int], int]:
        async def find(conn: asyncpg.Connection) -> tuple[list[Message], list[int], int]:
            current = await conn.fetchval("SELECT modseq FROM accounts WHERE id=$1", account_id)
            if current is None:
                raise NotFound(f"no account {account_id}")
            rows = await conn.fetch(f"SELECT {cols(False)} FROM messages WHERE account_id=$1 AND modseq > $2 "
                                    "ORDER BY id", account_id, modseq)
            gone = await conn.fetch("SELECT DISTINCT message_id FROM expunged e WHERE account_id=$1 AND modseq > $2 "
                                    "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = e.message_id) "
                                    "ORDER BY message_id", account_id, modseq)
            return [message(r, False) for r in rows], [r[0] for r in gone], int(current)

        return await self.read(find)

    async def search_text(self, mailbox_id: int, field: str, text: str) -> set[int]:
        if field not in TEXT_FIELDS:
            raise ValueError(f"unknown search field {field!r}")
        needle = clean(text.strip())
        if not needle:
            return {m.uid for m in await self.list_messages(mailbox_id)}
        # Case-insensitive substring; with pg_trgm, needles of 3+ characters use the GIN
        # trigram indexes on blob_text (pgschema.py).
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cond = " OR ".join(f"t.{c} ILIKE $2" for c in TEXT_FIELDS[field])
        rows = await self.pool.fetch(
            f"SELECT m.uid FROM messages m JOIN blob_text t ON t.blob_id = m.blob_id "
            f"WHERE m.mailbox_id = $1 AND ({cond})", mailbox_id, pattern)
        return {r[0] for r in rows}

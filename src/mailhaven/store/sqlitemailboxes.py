"""SQLite store: mailboxes (create, rename, delete, subscribe, \\Recent) and the account
MODSEQ counter. Mixed into :class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from .api import AlreadyExists, Change, InvalidName, Mailbox, NotFound
from .changes import ChangeHub
from .db import Database, WriteContext
from .names import like_prefix, normalize_mailbox_name, validate_mailbox_name
from .recent import RecentFloors
from .sqliteindex import unindex
from .sqliterows import _mailbox


class MailboxMethods:
    if TYPE_CHECKING:
        db: Database
        hub: ChangeHub
        _recent_floor: RecentFloors

        def _move_rows(self, conn: sqlite3.Connection, account_id: int, src: int, uids: list[int], dst: int,
                       modseq: int) -> list[tuple[int, int]]: ...

    # -- mailboxes ----------------------------------------------------------
    @staticmethod
    def _next_uidvalidity(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key='uidvalidity'").fetchone()
        value = max(int(time.time()) & 0x7FFFFFFF, (int(row[0]) + 1) if row else 1)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('uidvalidity', ?)", (str(value),))
        return value

    def _create_mailbox(self, conn: sqlite3.Connection, account_id: int, name: str,
                        special_use: str | None) -> int:
        try:
            cur = conn.execute(
                # HIGHESTMODSEQ starts at the account's counter: SQLite may hand out the id of
                # a deleted mailbox again, and that mailbox's expunges (kept for JMAP) carry
                # MODSEQs up to the counter; none may read as this mailbox's changes.
                "INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, highestmodseq) "
                "VALUES (?,?,?,?,(SELECT modseq FROM accounts WHERE id=?))",
                (account_id, name, special_use, self._next_uidvalidity(conn), account_id),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"mailbox {name} exists") from None
        return int(cur.lastrowid or 0)

    @staticmethod
    def _bump_modseq(conn: sqlite3.Connection, account_id: int) -> int:
        row = conn.execute(
            "UPDATE accounts SET modseq = modseq + 1 WHERE id=? RETURNING modseq", (account_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no account {account_id}")
        return int(row[0])

    def _publish(self, ctx: WriteContext, account_id: int, mailbox_id: int | None, kind: str,
                 modseq: int) -> None:
        change = Change(account_id=account_id, mailbox_id=mailbox_id, kind=kind, modseq=modseq)
        ctx.after_commit(lambda: self.hub.publish(change))

    async def list_mailboxes(self, account_id: int, *, counts: bool = False) -> list[Mailbox]:
        def find(conn: sqlite3.Connection) -> list[Mailbox]:
            rows = conn.execute(
                "SELECT * FROM mailboxes WHERE account_id=? ORDER BY name <> 'INBOX', name", (account_id,)
            ).fetchall()
            return [_mailbox(r, conn, counts) for r in rows]

        return await self.db.read(find)

    async def mailbox_names(self, account_id: int) -> dict[str, str | None]:
        # Asked by every Sieve delivery that files a message: a few indexed rows, read on
        # the loop (a reader-thread hop cost more than the read; db.read_sync).
        rows = self.db.read_sync(lambda conn: conn.execute(
            "SELECT name, special_use FROM mailboxes WHERE account_id=? ORDER BY name <> 'INBOX', name",
            (account_id,)).fetchall())
        return {str(r[0]): r[1] for r in rows}

    async def get_mailbox(self, account_id: int, name: str, *, counts: bool = True) -> Mailbox:
        name = normalize_mailbox_name(name)

        def find(conn: sqlite3.Connection) -> Mailbox:
            row = conn.execute("SELECT * FROM mailboxes WHERE account_id=? AND name=?",
                               (account_id, name)).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {name}")
            return _mailbox(row, conn, counts)

        if not counts:      # SELECT's lookup: two indexed rows, read on the loop (no thread hop)
            return self.db.read_sync(find)
        return await self.db.read(find)

    async def claim_recent(self, mailbox_id: int, upto: int, *, claim: bool = True) -> int:
        def peek(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT recent_uid FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            return int(row[0])

        def take(conn: sqlite3.Connection) -> int:
            first = peek(conn)
            if first < upto:
                conn.execute("UPDATE mailboxes SET recent_uid=? WHERE id=?", (upto, mailbox_id))
            return first

        async def query() -> int:
            first = await self.db.read(peek)
            if not claim or first >= upto:
                self._recent_floor.note(mailbox_id, first)
                return first     # nothing to take: no write, no fsync
            first = await self.db.write(take)
            self._recent_floor.note(mailbox_id, max(first, upto))
            return first

        return await (self._recent_floor.claim_once(mailbox_id, upto, query) if claim else query())

    async def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox:
        def find(conn: sqlite3.Connection) -> Mailbox:
            row = conn.execute("SELECT * FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            return _mailbox(row, conn, True)

        return await self.db.read(find)

    async def create_mailbox(self, account_id: int, name: str, *, special_use: str | None = None) -> Mailbox:
        name = validate_mailbox_name(name)

        def create(ctx: WriteContext) -> int:
            mailbox_id = self._create_mailbox(ctx.conn, account_id, name, special_use)
            modseq = self._bump_modseq(ctx.conn, account_id)
            self._publish(ctx, account_id, mailbox_id, "mailbox", modseq)
            return mailbox_id

        return await self.get_mailbox_by_id(await self.db.write_ctx(create))

    async def delete_mailbox(self, mailbox_id: int) -> None:
        self._recent_floor.forget(mailbox_id)   # SQLite may give the id to a new mailbox

        def delete(ctx: WriteContext) -> None:
            conn = ctx.conn
            row = conn.execute("SELECT account_id, name FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            if row["name"] == "INBOX":
                raise InvalidName("INBOX cannot be deleted")
            account_id = row["account_id"]
            size = conn.execute("SELECT COALESCE(SUM(size),0) FROM messages WHERE mailbox_id=?",
                                (mailbox_id,)).fetchone()[0]
            modseq = self._bump_modseq(conn, account_id)
            conn.execute(
                "INSERT INTO expunged SELECT mailbox_id, account_id, id, uid, ? FROM messages "
                "WHERE mailbox_id=?", (modseq, mailbox_id))
            unindex(conn, [r[0] for r in conn.execute("SELECT id FROM messages WHERE mailbox_id=?", (mailbox_id,))])
            conn.execute("DELETE FROM message_data WHERE id IN (SELECT id FROM messages WHERE mailbox_id=?)", (mailbox_id,))
            conn.execute("DELETE FROM message_headers WHERE id IN (SELECT id FROM messages WHERE mailbox_id=?)",
                         (mailbox_id,))
            conn.execute("DELETE FROM messages WHERE mailbox_id=?", (mailbox_id,))
            conn.execute("DELETE FROM mailboxes WHERE id=?", (mailbox_id,))
            conn.execute("UPDATE accounts SET used = MAX(0, used - ?) WHERE id=?", (size, account_id))
            self._publish(ctx, account_id, mailbox_id, "mailbox", modseq)

        await self.db.write_ctx(delete)

    async def rename_mailbox(self, mailbox_id: int, new_name: str) -> Mailbox:
        new_name = validate_mailbox_name(new_name)

        def rename(ctx: WriteContext) -> int:
            conn = ctx.conn
            row = conn.execute("SELECT * FROM mailboxes WHERE id=?", (mailbox_id,)).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            account_id, old = row["account_id"], row["name"]
            if conn.execute("SELECT 1 FROM mailboxes WHERE account_id=? AND name=?",
                            (account_id, new_name)).fetchone():
                raise AlreadyExists(f"mailbox {new_name} exists")
            if new_name.startswith(old + "/"):
                raise InvalidName("cannot rename a mailbox into its own child")
            modseq = self._bump_modseq(conn, account_id)
            if old == "INBOX":
                # RFC 9051 6.3.6: renaming INBOX moves its messages to a new mailbox; INBOX stays.
                target = self._create_mailbox(conn, account_id, new_name, None)
                uids = [r[0] for r in conn.execute("SELECT uid FROM messages WHERE mailbox_id=? ORDER BY uid",
                                                   (mailbox_id,))]
                self._move_rows(conn, account_id, mailbox_id, uids, target, modseq)
                self._publish(ctx, account_id, mailbox_id, "expunge", modseq)
                self._publish(ctx, account_id, target, "mailbox", modseq)
                return target
            children = conn.execute(
                "SELECT id, name FROM mailboxes WHERE account_id=? AND name LIKE ? ESCAPE '\\'",
                (account_id, like_prefix(old + "/")),
            ).fetchall()
            conn.execute("UPDATE mailboxes SET name=? WHERE id=?", (new_name, mailbox_id))
            try:
                for child in children:
                    conn.execute("UPDATE mailboxes SET name=? WHERE id=?",
                                 (new_name + child["name"][len(old):], child["id"]))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"a child of {new_name} exists") from None
            self._publish(ctx, account_id, mailbox_id, "mailbox", modseq)
            return mailbox_id

        return await self.get_mailbox_by_id(await self.db.write_ctx(rename))

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        name = normalize_mailbox_name(name)

        def update(ctx: WriteContext) -> None:
            if subscribed:
                ctx.conn.execute("INSERT OR IGNORE INTO subscriptions VALUES (?,?)", (account_id, name))
            else:
                ctx.conn.execute("DELETE FROM subscriptions WHERE account_id=? AND name=?", (account_id, name))
            modseq = self._bump_modseq(ctx.conn, account_id)
            self._publish(ctx, account_id, None, "mailbox", modseq)

        await self.db.write_ctx(update)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT name FROM subscriptions WHERE account_id=? ORDER BY name", (account_id,)).fetchall())
        return [r[0] for r in rows]

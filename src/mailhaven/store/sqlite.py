"""The embedded store: SQLite (WAL, synchronous=FULL) plus files for message bytes.

Invariants (see api.py for the contract every backend keeps):
- Every SQL statement runs on a database thread (db.py), never on the event loop.
- Message bytes are durable before the row naming them is written (blobs.py).
- Each write job takes one MODSEQ from the account counter for everything it changes.
- Change-feed events are published only after COMMIT (``WriteContext.after_commit``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..imap.render import wire_forms
from ..message.summary import message_ids, search_fields, summarize
from .api import (
    DEFAULT_MAILBOXES,
    Account,
    AlreadyExists,
    BlobRef,
    Change,
    DeliveryResult,
    Domain,
    FlagMode,
    InvalidName,
    Mailbox,
    MailboxChanges,
    Message,
    NotFound,
    QuotaExceeded,
    Resolution,
    ScramCredentials,
)
from .blobs import SCHEMA as BLOB_SCHEMA
from .blobs import FileBlobStore, FileBlobWriter
from .changes import ChangeHub, Subscription
from .db import Database, WriteContext
from .passwords import PasswordChecker, hasher
from .recent import RecentFloors

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS domains (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    domain TEXT NOT NULL REFERENCES domains(name),
    password TEXT NOT NULL,
    scram TEXT NOT NULL DEFAULT '',
    quota INTEGER,
    used INTEGER NOT NULL DEFAULT 0,
    modseq INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    address TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (address, target)
);
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    special_use TEXT,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    recent_uid INTEGER NOT NULL DEFAULT 1,
    UNIQUE (account_id, name)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    blob_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    internal_date REAL NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL,
    thread_id INTEGER NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    UNIQUE (mailbox_id, uid)
);
-- What a message row would otherwise carry in kilobytes: the parsed summary and the
-- ENVELOPE/BODYSTRUCTURE rendered at delivery. Apart, messages rows stay narrow (about 100
-- bytes), so a STORE rewrites dozens of them per page instead of two or three, as Dovecot
-- keeps flags in its index and the rest in its cache file.
CREATE TABLE IF NOT EXISTS message_data (
    id INTEGER PRIMARY KEY,                 -- messages.id
    summary TEXT NOT NULL,
    imap_envelope BLOB,
    imap_body BLOB
);
CREATE INDEX IF NOT EXISTS messages_account_modseq ON messages (account_id, modseq);
CREATE INDEX IF NOT EXISTS messages_mailbox_modseq ON messages (mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (account_id, message_id);
CREATE INDEX IF NOT EXISTS messages_blob ON messages (blob_id);
-- Message-IDs each message refers to (References, In-Reply-To), so that a parent that
-- arrives after its replies finds their thread by index instead of scanning summaries.
CREATE TABLE IF NOT EXISTS message_refs (
    account_id INTEGER NOT NULL,
    ref TEXT NOT NULL,
    thread_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS message_refs_ref ON message_refs (account_id, ref);
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL,
    account_id INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS expunged_mailbox ON expunged (mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS expunged_account ON expunged (account_id, modseq);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5 (
    subject, sender, recipients, cc, bcc, body, headers, tokenize = 'trigram'
);
-- Search text of messages not in messages_fts yet: written with the message (cheap), moved
-- into the trigram index in batches when delivery is quiet, and always before a search.
CREATE TABLE IF NOT EXISTS fts_pending (
    id INTEGER PRIMARY KEY,
    subject TEXT, sender TEXT, recipients TEXT, cc TEXT, bcc TEXT, body TEXT, headers TEXT
);
"""

# Search fields -> FTS columns (None: every column).
_FTS_FIELDS: dict[str, str | None] = {
    "subject": "subject", "from": "sender", "to": "recipients", "cc": "cc", "bcc": "bcc",
    "body": "body", "header": "headers", "text": None,
}

SUMMARY_ON_LOOP_MAX = 64 * 1024
"""A message at most this big whose bytes are still in memory (just written) is summarised
on the event loop. The work is pure Python, so in a worker thread it would hold the GIL
all the same; the hop to the thread and back (GIL hand-offs, wake-ups) cost more than it."""
SCRAM_ITERATIONS = 4096
_INSERT_DATA = "INSERT OR REPLACE INTO message_data (id, summary, imap_envelope, imap_body) VALUES (?,?,?,?)"
_INSERT_PENDING = ("INSERT INTO fts_pending (id, subject, sender, recipients, cc, bcc, body, headers) "
                   "VALUES (?,?,?,?,?,?,?,?)")
_SUMMARY_COLUMNS = "id, mailbox_id, uid, blob_id, size, internal_date, flags, modseq, thread_id"


def normalize_address(address: str) -> str:
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return f"{local.lower()}@{domain.lower()}"


def normalize_mailbox_name(name: str) -> str:
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX/":
        return "INBOX/" + name[6:]
    return name


def validate_mailbox_name(name: str) -> str:
    name = normalize_mailbox_name(name)
    if not name or name.startswith("/") or name.endswith("/") or "//" in name:
        raise InvalidName(f"invalid mailbox name {name!r}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name) or len(name) > 512:
        raise InvalidName(f"invalid mailbox name {name!r}")
    if any(c in name for c in "*%"):
        raise InvalidName("mailbox names cannot contain * or %")
    return name


def hash_password(password: str) -> tuple[str, str]:
    """(argon2id hash, SCRAM-SHA-256 secrets as JSON). Slow: call off the event loop."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    scram = {
        "salt": base64.b64encode(salt).decode(),
        "iterations": SCRAM_ITERATIONS,
        "stored_key": base64.b64encode(hashlib.sha256(client_key).digest()).decode(),
        "server_key": base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest()).decode(),
    }
    return hasher.hash(password), json.dumps(scram)


_log = logging.getLogger("mailhaven.store")

INDEX_QUIET = 1.0
"""Seconds without a new message before pending search text is indexed."""
INDEX_BACKLOG = 20_000
"""Pending messages beyond which indexing goes on under load too."""
INDEX_CHUNK = 500
"""Messages indexed per write transaction."""


def _index_some(conn: sqlite3.Connection) -> int:
    """Move up to INDEX_CHUNK pending rows into the trigram index; returns how many."""
    rows = conn.execute("SELECT id, subject, sender, recipients, cc, bcc, body, headers FROM fts_pending "
                        "ORDER BY id LIMIT ?", (INDEX_CHUNK,)).fetchall()
    if rows:
        conn.executemany("INSERT INTO messages_fts (rowid, subject, sender, recipients, cc, bcc, body, headers) "
                         "VALUES (?,?,?,?,?,?,?,?)", [tuple(r) for r in rows])
        conn.executemany("DELETE FROM fts_pending WHERE id=?", [(r[0],) for r in rows])
    return len(rows)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older version up to this schema."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(mailboxes)")}
    if "recent_uid" not in columns:
        conn.execute("ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 1")
        conn.execute("UPDATE mailboxes SET recent_uid = uidnext")   # mail already there is not new
    columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    if "summary" in columns:
        # Summaries lived in the messages rows: move them out (once; the table is rewritten).
        # Rows from before ENVELOPE/BODYSTRUCTURE were stored keep NULL: FETCH renders them.
        wire = "imap_envelope, imap_body" if "imap_envelope" in columns else "NULL, NULL"
        _log.info("moving message summaries to message_data (once, after an upgrade)")
        conn.execute(f"INSERT OR IGNORE INTO message_data SELECT id, summary, {wire} FROM messages")
        for column in ("summary", "imap_envelope", "imap_body"):
            if column in columns:
                conn.execute(f"ALTER TABLE messages DROP COLUMN {column}")
    # A mailbox created under the id of a deleted one by an older version started at
    # HIGHESTMODSEQ 1, below the deleted mailbox's expunges: lift it above them.
    conn.execute("UPDATE mailboxes SET highestmodseq = (SELECT MAX(modseq) FROM expunged e "
                 "WHERE e.mailbox_id = mailboxes.id) WHERE highestmodseq < (SELECT MAX(modseq) "
                 "FROM expunged e WHERE e.mailbox_id = mailboxes.id)")


def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def _account(row: sqlite3.Row) -> Account:
    return Account(id=row["id"], address=row["address"], quota=row["quota"], used=row["used"],
                   modseq=row["modseq"])


def _mailbox(row: sqlite3.Row, conn: sqlite3.Connection | None = None, counts: bool = False) -> Mailbox:
    subscribed = False
    messages = unseen = size = recent = 0
    if conn is not None:
        subscribed = conn.execute(
            "SELECT 1 FROM subscriptions WHERE account_id=? AND name=?", (row["account_id"], row["name"])
        ).fetchone() is not None
        if counts:
            c = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size),0), "
                "SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Seen %' THEN 0 ELSE 1 END), "
                "SUM(CASE WHEN uid >= ? THEN 1 ELSE 0 END) "
                "FROM messages WHERE mailbox_id=?", (row["recent_uid"], row["id"])
            ).fetchone()
            messages, size, unseen, recent = c[0], c[1], c[2] or 0, c[3] or 0
    return Mailbox(id=row["id"], account_id=row["account_id"], name=row["name"],
                   special_use=row["special_use"], uidvalidity=row["uidvalidity"],
                   uidnext=row["uidnext"], highestmodseq=row["highestmodseq"], recent_uid=row["recent_uid"],
                   subscribed=subscribed, messages=messages, unseen=unseen, size=size, recent=recent)


def _message(row: sqlite3.Row, with_summary: bool, imap_wire: bool = False) -> Message:
    flags = frozenset(row["flags"].split()) if row["flags"] else frozenset()
    wire = None
    summary: dict[str, Any] = {}
    if imap_wire:
        envelope = row["imap_envelope"]
        wire = (envelope, row["imap_body"]) if envelope is not None else None
    if with_summary or imap_wire:
        text = row["summary"]           # NULL where the wire forms serve instead (or no data row)
        summary = json.loads(text) if text else {}
    return Message(id=row["id"], mailbox_id=row["mailbox_id"], uid=row["uid"], blob_id=row["blob_id"],
                   size=row["size"], internal_date=row["internal_date"], flags=flags,
                   modseq=row["modseq"], thread_id=row["thread_id"], summary=summary, wire=wire)


def _select(with_summary: bool, imap_wire: bool = False) -> str:
    """``SELECT <message columns> FROM messages m``, joined to message_data when the summary
    or the wire forms are wanted (conditions then name columns as ``m.<column>``)."""
    columns = ", ".join("m." + c for c in _SUMMARY_COLUMNS.split(", "))
    if imap_wire:
        columns += ", d.imap_envelope, d.imap_body, " + (
            "d.summary" if with_summary else "CASE WHEN d.imap_envelope IS NULL THEN d.summary END AS summary")
    elif with_summary:
        columns += ", d.summary"
    else:
        return f"SELECT {columns} FROM messages m"
    return f"SELECT {columns} FROM messages m LEFT JOIN message_data d ON d.id = m.id"


def _message_rows(conn: sqlite3.Connection, mailbox_id: int, uids: list[int],
                  with_summary: bool, imap_wire: bool = False) -> list[sqlite3.Row]:
    out: list[sqlite3.Row] = []
    for i in range(0, len(uids), 500):
        chunk = uids[i:i + 500]
        out += conn.execute(
            f"{_select(with_summary, imap_wire)} WHERE m.mailbox_id=? AND m.uid IN "
            f"({','.join('?' * len(chunk))}) ORDER BY m.uid", (mailbox_id, *chunk)).fetchall()
    return out


def _uid_rows(conn: sqlite3.Connection, select: str, mailbox_id: int, uids: list[int]) -> list[Any]:
    """``select`` (over ``messages m``) of the rows of ``uids`` (ascending), as plain tuples in
    UID order. A dense run of UIDs (a whole mailbox, a range) is read as one BETWEEN on the
    (mailbox_id, uid) index, a sparse set by IN lists."""
    if not uids:
        return []
    cur = conn.cursor()
    cur.row_factory = None
    first, last = uids[0], uids[-1]
    if len(uids) * 2 >= last - first + 1:
        rows = cur.execute(f"{select} WHERE m.mailbox_id=? AND m.uid BETWEEN ? AND ? ORDER BY m.uid",
                           (mailbox_id, first, last)).fetchall()
        if len(rows) != len(uids):
            wanted = set(uids)
            rows = [r for r in rows if r[0] in wanted]
        return rows
    out: list[Any] = []
    for i in range(0, len(uids), 500):
        chunk = uids[i:i + 500]
        out += cur.execute(f"{select} WHERE m.mailbox_id=? AND m.uid IN ({','.join('?' * len(chunk))}) "
                           "ORDER BY m.uid", (mailbox_id, *chunk)).fetchall()
    return out


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a delivery stores beside the blob reference, computed before the transaction."""

    summary: dict[str, Any]
    summary_json: str
    fts: tuple[str, ...]
    wire: tuple[bytes, bytes] | None


def _prepare(raw: bytes, summary: dict[str, Any] | None = None) -> _Prepared:
    """The summary (``summary``, else computed), its JSON, search text and IMAP wire forms."""
    s = summary if summary is not None else summarize(raw)
    fts = search_fields(raw, s)     # takes the body text out of the summary before it is stored
    return _Prepared(s, json.dumps(s, ensure_ascii=False), fts, wire_forms(s))


class SQLiteStore:
    """The embedded backend: ``DATA/mailhaven.db`` and ``DATA/blobs``."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.db = Database(self.data_dir / "mailhaven.db")
        self.blobs = FileBlobStore(self.data_dir, db=self.db)
        self.db.add_schema(BLOB_SCHEMA)
        self.hub = ChangeHub()
        self._recent_floor = RecentFloors()
        self._index_pending = 0
        """Messages whose search text waits in fts_pending (as far as this process knows)."""
        self._last_indexed_write = 0.0
        self._indexer: asyncio.Task[None] | None = None
        self.passwords = PasswordChecker()

    # -- lifecycle ----------------------------------------------------------
    async def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blobs.prepare()
        await asyncio.to_thread(self.db.open, SCHEMA)
        await self.db.write(_upgrade)
        self._index_pending = await self.db.read(
            lambda c: c.execute("SELECT count(*) FROM fts_pending").fetchone()[0])
        self._indexer = asyncio.create_task(self._index_loop())

    async def close(self) -> None:
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer
            self._indexer = None
        await asyncio.to_thread(self.db.close)

    # -- the search index, filled in the background -----------------------------------
    def _index_later(self) -> None:
        self._index_pending += 1
        self._last_indexed_write = time.monotonic()

    async def _index_loop(self) -> None:
        """Move pending search text into the trigram index once delivery has been quiet for
        INDEX_QUIET seconds (or the backlog passes INDEX_BACKLOG), a chunk per transaction so
        deliveries interleave. Searches do not wait for it: they flush first."""
        while True:
            await asyncio.sleep(INDEX_QUIET / 4)
            if not self._index_pending:
                continue
            quiet = time.monotonic() - self._last_indexed_write >= INDEX_QUIET
            if quiet or self._index_pending >= INDEX_BACKLOG:
                try:
                    moved = await self.db.write(_index_some)
                except sqlite3.Error as exc:          # busy or locked: try again later
                    _log.warning("search indexing failed: %s", exc)
                    continue
                self._index_pending = max(0, self._index_pending - moved) if moved == INDEX_CHUNK else 0

    async def flush_index(self) -> None:
        """Index every pending message now (before a search)."""
        while await self.db.write(_index_some) == INDEX_CHUNK:
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
                        raw = self.blobs.read_sync(row[1])
                    except (OSError, NotFound):
                        continue                    # missing bytes: `store check` reports them
                    out.append((row[0], _prepare(raw)))
                return out

            prepared = await asyncio.to_thread(work)

            def write(ctx: WriteContext, prepared: list[tuple[int, _Prepared]] = prepared) -> int:
                conn = ctx.conn
                n = 0
                for message_id, p in prepared:
                    if conn.execute("SELECT 1 FROM messages WHERE id=?", (message_id,)).fetchone() is None:
                        continue                    # expunged meanwhile
                    conn.execute(_INSERT_DATA, (message_id, p.summary_json, *(p.wire or (None, None))))
                    conn.execute("DELETE FROM messages_fts WHERE rowid=?", (message_id,))
                    conn.execute("DELETE FROM fts_pending WHERE id=?", (message_id,))
                    conn.execute(_INSERT_PENDING, (message_id, *p.fts))
                    n += 1
                ctx.after_commit(self._index_later)
                return n

            done += await self.db.write_ctx(write)

    async def integrity_check(self) -> list[str]:
        """SQLite integrity check plus: every message row names an existing blob."""

        def check(conn: sqlite3.Connection) -> list[str]:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
            for row in conn.execute("SELECT DISTINCT m.blob_id FROM messages m "
                                    "WHERE NOT EXISTS (SELECT 1 FROM blob_data b WHERE b.id = m.blob_id)"):
                if not self.blobs.path(row[0]).is_file():
                    problems.append(f"missing blob {row[0]}")
            for row in conn.execute(
                "SELECT m.id FROM mailboxes m WHERE m.uidnext <= "
                "(SELECT COALESCE(MAX(uid),0) FROM messages WHERE mailbox_id=m.id)"
            ):
                problems.append(f"mailbox {row[0]} uidnext not above its highest uid")
            return problems

        return await self.db.read(check)

    async def collect_garbage(self, grace: float = 3600.0) -> int:
        referenced = await self.db.read(
            lambda conn: {r[0] for r in conn.execute("SELECT DISTINCT blob_id FROM messages")}
        )
        extra = await self._extra_blob_refs()
        files = await asyncio.to_thread(self.blobs.collect, referenced | extra, grace)
        return files + await self._collect_inline(grace)

    async def _collect_inline(self, grace: float) -> int:
        """Inline blobs no message or queue entry names, older than ``grace`` seconds."""
        cutoff = time.time() - grace

        def collect(conn: sqlite3.Connection) -> list[str]:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            users = ["SELECT blob_id FROM messages"]
            if "queue" in tables and "blob_id" in {r[1] for r in conn.execute("PRAGMA table_info(queue)")}:
                users.append("SELECT blob_id FROM queue")
            return [r[0] for r in conn.execute(
                f"DELETE FROM blob_data WHERE created < ? AND id NOT IN ({' UNION '.join(users)}) RETURNING id",
                (cutoff,))]

        removed = await self.db.write(collect)
        self.blobs.forget(removed)
        return len(removed)

    async def blob_ids(self) -> list[str]:
        """Every blob held, in files and in the database."""
        return await asyncio.to_thread(self.blobs.all_ids)

    async def _extra_blob_refs(self) -> set[str]:
        """Blobs referenced outside the messages table (the outbound queue)."""

        def refs(conn: sqlite3.Connection) -> set[str]:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            out: set[str] = set()
            if "queue" in tables:
                cols = {r[1] for r in conn.execute("PRAGMA table_info(queue)")}
                if "blob_id" in cols:
                    out |= {r[0] for r in conn.execute("SELECT DISTINCT blob_id FROM queue")}
            return out

        return await self.db.read(refs)

    # -- blobs --------------------------------------------------------------
    def blob_writer(self) -> FileBlobWriter:
        return self.blobs.writer()

    async def put_blob(self, data: bytes) -> BlobRef:
        return await self.blobs.put(data)

    async def read_blob(self, blob_id: str) -> bytes:
        return await self.blobs.read(blob_id)

    async def read_blobs(self, blob_ids: list[str]) -> list[bytes]:
        """Many at once (IMAP FETCH of a range), one trip off the event loop."""
        return await self.blobs.read_many(list(blob_ids))

    def blob_path(self, blob_id: str) -> str | None:
        return self.blobs.file_path(blob_id)

    # -- domains ------------------------------------------------------------
    async def add_domain(self, name: str) -> Domain:
        name = normalize_address("@" + name).lstrip("@")
        if not name or "." not in name and name != "localhost":
            raise InvalidName(f"invalid domain {name!r}")

        def add(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT INTO domains (name) VALUES (?)", (name,))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"domain {name} exists") from None

        await self.db.write(add)
        return Domain(name=name)

    async def remove_domain(self, name: str) -> None:
        name = normalize_address("@" + name).lstrip("@")

        def remove(conn: sqlite3.Connection) -> None:
            n = conn.execute("SELECT COUNT(*) FROM accounts WHERE domain=?", (name,)).fetchone()[0]
            if n:
                raise AlreadyExists(f"domain {name} still has {n} account(s); remove them first")
            if conn.execute("DELETE FROM domains WHERE name=?", (name,)).rowcount == 0:
                raise NotFound(f"no domain {name}")
            conn.execute("DELETE FROM aliases WHERE address LIKE ?", ("%@" + name,))

        await self.db.write(remove)

    async def list_domains(self) -> list[Domain]:
        rows = await self.db.read(lambda c: c.execute("SELECT name FROM domains ORDER BY name").fetchall())
        return [Domain(name=r[0]) for r in rows]

    async def is_local_domain(self, name: str) -> bool:
        name = normalize_address("@" + name).lstrip("@")
        return await self.db.read(
            lambda c: c.execute("SELECT 1 FROM domains WHERE name=?", (name,)).fetchone() is not None
        )

    # -- accounts -----------------------------------------------------------
    async def add_account(self, address: str, password: str, *, quota: int | None = None) -> Account:
        address = normalize_address(address)
        local, at, domain = address.rpartition("@")
        if not at or not local:
            raise InvalidName(f"invalid address {address!r}: use the full address, user@domain")
        hashed, scram = await asyncio.to_thread(hash_password, password)

        def add(ctx: WriteContext) -> int:
            conn = ctx.conn
            if conn.execute("SELECT 1 FROM domains WHERE name=?", (domain,)).fetchone() is None:
                raise NotFound(f"no domain {domain}; add it with 'mailhaven domain add {domain}'")
            try:
                cur = conn.execute(
                    "INSERT INTO accounts (address, domain, password, scram, quota, created) "
                    "VALUES (?,?,?,?,?,?)", (address, domain, hashed, scram, quota, time.time())
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"account {address} exists") from None
            account_id = int(cur.lastrowid or 0)
            for name, special in DEFAULT_MAILBOXES:
                self._create_mailbox(conn, account_id, name, special)
                conn.execute("INSERT OR IGNORE INTO subscriptions VALUES (?,?)", (account_id, name))
            return account_id

        account_id = await self.db.write_ctx(add)
        return await self.get_account_by_id(account_id)

    async def remove_account(self, address: str) -> None:
        address = normalize_address(address)

        def remove(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id FROM accounts WHERE address=?", (address,)).fetchone()
            if row is None:
                raise NotFound(f"no account {address}")
            for table, key in (("messages_fts", "rowid"), ("fts_pending", "id"), ("message_data", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT id FROM messages WHERE account_id=?)",
                             (row[0],))
            conn.execute("DELETE FROM messages WHERE account_id=?", (row[0],))
            conn.execute("DELETE FROM expunged WHERE account_id=?", (row[0],))
            conn.execute("DELETE FROM message_refs WHERE account_id=?", (row[0],))
            conn.execute("DELETE FROM accounts WHERE id=?", (row[0],))
            conn.execute("DELETE FROM aliases WHERE target=?", (address,))

        await self.db.write(remove)

    async def set_password(self, address: str, password: str) -> None:
        address = normalize_address(address)
        hashed, scram = await asyncio.to_thread(hash_password, password)

        def update(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE accounts SET password=?, scram=? WHERE address=?",
                            (hashed, scram, address)).rowcount == 0:
                raise NotFound(f"no account {address}")

        await self.db.write(update)

    async def set_quota(self, address: str, quota: int | None) -> None:
        address = normalize_address(address)

        def update(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE accounts SET quota=? WHERE address=?", (quota, address)).rowcount == 0:
                raise NotFound(f"no account {address}")

        await self.db.write(update)

    async def get_account(self, address: str) -> Account:
        address = normalize_address(address)
        row = await self.db.read(
            lambda c: c.execute("SELECT * FROM accounts WHERE address=?", (address,)).fetchone()
        )
        if row is None:
            raise NotFound(f"no account {address}")
        return _account(row)

    async def get_account_by_id(self, account_id: int) -> Account:
        row = await self.db.read(
            lambda c: c.execute("SELECT * FROM accounts WHERE id=?", (account_id,)).fetchone()
        )
        if row is None:
            raise NotFound(f"no account {account_id}")
        return _account(row)

    async def list_accounts(self) -> list[Account]:
        rows = await self.db.read(lambda c: c.execute("SELECT * FROM accounts ORDER BY address").fetchall())
        return [_account(r) for r in rows]

    async def authenticate(self, address: str, password: str) -> Account | None:
        address = normalize_address(address)
        row = await self.db.read(
            lambda c: c.execute("SELECT * FROM accounts WHERE address=?", (address,)).fetchone()
        )
        if row is None:
            await self.passwords.missing(password)
            return None
        return _account(row) if await self.passwords.check(row["password"], password) else None

    async def get_scram(self, address: str) -> ScramCredentials | None:
        address = normalize_address(address)
        row = await self.db.read(
            lambda c: c.execute("SELECT scram FROM accounts WHERE address=?", (address,)).fetchone()
        )
        if row is None or not row[0]:
            return None
        data = json.loads(row[0])
        return ScramCredentials(
            salt=base64.b64decode(data["salt"]), iterations=int(data["iterations"]),
            stored_key=base64.b64decode(data["stored_key"]),
            server_key=base64.b64decode(data["server_key"]),
        )

    # -- aliases ------------------------------------------------------------
    async def add_alias(self, address: str, targets: Sequence[str]) -> None:
        address = normalize_address(address)
        normalized = [normalize_address(t) for t in targets]
        if not normalized:
            raise InvalidName("an alias needs at least one target")
        domain = address.rpartition("@")[2]

        def add(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM domains WHERE name=?", (domain,)).fetchone() is None:
                raise NotFound(f"no domain {domain}")
            if conn.execute("SELECT 1 FROM accounts WHERE address=?", (address,)).fetchone():
                raise AlreadyExists(f"{address} is an account")
            for t in normalized:
                conn.execute("INSERT OR IGNORE INTO aliases VALUES (?,?)", (address, t))

        await self.db.write(add)

    async def remove_alias(self, address: str) -> None:
        address = normalize_address(address)

        def remove(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM aliases WHERE address=?", (address,)).rowcount == 0:
                raise NotFound(f"no alias {address}")

        await self.db.write(remove)

    async def list_aliases(self) -> dict[str, list[str]]:
        rows = await self.db.read(
            lambda c: c.execute("SELECT address, target FROM aliases ORDER BY address, target").fetchall()
        )
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(r[1])
        return out

    async def addresses_of(self, account_id: int) -> list[str]:
        def find(conn: sqlite3.Connection) -> list[str]:
            row = conn.execute("SELECT address FROM accounts WHERE id=?", (account_id,)).fetchone()
            if row is None:
                return []
            own = row[0]
            aliases = [
                r[0] for r in conn.execute(
                    "SELECT address FROM aliases GROUP BY address HAVING COUNT(*)=1 AND MAX(target)=?",
                    (own,),
                )
                if not r[0].startswith("@")
            ]
            return [own, *aliases]

        return await self.db.read(find)

    async def resolve(self, address: str) -> Resolution:
        address = normalize_address(address)
        domain = address.rpartition("@")[2]

        def find(conn: sqlite3.Connection) -> Resolution:
            if conn.execute("SELECT 1 FROM domains WHERE name=?", (domain,)).fetchone() is None:
                return Resolution(local_domain=False)
            ids: list[int] = []
            seen: set[str] = set()
            todo = [address]
            while todo and len(seen) < 100:
                addr = todo.pop(0)
                if addr in seen:
                    continue
                seen.add(addr)
                row = conn.execute("SELECT id FROM accounts WHERE address=?", (addr,)).fetchone()
                if row is not None:
                    if row[0] not in ids:
                        ids.append(row[0])
                    continue
                targets = [r[0] for r in conn.execute("SELECT target FROM aliases WHERE address=?", (addr,))]
                if not targets and addr == address:
                    # Catch-all for the domain, consulted only when no user or alias matched.
                    targets = [r[0] for r in conn.execute(
                        "SELECT target FROM aliases WHERE address=?", ("@" + domain,))]
                todo.extend(targets)
            return Resolution(local_domain=True, account_ids=tuple(ids))

        return await self.db.read(find)

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

    async def get_mailbox(self, account_id: int, name: str, *, counts: bool = True) -> Mailbox:
        name = normalize_mailbox_name(name)

        def find(conn: sqlite3.Connection) -> Mailbox:
            row = conn.execute("SELECT * FROM mailboxes WHERE account_id=? AND name=?",
                               (account_id, name)).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {name}")
            return _mailbox(row, conn, counts)

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
            for table, key in (("messages_fts", "rowid"), ("fts_pending", "id"), ("message_data", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT id FROM messages WHERE mailbox_id=?)",
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
                (account_id, _like_prefix(old + "/")),
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
                        flags: str, internal_date: float, prepared: _Prepared, modseq: int) -> sqlite3.Row:
        summary, fts, wire = prepared.summary, prepared.fts, prepared.wire
        conn = ctx.conn
        uid = conn.execute(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = ? WHERE id=? RETURNING uidnext - 1",
            (modseq, mailbox_id),
        ).fetchone()[0]
        thread_id = self._thread_id(conn, account_id, summary)
        message_id = summary.get("message_id", "")
        cur = conn.execute(
            "INSERT INTO messages (mailbox_id, account_id, uid, blob_id, size, internal_date, flags, "
            "modseq, thread_id, message_id) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (mailbox_id, account_id, uid, blob.id, blob.size, internal_date, flags, modseq,
             thread_id or 0, message_id),
        )
        new_id = cur.fetchone()[0]
        conn.execute(_INSERT_DATA, (new_id, prepared.summary_json, *(wire or (None, None))))
        if thread_id is None:
            conn.execute("UPDATE messages SET thread_id=id WHERE id=?", (new_id,))
            thread_id = new_id
        refs = message_ids(summary.get("references", "")) + message_ids(summary.get("in_reply_to", ""))
        if refs:
            conn.executemany("INSERT INTO message_refs VALUES (?,?,?)",
                             [(account_id, r, thread_id) for r in dict.fromkeys(refs)])
        if fts is not None:
            # Indexed later, in batches (see _index_loop): the trigram index was a third of
            # the CPU of every inbound message.
            conn.execute(_INSERT_PENDING, (new_id, *fts))
            ctx.after_commit(self._index_later)
        conn.execute("UPDATE accounts SET used = used + ? WHERE id=?", (blob.size, account_id))
        row = conn.execute(f"{_select(True)} WHERE m.id=?", (new_id,)).fetchone()
        return row  # type: ignore[no-any-return]

    async def _summary_for(self, blob: BlobRef, summary: dict[str, Any] | None) -> _Prepared:
        def work(raw: bytes) -> _Prepared:
            return _prepare(raw, summary)

        if blob.size <= SUMMARY_ON_LOOP_MAX:
            raw = self.blobs.recent(blob.id)
            if raw is not None:
                return work(raw)
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
                acct = conn.execute("SELECT quota, used FROM accounts WHERE id=?", (account_id,)).fetchone()
                if acct is None:
                    raise NotFound(f"no account {account_id}")
                if (not ignore_quota and acct["quota"] is not None
                        and acct["used"] + blob.size > acct["quota"]):
                    out.append((account_id, None))
                    continue
                box = conn.execute("SELECT id FROM mailboxes WHERE account_id=? AND name=?",
                                   (account_id, mailbox)).fetchone()
                if box is None:
                    box = conn.execute("SELECT id FROM mailboxes WHERE account_id=? AND name='INBOX'",
                                       (account_id,)).fetchone()
                modseq = self._bump_modseq(conn, account_id)
                row = self._insert_message(ctx, account_id, box[0], blob, flag_text, when, prepared, modseq)
                self._publish(ctx, account_id, box[0], "exists", modseq)
                out.append((account_id, row))
            return out

        rows = await self.db.write_ctx(deliver)
        return [
            DeliveryResult(account_id=a, message=_message(r, True) if r is not None else None,
                           over_quota=r is None)
            for a, r in rows
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

        return _message(await self.db.write_ctx(append), True)

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

        rows, data = await self.db.read(find)
        return [(_message(r, with_summary, imap_wire), d) for r, d in zip(rows, data, strict=True)]

    async def get_wire_forms(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes | None, bytes | None]]:
        wanted = sorted(set(uids))
        return await self.db.read(lambda conn: _uid_rows(
            conn, "SELECT m.uid, d.imap_envelope, d.imap_body FROM messages m "
                  "LEFT JOIN message_data d ON d.id = m.id", mailbox_id, wanted))

    async def get_raw(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes]]:
        wanted = sorted(set(uids))

        def find(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            rows = _uid_rows(conn, "SELECT m.uid, m.blob_id FROM messages m", mailbox_id, wanted)
            data = self.blobs.read_many_in(conn, [r[1] for r in rows])
            return [(r[0], d) for r, d in zip(rows, data, strict=True)]

        return await self.db.read(find)

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
                conn.execute("DELETE FROM messages_fts WHERE rowid=?", (row["id"],))
                conn.execute("DELETE FROM fts_pending WHERE id=?", (row["id"],))
                conn.execute("DELETE FROM message_data WHERE id=?", (row["id"],))
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
            conn.execute(                                    # indexed or not yet: the copy waits its turn
                "INSERT INTO fts_pending (id, subject, sender, recipients, cc, bcc, body, headers) "
                "SELECT ?, subject, sender, recipients, cc, bcc, body, headers FROM messages_fts WHERE rowid=? "
                "UNION ALL SELECT ?, subject, sender, recipients, cc, bcc, body, headers FROM fts_pending "
                "WHERE id=?", (new_id, row["id"], new_id, row["id"]))
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
            rows = conn.execute(f"{_select(False)} WHERE account_id=? AND modseq>? "
                                "ORDER BY id", (account_id, modseq)).fetchall()
            gone = [r[0] for r in conn.execute(
                "SELECT DISTINCT message_id FROM expunged e WHERE account_id=? AND modseq>? "
                "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = e.message_id) ORDER BY message_id",
                (account_id, modseq))]
            return [_message(r, False) for r in rows], gone, int(current[0])

        return await self.db.read(find)

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

    # -- IMAP fast path (optional; imap/selected.py falls back to list_messages) ----
    async def list_message_meta(self, mailbox_id: int) -> list[tuple[int, str, int, float, int]]:
        """(uid, flags as space-separated text, modseq, internal date, size) in UID order:
        what an IMAP SELECT needs, without building a Message per row."""
        return await self.db.read(lambda c: c.execute(
            "SELECT uid, flags, modseq, internal_date, size FROM messages WHERE mailbox_id=? ORDER BY uid",
            (mailbox_id,)).fetchall())

    # -- change feed --------------------------------------------------------
    def subscribe(self, account_id: int | None = None) -> Subscription:
        return self.hub.subscribe(account_id)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


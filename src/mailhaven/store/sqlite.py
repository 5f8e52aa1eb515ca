"""The embedded store: SQLite (WAL, synchronous=FULL) plus files for message bytes.

:class:`SQLiteStore` is lifecycle, blobs, domains, accounts and aliases; the rest is mixed
in from one module per concern, as on the PostgreSQL side:
``sqlitemailboxes.py``, ``sqlitemessages.py``, ``sqliteindex.py`` (search),
``sqlitequeue.py`` (outbound queue), ``sqlitewebdata.py`` (tokens, identities, JMAP
lookups); ``sqliteschema.py`` holds the tables, ``sqliterows.py`` rows to API objects.

Invariants (see api.py for the contract every backend keeps):
- Every SQL statement runs on a database thread (db.py), never on the event loop.
- Message bytes are durable before the row naming them is written (blobs.py).
- Each write job takes one MODSEQ from the account counter for everything it changes.
- Change-feed events are published only after COMMIT (``WriteContext.after_commit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from ..datadir import private_dir, tighten
from .api import (
    DEFAULT_MAILBOXES,
    Account,
    AlreadyExists,
    BlobRef,
    Domain,
    InvalidName,
    NotFound,
    Resolution,
    ScramCredentials,
)
from .blobs import SCHEMA as BLOB_SCHEMA
from .blobs import FileBlobStore, FileBlobWriter
from .changes import ChangeHub, Subscription
from .db import Database, WriteContext
from .names import (  # noqa: F401 - their home was here; other modules import them from here
    SCRAM_ITERATIONS,
    hash_password,
    like_prefix,
    normalize_address,
    normalize_mailbox_name,
    scram_secrets,
    validate_mailbox_name,
)
from .passwords import PasswordChecker
from .recent import RecentFloors
from .searchdb import ALIAS as INDEX_ALIAS
from .searchdb import INDEX_FILE, SearchDatabase, make_pairing
from .searchdb import MAIN_SCHEMA as INDEX_MAIN_SCHEMA
from .sqlite_ratelimit import SCHEMA as RATE_SCHEMA
from .sqlite_ratelimit import SQLiteRateLimits
from .sqlite_security import SCHEMA as SECURITY_SCHEMA
from .sqlite_security import SQLiteSecurity
from .sqlitedmarc import SCHEMA as DMARC_SCHEMA
from .sqlitedmarc import DmarcMethods
from .sqliteindex import IndexMethods, _backlog, unindex
from .sqlitemailboxes import MailboxMethods
from .sqlitemessages import MessageMethods
from .sqlitequeue import SCHEMA as QUEUE_SCHEMA
from .sqlitequeue import QueueMethods
from .sqlitequeue import upgrade as upgrade_queue
from .sqliterefill import RefillMethods, mark_refill, refill_listed
from .sqliterows import _account
from .sqliteschema import SCHEMA, _upgrade
from .sqlitesieve import SCHEMA as SIEVE_SCHEMA
from .sqlitesieve import SieveMethods
from .sqlitesieve import upgrade as upgrade_sieve
from .sqlitespam import SCHEMA as SPAM_SCHEMA
from .sqlitespam import SpamMethods
from .sqlitetlspolicy import SCHEMA as TLS_POLICY_SCHEMA
from .sqlitetlspolicy import TLSPolicyMethods
from .sqlitewebdata import SCHEMA as WEB_SCHEMA
from .sqlitewebdata import WebDataMethods

_log = logging.getLogger("mailhaven.store")


class SQLiteStore(IndexMethods, RefillMethods, MailboxMethods, MessageMethods, QueueMethods, WebDataMethods, SQLiteSecurity,
                  SieveMethods, DmarcMethods, TLSPolicyMethods, SpamMethods, SQLiteRateLimits):
    """The embedded backend: ``DATA/mailhaven.db``, ``DATA/blobs`` and the search index's
    ``DATA/search.db``."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.db = Database(self.data_dir / "mailhaven.db")
        self.blobs = FileBlobStore(self.data_dir, db=self.db)
        self.db.add_schema(BLOB_SCHEMA)
        self.db.add_schema(QUEUE_SCHEMA)
        self.db.add_schema(WEB_SCHEMA)
        self.db.add_schema(SECURITY_SCHEMA)
        self.db.add_schema(SIEVE_SCHEMA)
        self.db.add_schema(DMARC_SCHEMA)
        self.db.add_schema(TLS_POLICY_SCHEMA)
        self.db.add_schema(SPAM_SCHEMA)
        self.db.add_schema(RATE_SCHEMA)
        self.db.add_schema(INDEX_MAIN_SCHEMA)
        self.search = SearchDatabase(self.data_dir / INDEX_FILE, self.db.path)
        self.db.attach(INDEX_ALIAS, self.search.path)
        self._slicing = asyncio.Lock()
        """One index slice at a time in this process (sqliteindex.py ``_index_slice``)."""
        self.hub = ChangeHub(on_publish=self.db.changed)
        self._recent_floor = RecentFloors()
        self._index_pending = 0
        """Messages whose search text waits in fts_pending (as far as this process knows)."""
        self._last_indexed_write = 0.0
        self._foreign_commits = 0
        """Deliveries other processes (SMTP workers) told this one of (delivered_elsewhere)."""
        self._indexer: asyncio.Task[None] | None = None
        self._refill_wanted = False
        """A refill of the lost search index is listed (sqliterefill.py), as of open."""
        self._refiller: asyncio.Task[int] | None = None
        """The refill under way in this process (:meth:`refill_in_background`)."""
        self._refilling = asyncio.Lock()
        """One refill batch at a time in this process (the background's or a search's)."""
        self._refill_warned: set[int] = set()
        """Mailboxes whose searches were said to answer from a part-filled index."""
        self.passwords = PasswordChecker()

    # -- lifecycle ----------------------------------------------------------
    async def open(self) -> None:
        tighten(self.data_dir)          # made by an older version: 0644 files, 0755 directories
        private_dir(self.data_dir)
        self.blobs.prepare()
        await asyncio.to_thread(self.db.open, SCHEMA)
        moved_index = await self.db.write(_upgrade)
        await self.db.write(upgrade_queue)
        await self.db.write(upgrade_sieve)
        missing = await asyncio.to_thread(self.search.missing)
        if missing:
            # Listed before search.db is made anew, so that a crash right after leaves it listed.
            await self.db.write(mark_refill)
        await self.db.write(make_pairing)
        await asyncio.to_thread(self.search.open)      # before the first read attaches it
        if moved_index:
            await asyncio.to_thread(self.search.clear)
        await self._pair_index(trust_unpaired=missing)
        self._index_pending = await self.db.read(_backlog)
        self._refill_wanted = await self.db.read(refill_listed)
        if self._refill_wanted:
            _log.warning("the search index (%s, made anew or emptied while messages were stored) is being refilled from "
                         "the messages' bytes: `mailhaven serve` refills it in the background, and a search "
                         "refills its own mailbox first", self.search.path)
        self._indexer = asyncio.create_task(self._index_loop())

    async def _pair_index(self, trust_unpaired: bool) -> None:
        """search.db checked against mailhaven.db (searchdb.py's pairing): one matching goes on;
        one from another history (restored from another backup than mailhaven.db, or copied
        from elsewhere) is emptied, with a refill listed first, and refilled like a lost one."""
        for _ in range(3):
            check = await asyncio.to_thread(self.search.pair, trust_unpaired)
            if check.mismatch is None:
                return
            if check.cleared:
                _log.warning("the search index (%s) does not match mailhaven.db: %s; it was emptied and is "
                             "refilled from the messages' bytes", self.search.path, check.mismatch)
                return
            await self.db.write(mark_refill)        # listed before the index is emptied
        raise RuntimeError("the search index does not match mailhaven.db, and no refill stays listed")

    async def close(self) -> None:
        await self._stop_refill()
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer
            self._indexer = None
        await asyncio.to_thread(self.search.close)
        await asyncio.to_thread(self.db.close)

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

    async def blob_size(self, blob_id: str) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.blobs.executor, self.blobs.size_sync, blob_id)

    async def read_blob_range(self, blob_id: str, start: int, length: int) -> bytes:
        return await self.blobs.read_range(blob_id, start, length)

    def blob_chunks(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.blobs.chunks(blob_id, start, end)

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
            unindex(conn, [r[0] for r in conn.execute("SELECT id FROM messages WHERE account_id=?", (row[0],))])
            conn.execute("DELETE FROM message_data WHERE id IN (SELECT id FROM messages WHERE account_id=?)", (row[0],))
            conn.execute("DELETE FROM message_headers WHERE id IN (SELECT id FROM messages WHERE account_id=?)",
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
        return scram_secrets(row[0])

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
            forward: list[str] = []
            seen: set[str] = set()
            todo = [address]
            while todo and len(seen) < 100:
                addr = todo.pop(0)
                if addr in seen:
                    continue
                seen.add(addr)
                if addr != address and conn.execute("SELECT 1 FROM domains WHERE name=?",
                                                    (addr.rpartition("@")[2],)).fetchone() is None:
                    forward.append(addr)                      # an external alias target
                    continue
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
            return Resolution(local_domain=True, account_ids=tuple(ids), forward=tuple(forward))

        return await self.db.read(find)

    # -- change feed --------------------------------------------------------
    def subscribe(self, account_id: int | None = None) -> Subscription:
        return self.hub.subscribe(account_id)

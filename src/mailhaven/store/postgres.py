"""The scale-out store: PostgreSQL through asyncpg, shared by several Mailhaven nodes.

Invariants (see api.py for the contract every backend keeps):
- Message bytes are committed in the ``blobs`` table (pgblobs.py) before any row names
  them; a foreign key makes a message naming a missing blob impossible.
- Every write transaction first locks the account row(s) it changes (in id order), so
  writes to one account are serial across all nodes: one MODSEQ per transaction from
  ``UPDATE accounts ... RETURNING modseq``, UIDs from ``UPDATE mailboxes SET uidnext =
  uidnext + 1 RETURNING``, and UIDs become visible in the order they were given out.
- Change-feed events are published after COMMIT: locally into the hub, to other nodes by
  ``pg_notify`` inside the transaction, which PostgreSQL delivers only on commit
  (pgchanges.py).
- A transaction that loses a deadlock or serialization race is retried whole; a call
  that raises has changed nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ..datadir import private_dir, tighten
from .api import (
    DEFAULT_MAILBOXES,
    Account,
    AlreadyExists,
    BlobRef,
    Domain,
    InvalidName,
    Mailbox,
    NotFound,
    Resolution,
    ScramCredentials,
    StoreError,
)
from .changes import ChangeHub, Subscription, encode_change
from .names import (
    hash_password,
    like_prefix,
    normalize_address,
    normalize_mailbox_name,
    scram_secrets,
    validate_mailbox_name,
)
from .passwords import PasswordChecker
from .pg_ratelimit import TABLES as RATE_TABLES
from .pg_ratelimit import PgRateLimits
from .pg_security import PgSecurity
from .pgblobs import PgBlobStore, PgBlobWriter
from .pgchanges import ChangeListener
from .pgdmarc import SCHEMA as DMARC_SCHEMA
from .pgdmarc import DmarcMethods
from .pgmessages import (
    SEEN,
    MessageMethods,
    Tx,
    bump_modseq,
    lock_account,
    mailbox_account,
)
from .pgqueue import SCHEMA as QUEUE_SCHEMA
from .pgqueue import QueueMethods
from .pgschema import check_schema_name, drop_schema, ensure_schema
from .pgsieve import SCHEMA as SIEVE_SCHEMA
from .pgsieve import SieveMethods
from .pgspam import SCHEMA as SPAM_SCHEMA
from .pgspam import SpamMethods
from .pgtlspolicy import SCHEMA as TLS_POLICY_SCHEMA
from .pgtlspolicy import TLSPolicyMethods
from .pgwebdata import SCHEMA as WEB_SCHEMA
from .pgwebdata import WebDataMethods
from .recent import RecentFloors

T = TypeVar("T")

DEFAULT_SCHEMA = "mailhaven"
RETRIES = 8
CONNECT_TIMEOUT = 10.0
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


def _account(row: asyncpg.Record) -> Account:
    return Account(id=row["id"], address=row["address"], quota=row["quota"], used=row["used"],
                   modseq=row["modseq"])


def _mailbox(row: asyncpg.Record) -> Mailbox:
    return Mailbox(id=row["id"], account_id=row["account_id"], name=row["name"],
                   special_use=row["special_use"], uidvalidity=row["uidvalidity"],
                   uidnext=row["uidnext"], highestmodseq=row["highestmodseq"], recent_uid=row["recent_uid"],
                   subscribed=row["subscribed"], messages=row["n"] or 0, unseen=row["unseen"] or 0,
                   size=row["bytes"] or 0, recent=row["recent"] or 0)


def _mailbox_query(where: str, counts: bool) -> str:
    count = ("LEFT JOIN LATERAL (SELECT count(*) AS n, sum(size) AS bytes, "
             "count(*) FILTER (WHERE NOT ($1::text = ANY(flags))) AS unseen, "
             "count(*) FILTER (WHERE uid >= b.recent_uid) AS recent "
             "FROM messages WHERE mailbox_id = b.id) c ON true")
    if not counts:
        count = ("LEFT JOIN LATERAL (SELECT NULL::bigint AS n, NULL::bigint AS bytes, NULL::bigint AS unseen, "
                 "NULL::bigint AS recent "
                 "WHERE $1::text IS NULL) c ON true")
    return (f"SELECT b.*, EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = b.account_id "
            f"AND s.name = b.name) AS subscribed, c.n, c.bytes, c.unseen, c.recent FROM mailboxes b {count} "
            f"WHERE {where} ORDER BY b.name <> 'INBOX', b.name COLLATE \"C\"")


class DatabaseUnavailable(StoreError):
    """PostgreSQL could not be reached or refused us at start-up."""


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(MessageMethods, QueueMethods, WebDataMethods, PgSecurity, SieveMethods, DmarcMethods,
                    TLSPolicyMethods, SpamMethods, PgRateLimits):
    """Accounts, mailboxes, messages and message bytes in one PostgreSQL schema.

    ``fresh_schema`` drops and re-creates the schema (tests); without an explicit
    ``schema`` it also picks a unique throwaway schema name, dropped again by close().
    """

    def __init__(self, dsn: str, data_dir: Path | str, *, fresh_schema: bool = False,
                 schema: str | None = None, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.data_dir = Path(data_dir)
        self._drop_on_close = fresh_schema and schema is None
        if schema is None:
            schema = f"mh_test_{secrets.token_hex(6)}" if fresh_schema else DEFAULT_SCHEMA
        self.schema = check_schema_name(schema)
        self.fresh_schema = fresh_schema
        self.pool_size = pool_size
        self.origin = secrets.token_hex(8)
        self.channel = f"{self.schema}_changes"
        self.hub = ChangeHub()
        self._recent_floor = RecentFloors()
        self.passwords = PasswordChecker()
        """Per mailbox, a UID below which every message is known to be claimed as \\Recent."""
        self.blobs = PgBlobStore(self.data_dir / "tmp")
        self.trigram_index = False
        self._pool: asyncpg.Pool | None = None
        self._listener: ChangeListener | None = None

    # -- lifecycle ----------------------------------------------------------
    def _settings(self) -> dict[str, str]:
        return {"search_path": f'"{self.schema}", public', "application_name": "mailhaven"}

    async def connect(self) -> asyncpg.Connection:
        """A new connection outside the pool, with this store's search_path."""
        return await asyncpg.connect(self.dsn, server_settings=self._settings())

    async def open(self) -> None:
        tighten(self.data_dir)
        private_dir(self.blobs.tmp_dir)
        try:
            conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)
            try:
                self.trigram_index = await ensure_schema(conn, self.schema, fresh=self.fresh_schema)
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size,
                                                   timeout=CONNECT_TIMEOUT, server_settings=self._settings())
            await self.ensure_schema(QUEUE_SCHEMA + WEB_SCHEMA + SIEVE_SCHEMA + DMARC_SCHEMA + TLS_POLICY_SCHEMA
                                     + SPAM_SCHEMA + RATE_TABLES)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailable(
                f"cannot open the PostgreSQL store at {redact_dsn(self.dsn)}: {exc}") from None
        self.blobs.pool = self._pool
        self._listener = ChangeListener(self.connect, self.channel, self.origin, self.hub)
        await self._listener.start()

    def refill_in_background(self) -> None:
        """Nothing to refill: the search text (``blob_text``) is written in the delivery's
        transaction, and its pg_trgm indexes live in the same database, kept by PostgreSQL
        (a damaged one is PostgreSQL's REINDEX; searches read the text without it)."""

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self.blobs.pool = None
            await pool.close()
            if self._drop_on_close:
                conn = await asyncpg.connect(self.dsn)
                try:
                    await drop_schema(conn, self.schema)
                finally:
                    await conn.close()

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (for extension modules with their own tables, e.g. the queue)."""
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def ensure_schema(self, sql: str) -> None:
        """Idempotent DDL of an extension module (``CREATE TABLE IF NOT EXISTS ...``), run
        in this store's schema under the same advisory lock as the store's own, so nodes
        starting together take turns. Tables may reference ``blobs(id)``: the garbage
        collector then keeps the blobs they name."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "mailhaven:" + self.schema)
                await conn.execute(sql)

    async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction (retried whole on deadlock); publish its changes
        after COMMIT: to other nodes by NOTIFY, to this node's hub directly.

        Extension modules use it too: ``fn(tx)`` runs SQL on ``tx.conn`` (asyncpg; the
        search_path is this store's schema) and may ``tx.publish(...)`` a change. It may
        run more than once, so it must not have effects outside the database."""
        for attempt in range(RETRIES):
            async with self.pool.acquire() as conn:
                tx = Tx(conn)
                try:
                    async with conn.transaction():
                        result = await fn(tx)
                        if tx.changes:
                            await conn.execute(
                                "SELECT pg_notify($1, x) FROM unnest($2::text[]) AS x", self.channel,
                                [encode_change(self.origin, c) for c in tx.changes])
                except _RETRYABLE:
                    if attempt == RETRIES - 1:
                        raise
                    await asyncio.sleep(0.005 * (attempt + 1))
                    continue
            for change in tx.changes:
                self.hub.publish(change)
            return result
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` in one read-only snapshot (REPEATABLE READ)."""
        async with self.pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await fn(conn)

    async def integrity_check(self) -> list[str]:
        """Cross-table consistency a crash or a bug could break (amcheck is the DBA's tool)."""
        checks = [
            ("SELECT DISTINCT m.blob_id FROM messages m LEFT JOIN blobs b ON b.id = m.blob_id "
             "WHERE b.id IS NULL", "missing blob {}"),
            ("SELECT id FROM blobs b WHERE octet_length(data) + COALESCE((SELECT sum(octet_length(c.data)) "
             "FROM blob_chunks c WHERE c.blob_id = b.id), 0) <> size", "blob {} has the wrong size"),
            ("SELECT b.id FROM mailboxes b WHERE b.uidnext <= "
             "(SELECT COALESCE(max(uid), 0) FROM messages WHERE mailbox_id = b.id)",
             "mailbox {} uidnext not above its highest uid"),
            ("SELECT a.address FROM accounts a WHERE a.modseq < "
             "(SELECT COALESCE(max(modseq), 0) FROM messages WHERE account_id = a.id)",
             "account {} modseq below a message's modseq"),
            ("SELECT a.address FROM accounts a WHERE a.used <> "
             "(SELECT COALESCE(sum(size), 0) FROM messages WHERE account_id = a.id)",
             "account {} quota usage differs from its messages"),
        ]

        async def check(conn: asyncpg.Connection) -> list[str]:
            problems: list[str] = []
            for sql, text in checks:
                problems += [text.format(r[0]) for r in await conn.fetch(sql)]
            return problems

        return await self.read(check)

    async def _blob_references(self, conn: asyncpg.Connection) -> list[tuple[str, str]]:
        """(table, column) of every foreign key naming a blob, except cascading ones."""
        rows = await conn.fetch(
            "SELECT c.conrelid::regclass::text AS tbl, a.attname AS col FROM pg_constraint c "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "WHERE c.contype = 'f' AND c.confrelid = 'blobs'::regclass AND c.confdeltype <> 'c'")
        return [(r["tbl"], r["col"]) for r in rows]

    async def collect_garbage(self, grace: float = 3600.0) -> int:
        """Delete blobs no row names (messages, queue...), older than ``grace`` seconds."""

        async def collect(tx: Tx) -> list[str]:
            refs = await self._blob_references(tx.conn)
            unused = " ".join(f"AND NOT EXISTS (SELECT 1 FROM {t} r WHERE r.{c} = b.id)" for t, c in refs)
            rows = await tx.conn.fetch(
                f"DELETE FROM blobs b WHERE b.created < clock_timestamp() - make_interval(secs => $1) "
                f"{unused} RETURNING b.id", float(grace))
            return [r[0] for r in rows]

        for attempt in range(3):
            try:
                removed = await self.write(collect)
            except asyncpg.ForeignKeyViolationError:
                # A row naming one of them committed meanwhile; the next round skips it.
                if attempt == 2:
                    raise
                continue
            self.blobs.forget(removed)
            return len(removed)
        return 0

    # -- blobs --------------------------------------------------------------
    def blob_writer(self) -> PgBlobWriter:
        return self.blobs.writer()

    async def put_blob(self, data: bytes) -> BlobRef:
        return await self.blobs.put(data)

    async def read_blob(self, blob_id: str) -> bytes:
        return await self.blobs.read(blob_id)

    async def read_blobs(self, blob_ids: list[str]) -> list[bytes]:
        """Many blobs in one round trip (not in the Store protocol; IMAP FETCH can use it)."""
        return await self.blobs.read_many(blob_ids)

    def blob_path(self, blob_id: str) -> str | None:
        return None

    async def blob_size(self, blob_id: str) -> int:
        return await self.blobs.size(blob_id)

    async def read_blob_range(self, blob_id: str, start: int, length: int) -> bytes:
        return await self.blobs.read_range(blob_id, start, length)

    def blob_chunks(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.blobs.chunks(blob_id, start, end)

    async def blob_ids(self) -> list[str]:
        """Every stored blob id (admin and tests)."""
        return await self.blobs.all_ids()

    # -- domains ------------------------------------------------------------
    async def add_domain(self, name: str) -> Domain:
        name = normalize_address("@" + name).lstrip("@")
        if not name or "." not in name and name != "localhost":
            raise InvalidName(f"invalid domain {name!r}")
        try:
            await self.pool.execute("INSERT INTO domains (name) VALUES ($1)", name)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"domain {name} exists") from None
        return Domain(name=name)

    async def remove_domain(self, name: str) -> None:
        name = normalize_address("@" + name).lstrip("@")

        async def remove(tx: Tx) -> None:
            n = await tx.conn.fetchval("SELECT count(*) FROM accounts WHERE domain=$1", name)
            if n:
                raise AlreadyExists(f"domain {name} still has {n} account(s); remove them first")
            if await tx.conn.fetchval("DELETE FROM domains WHERE name=$1 RETURNING name", name) is None:
                raise NotFound(f"no domain {name}")
            await tx.conn.execute("DELETE FROM aliases WHERE address LIKE $1",
                                  "%" + like_prefix("@" + name)[:-1])

        await self.write(remove)

    async def list_domains(self) -> list[Domain]:
        rows = await self.pool.fetch('SELECT name FROM domains ORDER BY name COLLATE "C"')
        return [Domain(name=r[0]) for r in rows]

    async def is_local_domain(self, name: str) -> bool:
        name = normalize_address("@" + name).lstrip("@")
        return await self.pool.fetchval("SELECT 1 FROM domains WHERE name=$1", name) is not None

    # -- accounts -----------------------------------------------------------
    async def add_account(self, address: str, password: str, *, quota: int | None = None) -> Account:
        address = normalize_address(address)
        local, at, domain = address.rpartition("@")
        if not at or not local:
            raise InvalidName(f"invalid address {address!r}: use the full address, user@domain")
        hashed, scram = await asyncio.to_thread(hash_password, password)

        async def add(tx: Tx) -> int:
            conn = tx.conn
            if await conn.fetchval("SELECT 1 FROM domains WHERE name=$1 FOR SHARE", domain) is None:
                raise NotFound(f"no domain {domain}; add it with 'mailhaven domain add {domain}'")
            try:
                account_id: int = await conn.fetchval(
                    "INSERT INTO accounts (address, domain, password, scram, quota, created) "
                    "VALUES ($1,$2,$3,$4,$5,$6) RETURNING id", address, domain, hashed, scram, quota,
                    time.time())
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"account {address} exists") from None
            for name, special in DEFAULT_MAILBOXES:
                await self._create_mailbox(conn, account_id, name, special)
            await conn.execute("INSERT INTO subscriptions SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                               account_id, [n for n, _ in DEFAULT_MAILBOXES])
            return account_id

        return await self.get_account_by_id(await self.write(add))

    async def remove_account(self, address: str) -> None:
        address = normalize_address(address)

        async def remove(tx: Tx) -> None:
            account_id = await tx.conn.fetchval("SELECT id FROM accounts WHERE address=$1 FOR UPDATE", address)
            if account_id is None:
                raise NotFound(f"no account {address}")
            await tx.conn.execute("DELETE FROM messages WHERE account_id=$1", account_id)
            await tx.conn.execute("DELETE FROM expunged WHERE account_id=$1", account_id)
            await tx.conn.execute("DELETE FROM accounts WHERE id=$1", account_id)
            await tx.conn.execute("DELETE FROM aliases WHERE target=$1", address)

        await self.write(remove)

    async def set_password(self, address: str, password: str) -> None:
        address = normalize_address(address)
        hashed, scram = await asyncio.to_thread(hash_password, password)
        done = await self.pool.fetchval("UPDATE accounts SET password=$1, scram=$2 WHERE address=$3 "
                                        "RETURNING id", hashed, scram, address)
        if done is None:
            raise NotFound(f"no account {address}")

    async def set_quota(self, address: str, quota: int | None) -> None:
        address = normalize_address(address)
        done = await self.pool.fetchval("UPDATE accounts SET quota=$1 WHERE address=$2 RETURNING id",
                                        quota, address)
        if done is None:
            raise NotFound(f"no account {address}")

    async def get_account(self, address: str) -> Account:
        address = normalize_address(address)
        row = await self.pool.fetchrow("SELECT * FROM accounts WHERE address=$1", address)
        if row is None:
            raise NotFound(f"no account {address}")
        return _account(row)

    async def get_account_by_id(self, account_id: int) -> Account:
        row = await self.pool.fetchrow("SELECT * FROM accounts WHERE id=$1", account_id)
        if row is None:
            raise NotFound(f"no account {account_id}")
        return _account(row)

    async def list_accounts(self) -> list[Account]:
        rows = await self.pool.fetch('SELECT * FROM accounts ORDER BY address COLLATE "C"')
        return [_account(r) for r in rows]

    async def authenticate(self, address: str, password: str) -> Account | None:
        address = normalize_address(address)
        row = await self.pool.fetchrow("SELECT * FROM accounts WHERE address=$1", address)
        if row is None:
            await self.passwords.missing(password)
            return None
        return _account(row) if await self.passwords.check(row["password"], password) else None

    async def get_scram(self, address: str) -> ScramCredentials | None:
        address = normalize_address(address)
        value = await self.pool.fetchval("SELECT scram FROM accounts WHERE address=$1", address)
        if not value:
            return None
        return scram_secrets(value)

    # -- aliases ------------------------------------------------------------
    async def add_alias(self, address: str, targets: Sequence[str]) -> None:
        address = normalize_address(address)
        normalized = [normalize_address(t) for t in targets]
        if not normalized:
            raise InvalidName("an alias needs at least one target")
        domain = address.rpartition("@")[2]

        async def add(tx: Tx) -> None:
            if await tx.conn.fetchval("SELECT 1 FROM domains WHERE name=$1 FOR SHARE", domain) is None:
                raise NotFound(f"no domain {domain}")
            if await tx.conn.fetchval("SELECT 1 FROM accounts WHERE address=$1", address):
                raise AlreadyExists(f"{address} is an account")
            await tx.conn.execute("INSERT INTO aliases SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                                  address, normalized)

        await self.write(add)

    async def remove_alias(self, address: str) -> None:
        address = normalize_address(address)
        if await self.pool.fetchval("DELETE FROM aliases WHERE address=$1 RETURNING 1", address) is None:
            raise NotFound(f"no alias {address}")

    async def list_aliases(self) -> dict[str, list[str]]:
        rows = await self.pool.fetch(
            'SELECT address, target FROM aliases ORDER BY address COLLATE "C", target COLLATE "C"')
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(r[1])
        return out

    async def addresses_of(self, account_id: int) -> list[str]:
        async def find(conn: asyncpg.Connection) -> list[str]:
            own = await conn.fetchval("SELECT address FROM accounts WHERE id=$1", account_id)
            if own is None:
                return []
            rows = await conn.fetch(
                "SELECT address FROM aliases GROUP BY address HAVING count(*) = 1 AND max(target) = $1 "
                'ORDER BY address COLLATE "C"', own)
            return [own, *(r[0] for r in rows if not r[0].startswith("@"))]

        return await self.read(find)

    async def resolve(self, address: str) -> Resolution:
        address = normalize_address(address)
        domain = address.rpartition("@")[2]

        async def find(conn: asyncpg.Connection) -> Resolution:
            if await conn.fetchval("SELECT 1 FROM domains WHERE name=$1", domain) is None:
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
                if addr != address and await conn.fetchval("SELECT 1 FROM domains WHERE name=$1",
                                                           addr.rpartition("@")[2]) is None:
                    forward.append(addr)                      # an external alias target
                    continue
                account_id = await conn.fetchval("SELECT id FROM accounts WHERE address=$1", addr)
                if account_id is not None:
                    if account_id not in ids:
                        ids.append(account_id)
                    continue
                targets = [r[0] for r in await conn.fetch(
                    'SELECT target FROM aliases WHERE address=$1 ORDER BY target COLLATE "C"', addr)]
                if not targets and addr == address:
                    # Catch-all for the domain, consulted only when no user or alias matched.
                    targets = [r[0] for r in await conn.fetch(
                        'SELECT target FROM aliases WHERE address=$1 ORDER BY target COLLATE "C"',
                        "@" + domain)]
                todo.extend(targets)
            return Resolution(local_domain=True, account_ids=tuple(ids), forward=tuple(forward))

        return await self.read(find)

    # -- mailboxes ----------------------------------------------------------
    @staticmethod
    async def _create_mailbox(conn: asyncpg.Connection, account_id: int, name: str,
                              special_use: str | None) -> int:
        # UIDVALIDITY: the clock, but always above every value handed out before (all nodes).
        try:
            return int(await conn.fetchval(
                "WITH v AS (INSERT INTO counters VALUES ('uidvalidity', $4) ON CONFLICT (name) DO UPDATE "
                "SET value = GREATEST(counters.value + 1, EXCLUDED.value) RETURNING value) "
                "INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, highestmodseq) "
                "SELECT $1, $2, $3, v.value, (SELECT modseq FROM accounts WHERE id = $1) FROM v RETURNING id",
                account_id, name, special_use, int(time.time()) & 0x7FFFFFFF))
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"mailbox {name} exists") from None

    async def list_mailboxes(self, account_id: int, *, counts: bool = False) -> list[Mailbox]:
        rows = await self.pool.fetch(_mailbox_query("b.account_id = $2", counts), SEEN, account_id)
        return [_mailbox(r) for r in rows]

    async def mailbox_names(self, account_id: int) -> dict[str, str | None]:
        rows = await self.pool.fetch("SELECT name, special_use FROM mailboxes WHERE account_id = $1 "
                                     "ORDER BY name <> 'INBOX', name COLLATE \"C\"", account_id)
        return {r["name"]: r["special_use"] for r in rows}

    async def get_mailbox(self, account_id: int, name: str, *, counts: bool = True) -> Mailbox:
        name = normalize_mailbox_name(name)
        row = await self.pool.fetchrow(_mailbox_query("b.account_id = $2 AND b.name = $3", counts), SEEN,
                                       account_id, name)
        if row is None:
            raise NotFound(f"no mailbox {name}")
        return _mailbox(row)

    async def claim_recent(self, mailbox_id: int, upto: int, *, claim: bool = True) -> int:
        async def take(tx: Tx) -> int:
            old = await tx.conn.fetchval("SELECT recent_uid FROM mailboxes WHERE id=$1 FOR UPDATE", mailbox_id)
            if old is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            if old < upto:
                await tx.conn.execute("UPDATE mailboxes SET recent_uid=$2 WHERE id=$1", mailbox_id, upto)
            return int(old)

        async def query() -> int:
            first = await self.pool.fetchval("SELECT recent_uid FROM mailboxes WHERE id=$1", mailbox_id)
            if first is None:
                raise NotFound(f"no mailbox {mailbox_id}")
            if not claim or first >= upto:
                self._recent_floor.note(mailbox_id, first)
                return int(first)
            first = await self.write(take)
            self._recent_floor.note(mailbox_id, max(first, upto))
            return int(first)

        return await (self._recent_floor.claim_once(mailbox_id, upto, query) if claim else query())

    async def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox:
        row = await self.pool.fetchrow(_mailbox_query("b.id = $2", True), SEEN, mailbox_id)
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        return _mailbox(row)

    async def create_mailbox(self, account_id: int, name: str, *, special_use: str | None = None) -> Mailbox:
        name = validate_mailbox_name(name)

        async def create(tx: Tx) -> int:
            await lock_account(tx.conn, account_id)
            mailbox_id = await self._create_mailbox(tx.conn, account_id, name, special_use)
            modseq = await bump_modseq(tx.conn, account_id)
            tx.publish(account_id, mailbox_id, "mailbox", modseq)
            return mailbox_id

        return await self.get_mailbox_by_id(await self.write(create))

    async def delete_mailbox(self, mailbox_id: int) -> None:
        async def delete(tx: Tx) -> None:
            conn = tx.conn
            account_id = await mailbox_account(conn, mailbox_id)
            if await conn.fetchval("SELECT name FROM mailboxes WHERE id=$1", mailbox_id) == "INBOX":
                raise InvalidName("INBOX cannot be deleted")
            size = await conn.fetchval("SELECT COALESCE(sum(size), 0) FROM messages WHERE mailbox_id=$1",
                                       mailbox_id)
            modseq = await bump_modseq(conn, account_id, -int(size))
            await conn.execute(
                "WITH d AS (DELETE FROM messages WHERE mailbox_id=$1 RETURNING id, uid) "
                "INSERT INTO expunged SELECT $1, $2, d.id, d.uid, $3 FROM d", mailbox_id, account_id, modseq)
            await conn.execute("DELETE FROM mailboxes WHERE id=$1", mailbox_id)
            tx.publish(account_id, mailbox_id, "mailbox", modseq)

        await self.write(delete)

    async def rename_mailbox(self, mailbox_id: int, new_name: str) -> Mailbox:
        new_name = validate_mailbox_name(new_name)

        async def rename(tx: Tx) -> int:
            conn = tx.conn
            account_id = await mailbox_account(conn, mailbox_id)
            old = await conn.fetchval("SELECT name FROM mailboxes WHERE id=$1", mailbox_id)
            if await conn.fetchval("SELECT 1 FROM mailboxes WHERE account_id=$1 AND name=$2",
                                   account_id, new_name):
                raise AlreadyExists(f"mailbox {new_name} exists")
            if new_name.startswith(old + "/"):
                raise InvalidName("cannot rename a mailbox into its own child")
            modseq = await bump_modseq(conn, account_id)
            if old == "INBOX":
                # RFC 9051 6.3.6: renaming INBOX moves its messages to a new mailbox; INBOX stays.
                target = await self._create_mailbox(conn, account_id, new_name, None)
                uids = [r[0] for r in await conn.fetch(
                    "SELECT uid FROM messages WHERE mailbox_id=$1 ORDER BY uid", mailbox_id)]
                await self._move_rows(conn, account_id, mailbox_id, uids, target, modseq)
                tx.publish(account_id, mailbox_id, "expunge", modseq)
                tx.publish(account_id, target, "mailbox", modseq)
                return target
            try:
                await conn.execute(
                    "UPDATE mailboxes SET name = $3 || substr(name, length($4) + 1) "
                    "WHERE account_id=$1 AND (id=$2 OR name LIKE $5)",
                    account_id, mailbox_id, new_name, old, like_prefix(old + "/"))
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"a child of {new_name} exists") from None
            tx.publish(account_id, mailbox_id, "mailbox", modseq)
            return mailbox_id

        return await self.get_mailbox_by_id(await self.write(rename))

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        name = normalize_mailbox_name(name)

        async def update(tx: Tx) -> None:
            await lock_account(tx.conn, account_id)
            if subscribed:
                await tx.conn.execute("INSERT INTO subscriptions VALUES ($1,$2) ON CONFLICT DO NOTHING",
                                      account_id, name)
            else:
                await tx.conn.execute("DELETE FROM subscriptions WHERE account_id=$1 AND name=$2",
                                      account_id, name)
            modseq = await bump_modseq(tx.conn, account_id)
            tx.publish(account_id, None, "mailbox", modseq)

        await self.write(update)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        rows = await self.pool.fetch(
            'SELECT name FROM subscriptions WHERE account_id=$1 ORDER BY name COLLATE "C"', account_id)
        return [r[0] for r in rows]

    # -- change feed --------------------------------------------------------
    def subscribe(self, account_id: int | None = None) -> Subscription:
        return self.hub.subscribe(account_id)


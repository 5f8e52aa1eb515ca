"""SQLite store: users' Sieve scripts, at most one active per account. Mixed into
:class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .api import AlreadyExists, Change, NotFound, SieveConflict, SieveScriptInfo

if TYPE_CHECKING:
    from .changes import ChangeHub
    from .db import Database, WriteContext

_SCRIPTS = """
CREATE TABLE IF NOT EXISTS sieve_scripts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    script TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account_id, name)
);
"""
SCHEMA = _SCRIPTS + """
CREATE TABLE IF NOT EXISTS sieve_versions (
    account_id INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sieve_redirects (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sieve_redirects_account ON sieve_redirects (account_id, at);
CREATE TABLE IF NOT EXISTS alias_forwards (
    address TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_forwards_address ON alias_forwards (address, at);
CREATE TABLE IF NOT EXISTS sieve_vacation (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    sender TEXT NOT NULL,
    handle TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (account_id, sender, handle)
);
CREATE TABLE IF NOT EXISTS sieve_duplicates (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE TABLE IF NOT EXISTS srs_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL
);
"""


def upgrade(conn: sqlite3.Connection) -> None:
    """A sieve_scripts table made by an older version had no ``id`` (JMAP's script ids,
    RFC 9661): rebuild it with one, keeping every script's text, name and activity."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(sieve_scripts)")}
    if not columns or "id" in columns:
        return
    kept = "account_id, name, script, active"
    conn.execute("ALTER TABLE sieve_scripts RENAME TO sieve_scripts_before_upgrade")
    conn.execute(_SCRIPTS.strip().rstrip(";"))
    conn.execute(f"INSERT INTO sieve_scripts ({kept}) SELECT {kept} FROM sieve_scripts_before_upgrade "
                 "ORDER BY account_id, name")
    conn.execute("DROP TABLE sieve_scripts_before_upgrade")


def _take_in_window(conn: sqlite3.Connection, table: str, column: str, key: object, *,
                    now: float, window: float, limit: int) -> bool:
    """One more use by ``key`` (``table``'s ``column``) at ``now``, unless its uses in the
    ``window`` seconds before reach ``limit``: then False, and nothing is counted. Older
    uses are deleted."""
    conn.execute(f"DELETE FROM {table} WHERE {column}=? AND at<=?", (key, now - window))
    used = conn.execute(f"SELECT count(*) FROM {table} WHERE {column}=?", (key,)).fetchone()[0]
    if used >= limit:
        return False
    conn.execute(f"INSERT INTO {table} ({column}, at) VALUES (?,?)", (key, now))
    return True


class SieveMethods:
    if TYPE_CHECKING:
        db: Database
        hub: ChangeHub

    def _bump_sieve(self, ctx: WriteContext, account_id: int, if_version: int | None = None) -> int:
        """The account's next Sieve version (SieveConflict unless it is at ``if_version``),
        its change published after commit."""
        row = ctx.conn.execute("SELECT version FROM sieve_versions WHERE account_id=?", (account_id,)).fetchone()
        current = int(row[0]) if row is not None else 0
        if if_version is not None and current != if_version:
            raise SieveConflict(f"the Sieve scripts are at version {current}, not {if_version}")
        ctx.conn.execute("INSERT INTO sieve_versions (account_id, version) VALUES (?,?) "
                         "ON CONFLICT (account_id) DO UPDATE SET version=excluded.version", (account_id, current + 1))
        change = Change(account_id=account_id, mailbox_id=None, kind="sieve", modseq=current + 1)
        ctx.after_commit(lambda: self.hub.publish(change))
        return current + 1

    async def put_sieve_script(self, account_id: int, name: str, text: str, *, activate: bool = False,
                               if_version: int | None = None) -> int:
        def put(ctx: WriteContext) -> int:
            version = self._bump_sieve(ctx, account_id, if_version)
            ctx.conn.execute("INSERT INTO sieve_scripts (account_id, name, script) VALUES (?,?,?) "
                             "ON CONFLICT (account_id, name) DO UPDATE SET script=excluded.script",
                             (account_id, name, text))
            if activate:
                ctx.conn.execute("UPDATE sieve_scripts SET active = (name IS ?) WHERE account_id=?",
                                 (name, account_id))
            return version

        return await self.db.write_ctx(put)

    async def sieve_version(self, account_id: int) -> int:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT version FROM sieve_versions WHERE account_id=?", (account_id,)).fetchone())
        return int(row[0]) if row is not None else 0

    async def get_sieve_script(self, account_id: int, name: str) -> str:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT script FROM sieve_scripts WHERE account_id=? AND name=?", (account_id, name)).fetchone())
        if row is None:
            raise NotFound(f"no Sieve script {name!r}")
        return str(row[0])

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScriptInfo]:
        found = await self.db.read(lambda conn: conn.execute(
            "SELECT name, active, id FROM sieve_scripts WHERE account_id=? ORDER BY name", (account_id,)).fetchall())
        return [SieveScriptInfo(name=r[0], active=bool(r[1]), id=int(r[2])) for r in found]

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        def delete(ctx: WriteContext) -> None:
            if ctx.conn.execute("DELETE FROM sieve_scripts WHERE account_id=? AND name=?",
                                (account_id, name)).rowcount == 0:
                raise NotFound(f"no Sieve script {name!r}")
            self._bump_sieve(ctx, account_id)

        await self.db.write_ctx(delete)

    async def activate_sieve_script(self, account_id: int, name: str | None) -> None:
        def activate(ctx: WriteContext) -> None:
            conn = ctx.conn
            if name is not None and conn.execute(
                    "SELECT 1 FROM sieve_scripts WHERE account_id=? AND name=?", (account_id, name)).fetchone() is None:
                raise NotFound(f"no Sieve script {name!r}")
            conn.execute("UPDATE sieve_scripts SET active = (name IS ?) WHERE account_id=?", (name, account_id))
            self._bump_sieve(ctx, account_id)

        await self.db.write_ctx(activate)

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        # Every local delivery asks: one indexed row, read on the loop as one statement
        # (no thread hop, no BEGIN and COMMIT around it: db.query_sync).
        rows = self.db.query_sync(
            "SELECT name, script FROM sieve_scripts WHERE account_id=? AND active=1", (account_id,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    async def count_alias_forward(self, address: str, *, now: float, window: float, limit: int) -> bool:
        address = address.lower()
        return await self.db.write(lambda conn: _take_in_window(
            conn, "alias_forwards", "address", address, now=now, window=window, limit=limit))

    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        def rename(ctx: WriteContext) -> None:
            conn = ctx.conn
            if conn.execute("SELECT 1 FROM sieve_scripts WHERE account_id=? AND name=?",
                            (account_id, old)).fetchone() is None:
                raise NotFound(f"no Sieve script {old!r}")
            if old == new:
                return
            if conn.execute("SELECT 1 FROM sieve_scripts WHERE account_id=? AND name=?",
                            (account_id, new)).fetchone() is not None:
                raise AlreadyExists(f"Sieve script {new!r} exists")
            conn.execute("UPDATE sieve_scripts SET name=? WHERE account_id=? AND name=?", (new, account_id, old))
            self._bump_sieve(ctx, account_id)

        await self.db.write_ctx(rename)

    async def count_redirect(self, account_id: int, *, now: float, window: float, limit: int) -> bool:
        return await self.db.write(lambda conn: _take_in_window(
            conn, "sieve_redirects", "account_id", account_id, now=now, window=window, limit=limit))

    async def vacation_reply_due(self, account_id: int, sender: str, handle: str, *,
                                 now: float, period: float) -> bool:
        def due(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT until FROM sieve_vacation WHERE account_id=? AND sender=? AND handle=?",
                               (account_id, sender.lower(), handle)).fetchone()
            if row is not None and row[0] > now:
                return False
            conn.execute("INSERT INTO sieve_vacation (account_id, sender, handle, until) VALUES (?,?,?,?) "
                         "ON CONFLICT (account_id, sender, handle) DO UPDATE SET until=excluded.until",
                         (account_id, sender.lower(), handle, now + period))
            return True

        return await self.db.write(due)

    async def duplicate_keys(self, account_id: int, *, now: float) -> frozenset[str]:
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT key FROM sieve_duplicates WHERE account_id=? AND until>?", (account_id, now)).fetchall())
        return frozenset(str(r[0]) for r in rows)

    async def remember_duplicates(self, account_id: int, until: Mapping[str, float], *, now: float) -> None:
        def remember(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sieve_duplicates WHERE account_id=? AND until<=?", (account_id, now))
            conn.executemany("INSERT INTO sieve_duplicates (account_id, key, until) VALUES (?,?,?) "
                             "ON CONFLICT (account_id, key) DO UPDATE SET until=excluded.until",
                             [(account_id, k, t) for k, t in until.items()])

        await self.db.write(remember)

    async def srs_key(self) -> bytes:
        def key(conn: sqlite3.Connection) -> bytes:
            conn.execute("INSERT OR IGNORE INTO srs_key (id, key) VALUES (1, ?)", (os.urandom(32),))
            return bytes(conn.execute("SELECT key FROM srs_key WHERE id=1").fetchone()[0])

        return await self.db.write(key)

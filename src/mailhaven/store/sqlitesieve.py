"""SQLite store: users' Sieve scripts, at most one active per account. Mixed into
:class:`mailhaven.store.sqlite.SQLiteStore`."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from .api import NotFound, SieveScriptInfo

if TYPE_CHECKING:
    from .db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS sieve_scripts (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    script TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, name)
);
"""


class SieveMethods:
    if TYPE_CHECKING:
        db: Database

    async def put_sieve_script(self, account_id: int, name: str, text: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            "INSERT INTO sieve_scripts (account_id, name, script) VALUES (?,?,?) "
            "ON CONFLICT (account_id, name) DO UPDATE SET script=excluded.script", (account_id, name, text)))

    async def get_sieve_script(self, account_id: int, name: str) -> str:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT script FROM sieve_scripts WHERE account_id=? AND name=?", (account_id, name)).fetchone())
        if row is None:
            raise NotFound(f"no Sieve script {name!r}")
        return str(row[0])

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScriptInfo]:
        found = await self.db.read(lambda conn: conn.execute(
            "SELECT name, active FROM sieve_scripts WHERE account_id=? ORDER BY name", (account_id,)).fetchall())
        return [SieveScriptInfo(name=r[0], active=bool(r[1])) for r in found]

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM sieve_scripts WHERE account_id=? AND name=?",
                            (account_id, name)).rowcount == 0:
                raise NotFound(f"no Sieve script {name!r}")

        await self.db.write(delete)

    async def activate_sieve_script(self, account_id: int, name: str | None) -> None:
        def activate(conn: sqlite3.Connection) -> None:
            if name is not None and conn.execute(
                    "SELECT 1 FROM sieve_scripts WHERE account_id=? AND name=?", (account_id, name)).fetchone() is None:
                raise NotFound(f"no Sieve script {name!r}")
            conn.execute("UPDATE sieve_scripts SET active = (name IS ?) WHERE account_id=?", (name, account_id))

        await self.db.write(activate)

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        row = await self.db.read(lambda conn: conn.execute(
            "SELECT name, script FROM sieve_scripts WHERE account_id=? AND active=1", (account_id,)).fetchone())
        return (str(row[0]), str(row[1])) if row is not None else None

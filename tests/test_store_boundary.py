"""SQL lives only in ``store/``: every other module goes through the methods store/api.py
declares, so adding a backend or a table never touches the protocols or the web layer
(issue 19). This reads the source: any SQL statement, database driver import or check of
which backend a store is, outside ``store/``, fails it."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "mailhaven"

FORBIDDEN = {
    "SQL statement": re.compile(
        r"\bSELECT\b[^\n]*\bFROM\s+[a-z_]+|\bINSERT\s+(OR\s+[A-Z]+\s+)?INTO\b|\bUPDATE\s+[a-z_]+\s+SET\b"
        r"|\bDELETE\s+FROM\b|\b(CREATE|ALTER|DROP)\s+(TABLE|INDEX|SCHEMA)\b|\bPRAGMA\s+[a-z_]+"),
    "database driver": re.compile(r"^\s*(import|from)\s+(sqlite3|asyncpg|psycopg2?)\b", re.M),
    "backend check": re.compile(r"isinstance\([^)]*\b(SQLiteStore|PostgresStore)\b"),
    "backend internals": re.compile(r"\bstore\.(db|pool)\b|\bstore\.ensure_schema\("),
}


def offences(text: str) -> list[str]:
    return [f"{what}: {m.group(0)!r}" for what, pattern in FORBIDDEN.items() for m in pattern.finditer(text)]


def test_no_sql_outside_the_store() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "store":
            continue
        found += [f"{rel}: {o}" for o in offences(path.read_text())]
    assert found == [], "\n".join(found)


def test_the_check_recognises_what_it_forbids() -> None:
    assert offences('conn.execute("SELECT 1 FROM messages WHERE id=?")')
    assert offences("await conn.execute('DELETE FROM web_tokens WHERE hash=$1', d)")
    assert offences("if isinstance(store, SQLiteStore):")
    assert offences("import sqlite3\n")
    assert offences("store.db.read(fn)")
    assert not offences('"""Mailbox commands: SELECT/EXAMINE, CREATE, DELETE, RENAME"""')
    assert not offences("b'UID', b'FETCH', b'SELECT', b'UPDATE'")

"""SQLite store: the search index's own database, ``DATA/search.db`` (issue 18).

The trigram index (``search_index``, FTS5, contentless, ``detail=column``) and the text it
took (``search_text``) live in a database file of their own, with their own WAL and write
lock, written only by the indexer. An index slice takes tens of milliseconds under load;
in ``mailhaven.db`` it held the write lock deliveries need for all of that time. Here a
delivery never waits for one.

Hand-off, between two databases that cannot commit together:

- A delivery writes its search text to ``fts_pending`` in ``mailhaven.db``, in its own
  transaction (as before). Whatever takes a message out of the index (expunge, mailbox or
  account removal, reindex) deletes its pending row and appends its id to
  ``search_drops`` there, in the same transaction (:func:`unindex`).
- A slice (:meth:`SearchDatabase.index_some`), in one transaction of ``search.db``, which
  holds its write lock before it reads ``mailhaven.db`` (one snapshot, attached as
  ``mail``): applies the snapshot's drops in order, then indexes its first pending rows
  (replacing whatever the index held under those ids), and commits with an fsync.
- Only then are those drops and pending rows deleted from ``mailhaven.db``
  (:func:`forget_indexed`, a short transaction of the delivery path's writer). A pending
  row replaced meanwhile (a drop of its id came after the snapshot) stays for the next
  slice. A crash between the two leaves them to be applied again: both steps are
  idempotent.

Invariant: the index's text for a message id is that message's text, unless a drop of
the id is still listed in ``mailhaven.db`` (the id may since name another message): every
change of a message's pending text comes after a drop of its id, and a slice applies the
drops before the pending rows. Searches (sqliteindex.py) therefore skip ids with a drop
listed, and join their hits with ``messages``, so an expunged message is never found.

The database is derived: made anew when missing (emptied when it does not match, see
"Pairing" below), and refilled by itself. Opening the store
lists a refill in ``mailhaven.db`` first (``search_refill``) when a message's text is not
pending there; ``mailhaven serve`` then pends each message's text again, extracted from its
bytes, in the background, and a search refills its own mailbox first (sqliterefill.py;
``mailhaven store reindex`` is not needed, and may run beside it). Pending only text that
is not pending already, the refill keeps the invariant below, and a kill at any moment
leaves the refill listed with less to do. The index is rebuilt from its own kept text when
it was made with other options. ``mailhaven.db`` never attaches it on its write
connection (BEGIN IMMEDIATE would take the write lock of every attached database); its
reader connections attach it read-only in use (``Database.attach``), for searches.

Pairing: a search.db that is there but does not match ``mailhaven.db`` (either restored
from an older backup than the other, or copied from another installation) would answer
searches wrongly: missing messages indexed since, and finding a message by another's text
where an id was given again (``messages.id`` has no AUTOINCREMENT: the largest id, expunged,
is the next message's). So the two are paired: ``mailhaven.db``'s ``search_pairing`` row
holds a random token, the count of changes ever made to the hand-off (texts pended, drops
listed: counted by triggers) and the last slice whose clean-up committed there
(:func:`forget_indexed`); search.db's ``pairing`` row holds the token and the count of
changes its last slice read, beside its count of slices. In one history, slices commit
before their clean-up and read changes already made, so a search.db with another token,
fewer slices than ``mailhaven.db`` cleared (it lacks text that ``mailhaven.db`` forgot), or
more changes seen than ``mailhaven.db`` made (it took drops and text that ``mailhaven.db``
does not have) is from another history. Opening the store checks this
(:meth:`SearchDatabase.pair`, holding search.db's write lock as a slice does, so that no
slice commits between the two reads); a mismatch lists a refill in ``mailhaven.db``
first, then empties search.db and pairs it anew in one transaction, and the refill puts
every message back. A slice applied again after a crash, or one in flight in another
process, keeps the order the check relies on.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..datadir import private_file

_log = logging.getLogger("mailhaven.store")

INDEX_FILE = "search.db"
"""The index database's name in the data directory."""
ALIAS = "search"
"""The name it is attached under on ``mailhaven.db``'s reader connections."""

SEARCH_COLUMNS = ("subject", "sender", "recipients", "cc", "bcc", "body", "headers")
"""The index's columns, in the order of :func:`mailhaven.message.summary.search_fields`."""
_COLUMNS = ", ".join(SEARCH_COLUMNS)

SEARCH_INDEX = ("CREATE VIRTUAL TABLE IF NOT EXISTS search_index USING fts5 (subject, sender, recipients, cc, bcc, "
                "body, headers, tokenize = 'trigram', content = '', detail = column)")
"""The search index as this version makes it (an index made otherwise is rebuilt at open)."""

SCHEMA = f"""
-- The trigram index keeps no copy of the text (content=''), and which trigrams each column
-- holds but not where (detail=column): a third of the size. The text it took is in
-- search_text (sqliteindex.py and trigram.py say what for).
{SEARCH_INDEX};
CREATE TABLE IF NOT EXISTS search_text (
    id INTEGER PRIMARY KEY,                 -- messages.id
    text TEXT NOT NULL                      -- the indexed fields joined by NUL (unpack_text)
);
-- One row: slices committed. A slice writes it first, to hold this database's write lock
-- before it reads mailhaven.db.
CREATE TABLE IF NOT EXISTS slices (count INTEGER NOT NULL);
INSERT INTO slices SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM slices);
-- One row once paired (SearchDatabase.pair): the token of the mailhaven.db whose text this
-- index holds, and that database's count of changes (search_pairing.changes) as the last
-- slice read it.
CREATE TABLE IF NOT EXISTS pairing (token TEXT NOT NULL, seen INTEGER NOT NULL);
"""

MAIN_SCHEMA = """
-- Message ids to take out of the search index (search.db), in order: written with the
-- expunge (or removal, or reindex) that takes the message's rows, read and deleted by the
-- indexer (searchdb.py). AUTOINCREMENT: a seq is never given twice, so "a drop after the
-- snapshot" stays true after older drops were deleted.
CREATE TABLE IF NOT EXISTS search_drops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS search_drops_id ON search_drops (id);
-- One row while the index is to be refilled from the messages' bytes: written before
-- search.db is made anew while messages are stored, deleted when nothing is left to
-- refill (sqliterefill.py).
CREATE TABLE IF NOT EXISTS search_refill (
    since REAL NOT NULL                     -- when search.db was found missing
);
-- One row: what pairs this database with its search.db (SearchDatabase.pair).
CREATE TABLE IF NOT EXISTS search_pairing (
    token TEXT NOT NULL,                    -- random, made once; search.db's pairing row names it
    changes INTEGER NOT NULL,               -- texts pended and drops listed, ever (the triggers)
    indexed INTEGER NOT NULL                -- the last slice (search.db's slices.count) cleared here
);
CREATE TRIGGER IF NOT EXISTS search_pending_counted AFTER INSERT ON fts_pending
BEGIN UPDATE search_pairing SET changes = changes + 1; END;
CREATE TRIGGER IF NOT EXISTS search_drops_counted AFTER INSERT ON search_drops
BEGIN UPDATE search_pairing SET changes = changes + 1; END;
"""
"""Tables the index needs in ``mailhaven.db`` (``fts_pending`` is in sqliteschema.py)."""

FIELD_SEPARATOR = "\x00"
"""Between the fields in ``search_text`` (no field holds one: :func:`clean_fields`)."""


def clean_fields(fields: Sequence[str | None]) -> tuple[str, ...]:
    """The fields as indexed and kept: NUL (which no search string holds) made a space."""
    return tuple((f or "").replace(FIELD_SEPARATOR, " ") for f in fields)


def unpack_text(stored: str) -> tuple[str, ...]:
    """The fields of a ``search_text`` row (:data:`_SLICE_KEEP`)."""
    return tuple(stored.split(FIELD_SEPARATOR))


def unindex(conn: sqlite3.Connection, message_ids: Iterable[int]) -> None:
    """On ``mailhaven.db``, in the transaction that takes the messages' rows (expunge,
    mailbox or account removal, reindex): their pending text goes, and their ids are listed
    for the indexer to take out of the index (:meth:`SearchDatabase.index_some`)."""
    ids = [(message_id,) for message_id in message_ids]
    conn.executemany("DELETE FROM fts_pending WHERE id=?", ids)
    conn.executemany("INSERT INTO search_drops (id) VALUES (?)", ids)


def text_of(conn: sqlite3.Connection, index: SearchDatabase, message_id: int) -> tuple[str, ...] | None:
    """A message's search fields (None: none, e.g. gone), in a transaction on
    ``mailhaven.db`` (``conn``) that holds its write lock, so that no slice's clean-up
    commits meanwhile: pending text first (the newest), else the index's, unless a drop of
    the id is listed (the index's text then may be another message's)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM fts_pending WHERE id=?", (message_id,)).fetchone()
    if row is not None:
        return tuple(f or "" for f in row)
    if conn.execute("SELECT 1 FROM search_drops WHERE id=?", (message_id,)).fetchone() is not None:
        return None
    return index.text(message_id)


@dataclass(frozen=True)
class Slice:
    """What a committed slice took from ``mailhaven.db``, to be deleted there (:func:`forget_indexed`)."""

    drops_upto: int
    """The last drop (``search_drops.seq``) applied; 0: none."""
    seen: int
    """The last drop in the slice's snapshot: a later one means a pending row changed since."""
    ids: tuple[int, ...]
    """The pending rows indexed."""
    number: int = 0
    """The slice's number in search.db (``slices.count`` after it)."""

    @property
    def done(self) -> int:
        return len(self.ids) + (1 if self.drops_upto else 0)


def forget_indexed(conn: sqlite3.Connection, done: Slice) -> int:
    """On ``mailhaven.db``, after the slice committed in ``search.db``: its drops and pending
    rows are deleted (a pending row that a later drop replaced stays), and its number
    recorded as cleared (the pairing's ``indexed``). Returns how many pending rows went."""
    conn.execute("UPDATE search_pairing SET indexed = max(indexed, ?)", (done.number,))
    if done.drops_upto:
        conn.execute("DELETE FROM search_drops WHERE seq <= ?", (done.drops_upto,))
    if not done.ids:
        return 0
    marks = ",".join("?" * len(done.ids))
    return conn.execute(f"DELETE FROM fts_pending WHERE id IN ({marks}) AND id NOT IN "
                        "(SELECT id FROM search_drops WHERE seq > ?)", (*done.ids, done.seen)).rowcount


_DELETE_INDEX = f"INSERT INTO search_index (search_index, rowid, {_COLUMNS}) VALUES ('delete',?,?,?,?,?,?,?,?)"
_SLICE_ROWS = ("SELECT id, " + " + ".join(f"ifnull(length(CAST({c} AS BLOB)), 0)" for c in SEARCH_COLUMNS)
               + ", instr(" + " || ".join(f"ifnull(CAST({c} AS BLOB), x'')" for c in SEARCH_COLUMNS)
               + ", x'00') FROM mail.fts_pending ORDER BY id LIMIT ?")
"""The backlog's first rows: id, bytes of text, whether a field holds a NUL."""
_FIELDS = ", ".join(f"ifnull({c}, '')" for c in SEARCH_COLUMNS)
_CLEAN = "id <= ? AND id NOT IN (SELECT value FROM json_each(?))"
"""The slice's rows but those with a NUL (indexed from Python, cleaned)."""
_SLICE_INDEX = f"INSERT INTO search_index (rowid, {_COLUMNS}) SELECT id, {_FIELDS} FROM mail.fts_pending WHERE {_CLEAN}"
_SLICE_KEEP = ("INSERT INTO search_text (id, text) SELECT id, "
               + " || char(0) || ".join(f"ifnull({c}, '')" for c in SEARCH_COLUMNS)
               + f" FROM mail.fts_pending WHERE {_CLEAN}")
"""A message's fields as ``search_text`` keeps them: joined by NUL (concatenation keeps
NULs; the fields hold none, those rows are cleaned in Python). Not compressed: a search
checks every candidate's text (trigram.py), and zlib took ~25 us a message to undo against
~2 us to look through the text (compressed, the copy was 1.0 KB a message instead of 2.0)."""


def make_pairing(conn: sqlite3.Connection) -> None:
    """On ``mailhaven.db``, at open: its pairing row (token, counts), made once (a new data
    directory, or one from a version before pairing)."""
    conn.execute("INSERT INTO search_pairing (token, changes, indexed) SELECT ?, 0, 0 "
                 "WHERE NOT EXISTS (SELECT 1 FROM search_pairing)", (secrets.token_hex(16),))


@dataclass(frozen=True)
class PairCheck:
    """What :meth:`SearchDatabase.pair` found."""

    mismatch: str | None
    """Why the index does not match ``mailhaven.db`` (None: it does, or was paired now)."""
    cleared: bool
    """The index was emptied and paired anew (else, on a mismatch: list a refill first)."""


_REFILL_READY = ("SELECT EXISTS (SELECT 1 FROM mail.search_refill) OR NOT EXISTS (SELECT 1 FROM mail.messages m "
                 "WHERE NOT EXISTS (SELECT 1 FROM mail.fts_pending p WHERE p.id = m.id))")
"""A refill is listed, or every message's text is pending: the index may be emptied."""


def _mismatch(held: tuple[str, int] | None, count: int, main: tuple[str, int, int], trust_unpaired: bool) -> str | None:
    """Why search.db (its pairing row ``held``, ``count`` slices) is not of ``mailhaven.db``'s
    history (``main``: token, changes, slices cleared); None: it is."""
    token, changes, indexed = main
    if held is None:
        # Made now (missing), or by a version before pairing: trusted, as it was, while
        # mailhaven.db has recorded nothing since its pairing row was made (a crash between
        # the two at the first open trusts it at the next).
        if trust_unpaired or (changes == 0 and indexed == 0):
            return None
        return "search.db is not paired with it (restored from a backup made before pairing?)"
    if held[0] != token:
        return "search.db was made beside another mailhaven.db (copied from another installation, or restored with another)"
    if count < indexed:
        return (f"search.db is older (restored from an older backup?): mailhaven.db forgot the text of "
                f"{indexed - count} slice(s) it lacks")
    if held[1] > changes:
        return (f"mailhaven.db is older (restored from an older backup?): search.db took {held[1] - changes} "
                "text(s) and expunge(s) it never made")
    return None


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    """One transaction on ``conn`` (autocommit mode): ``begin`` (``BEGIN``: this database's
    write lock is taken at the first write, ``BEGIN IMMEDIATE``: at once), the block, then
    COMMIT; ROLLBACK if either raises. The block may end the transaction itself (a
    ROLLBACK when it finds nothing to write): then neither follows."""
    conn.execute(begin)
    try:
        yield
        if conn.in_transaction:
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SearchDatabase:
    """``DATA/search.db``: its connections and the index slices written to it.

    Blocking methods: call them from a thread. One slice at a time per process (a lock);
    processes take turns at the file's own write lock."""

    def __init__(self, path: Path, main: Path) -> None:
        self.path = path
        self._main = main
        self._conn: sqlite3.Connection | None = None
        """Writes the index (slices); ``mailhaven.db`` attached as ``mail``, only read."""
        self._reader: sqlite3.Connection | None = None
        """Reads a message's kept text (:meth:`text`, for a copy, on the delivery path's writer)."""
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def missing(self) -> bool:
        """The index database is missing or empty (:meth:`open` makes it anew)."""
        return not self.path.exists() or self.path.stat().st_size == 0

    def open(self) -> bool:
        """Open (make) the index database; True if it was missing or empty (made now)."""
        made_now = self.missing()
        private_file(self.path)     # SQLite gives the WAL and shared-memory files its mode
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a slice is on disk before mailhaven.db forgets the text it took.
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA.replace(f"{SEARCH_INDEX};", ""))
        made = conn.execute("SELECT sql FROM sqlite_master WHERE name='search_index'").fetchone()
        if made is None:
            conn.execute(SEARCH_INDEX)
        elif made[0] != SEARCH_INDEX.replace(" IF NOT EXISTS", ""):
            self._rebuild(conn)
        conn.execute("ATTACH DATABASE ? AS mail", (str(self._main),))
        self._conn = conn
        self._reader = self._connect()
        self._reader.execute("PRAGMA query_only=ON")
        return made_now

    @staticmethod
    def _rebuild(conn: sqlite3.Connection) -> None:
        """The index was made with other options: made anew from the text it kept."""
        _log.info("rebuilding the search index with new options (once, after an upgrade)")
        with _transaction(conn, "BEGIN IMMEDIATE"):
            conn.execute("DROP TABLE search_index")
            conn.execute(SEARCH_INDEX)
            for message_id, stored in conn.execute("SELECT id, text FROM search_text").fetchall():
                conn.execute(f"INSERT INTO search_index (rowid, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                             (message_id, *unpack_text(stored)))

    @contextlib.contextmanager
    def _writing(self, begin: str) -> Iterator[sqlite3.Connection]:
        """The index connection, inside one :func:`_transaction` begun with ``begin``; one
        at a time per process (the slice lock)."""
        with self._lock:
            conn = self._conn
            assert conn is not None
            with _transaction(conn, begin):
                yield conn

    def clear(self) -> None:
        """Empty the index (its text is pending again in ``mailhaven.db``: an upgrade)."""
        with self._writing("BEGIN IMMEDIATE") as conn:
            self._empty(conn)

    @staticmethod
    def _empty(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO search_index (search_index) VALUES ('delete-all')")    # contentless: not DELETE
        conn.execute("DELETE FROM search_text")

    def pair(self, trust_unpaired: bool) -> PairCheck:
        """At open, after ``mailhaven.db``'s pairing row was made (:func:`make_pairing`):
        whether this index matches it (see the module's docstring). An unpaired index is
        paired if ``trust_unpaired`` (made now) or ``mailhaven.db``'s row has counted nothing
        yet (a version before pairing made both). A mismatch empties the index and pairs it
        anew in one transaction, once a refill is listed in ``mailhaven.db`` (or no
        message's text is left to refill): else nothing is changed, and the caller lists one
        (:func:`mark_refill`) and asks again."""
        with self._writing("BEGIN") as conn:
            # This database's write lock first, as a slice takes it, then mailhaven.db's
            # snapshot: no slice commits in between, so an index that matches is seen to.
            conn.execute("UPDATE slices SET count = count")
            held = conn.execute("SELECT token, seen FROM pairing").fetchone()
            count = int(conn.execute("SELECT count FROM slices").fetchone()[0])
            main = conn.execute("SELECT token, changes, indexed FROM mail.search_pairing").fetchone()
            if main is None:
                raise RuntimeError("mailhaven.db has no search_pairing row (make_pairing first)")
            token, changes, indexed = main
            why = _mismatch(held, count, (token, changes, indexed), trust_unpaired)
            if why is None and held is not None:
                conn.execute("ROLLBACK")            # paired already: nothing written
                return PairCheck(None, False)
            if why is not None:
                if not conn.execute(_REFILL_READY).fetchone()[0]:
                    conn.execute("ROLLBACK")
                    return PairCheck(why, False)
                self._empty(conn)
            conn.execute("DELETE FROM pairing")
            conn.execute("INSERT INTO pairing (token, seen) VALUES (?, ?)", (token, changes))
            # Numbering goes on above the slices mailhaven.db cleared (an index made anew
            # starts at 0).
            conn.execute("UPDATE slices SET count = max(count, ?)", (indexed,))
        return PairCheck(why, why is not None)

    def close(self) -> None:
        with self._lock, self._read_lock:        # a slice under way finishes first
            for conn in (self._conn, self._reader):
                if conn is not None:
                    conn.close()
            self._conn = self._reader = None

    def text(self, message_id: int) -> tuple[str, ...] | None:
        """The fields the index holds for ``message_id`` (see :func:`text_of`)."""
        with self._read_lock:
            assert self._reader is not None
            row = self._reader.execute("SELECT text FROM search_text WHERE id=?", (message_id,)).fetchone()
        return unpack_text(row[0]) if row is not None else None

    def index_some(self, budget: int, chunk: int) -> Slice:
        """One slice, committed (with an fsync) in ``search.db``: the drops listed in
        ``mailhaven.db``, then, once none is left, its first pending rows, ``budget`` bytes
        of text at most (at least one row, at most ``chunk``). Delete what it took from
        ``mailhaven.db`` with :func:`forget_indexed` afterwards."""
        with self._writing("BEGIN") as conn:
            # This database's write lock first, then one snapshot of mailhaven.db: a second
            # indexer (another process) reads its snapshot after this slice committed.
            conn.execute("UPDATE slices SET count = count + 1")
            # The changes of that snapshot, which this slice has now seen (pairing).
            conn.execute("UPDATE pairing SET seen = ifnull((SELECT changes FROM mail.search_pairing), seen)")
            done = replace(self._index_some(conn, budget, chunk),
                           number=conn.execute("SELECT count FROM slices").fetchone()[0])
        return done                  # synchronous=FULL: the WAL was synced at COMMIT

    @staticmethod
    def _forget(conn: sqlite3.Connection, message_id: int) -> int:
        """Take a message out of the index: the contentless table is told the very values it
        indexed. Returns the bytes of text that took."""
        row = conn.execute("SELECT text FROM search_text WHERE id=?", (message_id,)).fetchone()
        if row is None:
            return 0
        conn.execute(_DELETE_INDEX, (message_id, *unpack_text(row[0])))
        conn.execute("DELETE FROM search_text WHERE id=?", (message_id,))
        return len(row[0])

    def _index_some(self, conn: sqlite3.Connection, budget: int, chunk: int) -> Slice:
        seen = conn.execute("SELECT ifnull(max(seq), 0) FROM mail.search_drops").fetchone()[0]
        drops_upto, spent = 0, 0
        for seq, message_id in conn.execute("SELECT seq, id FROM mail.search_drops ORDER BY seq").fetchall():
            if drops_upto and spent >= budget:
                return Slice(drops_upto, seen, ())         # more drops first, next slice
            spent += self._forget(conn, message_id)
            drops_upto = seq
        last, total, ids, dirty = None, 0, [], []
        rows = conn.execute(_SLICE_ROWS, (chunk,))
        for message_id, size, nul in rows:      # a row at a time: the sizes read the text
            if last is not None and total + size > budget:
                break
            last, total = message_id, total + size
            ids.append(message_id)
            if nul:
                dirty.append(message_id)
        rows.close()
        if last is None:
            return Slice(drops_upto, seen, ())
        # Whatever the index holds under these ids goes first (a slice applied again after a
        # crash, or by a second indexer): what follows writes them anew.
        held = conn.execute(f"SELECT id FROM search_text WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
        for (message_id,) in held:
            self._forget(conn, message_id)
        marks = "[" + ",".join(map(str, dirty)) + "]"
        conn.execute(_SLICE_INDEX, (last, marks))
        conn.execute(_SLICE_KEEP, (last, marks))
        for message_id in dirty:                # NUL separates the kept fields: made a space
            row = conn.execute(f"SELECT {_COLUMNS} FROM mail.fts_pending WHERE id=?", (message_id,)).fetchone()
            fields = clean_fields(tuple(row))
            conn.execute(f"INSERT INTO search_index (rowid, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                         (message_id, *fields))
            conn.execute("INSERT INTO search_text (id, text) VALUES (?,?)",
                         (message_id, FIELD_SEPARATOR.join(fields)))
        return Slice(drops_upto, seen, tuple(ids))

"""The search index records which trigrams a column holds, not where (detail=column):
candidates are checked against the kept text folded as FTS5's trigram tokenizer folds, so
a search answers what a phrase query on a full trigram index answered."""

from __future__ import annotations

import random
import sqlite3
from email.header import Header
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.store.sqlite import SQLiteStore
from mailhaven.store.sqliteindex import FIELD_SEPARATOR, field_of, unpack_text
from mailhaven.store.trigram import like_matcher, matcher

# Letters whose folding differs between SQLite and Python, ASCII, and a few plain ones.
ALPHABET = "aAbBsS ſKkKßẞİiıΣσςµμΜǅǄǆЀѐ\u037f\u0345ΙιĲĳ"


def _full_index_matches(texts: list[str], needle: str) -> set[int]:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE f USING fts5 (x, tokenize = 'trigram')")
    conn.executemany("INSERT INTO f (rowid, x) VALUES (?, ?)", enumerate(texts))
    found = {r[0] for r in conn.execute("SELECT rowid FROM f WHERE f MATCH ?", ('"' + needle.replace('"', '""') + '"',))}
    conn.close()
    return found


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(ALPHABET, min_size=0, max_size=12), min_size=1, max_size=6),
       st.text(ALPHABET, min_size=3, max_size=6))
def test_the_check_folds_as_the_trigram_tokenizer(texts: list[str], needle: str) -> None:
    found = matcher(needle)
    assert {i for i, t in enumerate(texts) if found(t)} == _full_index_matches(texts, needle)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(ALPHABET + "x", min_size=0, max_size=6), min_size=1, max_size=8))
def test_a_column_search_checks_the_field_at_its_position(fields: list[str]) -> None:
    # A SUBJECT or FROM search finds its field in the kept text by position, not by
    # splitting the whole text: the same field, empty ones and the last one included.
    stored = FIELD_SEPARATOR.join(fields)
    assert [field_of(stored, at) for at in range(len(fields))] == list(unpack_text(stored))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(ALPHABET + "%_\\", min_size=0, max_size=8), min_size=1, max_size=6),
       st.text(ALPHABET + "%_\\", min_size=1, max_size=2))
def test_short_needles_match_as_like_matched(texts: list[str], needle: str) -> None:
    conn = sqlite3.connect(":memory:")
    like = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    expected = {i for i, t in enumerate(texts)
                if conn.execute("SELECT ? LIKE ? ESCAPE '\\'", (t, like)).fetchone()[0]}
    conn.close()
    found = like_matcher(needle)
    assert {i for i, t in enumerate(texts) if found(t)} == expected


async def test_search_answers_substrings_not_scattered_trigrams(tmp_path: Path) -> None:
    subjects = ["walrus figures", "walr and alru and lrus",            # every trigram of "walrus", apart
                "Q3 ſtatus STRAẞE", "PELICAN", "pelican"]
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        for i, subject in enumerate(subjects):
            raw = (f"From: a@lancs.example\r\nTo: bob@nyu.example\r\nSubject: {Header(subject, 'utf-8').encode()}\r\n"
                   f"Message-ID: <{i}@lancs.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody {i}\r\n")
            await store.deliver(await store.put_blob(raw.encode()), [bob.id])
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "subject", "walrus") == {1}
        assert await store.search_text(inbox.id, "text", "WALRUS") == {1}
        assert await store.search_text(inbox.id, "subject", "status") == {3}   # U+017F folds to s
        assert await store.search_text(inbox.id, "subject", "straße") == {3}
        assert await store.search_text(inbox.id, "subject", "pelican") == {4, 5}
        assert await store.search_text(inbox.id, "body", "pelican") == set()
        assert await store.search_text(inbox.id, "body", "dy 2") == {3}
    finally:
        await store.close()


async def test_an_index_made_with_other_options_is_rebuilt(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    await store.open()
    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "pw")
    words = [f"w{random.Random(i).randrange(10**6):06d}" for i in range(5)]
    for w in words:
        raw = f"From: a@lancs.example\r\nTo: bob@nyu.example\r\nSubject: {w}\r\n\r\nx\r\n".encode()
        await store.deliver(await store.put_blob(raw), [bob.id])
    await store.flush_index()
    await store.close()
    conn = sqlite3.connect(tmp_path / "search.db")   # as the first contentless version made it
    with conn:
        conn.execute("DROP TABLE search_index")
        conn.execute("CREATE VIRTUAL TABLE search_index USING fts5 (subject, sender, recipients, cc, bcc, body, "
                     "headers, tokenize = 'trigram', content = '')")
    conn.close()
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        inbox = await store.get_mailbox(bob.id, "INBOX")
        assert await store.search_text(inbox.id, "subject", words[3]) == {4}
        sql = await store.db.read(lambda c: c.execute(
            "SELECT sql FROM search.sqlite_master WHERE name='search_index'").fetchone()[0])
        assert "detail = column" in sql
    finally:
        await store.close()

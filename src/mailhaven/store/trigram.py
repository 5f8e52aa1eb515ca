"""Substring search over SQLite's FTS5 trigram index kept with ``detail=column``.

Such an index records which trigrams each column of a message holds, not where: it is
40% of the size of a full one (``detail=full``) but cannot match a phrase, and a needle
of more than three characters is a phrase of trigrams. So the index answers which
messages have every trigram of the needle in the column (a superset), and the candidates
are checked against their kept text, matched exactly as the trigram tokenizer folds
(:func:`fold_table`, :func:`matcher`), so the answer is the one a phrase query on a full index gave: a
case-insensitive substring match.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def trigram_query(needle: str, column: str | None) -> tuple[str, bool]:
    """(the FTS5 query for messages with every trigram of ``needle`` (3 characters or more)
    in ``column`` (None: any column), whether its answer is exact). One trigram is exact;
    more are candidates to check with :func:`contains`."""
    grams = sorted({needle[i:i + 3] for i in range(len(needle) - 2)})
    terms = " AND ".join(_quote(g) for g in grams)
    query = f"{column} : ({terms})" if column else terms
    return query, len(needle) == 3


@functools.cache
def fold_table() -> dict[int, int]:
    """Code point -> the code point FTS5's trigram tokenizer folds it to (``case_sensitive
    0``), for every code point it folds. Asked of the SQLite in use (its Unicode tables are
    not Python's: it leaves U+037F alone, folds U+017F to 's'), once a process, for the
    code points Python knows a case of (~3,000; under 0.1 s)."""
    cased = [c for c in range(128, 0x20000)
             if not 0xD800 <= c < 0xE000
             and (chr(c).lower() != chr(c) or chr(c).upper() != chr(c) or chr(c).casefold() != chr(c))]
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE f USING fts5 (x, tokenize = 'trigram')")
        conn.executemany("INSERT INTO f (rowid, x) VALUES (?, ?)", ((c, chr(c) * 3) for c in cased))
        conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, f, 'instance')")
        table = {doc: ord(term[0]) for term, doc in conn.execute("SELECT term, doc FROM temp.v")
                 if ord(term[0]) != doc}
    finally:
        conn.close()
    table.update({c: c + 32 for c in range(ord("A"), ord("Z") + 1)})
    return table


@functools.cache
def _fold_classes() -> dict[int, str]:
    """Folded code point -> every code point that folds to it (itself included)."""
    classes: dict[int, list[int]] = {}
    for c, folded in fold_table().items():
        classes.setdefault(folded, [folded]).append(c)
    return {f: "".join(chr(c) for c in sorted(set(members))) for f, members in classes.items()}


def matcher(needle: str) -> Callable[[str], bool]:
    """Whether a text holds ``needle`` as the index matches it: a regular expression with,
    for each character of the needle, the class of characters that fold as it does (faster
    than folding every candidate's text, and exact where Python's own case rules differ)."""
    table, classes = fold_table(), _fold_classes()
    parts = []
    for ch in needle:
        members = classes.get(table.get(ord(ch), ord(ch)), ch)
        parts.append(re.escape(members) if len(members) == 1 else "[" + "".join(map(re.escape, members)) + "]")
    search = re.compile("".join(parts)).search
    # An ASCII text folds by lower(): look for the folded needle in it (10x the regex's speed).
    folded = "".join(chr(table.get(ord(ch), ord(ch))) for ch in needle)
    return lambda text: folded in text.lower() if text.isascii() else search(text) is not None


def like_matcher(needle: str) -> Callable[[str], bool]:
    """Whether a text holds ``needle`` as SQLite's LIKE finds it: ASCII letters either case."""
    parts = [f"[{ch.lower()}{ch.upper()}]" if ch.isascii() and ch.isalpha() else re.escape(ch) for ch in needle]
    search = re.compile("".join(parts)).search
    folded = "".join(ch.lower() if ch.isascii() else ch for ch in needle)
    return lambda text: folded in text.lower() if text.isascii() else search(text) is not None

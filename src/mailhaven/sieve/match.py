"""Comparators (RFC 4790 as RFC 5228 2.7.3 uses them), match types (RFC 5228 2.7.1),
relational :value/:count (RFC 5231) and :matches captures for variables (RFC 5229 3.2)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

_OPS = {
    "gt": lambda c: c > 0, "ge": lambda c: c >= 0, "lt": lambda c: c < 0,
    "le": lambda c: c <= 0, "eq": lambda c: c == 0, "ne": lambda c: c != 0,
}


def _fold(comparator: str, s: str) -> str:
    if comparator == "i;ascii-casemap":                      # RFC 4790 9.2: ASCII letters only
        return ascii_fold(s)
    return s


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_fold(s: str) -> str:
    """i;ascii-casemap's folding (RFC 4790 9.2): A-Z to a-z, every other character kept.
    For an ASCII string that is ``str.lower`` (Unicode lowers no other ASCII character),
    some thirty times cheaper than ``translate``, which looks each character up in the
    table (a 70-character Subject: 3 us against 0.1 us, i.e. a fifth of a 50-rule run's
    value work, bench/sieve_rules.py); any other string is translated: ``lower`` would
    also fold the Kelvin sign to ``k``, ``İ`` to ``i̇`` and the like."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def _numeric(s: str) -> int | None:
    """RFC 4790 9.1: the leading digits; None (positive infinity) when there are none."""
    m = re.match(r"[0-9]+", s)
    return int(m.group()) if m else None


def compare(comparator: str, a: str, b: str) -> int:
    if comparator == "i;ascii-numeric":
        x, y = _numeric(a), _numeric(b)
        if x is None or y is None:
            return (x is None) - (y is None)
        return (x > y) - (x < y)
    fa, fb = _fold(comparator, a).encode(), _fold(comparator, b).encode()
    return (fa > fb) - (fa < fb)


@lru_cache(maxsize=256)
def _wildcard(pattern: str, casemap: bool) -> re.Pattern[str]:
    """``*`` and ``?`` with ``\\`` escaping, each wildcard a capture group."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("(.*?)")
        elif c == "?":
            out.append("(.)")
        else:
            out.append(re.escape(c))
        i += 1
    flags = re.DOTALL | (re.IGNORECASE | re.ASCII if casemap else 0)
    return re.compile("".join(out) + r"\Z", flags)


# POSIX bracket classes (Pigeonhole's regex is POSIX ERE) spelt the way Python's re reads them.
_POSIX_CLASSES = {
    "alpha": "A-Za-z", "digit": "0-9", "alnum": "A-Za-z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\r\n\v\f", "blank": r" \t", "xdigit": "0-9A-Fa-f", "punct": r"!-/:-@\[-`{-~",
    "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
}


@lru_cache(maxsize=256)
def regex_pattern(key: str, casemap: bool) -> re.Pattern[str]:
    """draft-ietf-sieve-regex 3: a POSIX extended regular expression, searched anywhere in
    the value; raises re.error for one that does not compile."""
    text = re.sub(r"\[:([a-z]+):\]", lambda m: _POSIX_CLASSES.get(m.group(1), m.group()), key)
    return re.compile(text, re.DOTALL | (re.IGNORECASE | re.ASCII if casemap else 0))


def match_one(match_type: str, comparator: str, value: str, key: str,
              relation: str | None = None) -> list[str] | None:
    """None when no match, else the captures (whole value first) for ``:matches``."""
    if match_type == "is":
        return [] if compare(comparator, value, key) == 0 else None
    if match_type == "contains":
        if comparator == "i;ascii-numeric":
            return None
        return [] if _fold(comparator, key) in _fold(comparator, value) else None
    if match_type == "matches":
        if comparator == "i;ascii-numeric":
            return [] if compare(comparator, value, key) == 0 else None
        m = _wildcard(key, comparator == "i;ascii-casemap").match(value)
        if m is None:
            return None
        return [value, *m.groups()]
    if match_type == "regex":                                # captures: whole match, then groups
        try:
            found = regex_pattern(key, comparator == "i;ascii-casemap").search(value)
        except re.error:                                     # a key made at run time (variables)
            return None
        if found is None:
            return None
        return [found.group(), *(g or "" for g in found.groups())]
    if match_type == "value":                                # RFC 5231 4.2
        assert relation is not None
        return [] if _OPS[relation](compare(comparator, value, key)) else None
    raise ValueError(match_type)


def match_any(match_type: str, comparator: str, values: Sequence[str], keys: Sequence[str],
              relation: str | None = None) -> list[str] | None:
    """RFC 5228 2.7.1: true when any value matches any key. :count (RFC 5231 4.1) compares
    the number of values with each key instead."""
    if match_type == "count":
        assert relation is not None
        count = str(len(values))
        for key in keys:
            if _OPS[relation](compare(comparator, count, key)):
                return []
        return None
    if match_type in ("is", "contains") and comparator in ("i;ascii-casemap", "i;octet"):
        # The common case, as match_one decides it with each value and key folded once:
        # equal folded strings are equal UTF-8 (RFC 4790 9.2 / 9.3).
        casemap = comparator == "i;ascii-casemap"
        folded = [ascii_fold(k) for k in keys] if casemap else list(keys)
        for value in values:
            v = ascii_fold(value) if casemap else value
            if (v in folded) if match_type == "is" else any(k in v for k in folded):
                return []
        return None
    for value in values:
        for key in keys:
            got = match_one(match_type, comparator, value, key, relation)
            if got is not None:
                return got
    return None

"""Base subjects and the two THREAD algorithms of RFC 5256.

Input rows are ``(uid, sent date, summary)``; output threads are ``(uid, children)``
trees, ``uid`` None for a placeholder (a referenced message not in the mailbox).
"""

from __future__ import annotations

import re
from typing import Any

from ..message.summary import message_ids

Tree = tuple[int | None, list[Any]]

_LEADER = re.compile(r"^\s*(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)*:\s*", re.I)
_BLOB = re.compile(r"^\s*\[[^\[\]]*\]\s*")
_TRAILER = re.compile(r"\s*\(fwd\)\s*$", re.I)
_FWD_WRAP = re.compile(r"^\[fwd:\s*(.*)\]$", re.I)


def base_subject(subject: str) -> str:
    """RFC 5256 section 2.1, on the decoded subject."""
    s = " ".join(subject.split())
    while True:
        before = s
        s = _TRAILER.sub("", s)
        while True:
            inner = s
            s = _LEADER.sub("", s)
            m = _BLOB.match(s)
            if m and s[m.end():]:
                s = s[m.end():]
            if s == inner:
                break
        m = _FWD_WRAP.match(s)
        if m:
            s = m.group(1)
        if s == before:
            break
    return s.strip().upper()


def _is_reply(subject: str) -> bool:
    s = subject.strip()
    return bool(_LEADER.match(s)) or bool(_TRAILER.search(s)) or bool(_FWD_WRAP.match(s))


def thread_orderedsubject(rows: list[tuple[int, float, dict[str, Any]]]) -> list[Tree]:
    """RFC 5256 3: group by base subject, sort by sent date; the first is the parent."""
    groups: dict[str, list[tuple[float, int]]] = {}
    for uid, date, summary in rows:
        groups.setdefault(base_subject(summary.get("subject") or ""), []).append((date, uid))
    threads: list[tuple[float, int, Tree]] = []
    for members in groups.values():
        members.sort()
        root_date, root = members[0]
        threads.append((root_date, root, (root, [(u, []) for _, u in members[1:]])))
    threads.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in threads]


class _Container:
    __slots__ = ("uid", "date", "subject", "parent", "children")

    def __init__(self) -> None:
        self.uid: int | None = None
        self.date = 0.0
        self.subject = ""
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def ancestor_of(self, other: _Container) -> bool:
        node: _Container | None = other
        depth = 0
        while node is not None and depth < 10000:
            if node is self:
                return True
            node = node.parent
            depth += 1
        return False


def thread_references(rows: list[tuple[int, float, dict[str, Any]]]) -> list[Tree]:
    """RFC 5256 section 3 REFERENCES (the JWZ algorithm), steps 1-5 and the final sort."""
    table: dict[str, _Container] = {}
    for uid, date, summary in sorted(rows, key=lambda r: r[0]):
        own = (message_ids(summary.get("message_id") or "") or [f"<uid-{uid}@mailhaven>"])[0]
        c = table.get(own)
        if c is None or c.uid is not None:
            if c is not None:
                own = f"<dup-{uid}@mailhaven>"   # duplicate Message-ID: a fresh container
            c = _Container()
            table[own] = c
        c.uid, c.date, c.subject = uid, date, summary.get("subject") or ""
        refs = message_ids(summary.get("references") or "")
        if not refs:
            refs = message_ids(summary.get("in_reply_to") or "")[:1]
        prev: _Container | None = None
        for ref in refs:
            rc = table.setdefault(ref, _Container())
            if prev is not None and rc.parent is None and not rc.ancestor_of(prev) and rc is not prev:
                rc.parent = prev
                prev.children.append(rc)
            prev = rc
        if prev is not None and prev is not c and not c.ancestor_of(prev):
            if c.parent is not None:
                c.parent.children.remove(c)
            c.parent = prev
            prev.children.append(c)
        elif c.parent is not None and (not refs or prev is not c):
            # The message's own References decide its parent (RFC 5256 step 1.C breaks the
            # old link). Where that link would make a loop it is not added, and the parent
            # another message's References gave it goes too, as Dovecot does.
            c.parent.children.remove(c)
            c.parent = None
    roots = [c for c in table.values() if c.parent is None]
    roots = _prune(roots, top=True)                                    # steps 2 and 3
    for r in roots:                                                    # step 4
        if r.uid is None:
            r.children = _sorted(r.children)
    roots = _sorted(roots)
    return [_tree(c) for c in _sorted(_gather_by_subject(roots))]     # steps 5 and 6


def _gather_by_subject(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 REFERENCES step 5: threads under the root with the same base subject join."""
    # (A, B) One thread per subject speaks for it: a dummy over a message, an original
    # over a reply or forward.
    subjects = [base_subject(_subject_of(r)) for r in roots]
    table: dict[str, _Container] = {}
    for r, subject in zip(roots, subjects, strict=True):
        if not subject:
            continue
        old = table.get(subject)
        if old is None or (old.uid is not None and (
                r.uid is None or (_is_reply(old.subject) and not _is_reply(r.subject)))):
            table[subject] = r
    # (C) Every other thread of that subject merges into it.
    level = list(roots)
    for r, subject in zip(roots, subjects, strict=True):
        if not subject or r not in level:
            continue
        t = table[subject]
        if t is r:
            continue
        if t.uid is None and r.uid is None:
            t.children += r.children
        elif t.uid is None or (_is_reply(r.subject) and not _is_reply(t.subject)):
            t.children.append(r)
        else:
            dummy = _Container()
            dummy.children = [t, r]
            level[level.index(t)] = dummy
            table[subject] = dummy
        level.remove(r)
    return level


def _subject_of(c: _Container) -> str:
    if c.uid is not None:
        return c.subject
    return c.children[0].subject if c.children else ""


def _prune(nodes: list[_Container], top: bool) -> list[_Container]:
    out: list[_Container] = []
    for c in nodes:
        c.children = _prune(c.children, top=False)
        if c.uid is None:
            if not c.children:
                continue
            if not top or len(c.children) == 1:
                for ch in c.children:
                    ch.parent = c.parent
                out += c.children
                continue
        out.append(c)
    return out


def _first(c: _Container) -> tuple[float, int]:
    """Sort key: (sent date, UID), a placeholder's that of its first child (RFC 5256 3:
    "the sent date of the first child"; ties by mailbox order), so it ties like a message."""
    if c.uid is not None:
        return c.date, c.uid
    return min((_first(ch) for ch in c.children), default=(0.0, 0))


def _sorted(nodes: list[_Container]) -> list[_Container]:
    return sorted(nodes, key=_first)


def _tree(c: _Container) -> Tree:
    return (c.uid, [_tree(ch) for ch in _sorted(c.children)])

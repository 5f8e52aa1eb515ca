"""FETCH (RFC 9051 6.4.5 / 7.5.2, RFC 3516 BINARY, RFC 7162 CHANGEDSINCE/VANISHED).

ENVELOPE and BODYSTRUCTURE come from the structure stored in the message summary at
delivery (:mod:`mailhaven.message.structure`); ``BODY[section]`` slices the stored bytes
at the offsets recorded there. FLAGS, UID, INTERNALDATE, RFC822.SIZE and MODSEQ come
from the session's cached view and need no store read at all.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass
from typing import Any

from ..message import transfer
from ..message.structure import header_end, split_fields, structure_summary
from ..store.api import FlagMode, Message
from ..store.prefetch import Prefetch
from .grammar import Args, SequenceSet, format_datetime, parse_sequence_set
from .headercache import HeaderCache, header_cache, warm
from .message import resolve_set
from .parser import Atom, Command, ParenList
from .render import render_body, render_envelope
from .responses import (
    UNKNOWN_CTE,
    Bad,
    No,
    Reply,
    flag_list,
    literal,
    nstring,
    sequence_set,
    text_literal,
)
from .session import Session

_SECTION_RE = re.compile(
    r"^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?$", re.I)
_PART_RE = re.compile(r"^(\d+(?:\.\d+)*)?(?:\.?(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME))?(.*)$", re.I)
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_HEADER_TEXTS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
_BODY_ITEMS = {"RFC822", "RFC822.TEXT", "BINARY", "BINARY.SIZE"}
"""Items that need more of the message than its header."""
_SIMPLE = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
           "BODY", "BODYSTRUCTURE", "UID", "MODSEQ", "PREVIEW"}


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class FetchItem:
    """One FETCH item. Compared and hashed as the object: :func:`parse_item` keeps one per
    spelling, and the plans kept per item list look their lists up on every FETCH."""
    name: str
    """ENVELOPE, FLAGS, ..., or BODY / BINARY / BINARY.SIZE for a section."""
    section: bool = False
    parts: tuple[int, ...] = ()
    text: str = ""
    """HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME or ''."""
    fields: tuple[str, ...] = ()
    partial: tuple[int, int | None] | None = None
    peek: bool = False
    label: str = ""
    """How the item is named in the response (``BODY[HEADER.FIELDS (SUBJECT)]``)."""


@functools.lru_cache(maxsize=256)
def _items_of(tok: Any) -> tuple[FetchItem, ...]:
    """The items a FETCH names (a list, a macro or one item), kept per token: clients send
    the same few item lists over and over, and the parser hands back the same tokens."""
    if isinstance(tok, ParenList):
        return tuple(parse_items(list(tok.items)))
    if isinstance(tok, Atom) and tok.value.upper() in _MACROS:
        return tuple(parse_item(x) for x in _MACROS[tok.value.upper()])
    if isinstance(tok, Atom):
        return (parse_item(tok.value),)
    raise Bad("Invalid FETCH items")


def parse_items(tokens: list[Any]) -> list[FetchItem]:
    out: list[FetchItem] = []
    for tok in tokens:
        if isinstance(tok, ParenList) and out and out[-1].name == "PREVIEW":
            # RFC 8970 3.1: PREVIEW (LAZY). Every message has its preview from delivery,
            # so LAZY never has to answer NIL.
            if not all(isinstance(m, Atom) and m.value.upper() == "LAZY" for m in tok.items):
                raise Bad("Unknown PREVIEW modifier")
            continue
        if not isinstance(tok, Atom):
            raise Bad("Invalid FETCH item")
        out.append(parse_item(tok.value))
    return out


@functools.lru_cache(maxsize=512)
def parse_item(value: str) -> FetchItem:
    """One FETCH item (kept: clients send the same few item lists over and over)."""
    upper = value.upper()
    if upper in _SIMPLE:
        return FetchItem(name=upper, label=upper)
    m = _SECTION_RE.match(value)
    if m is None:
        raise Bad(f"Invalid FETCH item {value[:40]}")
    kind = m.group(1).upper()
    spec = m.group(2)
    pm = _PART_RE.match(spec)
    if pm is None:
        raise Bad("Invalid section")
    parts = tuple(int(p) for p in pm.group(1).split(".")) if pm.group(1) else ()
    if any(p == 0 for p in parts):
        raise Bad("Invalid section part 0")
    text = (pm.group(2) or "").upper()
    rest = pm.group(3).strip()
    fields: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        fm = re.match(r"^\((.*)\)$", rest)
        if fm is None or not fm.group(1).strip():
            raise Bad("HEADER.FIELDS needs a list of field names")
        fields = tuple(f.strip('"').upper() for f in fm.group(1).split())
    elif rest:
        raise Bad("Invalid section")
    if text == "MIME" and not parts:
        raise Bad("MIME needs a part number")
    if kind.startswith("BINARY") and text:
        raise Bad("BINARY takes part numbers only")  # RFC 3516 section 4.2
    partial = None
    if m.group(3) is not None:
        if kind == "BINARY.SIZE":
            raise Bad("BINARY.SIZE takes no partial")
        length = int(m.group(4)) if m.group(4) is not None else None
        partial = (int(m.group(3)), length)
    base = {"BODY": "BODY", "BODY.PEEK": "BODY", "BINARY": "BINARY", "BINARY.PEEK": "BINARY",
            "BINARY.SIZE": "BINARY.SIZE"}[kind]
    section_text = ".".join(str(p) for p in parts)
    if text:
        section_text = (section_text + "." if section_text else "") + text
    if fields:
        section_text += " (" + " ".join(fields) + ")"
    label = f"{base}[{section_text}]"
    if partial is not None:
        label += f"<{partial[0]}>"
    return FetchItem(name=base, section=True, parts=parts, text=text, fields=fields, partial=partial,
                     peek=kind.endswith(".PEEK") or kind == "BINARY.SIZE", label=label)


_UID_ITEM = FetchItem(name="UID", label="UID")
_MODSEQ_ITEM = FetchItem(name="MODSEQ", label="MODSEQ")


@functools.lru_cache(maxsize=1024)
def flags_item(flags: frozenset[str]) -> bytes:
    """``FLAGS (...)`` for a flag set (a mailbox has few distinct ones: rendered once each)."""
    return b"FLAGS " + flag_list(flags).encode()


# -- the command ----------------------------------------------------------------------


async def cmd_fetch(s: Session, cmd: Command) -> str:
    sel = s.require_selected()
    args = Args(cmd.args)
    uids = resolve_set(s, args.atom("sequence set"), cmd.uid)
    items = list(_items_of(args.next("fetch items")))
    changed_since: int | None = None
    vanished = False
    if args.peek_list():
        mods = args.plist("fetch modifiers")
        i = 0
        while i < len(mods):
            mod = mods[i]
            if not isinstance(mod, Atom):
                raise Bad("Invalid FETCH modifier")
            key = mod.value.upper()
            if key == "CHANGEDSINCE" and i + 1 < len(mods) and isinstance(mods[i + 1], Atom):
                changed_since = int(mods[i + 1].value) if mods[i + 1].value.isdigit() else -1  # type: ignore[union-attr]
                if changed_since < 0:
                    raise Bad("Invalid CHANGEDSINCE")
                s.enable_condstore()
                i += 2
            elif key == "VANISHED":
                if not cmd.uid or not s.qresync:
                    raise Bad("VANISHED needs UID FETCH with QRESYNC enabled")  # RFC 7162 3.2.6
                vanished = True
                i += 1
            else:
                raise Bad(f"Unknown FETCH modifier {key}")
        if vanished and changed_since is None:
            raise Bad("VANISHED needs CHANGEDSINCE")
    args.end()
    names = {i.name for i in items}
    if "MODSEQ" in names:
        s.enable_condstore()
    if changed_since is not None:
        if vanished:
            changes = await s.store.changes_since(sel.id, changed_since)
            largest = sel.uids[-1] if sel.uids else 0
            gone = [u for u in changes.expunged if u <= largest and u not in sel.meta]
            if gone:
                s.untagged(f"VANISHED (EARLIER) {sequence_set(gone)}")
        uids = [u for u in uids if sel.meta[u].modseq > changed_since]
        if "MODSEQ" not in names:
            items.append(_MODSEQ_ITEM)
    if cmd.uid and "UID" not in names:
        items.insert(0, _UID_ITEM)
    uids = sel.live_only(uids)
    if not s.condstore and changed_since is None and _by_columns(s, items):
        await _fetch_columns(s, uids, items)
        return "FETCH completed"
    plan = _Plan.of(s, items)
    for start in range(0, len(uids), 200):
        await _fetch_chunk(s, uids[start:start + 200], items, plan)
    return "FETCH completed"


NOW_MAX = 64
"""Most messages a FETCH answered as it arrives (:func:`fetch_now`) may name."""


def fetch_now(s: Session, cmd: Command) -> str | None:
    """The FETCH clients send for each new message, answered without an await (the
    adapter asks as the line arrives, Session.answer_now): UID, FLAGS, RFC822.SIZE and
    INTERNALDATE of up to :data:`NOW_MAX` messages from the view, and the header fields
    of one message, from the cache or, where the store can answer at once, its stored
    block. The same bytes as :func:`cmd_fetch`; None for anything else (a modifier,
    CONDSTORE, a bad argument, a block not at hand), having written nothing."""
    if cmd.name != "FETCH" or len(cmd.args) != 2 or s.condstore or not isinstance(cmd.args[0], Atom):
        return None
    sel = s.require_selected()
    text = cmd.args[0].value
    try:
        if not text.isdigit() and _span(parse_sequence_set(text)) > NOW_MAX:
            return None         # 1:* and the like: not resolved twice
        uids = resolve_set(s, text, cmd.uid)
        items = _items_of(cmd.args[1])
    except Reply:
        return None             # cmd_fetch answers the BAD
    if len(uids) > NOW_MAX:
        return None
    plan = _ColumnPlan.of(_with_uid(items) if cmd.uid else items, s.utf8, sel.readonly)
    if plan is None or plan.raw or plan.wire:
        return None
    bodies: dict[int, bytes] = {}
    if plan.headers:
        if len(uids) != 1:
            return None
        key = (sel.id, sel.uidvalidity, uids[0])
        cache = header_cache(s.store)
        header = cache.get(key)
        if header is None:
            _start_warming(s, sel, cache)
            rows = s.store.get_header_now(sel.id, uids[0])
            if not rows:
                return None     # cannot at once, no stored block, or gone: cmd_fetch sees to it
            header = rows[0][1]
            cache.put_header(key, header)
        bodies[uids[0]] = header
    if uids:
        s.write(_column_lines(s, sel, plan, uids, {}, bodies, {}, sel.recent if not s.rev2 else set()))
    return "FETCH completed"


def _span(seq: SequenceSet) -> int:
    """How many numbers a sequence set names at most (``*`` and ``$``: more than any)."""
    if seq.saved or any(not a or not b for a, b in seq.ranges):
        return 1 << 32
    return sum(abs(b - a) + 1 for a, b in seq.ranges)


@functools.lru_cache(maxsize=256)
def _with_uid(items: tuple[FetchItem, ...]) -> tuple[FetchItem, ...]:
    """A UID FETCH's items: UID first unless named (as :func:`cmd_fetch` puts it)."""
    return items if any(i.name == "UID" for i in items) else (_UID_ITEM, *items)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a FETCH needs from the store, worked out once from its items."""

    need_summary: bool
    wire: bool
    """ENVELOPE/BODYSTRUCTURE from the forms rendered at delivery, not from the summary."""
    need_raw: bool
    sets_seen: bool
    headers_only: bool
    """Nothing but header blocks (the commonest FETCH of all): from this process's cache."""

    @classmethod
    def of(cls, s: Session, items: list[FetchItem]) -> _Plan:
        return cls._of(tuple(items), s.utf8, s.require_selected().readonly)

    @classmethod
    @functools.lru_cache(maxsize=256)
    def _of(cls, items: tuple[FetchItem, ...], utf8: bool, readonly: bool) -> _Plan:
        """Kept per item list: clients send the same few FETCHes over and over."""
        plain = {i.name for i in items if not i.section}
        names = {i.name for i in items}
        by_structure = any(i.section and (i.parts or i.text == "MIME" or i.name != "BODY") for i in items)
        need_summary = bool(plain & {"ENVELOPE", "BODY", "BODYSTRUCTURE", "PREVIEW"}) or by_structure
        need_raw = bool(names & (_BODY_ITEMS | {"RFC822.HEADER"})) or any(i.section for i in items)
        return cls(
            need_summary=need_summary,
            # ENVELOPE and BODYSTRUCTURE alone, for a session without UTF8=ACCEPT: the forms
            # rendered at delivery serve, and the summary is neither read nor decoded.
            wire=need_summary and not utf8 and not plain & {"BODY", "PREVIEW"} and not by_structure,
            need_raw=need_raw,
            sets_seen=not readonly and any(
                (i.section and not i.peek) or i.name in ("RFC822", "RFC822.TEXT") for i in items),
            headers_only=need_raw and not need_summary and all(
                i.text in _HEADER_TEXTS and not i.parts if i.section else i.name not in _BODY_ITEMS
                for i in items))


async def _fetch_chunk(s: Session, chunk: list[int], items: list[FetchItem], plan: _Plan) -> None:
    """Any FETCH, for up to a few hundred UIDs of the view."""
    sel = s.require_selected()
    cache = header_cache(s.store)
    messages: dict[int, Message] = {}
    raws: dict[int, bytes] = {}
    large: dict[int, str] = {}
    """Large messages (uid -> blob id) whose bodies go out a piece at a time (fetch_large.py)."""
    if plan.need_raw and not plan.headers_only:
        big = [u for u in chunk if sel.meta[u].size > STREAM_MIN]
        if big:
            for m in await s.store.get_messages(sel.id, big, with_summary=plan.need_summary and not plan.wire,
                                                imap_wire=plan.wire):
                messages[m.uid] = m
                large[m.uid] = m.blob_id
    if plan.need_raw:       # rows and bytes in one trip to the store (headers: what the cache lacks)
        wanted = cache.lookup(sel.id, sel.uidvalidity, chunk, raws) if plan.headers_only else chunk
        wanted = [u for u in wanted if u not in large] if large else wanted
        if plan.headers_only and wanted:        # then as stored beside the message
            wanted = await _stored_headers(s, sel, cache, wanted, raws)
        if plan.headers_only and wanted:
            from .fetch_large import large_headers

            wanted = await large_headers(s, sel.id, sel.uidvalidity, wanted,
                                         {u: sel.meta[u].size for u in wanted}, raws)
        if wanted:
            for m, raw in await s.store.get_messages_raw(
                    sel.id, wanted, with_summary=plan.need_summary and not plan.wire, imap_wire=plan.wire):
                messages[m.uid] = m
                raws[m.uid] = raw
                cache.put_message((sel.id, sel.uidvalidity, m.uid), raw)
    elif plan.need_summary:
        for m in await s.store.get_messages(sel.id, chunk, with_summary=not plan.wire, imap_wire=plan.wire):
            messages[m.uid] = m
    seen_now: set[int] = set()
    if plan.sets_seen:
        unseen = [u for u in chunk if "\\Seen" not in sel.meta[u].flags]
        if unseen:
            changed, _ = await s.store.set_flags(sel.id, unseen, ["\\Seen"], FlagMode.ADD)
            for m in changed:
                sel.update_message(m)
                seen_now.add(m.uid)
    for uid in chunk:
        if (uid not in raws) if plan.headers_only else (
                (plan.need_summary or plan.need_raw) and uid not in messages):
            continue  # expunged meanwhile; its EXPUNGE comes at the next allowed moment
        if uid in large:
            from .fetch_large import write_large

            await write_large(s, uid, sel.msn(uid), items, messages.get(uid), large[uid], uid in seen_now)
            continue
        parts = _render(s, uid, items, messages.get(uid), raws.get(uid, b""), uid in seen_now)
        s.write(f"* {sel.msn(uid)} FETCH (".encode() + b" ".join(parts) + b")\r\n")
        await s.maybe_flush()


STREAM_MIN = 1024 * 1024
"""Messages larger than this are sent from their files (fetch_large.py), never read whole."""
META_ITEMS = frozenset({"UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE"})
"""Items the session's view holds."""
_WIRE_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE"})


def _by_columns(s: Session, items: list[FetchItem]) -> bool:
    """Whether :func:`_fetch_columns` can answer: view columns, the ENVELOPE and
    BODYSTRUCTURE rendered at delivery (not for UTF8=ACCEPT, which gets its own form), and
    the whole message or its header fields, when that does not set \\Seen."""
    return _ColumnPlan.of(tuple(items), s.utf8, s.require_selected().readonly) is not None


@dataclass(frozen=True, slots=True)
class _ColumnPlan:
    """What :func:`_fetch_columns` does for one item list, worked out once."""

    names: tuple[str, ...]
    """Item names; a section's is its label (``BODY[HEADER]``), a key of ``sections``."""
    sections: dict[str, tuple[FetchItem, bytes]]
    """Each section item and how it starts in the response (``BODY[HEADER] ``)."""
    wire: bool
    """ENVELOPE or BODYSTRUCTURE, as rendered at delivery."""
    raw: bool
    """The whole message."""
    headers: bool
    """Only the header block (from this process's cache)."""

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def of(items: tuple[FetchItem, ...], utf8: bool, readonly: bool) -> _ColumnPlan | None:
        for item in items:
            if item.section:
                if item.name != "BODY" or item.parts or item.text not in _COLUMN_SECTIONS or not (
                        item.peek or readonly):
                    return None
            elif item.name not in META_ITEMS and (utf8 or item.name not in _WIRE_ITEMS):
                return None
        names = tuple(item.label if item.section else item.name for item in items)
        sections = {item.label: (item, item.label.encode() + b" ") for item in items if item.section}
        raw = any(not item.text for item, _ in sections.values())
        return _ColumnPlan(names=names, sections=sections, wire=not _WIRE_ITEMS.isdisjoint(names), raw=raw,
                           headers=bool(sections) and not raw)


_COLUMN_SECTIONS = ("", *_HEADER_TEXTS)
"""Sections of the message itself (no part numbers): the bytes, or its header block."""


@functools.lru_cache(maxsize=4096)
def _internaldate_day(day: int) -> bytes:
    """``INTERNALDATE "17-Jul-1996 `` of a day since the epoch (a mailbox spans few days)."""
    date = format_datetime(day * 86400)
    return b'INTERNALDATE "' + date[:date.rindex(" ", 0, -6)].encode() + b" "


def _internaldate_item(ts: float) -> bytes:
    """INTERNALDATE (RFC 9051 7.5.2), in UTC as :func:`format_datetime` writes it: the day from
    a cache of days, the time of day by arithmetic, so the cost per message is the same at
    any mailbox size (a cache per timestamp missed on every message past its size)."""
    day, secs = divmod(int(ts // 1), 86400)          # floor, as time.gmtime rounds
    minute, second = divmod(secs, 60)
    return _internaldate_day(day) + _HOUR_MINUTE[minute] + _SECOND_ZONE[second]


_HOUR_MINUTE = tuple(b"%02d:%02d:" % divmod(m, 60) for m in range(24 * 60))
_SECOND_ZONE = tuple(b'%02d +0000"' % s for s in range(60))


COLUMN_CHUNK = 1000
"""Messages per store read and write of the columns path."""
RAW_CHUNK_BYTES = 1024 * 1024
"""Message bytes per store read when the bytes are fetched (100 messages a read before:
a thread hop per 300 KB of ordinary mail)."""


def _chunks(sel: Any, uids: list[int], raw: bool) -> list[tuple[list[int], bool]]:
    """``uids`` in runs of at most :data:`COLUMN_CHUNK`, and when the message bytes are
    wanted, of at most :data:`RAW_CHUNK_BYTES` of them (or one message, if bigger); each
    with whether it holds a message over :data:`STREAM_MIN` (told from the view's sizes)."""
    if not raw:
        return [(uids[i:i + COLUMN_CHUNK], False) for i in range(0, len(uids), COLUMN_CHUNK)]
    out: list[tuple[list[int], bool]] = []
    chunk: list[int] = []
    total = 0
    large = False
    sizes = sel.column("sizes")
    for uid in uids:
        i = sel.index(uid)
        size = 0 if i is None else sizes[i]
        if chunk and (total + size > RAW_CHUNK_BYTES or len(chunk) >= COLUMN_CHUNK):
            out.append((chunk, large))
            chunk, total, large = [], 0, False
        chunk.append(uid)
        total += size
        large = large or size > STREAM_MIN
    if chunk:
        out.append((chunk, large))
    return out


async def _fetch_columns(s: Session, uids: list[int], items: list[FetchItem]) -> None:
    """The FETCHes clients send for whole mailboxes (flags resync, the message list's
    ENVELOPE and BODYSTRUCTURE, BODY.PEEK[] downloads): UID, FLAGS, RFC822.SIZE and
    INTERNALDATE from the view's columns, each distinct flag set rendered once; ENVELOPE
    and BODYSTRUCTURE as stored at delivery and the message bytes, read as plain tuples
    (no Message objects). The same bytes as :func:`_render` (a test compares them)."""
    sel = s.require_selected()
    plan = _ColumnPlan.of(tuple(items), s.utf8, sel.readonly)
    assert plan is not None
    wire, raw, headers = plan.wire, plan.raw, plan.headers
    recent = sel.recent if not s.rev2 else set()
    shown: dict[tuple[frozenset[str], bool], bytes] = {}
    cache = header_cache(s.store)
    if headers and len(uids) == 1 and await _one_header(s, sel, cache, plan, uids[0], shown, recent):
        return
    chunks = _chunks(sel, uids, raw)
    ahead: Prefetch[list[tuple[int, bytes]]] | None = None
    """The next chunk's bytes, read on a reader thread while this chunk is rendered (BODY[]
    without ENVELOPE/BODYSTRUCTURE: those chunks may fall back to _fetch_chunk)."""
    try:
        for n, (chunk, large) in enumerate(chunks):
            if large:
                await _fetch_chunk(s, chunk, items, _Plan.of(s, items))    # large ones go out from their files
                continue
            forms: dict[int, tuple[bytes | None, bytes | None]] = {}
            bodies: dict[int, bytes] = {}
            if wire:
                forms = {uid: (env, body) for uid, env, body in await s.store.get_wire_forms(sel.id, chunk)}
                if any(env is None or body is None for env, body in forms.values()):
                    await _fetch_chunk(s, chunk, items, _Plan.of(s, items))  # rows from before the forms were stored
                    continue
            if raw:
                bodies = dict(await ahead if ahead is not None else await s.store.get_raw(sel.id, chunk))
                ahead = None
                if not wire and n + 1 < len(chunks) and not chunks[n + 1][1]:
                    ahead = Prefetch(s.store.get_raw(sel.id, chunks[n + 1][0]))
            elif headers:       # header blocks from this process's cache, else as stored; messages for the rest
                missing = cache.lookup(sel.id, sel.uidvalidity, chunk, bodies)
                if missing:
                    missing = await _stored_headers(s, sel, cache, missing, bodies)
                if missing:
                    from .fetch_large import large_headers

                    missing = await large_headers(s, sel.id, sel.uidvalidity, missing,
                                                  {u: sel.meta[u].size for u in missing}, bodies)
                if missing:
                    for uid, data in await s.store.get_raw(sel.id, missing):
                        bodies[uid] = cache.put_message((sel.id, sel.uidvalidity, uid), data)
            s.write(_column_lines(s, sel, plan, chunk, forms, bodies, shown, recent))
            await s.maybe_flush()
    finally:
        if ahead is not None:               # the FETCH failed (the client went): nobody reads it
            ahead.cancel()


def _start_warming(s: Session, sel: Any, cache: HeaderCache) -> None:
    """A one-message header FETCH missed the cache: at the first miss in the selected
    mailbox, its stored header blocks are read into the cache in the background
    (headercache.warm), so the next such FETCHes need no store read."""
    spawn = s.ctx.spawn
    if spawn is not None and cache.first_miss(sel.id, sel.uidvalidity):
        spawn(warm(cache, sel.id, sel.uidvalidity, sel.uids[:], functools.partial(s.store.get_headers, sel.id)))


async def _stored_headers(s: Session, sel: Any, cache: HeaderCache, uids: list[int],
                          found: dict[int, bytes]) -> list[int]:
    """The header blocks the store keeps beside ``uids``' messages go into ``found`` and the
    cache; returns the UIDs without one (stored before blocks were, or too large)."""
    for uid, header in await s.store.get_headers(sel.id, uids):
        found[uid] = header
        cache.put_header((sel.id, sel.uidvalidity, uid), header)
    return [u for u in uids if u not in found]


async def _one_header(s: Session, sel: Any, cache: HeaderCache, plan: _ColumnPlan, uid: int,
                      shown: dict[tuple[frozenset[str], bool], bytes], recent: set[int]) -> bool:
    """The FETCH of one message's header fields that clients send for each new message:
    its header block from the cache, else as stored beside the message (one small row, read
    on the loop), else cut from the message's bytes; without the chunking and read-ahead a
    whole-mailbox FETCH needs. False for a message over :data:`STREAM_MIN` without a stored
    block (left to the general path, which reads only the start of its file)."""
    key = (sel.id, sel.uidvalidity, uid)
    header = cache.get(key)
    if header is None:
        _start_warming(s, sel, cache)
        stored = await s.store.get_headers(sel.id, [uid])
        if stored:
            header = stored[0][1]
            cache.put_header(key, header)
    if header is None:
        i = sel.index(uid)
        if i is not None and sel.column("sizes")[i] > STREAM_MIN:
            return False
        rows = await s.store.get_raw(sel.id, [uid])
        if not rows:
            return True         # expunged meanwhile; its EXPUNGE comes at the next allowed moment
        header = cache.put_message(key, rows[0][1])
    s.write(_column_lines(s, sel, plan, [uid], {}, {uid: header}, shown, recent))
    return True


def _column_lines(s: Session, sel: Any, plan: _ColumnPlan, chunk: list[int],
                  forms: dict[int, tuple[bytes | None, bytes | None]], bodies: dict[int, bytes],
                  shown: dict[tuple[frozenset[str], bool], bytes], recent: set[int]) -> bytes:
    """The FETCH lines of one chunk, joined once (message bytes copied once, not per item,
    line and chunk)."""
    names, wire, raw, headers = plan.names, plan.wire, plan.raw, plan.headers
    view = sel.uids
    flags_of, sizes, dates = sel.column("flags"), sel.column("sizes"), sel.column("dates")
    i = bisect.bisect_left(view, chunk[0])
    out: list[bytes] = []
    for uid in chunk:
        while i < len(view) and view[i] < uid:
            i += 1
        if i == len(view) or view[i] != uid or (wire and uid not in forms) or (
                (raw or headers) and uid not in bodies):
            continue        # expunged meanwhile; its EXPUNGE comes at the next allowed moment
        out.append(b"* %d FETCH (" % (i + 1))
        sep = b""
        for name in names:
            out.append(sep)
            sep = b" "
            if name == "UID":
                out.append(b"UID %d" % uid)
            elif name == "FLAGS":
                key = (flags_of[i], uid in recent)
                text = shown.get(key)
                if text is None:
                    s.ensure_flags_known(key[0])
                    text = shown[key] = flags_item(s.shown_flags(uid, key[0]))
                out.append(text)
            elif name == "RFC822.SIZE":
                out.append(b"RFC822.SIZE %d" % sizes[i])
            elif name == "INTERNALDATE":
                out.append(_internaldate_item(dates[i]))
            elif name == "ENVELOPE":
                out.append(b"ENVELOPE " + forms[uid][0])   # type: ignore[operator]
            elif name == "BODYSTRUCTURE":
                out.append(b"BODYSTRUCTURE " + forms[uid][1])  # type: ignore[operator]
            else:
                item, label = plan.sections[name]
                data = bodies[uid]
                if item.text:     # bodies are header blocks, or whole messages beside BODY[]
                    data = header_section(data, item) if headers else section_bytes(data, None, item)
                if item.partial is not None:
                    start, length = item.partial
                    data = data[start:] if length is None else data[start:start + length]
                if b"\x00" in data:
                    data = text_literal(data)                       # NUL sent as 0x80 (responses.py)
                    out += (label, data)
                else:
                    out += (label, b"{%d}\r\n" % len(data), data)    # text_literal, the data not copied
        out.append(b")\r\n")
    return b"".join(out)


def _structure(msg: Message | None, raw: bytes) -> dict[str, Any]:
    imap = (msg.summary.get("imap") if msg is not None else None)
    if not imap:
        imap = structure_summary(raw)["imap"] if raw else {"envelope": [None] * 10, "body": None}
    return imap  # type: ignore[no-any-return]


def _render(s: Session, uid: int, items: list[FetchItem], msg: Message | None, raw: bytes,
            seen_now: bool) -> list[bytes]:
    sel = s.require_selected()
    meta = sel.meta[uid]
    out: list[bytes] = []
    utf8 = s.utf8
    flags_done = False
    for item in items:
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % uid)
        elif name == "FLAGS":
            s.ensure_flags_known(meta.flags)
            out.append(flags_item(s.shown_flags(uid, meta.flags)))
            flags_done = True
            if s.condstore and not any(i.name == "MODSEQ" for i in items):
                out.append(b"MODSEQ (%d)" % meta.modseq)
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % meta.modseq)
        elif name == "INTERNALDATE":
            out.append(_internaldate_item(meta.internal_date))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % meta.size)
        elif name == "ENVELOPE":
            if msg is not None and msg.wire is not None and not utf8:
                out.append(b"ENVELOPE " + msg.wire[0])
            else:
                st = _structure(msg, raw)
                out.append(b"ENVELOPE " + render_envelope(st["envelope"], utf8, st.get("envelope8")))
        elif name == "BODYSTRUCTURE" and msg is not None and msg.wire is not None and not utf8:
            out.append(b"BODYSTRUCTURE " + msg.wire[1])
        elif name in ("BODY", "BODYSTRUCTURE") and not item.section:
            body = _structure(msg, raw)["body"]
            if body is None:
                body = structure_summary(raw)["imap"]["body"] if raw else None
            rendered = render_body(body, name == "BODYSTRUCTURE", utf8) if body else b'("text" "plain" NIL NIL NIL "7bit" 0 0)'
            out.append(name.encode() + b" " + rendered)
        elif name == "PREVIEW":
            # RFC 8970: up to 256 characters of the readable text, whitespace collapsed,
            # computed at delivery (a summary without one: the empty preview).
            text = msg.summary.get("preview") if msg is not None else None
            out.append(b"PREVIEW " + nstring(text if text is not None else "", utf8=utf8))
        elif name == "RFC822":
            out.append(b"RFC822 " + text_literal(raw))
        elif name == "RFC822.HEADER":
            out.append(b"RFC822.HEADER " + text_literal(raw[:header_end(raw, 0, len(raw))]))
        elif name == "RFC822.TEXT":
            out.append(b"RFC822.TEXT " + text_literal(raw[header_end(raw, 0, len(raw)):]))
        elif name == "BODY":
            root = _structure(msg, raw)["body"] if item.parts else None
            data = section_bytes(raw, root, item)
            out.append(item.label.encode() + b" " + _partial_literal(data, item))
        elif name in ("BINARY", "BINARY.SIZE"):
            node = find_part(_structure(msg, raw)["body"], item.parts)
            if node is None:
                data = b""
            elif not item.parts:
                # RFC 3516 4.2: BINARY[] is the whole message, header included; only a
                # single-part body has an encoding to undo.
                h = node["h"][1]
                whole = "parts" in node or "msg" in node
                data = raw if whole else raw[:h] + decode_body(raw[h:node["e"]], node.get("enc", "7bit"))
            else:
                data = decode_body(raw[node["h"][1]:node["e"]], node.get("enc", "7bit"))
            if name == "BINARY.SIZE":
                out.append(item.label.encode() + b" %d" % len(data))
            else:
                if item.partial is not None:
                    start, length = item.partial
                    data = data[start:] if length is None else data[start:start + length]
                out.append(item.label.encode() + b" " + literal(data, binary=b"\x00" in data))
    if seen_now and not flags_done:
        s.ensure_flags_known(meta.flags)
        out.append(flags_item(s.shown_flags(uid, meta.flags)))
        if s.condstore:
            out.append(b"MODSEQ (%d)" % meta.modseq)
    return out


def _partial_literal(data: bytes, item: FetchItem) -> bytes:
    if item.partial is not None:
        start, length = item.partial
        data = data[start:] if length is None else data[start:start + length]
    return text_literal(data)


# -- sections ---------------------------------------------------------------------------


def find_part(root: dict[str, Any] | None, parts: tuple[int, ...]) -> dict[str, Any] | None:
    """The entity a part specifier names (RFC 9051 6.4.5, the BODY[<section>] rules)."""
    node = root
    for i, n in enumerate(parts):
        if node is None:
            return None
        if i > 0 and "msg" in node:
            node = node["msg"]
        if "parts" in node:
            if n > len(node["parts"]):
                return None
            node = node["parts"][n - 1]
        elif n != 1:
            return None
    return node


def section_bytes(raw: bytes, root: dict[str, Any] | None, item: FetchItem) -> bytes:
    """``root`` is only needed (and computed when None) for sections with part numbers."""
    if not item.parts and not item.text:
        return raw
    if not item.parts:
        node: dict[str, Any] | None = {"h": [0, header_end(raw, 0, len(raw))], "e": len(raw)}
    else:
        if root is None:
            root = structure_summary(raw)["imap"]["body"]
        node = find_part(root, item.parts)
    if node is None:
        return b""
    if item.text == "MIME":
        return raw[node["h"][0]:node["h"][1]]
    if not item.text:
        return raw[node["h"][1]:node["e"]]
    # HEADER / TEXT of a message: the root, or an encapsulated message/rfc822 part.
    message = node if not item.parts else node.get("msg")
    if message is None:
        return b""
    if item.text == "TEXT":
        return raw[message["h"][1]:message["e"]]
    return header_section(raw[message["h"][0]:message["h"][1]], item)


def header_section(header: bytes, item: FetchItem) -> bytes:
    """HEADER, HEADER.FIELDS or HEADER.FIELDS.NOT of a message whose header block (through
    the blank line) is ``header``."""
    if item.text == "HEADER":
        return header
    keep = item.text == "HEADER.FIELDS"
    pattern = _fields_regex(item.fields) if keep else None
    if pattern is not None and header.count(b"\r") == header.count(b"\r\n"):
        chosen = pattern.findall(header)        # only the last can lack its line end (at the end of the block)
        if chosen and not chosen[-1].endswith(b"\n"):
            chosen[-1] += b"\r\n"
    else:
        wanted = {f.lower() for f in item.fields}
        chosen = [f if f.endswith(b"\n") else f + b"\r\n"
                  for name, f in split_fields(header) if (name in wanted) == keep]
    chosen.append(b"\r\n")
    return b"".join(chosen)


@functools.lru_cache(maxsize=256)
def _fields_regex(names: tuple[str, ...]) -> re.Pattern[bytes] | None:
    """The fields ``names`` (with their folded lines and line end) in a header block, found
    directly: what :func:`split_fields` then a filter would give (a test compares them),
    for the HEADER.FIELDS that clients send for every new message. None for names that are
    not ASCII (left to split_fields)."""
    if not all(n.isascii() for n in names):
        return None
    alternatives = b"|".join(re.escape(n.encode("ascii")) for n in names)
    return re.compile(rb"^(?:" + alternatives + rb")[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*\n?", re.I | re.M)


def decode_body(data: bytes, encoding: str) -> bytes:
    """RFC 3516: the content with its Content-Transfer-Encoding removed."""
    try:
        return transfer.decode(data, encoding)
    except transfer.UnknownEncoding:
        raise No("Unknown Content-Transfer-Encoding", code=UNKNOWN_CTE) from None


COMMANDS = {"FETCH": (cmd_fetch, "selected")}

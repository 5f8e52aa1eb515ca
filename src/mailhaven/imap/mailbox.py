"""Mailbox commands: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB,
NAMESPACE, STATUS, APPEND, and QUOTA (RFC 9051 6.3, 5258, 6154, 5819, 3502, 4315, 9208, 7162)."""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from ..message.binary import binary_parts_to_base64, binary_parts_to_base64_file
from ..message.fileview import FileView
from ..message.lineends import normalize_line_ends
from ..message.structure import header_end
from ..store.api import (
    SPECIAL_USES,
    AlreadyExists,
    BlobRef,
    InvalidName,
    Mailbox,
    NotFound,
    QuotaExceeded,
    StorageFull,
)
from ..store.blobview import BlobView
from .grammar import (
    Args,
    SequenceSet,
    decode_mailbox,
    encode_mailbox,
    parse_datetime,
    parse_sequence_set,
)
from .headercache import header_cache
from .parser import Atom, Command, ParenList, String
from .responses import (
    ALREADYEXISTS,
    CANNOT,
    CLIENTBUG,
    NONEXISTENT,
    NOPERM,
    OVERQUOTA,
    TOOBIG,
    TRYCREATE,
    USEATTR,
    Bad,
    No,
    astring_bytes,
    flag_list,
    not_enough_space,
    sequence_list,
    sequence_set,
)
from .selected import MailboxIndex, SelectedMailbox
from .session import SYSTEM_FLAGS, Session, State
from .spool import LiteralSpool

SEP = "/"


def quoted_name(s: Session, name: str) -> bytes:
    return astring_bytes(encode_mailbox(name, s.utf8))


async def find_mailbox(s: Session, name: str, *, trycreate: bool = False) -> Mailbox:
    assert s.account_id is not None
    try:
        return await s.store.get_mailbox(s.account_id, name, counts=False)   # STATUS counts itself
    except NotFound:
        raise No("No such mailbox", code=TRYCREATE if trycreate else NONEXISTENT) from None


# -- SELECT / EXAMINE (RFC 9051 6.3.2, 6.3.3; RFC 7162 3.1.8, 3.2.5) -------------------------


async def cmd_select(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    name = args.mailbox(s.utf8)
    qresync: list[object] | None = None
    if not args.at_end():
        for tok in _pairs(args.plist("select parameters")):
            key, value = tok
            if key == "CONDSTORE":
                s.enabled.add("CONDSTORE")
            elif key == "QRESYNC":
                if not s.qresync:
                    raise Bad("QRESYNC is not enabled")  # RFC 7162 3.2.5
                if not isinstance(value, ParenList):
                    raise Bad("QRESYNC needs parameters")
                qresync = list(value.items)
            else:
                raise Bad(f"Unknown SELECT parameter {key}")
    args.end()
    readonly = cmd.name == "EXAMINE"
    if s.selected is not None:
        s.selected = None
        s.state = State.AUTHENTICATED
        s.untagged("OK [CLOSED] Previous mailbox closed")  # RFC 9051 6.3.2 / RFC 7162 3.2.11
    box = await find_mailbox(s, name)
    sel = await _load(s, box, readonly)
    await claim_recent(s, sel, 0)
    s.selected = sel
    s.state = State.SELECTED
    s.dirty = True
    flag_sets = sel.column("flags")
    keywords = sorted({f for fs in set(flag_sets) for f in fs if not f.startswith("\\")})
    sel.keywords = set(keywords)
    s.untagged(f"{sel.exists} EXISTS")
    if not s.rev2:
        s.untagged(f"{len(sel.recent)} RECENT")
        unseen = next((i + 1 for i, fs in enumerate(flag_sets) if "\\Seen" not in fs), None)
        if unseen is not None:
            s.untagged(f"OK [UNSEEN {unseen}] First unseen")
    s.write_flags(sel)
    s.untagged(f"OK [UIDVALIDITY {sel.uidvalidity}] UIDs valid")
    s.untagged(f"OK [UIDNEXT {sel.uidnext}] Predicted next UID")
    s.untagged(f"OK [HIGHESTMODSEQ {max(sel.known_modseq, 1)}] Highest")
    if s.rev2:
        s.untagged(b"LIST () \"/\" " + quoted_name(s, box.name))
    if qresync is not None:
        await _qresync(s, sel, qresync)
    return f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {cmd.name} completed"


async def claim_recent(s: Session, sel: SelectedMailbox, start: int) -> None:
    """RFC 3501 2.3.2: messages of the view from position ``start`` on that no other session
    has been told of become \\Recent in this one (EXAMINE only looks: nothing is taken)."""
    if start >= len(sel.uids):
        return
    first = await s.store.claim_recent(sel.id, sel.uids[-1] + 1, claim=not sel.readonly)
    i = max(start, bisect.bisect_left(sel.uids, first))
    sel.recent.update(sel.uids[i:])


def _pairs(items: Sequence[object]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    i = 0
    while i < len(items):
        tok = items[i]
        if not isinstance(tok, Atom):
            raise Bad("Expected a parameter name")
        value = items[i + 1] if i + 1 < len(items) and isinstance(items[i + 1], ParenList) else None
        out.append((tok.value.upper(), value))
        i += 2 if value is not None else 1
    return out


INDEX_CACHE_MAILBOXES = 64
"""Mailboxes whose metadata a process keeps between SELECTs."""
INDEX_CACHE_MIN = 1000
"""Only mailboxes this big are kept: small ones load from the store as fast."""


async def _load(s: Session, box: Mailbox, readonly: bool) -> SelectedMailbox:
    """Fill the view: from the per-process index of this mailbox brought up to date with
    the store's changes since it was taken (one indexed query), else from the store."""
    cache: dict[int, tuple[int, int, MailboxIndex]] = s.store.__dict__.setdefault("_imap_index_cache", {})
    entry = cache.get(box.id)
    if entry is not None and entry[0] == box.uidvalidity:
        changes = None if entry[1] == box.highestmodseq else await s.store.changes_since(box.id, entry[1])
        sel = SelectedMailbox(box, readonly)
        if sel.load_index(entry[2], changes):
            if changes is not None:
                cache[box.id] = (box.uidvalidity, changes.highestmodseq, sel.snapshot())
            return sel
    sel = SelectedMailbox(box, readonly)
    fast = getattr(s.store, "list_message_columns", None)   # optional store fast path
    if fast is not None:
        sel.load_columns(await fast(box.id))
    else:
        sel.load(await s.store.list_messages(box.id))
    if len(sel.uids) >= INDEX_CACHE_MIN:
        if len(cache) >= INDEX_CACHE_MAILBOXES:
            cache.pop(next(iter(cache)))
        cache[box.id] = (box.uidvalidity, box.highestmodseq, sel.snapshot())
    return sel


async def _qresync(s: Session, sel: SelectedMailbox, params: list[object]) -> None:
    """RFC 7162 3.2.5.2: VANISHED (EARLIER) and FETCH for what changed since the client's state."""
    a = Args(params)  # type: ignore[arg-type]
    uidvalidity = a.number("uidvalidity", nonzero=True)
    modseq = a.number("mod-sequence", nonzero=True)
    known = None
    if not a.at_end() and not a.peek_list():
        known = parse_sequence_set(a.atom("known uids"))
    if not a.at_end():
        # seq-match-data: "(known-sequence-set known-uid-set)", pairs in order. It lets a
        # server without a complete expunge history shorten VANISHED; ours is complete
        # (every expunge is logged with its MODSEQ), so it is checked, never needed.
        match = Args(a.plist("sequence match data"))
        seqs = parse_sequence_set(match.atom("known sequence set"))
        uids = parse_sequence_set(match.atom("known uid set"))
        match.end()
        def size(x: SequenceSet) -> int | None:
            if x.saved or any(lo == 0 or hi == 0 for lo, hi in x.ranges):
                return None                                  # "*" and "$" name no fixed count
            return sum(abs(hi - lo) + 1 for lo, hi in x.ranges)

        if size(seqs) is None or size(seqs) != size(uids):
            raise Bad("sequence match data must pair as many sequence numbers as UIDs")  # RFC 7162 3.2.5.2
    a.end()
    if uidvalidity != sel.uidvalidity:
        return
    changes = await s.store.changes_since(sel.id, modseq)
    vanished = [u for u in changes.expunged if known is None or known.contains(u, sel.uidnext)]
    vanished = [u for u in vanished if u not in sel.meta]
    if vanished:
        s.untagged(f"VANISHED (EARLIER) {sequence_set(vanished)}")
    for m in changes.changed:
        n = sel.msn(m.uid)
        meta = sel.meta.get(m.uid)
        if n is not None and meta is not None:
            s.ensure_flags_known(meta.flags)
            s.untagged(f"{n} FETCH (UID {m.uid} FLAGS {flag_list(meta.flags)} MODSEQ ({meta.modseq}))")


# -- CREATE / DELETE / RENAME (RFC 9051 6.3.4-6.3.6, RFC 6154 5.3) --------------------------


async def cmd_create(s: Session, cmd: Command) -> str:
    assert s.account_id is not None
    args = Args(cmd.args)
    name = args.mailbox(s.utf8).rstrip(SEP)
    special: str | None = None
    if not args.at_end():
        for key, value in _pairs(args.plist("create parameters")):
            if key != "USE" or not isinstance(value, ParenList):
                raise Bad("Unknown CREATE parameter")
            uses = [t.value for t in value.items if isinstance(t, Atom)]
            if len(uses) > 1:
                raise No("Only one special use per mailbox", code=USEATTR)
            for use in uses:
                match = [u for u in SPECIAL_USES if u.lower() == use.lower()]
                if not match:
                    raise No(f"Unsupported special use {use}", code=USEATTR)
                special = match[0]
    args.end()
    if not name or name == "INBOX":
        raise No("Mailbox exists", code=ALREADYEXISTS)
    existing = {m.name for m in await s.store.list_mailboxes(s.account_id)}
    if name in existing:
        raise No("Mailbox exists", code=ALREADYEXISTS)
    parts = name.split(SEP)
    try:
        for i in range(1, len(parts)):
            parent = SEP.join(parts[:i])
            if parent and parent not in existing:
                await s.store.create_mailbox(s.account_id, parent)
        await s.store.create_mailbox(s.account_id, name, special_use=special)
    except AlreadyExists:
        raise No("Mailbox exists", code=ALREADYEXISTS) from None
    except InvalidName as exc:
        raise No(str(exc), code=CANNOT) from None
    return "CREATE completed"


async def cmd_delete(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    name = args.mailbox(s.utf8)
    args.end()
    if name == "INBOX":
        raise No("INBOX cannot be deleted", code=CANNOT)
    box = await find_mailbox(s, name)
    if s.selected is not None and s.selected.id == box.id:
        s.selected = None
        s.state = State.AUTHENTICATED
    try:
        await s.store.delete_mailbox(box.id)
    except InvalidName as exc:
        raise No(str(exc), code=CANNOT) from None
    except NotFound:
        raise No("No such mailbox", code=NONEXISTENT) from None
    return "DELETE completed"


async def cmd_rename(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    old = args.mailbox(s.utf8)
    new = args.mailbox(s.utf8).rstrip(SEP)
    args.end()
    box = await find_mailbox(s, old)
    if new == "INBOX":
        raise No("Mailbox exists", code=ALREADYEXISTS)
    try:
        await s.store.rename_mailbox(box.id, new)
    except AlreadyExists:
        raise No("Mailbox exists", code=ALREADYEXISTS) from None
    except InvalidName as exc:
        raise No(str(exc), code=CANNOT) from None
    return "RENAME completed"


async def cmd_subscribe(s: Session, cmd: Command) -> str:
    assert s.account_id is not None
    args = Args(cmd.args)
    name = args.mailbox(s.utf8)
    args.end()
    if cmd.name == "SUBSCRIBE":
        await find_mailbox(s, name)
    await s.store.set_subscribed(s.account_id, name, cmd.name == "SUBSCRIBE")
    return f"{cmd.name} completed"


# -- LIST / LSUB (RFC 9051 6.3.9, RFC 5258, 6154, 5819) -----------------------------------


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    full = reference + pattern if not pattern.startswith(SEP) or not reference else reference + pattern
    out = []
    for c in full:
        out.append(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c))
    regex = "".join(out)
    if full[:5].upper() == "INBOX":
        regex = "(?i:INBOX)" + "".join(out[5:]) if len(full) >= 5 else regex
    return re.compile(regex + r"\Z", re.DOTALL)


async def cmd_list(s: Session, cmd: Command) -> str:
    assert s.account_id is not None
    args = Args(cmd.args)
    select_opts: set[str] = set()
    if args.peek_list():
        select_opts = {t.value.upper() for t in args.plist() if isinstance(t, Atom)}
        if not select_opts <= {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}:
            raise Bad("Unknown LIST selection option")
        if select_opts and select_opts <= {"RECURSIVEMATCH", "REMOTE"} and "RECURSIVEMATCH" in select_opts:
            raise Bad("RECURSIVEMATCH needs another selection option")  # RFC 5258 3: not alone, nor with REMOTE only
    reference = args.mailbox(s.utf8)
    patterns: list[str] = []
    if args.peek_list():
        patterns = [_decode_pattern(t.value if isinstance(t, String) else t.value.encode(), s.utf8)
                    for t in args.plist() if isinstance(t, String | Atom)]
    else:
        tok = args.next("mailbox pattern")
        if isinstance(tok, String):
            raw = tok.value
        elif isinstance(tok, Atom):
            raw = tok.value.encode()
        else:
            raise Bad("Expected a pattern")
        patterns = [_decode_pattern(raw, s.utf8)]
    return_opts: set[str] = set()
    status_items: list[str] = []
    if not args.at_end():
        if args.keyword("RETURN") != "RETURN":
            raise Bad("Expected RETURN")
        items = args.plist("return options")
        i = 0
        while i < len(items):
            t = items[i]
            if not isinstance(t, Atom):
                raise Bad("Bad return option")
            opt = t.value.upper()
            if opt == "STATUS":
                i += 1
                if i >= len(items) or not isinstance(items[i], ParenList):
                    raise Bad("STATUS needs items")
                status_items = [x.value.upper() for x in items[i].items if isinstance(x, Atom)]  # type: ignore[union-attr]
                if not set(status_items) <= _STATUS_ITEMS:      # RFC 5819 as RFC 9051 6.3.11
                    raise Bad("Unknown STATUS item")
            elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"):
                raise Bad(f"Unknown return option {opt}")
            return_opts.add(opt)
            i += 1
    args.end()
    if patterns == [""]:
        # RFC 9051 6.3.9: an empty pattern asks for the hierarchy delimiter.
        s.untagged(b'LIST (\\Noselect) "/" ""')
        return "LIST completed"
    boxes = await s.store.list_mailboxes(s.account_id)
    subs = set(await s.store.list_subscriptions(s.account_id))
    existing = {b.name: b for b in boxes}
    parents: set[str] = set()
    for n in existing:
        parts = n.split(SEP)
        parents |= {SEP.join(parts[:i]) for i in range(1, len(parts))}
    names = set(existing) | parents
    if "SUBSCRIBED" in select_opts:
        names |= subs
        for n in subs:
            parts = n.split(SEP)
            names |= {SEP.join(parts[:i]) for i in range(1, len(parts))}
    regexes = [pattern_regex(reference, p) for p in patterns]
    show_subscribed = "SUBSCRIBED" in return_opts or "SUBSCRIBED" in select_opts
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not any(r.match(name) for r in regexes):
            continue
        box = existing.get(name)
        attrs: list[str] = []
        children = name in parents
        if box is None:
            attrs.append("\\NonExistent" if (s.rev2 or select_opts or return_opts) else "\\Noselect")
        attrs.append("\\HasChildren" if children else "\\HasNoChildren")
        if box is not None and box.special_use:  # RFC 6154 2: always shown
            attrs.append(box.special_use)
        if "SPECIAL-USE" in select_opts and (box is None or not box.special_use):
            continue
        childinfo = b""
        if "SUBSCRIBED" in select_opts:
            # RFC 5258 3 and 3.5: with RECURSIVEMATCH a mailbox with subscribed descendants
            # carries CHILDINFO (example 9: "eps2"). An unsubscribed one is listed for them
            # only when one of them is not already shown through a match of its own or of a
            # mailbox between them, as Dovecot does (imaptest's listext script).
            below = [x for x in subs if x.startswith(name + SEP)] if "RECURSIVEMATCH" in select_opts else []
            if name not in subs and not any(not _matched_below(x, name, regexes) for x in below):
                continue
            if below:
                childinfo = b' ("CHILDINFO" ("SUBSCRIBED"))'
        if show_subscribed and name in subs:
            attrs.append("\\Subscribed")
        s.untagged(f"LIST ({' '.join(attrs)}) \"/\" ".encode() + quoted_name(s, name) + childinfo)
        if status_items and box is not None:
            await _status_response(s, box, status_items)
    return "LIST completed"


def _matched_below(name: str, ancestor: str, regexes: list[re.Pattern[str]]) -> bool:
    """``name`` or a mailbox between it and ``ancestor`` matches one of the patterns."""
    while name != ancestor:
        if any(r.match(name) for r in regexes):
            return True
        name = name.rpartition(SEP)[0]
    return False


def _decode_pattern(raw: bytes, utf8: bool) -> str:
    try:
        return decode_mailbox(raw, utf8)
    except (Bad, No):
        return raw.decode("utf-8", "replace")


async def cmd_lsub(s: Session, cmd: Command) -> str:
    assert s.account_id is not None
    args = Args(cmd.args)
    reference = args.mailbox(s.utf8)
    pattern = _decode_pattern(args.astring("pattern"), s.utf8)
    args.end()
    subs = await s.store.list_subscriptions(s.account_id)
    existing = {b.name for b in await s.store.list_mailboxes(s.account_id)}
    regex = pattern_regex(reference, pattern)
    listed: dict[str, str] = {}
    for name in subs:
        if regex.match(name):
            listed[name] = "" if name in existing else "\\Noselect"
            continue
        # RFC 3501 6.3.9: "foo/bar" subscribed, "foo" not: a "%" that stops at "foo" lists
        # "foo", flagged \Noselect (here meaning: not subscribed itself, but below it is).
        parts = name.split(SEP)
        for i in range(len(parts) - 1, 0, -1):
            parent = SEP.join(parts[:i])
            if regex.match(parent):
                listed.setdefault(parent, "\\Noselect")
                break
    for name, attrs in sorted(listed.items()):
        s.untagged(f"LSUB ({attrs}) \"/\" ".encode() + quoted_name(s, name))
    return "LSUB completed"


async def cmd_namespace(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    s.untagged('NAMESPACE (("" "/")) NIL NIL')  # RFC 2342: one personal namespace
    return "NAMESPACE completed"


# -- STATUS (RFC 9051 6.3.11, RFC 8438 SIZE, RFC 7162 HIGHESTMODSEQ) ----------------------

_STATUS_ITEMS = {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "SIZE", "HIGHESTMODSEQ", "DELETED"}


async def cmd_status(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    name = args.mailbox(s.utf8)
    items = [t.value.upper() for t in args.plist("status items") if isinstance(t, Atom)]
    args.end()
    if not items or not set(items) <= _STATUS_ITEMS:
        raise Bad("Unknown STATUS item")
    box = await find_mailbox(s, name)
    await _status_response(s, box, items)
    return "STATUS completed"


async def _status_response(s: Session, box: Mailbox, items: list[str]) -> None:
    box = await s.store.get_mailbox_by_id(box.id)
    deleted = 0
    if "DELETED" in items:
        deleted = sum(1 for m in await s.store.list_messages(box.id) if "\\Deleted" in m.flags)
    values = {
        "MESSAGES": box.messages, "UIDNEXT": box.uidnext, "UIDVALIDITY": box.uidvalidity,
        "UNSEEN": box.unseen, "RECENT": box.recent, "SIZE": box.size, "HIGHESTMODSEQ": max(box.highestmodseq, 1),
        "DELETED": deleted,
    }
    body = " ".join(f"{i} {values[i]}" for i in items)
    s.untagged(b"STATUS " + quoted_name(s, box.name) + f" ({body})".encode())


# -- APPEND (RFC 9051 6.3.12, RFC 3502 MULTIAPPEND, RFC 4315 APPENDUID, RFC 3516 literal8) ---


async def cmd_append(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    name = args.mailbox(s.utf8)
    items: list[tuple[list[str], float | None, bytes | LiteralSpool | BlobRef]] = []
    parts: list[tuple[int, list[Any]]] = []
    """CATENATE lists by message, read once the target mailbox is known to exist."""
    while True:
        flags: list[str] = []
        when: float | None = None
        if args.peek_list():
            flags = [t.value for t in args.plist("flags") if isinstance(t, Atom)]
            for f in flags:
                if f.startswith("\\") and f.capitalize() not in [x.capitalize() for x in SYSTEM_FLAGS]:
                    raise Bad(f"Invalid flag {f}")
        tok = args.peek()
        if isinstance(tok, String) and not tok.literal:
            when = parse_datetime(args.string().value.decode("ascii", "replace"))
        tok = args.peek()
        if isinstance(tok, Atom) and tok.value.upper() == "CATENATE":
            # RFC 4469: the message from literal text and parts of messages already here.
            args.next()
            parts.append((len(items), list(args.plist("CATENATE parts"))))
            items.append(([_canonical_flag(f) for f in flags], when, b""))   # put together below
            if args.at_end():
                break
            continue
        if isinstance(tok, Atom) and tok.value.upper() == "UTF8":
            # RFC 6855 section 4: APPEND ... UTF8 (~{n}...)
            args.next()
            inner = args.plist("UTF8 message")
            if len(inner) != 1 or not isinstance(inner[0], String) or not inner[0].literal:
                raise Bad("UTF8 needs one literal8")
            message = inner[0]
        else:
            message = args.string("message literal")
        if not message.literal:
            raise Bad("Message must be a literal")
        # RFC 5322 lines end in CRLF: a message sent with bare LFs (scripts, mbox imports) is
        # stored as clients will be served it, sizes and part offsets included (Dovecot
        # converts on output to the same effect). A literal8 may hold binary parts: stored
        # base64-encoded, so BODY[] never carries NUL (RFC 3516 4.4; Dovecot does the same).
        # Large plain literals were spooled to a blob as they arrived (session.literal_announced).
        spool = getattr(message.value, "sink", None)
        if isinstance(spool, LiteralSpool):
            data: bytes | LiteralSpool | BlobRef = spool     # written to a blob as it arrived
        else:
            data = binary_parts_to_base64(message.value) if message.binary else normalize_line_ends(message.value)
        items.append(([_canonical_flag(f) for f in flags], when, data))
        if args.at_end():
            break
    box = await find_mailbox(s, name, trycreate=True)
    if parts:
        from .catenate import catenate

        for i, tokens in parts:
            items[i] = (items[i][0], items[i][1], await catenate(s, tokens))
    if any(_size(d) == 0 for _, _, d in items):
        raise No("Empty message", code=CLIENTBUG)
    for _, _, d in items:
        if _size(d) > s.config.limits.message_size:
            raise No("Message too big", code=TOOBIG)
    uids: list[int] = []
    try:
        for flags, when, data in items:
            if isinstance(data, LiteralSpool):
                blob = await data.finish()
                head = bytes(data.prefix)
                if data.binary and (encoded := await _binary_parts_from_file(s, blob)) is not None:
                    blob, head = encoded, b""       # RFC 3516 4.4: stored with base64 parts
            elif isinstance(data, BlobRef):         # put together by CATENATE
                blob, head = data, b""
            else:
                blob = await s.store.put_blob(data)
                head = data
            msg = await s.store.append(box.id, blob, flags=flags,
                                       internal_date=when if when is not None else time.time())
            uids.append(msg.uid)
            if head is data or 0 < header_end(head, 0, len(head)) < len(head):   # the whole header is there
                header_cache(s.store).put_message((box.id, box.uidvalidity, msg.uid), head)
    except QuotaExceeded:
        if uids:
            await s.store.expunge(box.id, uids)  # RFC 3502: all or nothing
        raise No("Quota exceeded", code=OVERQUOTA) from None
    except StorageFull:
        if uids:
            with contextlib.suppress(StorageFull):
                await s.store.expunge(box.id, uids)  # RFC 3502: all or nothing
        raise not_enough_space() from None
    except NotFound:
        raise No("No such mailbox", code=TRYCREATE) from None
    if s.selected is not None and s.selected.id == box.id:
        s.dirty = True
    return f"[APPENDUID {box.uidvalidity} {sequence_list(uids)}] APPEND completed"


async def _binary_parts_from_file(s: Session, blob: BlobRef) -> BlobRef | None:
    """A spooled literal8 with binary parts, re-encoded a piece at a time into a new blob (the
    spooled one is left to blob GC); None when it has none."""
    path = s.store.blob_path(blob.id)
    writer = s.store.blob_writer()
    # A backend without files (PostgreSQL): its view reads by range, from a worker thread.
    view = None if path is not None else BlobView(s.store.read_blob_range, blob.id, blob.size)

    def encode() -> bool:
        if view is not None:
            return binary_parts_to_base64_file(view, writer.write)
        assert path is not None
        with open(path, "rb") as f:
            return binary_parts_to_base64_file(FileView(f.fileno(), os.fstat(f.fileno()).st_size), writer.write)

    try:
        if not await s.blocking(encode):
            writer.abort()
            return None
        return await writer.finish()
    except BaseException:
        writer.abort()
        raise


def _size(data: bytes | LiteralSpool | BlobRef) -> int:
    return len(data) if isinstance(data, bytes) else data.size


def _canonical_flag(flag: str) -> str:
    for f in SYSTEM_FLAGS:
        if f.lower() == flag.lower():
            return f
    return flag


# -- QUOTA (RFC 9208) ----------------------------------------------------------------------


async def _quota(s: Session) -> None:
    assert s.account_id is not None
    acct = await s.store.get_account_by_id(s.account_id)
    if acct.quota is not None:
        # RFC 9208 5.2: STORAGE counts units of 1024 octets.
        s.untagged(f'QUOTA "" (STORAGE {(acct.used + 1023) // 1024} {acct.quota // 1024})')
    else:
        s.untagged('QUOTA "" ()')


async def cmd_getquotaroot(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    name = args.mailbox(s.utf8)
    args.end()
    box = await find_mailbox(s, name)
    s.untagged(b"QUOTAROOT " + quoted_name(s, box.name) + b' ""')
    await _quota(s)
    return "GETQUOTAROOT completed"


async def cmd_getquota(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    root = args.astring("quota root")
    args.end()
    if root != b"":
        raise No("No such quota root", code=NONEXISTENT)
    await _quota(s)
    return "GETQUOTA completed"


async def cmd_setquota(s: Session, cmd: Command) -> str:
    raise No("Quotas are set by the administrator", code=NOPERM)


COMMANDS = {
    "SELECT": (cmd_select, "auth"),
    "EXAMINE": (cmd_select, "auth"),
    "CREATE": (cmd_create, "auth"),
    "DELETE": (cmd_delete, "auth"),
    "RENAME": (cmd_rename, "auth"),
    "SUBSCRIBE": (cmd_subscribe, "auth"),
    "UNSUBSCRIBE": (cmd_subscribe, "auth"),
    "LIST": (cmd_list, "auth"),
    "LSUB": (cmd_lsub, "auth"),
    "NAMESPACE": (cmd_namespace, "auth"),
    "STATUS": (cmd_status, "auth"),
    "APPEND": (cmd_append, "auth"),
    "GETQUOTAROOT": (cmd_getquotaroot, "auth"),
    "GETQUOTA": (cmd_getquota, "auth"),
    "SETQUOTA": (cmd_setquota, "auth"),
}

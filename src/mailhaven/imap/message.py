"""Selected-state commands on messages: CLOSE, UNSELECT, EXPUNGE, UID EXPUNGE, STORE, COPY,
MOVE (RFC 9051 6.4, RFC 4315 UIDPLUS, RFC 6851 MOVE, RFC 7162 CONDSTORE)."""

from __future__ import annotations

from ..filter.spam.train import train_move
from ..store.api import FlagMode, NotFound, QuotaExceeded
from .grammar import Args, parse_sequence_set
from .mailbox import find_mailbox
from .parser import Atom, Command
from .responses import CANNOT, OVERQUOTA, TRYCREATE, Bad, No, flag_list, sequence_list, sequence_set
from .selected import SelectedMailbox
from .session import SYSTEM_FLAGS, Session, State


def resolve_set(s: Session, text: str, uid: bool) -> list[int]:
    """A sequence set (``uid``: of UIDs) -> UIDs in the view, ascending."""
    sel = s.require_selected()
    if text.isdigit() and text.isascii() and text[0] != "0" and len(text) < 10:
        n = int(text)                           # one number, the commonest set of all
        if uid:
            return [n] if sel.index(n) is not None else []
        if n <= sel.exists:
            return [sel.uids[n - 1]]            # (beyond the last: the errors below)
    seq = parse_sequence_set(text)
    if seq.saved:
        saved = set(sel.saved_result)
        return [u for u in sel.uids if u in saved]
    if uid:
        return list(seq.select(sel.uids))
    count = sel.exists
    if count == 0:
        if all(a == 0 or b == 0 for a, b in seq.ranges):
            return []
        raise Bad("No messages in the mailbox")
    for a, b in seq.ranges:
        if (a and a > count) or (b and b > count):
            raise Bad("Invalid message sequence number")  # RFC 9051 6.4.4/9: out of range
    msns = seq.select(range(1, count + 1))        # bisect on the range: no list of every number
    return [sel.uids[n - 1] for n in msns]


def _deselect(s: Session) -> None:
    s.selected = None
    s.state = State.AUTHENTICATED


async def cmd_close(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    sel = s.require_selected()
    if not sel.readonly:
        # RFC 9051 6.4.1: expunge silently.
        await sel.refresh(s.store, s.condstore)
        flags = sel.column("flags")
        deleted = [u for i, u in enumerate(sel.uids) if "\\Deleted" in flags[i]]
        if deleted:
            await s.store.expunge(sel.id, deleted)
    _deselect(s)
    return "CLOSE completed"


async def cmd_unselect(s: Session, cmd: Command) -> str:
    Args(cmd.args).end()
    s.require_selected()
    _deselect(s)
    return "UNSELECT completed"


async def cmd_expunge(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    sel = s.require_selected()
    wanted: set[int] | None = None
    if cmd.uid:
        wanted = set(resolve_set(s, args.atom("UID set"), True))  # RFC 4315 2.1
    args.end()
    if sel.readonly:
        raise No("Mailbox is read-only", code=CANNOT)
    await sel.refresh(s.store, s.condstore)
    s.dirty = False
    flags = sel.column("flags")
    targets = [u for i, u in enumerate(sel.uids) if "\\Deleted" in flags[i]
               and u not in sel.pending_expunge and (wanted is None or u in wanted)]
    removed = await s.store.expunge(sel.id, targets) if targets else []
    announce_expunged(s, sel, removed)
    return "EXPUNGE completed"


def announce_expunged(s: Session, sel: SelectedMailbox, uids: list[int]) -> None:
    if not uids:
        return
    if sel.search_updates:
        from .search import tell_expunging

        tell_expunging(s, sel, uids)
    numbers = sel.remove(uids)
    if s.qresync:
        s.untagged(f"VANISHED {sequence_set(uids)}")  # RFC 7162 3.2.10
    else:
        for n in numbers:
            s.untagged(f"{n} EXPUNGE")


# -- STORE (RFC 9051 6.4.6, RFC 7162 3.1.3) ------------------------------------------------


async def cmd_store(s: Session, cmd: Command) -> str:
    sel = s.require_selected()
    args = Args(cmd.args)
    uids = resolve_set(s, args.atom("sequence set"), cmd.uid)
    unchanged_since: int | None = None
    if args.peek_list():
        mods = args.plist("store modifiers")
        if (len(mods) != 2 or not isinstance(mods[0], Atom) or mods[0].value.upper() != "UNCHANGEDSINCE"
                or not isinstance(mods[1], Atom) or not mods[1].value.isdigit()):
            raise Bad("Unknown STORE modifier")
        unchanged_since = int(mods[1].value)
        s.enable_condstore()
    item = args.keyword("store item")
    silent = item.endswith(".SILENT")
    base = item.removesuffix(".SILENT")
    modes = {"FLAGS": FlagMode.REPLACE, "+FLAGS": FlagMode.ADD, "-FLAGS": FlagMode.REMOVE}
    if base not in modes:
        raise Bad("Expected FLAGS, +FLAGS or -FLAGS")
    if args.peek_list():
        tokens = args.plist("flags")
    else:
        tokens = []
        while not args.at_end():
            tokens.append(args.next())
    args.end()
    flags: list[str] = []
    for t in tokens:
        if not isinstance(t, Atom):
            raise Bad("Flags are atoms")
        flags.append(_flag(t.value))
    if sel.readonly:
        raise No("Mailbox is read-only", code=CANNOT)
    live = sel.live_only(uids)
    changed, failed = await s.store.set_flags(sel.id, live, flags, modes[base], unchanged_since=unchanged_since)
    sel.update_messages(changed)
    changed_uids = {m.uid for m in changed} if unchanged_since is not None else set()
    if changed:
        sel.own_write(changed[0].modseq)    # one write: every changed message has its MODSEQ
    failed_set = set(failed)
    for u in live if not silent or unchanged_since is not None else ():    # .SILENT: nothing to tell
        if u in failed_set:
            continue
        if silent and u not in changed_uids:
            continue
        n = sel.msn(u)
        meta = sel.meta.get(u)
        if n is None or meta is None:
            continue
        items = []
        if cmd.uid or s.qresync:
            items.append(f"UID {u}")
        if not silent:
            s.ensure_flags_known(meta.flags)
            items.append(f"FLAGS {flag_list(s.shown_flags(u, meta.flags))}")
        if s.condstore:
            items.append(f"MODSEQ ({meta.modseq})")
        s.untagged(f"{n} FETCH ({' '.join(items)})")
    if failed:
        numbers = failed if cmd.uid else [sel.msn(u) or 0 for u in failed]
        return f"[MODIFIED {sequence_set(numbers)}] Conditional STORE failed"
    return "STORE completed"


def _flag(value: str) -> str:
    if value.startswith("\\"):
        for f in SYSTEM_FLAGS:
            if f.lower() == value.lower():
                return f
        raise Bad(f"Invalid system flag {value}")
    if any(c in value for c in '(){%*"\\]') or not value:
        raise Bad("Invalid keyword")
    return value


# -- COPY / MOVE (RFC 9051 6.4.7, 6.4.8, RFC 4315 COPYUID) -----------------------------------


async def cmd_copy(s: Session, cmd: Command) -> str:
    sel = s.require_selected()
    args = Args(cmd.args)
    uids = sel.live_only(resolve_set(s, args.atom("sequence set"), cmd.uid))
    name = args.mailbox(s.utf8)
    args.end()
    target = await find_mailbox(s, name, trycreate=True)
    move = cmd.name == "MOVE"
    if move and sel.readonly:
        raise No("Mailbox is read-only", code=CANNOT)
    if not uids:
        return f"{cmd.name} completed"
    assert s.account_id is not None
    await train_move(s.store, s.account_id, await s.store.get_mailbox_by_id(sel.id), target, uids)   # filter/spam/
    try:
        if move:
            pairs = await s.store.move(sel.id, uids, target.id)
        else:
            pairs = await s.store.copy(sel.id, uids, target.id)
    except QuotaExceeded:
        raise No("Quota exceeded", code=OVERQUOTA) from None
    except NotFound:
        raise No("No such mailbox", code=TRYCREATE) from None
    code = ""
    if pairs:
        code = (f"COPYUID {target.uidvalidity} {sequence_list([p[0] for p in pairs])} "
                f"{sequence_list([p[1] for p in pairs])}")
    if target.id == sel.id:
        s.dirty = True
    if move:
        if code:
            s.untagged(f"OK [{code}] Moved")  # RFC 6851 4.3: COPYUID before the EXPUNGEs
        announce_expunged(s, sel, [p[0] for p in pairs])
        return "MOVE completed"
    return f"[{code}] COPY completed" if code else "COPY completed"


COMMANDS = {
    "CLOSE": (cmd_close, "selected"),
    "UNSELECT": (cmd_unselect, "selected"),
    "EXPUNGE": (cmd_expunge, "selected"),
    "STORE": (cmd_store, "selected"),
    "COPY": (cmd_copy, "selected"),
    "MOVE": (cmd_copy, "selected"),
}

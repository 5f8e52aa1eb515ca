"""SEARCH, SORT and THREAD (RFC 9051 6.4.4, RFC 4731 ESEARCH, RFC 5182 SEARCHRES,
RFC 5032 WITHIN, RFC 7162 MODSEQ, RFC 5256 SORT/THREAD).

Search keys become a small tree evaluated to a set of UIDs. Flag, size, date and UID keys
use the session's cached view; text keys (SUBJECT, FROM, BODY, TEXT...) go to the store's
full-text index (``search_text``); sent-date keys and SORT/THREAD read stored summaries.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..message.structure import header_end, parse_fields
from ..store.api import Message
from .fetch import STREAM_MIN
from .fetch_large import large_header_block
from .grammar import Args, SequenceSet, parse_date, parse_number, parse_sequence_set
from .parser import Atom, Command, ParenList, String, Token
from .responses import BADCHARSET, Bad, No, sequence_list, sequence_set
from .session import Session
from .threads import base_subject, thread_orderedsubject, thread_references

if TYPE_CHECKING:
    from .selected import SelectedMailbox

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False),
}
_ADDRESS_AND_SUBJECT = frozenset({"subject", "from", "to", "cc", "bcc"})
_TEXT_KEYS = {"BCC": "bcc", "BODY": "body", "CC": "cc", "FROM": "from", "SUBJECT": "subject",
              "TEXT": "text", "TO": "to"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}

Node = tuple[Any, ...]


class _KeyReader:
    def __init__(self, tokens: list[Token], session: Session) -> None:
        self.args = Args(tokens)
        self.session = session
        self.uses_modseq = False

    def keys(self) -> Node:
        nodes = []
        while not self.args.at_end():
            nodes.append(self.key())
        if not nodes:
            raise Bad("Missing search criteria")
        return ("and", nodes) if len(nodes) > 1 else nodes[0]

    def key(self, depth: int = 0) -> Node:
        if depth > 50:
            raise Bad("Search criteria nested too deeply")
        a = self.args
        tok = a.next("search key")
        if isinstance(tok, ParenList):
            sub = _KeyReader(list(tok.items), self.session)
            node = sub.keys()
            self.uses_modseq |= sub.uses_modseq
            return node
        if not isinstance(tok, Atom):
            raise Bad("Invalid search key")
        key = tok.value.upper()
        if key == "ALL":
            return ("all",)
        if key in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[key]
            return ("flag", flag, present)
        if key in ("KEYWORD", "UNKEYWORD"):
            return ("flag", a.atom("keyword"), key == "KEYWORD")
        if key == "NEW":
            return ("and", [("flag", "\\Seen", False), ("recent", True)])
        if key in ("OLD", "RECENT"):
            return ("recent", key == "RECENT")
        if key == "NOT":
            return ("not", self.key(depth + 1))
        if key == "OR":
            return ("or", self.key(depth + 1), self.key(depth + 1))
        if key in ("LARGER", "SMALLER"):
            return (key.lower(), a.number("size"))
        if key in _DATE_KEYS:
            return ("date", key, parse_date(a.text("date")))
        if key in ("OLDER", "YOUNGER"):   # RFC 5032 WITHIN
            return (key.lower(), a.number("interval", nonzero=True))
        if key in _TEXT_KEYS:
            return ("text", _TEXT_KEYS[key], self._string())
        if key == "HEADER":
            name = a.text("header field name")
            return ("header", name, self._string())
        if key == "UID":
            return ("uidset", parse_sequence_set(a.atom("UID set")))
        if key == "MODSEQ":   # RFC 7162 3.1.5
            if isinstance(a.peek(), String):
                a.next()
                a.atom("entry type")
            self.uses_modseq = True
            self.session.enable_condstore()
            return ("modseq", parse_number(a.atom("mod-sequence")))
        if key == "$":
            return ("saved",)
        if re.match(r"^[\d*:,]+$", key):
            return ("seqset", parse_sequence_set(key))
        raise Bad(f"Unknown search key {key[:30]}")

    def _string(self) -> str:
        return self.args.text("search string")


_COSTLY = frozenset({"text", "header", "date"})
"""Keys that ask the store: an AND runs them last, on what the in-memory keys kept."""


@dataclass
class _Evaluator:
    """Each key filters candidate positions (indexes into the view's parallel arrays,
    ascending) and keeps those that match, in order. An AND hands what one key kept to the
    next, so ``UNSEEN LARGER 1000`` is one pass over the mailbox and one over the unseen,
    with no set of every message built and no UID looked up again."""

    s: Session
    sel: SelectedMailbox
    universe: list[int]
    """Positions of the messages searched: the view less those expunged meanwhile."""
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)

    def uids_of(self, positions: list[int]) -> list[int]:
        uids = self.sel.uids
        return [uids[i] for i in positions]

    async def summary(self, uid: int) -> dict[str, Any]:
        if not self.summaries:
            universe = self.uids_of(self.universe)
            for m in await self.s.store.get_messages(self.sel.id, universe, with_summary=True):
                self.summaries[m.uid] = m.summary
        return self.summaries.get(uid, {})

    def having(self, cand: list[int], uids: set[int]) -> list[int]:
        """The candidates whose UID is in ``uids``."""
        view = self.sel.uids
        return [i for i in cand if view[i] in uids]

    async def eval(self, node: Node, cand: list[int]) -> list[int]:
        kind = node[0]
        sel = self.sel
        if kind == "all":
            return cand
        if kind == "none":
            return []
        if kind == "and":
            for sub in sorted(node[1], key=lambda n: n[0] in _COSTLY):   # cheap keys first
                if not cand:
                    break
                cand = await self.eval(sub, cand)
            return cand
        if kind == "or":
            hit = set(await self.eval(node[1], cand))
            hit.update(await self.eval(node[2], [i for i in cand if i not in hit]))
            return [i for i in cand if i in hit]
        if kind == "not":
            hit = set(await self.eval(node[1], cand))
            return [i for i in cand if i not in hit]
        uids = sel.uids
        if kind == "flag":
            flag, present = node[1], node[2]
            flags = sel.column("flags")
            if flag.startswith("\\"):
                if present:
                    return [i for i in cand if flag in flags[i]]
                return [i for i in cand if flag not in flags[i]]
            # Keywords match case-insensitively: decide once per distinct (interned) flag set.
            low = flag.lower()
            sets = {flags[i] for i in cand}
            good = {fs for fs in sets if any(f.lower() == low for f in fs) == present}
            return [i for i in cand if flags[i] in good]
        if kind == "recent":
            recent, want = sel.recent, node[1]
            return [i for i in cand if (uids[i] in recent) == want]
        if kind in ("larger", "smaller"):
            sizes, limit = sel.column("sizes"), node[1]
            if kind == "larger":
                return [i for i in cand if sizes[i] > limit]
            return [i for i in cand if sizes[i] < limit]
        if kind in ("older", "younger"):
            dates, edge = sel.column("dates"), self.s.ctx.now() - node[1]
            if kind == "older":
                return [i for i in cand if dates[i] <= edge]
            return [i for i in cand if dates[i] >= edge]
        if kind == "modseq":
            modseqs, least = sel.column("modseq"), node[1]
            return [i for i in cand if modseqs[i] >= least]
        if kind == "uidset":
            universe = self.uids_of(self.universe)
            return self.having(cand, set(node[1].select(universe))) if universe else []
        if kind == "seqset":
            seq: SequenceSet = node[1]
            chosen = {n - 1 for n in seq.select(range(1, len(uids) + 1))}
            return [i for i in cand if i in chosen]
        if kind == "saved":
            return self.having(cand, set(sel.saved_result))
        if kind == "date":
            return await self._date(node[1], node[2], cand)
        if kind == "text":
            if not node[2]:
                if node[1] in _ADDRESS_AND_SUBJECT:     # "": every message that has the field
                    return self.having(cand, await self._header(node[1], "", self.uids_of(cand)))
                return cand                             # BODY "", TEXT "": every message
            return self.having(cand, await self.s.store.search_text(sel.id, node[1], node[2]))
        if kind == "header":
            return self.having(cand, await self._header(node[1], node[2], self.uids_of(cand)))
        raise Bad("Unsupported search key")  # pragma: no cover

    async def _date(self, key: str, day: int, cand: list[int]) -> list[int]:
        """RFC 9051 6.4.4: dates compare by day, disregarding time and timezone."""
        out = []
        dates = self.sel.column("dates")
        for i in cand:
            if key.startswith("SENT"):
                summary = await self.summary(self.sel.uids[i])
                ts = summary.get("date")
                if ts is None:
                    ts = dates[i]
                stamp = _day_of_header(summary.get("date_header") or "", ts)
            else:
                stamp = int(dates[i] // 86400 * 86400)
            k = key.removeprefix("SENT")
            if (k == "BEFORE" and stamp < day) or (k == "ON" and stamp == day) or (k == "SINCE" and stamp >= day):
                out.append(i)
        return out

    async def _header(self, name: str, value: str, cand: list[int]) -> set[int]:
        """UIDs among ``cand`` (UIDs) with a ``name`` header containing ``value``."""
        field_name = name.lower()
        if field_name in _ADDRESS_AND_SUBJECT and value:
            return await self.s.store.search_text(self.sel.id, field_name, value)
        candidates = (await self.s.store.search_text(self.sel.id, "header", value) if len(value) >= 1
                      else set(cand)) & set(cand)
        out = set()
        needle = value.lower()
        for m in await self.s.store.get_messages(self.sel.id, sorted(candidates), with_summary=False):
            if m.size > STREAM_MIN:                     # a large message: its header block only
                header = await large_header_block(self.s, m.blob_id)
            else:
                raw = await self.s.store.read_blob(m.blob_id)
                header = raw[:header_end(raw, 0, len(raw))]
            for fname, fvalue, _ in parse_fields(header):
                if fname == field_name and needle in fvalue.decode("utf-8", "replace").lower():
                    out.add(m.uid)
                    break
        return out


def _day_of_header(date_header: str, ts: float) -> int:
    """The day of the Date header in its own timezone (RFC 9051: disregarding timezone)."""
    try:
        parsed = email.utils.parsedate_tz(date_header)
    except Exception:  # noqa: BLE001
        parsed = None
    if parsed:
        import calendar
        return calendar.timegm((parsed[0], parsed[1], parsed[2], 0, 0, 0))
    return int(ts // 86400 * 86400)


def _charset(args: Args) -> None:
    if args.peek_keyword() == "CHARSET":
        args.next()
        charset = args.text("charset").upper()
        if charset not in ("UTF-8", "US-ASCII", "UTF8"):
            raise No("Unsupported charset", code=f"{BADCHARSET} (US-ASCII UTF-8)")


async def search_positions(s: Session, tokens: list[Token]) -> tuple[list[int], bool]:
    """(positions in the view of the matching messages, ascending; MODSEQ used)."""
    sel = s.require_selected()
    reader = _KeyReader(tokens, s)
    tree = reader.keys()
    pending = sel.pending_expunge
    if pending:
        universe = [i for i, u in enumerate(sel.uids) if u not in pending]
    else:
        universe = list(range(len(sel.uids)))
    return await _Evaluator(s, sel, universe).eval(tree, universe), reader.uses_modseq


async def run_search(s: Session, tokens: list[Token]) -> tuple[list[int], bool]:
    """(matching UIDs ascending, MODSEQ used)."""
    positions, used_modseq = await search_positions(s, tokens)
    uids = s.require_selected().uids
    return [uids[i] for i in positions], used_modseq


async def cmd_search(s: Session, cmd: Command) -> str:
    sel = s.require_selected()
    args = Args(cmd.args)
    returns, partial = _return_options(args, context=True)
    _charset(args)
    keys = list(args.tokens[args.pos:])
    positions, used_modseq = await search_positions(s, keys)
    uids = [sel.uids[i] for i in positions]
    numbers = uids if cmd.uid else [i + 1 for i in positions]
    modseqs = sel.column("modseq")
    highest = max((modseqs[i] for i in positions), default=0) if used_modseq else 0
    if s.rev2 and returns is None:
        returns = ["ALL"]
    if returns is None:
        text = " ".join(["SEARCH", *map(str, numbers)])
        if used_modseq and numbers:
            text += f" (MODSEQ {highest})"
        s.untagged(text)
        return "SEARCH completed"
    # MIN and/or MAX alone return (RFC 4731 3.2: and report the MODSEQ of) and save (RFC
    # 5182 2.4) only the lowest and highest matches; ALL or COUNT the whole result.
    extremes = bool({"MIN", "MAX"} & set(returns)) and not {"ALL", "COUNT"} & set(returns)
    chosen = positions
    if extremes and positions:
        chosen = sorted({positions[0] if "MIN" in returns else positions[-1],
                         positions[-1] if "MAX" in returns else positions[0]})
        highest = max(modseqs[i] for i in chosen) if used_modseq else 0
    if "SAVE" in returns:
        sel.saved_result = [sel.uids[i] for i in chosen]
        returns = [r for r in returns if r != "SAVE"]
        if not returns:
            return "SEARCH completed"
    if "UPDATE" in returns:
        # RFC 5267 4.2: the result is kept up to date with ADDTO/REMOVEFROM until CANCELUPDATE
        # or the mailbox is closed; the first answer carries only what else was asked for.
        if cmd.tag not in sel.search_updates and len(sel.search_updates) >= MAX_UPDATES:
            raise No(f"Too many updating searches (at most {MAX_UPDATES})", code=f'NOUPDATE "{cmd.tag}"')
        sel.search_updates[cmd.tag] = SearchUpdate(keys=keys, uid=cmd.uid, uids=set(uids))
        returns = [r for r in returns if r != "UPDATE"]
    elif not returns:
        returns = ["ALL"]
    parts = [f'(TAG "{cmd.tag}")']
    if cmd.uid:
        parts.append("UID")
    if numbers:
        if "MIN" in returns:
            parts.append(f"MIN {min(numbers)}")
        if "MAX" in returns:
            parts.append(f"MAX {max(numbers)}")
        if "ALL" in returns:
            parts.append(f"ALL {sequence_set(numbers)}")
    if "COUNT" in returns:
        parts.append(f"COUNT {len(numbers)}")
    if partial is not None:
        first, last = partial
        window = numbers[first - 1:last]
        parts.append(f"PARTIAL ({first}:{last} {sequence_set(window) if window else 'NIL'})")
    if used_modseq and numbers:
        parts.append(f"MODSEQ {highest}")
    s.untagged("ESEARCH " + " ".join(parts))
    return "SEARCH completed"


# -- CONTEXT=SEARCH (RFC 5267 4) ---------------------------------------------------------

MAX_UPDATES = 8
"""Updating searches a session may keep at once (each runs again after every change)."""


@dataclass(slots=True)
class SearchUpdate:
    """A SEARCH RETURN (UPDATE): its keys, to run again, and the UIDs the client was told."""

    keys: list[Token]
    uid: bool
    uids: set[int]
    added: list[int] = field(default_factory=list)
    """Matches found by the last run, told as ADDTO once EXISTS has numbered them."""


def _update_line(tag: str, update: SearchUpdate, what: str, uids: list[int], sel: SelectedMailbox) -> str:
    numbers = uids if update.uid else sorted(n for n in map(sel.msn, uids) if n is not None)
    # The position is that of a sorted result's change; SEARCH results are in ascending
    # order, which the client knows, so 0 (as for any unsorted result) stands for it.
    return f'ESEARCH (TAG "{tag}"){" UID" if update.uid else ""} {what} (0 {sequence_set(numbers)})'


async def run_updates(s: Session) -> None:
    """Run every updating search again: REMOVEFROM now, while the numbers of messages
    expunged meanwhile still stand (before their EXPUNGE); ADDTO after EXISTS
    (:func:`tell_added`)."""
    sel = s.require_selected()
    for tag, update in list(sel.search_updates.items()):
        try:
            positions, _ = await search_positions(s, update.keys)
        except (Bad, No):
            del sel.search_updates[tag]             # cannot be run any more (a $ gone...)
            continue
        now = {sel.uids[i] for i in positions} - sel.pending_expunge
        removed = sorted(update.uids - now)
        update.added = sorted(now - update.uids)
        update.uids = now
        if removed:
            s.untagged(_update_line(tag, update, "REMOVEFROM", removed, sel))


def tell_expunging(s: Session, sel: SelectedMailbox, uids: list[int]) -> None:
    """Before this session's own EXPUNGE of ``uids``: out of every updating result."""
    gone = set(uids)
    for tag, update in sel.search_updates.items():
        if update.uids & gone:
            s.untagged(_update_line(tag, update, "REMOVEFROM", sorted(update.uids & gone), sel))
            update.uids -= gone


def tell_added(s: Session) -> None:
    sel = s.require_selected()
    for tag, update in sel.search_updates.items():
        added = [u for u in update.added if u in update.uids and sel.msn(u) is not None]
        update.added = []
        if added:
            s.untagged(_update_line(tag, update, "ADDTO", added, sel))


async def cmd_cancelupdate(s: Session, cmd: Command) -> str:
    """RFC 5267 4.3: CANCELUPDATE "tag" ..."""
    sel = s.require_selected()
    args = Args(cmd.args)
    tags = []
    while not args.at_end():
        tags.append(args.text("search tag"))
    if not tags:
        raise Bad("CANCELUPDATE needs the tags of updating searches")
    unknown = [t for t in tags if t not in sel.search_updates]
    if unknown:
        raise Bad(f"No updating search with tag {unknown[0][:40]}")
    for t in tags:
        del sel.search_updates[t]
    return "CANCELUPDATE completed"


# -- SORT and THREAD (RFC 5256) ---------------------------------------------------------------

_SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}


_ENVELOPE_FIELD = {"from": 2, "to": 5, "cc": 6}


def _first_address(summary: dict[str, Any], key: str, display: bool) -> str:
    envelope = (summary.get("imap") or {}).get("envelope")
    if not display and envelope:
        # RFC 5256 3: the addr-mailbox of the first address of the ENVELOPE field, so a
        # group's name where the field starts with a group (as Dovecot sorts).
        first = (envelope[_ENVELOPE_FIELD[key]] or [[None, None, None, None]])[0]
        return str(first[2] or "").lower()
    addrs = summary.get(key) or []
    if not addrs:
        return ""
    a = addrs[0]
    if display:
        return (a.get("name") or a.get("email") or "").lower()
    return (a.get("email") or "").partition("@")[0].lower()


def _sent_date(m: Message, meta_date: float) -> float:
    ts = m.summary.get("date")
    return float(ts) if isinstance(ts, int | float) else meta_date


_RETURNS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})


def _return_options(args: Args, *, context: bool = False) -> tuple[list[str] | None, tuple[int, int] | None]:
    """``RETURN (...)`` of SEARCH (RFC 4731) and SORT (RFC 5267 ESORT), if given, and the
    range of ``PARTIAL first:last`` (RFC 5267 4.4; with ``context``, as is UPDATE)."""
    if args.peek_keyword() != "RETURN":
        return None, None
    args.next()
    tokens = list(args.plist("return options"))
    returns: list[str] = []
    partial = None
    allowed = _RETURNS | {"UPDATE", "PARTIAL"} if context else _RETURNS
    while tokens:
        tok = tokens.pop(0)
        name = tok.value.upper() if isinstance(tok, Atom) else ""
        if name not in allowed:
            raise Bad("Unknown RETURN option")
        if name == "PARTIAL":
            rng = tokens.pop(0) if tokens else None
            m = re.fullmatch(r"([1-9]\d{0,9}):([1-9]\d{0,9})", rng.value if isinstance(rng, Atom) else "")
            if m is None or partial is not None:
                raise Bad("PARTIAL needs one range of result positions, first:last")
            a, b = int(m.group(1)), int(m.group(2))
            partial = (min(a, b), max(a, b))
        returns.append(name)
    return returns, partial


async def cmd_sort(s: Session, cmd: Command) -> str:
    sel = s.require_selected()
    args = Args(cmd.args)
    returns, _ = _return_options(args)
    crit_tokens = args.plist("sort criteria")
    criteria: list[tuple[str, bool]] = []
    reverse = False
    for t in crit_tokens:
        if not isinstance(t, Atom):
            raise Bad("Invalid sort criterion")
        key = t.value.upper()
        if key == "REVERSE":
            reverse = True
            continue
        if key not in _SORT_KEYS:
            raise Bad(f"Unknown sort criterion {key}")
        criteria.append((key, reverse))
        reverse = False
    if not criteria or reverse:
        raise Bad("Invalid sort criteria")
    charset = args.text("charset").upper()
    if charset not in ("UTF-8", "US-ASCII"):
        raise No("Unsupported charset", code=f"{BADCHARSET} (US-ASCII UTF-8)")
    uids, used_modseq = await run_search(s, args.tokens[args.pos:])
    messages = {m.uid: m for m in await s.store.get_messages(sel.id, uids, with_summary=True)}
    uids = [u for u in uids if u in messages]

    def value(u: int, key: str) -> Any:
        m = messages[u]
        meta = sel.meta[u]
        if key == "ARRIVAL":
            return meta.internal_date
        if key == "DATE":
            return _sent_date(m, meta.internal_date)
        if key == "SIZE":
            return meta.size
        if key == "SUBJECT":
            return base_subject(m.summary.get("subject") or "")
        if key in ("FROM", "TO", "CC"):
            return _first_address(m.summary, key.lower(), False)
        return _first_address(m.summary, "from" if key == "DISPLAYFROM" else "to", True)

    # Stable sorts from the last criterion to the first; ties end in UID order (RFC 5256 2.2... by sequence).
    ordered = list(uids)
    for key, rev in reversed(criteria):
        keyed = {u: value(u, key) for u in ordered}
        ordered.sort(key=keyed.__getitem__, reverse=rev)
    numbers = ordered if cmd.uid else [sel.msn(u) or 0 for u in ordered]
    modseqs = {u: sel.meta[u].modseq for u in ordered} if used_modseq else {}
    if returns is None:
        # RFC 7162 3.1.5: a search by MODSEQ reports the highest MODSEQ of the matches.
        tail = f" (MODSEQ {max(modseqs.values())})" if modseqs else ""
        s.untagged("SORT" + "".join(f" {n}" for n in numbers) + tail)
        return "SORT completed"
    # RFC 5267 3 (ESORT): an ESEARCH response; MIN and MAX are the first and last in the
    # sort order, ALL keeps that order. MIN/MAX alone save only those (RFC 5182 2.4).
    chosen = ordered
    if ordered and {"MIN", "MAX"} & set(returns) and not {"ALL", "COUNT"} & set(returns):
        chosen = list(dict.fromkeys(
            [ordered[0]] * ("MIN" in returns) + [ordered[-1]] * ("MAX" in returns)))
    if "SAVE" in returns:
        sel.saved_result = sorted(chosen)
        returns = [r for r in returns if r != "SAVE"]
        if not returns:
            return "SORT completed"
    parts = [f'(TAG "{cmd.tag}")'] + ["UID"] * cmd.uid
    if numbers:
        if "MIN" in returns:
            parts.append(f"MIN {numbers[0]}")
        if "MAX" in returns:
            parts.append(f"MAX {numbers[-1]}")
        if "ALL" in returns or not returns:
            parts.append(f"ALL {sequence_list(numbers)}")   # in the sort order (RFC 5267 3)
    if "COUNT" in returns:
        parts.append(f"COUNT {len(numbers)}")
    if modseqs and chosen:
        parts.append(f"MODSEQ {max(modseqs[u] for u in chosen)}")
    s.untagged("ESEARCH " + " ".join(parts))
    return "SORT completed"


async def cmd_thread(s: Session, cmd: Command) -> str:
    sel = s.require_selected()
    args = Args(cmd.args)
    algorithm = args.keyword("threading algorithm")
    if algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise Bad("Unsupported threading algorithm")
    charset = args.text("charset").upper()
    if charset not in ("UTF-8", "US-ASCII"):
        raise No("Unsupported charset", code=f"{BADCHARSET} (US-ASCII UTF-8)")
    uids, _ = await run_search(s, args.tokens[args.pos:])
    messages = [m for m in await s.store.get_messages(sel.id, uids, with_summary=True)]
    rows = [(m.uid, _sent_date(m, sel.meta[m.uid].internal_date), m.summary) for m in messages
            if m.uid in sel.meta]
    if algorithm == "ORDEREDSUBJECT":
        threads = thread_orderedsubject(rows)
    else:
        threads = thread_references(rows)

    def number(u: int) -> int:
        return u if cmd.uid else (sel.msn(u) or 0)

    s.untagged("THREAD " + "".join(_render_thread(t, number) for t in threads))
    return "THREAD completed"


def _render_thread(node: tuple[int | None, list[Any]], number: Any) -> str:
    """RFC 5256 section 4: a chain is written flat, branches as parenthesized siblings."""
    uid, children = node
    out: list[str] = []
    if uid is not None:
        out.append(str(number(uid)))
        while len(children) == 1 and children[0][0] is not None:
            uid, children = children[0]
            out.append(str(number(uid)))
    text = " ".join(out)
    if children:
        rendered = "".join(_render_thread(c, number) for c in children)
        text = f"{text} {rendered}" if text else rendered
    return "(" + text + ")"


COMMANDS = {
    "SEARCH": (cmd_search, "selected"),
    "CANCELUPDATE": (cmd_cancelupdate, "selected"),
    "SORT": (cmd_sort, "selected"),
    "THREAD": (cmd_thread, "selected"),
}

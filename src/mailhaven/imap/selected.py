"""The selected mailbox as one session sees it: the message sequence number map.

Invariants:
- ``uids`` is this session's view: message sequence number ``n`` is ``uids[n-1]``. It
  changes only when the session tells the client (EXISTS, EXPUNGE/VANISHED), so numbers
  are never out of step with what the client was told (RFC 9051 section 7.5.1).
- Messages expunged by others stay in the view (``pending_expunge``) until an EXPUNGE may
  be sent: never during FETCH, STORE or SEARCH by sequence number, never outside a command.
- ``known_modseq`` is the mailbox HIGHESTMODSEQ the view has caught up with; every change
  after it is fetched from the store with ``changes_since`` and turned into responses.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..store.api import Mailbox, MailboxChanges, Message, MessageColumns, Store
from ..store.changes import shared_changes_since


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """A read-only snapshot of one message's cached metadata."""

    flags: frozenset[str]
    modseq: int
    internal_date: float
    size: int


class _MetaView:
    """``sel.meta[uid]`` over the compact parallel arrays (a Mapping, read-only)."""

    def __init__(self, sel: SelectedMailbox) -> None:
        self._sel = sel

    def __getitem__(self, uid: int) -> MessageMeta:
        i = self._sel.index(uid)
        if i is None:
            raise KeyError(uid)
        return self._sel.meta_at(i)

    def get(self, uid: int, default: MessageMeta | None = None) -> MessageMeta | None:
        i = self._sel.index(uid)
        return default if i is None else self._sel.meta_at(i)

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self._sel.index(uid) is not None

    def values(self) -> list[MessageMeta]:
        return [self._sel.meta_at(i) for i in range(len(self._sel.uids))]


@dataclass
class Updates:
    """What a refresh found, for the session to announce."""

    expunged: list[int] = field(default_factory=list)
    """UIDs to announce as expunged now (ascending)."""
    exists: int | None = None
    """The new message count, when messages were added."""
    flags: list[int] = field(default_factory=list)
    """UIDs whose flags (or modseq) changed."""


@dataclass(frozen=True)
class MailboxIndex:
    """A mailbox's metadata columns as of one MODSEQ, kept per process between SELECTs."""

    uids: array[int]
    flags: list[frozenset[str]]
    modseq: array[int]
    dates: array[float]
    sizes: array[int]


_COLUMNS = {"flags": "_flags", "modseq": "_modseq", "dates": "_dates", "sizes": "_sizes"}


class SelectedMailbox:
    """Per-message metadata lives in parallel arrays (about 30 bytes a message, flag sets
    interned), so thousands of sessions on big mailboxes stay small."""

    def __init__(self, mailbox: Mailbox, readonly: bool) -> None:
        self.id = mailbox.id
        self.name = mailbox.name
        self.readonly = readonly
        self.uidvalidity = mailbox.uidvalidity
        self.uidnext = mailbox.uidnext
        self.known_modseq = mailbox.highestmodseq
        self.uids: array[int] = array("I")
        self._flags: list[frozenset[str]] = []
        self._modseq: array[int] = array("Q")
        self._dates: array[float] = array("d")
        self._sizes: array[int] = array("I")
        self._interned: dict[frozenset[str], frozenset[str]] = {}
        self.meta = _MetaView(self)
        self.pending_expunge: set[int] = set()
        self.pending_flags: set[int] = set()
        self.announced = 0
        """The message count the client knows (EXISTS sent, minus EXPUNGEs sent)."""
        self.keywords: set[str] = set()
        """Keywords the client was told of in the last FLAGS response."""
        self.wanted_modseq = 0
        """The MODSEQ of the newest change the feed announced for this mailbox."""
        self.recent: set[int] = set()
        """UIDs that are \\Recent in this session (RFC 3501 2.3.2; no longer shown in IMAP4rev2)."""
        self.saved_result: list[int] = []
        """RFC 5182 SEARCHRES ``$``: UIDs of the last SEARCH ... RETURN (SAVE)."""
        self.search_updates: dict[str, Any] = {}
        """RFC 5267 SEARCH RETURN (UPDATE) contexts by tag (``search.SearchUpdate``); they
        end with the selection."""

    def _intern(self, flags: frozenset[str]) -> frozenset[str]:
        return self._interned.setdefault(flags, flags)

    def _append(self, m: Message) -> None:
        self.uids.append(m.uid)
        self._flags.append(self._intern(m.flags))
        self._modseq.append(m.modseq)
        self._dates.append(m.internal_date)
        self._sizes.append(m.size)

    # -- loading ----------------------------------------------------------------
    def load(self, messages: list[Message]) -> None:
        for m in messages:
            self._append(m)
        if self.uids:
            self.uidnext = max(self.uidnext, self.uids[-1] + 1)
        self.announced = len(self.uids)

    def load_columns(self, columns: MessageColumns) -> None:
        """From the store's typed columns (its fast path): the arrays are taken as they are,
        each distinct flag text becomes one shared frozenset."""
        by_text: dict[str, frozenset[str]] = {}
        for text in set(columns.flags):
            by_text[text] = self._intern(frozenset(text.split()))
        self.uids, self._modseq, self._dates, self._sizes = columns.uids, columns.modseq, columns.dates, columns.sizes
        self._flags = [by_text[text] for text in columns.flags]
        if self.uids:
            self.uidnext = max(self.uidnext, self.uids[-1] + 1)
        self.announced = len(self.uids)

    # -- the per-process index (what Dovecot keeps in its index files) -------------------
    def snapshot(self) -> MailboxIndex:
        return MailboxIndex(uids=array("I", self.uids), flags=list(self._flags), modseq=array("Q", self._modseq),
                            dates=array("d", self._dates), sizes=array("I", self._sizes))

    def load_index(self, index: MailboxIndex, changes: MailboxChanges | None) -> bool:
        """Start from a cached index plus the changes since it was taken; False when the
        changes do not fit it (the caller then loads from the store)."""
        self.uids, self._flags = array("I", index.uids), list(index.flags)
        self._modseq, self._dates, self._sizes = array("Q", index.modseq), array("d", index.dates), \
            array("I", index.sizes)
        for fs in set(self._flags):
            self._intern(fs)
        if changes is not None:
            if changes.expunged:
                self.remove(changes.expunged)
            last = self.uids[-1] if self.uids else 0
            for m in sorted(changes.changed, key=lambda m: m.uid):
                i = self.index(m.uid)
                if i is not None:
                    self._flags[i] = self._intern(m.flags)
                    self._modseq[i] = m.modseq
                elif m.uid > last:
                    self._append(m)
                    last = m.uid
                else:
                    return False
        if self.uids:
            self.uidnext = max(self.uidnext, self.uids[-1] + 1)
        self.announced = len(self.uids)
        return True

    # -- numbering ----------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def index(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i
        return None

    def column(self, name: str) -> Sequence[Any]:
        """One metadata column by position (``flags``, ``modseq``, ``dates``, ``sizes``), for scans."""
        return getattr(self, _COLUMNS[name])  # type: ignore[no-any-return]

    def meta_at(self, i: int) -> MessageMeta:
        return MessageMeta(flags=self._flags[i], modseq=self._modseq[i], internal_date=self._dates[i],
                           size=self._sizes[i])

    def msn(self, uid: int) -> int | None:
        i = self.index(uid)
        return None if i is None else i + 1

    def uid_at(self, msn: int) -> int:
        return self.uids[msn - 1]

    def live_only(self, uids: list[int]) -> list[int]:
        """UIDs of this view (as ``resolve_set`` gives) less those others expunged meanwhile."""
        pending = self.pending_expunge
        return [u for u in uids if u not in pending] if pending else uids

    # -- local changes (this session's own commands) -------------------------
    def update_message(self, m: Message) -> None:
        i = self.index(m.uid)
        if i is not None:
            self._flags[i] = self._intern(m.flags)
            self._modseq[i] = m.modseq

    def update_messages(self, changed: Sequence[Message]) -> None:
        """:meth:`update_message` for each of ``changed``, in ascending UID order (as the
        store's ``set_flags`` returns them): one walk along the view, not a search per
        message (a ``STORE 1:*`` changes them all)."""
        uids, flags, modseq, interned = self.uids, self._flags, self._modseq, self._interned
        i, n = 0, len(uids)
        for m in changed:
            uid = m.uid
            if i >= n or uids[i] != uid:     # onward from the last one, or (out of order) from the start
                i = bisect.bisect_left(uids, uid, i if i < n and uids[i] < uid else 0)
            if i < n and uids[i] == uid:
                flags[i] = interned.setdefault(m.flags, m.flags)
                modseq[i] = m.modseq
                i += 1

    def own_write(self, modseq: int) -> None:
        """This session's write took ``modseq``, and its changes are applied already.

        MODSEQs come from one counter per account, one number per write, so when ``modseq``
        directly follows ``known_modseq`` no other write can have changed the mailbox in
        between, and the next refresh need not read back the rows this session just wrote
        (all 10,000 after ``STORE 1:*``). After a gap it reads everything after
        ``known_modseq``, ours included, as before."""
        if modseq == self.known_modseq + 1:
            self.known_modseq = modseq

    def remove(self, uids: list[int]) -> list[int]:
        """Drop ``uids`` from the view; returns their sequence numbers, highest first."""
        gone = set(uids)
        keep = [i for i, u in enumerate(self.uids) if u not in gone]
        numbers = [i + 1 for i, u in enumerate(self.uids) if u in gone]
        self.uids = array("I", (self.uids[i] for i in keep))
        self._flags = [self._flags[i] for i in keep]
        self._modseq = array("Q", (self._modseq[i] for i in keep))
        self._dates = array("d", (self._dates[i] for i in keep))
        self._sizes = array("I", (self._sizes[i] for i in keep))
        self.announced = max(0, self.announced - len(numbers))
        self.recent -= gone
        for u in gone:
            self.pending_expunge.discard(u)
            self.pending_flags.discard(u)
        return sorted(numbers, reverse=True)

    # -- catching up with the store ----------------------------------------------
    async def refresh(self, store: Store, condstore: bool) -> Updates:
        """Pull changes after ``known_modseq``; new messages join the view at once."""
        wanted, self.wanted_modseq = self.wanted_modseq, 0   # a change during the query sets it again
        changes = await shared_changes_since(store, self.id, self.known_modseq, wanted)
        updates = Updates()
        last = self.uids[-1] if self.uids else 0
        added = False
        for m in changes.changed:
            i = self.index(m.uid)
            if i is None:
                if m.uid > last:
                    self._append(m)
                    last = m.uid
                    added = True
                    self.uidnext = max(self.uidnext, m.uid + 1)
                continue
            if self._flags[i] != m.flags or (condstore and self._modseq[i] != m.modseq):
                self.pending_flags.add(m.uid)
            self._flags[i] = self._intern(m.flags)
            self._modseq[i] = m.modseq
        for uid in changes.expunged:
            if self.index(uid) is not None:
                self.pending_expunge.add(uid)
                self.pending_flags.discard(uid)
        self.known_modseq = max(self.known_modseq, changes.highestmodseq)
        if added:
            updates.exists = len(self.uids)
        return updates



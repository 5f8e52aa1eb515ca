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
from dataclasses import dataclass, field

from ..store.api import Mailbox, Message, Store


@dataclass
class MessageMeta:
    flags: frozenset[str]
    modseq: int
    internal_date: float
    size: int
    id: int
    blob_id: str


@dataclass
class Updates:
    """What a refresh found, for the session to announce."""

    expunged: list[int] = field(default_factory=list)
    """UIDs to announce as expunged now (ascending)."""
    exists: int | None = None
    """The new message count, when messages were added."""
    flags: list[int] = field(default_factory=list)
    """UIDs whose flags (or modseq) changed."""


class SelectedMailbox:
    def __init__(self, mailbox: Mailbox, readonly: bool) -> None:
        self.id = mailbox.id
        self.name = mailbox.name
        self.readonly = readonly
        self.uidvalidity = mailbox.uidvalidity
        self.uidnext = mailbox.uidnext
        self.known_modseq = mailbox.highestmodseq
        self.uids: list[int] = []
        self.meta: dict[int, MessageMeta] = {}
        self.pending_expunge: set[int] = set()
        self.pending_flags: set[int] = set()
        self.announced = 0
        """The message count the client knows (EXISTS sent, minus EXPUNGEs sent)."""
        self.saved_result: list[int] = []
        """RFC 5182 SEARCHRES ``$``: UIDs of the last SEARCH ... RETURN (SAVE)."""

    # -- loading ----------------------------------------------------------------
    def load(self, messages: list[Message]) -> None:
        self.uids = [m.uid for m in messages]
        self.meta = {m.uid: _meta(m) for m in messages}
        self.announced = len(self.uids)
        if self.uids:
            self.uidnext = max(self.uidnext, self.uids[-1] + 1)

    # -- numbering ----------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def uid_at(self, msn: int) -> int:
        return self.uids[msn - 1]

    def live(self, uid: int) -> bool:
        return uid in self.meta and uid not in self.pending_expunge

    # -- local changes (this session's own commands) -------------------------
    def update_message(self, m: Message) -> None:
        meta = self.meta.get(m.uid)
        if meta is not None:
            meta.flags = m.flags
            meta.modseq = m.modseq

    def remove(self, uids: list[int]) -> list[int]:
        """Drop ``uids`` from the view; returns their sequence numbers, highest first."""
        gone = set(uids)
        numbers = [i + 1 for i, u in enumerate(self.uids) if u in gone]
        self.uids = [u for u in self.uids if u not in gone]
        self.announced = max(0, self.announced - len(numbers))
        for u in gone:
            self.meta.pop(u, None)
            self.pending_expunge.discard(u)
            self.pending_flags.discard(u)
        return sorted(numbers, reverse=True)

    # -- catching up with the store ----------------------------------------------
    async def refresh(self, store: Store, condstore: bool) -> Updates:
        """Pull changes after ``known_modseq``; new messages join the view at once."""
        changes = await store.changes_since(self.id, self.known_modseq)
        updates = Updates()
        last = self.uids[-1] if self.uids else 0
        added = False
        for m in changes.changed:
            meta = self.meta.get(m.uid)
            if meta is None:
                if m.uid > last:
                    self.uids.append(m.uid)
                    self.meta[m.uid] = _meta(m)
                    last = m.uid
                    added = True
                    self.uidnext = max(self.uidnext, m.uid + 1)
                continue
            if meta.flags != m.flags or (condstore and meta.modseq != m.modseq):
                meta.flags = m.flags
                meta.modseq = m.modseq
                self.pending_flags.add(m.uid)
            else:
                meta.modseq = m.modseq
        for uid in changes.expunged:
            if uid in self.meta:
                self.pending_expunge.add(uid)
                self.pending_flags.discard(uid)
        self.known_modseq = max(self.known_modseq, changes.highestmodseq)
        if added:
            updates.exists = len(self.uids)
        return updates


def _meta(m: Message) -> MessageMeta:
    return MessageMeta(flags=m.flags, modseq=m.modseq, internal_date=m.internal_date, size=m.size,
                       id=m.id, blob_id=m.blob_id)

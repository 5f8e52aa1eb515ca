"""The selected mailbox's view (imap/selected.py)."""

from __future__ import annotations

import random

from mailhaven.imap.selected import SelectedMailbox
from mailhaven.store.api import Mailbox, Message


def test_flag_changes_applied_to_the_view_in_one_walk() -> None:
    """SelectedMailbox.update_messages (STORE's): each change lands on its UID's slot,
    whether the changes come in UID order (as set_flags returns them), out of it, or name
    UIDs the view does not hold; the same as update_message for each."""
    box = Mailbox(id=1, account_id=1, name="INBOX", special_use=None, uidvalidity=7, uidnext=1, highestmodseq=1,
                  subscribed=True)

    def message(uid: int, flags: frozenset[str] = frozenset(), modseq: int = 1) -> Message:
        return Message(id=uid, mailbox_id=1, uid=uid, blob_id="b", size=10, internal_date=0.0, flags=flags,
                       modseq=modseq, thread_id=uid)

    uids = [1, 2, 5, 6, 9, 12, 40]
    rng = random.Random(3)
    for order in ("ascending", "shuffled"):
        for _ in range(20):
            one, walk = SelectedMailbox(box, False), SelectedMailbox(box, False)
            for sel in (one, walk):
                sel.load([message(u) for u in uids])
            changed = [message(u, frozenset({f"k{u % 3}"}), 10 + u)
                       for u in sorted(rng.sample([*uids, 3, 7, 41, 50], rng.randint(0, 9)))]
            if order == "shuffled":
                rng.shuffle(changed)
            for m in changed:
                one.update_message(m)
            walk.update_messages(changed)
            assert list(walk.column("flags")) == list(one.column("flags"))
            assert list(walk.column("modseq")) == list(one.column("modseq"))
            assert all(walk.meta[m.uid].modseq == 10 + m.uid for m in changed if m.uid in uids)

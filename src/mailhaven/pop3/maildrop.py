"""The POP3 maildrop: a numbered snapshot of INBOX taken at login.

Invariants:
- Message numbers are fixed for the session (RFC 1939 5); messages delivered later are
  not seen until the next login; messages expunged elsewhere answer -ERR on RETR/TOP.
- Unique ids are ``UIDVALIDITY.UID`` of the INBOX, the same pair IMAP shows, so they stay
  stable across sessions and agree with IMAP (RFC 1939 7 UIDL).
- Deletion marks live only in the session; nothing touches the store before QUIT.
- At most one session per account holds the maildrop, across processes and nodes
  (RFC 1939 8, RFC 2449 8.1.1 ``[IN-USE]``): see lease.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..store.api import Message
from . import replies as R


@dataclass
class Maildrop:
    mailbox_id: int
    uidvalidity: int
    messages: list[Message]
    sizes: list[int] = field(default_factory=list)
    """Octets as RETR sends them (CRLF line ends, RFC 1939 5); the stored sizes if empty."""
    deleted: set[int] = field(default_factory=set)
    """Message numbers marked by DELE (1-based)."""
    retrieved: set[int] = field(default_factory=set)
    """Message numbers sent whole by RETR (marked \\Seen at UPDATE)."""

    exact: bool = field(init=False, default=False)
    """:attr:`sizes` are the sizes RETR sends (given), not the stored ones: a message whose
    size there equals its stored length has CRLF line ends only, the last line ended too."""

    def __post_init__(self) -> None:
        self.exact = len(self.sizes) == len(self.messages)
        if not self.exact:
            self.sizes = [m.size for m in self.messages]

    def size(self, msg: int) -> int:
        self.get(msg)
        return self.sizes[msg - 1]

    def get(self, msg: int) -> Message:
        if not 1 <= msg <= len(self.messages):
            raise R.Pop3Error(R.NO_SUCH_MESSAGE)
        if msg in self.deleted:
            raise R.Pop3Error(R.ALREADY_DELETED)             # RFC 1939 5: deleted messages are not listed
        return self.messages[msg - 1]

    def live(self) -> list[tuple[int, Message]]:
        return [(n, m) for n, m in enumerate(self.messages, 1) if n not in self.deleted]

    def stat(self) -> tuple[int, int]:
        if not self.deleted:                 # at login, and for most STATs: no per-message loop
            return len(self.messages), sum(self.sizes)
        live = self.live()
        return len(live), sum(self.sizes[n - 1] for n, _ in live)

    def unique_id(self, message: Message) -> str:
        # RFC 1939 7: 1-70 characters in 0x21-0x7E, unique within the maildrop, persistent.
        return f"{self.uidvalidity}.{message.uid}"

    def delete(self, msg: int) -> None:
        self.get(msg)
        self.deleted.add(msg)

    def reset(self) -> None:
        self.deleted.clear()

    def deleted_uids(self) -> list[int]:
        return sorted(self.messages[n - 1].uid for n in self.deleted)

    def seen_uids(self) -> list[int]:
        return sorted(self.messages[n - 1].uid for n in self.retrieved - self.deleted
                      if "\\Seen" not in self.messages[n - 1].flags)

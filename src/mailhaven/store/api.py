"""The storage interface: the only part of the store that protocol code imports.

Invariants every backend keeps:
- A message's bytes are durable (fsynced file and directory) before any row refers to them.
- A call that returns has committed; a call that raises has changed nothing.
- UIDs in a mailbox only grow and are never reused within one UIDVALIDITY.
- Every change to a message or mailbox takes a fresh MODSEQ from the account's counter
  (so one number is both IMAP's HIGHESTMODSEQ source and JMAP's state string), and is
  published on the change feed after it commits.
- Blocking calls (SQLite, argon2, fsync) never run on the event loop thread.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

SPECIAL_USES = ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive")
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


class StoreError(Exception):
    """Base of the errors the store raises on purpose."""


class NotFound(StoreError):
    """The domain, account, mailbox or message does not exist."""


class AlreadyExists(StoreError):
    """The name is taken."""


class QuotaExceeded(StoreError):
    """Storing the message would take the account over its quota."""


class InvalidName(StoreError):
    """The mailbox or address name is not acceptable."""


class StorageFull(StoreError):
    """The disk holding the data directory (or the database on it) is full: a temporary
    failure. Nothing was stored and the writer's temporary files are gone; the same
    operation succeeds again once space returns (SMTP 452 4.3.1, IMAP NO, JMAP error)."""


@dataclass(frozen=True, kw_only=True)
class Domain:
    name: str
    """Lower-case, IDNA A-label form is stored as given by the admin."""


@dataclass(frozen=True, kw_only=True)
class Account:
    id: int
    address: str
    """Full address, lower-case; users log in with it."""
    quota: int | None
    """Bytes; None is unlimited."""
    used: int
    """Bytes of all messages in all the account's mailboxes."""
    modseq: int
    """The account's change counter: the highest MODSEQ given out so far."""


@dataclass(frozen=True, kw_only=True)
class ScramCredentials:
    """RFC 5802 / 7677 server-side secrets for SCRAM-SHA-256 (no password is stored)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, kw_only=True)
class Mailbox:
    id: int
    account_id: int
    name: str
    """Full hierarchical name with ``/`` as separator; ``INBOX`` is always upper-case."""
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool
    recent_uid: int = 1
    """The first UID no session has claimed as \\Recent yet (RFC 3501 2.3.2)."""
    messages: int = 0
    unseen: int = 0
    size: int = 0
    recent: int = 0
    """Messages at or above ``recent_uid`` (STATUS RECENT), with the counts."""


@dataclass(frozen=True, kw_only=True)
class BlobRef:
    id: str
    """sha256 hex digest of the bytes: blobs are content-addressed and shared."""
    size: int


@dataclass(frozen=True, kw_only=True)
class Message:
    id: int
    """Store-wide unique id of this message in this mailbox (JMAP Email id)."""
    mailbox_id: int
    uid: int
    blob_id: str
    size: int
    internal_date: float
    """Seconds since the epoch (UTC)."""
    flags: frozenset[str]
    """System flags (``\\Seen``...) and keywords, as IMAP spells them."""
    modseq: int
    thread_id: int
    summary: dict[str, Any] = field(default_factory=dict, compare=False)
    """Parsed once at delivery by :func:`mailhaven.message.summary.summarize`."""
    wire: tuple[bytes, bytes] | None = field(default=None, compare=False)
    """ENVELOPE and BODYSTRUCTURE as IMAP sends them without UTF8=ACCEPT, rendered at
    delivery (:func:`mailhaven.imap.render.wire_forms`). Only read with ``imap_wire=True``;
    None there for messages stored by older versions, whose ``summary`` is read instead."""


class FlagMode(enum.Enum):
    ADD = "+"
    REMOVE = "-"
    REPLACE = ""


@dataclass(frozen=True, kw_only=True)
class Resolution:
    """What an envelope recipient address means to this server."""

    local_domain: bool
    account_ids: tuple[int, ...] = ()
    """Empty with ``local_domain`` True: an unknown user of a local domain."""


@dataclass(frozen=True, kw_only=True)
class DeliveryResult:
    account_id: int
    message: Message | None
    """None when the account was over quota (nothing was stored for it)."""
    over_quota: bool = False


@dataclass(frozen=True, kw_only=True)
class MailboxChanges:
    """What changed in a mailbox after a MODSEQ (for IMAP sync, CONDSTORE, QRESYNC, JMAP)."""

    changed: list[Message]
    """Messages added or whose flags changed, by UID."""
    expunged: list[int]
    """UIDs expunged, ascending."""
    highestmodseq: int


@dataclass(frozen=True, kw_only=True)
class Change:
    """One event on the change feed, published after commit."""

    account_id: int
    mailbox_id: int | None
    kind: str
    """``exists`` (new messages), ``flags``, ``expunge``, ``mailbox`` (created, renamed,
    deleted, subscribed) or ``queue``."""
    modseq: int


class BlobWriter(Protocol):
    """Streams one message to disk; nothing is visible until :meth:`finish`."""

    size: int

    def write(self, data: bytes) -> None: ...

    async def finish(self) -> BlobRef:
        """fsync the file and its directory; return the content-addressed reference."""
        ...

    def abort(self) -> None: ...


class ChangeSubscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Change]: ...

    async def get(self) -> Change: ...

    def on_change(self, callback: Callable[[Change], None]) -> None:
        """Deliver changes by calling ``callback`` at publication instead of queueing them."""
        ...

    def close(self) -> None: ...


class Store(Protocol):
    """What every backend provides. All methods are coroutines unless noted."""

    # -- lifecycle ----------------------------------------------------------
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # -- blobs --------------------------------------------------------------
    def blob_writer(self) -> BlobWriter:
        """A writer for a new message; call ``finish()`` before using the reference."""
        ...

    async def put_blob(self, data: bytes) -> BlobRef: ...

    async def read_blob(self, blob_id: str) -> bytes: ...

    def blob_path(self, blob_id: str) -> str | None:
        """A local file path for the blob, when the backend keeps files (else None)."""
        ...

    # -- domains ------------------------------------------------------------
    async def add_domain(self, name: str) -> Domain: ...

    async def remove_domain(self, name: str) -> None: ...

    async def list_domains(self) -> list[Domain]: ...

    async def is_local_domain(self, name: str) -> bool: ...

    # -- accounts -----------------------------------------------------------
    async def add_account(self, address: str, password: str, *, quota: int | None = None) -> Account:
        """Create the account and its default mailboxes (INBOX, Sent, Drafts, ...)."""
        ...

    async def remove_account(self, address: str) -> None: ...

    async def set_password(self, address: str, password: str) -> None: ...

    async def set_quota(self, address: str, quota: int | None) -> None: ...

    async def get_account(self, address: str) -> Account:
        """By address (case-insensitive); raises NotFound."""
        ...

    async def get_account_by_id(self, account_id: int) -> Account: ...

    async def list_accounts(self) -> list[Account]: ...

    async def authenticate(self, address: str, password: str) -> Account | None:
        """Verify an argon2id hash off the event loop; None on any failure."""
        ...

    async def get_scram(self, address: str) -> ScramCredentials | None:
        """SCRAM-SHA-256 secrets for the account, None when unknown."""
        ...

    # -- aliases ------------------------------------------------------------
    async def add_alias(self, address: str, targets: Sequence[str]) -> None:
        """``address`` may be ``@domain`` for a catch-all. Targets are local addresses."""
        ...

    async def remove_alias(self, address: str) -> None: ...

    async def list_aliases(self) -> dict[str, list[str]]: ...

    async def addresses_of(self, account_id: int) -> list[str]:
        """The account's own address and the aliases that point only at it."""
        ...

    async def resolve(self, address: str) -> Resolution:
        """Map an envelope recipient to accounts: exact user, alias, then catch-all."""
        ...

    # -- mailboxes ----------------------------------------------------------
    async def list_mailboxes(self, account_id: int, *, counts: bool = False) -> list[Mailbox]: ...

    async def get_mailbox(self, account_id: int, name: str, *, counts: bool = True) -> Mailbox:
        """By name (``INBOX`` case-insensitive); raises NotFound. Without ``counts`` the
        message counts are left 0 (no scan of the mailbox's messages)."""
        ...

    async def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox: ...

    async def create_mailbox(
        self, account_id: int, name: str, *, special_use: str | None = None
    ) -> Mailbox: ...

    async def delete_mailbox(self, mailbox_id: int) -> None:
        """Deletes the mailbox and its messages (INBOX cannot be deleted)."""
        ...

    async def rename_mailbox(self, mailbox_id: int, new_name: str) -> Mailbox:
        """Renames children too. Renaming INBOX moves its messages to the new mailbox."""
        ...

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None: ...

    async def list_subscriptions(self, account_id: int) -> list[str]:
        """Subscribed names, including names of mailboxes that no longer exist."""
        ...

    # -- messages -----------------------------------------------------------
    async def deliver(
        self,
        blob: BlobRef,
        account_ids: Iterable[int],
        *,
        mailbox: str = "INBOX",
        flags: Iterable[str] = (),
        internal_date: float | None = None,
        summary: dict[str, Any] | None = None,
        ignore_quota: bool = False,
    ) -> list[DeliveryResult]:
        """Store one blob into each account's mailbox, checking each quota. One commit.

        ``ignore_quota`` stores it even where that takes an account over its quota: for a
        message already acknowledged to its sender, which must not be lost."""
        ...

    async def append(
        self,
        mailbox_id: int,
        blob: BlobRef,
        *,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
        summary: dict[str, Any] | None = None,
    ) -> Message:
        """Raises QuotaExceeded, NotFound."""
        ...

    async def list_messages(
        self, mailbox_id: int, *, with_summary: bool = False
    ) -> list[Message]:
        """All messages in UID order."""
        ...

    async def get_messages(
        self, mailbox_id: int, uids: Iterable[int], *, with_summary: bool = True, imap_wire: bool = False
    ) -> list[Message]:
        """With ``imap_wire``, each message's :attr:`Message.wire` too, and (even without
        ``with_summary``) the summary of those that have none."""
        ...

    async def get_messages_raw(self, mailbox_id: int, uids: Iterable[int], *,
                               with_summary: bool = True, imap_wire: bool = False) -> list[tuple[Message, bytes]]:
        """:meth:`get_messages` with each message's bytes, in one trip (FETCH of bodies)."""
        ...

    async def get_wire_forms(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes | None, bytes | None]]:
        """(uid, ENVELOPE, BODYSTRUCTURE) as rendered at delivery, in UID order, for the live
        messages among ``uids``; both None where a message has no stored forms (older rows).
        No Message objects: a FETCH of a whole mailbox's envelopes wants nothing else."""
        ...

    async def get_raw(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes]]:
        """(uid, message bytes) of the live messages among ``uids``, in UID order."""
        ...

    async def get_messages_by_id(self, ids: Iterable[int], *, with_summary: bool = True) -> list[Message]:
        """By store-wide id (JMAP); unknown ids are left out."""
        ...

    async def set_flags(
        self,
        mailbox_id: int,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: FlagMode,
        *,
        unchanged_since: int | None = None,
    ) -> tuple[list[Message], list[int]]:
        """Returns (messages whose flags changed, UIDs that failed UNCHANGEDSINCE)."""
        ...

    async def expunge(self, mailbox_id: int, uids: Iterable[int]) -> list[int]:
        """Remove exactly these UIDs; returns those that existed, ascending."""
        ...

    async def copy(
        self, src_mailbox_id: int, uids: Iterable[int], dst_mailbox_id: int
    ) -> list[tuple[int, int]]:
        """Copy with flags and internal date; returns (src uid, dst uid) pairs. QuotaExceeded."""
        ...

    async def move(
        self, src_mailbox_id: int, uids: Iterable[int], dst_mailbox_id: int
    ) -> list[tuple[int, int]]:
        """Atomic copy + expunge (no quota change). The message keeps its store id (the JMAP
        Email id); it gets a new UID in the destination and its old UID is logged as expunged."""
        ...

    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges: ...

    async def claim_recent(self, mailbox_id: int, upto: int, *, claim: bool = True) -> int:
        """RFC 3501 2.3.2 \\Recent: the mailbox's first unclaimed UID before this call.

        With ``claim`` the caller takes UIDs from there up to ``upto`` (exclusive) atomically,
        so each message is recent in one session only, whichever process it runs in;
        without, it only looks (EXAMINE)."""
        ...

    async def search_text(self, mailbox_id: int, field: str, text: str) -> set[int]:
        """UIDs whose ``field`` (subject, from, to, cc, bcc, body, text, header) contains text.

        Uses the full-text index; matching is case-insensitive substring on the
        indexed text."""
        ...

    async def reindex(self, batch: int = 200) -> int:
        """Recompute every message's summary, IMAP wire forms and search text from its bytes
        (after an upgrade changed how they are computed); returns how many messages. Neither
        flags nor MODSEQs change, so sessions see nothing; a batch per transaction."""
        ...

    async def account_changes_since(self, account_id: int, modseq: int) -> tuple[list[Message], list[int], int]:
        """Account-wide (JMAP): (messages created/changed, ids destroyed, current modseq)."""
        ...

    # -- change feed --------------------------------------------------------
    def subscribe(self, account_id: int | None = None) -> ChangeSubscription:
        """Live changes for one account (or all when None), published after commit."""
        ...

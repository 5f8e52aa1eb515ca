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
from array import array
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..queue.api import OutboundMessage

BLOB_PIECE = 1024 * 1024
"""Largest piece :meth:`Store.blob_chunks` yields."""
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


class SieveConflict(StoreError):
    """The account's Sieve scripts changed since the version the caller read
    (``put_sieve_script(if_version=...)``): nothing was written; read again and retry."""


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
class MessageColumns:
    """A mailbox's per-message metadata as parallel typed arrays in UID order (what an IMAP
    SELECT needs): about 32 bytes a message instead of a Python object per row and field."""

    uids: array[int] = field(default_factory=lambda: array("I"))
    flags: list[str] = field(default_factory=list)
    """Flags as space-separated text; equal texts are one shared string."""
    modseq: array[int] = field(default_factory=lambda: array("Q"))
    dates: array[float] = field(default_factory=lambda: array("d"))
    sizes: array[int] = field(default_factory=lambda: array("I"))

    _texts: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> MessageColumns:
        """From ``(uid, flags text, modseq, internal date, size)`` rows, taken one at a time
        (a cursor is never turned into a list of every row)."""
        out = cls()
        out.extend(rows)
        return out

    def extend(self, rows: Iterable[Sequence[Any]]) -> None:
        """Append rows as :meth:`from_rows` takes them (a backend that reads in batches)."""
        texts = self._texts
        uids, flags, modseq, dates, sizes = self.uids, self.flags, self.modseq, self.dates, self.sizes
        for uid, text, ms, date, size in rows:
            uids.append(uid)
            flags.append(texts.setdefault(text, text))
            modseq.append(ms)
            dates.append(date)
            sizes.append(size)


@dataclass(frozen=True, kw_only=True)
class Resolution:
    """What an envelope recipient address means to this server."""

    local_domain: bool
    account_ids: tuple[int, ...] = ()
    """Empty with ``local_domain`` True: an unknown user of a local domain (unless
    ``forward`` has targets)."""
    forward: tuple[str, ...] = ()
    """Alias targets outside our domains: the message is forwarded there through the
    outbound queue (sieve/forward.py, SRS and an ARC seal)."""


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


@dataclass(frozen=True, kw_only=True)
class QueueEntry:
    """One recipient of one message in the outbound queue (``queued`` or ``held``)."""

    id: int
    msg: str
    """Shared by the rows of one submitted message, unique across restarts and nodes."""
    blob_id: str
    size: int
    mail_from: str
    rcpt: str
    domain: str
    notify: frozenset[str] | None
    orcpt: str | None
    envid: str | None
    ret: str | None
    body: str
    smtputf8: bool
    submitted_by: str | None
    created: float
    state: str
    attempts: int
    next_attempt: float
    last_reply: str
    warned: bool
    lease_owner: str | None
    lease_until: float | None
    tls_policy: str = ""
    """RFC 8689: ``requiretls`` (MAIL FROM REQUIRETLS), ``optional`` (TLS-Required: No) or ""."""

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "message": self.msg, "from": self.mail_from, "to": self.rcpt,
                "domain": self.domain, "size": self.size, "state": self.state, "attempts": self.attempts,
                "created": self.created, "next_attempt": self.next_attempt, "last_reply": self.last_reply,
                "notify": sorted(self.notify) if self.notify is not None else None, "envid": self.envid,
                "ret": self.ret, "blob": self.blob_id, "tls_policy": self.tls_policy}


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    """A bearer token (JMAP app password) as stored: only its SHA-256 is kept."""

    digest: str
    """Hex SHA-256 of the token."""
    label: str
    created: float


IndexRow = tuple[int, int, int, int, float, int, str]
"""(id, mailbox id, uid, size, internal date, thread id, flags as space-separated text): what
JMAP's account-wide queries need of a message, cheap to make by the thousand."""


@dataclass(frozen=True, kw_only=True)
class SieveScriptInfo:
    name: str
    """The script's name, unique per account."""
    active: bool
    """The one script run at delivery (at most one per account, RFC 5804 1.4 style)."""
    id: int
    """Never changes for the script (a rename keeps it) nor names another one later: JMAP's
    SieveScript id (RFC 9661)."""


@dataclass(frozen=True, kw_only=True)
class SpamState:
    """What the inbound spam check (filter/spam/scoring.py) needs of the store for one
    message, read at once."""
    lists: dict[int, dict[str, str]]
    """Each account's allow and block lists, as :meth:`Store.spam_lists` gives them;
    accounts with an empty list are left out."""
    totals: dict[int, tuple[int, int]]
    """(spam, ham) messages learnt by the global classifier (0) and each account's, as
    :meth:`Store.spam_token_counts` counts them; classifiers that learnt nothing are left out."""


@dataclass(frozen=True, kw_only=True)
class CachedPolicy:
    """A recipient domain's MTA-STS policy as last fetched (RFC 8461 5.1), shared by every
    process and node so a policy learnt by one protects the deliveries of all."""

    domain: str
    policy_id: str
    """The ``id`` of the ``_mta-sts`` TXT record the policy was fetched under."""
    text: str
    """The policy body as served (parsed again where used)."""
    fetched: float
    expires: float
    """``fetched`` plus the policy's ``max_age``: until then it holds even if DNS says otherwise."""


@dataclass(frozen=True, kw_only=True)
class TLSSessions:
    """Outbound sessions to one MX of a domain with a TLS policy on one UTC day, with one
    outcome (RFC 8460 4.3), as TLS reports count them."""

    day: str
    """``YYYY-MM-DD`` (UTC)."""
    domain: str
    """The policy domain (the recipient domain)."""
    policy_type: str
    """``sts`` or ``tlsa`` (RFC 8460 4.4)."""
    policy: str
    """The policy as reported (``policy-string``): its lines, newline-separated."""
    mx: str
    result: str
    """``""`` for success, else an RFC 8460 4.3 result type."""
    ip: str
    count: int


@dataclass(frozen=True, kw_only=True)
class LoginRecord:
    """Failed logins from one source address (``account`` empty) or address+account pair."""

    address: str
    """The source: an IPv4 address or an IPv6 /64 (``2001:db8:1:2::/64``)."""
    account: str
    """Lower-cased login name; empty for the whole address."""
    failures: int
    """Failures since the count last started (it restarts after a quiet ``window``)."""
    last_failure: float
    blocked_until: float
    """Wall-clock time (``time.time()``) until which logins are refused; 0 when not blocked."""


@dataclass(frozen=True, kw_only=True)
class DmarcEvent:
    """Messages with one set of DMARC verdicts, counted for the aggregate report
    (RFC 7489 7.2: one ``record`` per source IP, disposition and results)."""

    day: int
    """Days since the epoch (UTC) the messages arrived."""
    header_from: str
    source_ip: str
    disposition: str
    """none, quarantine or reject: what we did (RFC 7489 7.2.1 DispositionType)."""
    dkim: str
    """The aligned DKIM verdict for DMARC: pass or fail."""
    spf: str
    dkim_domain: str = ""
    dkim_result: str = ""
    spf_domain: str = ""
    spf_result: str = ""
    override: str = ""
    """PolicyOverrideType (``trusted_forwarder`` for a trusted ARC chain), or ""."""
    count: int = 1


@dataclass(frozen=True, kw_only=True)
class DmarcReport:
    """An aggregate report about one of our domains that someone sent us."""

    domain: str
    org_name: str
    report_id: str
    begin: int
    end: int
    received: float
    records: str
    """The report's rows as JSON: a list of {source_ip, count, disposition, dkim, spf}."""


class BlobWriter(Protocol):
    """Streams one message to disk; nothing is visible until :meth:`finish`."""

    size: int

    def write(self, data: bytes) -> None: ...

    async def finish(self, *, deferred: bool = False) -> BlobRef:
        """fsync the file and its directory; return the content-addressed reference.
        ``deferred``: a backend may instead make the bytes durable in its next write
        transaction (before or with any row naming them): only for a caller whose next
        step is a store write it awaits before it acknowledges anything (SMTP DATA)."""
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

    def refill_in_background(self) -> None:
        """Not a coroutine. Start rebuilding, in the background, any derived data the store
        found lost at :meth:`open` (SQLite: a missing ``search.db``, refilled from the
        messages' bytes); ``mailhaven serve`` calls it, one-shot commands do not. Nothing
        to do where nothing derived can be lost on its own (PostgreSQL)."""
        ...

    # -- blobs --------------------------------------------------------------
    def blob_writer(self) -> BlobWriter:
        """A writer for a new message; call ``finish()`` before using the reference."""
        ...

    async def put_blob(self, data: bytes) -> BlobRef: ...

    async def read_blob(self, blob_id: str) -> bytes: ...

    def blob_path(self, blob_id: str) -> str | None:
        """A local file path for the blob, when the backend keeps files (else None)."""
        ...

    async def blob_size(self, blob_id: str) -> int:
        """The blob's length in bytes, without reading it (:class:`NotFound` if none)."""
        ...

    async def read_blob_range(self, blob_id: str, start: int, length: int) -> bytes:
        """``length`` bytes of the blob from offset ``start`` (fewer only at its end),
        never reading the rest: a large message is read a range at a time."""
        ...

    def blob_chunks(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` of the blob (``end`` None: to its end) as pieces of
        at most :data:`BLOB_PIECE` bytes, read as they are consumed, so memory stays flat
        in the blob's size (files on SQLite, ``blob_chunks`` rows on PostgreSQL).
        :class:`NotFound` before the first piece if there is no such blob."""
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
        """``address`` may be ``@domain`` for a catch-all. Targets are local addresses or
        external ones (forwarded, see :meth:`resolve`)."""
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

    async def mailbox_names(self, account_id: int) -> dict[str, str | None]:
        """The account's mailbox names, each with its special-use attributes (None: none):
        what a Sieve delivery that files a message needs, without the subscription and
        count look-ups of :meth:`list_mailboxes`, in its order (SQLite: read on the event loop)."""
        ...

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

    async def get_headers(self, mailbox_id: int, uids: Iterable[int]) -> list[tuple[int, bytes]]:
        """(uid, header block) of the live messages among ``uids``, in UID order: the block
        (through the blank line that ends it) as stored beside the message at delivery
        (``store/headerblock.py``), without reading the message. Messages with no stored
        block (stored by an older version, or a block over ``headerblock.MAX_BLOCK``) are
        left out like gone ones: the caller reads those messages instead."""
        ...

    def get_header_now(self, mailbox_id: int, uid: int) -> list[tuple[int, bytes]] | None:
        """:meth:`get_headers` of one message, answered at once on the calling thread (the
        event loop's: a protocol answering input as it arrives), or None when this backend
        cannot without waiting (then the caller awaits :meth:`get_headers`)."""
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

    # -- account-wide message lookups (JMAP) ---------------------------------
    async def account_has_blob(self, account_id: int, blob_id: str) -> bool:
        """True when one of the account's messages is stored as this blob."""
        ...

    async def thread_members(self, account_id: int, thread_ids: Sequence[int]) -> dict[int, list[int]]:
        """Thread id -> the account's message ids in it, in arrival order (internal date, id)."""
        ...

    async def message_index(self, account_id: int, mailbox_ids: Sequence[int] | None = None) -> list[IndexRow]:
        """An :data:`IndexRow` for every message of the account (or of these of its mailboxes),
        in no particular order."""
        ...

    async def ordered_message_ids(self, account_id: int, mailbox_id: int | None, column: str,
                                  ascending: bool) -> list[tuple[int, int]]:
        """(id, thread id) of the mailbox's (or account's) messages sorted by ``internal_date``
        or ``size``, ties by id descending, whatever the direction."""
        ...

    # -- bearer tokens (web/auth.py) ----------------------------------------
    async def add_token(self, account_id: int, digest: str, label: str, *, created: float) -> None: ...

    async def list_tokens(self, account_id: int) -> list[TokenInfo]:
        """The account's tokens, oldest first."""
        ...

    async def revoke_tokens(self, account_id: int, digest_prefix: str) -> int:
        """Delete the account's tokens whose digest starts with the prefix; how many."""
        ...

    async def token_account(self, digest: str) -> int | None:
        """The account id the token with this digest belongs to."""
        ...

    # -- JMAP identities ----------------------------------------------------
    async def identity_settings(self, account_id: int) -> dict[str, dict[str, Any]]:
        """Address -> the saved Identity properties (name, signatures...) of the account."""
        ...

    async def save_identity_settings(self, account_id: int, address: str, settings: dict[str, Any]) -> None:
        """Replace the saved properties of one address's identity."""
        ...

    # -- the outbound queue (queue/runner.py) ---------------------------------
    async def queue_enqueue(self, message: OutboundMessage, *, now: float | None = None) -> list[int]:
        """One ``queued`` row per recipient, due at ``now``, in one commit; their ids."""
        ...

    async def queue_claim(self, owner: str, *, now: float, lease: float, limit: int) -> list[QueueEntry]:
        """Lease up to ``limit`` due, unleased (or lease expired) rows to ``owner`` until
        ``now + lease``, atomically across processes and nodes; by id."""
        ...

    async def queue_release_leases(self, owner: str) -> None: ...

    async def queue_finish(self, entry_id: int) -> None:
        """Delivered or finally failed: the row goes."""
        ...

    async def queue_defer(self, entry_id: int, *, next_attempt: float, reply: str, warned: bool) -> None:
        """One more failed attempt: due again at ``next_attempt``, lease released."""
        ...

    async def queue_list(self) -> list[QueueEntry]:
        """Every row, by id."""
        ...

    async def queue_get(self, entry_id: int) -> QueueEntry | None: ...

    async def queue_set_state(self, entry_id: int | None, state: str, *, now: float | None = None) -> int:
        """Set the state of one row (or all with None), and with ``now`` make it due then;
        how many rows."""
        ...

    async def queue_delete(self, entry_id: int) -> bool: ...

    # -- shared login throttle and leases (auth/throttle.py, pop3 IN-USE) -----------------
    async def login_records(self, address: str, account: str) -> list[LoginRecord]:
        """The records of ``address`` alone and of ``address``+``account`` (0, 1 or 2)."""
        ...

    async def login_failed(self, address: str, account: str, *, now: float, window: float,
                           address_limit: int, account_limit: int, block: float) -> list[LoginRecord]:
        """Count one failure against the address and (when given) the address+account pair,
        atomically across processes; a count restarts when the last failure is older than
        ``window``; reaching a limit blocks that record until ``now + block``. Returns the
        updated records. Records long quiet and unblocked are deleted."""
        ...

    async def login_succeeded(self, address: str, account: str) -> None:
        """Forget the address+account pair's failures (never the address's own)."""
        ...

    async def login_blocks(self, now: float) -> list[LoginRecord]:
        """Every record blocked at ``now``, longest block first."""
        ...

    async def login_unblock(self, address: str) -> int:
        """Delete every record of ``address`` (alone and with any account); how many."""
        ...

    async def acquire_lease(self, name: str, holder: str, *, ttl: float, now: float) -> bool:
        """Take (or renew, for the same holder) the exclusive lease ``name`` until ``now + ttl``;
        False while another holder's lease has not expired."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up, if ``holder`` still holds it."""
        ...

    # -- DMARC reports (RFC 7489 7.2) --------------------------------------------
    async def record_dmarc_event(self, event: DmarcEvent) -> None:
        """Add ``event.count`` to the row with the same day, domain, address and verdicts."""
        ...

    async def take_dmarc_events(self, before_day: int) -> list[DmarcEvent]:
        """Remove and return every row of the days before ``before_day`` (atomic: two
        nodes never report the same row)."""
        ...

    async def add_dmarc_report(self, report: DmarcReport) -> bool:
        """Keep a received report; False when one with its org_name and report_id is kept."""
        ...

    async def list_dmarc_reports(self, domain: str) -> list[DmarcReport]:
        """The received reports about ``domain``, oldest period first."""
    # -- shared rate counters (filter/ratelimit.py) -------------------------------------
    async def rate_take(self, key: str, amount: int, *, now: float, window: float, limit: int) -> int | None:
        """Add ``amount`` to ``key``'s count in the fixed window holding ``now`` (windows
        start at multiples of ``window`` seconds) unless that passes ``limit``; the new
        count, or None when refused (nothing added). Atomic across processes and nodes;
        counts of windows gone by are deleted."""
        ...

    # -- Sieve scripts --------------------------------------------------------
    async def put_sieve_script(self, account_id: int, name: str, text: str, *, activate: bool = False,
                               if_version: int | None = None) -> int:
        """Create or replace the named script (the caller has compiled it); ``activate``:
        and make it the only active one, in the same transaction. ``if_version``: only if
        :meth:`sieve_version` is still that, else SieveConflict and nothing changes (a
        read-edit-write that must not lose a concurrent edit). Returns the new version."""
        ...

    async def sieve_version(self, account_id: int) -> int:
        """A number that grows with every change to the account's Sieve scripts (put,
        activate, rename, delete), 0 before the first; each change also publishes a
        ``sieve`` :class:`Change`."""
        ...

    async def get_sieve_script(self, account_id: int, name: str) -> str:
        """The script's text; raises NotFound."""
        ...

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScriptInfo]:
        """Every script of the account, by name."""
        ...

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        """Raises NotFound. Deleting the active script leaves none active."""
        ...

    async def activate_sieve_script(self, account_id: int, name: str | None) -> None:
        """Make ``name`` the only active script (None: no script active); NotFound."""
        ...

    async def get_active_sieve_script(self, account_id: int) -> tuple[str, str] | None:
        """(name, text) of the active script, None when there is none."""
        ...

    async def count_alias_forward(self, address: str, *, now: float, window: float, limit: int) -> bool:
        """:meth:`count_redirect` for an alias that forwards off-site (it has no account):
        counts one forward of ``address`` unless ``limit`` were counted in ``window``."""
    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        """RFC 5804 2.11.1: the script keeps its text and whether it is active; NotFound when
        there is no ``old``, AlreadyExists when ``new`` is taken (nothing changes then)."""
        ...

    async def count_redirect(self, account_id: int, *, now: float, window: float, limit: int) -> bool:
        """Count one Sieve redirect for the account at ``now`` unless ``limit`` were already
        counted in the last ``window`` seconds (then False, nothing counted); atomic."""
        ...

    async def vacation_reply_due(self, account_id: int, sender: str, handle: str, *,
                                 now: float, period: float) -> bool:
        """RFC 5230 4.2: True (and remember ``now + period``) unless a reply to ``sender``
        (case-insensitive) for this ``handle`` was sent less than its period ago; atomic."""
        ...

    async def duplicate_keys(self, account_id: int, *, now: float) -> frozenset[str]:
        """RFC 7352: the keys the account's duplicate tests recorded whose period runs past ``now``."""
        ...

    async def remember_duplicates(self, account_id: int, until: Mapping[str, float], *, now: float) -> None:
        """Record each key until its time (replacing an earlier one); forget the account's
        keys whose time has passed."""
        ...

    async def srs_key(self) -> bytes:
        """The server's secret for SRS addresses (RFC-less Sender Rewriting Scheme), made once."""
        ...

    async def get_mta_sts_policy(self, domain: str) -> CachedPolicy | None:
        """The cached MTA-STS policy of ``domain`` (lower-case A-label), expired or not."""
        ...

    async def put_mta_sts_policy(self, policy: CachedPolicy) -> None:
        """Remember (replace) the domain's policy."""
        ...

    async def count_tls_session(self, *, day: str, domain: str, policy_type: str, policy: str, mx: str,
                                result: str, ip: str) -> None:
        """Count one outbound session (RFC 8460): successes with ``result`` empty."""
        ...

    async def tls_sessions(self, before_day: str) -> list[TLSSessions]:
        """Every count of days before ``before_day`` (``YYYY-MM-DD``), oldest first."""
        ...

    async def forget_tls_sessions(self, day: str) -> None:
        """Drop the counts of ``day`` once it has been reported."""
    # -- spam filter (filter/spam/) -------------------------------------------------
    async def spam_token_counts(self, scope: int, tokens: Sequence[str]) -> tuple[int, int, dict[str, tuple[int, int]]]:
        """(spam messages, ham messages, token -> (spam count, ham count)) of one classifier:
        ``scope`` is an account id, or 0 for the global one. Tokens never seen are left out."""
        ...

    async def spam_train(self, account_id: int, tokens: Sequence[str], *, spam: bool) -> None:
        """Count one spam (or ham) message with these distinct ``tokens`` in the account's
        classifier and in the global one, in one transaction."""
        ...

    async def spam_lists(self, account_id: int) -> dict[str, str]:
        """The account's allow and block lists: entry (address or domain, lower-case) ->
        ``allow`` or ``block``."""
        ...

    async def spam_state(self, account_ids: Sequence[int]) -> SpamState:
        """The allow and block lists of these accounts and the totals of their classifiers
        and the global one: what every inbound message to them asks, in one read."""
        ...

    async def set_spam_list(self, account_id: int, entry: str, kind: str | None) -> None:
        """Put ``entry`` (lower-cased) on the ``allow`` or ``block`` list; None takes it off."""
        ...

    async def greylist_pass(self, key: str, *, now: float, delay: float, expire: float) -> bool:
        """Greylisting: True when ``key`` was first seen at least ``delay`` and at most
        ``expire`` seconds before ``now`` (then it passes from now on), or passed before;
        otherwise remember ``now`` as its first sighting (unless one is pending) and False."""
        ...

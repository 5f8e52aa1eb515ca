"""One mail transaction on the server side: recipients, the streamed blob(s), the commit.

Invariants:
- Content goes straight to :meth:`Store.blob_writer` as it arrives; only the header
  section of a *submitted* message is held (to check ``From:`` and add ``Message-ID:`` /
  ``Date:``), bounded by :data:`MAX_HEADER`.
- :meth:`Transaction.commit` returns the reply for the end of DATA / BDAT LAST, and a 250
  only after every blob is fsynced (``finish()``; a small one deferred into the commit
  that follows) and ``store.deliver`` and ``outbound.enqueue`` have committed. On any
  failure nothing is acknowledged.
- Local copies start with ``Return-Path:`` (RFC 5321 4.4) and a ``Received:`` trace
  header; the copy handed to the outbound queue gets the ``Received:`` header only (the
  final delivery adds Return-Path). When both kinds of recipients exist, two blobs are
  written side by side so neither carries a wrong header.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from functools import lru_cache
from typing import Any

from ..filter import dmarcreports
from ..filter.authresults import strip_ours
from ..localdelivery import copier, deliver_local, read_bounded
from ..message.authors import foreign_authors
from ..queue.api import OutboundMessage, OutboundRecipient
from ..sieve.forward import forward_alias
from ..store.api import BlobRef, BlobWriter, StorageFull
from . import codes
from .codes import Reply
from .protocol import MailFrom, RcptTo
from .spool import ContentSpool

log = logging.getLogger("mailhaven.smtp")

ADDRESS_LITERAL = re.compile(r"\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\]")
"""RFC 5321 4.1.3 address literal (``EHLO [192.0.2.1]``): kept as it is in Received:."""

MAX_HEADER = 1024 * 1024
"""Largest header section held in memory for submission checks."""

SPOOL_IN_MEMORY = 1024 * 1024
"""Content held for the inbound checks stays in memory up to this, then in a temp file."""
SPOOL_CHUNK = 1024 * 1024


@dataclass
class Trace:
    """What the Received: header says about the session (RFC 5321 4.4)."""

    helo: str
    peer_ip: str
    hostname: str
    protocol: str
    """RFC 3848 / RFC 6531 ``with`` value: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS..."""
    transaction_id: str
    tls: str | None = None
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`` or None."""

    def received(self, recipients: list[str]) -> bytes:
        date = received_date(int(time.time()))
        # The HELO name is the client's word: keep it to printable ASCII in our header.
        helo = self.helo if ADDRESS_LITERAL.fullmatch(self.helo) else "".join(
            c if "!" <= c <= "~" and c not in "()[];\\" else "?" for c in self.helo)
        lines = [f"Received: from {helo} ([{self.peer_ip}])"]
        if self.tls:
            lines.append(f"\t(using {self.tls})")
        lines.append(f"\tby {self.hostname} (Mailhaven) with {self.protocol} id {self.transaction_id}")
        # "for" only with one recipient: naming several would leak Bcc recipients.
        tail = f"\tfor <{recipients[0]}>; {date}" if len(recipients) == 1 else f"\t; {date}"
        lines.append(tail)
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")


@lru_cache(maxsize=2)
def received_date(second: int) -> str:
    """The RFC 5322 3.3 date-time of a Received: header, local time with its offset: one
    formatting a second (it was 3% of an inbound message's CPU, issue 18)."""
    return email.utils.format_datetime(datetime.fromtimestamp(second).astimezone(), usegmt=False)


@dataclass
class Submission:
    """What submission adds: the owner check of ``From:`` and missing header fields."""

    addresses: frozenset[str]
    """The authenticated account's own addresses, lower-case."""
    hostname: str


@dataclass
class Transaction:
    mail: MailFrom
    trace: Trace
    store: Any
    outbound: Any
    submission: Submission | None = None
    authenticated_as: str | None = None
    inbound: Any = None
    """The port-25 trust checks (filter/inbound.py ``InboundFilter``) or None: then the
    content is held until the end of the data, checked, and stored with its verdict."""
    verdict: Any = None
    """The inbound filter's ``Verdict`` once the commit ran it."""
    sieve: Any = None
    """The ``[sieve]`` settings for the recipients' scripts (None: the defaults)."""
    local: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Accepted local recipient -> account ids."""
    forwards: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Local recipient (an alias) -> its external targets (sieve/forward.py)."""
    remote: list[OutboundRecipient] = field(default_factory=list)
    _writers: list[tuple[BlobWriter, bool]] = field(default_factory=list)
    """(writer, is the local copy)"""
    _header: bytearray | None = None
    _spool: ContentSpool | None = None
    """The content held for the inbound checks."""
    _started = False
    _failed: Reply | None = None
    _tls_optional = False
    """The submitted header had ``TLS-Required: No`` (RFC 8689 5)."""

    # -- recipients ----------------------------------------------------------------------
    def add_local(self, rcpt: RcptTo, account_ids: tuple[int, ...], forward: tuple[str, ...] = ()) -> None:
        self.local[rcpt.address] = account_ids
        if forward:
            self.forwards[rcpt.address] = forward

    def add_remote(self, rcpt: RcptTo) -> None:
        self.remote.append(OutboundRecipient(address=rcpt.address, notify=rcpt.notify, orcpt=rcpt.orcpt))

    @property
    def recipients(self) -> list[str]:
        return [*self.local, *(r.address for r in self.remote)]

    # -- content -------------------------------------------------------------------------
    def start(self) -> None:
        if self.local:
            self._writers.append((self.store.blob_writer(), True))
        if self.remote:
            self._writers.append((self.store.blob_writer(), False))
        if self.submission is not None:
            self._header = bytearray()
        elif self.inbound is not None and self.local:
            self._spool = ContentSpool(SPOOL_IN_MEMORY)

    def write(self, data: bytes) -> None:
        if self._failed is not None:
            return                                   # refused already: the rest is read and dropped
        try:
            self._write(data)
        except StorageFull:
            self._storage_full()

    def _storage_full(self) -> None:
        """The disk is full: drop the blobs (their temporary files go) and answer
        452 4.3.1 at the end of the data (RFC 3463 X.3.1), never a lost connection."""
        self._failed = codes.INSUFFICIENT_STORAGE
        self.abort()

    def _write(self, data: bytes) -> None:
        if self._spool is not None:
            self._spool.write(data)                  # checked at the end (filter/)
            return
        if self._header is not None:
            self._header += data
            end = self._header.find(b"\r\n\r\n")
            if self._header.startswith(b"\r\n"):
                end = 0
            if end < 0:
                if len(self._header) > MAX_HEADER:
                    self._failed = codes.BAD_HEADER.with_text("Header section too large")
                return
            self._flush_header(end + 2 if end else 0)
            return
        if not self._started:
            self._begin(b"")
        for writer, _ in self._writers:
            writer.write(data)

    def _begin(self, extra_headers: bytes) -> None:
        self._started = True
        trace = self.trace.received(self.recipients)
        for writer, is_local in self._writers:
            if is_local:
                writer.write(f"Return-Path: <{self.mail.address}>\r\n".encode())
            writer.write(trace)
            if extra_headers:
                writer.write(extra_headers)

    def _flush_header(self, header_len: int) -> None:
        assert self._header is not None
        buffered, self._header = bytes(self._header), None
        try:
            added = self._check_submission(buffered[:header_len])
        except Reply as exc:
            self._failed = exc.caught()
            return
        self._begin(added)
        # Our authserv-id is ours alone, on mail from our own users too (RFC 8601 5).
        assert self.submission is not None
        head, _ = strip_ours(buffered[:header_len], self.submission.hostname)
        for writer, _ in self._writers:
            writer.write(head)
            writer.write(buffered[header_len:])

    def _check_submission(self, header: bytes) -> bytes:
        """RFC 6409 8: From: must be the user's; add Message-ID and Date when missing."""
        assert self.submission is not None
        # Read as ENVELOPE and JMAP will read it: one From, at most one Sender, each ours.
        if foreign_authors(header, self.submission.addresses) is not None:
            raise codes.FROM_NOT_OWNED
        parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
        self._tls_optional = str(parsed.get("TLS-Required", "")).strip().lower() == "no"  # RFC 8689 5
        added = []
        if parsed.get("Message-ID") is None:                     # RFC 6409 8.3
            added.append(f"Message-ID: <{uuid.uuid4().hex}@{self.submission.hostname}>\r\n")
        if parsed.get("Date") is None:                           # RFC 6409 8.2
            added.append(f"Date: {email.utils.formatdate(time.time(), localtime=True)}\r\n")
        return "".join(added).encode()

    def _tls_policy(self) -> str:
        """RFC 8689 4.1: REQUIRETLS on MAIL FROM wins over a TLS-Required header field."""
        if self.mail.params.requiretls:
            return "requiretls"
        return "optional" if self._tls_optional else ""

    def abort(self) -> None:
        """Never raises: it runs when the session ends, whatever ended it."""
        for writer, _ in self._writers:
            writer.abort()
        self._writers.clear()
        self._header = None
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    # -- the commit ----------------------------------------------------------------------
    async def commit(self) -> tuple[Reply, list[BlobRef]]:
        """Make the message durable and hand it on; returns the reply for the client."""
        try:
            return await self._commit()
        except StorageFull:
            self._storage_full()
            return codes.INSUFFICIENT_STORAGE, []

    async def _check_inbound(self) -> Reply | None:
        """Run the trust checks on the held message, then write it with its verdict."""
        spool, self._spool = self._spool, None
        assert spool is not None
        try:
            content = spool.reader()
            self.verdict = verdict = await self.inbound.check(
                content, spool.size, ip=self.trace.peer_ip, helo=self.trace.helo, mail_from=self.mail.address,
                store=self.store, accounts=sorted({a for ids in self.local.values() for a in ids}),
                recipients=list(self.local), rcpts=self.recipients, queue_id=self.trace.transaction_id)
            await dmarcreports.record(self.store, verdict, self.trace.peer_ip)     # RFC 7489 7.2
            if verdict.refusal is not None:                          # clamd / rspamd
                return verdict.refusal  # type: ignore[no-any-return]
            if verdict.action == "reject":
                return codes.DMARC_REJECTED                          # RFC 7489 6.7
            if verdict.action in ("spam", "defer"):                  # filter/spam/ scoring.py
                return codes.SPAM_REJECTED if verdict.action == "spam" else codes.GREYLISTED
            self._begin(b"")
            for writer, _ in self._writers:
                writer.write(verdict.header)
            content.seek(verdict.body_offset)
            while chunk := content.read(SPOOL_CHUNK):
                for writer, _ in self._writers:
                    writer.write(chunk)
        finally:
            spool.close()
        return None

    async def _take_dmarc_reports(self, ref: BlobRef) -> None:
        """Reports about our domains sent to ``[dmarc] receive`` (filter/dmarcincoming.py)."""
        from ..filter.dmarcincoming import take_reports

        try:
            await take_reports(self.store, await self.store.read_blob(ref.id))
        except Exception:  # noqa: BLE001 - delivered already: never a failure reply now
            log.exception("DMARC reports not read")

    async def _commit(self) -> tuple[Reply, list[BlobRef]]:
        if self._spool is not None and self._failed is None:
            self._failed = await self._check_inbound()
        if self._header is not None and self._failed is None:   # headers only, no body separator
            self._flush_header(len(self._header))
        if not self._started and self._failed is None:
            self._begin(b"")
        if self._failed is not None:
            self.abort()
            return self._failed, []
        refs: list[BlobRef] = []
        local_ref = remote_ref = None
        try:
            for writer, is_local in self._writers:
                # Deferred: a small blob's row commits in deliver's / enqueue's transaction
                # (one fsync for both); the 250 still waits for that commit.
                ref = await writer.finish(deferred=True)
                refs.append(ref)
                if is_local:
                    local_ref = ref
                else:
                    remote_ref = ref
        except Exception:
            self.abort()
            raise
        self._writers.clear()
        all_full = False
        if local_ref is not None:
            mailbox = self.verdict.mailbox if self.verdict is not None else "INBOX"
            sealer = getattr(self.inbound, "sealer", None)
            local = await deliver_local(self.store, local_ref, self.local, mail_from=self.mail.address,
                                        refusable=not self.remote and not self.forwards, mailbox=mailbox,
                                        sealer=sealer, sieve=self.sieve)
            statuses: set[str] = set()
            if self.forwards and mailbox == "INBOX":       # junk is never forwarded
                raw, path = await read_bounded(self.store, local_ref)       # never a large one whole
                for rcpt, targets in self.forwards.items():
                    statuses.add(await forward_alias(self.store, raw, rcpt, targets, mail_from=self.mail.address,
                                                     sealer=sealer, copy=copier(self.store, path)))
            receive = self.inbound.config.dmarc.receive.lower() if self.inbound is not None else ""
            if receive and receive in (a.lower() for a in self.local):
                await self._take_dmarc_reports(local_ref)
            if statuses and "sent" not in statuses and not local.results and not local.discarded \
                    and not self.remote:
                # Nobody took it: a loop is refused (RFC 5321 6.3), over the limit deferred.
                unsent = statuses
                return (codes.FORWARDING_LOOP if "loop" in unsent else codes.FORWARDING_LIMIT), refs
            if local.rejected:                     # RFC 5429 2.1: every recipient's script said reject
                return codes.SIEVE_REJECTED.with_text(next(iter(local.rejected.values()))), refs
            results = local.results
            all_full = bool(results) and all(r.over_quota for r in results)
            full = [r.account_id for r in results if r.over_quota]
            if full and (not all_full or self.remote):
                # Some recipients took it, so the reply will be 250: the ones whose quota
                # ran out since RCPT (where 452 4.2.2 is the check) get it too, a message
                # over quota as Dovecot's quota grace allows, rather than a silent loss.
                await self.store.deliver(local_ref, full, ignore_quota=True)
        if remote_ref is not None:
            params = self.mail.params
            await self.outbound.enqueue(OutboundMessage(
                blob=remote_ref, mail_from=self.mail.address, recipients=tuple(self.remote),
                envid=params.envid, ret=params.ret, body=params.body, smtputf8=params.smtputf8,
                authenticated_as=self.authenticated_as, tls_policy=self._tls_policy(),
            ))
        if all_full and not self.remote:
            # Nobody could take it; per-recipient results after DATA need LMTP (RFC 2033).
            return codes.MAILBOX_FULL, refs
        return codes.MESSAGE_ACCEPTED.with_text(f"Message accepted as {self.trace.transaction_id}"), refs

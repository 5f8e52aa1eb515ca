"""The queue runner: claims due entries, delivers them per destination, records outcomes.

Loop: claim due rows with a lease (``[queue] lease``), group them by recipient domain and
by message, and for each domain open up to ``per_domain`` connections (``concurrency``
in all), each carrying several messages one after another over one SMTP session (RFC 5321
handshake once, then MAIL/RCPT/DATA per message, RSET after a refused one, QUIT at the
end). A recipient's outcome is one of:

- 2xx: done (a "relayed" DSN when NOTIFY=SUCCESS and the next hop does not speak DSN).
- 5xx, a null MX, a domain that does not exist: failed at once, with a DSN.
- 4xx, a lost connection, no reachable host: deferred to the next slot of
  ``[queue] retry`` (then every last interval); a delay DSN once the entry is older than
  ``warn_after``; a failure DSN once older than ``expire``.

DSNs go to the envelope sender with a null reverse-path, so a DSN is never answered by
another (RFC 3461 6.2): straight into the sender's INBOX when the sender is local, else
through this queue. Enqueueing wakes the loop, so new mail does not wait for the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

from ..localdelivery import deliver_local
from ..logs import Log
from ..store.api import StorageFull
from ..store.blobview import BlobView, pieces_from_loop
from . import tlsrpt
from .api import OutboundMessage, OutboundRecipient
from .daily import DailyJob, lease_holder
from .delivery import (
    CHUNK,
    DeliveryError,
    DestinationSession,
    Envelope,
    FileMessage,
    Outcome,
    StoredMessage,
    Timeouts,
)
from .dsn import HEADERS_ONLY_LIMIT, DSNRecipient, build_dsn, original_of, read_original, wants_dsn
from .mx import Backoff, Hop, RouteError, Router
from .store import Entry, QueueStore, queue_store

STREAM_MIN = 1024 * 1024
"""A message not in a file (PostgreSQL) larger than this is sent a piece at a time."""

CLAIM_BATCH = 500


class QueueRunner:
    def __init__(self, ctx: Any, queue: QueueStore | None = None, router: Router | None = None,
                 timeouts: Timeouts | None = None) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.config = ctx.config.queue
        self.hostname = ctx.config.hostname
        self.sieve = ctx.config.sieve
        self.queue = queue or queue_store(ctx.store)
        self.router = router or Router(ctx.config, store=ctx.store)
        self.timeouts = timeouts or Timeouts()
        self.backoff = Backoff(base=min(60.0, self.config.retry[0] if self.config.retry else 60.0))
        self.log = Log("queue")
        self.owner = lease_holder()
        self._wake = asyncio.Event()
        self._closing = False
        self._slots = asyncio.Semaphore(max(1, self.config.concurrency))
        self._per_domain: dict[str, int] = defaultdict(int)
        self._workers: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._signer: Any = None
        self._tls_reports = DailyJob(ctx.store, "tlsrpt", self.owner, self._send_tls_reports)
        """Once a UTC day has ended, one node (the lease holder) sends its TLS reports."""

    # -- the Outbound protocol -----------------------------------------------------------
    async def enqueue(self, message: OutboundMessage) -> list[int]:
        ids = await self.queue.enqueue(message)
        self.log.info("queued", ids=ids, sender=message.mail_from, recipients=len(message.recipients))
        self._wake.set()
        return ids

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.queue.open()
        self._signer = _load_signer(self.ctx)
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=5)
            for task in pending:
                task.cancel()
        with contextlib.suppress(Exception):
            await self.queue.release_leases(self.owner)

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self.run_once()
            except StorageFull as e:                 # claiming writes leases: retried next poll
                self.log.warning("queue pass skipped", reason=str(e))
            except Exception:  # noqa: BLE001 - the runner must outlive one bad pass
                self.log.error("queue pass failed", exc=True)
            try:
                await self._tls_reports.run_if_due()
            except StorageFull as e:
                self.log.warning("daily reports skipped", reason=str(e))
            except Exception:  # noqa: BLE001 - reports must not stop deliveries
                self.log.error("TLS reports failed", exc=True)
            if self._closing:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll)

    async def _send_tls_reports(self, now: float) -> None:
        await tlsrpt.send_reports(self.store, self.router.resolver, hostname=self.hostname,
                                  before_day=tlsrpt.today(now))

    async def run_once(self) -> int:
        """Claim what is due and start its deliveries; returns the number of entries claimed."""
        now = time.time()
        entries = await self.queue.claim(self.owner, now=now, lease=self.config.lease, limit=CLAIM_BATCH)
        # Entries with an RFC 8689 TLS policy travel on connections of their own.
        by_domain: dict[tuple[str, str], dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
        for e in entries:
            by_domain[e.domain, e.tls_policy][e.msg].append(e)
        for (domain, policy), messages in by_domain.items():
            groups = list(messages.values())
            free = max(1, self.config.per_domain - self._per_domain[domain])
            connections = min(free, len(groups))
            for i in range(connections):
                share = groups[i::connections]
                self._per_domain[domain] += 1
                task = asyncio.create_task(self._deliver_domain(domain, share, policy))
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)
        return len(entries)

    async def drain(self, timeout: float = 30.0) -> None:
        """Tests and benchmarks: run passes until nothing is due or in flight."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            claimed = await self.run_once()
            if self._workers:
                await asyncio.wait(self._workers, timeout=max(0.0, deadline - time.monotonic()))
            elif not claimed:
                return

    # -- one destination ------------------------------------------------------------------
    async def _deliver_domain(self, domain: str, groups: list[list[Entry]], policy: str = "") -> None:
        try:
            async with self._slots:
                await self._deliver_groups(domain, groups, policy)
        except Exception:  # noqa: BLE001 - outcomes must still be recorded
            self.log.error("delivery failed", domain=domain, exc=True)
            for group in groups:
                for entry in group:
                    with contextlib.suppress(Exception):
                        await self._record(entry, Outcome(code=0, enhanced="4.3.0", text="internal error"))
        finally:
            self._per_domain[domain] -= 1
            if self._per_domain[domain] <= 0:
                del self._per_domain[domain]

    async def _deliver_groups(self, domain: str, groups: list[list[Entry]], policy: str = "") -> None:
        try:
            hops = with_tls_policy(await self.router.find_route(domain), policy)
        except RouteError as exc:
            if exc.tls is not None:
                await tlsrpt.count_route_failure(self.store, domain, exc.tls)
            outcome = Outcome(code=exc.code, enhanced=exc.enhanced, text=exc.text)
            for group in groups:
                for entry in group:
                    await self._record(entry, outcome)
            return
        try:
            session = await DestinationSession.open(hops, helo=self.hostname, timeouts=self.timeouts,
                                                    backoff=self.backoff)
        except DeliveryError as exc:
            failed = next((h for h in hops if h.name == exc.remote_mta), None)
            if exc.tls_result and failed is not None:
                await tlsrpt.count(self.store, failed, result=exc.tls_result, ip=exc.remote_ip, domain=domain)
            outcome = Outcome(code=exc.code if exc.code >= 400 else 0, enhanced=exc.enhanced or "4.4.1",
                              text=exc.text, remote_mta=exc.remote_mta)
            if policy == REQUIRETLS and exc.enhanced in ("4.7.5", "4.7.10"):
                # RFC 8689 4.2.1: no verified TLS to any host: returned, never sent in clear
                outcome = Outcome(code=550, enhanced="5.7.30", remote_mta=exc.remote_mta,
                                  text=f"REQUIRETLS support required: {exc.text}")
            elif outcome.permanent:                   # every host refused us: retry, never bounce
                outcome = Outcome(code=0, enhanced="4.4.1", text=exc.text, remote_mta=exc.remote_mta)
            for group in groups:
                for entry in group:
                    await self._record(entry, outcome)
            return
        await tlsrpt.count(self.store, session.hop, ip=session.remote_address, domain=domain)
        log = self.log.bind(domain=domain, host=session.remote_name, ip=session.remote_address, tls=session.tls)
        try:
            for index, group in enumerate(groups):
                first = group[0]
                message, prefix = await self._load(first.blob_id)
                envelope = Envelope(
                    mail_from=first.mail_from, envid=first.envid, ret=first.ret, body=first.body,
                    smtputf8=first.smtputf8, requiretls=policy == REQUIRETLS,
                    recipients=tuple(OutboundRecipient(address=e.rcpt, notify=e.notify, orcpt=e.orcpt)
                                     for e in group))
                try:
                    results = await session.send(envelope, message, prefix=prefix)
                except DeliveryError as exc:
                    lost = Outcome(code=0, enhanced="4.4.2", text=exc.text, remote_mta=session.remote_name)
                    for rest in groups[index:]:
                        for entry in rest:
                            await self._record(entry, lost)
                    return
                for entry, result in zip(group, results, strict=True):
                    log.info("attempt", id=entry.id, rcpt=entry.rcpt, reply=result.diagnostic())
                    await self._record(entry, result, peer_dsn=session.offers_dsn)
        finally:
            await session.close()

    async def _load(self, blob_id: str) -> tuple[bytes | FileMessage | StoredMessage, bytes]:
        """The message to send (its file when it has one, else the store's pieces of a
        large one, so it is never read whole) and its DKIM-Signature fields, computed a
        piece at a time off the loop."""
        path = self.store.blob_path(blob_id)
        if path is None:                                 # inline or in PostgreSQL
            size = await self.store.blob_size(blob_id)
            if size > STREAM_MIN:
                loop = asyncio.get_running_loop()

                def pieces() -> AsyncIterator[bytes]:
                    return self.store.blob_chunks(blob_id)  # type: ignore[no-any-return]

                return (StoredMessage(pieces=pieces, size=size),
                        await asyncio.to_thread(self._sign, lambda: pieces_from_loop(pieces(), loop)))
            raw = await self.store.read_blob(blob_id)
            return raw, await asyncio.to_thread(self._sign, lambda: iter((raw,)))
        size = (await asyncio.to_thread(os.stat, path)).st_size
        return FileMessage(path=path, size=size), await asyncio.to_thread(self._sign, lambda: _file_pieces(path))

    def _sign(self, pieces: Callable[[], Iterator[bytes]]) -> bytes:
        if self._signer is None:
            return b""
        try:
            return bytes(self._signer.sign_pieces(pieces()))
        except Exception:  # noqa: BLE001 - unsigned mail beats no mail
            self.log.error("DKIM signing failed", exc=True)
            return b""

    # -- outcomes ------------------------------------------------------------------------
    async def _record(self, entry: Entry, outcome: Outcome, *, peer_dsn: bool = False) -> None:
        now = time.time()
        recipient = OutboundRecipient(address=entry.rcpt, notify=entry.notify, orcpt=entry.orcpt)
        if outcome.delivered:
            await self.queue.finish(entry.id)
            self.log.info("delivered", id=entry.id, rcpt=entry.rcpt, reply=outcome.diagnostic())
            if not peer_dsn and wants_dsn(recipient, "relayed") and recipient.notify is not None:
                try:
                    await self._report(entry, "relayed", outcome, now)
                except StorageFull:
                    self.log.warning("disk full: relayed DSN not written", id=entry.id)
            return
        expired = now - entry.created >= self.config.expire
        if outcome.permanent or expired:
            if expired and not outcome.permanent:
                outcome = Outcome(code=outcome.code or 0, enhanced="4.4.7",
                                  text=f"delivery time expired; last error: {outcome.diagnostic()}",
                                  remote_mta=outcome.remote_mta)
            self.log.info("failed", id=entry.id, rcpt=entry.rcpt, reply=outcome.diagnostic())
            if wants_dsn(recipient, "failed"):
                # The bounce is written before the entry goes: on a full disk (StorageFull)
                # the entry stays and is retried once its lease ends, so no bounce is lost.
                await self._report(entry, "failed", outcome, now)
            await self.queue.finish(entry.id)
            return
        retry = self.config.retry or (300.0,)
        delay = retry[min(entry.attempts, len(retry) - 1)]
        warned = entry.warned
        if not warned and now - entry.created >= self.config.warn_after and wants_dsn(recipient, "delayed"):
            try:
                await self._report(entry, "delayed", outcome, now, until=entry.created + self.config.expire)
                warned = True
            except StorageFull:
                self.log.warning("disk full: delay DSN postponed", id=entry.id)
        await self.queue.defer(entry.id, next_attempt=now + delay, reply=outcome.diagnostic(), warned=warned)
        self.log.info("deferred", id=entry.id, rcpt=entry.rcpt, reply=outcome.diagnostic(), retry_in=delay)

    async def _report(self, entry: Entry, action: str, outcome: Outcome, now: float,
                      until: float | None = None) -> None:
        if not entry.mail_from:
            return                                       # never a report about a report
        status = outcome.status()
        if action == "failed" and status.startswith("2"):
            status = "5.0.0"              # (an expired entry keeps its 4.4.7, as Postfix reports it)
        if action == "delayed" and not status.startswith("4"):
            status = "4.0.0"
        if action == "relayed":
            status = "2.0.0"
        path = self.store.blob_path(entry.blob_id)
        size: int | None = None
        try:
            if path is not None:                             # a large original: its header only
                original, size = await asyncio.to_thread(read_original, path)
            elif (whole := await self.store.blob_size(entry.blob_id)) > HEADERS_ONLY_LIMIT:
                view = BlobView(self.store.read_blob_range, entry.blob_id, whole)   # PostgreSQL: by ranges
                original, size = await asyncio.to_thread(original_of, view)
            else:
                original = await self.store.read_blob(entry.blob_id)
        except Exception:  # noqa: BLE001
            original = b""
        report = build_dsn(
            reporting_mta=self.hostname, original=original, envelope_from=entry.mail_from, envid=entry.envid,
            ret=entry.ret, arrival=entry.created, now=now, original_size=size,
            recipients=[DSNRecipient(address=entry.rcpt, orcpt=entry.orcpt, action=action, status=status,
                                     remote_mta=outcome.remote_mta,
                                     diagnostic=outcome.diagnostic() if outcome.code else None,
                                     last_attempt=now, will_retry_until=until)])
        blob = await self.store.put_blob(report)
        resolution = await self.store.resolve(entry.mail_from)
        if resolution.local_domain:
            if resolution.account_ids:
                await deliver_local(self.store, blob, {entry.mail_from: list(resolution.account_ids)}, mail_from="",
                                    sieve=self.sieve)
            else:
                self.log.warning("DSN to an unknown local sender dropped", sender=entry.mail_from)
        else:
            await self.enqueue(OutboundMessage(blob=blob, mail_from="", recipients=(
                OutboundRecipient(address=entry.mail_from, notify=frozenset({"NEVER"})),)))
        self.log.info("dsn", id=entry.id, action=action, to=entry.mail_from)


REQUIRETLS = "requiretls"
TLS_OPTIONAL = "optional"


def with_tls_policy(hops: list[Hop], policy: str) -> list[Hop]:
    """RFC 8689: REQUIRETLS makes every hop verified TLS (4.2.1); ``TLS-Required: No`` lets
    no TLS requirement of ours stop delivery, TLS still being tried when offered (4.2.2)."""
    if policy == REQUIRETLS:                      # DANE-authenticated TLS is verified TLS too
        return [replace(h, tls="required") if h.tls not in ("implicit", "dane") else h for h in hops]
    if policy == TLS_OPTIONAL:                    # 4.2.2: MTA-STS and DANE are set aside as well
        return [replace(h, tls="opportunistic") if h.tls in ("required", "dane") else h for h in hops]
    return hops


def _file_pieces(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(CHUNK):
            yield piece


def _load_signer(ctx: Any) -> Any:
    try:
        from .dkim import Signer
    except ImportError:
        return None
    try:
        return Signer.load(ctx.config.data_dir, ctx.config)
    except Exception:  # noqa: BLE001 - a broken key must not stop mail
        Log("queue").error("DKIM keys could not be loaded", exc=True)
        return None


async def start_service(ctx: Any) -> QueueRunner:
    runner = QueueRunner(ctx)
    await runner.start()
    ctx.outbound = runner
    return runner

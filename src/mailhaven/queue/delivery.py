"""One outbound SMTP connection to one destination: the asyncio side of smtp/client.py.

:meth:`DestinationSession.open` tries the route's hosts in preference order and each
host's addresses in turn, reads the greeting, says EHLO (HELO when refused), upgrades with
STARTTLS when offered (opportunistic: a peer's certificate is not checked, as RFC 7435
allows; ``required``: no TLS, no delivery, and the certificate must verify), and
authenticates to a smarthost. :meth:`send` then runs one mail transaction per message
over the same connection (RSET between), and :meth:`close` says QUIT.

What the client may send depends on what the peer offers (RFC 5321 and extensions):
SIZE is declared when offered and a message over the peer's limit is refused locally
(552 5.3.4); DSN parameters (RFC 3461) travel only to a peer offering DSN; a message
that needs SMTPUTF8 is refused (550 5.6.7, RFC 6531 3.4) for a peer without it; an
8-bit body is labelled BODY=8BITMIME where offered (RFC 6152) and sent as it is
otherwise, as Postfix does (RFC 6152 has no downgrade that keeps signatures intact).

A message stored as a file (:class:`FileMessage`) is sent from it :data:`CHUNK` bytes at
a time, dot-stuffed piece by piece, each piece written and drained before the next is
read: the process never holds the message, whatever its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import BinaryIO

from ..smtp.client import (
    Answered,
    ClientConnection,
    ClientState,
    Closed,
    EhloDone,
    Event,
    Greeting,
    SendBody,
    TransactionDone,
)
from ..smtp.codes import REQUIRETLS_UNSUPPORTED, Reply
from ..smtp.grammar import xtext_encode
from ..smtp.replies import ReplyError, _NeedData
from ..store.api import NotFound
from ..tls import client_context
from . import dane
from .api import OutboundRecipient
from .mx import Backoff, Hop

CHUNK = 256 * 1024
"""How much of a message file is read, stuffed and written at a time."""


@dataclass(frozen=True, kw_only=True)
class FileMessage:
    """A message to send from its blob file rather than from memory."""

    path: str
    size: int


@dataclass(frozen=True, kw_only=True)
class StoredMessage:
    """A message to send from the store a piece at a time (PostgreSQL's chunk rows)."""

    pieces: Callable[[], AsyncIterator[bytes]]
    """A fresh iterator over the message's bytes for each transaction."""
    size: int


@dataclass(frozen=True, kw_only=True)
class Envelope:
    mail_from: str
    recipients: tuple[OutboundRecipient, ...]
    envid: str | None = None
    ret: str | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    requiretls: bool = False
    """RFC 8689: only over verified TLS to a peer offering REQUIRETLS, which is passed on."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What happened to a recipient: an SMTP reply, or ``code`` 0 when none came."""

    code: int
    enhanced: str | None
    text: str
    remote_mta: str | None = None

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def diagnostic(self) -> str:
        if not self.code:
            return self.text
        enhanced = f"{self.enhanced} " if self.enhanced else ""
        return " ".join(f"{self.code} {enhanced}{self.text}".split())

    def status(self) -> str:
        """The RFC 3463 status for a DSN."""
        if self.enhanced:
            return self.enhanced
        if self.delivered:
            return "2.0.0"
        return "5.0.0" if self.permanent else "4.0.0"


@dataclass(frozen=True, kw_only=True)
class RecipientResult(Outcome):
    address: str


class DeliveryError(Exception):
    """The destination as a whole failed: nothing was delivered over this connection."""

    def __init__(self, text: str, *, permanent: bool = False, code: int = 0,
                 enhanced: str | None = None, remote_mta: str | None = None, tls_result: str = "",
                 remote_ip: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.permanent = permanent
        self.code = code
        self.enhanced = enhanced
        self.remote_mta = remote_mta
        self.tls_result = tls_result
        """RFC 8460 4.3 result type when TLS is what failed (for TLS reports)."""
        self.remote_ip = remote_ip


def tls_result_of(exc: BaseException) -> str:
    """The RFC 8460 4.3 result type of a failed TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == 62:                    # X509_V_ERR_HOSTNAME_MISMATCH
            return "certificate-host-mismatch"
        if exc.verify_code == 10:                    # X509_V_ERR_CERT_HAS_EXPIRED
            return "certificate-expired"
        return "certificate-not-trusted"
    return "validation-failure"


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """RFC 5321 4.5.3.2: initial 5 min, MAIL 5 min, RCPT 5 min, DATA 2 min, data block 3 min,
    final dot 10 min. One connect timeout on top."""

    connect: float = 30.0
    command: float = 300.0
    final: float = 600.0


def _needs_smtputf8(envelope: Envelope) -> bool:
    return envelope.smtputf8 or not envelope.mail_from.isascii() or any(
        not r.address.isascii() for r in envelope.recipients)


def _reply_of(event: Event) -> Reply | None:
    return getattr(event, "reply", None)


class DestinationSession:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: ClientConnection,
                 hop: Hop, address: str, timeouts: Timeouts) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self.hop = hop
        self.remote_name = hop.name
        self.remote_address = address
        self.timeouts = timeouts
        self.tls = False
        self.verified = False
        """TLS with the certificate checked against the host name (RFC 8689 4.2.1)."""
        self.messages = 0

    @property
    def offers_dsn(self) -> bool:
        """The peer takes RFC 3461 parameters (and so reports success itself)."""
        return self._conn.ehlo is not None and self._conn.ehlo.has("DSN")

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    async def open(cls, hops: list[Hop], *, helo: str, timeouts: Timeouts | None = None,
                   backoff: Backoff | None = None, log: object | None = None) -> DestinationSession:
        timeouts = timeouts or Timeouts()
        last: DeliveryError | None = None
        for hop in hops:
            for address in hop.addresses:
                key = f"{address}:{hop.port}"
                if backoff is not None and not backoff.ready(key):
                    last = last or DeliveryError(f"{hop.name}[{address}] recently failed; not retried yet")
                    continue
                try:
                    session = await cls._connect(hop, address, helo, timeouts)
                except DeliveryError as exc:
                    if backoff is not None and not exc.code:
                        backoff.failed(key)       # unreachable, not merely unwilling
                    last = exc                    # RFC 5321 5.1: go on to the next host
                    continue
                if backoff is not None:
                    backoff.ok(key)
                return session
        raise last or DeliveryError("no host to connect to")

    @classmethod
    async def _connect(cls, hop: Hop, address: str, helo: str, timeouts: Timeouts) -> DestinationSession:
        where = f"{hop.name}[{address}]:{hop.port}"
        implicit = hop.tls == "implicit"
        context = client_context(verify=True, cafile=hop.cafile) if implicit else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, hop.port, ssl=context,
                                        server_hostname=hop.name if implicit else None),
                timeouts.connect)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise DeliveryError(f"connect to {where} failed: {exc or type(exc).__name__}",
                                remote_mta=hop.name) from None
        session = cls(reader, writer, ClientConnection(), hop, address, timeouts)
        session.tls = session.verified = implicit
        try:
            await session._handshake(helo)
        except BaseException:
            session.abort()
            raise
        return session

    async def _handshake(self, helo: str) -> None:
        greeting = await self._expect((Greeting, Closed))
        if isinstance(greeting, Closed):
            raise self._failed("greeting", greeting.reply)
        await self._ehlo(helo)
        ehlo = self._conn.ehlo
        assert ehlo is not None
        if not self.tls and self.hop.tls in ("opportunistic", "required", "dane") and ehlo.has("STARTTLS"):
            self._conn.send_starttls()
            answer = await self._expect((Answered, Closed))
            if isinstance(answer, Answered) and answer.reply.code == 220:
                verify = self.hop.tls == "required"
                why = f" (required by {self.hop.policy})" if self.hop.policy else ""
                try:
                    # DANE checks the certificate against TLSA itself, after the handshake;
                    # SNI is the MX name either way (RFC 7672 8.1).
                    await asyncio.wait_for(self._writer.start_tls(
                        client_context(verify=verify, cafile=self.hop.cafile),
                        server_hostname=self.hop.name if verify or self.hop.tls == "dane" else None),
                        self.timeouts.command)
                except (OSError, TimeoutError, ssl.SSLError) as exc:
                    raise DeliveryError(f"TLS with {self.hop.name} failed{why}: {exc}",  # X.7.5: cryptographic
                                        enhanced="4.7.5", remote_mta=self.hop.name, remote_ip=self.remote_address,
                                        tls_result=tls_result_of(exc)) from None
                if self.hop.tls == "dane":
                    problem = dane.verify(self.hop.tlsa, dane.presented_chain(
                        self._writer.get_extra_info("ssl_object")), (self.hop.name,))
                    if problem is not None:           # RFC 7672 2.2: never deliver unauthenticated
                        raise DeliveryError(f"TLS with {self.hop.name} failed{why}: {problem}",
                                            code=0, enhanced="4.7.5", remote_mta=self.hop.name,
                                            remote_ip=self.remote_address, tls_result="validation-failure")
                self.tls = True
                # DANE-authenticated TLS counts as verified (REQUIRETLS, RFC 8689 4.2.1).
                self.verified = verify or (self.hop.tls == "dane" and any(r.usable for r in self.hop.tlsa))
                self._conn.tls_started()
                await self._ehlo(helo)
            elif isinstance(answer, Closed):
                raise self._failed("STARTTLS", answer.reply)
        if self.hop.tls in ("required", "dane") and not self.tls:
            why = f" by {self.hop.policy}" if self.hop.policy else ""
            raise DeliveryError(f"{self.hop.name} offers no STARTTLS and TLS is required{why}", code=530,
                                enhanced="4.7.10", remote_mta=self.hop.name, remote_ip=self.remote_address,
                                tls_result="starttls-not-supported")
        if self.hop.auth is not None:
            user, password = self.hop.auth
            if "PLAIN" not in (self._conn.ehlo.auth_mechanisms() if self._conn.ehlo else ()):
                raise DeliveryError(f"{self.hop.name} offers no AUTH PLAIN", remote_mta=self.hop.name)
            self._conn.send_auth_plain(user, password)
            answer = await self._expect((Answered, Closed))
            if not isinstance(answer, Answered) or answer.reply.code != 235:
                raise self._failed("AUTH", _reply_of(answer))

    async def _ehlo(self, helo: str) -> None:
        self._conn.send_ehlo(helo)
        done = await self._expect((EhloDone, Closed))
        if isinstance(done, EhloDone) and done.reply.code == 250:
            return
        if isinstance(done, EhloDone) and done.reply.code >= 500:
            self._conn.send_helo(helo)                 # RFC 5321 4.1.4: fall back to HELO
            done = await self._expect((EhloDone, Closed))
            if isinstance(done, EhloDone) and done.reply.code == 250:
                return
        raise self._failed("EHLO", _reply_of(done))

    # -- sending -----------------------------------------------------------------------------
    async def send(self, envelope: Envelope, message: bytes | FileMessage | StoredMessage, *,
                   prefix: bytes = b"") -> list[RecipientResult]:
        """One transaction; a result per recipient. Raises DeliveryError when the connection
        is lost (results then unknown: the caller retries them all). ``prefix`` (the
        DKIM-Signature fields) goes in front of the message."""
        if self._conn.state is not ClientState.READY:
            raise DeliveryError("connection is not ready", remote_mta=self.remote_name)
        ehlo = self._conn.ehlo
        assert ehlo is not None
        size = len(prefix) + (len(message) if isinstance(message, bytes) else message.size)
        refuse = None
        if _needs_smtputf8(envelope) and not ehlo.has("SMTPUTF8"):
            refuse = Reply(code=550, enhanced="5.6.7", text=f"{self.remote_name} does not support SMTPUTF8")
        limit = ehlo.size_limit()
        if envelope.requiretls and not (self.verified and ehlo.has("REQUIRETLS")):
            refuse = REQUIRETLS_UNSUPPORTED.with_text(                # RFC 8689 4.2.1
                f"REQUIRETLS support required: {self.remote_name} does not offer it over verified TLS")
        if limit is not None and size > limit:
            refuse = Reply(code=552, enhanced="5.3.4", text=f"message size exceeds {self.remote_name}'s limit {limit}")
        if refuse is not None:
            return [self._result(r.address, refuse) for r in envelope.recipients]
        params: list[str] = []
        if ehlo.has("SIZE"):
            params.append(f"SIZE={size}")
        if envelope.body != "7BIT" and ehlo.has("8BITMIME"):
            params.append("BODY=8BITMIME" if envelope.body != "BINARYMIME" or not ehlo.has("BINARYMIME")
                          else "BODY=8BITMIME")
        if _needs_smtputf8(envelope):
            params.append("SMTPUTF8")
        if envelope.requiretls:
            params.append("REQUIRETLS")                               # RFC 8689 4.2.1
        dsn = ehlo.has("DSN")
        if dsn and envelope.ret:
            params.append(f"RET={envelope.ret}")
        if dsn and envelope.envid:
            params.append(f"ENVID={xtext_encode(envelope.envid)}")
        rcpts = []
        for r in envelope.recipients:
            rp: list[str] = []
            if dsn and r.notify:
                rp.append("NOTIFY=" + ",".join(sorted(r.notify)))
            if dsn and r.orcpt:
                kind, _, addr = r.orcpt.partition(";")
                rp.append(f"ORCPT={kind or 'rfc822'};{xtext_encode(addr)}")
            rcpts.append((r.address, rp))
        self._conn.begin_transaction(envelope.mail_from, params, rcpts)
        event = await self._expect((SendBody, TransactionDone, Closed))
        if isinstance(event, SendBody):
            if isinstance(message, FileMessage):
                await self._send_file(prefix, message)
            elif isinstance(message, StoredMessage):
                await self._send_pieces(prefix, message.pieces())
            else:
                self._conn.send_body(prefix + message)
            event = await self._expect((TransactionDone, Closed), final=True)
        if isinstance(event, Closed):
            raise self._failed("transaction", event.reply)
        assert isinstance(event, TransactionDone)
        self.messages += 1
        results = [self._result(r.address, event.reply_for(r.address)) for r in envelope.recipients]
        if event.data is None or event.data.code >= 300:
            self._conn.send_rset()                  # leave the session clean for the next message
            await self._expect((Answered, Closed))
        return results

    async def _send_file(self, prefix: bytes, message: FileMessage) -> None:
        """The body from its file, a piece at a time; each piece is drained before the
        next is read (RFC 5321 4.5.3.2.5: 3 minutes per data block)."""
        self._conn.send_body_part(prefix)
        try:
            f: BinaryIO = await asyncio.to_thread(open, message.path, "rb")
        except OSError as exc:
            raise DeliveryError(f"message file unreadable: {exc}", remote_mta=self.remote_name) from None
        try:
            while True:
                piece = await asyncio.to_thread(f.read, CHUNK)
                if not piece:
                    break
                self._conn.send_body_part(piece)
                self._writer.write(self._conn.data_to_send())
                await asyncio.wait_for(self._writer.drain(), self.timeouts.command)
        except (OSError, TimeoutError) as exc:
            raise DeliveryError(f"connection to {self.remote_name} lost: {exc or type(exc).__name__}",
                                remote_mta=self.remote_name) from None
        finally:
            f.close()
        self._conn.end_body()

    async def _send_pieces(self, prefix: bytes, pieces: AsyncIterator[bytes]) -> None:
        """The body as the store streams it, each piece drained before the next is read."""
        self._conn.send_body_part(prefix)
        try:
            async for piece in pieces:
                self._conn.send_body_part(piece)
                self._writer.write(self._conn.data_to_send())
                await asyncio.wait_for(self._writer.drain(), self.timeouts.command)
        except NotFound as exc:                          # (before OSError: it may be both)
            raise DeliveryError(f"message unreadable: {exc}", remote_mta=self.remote_name) from None
        except (OSError, TimeoutError) as exc:
            raise DeliveryError(f"connection to {self.remote_name} lost: {exc or type(exc).__name__}",
                                remote_mta=self.remote_name) from None
        self._conn.end_body()

    def _result(self, address: str, reply: Reply) -> RecipientResult:
        return RecipientResult(address=address, code=reply.code, enhanced=reply.enhanced, text=reply.text,
                               remote_mta=self.remote_name)

    async def close(self) -> None:
        if self._conn.state not in (ClientState.CLOSED,) and self._conn.idle:
            with contextlib.suppress(Exception):
                self._conn.send_quit()
                await asyncio.wait_for(self._expect((Closed, Answered)), 10)
        self.abort()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()

    # -- plumbing -----------------------------------------------------------------------------
    async def _expect(self, kinds: tuple[type, ...], final: bool = False) -> Event:
        timeout = self.timeouts.final if final else self.timeouts.command
        while True:
            try:
                event = self._conn.next_event()
                out = self._conn.data_to_send()      # commands queued, or written by the core itself
                if out:
                    self._writer.write(out)
                    await asyncio.wait_for(self._writer.drain(), timeout)
                if isinstance(event, _NeedData):
                    data = await asyncio.wait_for(self._reader.read(65536), timeout)
                    if not data:
                        raise DeliveryError(f"{self.remote_name} closed the connection", remote_mta=self.remote_name)
                    self._conn.receive_data(data)
                    continue
            except ReplyError as exc:
                raise DeliveryError(f"{self.remote_name} broke the protocol: {exc}",
                                    remote_mta=self.remote_name) from None
            except (OSError, TimeoutError) as exc:
                raise DeliveryError(f"connection to {self.remote_name} lost: {exc or type(exc).__name__}",
                                    remote_mta=self.remote_name) from None
            if isinstance(event, kinds):
                return event
            if isinstance(event, Closed):
                raise self._failed("session", event.reply)

    def _failed(self, stage: str, reply: Reply | None) -> DeliveryError:
        if reply is None:
            return DeliveryError(f"{self.remote_name} closed the session at {stage}", remote_mta=self.remote_name)
        return DeliveryError(f"{self.remote_name} refused {stage}: {reply.code} {reply.text}",
                             permanent=reply.code >= 500, code=reply.code, enhanced=reply.enhanced,
                             remote_mta=self.remote_name)

"""The IMAP session core: states, command dispatch, untagged updates. No I/O here.

The asyncio adapter (:mod:`mailhaven.imap.server`) feeds parser events to
:meth:`Session.handle_event` and writes :meth:`Session.take_output` to the socket. The
store, the clock, the sleep used for auth-failure delays and the output flush are
injected through :class:`SessionContext`.

Invariants:
- A command runs only in the states the table below allows (RFC 9051 section 3);
  anything else is BAD and counts as an error.
- Handlers raise ``No``/``Bad``/``Bye``; :meth:`Session.run_command` turns them into the
  tagged line once.
- Untagged EXISTS/EXPUNGE/FETCH about other sessions' changes are written only just
  before a tagged completion or while IDLE, and EXPUNGE never after FETCH, STORE or
  SEARCH by sequence number (RFC 9051 section 7.5.1).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..auth import sasl
from ..auth.throttle import LoginThrottle
from ..config import Config
from ..logs import Log
from ..store.api import Change, StorageFull, Store
from .parser import Command, CommandError, CommandReader, LiteralAnnounced
from .responses import Bad, Bye, No, Reply, flag_list, not_enough_space, sequence_set
from .selected import SelectedMailbox
from .spool import SPOOL_MIN, LiteralSpool


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class Mode(enum.Enum):
    COMMAND = "command"
    IDLE = "idle"
    SASL = "sasl"


ANY = frozenset(State) - {State.LOGOUT}
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})

Handler = Callable[["Session", Command], Awaitable[str | None]]
"""Returns the text of the tagged OK (``None``: the command completes later, e.g. IDLE)."""

PRE_AUTH_LITERAL = 8 * 1024
"""Largest literal accepted before login (usernames, passwords)."""

# Commands whose untagged EXPUNGE must wait (RFC 9051 section 7.5.1); the UID forms may have them.
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH", "COPY", "SORT", "THREAD"})


@dataclass(kw_only=True)
class SessionContext:
    store: Store
    config: Config
    log: Log
    peer: str = ""
    tls: bool = False
    """The connection is encrypted (implicit TLS or after STARTTLS)."""
    starttls: bool = True
    """STARTTLS can be offered (a TLS context exists and TLS is not on yet)."""
    hostname: str = "localhost"
    now: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] | None = None
    flush: Callable[[], Awaitable[None]] | None = None
    """Writes buffered output to the peer (large FETCH responses stream through it)."""
    throttle: LoginThrottle | None = None
    """The shared login throttle (auth/throttle.py); made from the store when not given."""
    offload: Callable[..., Awaitable[Any]] | None = None
    """Runs a blocking call (file reads of large messages) off the event loop: the adapter
    passes ``asyncio.to_thread``; without it the call runs in place."""
    spawn: Callable[[Coroutine[Any, Any, Any]], object] | None = None
    """Runs a coroutine in the background, beside the session's commands (the header
    cache's warm-up); without it such work is skipped."""


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
"""RFC 9051 2.3.2, in the order FLAGS lists them."""


@dataclass(frozen=True)
class CommandHooks:
    """What the session calls back into the command modules for (``commands.new_session``
    passes them, so the session imports no command module)."""

    run_updates: Callable[[Session], Awaitable[None]]
    """RFC 5267 updating searches: run again before the view changes."""
    tell_added: Callable[[Session], None]
    claim_recent: Callable[[Session, SelectedMailbox, int], Awaitable[None]]
    continue_authenticate: Callable[[Session, bytes], Awaitable[None]]
    answer_now: Callable[[Session, Command], str | None] = lambda s, cmd: None
    """A command answered without an await (the text of its tagged OK), or None having
    written nothing (see :meth:`Session.answer_now`)."""


async def _no_updates(s: Session) -> None:
    return None


async def _no_recent(s: Session, sel: SelectedMailbox, start: int) -> None:
    return None


async def _no_sasl(s: Session, line: bytes) -> None:
    return None


NO_HOOKS = CommandHooks(run_updates=_no_updates, tell_added=lambda s: None, claim_recent=_no_recent,
                        continue_authenticate=_no_sasl)


@dataclass
class Session:
    ctx: SessionContext
    reader: CommandReader
    state: State = State.NOT_AUTHENTICATED
    mode: Mode = Mode.COMMAND
    account_id: int | None = None
    username: str = ""
    selected: SelectedMailbox | None = None
    enabled: set[str] = field(default_factory=set)
    errors: int = 0
    auth_failures: int = 0
    out: bytearray = field(default_factory=bytearray)
    dirty: bool = False
    """A change for this account arrived; the selected view must catch up."""
    idle_tag: str = ""
    sasl: Any = None
    sasl_tag: str = ""
    starttls_pending: bool = False
    compress_pending: bool = False
    compressed: bool = False
    """RFC 4978 COMPRESS=DEFLATE: asked for (the adapter switches after the OK), then on."""
    closing: bool = False
    commands: Mapping[str, tuple[Handler, frozenset[State]]] = field(default_factory=dict)
    """The command table (imap/commands.py builds sessions with it: commands depend on the
    session, never the other way round)."""
    hooks: CommandHooks = NO_HOOKS
    spools: list[LiteralSpool] = field(default_factory=list)
    """Large APPEND literals of the command being read, written to blobs as they arrive."""

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` through the adapter's :attr:`SessionContext.offload`."""
        if self.ctx.offload is None:
            return fn(*args)
        return await self.ctx.offload(fn, *args)

    # -- output -------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.out += data

    def untagged(self, text: str | bytes) -> None:
        self.out += b"* " + (text.encode() if isinstance(text, str) else text) + b"\r\n"

    def take_output(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    async def maybe_flush(self, threshold: int = 256 * 1024) -> None:
        if len(self.out) >= threshold and self.ctx.flush is not None:
            await self.ctx.flush()

    # -- properties used by handlers ------------------------------------------------
    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def secure(self) -> bool:
        """Plaintext passwords are acceptable: TLS, or a trusted peer (loopback by default)."""
        return self.ctx.tls or self.ctx.config.is_trusted(self.ctx.peer)

    @property
    def utf8(self) -> bool:
        """Mailbox names travel as UTF-8 (IMAP4rev2 or UTF8=ACCEPT enabled)."""
        return "IMAP4REV2" in self.enabled or "UTF8=ACCEPT" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 3.1). The first one issued with a mailbox
        selected is told its HIGHESTMODSEQ: "the server MUST return ... an untagged OK
        response with the HIGHESTMODSEQ response code" (RFC 7162 3.1)."""
        if self.condstore:
            return
        self.enabled.add("CONDSTORE")
        if self.selected is not None:
            self.untagged(f"OK [HIGHESTMODSEQ {max(self.selected.known_modseq, 1)}] Highest")

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def require_selected(self) -> SelectedMailbox:
        if self.selected is None:
            raise Bad("No mailbox selected")
        return self.selected

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.ctx.starttls and not self.ctx.tls:
                caps.append("STARTTLS")
            if self.secure:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
                if _scram_available():
                    caps.append("AUTH=SCRAM-SHA-256")
            else:
                caps.append("LOGINDISABLED")
            return caps
        limit = self.config.limits.message_size
        caps += [
            "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE",
            "LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "SEARCHRES", "CONDSTORE", "QRESYNC", "SORT", "ESORT",
            "CONTEXT=SEARCH", "CATENATE",
            "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "QUOTA", "QUOTA=RES-STORAGE",
            f"APPENDLIMIT={limit}", "MULTIAPPEND", "BINARY", "STATUS=SIZE", "WITHIN", "UTF8=ACCEPT",
            "COMPRESS=DEFLATE", "PREVIEW",
        ]
        return caps

    # -- events from the parser ------------------------------------------------------
    def greeting(self) -> bytes:
        caps = " ".join(self.capabilities())
        return f"* OK [CAPABILITY {caps}] {self.ctx.hostname} Mailhaven IMAP ready\r\n".encode()

    async def handle_event(self, event: Command | CommandError | LiteralAnnounced) -> None:
        if isinstance(event, LiteralAnnounced):
            self.literal_announced(event)
        elif isinstance(event, CommandError):
            self.command_error(event)
        else:
            await self.run_command(event)

    def answer_now(self, data: bytes) -> bool:
        """Answer ``data`` at once, without an await, when it is one whole command line
        that :attr:`CommandHooks.answer_now` can answer from memory (and, with SQLite, one
        small read): the FETCH of a message's header fields or flags that clients send for
        each new message. The same bytes :meth:`handle_event` would write, to
        :meth:`take_output`. False: nothing consumed or written; the bytes go through the
        reader as usual. Never while anything is owed to the client first (a change to
        announce, an EXPUNGE, new messages, updating searches). The adapter asks this as
        bytes arrive (net.connection.StreamProtocol)."""
        sel = self.selected
        if (sel is None or self.mode is not Mode.COMMAND or self.dirty or self.closing or self.out
                or self.starttls_pending or self.compress_pending or self.spools or sel.search_updates
                or sel.pending_expunge or sel.pending_flags or len(sel.uids) > sel.announced):
            return False
        cmd = self.reader.one_line_command(data)
        if cmd is None or self.state not in self.commands.get(cmd.name, (None, ()))[1]:
            return False
        text = self.hooks.answer_now(self, cmd)
        if text is None:
            return False
        self.out += f"{cmd.tag} OK {text}\r\n".encode()
        return True

    def literal_announced(self, ev: LiteralAnnounced) -> None:
        if self.state is State.NOT_AUTHENTICATED and ev.size > PRE_AUTH_LITERAL:
            self.reader.reject_literal()
            self._bad(ev.tag or "*", "Literal too big before authentication", code="TOOBIG")
            return
        if ev.name == "APPEND" and ev.size > self.config.limits.message_size:
            # RFC 7889 section 4: refuse before the client sends the message.
            self.reader.reject_literal()
            self.write(No("Message too big", code="TOOBIG").line(ev.tag or "*"))
            return
        if (ev.name == "APPEND" and ev.size > SPOOL_MIN
                and self.state is not State.NOT_AUTHENTICATED):
            # Straight to a blob as it arrives: the message is never held in memory. (A
            # literal8 too: its binary parts are then re-encoded as base64 from the file.)
            spool = LiteralSpool(self.store.blob_writer(), binary=ev.binary)
            self.spools.append(spool)
            self.reader.accept_literal(sink=spool)
        else:
            self.reader.accept_literal()
        if ev.synchronizing:
            self.write(b"+ Ready for literal data\r\n")

    def drop_spools(self) -> None:
        """Abort the spooled literals not taken by a finished APPEND (their temporary
        files go); called when a command ends and when the connection does."""
        spools, self.spools = self.spools, []
        for spool in spools:
            spool.abort()

    def command_error(self, ev: CommandError) -> None:
        self.drop_spools()
        self._bad(ev.tag or "*", ev.text, code=ev.code)
        if ev.fatal:
            self.bye("Protocol error")

    def _bad(self, tag: str, text: str, code: str | None = None) -> None:
        self.write(Bad(text, code=code).line(tag))
        self.errors += 1
        if self.errors >= self.config.limits.errors_per_session:
            self.bye("Too many errors")

    def bye(self, text: str) -> None:
        if not self.closing:
            self.untagged(f"BYE {text}")
        self.closing = True
        self.state = State.LOGOUT

    async def run_command(self, cmd: Command) -> None:
        if self.mode is not Mode.COMMAND:
            raise RuntimeError("command while not in command mode")
        entry = self.commands.get(cmd.name)
        uid_ok = cmd.name in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD")
        if entry is None or (cmd.uid and not uid_ok):
            self.drop_spools()
            self._bad(cmd.tag, "Unknown command")
            return
        handler, states = entry
        if self.state not in states:
            self.drop_spools()
            self._bad(cmd.tag, f"{cmd.name} not allowed in the {self.state.value} state")
            return
        try:
            try:
                text = await handler(self, cmd)
            finally:
                self.drop_spools()
        except Bye as exc:
            self.bye(exc.text)
            return
        except Bad as exc:
            self._bad(cmd.tag, exc.text, exc.code)
            return
        except No as exc:
            await self.announce(allow_expunge=cmd.uid or cmd.name not in _NO_EXPUNGE)
            self.write(exc.line(cmd.tag))
            return
        except Reply as exc:  # pragma: no cover - every Reply is one of the above
            self.write(exc.line(cmd.tag))
            return
        except StorageFull:
            self.ctx.log.warning("disk full", command=cmd.name)
            self.mode = Mode.COMMAND
            self.write(not_enough_space().line(cmd.tag))
            return
        except Exception:  # noqa: BLE001 - one failing command must not end the session
            self.ctx.log.error("command failed", exc=True, command=cmd.name)
            self.mode = Mode.COMMAND
            self.write(No("Internal error", code="SERVERBUG").line(cmd.tag))
            return
        if text is None:
            return
        if not self.closing:
            await self.announce(allow_expunge=cmd.uid or cmd.name not in _NO_EXPUNGE)
        self.write(f"{cmd.tag} OK {text}\r\n".encode())

    # -- change feed ----------------------------------------------------------------
    def note_change(self, change: Change) -> None:
        """Called by the adapter for every change of this account (any time)."""
        sel = self.selected
        if change.kind == "resync" or (sel is not None and change.mailbox_id == sel.id):
            self.dirty = True
            if sel is not None:
                sel.wanted_modseq = max(sel.wanted_modseq, change.modseq if change.kind != "resync" else 1 << 62)

    async def announce(self, *, allow_expunge: bool) -> None:
        """Catch the selected view up with the store and tell the client (RFC 9051 7.5.1)."""
        sel = self.selected
        if sel is None:
            return
        if self.dirty:
            self.dirty = False
            try:
                await sel.refresh(self.store, self.condstore)
            except Exception:  # noqa: BLE001 - the mailbox was deleted under us
                from ..store.api import NotFound
                try:
                    await self.store.get_mailbox_by_id(sel.id)
                except NotFound:
                    self.bye("Selected mailbox was deleted")
                    return
                raise
        if sel.search_updates:
            await self.hooks.run_updates(self)
        if allow_expunge and sel.pending_expunge:
            gone = sorted(sel.pending_expunge)
            numbers = sel.remove(gone)
            if self.qresync:
                self.untagged(f"VANISHED {sequence_set(gone)}")  # RFC 7162 3.2.10
            else:
                for number in numbers:
                    self.untagged(f"{number} EXPUNGE")
        if len(sel.uids) > sel.announced:
            await self.hooks.claim_recent(self, sel, sel.announced)
            self.untagged(f"{len(sel.uids)} EXISTS")
            if not self.rev2:
                self.untagged(f"{len(sel.recent)} RECENT")
            sel.announced = len(sel.uids)
        for uid in sorted(sel.pending_flags):
            n = sel.msn(uid)
            meta = sel.meta.get(uid)
            if n is None or meta is None:
                continue
            self.untagged(self.flags_fetch(n, uid, meta.flags, meta.modseq))
        sel.pending_flags.clear()
        if sel.search_updates:
            self.hooks.tell_added(self)

    def ensure_flags_known(self, flags: frozenset[str]) -> None:
        """RFC 9051 7.3.5: a keyword first seen in a message is announced in FLAGS before use."""
        sel = self.selected
        if sel is None:
            return
        new = {f for f in flags if not f.startswith("\\")} - sel.keywords
        if not new:
            return
        sel.keywords |= new
        self.write_flags(sel)

    def write_flags(self, sel: SelectedMailbox) -> None:
        flags = " ".join(list(SYSTEM_FLAGS) + sorted(sel.keywords))
        self.untagged(f"FLAGS ({flags})")
        if sel.readonly:
            self.untagged("OK [PERMANENTFLAGS ()] Read-only")
        else:
            self.untagged(f"OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted")

    def flags_fetch(self, n: int, uid: int, flags: frozenset[str], modseq: int) -> str:
        self.ensure_flags_known(flags)
        items = []
        if self.qresync or self.rev2 or self.condstore:
            items.append(f"UID {uid}")  # RFC 7162 3.2.4: QRESYNC wants the UID
        items.append(f"FLAGS {flag_list(self.shown_flags(uid, flags))}")
        if self.condstore:
            items.append(f"MODSEQ ({modseq})")
        return f"{n} FETCH ({' '.join(items)})"

    def shown_flags(self, uid: int, flags: frozenset[str]) -> frozenset[str]:
        """The flags as FETCH shows them: with \\Recent for IMAP4rev1 (RFC 9051 drops it)."""
        sel = self.selected
        if sel is not None and not self.rev2 and uid in sel.recent:
            return flags | {"\\Recent"}
        return flags

    # -- IDLE (RFC 2177) ------------------------------------------------------------------
    async def idle_update(self) -> None:
        if self.mode is Mode.IDLE:
            await self.announce(allow_expunge=True)

    async def handle_line(self, line: bytes | CommandError) -> None:
        """A line read outside a command: IDLE's DONE or a SASL response. An over-long one
        (MAX_LINE) ends the IDLE or the exchange with a tagged BAD; the session goes on."""
        if isinstance(line, CommandError):
            tag = self.idle_tag if self.mode is Mode.IDLE else self.sasl_tag
            self.mode = Mode.COMMAND
            self.sasl = None
            self._bad(tag, line.text)
        elif self.mode is Mode.IDLE:
            self.idle_line(line)
        else:
            await self.sasl_line(line)

    def idle_line(self, line: bytes) -> None:
        tag = self.idle_tag
        self.mode = Mode.COMMAND
        if line.strip().upper() == b"DONE":
            self.write(f"{tag} OK IDLE terminated\r\n".encode())
        else:
            self._bad(tag, "Expected DONE")

    # -- SASL continuation lines --------------------------------------------------------
    async def sasl_line(self, line: bytes) -> None:
        await self.hooks.continue_authenticate(self, line)

    # -- STARTTLS ---------------------------------------------------------------------
    def tls_started(self) -> None:
        self.starttls_pending = False
        self.ctx.tls = True
        self.ctx.starttls = False

    # -- login --------------------------------------------------------------------------
    async def login_succeeded(self, account_id: int, username: str) -> None:
        self.account_id = account_id
        self.username = username
        self.state = State.AUTHENTICATED
        self.ctx.log = self.ctx.log.bind(user=username)
        self.ctx.log.info("login")

    @property
    def throttle(self) -> LoginThrottle:
        if self.ctx.throttle is None:
            throttle = LoginThrottle(self.ctx.store, self.ctx.config.security)
            if self.ctx.sleep is not None:
                throttle.sleep = self.ctx.sleep
            self.ctx.throttle = throttle
        return self.ctx.throttle

    async def login_failed(self, username: str | None = None, blocked: bool = False) -> None:
        """After a failure the throttle has counted and delayed: raise Bye when the throttle
        blocked the peer now, or this connection has failed too often."""
        self.auth_failures += 1
        self.ctx.log.info("auth failed", user=username, failures=self.auth_failures)
        if blocked or self.auth_failures >= self.config.limits.auth_failures:
            raise Bye("Too many authentication failures")


def _scram_available() -> bool:
    return "SCRAM-SHA-256" in sasl.MECHANISMS

"""One ManageSieve session: answers the protocol's events against the store (RFC 5804).

Invariants:
- No asyncio, no socket: the store and the throttle are injected; server.py owns the
  connection and calls :meth:`Session.handle` for each event in order.
- Handlers raise :class:`~.replies.SieveReplyError`; :meth:`Session.handle` catches it once
  and writes the ``NO``/``BYE`` line. A malformed line costs one error; the session goes
  on until ``limits.errors_per_session``.
- PLAIN and LOGIN only over TLS or from a trusted peer (RFC 5804 2.1, as IMAP and POP3).
- A script is compiled before it is stored (PUTSCRIPT) and errors carry line and column;
  nothing that does not compile reaches the store, so delivery never meets a broken script.
- Quotas (``[sieve] max_scripts``, ``max_script_size``) are checked by HAVESPACE and
  PUTSCRIPT alike (RFC 5804 2.5, 2.6).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from ..auth.sasl import MECHANISMS, PLAINTEXT_MECHANISMS, server_mechanism
from ..auth.throttle import LoginBlocked, LoginThrottle
from ..config import Config
from ..logs import Log
from ..sieve.compiler import Command, Script, compile_script
from ..sieve.errors import SieveError
from ..sieve.scriptname import MAX_SCRIPT_NAME, valid_script_name
from ..sieve.spec import EXTENSIONS
from ..store.api import Account, AlreadyExists, NotFound, Store, StoreError
from . import protocol as P
from . import replies as R

IMPLEMENTATION = "Mailhaven"
MAX_NAME = MAX_SCRIPT_NAME
"""Characters in a script name (RFC 5804 1.6 leaves the limit to the server): sieve/scriptname.py."""
valid_name = valid_script_name
"""RFC 5804 1.6, the rule JMAP and include share (sieve/scriptname.py)."""


def sieve_capability() -> str:
    """The SIEVE capability: every extension the engine compiles (RFC 5804 1.7)."""
    return " ".join(sorted(e for e in EXTENSIONS if not e.startswith("comparator-")) +
                    sorted(e for e in EXTENSIONS if e.startswith("comparator-")))


@dataclass(kw_only=True)
class SessionContext:
    store: Store
    config: Config
    log: Log
    throttle: LoginThrottle
    """The shared login throttle: failure delays and blocks per address and address+account."""
    peer: str = ""
    tls: bool = False
    """The connection is encrypted (after STARTTLS)."""
    starttls_available: bool = True


class Session:
    def __init__(self, ctx: SessionContext, protocol: P.ManageSieveProtocol | None = None) -> None:
        self.ctx = ctx
        sieve = ctx.config.sieve
        # A literal may carry a whole script plus its quoting; more is refused unread.
        self.protocol = protocol or P.ManageSieveProtocol(max_line=ctx.config.limits.line_length,
                                                          max_literal=sieve.max_script_size)
        self.closing = False
        self.starttls_pending = False
        self.account: Account | None = None
        self._out: list[bytes] = []
        self._sasl: Any = None
        self._errors = 0
        self._auth_failures = 0

    # -- output --------------------------------------------------------------------------
    def greeting(self) -> bytes:
        """RFC 5804 1.7: the capabilities, then OK."""
        self._capabilities()
        self._reply(R.GREETING)
        return self.take_output()

    def take_output(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    def _reply(self, reply: R.Reply) -> None:
        self._out.append(reply.to_bytes())

    @property
    def state(self) -> P.State:
        return self.protocol.state

    # -- the loop's entry points -----------------------------------------------------------
    async def handle(self, event: P.Event) -> None:
        """Answer one event; every SieveReplyError ends here."""
        try:
            if isinstance(event, P.Malformed):
                reply = R.SCRIPT_TOO_BIG if event.too_big else R.MALFORMED.with_text(event.reason)
                raise R.SieveReplyError(reply)
            if isinstance(event, P.SaslResponse):
                await self._sasl_response(event)
                return
            if type(event) not in P.ALLOWED[self.state]:
                raise R.SieveReplyError(R.NOT_NOW)
            await _HANDLERS[type(event)](self, event)
        except R.SieveReplyError as exc:
            self._reply(exc.reply)
            if exc.reply.status == "BYE":
                await self.close()
                return
            self._errors += 1
            if self._errors >= self.ctx.config.limits.errors_per_session and not self.closing:
                self._reply(R.TOO_MANY_ERRORS)
                await self.close()
        except StoreError:
            self.ctx.log.error("store failed", exc=True, user=self._address())
            self._reply(R.STORE_FAILED)

    async def close(self) -> None:
        if self.state is not P.State.CLOSED:
            self.protocol.transition(P.Trigger.CLOSE)
        self.closing = True

    async def idle_timeout(self) -> None:
        self._reply(R.IDLE_TIMEOUT)
        await self.close()

    def tls_started(self) -> None:
        """RFC 5804 2.2: after the handshake the server re-issues its capabilities."""
        self.starttls_pending = False
        self.ctx.tls = True
        self.protocol.discard_buffer()
        self._capabilities()
        self._reply(R.OK)

    def _address(self) -> str:
        return self.account.address if self.account else ""

    # -- capabilities, STARTTLS, LOGOUT, NOOP ------------------------------------------------
    def _plaintext_allowed(self) -> bool:
        return self.ctx.tls or self.ctx.config.is_trusted(self.ctx.peer)

    def _mechanisms(self) -> list[str]:
        return [m for m in MECHANISMS if m not in PLAINTEXT_MECHANISMS or self._plaintext_allowed()]

    def _capabilities(self) -> None:
        sieve = self.ctx.config.sieve
        items: list[tuple[str, str | None]] = [
            ("IMPLEMENTATION", IMPLEMENTATION),                         # RFC 5804 1.7
            ("SIEVE", sieve_capability()),
        ]
        if self.state is not P.State.AUTH:
            items.append(("SASL", " ".join(self._mechanisms())))
        if not self.ctx.tls and self.ctx.starttls_available:
            items.append(("STARTTLS", None))
        items.append(("MAXREDIRECTS", str(sieve.max_redirects)))
        items.append(("NOTIFY", "mailto"))                              # RFC 5804 1.7, RFC 5435
        if self.account is not None:
            items.append(("OWNER", self.account.address))              # RFC 5804 1.7
        items += [("VERSION", "1.0"), ("UNAUTHENTICATE", None)]         # RFC 5804 1.7, 2.14.1
        for name, value in items:
            line = P.string(name)
            if value is not None:
                line += b" " + P.string(value)
            self._out.append(line + b"\r\n")

    async def _capability(self, cmd: P.Capability) -> None:
        self._capabilities()
        self._reply(R.OK)

    async def _starttls(self, cmd: P.StartTls) -> None:
        if self.ctx.tls:
            raise R.SieveReplyError(R.TLS_ACTIVE)
        if not self.ctx.starttls_available:
            raise R.SieveReplyError(R.TLS_UNAVAILABLE)
        self._reply(R.STARTTLS_GO)
        self.starttls_pending = True

    async def _logout(self, cmd: P.Logout) -> None:
        self._reply(R.LOGOUT)                                          # RFC 5804 2.3
        await self.close()

    async def _noop(self, cmd: P.Noop) -> None:
        reply = R.NOOP_DONE
        if cmd.tag is not None:                                        # RFC 5804 2.13
            reply = reply.with_code("TAG " + P.string(cmd.tag).decode("utf-8"))
        self._reply(reply)

    # -- AUTHENTICATE (RFC 5804 2.1), UNAUTHENTICATE (2.14.1) ------------------------------------
    async def _authenticate(self, cmd: P.Authenticate) -> None:
        if cmd.mechanism not in MECHANISMS:
            raise R.SieveReplyError(R.UNKNOWN_MECHANISM)
        if cmd.mechanism in PLAINTEXT_MECHANISMS and not self._plaintext_allowed():
            raise R.SieveReplyError(R.PLAINTEXT_REFUSED)
        try:
            await self.ctx.throttle.check(self.ctx.peer)
        except LoginBlocked:
            await self._blocked()
        self._sasl = server_mechanism(cmd.mechanism, self.ctx.store, throttle=self.ctx.throttle,
                                      peer=self.ctx.peer)
        self.protocol.transition(P.Trigger.SASL_STARTED)
        await self._sasl_step(cmd.initial_response or b"")

    async def _sasl_response(self, event: P.SaslResponse) -> None:
        if event.cancelled:
            self._end_sasl()
            raise R.SieveReplyError(R.AUTH_CANCELLED)                  # RFC 5804 2.1: "*"
        if event.malformed:
            await self._sasl_failed("response is not a base64 string")
        await self._sasl_step(event.data)

    async def _sasl_step(self, data: bytes) -> None:
        try:
            kind, challenge, account = await self._sasl.step(data)
        except LoginBlocked:
            self._end_sasl()
            await self._blocked()
        final = None
        if kind == "challenge" and self._sasl.mechanism.name == "SCRAM-SHA-256" and (challenge or b"").startswith(b"v="):
            # RFC 5804 2.1: data with success goes in OK (SASL ...), not in one more
            # challenge (SCRAM's server-final, RFC 5802 3; auth/sasl.py sends it as one).
            final = challenge or b""
            try:
                kind, challenge, account = await self._sasl.step(b"")
            except LoginBlocked:
                self._end_sasl()
                await self._blocked()
        if kind == "challenge":
            self._out.append(P.string(base64.b64encode(challenge or b"")) + b"\r\n")
            return
        if kind == "failure" or account is None:
            await self._sasl_failed(self._sasl.failure_reason or "failed")
        assert account is not None
        how = self._sasl.mechanism.name
        self._sasl = None
        self.account = account
        self.protocol.transition(P.Trigger.AUTHENTICATED)
        self.ctx.log.info("login", user=account.address, how=f"AUTHENTICATE {how}")
        reply = R.LOGGED_IN
        if final is not None:
            reply = reply.with_code("SASL " + P.string(base64.b64encode(final)).decode())
        self._reply(reply)

    def _end_sasl(self) -> None:
        if self.state is P.State.SASL:
            self.protocol.transition(P.Trigger.SASL_ENDED)

    async def _sasl_failed(self, reason: str) -> NoReturn:
        sasl = self._sasl
        self._sasl = None
        user = sasl.username if sasl is not None else None
        self._end_sasl()
        self.ctx.log.info("login failed", user=user or "", reason=reason)
        self._auth_failures += 1
        if (sasl is not None and sasl.blocked) or self._auth_failures >= max(1, self.ctx.config.limits.auth_failures):
            raise R.SieveReplyError(R.AUTH_FAILED_LAST)
        raise R.SieveReplyError(R.AUTH_FAILED)

    async def _blocked(self) -> NoReturn:
        """The shared throttle refuses this peer: the BYE below is the last line."""
        raise R.SieveReplyError(R.AUTH_BLOCKED)

    async def _unauthenticate(self, cmd: P.Unauthenticate) -> None:
        self.ctx.log.info("unauthenticate", user=self._address())
        self.account = None
        self.protocol.transition(P.Trigger.UNAUTHENTICATED)
        self._reply(R.UNAUTHENTICATED)

    # -- scripts (RFC 5804 2.5 - 2.12) -------------------------------------------------------------
    def _account_id(self) -> int:
        assert self.account is not None, "script command before AUTHENTICATE"
        return self.account.id

    def _check_name(self, name: str) -> None:
        if not valid_name(name):
            raise R.SieveReplyError(R.BAD_NAME)

    async def _check_space(self, name: str, size: int) -> None:
        sieve = self.ctx.config.sieve
        if size > sieve.max_script_size:
            raise R.SieveReplyError(R.SCRIPT_TOO_BIG.with_text(
                f"Script too large (at most {sieve.max_script_size} octets)"))
        names = {i.name for i in await self.ctx.store.list_sieve_scripts(self._account_id())}
        if name not in names and len(names) >= sieve.max_scripts:
            raise R.SieveReplyError(R.TOO_MANY_SCRIPTS.with_text(
                f"Too many scripts (at most {sieve.max_scripts})"))

    async def _warnings(self, script: Script, name: str | None) -> R.Reply | None:
        """RFC 5804 1.3 WARNINGS: includes of personal scripts that do not exist (yet); the
        message is kept at delivery until they do (RFC 6609 3.2)."""
        names = {i.name for i in await self.ctx.store.list_sieve_scripts(self._account_id())}
        missing = [(line, target) for line, target in _includes(script.commands)
                   if target not in names and target != name]
        if not missing:
            return None
        text = "; ".join(f"line {line}: included script {target!r} does not exist" for line, target in missing)
        return R.Reply(status="OK", code=R.WARNINGS, text=text)

    @staticmethod
    def _compile(content: bytes) -> str:
        """The script's text, or ``NO`` with the first error's line and column."""
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise R.SieveReplyError(R.NOT_UTF8) from None
        try:
            compile_script(content)
        except SieveError as e:
            raise R.SieveReplyError(R.Reply(
                status="NO", text=f"line {e.line}, column {e.column}: {e.message}")) from None
        return text

    async def _havespace(self, cmd: P.HaveSpace) -> None:
        self._check_name(cmd.name)
        await self._check_space(cmd.name, cmd.size)
        self._reply(R.HAVESPACE_OK)

    async def _putscript(self, cmd: P.PutScript) -> None:
        self._check_name(cmd.name)
        await self._check_space(cmd.name, len(cmd.content))
        text = self._compile(cmd.content)
        await self.ctx.store.put_sieve_script(self._account_id(), cmd.name, text)
        self.ctx.log.info("putscript", user=self._address(), script=cmd.name, size=len(cmd.content))
        self._reply(await self._warnings(compile_script(text), cmd.name) or R.PUT_DONE)

    async def _checkscript(self, cmd: P.CheckScript) -> None:
        if len(cmd.content) > self.ctx.config.sieve.max_script_size:
            raise R.SieveReplyError(R.SCRIPT_TOO_BIG)
        text = self._compile(cmd.content)
        self._reply(await self._warnings(compile_script(text), None) or R.CHECK_DONE)

    async def _listscripts(self, cmd: P.ListScripts) -> None:
        for info in await self.ctx.store.list_sieve_scripts(self._account_id()):
            self._out.append(P.string(info.name) + (b" ACTIVE" if info.active else b"") + b"\r\n")
        self._reply(R.LISTED)

    async def _setactive(self, cmd: P.SetActive) -> None:
        name = cmd.name or None                                        # RFC 5804 2.8: "" = none
        try:
            await self.ctx.store.activate_sieve_script(self._account_id(), name)
        except NotFound:
            raise R.SieveReplyError(R.NO_SUCH_SCRIPT) from None
        self._reply(R.ACTIVATED if name else R.DEACTIVATED)

    async def _getscript(self, cmd: P.GetScript) -> None:
        try:
            text = await self.ctx.store.get_sieve_script(self._account_id(), cmd.name)
        except NotFound:
            raise R.SieveReplyError(R.NO_SUCH_SCRIPT) from None
        data = text.encode("utf-8")
        self._out.append(b"{%d}\r\n" % len(data) + data + b"\r\n")    # RFC 5804 2.9: a literal
        self._reply(R.GOT)

    async def _deletescript(self, cmd: P.DeleteScript) -> None:
        account_id = self._account_id()
        active = await self.ctx.store.get_active_sieve_script(account_id)
        if active is not None and active[0] == cmd.name:
            raise R.SieveReplyError(R.ACTIVE_SCRIPT)                   # RFC 5804 2.10
        try:
            await self.ctx.store.delete_sieve_script(account_id, cmd.name)
        except NotFound:
            raise R.SieveReplyError(R.NO_SUCH_SCRIPT) from None
        self._reply(R.DELETED)

    async def _renamescript(self, cmd: P.RenameScript) -> None:
        self._check_name(cmd.new)
        try:
            await self.ctx.store.rename_sieve_script(self._account_id(), cmd.old, cmd.new)
        except NotFound:
            raise R.SieveReplyError(R.NO_SUCH_SCRIPT) from None
        except AlreadyExists:
            raise R.SieveReplyError(R.SCRIPT_EXISTS) from None
        self._reply(R.RENAMED)


def _includes(commands: tuple[Command, ...] | None) -> list[tuple[int, str]]:
    """(line, name) of every include of a personal script that is not :optional."""
    found: list[tuple[int, str]] = []
    for cmd in commands or ():
        if cmd.name == "include" and "optional" not in cmd.tags and "global" not in cmd.tags:
            found.append((cmd.line, cmd.args[0]))
        found += _includes(cmd.block)
    return found


_HANDLERS: dict[type[P.Command], Callable[[Session, Any], Awaitable[None]]] = {
    P.Capability: Session._capability, P.Authenticate: Session._authenticate,
    P.StartTls: Session._starttls, P.Logout: Session._logout, P.Noop: Session._noop,
    P.Unauthenticate: Session._unauthenticate, P.HaveSpace: Session._havespace,
    P.PutScript: Session._putscript, P.CheckScript: Session._checkscript,
    P.ListScripts: Session._listscripts, P.SetActive: Session._setactive,
    P.GetScript: Session._getscript, P.DeleteScript: Session._deletescript,
    P.RenameScript: Session._renamescript,
}

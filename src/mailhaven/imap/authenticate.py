"""LOGIN and AUTHENTICATE (RFC 9051 6.2.2, 6.2.3; SASL-IR RFC 4959).

The mechanisms (PLAIN, LOGIN, SCRAM-SHA-256) are the protocol-neutral ones of
:mod:`mailhaven.auth.sasl`; this module does IMAP's framing: base64, ``+`` continuations,
``*`` to cancel, ``=`` for an empty initial response. Mechanisms that send the password
itself, and SCRAM too, are refused on an unencrypted, untrusted connection
(LOGINDISABLED, PRIVACYREQUIRED).
"""

from __future__ import annotations

import base64
import binascii

from ..auth import sasl
from ..auth.throttle import LoginBlocked
from .grammar import Args
from .parser import Command
from .responses import AUTHENTICATIONFAILED, PRIVACYREQUIRED, Bad, Bye, No
from .session import Mode, Session

THROTTLED = "Too many authentication failures"
"""The shared throttle refuses this address: BYE, as after a connection's own failures."""


def scram_supported() -> bool:
    return "SCRAM-SHA-256" in sasl.MECHANISMS


async def cmd_login(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    user = args.text("user name")
    password = args.text("password")
    args.end()
    if not s.secure:
        raise No("Plaintext login is disabled without TLS", code=PRIVACYREQUIRED)
    try:
        account = await s.throttle.authenticate(s.ctx.peer, user, password)   # the shared throttle
    except LoginBlocked:
        raise Bye(THROTTLED) from None
    if account is None:
        await s.login_failed(user)
        raise No("Authentication failed", code=AUTHENTICATIONFAILED)
    await s.login_succeeded(account.id, account.address)
    return f"[CAPABILITY {' '.join(s.capabilities())}] Logged in"


async def cmd_authenticate(s: Session, cmd: Command) -> str | None:
    args = Args(cmd.args)
    mech = args.keyword("mechanism")
    initial: bytes | None = None
    if not args.at_end():
        ir = args.astring("initial response")   # RFC 4959 SASL-IR
        initial = b"" if ir == b"=" else _b64(ir)
    args.end()
    if mech not in sasl.MECHANISMS:
        raise No("Unsupported mechanism")
    if not s.secure:
        # The policy (like Dovecot's disable_plaintext_auth): no authentication at
        # all on an unencrypted connection from an untrusted peer, SCRAM included.
        raise No("Authentication is disabled without TLS", code=PRIVACYREQUIRED)
    try:
        await s.throttle.check(s.ctx.peer)
    except LoginBlocked:
        raise Bye(THROTTLED) from None
    s.sasl = sasl.server_mechanism(mech, s.store, throttle=s.throttle, peer=s.ctx.peer)
    s.sasl_tag = cmd.tag
    s.mode = Mode.SASL
    await _step(s, initial if initial is not None else b"")
    return None


async def continue_authenticate(s: Session, line: bytes) -> None:
    if line.strip() == b"*":
        _finish(s)
        s.write(Bad("Authentication cancelled").line(s.sasl_tag))  # RFC 9051 6.2.2
        return
    try:
        data = _b64(line.strip())
    except Bad as exc:
        _finish(s)
        s.write(exc.line(s.sasl_tag))
        return
    await _step(s, data)


async def _step(s: Session, data: bytes) -> None:
    tag = s.sasl_tag
    mechanism = s.sasl
    try:
        kind, payload, account = await mechanism.step(data)
    except LoginBlocked:
        _finish(s)
        s.bye(THROTTLED)
        return
    except Exception:  # noqa: BLE001 - a mechanism failure must not end the session
        s.ctx.log.error("sasl step failed", exc=True)
        kind, payload, account = "failure", None, None
    if kind == "challenge":
        s.write(b"+ " + base64.b64encode(payload or b"") + b"\r\n")
        return
    username = s.sasl.username
    _finish(s)
    if kind != "success" or account is None:
        try:
            await s.login_failed(username, blocked=mechanism.blocked)
        except Bye as exc:
            s.bye(exc.text)
            return
        s.write(No("Authentication failed", code=AUTHENTICATIONFAILED).line(tag))
        return
    await s.login_succeeded(account.id, account.address)
    s.write(f"{tag} OK [CAPABILITY {' '.join(s.capabilities())}] Authenticated\r\n".encode())


def _finish(s: Session) -> None:
    s.mode = Mode.COMMAND
    s.sasl = None


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Bad("Invalid base64") from None

"""LOGIN and AUTHENTICATE (RFC 9051 6.2.2, 6.2.3; SASL-IR RFC 4959).

Mechanisms come from :mod:`mailhaven.auth.sasl` when it is installed (PLAIN, LOGIN,
SCRAM-SHA-256, protocol-neutral); until then PLAIN and LOGIN are built in here. Plaintext
mechanisms are refused on an unencrypted, untrusted connection (LOGINDISABLED,
PRIVACYREQUIRED).
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from typing import TYPE_CHECKING, Any

from .grammar import Args
from .parser import Command
from .responses import AUTHENTICATIONFAILED, PRIVACYREQUIRED, Bad, No

if TYPE_CHECKING:
    from .session import Session


def _sasl_module() -> Any:
    try:
        if importlib.util.find_spec("mailhaven.auth.sasl") is None:
            return None
    except ModuleNotFoundError:
        return None
    import mailhaven.auth.sasl as sasl

    return sasl


def scram_supported() -> bool:
    sasl = _sasl_module()
    return sasl is not None and hasattr(sasl, "server_mechanism")


async def cmd_login(s: Session, cmd: Command) -> str:
    args = Args(cmd.args)
    user = args.text("user name")
    password = args.text("password")
    args.end()
    if not s.secure:
        raise No("Plaintext login is disabled without TLS", code=PRIVACYREQUIRED)
    account = await s.store.authenticate(user, password)
    if account is None:
        await s.login_failed()
        raise No("Authentication failed", code=AUTHENTICATIONFAILED)
    await s.login_succeeded(account.id, account.address)
    return f"[CAPABILITY {' '.join(s.capabilities())}] Logged in"


class _Plain:
    """RFC 4616 PLAIN: one message ``authzid NUL authcid NUL password``."""

    def __init__(self) -> None:
        self.done = False

    def step(self, data: bytes) -> tuple[str, bytes | None, tuple[str, str] | None]:
        parts = data.split(b"\x00")
        if len(parts) != 3:
            raise No("Malformed PLAIN response", code=AUTHENTICATIONFAILED)
        authz, user, password = (p.decode("utf-8", "replace") for p in parts)
        if authz and authz.lower() != user.lower():
            raise No("Authorization identity must match", code=AUTHENTICATIONFAILED)
        return "verify", None, (user, password)


class _Login:
    """The LOGIN mechanism (draft-murchison-sasl-login): user, then password."""

    def __init__(self) -> None:
        self.user: str | None = None

    def step(self, data: bytes) -> tuple[str, bytes | None, tuple[str, str] | None]:
        if self.user is None:
            if not data:
                return "challenge", b"Username:", None
            self.user = data.decode("utf-8", "replace")
            return "challenge", b"Password:", None
        return "verify", None, (self.user, data.decode("utf-8", "replace"))


async def cmd_authenticate(s: Session, cmd: Command) -> str | None:
    args = Args(cmd.args)
    mech = args.keyword("mechanism")
    initial: bytes | None = None
    if not args.at_end():
        ir = args.astring("initial response")   # RFC 4959 SASL-IR
        initial = b"" if ir == b"=" else _b64(ir)
    args.end()
    sasl = _sasl_module()
    mechanism: Any
    if mech in ("PLAIN", "LOGIN"):
        if not s.secure:
            raise No("Plaintext authentication is disabled without TLS", code=PRIVACYREQUIRED)
        mechanism = _Plain() if mech == "PLAIN" else _Login()
    elif mech == "SCRAM-SHA-256" and scram_supported() and s.secure:
        mechanism = _ExternalMechanism(sasl.server_mechanism(mech, s.store))
    else:
        raise No("Unsupported mechanism")
    s.sasl = mechanism
    s.sasl_tag = cmd.tag
    from .session import Mode

    s.mode = Mode.SASL
    if initial is None and mech != "LOGIN":
        s.write(b"+ \r\n")
        return None
    await _step(s, initial or b"")
    return None


class _ExternalMechanism:
    """Adapts a mechanism object from mailhaven.auth.sasl (async ``step(bytes)``)."""

    def __init__(self, mech: Any) -> None:
        self.mech = mech


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
    mech = s.sasl
    try:
        if isinstance(mech, _ExternalMechanism):
            result = await mech.mech.step(data)
            kind, payload, account = result
            if kind == "challenge":
                s.write(b"+ " + base64.b64encode(payload or b"") + b"\r\n")
                return
            _finish(s)
            if account is None:
                await s.login_failed()
                raise No("Authentication failed", code=AUTHENTICATIONFAILED)
            await s.login_succeeded(account.id, account.address)
            s.write(f"{tag} OK [CAPABILITY {' '.join(s.capabilities())}] Authenticated\r\n".encode())
            return
        kind, payload, creds = mech.step(data)
        if kind == "challenge":
            s.write(b"+ " + base64.b64encode(payload or b"") + b"\r\n")
            return
        _finish(s)
        assert creds is not None
        account = await s.store.authenticate(*creds)
        if account is None:
            await s.login_failed()
            raise No("Authentication failed", code=AUTHENTICATIONFAILED)
        await s.login_succeeded(account.id, account.address)
        s.write(f"{tag} OK [CAPABILITY {' '.join(s.capabilities())}] Authenticated\r\n".encode())
    except No as exc:
        _finish(s)
        s.write(exc.line(tag))
    except Exception as exc:  # noqa: BLE001 - a mechanism failure must not kill the session
        from .responses import Bye

        if isinstance(exc, Bye):
            _finish(s)
            s.bye(exc.text)
            return
        _finish(s)
        s.write(No("Authentication failed", code=AUTHENTICATIONFAILED).line(tag))


def _finish(s: Session) -> None:
    from .session import Mode

    s.mode = Mode.COMMAND
    s.sasl = None


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Bad("Invalid base64") from None

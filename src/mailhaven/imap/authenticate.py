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
    return True  # built in below; mailhaven.auth.sasl's mechanism is preferred when present


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
    elif mech == "SCRAM-SHA-256":
        if sasl is not None and hasattr(sasl, "server_mechanism"):
            mechanism = _ExternalMechanism(sasl.server_mechanism(mech, s.store))
        else:
            mechanism = _ExternalMechanism(_ScramSha256(s.store))
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


class _ScramSha256:
    """RFC 5802 / RFC 7677 SCRAM-SHA-256 against the store's SCRAM secrets (no channel binding).

    ``step`` returns ("challenge", data, None) or ("done", None, account or None).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.state = "first"
        self.user = ""
        self.nonce = ""
        self.first_bare = ""
        self.server_first = ""
        self.creds: Any = None
        self.server_final = b""
        self.account: Any = None

    async def step(self, data: bytes) -> tuple[str, bytes | None, Any]:
        import hashlib
        import hmac
        import secrets

        if self.state == "first":
            text = data.decode("utf-8", "replace")
            gs2, _, bare = text.partition(",")
            authz, _, bare = bare.partition(",")
            if gs2 not in ("n", "y"):
                return "done", None, None   # "p=...": channel binding is not offered
            attrs = dict(a.split("=", 1) for a in bare.split(",") if "=" in a)
            if "n" not in attrs or "r" not in attrs:
                return "done", None, None
            self.user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
            if authz and authz[2:].replace("=2C", ",").replace("=3D", "=").lower() != self.user.lower():
                return "done", None, None
            self.first_bare = bare
            self.nonce = attrs["r"] + secrets.token_urlsafe(18)
            self.creds = await self.store.get_scram(self.user)
            salt = self.creds.salt if self.creds else hashlib.sha256(b"mailhaven" + self.user.encode()).digest()[:16]
            iterations = self.creds.iterations if self.creds else 4096
            self.server_first = f"r={self.nonce},s={base64.b64encode(salt).decode()},i={iterations}"
            self.state = "final"
            return "challenge", self.server_first.encode(), None
        if self.state == "final":
            text = data.decode("utf-8", "replace")
            without_proof, _, proof_part = text.rpartition(",p=")
            attrs = dict(a.split("=", 1) for a in without_proof.split(",") if "=" in a)
            if not proof_part or attrs.get("r") != self.nonce or self.creds is None:
                return "done", None, None
            auth_message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
            try:
                proof = base64.b64decode(proof_part, validate=True)
            except (binascii.Error, ValueError):
                return "done", None, None
            signature = hmac.new(self.creds.stored_key, auth_message, "sha256").digest()
            if len(proof) != len(signature):
                return "done", None, None
            client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
            if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.creds.stored_key):
                return "done", None, None
            server_sig = hmac.new(self.creds.server_key, auth_message, "sha256").digest()
            self.account = await self.store.get_account(self.user)
            self.state = "ack"
            return "challenge", b"v=" + base64.b64encode(server_sig), None
        return "done", None, self.account   # the client's empty response after v=


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

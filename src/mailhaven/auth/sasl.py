"""SASL server mechanisms (RFC 4422), protocol-neutral and sans-IO: PLAIN, LOGIN, SCRAM-SHA-256.

SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH all drive the same objects. Transport
framing (base64, ``334``/``+``, ``*`` to cancel) belongs to the protocol; this module sees
decoded bytes only.

Sans-IO core: a mechanism never touches the store. Each :meth:`Mechanism.step` returns
one of the steps below, and the caller does the I/O it asks for::

    mech = new_mechanism("SCRAM-SHA-256")
    step = mech.step(initial_response_or_empty)
    while True:
        match step:
            case Challenge(data=d):        step = mech.step(await send_and_read(d))
            case CheckPassword():          step = mech.password_checked(await store.authenticate(...))
            case NeedScram(username=u):    step = mech.scram_credentials(await store.get_scram(u))
            case Success(authcid=who):     break    # authenticated as `who`
            case Failure(reason=r):        break

:class:`StoreMechanism` is exactly that loop's store half, for callers that have a Store:
``await StoreMechanism(name, store).step(data)`` returns ``("challenge", bytes, None)``,
``("success", None, Account)`` or ``("failure", None, None)`` (IMAP uses it through
:func:`server_mechanism`).

SCRAM (RFC 5802, RFC 7677) details: no channel binding (no -PLUS variant; a client that
asks for it with ``p=`` fails); the server-final message ``v=...`` is sent as a last
challenge whose empty response completes the exchange (RFC 4954 4 has no "additional
data with success" in SMTP, and the same shape works for IMAP and POP3). Unknown users
get a deterministic fake salt so that the exchange does not reveal which accounts exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store.api import Account, ScramCredentials

if TYPE_CHECKING:                       # the mechanisms stay sans-IO: the throttle is asyncio's
    from .throttle import LoginThrottle

MECHANISMS = ("PLAIN", "LOGIN", "SCRAM-SHA-256")
"""Every mechanism this module implements, strongest last."""
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
"""Mechanisms that send the password itself: only over TLS or from trusted peers."""

# -- steps ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Challenge:
    """Send these bytes to the client (the protocol base64-encodes them)."""

    data: bytes


@dataclass(frozen=True, kw_only=True)
class CheckPassword:
    """Verify the password (``store.authenticate``), then call ``password_checked``."""

    authcid: str
    """The login name (the account's address)."""
    password: str
    authzid: str = ""


@dataclass(frozen=True, kw_only=True)
class NeedScram:
    """Look up the SCRAM secrets (``store.get_scram``), then call ``scram_credentials``."""

    username: str


@dataclass(frozen=True, kw_only=True)
class Success:
    authcid: str
    """Who authenticated; for password mechanisms it is the name the client gave."""


@dataclass(frozen=True, kw_only=True)
class Failure:
    reason: str
    """For the log, never for the client (which always sees one generic failure)."""


Step = Challenge | CheckPassword | NeedScram | Success | Failure


class Mechanism:
    """Base: feed client responses with :meth:`step`."""

    name = ""

    def step(self, response: bytes) -> Step:
        raise NotImplementedError

    def password_checked(self, ok: bool) -> Step:
        return Failure(reason="unexpected password result")

    def scram_credentials(self, creds: ScramCredentials | None) -> Step:
        return Failure(reason="unexpected credentials")


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Plain(Mechanism):
    """RFC 4616: one message ``[authzid] NUL authcid NUL passwd``."""

    name = "PLAIN"

    def __init__(self) -> None:
        self._sent_empty = False
        self._authcid = ""

    def step(self, response: bytes) -> Step:
        if not response and not self._sent_empty:
            self._sent_empty = True               # no initial response: ask for it (RFC 4422 5)
            return Challenge(data=b"")
        parts = response.split(b"\x00")
        if len(parts) != 3:
            return Failure(reason="malformed PLAIN message")
        texts = [_text(p) for p in parts]
        if any(t is None for t in texts):
            return Failure(reason="PLAIN message is not UTF-8")
        authzid, authcid, password = (t or "" for t in texts)
        if not authcid or not password:
            return Failure(reason="empty PLAIN user or password")
        if authzid and authzid.lower() != authcid.lower():
            # RFC 4616 2: acting as someone else is an authorization decision; we allow none.
            return Failure(reason="authorization identity differs")
        self._authcid = authcid
        return CheckPassword(authcid=authcid, password=password, authzid=authzid)

    def password_checked(self, ok: bool) -> Step:
        return Success(authcid=self._authcid) if ok else Failure(reason="bad password")


class Login(Mechanism):
    """The LOGIN mechanism (draft-murchison-sasl-login-00): user name, then password."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._user: str | None = None
        self._asked_user = False

    def step(self, response: bytes) -> Step:
        if self._user is None:
            if not response and not self._asked_user:
                self._asked_user = True
                return Challenge(data=b"Username:")
            user = _text(response)
            if not user:
                return Failure(reason="bad LOGIN user name")
            self._user = user
            return Challenge(data=b"Password:")
        password = _text(response)
        if not password:
            return Failure(reason="bad LOGIN password")
        return CheckPassword(authcid=self._user, password=password)

    def password_checked(self, ok: bool) -> Step:
        return Success(authcid=self._user or "") if ok else Failure(reason="bad password")


def _saslprep(text: str) -> str:
    """A pragmatic RFC 4013 SASLprep: map non-ASCII spaces to space, drop
    commonly-mapped-to-nothing characters, NFKC; reject control characters."""
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in text
                     if c not in "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufe00\ufeff")
    out = unicodedata.normalize("NFKC", mapped)
    if any(unicodedata.category(c) in ("Cc", "Cs", "Co") for c in out):
        raise ValueError("prohibited character")
    return out


def _scram_name(value: str) -> str:
    """RFC 5802 5.1: ``=2C`` is ``,`` and ``=3D`` is ``=``; any other ``=`` is an error."""
    out = []
    i = 0
    while i < len(value):
        if value[i] == "=":
            code = value[i + 1:i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise ValueError("bad escape in user name")
            i += 3
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def _attrs(message: str) -> list[tuple[str, str]]:
    out = []
    for part in message.split(","):
        key, eq, value = part.partition("=")
        if len(key) != 1 or not eq:
            raise ValueError(f"bad attribute {part[:20]!r}")
        out.append((key, value))
    return out


class ScramSha256(Mechanism):
    """RFC 5802 / RFC 7677 SCRAM-SHA-256 without channel binding."""

    name = "SCRAM-SHA-256"

    def __init__(self, *, fake_salt_key: bytes | None = None, nonce: str | None = None) -> None:
        self._fake_key = fake_salt_key or os.urandom(32)
        self._server_nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self._state = "first"
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._username = ""
        self._creds: ScramCredentials | None = None
        self._server_signature = b""

    def step(self, response: bytes) -> Step:
        try:
            if self._state == "first":
                return self._client_first(response)
            if self._state == "final":
                return self._client_final(response)
            if self._state == "ack":
                self._state = "done"
                if response:
                    return Failure(reason="unexpected data after server-final")
                return Success(authcid=self._username)
        except (ValueError, UnicodeDecodeError) as exc:
            return Failure(reason=f"malformed SCRAM message: {exc}")
        return Failure(reason="exchange already finished")

    def _client_first(self, response: bytes) -> Step:
        if not response:
            if self._state == "first" and not self._gs2_header:
                self._gs2_header = "?"            # asked once for the client-first message
                return Challenge(data=b"")
            raise ValueError("empty client-first message")
        text = response.decode("utf-8")
        # client-first-message = gs2-header client-first-message-bare  (RFC 5802 7)
        # gs2-header = gs2-cbind-flag "," [ authzid ] ","
        cbind, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if cbind not in ("n", "y"):
            raise ValueError("channel binding is not supported")  # "p=..." asks for -PLUS
        if authzid and not authzid.startswith("a="):
            raise ValueError("bad authzid")
        attrs = _attrs(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise ValueError("client-first needs n= and r=")
        if bare.startswith("m="):
            raise ValueError("mandatory extension not supported")
        username = _saslprep(_scram_name(attrs[0][1]))
        if authzid and _scram_name(authzid[2:]).lower() != username.lower():
            raise ValueError("authorization identity differs")
        client_nonce = attrs[1][1]
        if not client_nonce or any(c == "," or not (0x21 <= ord(c) <= 0x7E) for c in client_nonce):
            raise ValueError("bad client nonce")
        self._gs2_header = f"{cbind},{authzid},"
        self._client_first_bare = bare
        self._username = username
        self._nonce = client_nonce + self._server_nonce
        return NeedScram(username=username)

    def scram_credentials(self, creds: ScramCredentials | None) -> Step:
        if self._state != "first" or not self._nonce:
            return Failure(reason="unexpected credentials")
        if creds is None:
            # Unknown user: carry on with a stable fake salt, fail at the proof (no oracle).
            salt = hmac.new(self._fake_key, self._username.lower().encode(), "sha256").digest()[:16]
            iterations = 4096
        else:
            salt, iterations = creds.salt, creds.iterations
        self._creds = creds
        self._server_first = f"r={self._nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        self._state = "final"
        return Challenge(data=self._server_first.encode())

    def _client_final(self, response: bytes) -> Step:
        text = response.decode("utf-8")
        # client-final-message = client-final-message-without-proof "," proof
        without_proof, sep, proof_attr = text.rpartition(",p=")
        if not sep:
            raise ValueError("missing proof")
        attrs = dict(_attrs(without_proof))
        expected_cbind = base64.b64encode(self._gs2_header.encode()).decode()
        if attrs.get("c") != expected_cbind:
            raise ValueError("channel binding data does not match")
        if attrs.get("r") != self._nonce:
            raise ValueError("nonce does not match")
        proof = base64.b64decode(proof_attr, validate=True)
        self._state = "failed"
        creds = self._creds
        if creds is None:
            return Failure(reason="unknown user")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        # ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); check H(ClientKey).
        client_signature = hmac.new(creds.stored_key, auth_message, "sha256").digest()
        if len(proof) != len(client_signature):
            return Failure(reason="bad proof length")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), creds.stored_key):
            return Failure(reason="bad password")
        server_signature = hmac.new(creds.server_key, auth_message, "sha256").digest()
        self._state = "ack"
        return Challenge(data=b"v=" + base64.b64encode(server_signature))


def new_mechanism(name: str) -> Mechanism:
    """A fresh server mechanism by (case-insensitive) name; KeyError when unknown."""
    name = name.upper()
    if name == "PLAIN":
        return Plain()
    if name == "LOGIN":
        return Login()
    if name == "SCRAM-SHA-256":
        return ScramSha256()
    raise KeyError(name)


# -- the store half --------------------------------------------------------------------


class StoreMechanism:
    """Runs a mechanism against a Store: the async loop around the sans-IO steps."""

    def __init__(self, name: str, store: Any, *, throttle: LoginThrottle | None = None, peer: str = "") -> None:
        self.mechanism = new_mechanism(name)
        self.store = store
        self.throttle = throttle
        self.peer = peer
        self.failure_reason: str | None = None
        self.username: str | None = None
        """The user name the client claimed, once known (for per-account throttling)."""
        self.blocked = False
        """The last failure reached a throttle limit: answer it, then close the connection."""
        self._seen: list[Any] | None = None
        self._counted = False

    async def _check(self, username: str) -> None:
        """Before a password or SCRAM secret is looked at: raises LoginBlocked."""
        self.username = username
        if self.throttle is not None:
            self._seen = await self.throttle.check(self.peer, username)

    async def _succeeded(self) -> None:
        if self.throttle is not None:
            await self.throttle.succeeded(self.peer, self.username, self._seen)

    async def step(self, response: bytes) -> tuple[str, bytes | None, Account | None]:
        """One client response in; raises :class:`~.throttle.LoginBlocked` when the
        throttle refuses this peer. A failure with a known user name is counted (and
        delayed) by the throttle before it is returned."""
        step = self.mechanism.step(response)
        while True:
            if isinstance(step, Challenge):
                return "challenge", step.data, None
            if isinstance(step, CheckPassword):
                self.username = step.authcid
                if self.throttle is not None:     # checked, verified and counted in one go
                    account, self.blocked = await self.throttle.attempt(self.peer, step.authcid, step.password)
                    self._counted = account is None
                else:
                    account = await self.store.authenticate(step.authcid, step.password)
                step = self.mechanism.password_checked(account is not None)
                if isinstance(step, Success):
                    return "success", None, account
                continue
            if isinstance(step, NeedScram):
                await self._check(step.username)
                step = self.mechanism.scram_credentials(await self.store.get_scram(step.username))
                continue
            if isinstance(step, Success):
                try:
                    account = await self.store.get_account(step.authcid)
                except Exception:  # noqa: BLE001 - account removed mid-exchange
                    self.failure_reason = "account vanished"
                    return "failure", None, None
                await self._succeeded()
                return "success", None, account
            assert isinstance(step, Failure)
            self.failure_reason = step.reason
            if self.throttle is not None and self.username and not self._counted:
                self.blocked = await self.throttle.failed(self.peer, self.username)
            return "failure", None, None


def server_mechanism(name: str, store: Any, *, throttle: LoginThrottle | None = None,
                     peer: str = "") -> StoreMechanism:
    """What IMAP's AUTHENTICATE and POP3's AUTH call: KeyError for unknown mechanisms."""
    return StoreMechanism(name, store, throttle=throttle, peer=peer)


# -- client side (tests, the user agent, the relay client) -------------------------------


class ScramClient:
    """RFC 5802 client side of SCRAM-SHA-256, for tests and outbound AUTH."""

    def __init__(self, username: str, password: str, *, nonce: str | None = None) -> None:
        self.username = username
        self.password = password
        self.nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self.client_first_bare = f"n={name},r={self.nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.client_first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(_attrs(server_first.decode()))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise ValueError("server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", _saslprep(self.password).encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
        auth_message = f"{self.client_first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self._server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        text = server_final.decode()
        return text.startswith("v=") and hmac.compare_digest(
            base64.b64decode(text[2:]), self._server_signature)

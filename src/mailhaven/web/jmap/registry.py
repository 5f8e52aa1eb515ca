"""What every JMAP method module shares: the call context, method errors, the method table
and the identifiers the API shows for store rows.

A method is ``async def method(call: Call, args: dict) -> dict`` registered with
``@method("Email/get")``. It raises :class:`MethodError` for an RFC 8620 §3.6.2 method-level
error; the dispatcher turns that into an ``["error", {...}, callId]`` response and goes on
with the next call. Anything else a method raises becomes ``serverFail`` and is logged.

Identifiers (RFC 8620 §1.2: 1-255 URL-safe characters) are store ids with a one-letter
prefix, so a client can never confuse an Email id with a Mailbox id:
``A<account id>``, ``M<mailbox id>``, ``E<message id>``, ``T<thread id>``, ``B<sha256>``
(blobs), ``S<queue id>`` (EmailSubmission), ``I<n>`` (Identity), ``Z<n>`` (SieveScript) and
``K<n>-<sha256>`` (a Sieve script's text).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ...store.api import Account

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
QUOTA = "urn:ietf:params:jmap:quota"
SIEVE = "urn:ietf:params:jmap:sieve"                  # RFC 9661


class MethodError(Exception):
    """An RFC 8620 §3.6.2 method-level error (``type`` is e.g. ``invalidArguments``)."""

    def __init__(self, type: str, description: str | None = None, **extra: Any) -> None:
        super().__init__(description or type)
        self.type = type
        self.description = description
        self.extra = extra

    def as_response(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, **self.extra}
        if self.description:
            body["description"] = self.description
        return body


@dataclass
class Call:
    """One method call's view of the world (built per request by the dispatcher)."""

    app: Any
    """The AppContext (``app.store``, ``app.config``, ``app.outbound``, ``app.log``)."""
    account: Account
    using: frozenset[str]
    created_ids: dict[str, str] = field(default_factory=dict)
    """RFC 8620 §3.3: creation id -> server id, shared by all calls of one request."""
    limits: dict[str, int] = field(default_factory=dict)
    """The session's core capability limits (maxObjectsInGet, maxObjectsInSet, ...)."""

    @property
    def store(self) -> Any:
        return self.app.store

    @property
    def account_id(self) -> str:
        return ids.account(self.account.id)

    def check_account(self, args: dict[str, Any]) -> None:
        """RFC 8620 §3.6.2 accountNotFound: this server offers each user one account."""
        if args.get("accountId") != self.account_id:
            raise MethodError("accountNotFound")

    def resolve_id(self, value: str) -> str:
        """RFC 8620 §5.3: "#creationId" names an object created earlier in this request."""
        if value.startswith("#"):
            try:
                return self.created_ids[value[1:]]
            except KeyError:
                raise MethodError("invalidArguments", f"unknown creation id {value}") from None
        return value


Method = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]
METHODS: dict[str, Method] = {}
CAPABILITY_OF: dict[str, str] = {}
"""Method name -> the capability a request must list in ``using`` to call it."""


def method(name: str, capability: str = MAIL) -> Callable[[Method], Method]:
    def register(fn: Method) -> Method:
        if name in METHODS:
            raise RuntimeError(f"JMAP method {name} registered twice")
        METHODS[name] = fn
        CAPABILITY_OF[name] = capability
        return fn

    return register


class ids:
    """Store id <-> JMAP id. ``parse`` returns None for anything malformed or foreign."""

    @staticmethod
    def account(n: int) -> str:
        return f"A{n}"

    @staticmethod
    def mailbox(n: int) -> str:
        return f"M{n}"

    @staticmethod
    def email(n: int) -> str:
        return f"E{n}"

    @staticmethod
    def thread(n: int) -> str:
        return f"T{n}"

    @staticmethod
    def blob(sha256: str) -> str:
        return f"B{sha256}"

    @staticmethod
    def parse(value: Any, prefix: str) -> int | None:
        if not isinstance(value, str) or len(value) < 2 or value[0] != prefix:
            return None
        digits = value[1:]
        if not digits.isdigit() or len(digits) > 18 or (digits[0] == "0" and len(digits) > 1):
            return None
        return int(digits)

    @staticmethod
    def parse_blob(value: Any) -> str | None:
        if not isinstance(value, str) or len(value) != 65 or value[0] != "B":
            return None
        digest = value[1:]
        if any(c not in "0123456789abcdef" for c in digest):
            return None
        return digest

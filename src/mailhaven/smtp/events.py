"""Settings and events of the sans-IO SMTP server core (see protocol.py).

Frozen, keyword-only dataclasses with a docstring per field, as h11 does.
"""

from __future__ import annotations

from dataclasses import dataclass

# ----------------------------------------------------------------------------------------
# Settings and events


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the listener decides about a connection before it starts."""

    hostname: str
    """Our name, in the greeting and EHLO reply."""
    max_size: int = 50 * 1024 * 1024
    """RFC 1870 SIZE limit in bytes (0: no limit)."""
    max_recipients: int = 100
    max_line: int = 4096
    """Longest command line (RFC 5321 4.5.3.1.4 says 512; extensions need more)."""
    max_errors: int = 50
    """Negative replies before the session is closed with 421."""
    starttls: bool = False
    """Offer STARTTLS (RFC 3207) while the connection is not encrypted."""
    tls_active: bool = False
    """The connection is already encrypted (implicit TLS, port 465)."""
    auth_mechanisms: tuple[str, ...] = ()
    """SASL mechanisms offered with AUTH (RFC 4954); empty: no AUTH."""
    plaintext_ok: bool = False
    """The peer counts as secure without TLS (loopback, ``Config.is_trusted``)."""
    require_auth: bool = False
    """Submission: MAIL needs a successful AUTH first (RFC 6409 4.3)."""


@dataclass(frozen=True, kw_only=True)
class MailParams:
    """MAIL FROM parameters the core understood and checked."""

    size: int | None = None
    """RFC 1870 declared size."""
    body: str = "7BIT"
    """RFC 6152 BODY: 7BIT or 8BITMIME."""
    smtputf8: bool = False
    """RFC 6531 SMTPUTF8."""
    ret: str | None = None
    """RFC 3461 RET: FULL or HDRS."""
    envid: str | None = None
    """RFC 3461 ENVID, xtext-decoded."""
    auth: str | None = None
    """RFC 4954 5 AUTH= mailbox (xtext-decoded), ``<>`` when unknown."""
    requiretls: bool = False
    """RFC 8689 3: every hop must relay it over verified TLS to a REQUIRETLS server."""


@dataclass(frozen=True, kw_only=True)
class MailFrom:
    """MAIL FROM (RFC 5321 4.1.1.2). Answer with :meth:`ServerConnection.answer`."""

    address: str
    """Envelope sender; "" for the null reverse-path."""
    params: MailParams


@dataclass(frozen=True, kw_only=True)
class RcptTo:
    """RCPT TO (RFC 5321 4.1.1.3). Answer with :meth:`ServerConnection.answer`."""

    address: str
    """Envelope recipient without brackets."""
    notify: frozenset[str] | None = None
    """RFC 3461 NOTIFY: {"NEVER"} or a subset of SUCCESS, FAILURE, DELAY."""
    orcpt: str | None = None
    """RFC 3461 ORCPT ``addr-type;address`` xtext-decoded."""


@dataclass(frozen=True, kw_only=True)
class DataStart:
    """Message content begins (after the 354, or with the first BDAT chunk)."""

    chunking: bool
    """True when the content comes in BDAT chunks (RFC 3030)."""


@dataclass(frozen=True, kw_only=True)
class DataChunk:
    """Decoded message content (dot-unstuffed, CRLF line ends)."""

    data: bytes


@dataclass(frozen=True, kw_only=True)
class DataComplete:
    """End of content: ``<CRLF>.<CRLF>`` or BDAT LAST. Answer it (250 only once durable)."""

    size: int
    """Bytes of content delivered in :class:`DataChunk` events."""


@dataclass(frozen=True, kw_only=True)
class TransactionReset:
    """The transaction ended without completing (RSET, EHLO, an error): drop its state."""


@dataclass(frozen=True, kw_only=True)
class StartTLS:
    """The 220 is queued: flush it, do the handshake, then call ``tls_started()``."""


@dataclass(frozen=True, kw_only=True)
class AuthStart:
    """AUTH (RFC 4954 4). Answer with ``auth_challenge(bytes)`` or ``answer(reply)``."""

    mechanism: str
    """Upper-case, one of ``Settings.auth_mechanisms``."""
    initial: bytes | None
    """Decoded initial response; b"" for ``=``, None when absent."""


@dataclass(frozen=True, kw_only=True)
class AuthResponse:
    """A client response in a SASL exchange, base64-decoded."""

    data: bytes


@dataclass(frozen=True, kw_only=True)
class AuthAborted:
    """The client cancelled (``*``) or sent bad base64; the core already answered."""


@dataclass(frozen=True, kw_only=True)
class ConnectionClosed:
    """QUIT answered, or the core gave up (421). Flush output, then close."""


Event = (MailFrom | RcptTo | DataStart | DataChunk | DataComplete | TransactionReset
         | StartTLS | AuthStart | AuthResponse | AuthAborted | ConnectionClosed)


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class LocalProtocolError(Exception):
    """The application used the core wrongly (e.g. answered an event that needs none)."""

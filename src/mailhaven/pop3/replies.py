"""POP3 replies: ``+OK``/``-ERR`` status lines, RFC 2449 response codes, named constants.

Handlers raise :class:`Pop3Error` with one of the constants below; the session catches it
once per command and writes the line. Nowhere else spells a reply literal.

    response    = ("+OK" / "-ERR") [SP resp-code] [SP text] CRLF     (RFC 2449 8)
    resp-code   = "[" resp-level *("/" resp-level) "]"
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, kw_only=True)
class Reply:
    ok: bool
    """``+OK`` when true, ``-ERR`` otherwise."""
    text: str = ""
    """Human-readable text; never contains CR or LF."""
    code: str | None = None
    """RFC 2449 8 / RFC 3206 response code without brackets (``IN-USE``, ``AUTH``...)."""

    def with_text(self, text: str) -> Reply:
        return replace(self, text=text)

    def to_bytes(self) -> bytes:
        return self.line(self.text)

    def line(self, text: str) -> bytes:
        """The status line with ``text`` for this reply's (``to_bytes`` of ``with_text``
        without making the Reply: RETR sends one per message)."""
        parts = ["+OK" if self.ok else "-ERR"]
        if self.code:
            parts.append(f"[{self.code}]")
        if text:
            parts.append(text.replace("\r", " ").replace("\n", " "))
        return " ".join(parts).encode("utf-8") + b"\r\n"


class Pop3Error(Exception):
    """Raised deep in a handler; the session turns it into the reply line (once)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


# -- RFC 2449 8.1 / RFC 3206 response codes ----------------------------------------------
IN_USE = "IN-USE"            # RFC 2449 8.1.1: the maildrop is locked by another session
LOGIN_DELAY = "LOGIN-DELAY"  # RFC 2449 8.1.2
SYS_TEMP = "SYS/TEMP"        # RFC 3206 4: a transient system problem
SYS_PERM = "SYS/PERM"        # RFC 3206 4
AUTH = "AUTH"                # RFC 3206 5: the credentials (or their transport) are the problem
UTF8 = "UTF8"                # RFC 6856 2.1

# -- named replies -----------------------------------------------------------------------
OK = Reply(ok=True)
GREETING = Reply(ok=True, text="Mailhaven POP3 server ready")
BYE = Reply(ok=True, text="Mailhaven POP3 server signing off")
CAPA_FOLLOWS = Reply(ok=True, text="Capability list follows")               # RFC 2449 5
STLS_GO = Reply(ok=True, text="Begin TLS negotiation")                      # RFC 2595 4
UTF8_ENABLED = Reply(ok=True, text="UTF8 enabled")                          # RFC 6856 2
USER_OK = Reply(ok=True, text="Send your password")
LOGGED_IN = Reply(ok=True, text="Logged in")
AUTH_MECHS = Reply(ok=True, text="Mechanisms follow")
DELETED = Reply(ok=True, text="Message deleted")
LIST_FOLLOWS = Reply(ok=True, text="Scan list follows")
UIDL_FOLLOWS = Reply(ok=True, text="Unique-ID list follows")
MESSAGE_FOLLOWS = Reply(ok=True, text="Message follows")

UNKNOWN_COMMAND = Reply(ok=False, text="Unknown command")
WRONG_STATE = Reply(ok=False, text="Command not valid in this state")       # RFC 1939 3
BAD_SYNTAX = Reply(ok=False, text="Syntax error")
LINE_TOO_LONG = Reply(ok=False, text="Line too long")
NOT_UTF8 = Reply(ok=False, text="Arguments must be UTF-8")
NO_SUCH_MESSAGE = Reply(ok=False, text="No such message")
ALREADY_DELETED = Reply(ok=False, text="Message already deleted")
MESSAGE_GONE = Reply(ok=False, text="Message was expunged by another session")
NEED_USER = Reply(ok=False, text="Give USER first")                         # RFC 1939 7 PASS
PLAINTEXT_REFUSED = Reply(ok=False, code=AUTH,
                          text="Plaintext authentication disallowed on non-secure connections")
AUTH_FAILED = Reply(ok=False, code=AUTH, text="Authentication failed")
AUTH_CANCELLED = Reply(ok=False, text="Authentication cancelled")           # RFC 5034 4
AUTH_BLOCKED = Reply(ok=False, code=AUTH, text="Too many failed logins; try again later")
UNKNOWN_MECHANISM = Reply(ok=False, text="Unsupported authentication mechanism")
MAILDROP_LOCKED = Reply(ok=False, code=IN_USE, text="Mailbox is locked by another session")
MAILDROP_UNAVAILABLE = Reply(ok=False, code=SYS_TEMP, text="Mailbox unavailable; try again later")
TLS_ACTIVE = Reply(ok=False, text="TLS already active")
TLS_UNAVAILABLE = Reply(ok=False, text="STLS not available on this port")
UTF8_TOO_LATE = Reply(ok=False, text="UTF8 must be given before logging in")
UPDATE_FAILED = Reply(ok=False, code=SYS_TEMP, text="Some deleted messages were not removed")  # RFC 1939 6
TOO_MANY_ERRORS = Reply(ok=False, text="Too many errors; closing connection")
IDLE_TIMEOUT = Reply(ok=False, text="Disconnected for inactivity")         # RFC 1939 3 autologout
SHUTTING_DOWN = Reply(ok=False, code=SYS_TEMP, text="Server shutting down")

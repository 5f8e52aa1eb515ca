"""ManageSieve responses: ``OK``/``NO``/``BYE`` with RFC 5804 response codes, named constants.

Handlers raise :class:`SieveReplyError` with one of the constants below; the session
catches it once per command and writes the line. Nowhere else spells a response literal.

    response-ok   = "OK" [SP "(" resp-code ")"] [SP string] CRLF      (RFC 5804 4)
    response-nobye = ("NO" / "BYE") [SP "(" resp-code ")"] [SP string] CRLF
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .protocol import string


@dataclass(frozen=True, kw_only=True)
class Reply:
    status: str
    """``OK``, ``NO`` or ``BYE``."""
    code: str = ""
    """The response code without parentheses (``QUOTA/MAXSCRIPTS``, ``TAG "x"``...)."""
    text: str = ""
    """Human-readable text (sent as a quoted string, or a literal when it has line ends)."""

    def with_text(self, text: str) -> Reply:
        return replace(self, text=text)

    def with_code(self, code: str) -> Reply:
        return replace(self, code=code)

    def to_bytes(self) -> bytes:
        out = self.status.encode()
        if self.code:
            out += b" (" + self.code.encode("utf-8") + b")"
        if self.text:
            out += b" " + string(self.text)
        return out + b"\r\n"


class SieveReplyError(Exception):
    """Raised deep in a handler; the session turns it into the response (once)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


# -- RFC 5804 1.3 response codes ----------------------------------------------------------------
AUTH_TOO_WEAK = "AUTH-TOO-WEAK"            # RFC 5804 1.3: PLAIN before TLS
ENCRYPT_NEEDED = "ENCRYPT-NEEDED"
QUOTA_MAXSCRIPTS = "QUOTA/MAXSCRIPTS"      # RFC 5804 1.3: too many scripts
QUOTA_MAXSIZE = "QUOTA/MAXSIZE"            # RFC 5804 1.3: the script is too big
NONEXISTENT = "NONEXISTENT"                # RFC 5804 1.3: no such script
ACTIVE = "ACTIVE"                          # RFC 5804 1.3: may not delete the active script
ALREADYEXISTS = "ALREADYEXISTS"            # RFC 5804 1.3: RENAMESCRIPT onto an existing name
TRYLATER = "TRYLATER"                      # RFC 5804 1.3: a temporary failure
WARNINGS = "WARNINGS"                      # RFC 5804 1.3

# -- responses --------------------------------------------------------------------------------
OK = Reply(status="OK")
GREETING = Reply(status="OK", text="Mailhaven ManageSieve ready")
STARTTLS_GO = Reply(status="OK", text="Begin TLS negotiation now")
LOGGED_IN = Reply(status="OK", text="Logged in")
LOGOUT = Reply(status="OK", text="Logout completed")
UNAUTHENTICATED = Reply(status="OK", text="Logged out; authenticate again")
NOOP_DONE = Reply(status="OK", text="Done")
PUT_DONE = Reply(status="OK", text="Script stored")
CHECK_DONE = Reply(status="OK", text="Script is valid")
HAVESPACE_OK = Reply(status="OK", text="Putscript would succeed")
ACTIVATED = Reply(status="OK", text="Script activated")
DEACTIVATED = Reply(status="OK", text="No script active")
DELETED = Reply(status="OK", text="Script deleted")
RENAMED = Reply(status="OK", text="Script renamed")
LISTED = Reply(status="OK", text="Listscripts completed")
GOT = Reply(status="OK", text="Getscript completed")

MALFORMED = Reply(status="NO", text="Syntax error")
NOT_NOW = Reply(status="NO", text="Command not allowed in this state")
TLS_ACTIVE = Reply(status="NO", text="TLS is already active")
TLS_UNAVAILABLE = Reply(status="NO", text="STARTTLS is not available here")
UNKNOWN_MECHANISM = Reply(status="NO", text="Unsupported SASL mechanism")
PLAINTEXT_REFUSED = Reply(status="NO", code=ENCRYPT_NEEDED,
                          text="Plaintext authentication needs TLS (STARTTLS)")   # RFC 5804 2.1
AUTH_FAILED = Reply(status="NO", text="Authentication failed")
AUTH_FAILED_LAST = Reply(status="BYE", text="Authentication failed too often")
AUTH_CANCELLED = Reply(status="NO", text="Authentication cancelled")
AUTH_BLOCKED = Reply(status="BYE", code=TRYLATER, text="Too many failed logins; try again later")
NO_SUCH_SCRIPT = Reply(status="NO", code=NONEXISTENT, text="There is no script by that name")
ACTIVE_SCRIPT = Reply(status="NO", code=ACTIVE, text="The active script cannot be deleted")
SCRIPT_EXISTS = Reply(status="NO", code=ALREADYEXISTS, text="A script by that name exists already")
TOO_MANY_SCRIPTS = Reply(status="NO", code=QUOTA_MAXSCRIPTS, text="Too many scripts")
SCRIPT_TOO_BIG = Reply(status="NO", code=QUOTA_MAXSIZE, text="Script too large")
BAD_NAME = Reply(status="NO", text="Invalid script name")
NOT_UTF8 = Reply(status="NO", text="The script is not UTF-8")
STORE_FAILED = Reply(status="NO", code=TRYLATER, text="Temporary failure; try again later")
TOO_MANY_ERRORS = Reply(status="BYE", text="Too many errors")
IDLE_TIMEOUT = Reply(status="BYE", text="Disconnected for inactivity")
SHUTTING_DOWN = Reply(status="BYE", code=TRYLATER, text="Server shutting down")
TOO_MANY_CONNECTIONS = Reply(status="BYE", code=TRYLATER, text="Too many connections")

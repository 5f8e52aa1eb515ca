"""SMTP replies as named constants: basic code (RFC 5321 4.2) + enhanced code (RFC 3463).

A :class:`Reply` is also an exception: handlers deep inside a command *raise* the reply
they want to send, and the one place that runs commands catches it and writes it out
(the mox ``smtpserver/error.go`` habit). Positive replies are returned, not raised.

Every constant below names the RFC section that defines its use. Handlers never write
a bare ``"550 ..."`` literal; when the text must carry a detail they call
:meth:`Reply.with_text`, which keeps both codes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, kw_only=True)
class Reply(Exception):
    """One SMTP reply, possibly multi-line (RFC 5321 4.2.1)."""

    code: int
    """Three-digit basic status code."""
    enhanced: str | None
    """RFC 3463 ``class.subject.detail`` (``"2.1.5"``), or None for the greeting,
    EHLO/HELO, 334 challenges and other replies that carry none (RFC 2034 section 3)."""
    text: str
    """Human-readable text; several lines are separated by ``\\n``."""

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced or ''} {self.text}".replace("  ", " ")

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def caught(self) -> Reply:
        """Call where a raised reply is caught: module constants are raised many times,
        so drop the traceback and context they would otherwise accumulate."""
        self.with_traceback(None)
        object.__setattr__(self, "__context__", None)
        object.__setattr__(self, "__cause__", None)
        return self

    def with_text(self, text: str) -> Reply:
        """The same codes with a more specific text."""
        return replace(self, text=text)

    def to_bytes(self) -> bytes:
        """Wire form: ``code-`` on every line but the last, ``code `` on the last (4.2.1).

        The enhanced code is repeated on every line, as RFC 2034 section 3 asks. Formed
        once per reply object (the constants are sent again and again: four a message)."""
        wire: bytes | None = self.__dict__.get("_wire")
        if wire is None:
            wire = self.__dict__["_wire"] = self._format()
        return wire

    def _format(self) -> bytes:
        lines = self.text.split("\n") or [""]
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8", "replace")


def _r(code: int, enhanced: str | None, text: str) -> Reply:
    return Reply(code=code, enhanced=enhanced, text=text)


# -- 2xx: success -------------------------------------------------------------------
OK = _r(250, "2.0.0", "OK")                                         # RFC 5321 4.2.2
SENDER_OK = _r(250, "2.1.0", "Sender OK")                           # RFC 3463 3.2 (X.1.0)
RECIPIENT_OK = _r(250, "2.1.5", "Recipient OK")                     # RFC 3463 3.2 (X.1.5)
RESET_OK = _r(250, "2.0.0", "Reset")                                # RFC 5321 4.1.1.5
MESSAGE_ACCEPTED = _r(250, "2.0.0", "Message accepted")             # RFC 5321 4.1.1.4
CHUNK_OK = _r(250, "2.0.0", "Chunk received")                       # RFC 3030 2
CLOSING = _r(221, "2.0.0", "Bye")                                   # RFC 5321 4.1.1.10
HELP = _r(214, "2.0.0",
          "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH\n"
          "See RFC 5321")                                           # RFC 5321 4.1.1.8
CANNOT_VRFY = _r(252, "2.5.0",
                 "Cannot VRFY user, but will accept message and attempt delivery")  # RFC 5321 3.5.3
READY_TLS = _r(220, "2.0.0", "Ready to start TLS")                  # RFC 3207 4
AUTH_OK = _r(235, "2.7.0", "Authentication successful")             # RFC 4954 6
START_INPUT = _r(354, None, "End data with <CR><LF>.<CR><LF>")      # RFC 5321 4.1.1.4

# -- 4xx: transient failures -----------------------------------------------------------
SHUTTING_DOWN = _r(421, "4.3.2", "Server shutting down, try again later")   # RFC 3463 X.3.2
TIMEOUT = _r(421, "4.4.2", "Idle for too long, closing connection")         # RFC 5321 4.5.3.2
TOO_MANY_CONNECTIONS = _r(421, "4.7.0", "Too many connections, try again later")  # RFC 3463 X.7.0
TOO_MANY_ERRORS = _r(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_AUTH_FAILURES = _r(421, "4.7.0", "Too many failed logins, try again later")  # RFC 4954 6
MAILBOX_FULL = _r(452, "4.2.2", "Mailbox full, try again later")            # RFC 3463 X.2.2
TOO_MANY_RECIPIENTS = _r(452, "4.5.3", "Too many recipients")               # RFC 5321 4.5.3.1.10
LOCAL_ERROR = _r(451, "4.3.0", "Local error in processing, try again later")  # RFC 5321 4.2.3
NO_REMOTE_DELIVERY = _r(451, "4.4.0", "Remote delivery is not available now")
TEMP_AUTH_FAILURE = _r(454, "4.7.0", "Temporary authentication failure")    # RFC 4954 6
TLS_UNAVAILABLE = _r(454, "4.7.0", "TLS not available")                    # RFC 3207 4
GREYLISTED = _r(451, "4.7.1", "Greylisted, please try again later")             # RFC 3463 X.7.1 / RFC 6647
INSUFFICIENT_STORAGE = _r(452, "4.3.1", "Insufficient system storage")      # RFC 1870 6.2
RATE_LIMITED = _r(451, "4.7.1", "Sending rate limit reached, try again later")  # RFC 3463 X.7.1
SPAM_DEFERRED = _r(451, "4.7.1", "Message deferred by the spam filter, try again later")  # RFC 3463 X.7.1
SCANNER_UNAVAILABLE = _r(451, "4.3.0", "Content scanner unavailable, try again later")  # RFC 3463 X.3.0

# -- 5xx: permanent failures ----------------------------------------------------------
UNKNOWN_COMMAND = _r(500, "5.5.2", "Command not recognized")                 # RFC 5321 4.2.4
LINE_TOO_LONG = _r(500, "5.5.6", "Line too long")                            # RFC 5321 4.5.3.1.4
SYNTAX_ERROR = _r(501, "5.5.4", "Syntax error in parameters or arguments")   # RFC 5321 4.3.2
BAD_ADDRESS_SYNTAX = _r(501, "5.1.3", "Bad address syntax")                 # RFC 3463 X.1.3
BAD_SENDER_SYNTAX = _r(501, "5.1.7", "Bad sender address syntax")           # RFC 3463 X.1.7
NOT_IMPLEMENTED = _r(502, "5.5.1", "Command not implemented")                # RFC 5321 4.2.4
BAD_SEQUENCE = _r(503, "5.5.1", "Bad sequence of commands")                  # RFC 5321 4.1.4
HELLO_FIRST = _r(503, "5.5.1", "Send EHLO or HELO first")
NESTED_MAIL = _r(503, "5.5.1", "Nested MAIL command")
NEED_RECIPIENTS = _r(503, "5.5.1", "No valid recipients")                    # RFC 5321 4.1.1.4
ALREADY_AUTHENTICATED = _r(503, "5.5.1", "Already authenticated")             # RFC 4954 4
PARAM_NOT_IMPLEMENTED = _r(504, "5.5.4", "Parameter not implemented")        # RFC 5321 4.1.1.11
PARAM_UNKNOWN = _r(555, "5.5.4", "MAIL FROM/RCPT TO parameters not recognized")  # RFC 5321 4.1.1.11
MECHANISM_UNKNOWN = _r(504, "5.5.4", "Unrecognized authentication mechanism")  # RFC 4954 4
AUTH_CANCELLED = _r(501, "5.0.0", "Authentication cancelled")                 # RFC 4954 4
AUTH_BAD_BASE64 = _r(501, "5.5.2", "Cannot decode base64 response")           # RFC 4954 4
AUTH_REQUIRED = _r(530, "5.7.0", "Authentication required")                   # RFC 4954 6
STARTTLS_FIRST = _r(530, "5.7.0", "Must issue a STARTTLS command first")      # RFC 3207 4
REQUIRETLS_NEEDS_TLS = _r(530, "5.7.10", "REQUIRETLS needs an encrypted session")  # RFC 8689 4.1, RFC 3463 X.7.10
REQUIRETLS_UNSUPPORTED = _r(550, "5.7.30", "REQUIRETLS support required")     # RFC 8689 4.2.1
AUTH_FAILED = _r(535, "5.7.8", "Authentication credentials invalid")          # RFC 4954 6
ENCRYPTION_REQUIRED = _r(538, "5.7.11", "Encryption required for requested authentication mechanism")  # RFC 4954 6
UNKNOWN_USER = _r(550, "5.1.1", "No such user here")                          # RFC 3463 X.1.1
RELAY_DENIED = _r(550, "5.7.1", "Relay access denied")                        # RFC 5321 3.6.2 / 7.1
SIEVE_REJECTED = _r(550, "5.7.1", "Rejected by the recipient's Sieve script")  # RFC 5429 2.1 / 4.2
FORWARDING_LOOP = _r(554, "5.4.6", "Mail forwarding loop detected")           # RFC 3463 X.4.6
FORWARDING_LIMIT = _r(451, "4.7.1", "Forwarding limit reached, try again later")  # sieve/forward.py
DMARC_REJECTED = _r(550, "5.7.1", "Message refused: the sender domain's DMARC policy is reject")  # RFC 7489 6.7 / 7.3
SPAM_REJECTED = _r(550, "5.7.1", "Message refused as spam")                      # RFC 3463 X.7.1
BARE_LINE_END = _r(550, "5.5.2", "Bare CR or LF in command")
MESSAGE_TOO_BIG = _r(552, "5.3.4", "Message size exceeds fixed maximum message size")  # RFC 1870 6.1
SENDER_NOT_OWNED = _r(553, "5.7.1", "Sender address not owned by the authenticated user")  # RFC 6409 6.1
FROM_NOT_OWNED = _r(553, "5.7.1", "From: header not owned by the authenticated user")
SMTPUTF8_REQUIRED = _r(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")    # RFC 6531 3.5
BAD_HEADER = _r(554, "5.6.0", "Malformed message header")                     # RFC 3463 X.6.0
VIRUS_FOUND = _r(554, "5.7.1", "Message refused: a virus was found in it")     # RFC 3463 X.7.1
TRANSACTION_FAILED = _r(554, "5.0.0", "Transaction failed")                   # RFC 5321 4.2.3

"""A thin IMAP client over imaplib for the user agent: folders by special use (RFC 6154),
listings by UID, fetching, appending, moving (RFC 6851 MOVE, else COPY + \\Deleted + UID
EXPUNGE), flags and search. Works with any IMAP4rev1 server."""

from __future__ import annotations

import base64
import datetime
import email.utils
import imaplib
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from .config import Account, Endpoint, UAError
from .render import header_text

_LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<sep>"[^"]*"|NIL) (?P<name>.+)$')
FALLBACK_NAMES = {"\\Sent": ("Sent", "Sent Messages", "Sent Items"), "\\Drafts": ("Drafts",),
                  "\\Trash": ("Trash", "Deleted Messages", "Deleted Items"), "\\Junk": ("Junk", "Spam"),
                  "\\Archive": ("Archive",)}


def _context(account: Account) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=account.ca_file)
    if account.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def decode_utf7(name: str) -> str:
    """RFC 3501 5.1.3 modified UTF-7 mailbox names."""
    out, i = [], 0
    while i < len(name):
        if name[i] == "&":
            end = name.index("-", i)
            chunk = name[i + 1:end]
            if not chunk:
                out.append("&")
            else:
                b64 = chunk.replace(",", "/")
                b64 += "=" * (-len(b64) % 4)
                out.append(base64.b64decode(b64).decode("utf-16-be"))
            i = end + 1
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def encode_utf7(name: str) -> str:
    out, buf = [], ""

    def flush() -> None:
        nonlocal buf
        if buf:
            out.append("&" + base64.b64encode(buf.encode("utf-16-be")).decode().rstrip("=").replace("/", ",") + "-")
            buf = ""

    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf += ch
    flush()
    return "".join(out)


def _quote(name: str) -> str:
    return '"' + encode_utf7(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def failure(what: str, account: Account, exc: BaseException) -> UAError:
    """One line for the user, saying what to do where there is something to do."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UAError(
            f"{what}: the server's certificate is not trusted ({exc.verify_message}). If this is your "
            f"own server with a self-signed certificate, trust that file: ca_file = \"DATA/tls/cert.pem\" "
            f"(its full path) in [accounts.{account.name}], or insecure = true on a test machine; "
            f"see 'mailhaven mail --help'")
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        login = "login failed: " if isinstance(exc, smtplib.SMTPAuthenticationError) else ""
        return UAError(f"{what}: {login}{exc.smtp_code} {text}")
    if isinstance(exc, imaplib.IMAP4.error):
        arg = exc.args[0] if exc.args else ""
        return UAError(f"{what}: {arg.decode(errors='replace') if isinstance(arg, bytes) else arg}")
    return UAError(f"{what}: {exc}")


@dataclass(frozen=True)
class Folder:
    name: str
    flags: tuple[str, ...]

    @property
    def special(self) -> str | None:
        return next((f for f in self.flags if f in FALLBACK_NAMES), None)


class Mail:
    def __init__(self, account: Account) -> None:
        self.account = account
        self.imap = self._connect(account.imap)
        self.selected: str | None = None

    def _connect(self, ep: Endpoint) -> imaplib.IMAP4:
        try:
            if ep.implicit_tls:
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(ep.host, ep.port, ssl_context=_context(self.account), timeout=60)
            else:
                imap = imaplib.IMAP4(ep.host, ep.port, timeout=60)
                if ep.starttls:
                    imap.starttls(ssl_context=_context(self.account))
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
            raise failure(f"IMAP {ep.host}:{ep.port}", self.account, exc) from None
        try:
            imap.login(self.account.user, self.account.get_password())
        except (OSError, imaplib.IMAP4.error) as exc:
            raise failure(f"IMAP {ep.host}:{ep.port}: login as {self.account.user} failed", self.account,
                          exc) from None
        return imap

    def close(self) -> None:
        try:
            self.imap.logout()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> Mail:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _ok(self, typ: str, data: Any, what: str) -> Any:
        if typ != "OK":
            detail = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
            raise UAError(f"{what}: {detail or typ}")
        return data

    # -- folders ------------------------------------------------------------------------
    def folders(self) -> list[Folder]:
        data = self._ok(*self.imap.list(), "LIST")
        out = []
        for line in data:
            if not isinstance(line, bytes):
                continue
            m = _LIST_RE.match(line)
            if not m:
                continue
            raw = m.group("name").decode(errors="replace")
            name = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if raw.startswith('"') else raw
            out.append(Folder(decode_utf7(name), tuple(m.group("flags").decode().split())))
        return out

    def special(self, use: str) -> str:
        folders = self.folders()
        for f in folders:
            if use in f.flags:
                return f.name
        names = {f.name.lower(): f.name for f in folders}
        for candidate in FALLBACK_NAMES[use]:
            if candidate.lower() in names:
                return names[candidate.lower()]
        name = FALLBACK_NAMES[use][0]
        self.imap.create(_quote(name))
        return name

    def status(self, folder: str) -> tuple[int, int]:
        data = self._ok(*self.imap.status(_quote(folder), "(MESSAGES UNSEEN)"), f"STATUS {folder}")
        text = data[0].decode(errors="replace") if data and isinstance(data[0], bytes) else ""
        m1, m2 = re.search(r"MESSAGES (\d+)", text), re.search(r"UNSEEN (\d+)", text)
        return (int(m1.group(1)) if m1 else 0, int(m2.group(1)) if m2 else 0)

    def select(self, folder: str, readonly: bool = False) -> None:
        typ, data = self.imap.select(_quote(folder), readonly=readonly)
        if typ != "OK":
            raise UAError(f"no folder {folder!r}")
        self.selected = folder

    # -- messages -----------------------------------------------------------------------
    def uids(self, *criteria: str, charset_literal: str | None = None) -> list[int]:
        if charset_literal is not None:
            self.imap.literal = charset_literal.encode()  # type: ignore[assignment]
            data = self._ok(*self.imap.uid("SEARCH", "CHARSET", "UTF-8", *criteria), "SEARCH")
        else:
            data = self._ok(*self.imap.uid("SEARCH", *(criteria or ("ALL",))), "SEARCH")
        return [int(x) for x in (data[0] or b"").split()]

    def summaries(self, uids: list[int]) -> list[dict[str, Any]]:
        if not uids:
            return []
        spec = ",".join(str(u) for u in uids)
        data = self._ok(*self.imap.uid(
            "FETCH", spec, "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])"),
            "FETCH")
        out = []
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta = item[0].decode(errors="replace")
            uid = re.search(r"UID (\d+)", meta)
            flags = re.search(r"FLAGS \(([^)]*)\)", meta)
            size = re.search(r"RFC822\.SIZE (\d+)", meta)
            arrived = re.search(r'INTERNALDATE "([^"]+)"', meta)
            headers = BytesHeaderParser(policy=compat32).parsebytes(item[1])
            out.append({"uid": int(uid.group(1)) if uid else 0, "flags": flags.group(1).split() if flags else [],
                        "size": int(size.group(1)) if size else 0, "from": header_text(headers, "From"),
                        "to": header_text(headers, "To"), "subject": header_text(headers, "Subject"),
                        "date": header_text(headers, "Date") or _internal_date(arrived.group(1) if arrived else "")})
        out.sort(key=lambda m: m["uid"])
        return out

    def fetch(self, uid: int, *, peek: bool = True) -> bytes:
        data = self._ok(*self.imap.uid("FETCH", str(uid), "(BODY.PEEK[])" if peek else "(BODY[])"), "FETCH")
        for item in data:
            if isinstance(item, tuple):
                return bytes(item[1])
        raise UAError(f"no message {uid} in {self.selected}")

    def store(self, uid: int, op: str, flags: list[str]) -> None:
        self._ok(*self.imap.uid("STORE", str(uid), op, "(" + " ".join(flags) + ")"), "STORE")

    def append(self, folder: str, raw: bytes, flags: list[str]) -> None:
        self._ok(*self.imap.append(_quote(folder), "(" + " ".join(flags) + ")", None, raw), f"APPEND {folder}")

    def move(self, uid: int, dest: str) -> None:
        caps = {c.upper() for c in self.imap.capabilities}
        if "MOVE" in caps:
            self._ok(*self.imap.uid("MOVE", str(uid), _quote(dest)), "MOVE")
            return
        self._ok(*self.imap.uid("COPY", str(uid), _quote(dest)), "COPY")
        self.store(uid, "+FLAGS.SILENT", ["\\Deleted"])
        if "UIDPLUS" in caps:
            self._ok(*self.imap.uid("EXPUNGE", str(uid)), "UID EXPUNGE")
        else:
            self._ok(*self.imap.expunge(), "EXPUNGE")

    def expunge(self, uid: int) -> None:
        self.store(uid, "+FLAGS.SILENT", ["\\Deleted"])
        caps = {c.upper() for c in self.imap.capabilities}
        if "UIDPLUS" in caps:
            self._ok(*self.imap.uid("EXPUNGE", str(uid)), "UID EXPUNGE")
        else:
            self._ok(*self.imap.expunge(), "EXPUNGE")


def _internal_date(value: str) -> str:
    """RFC 3501 date-time (``02-Dec-2026 19:00:00 +0000``) as an RFC 5322 date: what a
    listing shows for a message without a Date: header."""
    try:
        when = datetime.datetime.strptime(value.strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return ""
    return email.utils.format_datetime(when)


def submit(account: Account, sender: str, recipients: list[str], raw: bytes) -> None:
    """RFC 6409 submission with STARTTLS or implicit TLS, and AUTH."""
    ep = account.smtp
    try:
        if ep.implicit_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(ep.host, ep.port, context=_context(account), timeout=60)
        else:
            smtp = smtplib.SMTP(ep.host, ep.port, timeout=60)
            if ep.starttls:
                smtp.starttls(context=_context(account))
        with smtp:
            smtp.login(account.user, account.get_password())
            options = ["SMTPUTF8"] if not all(a.isascii() for a in [sender, *recipients]) else []
            refused = smtp.sendmail(sender, recipients, raw, mail_options=options)
    except smtplib.SMTPRecipientsRefused as exc:
        raise UAError("every recipient was refused: " + "; ".join(
            f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in exc.recipients.items())) from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise failure(f"sending through {ep.host}:{ep.port} failed", account, exc) from None
    if refused:
        raise UAError("some recipients were refused: " + "; ".join(
            f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in refused.items()))

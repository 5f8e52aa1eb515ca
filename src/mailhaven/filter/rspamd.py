"""rspamd as the spam engine, over its HTTP protocol (``POST /checkv2``).

The message goes as the request body, streamed from the held copy in 64 KB chunks; the
envelope goes in request headers (``Ip``, ``Helo``, ``From``, one ``Rcpt`` per recipient,
``Queue-Id``, ``User`` for an authenticated sender, ``MTA-Name``). The reply is JSON with
``action``, ``score`` and ``required_score``. h11 is the sans-IO HTTP/1.1 client; this
module only moves its bytes. Every failure to get an answer (refused, timed out, a bad
reply) is :class:`RspamdUnavailable`; ``[rspamd] unreachable`` decides what it means.

rspamd's action -> ours (:data:`ACTIONS`): ``reject`` -> refuse (550 5.7.1),
``soft reject`` / ``greylist`` -> defer (451 4.7.1), ``add header`` / ``rewrite subject``
-> file in Junk, ``no action`` -> deliver. Every scanned message gets ``X-Spam-Status``
and ``X-Spam-Score``; the sender's own fields of those names are removed first.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

import h11

CHUNK = 64 * 1024
MAX_REPLY = 1024 * 1024

ACTIONS = {
    "reject": "reject",
    "soft reject": "defer",
    "greylist": "defer",
    "add header": "junk",
    "rewrite subject": "junk",
    "no action": "deliver",
}
"""rspamd's action -> the inbound verdict's action."""

SPAM_FIELDS = re.compile(rb"^X-Spam-(?:Status|Score)[ \t]*:.*(?:\r\n[ \t].*)*\r\n", re.IGNORECASE | re.MULTILINE)


class RspamdUnavailable(Exception):
    """rspamd gave no usable answer (connection refused, timeout, bad reply)."""


@dataclass(frozen=True, kw_only=True)
class RspamdResult:
    rspamd_action: str
    """rspamd's own word: ``reject``, ``soft reject``, ``add header``..."""
    action: str
    """``deliver``, ``junk``, ``defer`` or ``reject``."""
    score: float
    required: float
    symbols: tuple[str, ...]

    def header(self) -> bytes:
        """X-Spam-Status / X-Spam-Score, as SpamAssassin and rspamd's milter write them."""
        flag = "No" if self.action == "deliver" else "Yes"
        tests = ",".join(self.symbols[:50])
        return (f"X-Spam-Status: {flag}, score={self.score:.2f} required={self.required:.2f}\r\n"
                f"\ttests=[{tests}] action={self.rspamd_action.replace(' ', '_')} engine=rspamd\r\n"
                f"X-Spam-Score: {self.score:.2f}\r\n").encode("ascii", "replace")


def strip_spam_fields(head: bytes) -> bytes:
    """The header section without the sender's X-Spam-Status / X-Spam-Score fields."""
    return SPAM_FIELDS.sub(b"", head)


def parse_reply(body: bytes) -> RspamdResult:
    try:
        data = json.loads(body)
        rspamd_action = str(data["action"])
        score = float(data.get("score", 0.0))
        required = float(data.get("required_score", 0.0))
        symbols = tuple(sorted(str(s) for s in data.get("symbols", {})))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RspamdUnavailable(f"bad reply: {exc}") from None
    if rspamd_action not in ACTIONS:
        raise RspamdUnavailable(f"unknown action {rspamd_action!r}")
    return RspamdResult(rspamd_action=rspamd_action, action=ACTIONS[rspamd_action], score=score,
                        required=required, symbols=symbols)


class RspamdClient:
    """One per process; a connection per message (rspamd answers and closes)."""

    def __init__(self, url: str, timeout: float, hostname: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected http://host:port, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 11333
        self.target = (parts.path.rstrip("/") or "") + "/checkv2"
        self.timeout = timeout
        self.hostname = hostname

    def _request(self, size: int, ip: str, helo: str, mail_from: str, rcpts: Sequence[str],
                 queue_id: str, user: str | None) -> h11.Request:
        headers: list[tuple[bytes, bytes]] = [
            (b"Host", f"{self.host}:{self.port}".encode()), (b"Content-Length", str(size).encode()),
            (b"Connection", b"close"), (b"Ip", ip.encode()), (b"Helo", helo.encode()),
            (b"From", mail_from.encode()), (b"Queue-Id", queue_id.encode()),
            (b"MTA-Name", self.hostname.encode()),
            *((b"Rcpt", r.encode()) for r in rcpts),
        ]
        if user:
            headers.append((b"User", user.encode()))
        return h11.Request(method="POST", target=self.target, headers=headers)

    async def check(self, content: BinaryIO, size: int, *, ip: str, helo: str, mail_from: str,
                    rcpts: Sequence[str] = (), queue_id: str = "", user: str | None = None) -> RspamdResult:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(content, size, ip, helo, mail_from, rcpts, queue_id, user)
        except (OSError, TimeoutError, h11.ProtocolError) as exc:
            raise RspamdUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(self, content: BinaryIO, size: int, ip: str, helo: str, mail_from: str,
                        rcpts: Sequence[str], queue_id: str, user: str | None) -> RspamdResult:
        conn = h11.Connection(h11.CLIENT)
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(conn.send(self._request(size, ip, helo, mail_from, rcpts, queue_id, user)) or b"")
            content.seek(0)
            while chunk := content.read(CHUNK):
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            status, body = 0, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(CHUNK))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_REPLY:
                        raise RspamdUnavailable("reply too large")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            writer.close()
        if status != 200:
            raise RspamdUnavailable(f"HTTP {status}: {bytes(body[:200])!r}")
        return parse_reply(bytes(body))

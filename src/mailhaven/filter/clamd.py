"""Virus scanning through clamd's ``INSTREAM`` command (clamd(8), "INSTREAM").

The held message goes in chunks, each prefixed with its length as a 4-byte big-endian
number, ended by a zero length; clamd answers ``stream: OK`` or ``stream: NAME FOUND``
(``z``-prefixed commands: NUL-terminated). clamd listens on a Unix socket (``[clamd]
socket = "/run/clamav/clamd.ctl"``) or TCP (``"127.0.0.1:3310"``). Any failure to get an
answer is :class:`ClamdUnavailable`; ``[clamd] unreachable`` decides what it means.
"""

from __future__ import annotations

import asyncio
import struct
from typing import BinaryIO

CHUNK = 64 * 1024
MAX_REPLY = 4096


class ClamdUnavailable(Exception):
    """clamd gave no usable answer (not running, timeout, an ERROR reply)."""


def parse_reply(reply: bytes) -> str | None:
    """``stream: OK`` -> None; ``stream: Eicar-Signature FOUND`` -> the signature's name."""
    text = reply.rstrip(b"\0\n").decode("utf-8", "replace")
    _, _, result = text.partition(": ")
    if result == "OK":
        return None
    if result.endswith(" FOUND"):
        return result[: -len(" FOUND")]
    raise ClamdUnavailable(f"clamd answered {text!r}")


class ClamdClient:
    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.startswith("/"):
            return await asyncio.open_unix_connection(self.address)
        host, _, port = self.address.rpartition(":")
        return await asyncio.open_connection(host.strip("[]"), int(port))

    async def scan(self, content: BinaryIO) -> str | None:
        """The name of the signature found, or None when the message is clean."""
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._connect()
                try:
                    writer.write(b"zINSTREAM\0")
                    content.seek(0)
                    while chunk := content.read(CHUNK):
                        writer.write(struct.pack(">I", len(chunk)) + chunk)
                        await writer.drain()
                    writer.write(struct.pack(">I", 0))
                    await writer.drain()
                    reply = await reader.readuntil(b"\0")
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ClamdUnavailable(f"{type(exc).__name__}: {exc}") from None
        return parse_reply(reply[:MAX_REPLY])

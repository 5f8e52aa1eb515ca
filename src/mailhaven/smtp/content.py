"""Message content on the wire: DATA dot-decoding, BDAT line-end normalisation, dot-stuffing.

Sans-IO, no state beyond what is passed in; the server core and the outbound client use it.

How line ends are handled (the no-SMTP-smuggling rule, decided here once):

- Only ``CRLF`` is a line end (RFC 5321 2.3.8). The end of DATA is exactly the line
  ``.`` preceded by CRLF and followed by CRLF (4.1.1.4): ``<CRLF>.<CRLF>``. A ``.`` line
  ended by a bare LF or bare CR, or started after one, never ends the message: such
  bytes are content. This is what closes the 2023 "SMTP smuggling" hole.
- A bare LF or bare CR inside the content is stored as CRLF (as Postfix 3.9's
  ``smtpd_forbid_bare_newline = normalize`` does): the stored message then has only CRLF
  line ends, so IMAP serves it as RFC 5322 demands, and when we relay it the client
  dot-stuffs the ``.`` line that a bare-LF ``<LF>.<LF>`` became. Nothing we store or
  relay can end another server's DATA early.
- Dot-unstuffing (4.5.2) removes the first ``.`` of a line that starts with one; lines
  are only those started by CRLF, so a ``.`` after a bare LF is kept.
- BDAT (RFC 3030) chunks are length-delimited, never dot-stuffed; their bare CR/LF are
  normalised the same way so the stored bytes look the same whichever verb carried them.
"""

from __future__ import annotations

from ..message.lineends import LineEndStream, normalize_line_ends

_END = b".\r\n"


class DotDecoder:
    """Decodes a DATA stream (RFC 5321 4.1.1.4, 4.5.2) into message bytes.

    Feed it the connection's input buffer; it consumes what it can, returns the decoded
    content and tells when ``<CRLF>.<CRLF>`` was seen. Memory is bounded: at most two
    bytes are ever held back (a CR, or the start of a ``.`` line)."""

    def __init__(self) -> None:
        self.at_line_start = True
        """The next byte starts a line (DATA starts at the beginning of a line)."""

    def decode(self, buf: bytes | bytearray) -> tuple[bytes, int, bool]:
        """Returns (content, bytes consumed from ``buf``, end of data seen)."""
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n:
            if self.at_line_start:
                if buf[pos] == 0x2E:                     # "." at the start of a line
                    if n - pos < 3:
                        if _END.startswith(bytes(buf[pos:])):
                            break                        # maybe the end: wait for more
                    elif buf[pos:pos + 3] == _END:
                        pos += 3
                        return _join(out), pos, True
                    pos += 1                             # 4.5.2: unstuff the leading "."
                self.at_line_start = False
                if pos >= n:
                    break
            dot = buf.find(b".", pos)
            idx = -1 if dot < 0 else _dot_line(buf, pos, dot)
            if idx >= 0:
                out.append(_take(buf, pos, idx + 2))
                pos = idx + 2
                self.at_line_start = True
                continue
            if buf[n - 1] != 0x0D:
                out.append(_take(buf, pos, n))
                self.at_line_start = n - pos >= 2 and buf[n - 2] == 0x0D and buf[n - 1] == 0x0A
                pos = n
            else:
                out.append(_take(buf, pos, n - 1))     # hold the CR: its LF may follow
                pos = n - 1
            break
        return _join(out), pos, False


def _dot_line(buf: bytes | bytearray, pos: int, dot: int) -> int:
    """Where the next ``<CRLF>.`` at or after ``pos`` starts, or -1; ``dot`` is the first
    "." at or after ``pos``.

    The dots first, by memchr: a base64 part holds none, a header a few, so one pass at
    memory speed finds the one that starts a line or shows there is none. Text full of
    dots would cost a probe each: after :data:`_DOT_PROBES` the three-byte search takes
    over (~0.7 ns a byte, what the first 64 KB read of every message paid when its header
    had a "." in it: issue 18)."""
    for _ in range(_DOT_PROBES):
        if dot < 0:
            return -1
        if dot - 2 >= pos and buf[dot - 1] == 0x0A and buf[dot - 2] == 0x0D:
            return dot - 2
        dot = buf.find(b".", dot + 1)
    return -1 if dot < 0 else buf.find(b"\r\n.", max(pos, dot - 2))


_DOT_PROBES = 8


def _take(buf: bytes | bytearray, start: int, end: int) -> bytes:
    """``bytes(buf[start:end])``; all of the buffer in one copy, not two."""
    if start == 0 and end == len(buf):
        return bytes(buf)
    return bytes(buf[start:end])


def _join(parts: list[bytes]) -> bytes:
    data = b"".join(parts)
    return normalize_line_ends(data) if data else data


class ChunkNormalizer(LineEndStream):
    """Normalises bare CR/LF across BDAT chunk boundaries (a CR may end one chunk); at
    BDAT LAST, :meth:`finish` turns a final lone CR into CRLF and adds no other line end."""

    def __init__(self) -> None:
        super().__init__(end_with_crlf=False)


def dot_stuff(data: bytes) -> bytes:
    """Client side (RFC 5321 4.5.2): double the ``.`` starting any line, normalise line
    ends to CRLF and make sure the content ends with CRLF; add ``.\\r\\n`` yourself."""
    data = normalize_line_ends(data)
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


class DotStuffer:
    """:func:`dot_stuff` a piece at a time, for a message sent from its file (RFC 5321
    4.5.2): line ends normalised across pieces, a ``.`` doubled wherever a line starts,
    also when the line started in the previous piece's last bytes."""

    def __init__(self) -> None:
        self._lines = LineEndStream()
        self._at_line_start = True

    def feed(self, data: bytes) -> bytes:
        return self._stuff(self._lines.feed(data))

    def finish(self) -> bytes:
        """The rest, ending with CRLF; add ``.\r\n`` yourself."""
        return self._stuff(self._lines.finish())

    def _stuff(self, data: bytes) -> bytes:
        if not data:
            return data
        if self._at_line_start and data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        self._at_line_start = data.endswith(b"\r\n")
        return data

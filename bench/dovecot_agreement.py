"""Differential FETCH: the same messages in a real Dovecot and a real Mailhaven, and which
FETCH answers differ.

    python bench/dovecot_agreement.py [CORPUS_DIR] [-v] [--json OUT]

Starts a private Dovecot (Debian's dovecot-imapd, a throwaway config on loopback, Maildir)
and a ``mailhaven serve`` (bench/imap.py starts both), APPENDs every message of the corpus
(``../shared/corpus`` by default; mbox files split into messages) to each, then FETCHes
``BODY[] RFC822.SIZE ENVELOPE BODYSTRUCTURE`` from both and compares item by item, per
message. The answers are compared as parsed IMAP data (a quoted string and a literal with
the same bytes are the same string), so only what a client would see differently counts.
Prints the agreement per item and every difference; needs root (Dovecot drops to nobody).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from imap import PASSWORD, USER, Dovecot, Mailhaven  # noqa: E402

from conftest import corpus_messages as conftest_corpus_messages  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
ITEMS = ("BODY[]", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE")


# -- the corpus ----------------------------------------------------------------------------


def corpus_messages(corpus: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of every message: the files MANIFEST.tsv lists (every regular file
    but README/SOURCE/LICENSE when there is none), mbox files split on ``From `` lines."""
    manifest = corpus / "MANIFEST.tsv"
    if manifest.exists():
        files = [corpus / line.split("\t")[0] for line in manifest.read_text().splitlines()[1:] if line.strip()]
    else:
        files = sorted(p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and p.name not in ("README.md", "SOURCE.md", "LICENSE", "NOTICE", "LICENSE-APACHE"))
    return conftest_corpus_messages(files, corpus)


# -- a small IMAP client: APPEND, FETCH, and a parser of its answers -------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = b""
        self.n = 0
        self.readline()

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def command(self, text: bytes, literal: bytes | None = None) -> tuple[list[bytes], bytes]:
        """Untagged responses (each with its literals inline) and the tagged line."""
        self.n += 1
        tag = b"a%d" % self.n
        if literal is None:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text + b" {%d}\r\n" % len(literal))
            line = self.readline()
            if not line.startswith(b"+"):
                return [], line
            self.sock.sendall(literal + b"\r\n")
        untagged: list[bytes] = []
        while True:
            response = b""
            while True:
                line = self.readline()
                response += line
                m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
                if not m:
                    break
                response += self.read(int(m.group(1)))
            if response.startswith(tag + b" "):
                return untagged, response
            untagged.append(response)

    def ok(self, text: bytes, literal: bytes | None = None) -> list[bytes]:
        untagged, tagged = self.command(text, literal)
        if not tagged.split(b" ", 2)[1:2] == [b"OK"]:
            raise RuntimeError(f"{text[:60]!r}: {tagged!r}")
        return untagged


_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|\{(\d+)\+?\}\r\n|([^\s()"{]+(?:\[[^\]]*\](?:<[\d.]+>)?)?))')


def parse(data: bytes) -> list[Any]:
    """An IMAP response as nested lists: strings (quoted or literal) as bytes, NIL as None,
    atoms and numbers as str."""
    stack: list[list[Any]] = [[]]
    pos = 0
    while pos < len(data):
        if data[pos:pos + 1] in (b" ", b"\r", b"\n"):
            pos += 1
            continue
        m = _TOKEN.match(data, pos)
        if not m:
            raise ValueError(f"unparseable at {pos}: {data[pos:pos + 40]!r}")
        pos = m.end()
        if m.group(1):
            stack.append([])
        elif m.group(2):
            done = stack.pop()
            stack[-1].append(done)
        elif m.group(3) is not None:
            stack[-1].append(re.sub(rb"\\(.)", rb"\1", m.group(3)))
        elif m.group(4) is not None:
            n = int(m.group(4))
            stack[-1].append(data[pos:pos + n])
            pos += n
        else:
            atom = m.group(5).decode("latin-1")
            stack[-1].append(None if atom.upper() == "NIL" else atom)
    return stack[0]


def fetch_all(port: int, messages: list[tuple[str, bytes]]) -> list[dict[str, Any] | None]:
    """APPEND every message to a fresh mailbox, then FETCH the items of each, in order:
    one dict per message (None where the server refused the APPEND)."""
    c = Client(port)
    c.ok(b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))
    c.ok(b"CREATE Agreement")
    appended: list[bool] = []
    for _, raw in messages:
        _, tagged = c.command(b"APPEND Agreement", raw)
        appended.append(tagged.split(b" ", 2)[1:2] == [b"OK"])
    c.ok(b"SELECT Agreement")
    by_uid: dict[int, dict[str, Any]] = {}
    for response in c.ok(b"UID FETCH 1:* (BODY.PEEK[] RFC822.SIZE ENVELOPE BODYSTRUCTURE)"):
        tokens = parse(response)
        if len(tokens) < 4 or tokens[2] != "FETCH":
            continue
        pairs = tokens[3]
        items = {str(pairs[i]).upper(): pairs[i + 1] for i in range(0, len(pairs) - 1, 2)}
        by_uid[int(items["UID"])] = items
    c.sock.close()
    uids = iter(sorted(by_uid))
    return [by_uid[next(uids)] if ok else None for ok in appended]


# -- comparison ------------------------------------------------------------------------------


@dataclass
class Result:
    total: int = 0
    agree: dict[str, int] = field(default_factory=lambda: {item: 0 for item in ITEMS})
    differ: dict[str, list[str]] = field(default_factory=lambda: {item: [] for item in ITEMS})
    answers: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def percent(self, item: str) -> float:
        return 100.0 * self.agree[item] / self.total if self.total else 0.0


def compare(messages: list[tuple[str, bytes]], dovecot: list[dict[str, Any] | None],
            mailhaven: list[dict[str, Any] | None]) -> Result:
    result = Result()
    for (name, _), d, m in zip(messages, dovecot, mailhaven, strict=True):
        if d is None:
            continue                  # Dovecot refused it: nothing to agree with
        result.total += 1
        for item in ITEMS:
            if m is not None and d.get(item) == m.get(item):
                result.agree[item] += 1
            else:
                result.differ[item].append(name)
                result.answers[f"{name} {item}"] = (d.get(item), None if m is None else m.get(item))
    return result


def measure(corpus: Path = DEFAULT_CORPUS) -> Result:
    """Start both servers, load the corpus into each, compare; the servers are stopped after."""
    messages = corpus_messages(corpus)
    tmp = Path(tempfile.mkdtemp(prefix="mh-dovecot-agreement-", dir="/tmp"))
    tmp.chmod(0o755)                 # Dovecot's auth process must reach its passwd file
    dovecot = Dovecot(tmp, max_conns=10)
    mailhaven = Mailhaven(tmp, max_conns=10)
    try:
        dovecot.start()
        mailhaven.start()
        return compare(messages, fetch_all(dovecot.port, messages), fetch_all(mailhaven.port, messages))
    finally:
        mailhaven.stop()
        dovecot.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _show(value: Any) -> str:
    def plain(v: Any) -> Any:
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, bytes):
            return v.decode("utf-8", "backslashreplace")
        return v
    text = json.dumps(plain(value), ensure_ascii=False)
    return text if len(text) < 4000 else text[:4000] + "..."


def report(result: Result, show_all: bool) -> Iterator[str]:
    for item in ITEMS:
        yield f"{item:14} {result.agree[item]}/{result.total} ({result.percent(item):.1f}%)"
    for item in ITEMS:
        for name in result.differ[item]:
            yield f"differs {item}: {name}"
            if show_all:
                d, m = result.answers[f"{name} {item}"]
                yield f"  dovecot:   {_show(d)}"
                yield f"  mailhaven: {_show(m)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("-v", "--verbose", action="store_true", help="print both answers of each difference")
    ap.add_argument("--json", type=Path, help="write the differing message names per item here")
    args = ap.parse_args()
    result = measure(args.corpus)
    for line in report(result, args.verbose):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"total": result.total, "agree": result.agree,
                                         "differ": result.differ}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

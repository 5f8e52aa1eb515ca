"""A bounded, seeded protocol fuzzer against the real server over real sockets (issue 14).

Every protocol gets ``MAILHAVEN_FUZZ_COUNT`` inputs (2,000 by default; more on demand:
``MAILHAVEN_FUZZ_COUNT=50000 MAILHAVEN_FUZZ_SEED=7 pytest tests/test_fuzz_protocols.py``):
valid commands and sessions mutated byte-wise and token-wise (flipped and inserted bytes,
NUL/CR/LF/8-bit, literals of odd sizes, huge numbers, repeated tokens, cut lines, lines
over every limit), sent in batches on connections from rotating loopback addresses,
before and after logging in. The test fails on any traceback or error line in the
server's log, and when a listener stops answering a fresh client.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import time
from collections.abc import Callable, Iterator

import pytest

from conftest import ServerProcess

COUNT = int(os.environ.get("MAILHAVEN_FUZZ_COUNT", "2000"))
SEED = int(os.environ.get("MAILHAVEN_FUZZ_SEED", "20261202"))
BATCH = 40
"""Inputs per connection."""
PARALLEL = 8
STATS = {"replies": 0}
USER, PASSWORD = "fuzz@example.org", "fuzz-pw"
PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())

INTERESTING = [b"\0", b"\r", b"\n", b"\r\n", b"\xff", b"\xc3\xa9", b"{", b"}", b"{0}", b"{0+}",
               b"{4294967296}", b"{99999999999999999999}", b"{-1}", b"{5}\r\n", b"(", b")", b"[", b"]",
               b"<", b">", b'"', b"\\", b"*", b"%", b":", b",", b"=", b"+", b"-", b" ", b"\t", b".",
               b"0", b"-1", b"4294967295", b"4294967296", b"18446744073709551616", b"1:*", b"*:1",
               b"NIL", b"~{3}\r\n", b"=?utf-8?q?x?=", b"\x1b[2K"]

IMAP_COMMANDS = [
    b"a CAPABILITY", b"a NOOP", b"a ID (\"name\" \"x\")", b"a ENABLE QRESYNC UTF8=ACCEPT",
    b"a SELECT INBOX", b"a EXAMINE INBOX (CONDSTORE)", b"a SELECT INBOX (QRESYNC (1 1 1:5))",
    b"a LIST \"\" *", b"a LIST (SUBSCRIBED) \"\" (\"*\" \"%\") RETURN (CHILDREN STATUS (MESSAGES))",
    b"a LSUB \"\" *", b"a STATUS INBOX (MESSAGES UIDNEXT UNSEEN HIGHESTMODSEQ SIZE)",
    b"a CREATE fuzz/sub", b"a RENAME fuzz fuzz2", b"a DELETE fuzz2", b"a SUBSCRIBE INBOX",
    b"a APPEND INBOX (\\Seen) \"01-Jan-2020 00:00:00 +0000\" {23+}\r\nSubject: x\r\n\r\nbody\r\n\r\n",
    b"a APPEND INBOX {12+}\r\nSubject: y\r\n",
    b"a FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE BODYSTRUCTURE)", b"a FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.10>",
    b"a UID FETCH 1:* (BODY[1.MIME] BINARY[1] BINARY.SIZE[1]) (CHANGEDSINCE 1)", b"a FETCH 1 BODY[]<0.5>",
    b"a STORE 1 +FLAGS.SILENT (\\Deleted $Junk)", b"a UID STORE 1:* (UNCHANGEDSINCE 5) -FLAGS (\\Seen)",
    b"a SEARCH CHARSET UTF-8 OR FROM x (SUBJECT \"y\" LARGER 5) NOT DELETED SINCE 1-Jan-2020",
    b"a UID SEARCH RETURN (MIN MAX COUNT ALL) MODSEQ 1 1:*", b"a SORT (REVERSE DATE SUBJECT) UTF-8 ALL",
    b"a THREAD REFERENCES UTF-8 ALL", b"a COPY 1:* fuzz", b"a UID MOVE 1 INBOX", b"a EXPUNGE",
    b"a UID EXPUNGE 1:2", b"a CLOSE", b"a UNSELECT", b"a NAMESPACE", b"a GETQUOTAROOT INBOX",
    b"a IDLE\r\nDONE", b"a COMPRESS DEFLATE", b"a STARTTLS", b"a CHECK",
    b"a AUTHENTICATE PLAIN", b"a AUTHENTICATE PLAIN =", b"a LOGIN x y", b"a LOGIN {1+}\r\nx {0+}\r\n",
]
SMTP_COMMANDS = [
    b"EHLO fuzz.example", b"HELO fuzz", b"MAIL FROM:<a@fuzz.example> SIZE=100 BODY=8BITMIME SMTPUTF8",
    b"MAIL FROM:<> RET=HDRS ENVID=x+2Bz", b"RCPT TO:<fuzz@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y",
    b"RCPT TO:<postmaster>", b"RCPT TO:<\"q u\"@example.org>", b"DATA\r\nSubject: f\r\n\r\nbody\r\n..x\r\n.",
    b"BDAT 5\r\nhello", b"BDAT 0 LAST", b"BDAT 3 LAST\r\nabc", b"RSET", b"NOOP x", b"VRFY fuzz", b"EXPN list",
    b"HELP", b"STARTTLS", b"AUTH PLAIN " + PLAIN, b"AUTH LOGIN", b"AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9YWJj",
    b"AUTH PLAIN", b"*",
]
POP3_COMMANDS = [
    b"CAPA", b"USER " + USER.encode(), b"PASS " + PASSWORD.encode(), b"APOP fuzz 0123456789abcdef",
    b"AUTH PLAIN " + PLAIN, b"AUTH PLAIN", b"AUTH", b"STAT", b"LIST", b"LIST 1", b"UIDL", b"UIDL 1",
    b"RETR 1", b"TOP 1 0", b"TOP 1 99999999999", b"DELE 1", b"RSET", b"NOOP", b"STLS", b"UTF8",
    b"LANG *",
]
MANAGESIEVE_COMMANDS = [
    b"CAPABILITY", b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"', b'AUTHENTICATE "PLAIN"', b'"*"',
    b'AUTHENTICATE "SCRAM-SHA-256" {8+}\r\nbiwsbj14', b"STARTTLS", b'NOOP "tag"', b"LISTSCRIPTS",
    b'HAVESPACE "a" 100', b'PUTSCRIPT "a" {31+}\r\nrequire "fileinto"; fileinto "x";',
    b'PUTSCRIPT "b" "if header :regex \\"subject\\" \\"(x\\" { keep; }"', b'CHECKSCRIPT {5+}\r\nkeep;',
    b'SETACTIVE "a"', b'SETACTIVE ""', b'GETSCRIPT "a"', b'RENAMESCRIPT "a" "c"', b'DELETESCRIPT "c"',
    b"UNAUTHENTICATE", b"LOGOUT",
]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        op = rng.randrange(10)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:                                      # flip a byte
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:                                             # insert an interesting token
            data[pos:pos] = rng.choice(INTERESTING)
        elif op == 2 and data:                                    # delete a span
            del data[pos:pos + rng.randrange(1, 12)]
        elif op == 3 and data:                                    # duplicate a span many times
            span = bytes(data[pos:pos + rng.randrange(1, 8)]) or b"x"
            data[pos:pos] = span * rng.choice((2, 10, 100, 1000))
        elif op == 4:                                             # numbers out of range
            data = bytearray(re.sub(rb"\d+", lambda _: rng.choice(INTERESTING[-30:-20] + [b"0"]), bytes(data), count=1))
        elif op == 5:                                             # cut short
            del data[pos:]
        elif op == 6:                                             # random bytes
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 7 and rng.random() < 0.05:                     # over every line limit
            data[pos:pos] = b"A" * rng.choice((5000, 70_000))
        elif op == 8:                                             # case games
            data = bytearray(bytes(data).swapcase())
        else:                                                     # splice two commands
            data[pos:pos] = b" " + seed
    return bytes(data)


async def _session(port: int, source: str, prefix: list[bytes], inputs: list[bytes], tail: bytes) -> None:
    """Send ``prefix`` + ``inputs`` + ``tail`` line by line while draining the replies; when
    the server ends the connection (too many errors, a bad BDAT), go on with the rest of
    ``inputs`` on a new one."""
    pending = list(inputs)
    while pending:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout=10)
        except (OSError, TimeoutError):
            return

        async def drain_replies(reader: asyncio.StreamReader = reader) -> None:
            while chunk := await reader.read(65536):
                STATS["replies"] += chunk.count(b"\n")

        draining = asyncio.ensure_future(drain_replies())
        try:
            for item in prefix:
                writer.write(item + b"\r\n")
            while pending and not draining.done():
                writer.write(pending.pop(0) + b"\r\n")
                await asyncio.wait_for(writer.drain(), timeout=10)
                await asyncio.sleep(0.002)
            if not draining.done():
                writer.write(tail + b"\r\n")
                await asyncio.wait_for(asyncio.shield(draining), timeout=5)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            draining.cancel()
            writer.close()


async def _answers(port: int, expect: bytes, request: bytes = b"") -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=5)
        if request:
            writer.write(request)
        line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        return line.startswith(expect)
    except (OSError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", extra_config=(
        "[limits]\nconnections_per_ip = 1000\nunauthenticated_per_ip = 1000\nauth_failures = 1000000\n"
        'message_size = "1M"\nlogin_timeout = "5s"\ntransfer_grace = "1s"\nhttp_header_timeout = "2s"\n'
        'smtp_data_idle = "3s"\n')).start()
    srv.add_user(USER, PASSWORD)
    try:
        yield srv
    finally:
        srv.stop()


def _check_log(server: ServerProcess, offset: int) -> None:
    log = server.log_text()[offset:]
    bad = [line for line in log.splitlines() if "Traceback" in line or re.match(r"\S+ (error|critical) ", line)]
    if bad:
        at = log.find(bad[0])
        pytest.fail("the server logged an error:\n" + log[max(0, at - 2000):at + 6000])


def _fuzz(server: ServerProcess, name: str, commands: list[bytes], prefixes: list[list[bytes]],
          tail: bytes, greeting: bytes, seed_offset: int,
          build: Callable[[random.Random], bytes] | None = None) -> None:
    rng = random.Random(SEED + seed_offset)
    port = server.port(name)
    offset = len(server.log_text())
    sent = 0
    started = time.monotonic()

    async def run() -> None:
        nonlocal sent
        round_no = 0
        while sent < COUNT:
            sessions = []
            for _ in range(PARALLEL):
                inputs = [build(rng) if build else mutate(rng, rng.choice(commands))
                          for _ in range(min(BATCH, COUNT - sent))]
                if not inputs:
                    break
                sent += len(inputs)
                source = f"127.0.{10 + round_no % 200}.{rng.randrange(1, 255)}"
                sessions.append(_session(port, source, rng.choice(prefixes), inputs, tail))
            await asyncio.gather(*sessions)
            round_no += 1
            assert await _answers(port, greeting), \
                f"{name} stopped answering after {sent} inputs (seed {SEED})"

    asyncio.run(run())
    _check_log(server, offset)
    print(f"{name}: {sent} inputs in {time.monotonic() - started:.1f}s, {STATS['replies']} reply lines")
    STATS["replies"] = 0


def test_fuzz_imap(server: ServerProcess) -> None:
    login = [b"a LOGIN " + USER.encode() + b" " + PASSWORD.encode()]
    _fuzz(server, "imap", IMAP_COMMANDS, [[], login, [*login, b"s SELECT INBOX"]], b"z LOGOUT", b"* OK", 1)


def test_fuzz_smtp(server: ServerProcess) -> None:
    tx = [b"EHLO fuzz", b"MAIL FROM:<a@fuzz.example>", b"RCPT TO:<" + USER.encode() + b">"]
    _fuzz(server, "smtp", SMTP_COMMANDS, [[], [b"EHLO fuzz"], tx, [*tx, b"DATA"]], b"QUIT", b"220 ", 2)


def test_fuzz_submission(server: ServerProcess) -> None:
    auth = [b"EHLO fuzz", b"AUTH PLAIN " + PLAIN]
    tx = [*auth, b"MAIL FROM:<" + USER.encode() + b">", b"RCPT TO:<someone@far.example>"]
    _fuzz(server, "submission", SMTP_COMMANDS, [[], auth, tx, [*tx, b"DATA", b"From: " + USER.encode()]],
          b"QUIT", b"220 ", 3)


def test_fuzz_pop3(server: ServerProcess) -> None:
    login = [b"USER " + USER.encode(), b"PASS " + PASSWORD.encode()]
    _fuzz(server, "pop3", POP3_COMMANDS, [[], login], b"QUIT", b"+OK", 4)


def test_fuzz_managesieve(server: ServerProcess) -> None:
    login = [b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"']
    _fuzz(server, "managesieve", MANAGESIEVE_COMMANDS, [[], login], b"LOGOUT", b'"IMPLEMENTATION"', 6)


HTTP_REQUESTS = [
    b"GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\nAuthorization: Basic AUTH\r\n\r\n",
    b"POST /jmap/api HTTP/1.1\r\nHost: x\r\nAuthorization: Basic AUTH\r\nContent-Type: application/json\r\n"
    b"Content-Length: LEN\r\n\r\nBODY",
    b"GET / HTTP/1.1\r\nHost: x\r\nCookie: s=abc\r\n\r\n",
    b"GET /jmap/download/a/b/c?accept=text/plain HTTP/1.1\r\nHost: x\r\nAuthorization: Basic AUTH\r\n\r\n",
]
JMAP_BODY = (b'{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],"methodCalls":'
             b'[["Mailbox/get",{"accountId":"1"},"a"],["Email/query",{"filter":{"text":"x"},"limit":5},"b"],'
             b'["Email/get",{"#ids":{"resultOf":"b","name":"Email/query","path":"/ids"}},"c"]]}')


def _http_input(rng: random.Random) -> bytes:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    template = rng.choice(HTTP_REQUESTS).replace(b"AUTH", auth)
    body = mutate(rng, JMAP_BODY) if rng.random() < 0.7 else JMAP_BODY
    request = template.replace(b"BODY", body).replace(b"LEN", str(len(body)).encode())
    if rng.random() < 0.3:
        request = mutate(rng, request)
    return request + b"\r\n"


def test_fuzz_http(server: ServerProcess) -> None:
    """Light: request framing and JMAP bodies (the JMAP methods have their own tests)."""
    rng = random.Random(SEED + 5)
    port = server.port("http")
    offset = len(server.log_text())
    count = max(50, COUNT // 10)

    async def one(request: bytes, source: str) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout=10)
            writer.write(request)
            await asyncio.wait_for(reader.read(1 << 20), timeout=4)
            writer.close()
        except (OSError, TimeoutError):
            pass

    async def run() -> None:
        for i in range(0, count, PARALLEL):
            await asyncio.gather(*(one(_http_input(rng), f"127.0.{10 + i % 200}.{j + 1}") for j in range(PARALLEL)))
        assert await _answers(port, b"HTTP/1.1 ", b"GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\n\r\n")

    asyncio.run(run())
    _check_log(server, offset)


def test_fuzzer_is_deterministic() -> None:
    a, b = random.Random(1), random.Random(1)
    assert [mutate(a, s) for s in IMAP_COMMANDS] == [mutate(b, s) for s in IMAP_COMMANDS]


def test_every_listener_still_answers(server: ServerProcess) -> None:
    async def check() -> dict[str, bool]:
        return {name: await _answers(server.port(name), expect) for name, expect in
                (("imap", b"* OK"), ("smtp", b"220 "), ("submission", b"220 "), ("pop3", b"+OK"))}

    assert all(asyncio.run(check()).values())
    _check_log(server, 0)

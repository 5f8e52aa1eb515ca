"""Multi-client stress over real sockets, imaptest-style: every client keeps a model of the
mailbox built only from what it is told (EXISTS, EXPUNGE, FETCH UID) and checks that the
server never contradicts it."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

from conftest import ServerProcess

USER, PASSWORD = "stress@example.com", "pw"


class Model:
    def __init__(self) -> None:
        self.slots: list[int | None] = []
        self.errors: list[str] = []

    def feed(self, line: bytes) -> None:
        m = re.match(rb"^\* (\d+) (EXISTS|EXPUNGE)\r\n$", line)
        if m:
            n = int(m.group(1))
            if m.group(2) == b"EXISTS":
                if n < len(self.slots):
                    self.errors.append(f"EXISTS {n} shrank the mailbox from {len(self.slots)}")
                self.slots += [None] * (n - len(self.slots))
            else:
                if not 1 <= n <= len(self.slots):
                    self.errors.append(f"EXPUNGE {n} outside 1..{len(self.slots)}")
                else:
                    del self.slots[n - 1]
            return
        m = re.match(rb"^\* (\d+) FETCH \(.*?UID (\d+)", line)
        if m:
            n, uid = int(m.group(1)), int(m.group(2))
            if not 1 <= n <= len(self.slots):
                self.errors.append(f"FETCH {n} outside 1..{len(self.slots)}")
                return
            if self.slots[n - 1] not in (None, uid):
                self.errors.append(f"msn {n} was UID {self.slots[n - 1]}, now {uid}")
            self.slots[n - 1] = uid
            known = [u for u in self.slots if u is not None]
            if known != sorted(known) or len(set(known)) != len(known):
                self.errors.append(f"UIDs out of order {known}")


class Wire:
    """A stress client's connection: commands, with literals read into their lines, and
    every untagged line fed to the client's model."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, model: Model) -> None:
        self.reader, self.writer, self.model = reader, writer, model
        self.tag = 0

    @classmethod
    async def open(cls, port: int, model: Model) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        return cls(reader, writer, model)

    async def cmd(self, text: str, literal: bytes | None = None) -> bytes:
        """The tagged reply."""
        self.tag += 1
        tag = b"s%d" % self.tag
        sent = b" {%d+}\r\n" % len(literal) + literal if literal is not None else b""
        self.writer.write(tag + b" " + text.encode() + sent + b"\r\n")
        while True:
            line = await self.reader.readline()
            while line.endswith(b"}\r\n"):
                n = int(line[line.rfind(b"{") + 1:-3])
                line += await self.reader.readexactly(n) + await self.reader.readline()
            if line.startswith(tag + b" "):
                return line
            self.model.feed(line)


async def client(port: int, seed: int, ops: int, barrier: asyncio.Barrier) -> tuple[list[str], list[int | None]]:
    rng = random.Random(seed)
    model = Model()
    wire = await Wire.open(port, model)
    cmd = wire.cmd
    assert (await cmd(f"LOGIN {USER} {PASSWORD}")).split()[1] == b"OK"
    assert (await cmd("SELECT INBOX")).split()[1] == b"OK"
    for i in range(ops):
        count = len(model.slots)
        choice = rng.random()
        if choice < 0.2:
            await cmd("APPEND INBOX", b"Subject: s%d-%d\r\n\r\nbody\r\n" % (seed, i))
        elif choice < 0.35 and count:
            n = rng.randint(1, count)
            await cmd(f"STORE {n} +FLAGS (\\Deleted)")
        elif choice < 0.45:
            await cmd("EXPUNGE")
        elif choice < 0.6 and count:
            await cmd(f"FETCH 1:{count} (UID FLAGS)")
        elif choice < 0.7:
            await cmd("UID FETCH 1:* (FLAGS)")
        elif choice < 0.8 and count:
            await cmd(f"SEARCH 1:{count} UNDELETED")
        elif choice < 0.9 and count:
            n = rng.randint(1, count)
            await cmd(f"STORE {n} FLAGS (\\Seen)")
        else:
            await cmd("NOOP")
        if model.errors:
            break
    await barrier.wait()   # everyone is done changing the mailbox
    await cmd("NOOP")
    final = await cmd("FETCH 1:* (UID)") if model.slots else b""
    wire.writer.close()
    assert final == b"" or b" OK" in final
    if None in model.slots and not model.errors:
        model.errors.append("messages never identified after FETCH 1:*")
    return model.errors, model.slots


def test_many_clients_never_see_inconsistent_numbering(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        srv.add_user(USER, PASSWORD)

        async def run() -> list[tuple[list[str], list[int | None]]]:
            barrier = asyncio.Barrier(6)
            return await asyncio.gather(*(client(srv.port("imap"), seed, 60, barrier) for seed in range(6)))

        results = asyncio.run(run())
    finally:
        srv.stop()
    for seed, (errors, _) in enumerate(results):
        assert not errors, (seed, errors[:5])
    finals = [slots for _, slots in results]
    assert all(f == finals[0] for f in finals), finals


# -- flags, keywords, MODSEQ and contents -------------------------------------------------

_FETCH_RE = re.compile(rb"^\* (\d+) FETCH \((.*)\)\r\n$", re.S)
_UID_ITEM = re.compile(rb"\bUID (\d+)")
_FLAGS_ITEM = re.compile(rb"\bFLAGS \(([^)]*)\)")
_MODSEQ_ITEM = re.compile(rb"\bMODSEQ \((\d+)\)")
_SUBJECT_ITEM = re.compile(rb"BODY\[HEADER\.FIELDS \(SUBJECT\)\] \{\d+\}\r\nSubject: ([^\r]*)\r\n")
KEYWORDS = ("$Work", "$Later", "Todo")


class FullModel(Model):
    """Also what the client was told of each message: its flags (which must use only keywords
    announced in FLAGS first, RFC 9051 7.3.5), its MODSEQ (which never goes down, RFC 7162
    3.1) and its subject (which must be the one APPENDed under that UID, whoever asks)."""

    def __init__(self, subjects: dict[int, bytes]) -> None:
        super().__init__()
        self.subjects = subjects
        self.flags: dict[int, frozenset[bytes]] = {}
        self.modseq: dict[int, int] = {}
        self.keywords: set[bytes] = set()

    def feed(self, line: bytes) -> None:
        if line.startswith(b"* FLAGS ("):
            self.keywords = {f for f in line[9:line.index(b")")].split() if not f.startswith(b"\\")}
            return
        m = re.match(rb"^\* (\d+) EXPUNGE\r\n$", line)
        if m and 1 <= int(m.group(1)) <= len(self.slots):
            uid = self.slots[int(m.group(1)) - 1]
            self.flags.pop(uid, None)               # type: ignore[arg-type]
        super().feed(line)
        m = _FETCH_RE.match(line)
        if m is None:
            return
        items = m.group(2)
        n = int(m.group(1))
        uid_m = _UID_ITEM.search(items)
        uid = int(uid_m.group(1)) if uid_m else (self.slots[n - 1] if 1 <= n <= len(self.slots) else None)
        if uid is None:
            return
        flags_m = _FLAGS_ITEM.search(items)
        if flags_m is not None:
            flags = frozenset(flags_m.group(1).split())
            unknown = {f for f in flags if not f.startswith(b"\\")} - self.keywords
            if unknown:
                self.errors.append(f"UID {uid}: keywords {sorted(unknown)} used before FLAGS announced them")
            self.flags[uid] = flags
        modseq_m = _MODSEQ_ITEM.search(items)
        if modseq_m is not None:
            modseq = int(modseq_m.group(1))
            if modseq < self.modseq.get(uid, 0):
                self.errors.append(f"UID {uid}: MODSEQ went down from {self.modseq[uid]} to {modseq}")
            self.modseq[uid] = modseq
        subject_m = _SUBJECT_ITEM.search(items)
        if subject_m is not None and uid in self.subjects and subject_m.group(1) != self.subjects[uid]:
            self.errors.append(f"UID {uid}: subject {subject_m.group(1)!r}, appended as {self.subjects[uid]!r}")


async def flags_client(port: int, seed: int, ops: int, barrier: asyncio.Barrier,
                       subjects: dict[int, bytes]) -> tuple[list[str], bytes, dict[int, frozenset[bytes]]]:
    rng = random.Random(seed)
    model = FullModel(subjects)
    wire = await Wire.open(port, model)

    async def cmd(text: str, literal: bytes | None = None) -> bytes:
        line = await wire.cmd(text, literal)
        if b" OK " not in line[:12]:
            model.errors.append(f"{text[:50]!r} answered {line!r}")
        return line

    await cmd(f"LOGIN {USER} {PASSWORD}")
    await cmd("SELECT INBOX (CONDSTORE)")
    for i in range(ops):
        count = len(model.slots)
        choice = rng.random()
        n = rng.randint(1, count) if count else 0
        keyword = rng.choice(KEYWORDS)
        if choice < 0.15:
            subject = b"f%d-%d" % (seed, i)
            line = await cmd("APPEND INBOX", b"Subject: %s\r\n\r\nbody\r\n" % subject)
            m = re.search(rb"\[APPENDUID \d+ (\d+)\]", line)
            if m is None:
                model.errors.append(f"APPEND without APPENDUID: {line!r}")
            else:
                subjects[int(m.group(1))] = subject
        elif choice < 0.3 and n:
            await cmd(f"STORE {n} +FLAGS ({keyword})")
        elif choice < 0.4 and n:
            await cmd(f"STORE {n} -FLAGS ({keyword} \\Flagged)")
        elif choice < 0.47 and n:
            await cmd(f"STORE {n} FLAGS (\\Seen {keyword})")
        elif choice < 0.54 and n:
            await cmd(f"STORE {n} +FLAGS.SILENT (\\Flagged)")
            model.flags.pop(model.slots[n - 1], None)   # type: ignore[arg-type]  # not told: unknown now
        elif choice < 0.6 and n:
            await cmd(f"STORE {n} +FLAGS (\\Deleted)")
        elif choice < 0.65:
            await cmd("EXPUNGE")
        elif choice < 0.8 and count:
            await cmd(f"FETCH {n}:{count} (UID FLAGS MODSEQ BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        elif choice < 0.9:
            await cmd("UID FETCH 1:* (FLAGS)")
        else:
            await cmd("NOOP")
        if model.errors:
            break
    await barrier.wait()                # every change is made: a NOOP must bring the rest
    await cmd("NOOP")
    told = dict(model.flags)
    final = await cmd("FETCH 1:* (UID FLAGS MODSEQ)") if model.slots else b""
    seen_final = dict(model.flags)
    wire.writer.close()
    for uid, flags in told.items():
        if seen_final.get(uid) != flags:
            model.errors.append(f"UID {uid}: told {sorted(flags)} by the NOOP, but FETCH says {seen_final.get(uid)}")
    return model.errors, final, seen_final


def test_many_clients_agree_on_flags_keywords_modseqs_and_contents(tmp_path: Path) -> None:
    """imaptest's checks beyond numbering: every flag change reaches every session by the next
    NOOP, keywords are announced before use, MODSEQs never go down, and a UID always names the
    message APPENDed under it."""
    srv = ServerProcess(tmp_path / "data").start()
    try:
        srv.add_user(USER, PASSWORD)
        subjects: dict[int, bytes] = {}

        async def run() -> list[tuple[list[str], bytes, dict[int, frozenset[bytes]]]]:
            barrier = asyncio.Barrier(6)
            return await asyncio.gather(*(flags_client(srv.port("imap"), seed, 80, barrier, subjects)
                                          for seed in range(6)))

        results = asyncio.run(run())
    finally:
        srv.stop()
    for seed, (errors, _, _) in enumerate(results):
        assert not errors, (seed, errors[:5])
    finals = [{uid: flags - {b"\\Recent"} for uid, flags in final.items()} for _, _, final in results]
    assert all(f == finals[0] for f in finals)
    assert len(subjects) > 20 and any(finals[0].values())
    # \\Recent belongs to one session only (RFC 3501 2.3.2): never two claim the same message.
    recent = [uid for _, _, final in results for uid, flags in final.items() if b"\\Recent" in flags]
    assert recent and len(recent) == len(set(recent))

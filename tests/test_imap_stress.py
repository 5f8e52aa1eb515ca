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


async def client(port: int, seed: int, ops: int, barrier: asyncio.Barrier) -> tuple[list[str], list[int | None]]:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    model = Model()
    tag = 0

    async def cmd(text: str, literal: bytes | None = None) -> bytes:
        nonlocal tag
        tag += 1
        t = b"s%d" % tag
        if literal is None:
            writer.write(t + b" " + text.encode() + b"\r\n")
        else:
            writer.write(t + b" " + text.encode() + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        while True:
            line = await reader.readline()
            if line.endswith(b"}\r\n"):
                n = int(line[line.rfind(b"{") + 1:-3])
                line = line[:-2] + await reader.readexactly(n) + await reader.readline()
            if line.startswith(t + b" "):
                return line
            model.feed(line)

    await reader.readline()
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
    writer.close()
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

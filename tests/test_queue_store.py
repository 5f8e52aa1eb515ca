"""The queue table and the runner's bookkeeping, against the test store (SQLite, or
PostgreSQL with MAILHAVEN_TEST_STORE=postgres), with a scripted peer for outcomes."""

from __future__ import annotations

import asyncio
import email
import email.policy
from typing import Any

import pytest

from mailhaven.config import Config, QueueConfig, RelayConfig
from mailhaven.logs import Log
from mailhaven.queue.api import OutboundMessage, OutboundRecipient
from mailhaven.queue.delivery import Timeouts
from mailhaven.queue.runner import QueueRunner
from mailhaven.queue.store import queue_store

RAW = b"From: alice@lancs.example\r\nTo: bob@remote.example\r\nSubject: hi\r\n\r\nHello.\r\n"


async def message(store: Any, *rcpts: str, notify: frozenset[str] | None = None) -> OutboundMessage:
    blob = await store.put_blob(RAW)
    return OutboundMessage(blob=blob, mail_from="alice@lancs.example",
                           recipients=tuple(OutboundRecipient(address=r, notify=notify) for r in rcpts))


async def test_enqueue_claim_lease_and_finish(store: Any) -> None:
    q = queue_store(store)
    await q.open()
    ids = await q.enqueue(await message(store, "a@x.example", "b@y.example"), now=1000.0)
    assert len(ids) == 2
    entries = await q.list()
    assert [(e.rcpt, e.domain, e.state, e.attempts) for e in entries] == [
        ("a@x.example", "x.example", "queued", 0), ("b@y.example", "y.example", "queued", 0)]
    assert entries[0].msg == entries[1].msg                        # one message, two recipients
    assert await q.claim("r1", now=999.0, lease=60, limit=10) == []   # not due yet
    first = await q.claim("r1", now=1000.0, lease=60, limit=10)
    assert {e.id for e in first} == set(ids)
    assert await q.claim("r2", now=1010.0, lease=60, limit=10) == []  # leased to r1
    again = await q.claim("r2", now=1061.0, lease=60, limit=10)       # r1's lease ran out
    assert {e.id for e in again} == set(ids) and all(e.lease_owner == "r2" for e in again)
    await q.defer(ids[0], next_attempt=2000.0, reply="451 4.3.0 later", warned=False)
    await q.finish(ids[1])
    (left,) = await q.list()
    assert (left.id, left.attempts, left.last_reply, left.lease_owner) == (ids[0], 1, "451 4.3.0 later", None)
    assert await q.set_state(ids[0], "held") == 1
    assert await q.claim("r1", now=5000.0, lease=60, limit=10) == []  # held: never attempted
    assert await q.set_state(ids[0], "queued", now=100.0) == 1
    assert [e.id for e in await q.claim("r1", now=200.0, lease=60, limit=10)] == [ids[0]]
    await q.release_leases("r1")
    assert (await q.get(ids[0])).lease_owner is None              # type: ignore[union-attr]
    assert await q.delete(ids[0]) and not await q.delete(ids[0])
    assert await q.get(ids[0]) is None


async def test_queued_blobs_survive_garbage_collection(store: Any) -> None:
    q = queue_store(store)
    await q.open()
    msg = await message(store, "a@x.example")
    await q.enqueue(msg)
    await store.collect_garbage(grace=0)
    assert await store.read_blob(msg.blob.id) == RAW


class Peer:
    """A scripted SMTP server: answers RCPT with the next code from ``rcpt_codes``."""

    def __init__(self, rcpt_codes: list[str]) -> None:
        self.rcpt_codes = rcpt_codes
        self.messages: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer ESMTP\r\n")
        accepted = 0
        while line := await reader.readline():
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                writer.write(b"250-peer\r\n250 PIPELINING\r\n")
            elif cmd == b"RCPT":
                code = self.rcpt_codes.pop(0) if self.rcpt_codes else "250 2.1.5 ok"
                accepted += code.startswith("2")
                writer.write(code.encode() + b"\r\n")
            elif cmd == b"DATA" and not accepted:
                writer.write(b"554 5.5.1 no valid recipients\r\n")
            elif cmd == b"DATA":
                writer.write(b"354 go\r\n")
                body = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    body += chunk
                self.messages.append(body)
                accepted = 0
                writer.write(b"250 2.0.0 ok\r\n")
            elif cmd in (b"RSET", b"MAIL"):
                accepted = 0
                writer.write(b"250 ok\r\n")
            elif cmd == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class Ctx:
    def __init__(self, store: Any, config: Config) -> None:
        self.store, self.config, self.log = store, config, Log("test")
        self.outbound = None


async def runner_for(store: Any, port: int, **queue: Any) -> QueueRunner:
    await store.add_domain("lancs.example")
    await store.add_account("alice@lancs.example", "pw")
    config = Config(hostname="mx.lancs.example",
                    queue=QueueConfig(**{"retry": (0.0,), **queue}),
                    relay=RelayConfig(routes={"remote.example": f"127.0.0.1:{port}"}, tls="none"))
    runner = QueueRunner(Ctx(store, config), timeouts=Timeouts(connect=5, command=10, final=10))
    await runner.queue.open()
    return runner


async def alice_inbox(store: Any) -> list[bytes]:
    acct = await store.get_account("alice@lancs.example")
    box = await store.get_mailbox(acct.id, "INBOX")
    return [await store.read_blob(m.blob_id) for m in await store.list_messages(box.id)]


async def test_delay_warning_then_expiry_bounce(store: Any) -> None:
    peer = Peer(["451 4.3.0 try later"] * 3)
    port = await peer.start()
    try:
        runner = await runner_for(store, port, retry=(3600.0,), warn_after=0.0, expire=86400.0)
        await runner.enqueue(await message(store, "bob@remote.example"))
        await runner.drain(timeout=5)
        (entry,) = await runner.queue.list()
        assert entry.attempts == 1 and entry.warned and entry.last_reply == "451 4.3.0 try later"
        (warning,) = await alice_inbox(store)
        report = email.message_from_bytes(warning, policy=email.policy.default)
        assert report["Subject"].startswith("Delayed Mail")
        status = list(report.iter_parts())[1].as_string()
        assert "Action: delayed" in status and "Status: 4.3.0" in status and "Will-Retry-Until:" in status
        await runner.queue.set_state(entry.id, "queued", now=0.0)                # due again
        await runner.drain(timeout=5)
        (entry,) = await runner.queue.list()
        assert entry.attempts == 2 and len(await alice_inbox(store)) == 1        # warned only once
        runner.config = QueueConfig(retry=(3600.0,), warn_after=0.0, expire=0.0)  # now too old
        await runner.queue.set_state(entry.id, "queued", now=0.0)
        await runner.drain(timeout=5)
        assert await runner.queue.list() == []
        bounce = (await alice_inbox(store))[-1]
        assert b"Action: failed" in bounce and b"Status: 4.4.7" in bounce and b"delivery time expired" in bounce
        assert peer.messages == []
    finally:
        peer.close()


async def test_notify_never_and_success(store: Any) -> None:
    peer = Peer(["550 5.1.1 no such user"])
    port = await peer.start()
    try:
        runner = await runner_for(store, port)
        await runner.enqueue(await message(store, "gone@remote.example", notify=frozenset({"NEVER"})))
        await runner.drain(timeout=2)
        assert await runner.queue.list() == [] and await alice_inbox(store) == []   # NEVER: no DSN
        await runner.enqueue(await message(store, "bob@remote.example", notify=frozenset({"SUCCESS"})))
        await runner.drain(timeout=2)
        assert len(peer.messages) == 1 and peer.messages[0].endswith(b"Hello.\r\n")
        (report,) = await alice_inbox(store)
        assert b"Action: relayed" in report and b"Status: 2.0.0" in report   # the peer has no DSN
    finally:
        peer.close()


@pytest.mark.parametrize("codes,delivered", [(["250 ok", "250 ok"], 1), (["550 5.1.1 no", "250 ok"], 1)])
async def test_one_transaction_for_two_recipients(store: Any, codes: list[str], delivered: int) -> None:
    peer = Peer(list(codes))
    port = await peer.start()
    try:
        runner = await runner_for(store, port)
        await runner.enqueue(await message(store, "a@remote.example", "b@remote.example"))
        await runner.drain(timeout=2)
        assert len(peer.messages) == delivered
        assert await runner.queue.list() == []
    finally:
        peer.close()

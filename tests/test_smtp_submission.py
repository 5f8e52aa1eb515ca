"""Submission in-process: the listener on a real socket, a real SQLite store and a
recording outbound queue, to check exactly what is handed to the queue."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailhaven.app import AppContext
from mailhaven.config import config_from_dict
from mailhaven.logs import Log
from mailhaven.queue.api import OutboundMessage
from mailhaven.smtp.server import start_listener
from mailhaven.tls import server_context


@dataclass
class RecordingOutbound:
    messages: list[OutboundMessage] = field(default_factory=list)
    fail: bool = False

    async def enqueue(self, message: OutboundMessage) -> list[int]:
        if self.fail:
            raise RuntimeError("queue unavailable")
        self.messages.append(message)
        return list(range(len(message.recipients)))


@pytest.fixture
async def app(tmp_path: Path, store: Any) -> AsyncIterator[AppContext]:
    """The conftest ``store`` fixture: SQLite, or PostgreSQL with MAILHAVEN_TEST_STORE=postgres."""
    config = config_from_dict({"hostname": "mx.lancs.example"}, tmp_path / "data")
    await store.add_domain("lancs.example")
    await store.add_account("alice@lancs.example", "alice-pw")
    await store.add_account("dave@lancs.example", "dave-pw")
    yield AppContext(config=config, store=store, log=Log("test"), tls=server_context(config),
                     outbound=RecordingOutbound())


async def session(port: int, lines: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await read_reply(reader)]
    for line in lines:
        writer.write(line)
        if line.endswith(b"\r\n.\r\n") or not line.startswith((b"Subject", b"From")):
            replies.append(await read_reply(reader))
    writer.close()
    return replies


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        out += line
        if line[3:4] != b"-":
            return out


AUTH = b"AUTH PLAIN " + base64.b64encode(b"\0alice@lancs.example\0alice-pw") + b"\r\n"


async def test_local_and_remote_recipients(app: AppContext) -> None:
    listener = await start_listener(app, "submission", "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        body = b"From: Alice <alice@lancs.example>\r\nSubject: both\r\n\r\nhello\r\n.\r\n"
        replies = await session(port, [
            b"EHLO c\r\n", AUTH,
            b"MAIL FROM:<alice@lancs.example> RET=HDRS ENVID=env+2B1 BODY=8BITMIME\r\n",
            b"RCPT TO:<dave@lancs.example>\r\n",
            b"RCPT TO:<bob@nyu.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;bob@nyu.example\r\n",
            b"RCPT TO:<carol@far.example>\r\n",
            b"DATA\r\n", body, b"QUIT\r\n"])
    finally:
        listener.close()
        await listener.wait_closed()
    assert [r[:3] for r in replies] == [b"220", b"250", b"235", b"250", b"250", b"250", b"250", b"354",
                                        b"250", b"221"]
    outbound: Any = app.outbound
    assert len(outbound.messages) == 1
    msg = outbound.messages[0]
    assert msg.mail_from == "alice@lancs.example" and msg.authenticated_as == "alice@lancs.example"
    assert (msg.ret, msg.envid, msg.body) == ("HDRS", "env+1", "8BITMIME")
    assert [r.address for r in msg.recipients] == ["bob@nyu.example", "carol@far.example"]
    assert msg.recipients[0].notify == frozenset({"FAILURE", "DELAY"})
    assert msg.recipients[0].orcpt == "rfc822;bob@nyu.example"
    queued = await app.store.read_blob(msg.blob.id)
    assert queued.startswith(b"Received: from c ([127.0.0.1])")          # no Return-Path for relaying
    assert b"with ESMTPA id" in queued and b"\r\nMessage-ID: <" in queued and b"\r\nDate: " in queued
    assert queued.endswith(b"\r\n\r\nhello\r\n")
    dave = await app.store.get_account("dave@lancs.example")
    inbox = await app.store.get_mailbox(dave.id, "INBOX")
    [local] = await app.store.list_messages(inbox.id)
    stored = await app.store.read_blob(local.blob_id)
    assert stored.startswith(b"Return-Path: <alice@lancs.example>\r\nReceived: ")
    # One submission, one Message-ID: both copies carry the same added header and body.
    mid = [line for line in queued.split(b"\r\n") if line.startswith(b"Message-ID:")]
    assert len(mid) == 1 and mid[0] in stored.split(b"\r\n")
    assert stored.endswith(b"\r\n\r\nhello\r\n")


async def test_queue_failure_is_never_acknowledged(app: AppContext) -> None:
    outbound: Any = app.outbound
    outbound.fail = True
    listener = await start_listener(app, "submission", "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        replies = await session(port, [
            b"EHLO c\r\n", AUTH, b"MAIL FROM:<alice@lancs.example>\r\n", b"RCPT TO:<bob@nyu.example>\r\n",
            b"DATA\r\n", b"From: alice@lancs.example\r\n\r\nx\r\n.\r\n", b"QUIT\r\n"])
    finally:
        listener.close()
        await listener.wait_closed()
    assert replies[-2].startswith(b"451 4.3.0")


async def test_no_outbound_service_means_temporary_refusal(app: AppContext) -> None:
    app.outbound = None
    listener = await start_listener(app, "submission", "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        replies = await session(port, [b"EHLO c\r\n", AUTH, b"MAIL FROM:<alice@lancs.example>\r\n",
                                       b"RCPT TO:<bob@nyu.example>\r\n", b"QUIT\r\n"])
    finally:
        listener.close()
        await listener.wait_closed()
    assert replies[-2].startswith(b"451 4.4.0")


async def test_port_25_never_relays_even_with_a_queue(app: AppContext) -> None:
    listener = await start_listener(app, "smtp", "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        replies = await session(port, [b"EHLO c\r\n", b"MAIL FROM:<alice@lancs.example>\r\n",
                                       b"RCPT TO:<bob@nyu.example>\r\n", b"QUIT\r\n"])
    finally:
        listener.close()
        await listener.wait_closed()
    assert replies[-2].startswith(b"550 5.7.1")

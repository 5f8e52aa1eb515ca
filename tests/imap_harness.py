"""Drive the sans-IO IMAP session in memory against a real SQLite store (no sockets)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import Any

from mailhaven.config import Config, LimitsConfig
from mailhaven.imap.commands import new_session
from mailhaven.imap.parser import NEED_DATA, CommandReader
from mailhaven.imap.session import Mode, SessionContext
from mailhaven.logs import Log


class Client:
    """One in-memory IMAP connection. ``send`` returns everything the server wrote."""

    def __init__(self, store: Any, *, peer: str = "127.0.0.1", tls: bool = False,
                 config: Config | None = None, now: float | None = None) -> None:
        self.store = store
        self.sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        config = config or Config(limits=replace(LimitsConfig(), errors_per_session=10))
        ctx = SessionContext(store=store, config=config, log=Log("imap-test"), peer=peer, tls=tls,
                             sleep=sleep, hostname="mail.test",
                             offload=asyncio.to_thread)   # as imap/server.py: file views off the loop
        if now is not None:
            ctx.now = lambda: now
        self.reader = CommandReader(max_literal=config.limits.imap_literal)
        self.session = new_session(ctx, self.reader)
        self.greeting = self.session.greeting()
        self.sub: Any = None
        self._tag = 0

    def _drain_changes(self) -> None:
        if self.sub is None and self.session.account_id is not None:
            self.sub = self.store.subscribe(self.session.account_id)
        while self.sub is not None:
            change = self.sub.get_nowait()
            if change is None:
                break
            self.session.note_change(change)

    async def send(self, data: bytes | str) -> bytes:
        if isinstance(data, str):
            data = data.encode()
        self._drain_changes()
        self.reader.receive_data(data)
        s = self.session
        while not s.closing:
            if s.mode is Mode.COMMAND:
                ev = self.reader.next_event()
                if ev is NEED_DATA:
                    break
                await s.handle_event(ev)  # type: ignore[arg-type]
            else:
                line = self.reader.next_line()
                if line is NEED_DATA:
                    break
                await s.handle_line(line)  # type: ignore[arg-type]
            self._drain_changes()
        return s.take_output()

    async def poll(self) -> bytes:
        """What an IDLE session would be told about changes that arrived."""
        self._drain_changes()
        await self.session.idle_update()
        return self.session.take_output()

    async def cmd(self, text: str, expect: str = "OK") -> bytes:
        """Send one tagged command; assert the tagged status; return the whole output."""
        self._tag += 1
        tag = f"t{self._tag}"
        out = await self.send(f"{tag} {text}\r\n")
        m = re.search(rb"^" + tag.encode() + rb" (OK|NO|BAD)\b", out, re.M)
        assert m is not None, out
        assert m.group(1).decode() == expect, out
        return out

    async def login(self, user: str = "alice@example.com", password: str = "s3cret") -> None:
        await self.cmd(f'LOGIN "{user}" "{password}"')


async def make_account(store: Any, address: str = "alice@example.com", password: str = "s3cret",
                       quota: int | None = None) -> Any:
    domain = address.rpartition("@")[2]
    if domain not in [d.name for d in await store.list_domains()]:
        await store.add_domain(domain)
    return await store.add_account(address, password, quota=quota)


async def deliver(store: Any, account_id: int, raw: bytes, mailbox: str = "INBOX",
                  flags: tuple[str, ...] = ()) -> Any:
    blob = await store.put_blob(raw)
    [result] = await store.deliver(blob, [account_id], mailbox=mailbox, flags=flags)
    return result.message


def untagged(out: bytes, word: str) -> list[bytes]:
    return [line for line in out.split(b"\r\n") if re.match(rb"^\* (\d+ )?" + word.encode() + rb"\b", line)]

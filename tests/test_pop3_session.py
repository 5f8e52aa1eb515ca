"""Whole POP3 sessions in memory (no sockets) against a real store."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from mailhaven.auth.sasl import ScramClient
from mailhaven.auth.throttle import LoginThrottle
from mailhaven.config import Config, LimitsConfig, SecurityConfig
from mailhaven.logs import Log
from mailhaven.pop3 import protocol as P
from mailhaven.pop3.lease import MaildropLeases
from mailhaven.pop3.session import Session, SessionContext

USER = "bob@example.org"
PASSWORD = "correct horse"


class Client:
    """Feeds lines to a session and collects what it answers."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def send(self, data: bytes) -> bytes:
        self.session.protocol.receive_data(data)
        while not self.session.closing and not self.session.starttls_pending:
            event = self.session.protocol.next_event()
            if event is P.NEED_DATA:
                break
            await self.session.handle(event)  # type: ignore[arg-type]
        return self.session.take_output()

    async def cmd(self, line: str) -> bytes:
        return await self.send(line.encode() + b"\r\n")

    async def login(self, user: str = USER, password: str = PASSWORD) -> bytes:
        await self.cmd(f"USER {user}")
        return await self.cmd(f"PASS {password}")


class Env:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.locks = MaildropLeases(store)
        self.sleeps: list[float] = []
        self.config = Config()
        self.throttle = self.make_throttle(self.config.security)

    def make_throttle(self, policy: SecurityConfig) -> LoginThrottle:
        return LoginThrottle(self.store, policy, sleep=self.sleep)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, peer: str = "127.0.0.1", tls: bool = False, config: Config | None = None) -> Client:
        ctx = SessionContext(store=self.store, config=config or self.config, log=Log("test"), locks=self.locks,
                             throttle=self.throttle, sleep=self.sleep, peer=peer, tls=tls)
        session = Session(ctx)
        assert session.greeting().startswith(b"+OK")
        return Client(session)

    async def deliver(self, raw: bytes) -> int:
        acct = await self.store.get_account(USER)
        blob = await self.store.put_blob(raw)
        [result] = await self.store.deliver(blob, [acct.id])
        return int(result.message.uid)

    async def inbox(self) -> Any:
        acct = await self.store.get_account(USER)
        return await self.store.get_mailbox(acct.id, "INBOX")


def message(n: int) -> bytes:
    return (f"From: a@example.net\r\nTo: {USER}\r\nSubject: message {n}\r\n\r\n"
            f"line one of {n}\r\n.dotted line\r\nline three\r\n").encode()


@pytest.fixture
async def env(store: Any) -> Env:
    await store.add_domain("example.org")
    await store.add_account(USER, PASSWORD)
    e = Env(store)
    for n in range(1, 4):
        await e.deliver(message(n))
    return e


async def test_answer_now_gives_what_handle_gives_or_declines(env: Env) -> None:
    """The server offers each arriving RETR to Session.answer_now (net StreamProtocol): it
    answers only one whole RETR of a live message already read ahead, with the bytes handle
    sends; anything else it declines having consumed nothing."""
    c = env.client()
    await c.login()
    expected = {n: await c.cmd(f"RETR {n}") for n in (1, 2, 3)}
    await c.cmd("QUIT")
    c = env.client()
    await c.login()
    assert await c.cmd("RETR 1") == expected[1]            # read, and 2 and 3 read ahead
    assert c.session.answer_now(b"RETR 2\r\n")
    assert c.session.take_output() == expected[2]
    for declined in (b"RETR 2\r\n", b"RETR 3", b"RETR 3\r\nNOOP\r\n", b"RETR 9\r\n", b"NOOP\r\n"):
        assert not c.session.answer_now(declined), declined
        assert c.session.take_output() == b"" and c.session.protocol.buffered == 0
    assert (await c.cmd("DELE 3")).startswith(b"+OK")
    assert not c.session.answer_now(b"RETR 3\r\n")
    assert (await c.cmd("RETR 3")).startswith(b"-ERR")
    assert await c.cmd("RETR 2") == expected[2]


async def test_user_pass_stat_list_uidl_retr_top(env: Env) -> None:
    c = env.client()
    assert (await c.login()).startswith(b"+OK Logged in; 3 messages")
    stat = await c.cmd("STAT")
    sizes = [len(message(n)) for n in (1, 2, 3)]
    assert stat == f"+OK 3 {sum(sizes)}\r\n".encode()
    assert await c.cmd("LIST") == (b"+OK Scan list follows\r\n".replace(b"Scan list follows",
                                   f"3 messages ({sum(sizes)} octets)".encode())
                                   + b"".join(f"{i} {s}\r\n".encode() for i, s in enumerate(sizes, 1)) + b".\r\n")
    assert await c.cmd("LIST 2") == f"+OK 2 {sizes[1]}\r\n".encode()
    box = await env.inbox()
    assert await c.cmd("UIDL 1") == f"+OK 1 {box.uidvalidity}.1\r\n".encode()
    retr = await c.cmd("RETR 2")
    assert retr.startswith(b"+OK ")
    assert retr.endswith(b"line one of 2\r\n..dotted line\r\nline three\r\n.\r\n")
    top = await c.cmd("TOP 3 1")
    assert top.endswith(b"Subject: message 3\r\n\r\nline one of 3\r\n.\r\n")
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    assert c.session.closing


async def test_deletions_apply_only_at_quit_and_all_at_once(env: Env) -> None:
    c = env.client()
    await c.login()
    assert await c.cmd("DELE 1") == b"+OK Message deleted\r\n"
    assert await c.cmd("DELE 1") == b"-ERR Message already deleted\r\n"
    assert (await c.cmd("RETR 1")).startswith(b"-ERR")
    assert await c.cmd("DELE 3") == b"+OK Message deleted\r\n"
    assert (await c.cmd("STAT")).startswith(b"+OK 1 ")
    uidl = await c.cmd("UIDL")
    assert b"\r\n2 " in uidl and b"\r\n1 " not in uidl
    box = await env.inbox()
    assert len(await env.store.list_messages(box.id)) == 3   # nothing yet
    assert (await c.cmd("QUIT")).startswith(b"+OK Mailhaven POP3 server signing off (1 message left)")
    assert [m.uid for m in await env.store.list_messages(box.id)] == [2]


async def test_dropped_connection_deletes_nothing_and_releases_the_lock(env: Env) -> None:
    c = env.client()
    await c.login()
    await c.cmd("DELE 1")
    await c.session.close()
    box = await env.inbox()
    assert len(await env.store.list_messages(box.id)) == 3
    c2 = env.client()
    assert (await c2.login()).startswith(b"+OK")


async def test_rset_unmarks(env: Env) -> None:
    c = env.client()
    await c.login()
    await c.cmd("DELE 1")
    await c.cmd("DELE 2")
    assert (await c.cmd("RSET")).startswith(b"+OK maildrop has 3 messages")
    await c.cmd("QUIT")
    assert len(await env.store.list_messages((await env.inbox()).id)) == 3


async def test_second_session_gets_in_use(env: Env) -> None:
    a, b = env.client(), env.client()
    await a.login()
    assert await b.login() == b"-ERR [IN-USE] Mailbox is locked by another session\r\n"
    assert b.session.state is P.State.AUTHORIZATION
    await a.cmd("QUIT")
    assert (await b.login()).startswith(b"+OK")


async def test_snapshot_at_login_and_uidl_stable_across_sessions(env: Env) -> None:
    c = env.client()
    await c.login()
    first = await c.cmd("UIDL")
    await env.deliver(message(4))
    assert (await c.cmd("STAT")).startswith(b"+OK 3 ")
    await c.cmd("DELE 2")
    await c.cmd("QUIT")
    c = env.client()
    await c.login()
    second = await c.cmd("UIDL")
    ids1 = {line.split()[1] for line in first.split(b"\r\n")[1:-2]}
    ids2 = [line.split()[1] for line in second.split(b"\r\n")[1:-2]]
    box = await env.inbox()
    assert ids1 - set(ids2) == {f"{box.uidvalidity}.2".encode()}
    assert ids2 == [f"{box.uidvalidity}.{u}".encode() for u in (1, 3, 4)]


async def test_retr_of_message_expunged_elsewhere_answers_err(env: Env) -> None:
    c = env.client()
    await c.login()
    box = await env.inbox()
    await env.store.expunge(box.id, [2])
    assert await c.cmd("RETR 2") == b"-ERR Message was expunged by another session\r\n"
    assert await c.cmd("TOP 2 0") == b"-ERR Message was expunged by another session\r\n"
    assert (await c.cmd("RETR 1")).startswith(b"+OK")
    await c.cmd("DELE 2")
    assert (await c.cmd("QUIT")).startswith(b"+OK")


async def test_retrs_in_order_read_ahead_in_one_store_trip(env: Env) -> None:
    """RETR 1, 2, 3 ask the store once (message 1 and the two after it), not per RETR."""
    trips: list[str] = []
    for name in ("get_raw", "get_messages", "read_blob"):
        real = getattr(env.store, name)

        async def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            trips.append(_name)
            return await _real(*args, **kw)

        setattr(env.store, name, counted)
    c = env.client()
    await c.login()
    for n in (1, 2, 3):
        assert (await c.cmd(f"RETR {n}")).endswith(f"line one of {n}\r\n..dotted line\r\nline three\r\n.\r\n"
                                                     .encode())
    assert trips == ["get_raw"]


async def test_message_read_ahead_then_expunged_elsewhere_answers_err(env: Env) -> None:
    c = env.client()
    await c.login()
    assert (await c.cmd("RETR 1")).startswith(b"+OK")        # reads 2 and 3 ahead
    box = await env.inbox()
    await env.store.expunge(box.id, [2])
    assert await c.cmd("RETR 2") == b"-ERR Message was expunged by another session\r\n"
    assert (await c.cmd("RETR 3")).endswith(b"line one of 3\r\n..dotted line\r\nline three\r\n.\r\n")
    assert (await c.cmd("QUIT")).startswith(b"+OK")


async def test_retr_marks_seen_at_update(env: Env) -> None:
    c = env.client()
    await c.login()
    await c.cmd("RETR 1")
    await c.cmd("TOP 2 0")
    box = await env.inbox()
    assert all("\\Seen" not in m.flags for m in await env.store.list_messages(box.id))
    await c.cmd("QUIT")
    flags = {m.uid: m.flags for m in await env.store.list_messages(box.id)}
    assert "\\Seen" in flags[1] and "\\Seen" not in flags[2]


async def test_plaintext_refused_from_untrusted_peer_without_tls(env: Env) -> None:
    c = env.client(peer="192.0.2.7")
    capa = await c.cmd("CAPA")
    assert b"\r\nUSER\r\n" not in capa and b"PLAIN" not in capa and b"SCRAM-SHA-256" in capa
    assert b"\r\nSTLS\r\n" in capa
    assert await c.cmd(f"USER {USER}") == (b"-ERR [AUTH] Plaintext authentication disallowed on "
                                          b"non-secure connections\r\n")
    assert (await c.cmd("AUTH PLAIN")).startswith(b"-ERR [AUTH]")
    c2 = env.client(peer="192.0.2.7", tls=True)
    capa = await c2.cmd("CAPA")
    assert b"\r\nUSER\r\n" in capa and b"PLAIN" in capa and b"STLS" not in capa
    assert (await c2.login()).startswith(b"+OK")


async def test_loopback_not_trusted_when_configured(env: Env) -> None:
    config = replace(Config(), security=SecurityConfig(loopback_is_secure=False))
    c = env.client(config=config)
    assert (await c.cmd(f"USER {USER}")).startswith(b"-ERR [AUTH]")


async def test_pass_needs_user_first(env: Env) -> None:
    c = env.client()
    assert await c.cmd("PASS x") == b"-ERR Give USER first\r\n"


async def test_auth_plain_initial_response_and_continuation(env: Env) -> None:
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    c = env.client()
    assert (await c.cmd(f"AUTH PLAIN {token}")).startswith(b"+OK Logged in")
    await c.cmd("QUIT")
    c = env.client()
    assert await c.cmd("AUTH PLAIN") == b"+ \r\n"
    assert c.session.state is P.State.SASL
    assert (await c.cmd(token)).startswith(b"+OK Logged in")
    await c.cmd("QUIT")


async def test_auth_cancel_and_garbage(env: Env) -> None:
    c = env.client()
    await c.cmd("AUTH PLAIN")
    assert await c.cmd("*") == b"-ERR Authentication cancelled\r\n"
    assert c.session.state is P.State.AUTHORIZATION
    await c.cmd("AUTH PLAIN")
    assert (await c.cmd("%%%")).startswith(b"-ERR [AUTH]")
    assert c.session.state is P.State.AUTHORIZATION
    assert (await c.cmd("AUTH CRAM-MD5")).startswith(b"-ERR Unsupported")
    listing = await c.cmd("AUTH")
    assert listing.startswith(b"+OK") and b"PLAIN\r\n" in listing and listing.endswith(b".\r\n")


async def test_auth_scram_sha_256(env: Env) -> None:
    c = env.client(peer="192.0.2.9")                      # no plaintext needed
    client = ScramClient(USER, PASSWORD)
    reply = await c.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client.first()).decode())
    assert reply.startswith(b"+ ")
    server_first = base64.b64decode(reply[2:].strip())
    reply = await c.cmd(base64.b64encode(client.final(server_first)).decode())
    assert reply.startswith(b"+ ")
    assert client.verify(base64.b64decode(reply[2:].strip()))
    assert (await c.cmd("")).startswith(b"+OK Logged in")


async def test_auth_failures_are_delayed_and_limited(env: Env) -> None:
    config = replace(Config(), limits=LimitsConfig(auth_failures=3))
    env.throttle = env.make_throttle(SecurityConfig(login_failures_per_account=100, login_delay=0.25))
    c = env.client(config=config)
    for _ in range(2):
        assert await c.login(password="wrong") == b"-ERR [AUTH] Authentication failed\r\n"
        assert not c.session.closing
    assert await c.login(password="wrong") == b"-ERR [AUTH] Authentication failed\r\n"
    assert c.session.closing                             # the connection's own limit
    assert env.sleeps == [0.25, 0.5, 1.0]                # the shared throttle's delays


async def test_throttle_blocks_even_the_right_password(env: Env) -> None:
    env.throttle = env.make_throttle(SecurityConfig(login_failures_per_account=3))
    for _ in range(2):
        c = env.client()
        assert await c.login(password="nope") == b"-ERR [AUTH] Authentication failed\r\n"
    c = env.client()
    assert await c.login(password="nope") == b"-ERR [AUTH] Too many failed logins; try again later\r\n"
    assert c.session.closing                             # the failure that reached the limit
    c = env.client()
    assert await c.login() == b"-ERR [AUTH] Too many failed logins; try again later\r\n"
    assert c.session.closing
    assert (await env.client(peer="192.0.2.7", tls=True).login()).startswith(b"+OK")   # not from elsewhere


async def test_malformed_input_answers_err_and_session_goes_on(env: Env) -> None:
    c = env.client()
    assert (await c.send(b"\xff\xff\r\n")).startswith(b"-ERR")
    assert (await c.cmd("RETR 1")) == b"-ERR Command not valid in this state\r\n"
    assert (await c.login()).startswith(b"+OK")
    assert (await c.cmd("RETR 99")) == b"-ERR No such message\r\n"
    assert (await c.cmd("TOP 1")) == b"-ERR Syntax error\r\n"
    assert (await c.cmd("USER x")) == b"-ERR Command not valid in this state\r\n"
    assert (await c.cmd("NOOP")) == b"+OK\r\n"


async def test_too_many_errors_closes(env: Env) -> None:
    config = replace(Config(), limits=LimitsConfig(errors_per_session=5))
    c = env.client(config=config)
    out = await c.send(b"BOGUS\r\n" * 10)
    assert out.count(b"-ERR Unknown command") == 5
    assert out.endswith(b"-ERR Too many errors; closing connection\r\n")
    assert c.session.closing


async def test_utf8_only_before_login(env: Env) -> None:
    c = env.client()
    assert await c.cmd("UTF8") == b"+OK UTF8 enabled\r\n"
    assert c.session.utf8
    await c.login()
    assert (await c.cmd("UTF8")).startswith(b"-ERR")


async def test_capa_in_transaction(env: Env) -> None:
    c = env.client()
    await c.login()
    capa = await c.cmd("CAPA")
    assert b"TOP\r\nUIDL\r\n" in capa and b"PIPELINING" in capa and b"USER" not in capa
    assert b"IMPLEMENTATION Mailhaven" in capa


async def test_stls_then_login(env: Env) -> None:
    c = env.client(peer="192.0.2.7")
    assert await c.send(b"STLS\r\nUSER injected\r\n") == b"+OK Begin TLS negotiation\r\n"
    assert c.session.starttls_pending
    c.session.tls_started()                              # what server.py does after the handshake
    assert c.session.protocol.buffered == 0
    assert (await c.cmd("STLS")) == b"-ERR TLS already active\r\n"
    assert (await c.login()).startswith(b"+OK")


async def test_quit_in_authorization(env: Env) -> None:
    c = env.client()
    assert (await c.cmd("QUIT")).startswith(b"+OK")
    assert c.session.closing and c.session.state is P.State.CLOSED


async def test_idle_timeout_does_not_update(env: Env) -> None:
    c = env.client()
    await c.login()
    await c.cmd("DELE 1")
    await c.session.idle_timeout()
    assert c.session.take_output() == b"-ERR Disconnected for inactivity\r\n"
    assert len(await env.store.list_messages((await env.inbox()).id)) == 3
    assert not env.locks.held((await env.store.get_account(USER)).id)


async def test_sizes_are_what_retr_sends_for_lf_only_mail(env: Env) -> None:
    from mailhaven.pop3.server import WireSizes

    lf = b"Subject: lf only\n\nline\n.dot\n\nend"          # bare LFs, no final line end
    await env.deliver(lf)
    c = env.client()
    c.session.ctx.wire_sizes = WireSizes(env.store)
    await c.login()
    wire = len(b"Subject: lf only\r\n\r\nline\r\n.dot\r\n\r\nend\r\n")
    assert await c.cmd("LIST 4") == f"+OK 4 {wire}\r\n".encode()
    retr = await c.cmd("RETR 4")
    first, _, rest = retr.partition(b"\r\n")
    assert first == f"+OK {wire} octets".encode()
    body = rest[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
    assert len(body) == wire
    count, total = (int(x) for x in (await c.cmd("STAT"))[4:].split())
    assert count == 4 and total == sum(len(message(n)) for n in (1, 2, 3)) + wire

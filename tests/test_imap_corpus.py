"""Every corpus message through IMAP: APPEND, then FETCH BODYSTRUCTURE, ENVELOPE and BODY[]
(parsed by imapclient's response parser, so the syntax is checked too); BODY[] byte-identical
but for NUL, sent as 0x80."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, corpus_messages
from mailhaven.message.structure import structure_summary


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("imapcorpus") / "data").start()
    server.add_user("corpus@example.com", "pw")
    try:
        yield server
    finally:
        server.stop()


def _check_offsets(node: dict[str, Any], start: int, end: int) -> int:
    h0, h1 = node["h"]
    assert start <= h0 <= h1 <= node["e"] <= end
    count = 1
    for child in node.get("parts", []):
        count += _check_offsets(child, h1, node["e"])
    if "msg" in node:
        count += _check_offsets(node["msg"], h1, node["e"])
    return count


def test_structure_offsets_are_consistent(corpus_files: list[Path]) -> None:
    messages = corpus_messages()
    assert messages
    for name, raw in messages:
        imap = structure_summary(raw)["imap"]
        assert len(imap["envelope"]) == 10, name
        _check_offsets(imap["body"], 0, len(raw))


def test_every_corpus_message_appended_and_fetched(srv: ServerProcess, corpus_files: list[Path]) -> None:
    imapclient = pytest.importorskip("imapclient")
    messages = corpus_messages()
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port("imap"), ssl=False, timeout=60)
    c.login("corpus@example.com", "pw")
    c.create_folder("Corpus")
    uids: dict[int, tuple[str, bytes]] = {}
    for name, raw in messages:
        response = c.append("Corpus", raw)
        assert b"APPENDUID" in response, (name, response)
        uid = int(response.split(b"]")[0].split()[-1])
        uids[uid] = (name, raw)
    c.select_folder("Corpus", readonly=True)
    items = ["BODYSTRUCTURE", "ENVELOPE", "BODY.PEEK[]", "RFC822.SIZE", "BODY"]
    batch = sorted(uids)
    for i in range(0, len(batch), 50):
        chunk = batch[i:i + 50]
        data = c.fetch(chunk, items)
        for uid in chunk:
            name, raw = uids[uid]
            got = data[uid]
            sent = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)  # imaplib sends CRLF line ends
            # A NUL goes out as 0x80 (RFC 9051 4.3 keeps it out of literals; as Dovecot).
            assert got[b"BODY[]"] == sent.replace(b"\x00", b"\x80"), name
            assert got[b"RFC822.SIZE"] == len(sent), name
            assert got[b"BODYSTRUCTURE"] is not None and got[b"ENVELOPE"] is not None, name
    c.logout()


async def test_envelope_and_bodystructure_stored_at_delivery_match_fetch_time_rendering(
        store, corpus_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    """FETCH ENVELOPE BODYSTRUCTURE served from the forms rendered at delivery is byte for
    byte what rendering the summary at FETCH time gives (rows of older versions), for every
    corpus message; a UTF8=ACCEPT session never gets the stored (downgraded) forms."""
    from imap_harness import Client, make_account
    from test_store_contract import _forget_wire_forms

    account = await make_account(store)
    inbox = await store.get_mailbox(account.id, "INBOX")
    messages = corpus_messages()
    for _, raw in messages:
        await store.append(inbox.id, await store.put_blob(raw))

    async def fetch(utf8: bool) -> bytes:
        c = Client(store)
        await c.login()
        if utf8:
            await c.cmd("ENABLE UTF8=ACCEPT")
        await c.cmd("EXAMINE INBOX")
        return await c.cmd("FETCH 1:* (ENVELOPE BODYSTRUCTURE)")

    stored, stored_utf8 = await fetch(False), await fetch(True)
    assert stored.count(b" FETCH (") == len(messages)
    await _forget_wire_forms(store)
    assert await fetch(False) == stored
    assert await fetch(True) == stored_utf8
    assert stored_utf8 != stored                         # the corpus has UTF-8 in its headers

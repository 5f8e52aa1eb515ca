"""SQLite: where a delivery's summary is computed (issue 18).

A message still in memory (just written) is summarised on the event loop up to
``SUMMARY_ON_LOOP_MAX``, and up to ``PLAIN_ON_LOOP_MAX`` when it is one text/plain part
with a plain header section (its summary is linear, quick work; the hop to a thread and
back cost more). Anything else of that size (HTML, multipart) goes to a thread, as
before: some such messages take tens of milliseconds to summarise."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from mailhaven.message.summary import summarize
from mailhaven.store import sqlitemessages
from mailhaven.store.sqlite import SQLiteStore
from mailhaven.store.sqliterows import PLAIN_ON_LOOP_MAX, SUMMARY_ON_LOOP_MAX, plain_text_message

LINE = b"The heron waits by the water, and the water waits for nothing at all.\r\n"


def _message(head: bytes, size: int) -> bytes:
    return head + b"\r\n" + LINE * (size // len(LINE))


PLAIN = b"From: alice@lancs.example\r\nTo: bob@nyu.example\r\nSubject: big\r\n"


@pytest.mark.parametrize(("head", "expected"), [
    (PLAIN, True),                                                       # no Content-Type: text/plain
    (PLAIN + b"Content-Type: text/plain; charset=utf-8\r\n", True),
    (PLAIN + b"Content-Type: TEXT/Plain\r\n", True),
    (PLAIN + b"Content-Type:\r\n\ttext/plain;\r\n\tcharset=us-ascii\r\n", True),       # folded
    (PLAIN + b"Content-Type: text/html\r\n", False),
    (PLAIN + b"Content-Type: multipart/mixed; boundary=x\r\n", False),
    (PLAIN + b"Content-Type: message/rfc822\r\n", False),
    (PLAIN + b"Content-Type: text/plain\r\nContent-Type: text/html\r\n", False),      # two
    (PLAIN + b"Content-Type: text/plainish\r\n", False),
    (PLAIN.replace(b"big", "gro\u00df".encode()), False),               # 8-bit header
    (PLAIN.replace(b"\r\n", b"\n"), False),                              # LF line ends
    (b"", False),                                                        # empty header section
])
def test_plain_text_message(head: bytes, expected: bool) -> None:
    assert plain_text_message(_message(head, 2000)) is expected


async def _summary_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: bytes) -> tuple[list[str], Any]:
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("nyu.example")
        bob = await store.add_account("bob@nyu.example", "pw")
        threads: list[str] = []
        prepare = sqlitemessages._prepare

        def spy(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return prepare(*args, **kwargs)

        monkeypatch.setattr(sqlitemessages, "_prepare", spy)
        writer = store.blob_writer()
        writer.write(raw)
        blob = await writer.finish(deferred=True)
        (result,) = await store.deliver(blob, [bob.id])
        assert result.message is not None
        return threads, result.message.summary
    finally:
        await store.close()


async def test_a_100_kb_plain_text_message_is_summarised_on_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _message(PLAIN, 100 * 1024)
    assert SUMMARY_ON_LOOP_MAX < len(raw) <= PLAIN_ON_LOOP_MAX
    threads, summary = await _summary_threads(tmp_path, monkeypatch, raw)
    assert threads == [threading.current_thread().name]
    assert summary["subject"] == summarize(raw)["subject"] == "big"


async def test_a_100_kb_html_message_is_summarised_on_a_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _message(PLAIN + b"Content-Type: text/html\r\n", 100 * 1024)
    threads, _ = await _summary_threads(tmp_path, monkeypatch, raw)
    assert len(threads) == 1 and threads[0] != threading.current_thread().name

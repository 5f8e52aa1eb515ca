"""Import and export against a real store: export -> import into an empty account ->
export again is byte-identical, flags and dates equal; thousands of generated messages
(malformed and non-ASCII among them) and the shared corpus."""

from __future__ import annotations

import filecmp
import io
import random
from pathlib import Path
from typing import Any

import pytest

from conftest import corpus_messages, require_corpus
from mailhaven.transfer import mbox as mb
from mailhaven.transfer.progress import Progress
from mailhaven.transfer.store_io import Importer, export_account, import_maildir, import_mbox

FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "$Forwarded", "$Junk", "Work", "todo"]
FOLDERS = ["INBOX", "Sent", "Archive/2024", "Archive/2024/Q1", "B\u00fccher", "\u65e5\u672c\u8a9e/\u4ed5\u4e8b",
           "dots.in.name", "Trash"]
WORDS = ["hello", "caf\u00e9", "\u65e5\u672c\u8a9e", "\u0645\u0631\u062d\u0628\u0627", "na\u00efve", "\u2603",
         "From", ">From", ".", "Status: RO", "price", "\u00fcber"]


def generated(n: int, seed: int = 5) -> list[tuple[str, bytes, frozenset[str], float]]:
    """(folder, raw, flags, date): valid messages of many shapes."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        eol = b"\r\n" if rnd.random() < 0.5 else b"\n"
        subject = " ".join(rnd.choice(WORDS) for _ in range(3))
        headers = [b"From: Sender %d <s%d@example.net>" % (i, i), b"To: user@example.org",
                   f"Subject: {subject}".encode(), b"Message-ID: <%d.%d@example.net>" % (seed, i),
                   b"Date: Mon, 1 Jan 2024 00:00:00 +0000", b"MIME-Version: 1.0",
                   b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: 8bit"]
        body = []
        for _ in range(rnd.randint(0, 40)):
            line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 12)))
            body.append(line.encode())
        if rnd.random() < 0.05:
            body.append(b"x" * 5000)                         # a long line
        raw = eol.join(headers) + eol + eol + eol.join(body)
        if rnd.random() < 0.9:
            raw += eol                                       # some end without a line end
        flags = frozenset(f for f in FLAGS if rnd.random() < 0.25)
        out.append((rnd.choice(FOLDERS), raw, flags, float(rnd.randint(0, 2_000_000_000))))
    return out


async def account(store: Any, address: str) -> Any:
    domain = address.rpartition("@")[2]
    if domain not in [d.name for d in await store.list_domains()]:
        await store.add_domain(domain)
    return await store.add_account(address, "pw")


async def fill(store: Any, acct: Any, msgs: list[tuple[str, bytes, frozenset[str], float]]) -> None:
    boxes: dict[str, Any] = {b.name: b for b in await store.list_mailboxes(acct.id)}
    for folder, raw, flags, date in msgs:
        if folder not in boxes:
            boxes[folder] = await store.create_mailbox(acct.id, folder)
        blob = await store.put_blob(raw)
        await store.append(boxes[folder].id, blob, flags=flags, internal_date=date)


async def snapshot(store: Any, acct: Any) -> dict[str, list[tuple[bytes, frozenset[str], int]]]:
    out = {}
    for box in await store.list_mailboxes(acct.id):
        out[box.name] = [(await store.read_blob(m.blob_id), m.flags, int(m.internal_date))
                         for m in await store.list_messages(box.id)]
    return out


def same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only, (cmp.left_only, cmp.right_only)
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors, mismatch
    for sub in cmp.common_dirs:
        same_tree(a / sub, b / sub)


def quiet() -> Progress:
    return Progress(stream=io.StringIO(), tty=False)


async def round_trip(store: Any, tmp: Path, msgs: list[tuple[str, bytes, frozenset[str], float]],
                     fmt: str, mbox_format: str = "mboxrd") -> tuple[Progress, Progress]:
    a = await account(store, f"a-{fmt}-{mbox_format}@example.org")
    b = await account(store, f"b-{fmt}-{mbox_format}@example.org")
    await fill(store, a, msgs)
    first, second = tmp / f"{fmt}-{mbox_format}-1", tmp / f"{fmt}-{mbox_format}-2"
    exported = quiet()
    await export_account(store, a, fmt, first, exported, mbox_format)
    imported = quiet()
    importer = Importer(store, b, imported)
    if fmt == "mbox":
        await import_mbox(importer, first, None, mbox_format)
    else:
        await import_maildir(importer, first, None)
    await export_account(store, b, fmt, second, quiet(), mbox_format)
    same_tree(first, second)
    assert await snapshot(store, a) == await snapshot(store, b)
    return exported, imported


@pytest.mark.parametrize("fmt,variant", [("mbox", "mboxrd"), ("mbox", "mboxcl2"), ("maildir", "mboxrd")])
async def test_round_trip_of_generated_messages(store: Any, tmp_path: Path, fmt: str, variant: str) -> None:
    msgs = generated(2500)
    exported, imported = await round_trip(store, tmp_path, msgs, fmt, variant)
    assert exported.done == imported.done == 2500
    assert imported.skipped == 0


async def test_round_trip_of_the_corpus(store: Any, tmp_path: Path) -> None:
    require_corpus()
    rnd = random.Random(7)
    msgs = [(rnd.choice(FOLDERS), raw, frozenset(f for f in FLAGS if rnd.random() < 0.3),
             float(rnd.randint(0, 2_000_000_000))) for _, raw in corpus_messages()]
    for fmt in ("mbox", "maildir"):
        _, imported = await round_trip(store, tmp_path, msgs, fmt)
        assert imported.done == len(msgs) and imported.skipped == 0


async def test_malformed_messages_are_reported_and_skipped(store: Any, tmp_path: Path) -> None:
    acct = await account(store, "m@example.org")
    good = [raw for _, raw, _, _ in generated(300, seed=11)]
    data = io.BytesIO()
    w = mb.MboxWriter(data)
    bad_positions = set()
    for i, raw in enumerate(good):
        w.write(raw, (), 1e9 + i)
        if i % 50 == 7:
            data.write(b"From junk@example.net Mon Jan  1 00:00:00 2001\n\n")          # empty
            data.write(b"From junk@example.net Mon Jan  1 00:00:00 2001\n  \t\n\n")   # blank
            bad_positions.add(i)
    path = tmp_path / "mixed.mbox"
    path.write_bytes(b"garbage before the first message\n\n" + data.getvalue())
    out = io.StringIO()
    progress = Progress(stream=out, tty=False)
    await import_mbox(Importer(store, acct, progress), path, "Imported", "mboxrd")
    assert progress.done == 300
    assert progress.skipped == 1 + 2 * len(bad_positions)
    report = out.getvalue()
    assert report.count("empty message") == 2 * len(bad_positions)
    assert "text before the first From_ line" in report
    box = await store.get_mailbox(acct.id, "Imported")
    stored = [await store.read_blob(m.blob_id) for m in await store.list_messages(box.id)]
    assert stored == good


async def test_oversized_and_quota(store: Any, tmp_path: Path) -> None:
    acct = await account(store, "q@example.org")
    path = tmp_path / "big.mbox"
    with open(path, "wb") as f:
        w = mb.MboxWriter(f)
        w.write(b"Subject: small\n\nx\n", (), 1e9)
        w.write(b"Subject: big\n\n" + b"y" * 2000 + b"\n", (), 1e9)
    progress = quiet()
    await import_mbox(Importer(store, acct, progress, max_size=1000), path, None)
    assert (progress.done, progress.skipped) == (1, 1)
    assert "larger than the 1000 byte limit" in progress.problems[0]
    await store.set_quota("q@example.org", 10)
    progress = quiet()
    await import_mbox(Importer(store, acct, progress), path, None)
    assert progress.done == 0 and progress.skipped == 2
    assert all("quota" in p for p in progress.problems)


def test_progress_lines_when_not_a_terminal() -> None:
    now = [0.0]
    out = io.StringIO()
    p = Progress(stream=out, tty=False, clock=lambda: now[0], interval=5)
    for _ in range(100):
        now[0] += 0.125
        p.ok(1000)
    lines = out.getvalue().splitlines()
    assert lines == ["40 messages imported, 0 skipped, 8/s, 0.0 MiB", "80 messages imported, 0 skipped, 8/s, 0.1 MiB"]
    p.problem("x #1", "empty message")
    assert p.finish().startswith("100 messages imported in 0 folders")
    assert out.getvalue().splitlines()[-2] == "skipped x #1: empty message"
    tty = io.StringIO()
    p = Progress(stream=tty, tty=True, clock=lambda: now[0])
    now[0] += 1
    p.ok(1)
    assert tty.getvalue().startswith("\r\x1b[K1 message imported")


async def test_maildir_with_broken_entries(store: Any, tmp_path: Path) -> None:
    from mailhaven.transfer import maildir as md

    acct = await account(store, "md@example.org")
    msgs = generated(1500, seed=3)
    w = md.MaildirWriter(tmp_path / "src", "INBOX")
    for i, (_, raw, flags, date) in enumerate(msgs):
        w.write(raw, flags, date, i + 1)
    w.close()
    cur = tmp_path / "src" / "cur"
    (cur / "9999999999.empty:2,S").write_bytes(b"")
    (cur / "9999999999.dangling:2,S").symlink_to(tmp_path / "nowhere")
    (cur / "9999999999.subdir").mkdir()
    progress = quiet()
    await import_maildir(Importer(store, acct, progress), tmp_path / "src", None)
    assert progress.done == 1500 and progress.skipped == 2
    assert any("empty message" in p for p in progress.problems)
    assert any("cannot read" in p for p in progress.problems)
    box = await store.get_mailbox(acct.id, "INBOX")
    got = [(await store.read_blob(m.blob_id), m.flags, int(m.internal_date)) for m in await store.list_messages(box.id)]
    assert got == [(raw, flags, int(date)) for _, raw, flags, date in msgs]

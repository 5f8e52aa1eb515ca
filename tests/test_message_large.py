"""Large messages are summarised from their file in bounded memory: the structure read
through :class:`FileView` a chunk at a time must equal the one read from the bytes, for
every corpus message and for messages whose parts straddle the read chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import corpus_messages, require_corpus
from mailhaven.message import fileview
from mailhaven.message.summary import summarize, summarize_file


def _check(tmp_path: Path, raw: bytes, attachments: bool = True) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(raw)
    from_file, prefix = summarize_file(str(path))
    whole = summarize(raw)
    assert from_file.get("imap") == whole.get("imap")
    assert prefix == raw[:len(prefix)]
    assert from_file["subject"] == whole["subject"] and from_file["from"] == whole["from"]
    if attachments:     # (the corpus has parts the stdlib and the structure parser split differently)
        assert from_file["attachments"] == whole["attachments"]


def test_structure_from_file_matches_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_corpus()
    # Tiny reads, so every delimiter, header end and line count crosses chunk edges.
    monkeypatch.setattr(fileview, "CHUNK", 64)
    monkeypatch.setattr(fileview, "FIRST_CHUNK", 7)
    monkeypatch.setattr(fileview, "SMALL", 5)
    for _, raw in corpus_messages()[:400]:
        _check(tmp_path, raw, attachments=False)


def test_structure_of_a_large_multipart_message(tmp_path: Path) -> None:
    parts = []
    for i in range(30):
        body = (f"line {i} " * 20 + "\r\n").encode() * (2000 + i * 97)
        parts.append(b"--xyz\r\nContent-Type: text/plain; name=p%d.txt\r\n"
                     b"Content-Disposition: attachment; filename=p%d.txt\r\n\r\n" % (i, i) + body)
    raw = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=xyz\r\n\r\n" + b"\r\n".join(parts) + b"\r\n--xyz--\r\n")
    assert len(raw) > 2 * fileview.CHUNK
    _check(tmp_path, raw)

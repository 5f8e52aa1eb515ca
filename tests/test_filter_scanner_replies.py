"""The scanners' reply parsers and the X-Spam-* field removal, on their own."""

from __future__ import annotations

import json

import pytest

from mailhaven.filter import clamd, rspamd


def test_clamd_replies() -> None:
    assert clamd.parse_reply(b"stream: OK\0") is None
    assert clamd.parse_reply(b"stream: Eicar-Test-Signature FOUND\0") == "Eicar-Test-Signature"
    with pytest.raises(clamd.ClamdUnavailable):
        clamd.parse_reply(b"INSTREAM size limit exceeded. ERROR\0")


@pytest.mark.parametrize(("action", "ours"), [("reject", "reject"), ("soft reject", "defer"), ("greylist", "defer"),
                                              ("add header", "junk"), ("rewrite subject", "junk"),
                                              ("no action", "deliver")])
def test_rspamd_actions(action: str, ours: str) -> None:
    body = json.dumps({"action": action, "score": 7.5, "required_score": 15, "symbols": {"B": {}, "A": {}}}).encode()
    result = rspamd.parse_reply(body)
    assert (result.action, result.score, result.symbols) == (ours, 7.5, ("A", "B"))
    assert result.header().startswith(b"X-Spam-Status: " + (b"No" if ours == "deliver" else b"Yes") + b", score=7.50")


@pytest.mark.parametrize("body", [b"", b"{}", b'{"action": "explode"}', b"[1]", b'{"action": "reject", "score": "x"}'])
def test_rspamd_bad_replies(body: bytes) -> None:
    with pytest.raises(rspamd.RspamdUnavailable):
        rspamd.parse_reply(body)


def test_sender_spam_fields_are_removed_folded_or_not() -> None:
    head = (b"From: a@b\r\nX-Spam-Status: No,\r\n\tscore=-100\r\nSubject: x\r\nx-spam-score:  -100\r\n"
            b"X-Spam-Flag: NO\r\n")
    assert rspamd.strip_spam_fields(head) == b"From: a@b\r\nSubject: x\r\nX-Spam-Flag: NO\r\n"

"""``summary.index_text``: base64 blocks taken out a piece at a time give what one pass
over the first ``4 * INDEX_TEXT_LIMIT`` characters gives (issue 18: that pass was
0.15-0.23 ms of a 100 KB message whose text has no block at all)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.message import summary
from mailhaven.message.summary import _ENCODED_BLOCK, INDEX_TEXT_LIMIT, index_text

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def one_pass(text: str) -> str:
    """index_text as it was: the whole prefix through the regex at once."""
    text = text[:4 * INDEX_TEXT_LIMIT]
    if len(text) >= 120:
        text = _ENCODED_BLOCK.sub("\n", "\n" + text)[1:]
    return text[:INDEX_TEXT_LIMIT]


def _line(rng: random.Random) -> str:
    """Lines around the regex's edges: base64 of 59-100 characters, short base64 (a
    block's last line), blank lines, base64 followed by something else, plain text; ended
    by CRLF, LF, blanks and a line end, a bare CR or nothing."""
    end = rng.choice(["\r\n", "\n", "\r\n", " \r\n", "\t\n", "\r", ""])
    kind = rng.random()
    if kind < 0.45:
        body = "".join(rng.choice(B64) for _ in range(rng.choice([59, 60, 61, 76, 76, 100])))
    elif kind < 0.55:
        body = "".join(rng.choice(B64) for _ in range(rng.randint(1, 20)))
    elif kind < 0.65:
        body = rng.choice(["", " ", "\t"])
    elif kind < 0.75:
        body = "".join(rng.choice(B64) for _ in range(rng.randint(60, 80))) + rng.choice([" x", "\rB", ".", " "])
    else:
        body = rng.choice(["hello world", "The quick brown fox.", "x" * 70, "\u00fcn\u00ef "]) * rng.randint(1, 30)
    return body + end


@pytest.mark.parametrize("seed", range(300))
def test_pieces_give_what_one_pass_gives(seed: int) -> None:
    rng = random.Random(seed)
    lines = [_line(rng) for _ in range(rng.choice([5, 300, 900, 1500]))]
    if seed % 3 == 0:                 # a long block somewhere, often across a piece's end
        block = ["".join(rng.choice(B64) for _ in range(76)) + "\r\n" for _ in range(rng.randint(50, 600))]
        at = rng.randint(0, len(lines))
        lines[at:at] = block
    text = "".join(lines)
    assert index_text(text) == one_pass(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["A" * 60, "A" * 59, "QUJD", "x y", "", " ", "\t", "=", "+/"]), max_size=600),
       st.lists(st.sampled_from(["\r\n", "\n", "\r", " \r\n", ""]), min_size=1))
def test_pieces_give_what_one_pass_gives_hypothesis(bodies: list[str], ends: list[str]) -> None:
    text = "".join(b + ends[i % len(ends)] for i, b in enumerate(bodies)) * 8
    assert index_text(text) == one_pass(text)


def test_a_long_text_without_blocks_is_read_as_far_as_the_limit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[int] = []

    class Spy:
        def sub(self, repl: str, text: str) -> Any:
            read.append(len(text))
            return _ENCODED_BLOCK.sub(repl, text)

    monkeypatch.setattr(summary, "_ENCODED_BLOCK", Spy())
    text = "The heron waits by the water, and the water waits for nothing at all.\r\n" * 2000
    kept = index_text(text)
    assert kept == text[:INDEX_TEXT_LIMIT]
    assert sum(read) <= INDEX_TEXT_LIMIT + 200          # the old pass read 4 x the limit


def test_a_text_of_base64_lines_only_is_taken_in_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """smtp-source's messages are lines of X: looking for a cut a line at a time through all
    of them cost more than the one pass."""
    looked: list[int] = []
    unsafe = summary._CUT_UNSAFE

    class Spy:
        def fullmatch(self, text: str, start: int, end: int) -> Any:
            looked.append(start)
            return unsafe.fullmatch(text, start, end)

    monkeypatch.setattr(summary, "_CUT_UNSAFE", Spy())
    text = ("X" * 78 + "\r\n") * 1300
    assert index_text(text) == one_pass(text) == ""
    assert len(looked) <= summary.CUT_TRIES

"""message/encodedblocks.py: the search index text's base64 blocks found in bulk (issue 18)
must be exactly what the one regular expression it replaces matched, on the corpus, on
Hypothesis texts and on the cases that end the bulk run (a line of another length or line
end, a blank, a CR inside a line, a block cut short)."""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import corpus_messages, require_corpus
from mailhaven.message.encodedblocks import _equal_lines_end, drop_encoded_blocks
from mailhaven.message.summary import INDEX_TEXT_LIMIT, index_text

REFERENCE = re.compile(r"\n(?:[A-Za-z0-9+/=]{60,}[ \t]*\r?\n){2,}(?:[A-Za-z0-9+/=]+[ \t]*(?:\r?\n|\Z))?")
"""The expression ``index_text`` ran over the whole text before."""


def reference(text: str) -> str:
    return REFERENCE.sub("\n", "\n" + text)[1:]


def b64_lines(size: int, width: int = 76, eol: str = "\r\n") -> str:
    encoded = base64.b64encode(bytes(range(256)) * (size // 256 + 1))[:size].decode()
    return "".join(encoded[i:i + width] + eol for i in range(0, len(encoded), width))


X = "X" * 78
CASES = [
    "",
    "short text\r\n",
    (X + "\r\n") * 800,                                   # smtp-source's body
    (X + "\n") * 800,
    (X + "\r\n") * 800 + "XXXX",                          # cut inside the last line
    (X + "\r\n") * 800 + "XXXX\r\nThanks\r\n",            # short last line, then a word line
    "Hello,\r\n\r\n" + b64_lines(20_000) + "\r\nRegards\r\n",
    b64_lines(20_000, eol="\n") + "prose after\n",
    b64_lines(20_000, width=64) + b64_lines(3_000, width=76),      # the width changes
    (X + "\r\n") * 50 + X[:-1] + "\n" + (X + "\r\n") * 50,         # same width, LF alone
    (X + "\r\n") * 50 + X[:-2] + " \r\n" + (X + "\r\n") * 50,      # a blank before the end
    (X + "\r\n") * 50 + X[:30] + "\r" + X[30:] + "\n" + (X + "\r\n") * 50,  # CR inside, same width
    (X + "\r\n") * 50 + X[:30] + "\r\n" + X[32:] + "\r\n" + (X + "\r\n") * 50,  # two short
    (X + "\r\n") * 50 + X[:40] + "é" + X[41:] + "\r\n" + (X + "\r\n") * 50,  # not ASCII
    (X + "\r\n") * 50 + X[:40] + "\udcff" + X[41:] + "\r\n" + (X + "\r\n") * 50,  # surrogate
    (X + "\r\n") * 50 + "\r\n" + (X + "\r\n") * 50,      # an empty line between two blocks
    ("A" * 59 + "\r\n") * 100,                            # one short of a full line
    ("A" * 60 + "\r\n") * 100,
    (X + "\r\n") * 2 + ("A" * 59 + "\r\n") * 10,         # a run of lines one short of full
    ("=" * 72 + "\r\n") * 3 + "prose\r\n",               # separator lines are base64 too
    "x\r\n" + ("B" * 61 + "\t\r\n") * 10,
    ("B" * 61 + "\r\r\n") * 10,
    "\n" + (X + "\n") * 3,
]


def test_the_cases_drop_what_the_expression_matched() -> None:
    for text in CASES:
        assert drop_encoded_blocks(text) == reference(text), text[:200]


def test_index_text_keeps_its_limits() -> None:
    text = "prose line\r\n" + (X + "\r\n") * 2000 + "tail words " * 3000
    assert index_text(text) == reference(text[:4 * INDEX_TEXT_LIMIT])[:INDEX_TEXT_LIMIT]


def test_a_block_of_equal_lines_is_taken_in_one_step() -> None:
    """The bulk run covers every line of equal length, and stops at the first that differs
    (this is what makes a 64 KB block cheap; the output checks above cannot see it)."""
    data = ("\n" + (X + "\r\n") * 800).encode()
    assert _equal_lines_end(data, 1) == len(data)
    odd = ("\n" + (X + "\r\n") * 10 + X[:-1] + " \r\n" + (X + "\r\n") * 5).encode()
    assert _equal_lines_end(odd, 1) == 1 + 10 * 80
    assert _equal_lines_end(odd, 81) == 1 + 10 * 80
    assert _equal_lines_end(("\n" + ("A" * 59 + "\r\n") * 4).encode(), 1) == 1


LINES = st.sampled_from([
    X, X[:60], X[:59], X[:61], "A" * 76, "=" * 64, "QUJD" * 19, "Ab+/" * 15 + "=", "word", "two words",
    "", " ", "\t", "AAAA", "é" * 70, "A" * 70 + " ", "A" * 70 + "\t ", "A" * 70, "A" * 30 + "\r" + "A" * 40,
])
ENDS = st.sampled_from(["\r\n", "\n", "\r", ""])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(LINES, ENDS, st.integers(min_value=1, max_value=12)), max_size=12))
def test_hypothesis_texts_drop_what_the_expression_matched(runs: list[tuple[str, str, int]]) -> None:
    text = "".join((line + end) * count for line, end, count in runs)
    assert drop_encoded_blocks(text) == reference(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="AB=+/ \t\r\n.xé", max_size=600))
def test_hypothesis_any_text(text: str) -> None:
    assert drop_encoded_blocks(text) == reference(text)


def test_the_corpus_drops_what_the_expression_matched() -> None:
    """Every corpus message read whole as text (its base64 parts are real encoded blocks),
    as stored and with CRLF line ends."""
    require_corpus()
    differ = []
    for name, raw in corpus_messages():
        for data in (raw, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")):
            text = data.decode("utf-8", "surrogateescape")
            if drop_encoded_blocks(text) != reference(text):
                differ.append(name)
    assert not differ

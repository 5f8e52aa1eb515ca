"""THREAD=REFERENCES (RFC 5256 section 3) on hand-built mailboxes, step by step."""

from __future__ import annotations

from typing import Any

from mailhaven.imap.threads import base_subject, thread_orderedsubject, thread_references


def row(uid: int, date: float, subject: str, mid: str, refs: str = "", irt: str = "") -> tuple[int, float, dict[str, Any]]:
    return uid, date, {"subject": subject, "message_id": f"<{mid}>" if mid else "",
                       "references": refs, "in_reply_to": irt}


def test_base_subject_strips_what_rfc_5256_lists() -> None:
    assert base_subject("Re: [list] Fwd: RE: Lunch (fwd)") == "LUNCH"
    assert base_subject("[fwd: Re: Plans]") == "PLANS"
    assert base_subject("  Re:   spaced    out ") == "SPACED OUT"
    assert base_subject("[only a blob]") == "[ONLY A BLOB]"


def test_replies_hang_under_their_parents_by_references() -> None:
    rows = [row(1, 10, "Plans", "a"), row(2, 20, "Re: Plans", "b", "<a>"),
            row(3, 30, "Re: Plans", "c", "<a> <b>"), row(4, 15, "Other", "d")]
    assert thread_references(rows) == [(1, [(2, [(3, [])])]), (4, [])]


def test_missing_parent_becomes_a_dummy_only_with_several_children() -> None:
    # Both reply to <gone>, which is not in the mailbox: a dummy root holds them.
    rows = [row(1, 10, "Re: Gone", "a", "<gone>"), row(2, 20, "Re: Gone", "b", "<gone>")]
    assert thread_references(rows) == [(None, [(1, []), (2, [])])]
    # One child only: promoted to the top.
    assert thread_references(rows[:1]) == [(1, [])]


def test_in_reply_to_when_there_are_no_references_and_loops_are_refused() -> None:
    rows = [row(1, 10, "Loop", "a", "<b>"), row(2, 20, "Re: Loop", "b", "<a>")]
    threads = thread_references(rows)
    assert sorted(u for t in threads for u in _uids(t)) == [1, 2]    # each once, no cycle
    rows = [row(1, 10, "Q", "a"), row(2, 20, "Re: Q", "b", "", "<a>")]
    assert thread_references(rows) == [(1, [(2, [])])]


def test_duplicate_message_ids_keep_both_messages() -> None:
    rows = [row(1, 10, "Same", "a"), row(2, 20, "Same again", "a")]
    assert sorted(u for t in thread_references(rows) for u in _uids(t)) == [1, 2]


def test_subject_gathering_prefers_the_original_over_replies() -> None:
    """Step 5: unlinked threads with one base subject join. Two replies seen first and the
    original later: the original speaks for the subject and both replies go under it
    (a one-pass merge would have put all three under a dummy)."""
    rows = [row(1, 10, "Re: Lunch", "r1"), row(2, 20, "Re: Lunch", "r2"), row(3, 30, "Lunch", "o")]
    assert thread_references(rows) == [(3, [(1, []), (2, [])])]


def test_subject_gathering_of_two_originals_makes_a_dummy() -> None:
    rows = [row(1, 10, "Lunch", "a"), row(2, 20, "Lunch", "b"), row(3, 5, "Tea", "c")]
    assert thread_references(rows) == [(3, []), (None, [(1, []), (2, [])])]


def test_subject_gathering_into_a_dummy_and_of_two_dummies() -> None:
    rows = [row(1, 10, "Re: Trip", "a", "<gone1>"), row(2, 20, "Re: Trip", "b", "<gone1>"),
            row(3, 30, "Re: Trip", "c", "<gone2>"), row(4, 40, "Re: Trip", "d", "<gone2>"),
            row(5, 50, "Trip", "e")]
    # Two dummies (gone1, gone2) merge; the original joins the dummy as one more child.
    assert thread_references(rows) == [(None, [(1, []), (2, []), (3, []), (4, []), (5, [])])]


def test_empty_subjects_are_never_gathered() -> None:
    rows = [row(1, 10, "", "a"), row(2, 20, "", "b")]
    assert thread_references(rows) == [(1, []), (2, [])]


def test_siblings_and_threads_sorted_by_sent_date_then_uid() -> None:
    rows = [row(1, 50, "P", "p"), row(2, 40, "Re: P", "x", "<p>"), row(3, 30, "Re: P", "y", "<p>"),
            row(4, 30, "Z", "z")]
    assert thread_references(rows) == [(4, []), (1, [(3, []), (2, [])])]
    # ORDEREDSUBJECT: the earliest of a subject is the parent; a tie in date goes by UID.
    assert thread_orderedsubject(rows) == [(3, [(2, []), (1, [])]), (4, [])]


def _uids(tree: tuple[int | None, list[Any]]) -> list[int]:
    uid, children = tree
    out = [uid] if uid is not None else []
    for c in children:
        out += _uids(c)
    return out

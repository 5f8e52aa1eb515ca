"""Every real-world message of the shared corpus summarises and stores without a crash."""

import json

from conftest import corpus_messages, require_corpus
from mailhaven.message.summary import summarize


def test_every_corpus_message_summarises():
    require_corpus()
    messages = corpus_messages()
    assert len(messages) > 500
    with_subject = 0
    for name, raw in messages:
        s = summarize(raw)
        json.dumps(s)  # storable
        assert isinstance(s["subject"], str), name
        with_subject += bool(s["subject"])
    assert with_subject > len(messages) // 2


async def test_every_corpus_message_stores_and_reads_back(store):
    require_corpus()
    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "pw")
    inbox = await store.get_mailbox(bob.id, "INBOX")
    messages = corpus_messages()
    for _name, raw in messages:
        await store.append(inbox.id, await store.put_blob(raw))
    stored = await store.list_messages(inbox.id, with_summary=True)
    assert len(stored) == len(messages)
    for (_name, raw), m in zip(messages, stored, strict=True):
        assert await store.read_blob(m.blob_id) == raw
    assert await store.integrity_check() == []


async def test_delivered_summary_is_the_stored_one(store):
    """deliver() and append() hand back the summary they computed instead of decoding the
    row they wrote (issue 18): it must be the one a later read decodes, value and type."""
    require_corpus()
    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "pw")
    carol = await store.add_account("carol@nyu.example", "pw")
    inbox = await store.get_mailbox(bob.id, "INBOX")
    for _name, raw in corpus_messages()[::7]:
        blob = await store.put_blob(raw)
        results = await store.deliver(blob, [bob.id, carol.id])
        appended = await store.append(inbox.id, blob)
        for m in [r.message for r in results] + [appended]:
            assert m is not None
            [read] = await store.get_messages(m.mailbox_id, [m.uid], with_summary=True)
            assert repr(m.summary) == repr(read.summary)
    first, second = (r.message for r in results)
    assert first is not None and second is not None and first.summary is not second.summary


def test_plain_header_fields_of_the_corpus_are_the_stdlib_fields():
    """message/headerfields.py reads real headers as the stdlib's compat32 parser does."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    from mailhaven.message.headerfields import crlf_ascii, plain_fields

    require_corpus()
    plain = 0
    for name, raw in corpus_messages():
        end = raw.find(b"\r\n\r\n")
        head = raw[:end + 4] if end >= 0 else raw
        fields = plain_fields(head.decode("ascii")) if crlf_ascii(head) else None
        if fields is not None:
            plain += 1
            assert fields == [(k, str(v)) for k, v in BytesHeaderParser(policy=compat32).parsebytes(head).items()], name
    assert plain > 50


def test_remembered_addresses_are_never_shared():
    """Short address fields are parsed once and remembered (issue 18): a second summary of
    a message is the same, and changing one summary's addresses leaves the next alone."""
    require_corpus()
    for name, raw in corpus_messages()[::5]:
        first = summarize(raw)
        for key in ("from", "to", "cc"):
            for a in first[key]:
                a["email"] = "changed"
        for node in (first["imap"]["envelope"][2] or []):
            node[2] = "changed"
        second, third = summarize(raw), summarize(raw)
        assert second == third, name
        assert all(a["email"] != "changed" for k in ("from", "to", "cc") for a in second[k]), name
        assert all(node[2] != "changed" for node in second["imap"]["envelope"][2] or []), name

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

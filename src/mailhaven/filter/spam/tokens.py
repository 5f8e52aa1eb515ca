"""The words the classifier counts: from the subject, a few header fields and the readable
text (text/plain, and text/html with its tags dropped) of a message.

Bounded work: only the first :data:`MAX_INPUT` bytes are parsed and at most
:data:`MAX_TOKENS` distinct tokens kept, so a large message costs no more than a small one.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from email.message import Message

MAX_INPUT = 256 * 1024
MAX_TOKENS = 1000
MIN_LEN, MAX_LEN = 3, 24

WORD = re.compile(r"[^\W_][\w'$!.-]*[^\W_]|[^\W_]", re.UNICODE)
TAG = re.compile(r"<[^>]*>")
URL_HOST = re.compile(r"https?://([A-Za-z0-9.-]+)", re.IGNORECASE)
HEADER_FIELDS = ("from", "reply-to", "to", "x-mailer", "user-agent", "content-type", "list-id")


def _words(text: str, prefix: str = "") -> list[str]:
    out = []
    for w in WORD.findall(text.lower()):
        w = w.strip(".'-")
        if MIN_LEN <= len(w) <= MAX_LEN:
            out.append(prefix + w)
        elif len(w) > MAX_LEN:
            out.append(f"{prefix}skip:{w[0]}{len(w) // 10 * 10}")          # Graham's long-word marker
    return out


def _text_parts(msg: Message) -> list[tuple[str, list[str]]]:
    """(readable text, link hosts) of each text part."""
    texts = []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        try:
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            text = payload.decode(part.get_content_charset() or "utf-8", "replace")
        except (LookupError, ValueError):
            continue
        hosts = URL_HOST.findall(text)
        if part.get_content_subtype() == "html":
            text = html.unescape(TAG.sub(" ", text))
        texts.append((text, hosts))
    return texts


def tokenize(raw: bytes) -> list[str]:
    """Distinct tokens of one message, in the order first seen, at most MAX_TOKENS."""
    msg = email.message_from_bytes(raw[:MAX_INPUT], policy=email.policy.compat32)
    found: dict[str, None] = {}

    def add(tokens: list[str]) -> None:
        for t in tokens:
            if len(found) >= MAX_TOKENS:
                return
            found.setdefault(t, None)

    add(_words(str(msg.get("Subject", "")), "subject:"))
    for name in HEADER_FIELDS:
        value = msg.get(name)
        if value is not None:
            add(_words(str(value), f"{name}:"))
    for text, hosts in _text_parts(msg):
        add([f"url:{h.lower()}" for h in hosts])
        add(_words(text))
    return list(found)

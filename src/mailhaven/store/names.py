"""Names and secrets as both backends store them: addresses, mailbox names, password hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

from .api import InvalidName, ScramCredentials
from .passwords import hasher

SCRAM_ITERATIONS = 4096


def normalize_address(address: str) -> str:
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return f"{local.lower()}@{domain.lower()}"


def normalize_mailbox_name(name: str) -> str:
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX/":
        return "INBOX/" + name[6:]
    return name


def validate_mailbox_name(name: str) -> str:
    name = normalize_mailbox_name(name)
    if not name or name.startswith("/") or name.endswith("/") or "//" in name:
        raise InvalidName(f"invalid mailbox name {name!r}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name) or len(name) > 512:
        raise InvalidName(f"invalid mailbox name {name!r}")
    if any(c in name for c in "*%"):
        raise InvalidName("mailbox names cannot contain * or %")
    return name


def hash_password(password: str) -> tuple[str, str]:
    """(argon2id hash, SCRAM-SHA-256 secrets as JSON). Slow: call off the event loop."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    scram = {
        "salt": base64.b64encode(salt).decode(),
        "iterations": SCRAM_ITERATIONS,
        "stored_key": base64.b64encode(hashlib.sha256(client_key).digest()).decode(),
        "server_key": base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest()).decode(),
    }
    return hasher.hash(password), json.dumps(scram)


def scram_secrets(stored: str) -> ScramCredentials:
    """The SCRAM-SHA-256 secrets :func:`hash_password` stored as JSON."""
    data = json.loads(stored)
    return ScramCredentials(
        salt=base64.b64decode(data["salt"]), iterations=int(data["iterations"]),
        stored_key=base64.b64decode(data["stored_key"]),
        server_key=base64.b64decode(data["server_key"]),
    )


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with ``prefix`` (with ``ESCAPE '\\'``)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

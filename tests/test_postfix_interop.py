"""Mail both ways between Mailhaven and Debian's Postfix (a private instance on its own
loopback address, from bench/postfix_peer.py): Mailhaven's queue delivers into Postfix's
Maildir, and Postfix relays to Mailhaven's port 25 into a mailbox."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import smtplib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, free_port, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from postfix_peer import PostfixPeer, which_postfix  # noqa: E402

POSTFIX_IP, MAILHAVEN_IP = "127.0.0.5", "127.0.0.7"


def _require_postfix() -> None:
    reason = None
    if which_postfix() is None:
        reason = "postfix is not installed (apt-get install postfix)"
    elif os.geteuid() != 0:
        reason = "running a private Postfix needs root"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _require_postfix()
    root = tmp_path_factory.mktemp("postfix")
    # Postfix's daemons run as the postfix user: its directory must be reachable by it, and
    # pytest's temporary directories are private to root.
    pf_root = Path(tempfile.mkdtemp(prefix="mailhaven-postfix-", dir="/tmp"))
    pf_root.chmod(0o755)
    pf_port, mh_port = free_port(POSTFIX_IP), free_port(MAILHAVEN_IP)
    postfix = PostfixPeer(pf_root / "postfix", listen=f"{POSTFIX_IP}:{pf_port}", domain="postfix.example",
                          relay_host=f"[{MAILHAVEN_IP}]:{mh_port}")
    mh = ServerProcess(root / "mh", host=MAILHAVEN_IP, ports={"smtp": mh_port}, hostname="mx.mh.example",
                       extra_config=('[relay]\ntls = "none"\n[relay.routes]\n'
                                     f'"postfix.example" = "{POSTFIX_IP}:{pf_port}"\n'
                                     '[queue]\nretry = ["1s"]\npoll = "1s"\n'))
    postfix.start()
    try:
        mh.start()
        try:
            mh.add_user("alice@mh.example", "s3cret")
            yield {"postfix": postfix, "mh": mh, "pf_port": pf_port}
        finally:
            mh.stop()
    finally:
        postfix.stop()
        shutil.rmtree(pf_root, ignore_errors=True)



def test_mailhaven_delivers_to_postfix(pair: dict[str, Any]) -> None:
    mh, postfix = pair["mh"], pair["postfix"]
    msg = (b"From: Alice <alice@mh.example>\r\nTo: bob@postfix.example\r\nSubject: to Postfix\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           b"Gr\xc3\xbc\xc3\x9fe aus Mailhaven.\r\n.a line with a leading dot\r\n")
    with smtplib.SMTP(MAILHAVEN_IP, mh.port("submission"), timeout=30) as s:
        s.login("alice@mh.example", "s3cret")
        assert s.sendmail("alice@mh.example", ["bob@postfix.example"], msg, mail_options=["BODY=8BITMIME"]) == {}
    (path,) = wait_for(lambda: postfix.delivered("bob"), what="the message in Postfix's Maildir\n" + postfix.log())
    got = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert got["Subject"] == "to Postfix"
    assert got.get_content().replace("\r\n", "\n") == "Grüße aus Mailhaven.\n.a line with a leading dot\n"
    assert "mx.mh.example" in " ".join(got.get_all("Received"))
    assert json.loads(mh.admin("queue", "list", "--json").stdout) == []
    assert "status=sent" in postfix.log() or "status=sent" in postfix.log().replace("  ", " ")


def test_postfix_delivers_to_mailhaven(pair: dict[str, Any]) -> None:
    mh = pair["mh"]
    msg = b"From: bob@postfix.example\r\nTo: alice@mh.example\r\nSubject: from Postfix\r\n\r\nHi Alice.\r\n"
    with smtplib.SMTP(POSTFIX_IP, pair["pf_port"], timeout=30) as s:
        assert s.sendmail("bob@postfix.example", ["alice@mh.example"], msg) == {}

    def arrived() -> list[dict[str, Any]]:
        listing = json.loads(mh.admin("mailbox", "list", "alice@mh.example", "--json").stdout)
        return [m for m in listing if m["subject"] == "from Postfix"]

    (m,) = wait_for(arrived, what="Postfix's message in Alice's INBOX\n" + pair["postfix"].log())
    raw = mh.admin("mailbox", "show", "alice@mh.example", str(m["uid"])).stdout
    assert "by mx.mh.example (Mailhaven)" in raw and "mx.postfix.example" in raw
    assert raw.endswith("Hi Alice.\n") or raw.endswith("Hi Alice.\r\n")

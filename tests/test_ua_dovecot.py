"""The command-line user agent against another server: Debian's Dovecot (a private
instance, as bench/imap.py runs it) for IMAP, Mailhaven for submission."""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, mailhaven_env

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from imap import PASSWORD, USER, Dovecot  # noqa: E402


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not Path(shutil.which("dovecot") or "/usr/sbin/dovecot").exists() or os.geteuid() != 0:
        reason = "Dovecot is not installed (apt-get install dovecot-imapd) or not root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="mailhaven-dovecot-", dir="/tmp"))
    root.chmod(0o755)
    dovecot = Dovecot(root, max_conns=20)
    dovecot.start()
    mh = ServerProcess(tmp_path_factory.mktemp("ua-dovecot") / "data")
    mh.start()
    try:
        mh.add_user(USER, PASSWORD)
        mh.add_user("bob@example.org", PASSWORD)
        home = root / "home-ua"
        (home / ".config" / "mailhaven").mkdir(parents=True)
        (home / ".config" / "mailhaven" / "accounts.toml").write_text(
            f'[accounts.dove]\naddress = "{USER}"\nimap = "imap://127.0.0.1:{dovecot.port}"\n'
            f'smtp = "submission://127.0.0.1:{mh.port("submission")}"\nstarttls = false\n'
            f'password_command = "echo {PASSWORD}"\n')
        yield {"dovecot": dovecot, "mh": mh, "home": home}
    finally:
        mh.stop()
        dovecot.stop()
        shutil.rmtree(root, ignore_errors=True)


def agent(peers: dict[str, Any], *args: str, stdin: str = "") -> str:
    home = peers["home"]
    out = subprocess.run([sys.executable, "-m", "mailhaven", "mail", *args], input=stdin, capture_output=True,
                         text=True, timeout=60,
                         env={**mailhaven_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_read_flag_search_move_delete_and_send_with_dovecot(peers: dict[str, Any]) -> None:
    imap = imaplib.IMAP4("127.0.0.1", peers["dovecot"].port)
    imap.login(USER, PASSWORD)
    imap.append("INBOX", "", None, b"From: Carol <carol@example.net>\r\nTo: bench@example.com\r\n"
                b"Subject: Dovecot holds this\r\nMessage-ID: <d1@example.net>\r\n\r\nStored by Dovecot.\r\n")
    imap.logout()
    (m,) = [x for x in json.loads(agent(peers, "ls", "--json")) if x["subject"] == "Dovecot holds this"]
    assert "Stored by Dovecot." in agent(peers, "read", str(m["uid"]))
    agent(peers, "flag", str(m["uid"]), "--flagged")
    (m,) = [x for x in json.loads(agent(peers, "ls", "--json")) if x["subject"] == "Dovecot holds this"]
    assert "\\Flagged" in m["flags"] and "\\Seen" in m["flags"]
    assert [h["uid"] for h in json.loads(agent(peers, "search", "from:carol", "--json"))] == [m["uid"]]
    agent(peers, "delete", str(m["uid"]))                   # Dovecot has no Trash yet: created
    (t,) = [x for x in json.loads(agent(peers, "ls", "Trash", "--json")) if x["subject"] == "Dovecot holds this"]
    agent(peers, "send", "--to", "bob@example.org", "--subject", "Via Mailhaven, filed in Dovecot",
          stdin="hello\n")
    sent = json.loads(agent(peers, "ls", "Sent", "--json"))
    assert [s["subject"] for s in sent] == ["Via Mailhaven, filed in Dovecot"]
    listing = json.loads(peers["mh"].admin("mailbox", "list", "bob@example.org", "--json").stdout)
    assert [x["subject"] for x in listing] == ["Via Mailhaven, filed in Dovecot"]
    folders = {f["name"] for f in json.loads(agent(peers, "folders", "--json"))}
    assert {"INBOX", "Trash", "Sent"} <= folders
    agent(peers, "move", str(t["uid"]), "INBOX", "--folder", "Trash")

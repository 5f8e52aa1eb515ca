"""Real POP3 clients against a running server: curl's pop3:// (AUTH PLAIN, STLS, pop3s),
fetchmail (UIDL, plain and STLS) and getmail6 (delete after fetch)."""

from __future__ import annotations

import email
import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess
from peers import installed

USER = "carol@example.org"
PASSWORD = "pop-pass"


def send(srv: ServerProcess, subject: str, body: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("dave@example.net", [USER], (
            f"From: dave@example.net\r\nTo: {USER}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n\r\n{body}").encode())


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path / "data").start()
    s.add_user(USER, PASSWORD)
    for n in range(1, 4):
        send(s, f"note {n}", f"text {n}\r\n.leading dot {n}\r\n")
    yield s
    s.stop()


def count(srv: ServerProcess) -> int:
    out = srv.admin("mailbox", "list", USER, "--json").stdout
    import json

    return len(json.loads(out))


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([installed("curl"), "-s", "--max-time", "20", *args], capture_output=True, timeout=60)


def test_curl_list_and_retrieve(srv: ServerProcess) -> None:
    base = f"pop3://127.0.0.1:{srv.port('pop3')}"
    out = curl("-u", f"{USER}:{PASSWORD}", base + "/")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3
    out = curl("-u", f"{USER}:{PASSWORD}", base + "/2")
    assert out.returncode == 0
    assert b"Subject: note 2" in out.stdout and b"\n.leading dot 2" in out.stdout


def test_curl_auth_plain_over_stls_and_pop3s(srv: ServerProcess) -> None:
    out = curl("-v", "--ssl-reqd", "-k", "--login-options", "AUTH=PLAIN", "-u", f"{USER}:{PASSWORD}",
               f"pop3://127.0.0.1:{srv.port('pop3')}/1")
    assert out.returncode == 0, out.stderr
    assert b"STLS" in out.stderr and b"AUTH PLAIN" in out.stderr
    assert b"Subject: note 1" in out.stdout
    out = curl("-k", "-u", f"{USER}:{PASSWORD}", f"pop3s://127.0.0.1:{srv.port('pop3s')}/3")
    assert out.returncode == 0, out.stderr
    assert b"Subject: note 3" in out.stdout


def test_curl_dele_via_custom_request(srv: ServerProcess) -> None:
    out = curl("-u", f"{USER}:{PASSWORD}", "-X", "DELE", "-I", f"pop3://127.0.0.1:{srv.port('pop3')}/1")
    assert out.returncode == 0, out.stderr
    assert count(srv) == 2


def run_fetchmail(srv: ServerProcess, tmp: Path, extra: str,
                  server_opts: str = "") -> tuple[subprocess.CompletedProcess[str], Path]:
    fetchmail = installed("fetchmail")
    home = tmp / "fm"
    home.mkdir(exist_ok=True)
    out = tmp / "fetched.mbox"
    rc = home / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 with proto POP3 port {srv.port("pop3")} {server_opts}\n'
        f'  user "{USER}" there with password "{PASSWORD}" is "{os.environ.get("USER", "root")}" here\n'
        f'  options {extra}\n'
        f'  mda "/bin/sh -c \'cat >> {out}\'"\n')
    rc.chmod(0o600)
    env = dict(os.environ, FETCHMAILHOME=str(home), HOME=str(home))
    result = subprocess.run([fetchmail, "--nodetach", "--nosyslog", "-v", "-f", str(rc)],
                            capture_output=True, text=True, env=env, timeout=120)
    return result, out


def test_fetchmail_keep_uidl_then_fetch_all_and_delete(srv: ServerProcess, tmp_path: Path) -> None:
    result, out = run_fetchmail(srv, tmp_path, 'keep sslproto ""', "uidl")
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes().count(b"Subject: note") == 3
    assert b".leading dot 1" in out.read_bytes()
    assert count(srv) == 3
    send(srv, "note 4", "fourth\r\n")
    result, out = run_fetchmail(srv, tmp_path, 'keep sslproto ""', "uidl")   # UIDL: only the new one
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes().count(b"Subject: note") == 4
    out.unlink()
    result, out = run_fetchmail(srv, tmp_path, 'fetchall nokeep no sslcertck sslproto "TLS1.2+"')  # STLS
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STLS" in result.stderr + result.stdout
    assert out.read_bytes().count(b"Subject: note") == 4
    assert count(srv) == 0


def subjects(directory: Path) -> list[str]:
    return [str(email.message_from_bytes(p.read_bytes())["subject"]) for p in directory.iterdir()]


def test_getmail_fetches_and_deletes(srv: ServerProcess, tmp_path: Path) -> None:
    getmail = installed("getmail")
    gmdir = tmp_path / "getmail"
    gmdir.mkdir()
    target = tmp_path / "delivered"
    target.mkdir()
    rc = gmdir / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
        f"port = {srv.port('pop3')}\nusername = {USER}\npassword = {PASSWORD}\n"
        # getmail's mbox and Maildir writers refuse to run as root (CI containers): an MDA
        # that stores each message in its own file instead.
        "[destination]\ntype = MDA_external\npath = /bin/sh\nallow_root_commands = true\n"
        f"arguments = (\"-c\", \"cat > $(mktemp -p {target} msg.XXXXXX)\")\n"
        "[options]\ndelete = true\nread_all = true\nverbose = 2\n")
    result = subprocess.run([getmail, "--getmaildir", str(gmdir), "--rcfile", str(rc)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(subjects(target)) == ["note 1", "note 2", "note 3"]
    assert count(srv) == 0
    # over pop3s as well
    send(srv, "note 5", "five\r\n")
    rc.write_text(rc.read_text().replace("SimplePOP3Retriever", "SimplePOP3SSLRetriever")
                  .replace(f"port = {srv.port('pop3')}", f"port = {srv.port('pop3s')}"))
    result = subprocess.run([getmail, "--getmaildir", str(gmdir), "--rcfile", str(rc)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(subjects(target)) == ["note 1", "note 2", "note 3", "note 5"]

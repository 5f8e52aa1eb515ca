"""The command-line user agent (``mailhaven mail ...``) against a running Mailhaven over
IMAP (STARTTLS) and submission (STARTTLS + AUTH), as a subprocess with its own HOME; plus
the pure message-building and rendering parts, the corpus included."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, mailhaven_env
from mailhaven.ua.compose import Draft, build, forward, quote, reply, without_bcc
from mailhaven.ua.config import UAError, load_accounts
from mailhaven.ua.render import attachments, plain_text, render

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("ua") / "data").start()
    try:
        s.add_user("alice@example.org", PASSWORD)
        s.add_user("bob@example.org", PASSWORD)
        s.add_user("carol@example.org", PASSWORD)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def home(srv: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("home")
    (h / "secret").write_text(PASSWORD + "\n")
    accounts = ""
    for name, display in (("alice", "Alice Liddell"), ("bob", "Bob Ünal"), ("carol", "")):
        accounts += f"""
[accounts.{name}]
address = "{name}@example.org"
name = "{display}"
imap = "imap://127.0.0.1:{srv.port('imap')}"
smtp = "submission://127.0.0.1:{srv.port('submission')}"
password_command = "cat {h / 'secret'}"
insecure = true
{'default = true' if name == 'alice' else ''}
"""
    (h / ".config" / "mailhaven").mkdir(parents=True)
    (h / ".config" / "mailhaven" / "accounts.toml").write_text(accounts)
    return h


def mail(home: Path, *args: str, account: str | None = None, stdin: str | None = None,
         env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mailhaven", "mail"] + (["--account", account] if account else []) + list(args)
    e = {**mailhaven_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **(env or {})}
    e.pop("MAILHAVEN_PASSWORD", None)
    out = subprocess.run(cmd, input=stdin if stdin is not None else "", capture_output=True, text=True, env=e,
                         timeout=60)
    if check:
        assert out.returncode == 0, out.stderr + out.stdout
    return out


def ls(home: Path, folder: str = "INBOX", account: str = "bob") -> list[dict[str, Any]]:
    return json.loads(mail(home, "ls", folder, "--json", account=account).stdout)  # type: ignore[no-any-return]


def find(home: Path, subject: str, folder: str = "INBOX", account: str = "bob") -> dict[str, Any]:
    (m,) = [m for m in ls(home, folder, account) if m["subject"] == subject]
    return m


def test_send_with_attachment_read_and_save(home: Path, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3 + b"\r\nline\nends\r"
    (tmp_path / "data.bin").write_bytes(payload)
    (tmp_path / "notes.txt").write_bytes(b"first\nsecond\r\n")
    out = mail(home, "send", "--to", "Bob Ünal <bob@example.org>", "--subject", "Grüße und Daten",
               "--attach", str(tmp_path / "data.bin"), "--attach", str(tmp_path / "notes.txt"),
               stdin="Hallo Bob,\nhier sind die Daten.\n")
    assert "sent <" in out.stdout
    m = find(home, "Grüße und Daten")
    assert "Alice Liddell" in m["from"] and "\\Seen" not in m["flags"]
    read = json.loads(mail(home, "read", str(m["uid"]), "--json", "--save-attachments", str(tmp_path / "saved"),
                           account="bob").stdout)
    assert "hier sind die Daten." in read["text"]
    assert [(a["name"], a["size"]) for a in read["attachments"]] == [("data.bin", len(payload)), ("notes.txt", 14)]
    assert (tmp_path / "saved" / "data.bin").read_bytes() == payload            # byte for byte
    assert (tmp_path / "saved" / "notes.txt").read_bytes() == b"first\nsecond\r\n"
    assert "\\Seen" in find(home, "Grüße und Daten")["flags"]                   # reading marks it read
    sent = [s for s in ls(home, "Sent", "alice") if s["subject"] == "Grüße und Daten"]
    assert len(sent) == 1                                                        # a copy in Sent
    text = mail(home, "read", str(m["uid"]), account="bob").stdout
    assert "Subject: Grüße und Daten" in text and "[1] data.bin" in text


def test_bcc_is_delivered_but_not_shown(home: Path) -> None:
    mail(home, "send", "--to", "bob@example.org", "--bcc", "carol@example.org", "--subject", "Quiet copy",
         stdin="hi\n")
    carol = find(home, "Quiet copy", account="carol")
    raw = mail(home, "read", str(carol["uid"]), "--raw", account="carol").stdout
    assert "carol@example.org" not in raw.split("\n\n")[0].replace("for <carol@example.org>", "")
    bob = find(home, "Quiet copy")
    assert "Bcc" not in mail(home, "read", str(bob["uid"]), "--raw", account="bob").stdout.split("\n\n")[0]


def test_reply_all_and_forward(home: Path) -> None:
    mail(home, "send", "--to", "bob@example.org", "--cc", "carol@example.org", "--subject", "Lunch?",
         stdin="Crown at noon?\n")
    m = find(home, "Lunch?")
    mail(home, "reply", str(m["uid"]), "--all", account="bob", stdin="Yes, see you there.\n")
    reply_msg = find(home, "Re: Lunch?", account="alice")
    read = json.loads(mail(home, "read", str(reply_msg["uid"]), "--json", account="alice").stdout)
    assert read["text"].startswith("Yes, see you there.") and "> Crown at noon?" in read["text"]
    assert "carol@example.org" in read["cc"] and "bob@example.org" not in read["cc"]
    raw = mail(home, "read", str(reply_msg["uid"]), "--raw", account="alice").stdout
    original = email.message_from_string(mail(home, "read", str(m["uid"]), "--raw", account="bob").stdout)
    parsed = email.message_from_string(raw)
    assert parsed["In-Reply-To"] == original["Message-ID"] and original["Message-ID"] in parsed["References"]
    assert "\\Answered" in find(home, "Lunch?")["flags"]
    assert find(home, "Re: Lunch?", account="carol")
    mail(home, "forward", str(m["uid"]), "--to", "carol@example.org", "--as-attachment", account="bob",
         stdin="FYI\n")
    fwd = find(home, "Fwd: Lunch?", account="carol")
    got = json.loads(mail(home, "read", str(fwd["uid"]), "--json", account="carol").stdout)
    assert got["text"].startswith("FYI") and got["attachments"][0]["type"] == "message/rfc822"


def test_draft_with_the_editor_then_resume_and_send(home: Path, tmp_path: Path) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1]); text = p.read_text()\n"
        "text = text.replace('To: ', 'To: bob@example.org', 1).replace('Subject: ', 'Subject: Draft plan', 1)\n"
        "p.write_text(text + ('second pass\\n' if 'first pass' in text else 'first pass\\n'))\n")
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    env = {"EDITOR": f"{sys.executable} {editor}"}
    # No stdin: the CLI opens the editor (run under a pseudo-terminal stand-in: stdin is /dev/null here,
    # so --body-file is not given and stdin is empty; the editor path is taken when stdin is a tty).
    out = subprocess.run(
        [sys.executable, "-c", "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))",
         sys.executable, "-m", "mailhaven", "mail", "draft"],
        capture_output=True, text=True, timeout=60,
        env={**mailhaven_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **env})
    assert out.returncode == 0, out.stdout + out.stderr
    drafts = [d for d in ls(home, "Drafts", "alice") if d["subject"] == "Draft plan"]
    assert len(drafts) == 1 and "\\Draft" in drafts[0]["flags"]
    uid = drafts[0]["uid"]
    mail(home, "draft", "--resume", str(uid), "--send", "--no-edit")
    got = find(home, "Draft plan")
    assert "first pass" in json.loads(mail(home, "read", str(got["uid"]), "--json", account="bob").stdout)["text"]
    assert not [d for d in ls(home, "Drafts", "alice") if d["subject"] == "Draft plan"]


def test_move_delete_flag_search(home: Path) -> None:
    mail(home, "send", "--to", "bob@example.org", "--subject", "Invoice 42 für März", stdin="Betrag: 12 EUR\n")
    m = find(home, "Invoice 42 für März")
    mail(home, "flag", str(m["uid"]), "--flagged", "--keyword", "$Important", account="bob")
    flags = find(home, "Invoice 42 für März")["flags"]
    assert "\\Flagged" in flags and "$Important" in flags
    hits = json.loads(mail(home, "search", "from:alice subject:Invoice", "--json", account="bob").stdout)
    assert [h["uid"] for h in hits] == [m["uid"]]
    hits = json.loads(mail(home, "search", "März", "--json", account="bob").stdout)     # UTF-8 search
    assert [h["uid"] for h in hits] == [m["uid"]]
    mail(home, "move", str(m["uid"]), "Archive", account="bob")
    moved = find(home, "Invoice 42 für März", "Archive")
    mail(home, "delete", str(moved["uid"]), "--folder", "Archive", account="bob")
    trashed = find(home, "Invoice 42 für März", "Trash")
    mail(home, "delete", str(trashed["uid"]), "--folder", "Trash", account="bob")
    assert not [t for t in ls(home, "Trash") if t["subject"] == "Invoice 42 für März"]
    folders = json.loads(mail(home, "folders", "--json", account="bob").stdout)
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= {f["name"] for f in folders}


def test_errors_are_one_line(home: Path, tmp_path: Path) -> None:
    out = mail(home, "read", "999999", account="bob", check=False)
    assert out.returncode == 1 and out.stderr.startswith("mailhaven mail:") and "Traceback" not in out.stderr
    out = mail(home, "send", "--subject", "nobody", stdin="x\n", check=False)
    assert out.returncode == 1 and "no recipients" in out.stderr
    bad = tmp_path / "accounts.toml"
    bad.write_text('[accounts.x]\naddress = "x@example.org"\nimap = "imaps://h"\nsmtp = "submissions://h"\n'
                   'password = "hunter2"\n')
    with pytest.raises(UAError, match="plain-text password"):
        load_accounts(bad)
    out = mail(home, "--accounts", str(bad), "ls", check=False)
    assert out.returncode == 1 and "plain-text password" in out.stderr
    out = mail(home, "ls", account="nobody", check=False)
    assert out.returncode == 1 and "no account 'nobody'" in out.stderr


# -- pure parts -------------------------------------------------------------------------------
def test_build_encodes_headers_and_keeps_bcc_out_of_the_wire() -> None:
    msg = build(Draft(sender="Jörg <jorg@example.org>", to=["Zoë <zoe@example.org>"], bcc=["hidden@example.org"],
                      subject="Ünïcödé", body="Grüße\n"))
    raw = msg.as_bytes()
    assert raw.isascii()                                        # RFC 2047 words, QP body
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "Ünïcödé" and parsed["From"].addresses[0].display_name == "Jörg"
    assert parsed.get_content().strip() == "Grüße" and parsed["Message-ID"] and parsed["Date"]
    assert b"Bcc" in raw and b"Bcc" not in without_bcc(msg)


def test_reply_and_forward_headers() -> None:
    original = email.message_from_bytes(
        b"From: Bob <bob@example.org>\r\nTo: me@example.org, carol@example.org\r\nCc: dave@example.org\r\n"
        b"Subject: Re: plans\r\nMessage-ID: <p2@example.org>\r\nReferences: <p1@example.org>\r\n"
        b"Reply-To: list@example.org\r\n\r\nline one\r\n\r\nline two\r\n", policy=email.policy.compat32)
    d = reply(original, "me@example.org", {"me@example.org"}, reply_all=True)
    assert d.to == ["list@example.org"] and d.subject == "Re: plans"
    assert sorted(d.cc) == ["carol@example.org", "dave@example.org"]
    assert d.in_reply_to == "<p2@example.org>" and d.references == ["<p1@example.org>", "<p2@example.org>"]
    assert "> line one\n>\n> line two" in d.body
    f = forward(original, b"raw", "me@example.org", ["x@example.org"], as_attachment=False)
    assert f.subject == "Fwd: Re: plans" and "line two" in f.body
    assert quote("a\n\nb\n") == "> a\n>\n> b\n"


def test_every_corpus_message_renders(corpus_files: list[Path]) -> None:
    for path in corpus_files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        text = render(msg)
        assert isinstance(text, str) and isinstance(plain_text(msg), str), path
        for a in attachments(msg):
            assert a["size"] >= 0
        reply(msg, "me@example.org", {"me@example.org"}, reply_all=True)


def test_html_only_message_is_shown_as_text() -> None:
    msg = email.message_from_bytes(
        b"From: a@example.org\r\nSubject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><p>Hello <b>world</b></p><script>alert(1)</script><ul><li>one</li></ul></body></html>\r\n",
        policy=email.policy.compat32)
    text = plain_text(msg)
    assert "Hello world" in text and "alert" not in text and "one" in text


def test_env_password(home: Path) -> None:
    cfg = home / ".config" / "mailhaven" / "accounts.toml"
    accounts = load_accounts(cfg)
    assert accounts["alice"].get_password() == PASSWORD
    os.environ.pop("MAILHAVEN_PASSWORD", None)


# -- what a newcomer tripped on (issue 19) -------------------------------------------------------
def in_terminal(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``mailhaven mail ARGS`` with a terminal on stdin (so the editor is used); output merged."""
    return subprocess.run(
        [sys.executable, "-c", "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))",
         sys.executable, "-m", "mailhaven", "mail", *args],
        capture_output=True, text=True, timeout=60,
        env={**mailhaven_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **env})


def subjects(home: Path, folder: str = "INBOX", account: str = "bob") -> list[str]:
    return [m["subject"] for m in ls(home, folder, account)]


def test_nothing_is_sent_by_accident(home: Path) -> None:
    out = mail(home, "send", "--to", "bob@example.org", "--subject", "Empty by mistake", stdin="", check=False)
    assert out.returncode == 1 and "empty" in out.stderr and "--allow-empty" in out.stderr, out.stderr
    out = mail(home, "send", "--to", "bob@example.org", "--subject", "Empty by mistake", "--body-file", "/dev/null",
               check=False)
    assert out.returncode == 1 and "empty" in out.stderr
    out = in_terminal(home, "send", "--to", "bob@example.org", "--subject", "Editor quit", env={"EDITOR": "true"})
    assert out.returncode == 1 and "without a change" in out.stdout and "Traceback" not in out.stdout, out.stdout
    out = in_terminal(home, "send", "--to", "bob@example.org", "--subject", "No editor",
                      env={"EDITOR": "no-such-editor-here", "VISUAL": ""})
    assert out.returncode == 1 and "Traceback" not in out.stdout, out.stdout
    assert "cannot run the editor 'no-such-editor-here'" in out.stdout and "EDITOR" in out.stdout, out.stdout
    assert not {"Empty by mistake", "Editor quit", "No editor"} & set(subjects(home))
    mail(home, "send", "--to", "bob@example.org", "--subject", "Empty on purpose", "--allow-empty", stdin="")
    out = in_terminal(home, "send", "--to", "bob@example.org", "--subject", "Editor quit on purpose",
                      "--allow-empty", env={"EDITOR": "true"})
    assert out.returncode == 0, out.stdout
    assert {"Empty on purpose", "Editor quit on purpose"} <= set(subjects(home))


def tls_accounts(home: Path, srv: ServerProcess, extra: str, password: str = "cat secret") -> Path:
    path = home / f"tls-{abs(hash(extra + password))}.toml"
    path.write_text(f"""
[accounts.alice]
address = "alice@example.org"
imap = "imaps://127.0.0.1:{srv.port('imaps')}"
smtp = "submissions://127.0.0.1:{srv.port('submissions')}"
password_command = "cd {home} && {password}"
{extra}
""")
    return path


def test_own_servers_certificate_is_trusted_with_ca_file(home: Path, srv: ServerProcess) -> None:
    plain = tls_accounts(home, srv, "")
    out = mail(home, "--accounts", str(plain), "folders", check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "certificate is not trusted" in out.stderr and "ca_file" in out.stderr, out.stderr
    trusting = tls_accounts(home, srv, f'ca_file = "{srv.data / "tls" / "cert.pem"}"')
    out = mail(home, "--accounts", str(trusting), "folders", "--json")
    assert "INBOX" in {f["name"] for f in json.loads(out.stdout)}
    mail(home, "--accounts", str(trusting), "send", "--to", "bob@example.org", "--subject", "Over verified TLS",
         stdin="checked\n")
    assert "Over verified TLS" in subjects(home)
    # a relative ca_file is read from the accounts file's folder
    (home / "server-cert.pem").write_bytes((srv.data / "tls" / "cert.pem").read_bytes())
    relative = tls_accounts(home, srv, 'ca_file = "server-cert.pem"')
    assert mail(home, "--accounts", str(relative), "folders").returncode == 0


def test_wrong_password_is_one_clean_line(home: Path, srv: ServerProcess) -> None:
    wrong = tls_accounts(home, srv, f'ca_file = "{srv.data / "tls" / "cert.pem"}"', password="echo wrong")
    out = mail(home, "--accounts", str(wrong), "ls", check=False)
    assert out.returncode == 1 and "login as alice@example.org failed" in out.stderr, out.stderr
    assert "b'" not in out.stderr and 'b"' not in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_misspelt_key_is_named(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "accounts.toml"
    bad.write_text('[accounts.x]\nadress = "x@example.org"\nimap = "imaps://h"\nsmtp = "submissions://h"\n')
    out = mail(home, "--accounts", str(bad), "ls", check=False)
    assert out.returncode == 1 and "accounts.x.adress is not a known key; did you mean address?" in out.stderr, \
        out.stderr


def test_mail_help_explains_the_accounts_file() -> None:
    out = subprocess.run([sys.executable, "-m", "mailhaven", "mail", "--help"], capture_output=True, text=True,
                         env=mailhaven_env(), timeout=60).stdout
    assert "``" not in out
    for needed in ("[accounts.", "address =", "imap =", "smtp =", "password_command", "ca_file", "insecure",
                   "DATA/tls/cert.pem", "--allow-empty"):
        assert needed in out, needed


def test_ls_shows_the_arrival_date_when_there_is_no_date_header(home: Path, srv: ServerProcess) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("x@elsewhere.example", ["bob@example.org"], b"Subject: Undated\r\n\r\nno date\r\n")
    m = find(home, "Undated")
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}", m["date"]), m
    text = mail(home, "ls", account="bob").stdout
    (line,) = [line for line in text.splitlines() if "Undated" in line]
    assert m["date"][:25] in line

"""``mailhaven import`` / ``export`` as a user runs them, and ``import imap`` against our own
running IMAP server (imaplib as the client): folders, flags, dates, idempotent reruns."""

from __future__ import annotations

import filecmp
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess, run_cli
from mailhaven.transfer import mbox as mb

SRC = "source@example.org"
DST = "target@example.org"
PASSWORD = "imp0rt pass"


def sample_mbox(path: Path, n: int, prefix: str) -> list[bytes]:
    raws = []
    with open(path, "wb") as f:
        w = mb.MboxWriter(f)
        for i in range(n):
            raw = (f"From: s{i}@example.net\nSubject: {prefix} {i} \u00fcber\n"
                   f"Message-ID: <{prefix}.{i}@example.net>\n\nbody {i}\nFrom here on\n").encode()
            flags = {"\\Seen"} if i % 2 else {"\\Flagged", "$Forwarded"}
            w.write(raw, flags, 1_600_000_000 + i * 3600)
            raws.append(raw)
    return raws


def listing(data: Path, user: str, folder: str) -> list[dict[str, object]]:
    out = run_cli(data, "mailbox", "list", user, "--folder", folder, "--json").stdout
    return json.loads(out)  # type: ignore[no-any-return]


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_cli_import_export_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_cli(data, "domain", "add", "example.org")
    for user in (SRC, DST):
        run_cli(data, "user", "add", user, "--password-stdin", input="pw\n")
    sample_mbox(tmp_path / "in.mbox", 40, "cli")
    (tmp_path / "bad.mbox").write_bytes(b"From a@b Mon Jan  1 00:00:00 2001\n\n")
    r = run_cli(data, "import", "mbox", str(tmp_path / "in.mbox"), "--user", SRC, "--folder", "Lists/Python")
    assert "40 messages imported in 1 folder " in r.stderr and "0 skipped" in r.stderr
    r = run_cli(data, "import", "mbox", str(tmp_path / "bad.mbox"), "--user", SRC)
    assert r.returncode == 0 and "skipped" in r.stderr and "empty message" in r.stderr
    items = listing(data, SRC, "Lists/Python")
    assert len(items) == 40 and items[0]["date"] == "2020-09-13T12:26:40+00:00"
    assert items[0]["flags"] == ["$Forwarded", "\\Flagged"] and items[1]["flags"] == ["\\Seen"]
    for fmt in ("mbox", "maildir"):
        first, second = tmp_path / f"{fmt}1", tmp_path / f"{fmt}2"
        r = run_cli(data, "export", "--user", SRC, "--format", fmt, str(first))
        assert "40 messages exported" in r.stderr
        other = f"copy-{fmt}@example.org"
        run_cli(data, "user", "add", other, "--password-stdin", input="pw\n")
        run_cli(data, "import", fmt, str(first), "--user", other)
        run_cli(data, "export", "--user", other, "--format", fmt, str(second))
        assert same_tree(first, second)
    r = run_cli(data, "export", "--user", SRC, "--format", "mbox", str(tmp_path / "mbox1"), check=False)
    assert r.returncode == 1 and "not empty" in r.stderr
    r = run_cli(data, "import", "mbox", str(tmp_path / "missing"), "--user", SRC, check=False)
    assert r.returncode == 1 and "no such file" in r.stderr
    r = run_cli(data, "import", "mbox", str(tmp_path / "in.mbox"), "--user", "nobody@example.org", check=False)
    assert r.returncode == 1


@pytest.fixture
def imap_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data").start()
    srv.add_user(SRC, PASSWORD)
    srv.add_user(DST, "other")
    yield srv
    srv.stop()


def run_import(srv: ServerProcess, *args: str, password: str = PASSWORD, check: bool = True) -> str:
    import subprocess
    import sys

    from conftest import mailhaven_env

    env = mailhaven_env()
    env["MAILHAVEN_IMPORT_PASSWORD"] = password
    result = subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(srv.data), "import", "imap",
                             "--user", DST, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result.stderr


def test_import_imap_from_our_server_twice(imap_server: ServerProcess, tmp_path: Path) -> None:
    srv = imap_server
    sample_mbox(tmp_path / "a.mbox", 120, "inbox")
    sample_mbox(tmp_path / "b.mbox", 30, "deep")
    srv.admin("import", "mbox", str(tmp_path / "a.mbox"), "--user", SRC)
    srv.admin("import", "mbox", str(tmp_path / "b.mbox"), "--user", SRC, "--folder", "Projekte/B\u00fccher")
    url = f"imap://{SRC}@127.0.0.1:{srv.port('imap')}"
    err = run_import(srv, "--from", url, "--insecure")
    assert "150 messages copied" in err
    err = run_import(srv, "--from", url, "--insecure")                # idempotent
    assert "0 messages copied" in err and "150 already present" in err
    src_export, dst_export = tmp_path / "src", tmp_path / "dst"
    srv.admin("export", "--user", SRC, "--format", "mbox", str(src_export))
    srv.admin("export", "--user", DST, "--format", "mbox", str(dst_export))
    assert same_tree(src_export, dst_export)                         # bytes, flags, dates, folders
    # a new message at the source: only that one is copied (resumable)
    with open(tmp_path / "c.mbox", "wb") as f:
        mb.MboxWriter(f).write(b"Subject: late\nMessage-ID: <late@x>\n\nx\n", {"\\Seen"}, 1_700_000_000)
    srv.admin("import", "mbox", str(tmp_path / "c.mbox"), "--user", SRC)
    err = run_import(srv, "--from", f"imaps://{SRC}@127.0.0.1:{srv.port('imaps')}", "--insecure")
    assert "1 message copied" in err and "150 already present" in err


def test_import_imap_folder_map_password_command_and_errors(imap_server: ServerProcess, tmp_path: Path) -> None:
    srv = imap_server
    sample_mbox(tmp_path / "a.mbox", 5, "mapped")
    srv.admin("import", "mbox", str(tmp_path / "a.mbox"), "--user", SRC, "--folder", "Work/Old")
    url = f"imaps://{SRC}@127.0.0.1:{srv.port('imaps')}"
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    err = run_import(srv, "--from", url, "--insecure", "--password-command", f"cat {pw_file}",
                     "--folder-map", "Work=Archive/Work", password="wrong")
    assert "5 messages copied" in err
    assert len(listing(srv.data, DST, "Archive/Work/Old")) == 5
    err = run_import(srv, "--from", url, "--insecure", password="wrong", check=False)
    assert "login" in err and "failed" in err
    err = run_import(srv, "--from", url, check=False)                # self-signed: verification fails
    assert "cannot connect" in err or "CERTIFICATE" in err.upper()
    err = run_import(srv, "--from", "pop3://x@y", check=False)
    assert "expected imaps://" in err


def test_stream_reader_handles_large_mbox(tmp_path: Path) -> None:
    """A 3000-message mbox is read in one pass; every message comes back."""
    raws = sample_mbox(tmp_path / "big.mbox", 3000, "big")
    with open(tmp_path / "big.mbox", "rb") as f:
        got = [m.raw for m in mb.read_mbox(f) if not isinstance(m, tuple)]
    assert got == raws

"""The data directory is the server user's only (issue 14, item 9): a real server and the
admin CLI, started from a shell with the usual umask 022, make every directory 0700 and
every file 0600 (database, WAL, shared memory, write lock, blobs, spool, TLS key and
certificate, DKIM keys); a data directory left readable by an older version is tightened
when the server starts."""

from __future__ import annotations

import os
import smtplib
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import LISTENER_NAMES, free_port, mailhaven_env

BIG = 300 * 1024          # above the inline-blob limit: a file under blobs/


def _umask_022() -> None:
    os.umask(0o022)


class Server:
    """``mailhaven serve`` with its configuration and log outside the data directory."""

    def __init__(self, tmp: Path, data: Path) -> None:
        self.data, self.tmp = data, tmp
        self.ports = {name: free_port() for name in LISTENER_NAMES}
        lines = ['hostname = "mail.test.example"', "", "[listen]"]
        lines += [f'{name} = "127.0.0.1:{port}"' for name, port in self.ports.items()]
        lines += ["", "[smtp]", "workers = 1"]
        if os.environ.get("MAILHAVEN_TEST_STORE") == "postgres":
            lines += ["", "[store]", 'backend = "postgres"', f'dsn = "{os.environ["MAILHAVEN_TEST_PG_DSN"]}"',
                      f'schema = "mh_test_{os.urandom(6).hex()}"']
        self.config = tmp / "mailhaven.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = tmp / "server.log"

    def cli(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run([sys.executable, "-m", "mailhaven", "--data", str(self.data),
                                 "--config", str(self.config), *args], input=input, capture_output=True,
                                text=True, env=mailhaven_env(), timeout=120, preexec_fn=_umask_022)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start(self) -> None:
        with open(self.log_path, "a") as log:             # the child keeps its own copy
            self.proc = subprocess.Popen([sys.executable, "-m", "mailhaven", "--data", str(self.data), "--config",
                                          str(self.config), "serve"], stdout=subprocess.PIPE, stderr=log, text=True,
                                         env=mailhaven_env(), preexec_fn=_umask_022)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "Ready.":
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError("server did not start:\n" + self.log_path.read_text())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def use(self, n: int) -> None:
        """What a day's work creates: accounts, a token, a DKIM key, big and small mail."""
        if "mods.example" not in self.cli("domain", "list"):
            self.cli("domain", "add", "mods.example")
        self.cli("user", "add", f"u{n}@mods.example", "--password-stdin", input="s3cret\n")
        self.cli("token", "create", f"u{n}@mods.example")
        self.cli("dkim", "generate", "mods.example", "--selector", f"s{n}", "--algorithm", "ed25519")
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as smtp:
            for size in (100, BIG):
                body = f"Subject: {n}/{size}\r\n\r\n" + ("x" * 76 + "\r\n") * (size // 78)
                smtp.sendmail("someone@elsewhere.example", [f"u{n}@mods.example"], body)
        self.cli("mailbox", "list", f"u{n}@mods.example")


def loose_entries(data: Path) -> list[str]:
    """Everything under ``data`` (itself included) that group or others may use."""
    out = []
    for path in [data, *data.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            out.append(f"{path.relative_to(data.parent)} {stat.S_IMODE(st.st_mode):o}")
    return out


def assert_private(server: Server) -> None:
    """No loose entry; on failure, the entries and the end of the server's log (it says what it
    restricted at start), to tell a mode the server missed from one made after it looked."""
    loose = loose_entries(server.data)
    log = server.log_path.read_text()[-3000:] if server.log_path.exists() else ""
    assert loose == [], f"{loose}\n--- server log ---\n{log}"


def test_a_fresh_data_directory_is_private(tmp_path: Path) -> None:
    server = Server(tmp_path, tmp_path / "data")
    server.cli("domain", "add", "first.example")          # a CLI command makes the directory
    assert_private(server)
    server.start()
    try:
        server.use(1)
        made = {p.name for p in server.data.rglob("*")}
        assert {"tls", "key.pem", "cert.pem", "dkim", "tmp"} <= made
        if os.environ.get("MAILHAVEN_TEST_STORE") != "postgres":
            assert {"mailhaven.db", "mailhaven.db-wal", "mailhaven.db-shm", "blobs"} <= made
            assert any(p.is_file() for p in (server.data / "blobs").rglob("*"))
        assert_private(server)             # while running (WAL, SHM)
    finally:
        server.stop()
    assert_private(server)


def test_a_loose_data_directory_is_tightened_at_start(tmp_path: Path) -> None:
    server = Server(tmp_path, tmp_path / "data")
    server.start()
    try:
        server.use(1)
    finally:
        server.stop()
    # As an older version left it: the directories 0755, the files 0644, a link pointing out.
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (server.data / "link").symlink_to(outside)
    for path in [server.data, *server.data.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert len(loose_entries(server.data)) >= 8
    server.start()
    try:
        assert_private(server)
        server.use(2)
        assert_private(server)
    finally:
        server.stop()
    assert_private(server)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644                    # links are not followed

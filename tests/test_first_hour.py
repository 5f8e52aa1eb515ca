"""What a newcomer meets in the first hour (issue 19), run as they would: the real
``mailhaven`` command and ``scripts/run`` in subprocesses, commands copied from the
README and from the server's own start-up hints, run in a fresh shell."""

from __future__ import annotations

import base64
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, ServerProcess, free_port, mailhaven_env

VENV_BIN = Path(sys.executable).parent
MAILHAVEN = VENV_BIN / "mailhaven"


def mh(*args: str, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailhaven", *args], capture_output=True, text=True,
                          input=input, env=mailhaven_env(), cwd=cwd, timeout=120)


def fresh_shell_env() -> dict[str, str]:
    """A login shell's environment: no virtual environment on PATH, no PYTHONPATH."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and Path(p).resolve() != VENV_BIN.resolve()]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(path or ["/usr/bin", "/bin"])
    return env


def ports_config(data: Path, **fixed: int) -> dict[str, int]:
    data.mkdir(parents=True, exist_ok=True)
    ports = {name: fixed.get(name, free_port()) for name in ("smtp", "submission", "imap", "http")}
    text = "[listen]\n" + "".join(f'{n} = "127.0.0.1:{p}"\n' for n, p in ports.items())
    text += 'submissions = ""\nimaps = ""\npop3 = ""\npop3s = ""\nmanagesieve = ""\n'
    (data / "mailhaven.toml").write_text(text)
    return ports


class Serve:
    """A server started the way a user starts one, its stdout collected up to ``Ready.``."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env or mailhaven_env())
        self.lines: list[str] = []

    def ready(self, timeout: float = 60) -> list[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"server exited {self.proc.wait()}:\n" + "".join(self.lines))
            self.lines.append(line)
            if line.strip() == "Ready.":
                return self.lines
        raise AssertionError("not ready:\n" + "".join(self.lines))

    def stop(self) -> tuple[float, str]:
        """SIGTERM; how long it took to exit and everything it printed."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return time.monotonic() - started, "".join(self.lines) + out


@pytest.fixture
def servers() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        if s.proc.stdout is not None:
            s.proc.stdout.close()


# -- 1. --data and --config on either side of the subcommand ----------------------------------
def test_data_and_config_after_the_subcommand(tmp_path: Path) -> None:
    data = tmp_path / "d"
    r = mh("domain", "add", "nyu.example", "--data", str(data))
    assert r.returncode == 0, r.stderr
    r = mh("user", "add", "bob@nyu.example", "--password-stdin", "--data", str(data), input="pw\n")
    assert r.returncode == 0, r.stderr
    r = mh("user", "list", "--data", str(data))
    assert r.returncode == 0 and "bob@nyu.example" in r.stdout, r.stderr
    # after the subcommand wins over before it
    r = mh("--data", str(tmp_path / "other"), "user", "list", "--json", "--data", str(data))
    assert "bob@nyu.example" in r.stdout, r.stderr
    conf = tmp_path / "elsewhere.toml"
    conf.write_text('hostname = "mx.nyu.example"\n')
    r = mh("config", "check", "--data", str(data), "--config", str(conf))
    assert r.returncode == 0 and "mx.nyu.example" in r.stdout, r.stderr
    assert f"read {conf.resolve()}" in r.stdout                            # 8: which file it read
    r = mh("config", "check", "--data", str(data))
    assert "no configuration file" in r.stdout and str((data / "mailhaven.toml").resolve()) in r.stdout


def test_serve_takes_data_after_the_subcommand_and_hints_run_in_a_fresh_shell(
        tmp_path: Path, servers: list[Serve]) -> None:
    data = tmp_path / "data"
    ports = ports_config(data)
    srv = Serve([str(MAILHAVEN), "serve", "--data", str(data)], cwd=ROOT)
    servers.append(srv)
    lines = srv.ready()
    hints = [line.strip() for line in lines if "domain add" in line or "user add" in line]
    assert len(hints) == 2, lines
    assert hints[0].startswith(".venv/bin/mailhaven ") or hints[0].startswith(str(MAILHAVEN)), hints
    hints[0] = hints[0].replace("example.org", "hint.example")
    hints[1] = hints[1].replace("you@example.org", "me@hint.example")
    for hint in hints:
        r = subprocess.run(["bash", "-c", hint], cwd=ROOT, env=fresh_shell_env(), input="pw\n",
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{hint}: {r.stderr}"
    assert "me@hint.example" in mh("user", "list", "--data", str(data)).stdout

    # 5: a second server on the same data directory refuses, with a reason, at once
    second = subprocess.run([sys.executable, "-m", "mailhaven", "serve", "--data", str(data)], capture_output=True,
                            text=True, env=mailhaven_env(), timeout=60)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "already running" in second.stderr and str(srv.proc.pid) in second.stderr
    assert "Traceback" not in second.stderr
    # admin commands still work beside the running server
    assert "hint.example" in mh("domain", "list", "--data", str(data)).stdout

    # 5: an address in use names the listener
    other = tmp_path / "other"
    ports_config(other, imap=ports["imap"])
    third = subprocess.run([sys.executable, "-m", "mailhaven", "serve", "--data", str(other)],
                           capture_output=True, text=True, env=mailhaven_env(), timeout=60)
    assert third.returncode == 1
    assert f"listener imap on 127.0.0.1:{ports['imap']}" in third.stderr, third.stderr
    assert "in use" in third.stderr and "Traceback" not in third.stderr

    took, _ = srv.stop()
    assert srv.proc.returncode == 0
    # the lock went with the process: the data directory serves again
    again = Serve([sys.executable, "-m", "mailhaven", "serve", "--data", str(data)], cwd=tmp_path)
    servers.append(again)
    again.ready()
    again.stop()


def test_scripts_run_passes_data_to_serve(tmp_path: Path, servers: list[Serve]) -> None:
    data = tmp_path / "data"
    ports_config(data)
    srv = Serve(["bash", str(ROOT / "scripts" / "run"), "--data", str(data)], cwd=tmp_path, env=fresh_shell_env())
    servers.append(srv)
    lines = srv.ready(timeout=120)
    assert any(str(data.resolve()) in line for line in lines), lines
    # its hints run from where scripts/run was started, not only from the checkout
    hint = next(line.strip() for line in lines if "domain add" in line)
    r = subprocess.run(["bash", "-c", hint.replace("example.org", "run.example")], cwd=tmp_path,
                       env=fresh_shell_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{hint}: {r.stderr}"
    assert "run.example" in mh("domain", "list", "--data", str(data)).stdout
    _, out = srv.stop()
    assert srv.proc.returncode == 0, out


# -- 2. the README's tour, as written -----------------------------------------------------------
def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    first_two = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_two and first_two.group(1).splitlines()[:2] == [
        "bash scripts/run     # install into .venv and start on ./data (SQLite, unprivileged ports, self-signed TLS)",
        "bash scripts/test    # install everything the tests need and run the whole suite (ruff, mypy, pytest)"]
    tour = re.search(r"## A first tour\n.*?```sh\n(.*?)```", readme, re.S)
    assert tour
    script = tour.group(1)
    # The tour's own directory: a checkout with its .venv, and ./data served on the README's ports.
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    smtp_port = int(re.search(r"swaks --server 127\.0\.0\.1:(\d+)", script).group(1))  # type: ignore[union-attr]
    srv = ServerProcess(tmp_path / "data", ports={"smtp": smtp_port})
    try:
        srv.start()
    except RuntimeError as exc:
        pytest.skip(f"the README's port {smtp_port} is taken on this machine: {exc}")
    try:
        if subprocess.run(["bash", "-c", "command -v swaks"], capture_output=True).returncode != 0:
            if os.environ.get("CI") == "true":
                raise AssertionError("swaks is not installed")
            script = script.replace("swaks ", ": swaks ")
            with smtplib.SMTP("127.0.0.1", smtp_port) as s:
                s.sendmail("alice@lancs.example", ["bob@nyu.example"], b"Subject: test\r\n\r\nhi\r\n")
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=fresh_shell_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "command not found" not in r.stderr
        assert "Received: from" in r.stdout and "bob@nyu.example" in r.stdout
    finally:
        srv.stop()


# -- 4. help and --version ----------------------------------------------------------------------
def _options_without_help(text: str) -> list[str]:
    """Option lines of argparse help that have no description after them."""
    bare = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^  (-[-\w]+(?: [A-Z_]+)?(?:, -[-\w]+(?: [A-Z_]+)?)?)\s*$", line)
        if m and not (i + 1 < len(lines) and lines[i + 1].startswith(" " * 10)):
            bare.append(m.group(1))
    return bare


def test_help_describes_every_option_and_version_exists() -> None:
    r = mh("--version")
    assert r.returncode == 0 and re.fullmatch(r"mailhaven \d+\.\d+\.\d+\n", r.stdout), r.stdout + r.stderr
    serve = mh("serve", "--help").stdout
    assert "listener" in serve and "serve.lock" in serve
    for cmd in (["mail", "send"], ["mail", "ls"], ["mailbox", "list"]):
        text = mh(*cmd, "--help").stdout
        assert text.startswith("usage:")
        assert re.search(r"^  --\w", text, re.M), text
        assert not _options_without_help(text), f"{cmd}: no description for {_options_without_help(text)}\n{text}"


# -- 6. stopping with a push stream open --------------------------------------------------------
def test_shutdown_with_an_open_event_stream_is_prompt_and_quiet(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        srv.add_user("bob@nyu.example", "s3cret")
        sock = socket.create_connection(("127.0.0.1", srv.port("http")), timeout=10)
        auth = base64.b64encode(b"bob@nyu.example:s3cret").decode()
        sock.sendall(f"GET /jmap/eventsource?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Basic {auth}\r\nAccept: text/event-stream\r\n\r\n".encode())
        got = b""
        while b"event: state" not in got:
            chunk = sock.recv(4096)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 200")
        assert srv.proc is not None
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(timeout=30)
        took = time.monotonic() - started
        code = srv.proc.returncode
        srv.proc = None
        sock.settimeout(5)
        rest = b""
        while chunk := sock.recv(4096):
            rest += chunk
        sock.close()
        log = srv.log_text()
        assert code == 0, log
        assert "Traceback" not in log and "CancelledError" not in log, log
        assert took < 2.0, f"{took:.1f}s to stop"
        assert rest.endswith(b"0\r\n\r\n")          # the chunked stream ended properly
    finally:
        srv.stop()


# -- 8. small things ----------------------------------------------------------------------------
def test_scripts_test_names_only_files_that_exist() -> None:
    named = re.findall(r"tests/test_\w+\.py", (ROOT / "scripts" / "test").read_text())
    assert named and [n for n in named if not (ROOT / n).exists()] == []


def test_install_has_no_setuptools_deprecation_warning(tmp_path: Path) -> None:
    """Build the package as the first install does (pip, isolated build environment) and read
    the build backend's output."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "wheel"),
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    warnings = [line for line in (r.stdout + r.stderr).splitlines() if re.search(r"deprecat", line, re.I)]
    assert warnings == [], "\n".join(warnings)


def test_dns_records_warns_about_localhost_and_listings_read_well(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = mh("dns", "records", "nyu.example", "--data", str(data))
    assert out.returncode == 0
    assert "IN MX 10 localhost." in out.stdout
    warning = out.stderr + out.stdout
    assert re.search(r"warning.*localhost.*hostname", warning, re.I | re.S), warning
    data.mkdir(exist_ok=True)
    (data / "mailhaven.toml").write_text('hostname = "mail.nyu.example"\n')
    out = mh("dns", "records", "nyu.example", "--data", str(data))
    assert "IN MX 10 mail.nyu.example." in out.stdout and "warning" not in (out.stdout + out.stderr).lower()


def test_mailbox_list_has_headings_and_counts_read_as_english(server: ServerProcess) -> None:
    server.add_user("bob@nyu.example")
    with smtplib.SMTP("127.0.0.1", server.port("smtp")) as s:
        s.ehlo("[127.0.0.1]")
        s.sendmail("alice@lancs.example", ["bob@nyu.example"], b"Subject: one\r\n\r\nhi\r\n")
    listing = server.admin("mailbox", "list", "bob@nyu.example").stdout.splitlines()
    assert listing[0].split()[:4] == ["UID", "SIZE", "DATE", "(UTC)"], listing
    assert listing[1].split()[0] == "1"
    folders = server.admin("mailbox", "folders", "bob@nyu.example").stdout
    assert re.search(r"^INBOX\s+1 message\s", folders, re.M), folders
    assert re.search(r"^Trash\s+0 messages\s", folders, re.M), folders
    raw = server.admin("mailbox", "show", "bob@nyu.example", "1").stdout
    assert "Received: from [127.0.0.1] ([127.0.0.1])" in raw, raw

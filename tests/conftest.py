"""Shared fixtures: a real Mailhaven server process on free ports, the store, the corpus."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
CORPUS = ROOT.parent / "shared" / "corpus"
LISTENER_NAMES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "managesieve", "http")


def wait_for(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check()`` until it returns something true (and return that), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed to servers come from below the kernel's ephemeral range, one after another:
# a port the kernel picked with bind(0) and we released could be taken by any outgoing
# connection (a client, a test's own socket) before the server bound it, failing the
# server's start with "Address already in use" now and then.
_PORT_FLOOR = 20000
_PORT_CEILING = max(_PORT_FLOOR + 1000, _ephemeral_floor())
_next_port = _PORT_FLOOR + (os.getpid() * 37) % (_PORT_CEILING - _PORT_FLOOR)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that no socket holds now and no outgoing connection will take."""
    global _next_port
    for _ in range(_PORT_CEILING - _PORT_FLOOR):
        port = _next_port
        _next_port = _PORT_FLOOR + (port + 1 - _PORT_FLOOR) % (_PORT_CEILING - _PORT_FLOOR)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port on {host} in {_PORT_FLOOR}-{_PORT_CEILING}")


def mailhaven_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


async def killed_child(code: str, arg: str, ready: bytes, delay: float) -> None:
    """Runs ``python -c code arg`` with the test's PYTHONPATH, waits for its line ``ready``,
    lets it go on for ``delay`` seconds and SIGKILLs it (a crash at that moment)."""
    import asyncio

    child = subprocess.Popen([sys.executable, "-c", code, arg], stdout=subprocess.PIPE, env=mailhaven_env())
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == ready
        await asyncio.sleep(delay)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def run_cli(data: Path, *args: str, input: str | bytes | None = None,
            check: bool = True, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mailhaven", "--data", str(data)]
    if config is not None:
        cmd += ["--config", str(config)]
    result = subprocess.run(cmd + list(args), input=input, capture_output=True, text=True,
                            env=mailhaven_env(), timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"mailhaven {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


ADD_USERS = """
import contextlib, io, sys
from mailhaven.cli import main

data, known, users = sys.argv[1], set(sys.argv[2].split()), sys.argv[3:]

def run(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--data", data, *args])
    if code:
        sys.exit(f"mailhaven {' '.join(args)} failed ({code})")
    return out.getvalue()

for address, quota in zip(users[::2], users[1::2]):
    domain = address.rpartition("@")[2]
    if domain not in known:
        if domain not in run("domain", "list").split():
            run("domain", "add", domain)
        known.add(domain)
    run("user", "add", address, "--password-stdin", *(["--quota", quota] if quota else []))
"""


ADMIN_EACH = """
import contextlib, io, json, sys
from mailhaven.cli import main

outputs = []
for args in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    if code:
        sys.exit(f"mailhaven {' '.join(args)} failed ({code})")
    outputs.append(out.getvalue())
print(json.dumps(outputs))
"""


class ServerProcess:
    """``mailhaven serve`` in a subprocess, every listener on its own free port."""

    def __init__(self, data: Path, host: str = "127.0.0.1", extra_config: str = "",
                 ports: dict[str, int] | None = None, hostname: str = "mail.test.example") -> None:
        self.data = data
        self.host = host
        self.ports = {name: free_port(host) for name in LISTENER_NAMES}
        self.fixed_ports = set(ports or ())
        if ports:
            self.ports.update(ports)
        self.hostname = hostname
        self.extra_config = extra_config
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.log_path = data / "server.log"
        self.known_domains: set[str] = set()   # domains add_user has seen exist (one CLI run fewer a user)

    def write_config(self) -> Path:
        self.data.mkdir(parents=True, exist_ok=True)
        lines = [f'hostname = "{self.hostname}"', "", "[listen]"]
        for name, port in self.ports.items():
            lines.append(f'{name} = "{self.host}:{port}"' if port else f'{name} = ""')
        text = "\n".join(lines) + "\n" + self.extra_config + "\n"
        if "[filter]" not in self.extra_config and "[dns]" not in self.extra_config:
            # The inbound checks (on by default) would ask the system resolver about the
            # tests' made-up domains: only servers given a DNS server of the test's run them.
            text += "[filter]\nenabled = false\n"
        if os.environ.get("MAILHAVEN_TEST_STORE") == "postgres" and "[store]" not in self.extra_config:
            # The whole server suite against PostgreSQL (one throwaway schema per server).
            if not hasattr(self, "pg_schema"):
                self.pg_schema = f"mh_test_{os.urandom(6).hex()}"
            text += (f'[store]\nbackend = "postgres"\ndsn = "{os.environ["MAILHAVEN_TEST_PG_DSN"]}"\n'
                     f'schema = "{self.pg_schema}"\n')
        path = self.data / "mailhaven.toml"
        path.write_text(text)
        return path

    def start(self, timeout: float = 30.0) -> ServerProcess:
        for attempt in range(3):
            try:
                return self._start(timeout)
            except RuntimeError as exc:
                # free_port() cannot reserve a port: another process may take it before
                # the server binds. Pick new ones (not those the test chose) and retry.
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                for name in self.ports:
                    if name not in self.fixed_ports and self.ports[name]:
                        self.ports[name] = free_port(self.host)
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> ServerProcess:
        self.write_config()
        with open(self.log_path, "a") as log:             # the server keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailhaven", "--data", str(self.data), "serve"],
                stdout=subprocess.PIPE, stderr=log, text=True, env=mailhaven_env(),
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log_path.read_text()}")
                continue
            self.output.append(line)
            if line.strip() == "Ready.":
                return self
        raise RuntimeError("server did not become ready:\n" + "".join(self.output))

    def port(self, name: str) -> int:
        return self.ports[name]

    def admin(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args[:2] == ("domain", "remove"):
            self.known_domains.clear()         # add_user asks the server again
        return run_cli(self.data, *args, input=input, check=check)

    def admin_each(self, *commands: list[str]) -> list[str]:
        """The output of each admin command, run in turn by one Python process (a failing
        one stops the rest and fails): one start-up and import instead of one a command."""
        argvs = [["--data", str(self.data), *args] for args in commands]
        result = subprocess.run([sys.executable, "-c", ADMIN_EACH, json.dumps(argvs)], capture_output=True,
                                text=True, env=mailhaven_env(), timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"mailhaven {commands} failed ({result.returncode}):\n{result.stderr}")
        return list(json.loads(result.stdout))

    def add_user(self, address: str, password: str = "s3cret", quota: str | None = None) -> None:
        self.add_users(address, password=password, quota=quota)

    def add_users(self, *addresses: str, password: str = "s3cret", quota: str | None = None) -> None:
        """``mailhaven domain add`` (for a domain not there yet) and ``mailhaven user add``
        for each address, run by one Python process (ADD_USERS): a process per command cost
        ~1 s of start-up and imports each (several under load), three for a first user."""
        users = [item for address in addresses for item in (address, quota or "")]
        result = subprocess.run([sys.executable, "-c", ADD_USERS, str(self.data), " ".join(self.known_domains),
                                 *users], input=(password + "\n") * len(addresses), capture_output=True,
                                text=True, env=mailhaven_env(), timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"adding {', '.join(addresses)} failed ({result.returncode}):\n{result.stderr}")
        self.known_domains.update(address.rpartition("@")[2] for address in addresses)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self._close_pipe()
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._close_pipe()

    def _close_pipe(self) -> None:
        assert self.proc is not None
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    """Factory for several servers in one test: ``make_server(name, **kwargs)``."""
    started: list[ServerProcess] = []

    def make(name: str = "srv", start: bool = True, **kwargs: object) -> ServerProcess:
        srv = ServerProcess(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        if start:
            srv.start()
        started.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.stop()


async def sqlite_store_with_bob(path: Path) -> tuple[Any, int]:
    """An open SQLiteStore at ``path`` with nyu.example and bob@nyu.example (password "pw"),
    and bob's account id: for the tests that look inside SQLite (its write connection)."""
    from mailhaven.store.sqlite import SQLiteStore

    store = SQLiteStore(path)
    await store.open()
    await store.add_domain("nyu.example")
    bob = await store.add_account("bob@nyu.example", "pw")
    return store, bob.id


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from mailhaven.store.sqlite import SQLiteStore

    s: Any = SQLiteStore(tmp_path / "store")
    if os.environ.get("MAILHAVEN_TEST_STORE") == "postgres":
        # Run any store-using test file against PostgreSQL:
        # MAILHAVEN_TEST_STORE=postgres pytest tests/test_imap_session.py
        from mailhaven.store.postgres import PostgresStore

        s = PostgresStore(os.environ["MAILHAVEN_TEST_PG_DSN"], tmp_path / "store", fresh_schema=True)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def corpus_message_files() -> list[Path]:
    """Every message file listed in the corpus manifest (mbox files included)."""
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    files = []
    for line in manifest.read_text().splitlines()[1:]:
        rel = line.split("\t")[0]
        if rel:
            files.append(CORPUS / rel)
    return files


def require_corpus() -> list[Path]:
    files = corpus_message_files()
    if not files:
        reason = f"the shared corpus is not at {CORPUS}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (required under CI=true)")
        pytest.skip(reason)
    return files


@pytest.fixture
def corpus_files() -> list[Path]:
    return require_corpus()


def split_mbox(data: bytes) -> list[bytes]:
    """Split an mbox file into messages on ``From `` lines (mboxrd unquoting)."""
    messages: list[bytes] = []
    current: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"From ") and (not current or current[-1].strip() == b"" or not messages):
            if current:
                messages.append(b"".join(current))
            current = []
            continue
        if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
            line = line[1:]
        current.append(line)
    if current:
        messages.append(b"".join(current))
    return [m for m in messages if m.strip()]


def corpus_messages(files: list[Path] | None = None, root: Path = CORPUS) -> list[tuple[str, bytes]]:
    """(name, bytes) for every message in the corpus, mbox files split into messages;
    ``files`` (under ``root``) are the manifest's by default."""
    out: list[tuple[str, bytes]] = []
    for path in corpus_message_files() if files is None else files:
        data = path.read_bytes()
        rel = str(path.relative_to(root))
        if data.startswith(b"From ") and (path.suffix in (".mbox", "") or b"\nFrom " in data):
            parts = split_mbox(data)
            if len(parts) > 1 or path.suffix == ".mbox":
                out += [(f"{rel}#{i}", m) for i, m in enumerate(parts)]
                continue
        out.append((rel, data))
    return out


@contextlib.contextmanager
def fresh_pg_schema() -> Iterator[tuple[str, str]]:
    """(DSN, a fresh schema name) on the test cluster; the schema is dropped afterwards.
    Fails under CI=true without a cluster (scripts/test starts one), skips elsewhere."""
    import asyncio
    import secrets

    import asyncpg

    dsn = os.environ.get("MAILHAVEN_TEST_PG_DSN")
    if not dsn:
        reason = "MAILHAVEN_TEST_PG_DSN is not set (scripts/test starts scripts/pg-test-cluster)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + ": the PostgreSQL backend must be tested under CI=true")
        pytest.skip(reason)
    schema = f"mh_test_{secrets.token_hex(6)}"
    try:
        yield dsn, schema
    finally:
        async def drop() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """:func:`fresh_pg_schema` for one test."""
    with fresh_pg_schema() as where:
        yield where


@pytest.fixture
def pg_store_config(pg_schema: tuple[str, str]) -> str:
    """A ``[store]`` section putting a server on :func:`pg_schema`."""
    dsn, schema = pg_schema
    return f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\nschema = "{schema}"\n'

"""Daemons the tests start themselves, each as a context manager that writes its
configuration under a directory of the test, starts it in the foreground, waits until it
answers and stops it on the way out (also when it never came up):

- :func:`nginx`: Debian's nginx, as an HTTPS front (MTA-STS policy hosts, a reverse proxy);
- :func:`unbound`: Debian's unbound, a validating resolver serving signed zones of the test;
- :func:`running`: several Mailhaven servers (tests/conftest.py's ServerProcess).

:func:`require` skips a test whose peers are missing, and fails it under ``CI=true``
(:func:`installed`, for one program).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import pytest

from conftest import ServerProcess, free_port, wait_for


def tool(name: str) -> str | None:
    """The path of an installed program, also from sbin when PATH lacks it."""
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)),
                                      None)


NGINX = tool("nginx") or "/usr/sbin/nginx"


def require(missing: list[str]) -> None:
    """Skip (fail under CI=true) with every reason in ``missing``; nothing when it is empty."""
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail("; ".join(missing))
        pytest.skip("; ".join(missing))


def installed(name: str) -> str:
    """The path of program ``name`` on PATH; skips the test without it (fails under CI=true)."""
    path = shutil.which(name)
    if path is None:
        require([f"{name} is not installed"])
    assert path is not None
    return path


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def daemon(argv: list[str], name: str, ready: Callable[[], bool], timeout: float,
           what: str = "") -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends, once ``ready()`` says it answers; an early exit
    fails with the daemon's stderr."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up() -> bool:
            if ready():
                return True
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            return False

        wait_for(up, timeout, what or name)
        yield proc
    finally:
        stop(proc)


@contextmanager
def running(*servers: ServerProcess) -> Iterator[None]:
    """Start the servers in turn; stop each one started on the way out."""
    started: list[ServerProcess] = []
    try:
        for srv in servers:
            srv.start()
            started.append(srv)
        yield
    finally:
        for srv in started:
            srv.stop()


def connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def nginx(directory: Path, http: str, listen: tuple[str, int]) -> Iterator[None]:
    """nginx with ``http`` (its server blocks) inside the ``http {}`` context, until the
    block ends; ready once ``listen`` accepts connections."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / sub).mkdir(exist_ok=True)
    (directory / "nginx.conf").write_text(f"""
daemon off; worker_processes 1; pid {directory}/nginx.pid; error_log {directory}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi; uwsgi_temp_path {directory}/uwsgi; scgi_temp_path {directory}/scgi;
{http}
}}
""")
    with daemon([NGINX, "-c", str(directory / "nginx.conf"), "-p", str(directory)], "nginx",
                lambda: connects(*listen), 20):
        yield


def validates(port: int, name: str) -> bool:
    """Whether the resolver on 127.0.0.1:``port`` answers ``name`` with the AD bit."""
    query = dns.message.make_query(name, "A")
    query.flags |= dns.flags.AD
    try:
        return bool(dns.query.udp(query, "127.0.0.1", port=port, timeout=1).flags & dns.flags.AD)
    except Exception:  # noqa: BLE001 - not listening yet
        return False


@contextmanager
def unbound(directory: Path, zones: list[tuple[str, Path]], anchors: list[str], probe: str) -> Iterator[int]:
    """A validating unbound on 127.0.0.1 serving ``zones`` (name, signed zone file) as
    auth-zones with ``anchors`` trusted, until the block ends; yields its port. Ready once
    ``probe`` (an A record in a zone) comes back validated."""
    port = free_port()
    (directory / "anchors").write_text("\n".join(anchors) + "\n")
    auth = "".join(f'auth-zone:\n  name: "{name}."\n  zonefile: "{path}"\n  for-upstream: yes\n'
                   f'  for-downstream: no\n  fallback-enabled: no\n' for name, path in zones)
    (directory / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{directory}"
  pidfile: ""
  use-syslog: no
  logfile: "{directory}/unbound.log"
  verbosity: 1
  module-config: "validator iterator"
  trust-anchor-file: "{directory}/anchors"
  do-not-query-localhost: no
  val-log-level: 2
{auth}""")
    with daemon([tool("unbound") or "unbound", "-d", "-c", str(directory / "unbound.conf")],
                "unbound", lambda: validates(port, probe), 30, "unbound validating the test zone"):
        yield port

"""ManageSieve (RFC 5804) over real sockets with clients nobody here wrote: Debian's
``sieve-connect`` (STARTTLS, then AUTHENTICATE PLAIN) and the PyPI ``sievelib`` client;
a script uploaded this way sorts mail sent with smtplib, read back with imaplib."""

from __future__ import annotations

import base64
import imaplib
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sievelib import managesieve

from conftest import ServerProcess
from peers import installed

USER = "bob@nyu.example"
LIB_USER = "lib@nyu.example"
TLS_USER = "tls@nyu.example"
BLOCKED_USER = "mallory@nyu.example"
PASSWORD = "sieve-pass"
SORT = 'require ["fileinto", "mailbox"];\nif header :contains "subject" "report" {\n  fileinto :create "Reports";\n}\n'
BROKEN = 'require "fileinto";\nif header :is "subject" "x" {\n  frobnicate;\n}\n'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (each test its own account); loopback is not trusted here,
    so passwords need STARTTLS as from any other address."""
    s = ServerProcess(tmp_path_factory.mktemp("managesieve") / "data", extra_config=(
        '[sieve]\nmax_scripts = 3\nmax_script_size = "1k"\n'
        '[security]\nloopback_is_secure = false\nlogin_delay = "0s"\nlogin_max_delay = "0s"\n'
        'login_failures_per_account = 3\n')).start()
    s.add_users(USER, LIB_USER, TLS_USER, BLOCKED_USER, password=PASSWORD)
    yield s
    s.stop()


@pytest.fixture
def unverified_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """sievelib verifies certificates and takes no context: accept the self-signed one."""
    monkeypatch.setattr(managesieve.ssllib, "create_default_context", _unverified)


def sieve_connect(srv: ServerProcess, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [installed("sieve-connect"), "-s", "127.0.0.1", "-p", str(srv.port("managesieve")), "-u", USER,
         "--passwordfd", "0", "--notlsverify", "--debug", *args],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, cwd=cwd)


def test_sieve_connect_upload_activate_download_delete(srv: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "sort.sieve").write_text(SORT)
    (tmp_path / "broken.sieve").write_text(BROKEN)
    out = sieve_connect(srv, "--upload", "--localsieve", "sort.sieve", "--remotesieve", "sort", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert ">>> STARTTLS" in out.stderr and 'AUTHENTICATE "PLAIN"' in out.stderr   # RFC 5804 2.2, 2.1
    out = sieve_connect(srv, "--upload", "--localsieve", "broken.sieve", "--remotesieve", "broken", cwd=tmp_path)
    assert out.returncode != 0
    assert "line 3, column 3" in out.stdout + out.stderr and "frobnicate" in out.stdout + out.stderr
    out = sieve_connect(srv, "--checkscript", "--localsieve", "broken.sieve", cwd=tmp_path)
    assert out.returncode != 0 and "line 3, column 3" in out.stdout + out.stderr
    out = sieve_connect(srv, "--activate", "--remotesieve", "sort", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = sieve_connect(srv, "--list", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.split("\n")[0] == '"sort" ACTIVE', out.stdout

    # The active script runs at delivery.
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("carol@example.net", [USER], b"From: carol@example.net\r\nTo: bob@nyu.example\r\n"
                      b"Subject: weekly report\r\n\r\nNumbers.\r\n")
    imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=30)
    try:
        imap.starttls(_unverified())
        imap.login(USER, PASSWORD)
        assert imap.select("Reports") == ("OK", [b"1"])
        assert imap.select("INBOX") == ("OK", [b"0"])
    finally:
        imap.logout()

    out = sieve_connect(srv, "--download", "--remotesieve", "sort", "--localsieve", "back.sieve", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "back.sieve").read_text() == SORT
    out = sieve_connect(srv, "--delete", "--remotesieve", "sort", cwd=tmp_path)
    assert out.returncode != 0                                       # RFC 5804 2.10: NO (ACTIVE)
    out = sieve_connect(srv, "--deactivate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = sieve_connect(srv, "--delete", "--remotesieve", "sort", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = sieve_connect(srv, "--list", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == ""


def test_sievelib_every_command_and_quotas(srv: ServerProcess, unverified_tls: None) -> None:
    client = managesieve.Client("127.0.0.1", srv.port("managesieve"))
    assert not client.connect(LIB_USER, PASSWORD, authmech="PLAIN")     # no password in clear
    client = managesieve.Client("127.0.0.1", srv.port("managesieve"))
    assert client.connect(LIB_USER, PASSWORD, authmech="PLAIN", starttls=True)
    try:
        assert client.get_implementation() == "Mailhaven"
        assert {"fileinto", "vacation", "imap4flags", "enotify", "include", "regex"} <= set(
            client.get_sieve_capabilities())
        assert client.havespace("one", 100)
        assert not client.havespace("one", 5000)
        assert client.errcode == b"QUOTA/MAXSIZE"
        assert client.putscript("one", SORT)
        assert client.putscript("two", "keep;\n")
        assert not client.putscript("bad", BROKEN)
        assert b"line 3, column 3" in client.errmsg
        assert client.putscript("three", "discard;\n")
        assert not client.putscript("four", "keep;\n")              # max_scripts = 3
        assert client.errcode == b"QUOTA/MAXSCRIPTS"
        assert not client.havespace("four", 10)
        assert client.putscript("three", "stop;\n")                  # replacing is no new script
        assert client.setactive("two")
        assert client.listscripts() == ("two", ["one", "three"])
        assert not client.deletescript("two")
        assert client.errcode == b"ACTIVE"
        assert not client.renamescript("two", "one")
        assert client.errcode == b"ALREADYEXISTS"
        assert not client.renamescript("nosuch", "five")
        assert client.errcode == b"NONEXISTENT"
        assert client.renamescript("two", "main")                   # RFC 5804 2.11.1: stays active
        assert client.listscripts() == ("main", ["one", "three"])
        assert client.getscript("one") == SORT.rstrip("\n")            # sievelib joins the lines
        assert client.getscript("nosuch") is None and client.errcode == b"NONEXISTENT"
        assert client.checkscript(SORT)
        assert not client.checkscript(BROKEN) and b"frobnicate" in client.errmsg
        assert client.deletescript("three")
        assert client.setactive("")
        assert client.listscripts() == (None, ["main", "one"])
    finally:
        client.logout()
    assert srv.admin("sieve", "list", LIB_USER).stdout.split() == ["main", "one"]


def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def _raw(port: int, *lines: bytes) -> bytes:
    """STARTTLS, then send lines one by one; everything the server said after the handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        f = plain.makefile("rb")
        _until_ok(f)
        plain.sendall(b"STARTTLS\r\n")
        _until_ok(f)
        with _unverified().wrap_socket(plain) as sock:
            f = sock.makefile("rb")
            out = _until_ok(f)
            for line in lines:
                sock.sendall(line)
                out += _until_ok(f)
            return out


def _until_ok(f: object) -> bytes:
    out = b""
    while True:
        line = f.readline()  # type: ignore[attr-defined]
        out += line
        if not line or line.startswith((b"OK", b"NO", b"BYE")):
            return out


def test_plain_needs_tls_and_literals_past_the_limit(srv: ServerProcess) -> None:
    port = srv.port("managesieve")
    plain = base64.b64encode(f"\0{TLS_USER}\0{PASSWORD}".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rb")
        assert b'"SASL" "SCRAM-SHA-256"' in _until_ok(f)         # PLAIN not offered in clear
        sock.sendall(b'AUTHENTICATE "PLAIN" "' + plain + b'"\r\n')
        assert _until_ok(f).startswith(b"NO (ENCRYPT-NEEDED)")   # RFC 5804 2.1
        sock.sendall(b"STARTTLS\r\n")
        assert _until_ok(f).startswith(b"OK")
        tls = _unverified().wrap_socket(sock)
        f = tls.makefile("rb")
        capa = _until_ok(f)                                     # RFC 5804 2.2: capabilities again
        assert b'"SASL" "PLAIN LOGIN SCRAM-SHA-256"' in capa and b"STARTTLS" not in capa
        tls.sendall(b'AUTHENTICATE "PLAIN" "' + plain + b'"\r\n')
        assert _until_ok(f).startswith(b"OK")
        big = b"#" * 2000 + b"\r\n"
        tls.sendall(b'PUTSCRIPT "big" {%d+}\r\n' % len(big) + big + b"\r\n")
        assert _until_ok(f).startswith(b"NO (QUOTA/MAXSIZE)")
        tls.sendall(b'PUTSCRIPT "small" {6+}\r\nkeep;\n\r\nLISTSCRIPTS\r\n')   # pipelined
        assert _until_ok(f).startswith(b"OK")
        assert _until_ok(f) == b'"small"\r\nOK "Listscripts completed"\r\n'
        inc = b'require "include";\ninclude "small";\nif true { include "later"; }\ninclude :optional "x";\n'
        tls.sendall(b'CHECKSCRIPT {%d+}\r\n%s\r\n' % (len(inc), inc))     # RFC 5804 1.3 WARNINGS
        assert _until_ok(f) == b'OK (WARNINGS) "line 3: included script \'later\' does not exist"\r\n'


def test_scram_sha_256_with_the_server_signature_in_ok(srv: ServerProcess) -> None:
    """RFC 5804 2.1: SCRAM's server-final message comes as OK (SASL "..."), and no password
    crosses the wire (so it is offered without TLS)."""
    from mailhaven.auth.sasl import ScramClient

    client = ScramClient(TLS_USER, PASSWORD)
    with socket.create_connection(("127.0.0.1", srv.port("managesieve")), timeout=10) as sock:
        f = sock.makefile("rb")
        _until_ok(f)
        sock.sendall(b'AUTHENTICATE "SCRAM-SHA-256" "' + base64.b64encode(client.first()) + b'"\r\n')
        server_first = base64.b64decode(f.readline().strip().strip(b'"'))
        sock.sendall(b'"' + base64.b64encode(client.final(server_first)) + b'"\r\n')
        line = f.readline()
        assert line.startswith(b'OK (SASL "'), line
        assert client.verify(base64.b64decode(line.split(b'"')[1]))
        sock.sendall(b"LISTSCRIPTS\r\n")
        assert _until_ok(f).endswith(b'OK "Listscripts completed"\r\n')


def test_failed_logins_go_through_the_shared_throttle(srv: ServerProcess) -> None:
    port = srv.port("managesieve")
    bad = base64.b64encode(f"\0{BLOCKED_USER}\0wrong".encode())
    good = base64.b64encode(f"\0{BLOCKED_USER}\0{PASSWORD}".encode())
    for _ in range(2):
        assert b'NO "Authentication failed"' in _raw(port, b'AUTHENTICATE "PLAIN" "' + bad + b'"\r\n')
    out = _raw(port, b'AUTHENTICATE "PLAIN" "' + bad + b'"\r\n')     # login_failures_per_account = 3
    assert out.endswith(b'BYE "Authentication failed too often"\r\n')
    out = _raw(port, b'AUTHENTICATE "PLAIN" "' + good + b'"\r\n')
    assert b"OK \"Logged in\"" not in out and (b"BYE" in out or b"NO" in out.split(b"\r\n")[-2])
    # The same account over IMAP is blocked too: one throttle for every protocol.
    imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=30)
    imap.starttls(_unverified())
    with pytest.raises(imaplib.IMAP4.error, match="(?i)auth|fail|block"):
        imap.login(BLOCKED_USER, PASSWORD)

"""The IMAP server over real sockets with real clients: imaplib, imapclient, curl, mbsync,
fetchmail; plaintext on loopback, STARTTLS and implicit TLS; IDLE across sessions."""

from __future__ import annotations

import imaplib
import os
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess
from peers import installed

USER, PASSWORD = "alice@example.com", "s3cret"
MSG = (b"From: Bob <bob@example.org>\r\nTo: alice@example.com\r\nSubject: Hello %d\r\n"
       b"Message-ID: <hello-%d@example.org>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nBody number %d\r\n")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("imap") / "data").start()
    server.add_users(USER, "bob@example.com", password=PASSWORD)
    try:
        yield server
    finally:
        server.stop()


def connect(srv: ServerProcess, user: str = USER) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    m.login(user, PASSWORD)
    return m


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fresh_mailbox(m: imaplib.IMAP4, name: str) -> None:
    m.delete(name)
    assert m.create(name)[0] == "OK"


def test_imaplib_session(srv: ServerProcess) -> None:
    m = connect(srv)
    fresh_mailbox(m, "ImaplibBox")
    for i in range(3):
        typ, data = m.append("ImaplibBox", "(\\Seen)", None, MSG % (i, i, i))
        assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = m.select("ImaplibBox")
    assert typ == "OK" and data == [b"3"]
    typ, data = m.fetch("2", "(UID BODY.PEEK[])")
    assert data[0][1] == MSG % (1, 1, 1)
    typ, data = m.uid("SEARCH", "SUBJECT", '"Hello 2"')
    assert data == [b"3"]
    typ, data = m.store("1", "+FLAGS", "(\\Deleted)")
    assert typ == "OK"
    typ, data = m.expunge()
    assert data == [b"1"]
    typ, data = m.status("ImaplibBox", "(MESSAGES UIDNEXT)")
    assert data == [b'"ImaplibBox" (MESSAGES 2 UIDNEXT 4)']
    assert m.logout()[0] == "BYE"


def test_malformed_input_gets_bad_and_session_continues(srv: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK")
        s.sendall(b"a1 FETCH (((\r\n\r\nb2 NOOP\r\nc3 LOGIN {4}\r\n")
        assert f.readline().startswith(b"a1 BAD")
        assert f.readline().startswith(b"* BAD")
        assert f.readline().startswith(b"b2 OK")
        assert f.readline().startswith(b"+ ")
        s.sendall(b"user pass\r\n")
        assert f.readline().startswith(b"c3 NO")


def test_starttls_and_implicit_tls(srv: ServerProcess) -> None:
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    assert "STARTTLS" in m.capabilities
    m.starttls(ssl_context=tls_context())
    assert "STARTTLS" not in m.capabilities
    m.login(USER, PASSWORD)
    m.logout()
    s = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=tls_context())
    s.login(USER, PASSWORD)
    typ, data = s.list()
    assert typ == "OK" and any(b"INBOX" in d for d in data)
    s.logout()


def test_starttls_injection_refused(srv: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"a STARTTLS\r\nb LOGIN alice@example.com s3cret\r\n")
        line = f.readline()
        assert line.startswith(b"* BYE") or line.startswith(b"a BAD"), line


def test_idle_told_of_new_mail_within_a_second(srv: ServerProcess) -> None:
    watcher = connect(srv)
    fresh_mailbox(watcher, "IdleBox")
    watcher.select("IdleBox")
    tag = watcher._new_tag()
    watcher.send(tag + b" IDLE\r\n")
    assert watcher.readline().startswith(b"+")
    writer = connect(srv)
    start = time.monotonic()
    writer.append("IdleBox", None, None, MSG % (1, 1, 1))
    watcher.sock.settimeout(5)
    line = watcher.readline()
    elapsed = time.monotonic() - start
    assert line == b"* 1 EXISTS\r\n"   # pushed, without any client command
    print(f"IDLE notified after {elapsed:.3f}s")
    assert watcher.readline() == b"* 1 RECENT\r\n"   # the first session told of it (RFC 3501 2.3.2)
    watcher.send(b"DONE\r\n")
    assert watcher.readline().startswith(tag + b" OK")
    writer.select("IdleBox")
    writer.store("1", "+FLAGS", "(\\Deleted)")
    writer.expunge()
    typ, data = watcher.noop()
    assert typ == "OK"
    assert watcher.untagged_responses.get("EXPUNGE") == [b"1"]
    watcher.logout()
    writer.logout()


def test_idle_sees_smtp_delivery(srv: ServerProcess) -> None:
    try:
        smtp = smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10)
    except OSError:
        pytest.skip("no SMTP listener in this build yet")
    watcher = connect(srv, "bob@example.com")
    typ, data = watcher.select("INBOX")
    before = int(data[0])
    tag = watcher._new_tag()
    watcher.send(tag + b" IDLE\r\n")
    assert watcher.readline().startswith(b"+")
    start = time.monotonic()
    smtp.sendmail("carol@example.org", ["bob@example.com"], MSG % (5, 5, 5))
    smtp.quit()
    watcher.sock.settimeout(5)
    line = watcher.readline()
    assert line == b"* %d EXISTS\r\n" % (before + 1)
    print(f"IDLE notified of SMTP delivery after {time.monotonic() - start:.3f}s")
    watcher.send(b"DONE\r\n")
    watcher.readline()
    watcher.logout()


def imapclient_in(srv: ServerProcess, folder: str) -> Any:
    """An imapclient session logged in, with ``folder`` created afresh."""
    imapclient = pytest.importorskip("imapclient")
    c = imapclient.IMAPClient("127.0.0.1", port=srv.port("imap"), ssl=False)
    c.login(USER, PASSWORD)
    if c.folder_exists(folder):
        c.delete_folder(folder)
    c.create_folder(folder)
    return c


def test_imapclient_library(srv: ServerProcess) -> None:
    imapclient = pytest.importorskip("imapclient")
    c = imapclient_in(srv, "ClientLib")
    c.append("ClientLib", MSG % (7, 7, 7), flags=[imapclient.SEEN])
    c.append("ClientLib", MSG % (8, 8, 8))
    info = c.select_folder("ClientLib")
    assert info[b"EXISTS"] == 2
    assert b"CONDSTORE" in c.capabilities()
    uids = c.search(["UNSEEN"])
    assert len(uids) == 1
    data = c.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE", "FLAGS", "RFC822.SIZE", "BODY.PEEK[]"])
    env = data[uids[0]][b"ENVELOPE"]
    assert env.subject == b"Hello 8"
    assert env.from_[0].mailbox == b"bob" and env.from_[0].host == b"example.org"
    assert data[uids[0]][b"BODY[]"] == MSG % (8, 8, 8)
    c.add_flags(uids, [imapclient.FLAGGED])
    assert imapclient.FLAGGED in c.get_flags(uids)[uids[0]]
    c.move(uids, "Archive")
    assert c.search(["ALL"]) != uids
    folders = {f[2]: f[0] for f in c.list_folders()}
    assert "ClientLib" in folders
    c.idle()
    c.idle_done()
    c.logout()


def test_imapclient_multiappend(srv: ServerProcess) -> None:
    """imapclient's MULTIAPPEND (RFC 3502) puts two spaces between one message's literal
    and the next (it writes a space after a literal and another before the next one's
    size). Dovecot's parser skips a run of spaces between arguments, so the client works
    there; we answered BAD "Unexpected space". Only a run after a literal is taken
    (test_imap_parser keeps "a FETCH 1  FLAGS" malformed)."""
    imapclient = pytest.importorskip("imapclient")
    c = imapclient_in(srv, "Multi")
    c.multiappend("Multi", [MSG % (1, 1, 1), {"msg": MSG % (2, 2, 2), "flags": [imapclient.SEEN]},
                            MSG % (3, 3, 3)])
    assert c.select_folder("Multi")[b"EXISTS"] == 3
    data = c.fetch(c.search(["ALL"]), ["FLAGS", "BODY.PEEK[]"])
    assert [d[b"BODY[]"] for _, d in sorted(data.items())] == [MSG % (n, n, n) for n in (1, 2, 3)]
    assert [imapclient.SEEN in d[b"FLAGS"] for _, d in sorted(data.items())] == [False, True, False]
    c.logout()


def test_curl_imap(srv: ServerProcess) -> None:
    curl = installed("curl")
    m = connect(srv)
    fresh_mailbox(m, "CurlBox")
    m.append("CurlBox", None, None, MSG % (3, 3, 3))
    m.logout()
    base = f"imap://127.0.0.1:{srv.port('imap')}"
    auth = ["--user", f"{USER}:{PASSWORD}"]
    out = subprocess.run([curl, "-sS", *auth, base + "/"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert b"CurlBox" in out.stdout and b"INBOX" in out.stdout
    out = subprocess.run([curl, "-sS", *auth, base + "/CurlBox;UID=1"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.replace(b"\r\n", b"\n") == (MSG % (3, 3, 3)).replace(b"\r\n", b"\n")
    out = subprocess.run([curl, "-sS", *auth, base + "/CurlBox?SUBJECT%20Hello"], capture_output=True,
                         timeout=30)
    assert out.returncode == 0 and b"SEARCH 1" in out.stdout, out
    out = subprocess.run([curl, "-sS", "--ssl-reqd", "-k", *auth, base + "/"], capture_output=True, timeout=30)
    assert out.returncode == 0 and b"INBOX" in out.stdout, out.stderr
    out = subprocess.run([curl, "-sS", "-k", *auth, f"imaps://127.0.0.1:{srv.port('imaps')}/CurlBox;UID=1"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and b"Body number 3" in out.stdout, out.stderr


def test_mbsync_both_ways(srv: ServerProcess, tmp_path: Path) -> None:
    mbsync = installed("mbsync")
    m = connect(srv)
    fresh_mailbox(m, "Sync")
    for i in range(3):
        m.append("Sync", None, None, MSG % (i, i, i))
    maildir = tmp_path / "maildir"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""IMAPAccount mh
Host 127.0.0.1
Port {srv.port('imap')}
User {USER}
Pass {PASSWORD}
TLSType None
AuthMechs LOGIN

IMAPStore mh-remote
Account mh

MaildirStore mh-local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel mh
Far :mh-remote:
Near :mh-local:
Patterns Sync
Create Both
Expunge Both
SyncState *
""")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([mbsync, "-c", str(rc), "-a"], capture_output=True, text=True, timeout=120)

    out = run()
    if "TLSType" in out.stderr:  # older isync spells it SSLType
        rc.write_text(rc.read_text().replace("TLSType None", "SSLType None"))
        out = run()
    assert out.returncode == 0, out.stdout + out.stderr
    local = maildir / "Sync"
    files = sorted((local / "cur").iterdir()) + sorted((local / "new").iterdir())
    assert len(files) == 3
    # Local changes go up: a new message and a deletion.
    newfile = local / "new" / f"{int(time.time())}.local1.host"
    newfile.write_bytes((MSG % (9, 9, 9)).replace(b"\r\n", b"\n"))
    files[0].unlink()
    out = run()
    assert out.returncode == 0, out.stdout + out.stderr
    m.select("Sync")
    typ, data = m.search(None, "ALL")
    m.expunge()
    typ, data = m.search(None, "UNDELETED")
    assert len(data[0].split()) == 3
    typ, data = m.search(None, "SUBJECT", '"Hello 9"')
    assert data[0]
    # Remote flag change comes down.
    m.store("1", "+FLAGS", "(\\Flagged)")
    out = run()
    assert out.returncode == 0, out.stdout + out.stderr
    flagged = [p for d in ("cur", "new") for p in (local / d).iterdir() if ":2," in p.name and "F" in p.name.split(":2,")[1]]
    assert len(flagged) == 1
    m.logout()


def test_fetchmail_over_imap(srv: ServerProcess, tmp_path: Path) -> None:
    fetchmail = installed("fetchmail")
    m = connect(srv, "bob@example.com")
    m.select("INBOX")
    m.store("1:*", "+FLAGS", "(\\Seen)") if int(m.select("INBOX")[1][0]) else None
    for i in range(2):
        m.append("INBOX", None, None, MSG % (20 + i, 20 + i, 20 + i))
    m.logout()
    out_file = tmp_path / "delivered"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f'poll 127.0.0.1 service {srv.port("imap")} protocol IMAP auth password\n'
                  f'  user "bob@example.com" password "{PASSWORD}" is "me" here\n'
                  f'  sslproto "" keep\n  mda "cat >> {out_file}"\n')
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path))
    out = subprocess.run([fetchmail, "-f", str(rc), "--nosyslog", "-v", "--pidfile", str(tmp_path / "pid")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    data = out_file.read_bytes()
    assert b"Body number 20" in data and b"Body number 21" in data


def test_concurrent_sessions_threads(srv: ServerProcess) -> None:
    m = connect(srv)
    fresh_mailbox(m, "Busy")
    m.logout()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            c = connect(srv)
            for j in range(5):
                c.append("Busy", None, None, MSG % (i * 10 + j, i, j))
            c.select("Busy")
            c.fetch("1:*", "(FLAGS UID)")
            c.logout()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    m = connect(srv)
    typ, data = m.select("Busy")
    assert data == [b"40"]
    typ, data = m.uid("SEARCH", "ALL")
    assert [int(x) for x in data[0].split()] == list(range(1, 41))
    m.logout()


def _short_idle_limit(tmp_path: Path, limit: str) -> ServerProcess:
    server = ServerProcess(tmp_path / "data", extra_config=f'[limits]\nimap_idle = "{limit}"\n').start()
    server.add_user(USER, PASSWORD)
    return server


def test_idle_timeout_is_configurable(tmp_path: Path) -> None:
    server = _short_idle_limit(tmp_path, "1s")
    try:
        m = connect(server)
        m.sock.settimeout(10)
        start = time.monotonic()
        line = m.readline()
        assert line.startswith(b"* BYE Autologout"), line
        print(f"autologout after {time.monotonic() - start:.1f}s")
    finally:
        server.stop()


def test_each_command_moves_the_idle_deadline(tmp_path: Path) -> None:
    """The idle limit counts from the client's last bytes: commands every 0.6 s keep a
    session with a 2 s limit alive for 4 s (the timer armed at the first read finds the
    deadline moved and re-arms), then 2 s of silence log it out."""
    server = _short_idle_limit(tmp_path, "2s")
    try:
        m = connect(server)
        m.sock.settimeout(10)
        start = quiet = time.monotonic()
        while quiet - start < 4:
            assert m.noop()[0] == "OK"
            quiet = time.monotonic()
            time.sleep(0.6)
        line = m.readline()
        assert line.startswith(b"* BYE Autologout"), line
        assert 1.5 < time.monotonic() - quiet < 5
    finally:
        server.stop()


def test_idle_timeout_applies_in_idle_and_changes_still_arrive(tmp_path: Path) -> None:
    server = _short_idle_limit(tmp_path, "2s")
    try:
        m = connect(server)
        m.sock.settimeout(10)
        m.select("INBOX")
        m.send(b"i1 IDLE\r\n")
        assert m.readline().startswith(b"+ ")
        other = connect(server)
        other.append("INBOX", None, None, MSG % (1, 1, 1))
        other.logout()
        assert m.readline() == b"* 1 EXISTS\r\n"       # told at once, then idle again
        assert m.readline() == b"* 1 RECENT\r\n"
        start = time.monotonic()
        line = m.readline()
        assert line.startswith(b"* BYE Autologout"), line
        assert time.monotonic() - start > 1
    finally:
        server.stop()


def test_getmail_over_imap(srv: ServerProcess, tmp_path: Path) -> None:
    getmail = installed("getmail")
    m = connect(srv)
    fresh_mailbox(m, "Getmail")
    for i in range(3):
        m.append("Getmail", None, None, MSG % (40 + i, 40 + i, 40 + i))
    m.logout()
    mbox = tmp_path / "mbox"
    mbox.write_text("")
    rc = tmp_path / "getmailrc"
    rc.write_text(f"""[retriever]
type = SimpleIMAPRetriever
server = 127.0.0.1
port = {srv.port('imap')}
username = {USER}
password = {PASSWORD}
mailboxes = ("Getmail",)

[destination]
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat >> {mbox}")
allow_root_commands = true

[options]
read_all = true
delete = false
verbose = 1
""")
    out = subprocess.run([getmail, f"--rcfile={rc}", f"--getmaildir={tmp_path}"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    data = mbox.read_bytes()
    for i in range(3):
        assert b"Body number %d" % (40 + i) in data


def test_neomutt_reads_and_deletes(srv: ServerProcess, tmp_path: Path) -> None:
    """neomutt in a pseudo-terminal: opening a message sets \\Seen, d + $ expunges."""
    import pty
    import select

    neomutt = installed("neomutt")
    m = connect(srv)
    fresh_mailbox(m, "NeoBox")
    for i in range(2):
        m.append("NeoBox", None, None, b"From: b@example.org\r\nSubject: neo %d\r\n"
                 b"Date: Mon, 1 Jan 2024 10:0%d:00 +0000\r\n\r\nhello %d\r\n" % (i, i, i))
    rc = tmp_path / "muttrc"
    rc.write_text(f'set folder="imap://alice%40example.com@127.0.0.1:{srv.port("imap")}/"\n'
                  f'set imap_pass="{PASSWORD}"\nset spoolfile="+NeoBox"\nset ssl_starttls=no\n'
                  'set ssl_force_tls=no\nset header_cache=""\nset message_cachedir=""\nset sort=date\n'
                  "set quit=yes\nset delete=yes\nset mark_old=no\n")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes neomutt
        os.environ.update(TERM="xterm", HOME=str(tmp_path))
        os.execv(neomutt, [neomutt, "-n", "-F", str(rc)])
    screen = b""

    def wait_for(text: bytes, seconds: float = 15.0) -> None:
        nonlocal screen
        deadline = time.monotonic() + seconds
        while text not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    screen += os.read(fd, 65536)
                except OSError:
                    return
        assert text in screen, screen[-500:]

    try:
        wait_for(b"neo 1")
        os.write(fd, b"\r")                 # open the first message
        wait_for(b"hello 0")
        os.write(fd, b"q")
        os.write(fd, b"j")
        os.write(fd, b"d")                  # delete the second
        os.write(fd, b"$")                  # sync: expunge
        wait_for(b"1 kept, 1 deleted")
        os.write(fd, b"q")
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    m.select("NeoBox")
    typ, data = m.fetch("1:*", "(UID FLAGS)")
    assert data == [b"1 (UID 1 FLAGS (\\Seen))"]
    m.logout()


class _Deflated:
    """A raw IMAP client that speaks RFC 4978 COMPRESS=DEFLATE once told to."""

    def __init__(self, srv: ServerProcess) -> None:
        import zlib

        self.zlib = zlib
        self.sock = socket.create_connection(("127.0.0.1", srv.port("imap")), timeout=10)
        self.buf = b""
        self.deflate: object = None
        self.inflate: object = None
        self.line()                                             # greeting

    def send(self, data: bytes) -> None:
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(self.zlib.Z_SYNC_FLUSH)  # type: ignore[attr-defined]
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += self.inflate.decompress(chunk) if self.inflate is not None else chunk  # type: ignore[attr-defined]
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def until(self, tag: bytes) -> list[bytes]:
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    def start(self) -> None:
        self.deflate = self.zlib.compressobj(6, self.zlib.DEFLATED, -15)
        self.inflate = self.zlib.decompressobj(-15)


def test_compress_deflate_both_ways(srv: ServerProcess) -> None:
    """RFC 4978: after the tagged OK to COMPRESS DEFLATE both directions are raw deflate;
    APPEND with a literal, FETCH of the bytes, a second COMPRESS (NO COMPRESSIONACTIVE) and
    a deflate bomb (one 64 MB line, a few kilobytes on the wire) all work or fail cleanly."""
    c = _Deflated(srv)
    c.send(b"a1 LOGIN alice@example.com s3cret\r\n")
    assert c.until(b"a1")[-1].startswith(b"a1 OK")
    c.send(b"a2 CAPABILITY\r\n")
    assert b"COMPRESS=DEFLATE" in b"".join(c.until(b"a2"))
    c.send(b"a3 COMPRESS GZIP\r\n")
    assert c.until(b"a3")[-1].startswith(b"a3 BAD")
    c.send(b"a4 COMPRESS DEFLATE\r\n")
    assert c.until(b"a4")[-1].startswith(b"a4 OK")
    c.start()
    c.send(b"a5 CREATE Squeezed\r\n")
    assert c.until(b"a5")[-1].startswith(b"a5 OK")
    body = MSG % (70, 70, 70) + b"x" * 200_000 + b"\r\n"
    c.send(b"a6 APPEND Squeezed {%d+}\r\n" % len(body) + body + b"\r\n")
    assert c.until(b"a6")[-1].startswith(b"a6 OK")
    c.send(b"a7 SELECT Squeezed\r\na8 FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n")
    c.until(b"a7")
    head = c.line()
    assert head.startswith(b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}" % (len(body), len(body))), head
    while len(c.buf) < len(body):
        c.buf += c.inflate.decompress(c.sock.recv(65536))  # type: ignore[attr-defined]
    assert c.buf[:len(body)] == body
    c.buf = c.buf[len(body):]
    assert c.until(b"a8")[-1].startswith(b"a8 OK")
    c.send(b"a9 COMPRESS DEFLATE\r\n")
    assert c.until(b"a9")[-1].startswith(b"a9 NO [COMPRESSIONACTIVE]")
    bomb = b"b1 NOOP " + b"A" * (64 << 20) + b"\r\n"
    wire = c.deflate.compress(bomb) + c.deflate.flush(c.zlib.Z_SYNC_FLUSH)  # type: ignore[attr-defined]
    assert len(wire) < 200_000
    c.sock.sendall(wire)
    reply = c.line()
    assert reply.startswith((b"* BAD", b"b1 BAD", b"* BYE")), reply
    c.send(b"z LOGOUT\r\n")
    with pytest.raises(ConnectionError):
        while True:
            c.line()

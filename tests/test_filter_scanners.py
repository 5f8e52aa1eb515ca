"""The content scanners over real sockets against ``mailhaven serve``: Debian's rspamd
(spam, over its HTTP protocol) and clamd (viruses, INSTREAM), each started here with its
own configuration on an ephemeral port / socket of its own, no redis, no downloads: clamd
loads a signature for the EICAR test string that this file writes."""

from __future__ import annotations

import email.message
import os
import shutil
import signal
import smtplib
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess, free_port, wait_for
from mx_client import fetch_by_subject, send_mx

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_ADD_HEADER = "Y" + GTUBE[1:]          # rspamd's test pattern for the "add header" action
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

# Only the test's own rules: a prefilter that sets the action named by X-Test-Action
# (to reach soft reject and greylist through the real daemon), and the core's GTUBE.
RSPAMD_RULES = """
rspamd_config:register_symbol({
  name = 'MH_TEST_ACTION', type = 'prefilter', priority = 10,
  callback = function(task)
    local action = task:get_header('X-Test-Action')
    if action then task:set_pre_result(action, 'test action ' .. action) end
  end
})
"""


def rspamd_config(root: Path, port: int) -> str:
    return f"""
options {{
    pidfile = "{root}/rspamd.pid";
    dns {{ nameserver = ["127.0.0.1:{free_port()}"]; timeout = 0.2s; retransmits = 1; }}
    disable_hyperscan = true;
    enable_test_patterns = true;
}}
logging {{ type = "file"; filename = "{root}/rspamd.log"; level = "notice"; }}
actions {{ reject = 15; add_header = 6; rewrite_subject = 8; greylist = 4; }}
lua = "{root}/rules.lua";
worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; mime = true; }}
"""


def start_rspamd(root: Path, extra: str = "") -> tuple[subprocess.Popen[bytes], int]:
    root.mkdir(parents=True)
    port = free_port()
    (root / "rules.lua").write_text(RSPAMD_RULES)
    (root / "rspamd.conf").write_text(rspamd_config(root, port) + extra)
    proc = subprocess.Popen([RSPAMD, "-f", "-i", "-c", str(root / "rspamd.conf"), f"--var=DBDIR={root}",
                             f"--var=RUNDIR={root}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return proc, port


def start_clamd(root: Path) -> tuple[subprocess.Popen[bytes], Path]:
    db = root / "db"
    db.mkdir(parents=True)
    # A body signature (clamav's .ndb: name, target 0 = any file, anywhere, hex) for EICAR.
    (db / "mailhaven-test.ndb").write_text(f"Mailhaven-Test-EICAR:0:*:{EICAR.encode().hex()}\n")
    sock = root / "clamd.sock"
    (root / "clamd.conf").write_text(
        f"LocalSocket {sock}\nDatabaseDirectory {db}\nForeground yes\nLogFile {root}/clamd.log\n"
        f"PidFile {root}/clamd.pid\nTemporaryDirectory {root}\n")
    proc = subprocess.Popen([CLAMD, "--config-file", str(root / "clamd.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, sock


def ready(proc: subprocess.Popen[bytes], check: object) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"exited {proc.returncode}")
    try:
        return bool(check())  # type: ignore[operator]
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Peers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.rspamd, self.rspamd_port = start_rspamd(root / "rspamd")
        self.clamd, self.clamd_socket = start_clamd(root / "clamd")

    def wait(self) -> None:
        url = f"http://127.0.0.1:{self.rspamd_port}/ping"
        wait_for(lambda: ready(self.rspamd, lambda: urllib.request.urlopen(url, timeout=2).read().strip() == b"pong"),
                 timeout=180, what="rspamd")
        wait_for(lambda: ready(self.clamd, self.clamd_socket.exists), timeout=120, what="clamd")

    def close(self) -> None:
        stop(self.rspamd)
        stop(self.clamd)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not (Path(RSPAMD).exists() and Path(CLAMD).exists()):
        if os.environ.get("CI") == "true":
            pytest.fail("rspamd and clamav-daemon must be installed (scripts/test APT_PACKAGES)")
        pytest.skip("rspamd or clamd is not installed")
    root = tmp_path_factory.mktemp("scanners")
    peers = Peers(root)
    try:
        server = ServerProcess(root / "data", hostname="mx.nyu.example", extra_config=(
            "[filter]\nspf = false\ndkim = false\ndmarc = false\n"
            f'[rspamd]\nurl = "http://127.0.0.1:{peers.rspamd_port}"\ntimeout = "20s"\n'
            f'[clamd]\nsocket = "{peers.clamd_socket}"\nunreachable = "tempfail"\n'))
        server.peers = peers  # type: ignore[attr-defined]
        try:
            server.start()
            server.add_user("bob@nyu.example")
            peers.wait()
            yield server
        finally:
            server.stop()
    finally:
        peers.close()


def message(subject: str, body: str, extra: str = "") -> str:
    return (f"From: alice@far.example\r\nTo: bob@nyu.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@far.example>\r\n{extra}\r\n{body}\r\n")


def send(srv: ServerProcess, msg: str | bytes) -> None:
    send_mx(srv, "alice@far.example", ["bob@nyu.example"], msg, source=None, helo="client.far.example", timeout=60)


def refused(srv: ServerProcess, msg: str | bytes) -> tuple[int, bytes]:
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(srv, msg)
    return info.value.smtp_code, info.value.smtp_error


fetch = fetch_by_subject


def test_gtube_is_refused_through_rspamd(srv: ServerProcess) -> None:
    code, text = refused(srv, message("gtube", GTUBE))
    assert (code, text) == (550, b"5.7.1 Message refused as spam")
    assert fetch(srv, "gtube") is None and fetch(srv, "gtube", "Junk") is None


def test_clean_message_is_delivered_with_rspamd_verdict(srv: ServerProcess) -> None:
    send(srv, message("clean lunch", "Shall we meet at the Crown on Friday?",
                      extra="X-Spam-Status: No, forged by the sender\r\n"))
    stored = fetch(srv, "clean lunch")
    assert stored is not None
    head = stored.split(b"\r\n\r\n")[0]
    assert b"forged by the sender" not in head                    # the sender's own field is gone
    assert head.count(b"X-Spam-Status: No, score=") == 1 and b"engine=rspamd" in head
    assert b"X-Spam-Score: " in head
    # rspamd itself read the envelope from our request headers (its task log line).
    log = (srv.peers.root / "rspamd" / "rspamd.log").read_text()  # type: ignore[attr-defined]
    line = next(x for x in log.splitlines() if "rspamd_task_write_log" in x and "<clean.lunch@far.example>" in x)
    assert "ip: 127.0.0.1" in line and "from: <alice@far.example>" in line and "rcpts: <bob@nyu.example>" in line


def test_add_header_action_files_in_junk(srv: ServerProcess) -> None:
    send(srv, message("probably spam", GTUBE_ADD_HEADER))
    assert fetch(srv, "probably spam") is None
    stored = fetch(srv, "probably spam", "Junk")
    assert stored is not None and b"X-Spam-Status: Yes, score=6.00" in stored


@pytest.mark.parametrize("action", ["soft reject", "greylist"])
def test_soft_reject_and_greylist_defer(srv: ServerProcess, action: str) -> None:
    code, text = refused(srv, message(f"deferred {action}", "Hello.", extra=f"X-Test-Action: {action}\r\n"))
    assert code == 451 and text.startswith(b"4.7.1")


def eicar_message() -> bytes:
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@far.example", "bob@nyu.example", "the report"
    msg.set_content("The report is attached.")
    msg.add_attachment(EICAR.encode(), maintype="application", subtype="octet-stream", filename="report.com")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def test_eicar_is_refused_by_clamd(srv: ServerProcess) -> None:
    code, text = refused(srv, eicar_message())
    assert (code, text) == (554, b"5.7.1 Message refused: a virus was found in it")
    assert "Mailhaven-Test-EICAR" in srv.log_text()


def test_scanners_down(srv: ServerProcess) -> None:
    """Last: rspamd down -> accepted unscanned and logged (unreachable = accept, the default);
    clamd down -> 451 4.3.0 (its unreachable = tempfail here)."""
    peers = srv.peers  # type: ignore[attr-defined]
    stop(peers.rspamd)
    send(srv, message("no rspamd", "Hello."))
    stored = fetch(srv, "no rspamd")
    assert stored is not None and b"X-Spam-Status" not in stored
    assert "rspamd unavailable" in srv.log_text()
    stop(peers.clamd)
    code, text = refused(srv, message("no clamd", "Hello."))
    assert code == 451 and text.startswith(b"4.3.0")
    assert "clamd unavailable" in srv.log_text()

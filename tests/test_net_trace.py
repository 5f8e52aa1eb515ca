"""Opt-in protocol traces (issue 15 section 5): what clients send, passwords redacted."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import socket
import ssl
import stat
import time
from pathlib import Path

from conftest import ServerProcess

PASSWORD = "Tr4ce-Secret-9"
BOB_PASSWORD = "B0b-Other-Secret"


def _secrets(user: str, password: str) -> list[bytes]:
    """Every form a password takes on the wire: plain, and inside base64 SASL data."""
    forms = [password.encode(), base64.b64encode(password.encode())]
    for plain in (f"\0{user}\0{password}", f"{user}\0{user}\0{password}"):
        forms.append(base64.b64encode(plain.encode()))
    return forms


def test_traces_hold_the_commands_and_no_password(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", extra_config=(
        '[trace]\nlisteners = ["imap", "pop3", "submission", "managesieve"]\naccounts = ["bob@example.org"]\n')).start()
    try:
        server.add_user("alice@example.org", PASSWORD)
        server.add_user("bob@example.org", BOB_PASSWORD)
        port = server.port
        with imaplib.IMAP4("127.0.0.1", port("imap")) as imap:      # LOGIN
            imap.login("alice@example.org", PASSWORD)
            imap.select("INBOX")
        with imaplib.IMAP4("127.0.0.1", port("imap")) as imap:      # AUTHENTICATE PLAIN, continuation
            imap.authenticate("PLAIN", lambda _: f"\0alice@example.org\0{PASSWORD}".encode())
            imap.noop()
        s = socket.create_connection(("127.0.0.1", port("imap")))  # LOGIN with literals
        s.recv(1000)
        s.sendall(b"a LOGIN {17+}\r\nalice@example.org {%d+}\r\n%s\r\nb LOGOUT\r\n" % (
            len(PASSWORD), PASSWORD.encode()))
        time.sleep(0.5)
        s.close()
        s = socket.create_connection(("127.0.0.1", port("imap")))  # SASL-IR
        s.recv(1000)
        ir = base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode())
        s.sendall(b"a AUTHENTICATE PLAIN " + ir + b"\r\nb LOGOUT\r\n")
        time.sleep(0.5)
        s.close()
        with smtplib.SMTP("127.0.0.1", port("submission")) as smtp:  # AUTH PLAIN initial response
            smtp.login("alice@example.org", PASSWORD)
            smtp.sendmail("alice@example.org", ["bob@example.org"],
                          b"From: alice@example.org\r\nSubject: traced\r\n\r\nhello\r\n")
            for n in (1, 2):
                smtp.sendmail("alice@example.org", ["alice@example.org"],
                              b"From: alice@example.org\r\nSubject: to self %d\r\n\r\nhello\r\n" % n)
        with smtplib.SMTP("127.0.0.1", port("submission")) as smtp:  # AUTH LOGIN: 334 continuations
            smtp.ehlo()
            smtp.user, smtp.password = "alice@example.org", PASSWORD
            smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        pop = poplib.POP3("127.0.0.1", port("pop3"))                # USER / PASS
        pop.user("alice@example.org")
        pop.pass_(PASSWORD)
        pop.stat()
        pop.retr(1)
        pop.retr(2)                                                 # answered from the read-ahead
        pop.quit()
        s = socket.create_connection(("127.0.0.1", port("pop3")))  # POP3 AUTH PLAIN, continuation
        s.recv(1000)
        s.sendall(b"AUTH PLAIN\r\n")
        assert s.recv(100).startswith(b"+")
        s.sendall(base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode()) + b"\r\nQUIT\r\n")
        time.sleep(0.5)
        s.close()
        s = socket.create_connection(("127.0.0.1", port("managesieve")))   # ManageSieve: with and
        s.recv(2000)                                                       # without initial response
        plain = base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode())
        for line in (b'AUTHENTICATE "PLAIN" "' + plain + b'"', b"UNAUTHENTICATE", b'AUTHENTICATE "PLAIN"',
                     b"{%d+}\r\n%s" % (len(plain), plain)):
            s.sendall(line + b"\r\n")
            assert s.recv(1000)
        s.sendall(b"LISTSCRIPTS\r\nLOGOUT\r\n")
        time.sleep(0.5)
        s.close()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with imaplib.IMAP4_SSL("127.0.0.1", port("imaps"), ssl_context=ctx) as imap:   # not a traced listener
            imap.login("alice@example.org", PASSWORD)
        with imaplib.IMAP4_SSL("127.0.0.1", port("imaps"), ssl_context=ctx) as imap:   # a traced account
            imap.login("bob@example.org", BOB_PASSWORD)
            imap.select("INBOX")
            imap.fetch("1", "(FLAGS)")
    finally:
        server.stop()
    folder = server.data / "trace"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    text = {f.name: f.read_bytes() for f in files}
    everything = b"".join(text.values())
    for secret in _secrets("alice@example.org", PASSWORD) + _secrets("bob@example.org", BOB_PASSWORD):
        assert secret not in everything, secret
    by_listener = {name: b"".join(v for k, v in text.items() if k.startswith(name + "-"))
                   for name in ("imap", "imaps", "pop3", "submission", "managesieve")}
    imap_trace = by_listener["imap"]
    assert b"C: " in imap_trace and b"S: * OK" in imap_trace
    assert b"LOGIN alice@example.org <redacted>" in imap_trace
    assert b"SELECT INBOX" in imap_trace and b"NOOP" in imap_trace
    assert b"AUTHENTICATE PLAIN" in imap_trace and b"a AUTHENTICATE PLAIN <redacted>" in imap_trace
    assert b"b LOGOUT" in imap_trace
    sub = by_listener["submission"].lower()
    assert b"c: ehlo" in sub and b"c: mail from:<alice@example.org>" in sub and b"c: subject: traced" in sub
    assert b"c: auth plain <redacted>" in sub and b"c: auth login\n" in sub and b"s: 334" in sub
    pop = by_listener["pop3"]
    assert b"C: USER alice@example.org" in pop and b"C: PASS <redacted>" in pop and b"C: STAT" in pop
    assert b"C: AUTH PLAIN" in pop and b"C: QUIT" in pop
    assert b"C: RETR 2" in pop and b"S: Subject: to self 2" in pop
    sieve = by_listener["managesieve"]
    assert b'C: AUTHENTICATE "PLAIN" <redacted>' in sieve and b"C: UNAUTHENTICATE" in sieve
    assert b'C: AUTHENTICATE "PLAIN"\n' in sieve and b"C: LISTSCRIPTS" in sieve and b"S: OK \"Logged in\"" in sieve
    imaps = by_listener["imaps"]                      # only bob's connection, from his login on
    assert b"alice" not in imaps
    assert b"logged in as bob@example.org" in imaps and b"FETCH 1 (FLAGS)" in imaps

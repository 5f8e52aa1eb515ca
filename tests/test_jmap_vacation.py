"""JMAP VacationResponse (RFC 8621 8) over real sockets: jmap-jam (npm) switches the
out-of-office reply on, the account's managed Sieve script (sieve/managed.py) carries it and
is the active one, and a message that then arrives over SMTP gets its reply through the
outbound queue (to a plain SMTP peer on a relay route that records the envelope)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import smtplib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ROOT, ServerProcess, free_port, wait_for
from smtpsink import SmtpSink

USER, PASSWORD = "alice@example.org", "s3cret"
JS_DIR = ROOT / "tests" / "jmap_js"
VACATION = "urn:ietf:params:jmap:vacationresponse"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, SmtpSink]]:
    port = free_port()
    with SmtpSink("127.0.0.1", port) as sink:
        srv = ServerProcess(tmp_path_factory.mktemp("vacation") / "data", extra_config=(
            f'[relay]\ntls = "none"\n[relay.routes]\n"outside.example" = "127.0.0.1:{port}"\n'
            '[queue]\nretry = ["1s"]\npoll = "1s"\n')).start()
        try:
            srv.add_user(USER, PASSWORD)
            yield srv, sink
        finally:
            srv.stop()


def _utc(days: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _send(srv: ServerProcess, sender: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
        s.sendmail(sender, [USER], f"From: {sender}\r\nTo: {USER}\r\nSubject: {subject}\r\n"
                                   f"Message-ID: <{subject.replace(' ', '.')}@outside.example>\r\n\r\nHi\r\n".encode())


def _replies(sink: SmtpSink, to: str) -> list[Any]:
    return [m for m in sink.messages if m.rcpt_to == [to]]


def _vacation_set(srv: ServerProcess, update: dict[str, Any]) -> dict[str, Any]:
    """Plain HTTP, HTTP Basic: a second client of the same state."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    base = f"http://127.0.0.1:{srv.port('http')}"
    with urllib.request.urlopen(urllib.request.Request(
            base + "/.well-known/jmap", headers={"Authorization": f"Basic {token}"}), timeout=30) as res:
        account = json.loads(res.read())["primaryAccounts"][VACATION]
    body = {"using": ["urn:ietf:params:jmap:core", VACATION], "methodCalls": [
        ["VacationResponse/set", {"accountId": account, "update": {"singleton": update}}, "0"]]}
    req = urllib.request.Request(base + "/jmap/api", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as res:
        name, args, _ = json.loads(res.read())["methodResponses"][0]
    assert name == "VacationResponse/set", args
    return dict(args)


def test_vacation_response_set_by_jmap_replies_to_mail_over_smtp(site: tuple[ServerProcess, SmtpSink]) -> None:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "jmap-jam").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("node and jmap-jam (npm ci in tests/jmap_js) are needed")
        pytest.skip("node and jmap-jam (npm ci in tests/jmap_js) are needed")
    srv, sink = site
    token = srv.admin("token", "create", USER, "--label", "vacation").stdout.strip()
    env = {**os.environ, "JMAP_TOKEN": token, "JMAP_SESSION": f"http://127.0.0.1:{srv.port('http')}/.well-known/jmap",
           "FROM_DATE": _utc(-1), "TO_DATE": _utc(7)}
    result = subprocess.run([node, str(JS_DIR / "vacation_flow.mjs")], env=env, capture_output=True, text=True,
                            timeout=120, cwd=JS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["ok"] is True

    # ManageSieve and the CLI see the same state: the managed script, active, with the rule.
    scripts = json.loads(srv.admin("sieve", "list", USER, "--json").stdout)
    assert {"name": "mailhaven", "active": True} in scripts, scripts
    assert 'vacation :subject "Out of office"' in srv.admin("sieve", "get", USER, "mailhaven").stdout

    _send(srv, "carol@outside.example", "planning")
    reply = wait_for(lambda: _replies(sink, "carol@outside.example"), what="the vacation reply")[0]
    assert reply.mail_from == ""                                              # RFC 3834 3.3
    assert b"\r\nSubject: Out of office\r\n" in reply.data and b"Back on Monday." in reply.data
    assert b"\r\nAuto-Submitted: auto-replied\r\n" in reply.data
    assert b"\r\nIn-Reply-To: <planning@outside.example>\r\n" in reply.data

    # Off: no reply. On again for a window that has not begun: no reply. Then on now: a reply.
    assert _vacation_set(srv, {"isEnabled": False})["updated"] == {"singleton": None}
    _send(srv, "dave@outside.example", "while off")
    assert _vacation_set(srv, {"isEnabled": True, "fromDate": _utc(2)})["updated"] == {"singleton": None}
    _send(srv, "erin@outside.example", "before the window")
    assert _vacation_set(srv, {"fromDate": None, "subject": "Still away"})["updated"] == {"singleton": None}
    _send(srv, "frank@outside.example", "now")
    reply = wait_for(lambda: _replies(sink, "frank@outside.example"), what="the reply after switching on")[0]
    assert b"\r\nSubject: Still away\r\n" in reply.data
    time.sleep(2)                                                             # the queue polls every second
    assert not _replies(sink, "dave@outside.example") and not _replies(sink, "erin@outside.example")
    assert len(_replies(sink, "carol@outside.example")) == 1

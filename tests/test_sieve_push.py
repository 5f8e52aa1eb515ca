"""JMAP push (RFC 8620 7.3) for Sieve: a client holding the EventSource stream (curl, as a
browser's EventSource reads it) gets a StateChange naming SieveScript (RFC 9661) and, when
the vacation changed, VacationResponse (RFC 8621 8), whichever way the script changed: JMAP,
the webmail's Filters page, ManageSieve (the sievelib client) or `mailhaven sieve put`
(another process: on SQLite its write reaches the stream through the version check made at
each ping interval). The pushed states are the ones /get then gives."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sievelib import managesieve

from conftest import ServerProcess
from test_sieve_save_race import PASSWORD, USER, Jmap, Webmail

SIEVE = "urn:ietf:params:jmap:sieve"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("push") / "data").start()
    try:
        srv.add_user(USER, PASSWORD)
        yield srv
    finally:
        srv.stop()


class Stream:
    """curl reading /jmap/eventsource; every StateChange's ``changed`` for the account."""

    def __init__(self, port: int, account: str) -> None:
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl is not installed")
        self.account = account
        self.events: list[dict[str, str]] = []
        self.proc = subprocess.Popen(
            [curl, "-sN", "-u", f"{USER}:{PASSWORD}",
             f"http://127.0.0.1:{port}/jmap/eventsource?types=*&closeafter=no&ping=1"],
            stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if data.get("@type") == "StateChange":
                    self.events.append(data["changed"][self.account])

    def wait(self, after: int, wanted: str, timeout: float = 20) -> dict[str, str]:
        """The first event past the first ``after`` that names ``wanted``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events[after:]:
                if wanted in event:
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no StateChange for {wanted} after event {after}: {self.events}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_every_way_of_changing_a_script_reaches_a_push_client(server: ServerProcess, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    port = server.port("http")
    jmap, webmail = Jmap(port), Webmail(port)
    stream = Stream(port, jmap.account)
    try:
        first = stream.wait(0, "Email")
        assert "SieveScript" in first and "VacationResponse" in first     # the opening event has them all

        def states() -> tuple[str, str]:
            body = {"using": ["urn:ietf:params:jmap:core", SIEVE, "urn:ietf:params:jmap:vacationresponse"],
                    "methodCalls": [["SieveScript/get", {"accountId": jmap.account, "ids": []}, "s"],
                                    ["VacationResponse/get", {"accountId": jmap.account, "ids": []}, "v"]]}
            out = jmap.raw(body)
            return out[0][1]["state"], out[1][1]["state"]

        def step(change: Any, vacation_too: bool) -> None:
            seen = len(stream.events)
            change()
            event = stream.wait(seen, "SieveScript")
            script_state, vacation_state = states()
            assert event["SieveScript"] == script_state, (event, script_state)
            if vacation_too:
                assert event.get("VacationResponse") == vacation_state, (event, vacation_state)
            assert not {"Email", "Mailbox"} & set(event), event       # no mail changed

        # JMAP: the vacation response (the managed script, now active)
        step(lambda: jmap.call("VacationResponse/set", {"update": {"singleton": {
            "isEnabled": True, "subject": "Away", "textBody": "Back Monday."}}}), vacation_too=True)
        # the webmail's Filters page
        step(lambda: webmail.save([{"field": "subject", "contains": "invoice", "action": "flag"}]), vacation_too=False)

        # ManageSieve (sievelib): a script of its own
        def managesieve_put() -> None:
            monkeypatch.setattr(managesieve.ssllib, "create_default_context", _unverified)
            client = managesieve.Client("127.0.0.1", server.port("managesieve"))
            assert client.connect(USER, PASSWORD, authmech="PLAIN", starttls=True)
            assert client.putscript("other", 'require "fileinto";\nif size :over 1M { fileinto "Big"; }\n')
            client.logout()
        step(managesieve_put, vacation_too=False)

        # the command line, another process
        script = tmp_path / "cli.sieve"
        script.write_text("keep;\n")
        step(lambda: server.admin("sieve", "put", USER, "cli", str(script)), vacation_too=False)
    finally:
        stream.close()

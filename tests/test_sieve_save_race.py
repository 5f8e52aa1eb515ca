"""Two clients edit the account's managed Sieve script at the same moment, over real
sockets: the webmail's Filters page saves its rules while a JMAP client sets the vacation
response. Each save reads the script, edits its part and writes the script back; the store
writes only if no one changed the scripts in between (a compare-and-set on the account's
Sieve version), else the save reads again, so neither edit is lost. JMAP's ifInState on a
state that a concurrent write has moved gets stateMismatch."""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from sievelib import managesieve

from conftest import ServerProcess

USER, PASSWORD = "race@example.org", "s3cret"
VACATION = "urn:ietf:params:jmap:vacationresponse"
ROUNDS = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("race") / "data").start()
    try:
        srv.add_user(USER, PASSWORD)
        yield srv
    finally:
        srv.stop()


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


class Webmail:
    """The Filters page's calls, as its script makes them: a session cookie and the CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        status, headers, _ = _request(port, "POST", "/login", urlencode({"username": USER, "password": PASSWORD}).encode(),
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303, status
        self.cookie = headers["set-cookie"].split(";", 1)[0]
        _, _, page = _request(port, "GET", "/filters", headers={"Cookie": self.cookie})
        found = re.search(rb'name="csrf-token" content="([^"]+)"', page)
        assert found is not None
        self.csrf = found.group(1).decode()

    def state(self) -> dict[str, Any]:
        status, _, body = _request(self.port, "GET", "/filters/state", headers={"Cookie": self.cookie})
        assert status == 200
        return dict(json.loads(body))

    def save(self, rules: list[dict[str, Any]]) -> int:
        status, body = self.post({"rules": rules, "raw": ""})
        assert status == 200, body
        return status

    def post(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, _, body = _request(self.port, "POST", "/filters/state", json.dumps(args).encode(),
                                   {"Cookie": self.cookie, "X-CSRF-Token": self.csrf,
                                    "Content-Type": "application/json"})
        return status, dict(json.loads(body))


class Jmap:
    def __init__(self, port: int) -> None:
        self.port = port
        self.auth = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        _, _, body = _request(port, "GET", "/.well-known/jmap", headers=self.auth)
        self.account = json.loads(body)["primaryAccounts"][VACATION]

    def raw(self, body: dict[str, Any]) -> list[Any]:
        status, _, data = _request(self.port, "POST", "/jmap/api", json.dumps(body).encode(),
                                   {**self.auth, "Content-Type": "application/json"})
        assert status == 200, data
        return list(json.loads(data)["methodResponses"])

    def call(self, name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        got, out, _ = self.raw({"using": ["urn:ietf:params:jmap:core", VACATION],
                                "methodCalls": [[name, {"accountId": self.account, **args}, "0"]]})[0]
        return got, out


def _at_once(*calls: Any) -> list[Any]:
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - returned
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_filters_page_and_jmap_vacation_saved_at_once_both_survive(server: ServerProcess) -> None:
    webmail, jmap = Webmail(server.port("http")), Jmap(server.port("http"))
    for n in range(ROUNDS):
        rule = {"field": "subject", "contains": f"round {n}", "action": "flag"}
        saved, set_ = _at_once(lambda rule=rule: webmail.save([rule]),
                               lambda n=n: jmap.call("VacationResponse/set", {"update": {"singleton": {
                                   "isEnabled": True, "subject": f"away {n}", "textBody": "Back soon."}}}))
        assert saved == 200, saved
        assert not isinstance(set_, BaseException) and "singleton" in set_[1]["updated"], set_
        state = webmail.state()
        assert [r["contains"] for r in state["rules"]] == [f"round {n}"], (n, state)     # the page's edit
        assert state["vacation"]["subject"] == f"away {n}", (n, state)                   # and JMAP's


def test_jmap_if_in_state_holds_against_a_concurrent_vacation_change(server: ServerProcess) -> None:
    """A set with ifInState S races a set without: if the first got through, it was written
    while the state was S, before the other; either way the other's subject is the last."""
    jmap, other = Jmap(server.port("http")), Jmap(server.port("http"))
    outcomes = set()
    for n in range(ROUNDS):
        _, got = jmap.call("VacationResponse/get", {"ids": ["singleton"]})
        checked, plain = _at_once(
            lambda n=n, s=got["state"]: jmap.call("VacationResponse/set", {
                "ifInState": s, "update": {"singleton": {"subject": f"checked {n}"}}}),
            lambda n=n: other.call("VacationResponse/set", {"update": {"singleton": {"subject": f"plain {n}"}}}))
        assert not isinstance(checked, BaseException) and not isinstance(plain, BaseException), (checked, plain)
        assert plain[0] == "VacationResponse/set" and "singleton" in plain[1]["updated"], plain
        assert checked[0] == "VacationResponse/set" or checked[1]["type"] == "stateMismatch", checked
        outcomes.add(checked[0])
        _, now = jmap.call("VacationResponse/get", {"ids": ["singleton"]})
        assert now["list"][0]["subject"] == f"plain {n}", (n, checked, now)


def test_a_putscript_since_the_filters_page_loaded_is_not_written_over(server: ServerProcess) -> None:
    """The page saves against the rules and raw script it loaded: a ManageSieve PUTSCRIPT of
    the managed script in between makes the save a 409 (reload), where it used to replace
    that script with the page's rules; a JMAP vacation change in between is merged."""
    webmail, jmap = Webmail(server.port("http")), Jmap(server.port("http"))
    webmail.save([{"field": "subject", "contains": "page rule", "action": "flag"}])
    loaded = webmail.state()
    client = managesieve.Client("127.0.0.1", server.port("managesieve"))
    assert client.connect(USER, PASSWORD, authmech="PLAIN")
    try:
        text = client.getscript("mailhaven")
        assert client.putscript("mailhaven", text + 'if header :contains "subject" "typed in sieve-connect" { discard; }\n')
        status, body = webmail.post({"rules": [{"field": "subject", "contains": "stale page", "action": "flag"}],
                                     "raw": loaded["raw"], "base": loaded["base"]})
        assert status == 409 and body["changed"], (status, body)
        assert "typed in sieve-connect" in client.getscript("mailhaven")      # not written over
        fresh = webmail.state()                                             # the user reloads
        assert "typed in sieve-connect" in fresh["raw"]
        _, set_ = jmap.call("VacationResponse/set", {"update": {"singleton": {"isEnabled": True, "subject": "away"}}})
        assert "singleton" in set_["updated"], set_
        status, body = webmail.post({"rules": [{"field": "subject", "contains": "new rule", "action": "flag"}],
                                     "raw": fresh["raw"], "base": fresh["base"]})
        assert status == 200, body                                          # vacation only: merged
        state = webmail.state()
        assert [r["contains"] for r in state["rules"]] == ["new rule"] and state["base"] == body["base"]
        assert "typed in sieve-connect" in state["raw"] and state["vacation"]["subject"] == "away", state
    finally:
        client.logout()

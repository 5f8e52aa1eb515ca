"""The walk-through that must always work: alice@lancs.example writes to bob@nyu.example
with the command-line agent; her server queues the message, finds Bob's server by MX
(a real DNS server), hands it over SMTP on port 25; Bob reads it over IMAP, POP3, JMAP and
the command line. Every hop is a separate process on its own loopback address."""

from __future__ import annotations

import base64
import email
import imaplib
import json
import poplib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess, mailhaven_env
from dnsserver import DNSServer
from test_queue_scenario import _require_port_25

LANCS_IP, NYU_IP = "127.0.0.12", "127.0.0.13"
PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _require_port_25()
    root = tmp_path_factory.mktemp("walk")
    records = {"lancs.example": {"MX": ["10 mx.lancs.example."]}, "mx.lancs.example": {"A": [LANCS_IP]},
               "nyu.example": {"MX": ["10 mx.nyu.example."]}, "mx.nyu.example": {"A": [NYU_IP]}}
    with DNSServer(records) as dns:
        extra = f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[queue]\nretry = ["1s"]\npoll = "1s"\n'
        lancs = ServerProcess(root / "lancs", host=LANCS_IP, ports={"smtp": 25}, hostname="mx.lancs.example",
                              extra_config=extra)
        nyu = ServerProcess(root / "nyu", host=NYU_IP, ports={"smtp": 25}, hostname="mx.nyu.example",
                            extra_config=extra)
        lancs.start()
        nyu.start()
        try:
            lancs.add_user("alice@lancs.example", PASSWORD)
            nyu.add_user("bob@nyu.example", PASSWORD)
            home = root / "home"
            (home / ".config" / "mailhaven").mkdir(parents=True)
            (home / "pw").write_text(PASSWORD)
            accounts = ""
            for name, srv, address in (("alice", lancs, "alice@lancs.example"), ("bob", nyu, "bob@nyu.example")):
                accounts += (f'[accounts.{name}]\naddress = "{address}"\n'
                             f'imap = "imap://{srv.host}:{srv.port("imap")}"\n'
                             f'smtp = "submission://{srv.host}:{srv.port("submission")}"\n'
                             f'password_command = "cat {home / "pw"}"\ninsecure = true\n')
            (home / ".config" / "mailhaven" / "accounts.toml").write_text(accounts)
            yield {"lancs": lancs, "nyu": nyu, "home": home}
        finally:
            lancs.stop()
            nyu.stop()


def agent(world: dict[str, Any], account: str, *args: str, stdin: str = "") -> str:
    home = world["home"]
    out = subprocess.run([sys.executable, "-m", "mailhaven", "mail", "--account", account, *args], input=stdin,
                         capture_output=True, text=True, timeout=60,
                         env={**mailhaven_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_alice_to_bob_read_four_ways(world: dict[str, Any]) -> None:
    nyu: ServerProcess = world["nyu"]
    agent(world, "alice", "send", "--to", "Bob <bob@nyu.example>", "--subject", "Hello from Lancaster",
          stdin="Dear Bob,\nthe walk-through works.\nAlice\n")

    def arrived() -> list[dict[str, Any]]:
        items = json.loads(agent(world, "bob", "ls", "--json"))
        return [m for m in items if m["subject"] == "Hello from Lancaster"]

    deadline = time.monotonic() + 30
    while not arrived():
        assert time.monotonic() < deadline, "the message did not reach Bob's server"
        time.sleep(0.3)

    # IMAP
    with imaplib.IMAP4(NYU_IP, nyu.port("imap")) as imap:
        imap.login("bob@nyu.example", PASSWORD)
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("SEARCH", "SUBJECT", '"Hello from Lancaster"')
        uid = data[0].split()[-1]
        _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        raw = fetched[0][1]
    msg = email.message_from_bytes(raw)
    received = msg.get_all("Received")
    assert any("by mx.nyu.example" in r for r in received) and any("by mx.lancs.example" in r for r in received)
    assert "the walk-through works." in msg.get_payload(decode=True).decode()

    # POP3
    pop = poplib.POP3(NYU_IP, nyu.port("pop3"), timeout=30)
    try:
        pop.user("bob@nyu.example")
        pop.pass_(PASSWORD)
        count, _ = pop.stat()
        bodies = [b"\r\n".join(pop.retr(i)[1]) for i in range(1, count + 1)]
    finally:
        pop.quit()
    assert any(b"Subject: Hello from Lancaster" in b for b in bodies)

    # JMAP (the webmail's API)
    base = f"http://{NYU_IP}:{nyu.port('http')}"
    auth = {"Authorization": "Basic " + base64.b64encode(f"bob@nyu.example:{PASSWORD}".encode()).decode(),
            "Content-Type": "application/json"}
    body = {"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"], "methodCalls": [
        ["Email/query", {"accountId": "A1", "filter": {"subject": "Hello from Lancaster"}}, "q"],
        ["Email/get", {"accountId": "A1", "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": ["from", "subject"]}, "g"]]}
    session = json.loads(urllib.request.urlopen(urllib.request.Request(base + "/.well-known/jmap", headers=auth),
                                                timeout=30).read())
    body["methodCalls"][0][1]["accountId"] = body["methodCalls"][1][1]["accountId"] = \
        session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    res = json.loads(urllib.request.urlopen(urllib.request.Request(base + "/jmap/api", data=json.dumps(body).encode(),
                                                                   headers=auth, method="POST"), timeout=30).read())
    (got,) = res["methodResponses"][1][1]["list"]
    assert got["from"][0]["email"] == "alice@lancs.example"

    # The command line
    m = arrived()[0]
    shown = agent(world, "bob", "read", str(m["uid"]))
    assert "From: alice@lancs.example" in shown and "the walk-through works." in shown
    # And Bob answers; the reply travels the other way.
    agent(world, "bob", "reply", str(m["uid"]), stdin="Got it, thanks!\n")
    deadline = time.monotonic() + 30
    while not [x for x in json.loads(agent(world, "alice", "ls", "--json")) if x["subject"] == "Re: Hello from Lancaster"]:
        assert time.monotonic() < deadline, "Bob's reply did not reach Alice"
        time.sleep(0.3)


def test_nothing_left_in_either_queue(world: dict[str, Any]) -> None:
    for name in ("lancs", "nyu"):
        srv: ServerProcess = world[name]
        deadline = time.monotonic() + 30
        while json.loads(srv.admin("queue", "list", "--json").stdout):
            assert time.monotonic() < deadline
            time.sleep(0.3)


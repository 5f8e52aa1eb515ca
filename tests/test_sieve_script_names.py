"""One script-name rule for ManageSieve and JMAP (sieve/scriptname.py): Pigeonhole's, at most
256 characters, none of them a control, "/", U+00FF or a line separator. A name one protocol
accepts the other can address; one past the limit neither takes. Over real sockets: the
sievelib ManageSieve client, JMAP over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sievelib import managesieve

from conftest import ServerProcess
from test_sieve_save_race import PASSWORD, USER, Jmap, _request

SIEVE = "urn:ietf:params:jmap:sieve"
LONGEST = "é" * 255 + "x"             # 256 characters, 511 octets
TOO_LONG = "x" * 257


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("names") / "data").start()
    try:
        srv.add_user(USER, PASSWORD)
        yield srv
    finally:
        srv.stop()


def _managesieve(srv: ServerProcess) -> managesieve.Client:
    client = managesieve.Client("127.0.0.1", srv.port("managesieve"))
    assert client.connect(USER, PASSWORD, authmech="PLAIN")           # loopback counts as secure
    return client


def _jmap_create(jmap: Jmap, name: str) -> dict[str, Any]:
    status, _, body = _request(jmap.port, "POST", f"/jmap/upload/{jmap.account}/", b"keep;\n",
                               {**jmap.auth, "Content-Type": "application/sieve"})
    assert status in (200, 201), body
    blob = json.loads(body)["blobId"]
    (_, out, _), = jmap.raw({"using": ["urn:ietf:params:jmap:core", SIEVE], "methodCalls": [
        ["SieveScript/set", {"accountId": jmap.account, "create": {"s": {"name": name, "blobId": blob}}}, "0"]]})
    return dict(out)


def test_managesieve_takes_pigeonholes_longest_name_and_refuses_one_more(server: ServerProcess) -> None:
    client = _managesieve(server)
    try:
        assert client.putscript(LONGEST, "keep;\n")                   # 128 characters were the limit
        assert LONGEST in client.listscripts()[1]
        assert not client.putscript(TOO_LONG, "keep;\n")
        assert not client.putscript("a/b", "keep;\n")                  # Pigeonhole refuses "/"
        assert client.deletescript(LONGEST)
    finally:
        client.logout()


def test_jmap_refuses_what_managesieve_refuses_and_its_names_reach_managesieve(server: ServerProcess) -> None:
    jmap = Jmap(server.port("http"))
    session = json.loads(_request(jmap.port, "GET", "/.well-known/jmap", headers=jmap.auth)[2])
    caps = session["accounts"][jmap.account]["accountCapabilities"][SIEVE]
    assert caps["maxSizeScriptName"] == 1024                            # 256 characters of UTF-8
    refused = _jmap_create(jmap, TOO_LONG)                              # 257 octets: under 512, yet refused
    assert refused["notCreated"]["s"]["type"] == "invalidProperties", refused
    assert _jmap_create(jmap, "a/b")["notCreated"]["s"]["type"] == "invalidProperties"
    assert "s" in _jmap_create(jmap, LONGEST)["created"]
    client = _managesieve(server)
    try:
        assert client.getscript(LONGEST).rstrip("\n") == "keep;"        # the JMAP name is addressable
    finally:
        client.logout()

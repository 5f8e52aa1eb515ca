"""JMAP for Sieve scripts (RFC 9661) over real sockets: PyPI's ``jmapc`` (its CustomMethod
carries the SieveScript calls, its upload and its requests session the blobs) through nginx
to the running server; the same scripts seen with PyPI's ``sievelib`` over ManageSieve, and
a script put over JMAP sorts mail sent with smtplib, read back with imaplib."""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sievelib import managesieve

from conftest import ServerProcess
from test_jmap_clients import NGINX, PROXY_FROM, Proxy, need

USER, PASSWORD = "sifter@example.org", "s3cret"
SIEVE = "urn:ietf:params:jmap:sieve"
CORE = "urn:ietf:params:jmap:core"
SORT = ('require ["fileinto", "mailbox", "imap4flags"];\n'
        'if header :contains "subject" "report" {\n  addflag "\\\\Flagged";\n  fileinto :create "Reports";\n}\n')
BROKEN = 'require "fileinto";\nif header :is "subject" "x" {\n  frobnicate;\n}\n'
pytestmark = pytest.mark.filterwarnings("ignore:Credentials are sent over an unencrypted connection")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Proxy]]:
    need("nginx", Path(NGINX).exists())
    base = tmp_path_factory.mktemp("jmapsieve")
    srv = ServerProcess(base / "data", extra_config=(
        f'[http]\ntrusted_proxies = ["{PROXY_FROM}/32"]\n'
        '[sieve]\nmax_scripts = 3\nmax_script_size = "1k"\n')).start()
    proxy = None
    try:
        srv.add_user(USER, PASSWORD)
        proxy = Proxy(base, srv.port("http"))
        yield srv, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        srv.stop()


@pytest.fixture
def client(site: tuple[ServerProcess, Proxy], monkeypatch: pytest.MonkeyPatch) -> Any:
    import jmapc

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(site[1].cert))
    return jmapc.Client.create_with_password(f"localhost:{site[1].port}", USER, PASSWORD)


def _call(client: Any, name: str, **args: Any) -> Any:
    """One SieveScript call through jmapc: its response's data, or its error object."""
    from jmapc.methods import CustomMethod

    @dataclass
    class SieveCall(CustomMethod):
        using = {CORE, SIEVE}

        def __post_init__(self) -> None:
            self.jmap_method = name

    response = client.request(SieveCall(data={"accountId": client.account_id, **args}))
    return getattr(response, "data", response)


def _upload(client: Any, tmp_path: Path, text: str) -> str:
    path = tmp_path / f"script{len(list(tmp_path.iterdir()))}.sieve"
    path.write_text(text)
    return str(client.upload_blob(path).id)


def _managesieve(srv: ServerProcess) -> managesieve.Client:
    ms = managesieve.Client("127.0.0.1", srv.port("managesieve"))
    assert ms.connect(USER, PASSWORD, authmech="PLAIN")               # loopback counts as secure here
    return ms


def test_session_advertises_sieve(client: Any) -> None:
    session = client.requests_session.get(f"https://{client._host}/.well-known/jmap", timeout=30).json()
    assert SIEVE in session["capabilities"]
    account = session["accounts"][session["primaryAccounts"][SIEVE]]
    caps = account["accountCapabilities"][SIEVE]
    assert caps["implementation"] == "Mailhaven"
    assert caps["maxNumberScripts"] == 3 and caps["maxSizeScript"] == 1024
    assert caps["maxSizeScriptName"] >= 512                           # RFC 9661 2: at least 512
    assert {"fileinto", "vacation", "imap4flags", "regex"} <= set(caps["sieveExtensions"])
    assert caps["notificationMethods"] == ["mailto"] and caps["externalLists"] is None


def test_upload_validate_create_activate_deliver_rename_destroy(
        site: tuple[ServerProcess, Proxy], client: Any, tmp_path: Path) -> None:
    srv, _ = site
    good, broken = _upload(client, tmp_path, SORT), _upload(client, tmp_path, BROKEN)

    assert _call(client, "SieveScript/validate", blobId=good)["error"] is None
    error = _call(client, "SieveScript/validate", blobId=broken)["error"]
    assert error["type"] == "invalidSieve" and "line 3, column 3" in error["description"]

    empty = _call(client, "SieveScript/get", ids=None)
    made = _call(client, "SieveScript/set", ifInState=empty["state"], onSuccessActivateScript="#sort",
                 create={"sort": {"name": "sort", "blobId": good}, "bad": {"name": "bad", "blobId": broken}})
    assert made["notCreated"]["bad"]["type"] == "invalidSieve"
    created = made["created"]["sort"]
    sid = created["id"]
    assert created["isActive"] is False                              # one create failed: no activation
    assert made["oldState"] == empty["state"] != made["newState"]
    on = _call(client, "SieveScript/set", onSuccessActivateScript=sid)
    assert on["updated"] == {sid: {"isActive": True}}
    again = _call(client, "SieveScript/set", create={"dup": {"name": "sort", "blobId": good},
                                                     "long": {"name": "x" * 256, "blobId": good},
                                                     "longer": {"name": "x" * 257, "blobId": good},
                                                     "ctl": {"name": "a\nb", "blobId": good}})
    assert again["notCreated"]["dup"]["type"] == "alreadyExists"
    assert again["notCreated"]["ctl"]["type"] == "invalidProperties"
    assert again["notCreated"]["longer"]["type"] == "invalidProperties"   # past Pigeonhole's 256 characters
    long_id = again["created"]["long"]["id"]
    assert _call(client, "SieveScript/set", destroy=[long_id])["destroyed"] == [long_id]

    ms = _managesieve(srv)                                           # the same script over ManageSieve
    try:
        assert ms.listscripts() == ("sort", [])
        assert ms.getscript("sort").rstrip("\n") == SORT.rstrip("\n")
    finally:
        ms.logout()

    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as smtp:   # it runs at delivery
        smtp.sendmail("carol@outside.example", [USER],
                      f"From: carol@outside.example\r\nTo: {USER}\r\nSubject: weekly report\r\n\r\nhi\r\n".encode())
    imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=30)
    try:
        imap.login(USER, PASSWORD)
        assert imap.select('"Reports"') == ("OK", [b"1"])
        typ, data = imap.fetch("1", "(FLAGS)")
        assert typ == "OK" and b"\\Flagged" in data[0]
        assert imap.select("INBOX") == ("OK", [b"0"])
    finally:
        imap.logout()

    got = _call(client, "SieveScript/get", ids=[sid, "Z999999"])
    assert got["notFound"] == ["Z999999"]
    [script] = got["list"]
    assert script == {"id": sid, "name": "sort", "isActive": True, "blobId": script["blobId"]}
    url = client.jmap_session.download_url.format(accountId=client.account_id, blobId=script["blobId"],
                                                  name="sort.sieve", type="application/sieve")
    assert client.requests_session.get(url, timeout=30).text == SORT

    renamed = _call(client, "SieveScript/set", update={sid: {"name": "sorting", "blobId": _upload(
        client, tmp_path, SORT + "# v2\n")}})
    assert renamed["updated"][sid]["blobId"] != script["blobId"]
    assert [s["name"] for s in _call(client, "SieveScript/get", ids=[sid])["list"]] == ["sorting"]
    assert _call(client, "SieveScript/set", update={sid: {"blobId": broken}})["notUpdated"][sid]["type"] == \
        "invalidSieve"

    refused = _call(client, "SieveScript/set", destroy=[sid])
    assert refused["notDestroyed"][sid]["type"] == "sieveIsActive"
    off = _call(client, "SieveScript/set", onSuccessDeactivateScript=True)
    assert off["updated"] == {sid: {"isActive": False}}
    assert _call(client, "SieveScript/set", destroy=[sid])["destroyed"] == [sid]
    ms = _managesieve(srv)
    try:
        assert ms.listscripts() == (None, [])
    finally:
        ms.logout()


def test_managesieve_scripts_query_and_quota(site: tuple[ServerProcess, Proxy], client: Any,
                                             tmp_path: Path) -> None:
    srv, _ = site
    ms = _managesieve(srv)
    try:
        assert ms.putscript("b-rules", "keep;\n") and ms.putscript("a-rules", "discard;\n")
        assert ms.setactive("b-rules")
    finally:
        ms.logout()
    state = _call(client, "SieveScript/get", ids=None)["state"]
    names = _call(client, "SieveScript/query", sort=[{"property": "name"}], calculateTotal=True)
    got = {s["id"]: s for s in _call(client, "SieveScript/get", ids=names["ids"])["list"]}
    assert [got[i]["name"] for i in names["ids"]] == ["a-rules", "b-rules"] and names["total"] == 2
    assert names["canCalculateChanges"] is False                     # RFC 9661 defines no /queryChanges
    active = _call(client, "SieveScript/query", filter={"isActive": True})
    assert [got[i]["name"] for i in active["ids"]] == ["b-rules"]
    assert _call(client, "SieveScript/query", filter={"name": "A-R"})["ids"] == [names["ids"][0]]

    blob = _upload(client, tmp_path, "keep;\n")
    switch = _call(client, "SieveScript/set", onSuccessActivateScript=names["ids"][0],
                   create={"x": {"blobId": blob}})                   # no name: the server picks one
    assert switch["created"]["x"]["name"] and switch["created"]["x"]["isActive"] is False
    assert switch["updated"] == {names["ids"][0]: {"isActive": True}, names["ids"][1]: {"isActive": False}}
    assert switch["oldState"] == state
    full = _call(client, "SieveScript/set", create={"y": {"name": "y", "blobId": blob}})
    assert full["notCreated"]["y"]["type"] == "overQuota"            # max_scripts = 3
    big = _upload(client, tmp_path, "keep;\n" + "#" * 2000 + "\n")
    assert _call(client, "SieveScript/validate", blobId=big)["error"]["type"] == "tooLarge"
    stale = _call(client, "SieveScript/set", ifInState=state, destroy=[names["ids"][1]])
    assert getattr(stale, "type", None) == "stateMismatch"

"""The built-in spam filter (filter/spam/) over real sockets: ``mailhaven serve`` with DNS
from tests/dnsserver.py (block and allow list zones, PTR records), smtplib sending from
loopback addresses, training over IMAP MOVE and JMAP Email/set, the ``mailhaven spam`` CLI."""

from __future__ import annotations

import base64
import imaplib
import json
import re
import smtplib
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess
from dnsserver import DNSServer
from mx_client import fetch_by_subject, send_mx

HOST = "127.0.0.1"
AUTHSERV = "mail.test.example"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

RECORDS = {
    "good.example": {"TXT": ['"v=spf1 ip4:127.0.0.1 ip4:127.0.0.4 -all"']},
    "_dmarc.good.example": {"TXT": ['"v=DMARC1; p=none"']},
    "strict.example": {"TXT": ['"v=spf1 ip4:127.0.0.1 -all"']},
    "_dmarc.strict.example": {"TXT": ['"v=DMARC1; p=quarantine"']},
    # 127.0.0.4 is on the block list, 127.0.0.5 on the allow list (RFC 5782 2.1 / 2.3)
    "4.0.0.127.bl.test.example": {"A": ["127.0.0.2"], "TXT": ['"listed"']},
    "5.0.0.127.wl.test.example": {"A": ["127.0.10.3"]},
    # 127.0.0.1 has forward-confirmed reverse DNS, 127.0.0.3 a PTR that does not confirm
    "1.0.0.127.in-addr.arpa": {"PTR": ["client.good.example."]},
    "client.good.example": {"A": ["127.0.0.1"]},
    "3.0.0.127.in-addr.arpa": {"PTR": ["liar.example."]},
    "liar.example": {"A": ["192.0.2.77"]},
    "5.0.0.127.in-addr.arpa": {"PTR": ["client.good.example."]},
}

SPAM_CONFIG = ('[spam]\ndnsbl = ["bl.test.example"]\ndnswl = ["wl.test.example"]\n'
               "bayes_min_messages = 3\n")


@pytest.fixture(scope="module")
def dns() -> Iterator[DNSServer]:
    with DNSServer(RECORDS) as server:
        yield server


def dns_config(dns: DNSServer) -> str:
    return f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\ntimeout = "2s"\n'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, dns: DNSServer) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("spam") / "data", hostname=AUTHSERV,
                           extra_config=dns_config(dns) + SPAM_CONFIG)
    server.start()
    for user in ("bob@nyu.example", "carol@nyu.example", "dave@nyu.example"):
        server.add_user(user)
    try:
        yield server
    finally:
        server.stop()


def message(sender: str, subject: str, body: str = "Hello Bob.", to: str = "bob@nyu.example",
            extra: str = "") -> bytes:
    return (f"{extra}From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash(subject))}@x>\r\n\r\n{body}\r\n").encode()


def send(srv: ServerProcess, mail_from: str, msg: bytes, source: str = "127.0.0.1",
         helo: str = "client.good.example", to: str = "bob@nyu.example") -> None:
    send_mx(srv, mail_from, [to], msg, source=source, helo=helo)


def fetch(srv: ServerProcess, subject: str, folder: str = "INBOX", user: str = "bob@nyu.example") -> bytes | None:
    return fetch_by_subject(srv, subject, folder, user=user)


def spam_fields(stored: bytes) -> tuple[float, str]:
    """(X-Spam-Score, the unfolded X-Spam-Status) of a stored message; each must appear once."""
    head = re.sub(r"\r\n[ \t]+", " ", stored.split(b"\r\n\r\n", 1)[0].decode())
    scores = [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("x-spam-score:")]
    status = [line.split(":", 1)[1].strip() for line in head.split("\r\n")
              if line.lower().startswith("x-spam-status:")]
    assert len(scores) == 1 and len(status) == 1, head
    return float(scores[0]), status[0]


def names_in(status: str) -> set[str]:
    found = re.search(r"tests=(.*)$", status)
    assert found is not None, status
    return {name.strip() for name in found.group(1).split(",")}


def test_gtube_is_refused_with_550(srv: ServerProcess) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(srv, "alice@good.example", message("alice@good.example", "gtube test", f"Test.\r\n{GTUBE}"))
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.7.1")
    assert fetch(srv, "gtube test") is None and fetch(srv, "gtube test", "Junk") is None


def test_clean_message_gets_headers_and_forged_ones_go(srv: ServerProcess) -> None:
    forged = "X-Spam-Score: -50.0\r\nX-Spam-Status: No, score=-50.0 required=5.0 tests=FORGED\r\n"
    send(srv, "alice@good.example", message("alice@good.example", "clean one", extra=forged))
    stored = fetch(srv, "clean one")
    assert stored is not None
    score, status = spam_fields(stored)
    assert status.startswith(f"No, score={score:.1f} required=5.0")
    assert {"SPF_PASS", "DMARC_PASS"} <= names_in(status) and "FORGED" not in status
    assert not names_in(status) & {"RDNS_NONE", "RDNS_UNCONFIRMED", "HELO_NOT_FQDN"}
    assert score < 0


def test_dnsbl_listed_bare_ip_greeting_goes_to_junk(srv: ServerProcess) -> None:
    send(srv, "x@none.example", message("x@none.example", "from a listed host"), source="127.0.0.4",
         helo="127.0.0.4")
    assert fetch(srv, "from a listed host") is None
    stored = fetch(srv, "from a listed host", "Junk")
    assert stored is not None
    score, status = spam_fields(stored)
    assert status.startswith("Yes, ") and score >= 5.0
    assert {"DNSBL(bl.test.example)", "HELO_BARE_IP", "RDNS_NONE"} <= names_in(status)


def test_dnswl_reverse_dns_and_helo_tests(srv: ServerProcess) -> None:
    send(srv, "x@none.example", message("x@none.example", "allow listed"), source="127.0.0.5")
    stored = fetch(srv, "allow listed")
    assert stored is not None and "DNSWL(wl.test.example)" in names_in(spam_fields(stored)[1])
    send(srv, "x@none.example", message("x@none.example", "ptr liar"), source="127.0.0.3", helo="myhost")
    stored = fetch(srv, "ptr liar")
    assert stored is not None and {"RDNS_UNCONFIRMED", "HELO_NOT_FQDN"} <= names_in(spam_fields(stored)[1])
    send(srv, "x@none.example", message("x@none.example", "claims our name"), helo=AUTHSERV)
    stored = fetch(srv, "claims our name")
    assert stored is not None and "HELO_OURS" in names_in(spam_fields(stored)[1])
    send(srv, "x@none.example", message("x@none.example", "claims our domain"), helo="NYU.example")
    stored = fetch(srv, "claims our domain")
    assert stored is not None and "HELO_OURS" in names_in(spam_fields(stored)[1])


def test_dmarc_failure_adds_to_the_score(srv: ServerProcess) -> None:
    send(srv, "x@strict.example", message("x@strict.example", "dmarc fails"), source="127.0.0.2")
    stored = fetch(srv, "dmarc fails", "Junk")                    # p=quarantine puts it there anyway
    assert stored is not None
    assert {"SPF_FAIL", "DMARC_POLICY_FAIL", "RDNS_NONE"} <= names_in(spam_fields(stored)[1])


SPAM_BANDS = {"BAYES_95", "BAYES_99"}
HAM_BANDS = {"BAYES_00", "BAYES_01", "BAYES_05"}
SPAMMY = ["Cheap pills viagra discount pharmacy offer", "Viagra pills cheap now, pharmacy discount",
          "Discount pharmacy: viagra and cialis pills cheap", "Pharmacy offer cheap viagra pills"]
HAMMY = ["Lunch on Friday at the Crown with the team", "Minutes of the team meeting on Friday",
         "Friday lunch: the team meets at noon", "Team meeting minutes and lunch plans"]


def append(imap: imaplib.IMAP4, folder: str, subject: str, body: str, sender: str = "someone@far.example") -> None:
    imap.append(folder, "", imaplib.Time2Internaldate(time.time()),  # type: ignore[arg-type]
                message(sender, subject, body))


def test_imap_move_into_and_out_of_junk_trains_the_classifier(srv: ServerProcess) -> None:
    imap = imaplib.IMAP4(HOST, srv.port("imap"))
    try:
        imap.login("bob@nyu.example", "s3cret")
        imap.create("Learn")
        for i, text in enumerate(SPAMMY[:3]):
            append(imap, "Learn", f"learn spam {i}", text)
        for i, text in enumerate(HAMMY[:3]):
            append(imap, "Junk", f"learn ham {i}", text)
        imap.select("Learn")
        assert imap.uid("MOVE", "1:*", "Junk")[0] == "OK"        # spam, learnt by MOVE
        imap.select("Junk")
        _, found = imap.uid("SEARCH", "SUBJECT", '"learn ham"')
        assert imap.uid("MOVE", b",".join(found[0].split()).decode(), "INBOX")[0] == "OK"   # ham
    finally:
        imap.logout()
    send(srv, "x@none.example", message("x@none.example", "buy cheap viagra", SPAMMY[3]))
    stored = fetch(srv, "buy cheap viagra")
    assert stored is not None and names_in(spam_fields(stored)[1]) & SPAM_BANDS
    send(srv, "x@none.example", message("x@none.example", "friday plans", HAMMY[3]))
    stored = fetch(srv, "friday plans")
    assert stored is not None and names_in(spam_fields(stored)[1]) & HAM_BANDS


def jmap(srv: ServerProcess, user: str, calls: list[Any]) -> list[Any]:
    auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:s3cret".encode()).decode()}
    base = f"http://127.0.0.1:{srv.port('http')}"
    with urllib.request.urlopen(urllib.request.Request(base + "/jmap/session", headers=auth), timeout=30) as res:
        account = json.loads(res.read())["primaryAccounts"]["urn:ietf:params:jmap:mail"]
    for call in calls:
        call[1]["accountId"] = account
    body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                       "methodCalls": calls}).encode()
    req = urllib.request.Request(base + "/jmap/api", data=body, method="POST",
                                 headers={**auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())["methodResponses"]  # type: ignore[no-any-return]


CASINO = ["Casino jackpot bonus spins tonight", "Jackpot casino: free spins bonus", "Bonus spins, casino jackpot",
          "Free casino jackpot spins bonus"]
BUDGET = ["Quarterly budget review spreadsheet attached", "Budget review: the quarterly spreadsheet",
          "Spreadsheet for the quarterly budget", "Quarterly budget spreadsheet review notes"]


def test_jmap_mailbox_change_trains_the_classifier(srv: ServerProcess) -> None:
    user = "carol@nyu.example"
    imap = imaplib.IMAP4(HOST, srv.port("imap"))
    try:
        imap.login(user, "s3cret")
        for i, text in enumerate(CASINO[:3]):
            append(imap, "INBOX", f"casino {i}", text)
        for i, text in enumerate(BUDGET[:3]):
            append(imap, "Junk", f"budget {i}", text)
    finally:
        imap.logout()
    boxes = jmap(srv, user, [["Mailbox/get", {"ids": None}, "m"]])[0][1]["list"]
    role = {b["role"]: b["id"] for b in boxes if b["role"]}
    found = jmap(srv, user, [["Email/query", {"filter": {"inMailbox": role["inbox"]}}, "a"],
                             ["Email/query", {"filter": {"inMailbox": role["junk"]}}, "b"]])
    update = {i: {"mailboxIds": {role["junk"]: True}} for i in found[0][1]["ids"]}
    update |= {i: {f"mailboxIds/{role['junk']}": None, f"mailboxIds/{role['inbox']}": True}
               for i in found[1][1]["ids"]}
    result = jmap(srv, user, [["Email/set", {"update": update}, "s"]])[0][1]
    assert len(result["updated"]) == 6, result
    send(srv, "x@none.example", message("x@none.example", "jackpot", CASINO[3], to=user), to=user)
    stored = fetch(srv, "jackpot", user=user)
    assert stored is not None and names_in(spam_fields(stored)[1]) & SPAM_BANDS
    send(srv, "x@none.example", message("x@none.example", "budget notes", BUDGET[3], to=user), to=user)
    stored = fetch(srv, "budget notes", user=user)
    assert stored is not None and names_in(spam_fields(stored)[1]) & HAM_BANDS


def test_cli_trains_from_a_folder(srv: ServerProcess) -> None:
    user = "dave@nyu.example"
    imap = imaplib.IMAP4(HOST, srv.port("imap"))
    try:
        imap.login(user, "s3cret")
        imap.create("OldSpam")
        for i in range(3):
            append(imap, "OldSpam", f"old spam {i}", f"Crypto wallet airdrop token claim {i}")
            append(imap, "INBOX", f"old ham {i}", f"Garden allotment tomatoes harvest {i}")
    finally:
        imap.logout()
    out = srv.admin("spam", "train", "--spam", user, "OldSpam").stdout
    assert "learnt 3 message(s)" in out
    assert "learnt 3 message(s)" in srv.admin("spam", "train", "--ham", user, "INBOX").stdout
    assert srv.admin("spam", "train", "--ham", user, "Nowhere", check=False).returncode == 1
    send(srv, "x@none.example", message("x@none.example", "airdrop", "Claim the crypto wallet airdrop token",
                                        to=user), to=user)
    stored = fetch(srv, "airdrop", user=user)
    assert stored is not None and names_in(spam_fields(stored)[1]) & SPAM_BANDS


def test_allow_and_block_lists(srv: ServerProcess) -> None:
    user = "dave@nyu.example"
    srv.admin("spam", "block", user, "blocked.example")
    srv.admin("spam", "allow", user, "friend@good.example")
    assert set(srv.admin("spam", "lists", user).stdout.splitlines()) == {"allow friend@good.example",
                                                                          "block blocked.example"}
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(srv, "x@blocked.example", message("x@blocked.example", "blocked", to=user), to=user)
    assert refused.value.smtp_code == 550
    # From a listed host with a bare-IP greeting (Junk), but SPF passes for the allowed sender
    send(srv, "friend@good.example", message("friend@good.example", "from a friend", to=user),
         source="127.0.0.4", helo="127.0.0.4", to=user)
    stored = fetch(srv, "from a friend", user=user)
    assert stored is not None, fetch(srv, "from a friend", "Junk", user=user)
    assert "USER_ALLOWLIST" in names_in(spam_fields(stored)[1])
    # The same sender forged from an address outside good.example's SPF gains nothing: Junk
    send(srv, "friend@good.example", message("friend@good.example", "forged friend", to=user),
         source="127.0.0.2", helo="127.0.0.2", to=user)
    stored = fetch(srv, "forged friend", "Junk", user=user)
    assert stored is not None
    assert {"SPF_FAIL", "DMARC_NONE_FAIL"} <= names_in(spam_fields(stored)[1])
    assert "USER_ALLOWLIST" not in names_in(spam_fields(stored)[1])


def test_greylisting_defers_then_accepts_a_retry(tmp_path: Path, dns: DNSServer) -> None:
    server = ServerProcess(tmp_path / "data", hostname=AUTHSERV, extra_config=dns_config(dns) + (
        '[spam]\ndnsbl = ["bl.test.example"]\ndnswl = []\ngreylist = true\ngreylist_score = 1.0\n'
        'greylist_delay = "1s"\n'))
    server.start()
    try:
        server.add_user("bob@nyu.example")
        msg = message("x@none.example", "greylisted")
        for _ in range(2):                                       # no PTR, bare IP: over 1.0
            with pytest.raises(smtplib.SMTPDataError) as deferred:
                send(server, "x@none.example", msg, source="127.0.0.2", helo="127.0.0.2")
            assert deferred.value.smtp_code == 451 and deferred.value.smtp_error.startswith(b"4.7.1")
        send(server, "alice@good.example", message("alice@good.example", "clean not greylisted"))
        time.sleep(1.2)
        send(server, "x@none.example", msg, source="127.0.0.2", helo="127.0.0.2")
        assert fetch(server, "greylisted") is not None
        assert fetch(server, "clean not greylisted") is not None
    finally:
        server.stop()


def test_bad_spam_value_stops_start_up(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", extra_config="[spam]\njunk_score = 20.0\n")
    with pytest.raises(RuntimeError) as failed:
        server.start(timeout=20)
    assert "spam.junk_score: must be below spam.reject_score (15)" in str(failed.value)


@pytest.mark.parametrize(("raw", "line"), [
    ({"dnsbl": ["not a zone"]}, "spam.dnsbl: not a DNS zone name"),
    ({"greylist_delay": "soon"}, "spam.greylist_delay: expected a duration"),
    ({"dnswl_points": -1.0}, "spam.dnswl_points: must not be negative"),
    ({"junk_score": "high"}, "spam.junk_score: expected a number"),
])
def test_bad_spam_values_name_their_key(tmp_path: Path, raw: dict[str, object], line: str) -> None:
    from mailhaven.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as failed:
        config_from_dict({"spam": raw}, tmp_path)
    assert line in str(failed.value) and "\n" not in str(failed.value)


def test_submission_drops_results_claiming_our_authserv_id(srv: ServerProcess) -> None:
    """A local user cannot hand a colleague a verdict in our name (the webmail believes it)."""
    forged = ("From: bob@nyu.example\r\nTo: carol@nyu.example\r\nSubject: forged verdict\r\n"
              f"Authentication-Results: {AUTHSERV}; dmarc=pass header.from=bank.example\r\n"
              "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@y.example\r\n\r\nHi.\r\n")
    with smtplib.SMTP(HOST, srv.port("submission"), timeout=30) as s:
        s.login("bob@nyu.example", "s3cret")
        s.sendmail("bob@nyu.example", ["carol@nyu.example"], forged.encode())
    stored = wait_stored(srv, "forged verdict", "carol@nyu.example")
    assert f"Authentication-Results: {AUTHSERV}".encode() not in stored
    assert b"Authentication-Results: other.example; spf=pass" in stored


def wait_stored(srv: ServerProcess, subject: str, user: str) -> bytes:
    for _ in range(50):
        stored = fetch(srv, subject, user=user)
        if stored is not None:
            return stored
        time.sleep(0.1)
    raise AssertionError(f"{subject!r} never arrived")

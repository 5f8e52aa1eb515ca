"""The webmail's Filters page in Chromium (test_webmail_browser.py's browser and session
helpers), against a real ``mailhaven serve`` whose outbound mail for outside.example goes to
a plain SMTP peer on a relay route: a rule made on the page files a message delivered over
SMTP, the out-of-office form (JMAP VacationResponse) makes a reply leave through the queue,
and a broken raw script shows the compiler's line and column beside the editor."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ServerProcess, free_port, wait_for
from smtpsink import SmtpSink
from test_webmail_browser import PASSWORD, Session, _require, base, browser, jmap  # noqa: F401 - fixture
from webmail_helpers import deliver, message

pytestmark = pytest.mark.slow
USER = "alice@example.org"


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink("127.0.0.1", free_port()) as s:
        yield s


@pytest.fixture(scope="module")
def mailserver(tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink) -> Iterator[ServerProcess]:
    _require()
    port = sink.server.server_address[1]
    srv = ServerProcess(tmp_path_factory.mktemp("filters") / "data", extra_config=(
        f'[relay]\ntls = "none"\n[relay.routes]\n"outside.example" = "127.0.0.1:{port}"\n'
        '[queue]\nretry = ["1s"]\npoll = "1s"\n')).start()
    try:
        srv.add_user(USER, PASSWORD)
        yield srv
    finally:
        srv.stop()


def _open_filters(browser: Any, srv: ServerProcess) -> Session:  # noqa: F811
    s = Session(browser, srv, USER)
    s.page.click("#filters-link")
    s.page.wait_for_selector("body[data-ready=true]")
    return s


def _in_folder(srv: ServerProcess, name: str) -> list[str]:
    client = jmap(srv, USER)
    boxes = client.call("Mailbox/get", {"ids": None})["list"]
    box = next((b["id"] for b in boxes if b["name"] == name), None)
    if box is None:
        return []
    ids = client.call("Email/query", {"filter": {"inMailbox": box}})["ids"]
    got = client.call("Email/get", {"ids": ids, "properties": ["subject", "keywords"]})["list"] if ids else []
    return [e["subject"] + (" *" if "$flagged" in e["keywords"] else "") for e in got]


def test_a_rule_made_on_the_page_files_mail_delivered_over_smtp(mailserver: ServerProcess, browser: Any,  # noqa: F811
                                                                  sink: SmtpSink) -> None:
    s = _open_filters(browser, mailserver)
    page = s.page
    page.click("#add-rule")
    row = page.locator("#rules li.rule").last
    row.locator("select[name=field]").select_option("subject")
    row.locator("input[name=contains]").fill("invoice")
    row.locator("select[name=action]").select_option("move")
    row.locator("input[name=target]").fill("Bills")
    page.click("#add-rule")
    row = page.locator("#rules li.rule").last
    row.locator("select[name=field]").select_option("from")
    row.locator("input[name=contains]").fill("shop@outside.example")
    row.locator("select[name=action]").select_option("flag")
    page.click("#add-rule")
    row = page.locator("#rules li.rule").last
    row.locator("select[name=field]").select_option("to")
    row.locator("input[name=contains]").fill("team@")
    row.locator("select[name=action]").select_option("forward")
    row.locator("input[name=target]").fill("bob@outside.example")
    row.locator("input[name=keepCopy]").uncheck()
    page.click("#save-filters")
    page.wait_for_function("() => document.getElementById('filters-status').textContent === 'Saved'")
    deliver(mailserver, USER, message("Your invoice 42", "Pay up.", sender="Shop <shop@outside.example>"))
    wait_for(lambda: _in_folder(mailserver, "Bills") == ["Your invoice 42 *"], what="the message filed in Bills")
    deliver(mailserver, USER, message("For the team", "Hi all.", to="team@example.org"))
    wait_for(lambda: [m for m in sink.messages if m.rcpt_to == ["bob@outside.example"]], what="the forwarded copy")
    inbox = [e["subject"] for e in jmap(mailserver, USER).emails("inbox")]
    assert "For the team" not in inbox, inbox                                 # forwarded without a copy
    page.reload()                                              # the rules read back from the script
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#rules li.rule").count() == 3
    assert page.locator("#rules li.rule input[name=target]").first.input_value() == "Bills"
    assert not page.locator("#rules li.rule input[name=keepCopy]").last.is_checked()
    assert not s.errors, s.errors
    s.close()


def test_out_of_office_form_sends_a_reply(mailserver: ServerProcess, browser: Any, sink: SmtpSink) -> None:  # noqa: F811
    s = _open_filters(browser, mailserver)
    page = s.page
    page.check("#vacation-enabled")
    page.fill("#vacation-subject", "Gone fishing")
    page.fill("#vacation-body", "Back next week.")
    page.click("#save-vacation")
    page.wait_for_function("() => document.getElementById('vacation-status').textContent === 'Saved'")
    got = jmap(mailserver, USER)                              # the same state, seen over JMAP
    body = {"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:vacationresponse"],
            "methodCalls": [["VacationResponse/get", {"accountId": got.account}, "0"]]}
    req = urllib.request.Request(got.session["apiUrl"], data=json.dumps(body).encode(), method="POST",
                                 headers={**got.auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as res:
        vacation = json.loads(res.read())["methodResponses"][0][1]["list"][0]
    assert vacation["isEnabled"] is True and vacation["subject"] == "Gone fishing"
    deliver(mailserver, USER, message("Are you there?", "Ping.", sender="Carol <carol@outside.example>"))
    reply = wait_for(lambda: [m for m in sink.messages if b"Subject: Gone fishing\r\n" in m.data],
                     what="the out-of-office reply")[0]
    assert reply.mail_from == "" and reply.rcpt_to == ["sender@outside.example"]
    assert b"Back next week." in reply.data
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.is_checked("#vacation-enabled") and page.input_value("#vacation-subject") == "Gone fishing"
    assert page.locator("#rules li.rule").count() == 3        # the rules are still there
    assert not s.errors, s.errors
    s.close()


def test_a_broken_script_shows_the_compiler_error_inline(mailserver: ServerProcess, browser: Any) -> None:  # noqa: F811
    s = _open_filters(browser, mailserver)
    page = s.page
    before = mailserver.admin("sieve", "get", USER, "mailhaven").stdout
    page.fill("#raw-script", '# my own\nif header :contains "subject" "x" {\n  fileinto "Elsewhere";\n}\n')
    page.click("#save-filters")
    page.wait_for_selector("#raw-error:not([hidden])")
    assert page.inner_text("#raw-error") == 'Line 3, column 3: fileinto needs require "fileinto"'
    assert page.evaluate("document.getElementById('raw-script').selectionStart") == len(
        '# my own\nif header :contains "subject" "x" {\n  ')
    assert mailserver.admin("sieve", "get", USER, "mailhaven").stdout == before   # nothing written
    page.fill("#raw-script", 'require "fileinto";\nif header :contains "subject" "x" {\n  fileinto "Elsewhere";\n}\n')
    page.click("#save-filters")
    page.wait_for_function("() => document.getElementById('filters-status').textContent === 'Saved'")
    assert page.locator("#raw-error").is_hidden()
    assert 'fileinto "Elsewhere"' in mailserver.admin("sieve", "get", USER, "mailhaven").stdout
    assert not s.errors, s.errors
    s.close()

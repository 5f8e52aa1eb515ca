"""The webmail's JavaScript modules in Chromium, served by the webmail routes alone (an
in-memory session store, no JMAP behind them): the pages load under the strict CSP with no
script error, and the pure helpers (address lists, URL templates, linkified text) behave."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peers import require
from test_webmail_routes import web  # noqa: F401 - the fixture
from webmail_helpers import CHROMIUM, chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require([f"{what} is not installed" for what, there in (
        ("playwright", importlib.util.find_spec("playwright") is not None),
        (CHROMIUM, Path(CHROMIUM).exists())) if not there])
    with chromium() as b:
        yield b


@pytest.fixture
def page(web: tuple[int, Any], browser: Any) -> Iterator[Any]:  # noqa: F811
    port, _ = web
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(f"http://127.0.0.1:{port}/")
    assert pg.url.endswith("/login")
    pg.fill("input[name=username]", "alice@example.org")
    pg.fill("input[name=password]", "right")
    pg.click("button[type=submit]")
    pg.wait_for_url(f"http://127.0.0.1:{port}/")
    try:
        yield pg
    finally:
        ctx.close()


def test_shell_loads_under_csp_and_reports_missing_api(page: Any) -> None:
    # There is no JMAP API behind these routes: the app says so instead of failing silently.
    page.wait_for_selector("#toast.shown.error")
    assert "Cannot reach the server" in page.inner_text("#toast")
    assert page.errors == []
    assert "mh_session" not in page.evaluate("document.cookie")
    assert len(page.evaluate("document.querySelector('meta[name=csrf-token]').content")) > 10


def js(page: Any, module: str, expr: str) -> Any:
    return page.evaluate(f"import('/static/{module}').then(m => {expr})")


def test_parse_address_list(page: Any) -> None:
    cases = {
        "bob@example.org": [{"name": None, "email": "bob@example.org"}],
        "Bob <bob@example.org>, carol@example.org": [
            {"name": "Bob", "email": "bob@example.org"}, {"name": None, "email": "carol@example.org"}],
        '"Doe, Jane" <jane@example.org>,,  x@y.z ': [
            {"name": "Doe, Jane", "email": "jane@example.org"}, {"name": None, "email": "x@y.z"}],
        "not an address": [],
        "": [],
    }
    for text, expected in cases.items():
        assert js(page, "jmap.js", f"m.parseAddressList({json.dumps(text)})") == expected, text


def test_format_and_templates(page: Any) -> None:
    assert js(page, "jmap.js", 'm.formatAddress({name: "Doe, Jane", email: "j@x.org"})') == '"Doe, Jane" <j@x.org>'
    assert js(page, "jmap.js", 'm.formatAddressList([{name: null, email: "a@b.c"}, {name: "B", email: "b@c.d"}])') \
        == "a@b.c, B <b@c.d>"
    assert js(page, "jmap.js", 'm.expandTemplate("/d/{accountId}/{blobId}/{name}?t={type}", '
                               '{accountId: "a1", blobId: "B/1", name: "r&d report.pdf", type: "application/pdf"})') \
        == "/d/a1/B%2F1/r%26d%20report.pdf?t=application%2Fpdf"


def test_a_name_that_looks_like_an_address_is_shown_with_the_address(page: Any) -> None:
    # Issue 14 item 6: "=?utf-8?q?bob=40a=2Eexample_=28?= <alice@a.example>" in the message list.
    assert js(page, "dom.js", 'm.addressName({name: "bob@a.example (", email: "alice@a.example"})') \
        == "bob@a.example ( <alice@a.example>"
    assert js(page, "dom.js", 'm.addressName({name: "Bob", email: "bob@a.example"})') == "Bob"
    assert js(page, "dom.js", 'm.addressName({name: "Bob@A.example", email: "bob@a.example"})') == "Bob@A.example"
    assert js(page, "dom.js", 'm.addressName({name: null, email: "bob@a.example"})') == "bob@a.example"


def test_linkified_text_is_text(page: Any) -> None:
    text = "see https://e.org/x?a=1 <b>not bold</b> javascript:alert(1)"
    html = js(page, "dom.js", "(() => { const d = document.createElement('div'); "
                              f"d.append(m.linkifiedText({json.dumps(text)})); return d.innerHTML; }})()")
    assert html == ('see <a href="https://e.org/x?a=1" target="_blank" rel="noopener noreferrer">https://e.org/x?a=1</a>'
                    " &lt;b&gt;not bold&lt;/b&gt; javascript:alert(1)")


def test_verdict_believes_only_our_authentication_results(page: Any) -> None:
    ours = ("mail.example (Mailhaven); spf=pass smtp.mailfrom=a@good.example;\r\n\tdkim=pass (2048-bit key) "
            "header.d=good.example header.s=sel; dmarc=fail (p=reject) header.from=bank.example")
    parsed = js(page, "verdict.js", f"m.parseAuthResults({json.dumps(ours)}, 'MAIL.example')")
    assert parsed["dmarc"] == [{"result": "fail", "props": {"header.from": "bank.example"}}]
    assert parsed["dkim"][0]["props"] == {"header.d": "good.example", "header.s": "sel"}
    assert js(page, "verdict.js", f"m.parseAuthResults({json.dumps(ours)}, 'other.example')") is None
    # A field some other server (or a sender) wrote above ours is not read as ours.
    banner = js(page, "verdict.js", "(() => { const b = m.verdictBanner({'header:Authentication-Results:asText:all': "
                f"['evil.example; dmarc=pass header.from=bank.example', {json.dumps(ours)}]}}, 'mail.example'); "
                "return b === null ? null : b.textContent; })()")
    assert banner is None
    text = js(page, "verdict.js", "m.verdictBanner({'header:Authentication-Results:asText:all': "
              f"[{json.dumps(ours)}], 'header:X-Spam-Status:asText': 'Yes, score=9.1 required=5.0 tests=X'}}, "
              "'mail.example').textContent")
    assert "failed DMARC" in text and "bank.example" in text and "score 9.1" in text

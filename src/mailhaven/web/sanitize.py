"""Server-side sanitising of message HTML before the webmail shows it.

The output is rebuilt from parse events, never copied: every tag in it is on the
allowlist, every attribute is on the allowlist and re-quoted, every text run is escaped.
So the browser parses the output exactly as we meant it, whatever tricks the input plays
on parsers (mis-nested raw-text elements, broken quotes, comments inside attributes).

Invariants:
- No script, event handler, ``javascript:``/``vbscript:``/``data:text`` URL, form control,
  frame, object, ``<meta>``, ``<link>`` or ``<base>`` survives.
- Remote resources (images, CSS ``url()``) are not fetched unless ``allow_remote`` is set:
  an ``<img>`` keeps its address in ``data-mh-src`` and shows a placeholder instead.
- Links open in a new browsing context without an opener (``target=_blank rel=noopener``).

This is defence in depth: the webmail also shows the result in a sandboxed frame
(no ``allow-scripts``) under ``Content-Security-Policy: default-src 'none'``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser

# Elements kept (attributes filtered). Anything else loses its tag but keeps its text,
# unless it is in _DROP_WITH_CONTENT.
_ALLOWED_TAGS = frozenset("""
a abbr address article aside b bdi bdo big blockquote br caption center cite code col
colgroup dd del details dfn div dl dt em figcaption figure font footer h1 h2 h3 h4 h5 h6
header hr i img ins kbd li main mark nav ol p pre q s samp section small span strike
strong sub summary sup table tbody td tfoot th thead time tr tt u ul var wbr
""".split())
_VOID_TAGS = frozenset({"br", "col", "hr", "img", "wbr"})
# Elements whose content must not be shown either (script bodies, other documents, forms
# controls that could phish for passwords, the document head's metadata).
_DROP_WITH_CONTENT = frozenset("""
script noscript template iframe frame frameset object embed applet svg math title
textarea select option optgroup button datalist noembed noframes xmp plaintext
audio video canvas dialog portal
""".split())
# Void elements dropped outright (they never have content).
_DROP_VOID = frozenset({"meta", "link", "base", "input", "keygen", "param", "source",
                        "track", "area", "basefont", "bgsound", "isindex"})

_GLOBAL_ATTRS = frozenset("""
align bgcolor border cellpadding cellspacing class color colspan dir face height hspace
lang rowspan size style title valign vspace width alt start reversed span nowrap
summary abbr scope headers datetime
""".split())
_TAG_ATTRS: dict[str, frozenset[str]] = {
    "a": frozenset({"href"}),
    "img": frozenset({"src"}),
    "ol": frozenset({"type"}),
    "ul": frozenset({"type"}),
    "li": frozenset({"type", "value"}),
    "table": frozenset({"background"}),
    "td": frozenset({"background"}),
    "th": frozenset({"background"}),
}
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_REMOTE_SCHEMES = frozenset({"http", "https"})
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpe?g|webp|bmp);base64,[a-z0-9+/=\s]*$", re.I)
# A 1x1 transparent GIF shown where a blocked remote image was.
PLACEHOLDER_IMAGE = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f]+")
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)", re.S)
_CSS_COMMENT = re.compile(r"/\*.*?(\*/|$)", re.S)
_CSS_URL = re.compile(r"url\s*\(\s*(['\"]?)(.*?)\1\s*\)", re.I | re.S)
_CSS_URL_START = re.compile(r"url\s*\(", re.I)
_KEPT_URL = re.compile("\x00([0-9]+)\x00")
_CSS_FORBIDDEN = re.compile(
    r"expression\s*\(|javascript\s*:|vbscript\s*:|behavior\s*:|-moz-binding|@import"
    r"|image-set\s*\(|binding\s*:|\beval\s*\(",
    re.I,
)
_CSS_PROPERTY = re.compile(r"^-?[a-z][a-z0-9-]*$", re.I)


@dataclass(frozen=True, kw_only=True)
class SanitizedHTML:
    html: str
    """Safe HTML (a fragment: no html/head/body tags)."""
    remote_images: int
    """How many remote images were replaced by the placeholder (0 when allowed)."""


def url_scheme(url: str) -> str | None:
    """The lower-case scheme of ``url`` as a browser would see it, None when relative.

    Browsers drop ASCII whitespace and control characters inside the scheme
    (``java\\tscript:``), so we do too before looking (WHATWG URL, "scheme state")."""
    compact = _CONTROL.sub("", html.unescape(url))
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):", compact)
    return match.group(1).lower() if match else None


def _css_unescape(text: str) -> str:
    """Resolve CSS escapes so ``e\\78 pression`` is checked as ``expression`` (CSS Syntax 4.3.7)."""

    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            code = int(m.group(1), 16)
            return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
        return m.group(2)

    return _CSS_ESCAPE.sub(repl, text)


def _css_urls_ok(css: str, allow_remote: bool) -> tuple[str, bool]:
    """Rewrite ``url()`` values: data images stay, remote ones only when allowed. A ``url(``
    left without its closing parenthesis is still a URL to a browser (CSS Syntax 4.3.6: at
    the end of input the url token ends there), so any ``url(`` the rewrite did not take is
    blocked too."""
    blocked = False
    kept: list[str] = []
    css = css.replace("\x00", "\ufffd")                 # CSS Syntax 3.3: NUL is U+FFFD anyway

    def repl(m: re.Match[str]) -> str:
        nonlocal blocked
        target = m.group(2).strip()
        if _DATA_IMAGE.match(target):
            kept.append(f'url("{target}")')
        elif allow_remote and url_scheme(target) in _REMOTE_SCHEMES:
            kept.append('url("' + target.replace('"', "%22").replace("\\", "%5C") + '")')
        else:
            blocked = True
            return "none"
        return f"\x00{len(kept) - 1}\x00"

    text = _CSS_URL.sub(repl, css)
    if _CSS_URL_START.search(text):
        blocked = True
        text = _CSS_URL_START.sub("x-blocked(", text)
    return _KEPT_URL.sub(lambda m: kept[int(m.group(1))], text), blocked


def sanitize_css_declarations(style: str, *, allow_remote: bool = False) -> str:
    """A ``style`` attribute: keep declarations that cannot run code or fetch remotely."""
    text = _css_unescape(_CSS_COMMENT.sub("", style))
    kept = []
    for decl in text.split(";"):
        prop, sep, value = decl.partition(":")
        prop = prop.strip()
        if not sep or not _CSS_PROPERTY.match(prop) or _CSS_FORBIDDEN.search(decl):
            continue
        if prop.lower() in ("behavior", "-moz-binding", "binding"):
            continue
        value, odd = _css_urls_ok(value, allow_remote)
        if odd and "x-blocked(" in value:
            continue  # an unterminated or odd url( we cannot judge
        if _CSS_FORBIDDEN.search(value):
            continue
        kept.append(f"{prop.lower()}: {value.strip()}")
    return "; ".join(kept)


def sanitize_stylesheet(css: str, *, allow_remote: bool = False) -> str:
    """A ``<style>`` element's text: neuter anything that runs code, imports or fetches."""
    text = _css_unescape(_CSS_COMMENT.sub("", css))
    text = re.sub(r"@import[^;]*;?", "", text, flags=re.I)
    text, _ = _css_urls_ok(text, allow_remote)
    text = _CSS_FORBIDDEN.sub("x-blocked(", text)
    # The text goes back into a raw-text element: it must not be able to close it.
    return text.replace("<", "\\3c ").replace(">", "\\3e ")


class _Sanitizer(HTMLParser):
    def __init__(self, *, allow_remote: bool, cid_urls: Mapping[str, str]) -> None:
        super().__init__(convert_charrefs=True)
        self.allow_remote = allow_remote
        self.cid_urls = cid_urls
        self.out: list[str] = []
        self.open: list[str] = []
        """Allowed elements we emitted a start tag for and not yet closed."""
        self.skip: list[str] = []
        """Dropped elements whose content we are inside."""
        self.in_style = 0
        self.style_text: list[str] = []
        self.remote_images = 0

    # -- tags -------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, self_closing: bool) -> None:
        if self.skip:
            if tag == self.skip[-1] and not self_closing:
                self.skip.append(tag)
            return
        if tag in _DROP_WITH_CONTENT:
            if not self_closing and tag not in _VOID_TAGS:
                self.skip.append(tag)
            return
        if tag == "style":
            if not self_closing and not self.in_style:
                self.in_style += 1
                self.out.append("<style>")
            return
        if tag == "body":
            tag = "div"  # keep the body's colours: it becomes a wrapper
        if tag not in _ALLOWED_TAGS:
            return
        rendered = self._attributes(tag, attrs)
        if rendered is None:
            return
        self.out.append(f"<{tag}{rendered}>")
        if tag not in _VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag == self.skip[-1]:
                self.skip.pop()
            return
        if tag == "style":
            if self.in_style:
                self.in_style -= 1
                self._close_style()
            return
        if tag == "body":
            tag = "div"
        if tag in _VOID_TAGS or tag not in self.open:
            return
        while self.open:
            top = self.open.pop()
            self.out.append(f"</{top}>")
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.in_style:
            self.style_text.append(data)
            return
        self.out.append(html.escape(data, quote=False))

    # Comments, doctypes, processing instructions and CDATA sections are dropped.
    def handle_comment(self, data: str) -> None:
        return

    def handle_decl(self, decl: str) -> None:
        return

    def handle_pi(self, data: str) -> None:
        return

    def unknown_decl(self, data: str) -> None:
        return

    # -- attributes -------------------------------------------------------------------
    def _attributes(self, tag: str, attrs: list[tuple[str, str | None]]) -> str | None:
        """The filtered attribute string, or None to drop the element entirely."""
        allowed = _TAG_ATTRS.get(tag, frozenset())
        parts: list[str] = []
        seen: set[str] = set()
        for name, value in attrs:
            name = name.lower()
            if name in seen or (name not in _GLOBAL_ATTRS and name not in allowed):
                continue  # on* handlers, srcset, formaction, xmlns... never pass
            seen.add(name)
            value = value or ""
            if name == "style":
                value = sanitize_css_declarations(value, allow_remote=self.allow_remote)
                if not value:
                    continue
            elif name == "href":
                if url_scheme(value) not in _LINK_SCHEMES:
                    continue
            elif name == "background":
                if not (self.allow_remote and url_scheme(value) in _REMOTE_SCHEMES) and not _DATA_IMAGE.match(value):
                    continue
            elif name == "src":
                image = self._image_source(value)
                if image is None:
                    continue
                name, value = image
                if name == "data-mh-src":
                    parts.append(f' src="{PLACEHOLDER_IMAGE}"')
            parts.append(f' {name}="{html.escape(value, quote=True)}"')
        if tag == "a":
            parts.append(' target="_blank" rel="noopener noreferrer"')
        return "".join(parts)

    def _image_source(self, value: str) -> tuple[str, str] | None:
        scheme = url_scheme(value)
        if scheme == "data":
            return ("src", value) if _DATA_IMAGE.match(value) else None
        if scheme == "cid":
            target = self.cid_urls.get(value.strip()[4:].strip("<>"))
            return ("src", target) if target and _DATA_IMAGE.match(target) else None
        if scheme in _REMOTE_SCHEMES:
            if self.allow_remote:
                return "src", value.strip()
            self.remote_images += 1
            return "data-mh-src", value.strip()
        return None

    def result(self) -> str:
        if self.in_style:
            self._close_style()
        while self.open:
            self.out.append(f"</{self.open.pop()}>")
        return "".join(self.out)

    def _close_style(self) -> None:
        css = "".join(self.style_text)
        self.style_text.clear()
        self.out.append(sanitize_stylesheet(css, allow_remote=self.allow_remote) + "</style>")


def sanitize_html(source: str, *, allow_remote: bool = False,
                  cid_urls: Mapping[str, str] | None = None) -> SanitizedHTML:
    """Sanitise one message's HTML.

    ``cid_urls`` maps Content-IDs (without angle brackets) of inline parts to ``data:``
    image URLs, so ``<img src="cid:...">`` shows without any fetch."""
    parser = _Sanitizer(allow_remote=allow_remote, cid_urls=cid_urls or {})
    try:
        parser.feed(source)
        parser.close()
    except Exception:  # noqa: BLE001 - an unparseable document shows as escaped text
        return SanitizedHTML(html="<pre>" + html.escape(source) + "</pre>", remote_images=0)
    return SanitizedHTML(html=parser.result(), remote_images=parser.remote_images)

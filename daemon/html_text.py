"""HTML mail bodies turned into readable plain text with the standard library parser."""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

logger = logging.getLogger(__name__)

# Input beyond this many characters is not converted: no reader needs it and it bounds the work.
MAX_HTML_CHARS = 2_000_000

_SKIP = frozenset({"script", "style", "title", "template", "noscript"})
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl"}
)
_LINE = frozenset(
    {
        "div", "tr", "li", "dt", "dd", "section", "article", "header", "footer", "address",
        "center", "form", "fieldset", "figure", "main", "nav", "aside", "hr", "body", "caption",
    }
)  # fmt: skip
_CELL = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"[ \t\n\r\f]+")
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")
_TRAILING = re.compile(r"(?<![ \t])[ \t]+\n")
_TAG = re.compile(r"<[^<>]*>")
_TAG_OPEN = re.compile(r"""<(/?)([A-Za-z][^\s/<>]*+)(?:[^<>"']++|"[^"<]*+"|'[^'<]*+')*+>""")


class _Extractor(HTMLParser):
    """Collects text, turning block structure into line breaks."""

    def __init__(self) -> None:
        """Start with no text and no pending line breaks."""
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.skip = 0
        self.pre = 0
        self.newlines = 0
        self.at_line_start = True

    def _want(self, count: int) -> None:
        """Ask for at least count line breaks before the next text."""
        if self.pieces:
            self.newlines = max(self.newlines, count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Turn an opening tag into line breaks, a list bullet or a cell gap."""
        if tag in _SKIP:
            self.skip += 1
        elif tag == "body":
            self.skip = 0  # an unclosed <title> or <style> in the head must not hide the body
        elif tag == "br":
            self._emit("\n")
        elif tag in _PARAGRAPH:
            self._want(2)
            if tag == "pre":
                self.pre += 1
        elif tag in _LINE:
            self._want(1)
            if tag == "li":
                self._emit("- ")
        elif tag in _CELL and not (self.at_line_start or self.newlines):
            self._emit(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Treat <br/> and friends as opening tags; a self-closed <script/> hides nothing."""
        if tag not in _SKIP:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        """Close hidden and block elements."""
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "head":
            self.skip = 0
        elif tag in _PARAGRAPH:
            self._want(2)
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag in _LINE:
            self._want(1)

    def handle_data(self, data: str) -> None:
        """Keep visible text, with HTML whitespace collapsed outside <pre>."""
        if self.skip:
            return
        if not self.pre:
            data = _WHITESPACE.sub(" ", data)
            if self.at_line_start or self.newlines:
                data = data.lstrip(" ")
            if not data:
                return
        self._emit(data)

    def _emit(self, text: str) -> None:
        """Append text after any pending line breaks."""
        if self.newlines:
            self.pieces.append("\n" * self.newlines)
            self.newlines = 0
        self.pieces.append(text)
        self.at_line_start = text.endswith("\n")


# The stdlib parser rescans from every '<' it cannot close, which is quadratic on hostile
# input (minutes for 150 KB of "<a "); after this linear pass every '<' opens a short tag.
def _simplify(html: str) -> str:
    """Reduce markup to bare tags: attributes, comments and declarations go, stray '<' escaped."""
    out: list[str] = []
    pos, size = 0, len(html)
    while pos < size:
        start = html.find("<", pos)
        if start < 0:
            out.append(html[pos:])
            break
        out.append(html[pos:start])
        if html.startswith("<!--", start):
            end = html.find("-->", start + 4)
            pos = size if end < 0 else end + 3
        elif html.startswith(("<!", "<?"), start):
            end = html.find(">", start)
            pos = size if end < 0 else end + 1
        elif (tag := _TAG_OPEN.match(html, start)) is not None:
            out.append(f"<{tag.group(1)}{tag.group(2).lower()}>")
            pos = tag.end()
        else:
            out.append("&lt;")
            pos = start + 1
    return "".join(out)


def html_to_text(html: str) -> str:
    """Return the readable text of an HTML document, one paragraph per block, ending in newline."""
    if len(html) > MAX_HTML_CHARS:
        html = html[:MAX_HTML_CHARS]
    extractor = _Extractor()
    try:
        extractor.feed(_simplify(html))
        extractor.close()
        text = "".join(extractor.pieces)
    except Exception:  # the parser has failed on hostile markup before; never let it escape
        logger.warning("HTML parser failed; stripping tags instead", exc_info=True)
        text = _WHITESPACE.sub(" ", _TAG.sub(" ", html))
    text = _TRAILING.sub("\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _BLANK_LINES.sub("\n\n", text).lstrip("\n").rstrip()
    return text + "\n" if text else ""

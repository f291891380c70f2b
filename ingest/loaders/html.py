"""HTML -> one unit per heading section of the main content; scripts, styles and navigation dropped.

Before BeautifulSoup builds its tree (about 1.5 KB of Python objects per element, and a recursive walk below),
libxml2 streams through the page once to count its elements and their nesting (ingest.loaders.limits).
"""

from __future__ import annotations

import re

from ingest.errors import TooComplex
from ingest.loaders.headings import HeadingPath
from ingest.loaders.limits import DEFAULT_MAX_CHARS, MAX_HTML_DEPTH, MAX_HTML_ELEMENTS, TextBudget, too_many
from ingest.loaders.sniff import decode_text
from ingest.units import ParsedDocument, Unit

_DROP = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe", "svg", "template",
         "button", "select", "input"]
_BLOCK = {"p", "li", "pre", "blockquote", "tr", "dt", "dd", "figcaption", "caption", "div", "table", "td", "th"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


def _quiet_bs4() -> None:
    import warnings

    from bs4 import XMLParsedAsHTMLWarning

    warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)


class _ShapeCounter:
    """An lxml parser target that keeps no tree: counts elements and the deepest nesting, and stops the parse
    (by raising) as soon as either is over its limit."""

    def __init__(self) -> None:
        self.elements = 0
        self.depth = 0

    def start(self, tag: str, attrib: object) -> None:
        self.elements += 1
        self.depth += 1
        too_many(self.elements, MAX_HTML_ELEMENTS, "HTML elements", "the page")
        if self.depth > MAX_HTML_DEPTH:
            raise TooComplex(f"the page nests its elements more than {MAX_HTML_DEPTH} levels deep; is it damaged "
                             "or generated?")

    def end(self, tag: str) -> None:
        self.depth -= 1

    def data(self, data: str) -> None:
        pass

    def close(self) -> None:
        pass


def check_html_shape(text: str) -> None:
    """Raise TooComplex for a page with more than MAX_HTML_ELEMENTS elements or deeper than MAX_HTML_DEPTH."""
    from lxml import etree

    parser = etree.HTMLParser(target=_ShapeCounter(), huge_tree=True)
    step = 2**20
    for i in range(0, len(text), step):
        parser.feed(text[i : i + step])
    parser.close()


def load_html(data: bytes, fallback_title: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> ParsedDocument:
    from bs4 import BeautifulSoup, NavigableString, Tag

    _quiet_bs4()
    text = decode_text(data)
    check_html_shape(text)
    budget = TextBudget(max_chars)
    soup = BeautifulSoup(text, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_DROP):
        tag.decompose()
    for tag in soup.select("[role=navigation], [role=banner], [role=contentinfo]"):
        tag.decompose()
    root = soup.find("article") or soup.find("main") or soup.body or soup
    units: list[Unit] = []
    path = HeadingPath()
    lines: list[str] = []
    current: list[str] = []

    def flush_line() -> None:
        line = re.sub(r"\s+", " ", "".join(current)).strip()
        if line:
            lines.append(line)
        current.clear()

    def flush_unit() -> None:
        flush_line()
        body = budget.take("\n".join(lines).strip())
        if body:
            units.append(path.unit(body, title or fallback_title))
        lines.clear()

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child).__name__ in ("Comment", "Doctype", "Declaration", "ProcessingInstruction"):
                    continue
                current.append(str(child))
            elif isinstance(child, Tag):
                name = child.name.lower()
                if name in _HEADINGS:
                    flush_unit()
                    level = int(name[1])
                    heading = child.get_text(" ", strip=True)
                    if heading:
                        path.enter(level, heading)
                        lines.append(heading)
                elif name == "pre":
                    flush_line()
                    lines.append(child.get_text())
                elif name == "br":
                    flush_line()
                elif name in ("td", "th"):
                    current.append(" " + child.get_text(" ", strip=True) + " |")
                else:
                    block = name in _BLOCK
                    if block:
                        flush_line()
                    walk(child)
                    if block:
                        flush_line()

    walk(root)
    flush_unit()
    if not title:
        h1 = soup.find("h1")
        title = h1.get_text(" ", strip=True) if h1 else fallback_title
    return ParsedDocument(title=title or fallback_title, kind="html", units=units, unit_label="sections")

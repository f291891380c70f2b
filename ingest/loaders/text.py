"""Plain text -> one unit (the chunker splits it at paragraphs); any common encoding.

Markdown saved as .txt (a slide deck exported to Markdown, issue 11) is parsed as Markdown, so its sections and
citations follow its headings instead of being one "section" named after the first line."""

from __future__ import annotations

from ingest.loaders.markdown import looks_like_markdown, parse_markdown
from ingest.loaders.sniff import decode_text
from ingest.units import ParsedDocument, Unit


def load_text(data: bytes, fallback_title: str) -> ParsedDocument:
    decoded = decode_text(data)
    if looks_like_markdown(decoded):
        return parse_markdown(decoded, fallback_title)
    text = decoded.replace("\r\n", "\n").replace("\r", "\n").strip()
    first = text.split("\n", 1)[0].strip() if text else ""
    title = first if 0 < len(first) <= 80 else fallback_title
    return ParsedDocument(title=title, kind="text", units=[Unit(text=text, location={"section": title})],
                          unit_label="sections")

"""Plain text -> one unit (the chunker splits it at paragraphs); any common encoding."""

from __future__ import annotations

from ingest.loaders.sniff import decode_text
from ingest.units import ParsedDocument, Unit


def load_text(data: bytes, fallback_title: str) -> ParsedDocument:
    text = decode_text(data).replace("\r\n", "\n").replace("\r", "\n").strip()
    first = text.split("\n", 1)[0].strip() if text else ""
    title = first if 0 < len(first) <= 80 else fallback_title
    return ParsedDocument(title=title, kind="text", units=[Unit(text=text, location={"section": title})],
                          unit_label="sections")

"""The data shapes that flow through ingestion: units (a page, slide or section) and chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Location = dict[str, Any]
"""Where a passage sits in its document: {"page": 3}, {"slide": 7} or {"section": "LSTM > Forget gate"}; a page or
slide whose text was read from its images (ingest.ocr) also says {"ocr": True}."""


def location_label(loc: Location) -> str:
    ocr = " (OCR)" if loc.get("ocr") else ""
    if "slide" in loc:
        return f"slide {loc['slide']}{ocr}"
    if "page" in loc:
        return f"page {loc['page']}{ocr}"
    return f"section: {loc.get('section', '')}"


@dataclass
class Unit:
    """One natural unit of a document: a PDF page, a slide, or a heading section."""

    text: str
    location: Location
    title: str = ""


@dataclass
class ParsedDocument:
    title: str
    kind: str  # pdf | pptx | docx | markdown | html | text
    units: list[Unit]
    unit_label: str = "sections"  # "pages", "slides" or "sections", for reports


@dataclass
class Chunk:
    """A retrievable passage: `text` is shown and cited, `embed_text` carries its context for embedding."""

    text: str
    embed_text: str
    location: Location
    order: int
    title: str = ""

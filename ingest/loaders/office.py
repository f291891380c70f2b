"""PPTX (one unit per slide, with notes) and DOCX (one unit per heading section), after a zip-bomb check."""

from __future__ import annotations

import re
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from ingest.errors import IngestError
from ingest.loaders.sniff import check_zip
from ingest.units import ParsedDocument, Unit

_WS = re.compile(r"[ \t\u00a0\u000b]+")


def _clean(text: str) -> str:
    text = text.replace("\x0b", "\n").replace("\r", "\n")
    return "\n".join(s for s in (_WS.sub(" ", ln).strip() for ln in text.split("\n")) if s)


def _shape_texts(shapes: Any) -> Iterator[str]:
    """Text of every shape in reading order (top to bottom, left to right), descending into groups."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    def key(s: Any) -> tuple[int, int]:
        return (s.top or 0, s.left or 0)

    for shape in sorted(shapes, key=key):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shape_texts(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                cells = [_clean(c.text) for c in row.cells]
                line = " | ".join(c for c in cells if c)
                if line:
                    yield line
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = _clean(shape.text_frame.text)
            if text:
                yield text


def load_pptx(data: bytes, fallback_title: str, *, max_unpacked_bytes: int) -> ParsedDocument:
    check_zip(data, max_unpacked_bytes=max_unpacked_bytes, required="[Content_Types].xml")
    from pptx import Presentation

    try:
        prs = Presentation(BytesIO(data))
    except Exception as exc:  # python-pptx raises many types for broken packages
        raise IngestError(f"the PPTX file cannot be opened ({type(exc).__name__}: {exc})") from exc
    units: list[Unit] = []
    for number, slide in enumerate(prs.slides, start=1):
        title_shape = slide.shapes.title
        title = _clean(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
        body = [t for t in _shape_texts(slide.shapes) if t != title]
        notes = ""
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = _clean(slide.notes_slide.notes_text_frame.text)
        parts = [title.replace("\n", " ")] if title else []
        parts += body
        if notes:
            parts.append(f"Notes: {notes}")
        units.append(Unit(text="\n".join(parts), location={"slide": number}, title=title.replace("\n", " ")))
    title = (prs.core_properties.title or "").strip()
    if not title or title.lower() in {"powerpoint presentation", "presentation"}:
        title = fallback_title
    return ParsedDocument(title=title, kind="pptx", units=units, unit_label="slides")


def load_docx(data: bytes, fallback_title: str, *, max_unpacked_bytes: int) -> ParsedDocument:
    check_zip(data, max_unpacked_bytes=max_unpacked_bytes, required="word/document.xml")
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(BytesIO(data))
    except Exception as exc:
        raise IngestError(f"the DOCX file cannot be opened ({type(exc).__name__}: {exc})") from exc

    units: list[Unit] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    doc_title = (document.core_properties.title or "").strip()

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text:
            section = " > ".join(t for _, t in path) or doc_title or fallback_title
            units.append(Unit(text=text, location={"section": section}, title=path[-1][1] if path else ""))
        lines.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = _clean(block.text)
            style = (block.style.name if block.style is not None else "") or ""
            level = _heading_level(style)
            if level is not None and text:
                flush()
                if level == 0:
                    doc_title = doc_title or text
                    path = []
                    continue
                path = [p for p in path if p[0] < level] + [(level, text)]
                lines.append(text)
            elif text:
                lines.append(text)
        elif isinstance(block, Table):
            for row in block.rows:
                seen: list[str] = []
                for cell in row.cells:
                    c = _clean(cell.text)
                    if c and c not in seen:
                        seen.append(c)
                if seen:
                    lines.append(" | ".join(seen))
    flush()
    return ParsedDocument(title=doc_title or fallback_title, kind="docx", units=units, unit_label="sections")


def _heading_level(style: str) -> int | None:
    s = style.lower()
    if s == "title":
        return 0
    m = re.match(r"heading (\d)", s)
    return int(m.group(1)) if m else None

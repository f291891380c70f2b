"""PPTX (one unit per slide, with notes) and DOCX (one unit per heading section), after a zip-bomb check and a
count of the XML elements of every part (ingest.loaders.limits): the PPTX element bomb of issue 10 (millions of
empty shapes in 54-112 KB, which passes the zip check) took 55 s and 1 GB inside python-pptx."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from ingest.errors import IngestError
from ingest.loaders.headings import HeadingPath
from ingest.loaders.limits import DEFAULT_MAX_CHARS, TextBudget, check_office_elements
from ingest.loaders.sniff import check_zip
from ingest.ocr import MAX_IMAGES_PER_UNIT, OcrReader, merge, needs_ocr
from ingest.units import ParsedDocument, Unit

_WS = re.compile(r"[ \t\u00a0\u000b]+")


def _clean(text: str) -> str:
    text = text.replace("\x0b", "\n").replace("\r", "\n")
    return "\n".join(s for s in (_WS.sub(" ", ln).strip() for ln in text.split("\n")) if s)


_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_T, _BR = f"{_A}t", f"{_A}br"


def _paragraphs(el: Any) -> str:
    lines = []
    for p in el.iter(f"{_A}p"):
        line = "".join("\n" if t.tag == _BR else t.text or "" for t in p.iter(_T, _BR))
        if line.strip():
            lines.append(line)
    return _clean("\n".join(lines))


def _offset(el: Any) -> tuple[int, int]:
    off = el.find(f"./{_P}spPr/{_A}xfrm/{_A}off")
    if off is None:
        off = el.find(f"./{_P}grpSpPr/{_A}xfrm/{_A}off")
    if off is None:
        off = el.find(f"./{_P}xfrm/{_A}off")
    return (int(off.get("y", 0)), int(off.get("x", 0))) if off is not None else (0, 0)


def _shape_texts(tree: Any) -> Iterator[tuple[bool, str]]:
    """(is_title, text) of every shape in reading order (top to bottom, left to right), into groups and tables.

    Reads the slide XML directly: python-pptx's per-attribute lookups took 2 of the 4.4 s of parsing the
    shared corpus; this is the same traversal at a fraction of the cost."""
    for el in sorted((c for c in tree if c.tag in (f"{_P}sp", f"{_P}grpSp", f"{_P}graphicFrame")), key=_offset):
        if el.tag == f"{_P}grpSp":
            yield from _shape_texts(el)
        elif el.tag == f"{_P}graphicFrame":
            for row in el.iter(f"{_A}tr"):
                cells = [_paragraphs(tc).replace("\n", " ") for tc in row.iter(f"{_A}tc")]
                line = " | ".join(c for c in cells if c)
                if line:
                    yield False, line
        else:
            ph = el.find(f"./{_P}nvSpPr/{_P}nvPr/{_P}ph")
            kind = ph.get("type") if ph is not None else None
            if kind in ("sldNum", "dt", "ftr"):
                continue  # slide number, date and footer placeholders are noise on every slide
            is_title = kind in ("title", "ctrTitle")
            body = el.find(f"./{_P}txBody")
            text = _paragraphs(body) if body is not None else ""
            if text:
                yield is_title, text


_R_EMBED = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}embed"


_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"


def _picture_ids(tree: Any) -> list[str]:
    """Relationship ids of the slide's pictures, in reading order, each once: p:pic and shapes filled with a picture,
    into groups and mc:AlternateContent (where PowerPoint keeps a picture of an equation as the fallback of the
    equation object: fastai's RNN deck, slide 17)."""
    ids: list[str] = []
    kinds = (f"{_P}pic", f"{_P}sp", f"{_P}grpSp", f"{_MC}AlternateContent", f"{_MC}Choice", f"{_MC}Fallback")
    for el in sorted((c for c in tree if c.tag in kinds), key=_offset):
        if el.tag not in (f"{_P}pic", f"{_P}sp"):
            ids += [i for i in _picture_ids(el) if i not in ids]
            continue
        blip = el.find(f"./{_P}blipFill/{_A}blip" if el.tag == f"{_P}pic" else f"./{_P}spPr/{_A}blipFill/{_A}blip")
        rid = blip.get(_R_EMBED) if blip is not None else None
        if rid and rid not in ids:
            ids.append(rid)
    return ids


def _read_pictures(slide: Any, ocr: OcrReader) -> str:
    """OCR of the slide's pictures (at most MAX_IMAGES_PER_UNIT; EMF/WMF and broken images read as nothing)."""
    texts = []
    for rid in _picture_ids(slide.shapes._spTree)[:MAX_IMAGES_PER_UNIT]:
        try:
            blob = slide.part.related_part(rid).blob
        except Exception:  # noqa: BLE001 - a dangling or external relationship
            continue
        text = ocr.read(blob)
        if text:
            texts.append(text)
    return "\n".join(texts)


def load_pptx(data: bytes, fallback_title: str, *, max_unpacked_bytes: int,
              max_chars: int = DEFAULT_MAX_CHARS, ocr: OcrReader | None = None) -> ParsedDocument:
    """`ocr`: read the pictures of slides with under ingest.ocr.MIN_TEXT_CHARS characters of text (title, body
    and notes); what was read follows the slide's text, and the location says {"ocr": true}."""
    check_zip(data, max_unpacked_bytes=max_unpacked_bytes, required="[Content_Types].xml")
    with zipfile.ZipFile(BytesIO(data)) as zf:
        check_office_elements(zf, "pptx")
    from pptx import Presentation

    try:
        prs = Presentation(BytesIO(data))
    except Exception as exc:  # python-pptx raises many types for broken packages
        raise IngestError(f"the PPTX file cannot be opened ({type(exc).__name__}: {exc})") from exc
    units: list[Unit] = []
    budget = TextBudget(max_chars)
    for number, slide in enumerate(prs.slides, start=1):
        shapes = list(_shape_texts(slide.shapes._spTree))
        first_title = next((i for i, (is_title, _) in enumerate(shapes) if is_title), None)
        title = shapes[first_title][1] if first_title is not None else ""
        body = [t for i, (_, t) in enumerate(shapes) if i != first_title and t != title]
        notes = ""
        if slide.has_notes_slide:
            notes_frame = slide.notes_slide.notes_text_frame
            notes = _paragraphs(notes_frame._txBody) if notes_frame is not None else ""
        parts = [title.replace("\n", " ")] if title else []
        parts += body
        location: dict[str, object] = {"slide": number}
        if ocr is not None and needs_ocr("\n".join([*parts, notes])) and ocr.available:
            read = merge("\n".join(parts), _read_pictures(slide, ocr))
            if read != "\n".join(parts):
                parts, location = [read], {"slide": number, "ocr": True}
        if notes:
            parts.append(f"Notes: {notes}")
        units.append(Unit(text=budget.take("\n".join(parts)), location=location,
                          title=title.replace("\n", " ")))
    title = (prs.core_properties.title or "").strip()
    if not title or title.lower() in {"powerpoint presentation", "presentation"}:
        title = fallback_title
    return ParsedDocument(title=title, kind="pptx", units=units, unit_label="slides")


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _cell_text(tc: Any, document: Any) -> str:
    from docx.text.paragraph import Paragraph

    return _clean("\n".join(Paragraph(p, document).text for p in tc.iterchildren(f"{_W}p")))


def _table_lines(tbl: Any, document: Any) -> Iterator[str]:
    """One line per row, cells joined with " | "; a vertically merged cell repeats its text on every row it spans.

    Reads the XML: python-docx finds a merged cell's text by walking up the rows one by one, for every row
    (quadratic, and recursive: a long merged column raised RecursionError)."""
    above: dict[int, str] = {}  # grid column -> text of the cell that starts there, for vMerge="continue"
    for tr in tbl.iterchildren(f"{_W}tr"):
        before = tr.find(f"{_W}trPr/{_W}gridBefore")
        col = int(before.get(f"{_W}val", "0")) if before is not None else 0
        seen: list[str] = []
        for tc in tr.iterchildren(f"{_W}tc"):
            span_el = tc.find(f"{_W}tcPr/{_W}gridSpan")
            span = max(int(span_el.get(f"{_W}val", "1")), 1) if span_el is not None else 1
            merge = tc.find(f"{_W}tcPr/{_W}vMerge")
            if merge is not None and merge.get(f"{_W}val", "continue") == "continue":
                text = above.get(col, "")
            else:
                text = _cell_text(tc, document)
                above[col] = text
            if text and text not in seen:
                seen.append(text)
            col += span
        if seen:
            yield " | ".join(seen)


def load_docx(data: bytes, fallback_title: str, *, max_unpacked_bytes: int,
              max_chars: int = DEFAULT_MAX_CHARS) -> ParsedDocument:
    check_zip(data, max_unpacked_bytes=max_unpacked_bytes, required="word/document.xml")
    with zipfile.ZipFile(BytesIO(data)) as zf:
        check_office_elements(zf, "docx")
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(BytesIO(data))
    except Exception as exc:
        raise IngestError(f"the DOCX file cannot be opened ({type(exc).__name__}: {exc})") from exc

    # Style names looked up once: python-docx's Paragraph.style searches the style sheet with XPath for every
    # paragraph, which never finished on 1.65M empty paragraphs; empty paragraphs are now skipped before it.
    styles = {s.style_id: s.name or "" for s in document.styles if s.type == WD_STYLE_TYPE.PARAGRAPH}
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    default_name = (default.name or "") if default is not None else ""
    budget = TextBudget(max_chars)
    units: list[Unit] = []
    path = HeadingPath()
    lines: list[str] = []
    doc_title = (document.core_properties.title or "").strip()

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text:
            units.append(path.unit(text, doc_title or fallback_title))
        lines.clear()

    body = document.element.body
    for block in body.iterchildren(f"{_W}p", f"{_W}tbl"):
        if block.tag == f"{_W}p":
            text = _clean(Paragraph(block, document).text)
            if not text:
                continue
            budget.take(text)
            style_el = block.find(f"{_W}pPr/{_W}pStyle")
            style_id = style_el.get(f"{_W}val") if style_el is not None else None
            level = _heading_level(styles.get(style_id, default_name) if style_id else default_name)
            if level is not None:
                flush()
                if level == 0:
                    doc_title = doc_title or text
                    path.clear()
                    continue
                path.enter(level, text)
            lines.append(text)
        else:
            lines.extend(budget.take(line) for line in _table_lines(block, document))
    flush()
    return ParsedDocument(title=doc_title or fallback_title, kind="docx", units=units, unit_label="sections")


def _heading_level(style: str) -> int | None:
    s = style.lower()
    if s == "title":
        return 0
    m = re.match(r"heading (\d)", s)
    return int(m.group(1)) if m else None

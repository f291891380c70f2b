"""What one document may contain, so that the cost of parsing it is bounded by these numbers, not by the file.

Measured on the shared corpus (52 files: the largest value of each kind) and on the hostile files of issue 10
(tests/hostile.py); every limit is about 20x the largest real value or more, far below what a bomb holds:

| limit | largest in the shared corpus | hostile file |
|---|---|---|
| PDF pages 5,000 | 115 (Harvard lecture 25 PDF) | - |
| slides 2,000 | 86 (Harvard lecture 24 PPTX) | - |
| shapes per slide part 5,000 | 190 | PPTX element bomb: 3,000,002 shapes in 59 KB |
| XML elements per slide part 200,000 | 10,461 | the same bomb with another namespace prefix |
| XML elements per other Office part 2,000,000 | under 10,461 | - |
| DOCX paragraphs 200,000 | 162 | 1,650,002 (mostly empty) paragraphs in 49 KB |
| HTML elements 200,000 | 249 (colah's LSTM post) | - |
| HTML nesting 256 levels | 12 | 100,000 nested divs |
| characters of text 10,000,000 | 51,611 (d2l transformer.md) | 10 MB one-line page, 50 MiB text |

Exceeding a limit skips the file with a TooComplex reason rather than indexing part of it: a half-indexed
document would answer "not in the lectures" with confidence about its missing part, and the reason tells the
user what to do (split the file). The character limit is twice what the pipeline's passage limit
(LECTURE_QA_MAX_PASSAGES, 5,000 by default) can hold at 1,000 characters a passage; the pipeline passes its own.
Element counts are taken from the zipped parts in a stream (bytes.count on 1 MiB blocks) before any Office library
parses them: the DOCX bomb is refused in 0.2 s, the PPTX bomb in 0.8 s, with flat memory.
"""

from __future__ import annotations

import zipfile

from ingest.errors import TooComplex

MAX_PDF_PAGES = 5_000
MAX_SLIDES = 2_000
MAX_SHAPES_PER_SLIDE = 5_000
MAX_XML_ELEMENTS = 2_000_000
MAX_SLIDE_ELEMENTS = 200_000
MAX_DOCX_PARAGRAPHS = 200_000
MAX_HTML_ELEMENTS = 200_000
MAX_HTML_DEPTH = 256
DEFAULT_MAX_CHARS = 10_000_000

_SHAPE_TAGS = tuple(f"<p:{t}{end}".encode() for t in ("sp", "pic", "grpSp", "graphicFrame", "cxnSp")
                    for end in (" ", ">", "/"))
_PARAGRAPH_TAGS = (b"<w:p ", b"<w:p>", b"<w:p/")


def _n(value: int) -> str:
    return f"{value:,}"


class TextBudget:
    """Characters extracted so far; raises TooComplex as soon as the document holds more than `limit`."""

    def __init__(self, limit: int = DEFAULT_MAX_CHARS) -> None:
        self.limit = limit
        self.used = 0

    def take(self, text: str) -> str:
        self.add(len(text))
        return text

    def add(self, chars: int) -> None:
        self.used += chars
        if self.used > self.limit:
            raise TooComplex(f"the document holds more than {_n(self.limit)} characters of text, more than one "
                             "document may index (LECTURE_QA_MAX_PASSAGES); split it into smaller files")


def too_many(count: int, limit: int, what: str, where: str = "the document") -> None:
    if count > limit:
        raise TooComplex(f"{where} has {_n(count)} {what}, over the limit of {_n(limit)}; is it damaged or "
                         "generated? Split it or save it again from its application")


def _count(data: bytes, patterns: tuple[bytes, ...]) -> tuple[int, int]:
    # start tags: every "<" but end tags, comments/doctype/CDATA and processing instructions
    elements = data.count(b"<") - data.count(b"</") - data.count(b"<!") - data.count(b"<?")
    return elements, sum(data.count(p) for p in patterns)


def _count_in_member(zf: zipfile.ZipFile, name: str, patterns: tuple[bytes, ...]) -> tuple[int, int]:
    """(start tags, occurrences of `patterns`) in one archive member, streamed in 1 MiB blocks: memory stays flat.
    Each block is counted with the tail of the one before (minus what the tail alone holds), so a tag cut by a
    block boundary still counts once."""
    keep = max([2, *(len(p) for p in patterns)]) - 1
    elements = matches = 0
    tail = b""
    with zf.open(name) as fh:
        while block := fh.read(2**20):
            e_all, m_all = _count(tail + block, patterns)
            e_tail, m_tail = _count(tail, patterns)
            elements += e_all - e_tail
            matches += m_all - m_tail
            tail = block[-keep:]
    return elements, matches


def check_office_elements(zf: zipfile.ZipFile, kind: str) -> None:
    """Count elements of every XML part before an Office library parses them (python-pptx parses every part
    of the package when it opens it; python-docx the whole body): element bombs are refused in their zipped form.
    """
    names = [i.filename for i in zf.infolist()]
    if kind == "pptx":
        slides = [n for n in names if n.startswith("ppt/slides/slide") and n.endswith(".xml")]
        too_many(len(slides), MAX_SLIDES, "slides")
    for name in names:
        if not name.endswith((".xml", ".rels")):
            continue
        slide = kind == "pptx" and name.startswith(("ppt/slides/", "ppt/slideLayouts/", "ppt/slideMasters/",
                                                    "ppt/notesSlides/"))
        body = kind == "docx" and name == "word/document.xml"
        pats = _SHAPE_TAGS if slide else _PARAGRAPH_TAGS if body else ()
        elements, matches = _count_in_member(zf, name, pats)
        if slide:
            too_many(matches, MAX_SHAPES_PER_SLIDE, "shapes", f"the slide part {name}")
        elif body:
            too_many(matches, MAX_DOCX_PARAGRAPHS, "paragraphs")
        too_many(elements, MAX_SLIDE_ELEMENTS if slide else MAX_XML_ELEMENTS, "XML elements", f"the part {name}")

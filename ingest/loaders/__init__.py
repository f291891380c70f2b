"""One loader per format: bytes in, a ParsedDocument out. `load_document` picks the loader and checks the file."""

from __future__ import annotations

from pathlib import Path

from ingest.errors import IngestError, UnsupportedFileType
from ingest.loaders.limits import DEFAULT_MAX_CHARS, TextBudget
from ingest.loaders.sniff import detect_kind
from ingest.ocr import OcrReader
from ingest.units import ParsedDocument

SUPPORTED_SUFFIXES = {
    ".pdf": "pdf",
    ".pptx": "pptx",
    ".docx": "docx",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".text": "text",
}


def kind_for_name(name: str) -> str:
    kind = SUPPORTED_SUFFIXES.get(Path(name).suffix.lower())
    if kind is None:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnsupportedFileType(f"unsupported file type {Path(name).suffix or '(none)'!r}; supported: {supported}")
    return kind


def load_document(name: str, data: bytes, *, max_unpacked_bytes: int,
                  max_chars: int = DEFAULT_MAX_CHARS, ocr: bool = False, ocr_seconds: float = 30.0) -> ParsedDocument:
    """Parse `data` (the file named `name`) into units, checking that the content matches the name. `ocr`: read
    the images of PDF pages and slides that have (nearly) no text, for up to `ocr_seconds` (ingest.ocr).

    Raises IngestError (TooComplex past a limit of ingest.loaders.limits or more than `max_chars` characters of
    text, NotText for binary named as text) with the reason for the user."""
    kind = kind_for_name(name)
    if not data.strip():
        raise IngestError("the file is empty")
    detect_kind(kind, data)
    stem = Path(name).stem
    if kind == "pdf":
        from ingest.loaders.pdf import load_pdf

        doc = load_pdf(data, stem, max_chars=max_chars, ocr=OcrReader(ocr_seconds) if ocr else None)
    elif kind == "pptx":
        from ingest.loaders.office import load_pptx

        doc = load_pptx(data, stem, max_unpacked_bytes=max_unpacked_bytes, max_chars=max_chars,
                        ocr=OcrReader(ocr_seconds) if ocr else None)
    elif kind == "docx":
        from ingest.loaders.office import load_docx

        doc = load_docx(data, stem, max_unpacked_bytes=max_unpacked_bytes, max_chars=max_chars)
    elif kind == "markdown":
        from ingest.loaders.markdown import load_markdown

        doc = load_markdown(data, stem)
    elif kind == "html":
        from ingest.loaders.html import load_html

        doc = load_html(data, stem, max_chars=max_chars)
    else:
        from ingest.loaders.text import load_text

        doc = load_text(data, stem)
    TextBudget(max_chars).add(sum(len(u.text) for u in doc.units))
    if not any(u.text.strip() for u in doc.units):
        raise IngestError(f"no text could be extracted from this {kind} file (scanned images or an empty document?)")
    return doc

"""PDF pages -> PNG with pypdfium2, under the one PDFium lock of the process (PDFium is not thread-safe; the PDF
loader holds the same lock). Only the rasterising holds it; the PNG encoding (Pillow) runs beside other renders."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.loaders.pdf import _PDFIUM_LOCK as PDFIUM_LOCK

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"


class RenderFailed(Exception):
    """PDFium could not open the file or draw the page."""


def is_png(data: bytes) -> bool:
    """A whole PNG: signature and end chunk (a file cut short by a crash is not one)."""
    return data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END)


def _open(pdf: Path) -> Any:
    """The open document (call under the lock)."""
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(str(pdf))
    except pdfium.PdfiumError as exc:
        raise RenderFailed(f"the PDF cannot be opened ({exc})") from exc


def page_count(pdf: Path) -> int:
    with PDFIUM_LOCK:
        doc = _open(pdf)
        try:
            return len(doc)
        finally:
            doc.close()


def _encode(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def _draw(doc: Any, index: int, long_edge: int) -> Any:
    """Page `index` of an open document as a Pillow image `long_edge` pixels on its long edge (call under the
    lock; the image is a copy, safe to use after it is released)."""
    page = doc[index]
    try:
        width, height = page.get_size()
        scale = long_edge / max(width, height, 1.0)
        bitmap = page.render(scale=scale, rev_byteorder=True, may_draw_forms=True)
        try:
            return bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()
    finally:
        page.close()


def render_page(pdf: Path, index: int, long_edge: int) -> bytes:
    """Page `index` (0-based) of `pdf` as PNG bytes."""
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        doc = _open(pdf)
        try:
            image = _draw(doc, index, long_edge)
        except pdfium.PdfiumError as exc:
            raise RenderFailed(f"page {index + 1} cannot be drawn ({exc})") from exc
        finally:
            doc.close()
    return _encode(image)


def render_pages(pdf: Path, long_edge: int, wanted: list[int]) -> Iterator[tuple[int, bytes | RenderFailed]]:
    """(index, PNG bytes or the failure) for each wanted page, opening the PDF once; the lock is taken per page,
    so a request's render waits for one page of a background run, not for all of them."""
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        doc = _open(pdf)
    try:
        for index in wanted:
            with PDFIUM_LOCK:
                try:
                    image = _draw(doc, index, long_edge)
                except pdfium.PdfiumError as exc:
                    yield index, RenderFailed(f"page {index + 1} cannot be drawn ({exc})")
                    continue
            yield index, _encode(image)
    finally:
        with PDFIUM_LOCK:
            doc.close()

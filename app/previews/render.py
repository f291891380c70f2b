"""PDF pages -> PNG with pypdfium2, in a drawing worker process (ingest.isolation), never in the server process.

Issue 19 measured drawing in the API process: a 39 MB PDF of large images took 21-37 s a page, and 80
concurrent uncached `?size=full` requests pushed /healthz to 12-18 s and search to 16-26 s (one PDFium lock, the
GIL, the server's memory). Now every page is drawn by `draw_page`, called through app.previews.pages' runner: a
worker process with a memory cap and a time limit per page, at most LECTURE_QA_PREVIEW_DRAWS at a time.

Before drawing, the pixels of the page's images are added up (PDFium's image objects, forms included): a page
whose images hold more than `max_pixels` is refused without decoding any of them (a 20,000 x 20,000 scan is 1.6 GB
as RGBA), and the drawn bitmap itself is capped at `long_edge` x `long_edge`.
"""

from __future__ import annotations

import io
from typing import Any

from ingest.errors import IngestError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
PRELOAD = ["app.previews.render", "pypdfium2", "PIL.Image", "PIL.PngImagePlugin"]
"""What a drawing worker imports before it is ready (18 MB resident, against 47 MB with the whole app)."""


class RenderFailed(Exception):
    """PDFium could not open the file or draw the page, or the page is over a limit; the message says which."""


def is_png(data: bytes) -> bool:
    """A whole PNG: signature and end chunk (a file cut short by a crash is not one)."""
    return data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END)


def _encode(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def _image_pixels(page: Any) -> int:
    import pypdfium2.raw as pdfium_c

    total = 0
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=8):
        try:
            width, height = obj.get_px_size()
        except Exception:  # noqa: BLE001 - an image PDFium cannot size is drawn as nothing
            continue
        total += max(int(width), 0) * max(int(height), 0)
    return total


def draw_page(state: object, pdf: str, index: int, long_edge: int, max_pixels: int) -> tuple[int, bytes | None]:
    """In a drawing worker: (the PDF's page count, page `index` (0-based) as PNG bytes `long_edge` pixels on its
    long edge), or (page count, None) when there is no such page. Raises IngestError with the reason (it crosses
    the process boundary as it is)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(pdf)
    except pdfium.PdfiumError as exc:
        raise IngestError(f"the PDF cannot be opened ({exc})") from exc
    try:
        pages = len(doc)
        if index >= pages:
            return pages, None
        page = doc[index]
        try:
            pixels = _image_pixels(page) if max_pixels > 0 else 0
            if pixels > max_pixels > 0:
                raise IngestError(f"its images hold {pixels / 1e6:,.0f} megapixels, over the limit of "
                                  f"{max_pixels / 1e6:,.0f} (LECTURE_QA_PREVIEW_MAX_MEGAPIXELS)")
            width, height = page.get_size()
            scale = long_edge / max(width, height, 1.0)
            bitmap = page.render(scale=scale, rev_byteorder=True, may_draw_forms=True)
            try:
                image = bitmap.to_pil().convert("RGB")
            finally:
                bitmap.close()
        except pdfium.PdfiumError as exc:
            raise IngestError(f"it cannot be drawn ({exc})") from exc
        finally:
            page.close()
        if image.width * image.height > long_edge * long_edge:
            raise IngestError(f"it would be {image.width} x {image.height} pixels")
        return pages, _encode(image)
    finally:
        doc.close()


def page_count(state: object, pdf: str) -> int:
    """In a drawing worker: the PDF's page count (opening a damaged 40 MB PDF may take its time: isolated too)."""
    return draw_page(state, pdf, 2**31, 1, 0)[0]

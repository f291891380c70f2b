"""OCR for pages and slides whose text layer is (nearly) empty but which hold images: Tesseract, through pytesseract.

Tesseract is Debian's `tesseract-ocr` + `tesseract-ocr-eng` (scripts/system-deps.sh installs them); pytesseract runs
the `tesseract` program, one short subprocess per image. OCR is optional at run time: without the program, pages are
indexed with the text they have and `unavailable_reason()` says why once (ingest.parse_job logs it); nothing fails.

When: a unit whose text has fewer than MIN_TEXT_CHARS non-blank characters and which holds an image (a PDF page with
an image object, a slide with a picture shape). 20 characters is shorter than any sentence and longer than a slide
number plus a one-word title ("7 Results"); on the shared corpus it separates the image-only slides (title-less
diagrams, screenshots of equations) from the text slides (bench/ocr.py, docs/ocr.md).

Bounds, on top of the parse worker's time and memory limits (ingest.isolation):
- pixels: an image is downscaled to at most MAX_PIXELS (4 MP, a 16:9 slide at 2,667 x 1,500: text 20 px tall on
  it is still read), and one whose header declares more than MAX_DECODE_PIXELS is not decoded at all;
- time: IMAGE_TIMEOUT_S per image (pytesseract kills the program), and a budget of seconds per document
  (ParseSettings.ocr_seconds, half the parse timeout by default): past it the document's remaining images are not
  read, so a 500-page scan is indexed with what was read rather than skipped by the parse timeout;
- count: at most MAX_IMAGES_PER_UNIT pictures per slide, none under MIN_SIDE pixels (icons, bullets).
Any failure (a corrupt or unsupported image such as EMF, a Tesseract error, a timeout) means no OCR text for that
image; the document is still ingested.

Tesseract runs with one OpenMP thread (OMP_THREAD_LIMIT=1): on the 2-core dev VM, shared with other work, three
images of the fastai attention deck took 11.8-14.6 s with its default threads and 3.7-4.1 s with one (its threads
spin-wait for each other; the parse runs one file at a time anyway). An image met twice in a document (the same
picture on several slides) is read once.

Words Tesseract is less than MIN_CONFIDENCE sure of are dropped, and lines left without a word of two letters:
diagrams and plots otherwise turn into lines of stray symbols ("| — =, ~").
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import re
import shutil
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

MIN_TEXT_CHARS = 20
MAX_PIXELS = 4_000_000
MAX_DECODE_PIXELS = 60_000_000
MIN_SIDE = 32
IMAGE_TIMEOUT_S = 15.0
MAX_IMAGES_PER_UNIT = 8
MIN_CONFIDENCE = 50
LANG = "eng"

_WORD = re.compile(r"[^\W\d_]{2,}")


def visible_chars(text: str) -> int:
    return len("".join(text.split()))


def needs_ocr(text: str) -> bool:
    """True when a unit's text is too short to stand for what the unit shows (under MIN_TEXT_CHARS)."""
    return visible_chars(text) < MIN_TEXT_CHARS


def tesseract_cmd() -> str | None:
    """The tesseract program pytesseract would run, when it is installed (and the binding is). Found without
    importing pytesseract unless something already did (it imports pandas when present: 0.2-0.5 s)."""
    if importlib.util.find_spec("pytesseract") is None:
        return None
    binding = sys.modules.get("pytesseract.pytesseract")
    return shutil.which(str(binding.tesseract_cmd) if binding is not None else "tesseract")


def unavailable_reason() -> str | None:
    """Why OCR cannot run here, or None when it can."""
    if importlib.util.find_spec("pytesseract") is None:
        return "OCR is on but the pytesseract package is not installed; image-only pages are indexed without text"
    if tesseract_cmd() is None:
        return ("OCR is on but the `tesseract` program is not installed (Debian: tesseract-ocr tesseract-ocr-eng, "
                "see scripts/system-deps.sh); pages and slides that hold only images are indexed without their text")
    return None


def _open(image: Any) -> Any:
    """A PIL image, decoded, grey, at most MAX_PIXELS; None for what is too small, too large or unreadable."""
    from PIL import Image

    if image is None:
        return None
    img: Any
    if isinstance(image, bytes | bytearray):
        img = Image.open(io.BytesIO(image))
        w, h = img.size
        if w * h > MAX_DECODE_PIXELS:
            return None
        if img.format == "JPEG":
            img.draft("L", (w, h))  # decode JPEG straight to grey
    else:
        img = image
    w, h = img.size
    if min(w, h) < MIN_SIDE or w * h > MAX_DECODE_PIXELS:
        return None
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # an animated GIF: its first frame
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent = white, not black
        img = Image.alpha_composite(back, rgba)
    img = img.convert("L")
    if w * h > MAX_PIXELS:
        scale = (MAX_PIXELS / (w * h)) ** 0.5
        img = img.resize((max(int(w * scale), 1), max(int(h * scale), 1)), Image.Resampling.LANCZOS)
    return img


def _lines(data: dict[str, list[Any]]) -> str:
    """Tesseract's TSV (image_to_data) -> its confident words, line by line."""
    lines: dict[tuple[int, int, int, int], list[str]] = {}
    for i, word in enumerate(data.get("text", [])):
        word = (word or "").strip()
        try:
            conf = float(data["conf"][i])
        except (KeyError, ValueError, TypeError):
            continue
        if not word or conf < MIN_CONFIDENCE:
            continue
        key = (data["page_num"][i], data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(word)
    out = [" ".join(words) for _, words in sorted(lines.items())]
    return "\n".join(ln for ln in out if _WORD.search(ln))


class OcrReader:
    """Reads images for one document within a budget of seconds; `read` never raises."""

    def __init__(self, budget_s: float = 30.0) -> None:
        self.budget_s = budget_s
        self.spent = 0.0
        self.images = 0
        self.failures: list[str] = []
        self._seen: dict[str, str] = {}
        self.reason = unavailable_reason()

    @property
    def available(self) -> bool:
        return self.reason is None and self.spent < self.budget_s

    def read(self, image: Any) -> str:
        """The text of `image` (a PIL image or encoded bytes: PNG, JPEG, GIF, TIFF, BMP, WebP), "" when there is
        none, it cannot be read, or the budget is spent."""
        if not self.available:
            return ""
        key = hashlib.sha1(image).hexdigest() if isinstance(image, bytes | bytearray) else None
        if key is not None and key in self._seen:
            return self._seen[key]
        start = time.perf_counter()
        try:
            import pytesseract

            img = _open(image)
            if img is None:
                return ""
            timeout = max(min(IMAGE_TIMEOUT_S, self.budget_s - self.spent), 1.0)
            # pytesseract starts tesseract with its module's `environ`: this call's environment, one OpenMP thread
            pytesseract.pytesseract.environ = {**os.environ, "OMP_THREAD_LIMIT": "1"}
            data = pytesseract.image_to_data(img, lang=LANG, timeout=timeout, output_type=pytesseract.Output.DICT)
            self.images += 1
            text = _lines(data)
            if key is not None:
                self._seen[key] = text
            return text
        except Exception as exc:  # noqa: BLE001 - a bad image or a Tesseract failure: no text, not a failed file
            self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
            log.debug("OCR failed: %s", exc)
            return ""
        finally:
            self.spent += time.perf_counter() - start


def merge(text: str, ocr_text: str) -> str:
    """The unit's own text, then the OCR lines it does not already hold (a rendered page shows its text layer too)."""
    have = {ln.strip().lower() for ln in text.split("\n") if ln.strip()}
    extra = [ln for ln in ocr_text.split("\n") if ln.strip() and ln.strip().lower() not in have]
    return "\n".join([p for p in (text, "\n".join(extra)) if p])

"""Page n of a document as a PNG, from its kept original (ingest.originals), cached in the data dir.

Layout: `<data_dir>/previews/<original's file name>/` holds `thumb-0001.png`, `full-0001.png`, ... and, for PPTX
and DOCX, `document.pdf` (LibreOffice's conversion, app.previews.convert) or `failed.txt` (why it failed).
Everything there can be made again from the original, so PNGs are written without fsync (tmp file + rename) and
a cut-short one (no PNG end chunk) is made again when read.

Sizes: `thumb` is 320 px on the long edge (a 16:9 slide is 320x180: its title is readable in a list of
citations) and `full` 1600 px (a slide's small print is readable on a laptop screen). Thumbnails of every page are
made right after ingest, in one background thread per process (PPTX/DOCX: the conversion first), so serving one
is a file read; `full` images are made on first request (one page: tens of milliseconds) and kept.

Not ready: a PPTX/DOCX whose PDF does not exist yet answers NotReady (HTTP 503 with Retry-After) and is queued;
the request never waits for LibreOffice (seconds, up to the conversion timeout). A PDF's page is drawn on the
request when its thumbnail is not there yet. Several server processes share the data dir: a conversion holds
an fcntl lock on the folder's `.lock`, so each file is converted once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.previews.convert import MAX_UNPACKED_BYTES, ConversionCancelled, ConversionFailed, find_soffice, to_pdf
from app.previews.render import RenderFailed, is_png, page_count, render_page, render_pages
from ingest.library import Library
from ingest.originals import Originals

log = logging.getLogger(__name__)

SIZES = {"thumb": 320, "full": 1600}
"""Long edge in pixels of each size."""
PAGED = {"pdf", "pptx", "docx"}
NO_PAGES = {"markdown": "Markdown", "html": "HTML", "text": "Text"}
UNIT = {"pdf": "pages", "pptx": "slides", "docx": "pages"}
RENDER_VERSION = "1"  # in the ETag: bump when the drawing changes
RETRY_AFTER_S = 5  # a 15-slide deck converts in about 4 s


class NoPreview(Exception):
    """There is no image for this request, and retrying will not make one (HTTP 404). `reason` is one of
    unknown_document, no_pages, no_such_page, unavailable."""

    def __init__(self, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.extra = extra


class NotReady(Exception):
    """The image is being prepared (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class PageImage:
    data: bytes
    etag: str
    media_type: str = "image/png"


@dataclass
class PreparedReport:
    """What `prepare` did with one original (bench/previews.py)."""

    pages: int = 0
    rendered: int = 0
    convert_s: float = 0.0
    render_s: float = 0.0
    error: str | None = None
    failed_pages: list[int] = field(default_factory=list)


class Previews:
    def __init__(self, library: Library, originals: Originals, *, enabled: bool = True, soffice: str = "soffice",
                 convert_timeout_s: float = 180.0, convert_memory_mb: int = 3072, background: bool = True,
                 max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> None:
        self.library = library
        self.originals = originals
        self.dir = library.data_dir / "previews"
        self.enabled = enabled
        self.soffice_setting = soffice
        self.convert_timeout_s = convert_timeout_s
        self.convert_memory_mb = convert_memory_mb
        self.background = background
        self.max_unpacked_bytes = max_unpacked_bytes
        self._pages: dict[str, int] = {}  # folder name -> page count
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._cancel = threading.Event()  # set by close(): a running conversion stops
        originals.on_kept(self.schedule)
        originals.on_removed(self.forget)
        self._prune_orphans()

    # -- serving --
    def page_image(self, doc_id: str, n: int, size: str) -> PageImage:
        """Page `n` (1-based) of the document at `size` (thumb|full). Raises NoPreview or NotReady."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}")
        doc = self.library.snapshot().documents.get(doc_id)
        if doc is None:
            raise NoPreview("unknown_document", f"no document with id {doc_id!r}")
        kind = doc.parsed_as or doc.kind
        if kind not in PAGED:
            raise NoPreview("no_pages", f"{NO_PAGES.get(kind, kind)} documents have no pages to preview; "
                            "the passage's text is all there is")
        if not self.enabled:
            raise NoPreview("unavailable", "page previews are turned off on this server (LECTURE_QA_PREVIEWS)")
        original = self.originals.path(doc.content, kind)
        folder = self.dir / original.name
        png = folder / f"{size}-{n:04d}.png"
        etag = f'"{doc.content}-{kind}-{size}-{n}-r{RENDER_VERSION}"'
        data = _read_png(png)
        if data is not None:
            return PageImage(data, etag)
        if not original.is_file():
            raise NoPreview("unavailable", "the original file of this document is not kept (it was ingested "
                            "before previews existed): upload it again to get previews")
        pdf = self._pdf(original, kind, folder)
        pages = self._page_count(folder.name, pdf)
        if n > pages:
            raise NoPreview("no_such_page", f"{doc.name} has {pages} {UNIT[kind]}", pages=pages)
        try:
            data = render_page(pdf, n - 1, SIZES[size])
        except RenderFailed as exc:
            raise NoPreview("unavailable", f"{UNIT[kind][:-1]} {n} of {doc.name} cannot be drawn: {exc}") from exc
        _write(png, data)
        self._drop_if_orphan(original, folder)
        return PageImage(data, etag)

    def _pdf(self, original: Path, kind: str, folder: Path) -> Path:
        """The PDF to draw pages from: the original, or its conversion. Raises NoPreview/NotReady."""
        if kind == "pdf":
            return original
        converted = folder / "document.pdf"
        if converted.is_file():
            return converted
        failed = folder / "failed.txt"
        if failed.is_file():
            raise NoPreview("unavailable", f"no previews for this {kind.upper()}: {_read_text(failed)}")
        if find_soffice(self.soffice_setting) is None:
            raise NoPreview("unavailable", f"previews of {kind.upper()} files need LibreOffice (`soffice`, Debian "
                            "packages libreoffice-impress-nogui and libreoffice-writer-nogui), which this server "
                            f"does not have (LECTURE_QA_SOFFICE={self.soffice_setting})")
        self.schedule(original)
        raise NotReady(f"the preview is being prepared (LibreOffice converts the {kind.upper()} to PDF once); "
                       f"retry in {RETRY_AFTER_S} s")

    def _page_count(self, key: str, pdf: Path) -> int:
        pages = self._pages.get(key)
        if pages is None:
            try:
                pages = self._pages[key] = page_count(pdf)
            except RenderFailed as exc:
                raise NoPreview("unavailable", f"the document cannot be drawn: {exc}") from exc
        return pages

    # -- preparing, off the request path --
    def schedule(self, original: Path) -> None:
        """Queue `original` for conversion (PPTX/DOCX) and thumbnails of all its pages (Originals.on_kept)."""
        kind = _kind_of(original)
        if not self.enabled or kind not in PAGED or (kind != "pdf" and find_soffice(self.soffice_setting) is None):
            return
        with self._lock:
            if self._closed or original.name in self._queued:
                return
            self._queued.add(original.name)
            if self._thread is None and self.background:
                self._thread = threading.Thread(target=self._work, name="lecture-qa-previews", daemon=True)
                self._thread.start()
        self._queue.put(original)
        if not self.background:
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                original = self._queue.get_nowait()
            except queue.Empty:
                return
            if original is not None:
                self._prepare_queued(original)

    def _work(self) -> None:
        while True:
            original = self._queue.get()
            if original is None:
                return
            self._prepare_queued(original)

    def _prepare_queued(self, original: Path) -> None:
        try:
            self.prepare(original)
        except Exception:  # a bug here must not end the thread that serves every later file
            log.exception("previews of %s failed", original.name)
        finally:
            self._drop_if_orphan(original, self.dir / original.name)
            with self._lock:
                self._queued.discard(original.name)

    def prepare(self, original: Path) -> PreparedReport:
        """Convert (PPTX/DOCX, once) and draw every page's thumbnail that is not there yet."""
        report = PreparedReport()
        kind = _kind_of(original)
        folder = self.dir / original.name
        if kind not in PAGED or not original.is_file():
            return report
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another process may be at this file: wait for it
            try:
                pdf = original
                if kind != "pdf":
                    pdf = folder / "document.pdf"
                    if not pdf.is_file() and not (folder / "failed.txt").is_file():
                        t0 = time.perf_counter()
                        soffice = find_soffice(self.soffice_setting)
                        try:
                            if soffice is None:
                                raise ConversionFailed(f"LibreOffice is not installed ({self.soffice_setting})")
                            to_pdf(original, kind, pdf, soffice=soffice, timeout_s=self.convert_timeout_s,
                                   memory_mb=self.convert_memory_mb, cancel=self._cancel,
                                   max_unpacked_bytes=self.max_unpacked_bytes, data_dir=self.library.data_dir)
                        except ConversionCancelled as exc:
                            report.error = str(exc)
                            return report
                        except ConversionFailed as exc:
                            _write(folder / "failed.txt", str(exc).encode())
                            log.warning("no previews for %s: %s", original.name, exc)
                        report.convert_s = time.perf_counter() - t0
                    if not pdf.is_file():
                        report.error = _read_text(folder / "failed.txt")
                        return report
                t0 = time.perf_counter()
                try:
                    report.pages = self._page_count(folder.name, pdf)
                    wanted = [i for i in range(report.pages) if _read_png(folder / f"thumb-{i + 1:04d}.png") is None]
                    for index, result in render_pages(pdf, SIZES["thumb"], wanted):
                        if self._cancel.is_set():
                            break
                        if isinstance(result, RenderFailed):
                            report.failed_pages.append(index + 1)
                        else:
                            _write(folder / f"thumb-{index + 1:04d}.png", result)
                            report.rendered += 1
                except (RenderFailed, NoPreview) as exc:
                    report.error = str(exc)
                report.render_s = time.perf_counter() - t0
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        self._drop_if_orphan(original, folder)
        return report

    # -- removing --
    def forget(self, original: Path) -> None:
        """Delete the previews of an original that was removed (Originals.on_removed)."""
        self._pages.pop(original.name, None)
        shutil.rmtree(self.dir / original.name, ignore_errors=True)

    def _prune_orphans(self) -> None:
        """Previews whose original is gone (a process killed between removing the one and the other)."""
        if self.dir.is_dir():
            for folder in self.dir.iterdir():
                if folder.is_dir() and not (self.originals.dir / folder.name).exists():
                    shutil.rmtree(folder, ignore_errors=True)

    def _drop_if_orphan(self, original: Path, folder: Path) -> None:
        """A document deleted while its pages were drawn: remove what the drawing left behind."""
        if not original.is_file():
            self.forget(original)

    def close(self) -> None:
        """Stop the background thread: a running conversion is killed, queued files are dropped (a request for
        their pages queues them again). `lecture-qa ingest` ends here without waiting for LibreOffice."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._cancel.set()
        if thread is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._queue.put(None)
            thread.join(timeout=5)

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or being prepared (tests, bench)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.05)
        return False


def _kind_of(original: Path) -> str:
    return {".pdf": "pdf", ".pptx": "pptx", ".docx": "docx"}.get(original.suffix, "")


def _read_png(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if is_png(data) else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip() or "the conversion failed"
    except OSError:
        return "the conversion failed"


def _write(path: Path, data: bytes) -> None:
    """tmp file + rename: a reader sees the old file or the whole new one (no fsync: a cache, see above)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)

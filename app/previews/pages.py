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
request when its image is not there yet. Several server processes share the data dir: a conversion holds
an fcntl lock on the folder's `.lock`, so each file is converted once.

Drawing (issue 19): every page is drawn in a worker process (app.previews.render, ingest.isolation) with a memory
cap (LECTURE_QA_PREVIEW_DRAW_MEMORY_MB), a time limit per page (LECTURE_QA_PREVIEW_DRAW_TIMEOUT) and a cap on the
megapixels of a page's images (LECTURE_QA_PREVIEW_MAX_MEGAPIXELS), at most LECTURE_QA_PREVIEW_DRAWS at a time in
this process, the background thumbnails included. A request that finds every slot taken, or its own page being
drawn for another request, gets NotReady at once (503, Retry-After: 2, reason `busy` / `drawing`): no request
thread ever waits for a slot, and one waits for its own drawing only, which the time limit bounds. A page that
cannot be drawn (PDFium's error, the memory or pixel cap) is noted (`failed-<size>-NNNN.txt`) and answers 404 from
then on; one that ran out of time is not noted (on a loaded machine a second try may pass).

Defaults, measured with bench/previews_load.py (docs/previews.md; 2-core VM at load average 20): 2 drawings at
a time (the machine's cores; /healthz stayed under 1 s and search under 1.2 s with 40 requests waiting), 60 s a
page (the bench's 12-megapixel pages took about 4 s each at that load; the issue's heaviest, drawn in-process
beside 79 others, 21-37 s), 1024 MiB a worker (two workers peaked at +189 MB together; a 256 MiB flate stream
does not fit in 64), 250 megapixels of images a page (20 of the bench's 12-megapixel pictures).

Deleting: every drawing and conversion of an original holds a cancel event that `forget` (the original was
removed) sets: the worker drawing its page is killed at once, LibreOffice's process group too, and nothing writes
into the preview folder again (files are written into an existing folder only; a folder is made only while the
original exists, and removed again when the original went meanwhile).
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.previews import render
from app.previews.convert import MAX_UNPACKED_BYTES, ConversionCancelled, ConversionFailed, find_soffice, to_pdf
from app.previews.render import RenderFailed, is_png
from ingest.errors import IngestError, TimeLimitExceeded
from ingest.isolation import CallCancelled, IsolatedRunner, Labels
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
RETRY_BUSY_S = 2  # a slot frees every ~2 s in bench/previews_load.py (40 heavy pages, 2 at a time, 78 s)
DRAW_LABELS = Labels(doing="drawing the page", doer="the drawing worker",
                     timeout_setting="LECTURE_QA_PREVIEW_DRAW_TIMEOUT",
                     memory_setting="LECTURE_QA_PREVIEW_DRAW_MEMORY_MB", crash_outcome="the page has no preview")


class NoPreview(Exception):
    """There is no image for this request, and retrying will not make one (HTTP 404). `reason` is one of
    unknown_document, no_pages, no_such_page, unavailable."""

    def __init__(self, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.extra = extra


class NotReady(Exception):
    """The image is being prepared, or every drawing slot is taken (HTTP 503 with Retry-After). `reason`:
    preparing (LibreOffice), drawing (this page, for another request) or busy (LECTURE_QA_PREVIEW_DRAWS)."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_S, reason: str = "preparing") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason


class _Gone(Exception):
    """The original was removed while its page was drawn (or the server is stopping)."""


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
                 max_unpacked_bytes: int = MAX_UNPACKED_BYTES, draws: int = 2, draw_timeout_s: float = 60.0,
                 draw_memory_mb: int = 1024, max_megapixels: float = 250.0) -> None:
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
        self.draws = max(draws, 1)
        self.max_pixels = int(max_megapixels * 1e6)
        self._slots = threading.BoundedSemaphore(self.draws)
        self._runner = IsolatedRunner(timeout_s=draw_timeout_s, memory_mb=draw_memory_mb, parallel=self.draws,
                                      idle=self.draws, preload=render.PRELOAD, labels=DRAW_LABELS)
        self._watched: dict[str, set[threading.Event]] = {}  # original's name -> cancel events of its work
        self._drawing: set[str] = set()  # images being drawn for a request
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
        failed = folder / f"failed-{size}-{n:04d}.txt"
        if failed.is_file():
            raise NoPreview("unavailable", f"{UNIT[kind][:-1]} {n} of {doc.name} cannot be drawn: "
                            f"{_read_text(failed)}")
        pdf = self._pdf(original, kind, folder)
        pages = self._pages.get(folder.name)
        if pages is not None and n > pages:
            raise NoPreview("no_such_page", f"{doc.name} has {pages} {UNIT[kind]}", pages=pages)
        try:
            data = self._draw_for_request(original, pdf, n, size)
        except _Gone:
            raise NoPreview("unknown_document", f"no document with id {doc_id!r} (it was deleted)") from None
        except RenderFailed as exc:
            raise NoPreview("unavailable", f"{UNIT[kind][:-1]} {n} of {doc.name} cannot be drawn: {exc}") from exc
        if data is None:
            pages = self._pages[folder.name]
            raise NoPreview("no_such_page", f"{doc.name} has {pages} {UNIT[kind]}", pages=pages)
        return PageImage(data, etag)

    def _draw_for_request(self, original: Path, pdf: Path, n: int, size: str) -> bytes | None:
        """Page n drawn in a worker, now, or NotReady at once when every slot is taken; kept in the folder."""
        folder = self.dir / original.name
        key = f"{original.name}/{size}-{n:04d}"
        with self._lock:
            if key in self._drawing:
                raise NotReady(f"this page is being drawn for another request; retry in {RETRY_BUSY_S} s",
                               RETRY_BUSY_S, "drawing")
            if not self._slots.acquire(blocking=False):
                raise NotReady(f"{self.draws} pages are being drawn, the most at once on this server "
                               f"(LECTURE_QA_PREVIEW_DRAWS); retry in {RETRY_BUSY_S} s", RETRY_BUSY_S, "busy")
            self._drawing.add(key)
        cancel = self._watch(original.name)
        try:
            try:
                pages, data = self._draw(pdf, n - 1, SIZES[size], cancel)
            except RenderFailed as exc:
                if _lasting(exc):
                    self._keep(original, folder / f"failed-{size}-{n:04d}.txt", str(exc).encode(), cancel)
                raise
            self._pages[folder.name] = pages
            if data is not None:
                self._keep(original, folder / f"{size}-{n:04d}.png", data, cancel)
            return data
        finally:
            self._unwatch(original.name, cancel)
            with self._lock:
                self._drawing.discard(key)
            self._slots.release()

    def _draw(self, pdf: Path, index: int, long_edge: int, cancel: threading.Event) -> tuple[int, bytes | None]:
        """(page count, PNG or None past the end) from a drawing worker. Raises RenderFailed or _Gone."""
        if cancel.is_set():
            raise _Gone()
        try:
            return self._runner.call(render.draw_page, str(pdf), index, long_edge, self.max_pixels, cancel=cancel)
        except CallCancelled:
            raise _Gone() from None
        except IngestError as exc:
            raise RenderFailed(str(exc)) from exc
        except RuntimeError as exc:  # the worker did not start
            raise RenderFailed(f"no drawing worker could be started ({exc})") from exc

    def _keep(self, original: Path, path: Path, data: bytes, cancel: threading.Event) -> None:
        """Write into the original's folder, made only while the original exists; never after a delete."""
        if cancel.is_set() or not original.is_file():
            raise _Gone()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _write(path, data) or cancel.is_set():
            self._drop_if_orphan(original, path.parent)
            raise _Gone()
        self._drop_if_orphan(original, path.parent)

    def _watch(self, name: str) -> threading.Event:
        """A cancel event for work on the original `name`: set by forget (deleted) and close."""
        event = threading.Event()
        with self._lock:
            if self._closed:
                event.set()
            self._watched.setdefault(name, set()).add(event)
        return event

    def _unwatch(self, name: str, event: threading.Event) -> None:
        with self._lock:
            events = self._watched.get(name)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._watched[name]

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

    def _page_count(self, key: str, pdf: Path, cancel: threading.Event) -> int:
        pages = self._pages.get(key)
        if pages is None:
            with self._slot(cancel):
                try:
                    pages = self._pages[key] = self._runner.call(render.page_count, str(pdf), cancel=cancel)
                except CallCancelled:
                    raise _Gone() from None
                except IngestError as exc:
                    raise NoPreview("unavailable", f"the document cannot be drawn: {exc}") from exc
        return pages

    @contextlib.contextmanager
    def _slot(self, cancel: threading.Event) -> Iterator[None]:
        """A drawing slot for the background thread, which may wait for one (until cancelled)."""
        while not self._slots.acquire(timeout=0.2):
            if cancel.is_set():
                raise _Gone()
        try:
            yield
        finally:
            self._slots.release()

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
        cancel = self._watch(original.name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / ".lock", "a+") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another process may be at this file: wait for it
                try:
                    self._prepare_locked(original, kind, folder, report, cancel)
                except _Gone:
                    report.error = "the document was deleted, or the server is stopping"
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        finally:
            self._unwatch(original.name, cancel)
        self._drop_if_orphan(original, folder)
        return report

    def _prepare_locked(self, original: Path, kind: str, folder: Path, report: PreparedReport,
                        cancel: threading.Event) -> None:
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
                           memory_mb=self.convert_memory_mb, cancel=cancel,
                           max_unpacked_bytes=self.max_unpacked_bytes, data_dir=self.library.data_dir)
                except ConversionCancelled as exc:
                    raise _Gone() from exc
                except ConversionFailed as exc:
                    self._keep(original, folder / "failed.txt", str(exc).encode(), cancel)
                    log.warning("no previews for %s: %s", original.name, exc)
                report.convert_s = time.perf_counter() - t0
            if not pdf.is_file():
                report.error = _read_text(folder / "failed.txt")
                return
        t0 = time.perf_counter()
        try:
            report.pages = self._page_count(folder.name, pdf, cancel)
        except NoPreview as exc:
            report.error = str(exc)
            return
        for index in range(report.pages):
            thumb = folder / f"thumb-{index + 1:04d}.png"
            if _read_png(thumb) is not None or (folder / f"failed-thumb-{index + 1:04d}.txt").is_file():
                continue
            with self._slot(cancel):
                try:
                    _, data = self._draw(pdf, index, SIZES["thumb"], cancel)
                except RenderFailed as exc:
                    report.failed_pages.append(index + 1)
                    if _lasting(exc):
                        self._keep(original, folder / f"failed-thumb-{index + 1:04d}.txt", str(exc).encode(),
                                   cancel)
                    continue
            if data is not None:
                self._keep(original, thumb, data, cancel)
                report.rendered += 1
        report.render_s = time.perf_counter() - t0

    # -- removing --
    def forget(self, original: Path) -> None:
        """Delete the previews of an original that was removed (Originals.on_removed); its drawings and
        conversion stop."""
        with self._lock:
            events = self._watched.pop(original.name, set())
        for event in events:
            event.set()
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
            events = [e for watched in self._watched.values() for e in watched]
        self._cancel.set()
        for event in events:
            event.set()
        if thread is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._queue.put(None)
            thread.join(timeout=5)
        self._runner.close()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or being prepared (tests, bench)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.05)
        return False


def _lasting(exc: RenderFailed) -> bool:
    """A failure the page will meet again (PDFium's error, the memory or pixel cap), worth noting; not a time
    limit (a loaded machine may pass next time) nor a worker that did not start."""
    cause = exc.__cause__
    return isinstance(cause, IngestError) and not isinstance(cause, TimeLimitExceeded)


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


def _write(path: Path, data: bytes) -> bool:
    """tmp file + rename: a reader sees the old file or the whole new one (no fsync: a cache, see above). The
    folder is not made: False when it is gone (the document was deleted)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True

"""h2oGPTe as the document store: documents live in an h2oGPTe collection (`LECTURE_QA_STORE=h2ogpte`).

- ingest: each file is checked with our own loaders first (type, size, corrupt, encrypted, empty: the same
  clear reasons as the local store), then uploaded and ingested in its own job, all files concurrently. The
  client marks a FAILED job "completed", so every job's failed share and errors are checked. A file whose
  SHA-256 (sent as document metadata) is already in the collection is `unchanged`; a new version of a file
  with the same name replaces the old one once the new one is in.
- search: the collection's chunk search. Answers come from h2oGPTe's chat over the collection
  (app.qa.answer.h2ogpte_chat), which falls back to this search when it cannot answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from app.qa.errors import BackendUnavailable
from app.qa.h2ogpte_conn import H2OGPTeConnection
from app.qa.types import DocumentRef, Source
from ingest.errors import IngestError
from ingest.loaders import load_document
from ingest.pipeline import FileResult, Progress, Report, SourceFile, for_each_file, read_source
from ingest.public import DocumentInfo

log = logging.getLogger("lecture_qa")
STATS_SECONDS = 30.0


def location_of(document_name: str, pages: str) -> dict[str, Any]:
    """h2oGPTe reports pages as a string ("3", "[3, 4]"); decks are converted page per slide."""
    numbers = sorted({int(n) for n in re.findall(r"\d+", pages or "")})
    if not numbers:
        return {"section": Path(document_name).stem}
    label = "slide" if document_name.lower().endswith(".pptx") else "page"
    loc: dict[str, Any] = {label: numbers[0]}
    if len(numbers) > 1:
        loc[f"{label}s"] = numbers
    return loc


def source_of(document_id: str, document_name: str, chunk_id: int, text: str, pages: str, score: float) -> Source:
    ref = DocumentRef(document_id, document_name, Path(document_name).stem)
    return Source(f"{document_id}#{chunk_id}", text, float(score), ref, location_of(document_name, pages))


class H2OGPTeStore:
    name = "h2ogpte"

    def __init__(self, conn: H2OGPTeConnection, collection: str, *, max_file_bytes: int = 50 * 2**20,
                 max_unpacked_bytes: int = 500 * 2**20, ingest_timeout: float = 600.0) -> None:
        self.conn = conn
        self.collection = collection
        self.max_file_bytes = max_file_bytes
        self.max_unpacked_bytes = max_unpacked_bytes
        self.ingest_timeout = ingest_timeout
        self._collection_id: str | None = None
        self._stats: tuple[float, int] | None = None

    # -- connection and collection --
    def _call(self, factory: Callable[[], Any], timeout: float | None = None) -> Any:
        try:
            return self.conn.call(factory, timeout)
        except Exception as exc:
            if type(exc).__name__ == "UnauthorizedError":
                raise BackendUnavailable(f"h2oGPTe rejected the API key (H2OGPTE_API_KEY): {exc}") from exc
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(f"h2oGPTe request failed ({type(exc).__name__}: {exc})") from exc

    def collection_id(self) -> str:
        """The collection named H2OGPTE_COLLECTION (or with that id), created when missing."""
        if self._collection_id is None:
            client = self.conn.client
            found = self._call(lambda: client.list_recent_collections_filter(0, 100, name_filter=self.collection))
            match = [c.id for c in found if self.collection in (c.name, c.id)]
            if match:
                self._collection_id = match[0]
            else:
                self._collection_id = self._call(lambda: client.create_collection(
                    name=self.collection, description="Lecture material (created by lecture-qa)"))
                log.info("created h2oGPTe collection %r (%s)", self.collection, self._collection_id)
        return self._collection_id

    @property
    def where(self) -> str:
        return f"h2oGPTe collection: {self.collection}"

    def warm_up(self) -> None:
        """A bad key or an unreachable server is a startup error (shown by /readyz): without the collection
        nothing can be searched."""
        try:
            self.collection_id()
        except BackendUnavailable as exc:
            raise RuntimeError(str(exc)) from exc

    def close(self) -> None:
        self.conn.close()

    # -- documents --
    def _documents(self) -> list[Any]:
        cid = self.collection_id()
        out: list[Any] = []
        while True:
            page = self._call(lambda: self.conn.client.list_documents_in_collection(cid, offset=len(out), limit=200))
            out.extend(page)
            if len(page) < 200:
                return out

    @staticmethod
    def _public(d: Any) -> DocumentInfo:
        return DocumentInfo.of(id=d.id, name=d.name, title=Path(d.name).stem, type=Path(d.name).suffix.lstrip("."),
                               size=d.size, units=d.page_count, chunks=0, ingested_at=d.updated_at.isoformat(),
                               unit_label="slides" if d.name.lower().endswith(".pptx") else "pages", status=d.status)

    def documents(self) -> list[DocumentInfo]:
        return [self._public(d) for d in self._documents()]

    def document(self, doc_id: str) -> DocumentInfo | None:
        return next((self._public(d) for d in self._documents() if d.id == doc_id), None)

    def delete(self, doc_id: str) -> bool:
        if not any(d.id == doc_id for d in self._documents()):
            return False
        cid = self.collection_id()
        job = self._call(lambda: self.conn.client.delete_documents_from_collection(cid, [doc_id]),
                         timeout=self.ingest_timeout)
        if job.failed or job.errors:
            raise BackendUnavailable(f"h2oGPTe could not delete the document: {'; '.join(job.errors) or 'failed'}")
        return True

    def stats(self) -> dict[str, Any]:
        """For /readyz: the collection is known; documents are counted at most every STATS_SECONDS."""
        now = time.monotonic()
        if self._stats is None or now - self._stats[0] > STATS_SECONDS:
            self._stats = (now, len(self._documents()))
        return {"backend": "h2ogpte", "collection": self.collection, "collection_id": self.collection_id(),
                "documents": self._stats[1]}

    # -- ingest --
    def ingest(self, files: list[SourceFile], *, progress: Progress | None = None,
               on_lock_wait: Callable[[], None] | None = None) -> Report:
        start = time.perf_counter()
        report = Report()
        existing = self._documents()
        known = {str((d.metadata_dict or {}).get("sha256")): d.id for d in existing}
        todo: list[tuple[SourceFile, bytes, str, int]] = []

        def check(f: SourceFile) -> None:
            data = read_source(f, self.max_file_bytes)
            digest = hashlib.sha256(data).hexdigest()
            if digest in known or any(digest == t[2] for t in todo):
                report.files.append(FileResult(f.name, "unchanged", known.get(digest)))
                return
            parsed = load_document(f.name, data, max_unpacked_bytes=self.max_unpacked_bytes)
            if not any(u.text.strip() for u in parsed.units):
                raise IngestError("the document has no text to index")
            todo.append((f, data, digest, len(parsed.units)))

        for_each_file(files, report, check, progress)
        if todo:
            cid = self.collection_id()
            try:  # each file's failure is caught per file; this only guards the batch as a whole
                results = self.conn.submit(self._ingest_all(cid, todo), timeout=self.ingest_timeout + 30)
            except Exception as exc:
                raise BackendUnavailable(f"h2oGPTe ingest failed ({type(exc).__name__}: {exc})") from exc
            for (f, _, _, units), outcome in zip(todo, results, strict=True):
                if isinstance(outcome, BaseException):
                    report.files.append(FileResult(f.name, "skipped", reason=self._why(outcome)))
                    continue
                result = FileResult(f.name, "ingested", outcome, units=units)
                old = [d.id for d in existing if d.name == f.name and d.id != outcome]
                if old:
                    try:
                        self._call(partial(self.conn.client.delete_documents_from_collection, cid, old),
                                   timeout=self.ingest_timeout)
                        result.status, result.replaced = "replaced", old
                    except BackendUnavailable as exc:
                        log.warning("the old version of %s was not deleted: %s", f.name, exc)
                report.files.append(result)
        return report.finish(start)

    @staticmethod
    def _why(exc: BaseException) -> str:
        if isinstance(exc, IngestError):
            return str(exc)
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return "h2oGPTe did not finish ingesting the file in time"
        return f"h2oGPTe could not ingest the file ({type(exc).__name__}: {exc})"

    async def _ingest_all(self, cid: str, todo: list[tuple[SourceFile, bytes, str, int]]) -> list[Any]:
        jobs = [asyncio.wait_for(self._ingest_one(cid, f.name, data, digest), self.ingest_timeout)
                for f, data, digest, _ in todo]
        return list(await asyncio.gather(*jobs, return_exceptions=True))

    async def _ingest_one(self, cid: str, name: str, data: bytes, digest: str) -> str:
        import io

        client = self.conn.client
        upload_id = await client.upload(name, io.BytesIO(data))
        job = await client.ingest_uploads(cid, [upload_id], metadata={upload_id: {"sha256": digest}},
                                          timeout=self.ingest_timeout)
        if job.failed or job.errors or job.canceled:
            raise IngestError("h2oGPTe failed to ingest the file: " + ("; ".join(job.errors) or "no reason given"))
        offset = 0
        while True:  # find the new document by the hash sent as its metadata
            docs = await client.list_documents_in_collection(cid, offset=offset, limit=200)
            mine = [d for d in docs if (d.metadata_dict or {}).get("sha256") == digest]
            if mine:
                return str(mine[0].id)
            if len(docs) < 200:
                raise IngestError("h2oGPTe reported the ingest done, but the document is not in the collection")
            offset += len(docs)

    # -- search and ask --
    def unknown_terms(self, text: str) -> list[str]:
        return []

    def rarity(self, text: str) -> dict[str, float]:
        return {}  # h2oGPTe does not expose term statistics: every word weighs the same

    def search(self, query: str, top_k: int, document_ids: Sequence[str] | None = None) -> list[Source]:
        cid = self.collection_id()
        hits = self._call(lambda: self.conn.client.search_chunks(cid, query, topics=list(document_ids or []),
                                                                 offset=0, limit=top_k))
        return [source_of(h.topic, h.name, h.id, h.text, h.pages, h.score) for h in hits]

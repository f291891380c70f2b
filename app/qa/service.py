"""QAService: the one entrance for the HTTP routes and the CLI (search, ask, ingest, documents, delete, models,
stats). It holds a Store and an Answerer (app.qa.ports), assembles every AskResult (sources, timings, history)
and runs the backends' lifecycle. Knows nothing of HTTP or settings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from app.previews import NoPreview, PageImage, Previews
from app.qa.ports import Answerer, Jobs, Store
from app.qa.types import Answer, AskResult, Source
from ingest.pipeline import Progress, Report, SourceFile
from ingest.public import DocumentInfo

MANY_IDS = 8


def could_name_a_document(doc_id: str) -> bool:
    """False for an id no store can hold: one with a NUL (ids are hex digests or UUIDs). The API's schema allows
    any string, and PostgreSQL text cannot even carry a NUL to compare: such an id was a 500 (psycopg DataError)
    on store=postgres; it is an unknown document, 404, like any other."""
    return "\x00" not in doc_id


def retrieval_query(question: str, history: Sequence[str] | None) -> str:
    """Follow-ups ("and what about the GRU?") retrieve with the previous question as context."""
    if not history:
        return question
    return f"{history[-1]} {question}"


class QAService:
    def __init__(self, store: Store, answerer: Answerer, *, default_top_k: int = 5,
                 previews: Previews | None = None, jobs: Jobs | None = None) -> None:
        self.store = store
        self.jobs = jobs  # queued ingestion: uploads become jobs for the workers (None: ingest in the request)
        self.answerer = answerer
        self.default_top_k = default_top_k
        self.previews = previews  # page images; None where the documents are not ours (h2oGPTe)

    # -- lifecycle: the app's lifespan and the CLI's `with` --
    def warm_up(self) -> None:
        self.store.warm_up()
        self.answerer.warm_up()

    def close(self) -> None:
        self.answerer.close()
        self.store.close()
        if self.previews is not None:
            self.previews.close()

    def __enter__(self) -> QAService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- questions --
    def search(self, query: str, top_k: int, document_ids: Sequence[str] | None = None) -> list[Source]:
        return self.store.search(query, top_k, document_ids)

    def ask(self, question: str, top_k: int | None = None, document_ids: Sequence[str] | None = None,
            history: Sequence[str] | None = None) -> AskResult:
        result: AskResult | None = None
        for item in self.ask_stream(question, top_k, document_ids, history):
            if isinstance(item, AskResult):
                result = item
        assert result is not None
        return result

    def ask_stream(self, question: str, top_k: int | None = None, document_ids: Sequence[str] | None = None,
                   history: Sequence[str] | None = None) -> Iterator[str | AskResult]:
        """Answer text deltas as they are produced, then the complete AskResult. An answerer that retrieves for
        itself gets no sources (unless a document filter asks for ours) and returns the ones it used."""
        k = top_k or self.default_top_k
        t0 = time.perf_counter()
        own = self.answerer.retrieves and not document_ids
        sources = None if own else self.store.search(retrieval_query(question, history), k, document_ids)
        t1 = time.perf_counter()
        unknown = self.store.unknown_terms(question)
        answer: Answer | None = None
        for item in self.answerer.stream(question, sources, unknown_terms=unknown, history=history or (), top_k=k):
            if isinstance(item, Answer):
                answer = item
            else:
                yield item
        assert answer is not None
        t2 = time.perf_counter()
        timings = {"retrieve": round((t1 - t0) * 1000, 1), "answer": round((t2 - t1) * 1000, 1),
                   "total": round((t2 - t0) * 1000, 1)}
        yield AskResult(answer, answer.sources if answer.sources is not None else sources or [], timings)

    def models(self) -> list[str]:
        return self.answerer.models()

    @property
    def backend(self) -> str:
        """The answer backend's name (extractive, openai, h2ogpte)."""
        return self.answerer.name

    # -- documents --
    def ingest(self, files: list[SourceFile], *, progress: Progress | None = None,
               on_lock_wait: Callable[[], None] | None = None) -> Report:
        return self.store.ingest(files, progress=progress, on_lock_wait=on_lock_wait)

    @property
    def queued(self) -> bool:
        """Uploads are queued for workers instead of ingested in the request."""
        return self.jobs is not None

    def enqueue(self, files: list[SourceFile], owner: str | None = None) -> dict[str, Any]:
        if self.jobs is None:
            raise RuntimeError("this store ingests in the request: it has no job queue")
        return self.jobs.enqueue(files, owner)

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id) if self.jobs is not None else None

    def documents(self) -> list[DocumentInfo]:
        return self.store.documents()

    def document(self, doc_id: str) -> DocumentInfo | None:
        return self.store.document(doc_id) if could_name_a_document(doc_id) else None

    def delete(self, doc_id: str) -> bool:
        return self.store.delete(doc_id) if could_name_a_document(doc_id) else False

    def unknown_documents(self, ids: Sequence[str]) -> list[str]:
        """The ids that name no document, in request order. A few ids are looked up one by one; more in one
        listing (with h2oGPTe every lookup lists the collection)."""
        wanted = list(dict.fromkeys(ids))
        if len(wanted) > MANY_IDS:
            known = {d.id for d in self.store.documents()}
            return [i for i in wanted if i not in known]
        return [i for i in wanted if not could_name_a_document(i) or self.store.document(i) is None]

    def page_image(self, doc_id: str, page: int, size: str) -> PageImage:
        """Page or slide `page` (1-based) of a document as a PNG (size thumb|full). Raises NoPreview (none can be
        had) or NotReady (being prepared; retry)."""
        if self.previews is None:
            raise NoPreview("unavailable", "page previews need the local library (LECTURE_QA_STORE=local): the "
                            "documents of this server are not kept here")
        return self.previews.page_image(doc_id, page, size)

    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    @property
    def where(self) -> str:
        """Where the documents live, for reports ("data dir: ./data", "h2oGPTe collection: lectures")."""
        return self.store.where

"""search and ask: retrieval plus answering, with timings. Knows nothing of HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from app.previews import NoPreview, PageImage, Previews
from app.qa.answer import Answerer
from app.qa.store import Store
from app.qa.types import Answer, AskResult, Source


def retrieval_query(question: str, history: Sequence[str] | None) -> str:
    """Follow-ups ("and what about the GRU?") retrieve with the previous question as context."""
    if not history:
        return question
    return f"{history[-1]} {question}"


class AskEngine(Protocol):
    """A backend that retrieves and answers in one step (h2oGPTe's chat over its collection)."""

    def ask_stream(self, question: str, top_k: int, document_ids: Sequence[str] | None = None,
                   history: Sequence[str] | None = None) -> Iterator[str | AskResult]: ...


class QAService:
    def __init__(self, store: Store, answerer: Answerer, *, default_top_k: int = 5,
                 engine: AskEngine | None = None, previews: Previews | None = None) -> None:
        self.store = store
        self.answerer = answerer
        self.default_top_k = default_top_k
        self.engine = engine
        self.previews = previews  # page images; None where the documents are not ours (h2oGPTe)

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
        """Answer text deltas as they are produced, then the complete AskResult."""
        if self.engine is not None:
            yield from self.engine.ask_stream(question, top_k or self.default_top_k, document_ids, history)
            return
        t0 = time.perf_counter()
        sources = self.store.search(retrieval_query(question, history), top_k or self.default_top_k, document_ids)
        t1 = time.perf_counter()
        unknown = self.store.unknown_terms(question)
        answer: Answer | None = None
        stream = getattr(self.answerer, "stream", None)
        if stream is None:
            answer = self.answerer.answer(question, sources, unknown_terms=unknown)
            yield answer.text
        else:
            for item in stream(question, sources, unknown_terms=unknown):
                if isinstance(item, Answer):
                    answer = item
                else:
                    yield item
        assert answer is not None
        t2 = time.perf_counter()
        timings = {"retrieve": round((t1 - t0) * 1000, 1), "answer": round((t2 - t1) * 1000, 1),
                   "total": round((t2 - t0) * 1000, 1)}
        yield AskResult(answer, sources, timings)

    def page_image(self, doc_id: str, page: int, size: str) -> PageImage:
        """Page or slide `page` (1-based) of a document as a PNG (size thumb|full). Raises NoPreview (none can be
        had) or NotReady (being prepared; retry)."""
        if self.previews is None:
            raise NoPreview("unavailable", "page previews need the local library (LECTURE_QA_STORE=local): the "
                            "documents of this server are not kept here")
        return self.previews.page_image(doc_id, page, size)

    def models(self) -> list[str]:
        list_models = getattr(self.answerer, "models", None)
        return list_models() if list_models is not None else [self.answerer.name]

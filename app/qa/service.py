"""search and ask: retrieval plus answering, with timings. Knows nothing of HTTP."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.qa.answer import Answerer
from app.qa.store import Store
from app.qa.types import Answer, Source


@dataclass
class AskResult:
    answer: Answer
    sources: list[Source]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "answer": self.answer.text,
            "grounded": self.answer.grounded,
            "citations": [c.public() for c in self.answer.citations],
            "sources": [s.public() for s in self.sources],
            "answered_by": self.answer.answered_by,
            "timings_ms": self.timings_ms,
        }
        return out


def retrieval_query(question: str, history: Sequence[str] | None) -> str:
    """Follow-ups ("and what about the GRU?") retrieve with the previous question as context."""
    if not history:
        return question
    return f"{history[-1]} {question}"


class QAService:
    def __init__(self, store: Store, answerer: Answerer, *, default_top_k: int = 5) -> None:
        self.store = store
        self.answerer = answerer
        self.default_top_k = default_top_k

    def search(self, query: str, top_k: int, document_ids: Sequence[str] | None = None) -> list[Source]:
        return self.store.search(query, top_k, document_ids)

    def ask(self, question: str, top_k: int | None = None, document_ids: Sequence[str] | None = None,
            history: Sequence[str] | None = None) -> AskResult:
        t0 = time.perf_counter()
        sources = self.store.search(retrieval_query(question, history), top_k or self.default_top_k, document_ids)
        t1 = time.perf_counter()
        answer = self.answerer.answer(question, sources, unknown_terms=self.store.unknown_terms(question))
        t2 = time.perf_counter()
        timings = {"retrieve": round((t1 - t0) * 1000, 1), "answer": round((t2 - t1) * 1000, 1),
                   "total": round((t2 - t0) * 1000, 1)}
        return AskResult(answer, sources, timings)

"""Plain result shapes shared by stores, answerers and the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DocumentRef:
    id: str
    name: str
    title: str

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "title": self.title}


@dataclass
class Source:
    """One retrieved passage with where it (and its collapsed duplicates) appears."""

    chunk_id: str
    text: str
    score: float
    document: DocumentRef
    location: dict[str, Any]
    also_at: list[dict[str, Any]] = field(default_factory=list)
    dense: float = 0.0  # cosine of query and passage (evidence strength)
    reader: float | None = None  # the cross-encoder's logit for (question, passage with its neighbour)
    context: str | None = None  # the next passage of the same document, when the passage comes with it

    def public(self) -> dict[str, Any]:
        out = {"chunk_id": self.chunk_id, "text": self.text, "score": round(self.score, 6),
               "document": self.document.public(), "location": self.location, "also_at": self.also_at}
        if self.context:
            out["context"] = self.context
        return out


@dataclass
class Citation:
    n: int  # 1-based index into the answer's sources
    source: Source
    quote: str

    def public(self) -> dict[str, Any]:
        return {"n": self.n, "chunk_id": self.source.chunk_id, "document": self.source.document.public(),
                "location": self.source.location, "quote": self.quote}


@dataclass
class Answer:
    text: str
    grounded: bool
    citations: list[Citation]
    answered_by: str = "extractive"
    llm_error: str | None = None  # set when an LLM backend failed and the extractive answer stands in
    why: str | None = None  # how the answer-or-refuse decision was reached (shown by `lecture-qa eval --explain`)
    sources: list[Source] | None = None  # set by an answerer that retrieved for itself (h2oGPTe's chat)


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
        if self.answer.llm_error:
            out["llm_error"] = self.answer.llm_error
        return out

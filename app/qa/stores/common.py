"""What the stores that run our own pipeline share (local, postgres): the documents half of the Store port over
a library and a Pipeline, and how a ranked passage becomes a cited Source."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from app.qa.types import DocumentRef, Source
from ingest.library import DocumentRecord
from ingest.pipeline import Pipeline, Progress, Report, SourceFile
from ingest.public import DocumentInfo


class _Documents(Protocol):
    def documents(self) -> list[DocumentRecord]: ...

    def document(self, doc_id: str) -> DocumentRecord | None: ...


class PipelineDocuments:
    """ingest, documents, document and delete through `self.pipeline` and `self.library`."""

    library: _Documents
    pipeline: Pipeline

    def ingest(self, files: list[SourceFile], *, progress: Progress | None = None,
               on_lock_wait: Callable[[], None] | None = None) -> Report:
        return self.pipeline.ingest(files, progress=progress, on_lock_wait=on_lock_wait)

    def documents(self) -> list[DocumentInfo]:
        return [d.info() for d in self.library.documents()]

    def document(self, doc_id: str) -> DocumentInfo | None:
        d = self.library.document(doc_id)
        return d.info() if d else None

    def delete(self, doc_id: str) -> bool:
        return self.pipeline.delete(doc_id)


def context_of(text: str, following: str | None) -> str | None:
    """The next passage's text, given with a passage as its context when it may hold the evidence."""
    return following or None


def cited(chunk_id: str, text: str, score: float, dense: float, places: Sequence[Mapping[str, Any]],
          names: Callable[[str], tuple[str, str]], wanted: set[str], *, reader: float | None = None,
          following: str | None = None) -> Source:
    """A passage found at `places` ([{"document_id", "location"}], its own place first, then those of the chunks
    collapsed into it) as a Source; with a document filter (`wanted`) the place in a wanted document is cited.
    `names(document_id)` -> (name, title)."""
    order = list(places)
    if wanted and order[0]["document_id"] not in wanted:
        first = next((i for i, a in enumerate(order) if a["document_id"] in wanted), 0)
        order.insert(0, order.pop(first))
    refs = [DocumentRef(a["document_id"], *names(a["document_id"])) for a in order]
    also = [{"document": r.public(), "location": a["location"]} for r, a in zip(refs[1:], order[1:], strict=True)]
    return Source(chunk_id, text, score, refs[0], order[0]["location"], also, dense=dense, reader=reader,
                  context=context_of(text, following))

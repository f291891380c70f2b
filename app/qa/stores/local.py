"""The embedded default store: the on-disk library (SQLite + FAISS + BM25 in the data dir) with hybrid retrieval."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.qa.grounding import Vocabulary
from app.qa.retrieve import Reader, Retriever
from app.qa.stores.common import PipelineDocuments, cited
from app.qa.types import Source
from ingest.embedding import Embedder
from ingest.library import Library
from ingest.pipeline import Pipeline


class LocalStore(PipelineDocuments):
    """SQLite + FAISS + BM25 in a data directory, shared safely by several worker processes."""

    name = "local"
    library: Library

    def __init__(self, library: Library, embedder: Embedder, pipeline: Pipeline, retriever: Retriever) -> None:
        self.library = library
        self.embedder = embedder
        self.pipeline = pipeline
        self.retriever = retriever
        self._vocab: tuple[int, Vocabulary] | None = None

    @property
    def reader(self) -> Reader | None:
        return self.retriever.reader

    def unknown_terms(self, text: str) -> list[str]:
        snap = self.library.snapshot()
        cached = self._vocab
        if cached is None or cached[0] != snap.generation:
            terms = snap.bm25.vocab_dict.keys() if snap.bm25 is not None else ()
            cached = self._vocab = (snap.generation, Vocabulary(terms, self.embedder.known_words()))
        named = self.retriever.mention(snap, text)  # "the TJU slides": a source's name, not an unknown term
        return [t for t in cached[1].unknown_terms(text) if named is None or t not in named.words]

    def rarity(self, text: str) -> dict[str, float]:
        return self.retriever.rarity(self.library.snapshot(), text)

    def search(self, query: str, top_k: int, document_ids: Sequence[str] | None = None) -> list[Source]:
        snap = self.library.snapshot()
        hits = self.retriever.search(snap, query, top_k, document_ids)
        wanted = set(document_ids or ())

        def names(doc_id: str) -> tuple[str, str]:
            doc = snap.documents.get(doc_id)
            return (doc.name, doc.title) if doc else ("", "")

        out: list[Source] = []
        for h in hits:
            p = snap.passages[h.row]
            places = [{"document_id": p.doc_id, "location": p.location}, *p.also_at]
            following = snap.passages[h.context].text if h.context >= 0 else None
            out.append(cited(p.chunk_id, p.text, h.score, h.dense, places, names, wanted, reader=h.reader,
                             following=following))
        return out

    @property
    def where(self) -> str:
        return f"data dir: {self.library.data_dir}"

    def warm_up(self) -> None:
        """Opens the index and loads the models (an embedder makes its runtime on first use; the cross-encoder):
        ready means searchable without a slow first question."""
        snap = self.library.snapshot()
        load = getattr(self.embedder, "load", None)
        if load is not None:
            load()
        if self.retriever.reader is not None:
            self.retriever.reader.load()
            self.retriever.layout(snap)

    def close(self) -> None:
        """Nothing to release: SQLite connections are per thread, the parse worker is shared by the process."""

    def stats(self) -> dict[str, Any]:
        snap = self.library.snapshot()
        return {"generation": snap.generation, "documents": len(snap.documents), "passages": len(snap.passages),
                "chunks": snap.raw_chunks, "duplicates_collapsed": snap.collapsed}

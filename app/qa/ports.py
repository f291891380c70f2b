"""The ports: what QAService needs from a backend, one small Protocol each. `app.backends.build_service` picks
the backends from settings; QAService calls `warm_up()` on all of them before the first request and `close()`
on shutdown (the app's lifespan, the CLI's `with`), so nothing here is reached with `getattr`.

- DocumentStore: where lecture files go and come back from (ingest, list, delete).
- Retrieval: ranked passages for a query, and what the library knows of a question's words.
- Store: both, as every backend that holds documents is (`stores/local.py`, `stores/h2ogpte.py`).
- Answerer: an answer from passages, streamed (`answer/extractive.py`, `openai_compat.py`, `h2ogpte_llm.py`,
  `h2ogpte_chat.py`); one that `retrieves` is given no passages and returns the sources it used itself.
- Embedder (ingest.embedding): vectors and word-piece vectors for ingest and queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from app.qa.types import Answer, Source
from ingest.embedding import Embedder
from ingest.pipeline import Progress, Report, SourceFile
from ingest.public import DocumentInfo

__all__ = ["Answerer", "DocumentStore", "Embedder", "Lifecycle", "Retrieval", "Store"]


class Lifecycle(Protocol):
    def warm_up(self) -> None:
        """Load what the first request would otherwise wait for; raise when the backend cannot serve."""
        ...

    def close(self) -> None:
        """Release connections and threads; safe to call twice."""
        ...


class DocumentStore(Lifecycle, Protocol):
    name: str

    @property
    def where(self) -> str:
        """Where the documents live, for reports: "data dir: ./data", "h2oGPTe collection: lectures"."""
        ...

    def ingest(self, files: list[SourceFile], *, progress: Progress | None = None,
               on_lock_wait: Callable[[], None] | None = None) -> Report: ...

    def documents(self) -> list[DocumentInfo]: ...

    def document(self, doc_id: str) -> DocumentInfo | None: ...

    def delete(self, doc_id: str) -> bool: ...

    def stats(self) -> dict[str, Any]: ...


class Retrieval(Protocol):
    def search(self, query: str, top_k: int, document_ids: Sequence[str] | None = None) -> list[Source]: ...

    def rarity(self, text: str) -> dict[str, float]:
        """Each keyword of `text` -> how rare it is in the library (idf); empty when the store cannot tell."""
        ...

    def unknown_terms(self, text: str) -> list[str]:
        """Words of `text` the library has never seen (a question about something else)."""
        ...


class Store(DocumentStore, Retrieval, Protocol):
    pass


class Jobs(Protocol):
    """Queued ingestion (store=postgres: ingest.pg_jobs): files wait for a `lecture-qa worker`."""

    def enqueue(self, files: list[SourceFile], owner: str | None = None) -> dict[str, Any]:
        """One job for these files, readable through the API by `owner` (a key fingerprint) and admins; the job
        as `get` shows it."""
        ...

    def get(self, job_id: str) -> dict[str, Any] | None:
        """id (random, not guessable), state (queued | running | done | failed), attempts, progress, report,
        error, owner; None if unknown."""
        ...


class Answerer(Lifecycle, Protocol):
    name: str
    retrieves: bool
    """True: answers from its own retrieval when `sources` is None (h2oGPTe's chat over its collection)."""

    def stream(self, question: str, sources: list[Source] | None, *, unknown_terms: Sequence[str] = (),
               history: Sequence[str] = (), top_k: int = 5) -> Iterator[str | Answer]:
        """Text deltas, then the final Answer, which cites `sources` by 1-based position (or its own
        `Answer.sources`)."""
        ...

    def models(self) -> list[str]:
        """The models this backend can answer with (just its own name when it has no choice)."""
        ...

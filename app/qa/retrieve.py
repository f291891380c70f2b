"""Hybrid retrieval over one library snapshot: dense (FAISS) + keyword (BM25), fused by a weighted sum.

Fusion measured on ../shared/eval/dev.jsonl over the shared corpus (see docs/retrieval.md): each score list is
scaled to [0, 1] between its median and its maximum, then `(1 - w) * dense + w * keyword` with w = 0.3. That
beat reciprocal rank fusion (k = 10..60, keyword weights 0.5..2) on recall@5 and MRR@10, because RRF throws away
how far ahead the best dense match is.

Then the top RERANK_CANDIDATES are reranked with late interaction: `(1 - a) * fused + a * maxsim`, maxsim being
the MaxSim of the query's and the passage's word-piece vectors (ingest.token_vectors), median-max scaled over
the candidates, a = LATE_WEIGHT. Measured: recall@5 0.78 -> 0.84, MRR@10 0.62 -> 0.64; under 1 ms a query.

Dense models (`LECTURE_QA_DENSE_MODEL`, docs/retrieval.md): the dense part is MiniLM's cosine, bge-small's, or
the mean of both after each is median-max scaled; `dense_scores` gives each model's scores over the snapshot (the
lists a first stage fuses). The snapshot's recorded choice decides which lists exist; `Hit.dense` stays MiniLM's
cosine (the answerer's signals were fitted on it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from app.qa.mentions import Mention, SourceNames
from ingest.embedding import MINILM_KEY, Embedder, PassageEncoder, dense_lists
from ingest.library import Library, Snapshot
from ingest.textnorm import keyword_tokens

RERANK_CANDIDATES = 12
LATE_WEIGHT = 0.5
log = logging.getLogger(__name__)
NAMED_BOOST = 0.6  # added to the fused and the final score of a named document's passages (0.6: best MRR of 0-1.0)


@dataclass
class Hit:
    row: int  # index into snapshot.passages
    score: float
    dense: float  # cosine of query and passage


def _rows_with(snap: Snapshot) -> Callable[[str], Sequence[int]]:
    """keyword -> the rows of the passages that hold it: a column of BM25's sparse term-by-passage matrix."""
    if snap.bm25 is None:
        return lambda term: ()
    vocab, indptr, indices = snap.bm25.vocab_dict, snap.bm25.scores["indptr"], snap.bm25.scores["indices"]

    def rows(term: str) -> Sequence[int]:
        i = vocab.get(term)
        return indices[indptr[i]:indptr[i + 1]] if i is not None and i + 1 < len(indptr) else ()

    return rows


def _scale(scores: np.ndarray) -> np.ndarray:
    return scale_between(scores, float(np.median(scores)), float(scores.max()))


def scale_between(scores: np.ndarray, mid: float, top: float) -> np.ndarray:
    """Median-max scaling with the median and maximum given (a store that scores candidates only knows them
    from elsewhere: app.qa.stores.postgres)."""
    if top - mid <= 1e-9:
        return np.zeros_like(scores)
    return (scores - mid) / (top - mid)


class Retriever:
    def __init__(self, library: Library, embedder: Embedder, *, keyword_weight: float = 0.3,
                 max_exhaustive: int = 50_000, candidates: int = 1000,
                 dense_encoders: Mapping[str, PassageEncoder] | None = None) -> None:
        self.library = library
        self.embedder = embedder
        self.dense_encoders = dict(dense_encoders or {})  # query encoders of the models besides MiniLM
        self._warned: set[str] = set()  # library choices this process cannot fully search, logged once each
        self.keyword_weight = keyword_weight
        self.max_exhaustive = max_exhaustive
        self.candidates = candidates
        self.named_boost = NAMED_BOOST
        self._names: tuple[int, SourceNames] | None = None

    def source_names(self, snap: Snapshot) -> SourceNames:
        """Document names and titles of this generation, and which passages hold a keyword (from BM25)."""
        cached = self._names
        if cached is None or cached[0] != snap.generation:
            rows_with = _rows_with(snap)
            docs = [(d.id, d.name, d.title) for d in snap.documents.values()]
            names = SourceNames(docs, rows_with, [p.doc_id for p in snap.passages], self.embedder.known_words())
            cached = self._names = (snap.generation, names)
        return cached[1]

    def rarity(self, snap: Snapshot, text: str) -> dict[str, float]:
        """Each keyword of `text` that the library holds -> its inverse document frequency (BM25's idf);
        a keyword no passage holds is left out."""
        names, n = self.source_names(snap), len(snap.passages)
        dfs = {t: len(names.rows_with(t)) for t in keyword_tokens(text)}
        return {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in dfs.items() if df}

    def mention(self, snap: Snapshot, query: str) -> Mention | None:
        return self.source_names(snap).find(query)

    def embed_query(self, query: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The query vector and, when the embedder gives them, its word-piece vectors (one forward pass)."""
        vecs, tokens = self.embedder.encode_with_tokens([query], batch_size=1)
        return vecs[0], tokens[0] if tokens is not None else None

    def search(self, snap: Snapshot, query: str, top_k: int, document_ids: Sequence[str] | None = None,
               query_vec: np.ndarray | None = None) -> list[Hit]:
        n = len(snap.passages)
        if n == 0:
            return []
        allowed: np.ndarray | None = None
        if document_ids:
            wanted = set(document_ids)
            allowed = np.fromiter((p.doc_id in wanted or any(a["document_id"] in wanted for a in p.also_at)
                                   for p in snap.passages), dtype=bool, count=n)  # every place a passage is
            if not allowed.any():
                return []
        qv, q_tokens = self.embed_query(query) if query_vec is None else (query_vec, None)
        lists = self.dense_scores(snap, query, qv, exhaustive=n <= self.max_exhaustive or allowed is not None)
        dense = lists.get(MINILM_KEY)
        fused = (1 - self.keyword_weight) * np.mean([_scale(s) for s in lists.values()], axis=0)
        keyword = self._keyword(snap, query)
        if keyword is not None:
            fused += self.keyword_weight * keyword
        named = self.mention(snap, query) if self.named_boost else None
        boost = np.zeros(n, dtype=np.float32)
        if named is not None:  # prefer the documents the question names, without excluding the rest
            boost[np.fromiter((p.doc_id in named.doc_ids or any(a["document_id"] in named.doc_ids
                                                                 for a in p.also_at) for p in snap.passages),
                              dtype=bool, count=n)] = self.named_boost
            fused += boost
        if allowed is not None:
            fused[~allowed] = -np.inf
        top = min(max(top_k, RERANK_CANDIDATES), int(np.isfinite(fused).sum()))
        best = np.argpartition(-fused, top - 1)[:top] if top < n else np.arange(n)
        best = best[np.argsort(-fused[best], kind="stable")][:top]
        scores = fused[best]
        late = snap.tokens.maxsim(q_tokens, best) if snap.tokens is not None and q_tokens is not None else None
        if late is not None:
            scores = (1 - LATE_WEIGHT) * scores + LATE_WEIGHT * _scale(late) + LATE_WEIGHT * boost[best]
            order = np.argsort(-scores, kind="stable")
            best, scores = best[order], scores[order]
        cosine = (dense[best[:top_k]] if dense is not None
                  else snap.matrix()[best[:top_k]] @ qv.astype(np.float32))  # MiniLM's, for the answerer
        return [Hit(int(r), float(s), float(c))
                for r, s, c in zip(best[:top_k], scores[:top_k], cosine, strict=True)]

    def dense_scores(self, snap: Snapshot, query: str, minilm_vec: np.ndarray, *,
                     exhaustive: bool = True) -> dict[str, np.ndarray]:
        """Each dense model's cosine to every passage (rows in snapshot order), for the models of the snapshot's
        recorded choice: the ranked lists a first stage fuses. A model whose query encoder this process lacks
        (the library was re-embedded for another choice after it started) is left out; MiniLM stands in when
        none is left. Each list holds one model's vectors of every passage: never a mix."""
        out: dict[str, np.ndarray] = {}
        for model in dense_lists(snap.dense_model):
            if model == MINILM_KEY:
                out[model] = self._dense(snap, minilm_vec.astype(np.float32), exhaustive=exhaustive)
            elif model in self.dense_encoders and model in snap.extra:
                qv = self.dense_encoders[model].encode_queries([query])[0]
                out[model] = self._dense(snap, qv, exhaustive=exhaustive, model=model)
            elif snap.dense_model not in self._warned:
                self._warned.add(snap.dense_model)
                log.warning("the library is embedded for %s; this process has no %s query encoder: restart it with "
                            "LECTURE_QA_DENSE_MODEL=%s", snap.dense_model, model, snap.dense_model)
        if not out:
            out[MINILM_KEY] = self._dense(snap, minilm_vec.astype(np.float32), exhaustive=exhaustive)
        return out

    def _dense(self, snap: Snapshot, qv: np.ndarray, *, exhaustive: bool, model: str = MINILM_KEY) -> np.ndarray:
        """Cosine to every passage: a plain matrix product while the library is small, FAISS top-k beyond."""
        n = len(snap.passages)
        if exhaustive:
            return snap.matrix_of(model) @ qv
        scores, idx = snap.index(model).search(qv.reshape(1, -1), self.candidates)
        valid = idx[0] >= 0
        dense = np.full(n, float(scores[0][valid].min()) if valid.any() else 0.0, dtype=np.float32)
        dense[idx[0][valid]] = scores[0][valid]  # unseen rows get the floor of what was seen
        return dense

    def _keyword(self, snap: Snapshot, query: str) -> np.ndarray | None:
        if snap.bm25 is None:
            return None
        vocab = snap.bm25.vocab_dict
        tokens = [t for t in keyword_tokens(query) if t in vocab]
        if not tokens:
            return None
        out = np.asarray(snap.bm25.get_scores(tokens), dtype=np.float32)
        top = float(out.max())
        return out / top if top > 0 else None

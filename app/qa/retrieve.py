"""Hybrid retrieval over one library snapshot, and the ranking both stores share (`first_stage`, `read`).

First stage: weighted reciprocal-rank fusion (`rrf`) of any number of ranked lists over the passages a store
pooled: the dense top FIRST_DEPTH, the BM25 top FIRST_DEPTH (KEYWORD_WEIGHT), each extra `Voice` (another dense
model), the word-piece MaxSim (ingest.token_vectors) of the union of those lists (LATE_WEIGHT), and the passages of
a document the question names, by dense score (NAMED_WEIGHT). A passage ranked 1-10 by BM25 can no longer sink
to rank 10-45 behind a poor dense score, as it did under the old median-max score fusion (0.7 dense + 0.3 BM25).

Then the cross-encoder (`Reader`) reads the top READER_DEPTH, each as "title, passage, next passage of the
document", and its rank is fused with the first stage's (`read`: RRF, READER_K, READER_WEIGHT). A read passage
whose next passage is itself in the first stage's top CONTEXT_DEPTH carries it as context.

Every constant was chosen by cross-validation over ../shared/eval dev + dev2 together (5 folds, stratified by
set; docs/retrieval.md, fifth round). Measured there, recall@5 / MRR@10: old score fusion + MaxSim rerank dev
0.855 / 0.616, dev2 0.747 / 0.612; this, cross-validated: dev 0.851 / 0.657, dev2 0.789 / 0.623 (context
counted; on the passage text alone, all data: dev 0.800 / 0.634, dev2 0.787 / 0.604).

Dense models (`LECTURE_QA_DENSE_MODEL`, docs/retrieval.md): MiniLM's cosine is the dense list; with `both`,
bge-small's cosine is one more `Voice` (weight 1); with `bge-small` alone it is the dense list. `dense_scores`
gives each model's scores over the snapshot. The snapshot's recorded choice decides which lists exist; `Hit.dense`
stays MiniLM's cosine (the answerer's signals were fitted on it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.qa.mentions import Mention, SourceNames
from ingest.embedding import MINILM_KEY, Embedder, PassageEncoder, dense_lists
from ingest.library import Library, Snapshot
from ingest.textnorm import keyword_tokens

FIRST_DEPTH = 50  # each first-stage list is read this deep (dense top N, BM25 top N, ...)
RRF_K = 60
KEYWORD_WEIGHT = 0.5  # BM25's list in the reciprocal-rank fusion, the dense list weighing 1
LATE_WEIGHT = 1.0  # the word-piece MaxSim list over the pooled candidates
NAMED_WEIGHT = 1.0  # the list of a named document's passages (by dense score)
READER_DEPTH = 12  # the first stage's top M that the cross-encoder reads
READER_K = 5
READER_WEIGHT = 1.5  # the cross-encoder's rank beside the first stage's, fused by RRF over the top M
CONTEXT_DEPTH = 20
"""A read passage carries its next passage as `context` when that passage is itself in the first stage's top
CONTEXT_DEPTH (the question's words or meaning are there, not only in the passage)."""
log = logging.getLogger(__name__)


@dataclass
class Hit:
    row: int  # index into snapshot.passages
    score: float
    dense: float  # cosine of query and passage
    reader: float | None = None  # the cross-encoder's logit, when it read the passage
    context: int = -1  # the row of the next passage of its document that the reader read with it


@dataclass
class Voice:
    """One more ranked list for the first stage (another dense model): a score per pooled passage, higher first."""

    scores: np.ndarray
    weight: float = 1.0


@dataclass
class Pool:
    """What a store scored for one question, one entry per passage it considers (the local store: all of them)."""

    dense: np.ndarray  # cosine with the query
    keyword: np.ndarray  # BM25 (0: no query term)
    named: np.ndarray  # bool: a passage of a document the question names
    allowed: np.ndarray | None  # bool: inside the document filter (None: no filter)
    tie: np.ndarray | None = None  # equal scores are ordered by this (lower first); else by position
    voices: Sequence[Voice] = ()


def _top(scores: np.ndarray, idx: np.ndarray, tie: np.ndarray, depth: int, positive: bool = False) -> np.ndarray:
    """The `depth` best of `idx` by score (ties by `tie`), as positions in the pool."""
    if positive:
        idx = idx[scores[idx] > 0]
    if len(idx) > depth:  # every entry scoring at least the depth-th best, so a tie is cut by `tie` alone
        kth = np.partition(scores[idx], len(idx) - depth)[len(idx) - depth]
        idx = idx[scores[idx] >= kth]
    return idx[np.lexsort((tie[idx], -scores[idx]))][:depth]


def rrf(rankings: Sequence[tuple[np.ndarray, float]], k: float, tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted reciprocal-rank fusion of any number of ranked lists (positions into one pool): sum over the
    lists of weight / (k + rank). Returns the positions, best first, and their fused scores."""
    total: dict[int, float] = {}
    for ranked, weight in rankings:
        if not weight:
            continue
        for rank, pos in enumerate(ranked.tolist()):
            total[pos] = total.get(pos, 0.0) + weight / (k + rank + 1)
    if not total:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    keys = np.fromiter(total, dtype=np.int64, count=len(total))
    vals = np.fromiter(total.values(), dtype=np.float64, count=len(total))
    order = np.lexsort((tie[keys], -vals))
    return keys[order], vals[order]


def first_stage(pool: Pool, late: Callable[[np.ndarray], np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """The candidate ranking both stores share: dense top FIRST_DEPTH, BM25 top FIRST_DEPTH, each extra voice's
    top FIRST_DEPTH and a named document's passages, fused by reciprocal rank (optionally with the word-piece
    MaxSim of their union, `late(positions)`). Positions into the pool, best first, and their fused scores."""
    n = len(pool.dense)
    tie = pool.tie if pool.tie is not None else np.arange(n)
    idx = np.arange(n) if pool.allowed is None else np.flatnonzero(pool.allowed)
    if not len(idx):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    lists = [(_top(pool.dense, idx, tie, FIRST_DEPTH), 1.0),
             (_top(pool.keyword, idx, tie, FIRST_DEPTH, positive=True), KEYWORD_WEIGHT)]
    lists += [(_top(v.scores, idx, tie, FIRST_DEPTH), v.weight) for v in pool.voices]
    if LATE_WEIGHT:  # over the pool of the lists above
        union = np.unique(np.concatenate([r for r, _ in lists]))
        scores = late(union)
        if scores is not None:
            lists.append((union[np.lexsort((tie[union], -scores))], LATE_WEIGHT))
    named = idx[pool.named[idx]]
    if len(named) and NAMED_WEIGHT:
        lists.append((_top(pool.dense, named, tie, FIRST_DEPTH), NAMED_WEIGHT))
    return rrf(lists, RRF_K, tie)


class Reader(Protocol):
    """ingest.cross_encoder.CrossEncoder: a logit per (question, text)."""

    def score(self, question: str, texts: Sequence[str]) -> np.ndarray: ...

    def load(self) -> object: ...


def reader_text(title: str, text: str, following: str | None) -> str:
    """What the cross-encoder reads for a passage: its document title, the passage and the next passage of the
    same document (evidence that continues on the next slide or paragraph)."""
    return f"{title}\n{text}\n{following}" if following else f"{title}\n{text}"


def read(reader: Reader, question: str, order: np.ndarray, fused: np.ndarray,
         texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cross-encoder as one more voice over the first stage's top len(texts): RRF of the first-stage rank
    and the reader's rank (READER_K, READER_WEIGHT); the rest keeps the first stage's order below them. Returns
    the new order, scores, and the reader's logits of the new top (in its order)."""
    m = len(texts)
    logits = np.asarray(reader.score(question, texts), dtype=np.float32)
    pos = np.arange(m)
    reader_rank = np.empty(m, dtype=np.int64)
    reader_rank[np.lexsort((pos, -logits))] = pos
    score = 1.0 / (READER_K + pos + 1) + READER_WEIGHT / (READER_K + reader_rank + 1)
    new = np.lexsort((pos, -score))
    rest = np.arange(m, len(order))
    return (np.concatenate([order[:m][new], order[m:]]),
            np.concatenate([score[new], 1.0 / (READER_K + rest + 1)]), logits[new])


def _rows_with(snap: Snapshot) -> Callable[[str], Sequence[int]]:
    """keyword -> the rows of the passages that hold it: a column of BM25's sparse term-by-passage matrix."""
    if snap.bm25 is None:
        return lambda term: ()
    vocab, indptr, indices = snap.bm25.vocab_dict, snap.bm25.scores["indptr"], snap.bm25.scores["indices"]

    def rows(term: str) -> Sequence[int]:
        i = vocab.get(term)
        return indices[indptr[i]:indptr[i + 1]] if i is not None and i + 1 < len(indptr) else ()

    return rows


class Retriever:
    def __init__(self, library: Library, embedder: Embedder, *, reader: Reader | None = None,
                 reader_depth: int = READER_DEPTH, max_exhaustive: int = 50_000, candidates: int = 1000,
                 dense_encoders: Mapping[str, PassageEncoder] | None = None) -> None:
        self.library = library
        self.embedder = embedder
        self.dense_encoders = dict(dense_encoders or {})  # query encoders of the models besides MiniLM
        self._warned: set[str] = set()  # library choices this process cannot fully search, logged once each
        self.reader = reader  # the cross-encoder (ingest.cross_encoder), or None: the first stage's order stands
        self.reader_depth = reader_depth
        self.max_exhaustive = max_exhaustive
        self.candidates = candidates
        self._names: tuple[int, SourceNames] | None = None
        self._layout: tuple[int, np.ndarray, np.ndarray] | None = None

    def layout(self, snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
        """Per generation: each passage's next passage in its document (row; -1 at a document's end: the next
        canonical chunk in chunk order, a chunk collapsed into another document's passage skipped), and each
        passage's place in chunk-id order (equal scores are ordered by it, in both stores)."""
        cached = self._layout
        if cached is None or cached[0] != snap.generation:
            order = self.library.chunk_order()
            place = sorted((order.get(p.chunk_id, (p.doc_id, 0)), row) for row, p in enumerate(snap.passages))
            nxt = np.full(len(snap.passages), -1, dtype=np.int64)
            for (a, row), (b, after) in zip(place, place[1:], strict=False):
                if a[0] == b[0]:
                    nxt[row] = after
            tie = np.empty(len(snap.passages), dtype=np.int64)
            tie[np.argsort(np.asarray([p.chunk_id for p in snap.passages]), kind="stable")] = np.arange(len(tie))
            cached = self._layout = (snap.generation, nxt, tie)
        return cached[1], cached[2]

    def neighbours(self, snap: Snapshot) -> np.ndarray:
        return self.layout(snap)[0]

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
        minilm = lists.pop(MINILM_KEY, None)
        dense = minilm if minilm is not None else lists.pop(next(iter(lists)))  # the first dense list
        voices = [Voice(scores) for scores in lists.values()]  # the other model's list (`both`)
        keyword = self._keyword(snap, query)
        named = self.mention(snap, query) if NAMED_WEIGHT else None
        is_named = np.zeros(n, dtype=bool)
        if named is not None:  # prefer the documents the question names, without excluding the rest
            is_named = np.fromiter((p.doc_id in named.doc_ids or any(a["document_id"] in named.doc_ids
                                                                      for a in p.also_at) for p in snap.passages),
                                   dtype=bool, count=n)

        def late(rows: np.ndarray) -> np.ndarray | None:
            if snap.tokens is None or q_tokens is None:
                return None
            return snap.tokens.maxsim(q_tokens, rows)

        nxt, tie = self.layout(snap)
        pool = Pool(dense, keyword if keyword is not None else np.zeros(n, dtype=np.float32), is_named, allowed, tie,
                    voices)
        order, fused = first_stage(pool, late)
        logits = np.zeros(0, dtype=np.float32)
        near: set[int] = set()
        if self.reader is not None and len(order):
            ps = snap.passages
            near = set(order[:CONTEXT_DEPTH].tolist())
            texts = [reader_text(ps[r].title, ps[r].text, ps[nxt[r]].text if nxt[r] >= 0 else None)
                     for r in order[: self.reader_depth]]
            order, fused, logits = read(self.reader, query, order, fused, texts)
        top = order[:top_k]
        cosine = (minilm[top] if minilm is not None
                  else snap.matrix()[top] @ qv.astype(np.float32))  # MiniLM's, for the answerer
        return [Hit(int(r), float(fused[i]), float(cosine[i]), float(logits[i]) if i < len(logits) else None,
                    int(nxt[r]) if i < len(logits) and int(nxt[r]) in near else -1)
                for i, r in enumerate(top.tolist())]

    def dense_scores(self, snap: Snapshot, query: str, minilm_vec: np.ndarray, *,
                     exhaustive: bool = True) -> dict[str, np.ndarray]:
        """Each dense model's cosine to every passage (rows in snapshot order), for the models of the snapshot's
        recorded choice: the ranked lists the first stage fuses. A model whose query encoder this process lacks
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

"""The PostgreSQL + pgvector store: the library in a database that any number of API processes and ingest
workers share (ingest.pg_library), searched with the local store's ranking (app.qa.retrieve).

Search reads candidates from the database and ranks them in Python with the local store's code
(app.qa.retrieve.first_stage and read): the dense top CANDIDATES by HNSW, the keyword top CANDIDATES by BM25 (or
PostgreSQL full-text ranking, `keyword="fts"`), and the passages of a document the question names or of the
filtered documents (all of them up to FEW_PASSAGES, else their CANDIDATES closest). The first stage fuses ranked
lists, so no library-wide statistic is needed (the old score fusion needed the median cosine over the whole
library, taken from a sample of passage vectors). The cross-encoder reads the same top passages with the same
next passage (NEXT_SQL) as the local store.

Dense models (LECTURE_QA_DENSE_MODEL): each model of the database's recorded choice pools its own top CANDIDATES
from its own HNSW index (`dense_top`); MiniLM's cosine over the pool is the dense list and bge-small's one more
voice of the first stage (with `bge-small` alone, its cosine is the dense list), as in app.qa.retrieve.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from app.qa.grounding import ACRONYM, PREFIX, Vocabulary
from app.qa.mentions import RARE_SHARE, Mention, SourceNames
from app.qa.retrieve import (
    CONTEXT_DEPTH,
    FIRST_DEPTH,
    READER_DEPTH,
    Pool,
    Reader,
    Voice,
    first_stage,
    read,
    reader_text,
)
from app.qa.stores.common import PipelineDocuments, cited
from app.qa.types import Source
from ingest.embedding import MINILM_KEY, Embedder, PassageEncoder, dense_lists
from ingest.pg_library import VECTOR_COLUMNS, PgLibrary
from ingest.pipeline import Pipeline
from ingest.textnorm import keyword_tokens, stem, words
from ingest.token_codes import maxsim

log = logging.getLogger(__name__)
CANDIDATES = FIRST_DEPTH
FEW_PASSAGES = 1000  # a filter or a named source with more passages pools only its closest CANDIDATES
EF_SEARCH = 400
"""HNSW's candidate list (pgvector's default 40 is below CANDIDATES). On a 100,000-chunk synthetic library of
near-copies (bench/scale.py), recall@10 against exact was 0.632 / 0.782 / 0.840 / 0.909 / 0.950 at 40 / 100 /
200 / 400 / 800 for 1.2 / 1.3 / 1.8 / 3.3 / 9.3 ms a query: 400 is the last step that costs little."""
BM25_K1, BM25_B = 1.5, 0.75  # bm25s's defaults, which the local store uses

POSTINGS_BUDGET = 20_000
"""Postings read to find the keyword candidates: the query's terms, rarest first, while their postings fit (at
least the rarest). Below it, every term takes part, as in the local store (the whole corpus stays under it);
beyond it, the common terms only score the candidates the rarer terms, the dense search and a named document
found. Measured on a 100,000-chunk synthetic library: reading every posting of every query term was 914 ms of
a 944 ms search."""
BM25_SQL = """
SELECT t.passage_id, sum(q.w * t.tf / (t.tf + %(k)s + %(kb)s * t.dl)) AS s
FROM unnest(%(terms)s::text[], %(weights)s::float8[]) AS q(term, w) JOIN terms t ON t.term = q.term
GROUP BY t.passage_id ORDER BY s DESC LIMIT %(limit)s
"""
BM25_AMONG_SQL = """
SELECT t.passage_id, sum(q.w * t.tf / (t.tf + %(k)s + %(kb)s * t.dl)) AS s
FROM unnest(%(terms)s::text[], %(weights)s::float8[]) AS q(term, w) CROSS JOIN unnest(%(among)s::text[]) AS a(id)
     JOIN terms t ON t.term = q.term AND t.passage_id = a.id
GROUP BY t.passage_id
"""
"""The scores of given passages: one index probe per (term, passage) pair, not a scan of a common term's
postings."""
"""BM25 as bm25s computes it ("lucene": idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b dl /
avgdl))), each term's weight (idf x its count in the query) computed before, in floating point: with the idf in
SQL's numeric arithmetic the aggregation took 140 of 165 ms over 21,678 postings."""
NEXT_SQL = """
SELECT c.id, c.title, c.text, n.text, n.id FROM chunks c LEFT JOIN LATERAL (
    SELECT x.text, x.id FROM chunks x WHERE x.doc_id = c.doc_id AND x.ord > c.ord AND x.head = x.id
    ORDER BY x.ord LIMIT 1
) n ON true WHERE c.id = ANY(%s)
"""
"""Each passage's title and text and the next passage of its document (the next canonical chunk in chunk order),
as the local store's Retriever.layout finds it."""
FTS_SQL = """
SELECT id, ts_rank_cd(fts, q) AS s FROM passages, websearch_to_tsquery('english', %(text)s) q
WHERE fts @@ q AND (%(among)s::text[] IS NULL OR id = ANY(%(among)s::text[]))
ORDER BY s DESC LIMIT %(limit)s
"""


@dataclass
class Ranked:
    id: str
    score: float
    dense: float
    reader: float | None
    following: str | None  # the next passage's text, when the reader read it with this one


class _DbSourceNames(SourceNames):
    """Source names whose rarity counts are SQL counts (no passage list in memory)."""

    def __init__(self, documents: list[tuple[str, str, str]], library: PgLibrary, passages: int,
                 known_words: frozenset[str]) -> None:
        super().__init__(documents, lambda term: (), [], known_words)
        self.library = library
        self._passages = passages

    def outside(self, term: str, docs: set[str]) -> int:
        """Counted only up to one past what still makes the word a name (RARE_SHARE of the passages): a common
        word's postings are not all read."""
        enough = int(RARE_SHARE * self._passages) + 1
        with self.library.connection() as conn:
            return int(conn.execute("SELECT count(*) FROM (SELECT 1 FROM terms t JOIN passages p ON p.id = "
                                    "t.passage_id WHERE t.term = %s AND NOT (p.doc_id = ANY(%s)) LIMIT %s) x",
                                    (term, list(docs), enough)).fetchone()[0])

    def passages(self) -> int:
        return self._passages


class PostgresStore(PipelineDocuments):
    """Documents, passages and their indexes in PostgreSQL; stateless in the process (caches are per generation
    and hold document names and a vector sample only)."""

    name = "postgres"
    library: PgLibrary

    def __init__(self, library: PgLibrary, embedder: Embedder, pipeline: Pipeline, *,
                 keyword: Literal["bm25", "fts"] = "bm25", candidates: int = CANDIDATES,
                 dense_encoders: Mapping[str, PassageEncoder] | None = None,
                 reader: Reader | None = None, reader_depth: int = READER_DEPTH) -> None:
        self.library = library
        self.dense_encoders = dict(dense_encoders or {})
        self.reader = reader  # the cross-encoder over the first stage's top reader_depth (app.qa.retrieve.read)
        self.reader_depth = reader_depth
        self.embedder = embedder
        self.pipeline = pipeline
        self.keyword = keyword
        self.candidates = candidates
        self._names: tuple[int, _DbSourceNames] | None = None
        self._warned: set[str] = set()

    # ---- per-generation state ------------------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        return self.library.meta()

    def source_names(self, meta: dict[str, str]) -> _DbSourceNames:
        gen = int(meta["generation"])
        cached = self._names
        if cached is None or cached[0] != gen:
            with self.library.connection() as conn:
                docs = [(i, n, t) for i, n, t in conn.execute("SELECT id, name, title FROM documents")]
            cached = self._names = (gen, _DbSourceNames(docs, self.library, int(meta["passages"]),
                                                        self.embedder.known_words()))
        return cached[1]

    def _models(self, meta: dict[str, str]) -> list[str]:
        """The dense models of the database's recorded choice that this process can encode queries for."""
        choice = meta.get("dense_model", MINILM_KEY)
        models = [m for m in dense_lists(choice) if m == MINILM_KEY or m in self.dense_encoders]
        if len(models) < len(dense_lists(choice)) and choice not in self._warned:
            self._warned.add(choice)
            log.warning("the database is embedded for %s; restart with LECTURE_QA_DENSE_MODEL=%s", choice, choice)
        return models or [MINILM_KEY]

    def dense_top(self, conn: Any, model: str, query_vec: np.ndarray, limit: int) -> list[str]:
        """One dense model's top `limit` passage ids by its HNSW index (a ranked list for a first stage)."""
        col = _column(model)
        return [r[0] for r in conn.execute(f"SELECT id FROM passages WHERE {col} IS NOT NULL "
                                           f"ORDER BY {col} <#> %s LIMIT %s", (query_vec, limit)).fetchall()]

    # ---- Retrieval -------------------------------------------------------------------------------------
    def unknown_terms(self, text: str) -> list[str]:
        """As the local store's: the question's words no passage holds and the model does not know. The
        library's vocabulary is not loaded: only the terms (and 6-letter prefixes) of this question are looked
        up, which gives the same answer."""
        ws = set(words(text)) | {m.group(0).lower() for m in ACRONYM.finditer(text)}
        exact = sorted(ws | {stem(w) for w in ws})
        prefixes = sorted({w[:PREFIX] for w in ws if len(w) >= PREFIX})
        with self.library.connection() as conn:
            terms = [t for (t,) in conn.execute("SELECT term FROM vocab WHERE term = ANY(%s) OR "
                                                "left(term, 6) = ANY(%s)", (exact, prefixes))]
        meta = self._meta()
        named = self.source_names(meta).find(text)
        unknown = Vocabulary(terms, self.embedder.known_words()).unknown_terms(text)
        return [t for t in unknown if named is None or t not in named.words]

    def rarity(self, text: str) -> dict[str, float]:
        tokens = sorted(set(keyword_tokens(text)))
        meta = self._meta()
        n = int(meta["passages"])
        with self.library.connection() as conn:
            dfs = dict(conn.execute("SELECT term, df FROM vocab WHERE term = ANY(%s)", (tokens,)).fetchall())
        return {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in dfs.items() if df}

    def _keyword_scores(self, conn: Any, query: str, meta: dict[str, str], among: list[str] | None,
                        limit: int) -> dict[str, float]:
        """BM25 (or full-text) scores: of the top `limit` passages, or, given `among`, of those passages."""
        if self.keyword == "fts":
            text = " or ".join(w for w in words(query) if w.isalnum())
            if not text:
                return {}
            return dict(conn.execute(FTS_SQL, {"text": text, "among": among, "limit": limit}).fetchall())
        counts: dict[str, int] = {}
        for t in keyword_tokens(query):
            counts[t] = counts.get(t, 0) + 1
        if not counts:
            return {}
        dfs = dict(conn.execute("SELECT term, df FROM vocab WHERE term = ANY(%s)", (list(counts),)).fetchall())
        terms = sorted(dfs, key=lambda t: (dfs[t], t))  # rarest first
        if among is None:  # finding candidates: the rarer terms while their postings fit the budget
            read = 0
            for i, t in enumerate(terms):
                if i and read + dfs[t] > POSTINGS_BUDGET:
                    terms = terms[:i]
                    break
                read += dfs[t]
        if not terms:
            return {}
        n, total = int(meta["passages"]), int(meta["keyword_total"])
        avgdl = total / max(n, 1)
        weights = [counts[t] * math.log(1 + (n - dfs[t] + 0.5) / (dfs[t] + 0.5)) for t in terms]
        params = {"terms": terms, "weights": weights, "k": BM25_K1 * (1 - BM25_B), "kb": BM25_K1 * BM25_B / avgdl,
                  "among": among, "limit": limit}
        sql = BM25_SQL if among is None else BM25_AMONG_SQL
        return {pid: float(s) for pid, s in conn.execute(sql, params).fetchall()}

    def search(self, query: str, top_k: int, document_ids: Sequence[str] | None = None) -> list[Source]:
        vecs, tokens = self.embedder.encode_with_tokens([query], batch_size=1)
        qv = np.asarray(vecs[0], dtype=np.float32)
        q_tokens = tokens[0] if tokens is not None else None
        meta = self._meta()
        n = int(meta["passages"])
        if n == 0:
            return []
        models = self._models(meta)
        qvecs = {m: qv if m == MINILM_KEY else self.dense_encoders[m].encode_queries([query])[0] for m in models}
        named: Mention | None = self.source_names(meta).find(query)
        with self.library.connection() as conn:
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, self.candidates)}")
            pool = set()
            for m in models:
                pool.update(self.dense_top(conn, m, qvecs[m], self.candidates))
            keyword_top = self._keyword_scores(conn, query, meta, None, self.candidates)
            pool |= set(keyword_top)
            allowed: set[str] | None = None
            if document_ids:
                allowed = self._passages_of(conn, list(document_ids))
                if not allowed:
                    return []
                # scored beside the library's best passages, as the local store scales every passage's scores
                # before it masks those of other documents
                pool |= self._best_of(conn, allowed, qv)
            boosted: set[str] = set()
            if named is not None:
                boosted = self._passages_of(conn, sorted(named.doc_ids))
                pool |= self._best_of(conn, boosted, qv)
            ids = sorted(pool)
            extra = [m for m in models if m != MINILM_KEY]
            cols = "".join(f", p.{_column(m)}" for m in extra)
            rows = conn.execute(f"SELECT p.id, p.embedding{cols} FROM passages p WHERE p.id = ANY(%s)", (ids,),
                                binary=True).fetchall()  # binary: 3x faster to read than text vectors
            ids = [r[0] for r in rows]
            matrices = {m: _matrix([r[1 + j] for r in rows]) for j, m in enumerate([MINILM_KEY, *extra])}
            keyword = self._keyword_scores(conn, query, meta, ids, len(ids)) if keyword_top else {}
        if not ids:
            return []
        minilm = matrices[MINILM_KEY].reshape(len(ids), -1) @ qv  # MiniLM's cosine: the answerer's signal
        lists = [matrices[m].reshape(len(ids), -1) @ qvecs[m] for m in models]
        dense = minilm if MINILM_KEY in models else lists[0]  # the dense list; the other model is a voice
        voices = [Voice(s) for m, s in zip(models, lists, strict=True) if m != MINILM_KEY and s is not dense]
        kw = np.asarray([keyword.get(i, 0.0) for i in ids], dtype=np.float32)
        is_named = np.asarray([i in boosted for i in ids], dtype=bool)
        mask = np.asarray([i in allowed for i in ids], dtype=bool) if allowed is not None else None

        def late(positions: np.ndarray) -> np.ndarray | None:
            if q_tokens is None or not len(q_tokens):
                return None
            stored = self.library.chunk_tokens([ids[i] for i in positions])
            blobs = [stored.get(ids[i]) for i in positions]
            # a passage without word pieces: no MaxSim list
            return maxsim(self.library.codec, q_tokens, [b for b in blobs if b]) if all(blobs) else None

        # ids are sorted: a position is the chunk-id order the local store breaks ties by
        order, fused = first_stage(Pool(dense, kw, is_named, mask, voices=voices), late)
        logits = np.zeros(0, dtype=np.float32)
        following: dict[str, str | None] = {}
        if self.reader is not None and len(order):
            top = [ids[i] for i in order[: self.reader_depth]]
            with self.library.connection() as conn:
                rows = {r[0]: r[1:] for r in conn.execute(NEXT_SQL, (top,)).fetchall()}
            texts = [reader_text(*rows[i][:3]) for i in top]
            near = {ids[i] for i in order[:CONTEXT_DEPTH].tolist()}
            following = {i: rows[i][2] if rows[i][3] in near else None for i in top}
            order, fused, logits = read(self.reader, query, order, fused, texts)
        chosen = [Ranked(ids[i], float(fused[k]), float(minilm[i]), float(logits[k]) if k < len(logits) else None,
                         following.get(ids[i]) if k < len(logits) else None)
                  for k, i in enumerate(order[:top_k].tolist())]
        return self._sources(chosen, set(document_ids or ()))

    @staticmethod
    def _passages_of(conn: Any, doc_ids: list[str]) -> set[str]:
        """The passages a document is in: its canonical chunks and those its chunks were collapsed into."""
        return {h for (h,) in conn.execute("SELECT DISTINCT head FROM chunks WHERE doc_id = ANY(%s) AND head IS NOT "
                                           "NULL", (doc_ids,))}

    def _best_of(self, conn: Any, ids: set[str], qv: np.ndarray) -> set[str]:
        """Those of `ids` worth scoring: all of a few documents' passages (the local store scores every one), the
        CANDIDATES closest of more (a question naming "Harvard" in a library of hundreds of Harvard decks
        pooled thousands of passages: 1 s a search at 100,000 chunks)."""
        if len(ids) <= FEW_PASSAGES:
            return ids
        return {i for (i,) in conn.execute("SELECT id FROM passages WHERE id = ANY(%s) ORDER BY embedding <#> %s "
                                           "LIMIT %s", (sorted(ids), qv, self.candidates))}

    def _sources(self, chosen: list[Ranked], wanted: set[str]) -> list[Source]:
        if not chosen:
            return []
        heads = [c.id for c in chosen]
        with self.library.connection() as conn:
            rows = conn.execute("SELECT id, doc_id, text, location, head FROM chunks WHERE head = ANY(%s) "
                                "ORDER BY doc_id, ord", (heads,)).fetchall()
            docs = {i: (n, t) for i, n, t in conn.execute(
                "SELECT id, name, title FROM documents WHERE id = ANY(%s)", (sorted({r[1] for r in rows}),))}
        by_head: dict[str, dict[str, Any]] = {h: {"also": []} for h in heads}
        for cid, doc_id, text, location, head in rows:
            if cid == head:
                by_head[head].update(doc_id=doc_id, text=text, location=location)
            else:
                by_head[head]["also"].append({"document_id": doc_id, "location": location})
        out: list[Source] = []
        for c in chosen:
            head = c.id
            p = by_head.get(head)
            if p is None or "text" not in p:  # deleted between the ranking and this read
                continue
            places = [{"document_id": p["doc_id"], "location": p["location"]}, *p["also"]]
            out.append(cited(head, p["text"], c.score, c.dense, places, lambda d: docs.get(d, ("", "")), wanted,
                             reader=c.reader, following=c.following))
        return out

    # ---- DocumentStore ---------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"database: {_redact(self.library.url)}"

    def warm_up(self) -> None:
        """Ready means the database answers, the schema is current (migrated when the library opened) and the
        models are loaded (an embedder makes its runtime on first use; the cross-encoder)."""
        self.library.generation()
        load = getattr(self.embedder, "load", None)
        if load is not None:
            load()
        if self.reader is not None:
            self.reader.load()

    def close(self) -> None:
        self.library.close()

    def stats(self) -> dict[str, Any]:
        state = self.library.snapshot()
        return {"generation": state.generation, "documents": state.documents, "passages": state.passages,
                "chunks": state.raw_chunks, "duplicates_collapsed": state.collapsed}


def _redact(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _column(model: str) -> str:
    return "embedding" if model == MINILM_KEY else VECTOR_COLUMNS[model]


def _matrix(vectors: list[Any]) -> np.ndarray:
    """pgvector values -> one float32 matrix, a row each."""
    return np.asarray([v.to_numpy() for v in vectors], dtype=np.float32)

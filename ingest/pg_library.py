"""The library in PostgreSQL + pgvector: the same relational model as the SQLite library (ingest.library), shared
by any number of API processes and ingest workers on any machines.

Tables (schema versions in `_migrations()`, applied in order under an advisory lock, so replicas starting
together migrate once):
    meta          generation counter, embedder name, word-piece codec, passage count and keyword-length total
                  (for BM25's avgdl), the dense-model choice the library was embedded for (`dense_model`)
    documents     one parse of some bytes, as in SQLite
    names         name -> document
    chunks        every chunk, with its vector and word-piece vectors; `head` is the id of its group's canonical
                  chunk (ingest.dedupe: star groups, no chains), so a group's other members are its `also_at`
    passages      one row per canonical chunk: the searchable unit. Vector under HNSW (inner product on
                  L2-normalised vectors = cosine), keyword length, a tsvector (GIN) for PostgreSQL full-text;
                  bge-small's vector in `embedding_bge` under its own HNSW index (as in `chunks`: NULL unless the
                  library's LECTURE_QA_DENSE_MODEL needs it; every passage has one when it does, checked at commit)
    terms         (term, passage, tf, the passage's keyword length): the BM25 postings, with the same
                  keyword_tokens as the SQLite library's bm25s index, so BM25 scores equal the local store's
                  (checked in tests)
    vocab         each term's document frequency
    jobs, job_files  the ingestion queue (ingest.pg_jobs)

Writes: one transaction per ingest or delete, serialised by a transaction-scoped advisory lock (the expensive
part, parsing and embedding, runs before it, in parallel across workers). Groups are kept up to date locally:
a new chunk is grouped with its nearest stored passages (HNSW, cosine >= NEIGHBOUR_COSINE) and their groups'
members; a delete regroups what is left of the groups it touched. A reader sees a document whole or not at all:
a search reads the committed tables, so a commit on one machine is searchable on every other at once, and a
delete is never followed by a result from the deleted document.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingest.dedupe import group_duplicates
from ingest.embedding import DenseModelMismatch, extra_models
from ingest.library import (
    DOC_COLUMNS,
    ChunkRow,
    DocumentRecord,
    Writer,
    mismatch_message,
    named_documents,
    now_iso,
    recorded_dense_model,
)
from ingest.pg_conn import DbTimeouts, answering_within, connection_class
from ingest.pg_conn import ms as _ms
from ingest.textnorm import keyword_tokens
from ingest.token_codes import codec_named

WRITE_LOCK = 0x6C71_0001  # advisory lock keys ("lq" + n)
MIGRATE_LOCK = 0x6C71_0002
NEIGHBOUR_COSINE = 0.75  # stored passages this close to a new chunk are checked as near-duplicates
NEIGHBOURS = 8
FAILING_CHECKOUT = 2.0  # seconds a request waits for a pooled connection while the database is failing
RECONNECT_WINDOW = 10.0
"""Seconds psycopg_pool keeps retrying to replace a lost connection (its pauses double from 1 s) before it gives
up; the next request then starts a fresh try at once. With the pool's default window (300 s) its pause after
a 20 s outage had reached 16 s, so a worker waited that long to see a database that was back (bench/pg_outages.py:
a job queued once PostgreSQL was back took 16.9 s, 1.3 s normally)."""
VECTOR_COLUMNS = {"bge-small": "embedding_bge"}
"""The column of chunks and passages that holds each dense model's vector besides MiniLM's `embedding`."""
log = logging.getLogger(__name__)


def _migrations(dim: int, token_codec: str = "int4") -> list[tuple[int, str]]:
    """(version, SQL). Never edit an applied one: add the next.

    3: BM25 without counting: `vocab` holds each term's document frequency, and the postings carry the passage's
    keyword length in an index that answers a term's postings (or one term-passage pair) without the table.
    Measured on a 100,000-chunk synthetic library (bench/scale.py): the keyword half took 914 of a search's 944 ms
    with version 2's counting and joining. The word-piece codec is recorded (a database keeps the one it was
    created with; one from before version 3 holds int8).

    4: a job has a random public id (the API's; the serial stays internal, it was guessable) and the owner: a
    fingerprint of the key that queued it (ingest.pg_jobs). Jobs from before get random ids and no owner.

    5: bge-small's vectors (LECTURE_QA_DENSE_MODEL) in their own column of chunks and passages, with their own
    HNSW index (pgvector leaves NULLs out of it)."""
    return [
        (1, f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta(key, value) VALUES ('generation', '0'), ('passages', '0'), ('keyword_total', '0'),
    ('dim', '{dim}');
CREATE TABLE documents (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, title TEXT NOT NULL, kind TEXT NOT NULL, size BIGINT NOT NULL,
    units INTEGER NOT NULL, unit_label TEXT NOT NULL, chunks INTEGER NOT NULL, ingested_at TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '', content TEXT NOT NULL DEFAULT '', parsed_as TEXT NOT NULL DEFAULT ''
);
CREATE INDEX documents_content ON documents(content, parsed_as);
CREATE TABLE names (name TEXT PRIMARY KEY, doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE);
CREATE INDEX names_doc ON names(doc_id);
CREATE TABLE chunks (
    id TEXT PRIMARY KEY, doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE, ord INTEGER NOT NULL,
    text TEXT NOT NULL, embed_text TEXT NOT NULL, embed_hash TEXT NOT NULL, location JSONB NOT NULL,
    title TEXT NOT NULL, contained_in TEXT, embedding vector({dim}), tokens BYTEA, head TEXT
);
CREATE INDEX chunks_doc ON chunks(doc_id, ord);
CREATE INDEX chunks_hash ON chunks(embed_hash);
CREATE INDEX chunks_head ON chunks(head);
CREATE TABLE passages (
    id TEXT PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE, doc_id TEXT NOT NULL,
    embedding vector({dim}) NOT NULL, keyword_len INTEGER NOT NULL, fts tsvector NOT NULL
);
CREATE INDEX passages_doc ON passages(doc_id);
CREATE INDEX passages_hnsw ON passages USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX passages_fts ON passages USING gin (fts);
CREATE TABLE terms (
    term TEXT NOT NULL, passage_id TEXT NOT NULL REFERENCES passages(id) ON DELETE CASCADE, tf INTEGER NOT NULL,
    PRIMARY KEY (term, passage_id)
);
CREATE INDEX terms_passage ON terms(passage_id);
CREATE INDEX terms_prefix ON terms(left(term, 6));
"""),
        (2, """
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY, state TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, lease_until TIMESTAMPTZ, worker TEXT,
    progress JSONB NOT NULL DEFAULT '{}', report JSONB, error TEXT
);
CREATE INDEX jobs_ready ON jobs(id) WHERE state IN ('queued', 'running');
CREATE TABLE job_files (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, ord INTEGER NOT NULL, name TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '', data BYTEA NOT NULL, PRIMARY KEY (job_id, ord)
);
"""),
        (3, f"""
CREATE TABLE vocab (term TEXT PRIMARY KEY, df INTEGER NOT NULL);
INSERT INTO vocab(term, df) SELECT term, count(*) FROM terms GROUP BY term;
CREATE INDEX vocab_prefix ON vocab(left(term, 6));
ALTER TABLE terms ADD COLUMN dl INTEGER;
UPDATE terms t SET dl = p.keyword_len FROM passages p WHERE p.id = t.passage_id;
ALTER TABLE terms ALTER COLUMN dl SET NOT NULL;
ALTER TABLE terms DROP CONSTRAINT terms_pkey;
CREATE UNIQUE INDEX terms_postings ON terms(term, passage_id) INCLUDE (tf, dl);
DROP INDEX terms_prefix;
INSERT INTO meta(key, value)
    VALUES ('token_codec', CASE WHEN EXISTS (SELECT 1 FROM chunks) THEN 'int8' ELSE '{token_codec}' END)
    ON CONFLICT (key) DO NOTHING;
"""),
        (4, """
ALTER TABLE jobs ADD COLUMN public_id TEXT, ADD COLUMN owner TEXT;
UPDATE jobs SET public_id = replace(gen_random_uuid()::text, '-', '');
ALTER TABLE jobs ALTER COLUMN public_id SET NOT NULL;
CREATE UNIQUE INDEX jobs_public_id ON jobs(public_id);
"""),
        (5, f"""
ALTER TABLE chunks ADD COLUMN embedding_bge vector({dim});
ALTER TABLE passages ADD COLUMN embedding_bge vector({dim});
CREATE INDEX passages_bge_hnsw ON passages USING hnsw (embedding_bge vector_ip_ops)
    WITH (m = 16, ef_construction = 64);
"""),
    ]


SCHEMA_VERSION = 5


def migrate(conn: Any, dim: int, token_codec: str = "int4") -> int:
    """Apply the migrations this database lacks, in one transaction under an advisory lock; the version now."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise RuntimeError(f"the database was migrated by a newer lecture-qa (schema {current}, this one "
                               f"reads up to {SCHEMA_VERSION}): upgrade lecture-qa")
        for version, sql in _migrations(dim, token_codec):
            if version > current:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations(version) VALUES (%s)", (version,))
                current = version
        stored = conn.execute("SELECT value FROM meta WHERE key='dim'").fetchone()
        if stored and int(stored[0]) != dim:
            raise RuntimeError(f"the database holds {stored[0]}-dimensional vectors, the model makes {dim}")
    return int(current)


def keyword_counts(title: str, embed_text: str) -> dict[str, int]:
    """The BM25 terms of a passage and their counts: what the local store's bm25s index gets for it."""
    counts: dict[str, int] = {}
    for t in keyword_tokens(f"{title}\n{embed_text}") or ["_"]:
        counts[t] = counts.get(t, 0) + 1
    return counts


@dataclass
class PgState:
    """What the ingest pipeline reads of a committed state (the SQLite library's Snapshot plays this part)."""

    generation: int
    passages: int
    raw_chunks: int
    documents: int = 0

    @property
    def collapsed(self) -> int:
        return self.raw_chunks - self.passages


class PgLibrary:
    """A PostgreSQL library: a connection pool, the schema, reads for the pipeline, and `writer()`.

    `data_dir` is local scratch only (the pipeline stages originals there); nothing in it is shared."""

    def __init__(self, url: str, *, dim: int = 384, data_dir: str | Path = "./data", min_connections: int = 1,
                 max_connections: int = 8, token_codec: str = "int4", timeouts: DbTimeouts | None = None) -> None:
        import psycopg
        from pgvector.psycopg import register_vector
        from psycopg_pool import ConnectionPool

        from ingest.errors import StorageUnavailable

        self.url = url
        self.dim = dim
        self.timeouts = timeouts = timeouts or DbTimeouts()
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:  # migrations may take long on a big library: no statement limit here, only the connect one
            with psycopg.connect(url, autocommit=True, **timeouts.connect_kwargs()) as conn:
                self.schema_version = migrate(conn, dim, token_codec)
                row = conn.execute("SELECT value FROM meta WHERE key='token_codec'").fetchone()
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"the library's database cannot be reached: {exc}".strip()) from exc
        self.codec = codec_named(row[0] if row else "int8", dim)  # the database's own, not the setting
        session_sql, session_args = timeouts.session_sql()

        def configure(conn: Any) -> None:
            conn.answer_within = timeouts.answer
            register_vector(conn)
            conn.execute(session_sql, session_args)
            conn.commit()

        # prepare_threshold=None: no server-side prepared statements. psycopg prepares a query after 5 runs,
        # and PostgreSQL then may plan it once for any parameters: on a 100,000-chunk library some searches
        # took 0.5-0.8 s instead of 60 ms with the generic plans of the id-list and postings queries.
        self.pool = ConnectionPool(url, min_size=min_connections, max_size=max_connections, open=True,
                                   configure=configure, name="lecture-qa", timeout=timeouts.checkout,
                                   reconnect_timeout=RECONNECT_WINDOW,
                                   connection_class=connection_class(),
                                   kwargs={"prepare_threshold": None, **timeouts.connect_kwargs()})
        self._checking = threading.Lock()
        self._failing = False  # the last block on a connection failed with the database

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection; its transaction commits when the block ends without an exception. A database
        that cannot be reached, or does not answer in time (ingest.pg_conn: connect, checkout, statement and
        answer limits), raises StorageUnavailable."""
        import psycopg
        from psycopg_pool import PoolTimeout

        from ingest.errors import StorageUnavailable

        # while the database is failing, a request waits FAILING_CHECKOUT at most for a connection: requests queued
        # behind those that hold the pool's connections would otherwise wait a whole checkout limit after them
        # (50 concurrent searches on a frozen server, bench/pg_outages.py)
        wait = min(self.timeouts.checkout, FAILING_CHECKOUT) if self._failing else self.timeouts.checkout
        try:
            with self.pool.connection(timeout=wait) as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self._failing = True
            self._check_soon()
            raise StorageUnavailable(f"the library's database cannot be reached: {exc}".strip()) from exc
        self._failing = False

    def _check_soon(self) -> None:
        """Test the idle pooled connections in the background and drop the broken ones (a restarted server
        closed them all), so the next requests get fresh ones. Never in the request: on a hung server each test
        waits its answer limit. One check at a time."""
        if not self._checking.acquire(blocking=False):
            return

        def check() -> None:
            try:
                self.pool.check()
            except Exception:  # the pool is closing, or the server is gone: the next check will do
                log.debug("checking the pooled connections failed", exc_info=True)
            finally:
                self._checking.release()

        threading.Thread(target=check, name="lecture-qa-pool-check", daemon=True).start()

    # ---- reading -------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        with self.connection() as conn:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())

    def generation(self) -> int:
        with self.connection() as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def snapshot(self, *, force_check: bool = False) -> PgState:
        with self.connection() as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            chunks, docs = conn.execute("SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM documents)"
                                        ).fetchone()
        return PgState(int(meta["generation"]), int(meta["passages"]), int(chunks), int(docs))

    def documents(self) -> list[DocumentRecord]:
        with self.connection() as conn:
            docs = [DocumentRecord(*r) for r in conn.execute(f"SELECT {DOC_COLUMNS} FROM documents")]
            names = conn.execute("SELECT name, doc_id FROM names ORDER BY name").fetchall()
        return named_documents(docs, names)

    def document(self, doc_id: str) -> DocumentRecord | None:
        with self.connection() as conn:
            r = conn.execute(f"SELECT {DOC_COLUMNS} FROM documents WHERE id=%s", (doc_id,)).fetchone()
            if r is None:
                return None
            doc = DocumentRecord(*r)
            doc.also_named = [n for (n,) in conn.execute("SELECT name FROM names WHERE doc_id=%s ORDER BY name",
                                                         (doc_id,)) if n != doc.name]
        return doc

    def names(self) -> dict[str, str]:
        with self.connection() as conn:
            return dict(conn.execute("SELECT name, doc_id FROM names").fetchall())

    def ensure_embedder(self, name: str) -> None:
        with self.connection() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES ('embedder', %s) ON CONFLICT DO NOTHING", (name,))
            stored = conn.execute("SELECT value FROM meta WHERE key='embedder'").fetchone()[0]
        if stored != name:
            raise RuntimeError(f"the database was indexed with the embedding model {stored!r}, not {name!r}")

    def dense_model(self) -> str:
        with self.connection() as conn:
            return recorded_dense_model(conn)

    def ensure_dense_model(self, choice: str) -> None:
        """As ingest.library.Library.ensure_dense_model: an empty database takes the choice, another refuses."""
        extra_models(choice)
        with self.connection() as conn:
            recorded = recorded_dense_model(conn)
            if recorded == choice:
                return
            if conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is None:
                conn.execute("INSERT INTO meta(key, value) VALUES ('dense_model', %s) ON CONFLICT (key) DO UPDATE "
                             "SET value = excluded.value", (choice,))
                return
        raise DenseModelMismatch(mismatch_message("the database", recorded, choice))

    def missing_vectors(self, model: str) -> list[tuple[str, str]]:
        with self.connection() as conn:
            return list(conn.execute(_missing_sql(model)).fetchall())

    def cached_vectors(self, model: str, hashes: list[str]) -> dict[str, bytes]:
        if not hashes:
            return {}
        col = VECTOR_COLUMNS[model]
        with self.connection() as conn:
            rows = conn.execute(f"SELECT DISTINCT ON (embed_hash) embed_hash, {col} FROM chunks WHERE {col} IS NOT "
                                "NULL AND embed_hash = ANY(%s)", (hashes,), binary=True).fetchall()
        return {h: e.to_numpy().astype(np.float32).tobytes() for h, e in rows}

    def cached_embeddings(self, hashes: list[str]) -> dict[str, tuple[bytes, bytes | None]]:
        if not hashes:
            return {}
        with self.connection() as conn:
            rows = conn.execute("SELECT DISTINCT ON (embed_hash) embed_hash, embedding, tokens FROM chunks "
                                "WHERE embedding IS NOT NULL AND embed_hash = ANY(%s)", (hashes,),
                                binary=True).fetchall()
        return {h: (e.to_numpy().astype(np.float32).tobytes(), t) for h, e, t in rows}

    def embedded_texts(self) -> list[tuple[str, str, bytes]]:
        """Empty: the pipeline's reuse of a stored near-twin's vector reads every stored text, which does not
        scale to a shared database; twins within one batch still share one encode, and stored twins still
        collapse into one passage (grouping finds them by their vectors)."""
        return []

    def chunk_tokens(self, chunk_ids: list[str]) -> dict[str, bytes | None]:
        with self.connection() as conn:
            return dict(conn.execute("SELECT id, tokens FROM chunks WHERE id = ANY(%s)", (chunk_ids,),
                                     binary=True).fetchall())  # bytea in binary: no hex to decode

    # ---- writing ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, timeout: float = 600.0, on_wait: Callable[[], None] | None = None) -> Iterator[PgWriter]:
        """One transaction holding the write lock; groups, passages and terms follow the rows at commit.

        Limits: the first try for the lock runs within the read limits (a hung server shows there, in seconds);
        a wait for another writer's lock up to `timeout`; then the write's statements and its commit within
        the write limit (DbTimeouts.write): a large document's statements may take longer than a search's."""
        import psycopg

        from ingest.errors import LibraryLocked

        limits = self.timeouts
        with self.connection() as conn:
            w = PgWriter(conn)
            read_limit = conn.answer_within
            try:
                with conn.transaction():
                    got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (WRITE_LOCK,)).fetchone()[0]
                    if not got:
                        if on_wait is not None:
                            on_wait()
                        conn.execute("SELECT set_config('lock_timeout', %s, true), "
                                     "set_config('statement_timeout', %s, true)",
                                     (_ms(timeout), _ms(timeout + limits.grace)))
                        try:
                            with answering_within(conn, timeout + 2 * limits.grace):
                                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                        except psycopg.errors.LockNotAvailable as exc:
                            raise LibraryLocked("another ingest holds the library lock; try again later") from exc
                    conn.execute("SELECT set_config('statement_timeout', %s, true), "
                                 "set_config('lock_timeout', %s, true)", (_ms(limits.write), _ms(limits.write)))
                    conn.answer_within = limits.write + limits.grace  # until the commit has its answer
                    yield w
                    if w.changed:
                        regroup(conn, w.added, w.touched_heads)
                        w.check_vectors()
                        gen = int(conn.execute("UPDATE meta SET value = (value::bigint + 1)::text "
                                               "WHERE key='generation' RETURNING value").fetchone()[0])
                        passages, total = conn.execute("SELECT count(*), coalesce(sum(keyword_len), 0) "
                                                       "FROM passages").fetchone()
                        conn.execute("UPDATE meta SET value=%s WHERE key='passages'", (str(passages),))
                        conn.execute("UPDATE meta SET value=%s WHERE key='keyword_total'", (str(total),))
                        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
                        w.snapshot = PgState(gen, int(passages), int(chunks))
                        w.before_commit()
                    else:
                        raise _Rollback
            except _Rollback:
                pass
            finally:
                conn.answer_within = read_limit
            if w.changed:  # committed; still on this connection (the hooks may read), outside the transaction
                w.after_commit()
                conn.commit()


class _Rollback(Exception):
    """Leaves an unchanged writer's transaction without committing anything."""


class PgWriter(Writer):
    """Changes made inside `PgLibrary.writer()`: ingest.library.Writer's calls on a psycopg connection, and
    deletes and adds that also note which groups must be regrouped at commit."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.added: list[str] = []  # chunk ids added in this transaction
        self.touched_heads: set[str] = set()  # groups that lost members

    def _sql(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(query.replace("?", "%s"), params)

    def delete_document(self, doc_id: str) -> bool:
        heads = [h for (h,) in self.conn.execute("SELECT DISTINCT head FROM chunks WHERE doc_id=%s AND head IS NOT "
                                                 "NULL", (doc_id,))]
        remove_passages(self.conn, [i for (i,) in self.conn.execute(
            "SELECT p.id FROM passages p JOIN chunks c ON c.id = p.id WHERE c.doc_id=%s", (doc_id,))])
        deleted = super().delete_document(doc_id)
        if deleted:
            self.touched_heads.update(heads)
            self.added = [c for c in self.added if not c.startswith(f"{doc_id}-")]
        return deleted

    def add_document(self, doc: DocumentRecord, chunks: list[ChunkRow]) -> None:
        self.conn.execute(
            f"INSERT INTO documents({DOC_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (doc.id, doc.name, doc.title, doc.kind, doc.size, doc.units, doc.unit_label, doc.chunks,
             doc.ingested_at or now_iso(), doc.source, doc.content, doc.parsed_as))
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO chunks(id, doc_id, ord, text, embed_text, embed_hash, location, title, contained_in, "
                "embedding, tokens) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [(c.id, c.doc_id, c.order, c.text, c.embed_text, c.embed_hash, json.dumps(c.location), c.title,
                  c.contained_in, None if c.embedding is None else np.asarray(c.embedding, np.float32), c.tokens)
                 for c in chunks])
        self.set_vectors_of(chunks)
        self.added.extend(c.id for c in chunks)
        self.changed = True

    def missing_vectors(self, model: str) -> list[tuple[str, str]]:
        return list(self.conn.execute(_missing_sql(model)).fetchall())

    def set_vectors(self, model: str, rows: list[tuple[str, np.ndarray]]) -> None:
        col = VECTOR_COLUMNS[model]
        with self.conn.cursor() as cur:
            cur.executemany(f"UPDATE chunks SET {col} = %s WHERE id = %s",
                            [(np.asarray(v, np.float32), cid) for cid, v in rows])
        self.conn.execute(f"UPDATE passages p SET {col} = c.{col} FROM chunks c WHERE c.id = p.id AND "
                          "p.id = ANY(%s)", ([cid for cid, _ in rows],))
        self.changed = True

    def drop_vectors(self, model: str) -> None:
        col = VECTOR_COLUMNS[model]
        self.conn.execute(f"UPDATE chunks SET {col} = NULL WHERE {col} IS NOT NULL")
        self.conn.execute(f"UPDATE passages SET {col} = NULL WHERE {col} IS NOT NULL")
        self.changed = True

    def check_vectors(self) -> None:
        """Every passage has a vector of each model the recorded choice needs (see Writer.check_vectors)."""
        choice = recorded_dense_model(self.conn)
        for model in extra_models(choice):
            col = VECTOR_COLUMNS[model]
            if self.conn.execute(f"SELECT 1 FROM passages WHERE {col} IS NULL LIMIT 1").fetchone() is not None:
                raise DenseModelMismatch(f"the database is embedded for LECTURE_QA_DENSE_MODEL={choice}, and this "
                                         f"change holds passages without a {model} vector: restart with "
                                         f"LECTURE_QA_DENSE_MODEL={choice}")


def _missing_sql(model: str) -> str:
    return ("SELECT id, embed_text FROM chunks WHERE embedding IS NOT NULL AND contained_in IS NULL AND "
            f"{VECTOR_COLUMNS[model]} IS NULL")


def regroup(conn: Any, added: Sequence[str], touched_heads: set[str]) -> None:
    """Bring groups, passages and terms up to date for the chunks just added and the groups that lost members.

    The chunks considered: the added ones, the members of every group that lost one, and the members of the
    groups of every stored passage within NEIGHBOURS nearest (cosine >= NEIGHBOUR_COSINE) of an added chunk.
    Over those, ingest.dedupe.group_duplicates decides the groups exactly as the SQLite library does over the
    whole library (a near-duplicate pair has a cosine far above the threshold: shingle or word-set Jaccard >= 0.8)."""
    heads = set(touched_heads)
    new = conn.execute("SELECT id, embedding FROM chunks WHERE id = ANY(%s) AND contained_in IS NULL AND "
                       "embedding IS NOT NULL", (list(added),)).fetchall()
    for _, vec in new:
        rows = conn.execute("SELECT id, -(embedding <#> %s) FROM passages ORDER BY embedding <#> %s LIMIT %s",
                            (vec, vec, NEIGHBOURS)).fetchall()
        heads.update(pid for pid, cos in rows if cos >= NEIGHBOUR_COSINE)
    rows = conn.execute(
        "SELECT id, doc_id, text, contained_in, embedding IS NOT NULL, head FROM chunks "
        "WHERE id = ANY(%s) OR head = ANY(%s) ORDER BY doc_id, ord", (list(added), list(heads))).fetchall()
    if not rows:
        return
    ids = [r[0] for r in rows]
    pos = {cid: i for i, cid in enumerate(ids)}
    groups = group_duplicates([r[2] for r in rows], [pos.get(r[3]) if r[3] else None for r in rows],
                              [r[4] for r in rows], [r[1] for r in rows])
    old_heads = {r[5] for r in rows if r[5] is not None}
    new_heads = {ids[members[0]] for members in groups.members if rows[members[0]][4]}
    with conn.cursor() as cur:
        cur.executemany("UPDATE chunks SET head=%s WHERE id=%s",
                        [(ids[members[0]] if rows[members[0]][4] else None, ids[m])
                         for members in groups.members for m in members])
    gone = sorted(old_heads - new_heads)
    if gone:
        remove_passages(conn, gone)
    fresh = sorted(new_heads - old_heads)
    if fresh:
        add_passages(conn, fresh)


def add_passages(conn: Any, chunk_ids: list[str]) -> None:
    """Make these canonical chunks searchable: vector, keyword terms, full-text vector."""
    rows = conn.execute("SELECT id, doc_id, title, embed_text, embedding, embedding_bge FROM chunks "
                        "WHERE id = ANY(%s)", (chunk_ids,)).fetchall()
    with conn.cursor() as cur:
        counts = {cid: keyword_counts(title, text) for cid, _, title, text, _, _ in rows}
        cur.executemany(
            "INSERT INTO passages(id, doc_id, embedding, embedding_bge, keyword_len, fts) "
            "VALUES (%s, %s, %s, %s, %s, to_tsvector('english', %s))",
            [(cid, doc, vec, bge, sum(counts[cid].values()), f"{title}\n{text}")
             for cid, doc, title, text, vec, bge in rows])
        cur.executemany("INSERT INTO terms(term, passage_id, tf, dl) VALUES (%s, %s, %s, %s)",
                        [(t, cid, n, sum(c.values())) for cid, c in counts.items() for t, n in c.items()])
    df: dict[str, int] = {}
    for c in counts.values():
        for t in c:
            df[t] = df.get(t, 0) + 1
    conn.execute("INSERT INTO vocab(term, df) SELECT * FROM unnest(%s::text[], %s::int[]) "
                 "ON CONFLICT (term) DO UPDATE SET df = vocab.df + excluded.df", (list(df), list(df.values())))


def remove_passages(conn: Any, ids: list[str]) -> None:
    """Unsearchable again: their postings leave `terms` (cascade) and the document frequencies in `vocab`."""
    if not ids:
        return
    conn.execute("UPDATE vocab v SET df = v.df - c.n FROM (SELECT term, count(*) AS n FROM terms "
                 "WHERE passage_id = ANY(%s) GROUP BY term) c WHERE v.term = c.term", (ids,))
    conn.execute("DELETE FROM vocab WHERE df <= 0")
    conn.execute("DELETE FROM passages WHERE id = ANY(%s)", (ids,))

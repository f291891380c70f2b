"""The versioned on-disk library: SQLite is the truth, FAISS + BM25 files are derived per generation.

Layout of a data directory:
    library.sqlite3      documents, their names, chunks (text, location, embedding, token vectors), the
                         `generation` counter and the `schema` version (WAL mode)
    write.lock           fcntl lock held by the one writer at a time
    index/g<N>/          dense.faiss, bm25/, tokens*.npy, groups.json for generation N (written to a temp dir,
                         fsynced, renamed)

A writer changes SQLite inside one transaction, builds the derived files of generation N+1, renames them into
place, then commits. A crash before the commit leaves generation N whole (the orphan g<N+1> is ignored and
rebuilt later); readers only follow the generation that SQLite has committed, and rebuild derived files in
memory when they are missing or damaged.

Identity: a document is one parse of some bytes, keyed by (`content` = SHA-256 of the bytes, `parsed_as` = the
type its name asks for); a name (the path relative to the ingested folder, or the uploaded file name) is a row
of `names` and points to exactly one document; a document has one or more names (the same bytes under two
paths are one document listed under both). Schema versions: 1 = no names table (a name was a column, and the
id the bytes' hash); 2 = `names`, `content`, `parsed_as`; 3 = `vectors` (a second dense model's passage vectors,
`LECTURE_QA_DENSE_MODEL`; meta `dense_model` records the choice the library was embedded for). Opening an older
library migrates it in place, in one transaction.

Dense models: MiniLM's vector is the `embedding` column of every chunk; another model's (bge-small) is a row of
`vectors`. A generation holds one FAISS index per model its recorded choice needs, every passage in each, or it
does not commit (`Writer` checks before the commit): a search never ranks passages with a mix of models' vectors.
`lecture-qa reindex` (ingest.reindex) re-embeds a library for another choice in one commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from ingest.dedupe import group_duplicates
from ingest.embedding import MINILM_KEY, DenseModelMismatch, extra_models
from ingest.errors import LibraryLocked, UnsupportedFileType
from ingest.loaders import kind_for_name
from ingest.public import DocumentInfo
from ingest.textnorm import KEYWORDS_VERSION, keyword_tokens
from ingest.token_vectors import TokenIndex

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, title TEXT NOT NULL, kind TEXT NOT NULL, size INTEGER NOT NULL,
    units INTEGER NOT NULL, unit_label TEXT NOT NULL, chunks INTEGER NOT NULL, ingested_at TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '', content TEXT NOT NULL DEFAULT '', parsed_as TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS documents_name ON documents(name);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE, ord INTEGER NOT NULL,
    text TEXT NOT NULL, embed_text TEXT NOT NULL, embed_hash TEXT NOT NULL, location TEXT NOT NULL,
    title TEXT NOT NULL, contained_in TEXT, embedding BLOB, tokens BLOB
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, ord);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(embed_hash);
INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', '0');
"""
SCHEMA_VERSION = 3
NAMES = """
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY, doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS names_doc ON names(doc_id);
CREATE INDEX IF NOT EXISTS documents_content ON documents(content, parsed_as);
"""
VECTORS = """
CREATE TABLE IF NOT EXISTS vectors (
    model TEXT NOT NULL, chunk_id TEXT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE, embedding BLOB NOT NULL,
    PRIMARY KEY (model, chunk_id)
);
CREATE INDEX IF NOT EXISTS vectors_chunk ON vectors(chunk_id);
"""
DOC_COLUMNS = "id, name, title, kind, size, units, unit_label, chunks, ingested_at, source, content, parsed_as"
GENERATION = "SELECT value FROM meta WHERE key='generation'"
log = logging.getLogger(__name__)


@dataclass
class DocumentRecord:
    id: str
    name: str
    title: str
    kind: str
    size: int
    units: int
    unit_label: str
    chunks: int
    ingested_at: str
    source: str = ""
    content: str = ""  # the first 16 hex digits of the bytes' SHA-256
    parsed_as: str = ""  # the type the name asked for (ingest.loaders.kind_for_name)
    also_named: list[str] = field(default_factory=list)  # the document's other names (same bytes, other paths)

    def info(self) -> DocumentInfo:
        return DocumentInfo.of(id=self.id, name=self.name, title=self.title, type=self.kind, size=self.size,
                               units=self.units, unit_label=self.unit_label, chunks=self.chunks,
                               ingested_at=self.ingested_at, also_named=self.also_named)


@dataclass
class ChunkRow:
    id: str
    doc_id: str
    order: int
    text: str
    embed_text: str
    embed_hash: str
    location: dict[str, Any]
    title: str
    contained_in: str | None
    embedding: np.ndarray | None
    tokens: bytes | None = None  # packed word-piece vectors (ingest.token_vectors)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # other dense models' vectors (bge-small)


@dataclass
class Passage:
    """A canonical (deduplicated) chunk as retrieval sees it."""

    chunk_id: str
    doc_id: str
    text: str
    title: str
    location: dict[str, Any]
    also_at: list[dict[str, Any]] = field(default_factory=list)  # [{"document_id", "location"}]


class Committed(Protocol):
    """What a writer tells of the state it committed (a Snapshot here, ingest.pg_library.PgState there)."""

    generation: int

    @property
    def collapsed(self) -> int: ...


@dataclass
class Snapshot:
    """One immutable, complete generation of the library, safe to share between request threads."""

    generation: int
    documents: dict[str, DocumentRecord]
    passages: list[Passage]
    vectors: Any  # faiss.Index over passages, in order
    bm25: Any  # bm25s.BM25 over passages, in order, or None when empty
    raw_chunks: int = 0
    tokens: TokenIndex | None = None  # word-piece vectors for MaxSim reranking; None for older libraries
    dense_model: str = MINILM_KEY  # the LECTURE_QA_DENSE_MODEL choice this generation was embedded for
    extra: dict[str, Any] = field(default_factory=dict)  # model -> faiss.Index over passages, in order
    _matrix: np.ndarray | None = None
    _extra_matrix: dict[str, np.ndarray] = field(default_factory=dict)

    def matrix(self) -> np.ndarray:
        """The passage vectors as one float32 array (rows in passage order), read once from FAISS."""
        if self._matrix is None:
            n = self.vectors.ntotal
            self._matrix = self.vectors.reconstruct_n(0, n) if n else np.zeros((0, 0), dtype=np.float32)
        return self._matrix

    def index(self, model: str) -> Any:
        """The FAISS index of one dense model's passage vectors."""
        return self.vectors if model == MINILM_KEY else self.extra[model]

    def matrix_of(self, model: str) -> np.ndarray:
        """One dense model's passage vectors as a float32 array (rows in passage order)."""
        if model == MINILM_KEY:
            return self.matrix()
        if model not in self._extra_matrix:
            index = self.extra[model]
            self._extra_matrix[model] = (index.reconstruct_n(0, index.ntotal) if index.ntotal
                                         else np.zeros((0, 0), dtype=np.float32))
        return self._extra_matrix[model]

    @property
    def collapsed(self) -> int:
        return self.raw_chunks - len(self.passages)


def _when_unlocked(step: Callable[[], T]) -> T:
    """Run a start-up step of a library, again while SQLite says the database is locked. Two API workers
    opening one new library at once: one of them failed to start with "database is locked" (a fresh-clone CI
    run, tests/test_workers.py) although every connection waits 60 s for locks; some lock changes (setting WAL
    on a new file, a read that must become a write) are refused at once instead of waited for."""
    for attempt in range(40):
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 39:
                raise
            time.sleep(0.05 + 0.05 * attempt)
    raise AssertionError("unreachable")


def recorded_dense_model(conn: Any) -> str:
    """The dense-model choice a library was embedded for (MiniLM alone before there was a choice)."""
    row = conn.execute("SELECT value FROM meta WHERE key='dense_model'").fetchone()
    return str(row[0]) if row else MINILM_KEY


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _doc(row: tuple[Any, ...]) -> DocumentRecord:
    return DocumentRecord(*row)


def _documents(conn: sqlite3.Connection) -> dict[str, DocumentRecord]:
    return {r[0]: _doc(r) for r in conn.execute(f"SELECT {DOC_COLUMNS} FROM documents")}


def _name_kind(name: str, fallback: str) -> str:
    try:
        return kind_for_name(name)
    except UnsupportedFileType:
        return fallback


def named_documents(docs: list[DocumentRecord], names: list[tuple[str, str]]) -> list[DocumentRecord]:
    """The documents in name order, each with its other names (`names`: (name, document id), in name order)."""
    by_id = {d.id: d for d in docs}
    for name, doc_id in names:
        doc = by_id.get(doc_id)
        if doc is not None and name != doc.name:
            doc.also_named.append(name)
    return sorted(docs, key=lambda d: d.name)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to SCHEMA_VERSION in place, in one transaction. Several workers may open an old
    library at once: BEGIN IMMEDIATE lets one migrate; the others then read the new version and do nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        version = int(row[0]) if row else 1
        if version < 2:  # names become a table; version-1 ids are the bytes' hash, so `content` is the id
            columns = {r[1] for r in conn.execute("PRAGMA table_info(documents)")}
            for column in ("content", "parsed_as"):
                if column not in columns:
                    conn.execute(f"ALTER TABLE documents ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            for stmt in NAMES.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            for doc_id, name, kind in conn.execute("SELECT id, name, kind FROM documents").fetchall():
                conn.execute("UPDATE documents SET content=?, parsed_as=? WHERE id=?",
                             (doc_id, _name_kind(name, kind), doc_id))
                conn.execute("INSERT OR IGNORE INTO names(name, doc_id) VALUES (?, ?)", (name, doc_id))
        if version < 3:
            for stmt in VECTORS.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
        if version != SCHEMA_VERSION:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Library:
    """Opens (and creates) a data directory. Cheap to construct; no model or index is loaded here.

    Every `snapshot()` reads SQLite's generation (one primary-key read on a connection kept per thread) and loads
    the newer generation before answering when there is one, so a delete or an ingest is seen by every reader in
    every worker as soon as its call returned. Measured with bench/read_after_delete.py on the 2 shared cores
    (corpus library, 52 documents): 9-23 us a check on the kept connection under a load average of 5-6 from other
    jobs, 6.7 us on a quieter run (snapshot() with it: 7-27 us, unchecked 0.3 us), 300-810 us when a connection is
    opened for it; one query embedding took 8.7 ms under that load (about 4 ms idle), so a search costs 0.1-0.3%
    more. Over 60 s with 2 workers, 0 of 560 searches sent right after a DELETE returned held the deleted document;
    with the old check at most every `refresh_seconds` (1 s), 192 of 800 did. `refresh_seconds` is accepted for
    older callers and delays nothing any more.
    """

    def __init__(self, data_dir: str | Path, *, dim: int = 384, refresh_seconds: float = 0.0) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "library.sqlite3"
        self.index_dir = self.data_dir / "index"
        self.index_dir.mkdir(exist_ok=True)
        self.dim = dim
        self.refresh_seconds = refresh_seconds
        self._thread_lock = threading.Lock()  # fcntl locks are per process: threads need their own lock
        self._snapshot: Snapshot | None = None
        self._snapshot_lock = threading.Lock()
        self._local = threading.local()  # one read connection per thread for the per-call generation check
        _when_unlocked(self._open_schema)

    def _open_schema(self) -> None:
        with contextlib.closing(self._connect()) as conn:
            ready = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='chunks'").fetchone()
            if not ready:  # only a new library needs the write lock here; readers never wait for writers
                conn.executescript(SCHEMA + NAMES + VECTORS +
                                   f"INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '{SCHEMA_VERSION}');")
            columns = {r[1] for r in conn.execute("PRAGMA table_info(chunks)")}
            if "tokens" not in columns:  # a library from before token vectors: its chunks simply have none
                conn.execute("ALTER TABLE chunks ADD COLUMN tokens BLOB")
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            version = int(row[0]) if row else 1
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.data_dir} was written by a newer lecture-qa (library schema {version}, "
                                   f"this one reads up to {SCHEMA_VERSION}): upgrade lecture-qa")
            if version < SCHEMA_VERSION:
                _migrate(conn)

    # ---- connections -------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    def generation(self) -> int:
        """The committed generation, read on this thread's kept connection (autocommit: no open read)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return int(conn.execute(GENERATION).fetchone()[0])

    # ---- reading -------------------------------------------------------------------------------------------
    def documents(self) -> list[DocumentRecord]:
        with contextlib.closing(self._connect()) as conn:
            conn.execute("BEGIN")  # documents and names from one state
            try:
                docs = list(_documents(conn).values())
                names = conn.execute("SELECT name, doc_id FROM names ORDER BY name").fetchall()
            finally:
                conn.execute("COMMIT")
        return named_documents(docs, names)

    def document(self, doc_id: str) -> DocumentRecord | None:
        with contextlib.closing(self._connect()) as conn:
            r = conn.execute(f"SELECT {DOC_COLUMNS} FROM documents WHERE id=?", (doc_id,)).fetchone()
            if r is None:
                return None
            doc = _doc(r)
            doc.also_named = [n for (n,) in conn.execute("SELECT name FROM names WHERE doc_id=? ORDER BY name",
                                                         (doc_id,)) if n != doc.name]
        return doc

    def names(self) -> dict[str, str]:
        """Every name -> the id of the document it names."""
        with contextlib.closing(self._connect()) as conn:
            return dict(conn.execute("SELECT name, doc_id FROM names").fetchall())

    def ensure_embedder(self, name: str) -> None:
        """A library is searchable only with the model that embedded it: refuse a different one, clearly."""
        _when_unlocked(lambda: self._ensure_embedder(name))

    def _ensure_embedder(self, name: str) -> None:
        with contextlib.closing(self._connect()) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='embedder'").fetchone()
            if row is None:
                conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('embedder', ?)", (name,))
            elif row[0] != name:
                raise RuntimeError(f"{self.data_dir} was indexed with the embedding model {row[0]!r}, not {name!r}: "
                                   "configure that model again, or ingest into a new data directory")

    def dense_model(self) -> str:
        """The LECTURE_QA_DENSE_MODEL choice this library was embedded for."""
        with contextlib.closing(self._connect()) as conn:
            return recorded_dense_model(conn)

    def ensure_dense_model(self, choice: str) -> None:
        """A library is searched only with the dense models it was embedded for. An empty library takes the
        configured choice; one embedded for another is refused with the command that re-embeds it."""
        extra_models(choice)  # a known choice
        recorded = _when_unlocked(lambda: self._record_dense_model(choice))
        if recorded != choice:
            raise DenseModelMismatch(mismatch_message(str(self.data_dir), recorded, choice))

    def _record_dense_model(self, choice: str) -> str:
        """The recorded choice; an empty library records `choice` first."""
        with contextlib.closing(self._connect()) as conn:
            recorded = recorded_dense_model(conn)
            if recorded != choice and conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is None:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dense_model', ?)", (choice,))
                return choice
            return recorded

    def missing_vectors(self, model: str) -> list[tuple[str, str]]:
        """(chunk id, embed text) of the embedded chunks that lack this model's vector."""
        with contextlib.closing(self._connect()) as conn:
            return conn.execute(MISSING_SQL, (model,)).fetchall()

    def cached_vectors(self, model: str, hashes: list[str]) -> dict[str, bytes]:
        """This model's vectors already stored for these embed-text hashes."""
        out: dict[str, bytes] = {}
        with contextlib.closing(self._connect()) as conn:
            for i in range(0, len(hashes), 500):
                part = hashes[i : i + 500]
                q = ("SELECT c.embed_hash, v.embedding FROM chunks c JOIN vectors v ON v.chunk_id = c.id AND "
                     f"v.model = ? WHERE c.embed_hash IN ({','.join('?' * len(part))})")
                out.update(dict(conn.execute(q, [model, *part]).fetchall()))
        return out

    def cached_embeddings(self, hashes: list[str]) -> dict[str, tuple[bytes, bytes | None]]:
        """(embedding, token vectors) already stored for these embed-text hashes (re-ingesting an edited deck
        re-embeds less)."""
        out: dict[str, tuple[bytes, bytes | None]] = {}
        with contextlib.closing(self._connect()) as conn:
            for i in range(0, len(hashes), 500):
                part = hashes[i : i + 500]
                q = ("SELECT embed_hash, embedding, tokens FROM chunks WHERE embedding IS NOT NULL AND embed_hash IN "
                     f"({','.join('?' * len(part))})")
                out.update({h: (e, t) for h, e, t in conn.execute(q, part).fetchall()})
        return out

    def embedded_texts(self) -> list[tuple[str, str, bytes]]:
        """(chunk id, text, embedding) of every stored chunk that has a vector."""
        with contextlib.closing(self._connect()) as conn:
            return conn.execute("SELECT id, text, embedding FROM chunks WHERE embedding IS NOT NULL").fetchall()

    def chunk_tokens(self, chunk_ids: list[str]) -> dict[str, bytes | None]:
        """The stored word-piece vectors of these chunks, in one read."""
        out: dict[str, bytes | None] = {}
        with contextlib.closing(self._connect()) as conn:
            for i in range(0, len(chunk_ids), 500):
                part = chunk_ids[i : i + 500]
                q = f"SELECT id, tokens FROM chunks WHERE id IN ({','.join('?' * len(part))})"
                out.update(dict(conn.execute(q, part).fetchall()))
        return out

    def chunk_order(self) -> dict[str, tuple[str, int]]:
        """chunk id -> (document id, position in the document): where each passage's neighbours are."""
        with contextlib.closing(self._connect()) as conn:
            return {cid: (doc, int(o)) for cid, doc, o in conn.execute("SELECT id, doc_id, ord FROM chunks")}

    def snapshot(self, *, force_check: bool = False) -> Snapshot:
        """The committed generation: checked in SQLite on every call (see the class docstring for its cost);
        a newer one is loaded before returning. `force_check` is kept for older callers: every call checks."""
        snap = self._snapshot
        if snap is not None and snap.generation == self.generation():
            return snap
        with self._snapshot_lock:
            snap = self._snapshot
            if snap is not None and snap.generation == self.generation():
                return snap
            self._snapshot = self._load_snapshot()
            self._cleanup_generations(self._snapshot.generation)
            return self._snapshot

    def _load_snapshot(self) -> Snapshot:
        with contextlib.closing(self._connect()) as conn:
            conn.execute("BEGIN")  # one read transaction: generation and rows agree
            try:
                gen = int(conn.execute(GENERATION).fetchone()[0])
                snap = self._read_derived(conn, gen)
                if snap is None:
                    snap, _ = self._build(conn, gen)
            finally:
                conn.execute("COMMIT")
        return snap

    def _read_derived(self, conn: sqlite3.Connection, gen: int) -> Snapshot | None:
        gdir = self.index_dir / f"g{gen}"
        try:
            manifest = json.loads((gdir / "groups.json").read_text())
            if manifest["generation"] != gen or manifest.get("keywords", 1) != KEYWORDS_VERSION:
                return None  # another generation's files, or BM25 terms of an older keyword_tokens
            choice = recorded_dense_model(conn)
            if manifest.get("dense_model", MINILM_KEY) != choice:
                return None
            import faiss

            index = faiss.read_index(str(gdir / "dense.faiss"))
            bm25 = None
            if manifest["groups"]:
                import bm25s

                bm25 = bm25s.BM25.load(str(gdir / "bm25"), show_progress=False, verbosity=0)
            docs = _documents(conn)
            rows = {
                r[0]: r
                for r in conn.execute("SELECT id, doc_id, text, title, location FROM chunks")
            }
            passages: list[Passage] = []
            for group in manifest["groups"]:
                head = rows[group[0]]
                also = [{"document_id": rows[m][1], "location": json.loads(rows[m][4])} for m in group[1:]]
                passages.append(Passage(head[0], head[1], head[2], head[3], json.loads(head[4]), also))
            if index.ntotal != len(passages):
                return None
            tokens = None
            if manifest.get("tokens"):
                tokens = TokenIndex(np.load(gdir / "tokens.npy", mmap_mode="r"), np.load(gdir / "token_scales.npy"),
                                    np.load(gdir / "token_offsets.npy"))
                if len(tokens.offsets) != len(passages) + 1 or tokens.offsets[-1] != len(tokens.values):
                    return None
            extra = {m: faiss.read_index(str(gdir / f"dense-{m}.faiss")) for m in extra_models(choice)}
            if any(e.ntotal != len(passages) for e in extra.values()):
                return None
            return Snapshot(gen, docs, passages, index, bm25, raw_chunks=len(rows), tokens=tokens,
                            dense_model=choice, extra=extra)
        except (OSError, KeyError, ValueError, RuntimeError):
            return None  # missing or damaged derived files: the caller rebuilds from SQLite

    # ---- building derived indexes ----------------------------------------------------------------------
    def _build(self, conn: sqlite3.Connection, gen: int) -> tuple[Snapshot, list[list[str]]]:
        import faiss

        docs = _documents(conn)
        rows = conn.execute(
            "SELECT id, doc_id, text, title, location, contained_in, embedding, embed_text, tokens FROM chunks "
            "ORDER BY doc_id, ord"
        ).fetchall()
        ids = [r[0] for r in rows]
        pos = {cid: i for i, cid in enumerate(ids)}
        contained = [pos.get(r[5]) if r[5] else None for r in rows]
        embedded = [r[6] is not None for r in rows]
        groups = group_duplicates([r[2] for r in rows], contained, embedded, [r[1] for r in rows])
        passages: list[Passage] = []
        vecs = np.zeros((len(groups.canonical), self.dim), dtype=np.float32)
        keep: list[int] = []
        for g, members in enumerate(groups.members):
            head = rows[members[0]]
            if head[6] is None:
                continue  # cannot happen for well-formed data; never index a chunk without a vector
            vecs[len(keep)] = np.frombuffer(head[6], dtype=np.float32)
            keep.append(g)
            also = [{"document_id": rows[m][1], "location": json.loads(rows[m][4])} for m in members[1:]]
            passages.append(Passage(head[0], head[1], head[2], head[3], json.loads(head[4]), also))
        vecs = vecs[: len(keep)]
        index = faiss.IndexFlatIP(self.dim)
        if len(vecs):
            index.add(vecs)
        bm25 = None
        if passages:
            import bm25s

            bm25 = bm25s.BM25()
            corpus = [keyword_tokens(f"{p.title}\n{rows[pos[p.chunk_id]][7]}") or ["_"] for p in passages]
            bm25.index(corpus, show_progress=False)
        group_ids = [[ids[m] for m in groups.members[g]] for g in keep]
        tokens = TokenIndex.build([rows[groups.members[g][0]][8] for g in keep], self.dim)
        choice = recorded_dense_model(conn)
        extra = {m: self._extra_index(conn, m, [p.chunk_id for p in passages]) for m in extra_models(choice)}
        return Snapshot(gen, docs, passages, index, bm25, raw_chunks=len(rows), tokens=tokens, dense_model=choice,
                        extra=extra), group_ids

    def _extra_index(self, conn: sqlite3.Connection, model: str, chunk_ids: list[str]) -> Any:
        """One model's vectors of these passages, in order; every passage has one (Writer checks at commit)."""
        import faiss

        stored = dict(conn.execute("SELECT chunk_id, embedding FROM vectors WHERE model=?", (model,)).fetchall())
        missing = [c for c in chunk_ids if c not in stored]
        if missing:
            raise DenseModelMismatch(f"{len(missing)} passages have no {model} vector: run `lecture-qa reindex`")
        index = faiss.IndexFlatIP(self.dim)
        if chunk_ids:
            index.add(np.stack([np.frombuffer(stored[c], dtype=np.float32) for c in chunk_ids]))
        return index

    def _write_derived(self, snap: Snapshot, group_ids: list[list[str]]) -> None:
        import faiss

        final = self.index_dir / f"g{snap.generation}"
        if final.exists():
            shutil.rmtree(final)  # an orphan of a crashed writer
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-g{snap.generation}-", dir=self.index_dir))
        faiss.write_index(snap.vectors, str(tmp / "dense.faiss"))
        for model, extra in snap.extra.items():
            faiss.write_index(extra, str(tmp / f"dense-{model}.faiss"))
        if snap.bm25 is not None:
            snap.bm25.save(str(tmp / "bm25"), show_progress=False)
        if snap.tokens is not None:
            np.save(tmp / "tokens.npy", snap.tokens.values)
            np.save(tmp / "token_scales.npy", snap.tokens.scales)
            np.save(tmp / "token_offsets.npy", snap.tokens.offsets)
        (tmp / "groups.json").write_text(json.dumps({"generation": snap.generation, "groups": group_ids,
                                                     "tokens": snap.tokens is not None,
                                                     "keywords": KEYWORDS_VERSION,
                                                     "dense_model": snap.dense_model}))
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        os.replace(tmp, final)
        fsync_dir(self.index_dir)

    def _cleanup_generations(self, current: int) -> None:
        for p in self.index_dir.iterdir():
            name = p.name
            try:
                stale_generation = name.startswith("g") and int(name[1:]) < current - 1
                stale_temp = name.startswith(".tmp-g") and time.time() - p.stat().st_mtime > 3600
                if stale_generation or stale_temp:
                    shutil.rmtree(p, ignore_errors=True)
            except (ValueError, OSError):
                continue

    # ---- writing ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, timeout: float = 600.0, on_wait: Callable[[], None] | None = None) -> Iterator[Writer]:
        """Exclusive write access: a thread lock plus an fcntl lock on `write.lock`, one transaction."""
        deadline = time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=timeout):
            raise LibraryLocked("another ingest in this process is still running")
        try:
            with open(self.data_dir / "write.lock", "a+") as lock_file:
                waited = False
                while True:
                    try:
                        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not waited and on_wait is not None:
                            on_wait()
                        waited = True
                        if time.monotonic() > deadline:
                            raise LibraryLocked("another ingest holds the library lock; try again later") from None
                        time.sleep(0.1)
                try:
                    conn = self._connect()
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        w = Writer(conn)
                        try:
                            yield w
                            if w.changed:
                                gen = int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
                                gen += 1
                                conn.execute("UPDATE meta SET value=? WHERE key='generation'", (str(gen),))
                                w.check_vectors()
                                snap, group_ids = self._build(conn, gen)
                                self._write_derived(snap, group_ids)
                                w.before_commit()
                                conn.execute("COMMIT")
                                w.snapshot = snap
                                with self._snapshot_lock:
                                    self._snapshot = snap
                                self._cleanup_generations(gen)
                                w.after_commit()
                            else:
                                conn.execute("ROLLBACK")
                        except BaseException:
                            if conn.in_transaction:
                                conn.execute("ROLLBACK")
                            raise
                    finally:
                        conn.close()
                finally:
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class Writer:
    """Changes made inside `Library.writer()`; they become visible together at commit."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn  # sqlite3 here; psycopg in ingest.pg_library.PgWriter, which shares every call but two
        self.changed = False
        self.snapshot: Committed | None = None
        self._hooks: list[Callable[[], None]] = []
        self._after: list[Callable[[], object]] = []

    def _sql(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        """Run one statement written with `?` placeholders (a database writer translates them)."""
        return self.conn.execute(query, params)

    def on_before_commit(self, fn: Callable[[], None]) -> None:
        """Test hook: run `fn` after derived files are written, just before the SQLite commit."""
        self._hooks.append(fn)

    def before_commit(self) -> None:
        for fn in self._hooks:
            fn()

    def on_after_commit(self, fn: Callable[[], object]) -> None:
        """Run `fn` after the commit, still holding the write lock (so no other writer runs between the commit
        and `fn`): the place to remove files that only the removed rows used (ingest.originals). The change is
        committed already, so an exception of `fn` is logged, not raised."""
        self._after.append(fn)

    def after_commit(self) -> None:
        for fn in self._after:
            try:
                fn()
            except Exception:
                log.exception("a hook after the library commit failed (the change itself is committed)")

    def stored_keys(self) -> set[tuple[str, str]]:
        """(content, parsed_as) of every document, as this transaction (or, after it, the commit) sees them."""
        return {(c, p) for c, p in self._sql("SELECT content, parsed_as FROM documents")}

    def has_document(self, doc_id: str) -> bool:
        return self._sql("SELECT 1 FROM documents WHERE id=?", (doc_id,)).fetchone() is not None

    def document_named(self, name: str) -> str | None:
        row = self._sql("SELECT doc_id FROM names WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def document_with(self, content: str, parsed_as: str) -> str | None:
        """The document that is this parse of these bytes, if stored."""
        row = self._sql("SELECT id FROM documents WHERE content=? AND parsed_as=?",
                                (content, parsed_as)).fetchone()
        return row[0] if row else None

    def names_of(self, doc_id: str) -> list[str]:
        return [r[0] for r in self._sql("SELECT name FROM names WHERE doc_id=? ORDER BY name", (doc_id,))]

    def name_document(self, name: str, doc_id: str) -> str | None:
        """Give `name` to the document `doc_id`. The document that had the name loses it (and is deleted when
        that was its last name); its id is returned."""
        old = self.document_named(name)
        if old == doc_id:
            return None
        if old is not None:
            self._sql("DELETE FROM names WHERE name=?", (name,))
            rest = self._sql("SELECT MIN(name) FROM names WHERE doc_id=?", (old,)).fetchone()[0]
            if rest is None:
                self.delete_document(old)
            else:
                self._sql("UPDATE documents SET name=? WHERE id=? AND name=?", (rest, old, name))
        self._sql("INSERT INTO names(name, doc_id) VALUES (?, ?)", (name, doc_id))
        self.changed = True
        return old

    def delete_document(self, doc_id: str) -> bool:
        self._sql("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        self._sql("DELETE FROM names WHERE doc_id=?", (doc_id,))
        cur = self._sql("DELETE FROM documents WHERE id=?", (doc_id,))
        if cur.rowcount:
            self.changed = True
        return bool(cur.rowcount)

    def check_vectors(self) -> None:
        """Before a commit: every embedded chunk has a vector of each model the library's choice needs (a process
        configured for another choice, started before a `lecture-qa reindex`, cannot commit a mix)."""
        choice = recorded_dense_model(self.conn)
        for model in extra_models(choice):
            if self._sql(MISSING_SQL + " LIMIT 1", (model,)).fetchone() is not None:
                raise DenseModelMismatch(f"the library is embedded for LECTURE_QA_DENSE_MODEL={choice}, and this "
                                         f"change holds chunks without a {model} vector: restart with "
                                         f"LECTURE_QA_DENSE_MODEL={choice}")

    def missing_vectors(self, model: str) -> list[tuple[str, str]]:
        """(chunk id, embed text) of the embedded chunks without this model's vector, in this transaction."""
        return list(self._sql(MISSING_SQL, (model,)).fetchall())

    def set_dense_model(self, choice: str) -> None:
        """Record the dense-model choice (reindex); the vectors it needs must be stored in this transaction."""
        self._sql("INSERT INTO meta(key, value) VALUES ('dense_model', ?) ON CONFLICT (key) DO UPDATE SET "
                  "value = excluded.value", (choice,))
        self.changed = True

    def set_vectors(self, model: str, rows: list[tuple[str, np.ndarray]]) -> None:
        """Store one model's vector of these chunks (replacing any)."""
        self.conn.executemany("INSERT OR REPLACE INTO vectors(model, chunk_id, embedding) VALUES (?, ?, ?)",
                              [(model, cid, np.asarray(v, np.float32).tobytes()) for cid, v in rows])
        self.changed = True

    def drop_vectors(self, model: str) -> None:
        self._sql("DELETE FROM vectors WHERE model=?", (model,))
        self.changed = True

    def add_document(self, doc: DocumentRecord, chunks: list[ChunkRow]) -> None:
        self.conn.execute(
            f"INSERT INTO documents({DOC_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (doc.id, doc.name, doc.title, doc.kind, doc.size, doc.units, doc.unit_label, doc.chunks,
             doc.ingested_at or _now(), doc.source, doc.content, doc.parsed_as),
        )
        self.conn.executemany(
            "INSERT INTO chunks(id, doc_id, ord, text, embed_text, embed_hash, location, title, contained_in, "
            "embedding, tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (c.id, c.doc_id, c.order, c.text, c.embed_text, c.embed_hash, json.dumps(c.location), c.title,
                 c.contained_in, None if c.embedding is None else np.asarray(c.embedding, np.float32).tobytes(),
                 c.tokens)
                for c in chunks
            ],
        )
        self.set_vectors_of(chunks)
        self.changed = True

    def set_vectors_of(self, chunks: list[ChunkRow]) -> None:
        by_model: dict[str, list[tuple[str, np.ndarray]]] = {}
        for c in chunks:
            for model, v in c.vectors.items():
                by_model.setdefault(model, []).append((c.id, v))
        for model, rows in by_model.items():
            self.set_vectors(model, rows)


MISSING_SQL = ("SELECT c.id, c.embed_text FROM chunks c WHERE c.embedding IS NOT NULL AND c.contained_in IS NULL "
               "AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.model = ? AND v.chunk_id = c.id)")
"""Chunks that can be a passage (embedded, not contained in another) without a given model's vector."""


def mismatch_message(where: str, recorded: str, choice: str) -> str:
    return (f"{where} was embedded for LECTURE_QA_DENSE_MODEL={recorded}, not {choice}: run `lecture-qa reindex` "
            f"(with LECTURE_QA_DENSE_MODEL={choice}) to re-embed it, or set LECTURE_QA_DENSE_MODEL={recorded}")


def now_iso() -> str:
    return _now()

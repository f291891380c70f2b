"""Search at 100k-1M chunks: synthetic libraries in PostgreSQL + pgvector (and the local store while it fits).

    .venv/bin/python bench/scale.py --chunks 100000 [--store postgres|local] [--skip-tokens | --tokens-first N]
                                    [--requests 300] [--warmup 20] [--keep] [--out /tmp/scale-results/x.json]

Measures, for one synthetic library: load time, index build times, database (or data dir) size per chunk and per
table, recall@10 of pgvector's HNSW against exact top-10 (numpy over every stored vector) at several
`hnsw.ef_search`, HTTP search p50/p99 of a real `lecture-qa serve` (sequential, after a warm-up) and the RSS of
the API process tree after the warm-up and after the run. Prints a markdown table, writes JSON.

Stand-ins (no corpus of a million lecture chunks exists): the 1,333 real passages of the shared corpus, read from
the ingested PostgreSQL library in /tmp/pgc (text, title, embed_text, location, all-MiniLM-L6-v2 vector, packed
token vectors, BM25 terms, tsvector). Synthetic chunk i is a variant of real passage j = i mod 1333 (variant
k = i div 1333):
    vector  = L2-normalise(v_j + sigma * N(0, I)), sigma = 0.0247: cosine to its source ~0.90 (the mean is
              measured and reported), so the variants of one passage are near neighbours of each other
              (cosine ~0.81) - the hard case for an approximate index;
    text, embed_text, title, location, tokens blob, BM25 terms, tsvector: the source's, unchanged (so bytes per
              chunk and postings per passage are real; a term's document frequency grows with the library);
    document = the variant k of the source's document (real documents hold ~26 passages), named
              "<source name>~v<k>".
Each synthetic chunk is its own canonical chunk (head = id) with a passages row: nothing is collapsed. For the
local store the same rows go into library.sqlite3 and the derived files (FAISS flat, bm25s, token arrays) are
built as `Library._build` builds them except that grouping is skipped (ingest.dedupe would fold the identical
texts of one source's variants into one passage): every chunk is a group of one.

PostgreSQL load: a fresh database migrated by PgLibrary (the real schema); passages_hnsw, passages_fts, the terms
indexes and the secondary chunk indexes are dropped, the tables filled by binary COPY with foreign-key triggers
off (session_replication_role = replica, as pg_restore --disable-triggers), then the indexes are recreated with
maintenance_work_mem = 4GB and max_parallel_maintenance_workers = 2 (each build timed), meta set (passages,
keyword_total, generation 1, the embedder name of /tmp/pgc) and VACUUM ANALYZE run. The server is a pgserver
instance with its defaults (PostgreSQL 16, shared_buffers 128MB).

`--skip-tokens` stores no token vectors (late-interaction reranking is then skipped by the store: a cheaper
search path than the full one); `--tokens-first N` stores them for the first N chunks only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from served import served

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
SIGMA = 0.0247
EVAL = [ROOT.parent / "shared" / "eval" / "dev.jsonl", ROOT.parent / "shared" / "eval" / "dev2.jsonl"]
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
VECTOR_HEAD = struct.pack(">hh", DIM, 0)  # pgvector's binary form: dim, unused, float4 big-endian
NULL = struct.pack(">i", -1)
# Dropped before the load and recreated after it (the hnsw one timed separately: it is the long one).
DEFERRED = ["passages_hnsw", "passages_fts", "terms_passage", "terms_postings", "chunks_doc", "chunks_hash",
            "chunks_head"]


@dataclass
class Source:
    """The real passages the variants are made of, in (document, order) order."""

    ids: list[str]
    doc_index: list[int]  # index into docs
    ords: list[int]
    text: list[str]
    embed_text: list[str]
    embed_hash: list[str]
    location: list[str]  # JSON text
    title: list[str]
    vectors: np.ndarray
    tokens: list[bytes | None]
    keyword_len: list[int]
    fts: list[bytes]  # tsvectorsend(fts): the binary COPY form
    terms: list[list[tuple[str, int]]]
    docs: list[tuple[Any, ...]]  # documents rows (DOC_COLUMNS order)
    embedder: str
    codec: Any = None  # the source library's word-piece codec (ingest.token_codes)
    extra: dict[str, Any] = field(default_factory=dict)


def _server(path: str) -> Any:
    import pgserver

    return pgserver.get_server(path, cleanup_mode=None)


def ensure_source(source_dir: str, corpus: Path) -> None:
    """The real corpus in a postgres library at `source_dir`, ingested by the real pipeline when missing."""
    if (Path(source_dir) / "PG_VERSION").exists():
        return
    from app.backends import build_service
    from app.settings import Settings
    from ingest.pipeline import collect_paths

    print(f"ingesting {corpus} into a postgres library at {source_dir} (once)...", flush=True)
    settings = Settings(store="postgres", database_url=_server(source_dir).get_uri(), pg_token_codec="int8",
                        data_dir=Path(source_dir).parent / "scale-source-scratch", previews=False)
    with build_service(settings) as service:
        service.ingest(collect_paths([corpus])[0])


def read_source(source_dir: str) -> Source:
    import psycopg
    from pgvector.psycopg import register_vector

    from ingest.library import DOC_COLUMNS
    from ingest.token_codes import codec_named

    url = _server(source_dir).get_uri()
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute("SET TRANSACTION READ ONLY")
        embedder = conn.execute("SELECT value FROM meta WHERE key='embedder'").fetchone()[0]
        codec = conn.execute("SELECT value FROM meta WHERE key='token_codec'").fetchone()
        docs = conn.execute(f"SELECT {DOC_COLUMNS} FROM documents ORDER BY id").fetchall()
        rows = conn.execute(
            "SELECT c.id, c.doc_id, c.ord, c.text, c.embed_text, c.embed_hash, c.location::text, c.title, "
            "p.embedding, c.tokens, p.keyword_len, tsvectorsend(p.fts) FROM passages p JOIN chunks c ON c.id = p.id "
            "ORDER BY c.doc_id, c.ord").fetchall()
        terms: dict[str, list[tuple[str, int]]] = {}
        for term, pid, tf in conn.execute("SELECT term, passage_id, tf FROM terms ORDER BY passage_id, term"):
            terms.setdefault(pid, []).append((term, tf))
    doc_pos = {d[0]: i for i, d in enumerate(docs)}
    return Source(
        ids=[r[0] for r in rows], doc_index=[doc_pos[r[1]] for r in rows], ords=[r[2] for r in rows],
        text=[r[3] for r in rows], embed_text=[r[4] for r in rows], embed_hash=[r[5] for r in rows],
        location=[r[6] for r in rows], title=[r[7] for r in rows],
        vectors=np.asarray([r[8].to_numpy() for r in rows], dtype=np.float32),
        tokens=[bytes(r[9]) if r[9] is not None else None for r in rows], keyword_len=[r[10] for r in rows],
        fts=[bytes(r[11]) for r in rows], terms=[terms.get(r[0], []) for r in rows], docs=docs, embedder=embedder,
        codec=codec_named(codec[0] if codec else "int8", DIM))


# ---- the synthetic library ----------------------------------------------------------------------------------
def synthetic_vectors(src: Source, n: int, sigma: float, seed: int) -> tuple[np.ndarray, float]:
    """Vectors of chunks 0..n-1 and their mean cosine to their sources."""
    s = len(src.ids)
    out = np.empty((n, DIM), dtype=np.float32)
    cos_sum = 0.0
    for k in range(0, (n + s - 1) // s):
        m = min(s, n - k * s)
        rng = np.random.default_rng([seed, k])
        v = src.vectors[:m] + sigma * rng.standard_normal((m, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[k * s: k * s + m] = v
        cos_sum += float((v * src.vectors[:m]).sum())
    return out, cos_sum / n


def doc_id(k: int, d: int) -> str:
    return f"{k:08x}{d:08x}"


def chunk_id(src: Source, i: int) -> str:
    s = len(src.ids)
    k, j = divmod(i, s)
    return f"{doc_id(k, src.doc_index[j])}-{src.ords[j]:05d}"


def synthetic_docs(src: Source, n: int) -> list[tuple[Any, ...]]:
    """documents rows: (variant, source document) pairs that hold at least one of the n chunks."""
    s = len(src.ids)
    counts: dict[tuple[int, int], int] = {}
    for i in range(n):
        k, j = divmod(i, s)
        key = (k, src.doc_index[j])
        counts[key] = counts.get(key, 0) + 1
    rows = []
    for (k, d), c in counts.items():
        _, name, title, kind, size, units, unit_label, _, ingested_at, source, content, parsed_as = src.docs[d]
        rows.append((doc_id(k, d), f"{name}~v{k}", title, kind, size, units, unit_label, c, ingested_at, source,
                     f"{content}-v{k}", parsed_as))
    return rows


def has_tokens(i: int, args: argparse.Namespace) -> bool:
    return not args.skip_tokens and (args.tokens_first is None or i < args.tokens_first)


# ---- PostgreSQL ---------------------------------------------------------------------------------------------
def _f(b: bytes | None) -> bytes:
    return NULL if b is None else struct.pack(">i", len(b)) + b


def _row(*fields: bytes | None) -> bytes:
    return struct.pack(">h", len(fields)) + b"".join(_f(x) for x in fields)


def _i4(x: int) -> bytes:
    return struct.pack(">i", x)


def _copy(conn: Any, sql: str, rows: Any, batch_bytes: int = 8 << 20) -> int:
    """Binary COPY of an iterable of encoded rows; the number of rows."""
    count = 0
    with conn.cursor() as cur, cur.copy(sql) as cp:
        buf = [COPY_HEADER]
        size = 0
        for r in rows:
            buf.append(r)
            size += len(r)
            count += 1
            if size >= batch_bytes:
                cp.write(b"".join(buf))
                buf, size = [], 0
        buf.append(COPY_TRAILER)
        cp.write(b"".join(buf))
    return count


def load_postgres(src: Source, vecs: np.ndarray, args: argparse.Namespace, url: str) -> dict[str, Any]:
    import psycopg

    from ingest.pg_library import PgLibrary

    n = len(vecs)
    s = len(src.ids)
    out: dict[str, Any] = {}
    lib = PgLibrary(url, dim=DIM, data_dir=args.scratch / "pg-data", token_codec=args.codec)  # the real schema
    lib.close()
    def recode(blob: bytes | None) -> bytes | None:  # the source's word pieces in this database's codec
        return None if blob is None else lib.codec.encode(src.codec.decode(blob))

    tokens = [recode(b) for b in src.tokens]
    out["token_codec"] = args.codec
    be = vecs.astype(">f4")
    ids = [chunk_id(src, i) for i in range(n)]
    enc = [(x.encode(), t.encode(), e.encode(), h.encode(), b"\x01" + loc.encode(), ti.encode())
           for x, t, e, h, loc, ti in zip(src.ids, src.text, src.embed_text, src.embed_hash, src.location,
                                          src.title, strict=True)]

    def chunks() -> Any:
        for i in range(n):
            k, j = divmod(i, s)
            _, text, embed_text, embed_hash, location, title = enc[j]
            cid = ids[i].encode()
            yield _row(cid, doc_id(k, src.doc_index[j]).encode(), _i4(src.ords[j]), text, embed_text,
                       embed_hash + f"-v{k}".encode(), location, title, None, VECTOR_HEAD + be[i].tobytes(),
                       tokens[j] if has_tokens(i, args) else None, cid)

    def passages() -> Any:
        for i in range(n):
            k, j = divmod(i, s)
            yield _row(ids[i].encode(), doc_id(k, src.doc_index[j]).encode(), VECTOR_HEAD + be[i].tobytes(),
                       _i4(src.keyword_len[j]), src.fts[j])

    def terms() -> Any:
        for i in range(n):
            pid = ids[i].encode()
            dl = _i4(src.keyword_len[i % s])
            for term, tf in src.terms[i % s]:
                yield _row(term.encode(), pid, _i4(tf), dl)

    docs = synthetic_docs(src, n)
    with psycopg.connect(url, autocommit=True) as conn:
        defs = dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname='public' AND "
                                 "indexname = ANY(%s)", (DEFERRED,)).fetchall())
        for name in DEFERRED:
            conn.execute(f"DROP INDEX {name}")
        conn.execute("SET session_replication_role = replica")  # no FK triggers during the load
        timings = {}
        t0 = time.perf_counter()
        with conn.transaction():
            t = time.perf_counter()
            _copy(conn, "COPY documents (id, name, title, kind, size, units, unit_label, chunks, ingested_at, source, "
                  "content, parsed_as) FROM STDIN (FORMAT BINARY)",
                  (_row(d[0].encode(), d[1].encode(), d[2].encode(), d[3].encode(), struct.pack(">q", d[4]),
                        _i4(d[5]), d[6].encode(), _i4(d[7]), d[8].encode(), d[9].encode(), d[10].encode(),
                        d[11].encode()) for d in docs))
            _copy(conn, "COPY names (name, doc_id) FROM STDIN (FORMAT BINARY)",
                  (_row(d[1].encode(), d[0].encode()) for d in docs))
            timings["documents_names"] = time.perf_counter() - t
            t = time.perf_counter()
            _copy(conn, "COPY chunks (id, doc_id, ord, text, embed_text, embed_hash, location, title, contained_in, "
                  "embedding, tokens, head) FROM STDIN (FORMAT BINARY)", chunks())
            timings["chunks"] = time.perf_counter() - t
            print(f"  chunks copied: {timings['chunks']:.0f} s", flush=True)
            t = time.perf_counter()
            _copy(conn, "COPY passages (id, doc_id, embedding, keyword_len, fts) FROM STDIN (FORMAT BINARY)",
                  passages())
            timings["passages"] = time.perf_counter() - t
            t = time.perf_counter()
            out["term_rows"] = _copy(conn, "COPY terms (term, passage_id, tf, dl) FROM STDIN (FORMAT BINARY)",
                                     terms())
            timings["terms"] = time.perf_counter() - t
            print(f"  passages, terms copied: {timings['passages']:.0f} + {timings['terms']:.0f} s", flush=True)
        out["copy_s"] = {k: round(v, 1) for k, v in timings.items()}
        out["copy_total_s"] = round(time.perf_counter() - t0, 1)
        conn.execute("SET session_replication_role = DEFAULT")
        conn.execute("SET maintenance_work_mem = '4GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        if args.index_timeout_min:
            conn.execute(f"SET statement_timeout = '{int(args.index_timeout_min)}min'")
        builds: dict[str, float | str] = {}
        t = time.perf_counter()
        conn.execute("INSERT INTO vocab(term, df) SELECT term, count(*) FROM terms GROUP BY term")
        builds["vocab"] = round(time.perf_counter() - t, 1)
        for name in DEFERRED:
            t = time.perf_counter()
            try:
                conn.execute(defs[name])
                builds[name] = round(time.perf_counter() - t, 1)
            except psycopg.errors.QueryCanceled:
                builds[name] = f"cancelled after {time.perf_counter() - t:.0f} s (statement_timeout)"
            print(f"  index {name}: {builds[name]}", flush=True)
        conn.execute("SET statement_timeout = 0")
        out["index_build_s"] = builds
        keyword_total = sum(src.keyword_len[i % s] for i in range(n))
        conn.execute("UPDATE meta SET value = %s WHERE key = 'passages'", (str(n),))
        conn.execute("UPDATE meta SET value = %s WHERE key = 'keyword_total'", (str(keyword_total),))
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'generation'")
        conn.execute("INSERT INTO meta(key, value) VALUES ('embedder', %s) ON CONFLICT (key) DO UPDATE SET "
                     "value = EXCLUDED.value", (src.embedder,))
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        out["vacuum_analyze_s"] = round(time.perf_counter() - t, 1)
    return out


def pg_sizes(url: str, n: int) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url) as conn:
        db = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        tables = {t: conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0]
                  for t in ("documents", "names", "chunks", "passages", "terms", "vocab")}
        indexes = dict(conn.execute("SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                                    "WHERE relname IN ('chunks', 'passages', 'terms', 'vocab')").fetchall())
        settings = {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in ("server_version", "shared_buffers")}
        settings["pgvector"] = conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()[0]
    return {"db_bytes": db, "db_bytes_per_chunk": round(db / n), "table_bytes": tables,
            "table_bytes_per_chunk": {t: round(b / n) for t, b in tables.items()}, "index_bytes": indexes,
            "settings": settings}


def recall(url: str, vecs: np.ndarray, ids: list[str], queries: np.ndarray, efs: list[int],
           sources: int) -> dict[str, Any]:
    """recall@10 of HNSW (ORDER BY <#> LIMIT 10) against exact top-10 by numpy; recall@100 at the store's ef.

    Also, because the variants of one passage are near-ties: `source_recall`, the share of the exact top-k's
    source passages (id mod sources) that the HNSW top-k holds a variant of, and `score_loss`, the mean over
    queries of (mean exact top-k cosine - mean HNSW top-k cosine)."""
    import psycopg
    from pgvector.psycopg import register_vector

    scores = queries @ vecs.T
    exact100 = np.argsort(-scores, axis=1)[:, :100]
    pos = {cid: i for i, cid in enumerate(ids)}
    out: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        register_vector(conn)
        # the numpy exact top-10 is what PostgreSQL returns without the index (checked on a few queries)
        agree = 0
        with conn.transaction():
            conn.execute("SET LOCAL enable_indexscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            for qi in range(3):
                got = [r[0] for r in conn.execute("SELECT id FROM passages ORDER BY embedding <#> %s LIMIT 10",
                                                  (queries[qi],))]
                agree += len(set(got) & {ids[j] for j in exact100[qi, :10]})
        out["exact_sql_check"] = f"{agree}/30 of the seq-scan top-10 ids equal numpy's"
        for ef, limit in [(ef, 10) for ef in efs] + [(max(efs), 100)]:
            hits, src_hits, src_total, loss, lat = 0, 0, 0, 0.0, []
            conn.execute(f"SET hnsw.ef_search = {ef}")
            conn.commit()
            for qi, q in enumerate(queries):
                t = time.perf_counter()
                got = [pos[r[0]] for r in conn.execute("SELECT id FROM passages ORDER BY embedding <#> %s "
                                                       "LIMIT %s", (q, limit))]
                lat.append(time.perf_counter() - t)
                exact = exact100[qi, :limit]
                hits += len(set(got) & set(exact.tolist()))
                want = {j % sources for j in exact.tolist()}
                src_hits += len(want & {j % sources for j in got})
                src_total += len(want)
                loss += float(scores[qi, exact].mean() - (scores[qi, got].mean() if got else 0.0))
                conn.commit()
            out[f"ef{ef}@{limit}"] = {"recall": round(hits / (limit * len(queries)), 4),
                                      "source_recall": round(src_hits / src_total, 4),
                                      "score_loss": round(loss / len(queries), 5),
                                      "sql_ms_p50": round(1000 * statistics.median(lat), 2)}
    return out


# ---- the local store ----------------------------------------------------------------------------------------
def load_local(src: Source, vecs: np.ndarray, args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    import bm25s
    import faiss

    from ingest.library import Library, Snapshot
    from ingest.textnorm import keyword_tokens
    from ingest.token_vectors import TokenIndex, pack

    int8 = [None if b is None else pack(src.codec.decode(b)) for b in src.tokens]  # the local store's format

    n, s = len(vecs), len(src.ids)
    out: dict[str, Any] = {}
    lib = Library(data_dir, dim=DIM)
    ids = [chunk_id(src, i) for i in range(n)]
    docs = synthetic_docs(src, n)
    t = time.perf_counter()
    with contextlib.closing(sqlite3.connect(lib.db_path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            conn.executemany("INSERT INTO documents(id, name, title, kind, size, units, unit_label, chunks, "
                             "ingested_at, source, content, parsed_as) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", docs)
            conn.executemany("INSERT INTO names(name, doc_id) VALUES (?, ?)", [(d[1], d[0]) for d in docs])
            conn.executemany(
                "INSERT INTO chunks(id, doc_id, ord, text, embed_text, embed_hash, location, title, contained_in, "
                "embedding, tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                ((ids[i], doc_id(i // s, src.doc_index[i % s]), src.ords[i % s], src.text[i % s],
                  src.embed_text[i % s], f"{src.embed_hash[i % s]}-v{i // s}", src.location[i % s], src.title[i % s],
                  None, vecs[i].tobytes(), int8[i % s] if has_tokens(i, args) else None) for i in range(n)))
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('embedder', ?)", (src.embedder,))
            conn.execute("UPDATE meta SET value = '1' WHERE key = 'generation'")
    out["sqlite_load_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    index = faiss.IndexFlatIP(DIM)
    index.add(vecs)
    corpus_by_source = [keyword_tokens(f"{src.title[j]}\n{src.embed_text[j]}") or ["_"] for j in range(s)]
    bm25 = bm25s.BM25()
    bm25.index([corpus_by_source[i % s] for i in range(n)], show_progress=False)
    tokens = TokenIndex.build([int8[i % s] if has_tokens(i, args) else None for i in range(n)], DIM)
    snap = Snapshot(1, {}, [], index, bm25, raw_chunks=n, tokens=tokens)
    lib._write_derived(snap, [[cid] for cid in ids])  # every chunk its own group (see the module docstring)
    out["derived_build_s"] = round(time.perf_counter() - t, 1)
    return out


def dir_bytes(path: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for p in path.rglob("*"):
        if p.is_file():
            top = p.relative_to(path).parts[0] if p.parent == path else str(p.relative_to(path).parent)
            sizes[top] = sizes.get(top, 0) + p.stat().st_size
    return sizes


# ---- HTTP ---------------------------------------------------------------------------------------------------
def questions() -> list[str]:
    return [json.loads(line)["question"] for f in EVAL for line in f.read_text().splitlines() if line.strip()]


def tree_rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a process and the summed VmRSS of its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))

    def status(p: int) -> dict[str, int]:
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            return {}
        return {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in lines) if k in ("VmRSS", "VmHWM")}

    stack, seen = [pid], []
    while stack:
        p = stack.pop()
        seen.append(p)
        stack.extend(children.get(p, []))
    main = status(pid)
    return {"rss_kb": main.get("VmRSS", 0), "hwm_kb": main.get("VmHWM", 0), "processes": len(seen),
            "tree_rss_kb": sum(status(p).get("VmRSS", 0) for p in seen)}


def http_load(env: dict[str, str], qs: list[str], requests: int, warmup: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    with served(env, ready_timeout=1800) as (url, server), httpx.Client(timeout=120) as client:
        out["ready_s"] = round(time.perf_counter() - t0, 1)
        out["rss_ready"] = tree_rss(server.pid)

        def one(q: str) -> tuple[float, dict[str, Any]]:
            t = time.perf_counter()
            r = client.post(f"{url}/api/v1/search", json={"query": q, "top_k": 10})
            r.raise_for_status()
            return time.perf_counter() - t, r.json()

        first, _ = one(qs[0])
        out["first_request_ms"] = round(1000 * first, 1)
        for i in range(1, warmup):
            one(qs[i % len(qs)])
        out["rss_after_warmup"] = tree_rss(server.pid)
        lat, server_ms = [], {}
        for i in range(requests):
            dt, body = one(qs[(warmup + i) % len(qs)])
            lat.append(dt)
            for k, v in (body.get("timings_ms") or {}).items():
                server_ms.setdefault(k, []).append(v)
            if i == 0:
                out["results_first"] = len(body.get("results", []))
        out["rss_after_run"] = tree_rss(server.pid)
    lat.sort()
    out["requests"] = requests
    out["p50_ms"] = round(1000 * lat[len(lat) // 2], 1)
    out["p99_ms"] = round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1)
    out["mean_ms"] = round(1000 * statistics.fmean(lat), 1)
    out["server_timings_p50_ms"] = {k: round(statistics.median(v), 1) for k, v in server_ms.items()
                                    if all(isinstance(x, int | float) for x in v)}
    return out


# ---- main ---------------------------------------------------------------------------------------------------
def table(res: dict[str, Any]) -> str:
    mb = 1 / 1024
    h = res.get("http", {})
    rows = [("store", res["store"]), ("chunks", f"{res['chunks']:,}"), ("token vectors", res["tokens"]),
            ("vector cosine to source (mean)", f"{res['mean_cosine']:.3f} (sigma {res['sigma']})")]
    if res["store"] == "postgres":
        sz = res["sizes"]
        rows += [("load: COPY total", f"{res['load']['copy_total_s']} s"),
                 ("HNSW build (m 16, ef_construction 64, 2 workers)",
                  f"{res['load']['index_build_s'].get('passages_hnsw')} s"),
                 ("other index builds", ", ".join(f"{k} {v} s" for k, v in res["load"]["index_build_s"].items()
                                                  if k != "passages_hnsw")),
                 ("VACUUM ANALYZE", f"{res['load']['vacuum_analyze_s']} s"),
                 ("database size", f"{sz['db_bytes'] / 2**30:.2f} GiB = {sz['db_bytes_per_chunk']:,} B/chunk"),
                 ("per table, B/chunk", ", ".join(f"{t} {b:,}" for t, b in sz["table_bytes_per_chunk"].items())),
                 ("passages_hnsw", f"{sz['index_bytes'].get('passages_hnsw', 0) / 2**20:.0f} MiB")]
        for k, v in res.get("recall", {}).items():
            if k.startswith("ef"):
                ef, at = k[2:].split("@")
                rows.append((f"HNSW recall@{at}, ef_search {ef}",
                             f"{v['recall']:.3f}" + (f"; source passages {v['source_recall']:.3f}, cosine lost "
                                                     f"{v['score_loss']:.4f}" if "source_recall" in v else "")
                             + f" (SQL p50 {v['sql_ms_p50']} ms)"))
    else:
        sz = res["sizes"]
        rows += [("load: SQLite rows", f"{res['load']['sqlite_load_s']} s"),
                 ("derived files build (FAISS flat, bm25s, tokens)", f"{res['load']['derived_build_s']} s"),
                 ("data dir size", f"{sz['total_bytes'] / 2**30:.2f} GiB = {sz['bytes_per_chunk']:,} B/chunk"),
                 ("HNSW recall", "n/a: exact (FAISS flat)")]
    if h:
        rows += [("server ready after", f"{h['ready_s']} s"),
                 (f"HTTP search p50 / p99 ({h['requests']} sequential)", f"{h['p50_ms']} / {h['p99_ms']} ms"),
                 ("server timings p50", ", ".join(f"{k} {v}" for k, v in h["server_timings_p50_ms"].items())),
                 ("API RSS ready / after warm-up / after run",
                  f"{h['rss_ready']['rss_kb'] * mb:.0f} / {h['rss_after_warmup']['rss_kb'] * mb:.0f} / "
                  f"{h['rss_after_run']['rss_kb'] * mb:.0f} MiB (peak {h['rss_after_run']['hwm_kb'] * mb:.0f}; "
                  f"{h['rss_after_run']['processes']} process(es), tree "
                  f"{h['rss_after_run']['tree_rss_kb'] * mb:.0f} MiB)")]
    return "| figure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", type=int, required=True)
    p.add_argument("--store", choices=["postgres", "local"], default="postgres")
    p.add_argument("--skip-tokens", action="store_true", help="store no token vectors (no late interaction)")
    p.add_argument("--tokens-first", type=int, default=None, help="token vectors for the first N chunks only")
    p.add_argument("--codec", choices=["int8", "int4", "sign"], default="int4",
                   help="word-piece codec of the postgres library (LECTURE_QA_PG_TOKEN_CODEC)")
    p.add_argument("--sigma", type=float, default=SIGMA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source-dir", default="/tmp/pgc", help="pgserver dir of the ingested real corpus (read only; "
                   "made from --corpus by the real pipeline when missing)")
    p.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    p.add_argument("--server-dir", default="/tmp/pgscale", help="pgserver dir for the synthetic databases")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/scale-bench"))
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--ef", default="40,100,200")
    p.add_argument("--index-timeout-min", type=float, default=40, help="cancel an index build after this long")
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the database / data dir afterwards")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    n = args.chunks
    tokens = "none" if args.skip_tokens else ("all" if args.tokens_first is None else f"first {args.tokens_first:,}")
    tag = f"{args.store}-{n}" + ("-notokens" if args.skip_tokens else "")
    out_path = args.out or Path("/tmp/scale-results") / f"{tag}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    args.scratch.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    ensure_source(args.source_dir, args.corpus)
    src = read_source(args.source_dir)
    vecs, mean_cos = synthetic_vectors(src, n, args.sigma, args.seed)
    print(f"source: {len(src.ids)} passages, {len(src.docs)} documents; {n:,} synthetic vectors, mean cosine to "
          f"source {mean_cos:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
    res: dict[str, Any] = {"store": args.store, "chunks": n, "tokens": tokens, "sigma": args.sigma,
                           "mean_cosine": round(mean_cos, 4), "source_passages": len(src.ids)}
    from ingest.embedding import make_embedder

    qs = questions()
    queries = np.asarray(make_embedder("onnx-int8").encode(qs), dtype=np.float32)
    env = {**os.environ, "LECTURE_QA_PREVIEWS": "false", "LECTURE_QA_LOG_LEVEL": "warning"}
    if args.store == "postgres":
        import psycopg

        srv = _server(args.server_dir)
        db = f"scale_{n}" + ("_nt" if args.skip_tokens else "")
        with psycopg.connect(srv.get_uri(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db}")
            conn.execute(f"CREATE DATABASE {db}")
        url = srv.get_uri(db)
        try:
            t = time.perf_counter()
            res["load"] = load_postgres(src, vecs, args, url)
            res["load"]["total_s"] = round(time.perf_counter() - t, 1)
            res["sizes"] = pg_sizes(url, n)
            print(table(res), flush=True)
            ids = [chunk_id(src, i) for i in range(n)]
            res["recall"] = recall(url, vecs, ids, queries, [int(x) for x in args.ef.split(",")], len(src.ids))
            res["recall"]["queries"] = len(queries)
            print(json.dumps(res["recall"]), flush=True)
            out_path.write_text(json.dumps(res, indent=1))
            del vecs
            if not args.no_http:
                env |= {"LECTURE_QA_STORE": "postgres", "LECTURE_QA_DATABASE_URL": url,
                        "LECTURE_QA_DATA_DIR": str(args.scratch / "pg-data")}
                res["http"] = http_load(env, qs, args.requests, args.warmup)
        finally:
            if not args.keep:
                with psycopg.connect(srv.get_uri(), autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {db}")
    else:
        data_dir = args.scratch / f"local-{n}"
        shutil.rmtree(data_dir, ignore_errors=True)
        try:
            t = time.perf_counter()
            res["load"] = load_local(src, vecs, args, data_dir)
            res["load"]["total_s"] = round(time.perf_counter() - t, 1)
            sizes = dir_bytes(data_dir)
            total = sum(sizes.values())
            res["sizes"] = {"files": sizes, "total_bytes": total, "bytes_per_chunk": round(total / n)}
            del vecs
            out_path.write_text(json.dumps(res, indent=1))
            if not args.no_http:
                env |= {"LECTURE_QA_STORE": "local", "LECTURE_QA_DATA_DIR": str(data_dir)}
                res["http"] = http_load(env, qs, args.requests, args.warmup)
        finally:
            if not args.keep:
                shutil.rmtree(data_dir, ignore_errors=True)
    out_path.write_text(json.dumps(res, indent=1))
    print(table(res))
    print(f"\nJSON: {out_path}")


if __name__ == "__main__":
    main()

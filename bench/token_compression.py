"""What compressing the word-piece vectors (late-interaction MaxSim rerank) costs in search quality.

    python bench/token_compression.py [--data-dir /tmp/dc] [--cache /tmp/token_compression_f32.npz]
                                      [--centroids 256,1024,4096] [--bits 0,1,2] [--quick]

Opens an existing library (read only: nothing is ingested or written there), re-encodes the embed text of every
indexed passage with the library's embedder to get float32 word-piece vectors (cached in --cache), encodes them
with each codec of ingest/token_codes.py, swaps the codec's `maxsim` into the snapshot in place of the stored
int8 TokenIndex, and runs `evaluate_sets` on ../shared/eval/dev.jsonl and dev2.jsonl. Prints a markdown table:
bytes a word piece, bytes a chunk (mean over the chunks of the library that have pieces), the word-piece part of
the data directory (SQLite blobs + the snapshot's copy) per stored chunk, recall@5 and MRR@10 of both sets, and
the mean time of one MaxSim over the 12 candidates.

Residual codebooks are fitted two ways: on every passage of the library ("fit: all"; the codes then describe the
very pieces they were fitted on, a best case) and cross-fitted ("fit: other half": the documents are split in two
halves and each passage is encoded with the codebook fitted on the half it is not in: a codebook that has not seen
the documents it scores, as one trained once on another corpus would be).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.backends import build_service  # noqa: E402
from app.qa.evaluate import evaluate_sets  # noqa: E402
from app.settings import Settings  # noqa: E402
from ingest import token_codes as tc  # noqa: E402
from ingest.token_vectors import TokenIndex  # noqa: E402

SETS = [ROOT.parent / "shared" / "eval" / "dev.jsonl", ROOT.parent / "shared" / "eval" / "dev2.jsonl"]


class Recorded:
    """Wraps a `maxsim` provider and keeps the calls, to time them again afterwards."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def maxsim(self, query_tokens: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        self.calls.append((query_tokens, rows))
        return self.inner.maxsim(query_tokens, rows)  # type: ignore[no-any-return]

    def ms_per_call(self, repeats: int = 3) -> float | None:
        """Best of `repeats` passes over the recorded calls (the 2 cores are shared), in ms a call."""
        if not self.calls:
            return None
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for q, r in self.calls:
                self.inner.maxsim(q, r)
            best = min(best, time.perf_counter() - t)
        return 1000 * best / len(self.calls)


class CrossFitted:
    """Residual codes where each passage was encoded with the codebook of the half of the documents it is not in:
    decoded with that same codebook."""

    def __init__(self, codecs: list[tc.ResidualCodec], half: np.ndarray, blobs: list[bytes]) -> None:
        self.codecs, self.half, self.blobs = codecs, half, blobs

    def maxsim(self, query_tokens: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        if len(rows) == 0 or len(query_tokens) == 0:
            return None
        decoded = [self.codecs[1 - self.half[r]].decode(self.blobs[r]) for r in rows]
        return tc.maxsim_decoded(np.asarray(query_tokens, dtype=np.float32), decoded)


def float_pieces(svc: Any, snap: Any, data_dir: Path, cache: Path) -> list[np.ndarray]:
    """float32 word-piece vectors of every passage, in passage order: the embedder run again on the embed text of
    each passage's canonical chunk (what ingest packed into int8)."""
    ids = [p.chunk_id for p in snap.passages]
    if cache.exists():
        data = np.load(cache)
        if list(data["ids"]) == ids:
            flat, offsets = data["flat"], data["offsets"]
            return [flat[offsets[i]:offsets[i + 1]] for i in range(len(ids))]
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'library.sqlite3'}?mode=ro", uri=True)) as conn:
        texts = dict(conn.execute("SELECT id, embed_text FROM chunks").fetchall())
    t = time.perf_counter()
    _, tokens = svc.store.embedder.encode_with_tokens([texts[i] for i in ids], batch_size=32)
    print(f"re-encoded {len(ids)} passages in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in tokens])
    np.savez(cache, ids=np.array(ids), flat=np.concatenate(tokens).astype(np.float32), offsets=offsets)
    return [np.asarray(x, dtype=np.float32) for x in tokens]


def stored_pieces(data_dir: Path, dim: int) -> tuple[int, int, int]:
    """(chunks in the library, chunks with word pieces, word pieces stored in SQLite)."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'library.sqlite3'}?mode=ro", uri=True)) as conn:
        chunks, with_pieces, total = conn.execute(
            "SELECT count(*), sum(tokens IS NOT NULL), sum(length(tokens)) FROM chunks").fetchone()
    return int(chunks), int(with_pieces), int(total or 0) // (dim + 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/dc"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/token_compression_f32.npz"))
    ap.add_argument("--centroids", default="256,1024,4096", help="'' for no residual codecs")
    ap.add_argument("--bits", default="0,1,2", help="residual bits a dimension (0: centroid alone)")
    ap.add_argument("--iterations", type=int, default=10, help="k-means iterations")
    ap.add_argument("--quick", action="store_true", help="skip the residual codecs fitted on all passages")
    args = ap.parse_args()

    svc = build_service(Settings(data_dir=args.data_dir))
    svc.warm_up()
    snap = svc.store.library.snapshot()
    stored: TokenIndex | None = snap.tokens
    assert stored is not None, "this library has no word-piece vectors"
    dim = int(stored.values.shape[1])
    chunks, with_pieces, sqlite_pieces = stored_pieces(args.data_dir, dim)
    snap_pieces = int(stored.offsets[-1])
    per_chunk = sqlite_pieces / with_pieces
    floats = float_pieces(svc, snap, args.data_dir, args.cache)
    same_len = sum(len(f) == e - s for f, s, e in zip(floats, stored.offsets[:-1], stored.offsets[1:], strict=True))
    print(f"{len(snap.passages)} passages, {snap_pieces} pieces in the snapshot; {chunks} chunks, {with_pieces} with "
          f"pieces, {sqlite_pieces} pieces in SQLite ({per_chunk:.1f} a chunk); re-encoded piece counts equal the "
          f"stored ones for {same_len}/{len(floats)} passages", file=sys.stderr)

    rows: list[dict[str, Any]] = []

    def run(label: str, provider: Any, bytes_per_piece: int | None, note: str = "") -> None:
        timed = Recorded(provider) if provider is not None else None
        snap.tokens = timed  # the retriever only calls .maxsim(query_tokens, rows)
        t = time.perf_counter()
        res = evaluate_sets(svc, SETS, with_answers=False)
        wall = time.perf_counter() - t
        row = {"codec": label, "bpp": bytes_per_piece, "note": note,
               "dev_r5": res["dev.jsonl"]["recall@5"], "dev_mrr": res["dev.jsonl"]["mrr@10"],
               "dev2_r5": res["dev2.jsonl"]["recall@5"], "dev2_mrr": res["dev2.jsonl"]["mrr@10"],
               "ms": timed.ms_per_call() if timed else None}
        rows.append(row)
        print(f"{label}: dev {row['dev_r5']:.4f}/{row['dev_mrr']:.4f} dev2 {row['dev2_r5']:.4f}/{row['dev2_mrr']:.4f}"
              f" ({wall:.1f} s)", file=sys.stderr)

    def coded(label: str, codec: tc.Codec, per_passage: list[np.ndarray], note: str = "") -> None:
        run(label, tc.CodedTokens.from_vectors(codec, per_passage), codec.bytes_per_piece, note)

    run("no late interaction", None, 0)
    coded("float32 (re-encoded)", tc.Float32Codec(dim), floats)
    run("int8 + fp16 scale, as stored (current)", stored, dim + 2)
    coded("int8 + fp16 scale, of the re-encoded float32", tc.Int8Codec(dim), floats)
    coded("int4 + fp16 scale", tc.Int4Codec(dim), floats)
    coded("sign bits, asymmetric (float query)", tc.SignCodec(dim, "asymmetric"), floats)
    coded("sign bits, Hamming (sign query)", tc.SignCodec(dim, "hamming"), floats)

    # Residual codes: documents split into two halves (alternating over the sorted document ids).
    doc_ids = sorted({p.doc_id for p in snap.passages})
    half_of = {d: i % 2 for i, d in enumerate(doc_ids)}
    half = np.array([half_of[p.doc_id] for p in snap.passages])
    sides = [np.concatenate([f for f, h in zip(floats, half, strict=True) if h == side]) for side in (0, 1)]
    everything = np.concatenate(floats)
    for k in [int(x) for x in args.centroids.split(",") if x]:
        t = time.perf_counter()
        side_centroids = [tc.fit_centroids(s, k, iterations=args.iterations) for s in sides]
        all_centroids = None if args.quick else tc.fit_centroids(everything, k, iterations=args.iterations)
        print(f"k={k}: k-means in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        for bits in [int(x) for x in args.bits.split(",")]:
            fitted = [tc.ResidualCodec.fit(s, k, bits, centroids=c) for s, c in zip(sides, side_centroids, strict=True)]
            blobs = [fitted[1 - h].encode(f) for f, h in zip(floats, half, strict=True)]  # the other half's codebook
            codebook = fitted[0].codebook_bytes
            run(f"residual, {k} centroids, {bits} bit, fit: other half", CrossFitted(fitted, half, blobs),
                fitted[0].bytes_per_piece, f"codebook {codebook / 1e6:.2f} MB")
            if all_centroids is not None:
                whole = tc.ResidualCodec.fit(everything, k, bits, centroids=all_centroids)
                coded(f"residual, {k} centroids, {bits} bit, fit: all", whole, floats,
                      f"codebook {whole.codebook_bytes / 1e6:.2f} MB")
    snap.tokens = stored

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    print(f"\nMachine: {platform.machine()}, {platform.processor() or platform.platform()}; library {args.data_dir}: "
          f"{len(doc_ids)} documents, {chunks} chunks ({with_pieces} with word pieces, {per_chunk:.1f} pieces a "
          f"chunk), {len(snap.passages)} indexed passages. Data dir = SQLite blobs + snapshot copy, per chunk.\n")
    print("| codec | B/piece | B/chunk | data dir KB/chunk | dev r@5 | dev MRR@10 | dev2 r@5 | dev2 MRR@10 "
          "| MaxSim ms | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        bpp = r["bpp"]
        b_chunk = None if bpp is None else bpp * per_chunk
        datadir = None if bpp is None else bpp * (sqlite_pieces + snap_pieces) / chunks / 1000
        print(f"| {r['codec']} | {bpp} | {fmt(b_chunk, ',.0f')} | {fmt(datadir, '.1f')} | {r['dev_r5']:.4f} | "
              f"{r['dev_mrr']:.4f} | {r['dev2_r5']:.4f} | {r['dev2_mrr']:.4f} | {fmt(r['ms'], '.2f')} | {r['note']} |")


if __name__ == "__main__":
    main()

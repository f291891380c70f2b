"""Cold ingest of ../shared/corpus, against the raw encode throughput of the same model on the same chunk texts.

    python bench/ingest.py [--corpus ../shared/corpus] [--backend onnx-int8|sentence-transformers]

Prints seconds, documents, chunks, chunks/s, peak RSS, and the raw `encode()` time of the same embedder over
the chunk texts the library stored, so the pipeline's overhead (parsing, chunking, dedupe, storage) shows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--backend", default="onnx-int8", choices=["onnx-int8", "sentence-transformers"])
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from ingest.embedding import make_embedder
    from ingest.library import Library
    from ingest.pipeline import Pipeline, collect_paths

    t_load = time.perf_counter()
    embedder = make_embedder(args.backend)
    load_s = time.perf_counter() - t_load
    with tempfile.TemporaryDirectory() as tmp:
        library = Library(Path(tmp) / "data", dim=embedder.dim)
        pipeline = Pipeline(library, embedder, batch_size=args.batch_size)
        files, _ = collect_paths([args.corpus])
        report = pipeline.ingest(files)
        assert report.error is None, report.error
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with contextlib.closing(sqlite3.connect(library.db_path)) as conn:
            texts = [r[0] for r in conn.execute("SELECT embed_text FROM chunks ORDER BY doc_id, ord")]
        t0 = time.perf_counter()
        embedder.encode(texts, batch_size=args.batch_size)
        raw_s = time.perf_counter() - t0
    pipeline_cps = report.chunks / report.seconds
    raw_cps = len(texts) / raw_s
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {__import__('os').cpu_count()} cores",
        "backend": args.backend,
        "model_load_s": round(load_s, 2),
        "files": len(files),
        "documents": report.documents,
        "units": report.units,
        "chunks": report.chunks,
        "embedded": report.embedded,
        "duplicates_collapsed": report.collapsed,
        "seconds": round(report.seconds, 2),
        "chunks_per_s": round(pipeline_cps, 1),
        "raw_encode_s_same_chunks": round(raw_s, 2),
        "raw_encode_chunks_per_s": round(raw_cps, 1),
        "pipeline_vs_raw_encode": round(pipeline_cps / raw_cps, 3),
        "peak_rss_mb": round(rss_mb),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

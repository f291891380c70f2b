"""Cold ingest of ../shared/corpus as the service does it, against the raw encode throughput of the same chunks.

    python bench/ingest.py [--corpus ../shared/corpus] [--backend onnx-int8|sentence-transformers] [--no-raw]

The ingest runs through `app.backends.build_service` with the settings of the environment (so whatever the
service does at ingest, OCR, a second embedding model, is timed) into a fresh data dir: every file
`collect_paths` finds in the corpus. Prints the total seconds and chunks/s of the ingest (the figure the issue-21
budget compares: at most 1.3x today's), the model load time apart, documents, chunks, peak RSS, the machine and
its load average, and (unless --no-raw) the raw `encode()` time of the same embedder over the chunk texts the
library stored, so the pipeline's overhead (parsing, chunking, dedupe, storage) shows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--backend", default=None, choices=["onnx-int8", "sentence-transformers"],
                        help="LECTURE_QA_EMBEDDING_BACKEND for this run (default: the environment's setting)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw encode of the stored chunk texts")
    args = parser.parse_args()

    from app.backends import build_service
    from app.settings import Settings
    from ingest.library import Library
    from ingest.pipeline import collect_paths

    load_average = [round(x, 1) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, object] = {"data_dir": Path(tmp) / "data"}
        if args.backend:
            overrides["embedding_backend"] = args.backend
        settings = Settings(**overrides)  # type: ignore[arg-type]
        t_load = time.perf_counter()
        service = build_service(settings)
        service.warm_up()
        load_s = time.perf_counter() - t_load
        files, _ = collect_paths([args.corpus])
        t0 = time.perf_counter()
        with service:
            report = service.ingest(files)
        wall_s = time.perf_counter() - t0
        assert report.error is None, report.error
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result: dict[str, object] = {
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
            "load_average_at_start": load_average,
            "backend": settings.embedding_backend,
            "ocr": settings.ocr,
            "model_load_s": round(load_s, 2),
            "files": len(files),
            "documents": report.documents,
            "units": report.units,
            "chunks": report.chunks,
            "embedded": report.embedded,
            "duplicates_collapsed": report.collapsed,
            "seconds": round(report.seconds, 2),
            "wall_seconds": round(wall_s, 2),
            "chunks_per_s": round(report.chunks / report.seconds, 1),
            "peak_rss_mb": round(rss_mb),
        }
        if not args.no_raw:
            from ingest.embedding import make_embedder

            library = Library(settings.data_dir)
            with contextlib.closing(sqlite3.connect(library.db_path)) as conn:
                texts = [r[0] for r in conn.execute("SELECT embed_text FROM chunks ORDER BY doc_id, ord")]
            embedder = make_embedder(settings.embedding_backend)
            t0 = time.perf_counter()
            embedder.encode(texts, batch_size=16)
            raw_s = time.perf_counter() - t0
            result.update({"raw_encode_s_same_chunks": round(raw_s, 2),
                           "raw_encode_chunks_per_s": round(len(texts) / raw_s, 1),
                           "pipeline_vs_raw_encode": round(report.chunks / report.seconds / (len(texts) / raw_s), 3)})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Queued ingest throughput on the postgres store with 1 and 2 `lecture-qa worker` processes.

Each run gets a fresh database on a local PostgreSQL (the pgserver wheel), queues one job per corpus file
(`lecture-qa ingest --queue` does the same), starts N worker processes and times from their start until every
job has ended. Workers get LECTURE_QA_EMBEDDING_THREADS (default 1) threads each, so the comparison shows
whether throughput follows the cores given to workers (2 workers x 1 thread on the 2-core VM) rather than a
fixed figure for one machine.

    .venv/bin/python bench/workers.py [--corpus ../shared/corpus] [--workers 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(server, corpus: Path, workers: int, threads: int, scratch: Path) -> dict:
    from ingest.embedding import make_embedder
    from ingest.pg_jobs import JobQueue
    from ingest.pg_library import PgLibrary
    from ingest.pipeline import collect_paths

    name = f"bench_{uuid.uuid4().hex[:8]}"
    server.psql(f"CREATE DATABASE {name};")
    url = server.get_uri(name)
    embedder = make_embedder("onnx-int8")
    lib = PgLibrary(url, dim=embedder.dim, data_dir=scratch / "lib")
    lib.ensure_embedder(embedder.name)
    queue = JobQueue(lib)
    files, _ = collect_paths([corpus])
    jobs = [queue.enqueue([f])["id"] for f in files]
    env = {**os.environ, "LECTURE_QA_STORE": "postgres", "LECTURE_QA_DATABASE_URL": url,
           "LECTURE_QA_EMBEDDING_THREADS": str(threads), "LECTURE_QA_PREVIEWS": "false",
           "LECTURE_QA_DATA_DIR": str(scratch / "worker")}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--once", "--poll", "0.2"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    for p in procs:
        p.wait()
    seconds = time.perf_counter() - start
    states = [queue.get(j) for j in jobs]
    chunks = sum((s or {}).get("report", {}).get("chunks", 0) for s in states)
    done = sum(1 for s in states if s and s["state"] == "done")
    lib.close()
    return {"workers": workers, "threads_each": threads, "jobs": len(jobs), "done": done, "chunks": chunks,
            "seconds": round(seconds, 1), "chunks_per_second": round(chunks / seconds, 1)}


def main() -> int:
    import pgserver

    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lq-workers-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        rows = [run(server, args.corpus, n, args.threads, Path(tmp) / f"w{n}") for n in args.workers]
        server.cleanup()
    base = rows[0]["chunks_per_second"]
    print("| workers | threads each | jobs done | chunks | seconds | chunks/s | vs first |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['threads_each']} | {r['done']}/{r['jobs']} | {r['chunks']} | {r['seconds']} | "
              f"{r['chunks_per_second']} | {r['chunks_per_second'] / base:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What parse isolation costs: parse + chunk every file of the corpus in this process, then in a parse worker.

    python bench/parse_isolation.py [--corpus ../shared/corpus] [--rounds 2]

Both ways run in one process, alternating rounds, after a warm-up of each, so that machine load hits both
alike. Prints seconds per round for each, their ratio, and what starting a worker costs (paid once per process,
and again after a worker was stopped by a limit).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from ingest.embedding import make_embedder
    from ingest.isolation import IsolatedRunner
    from ingest.parse_job import FileParser, ParseSettings, worker_init, worker_parse

    embedder = make_embedder("onnx-int8")
    settings = ParseSettings(500 * 2**20, chunk_tokens=embedder.max_tokens)
    tokenizer = embedder.tokenizer_json()
    files = [(p.relative_to(args.corpus).as_posix(), p.read_bytes())
             for p in sorted(Path(args.corpus).rglob("*")) if p.is_file()]
    t0 = time.perf_counter()
    probe = IsolatedRunner(worker_init, tokenizer)
    probe.call(worker_parse, "probe.md", b"# Probe\n\nOne small file: the first call includes the start.\n", settings)
    start_s = time.perf_counter() - t0
    probe.close()
    ways = {"in_process": FileParser(settings, embedder.count_tokens, tokenizer=tokenizer, isolate=False),
            "isolated": FileParser(settings, embedder.count_tokens, tokenizer=tokenizer, isolate=True)}
    times: dict[str, list[float]] = {k: [] for k in ways}
    chunks: dict[str, int] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms both up (imports, the worker's start)
        for name, way in ways.items():
            t = time.perf_counter()
            chunks[name] = sum(len(way.parse(n, data).chunks) for n, data in files)
            if round_:
                times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({"files": len(files), "chunks": chunks, "seconds_per_round": times,
                      "isolated_over_in_process": round(best["isolated"] / best["in_process"], 3),
                      "worker_start_s": round(start_s, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

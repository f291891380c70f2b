"""Latency and throughput of search and ask over HTTP against a real server on the shared corpus.

    python bench/query.py [--data-dir DIR] [--requests 200] [--workers 1] [--sentence-cache N]

Ingests ../shared/corpus into DIR when it is empty, starts `lecture-qa serve` on a free port, then runs
1, 8 and 32 concurrent clients (asyncio, keep-alive HTTP/1.1) for /api/v1/search and /api/v1/ask, and prints
p50/p95/p99 latency, requests per second and errors, next to the in-process time to embed one query.
`ask_new` asks every question of ../shared/eval/dev.jsonl once, one client, before anything else is asked:
questions the server has never seen (sentence vectors are cached, so the 12 repeated /ask questions get
faster after their first round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from served import served

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = [
    "what does the forget gate in an LSTM do?", "why do gradients vanish in RNNs?", "what is teacher forcing?",
    "how does attention help seq2seq models?", "GRU update gate equation", "what is truncated BPTT?",
    "difference between LSTM and GRU", "what is multi-head attention?", "positional encoding in transformers",
    "how does beam search work?", "gradient clipping threshold", "bidirectional RNN hidden states",
]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


class Connection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the load generator shares the server's 2 cores,
    so it must cost little (httpx spent 2.2 ms of CPU a request here, this about 0.3 ms)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        payload = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, path: str, concurrency: int, total: int,
               queries: list[str] = QUERIES) -> dict[str, float]:
    host, port = url.split("//")[1].split(":")
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    def body(q: str) -> dict:
        return {"query": q, "top_k": 5} if path.endswith("search") else {"question": q}

    async def worker() -> None:
        nonlocal errors
        conn = Connection(host, int(port))
        try:
            for i in counter:
                t0 = time.perf_counter()
                try:
                    ok = await conn.post(path, body(queries[i % len(queries)])) == 200
                except (OSError, asyncio.IncompleteReadError):
                    ok = False
                    conn.close()
                    conn = Connection(host, int(port))
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += not ok
        finally:
            conn.close()

    warm = Connection(host, int(port))
    await warm.post(path, body("warm up"))
    warm.close()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"clients": concurrency, "requests": total, "p50_ms": round(pct(latencies, 50), 1),
            "p95_ms": round(pct(latencies, 95), 1), "p99_ms": round(pct(latencies, 99), 1),
            "rps": round(total / wall, 1), "errors": errors}


def embed_time_ms(backend: str) -> float:
    from ingest.embedding import make_embedder

    emb = make_embedder(backend)
    for q in QUERIES:
        emb.encode([q], batch_size=1)
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        emb.encode([QUERIES[i % len(QUERIES)]], batch_size=1)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--ask-requests", type=int, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--backend", default="onnx-int8")
    parser.add_argument("--sentence-cache", type=int, default=None, help="LECTURE_QA_SENTENCE_CACHE for the server")
    parser.add_argument("--questions", default=str(ROOT.parent / "shared" / "eval" / "dev.jsonl"))
    args = parser.parse_args()
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="lecture-qa-bench-")) / "data"
    env = {**os.environ, "LECTURE_QA_DATA_DIR": str(data_dir), "LECTURE_QA_EMBEDDING_BACKEND": args.backend}
    if args.sentence_cache is not None:
        env["LECTURE_QA_SENTENCE_CACHE"] = str(args.sentence_cache)
    qa = Path(args.questions)
    new_questions = [json.loads(line)["question"] for line in qa.read_text().splitlines() if line.strip()] \
        if qa.is_file() else []
    if not (data_dir / "library.sqlite3").exists():
        subprocess.run([sys.executable, "-m", "app.cli", "ingest", args.corpus, "--quiet"], cwd=ROOT, env=env,
                       check=True, stdout=subprocess.DEVNULL)
    with served(env, workers=args.workers) as (url, _):
        results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "server_workers": args.workers,
                   "backend": args.backend, "sentence_cache": env.get("LECTURE_QA_SENTENCE_CACHE", "default"),
                   "embed_one_query_ms_in_process": embed_time_ms(args.backend), "search": [], "ask": []}
        for c in (1, 8, 32):
            results["search"].append(asyncio.run(load(url, "/api/v1/search", c, args.requests)))
        if new_questions:
            results["ask_new"] = asyncio.run(load(url, "/api/v1/ask", 1, len(new_questions), new_questions))
        for c in (1, 8, 32):
            results["ask"].append(asyncio.run(load(url, "/api/v1/ask", c, args.ask_requests)))
        results["search_p50_over_embed"] = round(results["search"][0]["p50_ms"]
                                                 / results["embed_one_query_ms_in_process"], 2)
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

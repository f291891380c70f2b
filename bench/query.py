"""Latency of search and ask over HTTP against a real server on the shared corpus, in units of one query embedding.

    python bench/query.py [--data-dir DIR] [--clients 1,2] [--workers 1] [--sentence-cache N]

Ingests ../shared/corpus into DIR when it is empty, starts `lecture-qa serve` on a free port and runs the load
generator (asyncio, keep-alive HTTP/1.1) on the same machine:
- the unit: the median time to embed one question in this process with the bare MiniLM embedder
  (`ingest.embedding`, one query at a time), measured in the same run before and after the HTTP loads, so the
  figures compare across machines and across loads of a shared machine (the issue-21 targets: search p50 <= 40
  units, ask p50 <= 80 units);
- /api/v1/search: every question of ../shared/eval/dev.jsonl and dev2.jsonl (top_k 5), with 1 client and with
  2 concurrent clients (--clients), p50/p90/p99 in ms and in units, requests/s;
- /api/v1/ask: questions the server has never answered (its sentence-vector cache would make a repeated
  question as cheap as a search): the dev + dev2 questions dealt alternately into one part per client count, so
  each count gets its own new questions of the same mix;
- 2 clients vs 1: the p50 ratio (how much two concurrent requests slow each other; 2.0 = no parallelism) and
  the throughput ratio;
- stages: the p50 of every key of the responses' `timings_ms` (search: total; ask: retrieve, answer, total, and
  whatever stages the service reports) and each stage's share of the total, so a reranker's cost shows.
--repeated also runs the old check of 12 questions asked over and over (cache hits) at each client count.
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
from typing import Any

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

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
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
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _timings(body: bytes) -> dict[str, float]:
    try:
        timings = json.loads(body).get("timings_ms") or {}
    except ValueError:
        return {}
    return {k: float(v) for k, v in timings.items() if isinstance(v, int | float)}


async def load(url: str, path: str, concurrency: int, total: int, queries: list[str]) -> dict:
    """`total` requests from `concurrency` keep-alive clients, question i = queries[i % len]."""
    host, port = url.split("//")[1].split(":")
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
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
                    status, payload = await conn.post(path, body(queries[i % len(queries)]))
                    ok = status == 200
                except (OSError, asyncio.IncompleteReadError):
                    ok, payload = False, b""
                    conn.close()
                    conn = Connection(host, int(port))
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += not ok
                for stage, ms in _timings(payload).items():
                    stages.setdefault(stage, []).append(ms)
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    out: dict[str, Any] = {"clients": concurrency, "requests": total, "p50_ms": round(pct(latencies, 50), 1),
           "p90_ms": round(pct(latencies, 90), 1), "p99_ms": round(pct(latencies, 99), 1),
           "rps": round(total / wall, 2), "errors": errors}
    if stages:
        totals = sum(stages.get("total", [])) or None
        out["stages_p50_ms"] = {k: round(statistics.median(v), 1) for k, v in stages.items()}
        if totals and len(stages) > 1:
            out["stages_share_of_total"] = {k: round(sum(v) / totals, 3) for k, v in stages.items() if k != "total"}
    return out


async def warm(url: str) -> None:
    """One search and one ask, so the first measured request pays no lazy loading."""
    host, port = url.split("//")[1].split(":")
    conn = Connection(host, int(port))
    await conn.post("/api/v1/search", {"query": "warm up the server", "top_k": 5})
    await conn.post("/api/v1/ask", {"question": "warm up the server"})
    conn.close()


def embed_time_ms(backend: str, queries: list[str], rounds: int = 200) -> float:
    """Median time to embed one question, one at a time, with the bare MiniLM embedder in this process."""
    from ingest.embedding import make_embedder

    emb = make_embedder(backend)
    for q in queries[:12]:
        emb.encode([q], batch_size=1)
    times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        emb.encode([queries[i % len(queries)]], batch_size=1)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def questions(paths: list[Path]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if p.is_file():
            out += [json.loads(line)["question"] for line in p.read_text().splitlines() if line.strip()]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--clients", default="1,2", help="client counts, comma-separated (1 and 2 for the ratio)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--backend", default="onnx-int8", help="the unit's embedder and the server's")
    parser.add_argument("--sentence-cache", type=int, default=None, help="LECTURE_QA_SENTENCE_CACHE for the server")
    parser.add_argument("--questions", nargs="+", type=Path,
                        default=[ROOT.parent / "shared" / "eval" / "dev.jsonl",
                                 ROOT.parent / "shared" / "eval" / "dev2.jsonl"])
    parser.add_argument("--repeated", type=int, default=0,
                        help="also ask the 12 built-in questions this many times at each client count")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="lecture-qa-bench-")) / "data"
    env = {**os.environ, "LECTURE_QA_DATA_DIR": str(data_dir), "LECTURE_QA_EMBEDDING_BACKEND": args.backend}
    if args.sentence_cache is not None:
        env["LECTURE_QA_SENTENCE_CACHE"] = str(args.sentence_cache)
    asked = questions(args.questions) or QUERIES
    if not (data_dir / "library.sqlite3").exists():
        subprocess.run([sys.executable, "-m", "app.cli", "ingest", args.corpus, "--quiet"], cwd=ROOT, env=env,
                       check=True, stdout=subprocess.DEVNULL)
    with served(env, workers=args.workers) as (url, _):
        unit_before = embed_time_ms(args.backend, asked)
        asyncio.run(warm(url))
        results: dict = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                         "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
                         "server_workers": args.workers, "backend": args.backend,
                         "sentence_cache": env.get("LECTURE_QA_SENTENCE_CACHE", "default"),
                         "questions": len(asked), "search": [], "ask_new": []}
        for c in clients:
            results["search"].append(asyncio.run(load(url, "/api/v1/search", c, len(asked), asked)))
        for n, c in enumerate(clients):  # each client count its own never-asked questions
            part = asked[n::len(clients)]
            results["ask_new"].append(asyncio.run(load(url, "/api/v1/ask", c, len(part), part)))
        if args.repeated:
            results["ask_repeated"] = [asyncio.run(load(url, "/api/v1/ask", c, args.repeated, QUERIES))
                                       for c in clients]
        unit_after = embed_time_ms(args.backend, asked)
    unit = (unit_before + unit_after) / 2
    results["unit_ms"] = {"embed_one_query_before": round(unit_before, 2), "after": round(unit_after, 2),
                          "unit": round(unit, 2)}
    one = {k: results[k][0] for k in ("search", "ask_new")}
    results["in_units_1_client"] = {f"{k}_{q}": round(one[k][f"{q}_ms"] / unit, 1)
                                    for k in one for q in ("p50", "p90")}
    results["targets_met"] = {"search_p50 <= 40 units": results["in_units_1_client"]["search_p50"] <= 40,
                              "ask_p50 <= 80 units": results["in_units_1_client"]["ask_new_p50"] <= 80}
    if 1 in clients and 2 in clients:
        i1, i2 = clients.index(1), clients.index(2)
        results["two_clients_vs_one"] = {
            k: {"p50_ratio": round(results[k][i2]["p50_ms"] / results[k][i1]["p50_ms"], 2),
                "throughput_ratio": round(results[k][i2]["rps"] / results[k][i1]["rps"], 2)}
            for k in ("search", "ask_new")}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

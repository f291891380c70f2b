"""The cross-encoder's share of search and ask, in units of one bare MiniLM query embedding measured in the same
run, and what two concurrent requests cost each other at 1 or 2 threads per cross-encoder call.

    python bench/reader.py --data-dir DIR [--rounds 2]

In process (no HTTP), on an ingested library: per question of QUERIES, the p50 of a bare query embedding, of
search and of ask with the reader off and on (its (question, text) cache emptied before each call, so every
call reads), then the same with two threads asking at once.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from query import QUERIES  # noqa: E402  (bench/ is sys.path[0]: the same questions as bench/query.py)


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(data_dir: Path, threads: int, queries: list[str],
            rounds: int) -> tuple[int, float, dict[str, float], float]:
    from app.backends import build_service
    from app.settings import Settings

    service = build_service(Settings(data_dir=data_dir, previews=False, reader_threads=threads))
    service.warm_up()
    store, answerer = service.store, service.answerer
    reader = store.reader  # type: ignore[attr-defined]
    embedder = store.embedder  # type: ignore[attr-defined]
    reader._cache_size = 0  # every call reads

    def search(q: str) -> None:
        service.search(q, 5)

    def ask(q: str) -> None:
        service.ask(q)

    def off(fn: Callable[[str], None], q: str) -> None:
        store.retriever.reader = answerer.reader = None  # type: ignore[attr-defined]
        try:
            fn(q)
        finally:
            store.retriever.reader = answerer.reader = reader  # type: ignore[attr-defined]

    search(QUERIES[-1]), ask(QUERIES[-1])
    t: dict[str, list[float]] = {k: [] for k in ("embed", "search_off", "search", "ask_off", "ask")}
    for _ in range(rounds):
        for q in queries:
            t["embed"].append(timed(embedder.encode, [q], 1))
            t["search_off"].append(timed(off, search, q))
            t["search"].append(timed(search, q))
            t["ask_off"].append(timed(off, ask, q))
            t["ask"].append(timed(ask, q))
    pair: list[float] = []  # two requests at once

    def worker(qs: list[str]) -> None:
        for q in qs:
            pair.append(timed(search, q))

    a = threading.Thread(target=worker, args=(queries[::2] * rounds,))
    b = threading.Thread(target=worker, args=(queries[1::2] * rounds,))
    a.start(), b.start()
    a.join(), b.join()
    service.close()
    return threads, p50(t["embed"]), {k: p50(v) for k, v in t.items()}, p50(pair)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=len(QUERIES), help="how many of QUERIES")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="reader threads to compare")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}")
    rows = [measure(args.data_dir, threads, QUERIES[: args.queries], args.rounds) for threads in args.threads]
    print("| reader threads | embed ms (1 unit) | search off / on (units) | reader share of search | ask off / on "
          "(units) | reader share of ask | search, 2 at once (units) |")
    print("|---|---|---|---|---|---|---|")
    for threads, unit, m, two in rows:
        print(f"| {threads} | {unit:.1f} | {m['search_off'] / unit:.1f} / {m['search'] / unit:.1f} | "
              f"{(m['search'] - m['search_off']) / m['search']:.0%} | {m['ask_off'] / unit:.1f} / "
              f"{m['ask'] / unit:.1f} | {(m['ask'] - m['ask_off']) / m['ask']:.0%} | {two / unit:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

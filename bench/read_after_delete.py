"""Read-after-delete over HTTP with several workers: how many searches return a document already deleted.

    python bench/read_after_delete.py [--seconds 60] [--workers 2] [--searches-per-delete 10]

Starts `lecture-qa serve` with 2 workers over a library of the bundled sample lectures, then for `--seconds`:
uploads a small unique deck, deletes it, and as soon as the DELETE has returned sends searches for the deck's
words, each on a new connection (so the kernel spreads them over the workers). Prints the number of deletes,
searches, and `stale`: searches that returned the deleted deck (as a result or an also_at place); it must be 0.
Also prints, measured in-process on the same library, what the per-search generation check costs
(`Library.snapshot()` with the check, against reading the generation on a new connection each time).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from served import served

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def check_cost_us(data_dir: Path, calls: int = 20000) -> dict[str, float]:
    from ingest.library import GENERATION, Library

    lib = Library(data_dir)
    lib.snapshot()

    def per_call(fn) -> float:
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best.append((time.perf_counter() - t0) / calls * 1e6)
        return round(min(best), 2)

    def fresh_connection() -> None:
        with contextlib.closing(lib._connect()) as conn:
            conn.execute(GENERATION).fetchone()

    return {"snapshot_with_check_us": per_call(lib.snapshot), "generation_kept_connection_us": per_call(
        lib.generation), "generation_new_connection_us": per_call(fresh_connection)}


def search_on_new_connection(port: int, query: dict) -> dict:
    """One search on a new TCP connection (http.client: a new httpx.Client costs ~100 ms of SSL setup here)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/api/v1/search", json.dumps(query), {"Content-Type": "application/json"})
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--searches-per-delete", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lecture-qa-rad-") as tmp:
        return run(args, Path(tmp) / "data")


def run(args: argparse.Namespace, data_dir: Path) -> int:
    env = {**os.environ, "LECTURE_QA_DATA_DIR": str(data_dir)}
    subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(ROOT / "examples" / "lectures"), "--quiet"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    deletes = searches = stale = 0
    latencies: list[float] = []
    with served(env, workers=args.workers) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            word = f"zq{deletes:05d}x"
            text = (f"The {word} cell\nThe {word} cell keeps a {word} state across the time steps of a "
                    f"sequence, and the {word} gate decides what to forget.")
            up = httpx.post(f"{url}/api/v1/documents", files=[("files", (f"{word}.txt", text.encode()))],
                            timeout=120).json()
            doc_id = up["files"][0]["document_id"]
            assert httpx.delete(f"{url}/api/v1/documents/{doc_id}", timeout=120).status_code == 200
            deletes += 1
            for _ in range(args.searches_per_delete):
                t0 = time.perf_counter()
                body = search_on_new_connection(port, {"query": f"{word} cell state", "top_k": 5})
                latencies.append((time.perf_counter() - t0) * 1000)
                searches += 1
                places = [r["document"]["id"] for r in body["results"]]
                places += [a["document"]["id"] for r in body["results"] for a in r["also_at"]]
                stale += doc_id in places
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "server_workers": args.workers,
              "seconds": args.seconds, "deletes": deletes, "searches_after_delete": searches, "stale": stale,
              "search_p50_ms_new_connection": round(statistics.median(latencies), 2) if latencies else None,
              **check_cost_us(data_dir)}
    print(json.dumps(result, indent=2))
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())

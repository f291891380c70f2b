"""Soak a real `lecture-qa serve`: mixed search / ask / upload / delete from N clients, server RSS sampled.

    python bench/soak.py [--seconds 600] [--clients 8] [--warmup 30] [--sample 3]

Ingests examples/lectures into a temporary data dir, starts the server on a free port, and runs the clients for
`--seconds`. Each client loops: search 50%, ask 30%, upload 10% (a small new lecture note), delete 10% (one of
the soak's own uploads). Prints per-operation count, p50/p95 latency and errors, and the RSS of the server
process tree (server, parse workers, forkserver): the mean over the first minute after the warm-up, over the last
minute, and the drift between them. A steady server drifts by a few percent; a leak grows with the run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
from served import served

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What does the forget gate do?", "Why do gradients vanish in RNNs?", "What is attention?",
             "How does a GRU differ from an LSTM?", "What is teacher forcing?", "What is backpropagation through time?",
             "What is the context vector of a seq2seq model?", "How are attention weights computed?"]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss_mb(root: int) -> float:
    """Resident memory of `root` and all its descendants, in MiB (from /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            children[ppid].append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * _PAGE
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return total / 2**20


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


class Soak:
    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_samples: list[str] = []
        self.uploaded: list[str] = []
        self.lock = threading.Lock()
        self.counter = 0
        self.rng = random.Random(seed)

    def _note(self) -> tuple[str, bytes]:
        with self.lock:
            self.counter += 1
            n = self.counter
        text = (f"# Soak note {n}\n\nSoak note number {n} explains that gate {n} reads the cell state and that "
                f"peephole {n} connects the cell to the gates.\n\n## Part two of note {n}\n\nThe decoder of note "
                f"{n} attends over all encoder states with softmax weights.\n")
        return f"soak-{n}.md", text.encode()

    def one(self, client: httpx.Client, rng: random.Random) -> None:
        roll = rng.random()
        if roll < 0.5:
            op, call = "search", lambda: client.post("/api/v1/search", json={"query": rng.choice(QUESTIONS)})
        elif roll < 0.8:
            op, call = "ask", lambda: client.post("/api/v1/ask", json={"question": rng.choice(QUESTIONS)})
        elif roll < 0.9:
            name, data = self._note()
            op, call = "upload", lambda: client.post("/api/v1/documents", files=[("files", (name, data))])
        else:
            with self.lock:
                doc = self.uploaded.pop(rng.randrange(len(self.uploaded))) if self.uploaded else None
            if doc is None:
                return
            op, call = "delete", lambda: client.delete(f"/api/v1/documents/{doc}")
        start = time.perf_counter()
        try:
            r = call()
            ok = r.status_code < 300
            detail = f"{op} {r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            ok, detail, r = False, f"{op} {type(exc).__name__}: {exc}", None
        elapsed = time.perf_counter() - start
        with self.lock:
            self.latencies[op].append(elapsed)
            if not ok:
                self.errors[op] += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append(detail)
            elif op == "upload" and r is not None:
                self.uploaded.extend(f["document_id"] for f in r.json()["files"] if f.get("document_id"))

    def client_loop(self, stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not stop.is_set():
                self.one(client, rng)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=30, help="seconds before the first RSS window starts")
    parser.add_argument("--sample", type=float, default=3, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = {**os.environ, "LECTURE_QA_DATA_DIR": str(data)}
        subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(ROOT / "examples" / "lectures"), "--quiet"],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        with served(env) as (url, server):
            samples: list[tuple[float, float]] = []
            soak = Soak(url, args.seed)
            stop = threading.Event()
            t0 = time.monotonic()

            def sampler() -> None:
                while not stop.is_set():
                    samples.append((time.monotonic() - t0, tree_rss_mb(server.pid)))
                    stop.wait(args.sample)

            threads = [threading.Thread(target=sampler, daemon=True)]
            threads += [threading.Thread(target=soak.client_loop, args=(stop, args.seed + i), daemon=True)
                        for i in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join(150)
            alive = server.poll() is None and httpx.get(f"{url}/readyz", timeout=10).status_code == 200

    window = min(60.0, max((args.seconds - args.warmup) / 2, args.sample))
    first = [m for t, m in samples if args.warmup <= t < args.warmup + window]
    last = [m for t, m in samples if t >= args.seconds - window]
    first_mean = statistics.fmean(first) if first else float("nan")
    last_mean = statistics.fmean(last) if last else float("nan")
    report = {
        "seconds": args.seconds, "clients": args.clients, "server_ready_after": alive,
        "operations": {op: {"count": len(v), "p50_ms": round(pct(v, 0.5) * 1000, 1),
                            "p95_ms": round(pct(v, 0.95) * 1000, 1), "errors": soak.errors.get(op, 0)}
                       for op, v in sorted(soak.latencies.items())},
        "error_samples": soak.error_samples,
        "rss_mb": {"samples": len(samples), "window_s": window, "first_window_mean": round(first_mean, 1),
                   "last_window_mean": round(last_mean, 1), "drift_mb": round(last_mean - first_mean, 1),
                   "drift_pct": round(100 * (last_mean - first_mean) / first_mean, 1) if first else None,
                   "max": round(max((m for _, m in samples), default=0.0), 1)},
    }
    print(json.dumps(report, indent=2))
    return 0 if alive and not any(soak.errors.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The postgres store when its database misbehaves: how long requests take to get their 503 while PostgreSQL is
frozen (SIGSTOP), how soon searches answer again after it is thawed, and how soon a `lecture-qa worker` that
lived through a stop (or a restart) of PostgreSQL finishes a job queued once it is back.

A PostgreSQL of its own (tests/pg_instance.py: pgserver's binaries, TCP on 127.0.0.1), a real `lecture-qa serve`
(1 worker) over the sample lectures, and a real `lecture-qa worker`, all on this machine.

    .venv/bin/python bench/pg_outages.py [--clients 50] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "examples" / "lectures"


def _search(url: str) -> tuple[int, bool, float]:
    start = time.monotonic()
    r = httpx.post(f"{url}/api/v1/search", json={"query": "what does the forget gate do?"}, timeout=300)
    return r.status_code, "retry-after" in r.headers, time.monotonic() - start


def _burst(url: str, n: int) -> list[tuple[int, bool, float]]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: _search(url), range(n)))


def _env(url: str) -> dict[str, str]:
    return {"LECTURE_QA_STORE": "postgres", "LECTURE_QA_DATABASE_URL": url, "LECTURE_QA_PREVIEWS": "false"}


def _summary(rows: list[tuple[int, bool, float]]) -> dict:
    times = sorted(t for _, _, t in rows)
    codes: dict[str, int] = {}
    for s, _, _ in rows:
        codes[str(s)] = codes.get(str(s), 0) + 1
    return {"codes": codes, "retry_after_on_503": all(ra for s, ra, _ in rows if s == 503),
            "p50_s": round(statistics.median(times), 2), "max_s": round(times[-1], 2), "min_s": round(times[0], 2)}


def api_rounds(pg, tmp: Path, clients: int, rounds: int) -> list[dict]:
    from app.backends import build_postgres_store
    from app.settings import Settings
    from ingest.embedding import make_embedder
    from ingest.pipeline import collect_paths
    from tests.server import Server

    url = pg.create_database()
    store = build_postgres_store(Settings(store="postgres", database_url=url, data_dir=tmp / "s"),
                                 make_embedder("onnx-int8"))
    store.ingest(collect_paths([SAMPLES])[0])
    store.close()
    api = Server(tmp / "api", env=_env(url))
    out = []
    try:
        api.wait_ready()
        for _ in range(rounds):
            warm = _burst(api.url, clients)
            try:
                pg.freeze(everything=False)
                half = _burst(api.url, clients)
                pg.freeze(everything=True)
                hung = _burst(api.url, clients)
            finally:
                pg.thaw()
                thawed = time.monotonic()
            while _search(api.url)[0] != 200:
                time.sleep(0.1)
            back = time.monotonic() - thawed
            out.append({"clients": clients, "before": _summary(warm), "postmaster_stopped": _summary(half),
                        "all_stopped": _summary(hung), "first_200_after_thaw_s": round(back, 2)})
            time.sleep(2)
    finally:
        api.stop()
    return out


def worker_rounds(pg, tmp: Path, down_s: float) -> dict:
    from ingest.embedding import make_embedder
    from ingest.errors import StorageUnavailable
    from ingest.pg_jobs import JobQueue
    from ingest.pg_library import PgLibrary
    from ingest.pipeline import SourceFile

    url = pg.create_database()
    lib = PgLibrary(url, dim=make_embedder("onnx-int8").dim, data_dir=tmp / "lib")
    queue = JobQueue(lib)
    log = open(tmp / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--poll", "0.2"], cwd=ROOT,
                              env={**os.environ, **_env(url), "LECTURE_QA_DATA_DIR": str(tmp / "w")},
                              stdout=log, stderr=subprocess.STDOUT)
    files = sorted(p for p in SAMPLES.iterdir() if p.is_file())

    def job(path: Path) -> str:
        while True:
            try:
                return str(queue.enqueue([SourceFile(path.name, data=path.read_bytes(), source="upload")])["id"])
            except StorageUnavailable:
                time.sleep(0.05)

    def wait(job_id: str) -> dict:
        while True:
            try:
                j = queue.get(job_id)
                if j and j["state"] in ("done", "failed"):
                    return j
            except StorageUnavailable:
                pass
            time.sleep(0.05)

    try:
        first = time.monotonic()
        wait(job(files[0]))
        warm_job_s = time.monotonic() - first
        start = time.monotonic()
        wait(job(files[1]))
        normal_s = time.monotonic() - start
        pg.stop()
        time.sleep(down_s)
        pg.start()
        started = time.monotonic()
        after_stop = wait(job(files[2]))
        after_stop_s = time.monotonic() - started
        inflight = job(files[3])
        pg.restart()
        restarted = time.monotonic()
        after_restart = wait(inflight)
        after_restart_s = time.monotonic() - restarted
        alive = worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
        lib.close()
    text = (tmp / "worker.log").read_text()
    return {"first_job_s": round(warm_job_s, 2), "job_s": round(normal_s, 2), "down_s": down_s,
            "job_queued_after_start_done_s": round(after_stop_s, 2), "state_after_stop": after_stop["state"],
            "job_in_flight_at_restart_done_s": round(after_restart_s, 2), "state_after_restart":
            after_restart["state"], "attempts_after_restart": after_restart["attempts"], "worker_alive": alive,
            "outage_lines": text.count("the worker keeps trying"), "back_lines": text.count("is back after")}


def main() -> int:
    from tests.pg_instance import OwnPostgres

    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--down", type=float, default=20.0, help="seconds PostgreSQL stays stopped under the worker")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pg = OwnPostgres()
    try:
        with tempfile.TemporaryDirectory(prefix="lq-outages-") as tmp:
            api = api_rounds(pg, Path(tmp), args.clients, args.rounds)
            worker = worker_rounds(pg, Path(tmp), args.down)
    finally:
        pg.close()
    print("| round | clients | before: codes, max | postmaster stopped: codes, p50 / max | whole server stopped: "
          "codes, p50 / max | first 200 after SIGCONT |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(api, 1):
        b, h, a = r["before"], r["postmaster_stopped"], r["all_stopped"]
        print(f"| {i} | {r['clients']} | {b['codes']}, {b['max_s']} s | {h['codes']}, {h['p50_s']} / {h['max_s']} s | "
              f"{a['codes']}, {a['p50_s']} / {a['max_s']} s | {r['first_200_after_thaw_s']} s |")
    print(json.dumps(worker, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"api": api, "worker": worker}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

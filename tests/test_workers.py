"""Two uvicorn workers over one data directory see each other's ingests without restart."""

from __future__ import annotations

import time

import httpx

from tests.builders import make_pptx
from tests.server import Server


def _ready_from_every_worker(url: str, workers: int, timeout: float = 30) -> dict[int, dict]:
    seen: dict[int, dict] = {}
    deadline = time.time() + timeout
    while len(seen) < workers and time.time() < deadline:
        with httpx.Client(timeout=5) as fresh:  # a new connection each time, so the kernel picks a worker
            body = fresh.get(f"{url}/readyz").json()
        if body.get("status") == "ready":
            seen[body["pid"]] = body
    return seen


def test_two_workers_share_one_library(tmp_path):
    srv = Server(tmp_path / "data", workers=2)
    try:
        srv.wait_ready()
        # each worker loads the embedder and the cross-encoder on its own: on a loaded 2-core machine the second
        # can be ready well after the first (a fresh-clone CI run with llama.cpp building beside it took over 60 s)
        pids = _ready_from_every_worker(srv.url, 2, timeout=240)
        assert len(pids) == 2, "both workers should answer"
        deck = make_pptx([{"title": "Echo state networks",
                           "bullets": ["A reservoir of fixed random recurrent weights; only the readout is trained."]}])
        up = httpx.post(f"{srv.url}/api/v1/documents", files=[("files", ("reservoir.pptx", deck))], timeout=60)
        assert up.status_code == 200 and up.json()["files"][0]["status"] == "ingested"
        generation = up.json()["generation"]
        deadline = time.time() + 10
        while True:  # every worker reaches the new generation within a few seconds
            state = _ready_from_every_worker(srv.url, 2, timeout=10)
            if len(state) == 2 and all(s["generation"] == generation for s in state.values()):
                break
            assert time.time() < deadline, state
            time.sleep(0.2)
        for _ in range(6):
            with httpx.Client(timeout=10) as fresh:
                hit = fresh.post(f"{srv.url}/api/v1/search", json={"query": "reservoir readout", "top_k": 1}).json()
            assert hit["results"][0]["document"]["name"] == "reservoir.pptx"
    finally:
        srv.stop()

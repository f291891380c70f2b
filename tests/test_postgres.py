"""The PostgreSQL + pgvector store on a real server (the pgserver wheel): ranking as the local store's, schema
migrations, two API processes on one database, queued ingestion with workers, a worker killed with SIGKILL in
the middle of a commit, and searches while a worker commits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ingest.pipeline import SourceFile, collect_paths
from ingest.textnorm import keyword_tokens
from tests.conftest import ROOT, SAMPLES
from tests.server import Server

NOTES = SAMPLES / "01-recurrent-networks.md"
DECK = SAMPLES / "03-lstm-and-gru.pptx"


def _settings(url: str, tmp_path: Path, **extra):
    from app.settings import Settings

    return Settings(store="postgres", database_url=url, data_dir=tmp_path / "scratch", **extra)


@pytest.fixture()
def pg_store(pg_url, tmp_path, embedder):
    from app.backends import build_postgres_store

    store = build_postgres_store(_settings(pg_url, tmp_path), embedder)
    yield store
    store.close()


def _env(url: str) -> dict[str, str]:
    return {"LECTURE_QA_STORE": "postgres", "LECTURE_QA_DATABASE_URL": url, "LECTURE_QA_JOB_LEASE": "2",
            "LECTURE_QA_PREVIEWS": "false"}


def _worker(url: str, tmp_path: Path, *extra: str, code: str | None = None) -> subprocess.Popen:
    log = open(tmp_path / f"worker-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - the process owns it
    argv = [sys.executable, "-c", code, *extra] if code else [sys.executable, "-m", "app.cli", "worker", "--poll",
                                                              "0.2", *extra]
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **_env(url), "LECTURE_QA_DATA_DIR":
                                                 str(tmp_path / "worker-scratch")}, stdout=log,
                            stderr=subprocess.STDOUT)


def _wait_job(api: str, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{api}/api/v1/jobs/{job_id}", timeout=10).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} did not end: {job}")


def test_bm25_in_sql_scores_as_the_local_bm25_index(pg_store, tmp_path, embedder):
    """The keyword half ranks as the local store's bm25s index: same terms, same scores (up to a constant)."""
    from app.backends import build_local_store
    from app.settings import Settings

    files, _ = collect_paths([SAMPLES])
    local = build_local_store(Settings(data_dir=tmp_path / "local"), embedder)
    local.ingest(files)
    pg_store.ingest(files)
    snap = local.library.snapshot()
    query = "forget gate of the LSTM cell state and the attention of the decoder"
    tokens = [t for t in keyword_tokens(query) if t in snap.bm25.vocab_dict]
    expected = dict(zip((p.chunk_id for p in snap.passages), snap.bm25.get_scores(tokens), strict=True))
    with pg_store.library.connection() as conn:
        got = pg_store._keyword_scores(conn, query, pg_store.library.meta(), None, 1000)
    assert set(got) == {c for c, s in expected.items() if s > 0}
    ratio = {round(got[c] / expected[c], 4) for c in got}
    assert len(ratio) == 1, ratio  # lucene's BM25 without the constant (k1 + 1) factor
    local.close()


def test_same_ranking_as_the_local_store_on_the_samples(pg_url, tmp_path, embedder):
    """With the local store's int8 word pieces the ranking is the local store's, passage for passage."""
    from app.backends import build_local_store, build_postgres_store
    from app.settings import Settings

    pg_store = build_postgres_store(_settings(pg_url, tmp_path, pg_token_codec="int8"), embedder)
    files, _ = collect_paths([SAMPLES])
    local = build_local_store(Settings(data_dir=tmp_path / "local"), embedder)
    local.ingest(files)
    pg_store.ingest(files)
    for q in ("what does the forget gate in an LSTM do?", "why do transformers need positional encodings?",
              "how is attention computed in the seq2seq decoder", "in the GRU slides, what is the update gate"):
        assert [s.text for s in pg_store.search(q, 5)] == [s.text for s in local.search(q, 5)], q
    by_name = {d.name: d.id for d in local.documents()}
    pg_ids = {d.name: d.id for d in pg_store.documents()}
    for name in ("03-lstm-and-gru.pptx", "01-recurrent-networks.md"):
        q = "what does the gate decide"
        filtered = [s.text for s in local.search(q, 5, document_ids=[by_name[name]])]
        assert filtered and [s.text for s in pg_store.search(q, 5, document_ids=[pg_ids[name]])] == filtered
    assert pg_store.stats()["passages"] == local.stats()["passages"]
    local.close()
    pg_store.close()


def test_migrations_are_versioned_and_idempotent(pg_url, tmp_path, embedder):
    import psycopg

    from ingest.pg_library import SCHEMA_VERSION, PgLibrary, migrate

    lib = PgLibrary(pg_url, dim=embedder.dim, data_dir=tmp_path)
    lib.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrate(conn, embedder.dim) == SCHEMA_VERSION  # a second run changes nothing
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        with pytest.raises(RuntimeError, match="dimensional"):
            migrate(conn, 512)
        conn.execute("INSERT INTO schema_migrations(version) VALUES (%s)", (SCHEMA_VERSION + 1,))
        with pytest.raises(RuntimeError, match="newer lecture-qa"):
            migrate(conn, embedder.dim)


def test_two_api_processes_share_one_database_with_a_worker(pg_url, tmp_path):
    """An upload on one API process is queued, a worker commits it, the other process finds it at once; a delete
    on one is never followed by a result from the deleted document on the other."""
    apis = [Server(tmp_path / f"api{i}", env=_env(pg_url)) for i in (1, 2)]
    worker = _worker(pg_url, tmp_path)
    try:
        for api in apis:
            api.wait_ready()
        first, second = apis
        r = first.upload(NOTES, DECK)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/api/v1/jobs/{job['id']}"
        assert job["state"] in ("queued", "running") and sorted(job["files"]) == sorted([NOTES.name, DECK.name])
        done = _wait_job(second.url, job["id"])
        assert done["state"] == "done" and done["attempts"] == 1, done
        by_name = {f["name"]: f["document_id"] for f in done["report"]["files"]}
        assert {f["status"] for f in done["report"]["files"]} == {"ingested"}

        hits = httpx.post(f"{second.url}/api/v1/search", json={"query": "forget gate cell state"},
                          timeout=30).json()["results"]
        assert hits[0]["document"]["id"] == by_name[DECK.name]
        assert httpx.delete(f"{second.url}/api/v1/documents/{by_name[DECK.name]}", timeout=30).status_code == 200
        after = httpx.post(f"{first.url}/api/v1/search", json={"query": "forget gate cell state", "top_k": 10},
                           timeout=30).json()["results"]
        assert after and all(h["document"]["id"] != by_name[DECK.name] for h in after)
        listed = httpx.get(f"{first.url}/api/v1/documents", timeout=30).json()["documents"]
        assert [d["id"] for d in listed] == [by_name[NOTES.name]]
        assert httpx.get(f"{first.url}/api/v1/jobs/{'A' * 22}", timeout=10).status_code == 404
    finally:
        worker.terminate()
        worker.wait(30)
        for api in apis:
            api.stop()


PAUSED_WORKER = """
import pathlib, sys, time
from ingest import pipeline
original = pipeline.Pipeline.ingest
marker = pathlib.Path(sys.argv[1])

def paused(self, files, **kw):
    def hold():  # the document's rows are written, the transaction is open: the worker dies here
        marker.write_text("holding")
        time.sleep(600)
    return original(self, files, _before_commit=hold, **kw)

pipeline.Pipeline.ingest = paused
from app.cli import main
sys.exit(main(["worker", "--poll", "0.2"]))
"""


def test_a_worker_killed_mid_commit_leaves_no_partial_document_and_the_job_is_retried(pg_url, tmp_path,
                                                                                     embedder):
    from ingest.pg_jobs import JobQueue
    from ingest.pg_library import PgLibrary

    lib = PgLibrary(pg_url, dim=embedder.dim, data_dir=tmp_path / "scratch")
    queue = JobQueue(lib, lease=2)
    job = queue.enqueue([SourceFile(DECK.name, data=DECK.read_bytes(), source="upload")])
    marker = tmp_path / "holding"
    doomed = _worker(pg_url, tmp_path, str(marker), code=PAUSED_WORKER)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert doomed.poll() is None and time.monotonic() < deadline, "the worker never reached its commit"
            time.sleep(0.1)
        running = queue.get(job["id"])
        assert running is not None and running["state"] == "running" and running["attempts"] == 1
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(30)
        assert lib.documents() == []  # nothing of the half-committed document
        with lib.connection() as conn:
            assert conn.execute("SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM passages), "
                                "(SELECT count(*) FROM terms)").fetchone() == (0, 0, 0)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    rescuer = _worker(pg_url, tmp_path)
    try:
        deadline = time.monotonic() + 180
        while (state := queue.get(job["id"]))["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
    finally:
        rescuer.terminate()
        rescuer.wait(30)
    assert state["state"] == "done" and state["attempts"] == 2, state
    (doc,) = lib.documents()
    assert doc.name == DECK.name
    with lib.connection() as conn:
        assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == doc.chunks > 0
    lib.close()


def test_searches_while_a_worker_commits_see_whole_documents_only(pg_url, tmp_path):
    """Searches run on the API while a worker ingests every sample: no error, and every result names a document
    whose every chunk is committed."""
    api = Server(tmp_path / "api", env=_env(pg_url))
    worker = _worker(pg_url, tmp_path)
    stop = threading.Event()
    seen: list[tuple[int, set[str]]] = []

    def search() -> None:
        while not stop.is_set():
            r = httpx.post(f"{api.url}/api/v1/search", json={"query": "attention and gates", "top_k": 10},
                           timeout=60)
            seen.append((r.status_code, {h["document"]["id"] for h in r.json().get("results", [])}))

    try:
        api.wait_ready()
        threads = [threading.Thread(target=search) for _ in range(2)]
        for t in threads:
            t.start()
        samples = sorted(p for p in SAMPLES.iterdir() if p.is_file())
        jobs = [api.upload(p).json()["id"] for p in samples]
        ends = [_wait_job(api.url, j) for j in jobs]
        stop.set()
        for t in threads:
            t.join(60)
        assert {e["state"] for e in ends} == {"done"}
        docs = {d["id"]: d for d in httpx.get(f"{api.url}/api/v1/documents", timeout=30).json()["documents"]}
        assert len(docs) == len(samples)
        assert seen and {code for code, _ in seen} == {200}
        assert set().union(*(ids for _, ids in seen)) <= set(docs)
        growing = [len(ids) for _, ids in seen]
        assert growing[0] <= growing[-1]
    finally:
        stop.set()
        worker.terminate()
        worker.wait(30)
        api.stop()


def test_cli_queues_a_folder_and_waits_for_the_worker(pg_url, tmp_path):
    worker = _worker(pg_url, tmp_path)
    env = {**os.environ, **_env(pg_url), "LECTURE_QA_DATA_DIR": str(tmp_path / "cli")}
    try:
        out = subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(SAMPLES), "--queue", "--wait"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "queued job" in out.stderr and "ingested" in out.stdout
        listed = subprocess.run([sys.executable, "-m", "app.cli", "documents", "--json"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        names = {d["name"] for d in json.loads(listed.stdout)}
        assert names == {p.name for p in SAMPLES.iterdir() if p.is_file()}
    finally:
        worker.terminate()
        worker.wait(30)


def test_worker_and_queue_need_the_postgres_store(tmp_path):
    env = {**os.environ, "LECTURE_QA_DATA_DIR": str(tmp_path / "data"), "LECTURE_QA_STORE": "local"}
    for argv in (["worker", "--once"], ["ingest", str(NOTES), "--queue"]):
        out = subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and "LECTURE_QA_STORE=postgres" in out.stderr, out.stderr


def test_a_database_that_goes_away_is_a_clear_503_not_a_500(pg_server, pg_url, tmp_path):
    from fastapi.testclient import TestClient
    from psycopg.conninfo import conninfo_to_dict

    from app.factory import create_app
    from ingest.errors import StorageUnavailable

    settings = _settings(pg_url, tmp_path, previews=False)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.post("/api/v1/search", json={"query": "forget gate"}).status_code == 200
        pg_server.psql(f"DROP DATABASE {conninfo_to_dict(pg_url)['dbname']} WITH (FORCE);")
        r = client.post("/api/v1/search", json={"query": "forget gate"})
        assert r.status_code == 503 and "database" in r.json()["error"], r.text
        assert client.get("/api/v1/documents").status_code == 503
        with pytest.raises(StorageUnavailable):
            client.app.state.service.documents()

"""The postgres store when its database misbehaves, on a PostgreSQL of the test's own (tests/pg_instance.py: the
shared session server is never stopped): a worker waits out a stop and a restart and finishes the jobs queued
meanwhile, untouched; an API whose database is frozen (SIGSTOP) answers every search 503 with Retry-After and
recovers once it is thawed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ingest.errors import StorageUnavailable
from ingest.pipeline import SourceFile, collect_paths
from tests.conftest import ROOT, SAMPLES
from tests.server import Server

NOTES = SAMPLES / "01-recurrent-networks.md"
DECK = SAMPLES / "03-lstm-and-gru.pptx"


@pytest.fixture()
def own_pg():
    pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    pytest.importorskip("pgvector")
    from tests.pg_instance import OwnPostgres

    try:
        pg = OwnPostgres()
    except Exception as exc:  # no binaries for this platform, or no way to run them
        pytest.skip(f"a PostgreSQL of the test's own (pgserver's binaries) could not start: {exc}")
    try:
        yield pg
    finally:
        pg.close()  # thawed and stopped even when the test failed


def _env(url: str) -> dict[str, str]:
    return {"LECTURE_QA_STORE": "postgres", "LECTURE_QA_DATABASE_URL": url, "LECTURE_QA_PREVIEWS": "false",
            "LECTURE_QA_JOB_LEASE": "5", "LECTURE_QA_WORKER_RETRY_MAX": "2"}


def _until(what, timeout: float = 120, every: float = 0.3):
    """Call `what` until it returns something true (StorageUnavailable counts as not yet); that value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = what()
            if value:
                return value
        except StorageUnavailable:
            pass
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(every)


def _source(path: Path) -> list[SourceFile]:
    return [SourceFile(path.name, data=path.read_bytes(), source="upload")]


def test_a_worker_waits_out_a_database_stop_and_restart_and_finishes_the_jobs_queued_meanwhile(own_pg, tmp_path,
                                                                                              embedder):
    from ingest.pg_jobs import JobQueue
    from ingest.pg_library import PgLibrary

    url = own_pg.create_database()
    lib = PgLibrary(url, dim=embedder.dim, data_dir=tmp_path / "scratch")
    queue = JobQueue(lib, lease=5)
    log_path = tmp_path / "worker.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--poll", "0.2"], cwd=ROOT,
                              env={**os.environ, **_env(url), "LECTURE_QA_DATA_DIR": str(tmp_path / "worker")},
                              stdout=log, stderr=subprocess.STDOUT)

    def ended(job_id: str) -> dict | None:
        job = queue.get(job_id)
        return job if job is not None and job["state"] in ("done", "failed") else None

    try:
        first = queue.enqueue(_source(NOTES))
        assert _until(lambda: ended(first["id"]))["state"] == "done"

        # 1. stopped: the worker notices, stays up and keeps trying; jobs queued once it is back get done
        own_pg.stop()
        down_at = time.monotonic()
        _until(lambda: "the worker keeps trying" in log_path.read_text(), timeout=60)
        assert worker.poll() is None, log_path.read_text()
        time.sleep(4)  # a few of the worker's tries (pauses of 0.5, 1, 2, 2 s) fail while it is down
        assert worker.poll() is None, log_path.read_text()
        own_pg.start()
        queued = [_until(lambda p=p: queue.enqueue(_source(p))) for p in (DECK, SAMPLES / "04-attention-notes.txt")]
        back = time.monotonic()
        ends = [_until(lambda j=j: ended(j["id"])) for j in queued]
        print(f"\nstop for {back - down_at:.1f} s; jobs queued after the start done {time.monotonic() - back:.1f} s "
              "later")
        assert [e["state"] for e in ends] == ["done", "done"], ends
        assert all(e["attempts"] == 1 for e in ends), ends

        # 2. restarted with a job just queued (it may be in the middle of its ingest): it ends done all the same
        inflight = queue.enqueue(_source(SAMPLES / "05-training-rnns.docx"))
        own_pg.restart()
        job = _until(lambda: ended(inflight["id"]))
        assert job["state"] == "done" and job["attempts"] <= 2, job
        assert worker.poll() is None, log_path.read_text()
        text = log_path.read_text()
        outages, returns = text.count("the worker keeps trying"), text.count("is back after")
        assert outages >= 1 and returns == outages, text  # one line when an outage starts, one when it ends
        assert "Traceback" not in text and "error connecting" not in text, text  # not a line per try
        names = {d.name for d in _until(lib.documents)}
        assert names == {NOTES.name, DECK.name, "04-attention-notes.txt", "05-training-rnns.docx"}
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
        lib.close()


def _search(url: str) -> tuple[int, str | None, float]:
    start = time.monotonic()
    r = httpx.post(f"{url}/api/v1/search", json={"query": "what does the forget gate do?"}, timeout=120)
    return r.status_code, r.headers.get("retry-after"), time.monotonic() - start


def _burst(url: str, n: int) -> list[tuple[int, str | None, float]]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: _search(url), range(n)))


def test_a_frozen_database_answers_every_search_503_with_retry_after_and_recovers(own_pg, tmp_path, embedder):
    from app.backends import build_postgres_store
    from app.settings import Settings

    url = own_pg.create_database()
    store = build_postgres_store(Settings(store="postgres", database_url=url, data_dir=tmp_path / "s"), embedder)
    files, _ = collect_paths([SAMPLES])
    assert not store.ingest(files).error
    store.close()
    api = Server(tmp_path / "api", env=_env(url))
    try:
        api.wait_ready()
        warm = _burst(api.url, 20)
        assert {s for s, _, _ in warm} == {200}
        try:
            # the postmaster alone: new connections hang, pooled ones still work
            own_pg.freeze(everything=False)
            half = _burst(api.url, 40)
            # the whole server: nothing answers
            own_pg.freeze(everything=True)
            hung = _burst(api.url, 40)
            health = httpx.get(f"{api.url}/healthz", timeout=30)
        finally:
            own_pg.thaw()
            thawed = time.monotonic()
        recovered = _until(lambda: _search(api.url)[0] == 200, timeout=120)
        took = time.monotonic() - thawed
        after = _burst(api.url, 20)
        print(f"\npostmaster stopped, 40 searches: {sorted({s for s, _, _ in half})}, slowest "
              f"{max(t for _, _, t in half):.1f} s; whole server stopped, 40 searches: "
              f"{sorted({s for s, _, _ in hung})}, slowest {max(t for _, _, t in hung):.1f} s, fastest "
              f"{min(t for _, _, t in hung):.1f} s; searches answer 200 again {took:.1f} s after the thaw")
        assert {s for s, _, _ in half} <= {200, 503}, half
        assert all(ra is not None and int(ra) > 0 for s, ra, _ in half if s == 503), half
        assert {s for s, _, _ in hung} == {503}, hung
        assert all(ra is not None and int(ra) > 0 for _, ra, _ in hung), hung
        assert health.status_code == 200
        assert recovered and {s for s, _, _ in after} == {200}, after
    finally:
        api.stop()


def test_reads_have_the_statement_limit_writes_the_write_limit_and_a_lock_wait_its_own(pg_url, tmp_path, embedder):
    """The server's statement limit ends a slow read (StorageUnavailable: a 503); a write transaction's statements
    get the write limit; waiting for another writer's lock is bounded by the writer's own timeout."""
    import threading

    import psycopg

    from ingest.errors import LibraryLocked
    from ingest.pg_conn import DbTimeouts
    from ingest.pg_library import WRITE_LOCK, PgLibrary

    lib = PgLibrary(pg_url, dim=embedder.dim, data_dir=tmp_path / "scratch",
                    timeouts=DbTimeouts(statement=1.0, lock=1.0, write=10.0))
    try:
        with pytest.raises(StorageUnavailable, match="statement timeout"), lib.connection() as conn:
            conn.execute("SELECT pg_sleep(3)")
        with lib.writer() as w:  # 3 s: over the read limit, within the write limit
            w.conn.execute("SELECT pg_sleep(3)")
        with lib.connection() as conn:  # and the read limit is back on that connection afterwards
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1s"
            assert conn.answer_within == 2.0  # the client-side limit: statement + 1 s
        holder = psycopg.connect(pg_url)
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))  # another writer, mid-commit
        with pytest.raises(LibraryLocked), lib.writer(timeout=1.5):
            pass
        threading.Timer(2.0, holder.rollback).start()  # it commits after 2 s: a writer that waits 6 s gets in
        waited: list[bool] = []
        with lib.writer(timeout=6.0, on_wait=lambda: waited.append(True)):
            pass
        assert waited == [True]
        holder.close()
    finally:
        lib.close()

"""Queued ingestion in PostgreSQL: uploads and `lecture-qa ingest --queue` add jobs; `lecture-qa worker` processes
on any machines take them, parse, embed and commit.

Why `SELECT ... FOR UPDATE SKIP LOCKED` on our own two tables rather than procrastinate or pgqueuer: a job here is
"these files' bytes, then a report", read back by `GET /api/v1/jobs/{id}` with its progress, so the job rows
would have to be ours anyway; the queue itself is the claim query below plus a lease. Either library would add
its own schema, migrations and worker runtime (procrastinate: an async app with its own CLI; pgqueuer: asyncio
and LISTEN/NOTIFY) beside ours, for no behaviour we need: workers poll once a second when idle, which costs
one indexed query.

Crash safety: a job is claimed with a lease (`lease_until`) that the worker's heartbeat renews while it works.
A document is committed in one transaction (ingest.pg_library), so a worker killed mid-document leaves none of
it; its job's lease runs out and the next worker's claim takes it again (attempts + 1). A job that was
committed but not yet marked done when its worker died is simply ingested again: every file is then
`unchanged`. After `max_attempts` claims a job is marked failed with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.pg_library import PgLibrary
from ingest.pipeline import Report, SourceFile

log = logging.getLogger(__name__)

CLAIM = """
UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = %(worker)s, error = NULL,
       started_at = coalesce(started_at, now()), lease_until = now() + make_interval(secs => %(lease)s)
WHERE id = (SELECT id FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < now())
            ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id, attempts, max_attempts
"""
JOB_COLUMNS = "id, state, attempts, max_attempts, created_at, started_at, finished_at, worker, progress, report, error"


@dataclass
class Claim:
    id: int
    attempts: int
    max_attempts: int


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class JobQueue:
    """Jobs of files to ingest, in the library's database."""

    def __init__(self, library: PgLibrary, *, lease: float = 60.0, max_attempts: int = 3) -> None:
        self.library = library
        self.lease = lease
        self.max_attempts = max_attempts

    def enqueue(self, files: list[SourceFile]) -> dict[str, Any]:
        """One job for these files (their bytes are stored with it); the job as `get` shows it."""
        with self.library.connection() as conn:
            job_id = conn.execute("INSERT INTO jobs(max_attempts, progress) VALUES (%s, %s) RETURNING id",
                                  (self.max_attempts, json.dumps({"stage": "queued", "done": 0,
                                                                  "total": len(files)}))).fetchone()[0]
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO job_files(job_id, ord, name, source, data) VALUES (%s,%s,%s,%s,%s)",
                                [(job_id, i, f.name, f.source, f.data if f.data is not None else _read(f))
                                 for i, f in enumerate(files)])
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: int) -> dict[str, Any] | None:
        with self.library.connection() as conn:
            row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=%s", (job_id,)).fetchone()
            if row is None:
                return None
            names = [n for (n,) in conn.execute("SELECT name FROM job_files WHERE job_id=%s ORDER BY ord",
                                                (job_id,))]
        keys = [c.strip() for c in JOB_COLUMNS.split(",")]
        job = dict(zip(keys, row, strict=True))
        for k in ("created_at", "started_at", "finished_at"):
            job[k] = job[k].isoformat() if job[k] is not None else None
        job["files"] = names or [f["name"] for f in (job["report"] or {}).get("files", [])]
        return job

    def claim(self, worker: str) -> Claim | None:
        """The oldest queued job, or a running one whose lease ran out (its worker died); None when none is."""
        while True:
            with self.library.connection() as conn:
                row = conn.execute(CLAIM, {"worker": worker, "lease": self.lease}).fetchone()
            if row is None:
                return None
            claim = Claim(*row)
            if claim.attempts <= claim.max_attempts:
                return claim
            self._end(claim.id, worker, "failed", None,
                      f"gave up after {claim.max_attempts} attempts (a worker died or failed each time)")

    def files(self, job_id: int) -> list[SourceFile]:
        with self.library.connection() as conn:
            return [SourceFile(name=n, data=bytes(d), source=s) for n, s, d in conn.execute(
                "SELECT name, source, data FROM job_files WHERE job_id=%s ORDER BY ord", (job_id,))]

    def heartbeat(self, job_id: int, worker: str, progress: dict[str, Any] | None = None) -> bool:
        """Renew the lease (and record progress); False when the job is no longer this worker's."""
        with self.library.connection() as conn:
            cur = conn.execute("UPDATE jobs SET lease_until = now() + make_interval(secs => %s), "
                               "progress = coalesce(%s, progress) WHERE id=%s AND worker=%s AND state='running'",
                               (self.lease, json.dumps(progress) if progress else None, job_id, worker))
            return bool(cur.rowcount)

    def finish(self, claim: Claim, worker: str, report: Report) -> None:
        if report.error and claim.attempts < claim.max_attempts:
            with self.library.connection() as conn:  # the commit failed (database down?): let it be retried
                conn.execute("UPDATE jobs SET state='queued', error=%s, lease_until=NULL WHERE id=%s AND worker=%s",
                             (report.error, claim.id, worker))
            return
        self._end(claim.id, worker, "failed" if report.error else "done", report.public(), report.error)

    def _end(self, job_id: int, worker: str, state: str, report: dict[str, Any] | None, error: str | None) -> None:
        with self.library.connection() as conn:
            conn.execute("UPDATE jobs SET state=%s, report=%s, error=%s, finished_at=now(), lease_until=NULL, "
                         "progress = progress || %s WHERE id=%s AND worker=%s",
                         (state, json.dumps(report) if report is not None else None, error,
                          json.dumps({"stage": state}), job_id, worker))
            if report is not None:  # the bytes are in the library now; the report keeps the names
                conn.execute("DELETE FROM job_files WHERE job_id=%s", (job_id,))


def _read(f: SourceFile) -> bytes:
    assert f.path is not None
    return f.path.read_bytes()


def run_worker(queue: JobQueue, ingest: Callable[..., Report], *, stop: threading.Event | None = None,
               poll: float = 1.0, once: bool = False, on_job: Callable[[int, Report], None] | None = None) -> int:
    """Take jobs until `stop` is set (or, with `once`, until none is left); the number of jobs done.
    `ingest(files, progress=...)` is the store's ingest."""
    stop = stop or threading.Event()
    name = worker_name()
    done = 0
    while not stop.is_set():
        claim = queue.claim(name)
        if claim is None:
            if once:
                break
            stop.wait(poll)
            continue
        report = process(queue, claim, name, ingest)
        queue.finish(claim, name, report)
        done += 1
        if on_job is not None:
            on_job(claim.id, report)
    return done


def process(queue: JobQueue, claim: Claim, worker: str, ingest: Callable[..., Report]) -> Report:
    """Ingest one claimed job's files, renewing its lease (with the progress) from a heartbeat thread."""
    files = queue.files(claim.id)
    state: dict[str, Any] = {"stage": "parse", "done": 0, "total": len(files)}
    finished = threading.Event()

    def beat() -> None:
        while not finished.wait(max(queue.lease / 4, 0.2)):
            try:
                queue.heartbeat(claim.id, worker, dict(state))
            except Exception:
                log.exception("the heartbeat of job %s failed", claim.id)

    def progress(stage: str, n: int, total: int) -> None:
        state.update(stage=stage, done=n, total=total)

    beater = threading.Thread(target=beat, daemon=True, name=f"job-{claim.id}-heartbeat")
    beater.start()
    start = time.perf_counter()
    try:
        return ingest(files, progress=progress)
    except Exception as exc:  # a bug, not a bad file (those are skipped in the report): retried, then failed
        log.exception("job %s failed", claim.id)
        return Report(error=f"{type(exc).__name__}: {exc}").finish(start)
    finally:
        finished.set()
        beater.join()

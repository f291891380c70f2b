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

Database outages: a worker that cannot reach the database (down, restarting, not answering) keeps running. It
logs once when the outage starts and once when it ends, tries again after pauses that double from
RETRY_FIRST up to `retry_max` seconds (with jitter, so many workers do not reconnect in step), and then takes
the queue up again. A job whose ingest failed only because the database went away goes back to the queue
without counting the attempt: the outage is not the files' fault.

Ids: a job's API id is a random URL-safe token (`public_id`, 128 bits); the serial stays internal (it was
sequential, so guessable). A job records its owner, a fingerprint of the API key that queued it (never the key),
for the jobs route to check.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.errors import StorageUnavailable
from ingest.pg_library import PgLibrary
from ingest.pipeline import Report, SourceFile

log = logging.getLogger(__name__)

CLAIM = """
UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = %(worker)s, error = NULL,
       started_at = coalesce(started_at, now()), lease_until = now() + make_interval(secs => %(lease)s)
WHERE id = (SELECT id FROM jobs WHERE state = 'queued' OR (state = 'running' AND lease_until < now())
            ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id, public_id, attempts, max_attempts
"""
JOB_COLUMNS = ("public_id, state, attempts, max_attempts, created_at, started_at, finished_at, worker, progress, "
               "report, error, owner")
JOB_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
"""What a job id looks like: new ones are secrets.token_urlsafe(16) (22 characters), those of jobs from before
schema 4 are 32 hex digits."""
RETRY_FIRST = 0.5


@dataclass
class Claim:
    id: int
    public_id: str
    attempts: int
    max_attempts: int


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def new_job_id() -> str:
    return secrets.token_urlsafe(16)


class JobQueue:
    """Jobs of files to ingest, in the library's database."""

    def __init__(self, library: PgLibrary, *, lease: float = 60.0, max_attempts: int = 3) -> None:
        self.library = library
        self.lease = lease
        self.max_attempts = max_attempts

    def enqueue(self, files: list[SourceFile], owner: str | None = None) -> dict[str, Any]:
        """One job for these files (their bytes are stored with it); the job as `get` shows it. `owner`: who may
        read it (a key fingerprint; None: nobody in particular)."""
        public_id = new_job_id()
        with self.library.connection() as conn:
            job_id = conn.execute("INSERT INTO jobs(public_id, owner, max_attempts, progress) VALUES (%s, %s, %s, %s) "
                                  "RETURNING id", (public_id, owner, self.max_attempts,
                                                   json.dumps({"stage": "queued", "done": 0, "total": len(files)}))
                                  ).fetchone()[0]
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO job_files(job_id, ord, name, source, data) VALUES (%s,%s,%s,%s,%s)",
                                [(job_id, i, f.name, f.source, f.data if f.data is not None else _read(f))
                                 for i, f in enumerate(files)])
        job = self.get(public_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job with this public id: `id` (that id), state, attempts, progress, report, error, files, and
        `owner` (for the route's check; not part of the API's answer). None when there is no such job."""
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            return None
        with self.library.connection() as conn:
            row = conn.execute(f"SELECT id, {JOB_COLUMNS} FROM jobs WHERE public_id=%s", (job_id,)).fetchone()
            if row is None:
                return None
            names = [n for (n,) in conn.execute("SELECT name FROM job_files WHERE job_id=%s ORDER BY ord",
                                                (row[0],))]
        keys = ["id" if c.strip() == "public_id" else c.strip() for c in JOB_COLUMNS.split(",")]
        job = dict(zip(keys, row[1:], strict=True))
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
            with self.library.connection() as conn:  # the commit failed: let it be retried
                conn.execute("UPDATE jobs SET state='queued', error=%s, lease_until=NULL WHERE id=%s AND worker=%s",
                             (report.error, claim.id, worker))
            return
        self._end(claim.id, worker, "failed" if report.error else "done", report.public(), report.error)

    def release(self, claim: Claim, worker: str, reason: str) -> None:
        """Back to the queue without counting this attempt (the database went away under it)."""
        with self.library.connection() as conn:
            conn.execute("UPDATE jobs SET state='queued', attempts=greatest(attempts - 1, 0), error=%s, "
                         "lease_until=NULL, progress = progress || %s WHERE id=%s AND worker=%s AND state='running'",
                         (reason, json.dumps({"stage": "queued"}), claim.id, worker))

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


class Outage:
    """A worker's view of the database's reachability: the pause before the next try (doubling from
    RETRY_FIRST up to `retry_max`, times a random 0.75-1), and one log line when an outage starts and one when
    it ends."""

    def __init__(self, retry_max: float = 10.0, first: float = RETRY_FIRST) -> None:
        self.retry_max = retry_max
        self.first = first
        self.since: float | None = None
        self.tries = 0
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> float:
        """Note a failure; the seconds to wait before the next try."""
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                log.warning("the database cannot be reached; the worker keeps trying (pauses up to %g s): %s",
                            self.retry_max, exc)
            pause = min(self.retry_max, self.first * 2 ** min(self.tries, 30))
            self.tries += 1
        return pause * random.uniform(0.75, 1.0)

    def ok(self) -> None:
        with self._lock:
            if self.since is not None:
                log.warning("the database is back after %.1f s (%d tries); taking jobs again",
                            time.monotonic() - self.since, self.tries)
            self.since = None
            self.tries = 0

    @property
    def down(self) -> bool:
        return self.since is not None


def run_worker(queue: JobQueue, ingest: Callable[..., Report], *, stop: threading.Event | None = None,
               poll: float = 1.0, once: bool = False, on_job: Callable[[str, Report], None] | None = None,
               retry_max: float = 10.0) -> int:
    """Take jobs until `stop` is set (or, with `once`, until none is left); the number of jobs done.
    `ingest(files, progress=...)` is the store's ingest. Outages of the database are waited out (Outage)."""
    stop = stop or threading.Event()
    outage = Outage(retry_max)
    name = worker_name()
    done = 0
    while not stop.is_set():
        try:
            claim = queue.claim(name)
        except StorageUnavailable as exc:
            stop.wait(outage.failed(exc))
            continue
        outage.ok()
        if claim is None:
            if once:
                break
            stop.wait(poll)
            continue
        report = process(queue, claim, name, ingest, outage)
        if not _settle(queue, claim, name, report, stop, outage):
            break  # stopped during an outage: the job's lease lapses and a worker takes it again
        if report.storage_unavailable:
            continue
        done += 1
        if on_job is not None:
            on_job(claim.public_id, report)
    return done


def _settle(queue: JobQueue, claim: Claim, worker: str, report: Report, stop: threading.Event,
            outage: Outage) -> bool:
    """Record how the job ended (or release it, after an outage), retrying through an outage; False if stopped
    first."""
    while True:
        try:
            if report.storage_unavailable:
                queue.release(claim, worker, report.error or "the database could not be reached")
            else:
                queue.finish(claim, worker, report)
            outage.ok()
            return True
        except StorageUnavailable as exc:
            if stop.wait(outage.failed(exc)):
                return False


def process(queue: JobQueue, claim: Claim, worker: str, ingest: Callable[..., Report],
            outage: Outage | None = None) -> Report:
    """Ingest one claimed job's files, renewing its lease (with the progress) from a heartbeat thread."""
    state: dict[str, Any] = {"stage": "parse", "done": 0, "total": 0}
    finished = threading.Event()
    start = time.perf_counter()
    outage = outage or Outage()

    def beat() -> None:
        while not finished.wait(max(queue.lease / 4, 0.2)):
            try:
                queue.heartbeat(claim.id, worker, dict(state))
            except StorageUnavailable as exc:
                outage.failed(exc)  # logged once; the ingest meets the outage too and the job is released
            except Exception:
                log.exception("the heartbeat of job %s failed", claim.public_id)

    def progress(stage: str, n: int, total: int) -> None:
        state.update(stage=stage, done=n, total=total)

    beater = threading.Thread(target=beat, daemon=True, name=f"job-{claim.public_id}-heartbeat")
    try:
        files = queue.files(claim.id)
        state["total"] = len(files)
        beater.start()
        return ingest(files, progress=progress)
    except StorageUnavailable as exc:
        report = Report(error=f"the database could not be reached: {exc}").finish(start)
        report.storage_unavailable = True
        return report
    except Exception as exc:  # a bug, not a bad file (those are skipped in the report): retried, then failed
        log.exception("job %s failed", claim.public_id)
        return Report(error=f"{type(exc).__name__}: {exc}").finish(start)
    finally:
        finished.set()
        if beater.is_alive():
            beater.join()

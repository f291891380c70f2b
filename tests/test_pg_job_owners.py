"""Jobs belong to the key that queued them (and to admin keys): any other key gets the 404 of an unknown job;
ids are random; an open service (no keys) reads every job as before; jobs from before schema 4 get random ids
and are the admins'. On a real PostgreSQL (pgserver), through the app's HTTP routes."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from tests.conftest import SAMPLES

NOTES = SAMPLES / "01-recurrent-networks.md"
ID = re.compile(r"[A-Za-z0-9_-]{22}")


def _client(pg_url, tmp_path, **keys) -> TestClient:
    from app.factory import create_app
    from app.settings import Settings

    settings = Settings(store="postgres", database_url=pg_url, data_dir=tmp_path / "scratch", previews=False, **keys)
    return TestClient(create_app(settings))


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 120
    while (r := client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline and r.json()["status"] == "loading", r.text
        time.sleep(0.2)


def _upload(client: TestClient, key: str | None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = client.post("/api/v1/documents", files=[("files", (NOTES.name, NOTES.read_bytes()))], headers=headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/api/v1/jobs/{job_id}"
    return job_id


def _get(client: TestClient, job_id: str, key: str | None):
    return client.get(f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"} if key else {})


def test_an_admins_job_is_the_admins_only(pg_url, tmp_path):
    with _client(pg_url, tmp_path, api_keys="m1,m2", admin_keys="a1,a2") as client:
        _ready(client)
        job_id = _upload(client, "a1")
        mine = _get(client, job_id, "a1")
        assert mine.status_code == 200 and mine.json()["id"] == job_id and mine.json()["files"] == [NOTES.name]
        assert "owner" not in mine.json()
        assert _get(client, job_id, "a2").status_code == 200  # another admin
        for member in ("m1", "m2"):
            r = _get(client, job_id, member)
            assert r.status_code == 404 and r.json() == {"error": f"no job with id {job_id}"}, r.text
        unknown = "B" * 22
        assert _get(client, unknown, "m1").json() == {"error": f"no job with id {unknown}"}  # the same answer
        assert _get(client, job_id, None).status_code == 401
        assert _get(client, job_id, "not-a-key").status_code == 401


def test_a_members_job_is_that_members_only_and_ids_are_random(pg_url, tmp_path):
    with _client(pg_url, tmp_path, api_keys="m1,m2") as client:  # no admin keys: every key may upload
        _ready(client)
        ids = [_upload(client, "m1") for _ in range(6)]
        assert len(set(ids)) == len(ids) and all(ID.fullmatch(i) for i in ids), ids
        assert not any(i.isdigit() for i in ids)
        for job_id in ids[:2]:
            assert _get(client, job_id, "m1").status_code == 200
            assert _get(client, job_id, "m2").status_code == 404
        # the serial the rows have inside is no id, and a neighbour of a real id is nothing
        for guess in ("1", "2", str(len(ids))):
            assert _get(client, guess, "m1").status_code in (404, 422)
        neighbour = ids[0][:-1] + ("A" if ids[0][-1] != "A" else "B")
        assert _get(client, neighbour, "m1").status_code == 404


def test_an_open_service_reads_every_job(pg_url, tmp_path):
    with _client(pg_url, tmp_path) as client:
        _ready(client)
        job_id = _upload(client, None)
        r = _get(client, job_id, None)
        assert r.status_code == 200 and r.json()["state"] == "queued"


def test_jobs_from_before_schema_4_get_random_ids_and_belong_to_admins(pg_url, tmp_path, embedder):
    import psycopg

    from app.api.deps import may_read_job
    from app.settings import Settings
    from ingest.pg_jobs import JobQueue
    from ingest.pg_library import SCHEMA_VERSION, PgLibrary, _migrations

    with psycopg.connect(pg_url, autocommit=True) as conn:  # a database as schema 3 left it, with two jobs
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for version, sql in _migrations(embedder.dim)[:3]:
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations(version) VALUES (%s)", (version,))
        for _ in range(2):
            conn.execute("INSERT INTO jobs(state, report, progress) VALUES ('done', %s, '{}')",
                         ('{"files": [{"name": "old.md"}]}',))
    lib = PgLibrary(pg_url, dim=embedder.dim, data_dir=tmp_path / "scratch")
    try:
        assert lib.schema_version == SCHEMA_VERSION
        with lib.connection() as conn:
            rows = conn.execute("SELECT public_id, owner FROM jobs ORDER BY id").fetchall()
        assert len({p for p, _ in rows}) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", p) for p, _ in rows), rows
        assert all(owner is None for _, owner in rows)
        job = JobQueue(lib).get(rows[0][0])
        assert job is not None and job["state"] == "done" and job["files"] == ["old.md"]
        keyed = Settings(api_keys="m1", admin_keys="a1")
        assert may_read_job(job["owner"], "a1", keyed) and not may_read_job(job["owner"], "m1", keyed)
        assert may_read_job(job["owner"], None, Settings())
        assert JobQueue(lib).get("1") is None
    finally:
        lib.close()


def test_malformed_job_ids_are_422(pg_url, tmp_path):
    with _client(pg_url, tmp_path) as client:
        _ready(client)
        for bad in ("short", "x" * 65, "has%20space%20in%20it%20ok"):
            assert client.get(f"/api/v1/jobs/{bad}").status_code == 422, bad

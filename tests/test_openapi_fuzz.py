"""Schemathesis over the live /openapi.json of a real server, as each kind of caller: no keys configured, and with
keys configured an admin key, a member (read-only) key and no key.

Every check schemathesis has runs (`[checks]` left at its defaults: all of them), over every operation, in its
examples, coverage and fuzzing phases, positive and negative: no 5xx; every response (errors included) in its
documented status codes, content type, headers and schema; every schema-valid request accepted (2xx, or the
401/403/404 its key or generated ids earn); every schema-invalid one rejected; 405 with Allow for undeclared
methods (schemathesis also takes 401/403 there on a secured operation, so 405-before-403 has its own test in
test_api_hardening.py); 401 when the key is left off. The stateful phase is off: it would chain generated
uploads and deletes, and DELETE must only ever see generated ids, so the sample lecture is checked to survive
each run.

One exception is configured, with its own check: an upload's positive data may be answered 415 or 422, because
no schema can say which bytes are a lecture (the type comes from the file name's extension, which multipart
OpenAPI cannot constrain, and schemathesis names every part "files"; an empty or unparsable file ingests
nothing). `upload_rejections_are_about_content` makes sure such an answer is that per-file verdict, never a
complaint about the request's shape. Likewise a chat completion's positive data may be answered 400 when its
conversation does not end in a user's question (JSON Schema cannot constrain a list's last item):
`chat_rejections_are_about_the_conversation` checks such a 400 names `messages`.

The same runs as an admin over store=postgres with a worker (pgserver; skipped, saying why, without it).

Bounded and repeatable: a fixed seed, `deterministic = true`, no schemathesis cache and bounded examples
(measured over two full runs: the same 626-783 requests a run, about 3,350 in all, with the split between statuses
shifting by a few percent; 2 min 18 s for this file with the docs-page tests on 2 cores at load average 15).
Each server has its own data directory with one sample lecture. The figures of each run are printed
(`pytest -s`)."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import ROOT, SAMPLES
from tests.server import Server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.engine import events, from_schema  # noqa: E402

SAMPLE = SAMPLES / "04-attention-notes.txt"
KEYS = {"LECTURE_QA_API_KEYS": "member-key,admin-key", "LECTURE_QA_ADMIN_KEYS": "admin-key"}
ADMIN = "Bearer admin-key"
MEMBER = "Bearer member-key"
SEED = 20261204
EXAMPLES = 50
UPLOAD = "POST /api/v1/documents"
CHAT = "POST /v1/chat/completions"
# Checks whose failure means a response is off the published contract.
CONFORMANCE = {"status_code_conformance", "content_type_conformance", "response_headers_conformance",
               "response_schema_conformance", "allow_header_conformance", "unsupported_method"}


@schemathesis.check
def upload_rejections_are_about_content(ctx, response, case) -> None:
    """A schema-valid upload refused 415/422 is refused for its files' content (each file named with its reason),
    not for its shape: that would be a rejection of valid data, hidden by the widened expected statuses."""
    meta = case.meta
    if case.operation.label != UPLOAD or meta is None or not meta.generation.mode.is_positive:
        return
    if response.status_code == 415:
        assert response.json()["error"].startswith("unsupported file type"), response.text
    elif response.status_code == 422:
        files = response.json()["detail"]["files"]
        assert files and all(f["status"] == "skipped" and f["reason"] for f in files), response.text


@schemathesis.check
def chat_rejections_are_about_the_conversation(ctx, response, case) -> None:
    """A schema-valid chat request refused 400 is refused for what its conversation says (the last message is not
    a user's question, or the question is blank or too long: rules of the conversation that JSON Schema cannot
    state over a list's last item), in OpenAI's error shape and naming `messages`; never for its shape."""
    meta = case.meta
    if case.operation.label != CHAT or meta is None or not meta.generation.mode.is_positive:
        return
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "messages", response.text


def config(authorization: str | None) -> SchemathesisConfig:
    toml = f"""
seed = {SEED}
continue-on-failure = true
request-timeout = 60
[cache]
enabled = false  # no state carried between runs (and no .schemathesis/ folder in the checkout)
[generation]
mode = "all"
max-examples = {EXAMPLES}
deterministic = true
[phases.stateful]
enabled = false

[[operations]]
include-name = "{UPLOAD}"  # one filter: include-path with include-method matched POST /search too (ORed)
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "415", "422"]

[[operations]]
include-name = "{CHAT}"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404"]
"""
    if authorization:
        toml += f'\n[headers]\nAuthorization = "{authorization}"\n'
    return SchemathesisConfig.from_str(toml)


@dataclass
class Run:
    """What one schemathesis run sent and got."""

    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    modes: collections.Counter[str] = field(default_factory=collections.Counter)
    operations: set[str] = field(default_factory=set)
    failures: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: list[str] = field(default_factory=list)

    def count(self, *names: str) -> int:
        return sum(len(self.failures.get(n, ())) for n in names)

    def figures(self) -> dict[str, int]:
        return {"requests": self.requests, "positive": self.modes["positive"], "negative": self.modes["negative"],
                "5xx": sum(n for s, n in self.statuses.items() if s >= 500),
                "schema violations": self.count(*CONFORMANCE),
                "rejected valid": self.count("positive_data_acceptance", "upload_rejections_are_about_content",
                                              "chat_rejections_are_about_the_conversation"),
                "accepted invalid": self.count("negative_data_rejection"),
                "failed checks": sum(len(v) for v in self.failures.values())}


def fuzz(server: Server, authorization: str | None) -> Run:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config(authorization))
    run = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, (events.NonFatalError, events.FatalError)):
            run.errors.append(str(event)[:2000])
        if not isinstance(event, events.ScenarioFinished):
            continue
        recorder = event.recorder
        for case_id, interaction in recorder.interactions.items():
            run.requests += 1
            run.operations.add(recorder.label)
            if interaction.response is not None:
                run.statuses[interaction.response.status_code] += 1
            case = recorder.cases[case_id].value
            if case.meta is not None:
                run.modes[case.meta.generation.mode.value] += 1
        for case_id, nodes in recorder.checks.items():
            for node in nodes:
                if node.failure_info is None:
                    continue
                data = recorder.find_failure_data(parent_id=case_id, failure=node.failure_info.failure)
                answer = recorder.interactions.get(case_id)
                got = (f"{answer.response.status_code} {answer.response.content[:300]!r}"
                       if answer is not None and answer.response is not None else "no response")
                run.failures[node.name].append(
                    f"{recorder.label} ({event.phase.value}): {node.failure_info.failure.title}\n"
                    f"  {data.case.as_curl_command(headers=data.headers)[:800]}\n  -> {got}")
    return run


def _start(tmp_path_factory, name: str, env: dict[str, str], headers: dict[str, str]) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp(name) / "data", env=env)
    srv.wait_ready()
    assert srv.upload(SAMPLE, headers=headers).status_code == 200
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory) -> Iterator[Server]:
    yield from _start(tmp_path_factory, "fuzz-open", {}, {})


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory) -> Iterator[Server]:
    yield from _start(tmp_path_factory, "fuzz-keys", KEYS, {"Authorization": ADMIN})


def _sample_survived(server: Server) -> bool:
    docs = httpx.get(f"{server.url}/api/v1/documents", headers={"Authorization": ADMIN}).json()["documents"]
    return SAMPLE.name in {d["name"] for d in docs}


def check_run(server: Server, authorization: str | None, kind: str) -> Run:
    run = fuzz(server, authorization)
    print(f"\nschemathesis, {kind}: {run.figures()} statuses {dict(sorted(run.statuses.items()))}")
    assert not run.errors, "\n\n".join(run.errors)
    shown = [f"[{name}] {line}" for name, lines in run.failures.items() for line in lines[:3]]
    assert not run.failures, f"{run.figures()}\n\n" + "\n\n".join(shown)
    spec = httpx.get(f"{server.url}/openapi.json").json()
    declared = {f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item}
    assert run.operations == declared  # every operation was exercised
    assert run.modes["positive"] > 0 and run.modes["negative"] > 0
    assert _sample_survived(server)
    return run


def test_fuzz_without_keys_configured(open_server):
    run = check_run(open_server, None, "no keys configured")
    assert run.statuses[200] > 0 and 401 not in run.statuses  # an open server lets every request through


def test_fuzz_with_an_admin_key(keyed_server):
    run = check_run(keyed_server, ADMIN, "admin key")
    assert run.statuses[200] > 0 and run.statuses[403] == 0


def test_fuzz_with_a_member_key(keyed_server):
    """A member reads; its uploads and deletes get the documented 403 (never a 405 turned 403, or a 5xx)."""
    run = check_run(keyed_server, MEMBER, "member key")
    assert run.statuses[200] > 0 and run.statuses[403] > 0


def test_fuzz_without_a_key_when_keys_are_required(keyed_server):
    """Every /api operation answers its documented 401; /healthz, /readyz and undeclared methods answer as ever."""
    run = check_run(keyed_server, None, "no key (keys required)")
    assert run.statuses[401] > 0 and run.statuses[403] == 0


def test_fuzz_the_postgres_store_with_a_worker(pg_url, tmp_path):
    """store=postgres: uploads queue a job (202), a worker ingests it, GET /api/v1/jobs/{id} follows it; search
    and ask run as SQL (a NUL in a query is a classic 5xx there). Admin key, so every route is reached."""
    env = {**KEYS, "LECTURE_QA_STORE": "postgres", "LECTURE_QA_DATABASE_URL": pg_url, "LECTURE_QA_PREVIEWS": "false"}
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--poll", "0.2"], cwd=ROOT,
                              env={**os.environ, **env, "LECTURE_QA_DATA_DIR": str(tmp_path / "worker")},
                              stdout=log, stderr=subprocess.STDOUT)
    server = Server(tmp_path / "data", env=env)
    try:
        server.wait_ready()
        queued = server.upload(SAMPLE, headers={"Authorization": ADMIN})
        assert queued.status_code == 202, queued.text
        job_url = f"{server.url}{queued.headers['location']}"
        deadline = time.monotonic() + 300
        while (job := httpx.get(job_url, headers={"Authorization": ADMIN}).json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job["state"] == "done", job
        run = check_run(server, ADMIN, "admin key, store=postgres")
        assert run.statuses[200] > 0
        for path, body, status in (("/api/v1/search", {"query": "atten\x00tion"}, 200),
                                   ("/api/v1/ask", {"question": "what is atten\x00tion?", "history": ["\x00"]}, 200),
                                   ("/api/v1/search", {"query": "rnn", "document_ids": ["a\x00b"]}, 404)):
            r = httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": ADMIN}, timeout=60)
            assert r.status_code == status, r.text  # the schema allows NUL; PostgreSQL text does not
        for method in ("GET", "DELETE"):  # a NUL in an id was a 500 (psycopg DataError): no store has such an id
            r = httpx.request(method, f"{server.url}/api/v1/documents/a%00b", headers={"Authorization": ADMIN})
            assert r.status_code == 404, r.text
    finally:
        server.stop()
        worker.terminate()
        worker.wait(30)
        log.close()

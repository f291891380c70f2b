"""Schemathesis over the live /openapi.json of a real server, with and without keys configured: no 5xx, no
response off its documented schema, no status code or content type the OpenAPI does not list.

Every operation gets a bounded, derandomized budget of valid and of invalid requests (the same cases on every
run; about two minutes in all on 2 cores). Each server has its own data directory with one sample lecture;
DELETE only ever sees generated ids, and the sample is checked to survive the run.

The operations are driven through schemathesis's Hypothesis strategies (`APIOperation.as_strategy`) rather
than its pytest plugin, whose lazily loaded schemas (`schemathesis.pytest.from_fixture`) rely on a private
attribute pytest 9 no longer has."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import SAMPLES
from tests.server import Server

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402  (schemathesis brings hypothesis)
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

SAMPLE = SAMPLES / "04-attention-notes.txt"
ADMIN = {"Authorization": "Bearer admin-key"}
CHECKS = ["not_a_server_error", "status_code_conformance", "response_schema_conformance",
          "content_type_conformance"]


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
    env = {"LECTURE_QA_API_KEYS": "student-key,admin-key", "LECTURE_QA_ADMIN_KEYS": "admin-key"}
    yield from _start(tmp_path_factory, "fuzz-keys", env, ADMIN)


def fuzz(server: Server, *, headers: dict[str, str] | None = None, examples: int = 25,
         modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)) -> list[str]:
    """Run the checks over every operation of the server's live schema; the failures, one line each."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    budget = settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:

            @budget
            @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=checks, timeout=60)

            try:
                run()
            except Unsatisfiable:  # no invalid request exists (an operation without parameters)
                continue
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is a BaseExceptionGroup;
                # every operation runs, and all failures are reported together
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
    return failures


def _sample_survived(server: Server, headers: dict[str, str]) -> bool:
    docs = httpx.get(f"{server.url}/api/v1/documents", headers=headers).json()["documents"]
    return SAMPLE.name in {d["name"] for d in docs}


def test_fuzz_without_keys(open_server):
    failures = fuzz(open_server)
    assert not failures, "\n\n".join(failures)
    assert _sample_survived(open_server, {})


def test_fuzz_with_an_admin_key(keyed_server):
    failures = fuzz(keyed_server, headers=ADMIN)
    assert not failures, "\n\n".join(failures)
    assert _sample_survived(keyed_server, ADMIN)


def test_fuzz_without_a_key_when_keys_are_required(keyed_server):
    """Every /api operation answers its documented 401 (generated Authorization values included)."""
    failures = fuzz(keyed_server, examples=10, modes=(GenerationMode.POSITIVE,))
    assert not failures, "\n\n".join(failures)

"""The REAL h2ogpte client against a local fake h2oGPTe server: h2oGPTe's LLM over our retrieval, and h2oGPTe
as the whole RAG engine (collection, uploads + ingest jobs, chunk search, chat websocket with references)."""

from __future__ import annotations

import os

import httpx
import pytest

from app.qa.answer.extractive import ExtractiveAnswerer
from app.qa.types import DocumentRef, Source
from tests.conftest import SAMPLES
from tests.fake_h2ogpte import FakeH2OGPTe
from tests.server import Server

pytest.importorskip("h2ogpte")


def _sources() -> list[Source]:
    doc = DocumentRef("d1", "03-lstm-and-gru.pptx", "Lecture 3")
    return [Source("c1", "The forget gate erases parts of the cell state. Values near 1 keep memory.", 1.0, doc,
                   {"slide": 3}),
            Source("c2", "The GRU merges the cell and hidden state.", 0.9, doc, {"slide": 5})]


@pytest.fixture(scope="module")
def fake():
    with FakeH2OGPTe() as server:
        yield server


def _answerer(fake, embedder, key="sk-good", timeout=5.0):
    from app.qa.answer.h2ogpte_llm import H2OGPTeAnswerer
    from app.qa.h2ogpte_conn import H2OGPTeConnection

    return H2OGPTeAnswerer(H2OGPTeConnection(fake.url, key, timeout=timeout), ExtractiveAnswerer(embedder),
                           llm="fake-llm")


def test_answer_question_with_numbered_sources_and_checked_citations(fake, embedder):
    fake.mode = "ok"
    llm = _answerer(fake, embedder)
    try:
        assert llm.models() == ["fake-llm", "other-llm"]
        answer = llm.answer("What does the forget gate do?", _sources())
        assert answer.answered_by == "h2ogpte:fake-llm" and answer.grounded, answer.llm_error
        assert [c.n for c in answer.citations] == [1]  # [7] names no source: dropped
        assert "[7]" not in answer.text and "[1]" in answer.text
        sent = fake.calls[-1]
        assert sent["model"] == "fake-llm" and sent["question"] == "What does the forget gate do?"
        assert '<source n="2" document="03-lstm-and-gru.pptx" location="slide 5">' in sent["text_context_list"][0]
        assert "NOT_IN_SOURCES" in sent["prompt_query"] and sent["llm_args"]["temperature"] == 0
    finally:
        llm.close()


def test_refusal_retry_and_failures(fake, embedder):
    llm = _answerer(fake, embedder, timeout=3.0)
    try:
        fake.mode = "refuse"
        refused = llm.answer("What is the exam date?", _sources())
        assert not refused.grounded and refused.citations == [] and "does not cover" in refused.text
        fake.mode = "429-once"
        calls = len(fake.calls)
        retried = llm.answer("What does the forget gate do?", _sources())
        assert retried.answered_by == "h2ogpte:fake-llm" and len(fake.calls) == calls + 2
        for mode in ("500", "hang"):
            fake.mode = mode
            fell_back = llm.answer("What does the forget gate do?", _sources())
            assert fell_back.answered_by == "extractive" and "LLM was unavailable" in fell_back.llm_error
    finally:
        fake.mode = "ok"
        llm.close()


def test_bad_key_is_a_clear_startup_error(fake, embedder):
    llm = _answerer(fake, embedder, key="sk-wrong")
    try:
        with pytest.raises(RuntimeError, match="rejected the API key"):
            llm.warm_up()
    finally:
        llm.close()


def test_service_over_http_with_h2ogpte(fake, tmp_path):
    fake.mode = "ok"
    env = {"LECTURE_QA_LLM": "h2ogpte", "H2OGPTE_ADDRESS": fake.url, "H2OGPTE_API_KEY": "sk-good",
           "H2OGPTE_LLM": "fake-llm"}
    srv = Server(tmp_path / "data", env=env)
    try:
        srv.wait_ready()
        srv.upload(SAMPLES / "03-lstm-and-gru.pptx")
        body = srv.ask("What does the forget gate do?")
        assert body["answered_by"] == "h2ogpte:fake-llm" and body["grounded"] and body["citations"][0]["n"] == 1
        with httpx.stream("POST", f"{srv.url}/api/v1/ask", json={"question": "What does the forget gate do?",
                                                                  "stream": True}, timeout=60) as r:
            raw = "".join(r.iter_text())
        assert "event: delta" in raw and "event: done" in raw
        assert httpx.get(f"{srv.url}/api/v1/models", timeout=30).json() == {
            "backend": "h2ogpte", "models": ["fake-llm", "other-llm"]}
    finally:
        srv.stop()
    bad = Server(tmp_path / "data2", env={**env, "H2OGPTE_API_KEY": "sk-wrong"})
    try:
        import time

        deadline = time.time() + 60
        while True:
            try:
                ready = httpx.get(f"{bad.url}/readyz", timeout=2)
                if ready.json().get("status") == "failed":
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the bad key never surfaced in /readyz"
            time.sleep(0.3)
        assert ready.status_code == 503 and "rejected the API key" in ready.json()["error"]
    finally:
        bad.stop()


@pytest.mark.skipif(not (os.environ.get("H2OGPTE_API_KEY") and os.environ.get("H2OGPTE_ADDRESS")),
                    reason="live h2oGPTe: set H2OGPTE_API_KEY and H2OGPTE_ADDRESS")
def test_live_h2ogpte(embedder):
    from app.qa.answer.h2ogpte_llm import H2OGPTeAnswerer
    from app.qa.h2ogpte_conn import H2OGPTeConnection

    conn = H2OGPTeConnection(os.environ["H2OGPTE_ADDRESS"], os.environ["H2OGPTE_API_KEY"], timeout=120)
    llm = H2OGPTeAnswerer(conn, ExtractiveAnswerer(embedder), llm=os.environ.get("H2OGPTE_LLM", "auto"))
    try:
        llm.warm_up()
        assert llm.models()
        answer = llm.answer("What does the forget gate do?", _sources())
        assert answer.answered_by.startswith("h2ogpte:"), answer.llm_error
        assert all(1 <= c.n <= 2 for c in answer.citations)
    finally:
        llm.close()

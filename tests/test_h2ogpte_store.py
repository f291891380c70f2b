"""LECTURE_QA_STORE=h2ogpte: the REAL h2ogpte client against the fake h2oGPTe server (tests/fake_h2ogpte.py).

Collection create/reuse, upload + ingest jobs (failed jobs, unchanged, replaced), documents list and delete,
chunk search, the chat websocket with streamed deltas and references, and the failure paths (429 retry, 5xx,
error frame, hung websocket, revoked key), in-process, over HTTP and from the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import httpx
import pytest

from app.qa.answer import NOT_COVERED
from app.qa.answer.extractive import ExtractiveAnswerer
from app.qa.service import QAService
from app.qa.types import AskResult
from ingest.pipeline import SourceFile, collect_paths
from tests.conftest import ROOT, SAMPLES
from tests.fake_h2ogpte import FakeH2OGPTe
from tests.server import Server

pytest.importorskip("h2ogpte")


@pytest.fixture(scope="module")
def fake():
    with FakeH2OGPTe() as server:
        yield server


@pytest.fixture()
def store(fake, embedder):
    from app.qa.h2ogpte_conn import H2OGPTeConnection
    from app.qa.stores.h2ogpte import H2OGPTeStore

    fake.mode = fake.chat_mode = "ok"
    fake.fail_names = set()
    conn = H2OGPTeConnection(fake.url, "sk-good", timeout=4.0)
    s = H2OGPTeStore(conn, f"course-{uuid.uuid4().hex[:8]}", ingest_timeout=30)
    s.warm_up()
    yield s
    fake.mode = fake.chat_mode = "ok"
    fake.api_key = "sk-good"
    s.close()


@pytest.fixture()
def service(store, embedder):
    """The h2oGPTe store answered by its chat, h2oGPTe's answer_question standing in (as build_service wires)."""
    from app.qa.answer.h2ogpte_chat import H2OGPTeChatAnswerer
    from app.qa.answer.h2ogpte_llm import H2OGPTeAnswerer

    fallback = H2OGPTeAnswerer(store.conn, ExtractiveAnswerer(embedder), llm="fake-llm")
    return QAService(store, H2OGPTeChatAnswerer(store, fallback, llm="fake-llm"))


def _ask(service, question: str, **kw) -> tuple[list[str], AskResult]:
    items = list(service.ask_stream(question, 5, **kw))
    assert isinstance(items[-1], AskResult)
    return [i for i in items[:-1] if isinstance(i, str)], items[-1]


def test_collection_is_created_once_and_reused(fake, store, embedder):
    from app.qa.stores.h2ogpte import H2OGPTeStore

    created = [c for c in fake.calls if c.get("create_collection") == store.collection]
    assert len(created) == 1
    again = H2OGPTeStore(store.conn, store.collection)
    assert again.collection_id() == store.collection_id()
    assert len([c for c in fake.calls if c.get("create_collection") == store.collection]) == 1


def test_ingest_reports_each_file_and_checks_failed_jobs(fake, store, tmp_path):
    files, _ = collect_paths([SAMPLES])
    fake.fail_names = {"04-attention-notes.txt"}
    broken = SourceFile("broken.pdf", data=b"%PDF-1.7\n this is not really a pdf")
    uploads_before = len(fake.documents)
    report = store.ingest([*files, broken])
    status = {f.name: f for f in report.files}
    assert status["04-attention-notes.txt"].status == "skipped"
    assert "document conversion failed" in status["04-attention-notes.txt"].reason  # job "completed", but failed
    assert status["broken.pdf"].status == "skipped" and "PDF" in status["broken.pdf"].reason  # never uploaded
    ingested = len(files) - 1  # every sample but the one whose job fails
    assert sum(f.status == "ingested" for f in report.files) == ingested and report.documents == ingested
    assert len(fake.documents) == uploads_before + ingested
    docs = {d.name: d.public() for d in store.documents()}
    assert set(docs) == {f.name for f in files} - {"04-attention-notes.txt"}
    deck = docs["03-lstm-and-gru.pptx"]
    assert deck["unit_label"] == "slides" and deck["slides"] == status["03-lstm-and-gru.pptx"].units > 0
    assert store.document(deck["id"]).public() == deck and store.document("nope") is None

    fake.fail_names = set()
    again = {f.name: f.status for f in store.ingest(files).files}
    assert again["03-lstm-and-gru.pptx"] == "unchanged" and again["04-attention-notes.txt"] == "ingested"

    notes = SAMPLES / "04-attention-notes.txt"
    changed = store.ingest([SourceFile(notes.name, data=notes.read_bytes() + b"\nA new closing remark.\n")])
    assert changed.files[0].status == "replaced"
    named = [d for d in store.documents() if d.name == notes.name]
    assert len(named) == 1 and named[0].id == changed.files[0].document_id
    assert changed.files[0].replaced and changed.files[0].replaced[0] != named[0].id

    assert store.delete(deck["id"]) is True and store.delete(deck["id"]) is False
    assert deck["id"] not in {d.id for d in store.documents()}


def test_chunk_search_with_locations_and_document_filter(fake, store):
    store.ingest(collect_paths([SAMPLES])[0])
    hits = store.search("forget gate cell state", 3)
    assert hits and hits[0].document.name == "03-lstm-and-gru.pptx" and "slide" in hits[0].location
    only = store.search("gradient", 5, document_ids=[hits[0].document.id])
    assert only and {h.document.id for h in only} == {hits[0].document.id}
    fake.mode = "429-once"
    calls = len(fake.calls)
    assert store.search("forget gate", 2)  # retried once
    assert len(fake.calls) == calls + 2
    fake.mode = "500"
    from app.qa.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="h2oGPTe request failed"):
        store.search("forget gate", 2)


def test_chat_streams_deltas_and_maps_references(fake, store, service):
    store.ingest(collect_paths([SAMPLES])[0])
    deltas, result = _ask(service, "What do the gates of an LSTM decide?")
    body = result.public()
    assert len(deltas) > 1 and "".join(deltas).strip() == body["answer"].replace(" [1]", "").strip()
    assert body["grounded"] and body["answered_by"] == "h2ogpte-rag:fake-llm"
    assert body["citations"][0]["n"] == 1 and "[1]" in body["answer"]
    assert body["citations"][0]["quote"] in body["sources"][0]["text"]
    first = body["sources"][0]
    assert first["document"]["name"] == "03-lstm-and-gru.pptx" and "slide" in first["location"]
    frame = fake.frames[-1]
    assert frame["t"] == "cq" and frame["body"] == "What do the gates of an LSTM decide?"
    assert json.loads(frame["rag_config"])["rag_max_chunks"] == 5 and frame["include_chat_history"] == "off"
    assert "NOT_IN_SOURCES" in frame["system_prompt"] and frame["llm"] == "fake-llm"

    fake.cumulative_partials = True  # a server whose partials carry the text so far streams the same deltas
    try:
        again, _ = _ask(service, "What do the gates of an LSTM decide?")
    finally:
        fake.cumulative_partials = False
    assert "".join(again) == "".join(deltas)

    fake.chat_mode = "refuse"
    _, refused = _ask(service, "When is the exam?")
    assert not refused.answer.grounded and refused.answer.text == NOT_COVERED and refused.answer.citations == []
    fake.chat_mode = "paraphrase"  # no sentence matches a reference: h2oGPTe's first reference is cited
    _, loose = _ask(service, "What do the gates of an LSTM decide?")
    assert loose.answer.grounded and loose.answer.text.endswith("[1]") and loose.answer.citations[0].n == 1


def test_reference_locations_and_sentence_citations():
    from app.qa.answer.h2ogpte_chat import DeltaTracker, cite_sentences
    from app.qa.stores.h2ogpte import location_of, source_of

    deltas = DeltaTracker()
    assert [deltas.add(b) for b in ("The", " gate", "The", " end.")] == ["The", " gate", "The", " end."]
    cumulative = DeltaTracker()
    assert [cumulative.add(b) for b in ("The", "The gate", "The gate erases", "The gate erases memory.")] == [
        "The", " gate", " erases", " memory."]

    assert location_of("03-lstm.pptx", "4") == {"slide": 4}
    assert location_of("notes.pdf", "[3, 4]") == {"page": 3, "pages": [3, 4]}
    assert location_of("notes.md", "") == {"section": "notes"}
    sources = [source_of("d1", "a.pdf", 1, "The forget gate erases parts of the cell state.", "2", 0.9),
               source_of("d2", "b.pdf", 7, "Attention weights sum to one over the encoder states.", "5", 0.8)]
    assert sources[1].chunk_id == "d2#7" and sources[1].document.title == "b"
    text = cite_sentences("Attention weights over encoder states sum to one. The forget gate erases cell state.",
                          sources)
    assert text == "Attention weights over encoder states sum to one [2]. The forget gate erases cell state [1]."
    assert cite_sentences("Nothing shared here.", sources) == "Nothing shared here."


def test_chat_failures_fall_back_to_chunk_search(fake, store, service):
    store.ingest(collect_paths([SAMPLES])[0])
    frames = len(fake.frames)
    _, filtered = _ask(service, "What do the gates of an LSTM decide?", document_ids=["none-such"])
    assert len(fake.frames) == frames and filtered.answer.answered_by == "extractive"  # no chunks: nothing to ask
    for mode, error in (("error", "SessionError"), ("hang", "TimeoutError")):
        fake.chat_mode = mode
        _, result = _ask(service, "What do the gates of an LSTM decide?")  # the hang ends at the 4 s timeout
        assert result.answer.answered_by == "h2ogpte:fake-llm" and error in result.answer.llm_error
        assert result.sources and result.answer.grounded
    fake.chat_mode = "ok"
    fake.api_key = "sk-revoked"  # a key revoked after start: a clear error, not minutes of websocket retries
    from app.qa.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="rejected the API key"):
        _ask(service, "What do the gates of an LSTM decide?")


def test_service_over_http_and_cli_with_h2ogpte_store(fake, tmp_path):
    fake.mode = fake.chat_mode = "ok"
    fake.fail_names = set()
    collection = f"http-{uuid.uuid4().hex[:8]}"
    env = {"LECTURE_QA_STORE": "h2ogpte", "H2OGPTE_ADDRESS": fake.url, "H2OGPTE_API_KEY": "sk-good",
           "H2OGPTE_LLM": "fake-llm", "H2OGPTE_COLLECTION": collection, "LECTURE_QA_LLM_TIMEOUT": "5"}
    cli = subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(SAMPLES / "01-recurrent-networks.md"),
                          "--json"], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["files"][0]["status"] == "ingested"
    srv = Server(tmp_path / "data", env=env)
    try:
        srv.wait_ready()
        up = srv.upload(SAMPLES / "03-lstm-and-gru.pptx", SAMPLES / "01-recurrent-networks.md")
        assert up.status_code == 200, up.text
        assert {f["name"]: f["status"] for f in up.json()["files"]} == {
            "03-lstm-and-gru.pptx": "ingested", "01-recurrent-networks.md": "unchanged"}
        docs = httpx.get(f"{srv.url}/api/v1/documents", timeout=30).json()
        assert docs["count"] == 2
        assert httpx.get(f"{srv.url}/api/v1/models", timeout=30).json() == {
            "backend": "h2ogpte", "models": ["fake-llm", "other-llm"]}
        search = httpx.post(f"{srv.url}/api/v1/search", json={"query": "forget gate", "top_k": 2}, timeout=30)
        assert search.status_code == 200 and search.json()["results"][0]["document"]["name"].endswith(".pptx")
        ask = srv.ask("What do the gates of an LSTM decide?")
        assert ask["answered_by"] == "h2ogpte-rag:fake-llm" and ask["grounded"] and ask["citations"]
        with httpx.stream("POST", f"{srv.url}/api/v1/ask", timeout=60,
                          json={"question": "What do the gates of an LSTM decide?", "stream": True}) as r:
            raw = "".join(r.iter_text())
        assert raw.count("event: delta") > 1 and "event: done" in raw
        deck = next(d for d in docs["documents"] if d["name"].endswith(".pptx"))
        assert httpx.delete(f"{srv.url}/api/v1/documents/{deck['id']}", timeout=30).status_code == 200
        assert httpx.get(f"{srv.url}/api/v1/documents/{deck['id']}", timeout=30).status_code == 404
        fake.mode = "500"
        down = httpx.post(f"{srv.url}/api/v1/search", json={"query": "forget gate"}, timeout=30)
        assert down.status_code == 503 and "h2oGPTe request failed" in down.json()["error"]
    finally:
        fake.mode = "ok"
        srv.stop()
    listed = subprocess.run([sys.executable, "-m", "app.cli", "documents"], cwd=ROOT, capture_output=True,
                            env={**os.environ, **env}, text=True, timeout=120)
    assert listed.returncode == 0 and "01-recurrent-networks.md" in listed.stdout and "1 documents" in listed.stdout


@pytest.mark.skipif(not (os.environ.get("H2OGPTE_API_KEY") and os.environ.get("H2OGPTE_ADDRESS")),
                    reason="live h2oGPTe: set H2OGPTE_API_KEY and H2OGPTE_ADDRESS")
def test_live_h2ogpte_store(embedder):
    from app.qa.answer.h2ogpte_chat import H2OGPTeChatAnswerer
    from app.qa.h2ogpte_conn import H2OGPTeConnection
    from app.qa.stores.h2ogpte import H2OGPTeStore

    conn = H2OGPTeConnection(os.environ["H2OGPTE_ADDRESS"], os.environ["H2OGPTE_API_KEY"], timeout=180)
    live = H2OGPTeStore(conn, f"lecture-qa-test-{uuid.uuid4().hex[:8]}", ingest_timeout=600)
    chat = H2OGPTeChatAnswerer(live, ExtractiveAnswerer(embedder), llm=os.environ.get("H2OGPTE_LLM", "auto"))
    try:
        live.warm_up()
        notes = SAMPLES / "01-recurrent-networks.md"
        report = live.ingest([SourceFile(notes.name, path=notes)])
        assert report.files[0].status == "ingested", report.files[0].reason
        assert live.search("recurrent hidden state", 3)
        _, result = _ask(QAService(live, chat), "What does the hidden state of a recurrent network carry?")
        assert result.sources and result.answer.answered_by.startswith("h2ogpte")
    finally:
        conn.submit(conn.client.delete_collections([live.collection_id()]), timeout=300)
        live.close()

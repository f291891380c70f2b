"""End to end over HTTP: a real uvicorn, the real model, a real index on disk, real lecture files."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.builders import LSTM_SLIDES, make_pdf, make_pptx
from tests.conftest import SAMPLES
from tests.server import Server

SAMPLE_FILES = sorted(SAMPLES.iterdir())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("api") / "data"
    srv = Server(data, env={"LECTURE_QA_MAX_UPLOAD_MB": "2"})
    srv.wait_ready()
    files = [("files", (p.name, p.read_bytes())) for p in SAMPLE_FILES]
    r = httpx.post(f"{srv.url}/api/v1/documents", files=files, timeout=120)
    assert r.status_code == 200, r.text
    yield srv
    srv.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["documents"] >= len(SAMPLE_FILES)  # other tests add more


def test_upload_reports_and_reupload_is_unchanged(client):
    files = [("files", (p.name, p.read_bytes())) for p in SAMPLE_FILES[:2]]
    body = client.post("/api/v1/documents", files=files).json()
    assert [f["status"] for f in body["files"]] == ["unchanged", "unchanged"]
    listed = client.get("/api/v1/documents").json()
    assert listed["count"] == len(listed["documents"]) and {p.name for p in SAMPLE_FILES} <= {
        d["name"] for d in listed["documents"]}
    pptx = next(d for d in listed["documents"] if d["name"].endswith(".pptx"))
    assert pptx["type"] == "pptx" and pptx["slides"] == 6 and pptx["chunks"] >= 4
    assert client.get(f"/api/v1/documents/{pptx['id']}").json()["name"] == pptx["name"]


def test_search_returns_located_passages(client):
    body = client.post("/api/v1/search", json={"query": "what does the forget gate in an LSTM do?", "top_k": 3}).json()
    assert len(body["results"]) == 3
    top = body["results"][0]
    assert top["document"]["name"] == "03-lstm-and-gru.pptx" and top["location"] == {"slide": 3}
    assert "forget gate" in top["text"]
    assert set(top) >= {"chunk_id", "text", "score", "document", "location", "also_at"}


def test_search_filtered_by_document(client):
    docs = {d["name"]: d["id"] for d in client.get("/api/v1/documents").json()["documents"]}
    only = docs["04-attention-notes.txt"]
    body = client.post("/api/v1/search", json={"query": "forget gate", "document_ids": [only]}).json()
    assert body["results"] and all(r["document"]["id"] == only for r in body["results"])


def test_ask_grounded_with_citations(client):
    body = client.post("/api/v1/ask", json={"question": "What does the forget gate in an LSTM do?"}).json()
    assert body["grounded"] is True and body["answered_by"] == "extractive"
    markers = {int(m) for m in re.findall(r"\[(\d+)\]", body["answer"])}
    assert markers and markers == {c["n"] for c in body["citations"]}
    for c in body["citations"]:
        source = body["sources"][c["n"] - 1]
        assert c["chunk_id"] == source["chunk_id"]
        for part in re.split(r"(?<=[.!?])\s+", c["quote"]):
            assert part.rstrip(".") in source["text"].replace("\n", " ")  # quotes are verbatim source text
    assert set(body["timings_ms"]) == {"retrieve", "answer", "total"}


def test_ask_off_topic_is_refused_with_sources(client):
    body = client.post("/api/v1/ask", json={"question": "How do Mamba state space models compare with LSTMs?"}).json()
    assert body["grounded"] is False and body["citations"] == []
    assert "does not cover" in body["answer"] and body["sources"]


def test_follow_up_uses_history(client):
    alone = client.post("/api/v1/search", json={"query": "and what about its update gate?"}).json()["results"]
    body = client.post("/api/v1/ask", json={"question": "and what about its update gate?",
                                            "history": ["How does the GRU work?"]}).json()
    assert body["sources"][0]["location"] == {"slide": 5}  # the GRU slide
    assert alone  # the bare follow-up still returns something, just less targeted


def test_ask_streams_server_sent_events(client):
    with client.stream("POST", "/api/v1/ask", json={"question": "What is truncated BPTT?"},
                       headers={"Accept": "text/event-stream"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = [(m.group(1), json.loads(m.group(2))) for m in re.finditer(r"event: (\w+)\ndata: (.*)\n\n", raw)]
    assert [e for e, _ in events] == ["delta", "done"]
    assert events[1][1]["grounded"] is True and events[0][1]["text"] == events[1][1]["answer"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/api/v1/search", {"json": {}}, 422),
        ("post", "/api/v1/search", {"json": {"query": "x", "top_k": 0}}, 422),
        ("post", "/api/v1/search", {"json": {"query": "x", "top_k": 51}}, 422),
        ("post", "/api/v1/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ("post", "/api/v1/ask", {"json": {"question": ""}}, 422),
        ("post", "/api/v1/ask", {"json": {"question": "x" * 5000}}, 422),
        ("post", "/api/v1/ask", {"json": {"question": "hi", "unknown": 1}}, 422),
        ("get", "/api/v1/documents/does-not-exist", {}, 404),
        ("delete", "/api/v1/documents/does-not-exist", {}, 404),
        ("get", "/api/v1/nothing-here", {}, 404),
        ("post", "/api/v1/documents", {"files": [("files", ("setup.exe", b"MZ"))]}, 415),
        ("post", "/api/v1/documents", {"files": [("files", ("fake.pdf", b"<html>nope</html>"))]}, 422),
        ("post", "/api/v1/documents", {"files": [("files", ("big.txt", b"a " * (2**20 + 10)))]}, 413),
        ("post", "/api/v1/documents", {"data": {"x": "1"}}, 422),
    ],
)
def test_errors_are_json_4xx(client, method, path, kwargs, status):
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_corrupt_upload_reports_reason_and_keeps_index(client):
    before = client.get("/readyz").json()
    r = client.post("/api/v1/documents", files=[("files", ("cut.pptx", make_pptx(LSTM_SLIDES)[:3000]))])
    assert r.status_code == 422
    assert "truncated" in r.json()["detail"]["files"][0]["reason"]
    after = client.get("/readyz").json()
    assert after["generation"] == before["generation"] and after["documents"] == before["documents"]


def test_concurrent_uploads_and_queries(client, server):
    decks = [make_pdf([f"Concurrency deck {i}\nPeephole connection number {i} lets gate {i} read the cell state."])
             for i in range(3)]

    def upload(i):
        with httpx.Client(base_url=server.url, timeout=120) as c:
            return c.post("/api/v1/documents", files=[("files", (f"deck{i}.pdf", decks[i]))])

    def query(i):
        with httpx.Client(base_url=server.url, timeout=120) as c:
            return c.post("/api/v1/ask" if i % 2 else "/api/v1/search",
                          json={"question": "What is BPTT?"} if i % 2 else {"query": "attention weights"})

    with ThreadPoolExecutor(8) as pool:
        ups = [pool.submit(upload, i) for i in range(3)]
        qs = [pool.submit(query, i) for i in range(16)]
        results = [f.result() for f in ups + qs]
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    names = {d["name"] for d in client.get("/api/v1/documents").json()["documents"]}
    assert {"deck0.pdf", "deck1.pdf", "deck2.pdf"} <= names
    hit = client.post("/api/v1/search", json={"query": "Peephole connection number 2", "top_k": 3}).json()
    assert hit["results"][0]["document"]["name"] == "deck2.pdf"
    assert hit["results"][0]["location"] == {"page": 1}


def test_delete_removes_from_search(client):
    deck = make_pdf(["Deletion deck\nThe spy gate number 41 reads the cell state through a keyhole."])
    up = client.post("/api/v1/documents", files=[("files", ("delete-me.pdf", deck))]).json()
    doc_id = up["files"][0]["document_id"]
    query = {"query": "spy gate number 41 keyhole", "top_k": 10}
    assert client.post("/api/v1/search", json=query).json()["results"][0]["document"]["id"] == doc_id
    assert client.delete(f"/api/v1/documents/{doc_id}").status_code == 200
    assert client.get(f"/api/v1/documents/{doc_id}").status_code == 404
    hits = client.post("/api/v1/search", json=query).json()
    assert all(h["document"]["id"] != doc_id for h in hits["results"])


def test_openapi_and_swagger(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/search", "/api/v1/ask", "/api/v1/documents", "/api/v1/documents/{doc_id}"} <= set(spec["paths"])


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("keys") / "data"
    srv = Server(data, env={"LECTURE_QA_API_KEYS": "student-key,admin-key", "LECTURE_QA_ADMIN_KEYS": "admin-key"})
    srv.wait_ready()
    yield srv
    srv.stop()


def test_keys_required_and_admin_only_writes(keyed_server):
    url = keyed_server.url
    sample = SAMPLE_FILES[0]
    assert httpx.get(f"{url}/healthz").status_code == 200  # health stays open
    assert httpx.post(f"{url}/api/v1/search", json={"query": "rnn"}).status_code == 401
    bad = httpx.post(f"{url}/api/v1/search", json={"query": "rnn"}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and "API key" in bad.json()["error"]
    student = {"Authorization": "Bearer student-key"}
    admin = {"Authorization": "Bearer admin-key"}
    assert httpx.post(f"{url}/api/v1/search", json={"query": "rnn"}, headers=student).status_code == 200
    files = [("files", (sample.name, sample.read_bytes()))]
    assert httpx.post(f"{url}/api/v1/documents", files=files, headers=student).status_code == 403
    assert httpx.post(f"{url}/api/v1/documents", files=files, headers=admin, timeout=60).status_code == 200
    assert httpx.get(f"{url}/api/v1/whoami", headers=student).json() == {"auth_required": True, "can_write": False}
    assert httpx.get(f"{url}/api/v1/whoami", headers=admin).json() == {"auth_required": True, "can_write": True}
    assert "admin-key" not in keyed_server.log.read_text()

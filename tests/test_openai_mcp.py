"""Where people already chat: the OpenAI-compatible API through the official `openai` SDK, and the MCP tools
through the official `mcp` SDK's client (streamable HTTP at /mcp, and stdio by spawning `lecture-qa mcp`), all
against a real server process with keys configured, on the sample lectures."""

from __future__ import annotations

import base64
import os
import re
import sys

import httpx
import pytest

from app.qa.answer import NOT_COVERED
from tests.conftest import ROOT, SAMPLES
from tests.server import Server

openai = pytest.importorskip("openai")
mcp = pytest.importorskip("mcp")
import anyio  # noqa: E402  (after the skips: the mcp SDK brings it)
import httpx2  # noqa: E402  (the HTTP client both SDKs are built on)
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

STUDENT, ADMIN = "student-key", "admin-key"
QUESTION = "What does the forget gate in an LSTM do?"
OFF_TOPIC = "What is the capital of France?"
TOOLS = {"search_lectures", "ask", "list_documents", "page_image"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("chat") / "data"
    srv = Server(data, env={"LECTURE_QA_API_KEYS": f"{STUDENT},{ADMIN}", "LECTURE_QA_ADMIN_KEYS": ADMIN})
    srv.wait_ready()
    r = srv.upload(*sorted(SAMPLES.iterdir()), headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    srv.data_dir = data  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture()
def client(server):
    """The SDK as a student would use it: base URL /v1 and a member key (not an admin one)."""
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=STUDENT, max_retries=0, timeout=60) as c:
        yield c


def split_reply(content: str) -> tuple[str, dict[int, str]]:
    """The answer text and the source list under "**Sources**": marker -> "document, location"."""
    answer, _, sources = content.partition("\n\n**Sources**\n")
    listed = dict(re.findall(r"^- \[(\d+)\] (.+)$", sources, flags=re.M))
    return answer, {int(n): label for n, label in listed.items()}


# -- the OpenAI-compatible API --
def test_models_lists_the_one_model(client):
    assert [m.id for m in client.models.list()] == ["lecture-qa"]
    card = client.models.retrieve("lecture-qa")
    assert card.object == "model" and card.owned_by == "lecture-qa"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.code == "model_not_found"


def test_cited_answer_with_its_sources(client):
    completion = client.chat.completions.create(model="lecture-qa", messages=[{"role": "user", "content": QUESTION}])
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    answer, listed = split_reply(choice.message.content)
    markers = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
    assert markers and set(listed) == markers  # every marker has its source line, and no line goes unused
    assert "forget gate" in answer.lower()
    assert "03-lstm-and-gru.pptx, slide 3" in listed.values()
    extra = completion.model_extra["lecture_qa"]  # the structured answer, for programs
    assert extra["grounded"] is True and {c["n"] for c in extra["citations"]} == markers
    for c in extra["citations"]:
        source = extra["sources"][c["n"] - 1]
        assert listed[c["n"]].startswith(source["document"]["name"] + ", ")


def test_streamed_answer_reassembles_and_ends(client, server):
    plain = client.chat.completions.create(model="lecture-qa", messages=[{"role": "user", "content": QUESTION}])
    chunks = list(client.chat.completions.create(model="lecture-qa", stream=True,
                                                 messages=[{"role": "user", "content": QUESTION}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len(chunks) >= 3 and content == plain.choices[0].message.content
    answer, listed = split_reply(content)
    assert listed and set(listed) == {int(n) for n in re.findall(r"\[(\d+)\]", answer)}

    # on the wire: server-sent events, the last one `data: [DONE]`
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {STUDENT}"},
                      json={"model": "lecture-qa", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
                      ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1
    assert all(e.startswith("data: ") for e in events)


def test_follow_up_question_retrieves_with_the_history(client):
    follow_up = "and what about the GRU?"
    alone = client.chat.completions.create(model="lecture-qa", messages=[{"role": "user", "content": follow_up}])
    in_conversation = client.chat.completions.create(model="lecture-qa", messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "The forget gate decides what to erase from the cell state [1]."},
        {"role": "user", "content": [{"type": "text", "text": follow_up}]},
    ])
    with_history = in_conversation.model_extra["lecture_qa"]["sources"]
    without = alone.model_extra["lecture_qa"]["sources"]
    assert [s["chunk_id"] for s in with_history] != [s["chunk_id"] for s in without]
    assert any("LSTM" in s["text"] for s in with_history)  # the previous question is part of the retrieval


def test_off_topic_question_gets_the_refusal(client):
    completion = client.chat.completions.create(model="lecture-qa", messages=[{"role": "user", "content": OFF_TOPIC}])
    content = completion.choices[0].message.content
    assert content.startswith(NOT_COVERED) and not re.search(r"\[\d+\]", content)
    assert "**Closest passages**" in content and "**Sources**" not in content
    assert completion.model_extra["lecture_qa"]["grounded"] is False


def test_a_bad_key_gets_openais_401(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-a-key", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="lecture-qa", messages=[{"role": "user", "content": QUESTION}])
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    body = err.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"


def test_invalid_requests_get_openais_400_and_404(client):
    with pytest.raises(openai.BadRequestError) as err:  # the last message is not a question
        client.chat.completions.create(model="lecture-qa", messages=[{"role": "assistant", "content": "hello"}])
    assert err.value.param == "messages" and err.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as err:  # a wrong type: OpenAI answers 400, not 422
        client.chat.completions.create(model="lecture-qa", messages=[{"role": "user", "content": 5}])  # type: ignore
    assert err.value.param.startswith("messages[0].content")
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert err.value.code == "model_not_found" and err.value.param == "model"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="lecture-qa", messages=[{"role": "user", "content": QUESTION}],
                                       extra_body={"document_ids": ["0000000000000000"]})
    assert err.value.code == "document_not_found"


def test_body_limit_and_unknown_paths_answer_in_openais_shape(server):
    auth = {"Authorization": f"Bearer {STUDENT}"}
    huge = {"model": "lecture-qa", "messages": [{"role": "user", "content": "x" * (2**20)}]}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=huge, headers=auth, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(f"{server.url}/v1/completions", json={}, headers=auth, timeout=60)  # the legacy API: not here
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


# -- MCP --
def _text(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


async def _exercise(session) -> None:
    """What every transport must do: list the tools, find the forget-gate passage, answer with citations."""
    names = {t.name for t in (await session.list_tools()).tools}
    assert names >= TOOLS
    found = await session.call_tool("search_lectures", {"query": QUESTION, "top_k": 3})
    assert not found.is_error
    top = found.structured_content["results"][0]
    assert top["document"]["name"] == "03-lstm-and-gru.pptx" and top["location"] == {"slide": 3}
    assert "forget gate" in top["text"]
    assert _text(found).startswith("[1] 03-lstm-and-gru.pptx, slide 3")
    answered = await session.call_tool("ask", {"question": QUESTION})
    assert answered.structured_content["grounded"] is True and "**Sources**" in _text(answered)
    assert re.search(r"\[1\]", _text(answered))


def test_mcp_over_streamable_http(server):
    async def main() -> None:
        headers = {"Authorization": f"Bearer {STUDENT}"}
        for mode in ("auto", "legacy"):  # the 2026-07-28 protocol, and the initialize handshake older clients use
            async with httpx2.AsyncClient(headers=headers, timeout=60) as http, \
                    mcp.Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode=mode) as session:
                await _exercise(session)
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http, \
                mcp.Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as session:
            docs = (await session.call_tool("list_documents", {})).structured_content["documents"]
            pdf = next(d for d in docs if d["type"] == "pdf")
            image = await session.call_tool("page_image", {"document_id": pdf["id"], "page": 2, "size": "thumb"})
            assert not image.is_error and image.content[0].type == "image"
            assert image.content[0].mime_type == "image/png"
            assert base64.b64decode(image.content[0].data).startswith(b"\x89PNG\r\n\x1a\n")
            assert _text(image) == f"{pdf['name']}, page 2"
            markdown = next(d for d in docs if d["type"] == "markdown")
            no_pages = await session.call_tool("page_image", {"document_id": markdown["id"], "page": 1})
            assert no_pages.is_error and "page" in _text(no_pages)
            unknown = await session.call_tool("search_lectures", {"query": QUESTION, "document_ids": ["nope"]})
            assert unknown.is_error and "nope" in _text(unknown)

    anyio.run(main)


def test_mcp_http_needs_the_key(server):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        r = httpx.post(f"{server.url}/mcp", json=body, headers={"Accept": "application/json, text/event-stream",
                                                                  **headers})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "error" in r.json()


def test_mcp_http_has_no_standalone_stream(server):
    """GET /mcp answers 405 at once (the transport's way to say there is no server stream), not an open, silent
    connection; a key is still needed first."""
    auth = {"Authorization": f"Bearer {STUDENT}"}
    for accept in ("text/event-stream", "*/*"):
        r = httpx.get(f"{server.url}/mcp", headers={"Accept": accept, **auth}, timeout=10)
        assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["code"] == -32600
    assert httpx.get(f"{server.url}/mcp", timeout=10).status_code == 401


def test_mcp_over_stdio(server):
    """`python -m app.cli mcp --data-dir ...` spawned by the SDK's stdio client, on the server's library."""
    params = mcp.StdioServerParameters(command=sys.executable, cwd=str(ROOT), env=dict(os.environ),
                                       args=["-m", "app.cli", "mcp", "--data-dir", str(server.data_dir)])

    async def main() -> None:
        async with mcp.Client(params, read_timeout_seconds=120) as session:
            await _exercise(session)

    anyio.run(main)

"""LLM answers without [n] markers: each sentence is attributed to the source that supports it (real embedder),
through both LLM backends' shared check; not covered only when the model says so or nothing is supported."""

from __future__ import annotations

import pytest

from app.qa.answer import NOT_COVERED
from app.qa.answer.extractive import ExtractiveAnswerer
from app.qa.answer.openai_compat import OpenAICompatAnswerer
from app.qa.answer.prompting import NOT_FOUND
from app.qa.types import Answer, DocumentRef, Source
from tests.fake_openai import FakeOpenAI

DECK = DocumentRef("d3", "03-lstm-and-gru.pptx", "Lecture 3")
NOTES = DocumentRef("d4", "04-attention-notes.txt", "Lecture 4")


def _sources() -> list[Source]:
    """Passages of examples/lectures (slides 3 and 5 of lecture 3, the attention part of lecture 4)."""
    return [
        Source("c1", "The LSTM forget gate\nf_t = sigmoid(W_f [h_{t-1}, x_t] + b_f)\nThe forget gate looks at the "
               "previous hidden state and the current input and outputs a number between 0 and 1 for every entry "
               "of the cell state.\nA value close to 1 keeps that part of the memory; a value close to 0 erases it.",
               1.0, DECK, {"slide": 3}),
        Source("c2", "The GRU\nThe gated recurrent unit merges the cell state and the hidden state.\nIts update gate "
               "z_t blends the old hidden state with a candidate.\nIts reset gate decides how much of the previous "
               "state is used when computing the candidate.\nA GRU has fewer parameters than an LSTM and often "
               "trains faster with similar accuracy.", 0.9, DECK, {"slide": 5}),
        Source("c3", "Attention. Instead of squeezing the whole source sentence into one context vector, the "
               "decoder computes a weighted average of all encoder hidden states at every step. The weights come "
               "from a softmax over alignment scores between the decoder state and each encoder state.", 0.8,
               NOTES, {"section": "Attention"}),
    ]


@pytest.fixture(scope="module")
def llm_server():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture()
def llm(llm_server, embedder):
    llm_server.reply = ""
    return OpenAICompatAnswerer(llm_server.url, llm_server.model, ExtractiveAnswerer(embedder), timeout=10, retries=0)


def _ask(llm, server, reply: str) -> tuple[str, Answer]:
    server.reply = reply
    items = list(llm.stream("How do LSTM and GRU gates work?", _sources()))
    assert isinstance(items[-1], Answer) and all(isinstance(i, str) for i in items[:-1])
    return "".join(i for i in items[:-1] if isinstance(i, str)), items[-1]


def test_unmarked_answer_is_cited_by_the_sources_that_support_it(llm, llm_server):
    reply = ("The forget gate outputs a value between 0 and 1 for each entry of the cell state, where values near "
             "0 erase that memory. A GRU combines the hidden state and the cell state, and has fewer parameters "
             "than an LSTM.")
    streamed, answer = _ask(llm, llm_server, reply)
    assert streamed == reply  # the deltas stream unchanged; the final Answer carries the markers
    assert answer.grounded and answer.answered_by == "openai:fake-model"
    assert answer.text == (
        "The forget gate outputs a value between 0 and 1 for each entry of the cell state, where values near 0 "
        "erase that memory [1]. A GRU combines the hidden state and the cell state, and has fewer parameters "
        "than an LSTM [2].")
    assert [(c.n, c.source.chunk_id) for c in answer.citations] == [(1, "c1"), (2, "c2")]
    assert "between 0 and 1" in answer.citations[0].quote and "fewer parameters" in answer.citations[1].quote
    assert len(llm_server.calls) == 1 and llm_server.calls[0]["stream"] is True


@pytest.mark.parametrize("reply", [
    "The capital of France is Paris. It is famous for the Eiffel Tower and its museums.",
    "Sure! I hope this helps you with your studies.",
    "Beam search keeps the k most probable partial translations at every decoding step. Word2vec learns word "
    "embeddings by predicting the context words around each word.",  # the course, but not these sources
])
def test_answer_unrelated_to_every_source_is_not_covered(llm, llm_server, reply):
    streamed, answer = _ask(llm, llm_server, reply)
    assert streamed == reply
    assert not answer.grounded and answer.text == NOT_COVERED and answer.citations == []


@pytest.mark.parametrize("reply", [
    NOT_FOUND,
    f"The forget gate outputs a value between 0 and 1 for each entry of the cell state. {NOT_FOUND}",
])
def test_the_models_not_in_sources_is_not_covered_even_beside_supported_text(llm, llm_server, reply):
    _, answer = _ask(llm, llm_server, reply)
    assert not answer.grounded and answer.text == NOT_COVERED and answer.citations == []


def test_mixed_markers_keep_valid_ones_and_attribute_the_rest(llm, llm_server):
    reply = ("The forget gate keeps or erases parts of the memory [1]. The GRU has an update gate and a reset "
             "gate. In attention, the decoder takes a weighted average of all encoder hidden states [7]. "
             "Gates are great. [2]")
    _, answer = _ask(llm, llm_server, reply)
    assert answer.grounded
    assert answer.text == (
        "The forget gate keeps or erases parts of the memory [1]. The GRU has an update gate and a reset gate [2]. "
        "In attention, the decoder takes a weighted average of all encoder hidden states [3]. Gates are great [2].")
    assert [(c.n, c.source.chunk_id) for c in answer.citations] == [(1, "c1"), (2, "c2"), (3, "c3")]
    assert "weighted average" in answer.citations[2].quote
    assert "update gate" in answer.citations[1].quote


def test_h2ogpte_llm_answers_go_through_the_same_attribution(embedder, monkeypatch):
    pytest.importorskip("h2ogpte")
    from app.qa.answer.h2ogpte_llm import H2OGPTeAnswerer

    llm = H2OGPTeAnswerer(None, ExtractiveAnswerer(embedder), llm="fake-llm")  # no connection: _ask is replaced
    asked: list[str] = []

    def ask(question: str, sources: list[Source]) -> str:
        asked.append(question)
        return "A GRU merges its cell state with its hidden state."

    monkeypatch.setattr(llm, "_ask", ask)
    items = list(llm.stream("What is a GRU?", _sources()))
    answer = items[-1]
    assert isinstance(answer, Answer) and items[:-1] == [answer.text]
    assert answer.grounded and answer.answered_by == "h2ogpte:fake-llm" and asked == ["What is a GRU?"]
    assert answer.text == "A GRU merges its cell state with its hidden state [2]."
    assert [c.n for c in answer.citations] == [2]


def test_pieces_keep_the_layout_and_markers_go_before_the_full_stop(embedder):
    from app.qa.answer.attribution import Attributor, pieces, with_marker

    text = "Gates decide, e.g. what to keep.\n- The forget gate erases memory\n\nThe GRU merges states! Done."
    parts = pieces(text)
    assert "".join(p + sep for p, sep in parts) == text
    assert [p for p, _ in parts] == ["Gates decide, e.g. what to keep.", "- The forget gate erases memory",
                                     "The GRU merges states!", "Done."]
    assert with_marker("The forget gate erases memory", 1) == "The forget gate erases memory [1]"
    assert with_marker("It **erases** memory.)", 2) == "It **erases** memory [2].)"
    text, citations, grounded = Attributor(embedder).attribute(
        "Values near 0 erase the memory. [1]\n- The gated recurrent unit merges cell and hidden state", _sources())
    assert grounded and text == ("Values near 0 erase the memory [1].\n"
                                 "- The gated recurrent unit merges cell and hidden state [2]")
    assert [c.n for c in citations] == [1, 2]

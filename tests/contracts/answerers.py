"""The Answerer contract (app.qa.ports.Answerer): every answer backend passes these. A backend's test class
inherits AnswererContract (or LLMAnswererContract) and provides an `answerer` fixture; an LLM backend also
provides `down`, a context manager under which its model cannot be reached."""

from __future__ import annotations

from app.qa.ports import Answerer
from app.qa.types import Answer, DocumentRef, Source

QUESTION = "What does the forget gate of an LSTM do?"


def sources() -> list[Source]:
    deck = DocumentRef("d1", "03-lstm-and-gru.pptx", "LSTM and GRU")
    notes = DocumentRef("d2", "04-attention-notes.txt", "Attention")
    return [Source("c1", "The forget gate of an LSTM decides which parts of the cell state to erase. It outputs "
                   "values between 0 and 1 for every cell.", 0.9, deck, {"slide": 3}, dense=0.8),
            Source("c2", "Attention weights sum to one over the encoder states.", 0.5, notes,
                   {"section": "Attention"}, dense=0.3)]


def drain(answerer: Answerer, question: str, given: list[Source]) -> tuple[str, Answer]:
    items = list(answerer.stream(question, given))
    assert isinstance(items[-1], Answer) and all(isinstance(i, str) for i in items[:-1])
    return "".join(i for i in items[:-1] if isinstance(i, str)), items[-1]


class AnswererContract:
    def test_cites_only_the_sources_it_was_given(self, answerer: Answerer):
        given = sources()
        _, answer = drain(answerer, QUESTION, given)
        assert answer.grounded and answer.citations
        for c in answer.citations:
            assert 1 <= c.n <= len(given) and c.source is given[c.n - 1] and f"[{c.n}]" in answer.text
            assert c.quote and c.quote[:40] in c.source.text.replace("\n", " ")
        assert answer.citations[0].source.chunk_id == "c1"

    def test_no_sources_is_not_grounded(self, answerer: Answerer):
        text, answer = drain(answerer, QUESTION, [])
        assert not answer.grounded and answer.citations == [] and answer.llm_error is None
        assert "does not cover" in answer.text and text == answer.text

    def test_lists_its_models(self, answerer: Answerer):
        assert answerer.models() and not answerer.retrieves


class LLMAnswererContract(AnswererContract):
    def test_model_down_gives_the_extractive_answer_and_says_why(self, answerer: Answerer, down):
        with down():
            _, answer = drain(answerer, QUESTION, sources())
        assert answer.answered_by == "extractive" and answer.llm_error and "unavailable" in answer.llm_error
        assert answer.grounded and answer.citations[0].source.chunk_id == "c1"

"""What every LLM answerer shares: the extractive stand-in, and the final check that keeps the model's valid [n]
markers and attributes its unmarked sentences to the sources (attribution.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from app.qa.answer import BaseAnswerer
from app.qa.answer.attribution import Attributor
from app.qa.answer.extractive import ExtractiveAnswerer
from app.qa.types import Answer, Source


class LLMAnswerer(BaseAnswerer):
    name = "llm"
    fallback: ExtractiveAnswerer

    def stream(self, question: str, sources: list[Source] | None, *, unknown_terms: Sequence[str] = (),
               history: Sequence[str] = (), top_k: int = 5) -> Iterator[str | Answer]:
        """The model's answer over the sources; with none there is nothing to ask it (the extractive refusal)."""
        given = list(sources or ())
        if not given:
            yield from self.extractive(question, given, unknown_terms)
            return
        yield from self.generate(question, given, unknown_terms)

    def generate(self, question: str, sources: list[Source], unknown_terms: Sequence[str]) -> Iterator[str | Answer]:
        """Text deltas, then the checked Answer (or the extractive one, with `llm_error`, when the model fails)."""
        raise NotImplementedError

    def extractive(self, question: str, sources: list[Source], unknown_terms: Sequence[str],
                   error: BaseException | None = None) -> Iterator[str | Answer]:
        """The extractive answer, one delta then the Answer; with `error`, it says why the LLM did not answer."""
        answer = self.fallback.answer(question, sources, unknown_terms=unknown_terms)
        if error is not None:
            answer.llm_error = (f"the LLM was unavailable ({type(error).__name__}: {error}); "
                                "extractive answer instead")
        yield answer.text
        yield answer

    def checked(self, content: str, sources: list[Source], answered_by: str) -> Answer:
        """The model's text with every supported sentence cited; not covered when the model said so or nothing in
        it is supported. The text may differ from the streamed deltas (markers added): the Answer is final."""
        text, citations, grounded = Attributor(self.fallback.vectors).attribute(content, sources)
        return Answer(text if grounded else self.fallback.not_covered, grounded=grounded, citations=citations,
                      answered_by=answered_by)

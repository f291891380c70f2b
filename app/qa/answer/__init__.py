"""Answer generators behind the Answerer port (app.qa.ports); `app.backends.build_answerer` picks one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from app.qa.types import Answer, Source

NOT_COVERED = ("The lecture material does not cover this question. "
               "The closest passages are listed below as sources.")


class BaseAnswerer:
    """What every answerer shares: `answer()` drains `stream()`; one model (its own name); nothing to load or
    release unless it says otherwise."""

    name = "answerer"
    retrieves = False

    def stream(self, question: str, sources: list[Source] | None, *, unknown_terms: Sequence[str] = (),
               history: Sequence[str] = (), top_k: int = 5) -> Iterator[str | Answer]:
        raise NotImplementedError

    def answer(self, question: str, sources: list[Source], *, unknown_terms: Sequence[str] = ()) -> Answer:
        result: Answer | None = None
        for item in self.stream(question, sources, unknown_terms=unknown_terms):
            if isinstance(item, Answer):
                result = item
        assert result is not None
        return result

    def models(self) -> list[str]:
        return [self.name]

    def warm_up(self) -> None:
        return None

    def close(self) -> None:
        return None

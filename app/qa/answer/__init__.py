"""Answer generators behind one protocol; `app.components.build_answerer` picks one from settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.qa.types import Answer, Source

NOT_COVERED = ("The lecture material does not cover this question. "
               "The closest passages are listed below as sources.")


class Answerer(Protocol):
    name: str

    def answer(self, question: str, sources: list[Source], *, unknown_terms: Sequence[str] = ()) -> Answer:
        """An answer grounded in `sources`, citing them by their 1-based position."""
        ...

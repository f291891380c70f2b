"""Answer generators behind one protocol; `make_answerer` picks one from settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from app.qa.types import Answer, Source

if TYPE_CHECKING:
    import numpy as np


NOT_COVERED = ("The lecture material does not cover this question. "
               "The closest passages are listed below as sources.")


class Answerer(Protocol):
    name: str

    def answer(self, question: str, sources: list[Source], *, unknown_terms: Sequence[str] = (),
               question_vec: np.ndarray | None = None) -> Answer:
        """An answer grounded in `sources`, citing them by their 1-based position."""
        ...

"""Signals that a question is outside the lecture material.

A question that names a specific term which neither the library nor the embedding model's English vocabulary
knows ("Mamba", "CTC") is about something the lectures never mention; retrieval then only finds passages on
the general topic, which look related but cannot answer it. An acronym written as one ("RoPE", "CTC": two or
more capitals) names a specific method, so only the library counts for it: the model knowing the English
word "rope" says nothing about rotary position embeddings being in the lectures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ingest.textnorm import STOPWORDS, stem, words

PREFIX = 6
ACRONYM = re.compile(r"\b(?=\w*[A-Z]\w*[A-Z])[A-Za-z][\w]*\b")


class Vocabulary:
    def __init__(self, library_terms: Iterable[str], model_words: frozenset[str]) -> None:
        self.library = set(library_terms)
        self.model = model_words
        self.prefixes = {w[:PREFIX] for w in self.library | self.model if len(w) >= PREFIX}
        self.library_prefixes = {w[:PREFIX] for w in self.library if len(w) >= PREFIX}

    def unknown_terms(self, question: str) -> list[str]:
        out = []
        for w in words(question):
            if len(w) < 3 or w in STOPWORDS or w.isdigit():
                continue
            if stem(w) in self.library or w in self.library or w in self.model:
                continue
            if len(w) >= PREFIX and w[:PREFIX] in self.prefixes:  # parallelism ~ parallelization
                continue
            out.append(w)
        for m in ACRONYM.finditer(question):
            w = m.group(0).lower()
            if w in out or w in self.library or stem(w) in self.library:
                continue
            if len(w) >= PREFIX and w[:PREFIX] in self.library_prefixes:
                continue
            out.append(w)
        return out

"""The offline default: pick the source sentences that best answer the question and cite each one.

Nothing is generated, so nothing can be stated that is not in a source. Sentences are scored by the embedder's
cosine to the question plus keyword overlap; the best few that add something new are kept, grouped by source in
rank order and in document order within a source. When the best passage is weakly related to the question
-- the mean of the best passage cosine and the best sentence cosine under `min_evidence`, calibrated on the dev
set, and no top passage contains every content word of the question -- or the question names a term the library
has never seen, the answer says the material does not cover it. (A short definitional question such as "what is
teacher forcing?" matches a long passage weakly by cosine, but the passage names both of its words.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from app.qa.answer import NOT_COVERED
from app.qa.answer.vector_cache import VectorCache
from app.qa.types import Answer, Citation, Source
from ingest.embedding import Embedder
from ingest.textnorm import keyword_tokens, words

QUESTION_WORDS = frozenset(keyword_tokens(
    "what how why when where which who explain describe define definition meaning mean difference differ between "
    "use used work works tell give example examples"))
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9$\\])")
_FENCE = re.compile(r"```.*?(```|$)", re.S)


_EMPHASIS = re.compile(r"(\*\*|__|(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w))")


def _lines(text: str) -> list[str]:
    """Lines with wrapped continuations joined (a line without end punctuation followed by a lower-case one)."""
    out: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip(" •-*\t")
        if not line:
            continue
        if out and not out[-1].endswith((".", "!", "?", ":", ";")) and line[0].islower():
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return out


def sentences_of(text: str) -> list[str]:
    text = _EMPHASIS.sub("", _FENCE.sub("\n", text))
    out: list[str] = []
    for line in _lines(text):
        for s in _SPLIT.split(line):
            s = s.strip()
            if len(words(s)) >= 3 and not s.startswith(("import ", "def ", "class ", ">>>")):
                out.append(s)
    return out


HEADING = -1.0  # the score of a heading: below any sentence's


def is_heading(sentence: str, source: Source) -> bool:
    """The passage's own heading (its first line, or the last part of its section path): evidence that the
    passage is on topic, never a sentence of the answer."""
    s = sentence.strip()
    if s.endswith((".", "!", "?", ":")) or len(s.split()) > 10:
        return False
    first = source.text.strip().split("\n", 1)[0].strip()
    section = str(source.location.get("section", "")).split(" > ")[-1].strip()
    return s == first or (bool(section) and s.lower() == section.lower())


class ExtractiveAnswerer:
    name = "extractive"
    not_covered = NOT_COVERED

    def __init__(self, embedder: Embedder, *, min_evidence: float = 0.435, max_sentences: int = 4,
                 max_words: int = 110, sources_used: int = 3, keep_ratio: float = 0.5,
                 cache_sentences: int = 20_000) -> None:
        self.embedder = embedder
        self.vectors = VectorCache(embedder, cache_sentences)
        self.min_evidence = min_evidence
        self.max_sentences = max_sentences
        self.max_words = max_words
        self.sources_used = sources_used
        self.keep_ratio = keep_ratio  # a sentence scoring under this share of the best one is left out

    @staticmethod
    def _covered(question: str, sources: list[Source]) -> bool:
        terms = set(keyword_tokens(question)) - QUESTION_WORDS
        return bool(terms) and any(terms <= set(keyword_tokens(s.text)) for s in sources)

    def answer(self, question: str, sources: list[Source], *, unknown_terms: Sequence[str] = ()) -> Answer:
        if not sources or unknown_terms:
            return Answer(NOT_COVERED, grounded=False, citations=[])
        cands: list[tuple[int, int, str]] = []  # (source index, position, sentence)
        for si, src in enumerate(sources[: self.sources_used]):
            for pos, sent in enumerate(sentences_of(src.text)):
                cands.append((si, pos, sent))
        if not cands:
            return Answer(NOT_COVERED, grounded=False, citations=[])
        qv = self.vectors.encode([question], batch_size=1)[0]
        svecs = self.vectors.encode([c[2] for c in cands], batch_size=16)
        cos = svecs @ qv
        evidence = (float(cos.max()) + max(s.dense for s in sources[: self.sources_used])) / 2
        if evidence < self.min_evidence and not self._covered(question, sources[: self.sources_used]):
            return Answer(NOT_COVERED, grounded=False, citations=[])
        qk = set(keyword_tokens(question))
        scores = []
        for (si, _, sent), c in zip(cands, cos, strict=True):
            if is_heading(sent, sources[si]):
                scores.append(HEADING)
                continue
            overlap = len(qk & set(keyword_tokens(sent))) / len(qk) if qk else 0.0
            scores.append(0.65 * float(c) + 0.35 * overlap - 0.03 * si)
        chosen: list[int] = []
        total_words = 0
        for i in np.argsort(scores)[::-1]:
            if len(chosen) >= self.max_sentences or (chosen and scores[i] < scores[chosen[0]] * self.keep_ratio) \
                    or scores[i] <= HEADING:
                break
            sent = cands[i][2]
            n_words = len(sent.split())
            if chosen and total_words + n_words > self.max_words:
                continue
            ws = set(words(sent))
            if any(len(ws & set(words(cands[j][2]))) / max(len(ws), 1) > 0.6 for j in chosen):
                continue
            chosen.append(int(i))
            total_words += n_words
        if not chosen:
            return Answer(NOT_COVERED, grounded=False, citations=[])
        chosen.sort(key=lambda i: (cands[i][0], cands[i][1]))
        parts: list[str] = []
        citations: dict[int, Citation] = {}
        for i in chosen:
            si, _, sent = cands[i]
            n = si + 1
            sent = sent if sent.endswith((".", "!", "?", ":")) else sent + "."
            parts.append(f"{sent} [{n}]")
            if n in citations:
                citations[n].quote += " " + cands[i][2]
            else:
                citations[n] = Citation(n=n, source=sources[si], quote=cands[i][2])
        return Answer(" ".join(parts), grounded=True, citations=list(citations.values()))

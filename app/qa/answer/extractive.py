"""The offline default: pick the source sentences that best answer the question and cite each one.

Nothing is generated, so nothing can be stated that is not in a source. Sentences are scored by the embedder's
cosine to the question plus keyword overlap; the best few that add something new are kept, grouped by source in
rank order and in document order within a source. Whether to answer at all is decided first, by the fitted
answerability model (app/qa/answer/answerability.py) over signals of the top sources: passage and sentence
cosine, the share of the question's words (plain and rarity-weighted) they hold, words the library lacks, and
terms nobody knows ("Mamba"), which refuse by rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from app.qa.answer import NOT_COVERED, BaseAnswerer
from app.qa.answer.answerability import Answerability, Signals
from app.qa.answer.vector_cache import VectorCache
from app.qa.retrieve import Reader
from app.qa.types import Answer, Citation, Source
from ingest.embedding import Embedder
from ingest.sentences import STARTS
from ingest.textnorm import keyword_tokens, words

QUESTION_WORDS = frozenset(keyword_tokens(
    "what how why when where which who explain describe define definition meaning mean difference differ between "
    "use used work works tell give example examples"))
_FENCE = re.compile(r"```.*?(```|$)", re.S)


_EMPHASIS = re.compile(r"(\*\*|__|(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w))")


# a sentence cannot end on these
DANGLING = frozenset(["a", "an", "and", "or", "of", "the", "by", "with", "to", "from", "due", "nor"])
_DISPLAY = ("$$", "\\[", "\\begin")
_OPENERS = "([{\"'\u201c\u2018"
_ENUMERATOR = re.compile(r"[(\[]([a-z]|[ivx]+|\d+)[)\]]")
_NOT_ANSWER = re.compile(r"(?i)(sources?|references?|image source|figure (from|source)|question|exercise)\s*:|#")
_INSTRUCTION = re.compile(r"(?i)(speaker\s+)?notes?\s*:\s*(remind|mention|ask|tell|emphasi[sz]e|point out|recall|"
                          r"discuss|skip|go over|show|make sure|stress)\b")
_LABEL = re.compile(r"(?i)^(speaker\s+)?notes?\s*:\s*")


def _continues(prev: str, line: str) -> bool:
    """Does `line` continue `prev`? A hard-wrapped sentence (prev ends on a comma or on "and", or line starts
    lower-case, also behind an opening bracket or quote: "Multiplicative" + "(bilinear) attention inserts..." is
    one sentence; taken apart, the first line's last word was dropped as a fragment), an open display equation,
    or the display equation a colon introduces."""
    if prev.count("$$") % 2:
        return True
    if prev.endswith(":"):
        return line.startswith(_DISPLAY)
    if prev.endswith((".", "!", "?", ";")):
        return False
    last = prev.rsplit(None, 1)[-1].lower()
    lower = line.lstrip(_OPENERS)[:1].islower() and not _ENUMERATOR.match(line)  # "(a) ...", "(ii) ...": items
    return lower or prev.endswith(",") or last in DANGLING


def _lines(text: str) -> list[str]:
    """Lines, with wrapped continuations and introduced display equations joined to their sentence."""
    out: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip(" •-*\t")
        if not line:
            continue
        if out and _continues(out[-1], line):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return out


def quotable(sentence: str) -> bool:
    """Can this sentence stand in an answer? Not a question (exercises, rhetorical ones), a heading, a source or
    reference line, a note telling the lecturer what to do, nor a sentence cut short (ending on "and." or on a
    colon whose list or equation did not come along). Such sentences still count as evidence."""
    s = sentence.strip()
    if s.endswith(("?", ":")) or _NOT_ANSWER.match(s) or _INSTRUCTION.match(s):
        return False
    tokens = re.findall(r"\w+", s)
    return not (s.endswith((".", ",")) or s[-1:].isalpha()) or not tokens or tokens[-1].lower() not in DANGLING


def sentences_of(text: str) -> list[str]:
    text = _EMPHASIS.sub("", _FENCE.sub("\n", text))
    out: list[str] = []
    for line in _lines(text):
        for s in STARTS.split(line):
            s = s.strip()
            if len(words(s)) >= 3 and not s.startswith(("import ", "def ", "class ", ">>>")):
                out.append(s)
    return out


HEADING = -1.0  # the score of a heading: below any sentence's
READER_SENTENCE_WEIGHT = 0.4
"""A sentence's score: (1 - w) * (0.65 cosine + 0.35 keyword overlap) + w * sigmoid(cross-encoder logit), minus
0.03 a source rank."""
READER_PASSAGE_WEIGHT = 0.5  # + this x sigmoid(the logit of the sentence's passage)
READER_FLOOR = -12.0  # the reader signals when nothing was read (below any logit seen)


def in_context(source: Source, sentence: str) -> str:
    """A sentence as the cross-encoder reads it: after its document title and its passage's heading line (the
    slide title or section that says what the sentence is about)."""
    first = source.text.strip().split("\n", 1)[0].strip()  # a slide's title ("Why gates?"), a section's name
    head = first if len(first.split()) <= 10 else str(source.location.get("section", "")).split(" > ")[-1]
    parts = [p for p in (source.document.title, head) if p and p not in sentence]
    return f"{' > '.join(parts)}: {sentence}" if parts else sentence


def sentence_scores(question: str, sources: Sequence[Source], cands: Sequence[tuple[int, int, str]],
                    cos: np.ndarray, read: np.ndarray | None, weight: float = READER_SENTENCE_WEIGHT,
                    passage_weight: float = READER_PASSAGE_WEIGHT) -> list[float]:
    """Each candidate sentence's score for the answer; HEADING for a sentence that may not be quoted."""
    qk = set(keyword_tokens(question))
    scores = []
    for i, ((si, _, sent), c) in enumerate(zip(cands, cos, strict=True)):
        if is_heading(sent, sources[si]) or not quotable(sent):
            scores.append(HEADING)
            continue
        overlap = len(qk & set(keyword_tokens(sent))) / len(qk) if qk else 0.0
        base = 0.65 * float(c) + 0.35 * overlap
        if read is not None:
            base = (1 - weight) * base + weight / (1.0 + float(np.exp(-read[i])))
            passage = sources[si].reader
            if passage is not None and passage_weight:
                base += passage_weight / (1.0 + float(np.exp(-passage)))
        scores.append(base - 0.03 * si)
    return scores


def is_heading(sentence: str, source: Source) -> bool:
    """The passage's own heading (its first line, or the last part of its section path): evidence that the
    passage is on topic, never a sentence of the answer."""
    s = sentence.strip()
    if s.endswith((".", "!", "?", ":")) or len(s.split()) > 10:
        return False
    first = source.text.strip().split("\n", 1)[0].strip()
    section = str(source.location.get("section", "")).split(" > ")[-1].strip()
    return s == first or (bool(section) and s.lower() == section.lower())


def choose(cands: Sequence[tuple[int, int, str]], scores: Sequence[float], max_sentences: int, keep_ratio: float,
           max_words: int) -> list[int]:
    """The best sentences that add something new: at most `max_sentences` and `max_words`, none under
    `keep_ratio` of the best score, none sharing over 0.6 of its words with one chosen before."""
    chosen: list[int] = []
    total_words = 0
    for i in np.argsort(scores)[::-1]:
        if len(chosen) >= max_sentences or (chosen and scores[i] < scores[chosen[0]] * keep_ratio) \
                or scores[i] <= HEADING:
            break
        sent = cands[i][2]
        n_words = len(sent.split())
        if chosen and total_words + n_words > max_words:
            continue
        ws = set(words(sent))
        if any(len(ws & set(words(cands[j][2]))) / max(len(ws), 1) > 0.6 for j in chosen):
            continue
        chosen.append(int(i))
        total_words += n_words
    return chosen


class ExtractiveAnswerer(BaseAnswerer):
    name = "extractive"
    not_covered = NOT_COVERED

    def __init__(self, embedder: Embedder, *, max_sentences: int = 4,
                 max_words: int = 110, sources_used: int = 3, keep_ratio: float = 0.5,
                 cache_sentences: int = 20_000, answerability: Answerability | None = None,
                 rarity: Callable[[str], Mapping[str, float]] | None = None, reader: Reader | None = None) -> None:
        self.embedder = embedder
        self.rarity = rarity  # the library's idf of a text's keywords (Store.rarity), when it has one
        self.reader = reader  # the cross-encoder: reads (question, sentence in its context)
        self.answerability = answerability or Answerability.load(with_reader=reader is not None)
        self.vectors = VectorCache(embedder, cache_sentences)
        self.max_sentences = max_sentences
        self.max_words = max_words
        self.sources_used = sources_used
        self.keep_ratio = keep_ratio  # a sentence scoring under this share of the best one is left out

    def warm_up(self) -> None:
        if self.reader is not None:
            self.reader.load()

    def signals(self, question: str, sources: list[Source], unknown_terms: Sequence[str] = ()
                ) -> tuple[Signals, list[tuple[int, int, str]], np.ndarray, np.ndarray | None]:
        """The answerability signals, with the candidate sentences (source, position, text), their cosines and
        (with a reader) the cross-encoder's logits of each sentence in its context."""
        used = sources[: self.sources_used]
        cands = [(si, pos, sent) for si, src in enumerate(used) for pos, sent in enumerate(sentences_of(src.text))]
        qv = self.vectors.encode([question], batch_size=1)[0]
        cos = self.vectors.encode([c[2] for c in cands], batch_size=16) @ qv if cands else np.zeros(0)
        read: np.ndarray | None = None
        if self.reader is not None:
            read = self.reader.score(question, [in_context(used[si], sent) for si, _, sent in cands])
        terms = set(keyword_tokens(question)) - QUESTION_WORDS
        rarity = self.rarity(question) if self.rarity is not None else {}
        shares, rare, absent, lacking = [0.0], [0.0], 0.0, 0.0
        if terms:
            known = {t: w for t, w in rarity.items() if t in terms}
            # words no passage of the library holds
            absent = float(len(terms - known.keys())) if self.rarity is not None else 0.0
            top = max(known.values(), default=1.0)
            weight = {t: known.get(t, top) for t in terms}
            held = [terms & set(keyword_tokens(src.text)) for src in used]
            for have in held:
                shares.append(len(have) / len(terms))
                rare.append(sum(weight[t] for t in have) / sum(weight.values()))
            missing = set(known) - set().union(*held)  # in the library, but in none of these sources
            lacking = max((known[t] / top for t in missing), default=0.0)
        signals = Signals(passage=max((s.dense for s in used), default=0.0),
                          sentence=float(cos.max()) if len(cos) else 0.0, term_share=max(shares),
                          rare_share=max(rare), unknown=float(len(unknown_terms)), absent=absent, lacking=lacking,
                          reader_passage=max((s.reader for s in used if s.reader is not None), default=READER_FLOOR),
                          reader_sentence=float(read.max()) if read is not None and len(read) else READER_FLOOR)
        return signals, cands, cos, read

    def stream(self, question: str, sources: list[Source] | None, *, unknown_terms: Sequence[str] = (),
               history: Sequence[str] = (), top_k: int = 5) -> Iterator[str | Answer]:
        """Not incremental: the whole text as one delta, then the Answer."""
        answer = self.answer(question, list(sources or ()), unknown_terms=unknown_terms)
        yield answer.text
        yield answer

    def answer(self, question: str, sources: list[Source], *, unknown_terms: Sequence[str] = ()) -> Answer:
        if not sources:
            return Answer(NOT_COVERED, grounded=False, citations=[], why="refuse: nothing was retrieved")
        signals, cands, cos, read = self.signals(question, sources, unknown_terms)
        ok, why = self.answerability.decide(signals)
        if not ok or not cands:
            return Answer(NOT_COVERED, grounded=False, citations=[], why=why)
        scores = sentence_scores(question, sources, cands, cos, read)
        chosen = choose(cands, scores, self.max_sentences, self.keep_ratio, self.max_words)
        if not chosen:
            return Answer(NOT_COVERED, grounded=False, citations=[], why=f"{why}; no sentence to quote")
        chosen.sort(key=lambda i: (cands[i][0], cands[i][1]))
        parts: list[str] = []
        citations: dict[int, Citation] = {}
        for i in chosen:
            si, _, sent = cands[i]
            n = si + 1
            sent = _LABEL.sub("", sent)  # "Notes: The gradients flow ..." -> "The gradients flow ..."
            sent = sent if sent.endswith((".", "!", "?", ":")) else sent + "."
            parts.append(f"{sent} [{n}]")
            if n in citations:
                citations[n].quote += " " + cands[i][2]
            else:
                citations[n] = Citation(n=n, source=sources[si], quote=cands[i][2])
        return Answer(" ".join(parts), grounded=True, citations=list(citations.values()), why=why)

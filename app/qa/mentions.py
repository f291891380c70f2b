"""Questions that name their source: "in the TJU slides", "colah's post", "the NYU lab 7 deck", "lecture 5".

Students name a deck by its course, school, author or number, which is lecture metadata, not lecture text: the
words are in the document's path and title, and rarely in its passages. A question's words and numbered pairs
("lecture 24", "lab 7") are matched against each document's name and title; a word counts as a cue only when it is
rare in the passages of the documents it does not name (so "attention" in `lecture24_attention.pptx` is a topic,
not a source, while "Harvard" in every Harvard slide's footer still names the Harvard decks) and is not a generic
word for a document ("slides", "notes", "lecture"). A capitalised cue that is no English word may be a part of a
name's word ("TJU" in `tjuirlab`, "Alammar" in `jalammar`). Each cue weighs log(documents / documents it matches);
the documents with the highest total are the named source (a PDF and a PPTX export of one deck tie).

The matched words are never "unknown terms" for refusal: "TJU" is not lecture text, but it names a document.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ingest.textnorm import STOPWORDS, stem

GENERIC = frozenset("""slide slides deck decks note notes lecture lectures lab labs chapter chapters section sections
    post posts blog book notebook handout course class talk page pages part index pdf pptx docx md html htm txt
    text markdown file files document documents reading readings tutorial week advanced""".split())  # noqa: SIM905
RARE_SHARE = 0.01  # a word in more than this share of passages is a topic word, not a source name
MIN_PART = 5
REFER_WINDOW = 4  # a cue may be a part of a name word of at least this many letters ("tju" in "tjuirlab")
_TOKEN = re.compile(r"[a-z]+[0-9]+[a-z0-9]*|[0-9]+[a-z]+[a-z0-9]*|[a-z]+|[0-9]+")


def _plain_case(text: str) -> str:
    """Without accents ("Chrupała" -> "Chrupala")."""
    text = unicodedata.normalize("NFKD", text.replace("ł", "l").replace("Ł", "L"))
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def _plain(text: str) -> str:
    return _plain_case(text).lower()


def _units(text: str) -> set[str]:
    """Words, and numbered pairs: "lecture24" and "lecture 24" -> lecture24, lecture, "lecture 24"."""
    out: set[str] = set()
    prev = ""
    for tok in _TOKEN.findall(_plain(text)):
        out.add(tok)
        numbered = re.fullmatch(r"([a-z]{3,})([0-9]+)", tok)
        if numbered:  # "lecture24", "lab7"; not "seq2seq", "d2l", "cs109b"
            out.add(numbered[1])
            out.add(f"{numbered[1]} {int(numbered[2])}")
        elif tok.isdigit() and len(prev) >= 3 and prev.isalpha():
            out.add(f"{prev} {int(tok)}")
        prev = tok
    return out


def _referring_words(question: str) -> tuple[set[str], set[str]]:
    """(capitalised words, words in a position that refers to a source): up to REFER_WINDOW words before a word
    for a document ("the NYU lab", "the LMU RNN slides", "colah's LSTM post"), or a capitalised possessive
    ("Chrupała's note", "Harvard's lecture 25"). "beam search's cost" or "vision Transformer blocks" name no source."""
    tokens = re.findall(r"[\w']+", _plain_case(question).replace("\u2019", "'"))
    bare = [t[:-2] if t.lower().endswith("'s") else t for t in tokens]
    capitalised = {t.lower() for t in bare if t[:1].isupper()}
    referring: set[str] = set()
    for i, (tok, word) in enumerate(zip(tokens, bare, strict=True)):
        ahead = {w.lower() for w in bare[i + 1 : i + 1 + REFER_WINDOW]}
        if ahead & GENERIC or (tok.lower().endswith("'s") and word[:1].isupper()):
            referring.update(_units(word))
    return capitalised, referring


@dataclass(frozen=True)
class Mention:
    doc_ids: frozenset[str]  # the named documents (ties included)
    words: frozenset[str]  # the question's words that named them


class SourceNames:
    """Matches questions to the documents they name; built once per library generation."""

    def __init__(self, documents: Iterable[tuple[str, str, str]], rows_with: Callable[[str], Sequence[int]],
                 row_docs: Sequence[str], known_words: frozenset[str] = frozenset()) -> None:
        """documents: (id, name, title); rows_with: stemmed keyword -> the passages (rows) holding it;
        row_docs: each row's document id; known_words: the embedding model's whole-word vocabulary."""
        self.names = {doc_id: _units(f"{name} {title}") for doc_id, name, title in documents}
        self.parts = {doc_id: {u for u in units if len(u) >= MIN_PART and u.isalpha()}
                      for doc_id, units in self.names.items()}
        self.rows_with = rows_with
        self.row_docs = row_docs
        self.known_words = known_words

    def _matches(self, unit: str, capitalised: set[str]) -> set[str]:
        hit = {d for d, units in self.names.items() if unit in units}
        if not hit and unit in capitalised and unit not in self.known_words:  # a name's part: "TJU", "Alammar"
            hit = {d for d, parts in self.parts.items() if any(p != unit and unit in p for p in parts)}
        return hit

    def _cue(self, unit: str, docs: set[str]) -> bool:
        """A numbered pair, or a word that passages of other documents rarely hold (a name, not a topic)."""
        if " " in unit:
            return True
        if len(unit) < 3 or unit in STOPWORDS or unit in GENERIC or unit.isdigit():
            return False
        return self.outside(stem(unit), docs) <= RARE_SHARE * self.passages()

    def outside(self, term: str, docs: set[str]) -> int:
        """Passages of documents other than `docs` that hold the keyword `term` (a database store counts them
        in SQL instead)."""
        return sum(1 for r in self.rows_with(term) if self.row_docs[r] not in docs)

    def passages(self) -> int:
        return len(self.row_docs)

    def find(self, question: str) -> Mention | None:
        capitalised, referring = _referring_words(question)
        scores: dict[str, float] = {}
        words: set[str] = set()
        for unit in _units(question):
            if " " not in unit and unit not in referring:
                continue
            docs = self._matches(unit, capitalised)
            if not docs or len(docs) == len(self.names) or not self._cue(unit, docs):
                continue
            weight = math.log(len(self.names) / len(docs))
            for d in docs:
                scores[d] = scores.get(d, 0.0) + weight
            words.update(unit.split())
        if not scores:
            return None
        best = max(scores.values())
        return Mention(frozenset(d for d, s in scores.items() if s >= best - 1e-9), frozenset(words))

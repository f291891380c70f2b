"""Text normalisation shared by dedupe and keyword search."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[a-z0-9]+")

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves""".split()  # noqa: SIM905
)


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


KEYWORDS_VERSION = 2
"""Bumped whenever keyword_tokens changes: a library's BM25 files built with older terms are rebuilt on load.
2: "vanishes" -> "vanish" (was "vanishe", which matched neither "vanish" nor "vanishing")."""


def stem(word: str) -> str:
    """A deliberately small suffix stripper: enough to match 'gates'/'gate', 'gradients'/'gradient'."""
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("shes", "sh"), ("ches", "ch"),
                         ("xes", "x"), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + repl
    return word


def keyword_tokens(text: str) -> list[str]:
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def shingles(text: str, n: int = 3) -> set[int]:
    ws = words(text)
    if len(ws) < n:
        return {hash(" ".join(ws))} if ws else set()
    return {hash(" ".join(ws[i : i + n])) for i in range(len(ws) - n + 1)}

"""Answer or refuse: a small logistic model over signals of how well the retrieved passages meet the question.

The signals (`Signals`), each computed from the top sources the answer would quote:
- `passage`: the best cosine of the question and a source passage;
- `sentence`: the best cosine of the question and one sentence of those sources;
- `term_share`: the largest share of the question's content words (stemmed, question words out) that one source
  contains; `rare_share` the same share weighted by each word's rarity in the library (its inverse document
  frequency), so a missing rare word ("ALiBi", "perplexity") weighs more than a missing common one;
- `unknown`: how many of the question's terms neither the library nor the model's vocabulary knows;
- `absent`: how many of its content words no passage of the library holds ("ROUGE", "nucleus");
- `lacking`: the rarity (idf, scaled to the rarest word of the question) of the rarest content word that the
  library holds but none of these sources does.

Two rules come first: a question with an unknown term is refused; one whose content words all stand in one source
is answered (a short definitional question matches a long passage weakly by cosine, but the passage names every
word of it; no unanswerable question of dev or dev2 has such a source). The model decides the rest. The weights live in
`answerability.json` beside this file, fitted by `scripts/fit_answerability.py` on the dev and dev2 question sets
over the shared corpus, with the threshold chosen inside cross-validation; that script prints the cross-validated
counts reported in docs/retrieval.md. `why` names the decision and its inputs, for `lecture-qa eval --explain`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

MODEL_PATH = Path(__file__).with_name("answerability.json")
PLAIN_MODEL_PATH = Path(__file__).with_name("answerability_no_reader.json")  # LECTURE_QA_READER=false


@dataclass
class Signals:
    passage: float
    sentence: float
    term_share: float
    rare_share: float
    unknown: float
    absent: float = 0.0
    lacking: float = 0.0
    reader_passage: float = 0.0  # the cross-encoder's best logit over the sources (with their next passage)
    reader_sentence: float = 0.0  # its best logit over their sentences, each in its context

    def vector(self, names: list[str]) -> list[float]:
        values = asdict(self)
        return [float(values[n]) for n in names]


@dataclass
class Answerability:
    features: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    threshold: float

    @classmethod
    def load(cls, path: Path | None = None, *, with_reader: bool = True) -> Answerability:
        path = path or (MODEL_PATH if with_reader else PLAIN_MODEL_PATH)
        data = json.loads(path.read_text())
        return cls(data["features"], data["mean"], data["scale"], data["weights"], data["bias"], data["threshold"])

    def probability(self, signals: Signals) -> float:
        if signals.unknown >= 1:  # a term neither the library nor the model knows ("Mamba", "RoPE"): refused
            return 0.0
        if signals.term_share >= 1:  # one source holds every content word ("what is teacher forcing?")
            return 1.0
        x = signals.vector(self.features)
        z = self.bias + sum(w * (v - m) / s for w, v, m, s in zip(self.weights, x, self.mean, self.scale,
                                                                  strict=True))
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def decide(self, signals: Signals) -> tuple[bool, str]:
        p = self.probability(signals)
        ok = p >= self.threshold
        inputs = ", ".join(f"{n} {v:.2f}" for n, v in zip(self.features, signals.vector(self.features),
                                                              strict=True))
        verdict = "answer" if ok else "refuse"
        return ok, f"{verdict}: p(answerable) {p:.2f} {'>=' if ok else '<'} {self.threshold:.2f} ({inputs})"

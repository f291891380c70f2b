"""Fit the answer-or-refuse model (app/qa/answer/answerability.json) on QA sets over an ingested corpus.

    python scripts/fit_answerability.py --data-dir ./data-corpus ../shared/eval/dev.jsonl ../shared/eval/dev2.jsonl

For every question: the sources /ask would get, then the extractive answerer's signals. A logistic regression
(standardised signals, L2) predicts "answerable"; a question naming a term that neither the library nor the model
knows is refused by rule (the model is fitted on the others). The threshold is chosen to refuse as many
unanswerable questions as possible while answering at least --min-answered of the answerable ones. The figures
printed are cross-validated (stratified folds, repeated with several shuffles: model and threshold fitted on the
other folds, the held-out questions decided once each per repeat), then the model is refitted on everything and
written out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.qa.answer.answerability import MODEL_PATH, PLAIN_MODEL_PATH  # noqa: E402

FEATURES = ["passage", "sentence", "term_share", "rare_share", "unknown", "absent", "lacking", "reader_passage",
            "reader_sentence"]
READER = ["reader_passage", "reader_sentence"]
MODEL = [f for f in FEATURES if f != "unknown"]  # unknown terms refuse by rule


def collect(data_dir: Path, sets: list[Path], dump: Path | None = None,
            reader: bool = True) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Every question's signals; with `dump`, also what scripts/reader_sweep.py needs to choose answer sentences
    offline (the sentences, their cosines and logits, which hold an evidence quote) and the search ranks."""
    import pickle

    from app.backends import build_service
    from app.qa.answer.extractive import ExtractiveAnswerer, is_heading, quotable
    from app.qa.evaluate import first_full_hit, normalise
    from app.settings import Settings

    service = build_service(Settings(data_dir=data_dir, reader=reader))
    service.warm_up()
    dumped = []
    answerer = service.answerer
    assert isinstance(answerer, ExtractiveAnswerer)
    items, xs, ys = [], [], []
    for path in sets:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            item["set"] = path.name
            question = item["question"]
            found = service.store.search(question, max(10, service.default_top_k))
            sources = found[: service.default_top_k]
            unknown = service.store.unknown_terms(question)
            signals, cands, cos, read = answerer.signals(question, sources, unknown)
            if dump is not None:
                quotes = [normalise(ev["quote"]) for ev in item.get("evidence", [])]
                dumped.append({
                    "id": item.get("id"), "set": path.name, "answerable": bool(item.get("answerable", True)),
                    "kind": item.get("kind", ""), "rank": first_full_hit(item, [r.text for r in found]),
                    "rank_context": first_full_hit(item, [f"{r.text}\n{r.context or ''}" for r in found]),
                    "contexts": sum(r.context is not None for r in found), "lengths": [len(r.text) for r in found],
                    "signals": signals.vector(FEATURES), "cands": cands, "cos": cos, "read": read,
                    "blocked": [is_heading(c[2], sources[c[0]]) or not quotable(c[2]) for c in cands],
                    "evidence": [any(q and q in normalise(c[2]) for q in quotes) for c in cands],
                    "question": question, "sources": sources, "answer": item.get("answer", ""),
                    "evidence_items": item.get("evidence", [])})
            items.append(item)
            xs.append(signals.vector(FEATURES))
            ys.append(1 if item.get("answerable", True) else 0)
    if dump is not None:
        with dump.open("wb") as f:
            pickle.dump(dumped, f)
    return items, np.asarray(xs, dtype=float), np.asarray(ys)


UNKNOWN = FEATURES.index("unknown")
COVERED = FEATURES.index("term_share")
COLUMNS = [FEATURES.index(f) for f in MODEL]


def use(names: list[str]) -> None:
    """Fit and decide with these signals only."""
    COLUMNS[:] = [FEATURES.index(f) for f in names]


def fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Logistic regression on the questions the rules leave open (no unknown term, no source holding every word)."""
    from sklearn.linear_model import LogisticRegression

    keep = (x[:, UNKNOWN] < 1) & (x[:, COVERED] < 1)
    x, y = x[keep][:, COLUMNS], y[keep]
    mean, scale = x.mean(0), np.maximum(x.std(0), 1e-6)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000).fit((x - mean) / scale, y)
    return mean, scale, model.coef_[0], float(model.intercept_[0])


def prob(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    p = 1 / (1 + np.exp(-(((x[:, COLUMNS] - mean) / scale) @ w + b)))
    return np.where(x[:, UNKNOWN] >= 1, 0.0, np.where(x[:, COVERED] >= 1, 1.0, p))


def pick_threshold(p: np.ndarray, y: np.ndarray, min_answered: float) -> float:
    """The highest threshold that still answers min_answered of the answerable questions (most refusals)."""
    pos = np.sort(p[y == 1])
    k = int(np.floor((1 - min_answered) * len(pos)))  # how many answerable ones may be refused
    return float(pos[k]) - 1e-6 if len(pos) else 0.5


def cross_validate(x: np.ndarray, y: np.ndarray, c: float, min_answered: float, folds: int,
                   repeats: int) -> np.ndarray:
    """Share of repeats in which each question was answered when held out."""
    from sklearn.model_selection import StratifiedKFold

    answered = np.zeros(len(y))
    for seed in range(repeats):
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
            mean, scale, w, b = fit(x[train], y[train], c)
            t = pick_threshold(prob(x[train], mean, scale, w, b), y[train], min_answered)
            answered[test] += prob(x[test], mean, scale, w, b) >= t
    return answered / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="+", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--min-answered", type=float, default=0.96)
    parser.add_argument("--c", type=float, default=0.1, help="inverse L2 strength")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--write", action="store_true", help=f"write {MODEL_PATH.name}")
    parser.add_argument("--no-reader", action="store_true", help=f"without the cross-encoder ({PLAIN_MODEL_PATH.name})")
    parser.add_argument("--features", nargs="+", choices=MODEL, help="the signals the model reads (default: all)")
    parser.add_argument("--dump", type=Path, help="also write what scripts/reader_sweep.py answers reads")
    parser.add_argument("--from-dump", type=Path, nargs="+", help="the signals of earlier --dumps (no search)")
    args = parser.parse_args()
    names = [f for f in MODEL if f not in READER] if args.no_reader else (args.features or MODEL)
    use(names)
    if args.from_dump:
        import pickle

        dumped = []
        for path in args.from_dump:
            with path.open("rb") as f:
                dumped += pickle.load(f)
        items = [{"set": d["set"]} for d in dumped]
        x = np.asarray([d["signals"] for d in dumped], dtype=float)
        y = np.asarray([1 if d["answerable"] else 0 for d in dumped])
    else:
        items, x, y = collect(args.data_dir, args.sets, args.dump, reader=not args.no_reader)
    answered = cross_validate(x, y, args.c, args.min_answered, args.folds, args.repeats)
    print(f"cross-validated ({args.folds} folds x {args.repeats} shuffles), features {names}:")
    for name in sorted({i["set"] for i in items}):
        idx = [k for k, i in enumerate(items) if i["set"] == name]
        pos = [k for k in idx if y[k] == 1]
        neg = [k for k in idx if y[k] == 0]
        print(f"  {name}: answered {answered[pos].sum():.1f}/{len(pos)}  refused {len(neg) - answered[neg].sum():.1f}"
              f"/{len(neg)}")
    mean, scale, w, b = fit(x, y, args.c)
    t = pick_threshold(prob(x, mean, scale, w, b), y, args.min_answered)
    print("weights:", dict(zip(names, np.round(w, 3).tolist(), strict=True)), "bias", round(b, 3),
          "threshold", round(t, 3))
    if args.write:
        (PLAIN_MODEL_PATH if args.no_reader else MODEL_PATH).write_text(json.dumps({
            "features": names, "mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
            "weights": w.round(6).tolist(), "bias": round(b, 6), "threshold": round(t, 6),
            "fitted_on": [p.name for p in args.sets], "min_answered": args.min_answered, "c": args.c,
        }, indent=1) + "\n")
        print("wrote", PLAIN_MODEL_PATH if args.no_reader else MODEL_PATH)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

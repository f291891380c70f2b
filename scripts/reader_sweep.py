"""Cross-validated sweeps over cached ranking features (scripts/reader_features.py collect).

    python scripts/reader_sweep.py feats.pkl

Folds are drawn from dev and dev2 together (stratified by set); inside each fold the configuration with the best
training objective (mean over both sets of recall@5 + MRR@10) is chosen and scored on the held-out questions.
Prints per-set figures of fixed configurations and the cross-validated figures of each sweep.
"""

from __future__ import annotations

import itertools
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Ranker = Callable[[dict], list[int]]


def rrf(lists: list[list[int]], k: float, weights: list[float]) -> dict[int, float]:
    out: dict[int, float] = {}
    for ranked, w in zip(lists, weights, strict=True):
        if not w:
            continue
        for r, row in enumerate(ranked):
            out[row] = out.get(row, 0.0) + w / (k + r + 1)
    return out


def order(scores: dict[int, float]) -> list[int]:
    return [r for r, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))]


def first_stage(it: dict, n: int, k: float, wb: float, wl: float, wn: float) -> list[int]:
    d = [int(r) for r in it["dense_rows"][:n]]
    b = [int(r) for r in it["bm_rows"][:n]]
    lists, weights = [d, b], [1.0, wb]
    if wl:
        pool = set(d) | set(b)
        late = dict(zip(map(int, it["union"]), it["late"], strict=True)) if it["late"] is not None else {}
        lists.append(sorted((r for r in pool if r in late), key=lambda r: -late[r]))
        weights.append(wl)
    if wn and it["named"]:
        named = sorted(it["named"], key=lambda r: -it["dense_all"].get(r, -1.0))
        lists.append(named[:n])
        weights.append(wn)
    return order(rrf(lists, k, weights))


def rerank(it: dict, first: list[int], m: int, variant: str, k2: float, wce: float, mode: str) -> list[int]:
    ce = dict(zip(it["cand"], it["ce_b" if variant == "b" else "ce_a"], strict=False))
    top = first[:m]
    floor = min(ce.values()) if ce else 0.0
    scores = [ce.get(r, floor) for r in top]
    if mode == "rrf":
        ce_rank = [top[i] for i in np.argsort(-np.asarray(scores), kind="stable")]
        fused = rrf([top, ce_rank], k2, [1.0, wce])
    else:  # calibrated: first-stage rank prior + sigmoid(ce)
        fused = {r: 1.0 / (k2 + i + 1) * (k2 + 1) + wce / (1 + np.exp(-s)) for i, (r, s) in
                 enumerate(zip(top, scores, strict=True))}
    return order(fused) + first[m:]


def hit_rank(it: dict, ranked: list[int], ctx: Callable[[dict, int], bool] | None = None) -> int | None:
    need = it["docs"] if it["kind"] == "multi-hop" else ["any"]
    found: dict[str, int] = {}
    for rank, r in enumerate(ranked[:10], start=1):
        h = set(it["hits"].get(r, set()))
        if ctx is not None and ctx(it, r):
            h |= it["hits_next"].get(r, set())
        if it["kind"] != "multi-hop" and h:
            h = {"any"}
        for d in need:
            if d in h and d not in found:
                found[d] = rank
        if len(found) == len(need):
            return max(found.values())
    return None


def metrics(ranks: list[int | None]) -> tuple[float, ...]:
    n = max(len(ranks), 1)
    rs = [r for r in ranks if r is not None]
    return (sum(r <= 1 for r in rs) / n, sum(r <= 3 for r in rs) / n, sum(r <= 5 for r in rs) / n,
            sum(r <= 10 for r in rs) / n, sum(1 / r for r in rs) / n)


def table(items: list[dict], ranker: Ranker, label: str, ctx: Callable[[dict, int], bool] | None = None) -> str:
    parts = []
    for name in ("dev.jsonl", "dev2.jsonl"):
        ranks = [hit_rank(it, ranker(it), ctx) for it in items if it["set"] == name]
        r1, r3, r5, r10, mrr = metrics(ranks)
        parts.append(f"{r1:.3f} {r3:.3f} {r5:.3f} {r10:.3f} {mrr:.3f}")
    return f"| {label} | " + " | ".join(parts) + " |"


def objective(items: list[dict], ranker: Ranker) -> float:
    total = 0.0
    for name in ("dev.jsonl", "dev2.jsonl"):
        ranks = [hit_rank(it, ranker(it)) for it in items if it["set"] == name]
        if ranks:
            m = metrics(ranks)
            total += m[2] + m[4]
    return total


def cross_validate(items: list[dict], configs: list[tuple], make: Callable[[tuple], Ranker], folds: int = 5,
                   repeats: int = 3) -> tuple[dict[str, list[float]], dict[tuple, int]]:
    """Held-out rank of every question per repeat; the configurations chosen and how often."""
    from sklearn.model_selection import StratifiedKFold

    sets = np.asarray([it["set"] for it in items])
    held: dict[str, list[list[int | None]]] = {"dev.jsonl": [], "dev2.jsonl": []}
    chosen: dict[tuple, int] = {}
    cache: dict[tuple, list[int | None]] = {}
    for c in configs:
        ranker = make(c)
        cache[c] = [hit_rank(it, ranker(it)) for it in items]
    for seed in range(repeats):
        ranks: list[int | None] = [None] * len(items)
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(sets, sets):
            def score(c: tuple, train: np.ndarray = train) -> float:
                total = 0.0
                for name in ("dev.jsonl", "dev2.jsonl"):
                    rs = [cache[c][i] for i in train if sets[i] == name]
                    m = metrics(rs)
                    total += m[2] + m[4]
                return total
            best = max(configs, key=score)
            chosen[best] = chosen.get(best, 0) + 1
            for i in test:
                ranks[i] = cache[best][i]
        for name in held:
            held[name].append([ranks[i] for i in range(len(items)) if sets[i] == name])
    out = {name: list(np.mean([metrics(r) for r in rs], axis=0)) for name, rs in held.items()}
    return out, chosen


def cv_line(label: str, res: dict[str, list[float]]) -> str:
    cells = (" ".join(f"{v:.3f}" for v in res[n]) for n in ("dev.jsonl", "dev2.jsonl"))
    return f"| {label} (CV) | " + " | ".join(cells) + " |"


def answers(paths: list[str]) -> None:
    """Answer sentences chosen with the cross-encoder at weight w (0: today's cosine + overlap): share of the
    answerable questions whose chosen sentences hold an evidence quote, per set, fitted and cross-validated."""
    from app.qa.answer.extractive import choose, sentence_scores

    dumped = []
    for p in paths:
        with open(p, "rb") as f:
            dumped += [d for d in pickle.load(f) if d["answerable"] and d["evidence_items"]]
    weights = [(w, pw) for w in (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0) for pw in (0.0, 0.25, 0.5)]
    has: dict[tuple[float, float], list[bool]] = {}
    for w in weights:
        has[w] = []
        for d in dumped:
            if not d["cands"]:
                has[w].append(False)
                continue
            scores = sentence_scores(d["question"], d["sources"], d["cands"], d["cos"], d["read"], *w)
            chosen = choose(d["cands"], scores, 4, 0.5, 110)
            has[w].append(any(d["evidence"][i] for i in chosen))
    sets = np.asarray([d["set"] for d in dumped])
    for w in weights:
        print(f"| w={w} | " + " | ".join(f"{np.mean([h for h, s in zip(has[w], sets, strict=True) if s == n]):.3f}"
                                          for n in ("dev.jsonl", "dev2.jsonl")) + " |")
    from sklearn.model_selection import StratifiedKFold

    held: dict[str, list[float]] = {n: [] for n in ("dev.jsonl", "dev2.jsonl")}
    chosen_w: dict[tuple[float, float], int] = {}
    for seed in range(5):
        got = np.zeros(len(dumped))
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(sets, sets):
            best = max(weights, key=lambda w: sum(np.mean([has[w][i] for i in train if sets[i] == n])
                                                   for n in held))
            chosen_w[best] = chosen_w.get(best, 0) + 1
            for i in test:
                got[i] = has[best][i]
        for n in held:
            held[n].append(np.mean(got[sets == n]))
    print("| CV |", " | ".join(f"{np.mean(held[n]):.3f}" for n in held), "|", chosen_w)


def main() -> int:
    if sys.argv[1] == "answers":
        answers(sys.argv[2:])
        return 0
    items = []
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            data = pickle.load(f)
            items += [it for it in data["items"] if it["answerable"]]
    nxt = data["neighbours"]
    print("| ranking | dev r1 r3 r5 r10 mrr | dev2 r1 r3 r5 r10 mrr |")
    print(table(items, lambda it: list(map(int, it["dense_rows"])), "dense alone"))
    print(table(items, lambda it: list(map(int, it["bm_rows"])), "BM25 alone"))
    print(table(items, lambda it: it["current"], "current service (score fusion + MaxSim top 12)"))
    print(table(items, lambda it: first_stage(it, 100, 60, 1, 0, 0), "RRF dense+BM25 N=100 k=60"))
    # first stage sweep
    grid = list(itertools.product([50, 100, 200], [10, 30, 60], [0.5, 0.75, 1.0, 1.5], [0, 0.5, 1.0], [0, 0.5, 1.0]))
    res, chosen = cross_validate(items, grid, lambda c: lambda it: first_stage(it, *c))
    print(cv_line("first stage: RRF dense + BM25 (+ MaxSim, + named list)", res))
    best_first = max(chosen, key=chosen.get)
    print("  chosen:", sorted(chosen.items(), key=lambda x: -x[1])[:5])
    print(table(items, lambda it: first_stage(it, *best_first), f"first stage {best_first} (all data)"))
    for c in sorted(chosen, key=chosen.get, reverse=True)[:1]:
        for wl in (0, 0.5, 1.0):
            for wn in (0, 0.5, 1.0):
                cc = (*c[:3], wl, wn)
                print(table(items, lambda it, cc=cc: first_stage(it, *cc), f"  {cc}"))
    # reranker sweep on the chosen first stage
    firsts = {it["id"]: first_stage(it, *best_first) for it in items}
    rgrid = list(itertools.product([6, 8, 10, 12, 16], ["a", "b"], [5, 10, 30, 60], [0.5, 1.0, 1.5, 2.0, 3.0],
                                   ["rrf"]))
    rgrid = [c for c in rgrid if not (c[1] == "a" and c[0] > 10)]
    res, chosen = cross_validate(items, rgrid, lambda c: lambda it: rerank(it, firsts[it["id"]], *c))
    print(cv_line("+ cross-encoder RRF", res))
    print("  chosen:", sorted(chosen.items(), key=lambda x: -x[1])[:5])
    best_re = max(chosen, key=chosen.get)
    print(table(items, lambda it: rerank(it, firsts[it["id"]], *best_re), f"reranked {best_re} (all data)"))
    for m in (6, 8, 10, 12, 16):
        for v in ("a", "b"):
            if v == "a" and m > 10:
                continue
            c = (m, v, *best_re[2:])
            print(table(items, lambda it, c=c: rerank(it, firsts[it["id"]], *c), f"  M={m} variant {v}"))
    print(table(items, lambda it: rerank(it, firsts[it["id"]], 10, "b", 60, 100.0, "rrf"), "  CE alone top 10 (b)"))
    # the next passage as context of a read passage, when it is itself in the first stage's top D
    m = best_re[0]
    ranked = {it["id"]: rerank(it, firsts[it["id"]], *best_re) for it in items}
    for d in (0, 5, 10, 20, 30, 50, 100, 100000):
        def ctx(it: dict, r: int, d: int = d) -> bool:
            first = firsts[it["id"]]
            return r in first[:m] and nxt[r] >= 0 and int(nxt[r]) in first[:d]
        attached = np.mean([sum(ctx(it, r) for r in ranked[it["id"]][:10]) for it in items])
        print(table(items, lambda it: ranked[it["id"]], f"  context when next in first top {d} "
                    f"({attached:.1f} of 10 carry one)", ctx))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Dense model choice and late interaction with the reader on, through the service's own search, cross-validated.

    python scripts/reader_dense_cv.py run --data-dir ../data-corpus-embed-both dev.jsonl dev2.jsonl --out ranks.json
    python scripts/reader_dense_cv.py cv ranks.json

`run` opens a library embedded for `LECTURE_QA_DENSE_MODEL=both` (it holds MiniLM's and bge-small's passage
vectors) and ranks every answerable question with `QAService.search` (first stage + cross-encoder reader +
context, top 10; hit rule of `lecture-qa eval`, context counted) under each configuration: the dense lists kept
(MiniLM alone, bge-small alone, both with bge as a `Voice` of weight 0.5 or 1) x LATE_WEIGHT {1, 0}. The
configuration is set by wrapping the retriever's `dense_scores` (dropping a model's list), the `Voice` weight and
`app.qa.retrieve.LATE_WEIGHT` in this process only; nothing of the service changes. One process, so the
cross-encoder's (question, text) logit cache is shared by the configurations (made large enough for all).

`cv` prints R@1 / R@5 / R@10 / MRR@10 per set for each configuration (all data) and the cross-validated figures of
choosing among a group of configurations: 5 folds stratified by set over dev + dev2 together, 20 shuffles; in each
training part the configuration with the best recall@5 + MRR@10 (summed over both sets) is chosen and scored on
its held-out questions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = [  # (label, dense lists kept, bge voice weight, LATE_WEIGHT)
    ("minilm", ("minilm",), 1.0, 1.0),
    ("both-1", ("minilm", "bge-small"), 1.0, 1.0),
    ("both-0.5", ("minilm", "bge-small"), 0.5, 1.0),
    ("bge", ("bge-small",), 1.0, 1.0),
    ("minilm-nolate", ("minilm",), 1.0, 0.0),
    ("both-1-nolate", ("minilm", "bge-small"), 1.0, 0.0),
    ("both-0.5-nolate", ("minilm", "bge-small"), 0.5, 0.0),
    ("bge-nolate", ("bge-small",), 1.0, 0.0),
]
SETS = ("dev.jsonl", "dev2.jsonl")


def run(args: argparse.Namespace) -> None:
    import app.qa.retrieve as retrieve
    from app.backends import build_service
    from app.qa.evaluate import first_full_hit, with_context
    from app.settings import Settings
    from ingest.embedding import MINILM_KEY

    service = build_service(Settings(data_dir=args.data_dir, dense_model="both", reader_threads=args.threads))
    retriever = service.store.retriever  # type: ignore[attr-defined]
    retriever.reader._cache_size = 10**6  # every configuration reads from one logit cache
    assert MINILM_KEY == "minilm"
    original_dense = retriever.dense_scores
    original_voice = retrieve.Voice
    items = []
    for path in args.sets:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                if item.get("answerable", True) and item.get("evidence"):
                    item["set"] = Path(path).name
                    items.append(item)
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.setdefault("items", [{"id": it.get("id"), "set": it["set"], "kind": it.get("kind")} for it in items])
    out.setdefault("ranks", {})
    for label, keep, voice_w, late_w in CONFIGS:
        if label in out["ranks"]:
            continue

        def dense_scores(snap: Any, query: str, vec: np.ndarray, *, exhaustive: bool = True,
                         keep: tuple[str, ...] = keep) -> dict[str, np.ndarray]:
            lists = original_dense(snap, query, vec, exhaustive=exhaustive)
            assert set(lists) == {"minilm", "bge-small"}, f"library lists {sorted(lists)}"
            return {k: v for k, v in lists.items() if k in keep}

        retriever.dense_scores = dense_scores
        retrieve.Voice = lambda scores, w=voice_w: original_voice(scores, w)  # type: ignore[assignment,misc]
        retrieve.LATE_WEIGHT = late_w
        t0 = time.time()
        ranks = []
        for n, item in enumerate(items):
            results = service.search(item["question"], top_k=10)
            ranks.append(first_full_hit(item, [with_context(r) for r in results]))
            if n % 40 == 0:
                print(f"{label} {n + 1}/{len(items)} {time.time() - t0:.0f}s", flush=True)
        out["ranks"][label] = ranks
        args.out.write_text(json.dumps(out))
        print(f"{label} done {time.time() - t0:.0f}s", flush=True)
    retriever.dense_scores = original_dense
    retrieve.Voice = original_voice  # type: ignore[misc]


def metrics(ranks: list[int | None]) -> tuple[float, float, float, float]:
    n = max(len(ranks), 1)
    rs = [r for r in ranks if r is not None]
    return (sum(r <= 1 for r in rs) / n, sum(r <= 5 for r in rs) / n, sum(r <= 10 for r in rs) / n,
            sum(1 / r for r in rs) / n)


def cv(path: Path, repeats: int = 20) -> None:
    from sklearn.model_selection import StratifiedKFold

    data = json.loads(path.read_text())
    sets = np.asarray([it["set"] for it in data["items"]])
    ranks: dict[str, list[int | None]] = data["ranks"]

    def row(label: str, m: dict[str, tuple[float, ...]]) -> str:
        return f"| {label} | " + " | ".join(" / ".join(f"{v:.3f}" for v in m[s]) for s in SETS) + " |"

    print("| configuration | dev R@1 / R@5 / R@10 / MRR@10 | dev2 R@1 / R@5 / R@10 / MRR@10 |\n|---|---|---|")
    for label, rs in ranks.items():
        print(row(f"{label}, all data", {s: metrics([r for r, t in zip(rs, sets, strict=True) if t == s])
                                         for s in SETS}))
    groups = {
        "dense choice, late on": ["minilm", "bge", "both-1", "both-0.5"],
        "late on vs off, MiniLM": ["minilm", "minilm-nolate"],
        "late on vs off, both-1": ["both-1", "both-1-nolate"],
        "late on vs off, both-0.5": ["both-0.5", "both-0.5-nolate"],
        "late on vs off, bge": ["bge", "bge-nolate"],
        "all eight": [c[0] for c in CONFIGS],
    }
    for name, labels in groups.items():
        labels = [c for c in labels if c in ranks]
        if not labels:
            continue
        held: dict[str, list[tuple[float, ...]]] = {s: [] for s in SETS}
        chosen: dict[str, int] = {}
        for seed in range(repeats):
            got: list[int | None] = [None] * len(sets)
            for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(sets, sets):
                def score(c: str, train: np.ndarray = train) -> float:
                    total = 0.0
                    for s in SETS:
                        m = metrics([ranks[c][i] for i in train if sets[i] == s])
                        total += m[1] + m[3]
                    return total
                best = max(labels, key=score)  # ties: the first listed (today's default first)
                chosen[best] = chosen.get(best, 0) + 1
                for i in test:
                    got[i] = ranks[best][i]
            for s in SETS:
                held[s].append(metrics([got[i] for i in range(len(sets)) if sets[i] == s]))
        print(row(f"CV, {name} (chosen {chosen})", {s: tuple(np.mean(held[s], axis=0)) for s in SETS}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "cv"])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.command == "cv":
        cv(args.paths[0])
        return 0
    args.sets = args.paths
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

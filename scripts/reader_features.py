"""Cache the ranking features of every question of QA sets over an ingested corpus, so fusion sweeps are cheap.

    python scripts/reader_features.py collect --data-dir ../data-corpus dev.jsonl dev2.jsonl --out feats.pkl

Per question: the dense cosine and BM25 score of the top POOL passages of each, the word-piece MaxSim of their
union, the passages of a document the question names, and the cross-encoder's logit for the CE candidates
(the union of the first lists' tops), scored two ways: title + passage, and title + passage + its next
neighbour. Per passage: which evidence documents its text (and its neighbour's) hits, by evaluate.py's rule.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POOL = 200


def rrf(lists: list[np.ndarray], k: float) -> dict[int, float]:
    out: dict[int, float] = {}
    for ranked in lists:
        for r, row in enumerate(ranked):
            out[int(row)] = out.get(int(row), 0.0) + 1.0 / (k + r + 1)
    return out


def collect(args: argparse.Namespace) -> None:
    from app.backends import build_service
    from app.qa.evaluate import normalise
    from app.settings import Settings
    from ingest.cross_encoder import CrossEncoder
    from ingest.textnorm import keyword_tokens

    service = build_service(Settings(data_dir=args.data_dir))
    store = service.store
    retriever = store.retriever  # type: ignore[attr-defined]
    snap = store.library.snapshot()  # type: ignore[attr-defined]
    ce = CrossEncoder(threads=args.threads).load()
    nxt = retriever.neighbours(snap)
    passages = snap.passages
    items = []
    for path in args.sets:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                item["set"] = Path(path).name
                items.append(item)
    items = items[args.start:args.stop]
    out = []
    t0 = time.time()
    pairs = 0
    for n, item in enumerate(items):
        q = item["question"]
        qv, qt = retriever.embed_query(q)
        dense = snap.matrix() @ qv.astype(np.float32)
        vocab = snap.bm25.vocab_dict
        toks = [t for t in keyword_tokens(q) if t in vocab]
        bm = np.asarray(snap.bm25.get_scores(toks), dtype=np.float32) if toks else np.zeros(len(passages), np.float32)
        d_top = np.argsort(-dense, kind="stable")[:POOL]
        b_top = np.argsort(-bm, kind="stable")[:POOL]
        b_top = b_top[bm[b_top] > 0]
        union = np.unique(np.concatenate([d_top, b_top]))
        late = snap.tokens.maxsim(qt, union) if snap.tokens is not None and qt is not None else None
        named = retriever.mention(snap, q)
        named_rows = [i for i, p in enumerate(passages) if named is not None and (
            p.doc_id in named.doc_ids or any(a["document_id"] in named.doc_ids for a in p.also_at))]
        current = [h.row for h in retriever.search(snap, q, 20)]
        fused = rrf([d_top[:100], b_top[:100]], 60)
        cand = [r for r, _ in sorted(fused.items(), key=lambda x: -x[1])[: args.ce_top]]
        for r in [*current[:12], *d_top[:5], *b_top[:5]]:
            if int(r) not in cand:
                cand.append(int(r))
        a_txt = [f"{passages[r].title}\n{passages[r].text}" for r in cand]
        b_txt = [f"{passages[r].title}\n{passages[r].text}\n{passages[nxt[r]].text}" if nxt[r] >= 0 else a_txt[i]
                 for i, r in enumerate(cand)]
        ce_b = ce.score(q, b_txt)
        ce_a = ce.score(q, a_txt[: args.a_top])  # without the neighbour: only the first candidates
        pairs += len(cand) + len(ce_a)
        rows = set(map(int, union)) | set(cand) | set(current) | set(named_rows)
        quotes = {}
        for ev in item.get("evidence", []):
            quotes.setdefault(ev["doc"], []).append(normalise(ev["quote"]))
        hits, hits_next = {}, {}
        for r in rows:
            t = normalise(passages[r].text)
            h = {d for d, qs in quotes.items() if any(x and x in t for x in qs)}
            if h:
                hits[r] = h
            if nxt[r] >= 0:
                tn = normalise(passages[nxt[r]].text)
                hn = {d for d, qs in quotes.items() if any(x and x in tn for x in qs)}
                if hn:
                    hits_next[r] = hn
        out.append({
            "id": item.get("id"), "set": item["set"], "kind": item.get("kind", ""),
            "answerable": bool(item.get("answerable", True) and item.get("evidence")),
            "docs": sorted(quotes), "dense_rows": d_top, "dense": dense[d_top], "dense_median": float(np.median(dense)),
            "bm_rows": b_top, "bm": bm[b_top], "union": union, "late": late, "named": named_rows,
            "current": current, "cand": cand, "ce_a": ce_a, "ce_b": ce_b, "hits": hits, "hits_next": hits_next,
            "dense_all": {int(r): float(dense[r]) for r in rows}, "bm_all": {int(r): float(bm[r]) for r in rows},
            "bm_max": float(bm.max()) if len(bm) else 0.0,
        })
        if n % 10 == 0:
            print(f"{n + 1}/{len(items)} {time.time() - t0:.0f}s {pairs / (time.time() - t0):.1f} pairs/s",
                  flush=True)
    with open(args.out, "wb") as f:
        pickle.dump({"items": out, "neighbours": nxt, "lengths": [len(p.text) for p in passages],
                     "next_lengths": [len(passages[j].text) if j >= 0 else 0 for j in nxt]}, f)
    print("wrote", args.out, f"{time.time() - t0:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["collect"])
    parser.add_argument("sets", nargs="+", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ce-top", type=int, default=14)
    parser.add_argument("--a-top", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int, default=None)
    args = parser.parse_args()
    collect(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The service beside a plain LangChain-style pipeline: same corpus, same question sets, same hit rule, one run.

    python bench/baseline.py [--corpus ../shared/corpus] [--qa ../shared/eval/dev.jsonl ../shared/eval/dev2.jsonl]
                             [--data-dir DIR] [--bge] [--depth 10] [--json OUT.json]

Service: `lecture-qa ingest` of the corpus into a fresh data dir (or the library already in --data-dir), then
`QAService.search(question, top_k=10)` with the settings of the environment, scored by `app.qa.evaluate`.

Baseline, the pipeline a course group would write from the LangChain tutorials:
- text: every file `collect_paths` finds in the corpus (the files the service ingests), read with the project's
  loaders (`ingest.loaders.load_document`, OCR as the service's settings say: the same text the service sees),
  the units of one document joined by blank lines;
- chunks: RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200) with its default separators
  ("\\n\\n", "\\n", " ", ""), re-implemented here (`split_text`) so the project does not depend on LangChain;
  `--check-langchain DIR` compares it with langchain-text-splitters installed in DIR (`pip install --target DIR
  langchain-text-splitters`): identical chunks for every corpus document with 1.1.3;
- dense: the service's embedder, all-MiniLM-L6-v2 (int8 ONNX, `ingest.embedding`; the first 256 tokens of a
  chunk, as sentence-transformers reads it), exhaustive cosine; with --bge also bge-small-en-v1.5 from
  `ingest.reader_models` (CLS vector, the query prefix, 512 tokens);
- keyword: bm25s (Lucene BM25, k1 1.5, b 0.75, its English stopwords, no stemmer);
- fusion: reciprocal rank fusion, k = 60, over each retriever's top --depth (10: each retriever asked for the
  10 results reported, as an EnsembleRetriever of two k=10 retrievers is), equal weights.
Both are scored by `app.qa.evaluate.first_full_hit` (a quote hit in the result text; multi-hop needs every
evidence document). Prints the Markdown tables (service vs baseline per set, then every baseline variant) and
the machine; --json writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
RRF_K = 60
CHUNK_SIZE, CHUNK_OVERLAP = 1000, 200
SEPARATORS = ["\n\n", "\n", " ", ""]
BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "
KS = (1, 3, 5, 10)


# ---- RecursiveCharacterTextSplitter (langchain-text-splitters 1.1.3), keep_separator="start", strip_whitespace
def _split_keeping_separator(text: str, separator: str) -> list[str]:
    if not separator:
        return [ch for ch in text]
    parts = re.split(f"({re.escape(separator)})", text)
    pieces = [parts[0]] + [parts[i] + parts[i + 1] for i in range(1, len(parts), 2)]
    return [p for p in pieces if p]


def _merge(splits: Sequence[str], size: int, overlap: int) -> list[str]:
    docs: list[str] = []
    current: list[str] = []
    total = 0
    for piece in splits:
        n = len(piece)
        if total + n > size and current:
            if doc := "".join(current).strip():
                docs.append(doc)
            while total > overlap or (total + n > size and total > 0):
                total -= len(current[0])
                current = current[1:]
        current.append(piece)
        total += n
    if doc := "".join(current).strip():
        docs.append(doc)
    return docs


def split_text(text: str, size: int = CHUNK_SIZE, overlap: int = CHUNK_OVERLAP,
               separators: Sequence[str] = SEPARATORS) -> list[str]:
    """LangChain's recursive character splitting: split on the first separator the text contains, merge the
    pieces up to `size` characters with `overlap` carried over, and split a piece still too long with the next
    separator (the separator stays at the start of the piece that follows it)."""
    separator, rest = separators[-1], list[str]()
    for i, sep in enumerate(separators):
        if not sep:
            separator = sep
            break
        if sep in text:
            separator, rest = sep, list(separators[i + 1:])
            break
    chunks: list[str] = []
    good: list[str] = []
    for piece in _split_keeping_separator(text, separator):
        if len(piece) < size:
            good.append(piece)
            continue
        if good:
            chunks.extend(_merge(good, size, overlap))
            good = []
        chunks.extend(split_text(piece, size, overlap, rest) if rest else [piece])
    if good:
        chunks.extend(_merge(good, size, overlap))
    return chunks


# ---- the baseline's corpus and retrievers ------------------------------------------------------------------------
def baseline_chunks(corpus: Path) -> tuple[list[str], dict[str, Any]]:
    """(chunk texts, stats): the corpus read with the project's loaders, joined per document, split."""
    from app.settings import Settings
    from ingest.loaders import load_document
    from ingest.pipeline import collect_paths

    settings = Settings()
    files, _ = collect_paths([corpus])
    t0 = time.perf_counter()
    texts: dict[str, str] = {}
    for f in files:
        assert f.path is not None
        doc = load_document(f.name, f.path.read_bytes(), max_unpacked_bytes=settings.max_unpacked_bytes,
                            ocr=settings.ocr, ocr_seconds=settings.parse_timeout / 2)
        texts[f.name] = "\n\n".join(u.text for u in doc.units if u.text.strip())
    load_s = time.perf_counter() - t0
    chunks = [c for text in texts.values() for c in split_text(text)]
    lengths = sorted(len(c) for c in chunks)
    return chunks, {"documents": len(texts), "chunks": len(chunks), "load_s": round(load_s, 1),
                    "median_chunk_chars": lengths[len(lengths) // 2], "texts": texts}


class BgeSmall:
    """bge-small-en-v1.5 from the reader-model files (ingest.reader_models): CLS vector, L2-normalised."""

    def __init__(self, max_tokens: int = 512) -> None:
        from ingest.reader_models import model_files, onnx_session, tokenizer

        files = model_files("bge-small")
        self.session = onnx_session(files.onnx, os.cpu_count() or 1)
        self.tok = tokenizer(files.tokenizer)
        self.max_tokens = max_tokens
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: Sequence[str], batch_size: int = 16) -> np.ndarray:
        ids = [e.ids[: self.max_tokens - 1] + [e.ids[-1]] if len(e.ids) > self.max_tokens else e.ids
               for e in self.tok.encode_batch(list(texts), add_special_tokens=True)]
        out = np.zeros((len(ids), 384), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(ids[i]) for i in idx)
            arr = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros_like(arr)
            for row, i in enumerate(idx):
                arr[row, :len(ids[i])] = ids[i]
                mask[row, :len(ids[i])] = 1
            feeds = {"input_ids": arr, "attention_mask": mask, "token_type_ids": np.zeros_like(arr)}
            hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
            cls = hidden[:, 0, :]
            out[idx] = cls / np.clip(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12, None)
        return out


def dense_ranker(vectors: np.ndarray, encode_query: Callable[[str], np.ndarray]) -> Callable[[str, int], list[int]]:
    def rank(query: str, depth: int) -> list[int]:
        scores = vectors @ encode_query(query)
        top = np.argpartition(-scores, min(depth, len(scores) - 1))[:depth]
        return [int(i) for i in top[np.argsort(-scores[top], kind="stable")]]
    return rank


def bm25_ranker(chunks: Sequence[str]) -> Callable[[str, int], list[int]]:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(chunks), stopwords="en", show_progress=False), show_progress=False)

    def rank(query: str, depth: int) -> list[int]:
        tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        if not any(t in retriever.vocab_dict for t in tokens[0]):
            return []
        docs, scores = retriever.retrieve(tokens, k=min(depth, len(chunks)), show_progress=False)
        return [int(d) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
    return rank


def rrf(lists: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal rank fusion, equal weights; ties keep the order of first appearance (first list first)."""
    score: dict[int, float] = {}
    for ranked in lists:
        for rank, i in enumerate(ranked, start=1):
            score[i] = score.get(i, 0.0) + 1.0 / (k + rank)
    return sorted(score, key=lambda i: -score[i])


# ---- scoring -------------------------------------------------------------------------------------------------------
def load_qa(path: Path) -> list[dict[str, Any]]:
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [i for i in items if i.get("answerable", True) and i.get("evidence")]


def score(items: Sequence[dict[str, Any]], results: Callable[[str], list[str]]) -> dict[str, Any]:
    from app.qa.evaluate import first_full_hit

    hits = dict.fromkeys(KS, 0)
    rr = 0.0
    for item in items:
        rank = first_full_hit(item, results(item["question"])[:10])
        if rank is not None:
            rr += 1.0 / rank
            for k in KS:
                hits[k] += rank <= k
    n = max(len(items), 1)
    return {**{f"recall@{k}": round(hits[k] / n, 3) for k in KS}, "mrr@10": round(rr / n, 3)}


def service_library(corpus: Path, data_dir: Path | None) -> tuple[Path, dict[str, Any]]:
    """A library of the corpus: the one in `data_dir` when there is one, else a fresh `lecture-qa ingest`."""
    if data_dir is not None and (data_dir / "library.sqlite3").exists():
        return data_dir, {"ingest": "existing library"}
    data = data_dir or Path(tempfile.mkdtemp(prefix="lecture-qa-baseline-")) / "data"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(corpus), "--data-dir", str(data), "--quiet",
                        "--json"], cwd=ROOT, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"lecture-qa ingest failed: {r.stderr[-2000:]}")
    report = json.loads(r.stdout)
    return data, {"ingest": "fresh", "documents": report["documents"], "chunks": report["chunks"],
                  "ingest_s": round(time.perf_counter() - t0, 1)}


def check_langchain(target: Path, texts: dict[str, str]) -> str:
    sys.path.insert(0, str(target))
    from langchain_text_splitters import RecursiveCharacterTextSplitter  # type: ignore[import-not-found]

    lc = RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP)
    differ = [name for name, text in texts.items() if lc.split_text(text) != split_text(text)]
    return f"identical for {len(texts) - len(differ)}/{len(texts)} documents" + (f"; differ: {differ}" if differ
                                                                                 else "")


def table(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    head = "| set | system | R@1 | R@3 | R@5 | R@10 | MRR@10 |\n|---|---|---|---|---|---|---|\n"
    return head + "\n".join(f"| {s} | {name} | " + " | ".join(f"{m[f'recall@{k}']:.3f}" for k in KS)
                            + f" | {m['mrr@10']:.3f} |" for s, name, m in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus")
    parser.add_argument("--qa", type=Path, nargs="+",
                        default=[SHARED / "eval" / "dev.jsonl", SHARED / "eval" / "dev2.jsonl"])
    parser.add_argument("--data-dir", type=Path, default=None, help="the service's library (ingested when empty)")
    parser.add_argument("--depth", type=int, default=10, help="results taken from each baseline retriever")
    parser.add_argument("--bge", action="store_true", help="also the baseline with bge-small as its dense model")
    parser.add_argument("--check-langchain", type=Path, default=None,
                        help="a folder holding langchain-text-splitters (pip install --target)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sets = {p.stem: load_qa(p) for p in args.qa}
    out: dict[str, Any] = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                           "corpus": str(args.corpus), "depth": args.depth, "rrf_k": RRF_K}

    # the service, as users run it
    from app.backends import build_service
    from app.settings import Settings

    data, out["service"] = service_library(args.corpus, args.data_dir)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    detail: list[tuple[str, str, dict[str, Any]]] = []
    service_scores: dict[str, dict[str, Any]] = {}
    with build_service(Settings(data_dir=data)) as service:
        service.warm_up()
        for name, items in sets.items():
            service_scores[name] = score(items, lambda q: [r.text for r in service.search(q, top_k=10)])

    # the baseline
    from ingest.embedding import make_embedder

    chunks, stats = baseline_chunks(args.corpus)
    texts = stats.pop("texts")
    if args.check_langchain:
        out["splitter_vs_langchain"] = check_langchain(args.check_langchain, texts)
    out["baseline"] = stats
    keyword = bm25_ranker(chunks)
    minilm = make_embedder("onnx-int8")
    t0 = time.perf_counter()
    dense = {"MiniLM": dense_ranker(minilm.encode(chunks, batch_size=16), lambda q: minilm.encode([q])[0])}
    stats["embed_minilm_s"] = round(time.perf_counter() - t0, 1)
    if args.bge:
        bge = BgeSmall()
        t0 = time.perf_counter()
        dense["bge-small"] = dense_ranker(bge.encode(chunks), lambda q: bge.encode([BGE_QUERY_PREFIX + q])[0])
        stats["embed_bge_s"] = round(time.perf_counter() - t0, 1)

    def texts_of(ids: list[int]) -> list[str]:
        return [chunks[i] for i in ids[:10]]

    d = args.depth

    def fused(rank: Callable[[str, int], list[int]]) -> Callable[[str], list[str]]:
        return lambda q: texts_of(rrf([rank(q, d), keyword(q, d)]))

    def alone(rank: Callable[[str, int], list[int]]) -> Callable[[str], list[str]]:
        return lambda q: texts_of(rank(q, 10))

    for name, items in sets.items():
        rows += [(name, "service (lecture-qa search)", service_scores[name]),
                 (name, "baseline: MiniLM + bm25s, RRF k=60", score(items, fused(dense["MiniLM"])))]
        detail.append((name, "baseline: bm25s only", score(items, alone(keyword))))
        for model, rank in dense.items():
            detail.append((name, f"baseline: {model} only", score(items, alone(rank))))
            if model != "MiniLM":
                detail.append((name, f"baseline: {model} + bm25s, RRF k=60", score(items, fused(rank))))
    out["table"] = [{"set": s, "system": n, **m} for s, n, m in rows + detail]
    print(f"machine: {out['machine']}; service: {out['service']}; baseline: {stats}")
    if "splitter_vs_langchain" in out:
        print(f"splitter vs langchain-text-splitters: {out['splitter_vs_langchain']}")
    print()
    print(table(rows))
    print()
    print(table(detail))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

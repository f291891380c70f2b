"""`lecture-qa eval`: recall@k and MRR@10 of search, and refusal accuracy of ask, on a QA jsonl file.

Hit rule (comparable across systems): a result hits an evidence quote when the quote, NFKC-normalised,
lower-cased, with every non-alphanumeric character removed, is a substring of the result's text normalised the
same way. A question is a hit at k when one of its quotes is hit within the first k results; a multi-hop
question needs, within k, one hit for each of its evidence documents.

Answers of answerable questions are scored too, when the file has them: `answer_has_evidence` is the share of
answers that contain one of the question's evidence quotes (same normalisation), `answer_recall` the mean share
of the reference answer's content words (stemmed, stopwords out) that the answer contains, citation markers
removed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.qa.service import QAService
from ingest.textnorm import keyword_tokens

KS = (1, 3, 5, 10)


def normalise(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


def first_full_hit(item: dict[str, Any], texts: list[str]) -> int | None:
    """1-based rank at which every evidence document has been hit, or None."""
    by_doc: dict[str, list[str]] = {}
    for ev in item.get("evidence", []):
        by_doc.setdefault(ev["doc"], []).append(normalise(ev["quote"]))
    need = by_doc if item.get("kind") == "multi-hop" else {"any": [q for qs in by_doc.values() for q in qs]}
    found: dict[str, int] = {}
    for rank, text in enumerate(texts, start=1):
        t = normalise(text)
        for doc, quotes in need.items():
            if doc not in found and any(q and q in t for q in quotes):
                found[doc] = rank
        if len(found) == len(need):
            return max(found.values())
    return None


def answer_scores(item: dict[str, Any], answer: str) -> tuple[bool, float | None]:
    """(the answer contains an evidence quote, share of the reference answer's content words it contains)."""
    text = re.sub(r"\[\d+\]", " ", answer)
    norm = normalise(text)
    has_evidence = any(q and q in norm for q in (normalise(ev["quote"]) for ev in item.get("evidence", [])))
    reference = set(keyword_tokens(item.get("answer", "")))
    recall = len(reference & set(keyword_tokens(text))) / len(reference) if reference else None
    return has_evidence, recall


def evaluate(service: QAService, qa_path: Path, *, progress: Callable[[int, int], None] | None = None,
             with_answers: bool = True) -> dict[str, Any]:
    items = [json.loads(line) for line in qa_path.read_text().splitlines() if line.strip()]
    answerable = [i for i in items if i.get("answerable", True) and i.get("evidence")]
    hits = {k: 0 for k in KS}
    rr = 0.0
    misses: list[str] = []
    for n, item in enumerate(answerable):
        results = service.search(item["question"], top_k=10)
        rank = first_full_hit(item, [r.text for r in results])
        if rank is not None:
            rr += 1.0 / rank
            for k in KS:
                hits[k] += rank <= k
        if rank is None or rank > 5:
            misses.append(item.get("id", str(n)))
        if progress:
            progress(n + 1, len(items))
    out: dict[str, Any] = {
        "questions": len(items),
        "answerable": len(answerable),
        **{f"recall@{k}": round(hits[k] / max(len(answerable), 1), 4) for k in KS},
        "mrr@10": round(rr / max(len(answerable), 1), 4),
        "missed@5": misses,
    }
    if with_answers:
        answered = refused = with_evidence = 0
        recalls: list[float] = []
        unanswerable = [i for i in items if not i.get("answerable", True)]
        wrong: list[str] = []
        for item in answerable:
            answer = service.ask(item["question"]).answer
            ok = answer.grounded
            answered += ok
            has_evidence, recall = answer_scores(item, answer.text if ok else "")
            with_evidence += has_evidence
            if recall is not None:
                recalls.append(recall)
            if not ok:
                wrong.append(item.get("id", ""))
        for item in unanswerable:
            ok = not service.ask(item["question"]).answer.grounded
            refused += ok
            if not ok:
                wrong.append(item.get("id", ""))
        out.update({
            "answered_answerable": f"{answered}/{len(answerable)}",
            "refused_unanswerable": f"{refused}/{len(unanswerable)}",
            "refusal_accuracy": round((answered + refused) / max(len(answerable) + len(unanswerable), 1), 4),
            "refusal_errors": wrong,
            "answer_has_evidence": round(with_evidence / max(len(answerable), 1), 4),
            "answer_recall": round(sum(recalls) / len(recalls), 4) if recalls else None,
        })
    return out

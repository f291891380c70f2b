"""`lecture-qa eval`: recall@k and MRR@10 of search, refusal and answer quality of ask, on QA jsonl files.

Hit rule (comparable across systems): a result hits an evidence quote when the quote, NFKC-normalised,
lower-cased, with every non-alphanumeric character removed, is a substring of the result's text normalised the
same way. A question is a hit at k when one of its quotes is hit within the first k results; a multi-hop
question needs, within k, one hit for each of its evidence documents. A result's `context` (the next passage,
returned with it when the cross-encoder read the two together and that passage itself ranks near the top)
counts as its text: it is returned to the caller beside the passage. `recall@5_text` and `mrr@10_text` give the
same figures on `text` alone, and `median_text_chars` the median length of the returned `text`s (context not
counted), so a gain from context stays visible as such.

Answers of answerable questions are scored too, when the file has them: `answer_has_evidence` is the share of
answers that contain one of the question's evidence quotes (same normalisation), `answer_recall` the mean share
of the reference answer's content words (stemmed, stopwords out) that the answer contains, citation markers
removed. `answer_defects` counts answers holding a sentence that is no answer: a question, a speaker-note
instruction or reference line (`Notes:`, `Source:`), a Markdown heading, or a sentence cut short (ending on
"and." or on a colon whose display equation was dropped).
"""

from __future__ import annotations

import json
import re
import statistics
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.qa.answer.extractive import DANGLING
from app.qa.service import QAService
from app.qa.types import Source
from ingest.textnorm import keyword_tokens

KS = (1, 3, 5, 10)
_CITE = re.compile(r"\s*\[\d+\]")


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


def with_context(result: Source) -> str:
    """What the hit rule reads of a result: its text and, when it came with one, its context."""
    return f"{result.text}\n{result.context}" if result.context else result.text


def answer_scores(item: dict[str, Any], answer: str) -> tuple[bool, float | None]:
    """(the answer contains an evidence quote, share of the reference answer's content words it contains)."""
    text = re.sub(r"\[\d+\]", " ", answer)
    norm = normalise(text)
    has_evidence = any(q and q in norm for q in (normalise(ev["quote"]) for ev in item.get("evidence", [])))
    reference = set(keyword_tokens(item.get("answer", "")))
    recall = len(reference & set(keyword_tokens(text))) / len(reference) if reference else None
    return has_evidence, recall


def answer_defects(answer: str) -> list[str]:
    """What makes a sentence of an extractive answer no answer (each answer sentence ends in a citation)."""
    out: list[str] = []
    for part in re.split(r"(?<=\])\s+", answer.strip()):
        sent = _CITE.sub("", part).strip()
        if not sent:
            continue
        last = re.findall(r"\w+", sent)
        if sent.endswith("?"):
            out.append(f"question: {sent[:80]}")
        elif re.match(r"(?i)(speaker\s+)?notes?\s*:|sources?\s*:|references?\s*:", sent):
            out.append(f"notes/source line: {sent[:80]}")
        elif re.search(r"(^|\s)#{1,6}\s", sent):
            out.append(f"heading: {sent[:80]}")
        elif sent.endswith(":") or (sent.endswith(".") and last and last[-1].lower() in DANGLING):
            out.append(f"cut: ...{sent[-60:]}")
    return out


def _load(qa_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in qa_path.read_text().splitlines() if line.strip()]


def evaluate(service: QAService, qa_path: Path, *, progress: Callable[[int, int], None] | None = None,
             with_answers: bool = True, explain: bool = False) -> dict[str, Any]:
    items = _load(qa_path)
    answerable = [i for i in items if i.get("answerable", True) and i.get("evidence")]
    hits = {k: 0 for k in KS}
    rr = 0.0
    misses: list[str] = []
    kinds: dict[str, list[int]] = {}  # kind -> [hits@5, questions]
    ranks: dict[str, int | None] = {}
    plain_hits, plain_rr, lengths = 0, 0.0, []
    for n, item in enumerate(answerable):
        results = service.search(item["question"], top_k=10)
        rank = ranks[item.get("id", str(n))] = first_full_hit(item, [with_context(r) for r in results])
        plain = first_full_hit(item, [r.text for r in results])
        plain_hits += plain is not None and plain <= 5
        plain_rr += 1.0 / plain if plain is not None else 0.0
        lengths += [len(r.text) for r in results]
        kind = kinds.setdefault(item.get("kind", "other"), [0, 0])
        kind[1] += 1
        if rank is not None:
            rr += 1.0 / rank
            for k in KS:
                hits[k] += rank <= k
            kind[0] += rank <= 5
        if rank is None or rank > 5:
            misses.append(item.get("id", str(n)))
        if progress:
            progress(n + 1, len(items))
    out: dict[str, Any] = {
        "questions": len(items),
        "answerable": len(answerable),
        **{f"recall@{k}": round(hits[k] / max(len(answerable), 1), 4) for k in KS},
        "mrr@10": round(rr / max(len(answerable), 1), 4),
        "recall@5_text": round(plain_hits / max(len(answerable), 1), 4),
        "mrr@10_text": round(plain_rr / max(len(answerable), 1), 4),
        "median_text_chars": int(statistics.median(lengths)) if lengths else 0,
        "recall@5_by_kind": {k: f"{h}/{n}" for k, (h, n) in sorted(kinds.items())},
        "missed@5": misses,
    }
    if with_answers:
        out.update(_answers(service, items, answerable, ranks, explain))
    return out


def _answers(service: QAService, items: list[dict[str, Any]], answerable: list[dict[str, Any]],
             ranks: dict[str, int | None], explain: bool) -> dict[str, Any]:
    answered = refused = with_evidence = 0
    recalls: list[float] = []
    wrong: list[str] = []
    defects: dict[str, list[str]] = {}
    decisions: list[dict[str, Any]] = []
    for item in items:
        is_answerable = item in answerable
        if not is_answerable and item.get("answerable", True):
            continue  # answerable but without evidence: nothing to score
        answer = service.ask(item["question"]).answer
        qid = item.get("id", "")
        if is_answerable:
            answered += answer.grounded
            has_evidence, recall = answer_scores(item, answer.text if answer.grounded else "")
            with_evidence += has_evidence
            if recall is not None:
                recalls.append(recall)
        else:
            refused += not answer.grounded
        if answer.grounded != is_answerable:
            wrong.append(qid)
        if answer.grounded and (found := answer_defects(answer.text)):
            defects[qid] = found
        if explain:
            decisions.append({"id": qid, "kind": item.get("kind", ""), "answerable": is_answerable,
                              "rank": ranks.get(qid), "answered": answer.grounded, "why": answer.why})
    unanswerable = len(items) - len(answerable)
    result: dict[str, Any] = {
        "answered_answerable": f"{answered}/{len(answerable)}",
        "refused_unanswerable": f"{refused}/{unanswerable}",
        "refusal_accuracy": round((answered + refused) / max(len(answerable) + unanswerable, 1), 4),
        "refusal_errors": wrong,
        "answer_has_evidence": round(with_evidence / max(len(answerable), 1), 4),
        "answer_recall": round(sum(recalls) / len(recalls), 4) if recalls else None,
        "answer_defects": sum(len(v) for v in defects.values()),
        "answer_defect_list": defects,
    }
    if explain:
        result["decisions"] = decisions
    return result


def evaluate_sets(service: QAService, paths: Sequence[Path], **kwargs: Any) -> dict[str, Any]:
    """Each set scored on its own (a gain on one set paid for by another must stay visible)."""
    return {Path(p).name: evaluate(service, Path(p), **kwargs) for p in paths}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (what the README shows): readable in a terminal, pasteable into docs."""
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def format_tables(results: dict[str, dict[str, Any]]) -> str:
    """`lecture-qa eval`'s default output: one table for retrieval, one for answering, recall@5 by kind, then the
    questions missed or wrongly answered/refused (and with --explain each decision). `--json` prints `results`."""
    sets = list(results.items())
    out = ["Retrieval", ""]
    out += _table(["set", "questions", "answerable", *(f"recall@{k}" for k in KS), "MRR@10"],
                  [[name, r["questions"], r["answerable"], *(f"{r[f'recall@{k}']:.2f}" for k in KS),
                    f"{r['mrr@10']:.2f}"] for name, r in sets])
    if any("answered_answerable" in r for _, r in sets):
        out += ["", "Answer or refuse, and the answers", ""]
        out += _table(["set", "answered (answerable)", "refused (unanswerable)", "refusal accuracy",
                       "answer has evidence", "answer recall", "answer defects"],
                      [[name, r["answered_answerable"], r["refused_unanswerable"], f"{r['refusal_accuracy']:.2f}",
                        f"{r['answer_has_evidence']:.0%}",
                        "" if r["answer_recall"] is None else f"{r['answer_recall']:.0%}", r["answer_defects"]]
                       for name, r in sets if "answered_answerable" in r])
    kinds = sorted({k for _, r in sets for k in r["recall@5_by_kind"]})
    if kinds:
        out += ["", "recall@5 by kind", ""]
        out += _table(["set", *kinds], [[name, *(r["recall@5_by_kind"].get(k, "") for k in kinds)]
                                        for name, r in sets])
    for name, r in sets:
        out += ["", f"{name}: missed at 5: {', '.join(r['missed@5']) or 'none'}"]
        if "refusal_errors" in r:
            out.append(f"{name}: answered/refused wrongly: {', '.join(r['refusal_errors']) or 'none'}")
        for qid, found in r.get("answer_defect_list", {}).items():
            out.append(f"{name}: defect in {qid}: {'; '.join(found)}")
        if r.get("decisions"):
            out += ["", f"{name}: each decision", ""]
            out += _table(["id", "kind", "answerable", "rank", "answered", "why"],
                          [[d["id"], d["kind"], "yes" if d["answerable"] else "no",
                            "-" if d["rank"] is None else d["rank"], "yes" if d["answered"] else "no", d["why"]]
                           for d in r["decisions"]])
    return "\n".join(out)

"""OCR on the shared corpus (issue 14): what it reads, what it costs, what it does to retrieval. docs/ocr.md.

    python bench/ocr.py [--corpus ../shared/corpus] [--out /tmp/ocr-bench] [--rounds 2] [--eval]

1. Every PDF and PPTX parsed without and with OCR (in this process): pages/slides with under
   ingest.ocr.MIN_TEXT_CHARS characters of text before and after, units OCR'd, parse seconds.
2. Cold ingest of the whole corpus (all 52 files) into fresh libraries with OCR off and on, in this process with
   one embedder and one parse worker, alternating which goes first each round (after a warm-up ingest of
   examples/lectures): seconds each, ratio on/off.
3. --eval: `lecture-qa eval` of dev.jsonl and dev2.jsonl on the first round's off and on libraries.
Prints JSON lines; the libraries stay under --out for inspection.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model or platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB"


def counts(corpus: Path) -> dict:
    from ingest.loaders import load_document
    from ingest.ocr import needs_ocr

    files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in (".pdf", ".pptx"))
    rows = []
    for path in files:
        data = path.read_bytes()
        row: dict = {"file": str(path.relative_to(corpus))}
        for ocr in (False, True):
            t = time.perf_counter()
            doc = load_document(path.name, data, max_unpacked_bytes=500 * 2**20, ocr=ocr, ocr_seconds=1e9)
            tag = "on" if ocr else "off"
            row[f"parse_s_{tag}"] = round(time.perf_counter() - t, 2)
            row[f"short_{tag}"] = sum(needs_ocr(u.text) for u in doc.units)
            if ocr:
                row["units"] = len(doc.units)
                row["ocr_units"] = sum(bool(u.location.get("ocr")) for u in doc.units)
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = {k: round(sum(r[k] for r in rows), 2)
             for k in ("units", "short_off", "short_on", "ocr_units", "parse_s_off", "parse_s_on")}
    return {"files": len(rows), **total}


def ingest_times(corpus: Path, out: Path, rounds: int) -> dict:
    from ingest.embedding import make_embedder
    from ingest.library import Library
    from ingest.pipeline import Pipeline, collect_paths

    embedder = make_embedder("onnx-int8")
    files, _ = collect_paths([corpus])
    warm, _ = collect_paths([ROOT / "examples" / "lectures"])
    shutil.rmtree(out / "warm", ignore_errors=True)
    Pipeline(Library(out / "warm", dim=embedder.dim), embedder).ingest(warm)  # starts the parse worker
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    chunks: dict[str, int] = {}
    for r in range(rounds):
        for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
            data_dir = out / f"{mode}-{r}"
            shutil.rmtree(data_dir, ignore_errors=True)
            pipeline = Pipeline(Library(data_dir, dim=embedder.dim), embedder, ocr=mode == "on")
            report = pipeline.ingest(files)
            assert report.error is None, report.error
            seconds[mode].append(round(report.seconds, 2))
            chunks[mode] = report.chunks
            print(json.dumps({"round": r, "ocr": mode, "seconds": round(report.seconds, 2),
                              "documents": report.documents, "units": report.units, "chunks": report.chunks,
                              "skipped": [f.name for f in report.skipped]}), flush=True)
    mean = {m: sum(v) / len(v) for m, v in seconds.items()}
    return {"seconds_off": seconds["off"], "seconds_on": seconds["on"], "chunks_off": chunks["off"],
            "chunks_on": chunks["on"], "ratio_mean": round(mean["on"] / mean["off"], 2),
            "ratio_best": round(min(seconds["on"]) / min(seconds["off"]), 2)}


def evaluate(out: Path) -> dict:
    qa = [str(ROOT.parent / "shared" / "eval" / n) for n in ("dev.jsonl", "dev2.jsonl")]
    result = {}
    for mode in ("off", "on"):
        proc = subprocess.run([str(Path(sys.executable).parent / "lecture-qa"), "eval", *qa, "--data-dir",
                               str(out / f"{mode}-0")], capture_output=True, text=True, check=False)
        result[mode] = proc.stdout.strip() or proc.stderr.strip()[-2000:]
        print(f"--- eval, OCR {mode}\n{result[mode]}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default="/tmp/ocr-bench")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--skip-counts", action="store_true")
    args = parser.parse_args()
    corpus, out = Path(args.corpus), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from ingest.ocr import unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"bench/ocr.py: {reason}", file=sys.stderr)
        return 2
    summary: dict = {"machine": machine()}
    if not args.skip_counts:
        summary["counts"] = counts(corpus)
    summary["ingest"] = ingest_times(corpus, out, args.rounds)
    print(json.dumps(summary), flush=True)
    if args.eval:
        evaluate(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

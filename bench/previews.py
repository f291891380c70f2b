"""Page previews over every PDF, PPTX and DOCX of ../shared/corpus: all pages drawn, and the cost of serving them.

    python bench/previews.py [--corpus ../shared/corpus] [--requests 1000] [--full 40] [--json out.json]

1. Ingests the files into a temporary data dir (originals kept by the pipeline), then prepares each one as the
   server's background thread does (app.previews.Previews.prepare: LibreOffice conversion for PPTX/DOCX, a
   thumbnail of every page), timed per file. Pages drawn / pages there are, per format, with every failure named;
   a PPTX whose PDF has another page count than its slides is a failure too (slide n must be page n).
2. Starts `lecture-qa serve` on that data dir (bench.served) and fetches cached thumbnails over HTTP with one
   keep-alive client: p50/p99 of `--requests` requests over random (document, page) pairs, after one warm-up
   pass, and as many of /healthz (the floor: what an HTTP round trip costs on this machine right now). Also the
   first (uncached) `full` image of `--full` random pages: what a click on a thumbnail costs once.
3. Bytes in the data dir: originals, thumbnails, converted PDFs, full images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.served import served  # noqa: E402

FORMATS = (".pdf", ".pptx", ".docx")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def folder_bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file()) if folder.is_dir() else 0


def prepare_all(data_dir: Path, corpus: Path) -> tuple[list[dict[str, Any]], float]:
    from app.backends import build_embedder, build_local_store
    from app.previews import Previews
    from app.settings import Settings
    from ingest.pipeline import collect_paths

    settings = Settings(data_dir=data_dir)
    store = build_local_store(settings, build_embedder(settings))
    files, _ = collect_paths([corpus])
    files = [f for f in files if Path(f.name).suffix.lower() in FORMATS]
    t0 = time.perf_counter()
    report = store.pipeline.ingest(files)
    ingest_s = time.perf_counter() - t0
    assert report.error is None, report.error
    previews = Previews(store.library, store.pipeline.originals, soffice=settings.soffice, background=False,
                        convert_timeout_s=settings.preview_timeout, convert_memory_mb=settings.preview_memory_mb)
    rows = []
    for doc in store.library.documents():
        original = store.pipeline.originals.find(doc.content, doc.parsed_as)
        row: dict[str, Any] = {"name": doc.name, "id": doc.id, "kind": doc.parsed_as, "units": doc.units}
        if original is None:
            rows.append({**row, "pages": 0, "rendered": 0, "error": "no original kept"})
            continue
        prepared = previews.prepare(original)
        error = prepared.error
        if not error and doc.parsed_as == "pptx" and prepared.pages != doc.units:
            error = f"the PDF has {prepared.pages} pages for {doc.units} slides"
        thumbs = len(list((previews.dir / original.name).glob("thumb-*.png")))
        rows.append({**row, "pages": prepared.pages, "rendered": thumbs, "convert_s": round(prepared.convert_s, 2),
                     "render_s": round(prepared.render_s, 2), "failed_pages": prepared.failed_pages,
                     "error": error})
        print(f"{doc.parsed_as:5} {thumbs:3}/{prepared.pages:<3} convert {prepared.convert_s:5.1f} s, thumbnails "
              f"{prepared.render_s:5.2f} s  {doc.name}{'  ERROR ' + error if error else ''}", flush=True)
    return rows, ingest_s


def serve_times(data_dir: Path, rows: list[dict[str, Any]], requests: int, full: int) -> dict[str, Any]:
    pairs = [(r["id"], n) for r in rows for n in range(1, r["rendered"] + 1)]
    rng = random.Random(14)
    env = {**os.environ, "LECTURE_QA_DATA_DIR": str(data_dir)}
    with served(env) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        for doc_id, n in pairs:  # warm-up: every thumbnail once (all cached already: a file read each)
            r = client.get(f"/api/v1/documents/{doc_id}/pages/{n}", params={"size": "thumb"})
            assert r.status_code == 200, (doc_id, n, r.status_code, r.text[:200])
        thumb_ms = []
        for _ in range(requests):
            doc_id, n = rng.choice(pairs)
            t0 = time.perf_counter()
            r = client.get(f"/api/v1/documents/{doc_id}/pages/{n}", params={"size": "thumb"})
            thumb_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
        floor_ms = []  # the same server's answer to its cheapest route: what HTTP itself costs here
        for _ in range(requests):
            t0 = time.perf_counter()
            r = client.get("/healthz")
            floor_ms.append((time.perf_counter() - t0) * 1000)
        full_ms = []
        for doc_id, n in rng.sample(pairs, min(full, len(pairs))):
            t0 = time.perf_counter()
            r = client.get(f"/api/v1/documents/{doc_id}/pages/{n}", params={"size": "full"})
            full_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
    return {"thumb_requests": requests, "thumb_p50_ms": round(pct(thumb_ms, 0.5), 2),
            "thumb_p99_ms": round(pct(thumb_ms, 0.99), 2), "thumb_mean_ms": round(statistics.mean(thumb_ms), 2),
            "healthz_p50_ms": round(pct(floor_ms, 0.5), 2), "healthz_p99_ms": round(pct(floor_ms, 0.99), 2),
            "full_first_requests": len(full_ms), "full_first_p50_ms": round(pct(full_ms, 0.5), 1),
            "full_first_p99_ms": round(pct(full_ms, 0.99), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--full", type=int, default=40)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lecture-qa-previews-") as tmp:
        data_dir = Path(tmp) / "data"
        rows, ingest_s = prepare_all(data_dir, Path(args.corpus))
        per_kind: dict[str, dict[str, Any]] = defaultdict(lambda: {"files": 0, "pages": 0, "rendered": 0,
                                                                   "convert_s": 0.0, "render_s": 0.0})
        for r in rows:
            k = per_kind[r["kind"]]
            k["files"] += 1
            k["pages"] += r["pages"] or r["units"]  # a file that could not be opened: its slides/pages count
            k["rendered"] += r["rendered"]
            k["convert_s"] = round(k["convert_s"] + r.get("convert_s", 0.0), 2)
            k["render_s"] = round(k["render_s"] + r.get("render_s", 0.0), 2)
        serving = serve_times(data_dir, rows, args.requests, args.full)
        previews_dir = data_dir / "previews"
        result = {
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "ingest_s": round(ingest_s, 1),
            "per_format": dict(per_kind),
            "rendered": sum(r["rendered"] for r in rows),
            "pages": sum(r["pages"] or r["units"] for r in rows),
            "failures": [{"name": r["name"], "error": r["error"], "failed_pages": r.get("failed_pages")}
                         for r in rows if r["error"] or r.get("failed_pages")],
            "conversions_s": sorted((r["convert_s"] for r in rows if r.get("convert_s")), reverse=True),
            **serving,
            "bytes": {"originals": folder_bytes(data_dir / "originals", "*"),
                      "thumbnails": folder_bytes(previews_dir, "thumb-*.png"),
                      "converted_pdfs": folder_bytes(previews_dir, "document.pdf"),
                      "full_images": folder_bytes(previews_dir, "full-*.png")},
        }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "files": rows}, indent=2))
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())

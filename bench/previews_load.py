"""Concurrent uncached full-size pages of a heavy PDF against a real `lecture-qa serve` (issue 19), while /healthz
and search are polled: does drawing leave the server responsive, and does every page get an answer?

    nice -n 10 python bench/previews_load.py [--pages 40] [--concurrent 40] [--image-px 4000x3000] [--json out.json]

1. Builds a heavy PDF (cached in the temp dir): `--pages` pages, each with a paragraph of text and its own large
   picture (smooth random noise with grain, JPEG: 1.2 MB a page at 4000x3000, 46 MB for 40 pages), made with
   reportlab and Pillow.
2. Starts `lecture-qa serve` (one worker) on a fresh data dir, uploads the PDF, and waits for the background
   thumbnails (so that the figures are those of the requests, not of the thumbnail thread).
3. Polls /healthz and search for `--quiet-s` seconds with no page request: the machine's own noise right then.
   Then fires `--concurrent` clients at once, client i asking for page i `?size=full` (none is drawn yet). A 503 is
   retried after its Retry-After, as the contract says; each client stops at its first 200 (an image) or 404 (a
   clear error) or after 120 s. Meanwhile one client polls /healthz (every 0.2 s) and one POSTs a search (every
   0.5 s), and the RSS of the server process and of its children (the drawing workers) is sampled every 0.25 s.
4. Prints: /healthz and search latency (max, p99, p50), the first answer's latency (max) and the time to the
   final answer of every page (max), the answers by status, the RSS peak over the baseline taken just before the
   requests (the server alone, and with its workers).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.served import served  # noqa: E402

ANSWER_WITHIN_S = 120.0
TEXT = ("Page {n}: a recurrent network keeps a hidden state that it updates at every time step; the photograph "
        "below is a large scan that a lecturer pasted in at full resolution, as real slide decks often do.")


def heavy_pdf(pages: int, width: int, height: int, seed: int = 19) -> Path:
    """The bench's PDF, built once per (pages, size) and kept in the temp dir."""
    path = Path(tempfile.gettempdir()) / f"lecture-qa-heavy-{pages}p-{width}x{height}-s{seed}.pdf"
    if path.is_file():
        return path
    import numpy as np
    from PIL import Image
    from reportlab.lib.pagesizes import landscape, letter
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    c = canvas.Canvas(str(tmp), pagesize=landscape(letter))
    for n in range(1, pages + 1):
        coarse = Image.fromarray(rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-4, 5, (height, width, 1), dtype=np.int16)
        image = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
        jpeg = io.BytesIO()
        image.save(jpeg, format="JPEG", quality=75)
        jpeg.seek(0)
        c.setFont("Helvetica", 12)
        c.drawString(36, 570, TEXT.format(n=n)[:110])
        c.drawString(36, 555, TEXT.format(n=n)[110:])
        c.drawImage(ImageReader(jpeg), 36, 36, width=720, height=500)
        c.showPage()
    c.save()
    os.replace(tmp, path)
    return path


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out.append(int(child))
                out.extend(children(int(child)))
    except OSError:
        pass
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def fetch_page(url: str, doc_id: str, n: int, start: float, out: dict[int, dict[str, Any]]) -> None:
    """Page n at full size, retrying 503s after their Retry-After, until an image, a 404 or ANSWER_WITHIN_S."""
    record: dict[str, Any] = {"tries": 0, "statuses": Counter()}
    out[n] = record
    with httpx.Client(timeout=ANSWER_WITHIN_S + 30) as client:
        while True:
            t0 = time.monotonic()
            try:
                r = client.get(f"{url}/api/v1/documents/{doc_id}/pages/{n}", params={"size": "full"})
                status = r.status_code
            except httpx.HTTPError as exc:
                status, r = 0, None
                record["error"] = str(exc)
            record["tries"] += 1
            record["statuses"][status] += 1
            if status == 503:
                record.setdefault("busy_s", []).append(time.monotonic() - t0)
            record.setdefault("first_answer_s", time.monotonic() - t0)
            record.setdefault("first_status", status)
            if status != 503 or time.monotonic() - start > ANSWER_WITHIN_S or r is None:
                record["final_status"] = status
                record["final_s"] = time.monotonic() - start
                if status == 404 and r is not None:
                    record["reason"] = r.json()["detail"].get("reason")
                    record["error"] = r.json()["error"]
                return
            time.sleep(float(r.headers.get("Retry-After", "1")))


def poll(url: str, method: str, path: str, body: Any, every: float, stop: threading.Event,
         out: list[float], failures: list[int]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            t0 = time.monotonic()
            r = client.request(method, f"{url}{path}", json=body)
            out.append(time.monotonic() - t0)
            if r.status_code != 200:
                failures.append(r.status_code)
            stop.wait(every)


def measure_quiet(url: str, seconds: float) -> dict[str, list[float]]:
    """The same two pollers with no page request: the machine's own noise, to compare the storm with."""
    stop = threading.Event()
    out: dict[str, list[float]] = {"healthz": [], "search": []}
    failures: list[int] = []
    threads = [threading.Thread(target=poll, args=(url, "GET", "/healthz", None, 0.2, stop, out["healthz"],
                                                   failures)),
               threading.Thread(target=poll, args=(url, "POST", "/api/v1/search",
                                                   {"query": "hidden state of a recurrent network"}, 0.5, stop,
                                                   out["search"], failures))]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--concurrent", type=int, default=40)
    parser.add_argument("--image-px", default="4000x3000", help="each page's picture, WIDTHxHEIGHT pixels")
    parser.add_argument("--quiet-s", type=float, default=30.0, help="seconds of polling with no page request first")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = (int(v) for v in args.image_px.split("x"))
    t0 = time.perf_counter()
    pdf = heavy_pdf(args.pages, width, height)
    print(f"heavy PDF: {pdf} ({pdf.stat().st_size / 1e6:.1f} MB, {args.pages} pages, {width}x{height} px each; "
          f"built/found in {time.perf_counter() - t0:.1f} s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="lecture-qa-load-") as tmp:
        env = {**os.environ, "LECTURE_QA_DATA_DIR": str(Path(tmp) / "data"), "LECTURE_QA_API_KEYS": "",
               "LECTURE_QA_ADMIN_KEYS": "", "LECTURE_QA_MAX_UPLOAD_MB": "100"}
        with served(env) as (url, server):
            with httpx.Client(timeout=600) as client:
                r = client.post(f"{url}/api/v1/documents", files=[("files", ("heavy.pdf", pdf.read_bytes()))])
                r.raise_for_status()
                doc_id = r.json()["files"][0]["document_id"]
                t_thumbs = time.monotonic()
                for n in range(1, args.pages + 1):  # each thumbnail, from the background thread or drawn now
                    while client.get(f"{url}/api/v1/documents/{doc_id}/pages/{n}").status_code != 200:
                        time.sleep(0.5)
                print(f"uploaded; every thumbnail there after {time.monotonic() - t_thumbs:.1f} s", flush=True)
            time.sleep(2)
            quiet = measure_quiet(url, args.quiet_s)
            print(f"quiet phase ({args.quiet_s:g} s, no page requests): /healthz max {max(quiet['healthz']):.3f} s, "
                  f"search max {max(quiet['search']):.3f} s", flush=True)
            base_server = rss(server.pid)
            base_total = base_server + sum(rss(c) for c in children(server.pid))
            stop = threading.Event()
            health: list[float] = []
            search: list[float] = []
            health_fail: list[int] = []
            search_fail: list[int] = []
            peak = {"server": base_server, "total": base_total}

            def sample() -> None:
                while not stop.is_set():
                    s = rss(server.pid)
                    peak["server"] = max(peak["server"], s)
                    peak["total"] = max(peak["total"], s + sum(rss(c) for c in children(server.pid)))
                    stop.wait(0.25)

            pollers = [threading.Thread(target=poll, args=(url, "GET", "/healthz", None, 0.2, stop, health,
                                                           health_fail)),
                       threading.Thread(target=poll, args=(url, "POST", "/api/v1/search",
                                                           {"query": "hidden state of a recurrent network"}, 0.5,
                                                           stop, search, search_fail)),
                       threading.Thread(target=sample)]
            for t in pollers:
                t.start()
            time.sleep(1)
            results: dict[int, dict[str, Any]] = {}
            pages = [1 + (i % args.pages) for i in range(args.concurrent)]
            random.Random(19).shuffle(pages)
            start = time.monotonic()
            clients = [threading.Thread(target=fetch_page, args=(url, doc_id, n, start, results)) for n in pages]
            for t in clients:
                t.start()
            for t in clients:
                t.join()
            storm_s = time.monotonic() - start
            time.sleep(1)
            stop.set()
            for t in pollers:
                t.join()
    finals = Counter(r.get("final_status") for r in results.values())
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, load average "
                   f"{os.getloadavg()[0]:.1f}",
        "pdf_mb": round(pdf.stat().st_size / 1e6, 1), "pages": args.pages, "concurrent": args.concurrent,
        "image_px": args.image_px, "storm_s": round(storm_s, 1),
        "healthz": {"n": len(health), "max_s": round(max(health), 3), "p99_s": round(pct(health, 0.99), 3),
                    "p50_s": round(pct(health, 0.5), 3), "failures": health_fail},
        "search": {"n": len(search), "max_s": round(max(search), 3), "p99_s": round(pct(search, 0.99), 3),
                   "p50_s": round(pct(search, 0.5), 3), "failures": search_fail},
        "quiet": {name: {"n": len(v), "max_s": round(max(v), 3), "p99_s": round(pct(v, 0.99), 3),
                         "p50_s": round(pct(v, 0.5), 3)} for name, v in quiet.items()},
        "first_answer_max_s": round(max(r["first_answer_s"] for r in results.values()), 3),
        "answer_503_max_s": round(max((b for r in results.values() for b in r.get("busy_s", [])), default=0), 3),
        "answer_503_p50_s": round(pct([b for r in results.values() for b in r.get("busy_s", [])], 0.5), 3),
        "final_answer_max_s": round(max(r["final_s"] for r in results.values()), 1),
        "first_statuses": dict(Counter(r["first_status"] for r in results.values())),
        "final_statuses": {str(k): v for k, v in finals.items()},
        "tries": sum(r["tries"] for r in results.values()),
        "errors": sorted({r["error"] for r in results.values() if r.get("error")}),
        "rss_mb": {"server_base": round(base_server / 1e6), "server_peak": round(peak["server"] / 1e6),
                   "with_workers_base": round(base_total / 1e6), "with_workers_peak": round(peak["total"] / 1e6),
                   "server_over_base": round((peak["server"] - base_server) / 1e6),
                   "with_workers_over_base": round((peak["total"] - base_total) / 1e6)},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    ok = (report["healthz"]["max_s"] <= 1.0 and report["search"]["max_s"] <= 2.0
          and report["final_answer_max_s"] <= ANSWER_WITHIN_S and set(finals) <= {200, 404}
          and peak["total"] - base_total <= 1.5e9)
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

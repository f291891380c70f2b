"""lecture-qa: ingest | documents | delete | ask | search | serve | mcp | worker | eval | reindex."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.settings import Settings

if TYPE_CHECKING:
    from app.qa.service import QAService
    from ingest.pipeline import FileResult, Report


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return Settings(**overrides)


def _location(loc: dict[str, Any]) -> str:
    from ingest.units import location_label

    return location_label(loc)


def _service(args: argparse.Namespace, *, warm: bool = True) -> QAService:
    """`warm=False` for commands that only read or change the library's records (documents, delete): no index is
    opened and no model session made, so they answer in well under a second."""
    from app.backends import build_service

    service = build_service(_settings(args))
    if warm:
        service.warm_up()
    return service


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ingest.pipeline import collect_paths

    excluded: list[str] = []
    files, missing = collect_paths(args.paths, root=args.root, exclude=args.exclude,
                                   excluded=excluded)
    if excluded:
        shown = ", ".join(excluded[:5]) + (f" and {len(excluded) - 5} more" if len(excluded) > 5 else "")
        print(f"left out {len(excluded)} files (.lectureqaignore or --exclude): {shown}", file=sys.stderr)
    if not files and not missing:
        print("no supported files found (pdf, pptx, docx, md, html, txt)", file=sys.stderr)
        return 1
    print("loading the embedding model...", file=sys.stderr)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{stage:>5}", unit="file" if stage == "parse" else "chunk",
                                     file=sys.stderr, disable=args.quiet)
        if bar.total != total:  # the embed total grows as files are parsed
            bar.total = total
        bar.update(done - bar.n)

    def waiting() -> None:
        print("another ingest holds the library lock; waiting for it to finish...", file=sys.stderr)

    if args.queue:
        return _enqueue(args, files, missing)
    with _service(args) as service:
        print(f"ingesting {len(files)} files into the {service.where}...", file=sys.stderr)
        report = service.ingest(files, progress=progress, on_lock_wait=waiting)
        for bar in bars.values():
            bar.close()
        return _print_report(args, service.where, report, missing)


def _enqueue(args: argparse.Namespace, files: list[Any], missing: list[FileResult]) -> int:
    """One job for the workers (store=postgres); with --wait, follow it until it ends."""
    import time

    with _service(args) as service:
        if not service.queued:
            print("--queue needs a store with a job queue (LECTURE_QA_STORE=postgres)", file=sys.stderr)
            return 2
        job = service.enqueue(files)
        job.pop("owner", None)
        print(f"queued job {job['id']}: {len(files)} files for the ingest workers ({service.where})",
              file=sys.stderr)
        if args.json and not args.wait:
            print(json.dumps(job, indent=2))
        elif not args.wait:
            print(job["id"])
        if not args.wait:
            return 0
        while job["state"] in ("queued", "running"):
            time.sleep(1.0)
            job = service.job(job["id"]) or job
        job.pop("owner", None)
        if job["state"] == "failed" or job["report"] is None:
            print(f"job {job['id']} failed: {job['error']}", file=sys.stderr)
            return 2
        body = job["report"]
        if args.json:
            print(json.dumps(job, indent=2))
            return 0
        for f in body["files"] + [m.public() for m in missing]:
            if f["status"] == "skipped":
                print(f"  skipped   {f['name']}: {f.get('reason')}")
        unchanged = sum(f["status"] == "unchanged" for f in body["files"])
        skipped = sum(f["status"] == "skipped" for f in body["files"]) + len(missing)
        print(f"documents: {body['documents']} ingested, {unchanged} unchanged, {skipped} skipped")
        print(f"chunks: {body['chunks']}   duplicates collapsed: {body['duplicates_collapsed']}   "
              f"seconds: {body['seconds']:.1f}   job {job['id']}, attempt {job['attempts']}")
        return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Take queued ingest jobs until stopped (SIGTERM/SIGINT finish the current job first), or with --once until
    the queue is empty. A database that is down (at start too) or restarts is waited out: the worker logs once,
    retries with growing pauses (up to LECTURE_QA_WORKER_RETRY_MAX) and takes the queue up again."""
    import logging
    import signal
    import threading

    from app.backends import build_embedder, build_service
    from ingest.errors import StorageUnavailable
    from ingest.pg_jobs import JobQueue, Outage, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # a line per failed try; outages are logged once
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings = _settings(args)
    embedder = build_embedder(settings)
    starting = Outage(settings.worker_retry_max)
    while True:
        service = None
        try:
            service = build_service(settings, embedder)
            service.warm_up()
            break
        except StorageUnavailable as exc:
            if service is not None:
                service.close()
            if stop.wait(starting.failed(exc)):
                print("worker stopped before the database could be reached", file=sys.stderr)
                return 0
    starting.ok()
    with service:
        if not isinstance(service.jobs, JobQueue):
            print("the worker needs a store with a job queue (LECTURE_QA_STORE=postgres)", file=sys.stderr)
            return 2
        print(f"worker ready: {service.where}", file=sys.stderr)

        def done(job_id: str, report: Report) -> None:
            state = (f"failed: {report.error}" if report.error
                     else f"{report.documents} documents, {report.chunks} chunks")
            print(f"job {job_id}: {state} in {report.seconds:.1f} s", file=sys.stderr, flush=True)

        n = run_worker(service.jobs, service.ingest, stop=stop, poll=args.poll, once=args.once, on_job=done,
                       retry_max=settings.worker_retry_max)
    print(f"worker stopped after {n} jobs", file=sys.stderr)
    return 0


def _print_report(args: argparse.Namespace, where: str, report: Report, missing: list[FileResult]) -> int:
    report.files.extend(missing)
    if args.json:
        print(json.dumps(report.public(), indent=2))
    else:
        for f in report.files:
            if f.status == "skipped":
                print(f"  skipped   {f.name}: {f.reason}")
            elif f.status == "replaced":
                print(f"  replaced  {f.name} ({f.chunks} chunks)")
            if f.same_as:
                print(f"  named     {f.name}: the same content as {f.same_as}, one document under both names")
        unchanged = sum(f.status == "unchanged" for f in report.files)
        print(f"documents: {report.documents} ingested, {unchanged} unchanged, {len(report.skipped)} skipped")
        print(f"pages/slides/sections: {report.units}   chunks: {report.chunks}   "
              f"duplicates collapsed: {report.collapsed}   embedded: {report.embedded}")
        print(f"seconds: {report.seconds:.1f}   chunks/s: {report.chunks_per_second:.1f}   {where}")
    if report.error:
        print(report.error, file=sys.stderr)
        return 2
    ok = [f for f in report.files if f.status in ("ingested", "replaced", "unchanged")]
    return 0 if ok else 1


def cmd_documents(args: argparse.Namespace) -> int:
    with _service(args, warm=False) as service:
        docs = service.documents()
    if args.json:
        print(json.dumps([d.public() for d in docs], indent=2))
        return 0
    for d in docs:
        also = f"  (also: {', '.join(d.also_named)})" if d.also_named else ""
        print(f"{d.id}  {d.type:<8} {d.units:>4} {d.unit_label:<8} {d.chunks:>4} chunks  {d.name}{also}")
    print(f"{len(docs)} documents")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _service(args, warm=False) as service:
        if service.delete(args.doc_id):
            print(f"deleted {args.doc_id}")
            return 0
    print(f"no document with id {args.doc_id}", file=sys.stderr)
    return 1


def cmd_ask(args: argparse.Namespace) -> int:
    with _service(args) as service:
        result = service.ask(args.question, top_k=args.top_k)
    if args.json:
        print(json.dumps(result.public(), indent=2, ensure_ascii=False))
        return 0
    print(result.answer.text)
    print()
    for c in result.answer.citations:
        print(f"[{c.n}] {c.source.document.name}, {_location(c.source.location)}")
    if not result.answer.grounded and result.sources:
        print("closest sources:")
        for i, s in enumerate(result.sources, 1):
            print(f"  {i}. {s.document.name}, {_location(s.location)}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    with _service(args) as service:
        results = service.search(args.query, args.top_k)
    for i, s in enumerate(results, 1):
        print(f"{i}. {s.document.name}, {_location(s.location)}  (score {s.score:.4f})")
        print("   " + s.text[:300].replace("\n", " "))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.data_dir:
        os.environ["LECTURE_QA_DATA_DIR"] = str(args.data_dir)
    Settings()  # fail fast on bad settings, before workers start
    uvicorn.run("app.factory:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level=args.log_level)
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """The MCP tools over stdin/stdout (app.mcp_server), for a client that starts the server (Claude Desktop)."""
    from app.mcp_server import run_stdio

    run_stdio(_settings(args))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from app.qa.evaluate import evaluate_sets, format_tables

    with _service(args) as service:
        results = evaluate_sets(service, [Path(p) for p in args.qa], with_answers=not args.search_only,
                                explain=args.explain)
    if args.json:
        print(json.dumps(results if len(results) > 1 else next(iter(results.values())), indent=2))
    else:
        print(format_tables(results))
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Re-embed the library for LECTURE_QA_DENSE_MODEL (ingest.reindex), with a progress bar per model."""
    from tqdm import tqdm

    from app.backends import build_dense_encoders, open_library
    from ingest.reindex import reindex

    settings = _settings(args)
    library = open_library(settings)
    bars: dict[str, tqdm] = {}

    def progress(model: str, done: int, total: int) -> None:
        bar = bars.get(model)
        if bar is None:
            bar = bars[model] = tqdm(total=total, desc=f"{model:>9}", unit="passage", file=sys.stderr,
                                     disable=args.quiet)
        bar.total = total
        bar.update(done - bar.n)

    try:
        print(f"re-embedding for LECTURE_QA_DENSE_MODEL={settings.dense_model}...", file=sys.stderr)
        report = reindex(library, settings.dense_model, build_dense_encoders(settings), progress)
    finally:
        for bar in bars.values():
            bar.close()
        close = getattr(library, "close", None)
        if close is not None:
            close()
    encoded = ", ".join(f"{m}: {n} chunks given a vector" for m, n in report.encoded.items()) or "nothing to encode"
    dropped = f"; dropped the {', '.join(report.dropped)} vectors" if report.dropped else ""
    print(f"dense model: {report.before} -> {report.after} ({encoded}{dropped})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lecture-qa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="library directory (default: $LECTURE_QA_DATA_DIR or ./data)")

    p = sub.add_parser("ingest", parents=[common], help="ingest files or folders (recursive)")
    p.add_argument("paths", nargs="+", help="files and folders; each file is named by its path below the common "
                   "folder of everything given (one folder: below itself; one file: its file name)")
    p.add_argument("--root", default=None, help="name the files by their path below this folder instead (every "
                   "path given must lie in it), e.g. to re-ingest one file of a folder ingested before")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--queue", action="store_true", help="queue one job for `lecture-qa worker`s instead of "
                   "ingesting here (store=postgres); prints the job id")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for the job and print its report")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out files of the folders given that match this gitignore-style glob (repeatable), "
                   "e.g. --exclude README.md --exclude 'drafts/'; a .lectureqaignore file in a folder does the same")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("worker", parents=[common], help="process queued ingest jobs (store=postgres)")
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at an empty queue")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("documents", parents=[common], help="list indexed documents")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_documents)

    p = sub.add_parser("delete", parents=[common], help="delete a document and its chunks")
    p.add_argument("doc_id")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("ask", parents=[common], help="answer a question with citations")
    p.add_argument("question")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("search", parents=[common], help="show the top passages for a query")
    p.add_argument("query")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("mcp", parents=[common], help="serve the MCP tools (search, ask, documents, page images) "
                       "over stdio; the HTTP server has them at /mcp")
    p.set_defaults(func=cmd_mcp)

    p = sub.add_parser("eval", parents=[common], help="retrieval, refusal and answer quality on QA jsonl files")
    p.add_argument("qa", nargs="+", help="one or more QA sets, each scored on its own")
    p.add_argument("--search-only", action="store_true", help="skip the refusal part (faster)")
    p.add_argument("--explain", action="store_true",
                   help="list each question with its rank and what the answerer decided, and why")
    p.add_argument("--json", action="store_true", help="print the figures as JSON (for scripts) instead of tables")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("reindex", parents=[common], help="re-embed the library for LECTURE_QA_DENSE_MODEL "
                       "(a library embedded for another choice refuses to open until this ran)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reindex)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error, not a traceback
        if os.environ.get("LECTURE_QA_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

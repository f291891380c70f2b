"""A delete is visible to every worker before its DELETE returns: no later search returns the document."""

from __future__ import annotations

import httpx

from ingest.pipeline import SourceFile
from tests.builders import make_pdf
from tests.server import Server
from tests.test_workers import _ready_from_every_worker

TOPICS = ["peephole", "reservoir", "highway", "clockwork", "zoneout", "quasi-recurrent"]
SEARCHES_PER_DELETE = 15


def test_no_search_after_a_delete_returns_the_document_on_any_worker(tmp_path, pipeline, library):
    # Ingested before the server starts, so both workers load a generation holding every deck. A worker
    # that kept that snapshot for a while (refresh_seconds used to allow it for 30 s here) would answer
    # with a deck that the other worker had already deleted.
    decks = [SourceFile(name=f"{t}.pdf", data=make_pdf([f"The {t} network\nThe {t} unit number {i} keeps a "
                                                        f"{t} state across time steps of the {t} sequence."]))
             for i, t in enumerate(TOPICS)]
    report = pipeline.ingest(decks)
    assert report.error is None and report.documents == len(TOPICS)
    ids = {f.name: f.document_id for f in report.files}
    srv = Server(library.data_dir, workers=2, env={"LECTURE_QA_REFRESH_SECONDS": "30"})
    try:
        srv.wait_ready()
        assert len(_ready_from_every_worker(srv.url, 2, timeout=60)) == 2, "both workers should answer"
        stale: list[tuple[str, int]] = []
        searches = 0
        for topic in TOPICS:
            doc_id = ids[f"{topic}.pdf"]
            query = {"query": f"{topic} unit state across time steps", "top_k": 5}
            with httpx.Client(timeout=30) as fresh:
                assert fresh.post(f"{srv.url}/api/v1/search", json=query).json()["results"][0]["document"][
                    "id"] == doc_id
            with httpx.Client(timeout=60) as fresh:
                assert fresh.delete(f"{srv.url}/api/v1/documents/{doc_id}").status_code == 200
            for i in range(SEARCHES_PER_DELETE):
                with httpx.Client(timeout=30) as fresh:  # a new connection each time: either worker answers
                    body = fresh.post(f"{srv.url}/api/v1/search", json=query).json()
                searches += 1
                places = [r["document"]["id"] for r in body["results"]]
                places += [a["document"]["id"] for r in body["results"] for a in r["also_at"]]
                if doc_id in places:
                    stale.append((topic, i))
        assert searches == len(TOPICS) * SEARCHES_PER_DELETE
        assert stale == [], f"{len(stale)} of {searches} searches returned a deleted document"
    finally:
        srv.stop()

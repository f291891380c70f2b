"""Page previews (issue 14): originals kept content-addressed, PDF pages and PPTX slides served as PNG, formats
without pages refused, failures explained, everything removed with its document. Contract: docs/previews.md."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import SAMPLES

HAS_SOFFICE = shutil.which("soffice") is not None
needs_soffice = pytest.mark.skipif(not HAS_SOFFICE, reason="LibreOffice (soffice) is not installed")
CONVERSION_WAIT_S = 240  # a generous bound for LibreOffice on a loaded machine; polled, not slept


def make_pdf(pages: int, label: str = "page") -> bytes:
    """A landscape PDF whose pages say their own number (our own content, made here)."""
    from reportlab.lib.pagesizes import landscape, letter
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=landscape(letter))
    for i in range(1, pages + 1):
        c.setFont("Helvetica", 28)
        c.drawString(72, 480, f"{label} {i}: gated recurrent units")
        c.setFont("Helvetica", 16)
        for j, line in enumerate(["A recurrent network keeps a hidden state that it updates at every time step.",
                                  f"On {label} {i}, the update gate decides how much of the old state is kept,",
                                  "and the reset gate how much of it the candidate state may read."]):
            c.drawString(72, 420 - 28 * j, line)
        c.showPage()
    c.save()
    return out.getvalue()


def make_pptx(slides: int, hidden: frozenset[int] = frozenset()) -> bytes:
    """A deck of `slides` titled slides; the 1-based numbers in `hidden` are hidden slides."""
    from pptx import Presentation

    prs = Presentation()
    for i in range(1, slides + 1):
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = f"Slide {i} about long short-term memory"
        slide.placeholders[1].text = f"The forget gate of slide {i} decides what the cell state drops."
        if i in hidden:
            slide._element.set("show", "0")
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def start(tmp_path: Path, **settings: Any) -> Iterator[httpx.Client]:
    from fastapi.testclient import TestClient

    from app.factory import create_app
    from app.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", **settings), load_in_background=False)
    with TestClient(app) as client:
        yield client  # type: ignore[misc]  # a TestClient is an httpx.Client


def upload(client: httpx.Client, name: str, data: bytes, headers: dict[str, str] | None = None) -> str:
    r = client.post("/api/v1/documents", files=[("files", (name, data))], headers=headers or {})
    assert r.status_code == 200, r.text
    (entry,) = [f for f in r.json()["files"] if f["name"] == name]
    assert entry["status"] in ("ingested", "unchanged", "replaced"), entry
    return str(entry["document_id"])


def page(client: httpx.Client, doc_id: str, n: int | str, size: str | None = "thumb",
         headers: dict[str, str] | None = None) -> httpx.Response:
    params = {"size": size} if size else {}
    return client.get(f"/api/v1/documents/{doc_id}/pages/{n}", params=params, headers=headers or {})


def wait_page(client: httpx.Client, doc_id: str, n: int, size: str = "thumb") -> httpx.Response:
    """The page once it is no longer being prepared (503 + Retry-After), within CONVERSION_WAIT_S."""
    deadline = time.monotonic() + CONVERSION_WAIT_S
    while True:
        r = page(client, doc_id, n, size)
        if r.status_code != 503:
            return r
        assert r.headers["Retry-After"].isdigit()
        assert r.json()["detail"]["reason"] == "preparing"
        assert time.monotonic() < deadline, "the preview was still being prepared"
        time.sleep(0.5)


def png_size(r: httpx.Response) -> tuple[int, int]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(r.content)) as im:
        im.verify()
    with Image.open(io.BytesIO(r.content)) as im:
        return im.size


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() \
        else []


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[httpx.Client]:
    yield from start(tmp_path_factory.mktemp("previews"))


@pytest.fixture(scope="module")
def pdf_id(client) -> str:
    return upload(client, "three-pages.pdf", make_pdf(3))


def test_pdf_page_as_png_at_both_sizes_with_etag(client, pdf_id):
    thumb = page(client, pdf_id, 1)
    assert max(png_size(thumb)) == 320
    assert max(png_size(page(client, pdf_id, 3, size=None))) == 320  # thumb is the default
    full = page(client, pdf_id, 2, "full")
    width, height = png_size(full)
    assert (width, height) == (1600, round(1600 * 8.5 / 11)) or max(width, height) == 1600
    assert "max-age" in thumb.headers["cache-control"]
    again = page(client, pdf_id, 1, headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert page(client, pdf_id, 2).headers["etag"] != thumb.headers["etag"]


def test_pages_past_the_end_and_unknown_documents_are_404_json(client, pdf_id):
    r = page(client, pdf_id, 4)
    assert r.status_code == 404
    body = r.json()
    assert body["detail"]["reason"] == "no_such_page" and body["detail"]["pages"] == 3
    assert "3 pages" in body["error"]
    r = page(client, "0123456789abcdef", 1)
    assert r.status_code == 404 and r.json()["detail"]["reason"] == "unknown_document"


@pytest.mark.parametrize("n, size", [(0, "thumb"), (-1, "thumb"), ("one", "thumb"), (1, "huge"), (1, "Thumb")])
def test_bad_page_numbers_and_sizes_are_422(client, pdf_id, n, size):
    r = page(client, pdf_id, n, size)
    assert r.status_code == 422, r.status_code
    assert r.json()["error"].startswith("invalid request")


def test_formats_without_pages_say_so(client):
    doc_id = upload(client, "notes.md", (SAMPLES / "01-recurrent-networks.md").read_bytes())
    r = page(client, doc_id, 1)
    assert r.status_code == 404
    assert r.json()["detail"]["reason"] == "no_pages"
    assert "Markdown documents have no pages" in r.json()["error"]


def test_identical_bytes_share_one_original_and_delete_removes_originals_and_previews(client, tmp_path_factory):
    data_dir = Path(client.app.state.settings.data_dir)  # type: ignore[attr-defined]
    deck = make_pdf(2, "shared")
    first = upload(client, "week1/deck.pdf", deck)
    assert upload(client, "week2/deck.pdf", deck) == first  # the same bytes: one document, two names
    originals = [p for p in files_under(data_dir / "originals") if not p.startswith(".")]
    assert sum(1 for p in originals if p.endswith(".pdf") and (data_dir / "originals" / p).read_bytes() == deck) == 1
    assert png_size(page(client, first, 2))
    previews = client.app.state.service.previews  # type: ignore[attr-defined]
    assert previews.wait_idle(60)
    name = next(p for p in originals if (data_dir / "originals" / p).read_bytes() == deck)
    assert "thumb-0001.png" in files_under(data_dir / "previews" / name)  # drawn in the background after ingest
    assert client.delete(f"/api/v1/documents/{first}").status_code == 200
    assert not (data_dir / "originals" / name).exists()
    assert not (data_dir / "previews" / name).exists()
    assert page(client, first, 1).json()["detail"]["reason"] == "unknown_document"


def test_replacing_a_name_removes_the_old_original(pipeline, library):
    from ingest.pipeline import SourceFile

    old, new = make_pdf(1, "old"), make_pdf(1, "new")
    assert pipeline.ingest([SourceFile(name="deck.pdf", data=old)]).error is None
    report = pipeline.ingest([SourceFile(name="deck.pdf", data=new)])
    assert [f.status for f in report.files] == ["replaced"]
    kept = [p.read_bytes() for p in (library.data_dir / "originals").iterdir()]
    assert kept == [new]


def test_a_failed_commit_leaves_no_original_behind(pipeline, library):
    from ingest.pipeline import SourceFile

    def crash() -> None:
        raise OSError("disk gone")

    report = pipeline.ingest([SourceFile(name="a.pdf", data=make_pdf(1, "a"))], _before_commit=crash)
    assert report.error and not library.documents()
    # the placed original has no document: the next write's prune removes it, and only it
    b = make_pdf(1, "b")
    assert pipeline.ingest([SourceFile(name="b.pdf", data=b)]).error is None
    assert [p.read_bytes() for p in (library.data_dir / "originals").iterdir()] == [b]


def test_an_original_missing_from_an_older_library_is_kept_on_the_next_upload(pipeline, library):
    from ingest.pipeline import SourceFile

    deck = make_pdf(1)
    pipeline.ingest([SourceFile(name="deck.pdf", data=deck)])
    for p in (library.data_dir / "originals").iterdir():
        p.unlink()  # as if ingested before originals were kept
    report = pipeline.ingest([SourceFile(name="deck.pdf", data=deck)])
    assert [f.status for f in report.files] == ["unchanged"]
    assert [p.read_bytes() for p in (library.data_dir / "originals").iterdir()] == [deck]


@needs_soffice
def test_pptx_slides_render_and_hidden_slides_keep_their_numbers(client):
    sample = upload(client, "03-lstm-and-gru.pptx", (SAMPLES / "03-lstm-and-gru.pptx").read_bytes())
    hidden = upload(client, "hidden.pptx", make_pptx(4, hidden=frozenset({2})))
    assert max(png_size(wait_page(client, sample, 6))) == 320
    past = page(client, sample, 7).json()
    assert past["detail"]["reason"] == "no_such_page" and past["error"].endswith("has 6 slides")
    # slide 2 is hidden: LibreOffice must still export it, or slides 3 and 4 would show as pages 2 and 3
    assert png_size(wait_page(client, hidden, 4))
    assert page(client, hidden, 5).json()["detail"]["pages"] == 4
    assert max(png_size(page(client, hidden, 3, "full"))) == 1600


def test_keys_and_roles(tmp_path):
    for client in start(tmp_path, api_keys="reader-key", admin_keys="admin-key"):
        doc_id = upload(client, "deck.pdf", make_pdf(1), headers={"Authorization": "Bearer admin-key"})
        assert page(client, doc_id, 1).status_code == 401
        assert page(client, doc_id, 1, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert png_size(page(client, doc_id, 1, headers={"Authorization": "Bearer reader-key"}))


def test_a_pptx_libreoffice_cannot_convert_still_ingests_and_the_page_says_why(tmp_path):
    broken = tmp_path / "soffice"
    broken.write_text("#!/bin/sh\necho 'Error: source file could not be loaded' >&2\nexit 1\n")
    broken.chmod(0o755)
    for client in start(tmp_path, soffice=str(broken)):
        doc_id = upload(client, "deck.pptx", make_pptx(2))
        listed = client.get(f"/api/v1/documents/{doc_id}").json()
        assert listed["units"] == 2  # ingested, slides and all
        r = wait_page(client, doc_id, 1)
        assert r.status_code == 404
        assert r.json()["detail"]["reason"] == "unavailable"
        assert "LibreOffice could not convert" in r.json()["error"]
        assert "could not be loaded" in r.json()["error"]


def test_without_libreoffice_pptx_previews_are_unavailable_but_pdf_ones_work(tmp_path):
    for client in start(tmp_path, soffice=str(tmp_path / "no-such-soffice")):
        deck = upload(client, "deck.pptx", make_pptx(1))
        r = page(client, deck, 1)
        assert r.status_code == 404 and r.json()["detail"]["reason"] == "unavailable"
        assert "need LibreOffice" in r.json()["error"]
        assert png_size(page(client, upload(client, "deck.pdf", make_pdf(1)), 1))


def test_previews_turned_off(tmp_path):
    for client in start(tmp_path, previews=False):
        r = page(client, upload(client, "deck.pdf", make_pdf(1)), 1)
        assert r.status_code == 404 and "turned off" in r.json()["error"]


def test_kill_9_during_the_commit_leaves_no_document_and_the_next_write_prunes_its_original(tmp_path, pipeline,
                                                                                          library):
    import os
    import signal

    from ingest.pipeline import SourceFile
    from tests.test_library import _crasher, _wait_for

    deck = tmp_path / "deck.pdf"
    deck.write_bytes(make_pdf(2, "crash"))
    marker = tmp_path / "marker"
    proc = _crasher(tmp_path, library.data_dir, marker, 60, deck)
    _wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)  # the original is in place, the document row is not committed
    proc.wait()
    assert library.documents() == []
    assert [p.read_bytes() for p in (library.data_dir / "originals").iterdir()] == [deck.read_bytes()]
    other = make_pdf(1, "other")
    assert pipeline.ingest([SourceFile(name="other.pdf", data=other)]).error is None
    assert [p.read_bytes() for p in (library.data_dir / "originals").iterdir()] == [other]


def test_without_the_local_library_previews_are_unavailable():
    from app.previews import NoPreview
    from app.qa.service import QAService

    service = QAService(store=None, answerer=None, previews=None)  # type: ignore[arg-type]
    with pytest.raises(NoPreview, match="need the local library") as caught:
        service.page_image("0123456789abcdef", 1, "thumb")
    assert caught.value.reason == "unavailable"


def test_previews_of_a_removed_original_are_pruned_at_start(library):
    from app.previews import Previews
    from ingest.originals import Originals

    orphan = library.data_dir / "previews" / "0123456789abcdef.pdf"
    orphan.mkdir(parents=True)
    (orphan / "thumb-0001.png").write_bytes(b"\x89PNG")
    Previews(library, Originals(library.data_dir), background=False)
    assert not orphan.exists()


def test_closing_stops_a_running_conversion_without_marking_the_file_failed(tmp_path, library):
    from app.previews import Previews
    from ingest.originals import Originals

    started = tmp_path / "started"
    slow = tmp_path / "soffice"
    slow.write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 120\n")
    slow.chmod(0o755)
    originals = Originals(library.data_dir)
    original = originals.path("0123456789abcdef", "pptx")
    original.parent.mkdir(parents=True)
    original.write_bytes(make_pptx(1))
    previews = Previews(library, originals, soffice=str(slow))
    previews.schedule(original)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "the conversion never started"
        time.sleep(0.05)
    t0 = time.monotonic()
    previews.close()
    assert time.monotonic() - t0 < 5  # not the 120 s of the fake LibreOffice, nor the 180 s time limit
    folder = library.data_dir / "previews" / original.name
    assert not (folder / "failed.txt").exists() and not (folder / "document.pdf").exists()

"""OCR (ingest.ocr, issue 14): a sentence that exists only inside an image is read at ingest, answered and cited
with the slide or page it is on, marked {"ocr": true}. Real Tesseract; without it those tests skip and say why,
and the tests of what happens without it run everywhere."""

from __future__ import annotations

import io
import logging
import re
import shutil
import zipfile
import zlib

import httpx
import pytest

from tests.builders import make_pptx, text_image
from tests.conftest import SAMPLES
from tests.server import Server

NO_TESSERACT = ("the tesseract program is not installed (Debian tesseract-ocr + tesseract-ocr-eng; "
                "scripts/system-deps.sh installs them where apt-get and root are available): OCR cannot run here")
needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason=NO_TESSERACT)

SLIDE_FACT = "Gradient clipping rescales the whole gradient vector whenever its norm exceeds a threshold of five."
PAGE_FACT = "Scheduled sampling feeds the decoder its own earlier prediction with a probability that grows in training."
MAX_UNPACKED = 50 * 2**20


def ocr_deck() -> bytes:
    """Slide 3 holds SLIDE_FACT only as pixels; its text layer is the title "Clipping" (8 characters)."""
    return make_pptx([
        {"title": "Training recurrent networks",
         "bullets": ["Backpropagation through time unrolls the network over the whole sequence",
                     "Long sequences make the gradients vanish or explode"]},
        {"title": "Exploding gradients",
         "bullets": ["Repeated multiplication by the recurrent weights can blow up the gradient",
                     "The loss then jumps and training diverges"]},
        {"title": "Clipping", "image": text_image(SLIDE_FACT)},
        {"title": "Summary", "bullets": ["Recurrent networks need care to train on long sequences"]},
    ], title="Training RNNs")


def ocr_pdf() -> bytes:
    """Page 2 is one image (a scanned page): no text layer at all."""
    from reportlab.lib.pagesizes import landscape, letter
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=landscape(letter))
    c.setTitle("Sequence to sequence decoding")
    c.drawString(40, 560, "Decoding with sequence to sequence models")
    c.drawString(40, 542, "The decoder emits one token at a time, conditioned on the encoder states.")
    c.showPage()
    c.drawImage(ImageReader(io.BytesIO(text_image(PAGE_FACT))), 36, 300, width=720, preserveAspectRatio=True,
                anchor="sw")
    c.showPage()
    c.save()
    return buf.getvalue()


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


def load(name: str, data: bytes, ocr: bool):
    from ingest.loaders import load_document

    return load_document(name, data, max_unpacked_bytes=MAX_UNPACKED, ocr=ocr)


# -- loaders ---------------------------------------------------------------------------------------------------
@needs_tesseract
def test_slide_picture_is_read_and_marked():
    data = ocr_deck()
    doc = load("deck.pptx", data, ocr=True)
    assert [u.location for u in doc.units] == [{"slide": 1}, {"slide": 2}, {"slide": 3, "ocr": True}, {"slide": 4}]
    assert doc.units[2].text.startswith("Clipping\n") and doc.units[2].title == "Clipping"
    assert words(SLIDE_FACT) in words(doc.units[2].text)
    plain = load("deck.pptx", data, ocr=False)
    assert plain.units[2].text == "Clipping" and plain.units[2].location == {"slide": 3}


@needs_tesseract
def test_image_only_pdf_page_is_read_and_marked():
    data = ocr_pdf()
    doc = load("seq2seq.pdf", data, ocr=True)
    assert [u.location for u in doc.units] == [{"page": 1}, {"page": 2, "ocr": True}]
    assert words(PAGE_FACT) in words(doc.units[1].text)
    assert load("seq2seq.pdf", data, ocr=False).units[1].text == ""


def test_without_tesseract_ocr_is_skipped_with_a_reason(monkeypatch, tmp_path, caplog):
    from ingest import ocr, parse_job

    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract on it
    reason = ocr.unavailable_reason()
    assert reason and "tesseract" in reason and "system-deps.sh" in reason
    reader = ocr.OcrReader()
    assert not reader.available and reader.read(text_image("Nothing is read")) == ""
    doc = load("deck.pptx", ocr_deck(), ocr=True)  # ingested as without OCR, no error
    assert doc.units[2].location == {"slide": 3} and doc.units[2].text == "Clipping"
    monkeypatch.setattr(parse_job, "_ocr_warned", False)
    settings = parse_job.ParseSettings(MAX_UNPACKED, ocr=True)
    with caplog.at_level(logging.WARNING, logger="ingest.parse_job"):
        parsers = [parse_job.FileParser(settings, lambda texts: [len(t) for t in texts], tokenizer=None,
                                        isolate=False) for _ in range(3)]
        built = [r.getMessage() for r in caplog.records if "tesseract" in r.getMessage()]
        for parser in parsers:  # pipelines built again and again, each parsing files: said once
            parser.parse("notes.md", b"# LSTM\n\nThe forget gate erases the cell state.")
            parser.parse("deck.pptx", ocr_deck())
    said = [r.getMessage() for r in caplog.records if "tesseract" in r.getMessage()]
    assert built == []  # building a pipeline (every CLI command does) says nothing: only parsing a file does
    assert said == [reason]


def png_header(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header (with a valid checksum) claims width x height pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def test_bad_or_huge_images_read_as_nothing():
    from PIL import Image

    from ingest import ocr

    reader = ocr.OcrReader()
    assert reader.read(b"\x89PNG\r\n\x1a\n not a png") == ""
    assert reader.read(b"") == ""
    big = Image.new("L", (6000, 4000), 255)  # 24 MP: downscaled to the cap before Tesseract sees it
    small = ocr._open(big)
    assert small is not None and small.size[0] * small.size[1] <= ocr.MAX_PIXELS
    for w, h in ((10_000, 7_000), (100_000, 100_000)):  # headers of 70 MP and 10 GP PNGs: never decoded
        bomb = png_header(w, h)
        assert reader.read(bomb) == ""
    assert ocr._open(png_header(10_000, 7_000)) is None
    assert ocr._open(Image.new("L", (20, 400), 255)) is None  # an icon-thin strip is not worth a Tesseract run
    spent = ocr.OcrReader(budget_s=0.0)
    assert not spent.available and spent.read(text_image("over budget")) == ""


def test_corrupt_picture_in_a_deck_still_ingests():
    """The picture's bytes are garbage: the slide keeps its own text, the deck is ingested."""
    data = ocr_deck()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            body = src.read(item)
            dst.writestr(item, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 if item.filename.startswith("ppt/media/") else body)
    doc = load("deck.pptx", out.getvalue(), ocr=True)
    assert doc.units[2].text == "Clipping" and doc.units[2].location == {"slide": 3}
    assert words("Backpropagation through time") in words(doc.units[0].text)


def test_setting_reaches_the_parse_worker(tmp_path, embedder, monkeypatch):
    from app.backends import build_local_store
    from app.settings import Settings

    assert Settings(data_dir=tmp_path / "a").ocr is True
    monkeypatch.setenv("LECTURE_QA_OCR", "false")
    off = Settings(data_dir=tmp_path / "b")
    assert off.ocr is False
    assert build_local_store(off, embedder).pipeline.parser.settings.ocr is False
    on = build_local_store(Settings(data_dir=tmp_path / "c", ocr=True, parse_timeout=40), embedder)
    assert on.pipeline.parser.settings.ocr is True and on.pipeline.parser.settings.ocr_seconds == 20


# -- the service, over HTTP ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if shutil.which("tesseract") is None:
        pytest.skip(NO_TESSERACT)
    data = tmp_path_factory.mktemp("ocr") / "data"
    srv = Server(data)
    srv.wait_ready()
    files = [("files", (p.name, p.read_bytes())) for p in sorted(SAMPLES.iterdir())]
    files += [("files", ("training-rnns.pptx", ocr_deck())), ("files", ("seq2seq-decoding.pdf", ocr_pdf()))]
    r = httpx.post(f"{srv.url}/api/v1/documents", files=files, timeout=180)
    assert r.status_code == 200, r.text
    assert all(f["status"] == "ingested" for f in r.json()["files"]), r.text
    yield srv
    srv.stop()


def cited(body: dict, name: str) -> list[dict]:
    return [c["location"] for c in body["citations"] if c["document"]["name"] == name]


@needs_tesseract
def test_sentence_only_in_a_slide_image_is_answered_with_that_slide(server):
    body = server.ask("What does gradient clipping do when the gradient norm exceeds the threshold?")
    assert body["grounded"] is True, body
    assert {"slide": 3, "ocr": True} in cited(body, "training-rnns.pptx"), body["citations"]
    assert "threshold of five" in words(body["answer"])


@needs_tesseract
def test_sentence_only_in_a_scanned_page_is_answered_with_that_page(server):
    body = server.ask("What does scheduled sampling feed the decoder?")
    assert body["grounded"] is True, body
    assert {"page": 2, "ocr": True} in cited(body, "seq2seq-decoding.pdf"), body["citations"]


def test_ocr_locations_are_labelled():
    from ingest.units import location_label

    assert location_label({"slide": 3, "ocr": True}) == "slide 3 (OCR)"
    assert location_label({"page": 2, "ocr": True}) == "page 2 (OCR)"
    assert location_label({"slide": 3}) == "slide 3"

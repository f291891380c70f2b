"""Issue 19, part 1: no request leaves the box because of a document. A PPTX or DOCX picture linked to an internal
URL or a local file is neither fetched nor drawn, and the slide or page is still previewed (docs/previews.md).

The layers are tested one by one as well as together: the package rewrite (app.previews.sanitize) without
LibreOffice, and LibreOffice on the unrewritten file inside the namespaces, and with only its profile's settings
(what a machine without namespaces keeps)."""

from __future__ import annotations

import http.server
import io
import re
import shutil
import subprocess
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests import hostile
from tests.test_previews import png_size, start, upload, wait_page

HAS_SOFFICE = shutil.which("soffice") is not None
needs_soffice = pytest.mark.skipif(not HAS_SOFFICE, reason="LibreOffice (soffice) is not installed")
MAGENTA = (255, 0, 255)  # what the internal HTTP server answers
GREEN = (0, 255, 0)  # the local file
MAX_UNPACKED = 500 * 2**20


class Listener:
    """An HTTP server on 127.0.0.1 that answers every method with a magenta PNG and notes each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        png = hostile.colour_png(MAGENTA)
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                requests.append((self.command, self.path))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(png)

            do_GET = do_HEAD = do_OPTIONS = do_PROPFIND = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/secret.png"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def local_png(tmp_path: Path) -> Path:
    path = tmp_path / "private" / "green.png"
    path.parent.mkdir()
    path.write_bytes(hostile.colour_png(GREEN))
    return path


def colour_share(png: bytes, rgb: tuple[int, int, int]) -> float:
    """The share of the image's pixels within 60 of `rgb` on every channel."""
    with Image.open(io.BytesIO(png)) as im:
        rgb_im = im.convert("RGB")
        colours = rgb_im.getcolors(rgb_im.width * rgb_im.height) or []
        near = sum(n for n, c in colours if all(abs(a - b) <= 60 for a, b in zip(c, rgb, strict=True)))
        return near / (rgb_im.width * rgb_im.height)


def dark_share(png: bytes) -> float:
    """The share of near-black pixels: the title's text."""
    return colour_share(png, (0, 0, 0))


def pdf_page_png(pdf: Path) -> bytes:
    from app.previews.render import draw_page

    png = draw_page(None, str(pdf), 0, 800, 0)[1]
    assert png is not None
    return png


def hostile_file(kind: str, listener: Listener, local_png: Path) -> bytes:
    targets = [listener.url, local_png.as_uri()]
    return hostile.linked_picture_pptx(targets) if kind == "pptx" else hostile.linked_picture_docx(targets)


# -- the package rewrite, without LibreOffice ---------------------------------------------------------------------
def _parts(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_the_rewrite_takes_out_linked_pictures_and_keeps_hyperlinks_and_content():
    from pptx import Presentation

    from app.previews.sanitize import neutralise

    deck = hostile.linked_picture_pptx(["http://127.0.0.1:9/a.png", "file:///etc/hostname"], title="Kept title")
    prs = Presentation(io.BytesIO(deck))
    run = prs.slides[0].shapes.title.text_frame.paragraphs[0].runs[0]
    run.hyperlink.address = "https://example.org/lecture"  # a hyperlink: stays, it is never fetched
    out = io.BytesIO()
    prs.save(out)
    before = _parts(out.getvalue())
    assert before["ppt/slides/_rels/slide1.xml.rels"].count(b'TargetMode="External"') == 3
    safe, report = neutralise(out.getvalue(), kind="pptx", max_unpacked_bytes=MAX_UNPACKED)
    parts = _parts(safe)
    rels = parts["ppt/slides/_rels/slide1.xml.rels"].decode()
    assert "127.0.0.1" not in rels and "file://" not in rels
    assert re.findall(r'Target="([^"]+)"[^>]*TargetMode="External"', rels) == ["https://example.org/lecture"]
    assert b"r:link=" not in parts["ppt/slides/slide1.xml"] and b"hlinkClick" in parts["ppt/slides/slide1.xml"]
    assert len(report.relationships) == 2
    reopened = Presentation(io.BytesIO(safe))
    assert reopened.slides[0].shapes.title.text == "Kept title"
    # parts with nothing to take out are copied byte for byte
    assert all(parts[n] == before[n] for n in before if n.startswith("ppt/slideLayouts/"))


def test_a_picture_linked_through_a_hyperlink_relationship_loses_its_link():
    """A "hyperlink" relationship is kept, but a picture's r:link naming it would be fetched as the picture."""
    from app.previews.sanitize import neutralise

    deck = hostile.linked_picture_pptx(["http://127.0.0.1:9/a.png"])
    deck = hostile._replace_member(deck, "ppt/slides/_rels/slide1.xml.rels", lambda xml: re.sub(
        rb'Type="[^"]*/image"(?=[^>]*TargetMode="External")',
        b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink"', xml))
    parts = _parts(deck)
    assert b"relationships/hyperlink" in parts["ppt/slides/_rels/slide1.xml.rels"]
    safe, _ = neutralise(deck, kind="pptx", max_unpacked_bytes=MAX_UNPACKED)
    slide = _parts(safe)["ppt/slides/slide1.xml"]
    assert b"r:link=" not in slide and b"<a:blip" in slide


def test_the_rewrite_neutralises_word_fields_templates_alt_chunks_and_vml_sources():
    import docx

    from app.previews.sanitize import neutralise

    data = hostile.linked_picture_docx(["http://127.0.0.1:9/a.png", "file:///etc/hostname"])

    def add_links(xml: bytes) -> bytes:
        return xml.replace(b"<w:sectPr", b'<w:altChunk r:id="rIdChunk"/><w:p><w:r><w:pict><v:shape '
                           b'xmlns:v="urn:schemas-microsoft-com:vml"><v:imagedata src="http://127.0.0.1:9/v.png"/>'
                           b'</v:shape></w:pict></w:r></w:p><w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
                           b'<w:r><w:instrText> DDEAUTO c:\\\\windows\\\\system32\\\\cmd.exe "/c calc"</w:instrText>'
                           b'</w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p><w:sectPr', 1)

    def add_rels(xml: bytes) -> bytes:
        return xml.replace(b"</Relationships>", b'<Relationship Id="rIdChunk" Type="http://schemas.openxmlformats.'
                           b'org/officeDocument/2006/relationships/aFChunk" Target="http://127.0.0.1:9/chunk.html" '
                           b'TargetMode="External"/></Relationships>')

    def add_template(xml: bytes) -> bytes:
        return xml.replace(b"<w:defaultTabStop", b'<w:attachedTemplate r:id="rIdTpl"/><w:defaultTabStop', 1)

    data = hostile._replace_member(data, "word/document.xml", add_links)
    data = hostile._replace_member(data, "word/_rels/document.xml.rels", add_rels)
    data = hostile._replace_member(data, "word/settings.xml", add_template)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        settings_rels = "word/_rels/settings.xml.rels" in zf.namelist()
    assert not settings_rels
    rels = (b'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            b'2006/relationships"><Relationship Id="rIdTpl" Type="http://schemas.openxmlformats.org/officeDocument/'
            b'2006/relationships/attachedTemplate" Target="file:///srv/template.dotm" TargetMode="External"/>'
            b"</Relationships>")
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("word/_rels/settings.xml.rels", rels)
    data = buf.getvalue()

    safe, report = neutralise(data, kind="docx", max_unpacked_bytes=MAX_UNPACKED)
    parts = _parts(safe)
    body = parts["word/document.xml"]
    for gone in (b"INCLUDEPICTURE", b"INCLUDE</w:instrText>", b"DDEAUTO", b"altChunk", b"r:link=",
                 b"127.0.0.1"):
        assert gone not in body, gone
    assert b"attachedTemplate" not in parts["word/settings.xml"]
    assert b"External" not in parts["word/_rels/settings.xml.rels"]
    assert b"External" not in parts["word/_rels/document.xml.rels"]
    assert len(report.fields) == 5  # two INCLUDEPICTURE per target, and the DDEAUTO
    text = [p.text for p in docx.Document(io.BytesIO(safe)).paragraphs]
    assert "Linked pictures" in text and "FIELDS-BELOW" in text
    assert text.count("simple") == 2 and text.count("complex") == 2  # the fields' cached results stay


def test_a_package_that_cannot_be_checked_is_not_converted():
    from app.previews.sanitize import UnsafePackage, neutralise
    from tests.builders import make_zip_bomb

    with pytest.raises(UnsafePackage, match="zip bomb"):
        neutralise(make_zip_bomb(), kind="docx", max_unpacked_bytes=MAX_UNPACKED)
    broken = hostile._replace_member(hostile.linked_picture_docx(["http://x/y.png"]), "word/document.xml",
                                     lambda xml: xml.replace(b"</w:body>", b"</w:bod>"))
    with pytest.raises(UnsafePackage, match="not well-formed"):
        neutralise(broken, kind="docx", max_unpacked_bytes=MAX_UNPACKED)


# -- LibreOffice, end to end: the page route of a real server ------------------------------------------------------
@needs_soffice
@pytest.mark.parametrize("kind", ["pptx", "docx"])
def test_a_linked_picture_is_not_fetched_nor_drawn_and_the_page_is_previewed(tmp_path, listener, local_png, kind):
    for client in start(tmp_path):
        doc_id = upload(client, f"linked.{kind}", hostile_file(kind, listener, local_png))
        full = wait_page(client, doc_id, 1, "full")
        assert max(png_size(full)) == 1600  # the slide or page still has its preview
        assert dark_share(full.content) > 0.001  # with its title drawn
        thumb = wait_page(client, doc_id, 1, "thumb")
        for image in (full.content, thumb.content):
            assert colour_share(image, MAGENTA) == 0
            assert colour_share(image, GREEN) == 0
    assert listener.requests == []


# -- each LibreOffice layer alone, on the file as it came --------------------------------------------------------
def _convert_raw(src: Path, kind: str, *, namespaces: bool, data_dir: Path) -> Path:
    """LibreOffice on `src` as it came (no rewrite), with the sandbox's profile, in the namespaces or not."""
    from app.previews.convert import FILTERS
    from app.previews.sandbox import wrap, write_profile

    soffice = shutil.which("soffice")
    assert soffice is not None
    with tempfile.TemporaryDirectory(prefix="lecture-qa-test-soffice-") as work_name:
        work = Path(work_name)
        (work / "in").mkdir()
        copy = work / "in" / f"document.{kind}"
        shutil.copy(src, copy)
        write_profile(work / "profile")
        cmd = [soffice, f"-env:UserInstallation={(work / 'profile').as_uri()}", "--headless", "--norestore",
               "--convert-to", FILTERS[kind], "--outdir", str(work / "out"), str(copy)]
        if namespaces:
            cmd = wrap(cmd, work=work, data_dir=data_dir, keep=[Path(soffice).resolve()])
        subprocess.run(cmd, env={"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work)}, timeout=180,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out = src.with_suffix(".pdf")
        shutil.copy(work / "out" / "document.pdf", out)
        return out


@needs_soffice
def test_inside_the_namespaces_the_unrewritten_file_reaches_neither_the_listener_nor_local_files(
        tmp_path, listener, local_png):
    from app.previews.sandbox import layers

    if layers() != ["net", "mount"]:
        pytest.skip(f"this kernel or user allows only these namespaces: {layers() or 'none'}")
    src = tmp_path / "linked.docx"
    src.write_bytes(hostile_file("docx", listener, local_png))
    image = pdf_page_png(_convert_raw(src, "docx", namespaces=True, data_dir=tmp_path / "data"))
    assert listener.requests == []
    assert colour_share(image, MAGENTA) == 0
    assert colour_share(image, GREEN) == 0  # the PNG is under /tmp, covered by an empty tmpfs in there
    assert dark_share(image) > 0.001


@needs_soffice
def test_without_namespaces_the_profile_alone_keeps_the_listener_unreached(tmp_path, listener, local_png):
    src = tmp_path / "linked.pptx"
    src.write_bytes(hostile_file("pptx", listener, local_png))
    image = pdf_page_png(_convert_raw(src, "pptx", namespaces=False, data_dir=tmp_path / "data"))
    assert listener.requests == []  # every protocol goes to a proxy where nothing listens
    assert colour_share(image, MAGENTA) == 0
    assert dark_share(image) > 0.001

"""Hostile files (issue 10), made deterministically (fixed seed) and small on disk: bombs that are cheap to build
and expensive to parse naively. Each builder is cached, so a test session builds each one once.

Before: the issue's probe of the service (server RSS baseline ~450 MB). After: one ingest each through the real
pipeline with the default limits, into a library holding examples/lectures (2-core dev machine, shared; RSS of the
process and its parse worker, sampled every 0.1 s):

| builder | what it is | before | after |
|---|---|---|---|
| docx_empty_paragraphs | 1.65M empty <w:p/> in a 49 KB DOCX | never returned | skipped in 0.2 s, +3 MB |
| one_line_html | 10 MB of words on one line | > 18 min, 6.1 GB | skipped in 2.3 s, +173 MB |
| nested_html | 100,000 nested <div> | - | skipped in 0.1 s, +0 MB |
| random_bytes | 1 MB of PRNG bytes named .md/.txt/.html | 4,426 noise chunks, 9.6 min, 6.3 GB | skipped in 0.02 s |
| repetitive_text | one paragraph repeated; 50 MiB | 441 s, 6.9 GB, then 29 GiB | skipped in 1.1 s, +90 MB |
| pdf_flate_bomb | 1 MB PDF, page stream inflates to 1 GiB | +2 GB RSS | stopped at the 1 GiB cap: 2.4 s, +872 MB |
| pptx_element_bomb | 3M empty shapes on one slide, 59 KB | 55 s, +1 GB | skipped in 0.8 s (+ a worker start), +79 MB |
| utf32_text | UTF-32 LE/BE with a BOM | decoded as UTF-16, NULs | ingested, decoded right |

Below the limits, the stages are linear: chunking the repetitive text takes 22.6 s / 38.1 s / 84.0 s for 5 / 10 /
20 MiB (375 / 457 / 616 MB peak) and grouping its chunks under 1 s; the code before took 30.6 s to chunk 5 MiB and
139.8 s and 6.3 GB to group its chunks.
"""

from __future__ import annotations

import codecs
import functools
import io
import random
import re
import zipfile
import zlib

from tests.builders import make_docx, make_pptx

SEED = 10  # the issue number
MiB = 2**20


def _replace_member(data: bytes, member: str, edit) -> bytes:
    """A copy of the zip `data` with `member` rewritten by edit(bytes) -> bytes, deflated like the rest."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            dst.writestr(info.filename, edit(body) if info.filename == member else body,
                         compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return out.getvalue()


@functools.cache
def docx_empty_paragraphs(count: int = 1_650_000) -> bytes:
    """A real DOCX (python-docx) whose body gets `count` empty paragraphs before its closing section."""
    base = make_docx([("h1", "Gates"), ("p", "The forget gate erases memory.")])

    def stuff(xml: bytes) -> bytes:
        return xml.replace(b"<w:sectPr", b"<w:p/>" * count + b"<w:sectPr", 1)

    return _replace_member(base, "word/document.xml", stuff)


@functools.cache
def pptx_element_bomb(shapes: int = 3_000_000) -> bytes:
    """A real PPTX (python-pptx) whose first slide's shape tree gets `shapes` empty shapes."""
    base = make_pptx([{"title": "Long Short-Term Memory", "bullets": ["Sequence models lecture 3"]}])

    def stuff(xml: bytes) -> bytes:
        return re.sub(rb"(<p:spTree>|<p:spTree [^>]*>)", lambda m: m.group(1) + b"<p:sp/>" * shapes, xml, count=1)

    return _replace_member(base, "ppt/slides/slide1.xml", stuff)


def _words(rng: random.Random, count: int) -> list[str]:
    vocab = ["gate", "state", "cell", "recurrent", "gradient", "vanishing", "attention", "encoder", "decoder",
             "sequence", "hidden", "weight", "softmax", "token", "layer", "memory", "forget", "input", "output",
             "time", "step", "network", "loss", "backpropagation", "through", "the", "of", "a", "and", "to"]
    return [rng.choice(vocab) for _ in range(count)]


@functools.cache
def one_line_html(size: int = 10 * MiB) -> bytes:
    """A page whose body is one paragraph on one line: `size` bytes of words, no sentence ends, no newline."""
    rng = random.Random(SEED)
    head = b"<!DOCTYPE html><html><head><title>One line</title></head><body><p>"
    tail = b"</p></body></html>"
    words: list[bytes] = []
    total = len(head) + len(tail)
    while total < size:
        chunk = " ".join(_words(rng, 10_000)).encode() + b" "
        words.append(chunk)
        total += len(chunk)
    return (head + b"".join(words) + tail)[: size - len(tail)] + tail


@functools.cache
def nested_html(depth: int = 100_000) -> bytes:
    return (b"<html><body>" + b"<div>" * depth + b"deep text about attention heads" + b"</div>" * depth
            + b"</body></html>")


@functools.cache
def random_bytes(size: int = MiB) -> bytes:
    return random.Random(SEED).randbytes(size)


@functools.cache
def repetitive_text(size: int) -> bytes:
    """One lecture paragraph repeated (blank line between copies) to `size` bytes."""
    para = (b"The forget gate of an LSTM reads the previous hidden state and the current input, and its sigmoid "
            b"output decides how much of each entry of the cell state to keep. Values near zero erase, values near "
            b"one keep; the input gate then writes new candidate values.\n\n")
    return (para * (size // len(para) + 1))[:size]


@functools.cache
def pdf_flate_bomb(inflated: int = 1024 * MiB) -> bytes:
    """A one-page PDF whose content stream is `inflated` bytes of spaces, deflated (about 1 MB per GiB).

    Built in a second, not deflated in ten: one MiB of spaces is deflated once after a full flush (which resets
    the compressor, so every copy compresses to the same bytes) and repeated, inside a zlib header and trailer."""
    block = b" " * MiB
    text = b"\nBT /F1 12 Tf 72 720 Td (Bomb) Tj ET\n"
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    end = raw.compress(text) + raw.flush()
    adler = 1
    for _ in range(inflated // MiB):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(text, adler)
    stream = b"\x78\xda" + body * (inflated // MiB) + end + adler.to_bytes(4, "big")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" /Filter /FlateDecode >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


UTF32_TEXT = ("Café notes on the naïve RNN — its gradient vanishes over long sequences.\n\n"
              "The LSTM's forget gate keeps the cell state for many steps.")


def utf32_text(byteorder: str) -> bytes:
    """UTF-32 with its BOM, little- or big-endian (the LE BOM starts with the UTF-16 LE one)."""
    if byteorder == "le":
        return codecs.BOM_UTF32_LE + UTF32_TEXT.encode("utf-32-le")
    return codecs.BOM_UTF32_BE + UTF32_TEXT.encode("utf-32-be")


MARKDOWN_AS_TEXT = """# Lecture 5 - Attention

Dr Example, Data Science

## Recap: RNN encoders

- The encoder reads the source sentence one token at a time.
- Its final hidden state is the context vector.

## Attention for every time step

The decoder scores every encoder state against its own state and averages them with softmax weights.

```python
weights = softmax(scores)
```

## Transformers

Self-attention relates every position of a sequence to every other one, with no recurrence.
"""


# -- documents that link out (issue 19): LibreOffice fetched such pictures and drew them into previews ---------
def colour_png(rgb: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> bytes:
    """A PNG of one flat colour: the colour is how a test finds it in a drawn page."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, format="PNG")
    return out.getvalue()


LINKED_TEXT = ("The pictures beside this text are linked, not embedded: the gated recurrent unit merges the cell "
               "state and the hidden state, and its update gate decides how much of the old state is kept.")


def _link_pictures(data: bytes, part: str, targets: list[str]) -> bytes:
    """The package `data` with the pictures of `part` (a:blip r:embed, in order) turned into links to `targets`:
    `r:embed` becomes `r:link` and the relationship gets TargetMode="External", as "Insert > Link to file" makes."""
    rels = part.rsplit("/", 1)[0] + "/_rels/" + part.rsplit("/", 1)[1] + ".rels"
    ids = re.findall(rb'r:embed="(rId[0-9]+)"', zipfile.ZipFile(io.BytesIO(data)).read(part))
    assert len(ids) >= len(targets), ids
    chosen = dict(zip(ids, targets, strict=False))

    def relink(xml: bytes) -> bytes:
        for rid in chosen:
            xml = xml.replace(b'r:embed="' + rid + b'"', b'r:link="' + rid + b'"')
        return xml

    def external(xml: bytes) -> bytes:
        for rid, target in chosen.items():
            xml = re.sub(rb'(<Relationship [^>]*Id="' + rid + rb'"[^>]*?)Target="[^"]*"',
                         lambda m, t=target: m.group(1) + b'Target="' + t.encode() + b'" TargetMode="External"',
                         xml)
        return xml

    return _replace_member(_replace_member(data, part, relink), rels, external)


def linked_picture_pptx(targets: list[str], title: str = "Linked pictures") -> bytes:
    """A one-slide deck (python-pptx) with a title and one picture per target, each linked (not embedded)."""
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[5])
    slide.shapes.title.text = title
    box = slide.shapes.add_textbox(Inches(0.5), Inches(5.5), Inches(9), Inches(1))
    box.text_frame.text = LINKED_TEXT
    for i, _ in enumerate(targets):
        slide.shapes.add_picture(io.BytesIO(colour_png((200, 200, 200 - i))), Inches(0.5 + 4.5 * i), Inches(2),
                                 width=Inches(4))
    out = io.BytesIO()
    prs.save(out)
    return _link_pictures(out.getvalue(), "ppt/slides/slide1.xml", targets)


def linked_picture_docx(targets: list[str], title: str = "Linked pictures") -> bytes:
    """A DOCX (python-docx) with a heading and one picture per target, each linked (not embedded), plus an
    INCLUDEPICTURE field (simple and complex) for each target: every way Word links a picture."""
    import docx
    from docx.shared import Inches

    d = docx.Document()
    d.add_heading(title, 1)
    d.add_paragraph(LINKED_TEXT)
    for i, _ in enumerate(targets):
        d.add_picture(io.BytesIO(colour_png((200, 200, 200 - i))), width=Inches(3))
    d.add_paragraph("FIELDS-BELOW")
    out = io.BytesIO()
    d.save(out)
    linked = _link_pictures(out.getvalue(), "word/document.xml", targets)

    def fields(xml: bytes) -> bytes:
        runs = b"".join(
            b'<w:p><w:fldSimple w:instr=" INCLUDEPICTURE &quot;' + t.encode() + b'&quot; \\d "><w:r><w:t>simple'
            b'</w:t></w:r></w:fldSimple></w:p>'
            b'<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText xml:space="preserve"> INCLUDE'
            b'</w:instrText></w:r><w:r><w:instrText xml:space="preserve">PICTURE &quot;' + t.encode() +
            b'&quot; \\d </w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>complex'
            b'</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
            for t in targets)
        return xml.replace(b"<w:sectPr", runs + b"<w:sectPr", 1)

    return _replace_member(linked, "word/document.xml", fields)


# -- probes for the parse-worker limit tests (run inside a worker: module-level, light imports) -----------------
def probe_sleep(state: object, seconds: float) -> str:
    import time

    time.sleep(seconds)
    return "woke"


def probe_allocate(state: object, mib: int) -> int:
    return len(bytearray(mib * MiB))


def probe_pid(state: object) -> int:
    import os

    return os.getpid()


def gated_draw(state: object, pdf: str, index: int, long_edge: int, max_pixels: int) -> object:
    """The real page drawing (app.previews.render.draw_page), held at a gate a test controls: in a drawing worker,
    it writes `<data_dir>/gate/started-<index>` and waits until `<data_dir>/gate/open` exists. The gate is the
    data dir's (the original is `<data_dir>/originals/<name>`, a converted PDF `<data_dir>/previews/<name>/...`)."""
    import time
    from pathlib import Path

    from app.previews.render import draw_page

    data_dir = next(p.parent for p in Path(pdf).parents if p.name in ("originals", "previews"))
    gate = data_dir / "gate"
    (gate / f"started-{index}").touch()
    while not (gate / "open").exists():
        time.sleep(0.02)
    return draw_page(state, pdf, index, long_edge, max_pixels)

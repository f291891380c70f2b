"""Real lecture files built with the libraries that users' tools produce them with."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path


def make_pdf(pages: list[str], path: Path | None = None, title: str | None = None) -> bytes:
    from reportlab.lib.pagesizes import landscape, letter
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=landscape(letter))
    if title:
        c.setTitle(title)
    for text in pages:
        y = 560
        for line in text.split("\n"):
            c.drawString(40, y, line)
            y -= 18
        c.showPage()
    c.save()
    data = buf.getvalue()
    if path:
        path.write_bytes(data)
    return data


def encrypt_pdf(data: bytes, password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(data)).pages:
        writer.add_page(page)
    writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_pptx(slides: list[dict], path: Path | None = None, title: str | None = None) -> bytes:
    """slides: [{"title": str, "bullets": [..], "notes": str?, "table": [[..]]?, "group": [..]?, "image": bytes?}]
    ("image": a picture, e.g. text_image(...), across the slide below its title)"""
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    for spec in slides:
        layout = prs.slide_layouts[1] if spec.get("bullets") else prs.slide_layouts[5]
        slide = prs.slides.add_slide(layout)
        slide.shapes.title.text = spec.get("title", "")
        if spec.get("bullets"):
            tf = slide.placeholders[1].text_frame
            tf.text = spec["bullets"][0]
            for b in spec["bullets"][1:]:
                tf.add_paragraph().text = b
        if spec.get("table"):
            rows = spec["table"]
            tbl = slide.shapes.add_table(len(rows), len(rows[0]), Inches(0.5), Inches(4), Inches(8), Inches(1)).table
            for r, row in enumerate(rows):
                for ci, val in enumerate(row):
                    tbl.cell(r, ci).text = val
        if spec.get("group"):
            group = slide.shapes.add_group_shape()
            for i, text in enumerate(spec["group"]):
                box = group.shapes.add_textbox(Inches(1 + i), Inches(5.5), Inches(1), Inches(0.5))
                box.text_frame.text = text
        if spec.get("image"):
            slide.shapes.add_picture(io.BytesIO(spec["image"]), Inches(0.5), Inches(1.6), width=Inches(9))
        if spec.get("notes"):
            slide.notes_slide.notes_text_frame.text = spec["notes"]
    if title:
        prs.core_properties.title = title
    buf = io.BytesIO()
    prs.save(buf)
    data = buf.getvalue()
    if path:
        path.write_bytes(data)
    return data


def text_image(text: str, *, width: int = 1800, size: int = 44) -> bytes:
    """A PNG of `text` (black DejaVu Sans on white, wrapped to `width` px): words that exist only as pixels."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.truetype(
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
    except OSError:  # no Debian fonts-dejavu-core: Pillow's own font
        font = ImageFont.load_default(size=size)
    lines = textwrap.wrap(text, width=int(width / (size * 0.55)))
    img = Image.new("RGB", (width, (len(lines) + 1) * int(size * 1.5)), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((size // 2, size // 2 + i * int(size * 1.5)), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_docx(blocks: list[tuple[str, object]], path: Path | None = None, title: str | None = None) -> bytes:
    """blocks: ("h1"|"h2"|"p", text) or ("table", [[..], ..])."""
    import docx

    d = docx.Document()
    if title:
        d.core_properties.title = title
    for kind, value in blocks:
        if kind.startswith("h"):
            d.add_heading(str(value), int(kind[1:]))
        elif kind == "p":
            d.add_paragraph(str(value))
        elif kind == "table":
            rows = value  # type: ignore[assignment]
            t = d.add_table(rows=len(rows), cols=len(rows[0]))  # type: ignore[arg-type]
            for r, row in enumerate(rows):  # type: ignore[arg-type]
                for c, val in enumerate(row):
                    t.cell(r, c).text = val
    buf = io.BytesIO()
    d.save(buf)
    data = buf.getvalue()
    if path:
        path.write_bytes(data)
    return data


def make_zip_bomb(member: str = "word/document.xml", size: int = 600 * 2**20) -> bytes:
    """A small .docx-shaped zip whose member inflates to `size` bytes of zeros."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open(member, "w", force_zip64=True) as fh:
            chunk = b"\0" * 2**20
            for _ in range(size // 2**20):
                fh.write(chunk)
    return buf.getvalue()


LSTM_SLIDES = [
    {"title": "Long Short-Term Memory", "bullets": ["Sequence models lecture 3"]},
    {"title": "The forget gate",
     "bullets": ["The forget gate decides which parts of the cell state to erase.",
                 "Its sigmoid output near 0 forgets and near 1 keeps each entry."],
     "notes": "Mention the gender-of-the-subject example."},
    {"title": "GRU vs LSTM", "bullets": ["The GRU merges the cell and hidden state."],
     "table": [["Model", "Gates"], ["LSTM", "forget input output"], ["GRU", "update reset"]],
     "group": ["grouped-alpha", "grouped-beta"]},
]

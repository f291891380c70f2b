"""Each format parses into units with the right text and locations; bad files fail with a clear reason."""

from __future__ import annotations

import pytest

from ingest.errors import FileTooLarge, IngestError, UnsupportedFileType
from ingest.loaders import load_document
from tests.builders import LSTM_SLIDES, encrypt_pdf, make_docx, make_pdf, make_pptx, make_zip_bomb

LIMIT = 50 * 2**20


def load(name: str, data: bytes):
    return load_document(name, data, max_unpacked_bytes=LIMIT)


def test_pdf_one_unit_per_page_with_separated_words():
    data = make_pdf(["Recurrent networks\nThe brown dog ran home.", "Page two talks about LSTM gates."],
                    title="RNN deck")
    doc = load("deck.pdf", data)
    assert doc.kind == "pdf" and doc.title == "RNN deck"
    assert [u.location for u in doc.units] == [{"page": 1}, {"page": 2}]
    assert "The brown dog ran home." in doc.units[0].text
    assert doc.units[0].title == "Recurrent networks"


def test_pptx_slides_with_groups_tables_and_notes():
    doc = load("lstm.pptx", make_pptx(LSTM_SLIDES, title="LSTM lecture"))
    assert doc.kind == "pptx" and doc.title == "LSTM lecture"
    assert [u.location for u in doc.units] == [{"slide": 1}, {"slide": 2}, {"slide": 3}]
    forget = doc.units[1]
    assert forget.title == "The forget gate"
    assert "decides which parts of the cell state to erase" in forget.text
    assert "Notes: Mention the gender-of-the-subject example." in forget.text
    third = doc.units[2].text
    assert "LSTM | forget input output" in third  # table rows
    assert "grouped-alpha" in third and "grouped-beta" in third  # grouped shapes


def test_docx_heading_sections_and_tables():
    data = make_docx([("h1", "Gates"), ("p", "The forget gate erases memory."), ("h2", "GRU"),
                      ("p", "The update gate blends states."), ("table", [["Model", "Gates"], ["GRU", "2"]])],
                     title="Gate notes")
    doc = load("notes.docx", data)
    assert doc.title == "Gate notes"
    sections = [u.location["section"] for u in doc.units]
    assert sections == ["Gates", "Gates > GRU"]
    assert "The update gate blends states." in doc.units[1].text
    assert "Model | Gates" in doc.units[1].text and "GRU | 2" in doc.units[1].text


def test_markdown_sections_front_matter_code_and_math():
    md = (
        "---\ntitle: Attention notes\nlayout: post\n---\n"
        "# Attention\nIntro text that is\nhard wrapped here.\n\n"
        "## Scores\nThe score is $e = s^T h$.\n\n$$\\alpha = \\mathrm{softmax}(e)$$\n\n"
        "```python\n# not a heading\nx = 1\n\n\ny = 2\n```\n"
        "<video src='a.mp4'>fallback</video>\n[link text](http://example.com)\n"
    )
    doc = load("attn.md", md.encode())
    assert doc.title == "Attention notes"
    assert "layout: post" not in "".join(u.text for u in doc.units)
    assert [u.location["section"] for u in doc.units] == ["Attention", "Attention > Scores"]
    assert "Intro text that is hard wrapped here." in doc.units[0].text
    scores = doc.units[1].text
    assert "```python\n# not a heading\nx = 1\n\n\ny = 2\n```" in scores
    assert "$$\\alpha = \\mathrm{softmax}(e)$$" in scores
    assert "link text" in scores and "http://example.com" not in scores and "<video" not in scores


def test_html_main_text_without_scripts_styles_navigation():
    html = (
        "<html><head><title>LSTM post</title><style>p{color:red}</style><script>var x='SECRET';</script></head>"
        "<body><nav>Home | About</nav><article><h1>LSTM</h1><p>Cells keep state.</p><h2>Gates</h2>"
        "<p>The forget gate &amp; the input gate.</p></article><footer>copyright</footer></body></html>"
    )
    doc = load("post.html", html.encode())
    text = "\n".join(u.text for u in doc.units)
    assert doc.title == "LSTM post"
    assert "Cells keep state." in text and "The forget gate & the input gate." in text
    for junk in ("SECRET", "color:red", "Home | About", "copyright"):
        assert junk not in text
    assert doc.units[-1].location == {"section": "LSTM > Gates"}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"])
def test_text_in_common_encodings(encoding):
    dash = "-" if encoding == "latin-1" else "—"
    text = f"Café notes: the naïve RNN {dash} its gradient vanishes.\n\nSecond paragraph."
    doc = load("notes.txt", text.encode(encoding))
    assert "naïve RNN" in doc.units[0].text
    assert "Second paragraph." in doc.units[0].text


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.pdf", b"", "empty"),
        ("blank.txt", b"   \n\n  ", "empty"),
        ("page.pdf", b"<!DOCTYPE html><html><body>Not found</body></html>", "HTML"),
        ("fake.pptx", b"<html><body>login</body></html>", "HTML"),
        ("old.docx", b"\xd0\xcf\x11\xe0" + b"\0" * 600, "old binary Office"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", "damaged"),
        ("binary.txt", b"PK\x03\x04" + b"\0" * 100, "binary"),
    ],
)
def test_bad_files_fail_with_reason(name, data, expected):
    with pytest.raises(IngestError, match=expected):
        load(name, data)


def test_truncated_office_files():
    good = make_pptx(LSTM_SLIDES)
    with pytest.raises(IngestError, match="truncated|not a valid zip"):
        load("cut.pptx", good[: len(good) // 2])


def test_encrypted_pdf():
    data = encrypt_pdf(make_pdf(["secret lecture"]))
    with pytest.raises(IngestError, match="encrypted"):
        load("locked.pdf", data)


def test_zip_bomb_refused_before_inflating():
    bomb = make_zip_bomb(size=600 * 2**20)
    assert len(bomb) < 2 * 2**20
    with pytest.raises(FileTooLarge, match="zip bomb"):
        load("bomb.docx", bomb)


def test_unsupported_extension():
    with pytest.raises(UnsupportedFileType, match="unsupported file type '.exe'"):
        load("setup.exe", b"MZ...")


def test_scanned_pdf_without_text():
    with pytest.raises(IngestError, match="no text could be extracted"):
        load("scan.pdf", make_pdf(["", ""]))

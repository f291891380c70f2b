"""The web page in a real browser (Debian's Chromium driven by Playwright) against a real server."""

from __future__ import annotations

import io
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.builders import make_pdf, make_pptx
from tests.conftest import ROOT, SAMPLES
from tests.server import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
OUT = ROOT / "test-output"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _server(tmp_path_factory, name: str, env: dict[str, str] | None = None, upload_key: str | None = None):
    srv = Server(tmp_path_factory.mktemp(name) / "data", env=env)
    srv.wait_ready()
    files = [("files", (p.name, p.read_bytes())) for p in sorted(SAMPLES.iterdir())]
    headers = {"Authorization": f"Bearer {upload_key}"} if upload_key else {}
    assert httpx.post(f"{srv.url}/api/v1/documents", files=files, headers=headers, timeout=120).status_code == 200
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = _server(tmp_path_factory, "web")
    yield srv
    srv.stop()


@contextmanager
def open_page(browser, srv, width: int = 1280, height: int = 900, **context_args):
    """The page at srv in a fresh context; on the way out, asserts that no request left the origin."""
    context = browser.new_context(viewport={"width": width, "height": height}, **context_args)
    pg = context.new_page()
    outside: list[str] = []
    # blob: URLs of this origin are the previews the page fetched (with the API key) and holds in memory
    local = (srv.url + "/", f"blob:{srv.url}/")
    pg.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
    pg.goto(srv.url + "/")
    pg.wait_for_selector("#documents tbody tr")
    try:
        yield pg
    finally:
        context.close()
    assert not outside, f"requests left the machine: {outside}"


@pytest.fixture()
def page(browser, server):
    with open_page(browser, server) as pg:
        yield pg


def wait_js(pg, expression: str, timeout_ms: int = 30_000) -> None:
    """Polls a JavaScript expression from here: the page's Content-Security-Policy (no eval) stops Playwright's
    in-page wait_for_function polling."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not pg.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for: {expression}"
        pg.wait_for_timeout(100)


def ask(page, question: str, expect: str = ".turn.grounded, .turn.not-grounded"):
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.wait_for_selector(f"#conversation > .turn:first-child:is({expect})", timeout=30_000)
    return page.locator("#conversation > .turn").first


def test_streamed_grounded_answer_with_working_citations(page):
    turn = ask(page, "What does the forget gate in an LSTM do?", ".grounded")
    answer = turn.locator(".answer")
    assert "forget gate" in answer.inner_text()
    links = answer.locator("a.cite")
    assert links.count() >= 1
    first = links.first
    target = first.get_attribute("href")
    first.click()
    assert page.url.endswith(target)
    source = page.locator(target)
    assert source.is_visible()
    assert "03-lstm-and-gru.pptx, slide" in source.locator(".source-where").inner_text()
    assert source.locator("mark").count() >= 1  # the cited sentences are highlighted
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "web-answer.png"), full_page=True)


def test_off_topic_question_says_not_covered(page):
    turn = ask(page, "How do Mamba state space models compare with LSTMs?", ".not-grounded")
    assert turn.locator(".not-covered").is_visible()
    assert "does not cover" in turn.locator(".not-covered").inner_text()
    assert turn.locator(".sources li").count() >= 1
    assert turn.locator(".sources-title").inner_text() == "Closest passages"


def test_follow_up_and_new_conversation(page):
    ask(page, "How does the GRU work?", ".grounded")
    turn = ask(page, "and what does its reset gate do?", ".grounded")
    assert "reset gate" in turn.locator(".answer").inner_text()
    assert page.locator("#turns").inner_text() == "2 questions in this conversation"
    page.click("#new-conversation")
    assert page.locator("#conversation > .turn").count() == 0
    assert page.locator("#turns").inner_text() == ""


def test_upload_pptx_answer_from_it_then_delete(page, tmp_path):
    deck = tmp_path / "echo-state.pptx"
    make_pptx([{"title": "Echo state networks",
                "bullets": ["An echo state network keeps a fixed random reservoir of recurrent units.",
                            "Only the linear readout layer of an echo state network is trained."]}], path=deck)
    page.set_input_files("#file-input", str(deck))
    page.wait_for_selector("#uploads li[data-status='ingested']", timeout=60_000)
    page.wait_for_selector("#documents td.name:text-is('echo-state.pptx')")
    turn = ask(page, "Which part of an echo state network is trained?", ".grounded")
    assert "echo-state.pptx, slide 1" in turn.locator(".sources li").first.inner_text()
    assert "readout" in turn.locator(".answer").inner_text()
    page.once("dialog", lambda d: d.accept())
    page.click("button[aria-label='Delete echo-state.pptx']")
    page.wait_for_selector("#documents td.name:text-is('echo-state.pptx')", state="detached")
    assert "Deleted echo-state.pptx" in page.locator("#status").inner_text()


def test_unsupported_upload_reports_reason(page, tmp_path):
    bad = tmp_path / "notes.exe"
    bad.write_bytes(b"MZ")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#uploads li .skip")
    assert "not supported" in page.locator("#uploads li").first.inner_text()


def test_phone_width_has_no_horizontal_scroll(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    pg = context.new_page()
    pg.goto(server.url + "/")
    pg.wait_for_selector("#documents tbody tr")
    assert pg.evaluate("document.scrollingElement.scrollWidth") <= 390
    assert pg.locator("label[for=question]").is_visible()
    context.close()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    env = {"LECTURE_QA_API_KEYS": "student-key,admin-key", "LECTURE_QA_ADMIN_KEYS": "admin-key"}
    srv = _server(tmp_path_factory, "web-keys", env=env, upload_key="admin-key")
    yield srv
    srv.stop()


def test_api_key_flow(browser, keyed_server):
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(keyed_server.url + "/")
    pg.wait_for_selector("#key-panel:not([hidden])")
    assert "needs a valid API key" in pg.locator("#status").inner_text()
    pg.fill("#api-key", "wrong-key")
    pg.click("#key-form button[type=submit]")
    wait_js(pg, "document.querySelector('#status').textContent.includes('valid API key')")
    pg.fill("#api-key", "student-key")
    pg.click("#key-form button[type=submit]")
    pg.wait_for_selector("#documents tbody tr")
    assert pg.locator("#upload-area").is_hidden() and pg.locator("#read-only-note").is_visible()
    assert pg.locator("button.danger").count() == 0
    assert pg.evaluate("sessionStorage.getItem('lecture-qa.api-key')") == "student-key"
    turn = ask(pg, "What is truncated BPTT?", ".grounded")
    assert turn.locator("a.cite").count() >= 1
    pg.fill("#api-key", "admin-key")
    pg.click("#key-form button[type=submit]")
    pg.wait_for_selector("#upload-area:not([hidden])")
    pg.wait_for_selector("button.danger")  # the table re-renders with delete buttons for an admin key
    context.close()


def test_page_is_served_without_outside_references():
    html = (ROOT / "app" / "web" / "index.html").read_text()
    for asset in ("index.html", "app.js", "style.css"):
        text = (ROOT / "app" / "web" / asset).read_text()
        assert "http://" not in text and "https://" not in text, asset
    assert 'src="/static/app.js"' in html and 'href="/static/style.css"' in html
    assert Path(ROOT / "app" / "web").is_dir()


# ---------- issue 14: rendered Markdown and math, safe document text, slide and page previews, layout ----------

PREVIEW_ROUTE = ROOT / "app" / "api" / "routes" / "pages.py"
SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
LONG_NAME = "harvard-cs109b-2021_lecture24_attention-and-transformers_seating-plan.txt"
MATH_NOTES = """# Gradient clipping notes

## Clipping by norm

Gradient clipping by norm rescales the whole gradient when its norm passes a threshold $\\tau$:

$$
g \\leftarrow \\frac{\\tau}{\\lVert g \\rVert} \\, g \\quad \\text{if } \\lVert g \\rVert > \\tau
$$

- **Clipping by norm** keeps the direction of the gradient $g$ and of every $W_h$ update.
- **Clipping by value** cuts each entry of $g$ to the range $[-c, c]$ and can change the direction.

Source:
"""
INJECTION = ("Zorblax filter notes\n\n"
             "The zorblax filter keeps <img src=x onerror=\"window.__pwned=1\"> and "
             "<script>window.__pwned=2</script> in its log as plain text.\n"
             "A zorblax link [open it](javascript:window.__pwned=3) is not followed.\n")
GLIMMER = ("Notes on the Glimmer cell\n\n"
           "The Glimmer cell is a recurrent unit that mixes the previous hidden\n"
           "state \\(h_{t-1}\\) with the current input \\(x_t\\) through a single gate\n"
           "\\(g_t\\), which decides how much of the old state survives each step.\n\n"
           "Its update is written\n"
           "\\[ h_t = g_t \\odot h_{t-1} + (1 - g_t) \\odot x_t \\]\n"
           "so the gate interpolates between the memory and the input.\n")
PDF_DECK = [
    "Beam search decoding\nBeam search keeps the k most probable partial translations at every decoding step.\n"
    "A beam width of one is greedy decoding.",
    "Length normalisation\nBeam search divides each hypothesis score by its length to stop it favouring short "
    "outputs.\nWithout length normalisation the decoder prefers to stop early.",
]


@pytest.fixture(scope="module")
def rich_server(tmp_path_factory):
    """A server with the files these tests need (a PDF deck, Markdown with math, an HTML injection, a long
    file name, a handout repeating the deck's pages for also_at), apart from `server`, whose answers the tests
    above rely on."""
    srv = Server(tmp_path_factory.mktemp("web-rich") / "data")
    srv.wait_ready()
    deck = make_pdf(PDF_DECK, title="Lecture 7: Decoding")
    files = [(p.name, p.read_bytes()) for p in (SAMPLES / "01-recurrent-networks.md", SAMPLES / "03-lstm-and-gru.pptx")]
    handout = make_pdf(["Decoding handout\nThe decoder of a translation model writes one token at a time."] + PDF_DECK)
    files += [("07-decoding.pdf", deck), ("07-decoding-handout.pdf", handout),
              ("clipping-notes.md", MATH_NOTES.encode()), ("zorblax.txt", INJECTION.encode()),
              (LONG_NAME, b"The midterm seating plan lists each student's room and row.\n"),
              ("glimmer-notes.txt", GLIMMER.encode())]
    response = httpx.post(f"{srv.url}/api/v1/documents", files=[("files", f) for f in files], timeout=180)
    assert response.status_code == 200, response.text
    assert all(f["status"] == "ingested" for f in response.json()["files"]), response.text
    yield srv
    srv.stop()


@pytest.fixture()
def rich_page(browser, rich_server):
    with open_page(browser, rich_server) as pg:
        yield pg


def settle_previews(pg, timeout_ms: int = 180_000) -> None:
    """Waits until every preview placeholder is shown or gone (the page asks again on 503 for at most 120 s)."""
    wait_js(pg, "document.querySelectorAll('#conversation .thumb[hidden]').length === 0", timeout_ms)


def passage_of(turn, document: str):
    item = turn.locator(".sources > li").filter(has=turn.page.locator(f".source-where:text-matches('^{document}')"))
    return item.first


def test_markdown_and_math_are_rendered(rich_page):
    turn = ask(rich_page, "Which gradient clipping keeps the direction of the gradient?", ".grounded")
    item = passage_of(turn, "clipping-notes.md")
    text = item.locator(".source-text")
    assert text.locator("strong").count() == 2  # **Clipping by norm**, **Clipping by value**
    assert text.locator("li").count() == 2  # the "- " bullets
    assert text.locator(".katex-display").count() == 1  # the $$ ... $$ block
    assert text.locator(".katex").count() >= 5  # and the inline $\tau$, $g$, $W_h$, $[-c, c]$
    shown = text.inner_text()
    for raw in ("**", "$", "\\frac", "W_h"):
        assert raw not in shown, raw
    assert "W_h" in text.locator(".katex annotation").all_text_contents()  # underscores in math stay math
    # the dangling "Source:" line that closes the section is not shown
    assert not shown.rstrip().endswith("Source:")
    assert "**" not in turn.locator(".answer").inner_text()


def test_plain_text_wraps_into_paragraphs_and_latex_delimiters_render(rich_page):
    turn = ask(rich_page, "How does the Glimmer cell mix the previous hidden state with the current input?",
               ".grounded")
    item = passage_of(turn, "glimmer-notes.txt")
    text = item.locator(".source-text")
    # the .txt file's hard-wrapped lines are one paragraph, not a line each
    assert text.locator("br").count() == 0
    first = next(p for p in text.locator("p").all_inner_texts() if "Glimmer cell is" in p)
    assert "mixes the previous hidden state" in first and "survives each step" in first
    # \(...\) renders inline, \[...\] as a display
    assert text.locator(".katex-display").count() == 1
    assert text.locator(".katex").count() >= 4
    sources = text.locator(".katex annotation").all_text_contents()
    assert "h_{t-1}" in sources and "x_t" in sources and "g_t" in sources
    shown = text.inner_text()
    for raw in ("\\(", "\\)", "\\[", "\\]", "h_{t-1}", "\\odot"):
        assert raw not in shown, raw
    answer = turn.locator(".answer")
    assert answer.locator(".katex").count() >= 1 and "\\(" not in answer.inner_text()
    OUT.mkdir(exist_ok=True)
    item.screenshot(path=str(OUT / "web-plain-text-latex.png"))


def test_answer_keeps_its_display_equation(rich_page):
    turn = ask(rich_page, "How is the RNN hidden state computed at every time step?", ".grounded")
    answer = turn.locator(".answer")
    assert answer.locator(".katex-display").count() >= 1
    assert answer.locator(".katex-display annotation").first.text_content().startswith("h_t = \\tanh")
    assert "$$" not in answer.inner_text()
    links = answer.locator("a.cite")  # citation markers still link to their sources after Markdown
    assert links.count() >= 1
    target = links.first.get_attribute("href")
    links.first.click()
    assert rich_page.url.endswith(target)
    assert rich_page.locator(target).locator(".katex-display").count() == 1
    # KaTeX's fonts come from /static/vendor/fonts (the no-outside-requests check covers the rest)
    assert rich_page.evaluate("""async () => { await document.fonts.ready;
        return [...document.fonts].some(f => f.family.includes('KaTeX_Main') && f.status === 'loaded'); }""")
    settle_previews(rich_page)
    OUT.mkdir(exist_ok=True)
    rich_page.screenshot(path=str(OUT / "web-answer-equation.png"), full_page=True)


def test_html_in_documents_is_shown_as_text_and_runs_nothing(rich_page):
    turn = ask(rich_page, "What does the zorblax filter keep in its log?", ".grounded")
    item = passage_of(turn, "zorblax.txt")
    shown = item.locator(".source-text").inner_text()
    assert '<img src=x onerror="window.__pwned=1">' in shown and "<script>window.__pwned=2</script>" in shown
    assert "<script>" in turn.locator(".answer").inner_text()
    conversation = rich_page.locator("#conversation")
    assert conversation.locator("script, .source-text img, .answer img, iframe, object").count() == 0
    assert conversation.locator("a[href^='javascript']").count() == 0
    rich_page.wait_for_timeout(300)  # an onerror would have fired by now: there is no img element at all
    assert rich_page.evaluate("window.__pwned") is None


def _thumbnail_checks(turn):
    """Every listed source (and also_at place) with a slide or page has a loaded preview named by its alt text."""
    items = turn.locator(".sources > li")
    checked = 0
    for i in range(items.count()):
        item = items.nth(i)
        where = item.locator(".source-where").inner_text()
        if ", slide " not in where and ", page " not in where:
            assert item.locator(".source-body .thumb").count() == 0
            continue
        img = item.locator(".source-body .thumb img")
        img.wait_for(state="visible", timeout=150_000)
        assert img.get_attribute("alt") == where
        assert img.evaluate("i => i.complete && i.naturalWidth") > 0
        checked += 1
    return checked


@pytest.mark.skipif(not PREVIEW_ROUTE.exists(), reason="the page-preview route (app/api/routes/pages.py) is not there")
@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed: PPTX slides cannot be rendered")
def test_sample_pdf_deck_citations_show_page_previews(page):
    """The sample PDF deck (examples/lectures/06-sequence-to-sequence.pdf) as a student meets it after
    `make run`: every cited page (and any slide beside it) has its thumbnail."""
    turn = ask(page, "What does beam search keep at every decoding step?", ".grounded")
    assert "06-sequence-to-sequence.pdf, page 4" in turn.locator(".sources > li").first.inner_text()
    assert _thumbnail_checks(turn) >= 1


@pytest.mark.skipif(not PREVIEW_ROUTE.exists(), reason="the page-preview route (app/api/routes/pages.py) is not there")
def test_pdf_citations_show_page_previews(rich_page):
    turn = ask(rich_page, "What does beam search keep at every decoding step?", ".grounded")
    assert "07-decoding" in turn.locator(".sources > li").first.inner_text()
    assert _thumbnail_checks(turn) >= 1
    # the handout repeats the deck's pages: the other one is listed under "Also at", with its own preview
    also = turn.locator(".also li").filter(has_text="07-decoding")
    also.first.locator(".thumb img").wait_for(state="visible", timeout=60_000)
    alt = also.first.locator(".thumb img").get_attribute("alt")
    assert alt.startswith("07-decoding") and ", page " in alt
    assert also.first.locator(".thumb img").evaluate("i => i.naturalWidth") > 0


@pytest.mark.skipif(not PREVIEW_ROUTE.exists(), reason="the page-preview route (app/api/routes/pages.py) is not there")
@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed: PPTX slides cannot be rendered")
def test_pptx_citations_show_slide_previews_and_enlarge_by_keyboard(rich_page):
    turn = ask(rich_page, "What does the forget gate in an LSTM do?", ".grounded")
    assert "03-lstm-and-gru.pptx, slide" in turn.locator(".sources > li").first.inner_text()
    assert _thumbnail_checks(turn) >= 1
    settle_previews(rich_page)
    OUT.mkdir(exist_ok=True)
    rich_page.screenshot(path=str(OUT / "web-answer-thumbnails.png"), full_page=True)
    thumb = turn.locator(".sources > li .thumb").first
    thumb.focus()
    rich_page.keyboard.press("Enter")
    dialog = rich_page.locator("#preview-dialog")
    dialog.wait_for(state="visible")
    assert dialog.evaluate("d => d.open")
    assert dialog.locator("img").get_attribute("alt") == thumb.locator("img").get_attribute("alt")
    wait_js(rich_page, "document.querySelector('#preview-dialog img').naturalWidth > 400", timeout_ms=60_000)
    rich_page.screenshot(path=str(OUT / "web-preview-enlarged.png"))
    rich_page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert thumb.evaluate("b => document.activeElement === b")


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def test_previews_degrade_quietly_and_wait_for_503(rich_page):
    """Preview answers stubbed in the browser: 404 (a format without pages, or no preview route at all): no
    thumbnail and no broken image; 503 with Retry-After: asked again, then shown; Enter enlarges, Escape closes."""
    calls: dict[str, int] = {}

    def pages(route):
        url = route.request.url
        calls[url] = calls.get(url, 0) + 1
        n = int(url.split("/pages/")[1].split("?")[0])
        if n % 2 == 0:
            route.fulfill(status=404, json={"error": "no pages", "detail": {"reason": "no_pages"}})
        elif calls[url] == 1:
            route.fulfill(status=503, headers={"Retry-After": "1"}, json={"error": "preparing"})
        else:
            big = "size=full" in url
            route.fulfill(status=200, content_type="image/png", body=_png(1600 if big else 320, 900 if big else 180))

    rich_page.route("**/api/v1/documents/*/pages/*", pages)
    turn = ask(rich_page, "What does the forget gate in an LSTM do?", ".grounded")
    items = turn.locator(".sources > li")
    odd = None
    for i in range(items.count()):
        where = items.nth(i).locator(".source-where").inner_text()
        if ", slide " not in where:
            continue
        thumb = items.nth(i).locator(".source-body .thumb")
        if int(where.rsplit(" ", 1)[1]) % 2 == 0:
            thumb.wait_for(state="detached", timeout=30_000)  # 404: the placeholder goes, nothing is shown
        else:
            thumb.locator("img").wait_for(state="visible", timeout=30_000)  # 503, then the image
            assert thumb.locator("img").get_attribute("alt") == where
            odd = odd or (items.nth(i), where)
    assert odd is not None, "no odd-numbered slide among the sources"
    assert turn.locator("img").evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
    slide3, where = odd
    slide3.locator(".thumb").focus()
    rich_page.keyboard.press("Enter")
    wait_js(rich_page, "document.querySelector('#preview-dialog').open && "
                                "document.querySelector('#preview-dialog img').naturalWidth === 1600")
    assert rich_page.locator("#preview-caption").inner_text() == where
    rich_page.keyboard.press("Escape")
    wait_js(rich_page, "!document.querySelector('#preview-dialog').open")
    assert slide3.locator(".thumb").evaluate("b => document.activeElement === b")


def test_closest_passages_drop_copies_and_dangling_source_lines(rich_page):
    """A not-covered answer (stubbed) whose closest passages hold the same text twice, once with a trailing
    'Image source:' line: listed once, the copy under 'Also at', and no dangling credit line."""
    text = "Attention scores\nThe decoder scores every encoder state against its own state."
    source = {"chunk_id": "a-1", "score": 0.4, "also_at": [],
              "document": {"id": "0000000000000001", "name": "attention-a.md", "title": "A"},
              "location": {"section": "Attention scores"}}
    done = {"answer": "not covered", "grounded": False, "citations": [], "answered_by": "extractive",
            "llm_error": None, "timings_ms": {"total": 1},
            "sources": [{**source, "text": text + "\nSource:"},
                        {**source, "chunk_id": "b-1", "text": text + "\n\nImage source: https://example.org/a.png",
                         "document": {"id": "0000000000000002", "name": "attention-b.md", "title": "B"}},
                        {**source, "chunk_id": "c-1", "text": "Other text.\nSource: Bahdanau et al. 2015"}]}
    rich_page.route("**/api/v1/ask", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body=f"event: done\ndata: {json.dumps(done)}\n\n"))
    turn = ask(rich_page, "Anything at all?", ".not-grounded")
    items = turn.locator(".sources > li")
    assert items.count() == 2
    assert items.first.locator(".source-text").inner_text().rstrip().endswith("against its own state.")
    assert "attention-b.md" in items.first.locator(".also").inner_text()
    assert "Source: Bahdanau et al. 2015" in items.nth(1).inner_text()  # a credit with a name is kept
    assert turn.locator(".thumb:not([hidden])").count() == 0


def _name_lines(pg, name: str) -> int:
    return pg.evaluate("""name => {
        const cell = [...document.querySelectorAll('#documents td.name')].find(td => td.textContent === name);
        const range = document.createRange();
        range.selectNodeContents(cell);
        return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
    }""", name)


@pytest.mark.parametrize("width", [390, 1280, 1920])
def test_documents_table_keeps_file_names_readable(browser, rich_server, width):
    with open_page(browser, rich_server, width=width, height=900, is_mobile=width < 500) as pg:
        assert pg.evaluate("document.scrollingElement.scrollWidth") <= width
        names = pg.locator("#documents td.name").all_text_contents()
        assert LONG_NAME in names
        for name in names:
            lines = _name_lines(pg, name)
            assert lines == 1 or len(name) / lines >= 10, (name, lines)  # not a few letters a line
        if width >= 1280:
            assert _name_lines(pg, "03-lstm-and-gru.pptx") == 1
            assert len(LONG_NAME) / _name_lines(pg, LONG_NAME) >= 20
        cell = pg.locator("#documents td.name", has_text="03-lstm").first
        assert cell.evaluate("td => td.getBoundingClientRect().width") >= 120
        OUT.mkdir(exist_ok=True)
        pg.locator("#documents").screenshot(path=str(OUT / f"web-documents-{width}.png"))


def test_upload_on_the_postgres_store_follows_the_queued_job(browser, pg_url, tmp_path):
    """store=postgres: an upload answers 202 with a job; the page follows it until a worker has ingested the
    file, then lists the document and answers from it."""
    import os
    import subprocess
    import sys

    env = {"LECTURE_QA_STORE": "postgres", "LECTURE_QA_DATABASE_URL": pg_url, "LECTURE_QA_PREVIEWS": "false"}
    srv = Server(tmp_path / "api", env=env)
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--poll", "0.2"], cwd=ROOT,
                              env={**os.environ, **env, "LECTURE_QA_DATA_DIR": str(tmp_path / "worker")},
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        srv.wait_ready()
        queued = srv.upload(SAMPLES / "01-recurrent-networks.md")
        assert queued.status_code == 202
        deadline = time.monotonic() + 120
        while httpx.get(f"{srv.url}/api/v1/jobs/{queued.json()['id']}", timeout=10).json()["state"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        deck = tmp_path / "liquid-state.pptx"
        make_pptx([{"title": "Liquid state machines",
                    "bullets": ["A liquid state machine feeds spikes into a fixed random recurrent spiking network.",
                                "Only the readout of a liquid state machine is trained."]}], path=deck)
        with open_page(browser, srv) as pg:
            pg.set_input_files("#file-input", str(deck))
            pg.wait_for_selector("#uploads li[data-status='ingested']", timeout=120_000)
            pg.wait_for_selector("#documents td.name:text-is('liquid-state.pptx')")
            turn = ask(pg, "What is trained in a liquid state machine?", ".grounded")
            assert "liquid-state.pptx, slide 1" in turn.locator(".sources li").first.inner_text()
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
        srv.stop()

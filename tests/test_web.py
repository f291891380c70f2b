"""The web page in a real browser (Debian's Chromium driven by Playwright) against a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.builders import make_pptx
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


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    outside: list[str] = []
    pg.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
    pg.goto(server.url + "/")
    pg.wait_for_selector("#documents tbody tr")
    yield pg
    assert not outside, f"requests left the machine: {outside}"
    context.close()


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
    pg.wait_for_function("document.querySelector('#status').textContent.includes('valid API key')")
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

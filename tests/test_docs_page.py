"""/docs and /redoc in a real browser (Debian's Chromium via Playwright): they render from the vendored assets,
make no request off the server, and Swagger UI offers the Authorize button for the bearer key."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.server import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("docs") / "data")
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    outside: list[str] = []
    blocked: list[str] = []  # stopped in the browser by the page's Content-Security-Policy: never sent
    pg.on("request", lambda r: None if r.url.startswith((server.url, "data:", "blob:")) else outside.append(r.url))
    pg.on("requestfailed", lambda r: blocked.append(r.url) if "csp" in (r.failure or "").lower() else None)
    yield pg
    pg.wait_for_load_state("networkidle")
    assert not set(outside) - set(blocked), f"requests left the machine: {outside}"
    context.close()


def test_swagger_ui_renders_offline_and_try_it_out_sends_the_bearer_key(page, server):
    page.goto(server.url + "/docs")
    page.wait_for_selector("button.authorize", timeout=30_000)
    assert page.locator(".opblock-summary-path", has_text="/api/v1/ask").count() >= 1
    page.click("button.authorize")
    dialog = page.locator(".modal-ux")
    assert "bearer" in dialog.inner_text().lower()
    dialog.locator("input").fill("my-test-key")
    dialog.locator("button.authorize").click()
    dialog.locator("button.btn-done").click()

    whoami = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/api/v1/whoami"))
    whoami.locator(".opblock-summary").click()
    whoami.locator("button.try-out__btn").click()
    with page.expect_request("**/api/v1/whoami") as sent:
        whoami.locator("button.execute").click()
    assert sent.value.headers["authorization"] == "Bearer my-test-key"


def test_redoc_renders_offline(page, server):
    page.goto(server.url + "/redoc")
    heading = page.locator("h2", has_text="Answer a question from the lectures, with citations")
    heading.first.wait_for(timeout=30_000)

"""The page at / in a real headless Chromium (Debian's), against a real uvicorn process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.images import image_bytes
from tests.support.serving import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="no Chromium installed (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def server(random_server: Server) -> Server:
    return random_server  # weights that surely produce boxes, so the page has some to show and filter


def test_page_uploads_draws_and_refilters(server: Server, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    photo = tmp_path / "street.jpg"
    photo.write_bytes(image_bytes(480, 320))
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/")
        page.wait_for_selector("#classes input")  # the class list came from /model
        page.set_input_files("#file", str(photo))
        page.wait_for_function("document.querySelectorAll('#detections tr').length > 0")
        before = page.locator("#detections tr").count()
        assert "decode" in page.inner_text("#timing")
        page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)

        # Raise the score threshold with the keyboard: fewer detections come back.
        page.focus("#score")
        for _ in range(40):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(f"document.querySelectorAll('#detections tr').length < {before}")
        assert page.locator("#detections tr").count() < before

        # Keep one class only: every row shows it.
        page.fill("#score", "0")
        page.dispatch_event("#score", "input")
        page.check("#classes input[value='dog']")
        page.wait_for_function(
            "[...document.querySelectorAll('#detections tr td:nth-child(2)')]"
            ".every(td => td.textContent === 'dog')"
            " && document.querySelectorAll('#detections tr').length > 0"
        )

        # An API error shows as a readable message, not a crash.
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
        page.set_input_files("#file", str(bad))
        page.wait_for_function("document.getElementById('error').textContent.startsWith('400')")

        page.set_viewport_size({"width": 390, "height": 844})  # phone width: no horizontal scroll
        page.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] + 1, width
        browser.close()
    # The one expected console error is the 400 of the broken upload.
    assert all("status of 400" in e for e in errors), errors


def test_the_docs_page_renders_offline(server: Server):
    """Swagger UI from the package's own assets (no CDN: this machine has no internet)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"{server.url}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.textContent)")
        page.wait_for_selector(".authorize", timeout=5_000)  # the API key's schemes: an Authorize button
        browser.close()
    assert "/detect" in paths and "/v1/vision/detection" in paths


@pytest.mark.parametrize("width", [1280, 390])
def test_every_class_and_control_is_there_for_everyone(server: Server, width: int):
    """All class boxes visible (none clipped in a scroll box), controls found by their labels, and
    axe-core (run in the page by axe-playwright-python) finds no accessibility violation."""
    sync_api = pytest.importorskip("playwright.sync_api")
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(f"{server.url}/")
        page.wait_for_selector("#classes input")
        box = page.locator("#classes").bounding_box()
        labels = page.locator("#classes label")
        assert labels.count() == 20
        for k in range(labels.count()):
            item = labels.nth(k).bounding_box()
            assert item is not None and item["height"] > 0
            assert box["y"] <= item["y"] and item["y"] + item["height"] <= box["y"] + box["height"] + 1
            assert box["x"] <= item["x"] and item["x"] + item["width"] <= box["x"] + box["width"] + 1
        for name in ("Score threshold", "IoU threshold", "API key"):
            assert page.get_by_label(name, exact=True).count() == 1, name
        assert page.get_by_label("tvmonitor").is_visible() and page.get_by_label("train").is_visible()
        results = axe_module.Axe().run(page)
        browser.close()
    assert results.violations_count == 0, results.generate_report()

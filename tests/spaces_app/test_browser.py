"""The Space in a real browser: the PyPI ``playwright`` package driving Debian's chromium (never ``playwright install``).

Clicks Generate, uploads a digit on the Likelihood tab, checks the values on the page and saves screenshots under
``outputs/test-artifacts/``.
"""

import os
import shutil

import pytest
from space_helpers import DIGITS

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("F2D2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the PyPI playwright package is not installed")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium, or set F2D2_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(server)
            yield page
        finally:
            browser.close()


def test_generate_then_score_an_uploaded_digit(page, digit_png, artifacts_dir):
    # Sample tab: the default model and settings, then Generate.
    page.get_by_role("button", name="Generate").click()
    summary = page.locator("#sample-summary")
    summary.get_by_text("network call").wait_for()
    text = summary.inner_text()
    assert f"16 sample(s) from {DIGITS} in 2 network call(s)" in text
    assert "Mean log-likelihood" in text and "bits/dim" in text
    rows = page.locator("#sample-table tbody tr")
    assert rows.count() >= 1  # the table virtualises long lists; at least the first rows are rendered
    assert "log p (nats)" in page.locator("#sample-table").inner_text()
    page.screenshot(path=str(artifacts_dir / "spaces_app_sample.png"), full_page=True)

    # Likelihood tab: upload a dark-on-light 96x96 digit and compute.
    page.get_by_role("tab", name="Likelihood").click()
    page.locator("#likelihood-image input[type=file]").set_input_files(str(digit_png))
    page.locator("#likelihood-image img").first.wait_for()
    page.get_by_role("button", name="Compute likelihood").click()
    result = page.locator("#likelihood-summary")
    result.get_by_text("Result").wait_for()
    text = result.inner_text()
    assert "Inverted the grey levels" in text and "Resized from 96x96 to 8x8" in text
    assert "17 levels" in text and "bits/dim in 8 network calls" in text and "teacher's ODE gives" in text
    table = page.locator("#likelihood-table").inner_text()
    for method in ("F2D2, 1 step", "F2D2, 2 steps", "F2D2, 4 steps", "F2D2, 8 steps", "Teacher ODE"):
        assert method in table
    page.screenshot(path=str(artifacts_dir / "spaces_app_likelihood.png"), full_page=True)
    assert (artifacts_dir / "spaces_app_likelihood.png").stat().st_size > 10_000

    # The Explain tab renders, with the method and the plots or a message saying they are not there yet.
    page.get_by_role("tab", name="Explain").click()
    page.get_by_text("How F2D2 works").wait_for()
    page.get_by_text("Benchmark plots").first.wait_for()
    page.screenshot(path=str(artifacts_dir / "spaces_app_explain.png"), full_page=True)


def test_a_bad_request_shows_an_error_and_the_app_keeps_serving(page):
    page.reload()
    page.get_by_role("tab", name="Likelihood").click()
    page.get_by_role("button", name="Compute likelihood").click()  # nothing uploaded or drawn
    page.get_by_text("No image: upload an image or draw a digit").first.wait_for()
    # Still serving: sampling works after the error.
    page.get_by_role("tab", name="Sample").click()
    page.get_by_role("button", name="Generate").click()
    page.locator("#sample-summary").get_by_text("network call").wait_for()


def test_draw_a_digit_and_score_it(page, artifacts_dir):
    page.reload()
    page.get_by_role("tab", name="Likelihood").click()
    page.get_by_role("tab", name="Draw").click()
    page.get_by_role("button", name="Brush").click()
    box = page.locator("canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y - 80)
    page.mouse.down()
    for k in range(1, 21):  # a vertical stroke: a "1"
        page.mouse.move(x + 4, y - 80 + 8 * k)
    page.mouse.up()
    page.get_by_role("button", name="Compute likelihood").click()
    result = page.locator("#likelihood-summary")
    result.get_by_text("Result").wait_for()
    text = result.inner_text()
    assert "Input: the drawing." in text and "Inverted the grey levels" in text and "Cropped to the strokes" in text
    page.screenshot(path=str(artifacts_dir / "spaces_app_draw.png"), full_page=True)

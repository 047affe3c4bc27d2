"""The Space in a real browser: the PyPI ``playwright`` package driving Debian's chromium (never ``playwright install``).

Clicks Generate, uploads a digit on the Likelihood tab, checks the values on the page and saves screenshots under
``outputs/test-artifacts/``.
"""

import os
import shutil

import pytest
from space_helpers import DIGITS, POINTS

from content import EXPLAIN_PLOTS, LIKELIHOOD_EMPTY_TEXT, SAMPLE_EMPTY_TEXT

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


def test_first_visit_explains_the_empty_panels(page, artifacts_dir):
    """Before any run: each output panel says what will appear and which button fills it; no placeholder tables."""
    summary = page.locator("#sample-summary")
    summary.get_by_text("No samples yet").wait_for()
    assert "Generate" in summary.inner_text()
    assert not page.locator("#sample-table").is_visible()
    page.locator("#sample-examples").wait_for(state="visible")
    page.screenshot(path=str(artifacts_dir / "spaces_app_empty_sample.png"), full_page=True)
    page.get_by_role("tab", name="Likelihood").click()
    summary = page.locator("#likelihood-summary")
    summary.get_by_text("Nothing scored yet").wait_for()
    assert "Compute likelihood" in summary.inner_text()
    assert not page.locator("#likelihood-table").is_visible()
    # The slow reference solve is off until the visitor asks for it.
    checkbox = page.locator("#likelihood-reference input[type=checkbox]")
    checkbox.wait_for(state="visible")
    assert not checkbox.is_checked()
    page.locator("#likelihood-image-examples").wait_for(state="visible")
    page.locator("#likelihood-point-examples").wait_for(state="visible")
    page.screenshot(path=str(artifacts_dir / "spaces_app_empty_likelihood.png"), full_page=True)
    assert SAMPLE_EMPTY_TEXT and LIKELIHOOD_EMPTY_TEXT


def test_generate_then_score_an_uploaded_digit(page, digit_png, artifacts_dir):
    page.reload()
    # Sample tab: the default model and settings, then Generate.
    page.locator("#sample-generate").click()  # (the Energy sampler tab has one too)
    summary = page.locator("#sample-summary")
    summary.get_by_text("network call").wait_for()
    text = summary.inner_text()
    assert f"16 sample(s) from {DIGITS} in 2 network call(s)" in text
    assert "Mean log-likelihood" in text and "bits/dim" in text
    rows = page.locator("#sample-table tbody tr")
    page.locator("#sample-table").wait_for(state="visible")  # the table is shown once the result is in
    assert rows.count() >= 1  # the table virtualises long lists; at least the first rows are rendered
    assert "log p (nats)" in page.locator("#sample-table").inner_text()
    page.screenshot(path=str(artifacts_dir / "spaces_app_sample.png"), full_page=True)

    # Likelihood tab: upload a dark-on-light 96x96 digit and compute.
    page.get_by_role("tab", name="Likelihood").click()
    page.locator("#likelihood-image input[type=file]").set_input_files(str(digit_png))
    page.locator("#likelihood-image img").first.wait_for()
    page.locator("#likelihood-reference input[type=checkbox]").check()  # opt in to the (here tiny) reference solve
    page.get_by_role("button", name="Compute likelihood").click()
    result = page.locator("#likelihood-summary")
    result.get_by_text("Result").wait_for()
    text = result.inner_text()
    assert "Inverted the grey levels" in text and "Resized from 96x96 to 8x8" in text
    assert "17 levels" in text and "bits/dim in 8 network calls" in text and "teacher's ODE gives" in text
    page.locator("#likelihood-table").wait_for(state="visible")
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
    # Each benchmark figure, whole, one screenshot apiece (to check them by eye).
    thumbnails = page.locator("button.thumbnail-item")
    assert thumbnails.count() >= len(EXPLAIN_PLOTS)
    for i in range(len(EXPLAIN_PLOTS)):
        thumbnails.nth(i).dispatch_event("click")  # (a wide preview image may lie over the thumbnail strip)
        page.wait_for_timeout(500)
        name = os.path.basename(EXPLAIN_PLOTS[i][0]).removesuffix(".png")
        page.screenshot(path=str(artifacts_dir / f"spaces_app_explain_{name}.png"), full_page=True)


def test_an_example_fills_the_inputs_and_scores(page, artifacts_dir):
    """Click a ready-made 2-D example: the model and points are filled in; Compute likelihood scores them fast
    (no reference solve by default)."""
    page.reload()
    page.get_by_role("tab", name="Likelihood").click()
    page.locator("#likelihood-point-examples").get_by_text("12 checkerboard test points").click()
    # The example fills the inputs asynchronously: under load a click on Compute could otherwise send the old ones.
    from playwright.sync_api import expect

    expect(page.locator("#likelihood-model input")).to_have_value(POINTS, timeout=60_000)
    page.get_by_role("button", name="Compute likelihood").click()
    result = page.locator("#likelihood-summary")
    result.get_by_text("Result").wait_for()
    text = result.inner_text()
    assert "Read 12 point(s) of dimension 2" in text and "means over 12 points" in text
    assert "tick" in text.lower()  # says how to add the reference
    page.locator("#likelihood-table").wait_for(state="visible")
    assert "F2D2, 8 steps" in page.locator("#likelihood-table").inner_text()
    assert "Teacher ODE" not in page.locator("#likelihood-table").inner_text()
    assert page.locator("#likelihood-model input").input_value() == POINTS
    page.screenshot(path=str(artifacts_dir / "spaces_app_example_points.png"), full_page=True)


def test_a_bad_request_shows_an_error_and_the_app_keeps_serving(page):
    page.reload()
    page.get_by_role("tab", name="Likelihood").click()
    page.get_by_role("button", name="Compute likelihood").click()  # nothing uploaded or drawn
    page.get_by_text("No image: upload an image or draw a digit").first.wait_for()
    # Still serving: sampling works after the error.
    page.get_by_role("tab", name="Sample", exact=True).click()  # not "Energy sampler"
    page.locator("#sample-generate").click()  # (the Energy sampler tab has one too)
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


def test_energy_sampler_tab(page, artifacts_dir):
    """The Energy sampler tab: empty state, then Generate with the default sampler shows the figure and log Z."""
    page.reload()
    page.get_by_role("tab", name="Energy sampler").click()
    summary = page.locator("#sampler-summary")
    summary.get_by_text("No samples yet").wait_for()
    assert not page.locator("#sampler-figure").is_visible()
    page.locator("#sampler-examples").wait_for(state="visible")
    page.locator("#sampler-generate").click()
    summary.get_by_text("network call").wait_for()
    text = summary.inner_text()
    assert "log Z estimate" in text and "true log Z" in text and "Effective sample size" in text
    page.locator("#sampler-figure img").first.wait_for()
    page.screenshot(path=str(artifacts_dir / "spaces_app_energy_sampler.png"), full_page=True)

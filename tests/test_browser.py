"""End-to-end test of the drawing page in real headless Chromium, as a user would use it.

The real server (uvicorn, in a child process on 127.0.0.1) serves a shallow net trained
for a few seconds on real MNIST; Playwright drives Debian's /usr/bin/chromium (never a
downloaded browser), draws a 7 stroke by stroke with the mouse, and checks that the
prediction, the ten bars and the 28x28 preview appear, with no console errors.
The server and the browser are conftest's `live_server` and `chromium` fixtures.
Fails when /usr/bin/chromium is absent: `make test` installs it, so CI always runs this.
"""

from __future__ import annotations

import io
import itertools
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

# Playwright's expect() polls inside the page without eval, which the page's Content
# Security Policy forbids (so page.wait_for_function cannot be used here).
from playwright.sync_api import expect

import digitlab  # noqa: F401  (chooses the JAX backend)

ONE_DIGIT = re.compile(r"^[0-9]$")

pytestmark = pytest.mark.browser


@pytest.fixture
def page(chromium, live_server):
    """A fresh page on the drawing page of the quick shallow net (784-64 sigmoid-10 softmax)."""
    context = chromium.new_context(viewport={"width": 1200, "height": 860}, has_touch=True)
    page = context.new_page()
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.problems = problems
    page.goto(live_server + "/")
    page.wait_for_selector("#model-badge.ok")
    yield page
    context.close()


def draw(page, strokes, steps=12, selector="#pad"):
    """Draws polylines given in 0-1 coordinates of the canvas `selector`, with mouse moves between points,
    once the canvas has stayed in place for two frames (cards above it may still be appearing)."""
    page.locator(selector).scroll_into_view_if_needed()
    box = settled_box(page, selector)

    def at(point):
        return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]

    for stroke in strokes:
        page.mouse.move(*at(stroke[0]))
        page.mouse.down()
        for start, end in itertools.pairwise(stroke):
            for step in range(1, steps + 1):
                share = step / steps
                page.mouse.move(*at((start[0] + (end[0] - start[0]) * share, start[1] + (end[1] - start[1]) * share)))
        page.mouse.up()


def settled_box(page, selector):
    """The bounding box of `selector` once two animation frames in a row leave it where it was."""
    box = page.locator(selector).bounding_box()
    for _ in range(200):
        page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        again = page.locator(selector).bounding_box()
        if again == box:
            return box
        box = again
    raise AssertionError(f"{selector} kept moving: the page's layout never settled")


def bar_heights(page):
    return page.eval_on_selector_all(".bar .fill", "fills => fills.map(fill => fill.getBoundingClientRect().height)")


def test_drawing_a_seven_shows_the_prediction_the_bars_and_the_input(page, tmp_path):
    assert page.locator("#digit").text_content() == "–"
    assert page.locator(".bar").count() == 10
    draw(page, [[(0.28, 0.22), (0.72, 0.22)], [(0.72, 0.22), (0.45, 0.82)]])
    expect(page.locator("#digit")).to_have_text(ONE_DIGIT)
    page.wait_for_timeout(400)  # Lets the last answer and the bars' transition settle.
    page.screenshot(path=str(tmp_path / "drawn.png"))

    assert page.locator("#digit").text_content() == "7"
    assert "sure it is a 7" in page.locator("#confidence").text_content()
    heights = bar_heights(page)
    assert len(heights) == 10 and int(np.argmax(heights)) == 7 and heights[7] > 50
    assert page.locator(".bar.top").get_attribute("data-digit") == "7"
    assert "%" in page.locator(".bar.top").get_attribute("aria-label")
    seen = page.evaluate("Array.from(document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data)")
    seen = np.array(seen).reshape(28, 28, 4)[..., 0]
    assert seen.max() == 255 and (seen > 0).mean() < 0.4  # A white digit on black, as MNIST.
    assert "server" in page.locator("#timing").text_content()
    assert page.problems == []

    page.click("#clear")
    assert page.locator("#digit").text_content() == "–"
    page.wait_for_timeout(400)  # The bars shrink with a short transition.
    assert max(bar_heights(page)) <= 3
    assert page.problems == []


def test_prediction_updates_while_drawing(page):
    """The first stroke alone gets an answer before the second stroke is drawn."""
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])
    expect(page.locator("#digit")).to_have_text(ONE_DIGIT)
    first = page.locator("#timing").text_content()
    draw(page, [[(0.3, 0.15), (0.3, 0.5), (0.7, 0.5)]])
    expect(page.locator("#timing")).not_to_have_text(first)
    assert page.problems == []


def test_touch_tap_and_escape(page):
    box = page.locator("#pad").bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page.locator("#digit")).to_have_text(ONE_DIGIT)
    page.keyboard.press("Escape")
    assert page.locator("#digit").text_content() == "–"
    assert page.problems == []


def test_uploading_a_picture(page, tmp_path):
    picture = Image.new("RGB", (400, 300), (245, 242, 235))
    ImageDraw.Draw(picture).line([(150, 60), (250, 60), (190, 250)], fill=(20, 20, 60), width=18, joint="curve")
    path = tmp_path / "seven.jpg"
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    page.set_input_files("#upload", str(path))
    expect(page.locator("#digit")).to_have_text(ONE_DIGIT)
    assert page.locator("#digit").text_content() == "7"
    assert page.problems == []


def test_a_bad_upload_shows_the_servers_sentence(page, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not a picture")
    page.set_input_files("#upload", str(path))
    expect(page.locator("#status")).to_contain_text("not an image")
    # The failed fetch's 422 is logged by Chromium as a console error; nothing else may be.
    assert all("422" in problem for problem in page.problems), page.problems

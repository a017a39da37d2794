"""The live training page in real headless Chromium, as a learner and a teacher use it.

One real `digitlab serve` (no RUN; a child process on 127.0.0.1, real MNIST) started with an
operator token and a view-only token, as a classroom server is: the page is opened through the
links that carry them, so every script, picture and event stream travels with the token's cookie.
Playwright drives Debian's /usr/bin/chromium (conftest's `chromium`). Each step is photographed
into the test's tmp_path; every wait is on what the page shows, never on the clock.
"""

from __future__ import annotations

import json
import sys
import urllib.request

import numpy as np
import pytest
from playwright.sync_api import expect

import digitlab  # noqa: F401  (chooses the JAX backend)
from test_browser import ONE_DIGIT, draw

pytestmark = pytest.mark.browser

OPERATOR, VIEWER = "classroom-operator-0123456789", "classroom-viewer-0123456789"
LONG = 180_000  # ms: a generous bound for a training on a loaded machine, never a sleep.


@pytest.fixture(scope="module")
def server(tmp_path_factory, load_script):
    runs_dir = tmp_path_factory.mktemp("page_runs")
    load_test = load_script("load_test")
    port = load_test.free_port()
    command = [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(runs_dir), "--port", str(port)]
    command += ["--token", OPERATOR, "--view-token", VIEWER]
    url = f"http://127.0.0.1:{port}"
    with load_test.run_server(command, f"{url}/api/health?token={OPERATOR}", timeout=180):
        yield url


def api(server, path, values=None):
    request = urllib.request.Request(
        server + path,
        data=None if values is None else json.dumps(values).encode(),
        headers={"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"},
        method="GET" if values is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def open_page(chromium, url, shots, name="page"):
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.problems = problems
    # These tests are about the server's own training, which the page offers behind ?train=server.
    page.goto(url + ("&" if "?" in url else "?") + "train=server")
    page.wait_for_selector("#model-badge.ok")
    expect(page.locator("#train-card")).to_be_visible()
    page.shot = lambda step: page.screenshot(path=str(shots / f"{name}-{step}.png"), full_page=True)
    return page


def tiles_pixels(page):
    return np.array(
        page.evaluate(
            """() => { const image = document.getElementById('tiles'); const canvas = document.createElement('canvas');
            canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
            const context = canvas.getContext('2d'); context.drawImage(image, 0, 0);
            return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data); }"""
        )
    )


def show_epoch(page, epoch):
    page.locator("#epoch-slider").fill(str(epoch))
    expect(page.locator("#tiles")).to_have_attribute("data-epoch", str(epoch))
    expect(page.locator("#epoch-shown")).to_contain_text(f"{epoch} of")


def probabilities(page):
    return np.array(json.loads(page.locator("#chart").get_attribute("data-probabilities")))


@pytest.fixture(scope="module")
def three_epochs(chromium, server, tmp_path_factory):
    """The page trains the shallow net with learning rate 0.5 for 3 epochs on 2,000 images."""
    shots = tmp_path_factory.mktemp("shots")
    page = open_page(chromium, f"{server}/?token={OPERATOR}", shots, "train")
    assert "token" not in page.url  # The address bar (the link to share) never shows the token.
    page.shot("1-opened")
    page.fill("#field-learning_rate", "0.5")
    page.fill("#field-epochs", "3")
    page.fill("#field-train_limit", "2000")
    page.click("#start")
    expect(page.locator("#live-status")).to_contain_text("Training", timeout=LONG)
    # A point an epoch, as each epoch's event arrives (fast epochs may be drawn in one frame).
    expect(page.locator("#accuracy-chart .valid .point").first).to_be_attached(timeout=LONG)
    page.shot("2-first-epoch")
    expect(page.locator("#accuracy-chart .valid .point")).to_have_count(3, timeout=LONG)
    expect(page.locator("#epoch-slider")).to_have_attribute("data-events", "3")
    page.shot("3-three-epochs")
    expect(page.locator("#live-status")).to_contain_text("is complete", timeout=LONG)
    expect(page.locator("#end-card")).to_be_visible(timeout=LONG)
    page.shot("4-complete")
    yield page, shots
    page.context.close()


def test_three_points_appear_and_the_tiles_change_between_epochs(three_epochs, server):
    page, _ = three_epochs
    for chart in ("#accuracy-chart", "#loss-chart"):
        for series in ("train", "valid"):
            expect(page.locator(f"{chart} .{series} .point")).to_have_count(3)
    (run,) = [
        row["run"] for row in api(server, "/api/runs")["runs"] if row["learning_rate"] == 0.5 and row["epochs"] == 3
    ]
    history = api(server, f"/api/runs/{run}")["history"]
    assert page.locator("#n-val_accuracy").text_content() == f"{history['val_accuracy'][-1]:.4f}"
    assert api(server, f"/api/runs/{run}")["config"]["learning_rate"] == 0.5
    pictures = {}
    for epoch in (1, 2, 3):
        show_epoch(page, epoch)
        pictures[epoch] = tiles_pixels(page)
        assert pictures[epoch].size == 238 * 238 * 4
    assert (pictures[1] != pictures[2]).any() and (pictures[2] != pictures[3]).any()
    # The confusion matrix: 10 x 10 counts of the 10,000 validation images; the mistakes beside it.
    cells = page.locator("#confusion td").all_text_contents()
    assert len(cells) == 100 and sum(map(int, cells)) == 10_000
    assert page.locator("#mistakes figure").count() == 24
    assert page.problems == []


def test_the_slider_moves_the_drawing_pads_network_to_that_epoch(three_epochs, server):
    page, shots = three_epochs
    show_epoch(page, 3)
    page.locator("#pad").scroll_into_view_if_needed()
    draw(page, [[(0.28, 0.22), (0.72, 0.22)], [(0.72, 0.22), (0.45, 0.82)]])
    expect(page.locator("#digit")).to_have_text(ONE_DIGIT)
    expect(page.locator("#digit")).to_have_attribute("data-epoch", "3")
    at_three = probabilities(page)
    page.shot("5-drawn-at-epoch-3")
    page.locator("#train-card").scroll_into_view_if_needed()
    show_epoch(page, 1)
    expect(page.locator("#digit")).to_have_attribute("data-epoch", "1")
    expect(page.locator("#asking")).to_contain_text("at epoch 1")
    at_one = probabilities(page)
    page.locator("#pad").scroll_into_view_if_needed()
    page.shot("6-slider-back-to-epoch-1")
    assert not np.allclose(at_one, at_three, atol=1e-4)
    # The page's answer is epoch 1's network's: the same as the API's for the pixels the network saw.
    seen = page.evaluate("Array.from(document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data)")
    pixels = np.array(seen).reshape(28, 28, 4)[..., 0]
    run = page.locator("#asking").text_content().split()[1]
    answer = api(server, f"/api/predict?run={run}&epoch=1", {"pixels": pixels.tolist()})
    np.testing.assert_allclose(answer["probabilities"], at_one, atol=1e-6)
    assert page.problems == []


def test_stop_a_longer_run_and_resume_it_to_the_uninterrupted_history(chromium, server, tmp_path, load_script):
    page = open_page(chromium, f"{server}/?token={OPERATOR}&epochs=200&train_limit=2000&seed=11", tmp_path, "stop")
    assert page.locator("#field-epochs").input_value() == "200"
    page.click("#start")
    expect(page.locator("#accuracy-chart .valid .point").first).to_be_attached(timeout=LONG)
    page.click("#stop")
    expect(page.locator("#live-status")).to_contain_text("was stopped after epoch", timeout=LONG)
    expect(page.locator("#resume")).to_be_enabled()
    page.shot("1-stopped")
    run = page.locator("#live-status").text_content().split()[0]
    stopped = api(server, f"/api/runs/{run}")
    assert stopped["status"]["status"] == "interrupted" and stopped["status"]["epoch"] < 200
    assert "digitlab train --resume" in page.locator("#live-status").text_content()
    page.click("#resume")
    expect(page.locator("#live-status")).to_contain_text("is complete", timeout=LONG)
    page.shot("2-resumed-and-complete")
    expect(page.locator("#accuracy-chart .valid .point")).to_have_count(200)
    resumed = api(server, f"/api/runs/{run}")["history"]
    whole = api(server, "/api/train", {"epochs": 200, "train_limit": 2000, "seed": 11})["run"]
    load_script("live_bench").read_events(server, whole, headers={"Authorization": f"Bearer {OPERATOR}"})
    assert api(server, f"/api/runs/{whole}")["history"] == resumed
    assert page.problems == []


def test_a_shared_link_opens_the_setting_with_hidden_controls(chromium, server, tmp_path):
    link = (
        f"{server}/?token={OPERATOR}&model=intermediate&learning_rate=0.1&epochs=2&train_limit=2000&hide=loss,optimizer"
    )
    page = open_page(chromium, link, tmp_path, "shared")
    page.shot("1-opened")
    assert page.locator("#field-model").input_value() == "intermediate"
    assert page.locator("#field-learning_rate").input_value() == "0.1"
    expect(page.locator('[data-field="loss"]')).to_be_hidden()
    expect(page.locator('[data-field="optimizer"]')).to_be_hidden()
    expect(page.locator('[data-field="activation"]')).to_be_visible()
    shared = page.locator("#share-link").input_value()
    assert "model=intermediate" in shared and "hide=loss%2Coptimizer" in shared and "token" not in shared
    page.select_option("#field-activation", "tanh")
    assert "activation=tanh" in page.locator("#share-link").input_value()
    page.click("#start")
    expect(page.locator("#live-status")).to_contain_text("is complete", timeout=LONG)
    run = page.locator("#live-status").text_content().split()[0]
    config = api(server, f"/api/runs/{run}")["config"]
    assert (config["model"], config["learning_rate"], config["activation"], config["epochs"]) == (
        "intermediate",
        0.1,
        "tanh",
        2,
    )
    page.shot("2-trained")
    assert page.problems == []


def test_a_bad_value_is_shown_beside_its_field(chromium, server, tmp_path):
    page = open_page(chromium, f"{server}/?token={OPERATOR}&learning_rate=0", tmp_path, "bad")
    page.click("#start")
    expect(page.locator("#error-learning_rate")).to_have_text(
        "learning_rate must be a number above 0 and at most 10, got 0.0."
    )
    page.shot("1-refused")
    page.fill("#field-learning_rate", "0.5")
    expect(page.locator("#error-learning_rate")).to_have_text("")
    assert all("422" in problem for problem in page.problems), page.problems


def test_the_view_only_link_watches_and_overlays_but_cannot_train(chromium, server, tmp_path, three_epochs):
    page = open_page(chromium, f"{server}/?token={VIEWER}", tmp_path, "viewer")
    expect(page.locator("#role-note")).to_be_visible()
    for button in ("#start", "#stop", "#resume"):
        expect(page.locator(button)).to_be_hidden()
    ticks = page.locator(".overlay-tick")
    assert ticks.count() >= 2
    ticks.nth(0).check()
    ticks.nth(1).check()
    expect(page.locator("#overlay-chart .series")).to_have_count(2)
    page.locator("#runs-card").scroll_into_view_if_needed()
    page.shot("1-two-runs-side-by-side")
    page.locator(".open-run").nth(0).click()
    expect(page.locator("#live-status")).not_to_contain_text("Opening", timeout=LONG)
    assert page.problems == []
    nobody = chromium.new_context()
    refused = nobody.new_page().goto(server + "/")
    assert refused.status == 401 and "needs its token" in refused.text()
    nobody.close()

"""The page of `digitlab serve` in real headless Chromium, as a learner and a teacher use it.

One real `digitlab serve` (no RUN; a child process on 127.0.0.1, real MNIST) started with an
operator token and a view-only token, as a classroom server is: the page is opened through the
links that carry them, so every script, picture and event stream travels with the token's cookie.
A real `digitlab train` trains into the server's runs folder, paused (SIGSTOP) after its second
epoch so that the page is seen following it mid-run; then the page trains a run in the browser and
shows it beside the server's runs, with its confusion matrix. Playwright drives Debian's
/usr/bin/chromium (conftest's `chromium`). Each step is photographed into the test's tmp_path;
every wait is on what the page shows, never on the clock.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
import urllib.request

import numpy as np
import pytest
from playwright.sync_api import expect

import digitlab  # noqa: F401  (chooses the JAX backend)
from test_browser import ONE_DIGIT, draw
from test_live_server import EPOCHS, paused_training

pytestmark = pytest.mark.browser

OPERATOR, VIEWER = "classroom-operator-0123456789", "classroom-viewer-0123456789"
LONG = 180_000  # ms: a generous bound for a training on a loaded machine, never a sleep.
SETTINGS = "&train_limit=2000&epochs=3&loss=categorical_crossentropy&learning_rate=0.5&batch_size=32&seed=5"


@pytest.fixture(scope="module")
def server(tmp_path_factory, load_script):
    runs_dir = tmp_path_factory.mktemp("page_runs")
    load_test = load_script("load_test")
    port = load_test.free_port()
    command = [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(runs_dir), "--port", str(port)]
    command += ["--token", OPERATOR, "--view-token", VIEWER]
    url = f"http://127.0.0.1:{port}"
    with load_test.run_server(command, f"{url}/api/health?token={OPERATOR}", timeout=180):
        yield url, runs_dir


def api(url, path, values=None):
    request = urllib.request.Request(
        url + path,
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
    page.goto(url)
    page.wait_for_selector("#model-badge.ok")
    expect(page.locator("#runs-card")).to_be_visible()
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


def confusion(page) -> np.ndarray:
    return np.array([int(cell) for cell in page.locator("#confusion td").all_text_contents()]).reshape(10, 10)


@pytest.fixture(scope="module")
def followed(chromium, server, tmp_path_factory, mnist_path):
    """The page opened while `digitlab train` trains into the server's folder (paused after epoch 2): it
    follows that run, then sees it through to its end once the training goes on."""
    url, runs_dir = server
    shots = tmp_path_factory.mktemp("shots")
    with paused_training(runs_dir, mnist_path, seed=7) as (process, run, done):
        page = open_page(chromium, f"{url}/?token={OPERATOR}", shots, "follow")
        expect(page).not_to_have_url(re.compile("token"))  # The address bar (a link to share) drops the token.
        # The page opens the run being trained and shows every epoch so far, the newest one's tiles pushed.
        expect(page.locator("#accuracy-chart .valid .point")).to_have_count(done, timeout=LONG)
        expect(page.locator("#live-status")).to_contain_text(f"epoch {done} of {EPOCHS}")
        expect(page.locator("#tiles")).to_have_attribute("data-epoch", str(done), timeout=LONG)
        expect(page.locator(f'#runs-table tr[data-run="{run.name}"]')).to_contain_text("training")
        assert process.poll() is None
        page.shot("1-following-a-paused-digitlab-train")
        process.send_signal(signal.SIGCONT)
        expect(page.locator("#accuracy-chart .valid .point").nth(done)).to_be_attached(timeout=LONG)
        expect(page.locator("#live-status")).to_contain_text("is complete", timeout=LONG)
    expect(page.locator("#accuracy-chart .valid .point")).to_have_count(EPOCHS)
    expect(page.locator("#end-card")).to_be_visible(timeout=LONG)
    page.shot("2-complete")
    yield page, run
    page.context.close()


def test_a_digitlab_train_run_grows_on_the_page_and_ends_with_its_evaluation(followed, server):
    page, run = followed
    url, _ = server
    for chart in ("#accuracy-chart", "#loss-chart"):
        for series in ("train", "valid"):
            expect(page.locator(f"{chart} .{series} .point")).to_have_count(EPOCHS)
    history = api(url, f"/api/runs/{run.name}")["history"]
    assert page.locator("#n-val_accuracy").text_content() == f"{history['val_accuracy'][-1]:.4f}"
    pictures = {}
    for epoch in (1, 2, EPOCHS):
        show_epoch(page, epoch)
        pictures[epoch] = tiles_pixels(page)
        assert pictures[epoch].size == 238 * 238 * 4
    assert (pictures[1] != pictures[2]).any() and (pictures[2] != pictures[EPOCHS]).any()
    # The confusion matrix: 10 x 10 counts of the 10,000 validation images, as the API gives them.
    evaluation = api(url, f"/api/runs/{run.name}/evaluation")
    np.testing.assert_array_equal(confusion(page), evaluation["confusion_matrix"])
    assert page.locator("#mistakes figure").count() == 24
    assert page.problems == []


def test_the_slider_moves_the_drawing_pads_network_to_that_epoch(followed, server):
    page, run = followed
    url, _ = server
    show_epoch(page, EPOCHS)
    page.locator("#pad").scroll_into_view_if_needed()
    draw(page, [[(0.28, 0.22), (0.72, 0.22)], [(0.72, 0.22), (0.45, 0.82)]])
    expect(page.locator("#digit")).to_have_text(ONE_DIGIT)
    expect(page.locator("#digit")).to_have_attribute("data-epoch", str(EPOCHS))
    at_last = probabilities(page)
    page.locator("#train-card").scroll_into_view_if_needed()
    show_epoch(page, 1)
    expect(page.locator("#digit")).to_have_attribute("data-epoch", "1")
    expect(page.locator("#asking")).to_contain_text("at epoch 1")
    at_one = probabilities(page)
    assert not np.allclose(at_one, at_last, atol=1e-4)
    # The page's answer is epoch 1's network's: the same as the API's for the pixels the network saw.
    seen = page.evaluate("Array.from(document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data)")
    pixels = np.array(seen).reshape(28, 28, 4)[..., 0]
    answer = api(url, f"/api/predict?run={run.name}&epoch=1", {"pixels": pixels.tolist()})
    np.testing.assert_allclose(answer["probabilities"], at_one, atol=1e-6)
    assert page.problems == []


def test_a_run_trained_in_the_browser_sits_beside_the_servers_runs(chromium, server, followed, tmp_path):
    url, _ = server
    _, followed_run = followed
    page = open_page(chromium, f"{url}/?token={OPERATOR}{SETTINGS}", tmp_path, "browser")
    page.locator("#start").click()
    expect(page.locator("#n-epoch")).to_have_text("3 / 3", timeout=LONG)
    expect(page.locator("#download-run")).to_be_enabled(timeout=LONG)
    # The end-of-run evaluation, computed in the browser from the network and the validation images.
    expect(page.locator("#end-summary")).to_contain_text("this browser's run after epoch 3", timeout=LONG)
    here = confusion(page)
    assert here.sum() == 10_000 and page.locator("#mistakes figure").count() == 24
    page.shot("1-trained-here")
    # Side by side: the browser's run and the server's, overlaid.
    rows = page.locator("#runs-table tbody tr")
    expect(rows.first).to_contain_text("this browser's run")
    rows.first.locator(".overlay-tick").check()
    page.locator(f'#runs-table tr[data-run="{followed_run.name}"] .overlay-tick').check()
    expect(page.locator("#overlay-chart .series")).to_have_count(2)
    expect(page.locator("#overlay-legend")).to_contain_text("this browser's run")
    page.locator("#runs-card").scroll_into_view_if_needed()
    page.shot("2-side-by-side")
    # Open the server's run, then this browser's again: each brings its own curves and evaluation.
    page.locator(f'#runs-table tr[data-run="{followed_run.name}"] .open-run').click()
    expect(page.locator("#accuracy-chart .valid .point")).to_have_count(EPOCHS, timeout=LONG)
    expect(page.locator("#end-summary")).to_contain_text(followed_run.name, timeout=LONG)
    rows.first.locator(".open-run").click()
    expect(page.locator("#accuracy-chart .valid .point")).to_have_count(3)
    expect(page.locator("#end-summary")).to_contain_text("this browser's run")
    expect(page.locator("#tiles-canvas")).to_be_visible()
    # Kept on the server, the run is one of its runs; the server's evaluation of it is the browser's.
    page.locator("#send-run").click()
    expect(page.locator("#keep-status")).to_contain_text("Kept on the server as", timeout=LONG)
    kept = page.locator("#keep-status").get_attribute("data-run")
    expect(page.locator(f'#runs-table tr[data-run="{kept}"]')).to_be_visible(timeout=LONG)
    server_says = np.array(api(url, f"/api/runs/{kept}/evaluation")["confusion_matrix"])
    assert np.abs(server_says - here).sum() <= 4  # Keras's float32 and the engine's: a borderline image or two.
    assert page.problems == []


def test_a_shared_link_opens_the_setting_with_hidden_controls(chromium, server, tmp_path):
    url, _ = server
    link = f"{url}/?token={OPERATOR}&model=intermediate&learning_rate=0.1&epochs=2&train_limit=2000&hide=loss,optimizer"
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
    assert page.problems == []


def test_the_view_only_link_watches_and_overlays_but_keeps_nothing(chromium, server, followed, tmp_path):
    url, _ = server
    page = open_page(chromium, f"{url}/?token={VIEWER}", tmp_path, "viewer")
    expect(page.locator("#role-note")).to_be_visible()
    expect(page.locator("#send-run")).to_be_hidden()
    ticks = page.locator(".overlay-tick")
    expect(ticks.first).to_be_visible()
    shown = min(ticks.count(), 2)  # The followed run, and the run kept from the browser when that test ran.
    for index in range(shown):
        ticks.nth(index).check()
    expect(page.locator("#overlay-chart .series")).to_have_count(shown)
    page.locator("#runs-card").scroll_into_view_if_needed()
    page.shot("1-two-runs-side-by-side")
    page.locator(".open-run").nth(0).click()
    expect(page.locator("#live-status")).not_to_contain_text("Opening", timeout=LONG)
    assert page.problems == []
    nobody = chromium.new_context()
    refused = nobody.new_page().goto(url + "/")
    assert refused.status == 401 and "needs its token" in refused.text()
    nobody.close()


def test_a_servers_run_keeps_its_slider_when_the_training_panel_starts_late(chromium, server, followed, tmp_path):
    """live.js (a classic script) can open a server's run before browser.js (a module, with its imports) has
    run at all, as on a loaded machine: the training panel must then leave the slider to live.js. browser.js
    is held back here (its answer delayed: the lateness itself, not a wait) to make that order certain."""
    url, _ = server
    _, run = followed

    def late(route):
        time.sleep(1.5)
        route.continue_()

    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.route("**/static/browser.js", late)
    page.goto(f"{url}/?token={OPERATOR}&run={run.name}")
    expect(page.locator("#accuracy-chart .valid .point")).to_have_count(EPOCHS, timeout=LONG)
    page.wait_for_selector("#model-badge.ok", timeout=LONG)  # browser.js has started, after the run was opened.
    show_epoch(page, 2)
    show_epoch(page, EPOCHS)
    page.screenshot(path=str(tmp_path / "late-panel.png"), full_page=True)
    context.close()

"""The page trains in headless Chromium: from a static site on `python -m http.server` (no digitlab process
behind it), and from `digitlab serve`, which keeps the run it is sent.

The site is written by `digitlab site`; the page is asked for 3 epochs of the shallow net on 2,000
training images (with cross-entropy, a learning rate of 0.5 and batches of 32, so that 3 epochs learn
enough to read a digit with). Every wait is on what the
page shows, never on the clock; each step is photographed into the test's tmp_path.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from digitlab import cli, data
from digitlab.browser import site
from test_browser import ONE_DIGIT, draw

pytestmark = pytest.mark.browser

SETTINGS = "?train_limit=2000&epochs=3&loss=categorical_crossentropy&learning_rate=0.5&batch_size=32&seed=5"
LONG = 180_000  # ms: a generous bound on a loaded machine, never a sleep.
SEVEN = [[(0.28, 0.22), (0.72, 0.22)], [(0.72, 0.22), (0.45, 0.82)]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen) -> None:
    for _ in range(600):
        assert process.poll() is None, f"the server stopped (exit status {process.returncode})"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture(scope="module")
def site_folder(tmp_path_factory, mnist_path) -> Path:
    folder = tmp_path_factory.mktemp("site") / "public"
    site.write_site(folder, data.load(mnist_path))
    return folder


@pytest.fixture(scope="module")
def static_host(site_folder):
    """The site on Python's plain static file server on loopback: no COOP/COEP, no digitlab."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(site_folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/", server)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=10)


def train_three_epochs(page, url: str) -> None:
    page.goto(url + SETTINGS)
    expect(page.locator("#train-card")).to_be_visible(timeout=LONG)
    page.locator("#start").click()
    expect(page.locator("#n-epoch")).to_have_text("3 / 3", timeout=LONG)
    expect(page.locator("#download-run")).to_be_enabled(timeout=LONG)


def page_run_from_download(page, tmp_path: Path) -> dict:
    with page.expect_download() as download:
        page.locator("#download-run").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    return json.loads(path.read_text())


def native_reproduction(document: dict, mnist_path, tmp_path: Path) -> list[np.ndarray]:
    """The same run trained by digitlab's native engine on its portable C path, from the page's seed."""
    script = f"""
import numpy as np
from digitlab import data, models
from digitlab.browser import prng
from digitlab.config import TrainConfig
from digitlab.engine import FastEngine
config = TrainConfig.from_dict({document["config"]!r}).resolved()
network = models.create_seeded_models(config)[0]
network.set_weights(prng.initial_weights(config.seed, [784, *config.units, 10]))
engine = FastEngine([network], config)
(x, y), validation, _ = data.prepare(data.load({str(mnist_path)!r}).arrays, "test", config.train_limit)
engine.fit(x, y, validation, epochs=config.epochs, rngs=[np.random.RandomState(config.seed)])
state = engine.get_state()
names = ["dense_0/kernel", "dense_0/bias", "dense_1/kernel", "dense_1/bias"]
np.savez({str(tmp_path / "native.npz")!r}, *[state[name][0] for name in names])
"""
    environment = dict(os.environ, DIGITLAB_KERNEL_SCALAR="1")
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "native.npz") as archive:
        return [archive[f"arr_{index}"] for index in range(4)]


def test_the_static_site_trains_in_the_browser_with_curves_tiles_slider_and_pad(
    chromium, static_host, mnist_path, tmp_path
):
    context = chromium.new_context(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    train_three_epochs(page, static_host)
    page.screenshot(path=str(tmp_path / "trained.png"), full_page=True)
    # Where it trained: WebAssembly in this browser, one thread (a plain static host sends no COOP/COEP).
    expect(page.locator("#engine-note")).to_contain_text("WebAssembly SIMD128")
    expect(page.locator("#engine-note")).to_contain_text("does not send the COOP/COEP headers")
    expect(page.locator("#live-status")).to_contain_text("Done: 3 epochs")
    # The curves: three points a series, the validation accuracy above chance after epoch 3.
    for chart in ("#accuracy-chart", "#loss-chart"):
        for series in ("train", "valid"):
            assert page.locator(f"{chart} .series.{series} .point").count() == 3
    val_accuracy = float(page.locator("#n-val_accuracy").text_content())
    assert 0.5 < val_accuracy <= 1
    # The tiles: 8 x 8 tiles of 28 pixels with a 2-pixel white gap, many colours, epoch 3's.
    tiles = page.locator("#tiles-canvas")
    expect(tiles).to_be_visible()
    assert tiles.get_attribute("data-epoch") == "3"
    picture = page.evaluate(
        """() => { const canvas = document.getElementById("tiles-canvas");
                   const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
                   const colours = new Set();
                   for (let i = 0; i < pixels.length; i += 4) colours.add(pixels.slice(i, i + 3).join());
                   const gap = (28 * canvas.width + 5) * 4;
                   return { width: canvas.width, height: canvas.height, colours: colours.size,
                            gap: Array.from(pixels.slice(gap, gap + 3)) }; }"""
    )
    assert picture["width"] == picture["height"] == 8 * 30 - 2
    assert picture["colours"] > 100 and picture["gap"] == [255, 255, 255]
    # The pad reads a drawing with the newest epoch's network, in the page (no request leaves it).
    asked_before = len(requests)
    draw(page, SEVEN)
    expect(page.locator("#digit")).to_have_text(ONE_DIGIT)
    expect(page.locator("#asking")).to_contain_text("epoch 3")
    probabilities = json.loads(page.locator("#chart").get_attribute("data-probabilities"))
    assert abs(sum(probabilities) - 1) < 1e-6 and len(probabilities) == 10
    assert len(requests) == asked_before
    # The slider shows epoch 1: its numbers, its tiles, and the pad asks its network.
    page.locator("#epoch-slider").fill("1")
    expect(page.locator("#n-epoch")).to_have_text("1 / 3")
    expect(page.locator("#asking")).to_contain_text("epoch 1")
    assert tiles.get_attribute("data-epoch") == "1"
    assert page.locator("#accuracy-chart .marker").count() == 1
    page.screenshot(path=str(tmp_path / "epoch-1.png"), full_page=True)
    # The run, downloaded: the native engine trains the same weights from the same seed, bit for bit.
    document = page_run_from_download(page, tmp_path)
    assert document["history"]["val_accuracy"][-1] == pytest.approx(val_accuracy, abs=5e-5)
    page_weights = [
        np.frombuffer(base64.b64decode(entry["base64"]), "<f4").reshape(entry["shape"]) for entry in document["weights"]
    ]
    for native, browser in zip(native_reproduction(document, mnist_path, tmp_path), page_weights, strict=True):
        assert np.array_equal(native, browser)
    assert not errors
    # A second visit reads MNIST from the browser's storage: no MNIST file is fetched again.
    requests.clear()
    train_three_epochs(page, static_host)
    expect(page.locator("#live-status")).to_contain_text("Done")
    assert not [url for url in requests if url.endswith(".u8.gz")]
    context.close()


def test_a_bad_setting_gets_the_sentence_digitlab_train_prints(chromium, static_host, capsys):
    assert cli.main(["train", "--learning-rate", "-1", "--epochs", "1"]) == 2
    printed = capsys.readouterr().err.strip().removeprefix("error: ")
    page = chromium.new_page()
    page.goto(static_host)
    expect(page.locator("#train-card")).to_be_visible(timeout=LONG)
    page.locator("#field-learning_rate").fill("-1")
    page.locator("#start").click()
    expect(page.locator("#error-learning_rate")).to_have_text(printed)
    expect(page.locator("#n-epoch")).to_have_text("–")
    page.close()


def test_a_damaged_mnist_download_is_reported_and_not_kept(chromium, site_folder, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    subprocess.run(["cp", "-r", f"{site_folder}/.", str(damaged)], check=True)
    index = json.loads((damaged / "static" / "mnist" / "index.json").read_text())
    target = damaged / "static" / "mnist" / index["arrays"]["x_test"]["file"]
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])  # Cut short.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(damaged)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/", server)
        page = chromium.new_page()
        page.goto(f"http://127.0.0.1:{port}/{SETTINGS}")
        expect(page.locator("#train-card")).to_be_visible(timeout=LONG)
        page.locator("#start").click()
        expect(page.locator("#live-status")).to_contain_text("x_test arrived damaged or cut short", timeout=LONG)
        expect(page.locator("#live-status")).to_contain_text("nothing was kept")
        kept = page.evaluate(
            """(key) => new Promise((resolve) => {
                const request = indexedDB.open("digitlab-mnist", 1);
                request.onsuccess = () => {
                    const get = request.result.transaction("arrays").objectStore("arrays").get(key);
                    get.onsuccess = () => resolve(get.result === undefined ? "nothing" : "kept");
                };
            })""",
            index["arrays"]["x_test"]["sha256"],
        )
        assert kept == "nothing"
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_run_trained_in_the_page_is_sent_to_serve_once_and_opened_by_evaluate(chromium, mnist_path, tmp_path):
    port = free_port()
    runs_dir = tmp_path / "runs"
    server = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(runs_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, DIGITLAB_DATA=str(mnist_path)),
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", server)
        page = chromium.new_page(viewport={"width": 1280, "height": 1400})
        train_three_epochs(page, f"http://127.0.0.1:{port}/")
        # digitlab serve sends COOP/COEP: the page is cross-origin isolated and the engine takes threads.
        assert page.evaluate("crossOriginIsolated") is True
        expect(page.locator("#engine-note")).to_contain_text("threads")
        val_accuracy = page.locator("#n-val_accuracy").text_content()
        page.locator("#send-run").click()
        expect(page.locator("#keep-status")).to_contain_text("Kept on the server as page-shallow-seed5-", timeout=LONG)
        name = page.locator("#keep-status").get_attribute("data-run")
        page.locator("#send-run").click()
        expect(page.locator("#keep-status")).to_contain_text("already kept", timeout=LONG)
        page.screenshot(path=str(tmp_path / "sent.png"), full_page=True)
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [path.name for path in runs_dir.iterdir()] == [name]
    evaluated = subprocess.run(
        [sys.executable, "-m", "digitlab", "evaluate", str(runs_dir / name), "--data", str(mnist_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"accuracy {val_accuracy}" in evaluated.stdout


def test_the_site_opens_and_trains_offline_after_the_first_visit(chromium, static_host):
    context = chromium.new_context()
    page = context.new_page()
    train_three_epochs(page, static_host)
    # The service worker has kept the page's files and controls the page.
    assert page.evaluate("navigator.serviceWorker.ready.then(() => !!navigator.serviceWorker.controller)")
    context.set_offline(True)
    page.reload()
    expect(page.locator("#train-card")).to_be_visible(timeout=LONG)
    page.locator("#start").click()
    expect(page.locator("#live-status")).to_contain_text("Done: 3 epochs", timeout=LONG)
    context.close()


def test_the_page_answers_while_it_trains_and_stop_keeps_the_epochs_done(chromium, static_host, tmp_path):
    context = chromium.new_context(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
    page = context.new_page()
    page.goto(static_host + "?train_limit=2000&epochs=1000&loss=categorical_crossentropy&learning_rate=0.5&seed=7")
    expect(page.locator("#train-card")).to_be_visible(timeout=LONG)
    page.locator("#start").click()
    expect(page.locator("#n-epoch")).to_contain_text("/ 1000", timeout=LONG)
    # The Worker trains; the page still reads a drawing and moves its slider meanwhile.
    draw(page, SEVEN)
    expect(page.locator("#digit")).to_have_text(ONE_DIGIT)
    page.locator("#stop").click()
    expect(page.locator("#live-status")).to_contain_text("Stopped after epoch", timeout=LONG)
    done = int(page.locator("#live-status").text_content().split("epoch ")[1].split()[0])
    assert 1 <= done < 1000
    expect(page.locator("#n-epoch")).to_have_text(f"{done} / 1000")
    document = page_run_from_download(page, tmp_path)
    assert document["status"] == "interrupted" and len(document["history"]["loss"]) == done
    context.close()

"""The page trains the deep net (chapter 9: BatchNormalization, Dropout 0.2, Adam) in headless Chromium, from
the static site on a plain static file server, as it trains the shallow net (tests/test_browser_train.py).

Two epochs on 1,000 training images: the curves, the first layer's tiles, the slider and the drawing pad work;
the downloaded run holds the very arrays the native portable path trains from the same seed (the page's
initial arrays and Dropout seed, digitlab.browser.prng), every BatchNormalization array included, and Adam's
slots; as a run folder `digitlab evaluate` opens it, and `digitlab train --resume` goes on from it (a third
epoch) to the native run's bits.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from playwright.sync_api import expect

import test_browser_train
from digitlab import data, runs, training
from digitlab.browser import page_runs
from digitlab.config import TrainConfig
from digitlab.engine import sparse
from test_browser import draw
from test_browser_train import LONG, SEVEN, page_run_from_download

# The shallow net's test's static site on a plain static file server (module fixtures, used here too).
site_folder, static_host = test_browser_train.site_folder, test_browser_train.static_host

pytestmark = pytest.mark.browser

SETTINGS = "?model=deep&train_limit=1000&epochs=2&seed=4"


def flat(entries) -> np.ndarray:
    return np.concatenate([np.frombuffer(base64.b64decode(entry["base64"]), "<f4") for entry in entries])


def test_the_page_trains_the_deep_net_to_the_native_bits_and_keeps_it_as_a_run(
    chromium, static_host, mnist_path, tmp_path, load_script, monkeypatch
):
    context = chromium.new_context(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(static_host + SETTINGS)
    expect(page.locator("#train-card")).to_be_visible(timeout=LONG)
    assert page.locator("#field-model").input_value() == "deep"
    page.locator("#start").click()
    expect(page.locator("#n-epoch")).to_have_text("2 / 2", timeout=LONG)
    expect(page.locator("#download-run")).to_be_enabled(timeout=LONG)
    expect(page.locator("#live-status")).to_contain_text("Done: 2 epochs")
    page.screenshot(path=str(tmp_path / "deep-trained.png"), full_page=True)
    for chart in ("#accuracy-chart", "#loss-chart"):
        for series in ("train", "valid"):
            assert page.locator(f"{chart} .series.{series} .point").count() == 2
    val_accuracy = float(page.locator("#n-val_accuracy").text_content())
    assert 0.2 < val_accuracy <= 1  # 16 steps of Adam 0.001 on 1,000 images: above chance (0.1), not more.
    tiles = page.locator("#tiles-canvas")
    expect(tiles).to_be_visible()
    assert tiles.get_attribute("data-epoch") == "2"
    # The pad asks the deep net of the newest epoch (its BatchNormalization with the moving statistics).
    draw(page, SEVEN)
    expect(page.locator("#asking")).to_contain_text("epoch 2")
    probabilities = np.array(json.loads(page.locator("#chart").get_attribute("data-probabilities")))
    assert abs(probabilities.sum() - 1) < 1e-6 and len(probabilities) == 10
    page.locator("#epoch-slider").fill("1")
    expect(page.locator("#n-epoch")).to_have_text("1 / 2")
    expect(page.locator("#asking")).to_contain_text("epoch 1")
    assert tiles.get_attribute("data-epoch") == "1"
    page.screenshot(path=str(tmp_path / "deep-epoch-1.png"), full_page=True)
    document = page_run_from_download(page, tmp_path)
    assert not errors
    context.close()

    # Every array (kernels, biases, gamma, beta, the moving statistics) is the native portable path's.
    assert [entry["name"] for entry in document["weights"]][:6] == [
        f"dense_0/{part}" for part in ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")
    ]
    assert document["history"]["val_accuracy"][-1] == pytest.approx(val_accuracy, abs=5e-5)
    config = TrainConfig.from_dict(document["config"]).resolved()
    bench = load_script("browser_bench")
    loaded = data.load(mnist_path)
    three = TrainConfig.from_dict({**document["config"], "epochs": 3}).resolved()
    native, accuracies = bench.native_portable_epochs(three, loaded.arrays)
    assert bench.differing_weights(native[1], flat(document["weights"])) == 0
    # Validation in the page (the C engine's moving statistics) against NumPy's: the same to 3 digits at least.
    assert document["history"]["val_accuracy"][-1] == pytest.approx(accuracies[1], abs=2e-3)
    assert {entry["name"].split("/")[0] for entry in document["slots"]} == {"momentum", "velocity"}

    # Kept as a run folder: `digitlab evaluate` opens it.
    run = page_runs.save_page_run(document, tmp_path / "runs", loaded)
    assert run.status()["status"] == "complete" and config.model == "deep"
    evaluated = subprocess.run(
        [sys.executable, "-m", "digitlab", "evaluate", str(run.path), "--data", str(mnist_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr

    # Had the page been asked for 3 epochs and stopped after 2, it would have sent this document: `train
    # --resume` trains the third epoch from its arrays, Adam's slots and the Dropout seed to the native bits.
    stopped = copy.deepcopy(document)
    stopped.update(status="interrupted", run_id="0" * 32, config={**document["config"], "epochs": 3})
    run = page_runs.save_page_run(stopped, tmp_path / "runs", loaded)
    assert run.status()["status"] == "interrupted" and run.status()["checkpoint_epoch"] == 2
    monkeypatch.setenv(sparse.SCALAR_VARIABLE, "1")  # The native portable path, as the page's bits are its.
    sparse.reload()
    try:
        training.resume(run.path, loaded=loaded, print_fn=lambda *args: None, verbose=0)
    finally:
        monkeypatch.delenv(sparse.SCALAR_VARIABLE)
        sparse.reload()
    resumed = runs.open_run(run.path)
    assert resumed.status()["status"] == "complete"
    weights = np.concatenate([array.ravel() for array in resumed.load_model().get_weights()]).astype(np.float32)
    assert bench.differing_weights(native[2], weights) == 0

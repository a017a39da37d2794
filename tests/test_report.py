"""The HTML report of a run: self-contained, and rendered without errors by real headless Chromium.

The browser test drives Debian's `chromium` (installed by the project's test
setup) through Playwright, by conftest's `chromium` fixture; set DIGITLAB_CHROMIUM
to use another binary. It never downloads a browser. Set DIGITLAB_REPORT_SCREENSHOT to a file name to keep the
screenshot it takes.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from digitlab import cli, config, report, runs, training


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory, mnist_path, quiet):
    """A real deep net, 2 epochs on 3,000 images, validated on held-out training images."""
    settings = config.TrainConfig(model="deep", epochs=2, train_limit=3000, seed=2, engine="fit", validation="holdout")
    return training.train(settings, runs_dir=tmp_path_factory.mktemp("runs"), print_fn=quiet, verbose=0)


@pytest.fixture(scope="module")
def report_path(holdout_run, tmp_path_factory):
    return report.write_report(holdout_run, out_path=tmp_path_factory.mktemp("report") / "report.html")


def test_report_is_self_contained_and_complete(report_path, holdout_run):
    page = report_path.read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 5 and all(source.startswith("data:image/png;base64,") for source in sources)
    assert not re.search(r"<(script|link|iframe)\b", page)
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", page, flags=re.IGNORECASE)
    metrics = holdout_run.metrics()
    for expected in (
        "Configuration",
        "categorical_crossentropy",
        "holdout",
        "Per digit",
        "Confusion matrix",
        "A look inside the network",
        "28×28 image",
        metrics["versions"]["keras"],
        metrics["data_sha256"]["x_train"],
        f"{metrics['test_accuracy']:.4f}",
        "matches the data of this report",
    ):
        assert expected in page, f"the report lacks {expected!r}"
    assert page.count("<tr>") >= 11 + 4  # Ten digits and the mean, plus the four data hashes.


@pytest.mark.heavy  # A second whole report with its figures; the fast tier keeps the first.
def test_report_default_path_and_cli(holdout_run, tmp_path, capsys):
    # `digitlab report RUN` writes into the run folder (`--out PATH`, as report_path's write_report(out_path=)).
    assert cli.main(["report", str(holdout_run.path)]) == 0
    path = holdout_run.file("report.html")
    assert path.stat().st_size > 50_000 and str(path) in capsys.readouterr().out
    assert cli.main(["report", str(holdout_run.path), "--out", str(tmp_path / "missing" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_of_an_unfinished_run_is_refused(holdout_run, tmp_path):
    folder = tmp_path / "unfinished"
    folder.mkdir()
    shutil.copy(holdout_run.file("config.json"), folder / "config.json")
    with pytest.raises(runs.RunError, match="no metrics.json"):
        report.write_report(runs.open_run(folder))


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report_path, tmp_path, chromium):
    problems, requests = [], []
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        # Offline: any request that leaves the file fails, and would show up as a console error.
        page.route(re.compile(r"^https?://"), lambda route: route.abort())
        page.goto(report_path.as_uri(), wait_until="load")
        images = page.evaluate(
            "Array.from(document.images).map(image => ({alt: image.alt, complete: image.complete,"
            " width: image.naturalWidth, height: image.naturalHeight}))"
        )
        heading = page.text_content("h1")
        screenshot = Path(os.environ.get("DIGITLAB_REPORT_SCREENSHOT") or tmp_path / "report.png")
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    assert problems == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    # Every image the page holds (the figures and the look inside the network) decoded in the browser.
    assert len(images) == len(re.findall(r"<img\b", report_path.read_text(encoding="utf-8"))) == 5
    for image in images:
        assert image["complete"] and image["width"] > 300 and image["height"] > 200, image
    assert heading.startswith("digitlab run ")
    assert screenshot.stat().st_size > 100_000

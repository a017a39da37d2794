"""A class in headless Chromium: four pages train at once into one `digitlab serve --class`, and a
learner's own handwriting set is drawn, kept, loaded again and scored every epoch.

Each page trains 3 epochs of the shallow net on 1,000 images (its own seed) and sends its run epoch by
epoch under a student's name; the runs folder then holds four complete runs equal to what each page
trained (its downloaded page run: history and final weights, bit for bit), listed on the board and
openable in the page's own view. Every wait is on what the page shows, never on the clock; the board
and the handwriting panel are photographed into the test's tmp_path.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from digitlab import cli, runs
from test_browser import draw
from test_browser_train import LONG, free_port, wait_for

pytestmark = pytest.mark.browser

SETTINGS = "?train_limit=1000&epochs=3&loss=categorical_crossentropy&learning_rate=0.5&batch_size=32"
STUDENTS = ["Ada", "Grace", "Alan", "Emmy"]
# Polylines in 0-1 coordinates of the pad: a one, a seven, a zero (a diamond).
SHAPES = {
    1: [[(0.5, 0.15), (0.5, 0.85)]],
    7: [[(0.25, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.45, 0.85)]],
    0: [[(0.5, 0.15), (0.75, 0.5), (0.5, 0.85), (0.25, 0.5), (0.5, 0.15)]],
}


@pytest.fixture
def class_server(mnist_path, tmp_path):
    runs_dir = tmp_path / "runs"
    port = free_port()
    command = [sys.executable, "-m", "digitlab", "serve", "--class", "--runs-dir", str(runs_dir), "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--data", str(mnist_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", server)
        yield f"http://127.0.0.1:{port}/", runs_dir
    finally:
        server.terminate()
        server.wait(timeout=30)


def downloaded(page, selector, tmp_path: Path) -> Path:
    with page.expect_download() as download:
        page.locator(selector).click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    return path


def test_a_class_of_four_trains_at_once_and_the_board_shows_every_run(chromium, class_server, tmp_path):
    url, runs_dir = class_server
    pages = []
    for index, student in enumerate(STUDENTS):
        context = chromium.new_context(viewport={"width": 1280, "height": 2200}, accept_downloads=True)
        page = context.new_page()
        page.goto(f"{url}{SETTINGS}&seed={index + 1}")
        expect(page.locator("#class-name-row")).to_be_visible(timeout=LONG)
        page.locator("#class-student").fill(student)
        pages.append(page)
    for page in pages:  # All four train at once.
        page.locator("#start").click()
    for page in pages:
        expect(page.locator("#n-epoch")).to_have_text("3 / 3", timeout=LONG)
        expect(page.locator("#class-status")).to_contain_text("Kept by the class", timeout=LONG)
    board = pages[0]
    expect(board.locator("#board-table tbody tr")).to_have_count(4, timeout=LONG)
    board.locator("#board-card").screenshot(path=str(tmp_path / "board.png"))
    names = sorted(board.locator("#board-table tbody tr td:first-child").all_text_contents())
    assert names == sorted(STUDENTS)
    for page, student in zip(pages, STUDENTS, strict=True):
        name = page.locator("#class-status").get_attribute("data-finished")
        run = runs.open_run(runs_dir / name)
        assert (
            run.status()["status"] == "complete"
            and json.loads(run.file("class.json").read_text())["student"] == student
        )
        document = json.loads(downloaded(page, "#download-run", tmp_path).read_text())
        assert run.history() == document["history"]
        for kept, sent in zip(run.load_model().get_weights(), document["weights"], strict=True):
            assert np.array_equal(kept, np.frombuffer(base64.b64decode(sent["base64"]), "<f4").reshape(sent["shape"]))
        # Epochs' weights come every weights_every_s (GET api/class), the final ones with the finish.
        assert set(run.recorded_epochs()) <= {1, 2, 3}
    # A run opens in the page's own view (slider, tiles, pad) from the board.
    first = board.locator("#board-table tbody tr").first
    with board.context.expect_page() as opened:
        first.locator("a").click()
    view = opened.value
    expect(view.locator("#n-epoch")).to_have_text("3 / 3", timeout=LONG)
    expect(view.locator("#tiles")).to_be_visible(timeout=LONG)
    csv_text = board.evaluate("fetch('api/class/board.csv').then(r => r.text())")
    assert all(student in csv_text for student in STUDENTS)


def test_a_handwriting_set_is_drawn_kept_loaded_and_scored_every_epoch(chromium, class_server, tmp_path, capsys):
    url, runs_dir = class_server
    context = chromium.new_context(viewport={"width": 1280, "height": 2200}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{url}{SETTINGS}&seed=3")
    expect(page.locator("#hw-card")).to_be_visible(timeout=LONG)
    # The class's name row appears above the pad once the page has read api/class: draw after it has.
    expect(page.locator("#class-name-row")).to_be_visible(timeout=LONG)
    for label, strokes in SHAPES.items():
        page.locator("#hw-label").select_option(str(label))
        draw(page, strokes, steps=10, selector="#hw-pad")
        page.locator("#hw-add").click()
        expect(page.locator("#hw-status")).to_contain_text(f"Added a {label}")
    expect(page.locator(".hw-digit")).to_have_count(3)
    saved = downloaded(page, "#hw-download", tmp_path)
    assert [digit["label"] for digit in json.loads(saved.read_text())["digits"]] == [1, 7, 0]
    # Kept in the browser: a reload still has the set; cleared, Load brings it back from the file.
    page.reload()
    expect(page.locator(".hw-digit")).to_have_count(3, timeout=LONG)
    page.evaluate("localStorage.clear()")
    page.reload()
    expect(page.locator("#hw-card")).to_be_visible(timeout=LONG)
    expect(page.locator(".hw-digit")).to_have_count(0)
    page.locator("#hw-load").set_input_files(str(saved))
    expect(page.locator(".hw-digit")).to_have_count(3)
    # Scored every epoch while training, beside the val accuracy; sent to the class with the run.
    page.locator("#class-student").fill("Ada")
    page.locator("#start").click()
    expect(page.locator("#n-epoch")).to_have_text("3 / 3", timeout=LONG)
    expect(page.locator("#hw-score")).to_contain_text("After epoch 3", timeout=LONG)
    assert page.locator("#n-handwriting").text_content() in {"0.0000", "0.3333", "0.6667", "1.0000"}
    expect(page.locator("#class-status")).to_contain_text("Kept by the class", timeout=LONG)
    page.locator("#hw-card").screenshot(path=str(tmp_path / "handwriting.png"))
    name = page.locator("#class-status").get_attribute("data-finished")
    record = json.loads((runs_dir / name / "class.json").read_text())
    assert len(record["handwriting"]) == 3 and all(value in (0, 1 / 3, 2 / 3, 1) for value in record["handwriting"])
    # The PNGs are pictures `digitlab predict` reads.
    with page.expect_download() as first_png:
        page.locator("#hw-pngs").click()
    png = tmp_path / first_png.value.suggested_filename
    first_png.value.save_as(png)
    assert png.name == "digit-1-1.png"
    capsys.readouterr()
    assert cli.main(["predict", str(runs_dir / name), str(png)]) == 0
    assert "digit" in capsys.readouterr().out.lower()
    context.close()

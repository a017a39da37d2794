"""The lab in the browser, without a browser: the page's rules, PRNG, MNIST asset, page runs and `digitlab site`.

The page's JavaScript that must agree with Python bit for bit (prng.js, rules.js) is run in node
against the Python side; the page itself is driven in Chromium by tests/test_browser_train.py.
A page run here is made as the page makes one: the PRNG's initial weights and `digitlab train`'s batch
orders for the seed, trained by digitlab's own engine on 1,000 real images.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digitlab import cli, data, models, runs, training
from digitlab.browser import mnist_asset, page_runs, prng, rules, site
from digitlab.config import TrainConfig
from digitlab.engine import FastEngine

STATIC = Path(site.STATIC_SOURCE)
NODE = shutil.which("node")
TRAIN_IMAGES = 1000
NAN_BIAS = base64.b64encode(np.full(64, np.nan, "<f4").tobytes()).decode()


def run_node(script: str) -> str:
    if NODE is None:
        pytest.skip("node is not installed; tests/test_browser_train.py checks the same in Chromium")
    done = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def loaded(mnist_path):
    return data.load(mnist_path)


def page_run(loaded, epochs_done=2, epochs=2, learning_rate=0.5, seed=11) -> dict:
    """A page run as the page sends it, trained natively from the page's weights and orders."""
    config = TrainConfig(
        model="shallow", epochs=epochs, learning_rate=learning_rate, seed=seed, train_limit=TRAIN_IMAGES
    ).resolved()
    network = models.create_seeded_models(config)[0]
    network.set_weights(prng.initial_weights(seed, [784, 64, 10]))
    engine = FastEngine([network], config)
    (x, y), validation, _ = data.prepare(loaded.arrays, "test", TRAIN_IMAGES)
    history: dict[str, list[float]] = {key: [] for key in runs.HISTORY_KEYS}

    def record(epoch, logs):
        for key in runs.HISTORY_KEYS:
            history[key].append(logs[0][key])

    engine.fit(x, y, validation, epochs=epochs_done, rngs=[np.random.RandomState(seed)], on_epoch_end=record)
    state = engine.get_state()
    names = ["dense_0/kernel", "dense_0/bias", "dense_1/kernel", "dense_1/bias"]
    return {
        **page_runs.head(config, loaded.sha256, "engine.wasm (1 thread)", "a test"),
        "history": history,
        "weights": [
            {
                "name": name,
                "shape": list(state[name][0].shape),
                "base64": base64.b64encode(np.asarray(state[name][0], "<f4").tobytes()).decode(),
            }
            for name in names
        ],
        "status": "complete" if epochs_done == epochs else "interrupted",
        "wall_time_s": 0.5,
    }


@pytest.fixture(scope="module")
def trained(loaded):
    return page_run(loaded)


def fresh(trained) -> dict:
    """A copy of the trained page run under a new run id (another press of Train)."""
    return dict(copy.deepcopy(trained), run_id=uuid.uuid4().hex)


# --- The rules the page checks with ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["learning_rate", "batch_size", "epochs", "seed", "train_limit"])
def test_each_numeric_fields_limits_are_validates_own(name):
    rule = rules.page_document()["fields"][name]
    step = 1 if rule["type"] == "int" else None
    for bound, outward in ((rule["min"], -1), (rule["max"], 1)):
        if bound is None:
            continue
        assert rules.accepts(name, bound)
        beyond = bound + outward * step if step else np.nextafter(bound, outward * np.inf).item()
        assert not rules.accepts(name, beyond)
        assert rule["sentence"].replace("{value}", repr(beyond)) == rules.sentence(name, beyond)


def test_choice_fields_list_the_configs_choices_and_its_sentence():
    document = rules.page_document()
    assert document["fields"]["loss"]["choices"] == ["mean_squared_error", "categorical_crossentropy"]
    assert document["fields"]["model"]["sentence"].replace("{value}", "'big'") == rules.sentence("model", "big")
    assert set(document["browser_models"]) <= set(document["fields"]["model"]["choices"])
    assert len(document["tiles"]["palette"]) == 255 and document["tiles"]["grid"]["shallow"] == [8, 8]


def test_the_pages_check_says_what_digitlab_train_says(tmp_path):
    document = rules.page_document()
    (tmp_path / "page.json").write_text(json.dumps(document))
    # The form's text, and the value `digitlab train` would check (its flags parse numbers as the page does).
    cases = [
        ("learning_rate", "-1", -1.0),
        ("learning_rate", "11", 11.0),
        ("learning_rate", "0", 0.0),
        ("learning_rate", "20000000000000000", 2e16),
        ("learning_rate", "abc", "abc"),
        ("batch_size", "0", 0),
        ("batch_size", "2.5", "2.5"),
        ("epochs", "100001", 100001),
        ("seed", "-3", -3),
        ("train_limit", "0", 0),
        ("loss", "hinge", "hinge"),
    ]
    script = f"""
        import {{ check }} from "{(STATIC / "rules.js").as_uri()}";
        import {{ readFileSync }} from "node:fs";
        const rules = JSON.parse(readFileSync("{tmp_path / "page.json"}", "utf8"));
        const cases = {json.dumps([case[:2] for case in cases])};
        console.log(JSON.stringify(cases.map(([name, text]) => check(rules, {{ [name]: text }}))));
        console.log(JSON.stringify(check(rules, {{ learning_rate: "3", epochs: "4" }})));
    """
    lines = run_node(script).splitlines()
    for (name, text, value), answer in zip(cases, json.loads(lines[0]), strict=True):
        assert answer == {"field": name, "sentence": rules.sentence(name, value)}, (name, text)
    resolved = json.loads(lines[1])["config"]
    assert resolved["learning_rate"] == 3 and resolved["epochs"] == 4 and resolved["loss"] == "mean_squared_error"


def test_the_pages_initial_weights_are_pythons_bit_for_bit():
    script = f"""
        import {{ initialWeights }} from "{(STATIC / "prng.js").as_uri()}";
        const weights = initialWeights(123, [784, 64, 64, 10]);
        console.log(JSON.stringify(weights.map((array) => Array.from(new Uint32Array(array.buffer)))));
    """
    page = json.loads(run_node(script))
    weights = prng.initial_weights(123, [784, 64, 64, 10])
    for mine, theirs in zip(weights, page, strict=True):
        assert np.array_equal(mine.ravel().view(np.uint32), np.asarray(theirs, np.uint32))
    limit = np.sqrt(6 / (784 + 64))
    assert weights[0].shape == (784, 64) and np.abs(weights[0]).max() <= limit and not weights[1].any()
    assert np.abs(weights[0]).max() > 0.99 * limit and abs(float(weights[0].mean())) < 0.01 * limit
    assert not np.array_equal(weights[0], prng.initial_weights(124, [784, 64, 10])[0])


# --- MNIST for the browser ------------------------------------------------------------------------


def test_the_mnist_asset_round_trips_to_the_same_arrays(loaded, tmp_path):
    files = mnist_asset.build(loaded.arrays)
    mnist_asset.write(files, tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    assert {key: entry["sha256"] for key, entry in index["arrays"].items()} == data.fingerprint(loaded.arrays)
    compressed = sum(entry["gzip_bytes"] for entry in index["arrays"].values())
    assert compressed < 0.3 * sum(entry["bytes"] for entry in index["arrays"].values())
    arrays = mnist_asset.read(tmp_path)
    for key in data.NPZ_KEYS:
        assert np.array_equal(arrays[key], loaded.arrays[key])
    # A truncated download is refused, not read as something else.
    damaged = tmp_path / index["arrays"]["y_test"]["file"]
    damaged.write_bytes(gzip.compress(gzip.decompress(damaged.read_bytes())[:-10]))
    with pytest.raises(mnist_asset.AssetError, match="does not hold the bytes"):
        mnist_asset.read(tmp_path)


# --- digitlab site --------------------------------------------------------------------------------


def test_the_site_holds_the_page_its_engine_rules_mnist_and_service_worker(loaded, tmp_path, capsys):
    folder = tmp_path / "public"
    assert cli.main(["site", str(folder)]) == 0
    assert "wrote the site" in capsys.readouterr().out
    page = (folder / "index.html").read_text()
    assert site.PAGE_META in page and 'src="static/browser.js"' in page and "/static/" not in page
    for name in ("engine/engine.js", "engine/engine.wasm", "browser.js", "train-worker.js", "page.json", "mnist.js"):
        assert (folder / "static" / name).stat().st_size > 0, name
    assert json.loads((folder / "static" / "page.json").read_text()) == json.loads(json.dumps(rules.page_document()))
    assert np.array_equal(mnist_asset.read(folder / "static" / "mnist")["x_test"], loaded.arrays["x_test"])
    worker = (folder / "sw.js").read_text()
    assert worker.startswith("const VERSION = ") and '"static/engine/engine.wasm"' in worker
    assert "Cross-Origin-Embedder-Policy: require-corp" in (folder / "_headers").read_text()
    marker = json.loads((folder / site.MARKER).read_text())
    assert sorted(marker["files"]) == sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file() and path.name != site.MARKER
    )
    # A previous site is replaced: a file it wrote and no longer writes goes.
    (folder / "static" / "mnist" / "x_train.old.u8.gz").write_bytes(b"old")
    marker["files"].append("static/mnist/x_train.old.u8.gz")
    (folder / site.MARKER).write_text(json.dumps(marker))
    assert cli.main(["site", str(folder)]) == 0
    assert not (folder / "static" / "mnist" / "x_train.old.u8.gz").exists()


def test_a_non_empty_folder_that_is_not_a_site_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["site", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "is not empty and is not a site digitlab wrote" in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    assert cli.main(["site", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


# --- A run from the page, kept as a run folder ----------------------------------------------------


def test_a_page_run_becomes_a_run_folder_that_digitlab_opens(loaded, trained, tmp_path):
    document = fresh(trained)
    run = page_runs.save_page_run(document, tmp_path, loaded)
    opened = runs.open_run(run.path)
    assert opened.status()["status"] == "complete"
    assert opened.history() == document["history"]
    model = opened.load_model()
    kernel = np.frombuffer(base64.b64decode(document["weights"][0]["base64"]), "<f4").reshape(784, 64)
    assert np.array_equal(model.get_weights()[0], kernel)
    summary = runs.list_runs(tmp_path)[0]
    assert summary["engine"] == page_runs.ENGINE_NAME and summary["epochs"] == 2
    with pytest.raises(page_runs.AlreadySaved, match="already kept"):
        page_runs.save_page_run(document, tmp_path, loaded)
    assert len(list(tmp_path.iterdir())) == 1


def test_a_stopped_page_run_is_finished_by_train_resume_as_if_never_stopped(loaded, tmp_path):
    stopped = page_run(loaded, epochs_done=1, epochs=2)
    run = page_runs.save_page_run(stopped, tmp_path, loaded)
    assert run.status()["status"] == "interrupted"
    training.resume(run.path, loaded=loaded, print_fn=lambda *args: None, verbose=0)
    resumed = runs.open_run(run.path)
    whole = page_run(loaded, epochs_done=2, epochs=2)  # The same run, never stopped.
    assert resumed.history() == whole["history"]
    kernel = np.frombuffer(base64.b64decode(whole["weights"][0]["base64"]), "<f4").reshape(784, 64)
    assert np.array_equal(resumed.load_model().get_weights()[0], kernel)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format="other"), "not a run from the page"),
        (lambda d: d.update(run_id="../../etc"), "run_id must be 32"),
        (lambda d: d["config"].update(learning_rate=-1.0), "learning_rate must be a number above 0"),
        (lambda d: d["config"].update(model="lenet"), "not lenet"),
        (lambda d: d["history"]["loss"].pop(), "one value per epoch"),
        (lambda d: d["weights"][0].update(shape=[784, 32]), "expected dense_0/kernel of shape"),
        (lambda d: d["weights"][1].update(base64="AAAA"), "holds 3 bytes"),
        (lambda d: d["weights"][1].update(base64=NAN_BIAS), "not finite"),
        (lambda d: d.update(status="complete", history={k: v[:1] for k, v in d["history"].items()}), "cannot have 1"),
        (lambda d: d.update(extra=1), "Unknown field"),
    ],
)
def test_a_bad_page_run_is_refused_with_a_sentence_and_nothing_written(loaded, trained, tmp_path, change, message):
    document = fresh(trained)
    change(document)
    with pytest.raises(page_runs.PageRunError, match=message):
        page_runs.save_page_run(document, tmp_path / "runs", loaded)
    assert not (tmp_path / "runs").exists()


def test_the_server_keeps_a_page_run_once_and_serves_the_pages_files(loaded, trained, mnist_path, tmp_path):
    from digitlab.serve import app as serving

    client = TestClient(serving.create_app(runs_dir=tmp_path, data_path=str(mnist_path)))
    page = client.get("/")
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert "'wasm-unsafe-eval'" in page.headers["content-security-policy"]
    assert client.get("/static/browser.js").headers["cross-origin-opener-policy"] == "same-origin"
    assert "cross-origin-embedder-policy" not in client.get("/docs").headers  # Swagger UI's CDN scripts.
    assert client.get("/static/page.json").json() == json.loads(json.dumps(rules.page_document()))
    index = client.get("/static/mnist/index.json")
    assert index.headers["cache-control"] == "no-cache"
    entry = index.json()["arrays"]["y_test"]
    labels = client.get(f"/static/mnist/{entry['file']}")
    assert "immutable" in labels.headers["cache-control"] and "content-encoding" not in labels.headers
    assert np.array_equal(np.frombuffer(gzip.decompress(labels.content), np.uint8), loaded.arrays["y_test"])
    document = fresh(trained)
    first = client.post("/api/runs", json=document)
    assert first.status_code == 201, first.text
    again = client.post("/api/runs", json=document)
    assert again.status_code == 409 and "already kept" in again.json()["detail"]
    assert [path.name for path in tmp_path.iterdir()] == [first.json()["run"]]
    other = dict(document, run_id=uuid.uuid4().hex, data_sha256={key: "0" * 64 for key in data.NPZ_KEYS})
    refused = client.post("/api/runs", json=other)
    assert refused.status_code == 409 and "other MNIST" in refused.json()["detail"]
    assert client.post("/api/runs", content=b"{not json").status_code == 400
    assert client.post("/api/runs", json={"format": "x"}).status_code == 422


def test_digitlab_import_keeps_a_downloaded_page_run(trained, tmp_path, capsys):
    file = tmp_path / "page-run.json"
    file.write_text(json.dumps(fresh(trained)))
    assert cli.main(["import", str(file), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "kept" in capsys.readouterr().out
    assert runs.list_runs(tmp_path / "runs")[0]["status"] == "complete"
    assert cli.main(["import", str(file), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "already kept" in capsys.readouterr().err
    assert cli.main(["import", str(tmp_path / "missing.json")]) == 2

"""A class (serve/classroom.py): students' pages send their runs epoch by epoch; every bad submission
is refused with a sentence and nothing written; the board lists the runs and exports them.

The runs' weights are the page's initial weights (prng.initial_weights): the server checks shapes and
numbers, not how the weights were trained, so no training is needed here. The simulated class of
scripts/class_bench.py, shortened, is the heavy test at the end.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digitlab import data, runs
from digitlab.browser import page_runs, prng
from digitlab.config import TrainConfig
from digitlab.serve import access, class_runs, classroom
from digitlab.serve import app as serving

OPERATOR, VIEWER, STUDENT = "operator-token-0123456789", "viewer-token-0123456789", "student-token-0123456789"
EPOCHS = 3
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded(mnist_path):
    return data.load(mnist_path)


def make_client(tmp_path, mnist_path, **settings) -> TestClient:
    permissions = access.Access(OPERATOR, VIEWER, STUDENT)
    app = serving.create_app(
        runs_dir=tmp_path,
        data_path=str(mnist_path),
        permissions=permissions,
        class_settings=classroom.ClassSettings(**settings),
    )
    return TestClient(app, base_url="http://testserver")


def settings(loaded, student="Ada", seed=7, learning_rate=0.5) -> dict:
    config = TrainConfig(model="shallow", epochs=EPOCHS, learning_rate=learning_rate, seed=seed, train_limit=1000)
    return {**page_runs.head(config, loaded.sha256, "test", "test"), "student": student}


def encoded(weights) -> list[dict]:
    names = ["dense_0/kernel", "dense_0/bias", "dense_1/kernel", "dense_1/bias"]
    return [
        {"name": name, "shape": list(w.shape), "base64": base64.b64encode(np.asarray(w, "<f4").tobytes()).decode()}
        for name, w in zip(names, weights, strict=True)
    ]


def epoch_body(epoch: int, seed=7, scale=1.0, handwriting=0.5) -> dict:
    weights = [w * scale for w in prng.initial_weights(seed + epoch, [784, 64, 10])]
    return {
        "epoch": epoch,
        "history": {
            "loss": [0.1 / epoch],
            "accuracy": [0.8],
            "val_loss": [0.09 / epoch],
            "val_accuracy": [0.8 + epoch / 100],
        },
        "weights": encoded(weights),
        "handwriting_accuracy": handwriting,
    }


def auth(token=STUDENT, secret=None) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    if secret:
        headers[classroom.SECRET_HEADER] = secret
    return headers


def begin(client, loaded, **kwargs):
    answer = client.post("/api/class/runs", json=settings(loaded, **kwargs), headers=auth())
    assert answer.status_code == 201, answer.text
    return answer.json()["run"], answer.json()["secret"]


def snapshot(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_student_sends_a_run_epoch_by_epoch_and_it_is_an_ordinary_run(tmp_path, mnist_path, loaded):
    client = make_client(tmp_path, mnist_path)
    name, secret = begin(client, loaded, student="Ada Lovelace")
    assert name.startswith("class-ada-lovelace-")
    run = runs.open_run(tmp_path / name)
    assert run.status()["status"] == "running" and run.history()["val_accuracy"] == []
    for epoch in range(1, EPOCHS + 1):
        answer = client.post(f"/api/class/runs/{name}/epochs", json=epoch_body(epoch), headers=auth(secret=secret))
        assert answer.json() == {"run": name, "epochs": epoch, "status": "running"}
        # A closed laptop loses at most the epoch in progress: what came is kept, at once (the run's journal;
        # history.json follows within class_runs.FLUSH_SECONDS).
        kept = class_runs.load(run)
        assert kept.done == epoch and run.recorded_epochs() == list(range(1, epoch + 1))
    # A retry of an epoch already kept is answered and not written again.
    before = snapshot(run.path)
    again = client.post(f"/api/class/runs/{name}/epochs", json=epoch_body(2), headers=auth(secret=secret))
    assert again.status_code == 200 and snapshot(run.path) == before
    done = client.post(
        f"/api/class/runs/{name}/finish", json={"status": "complete", "wall_time_s": 3.5}, headers=auth(secret=secret)
    )
    assert done.json() == {"run": name, "epochs": EPOCHS, "status": "complete"}, done.text
    assert run.status()["status"] == "complete" and run.metrics()["epochs"] == EPOCHS
    last = prng.initial_weights(7 + EPOCHS, [784, 64, 10])
    model_weights = run.load_model().get_weights()
    # The final weights were left out, so the last epoch's (kept at float16) are the run's.
    assert all(np.allclose(a, b, atol=1e-3) for a, b in zip(model_weights, last, strict=True))
    assert run.history()["val_accuracy"] == [0.8 + epoch / 100 for epoch in (1, 2, 3)]
    # The run opens in the page's view as any other run.
    detail = client.get(f"/api/runs/{name}", headers=auth(OPERATOR)).json()
    assert detail["recorded_epochs"] == [1, EPOCHS]
    assert client.get(f"/api/runs/{name}/epochs/2/tiles.png", headers=auth(OPERATOR)).status_code == 200
    # Finished: no more epochs, no second finish.
    late = client.post(f"/api/class/runs/{name}/epochs", json=epoch_body(3), headers=auth(secret=secret))
    assert late.status_code in (200, 409)
    assert (
        client.post(
            f"/api/class/runs/{name}/finish", json={"status": "complete"}, headers=auth(secret=secret)
        ).status_code
        == 409
    )


def test_epochs_without_weights_are_kept_and_a_killed_servers_journal_is_recovered(tmp_path, mnist_path, loaded):
    """The page sends weights every few seconds, not with every epoch; what a killed server acknowledged is
    in the run's journal, and the next server writes it into history.json before showing the board."""
    client = make_client(tmp_path, mnist_path)
    name, secret = begin(client, loaded)
    for epoch in (1, 2, 3):
        body = epoch_body(epoch)
        if epoch == 2:
            del body["weights"]
        answer = client.post(f"/api/class/runs/{name}/epochs", json=body, headers=auth(secret=secret))
        assert answer.status_code == 200, answer.text
    run = runs.Run(tmp_path / name)
    assert run.recorded_epochs() == [1, 3] and len(class_runs.journal_lines(run)) == EPOCHS
    # A server killed before its flush: history.json holds one epoch, the journal three.
    entry = class_runs.load(run)
    entry.history = {key: values[:1] for key, values in entry.history.items()}
    class_runs.write(entry, durable=False)
    assert len(run.history()["val_accuracy"]) == 1
    board = make_client(tmp_path, mnist_path).get("/api/class/board", headers=auth(OPERATOR)).json()["runs"]
    assert board[0]["epochs"] == EPOCHS and len(run.history()["val_accuracy"]) == EPOCHS
    assert board[0]["handwriting"] == [0.5] * EPOCHS
    # The finish sends the final weights at float32: they are the model's, exactly.
    final = prng.initial_weights(99, [784, 64, 10])
    body = {"status": "complete", "weights": encoded(final), "wall_time_s": 1.0}
    assert client.post(f"/api/class/runs/{name}/finish", json=body, headers=auth(secret=secret)).status_code == 200
    assert all(np.array_equal(a, b) for a, b in zip(run.load_model().get_weights(), final, strict=True))
    assert not run.file(class_runs.JOURNAL_FILE).exists() and run.history()["val_accuracy"][-1] == 0.8 + 3 / 100


def test_a_finish_worker_that_died_is_replaced(tmp_path, mnist_path, loaded):
    """Finishes run in worker processes (class_runs.FINISH_WORKERS): one killed between two finishes (out of
    memory, say) takes its pool with it, and the next finish is kept by a new pool."""
    client = make_client(tmp_path, mnist_path)
    classroom_state = client.app.state.classroom
    for student in ("Ada", "Grace"):
        name, secret = begin(client, loaded, student=student)
        for epoch in range(1, EPOCHS + 1):
            client.post(f"/api/class/runs/{name}/epochs", json=epoch_body(epoch), headers=auth(secret=secret))
        if student == "Grace":
            for pid in list(classroom_state.workers._processes):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        done = client.post(f"/api/class/runs/{name}/finish", json={"status": "complete"}, headers=auth(secret=secret))
        assert done.status_code == 200, done.text
        assert runs.Run(tmp_path / name).status()["status"] == "complete"


def test_the_board_lists_sorts_and_exports_the_class(tmp_path, mnist_path, loaded):
    client = make_client(tmp_path, mnist_path)
    for student, rate in (("Ada", 0.5), ("Grace", 0.1)):
        name, secret = begin(client, loaded, student=student, learning_rate=rate)
        for epoch in (1, 2):
            body = epoch_body(epoch, handwriting=0.3 if student == "Ada" else 0.9)
            assert (
                client.post(f"/api/class/runs/{name}/epochs", json=body, headers=auth(secret=secret)).status_code == 200
            )
    board = client.get("/api/class/board", headers=auth(OPERATOR)).json()["runs"]
    assert sorted(row["student"] for row in board) == ["Ada", "Grace"]
    assert {row["student"]: row["learning_rate"] for row in board} == {"Ada": 0.5, "Grace": 0.1}
    assert all(
        row["epochs"] == 2 and row["status"] == "running" and "secret_sha256" not in json.dumps(row) for row in board
    )
    table = list(csv.DictReader(io.StringIO(client.get("/api/class/board.csv", headers=auth(OPERATOR)).text)))
    assert {row["student"]: row["handwriting_accuracy"] for row in table} == {"Ada": "0.3", "Grace": "0.9"}
    html = client.get("/api/class/report.html", headers=auth(OPERATOR)).text
    assert "Grace" in html and "data:image/png;base64," in html and "<html" in html
    # Students see the board only when the teacher says so.
    assert client.get("/api/class/board", headers=auth(STUDENT)).status_code == 403
    shown = make_client(tmp_path, mnist_path, board_for_students=True)
    assert len(shown.get("/api/class/board", headers=auth(STUDENT)).json()["runs"]) == 2


BAD_EPOCHS = {
    "wrong shape": (lambda body: body["weights"][0].update(shape=[784, 32]), 422, "expected dense_0/kernel"),
    "NaN weights": (
        lambda body: body["weights"][1].update(base64=base64.b64encode(np.full(64, np.nan, "<f4").tobytes()).decode()),
        422,
        "not finite",
    ),
    "NaN in the history": (lambda body: body["history"].update(loss=[float("nan")]), 422, "finite"),
    "two rows": (
        lambda body: body["history"].update(loss=[1, 2], accuracy=[1, 2], val_loss=[1, 2], val_accuracy=[1, 2]),
        422,
        "one value",
    ),
    "short bytes": (lambda body: body["weights"][1].update(base64=base64.b64encode(b"\0" * 8).decode()), 422, "bytes"),
    "unknown field": (lambda body: body.update(path="../../etc"), 422, "Unknown field"),
    "skipped epoch": (lambda body: body.update(epoch=3), 409, "send epoch 1"),
    "handwriting out of range": (lambda body: body.update(handwriting_accuracy=7), 422, "from 0 to 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_EPOCHS))
def test_a_bad_epoch_is_refused_with_a_sentence_and_nothing_written(tmp_path, mnist_path, loaded, case):
    client = make_client(tmp_path, mnist_path)
    name, secret = begin(client, loaded)
    before = snapshot(tmp_path)
    change, status, words = BAD_EPOCHS[case]
    body = epoch_body(1)
    change(body)
    answer = client.post(f"/api/class/runs/{name}/epochs", content=json.dumps(body), headers=auth(secret=secret))
    assert answer.status_code == status and words in answer.json()["detail"], answer.text
    assert snapshot(tmp_path) == before


BAD_STARTS = {
    "forged name": ({"student": "../../etc"}, 422, "student must be your name"),
    "empty name": ({"student": ""}, 422, "student must be your name"),
    "slash in name": ({"student": "a/b"}, 422, "student must be your name"),
    "not a browser net": ({"config": {"model": "lenet"}}, 422, "The page trains"),
    "bad run id": ({"run_id": "../x"}, 422, "run_id"),
    "other data": ({"data_sha256": {"x_train": "0" * 64}}, 409, "other MNIST"),
}


@pytest.mark.parametrize("case", sorted(BAD_STARTS))
def test_a_bad_start_is_refused_and_nothing_written(tmp_path, mnist_path, loaded, case):
    client = make_client(tmp_path, mnist_path)
    change, status, words = BAD_STARTS[case]
    document = settings(loaded)
    document.update(change)
    answer = client.post("/api/class/runs", json=document, headers=auth())
    assert answer.status_code == status and words in answer.json()["detail"], answer.text
    assert list(tmp_path.iterdir()) == []


def test_students_cannot_touch_each_others_runs_nor_leave_the_runs_folder(tmp_path, mnist_path, loaded):
    client = make_client(tmp_path, mnist_path)
    ada, ada_secret = begin(client, loaded, student="Ada")
    _, grace_secret = begin(client, loaded, student="Grace")
    before = snapshot(tmp_path)
    for secret in (grace_secret, None, "x" * 32):
        answer = client.post(f"/api/class/runs/{ada}/epochs", json=epoch_body(1), headers=auth(secret=secret))
        assert answer.status_code == 403 and "not your run" in answer.json()["detail"]
        finish = client.post(
            f"/api/class/runs/{ada}/finish", json={"status": "interrupted"}, headers=auth(secret=secret)
        )
        assert finish.status_code == 403
    for name in ("..%2F..%2Fetc", "class-..-0123456789ab", "class-ada-0123456789ab", "page-x"):
        answer = client.post(f"/api/class/runs/{name}/epochs", json=epoch_body(1), headers=auth(secret=ada_secret))
        assert answer.status_code == 404, (name, answer.text)
    # The same run (by its id) sent again is refused, not written over.
    assert snapshot(tmp_path) == before
    # Nothing in the API deletes a run.
    assert client.delete(f"/api/class/runs/{ada}", headers=auth(secret=ada_secret)).status_code in (404, 405)
    assert snapshot(tmp_path) == before


def test_a_view_only_link_cannot_submit_and_no_token_cannot_either(tmp_path, mnist_path, loaded):
    client = make_client(tmp_path, mnist_path)
    assert client.post("/api/class/runs", json=settings(loaded), headers=auth(VIEWER)).status_code == 403
    assert client.post("/api/class/runs", json=settings(loaded)).status_code == 401
    other_site = {**auth(), "Origin": "http://elsewhere.example"}
    assert client.post("/api/class/runs", json=settings(loaded), headers=other_site).status_code == 403
    assert list(tmp_path.iterdir()) == []


def test_the_runs_folders_cap_and_a_students_rate_are_refused_clearly(tmp_path, mnist_path, loaded):
    client = make_client(tmp_path, mnist_path, cap_bytes=200_000)
    name, secret = begin(client, loaded)
    assert (
        client.post(f"/api/class/runs/{name}/epochs", json=epoch_body(1), headers=auth(secret=secret)).status_code
        == 200
    )
    before = snapshot(tmp_path)
    full = client.post(f"/api/class/runs/{name}/epochs", json=epoch_body(2), headers=auth(secret=secret))
    assert full.status_code == 413 and "runs folder is full" in full.json()["detail"], full.text
    assert snapshot(tmp_path) == before
    quick = make_client(tmp_path / "rate", mnist_path, rate_per_s=0.001, burst=2)
    name, secret = begin(quick, loaded, student="Speedy")
    assert (
        quick.post(f"/api/class/runs/{name}/epochs", json=epoch_body(1), headers=auth(secret=secret)).status_code == 200
    )
    before = snapshot(tmp_path / "rate")
    fast = quick.post(f"/api/class/runs/{name}/epochs", json=epoch_body(2), headers=auth(secret=secret))
    assert fast.status_code == 429 and "Speedy sends more than" in fast.json()["detail"]
    assert snapshot(tmp_path / "rate") == before


def test_a_body_over_the_size_of_a_run_is_refused(tmp_path, mnist_path, loaded):
    client = make_client(tmp_path, mnist_path)
    name, secret = begin(client, loaded)
    huge = b'{"epoch": 1, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    answer = client.post(f"/api/class/runs/{name}/epochs", content=huge, headers=auth(secret=secret))
    assert answer.status_code == 413
    assert runs.Run(tmp_path / name).recorded_epochs() == []


def test_the_one_shot_upload_still_keeps_a_page_run(tmp_path, mnist_path, loaded):
    """The upload is the epoch-by-epoch mechanism sent at once: begin, add_epochs, finish."""
    document = settings(loaded)
    del document["student"]
    document.update(
        history={key: [0.5] * EPOCHS for key in runs.HISTORY_KEYS},
        weights=encoded(prng.initial_weights(3, [784, 64, 10])),
        status="complete",
        wall_time_s=1.0,
    )
    run = page_runs.save_page_run(document, tmp_path, loaded)
    assert run.status()["status"] == "complete" and run.history()["loss"] == [0.5] * EPOCHS
    assert all(
        np.array_equal(a, b)
        for a, b in zip(run.load_model().get_weights(), prng.initial_weights(3, [784, 64, 10]), strict=True)
    )


@pytest.mark.heavy
def test_a_simulated_class_completes_every_run(tmp_path):
    """scripts/class_bench.py, shortened: 8 students x 6 epochs into one real digitlab serve."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "class_bench.py"),
            "--students",
            "8",
            "--epochs",
            "6",
            "--runs-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "errors                 0" in done.stdout and "runs complete          8 / 8" in done.stdout, done.stdout
    complete = [path for path in tmp_path.glob("class-*") if runs.Run(path).status()["status"] == "complete"]
    assert len(complete) == 8


ODD_STARTS = [
    None,
    [],
    1,
    {},
    {"student": 5},
    {"config": {"model": "shallow", "epochs": "x"}},
    {"config": {"model": "shallow", "epochs": []}},
    {"config": {"model": "shallow", "zz": 1}},
    {"config": {"model": "shallow", "learning_rate": None}},
    {"config": {"model": "shallow", "units": "abc"}},
    {"config": {"model": "shallow", "epochs": 10**30}},
    {"config": {"model": ["shallow"]}},
    {"config": []},
    {"run_id": 5},
    {"version": "1"},
    {"data_sha256": None},
    {"student": "a" * 41},
    {"student": "\u0000x"},
]
ROW = {"loss": [1], "accuracy": [1], "val_loss": [1], "val_accuracy": [1]}
ODD_EPOCHS = [
    None,
    [],
    {},
    {"epoch": "1"},
    {"epoch": True},
    {"epoch": 10**40},
    {"epoch": 1},
    {"epoch": 1, "history": []},
    {"epoch": 1, "history": {"loss": 1}},
    {"epoch": 1, "history": ROW, "weights": []},
    {"epoch": 1, "history": ROW, "weights": [None] * 4},
    {"epoch": 1, "history": ROW, "weights": [{"name": "dense_0/kernel", "shape": "ab", "base64": 5}] * 4},
    {"epoch": 1, "history": dict(ROW, loss=[10**400])},
    {"epoch": 1, "handwriting_accuracy": "x"},
]
ODD_FINISHES = [None, [], {}, {"status": 1}, {"status": "complete"}, {"status": "interrupted", "wall_time_s": "x"}]


def test_odd_bodies_get_a_4xx_never_a_500(tmp_path, mnist_path, loaded):
    """The shapes a fuzzer tries (the API's schema test fuzzes these routes too): each a 4xx with a sentence."""
    client = make_client(tmp_path, mnist_path, rate_per_s=1000, burst=1000)
    client = TestClient(client.app, raise_server_exceptions=False)
    for change in ODD_STARTS:
        body = change if not isinstance(change, dict) or not change else {**settings(loaded), **change}
        answer = client.post("/api/class/runs", content=json.dumps(body), headers=auth())
        assert 400 <= answer.status_code < 500 and answer.json()["detail"], (change, answer.text)
    name, secret = begin(client, loaded)
    for body in ODD_EPOCHS:
        answer = client.post(f"/api/class/runs/{name}/epochs", content=json.dumps(body), headers=auth(secret=secret))
        assert 400 <= answer.status_code < 500 and answer.json()["detail"], (body, answer.text)
    for body in ODD_FINISHES:
        answer = client.post(f"/api/class/runs/{name}/finish", content=json.dumps(body), headers=auth(secret=secret))
        assert 400 <= answer.status_code < 500 and answer.json()["detail"], (body, answer.text)
    assert runs.Run(tmp_path / name).history()["val_accuracy"] == []


def test_serve_refuses_a_cap_that_is_not_positive(capsys):
    from digitlab import cli

    assert cli.main(["serve", "--class", "--class-cap-mb", "0"]) == 2
    assert "--class-cap-mb must be a positive number" in capsys.readouterr().err


def test_a_class_prints_a_students_link_off_loopback():
    permissions = access.Access.for_host("0.0.0.0").with_students()
    link = permissions.link("http://host:8000/", access.STUDENT)
    assert permissions.student_token and link.endswith(permissions.student_token)
    assert permissions.role(permissions.student_token) == access.STUDENT
    assert permissions.role(permissions.view_token) == access.VIEWER
    assert access.Access().with_students().open  # Loopback: no tokens at all.

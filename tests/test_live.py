"""Tests of the runs API (serve/live.py): saved runs and a run that another training writes now, their
events, the networks of any epoch (serve/networks.py) and the tokens (serve/access.py), in-process
through FastAPI's TestClient, on run folders trained for real on a 600-image subset of the real MNIST
(conftest's small_npz).

The real server on loopback, following a real `digitlab train`, is test_live_server.py; the page in
headless Chromium is test_live_browser.py.
"""

from __future__ import annotations

import base64
import io
import json
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import digitlab  # noqa: F401  (chooses the JAX backend)
from digitlab import cli, config, data, runs, training
from digitlab.serve import access
from digitlab.serve import app as serving

QUICK = config.TrainConfig(learning_rate=0.5, epochs=3, seed=3, record_epochs=True)


@pytest.fixture
def server(tmp_path, small_npz):
    """The app keeping runs in tmp_path/runs, with small_npz as its MNIST."""
    app = serving.create_app(runs_dir=tmp_path / "runs", data_path=small_npz)
    with TestClient(app) as client:
        client.runs_dir, client.data_path = tmp_path / "runs", small_npz
        yield client


def events_of(client, name, headers=None, pushed=None) -> list[tuple[str, str, dict]]:
    """(id, event, data) of every event of a run's stream; returns once the stream ends (with the run).
    The `tiles` events' epochs go to the list `pushed`."""
    answer = client.get(f"/api/runs/{name}/events", headers=headers or {})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    found = []
    for block in answer.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields.get("event") == "tiles":  # The newest epoch's pictures, sent to live viewers.
            tiles = json.loads(fields["data"])
            head, inside = tiles["png"].split(",", 1)
            assert head == "data:image/png;base64" and "id" not in fields
            # The epoch's tiles, as GET .../tiles.png gives them (for the last epoch of a finished run, its
            # model.keras rather than the float16 record: a colour step apart here and there at most).
            picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(inside))), dtype=int)
            fetched = client.get(f"/api/runs/{name}/epochs/{tiles['epoch']}/tiles.png", headers=headers or {})
            assert np.abs(picture - np.asarray(Image.open(io.BytesIO(fetched.content)), dtype=int)).max() <= 1
            if pushed is not None:
                pushed.append(tiles["epoch"])
        elif "event" in fields:
            found.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return found


def train(client, quiet, **changes) -> runs.Run:
    """A run trained as `digitlab train` trains it, into the server's runs folder."""
    wanted = config.TrainConfig(**{**QUICK.to_dict(), **changes})
    return training.train(wanted, runs_dir=client.runs_dir, data_path=client.data_path, print_fn=quiet)


@pytest.fixture
def trained(server, quiet):
    run = train(server, quiet)
    return run.name, run


# --- A saved run's events, and a run that another training writes now, followed -----------------------


def test_a_saved_run_replays_its_epochs_from_its_folder(server, trained):
    name, run = trained
    found = events_of(server, name)
    assert [(event_id, kind) for event_id, kind, _ in found] == [
        ("1", "epoch"),
        ("2", "epoch"),
        ("3", "epoch"),
        ("end", "end"),
    ]
    epochs = [payload for _, kind, payload in found if kind == "epoch"]
    assert [payload["epoch"] for payload in epochs] == [1, 2, 3] and all(payload["epochs"] == 3 for payload in epochs)
    assert all(payload["tiles"] == f"/api/runs/{name}/epochs/{payload['epoch']}/tiles.png" for payload in epochs)
    assert "event: tiles" not in server.get(f"/api/runs/{name}/events").text  # Only live viewers get pictures.
    assert found[-1][2]["status"] == "complete" and found[-1][2]["epoch"] == 3
    assert found[-1][2]["final_val_accuracy"] == run.history()["val_accuracy"][-1]
    history = run.history()
    for payload in epochs:
        for key in runs.HISTORY_KEYS:
            assert payload[key] == history[key][payload["epoch"] - 1]


def test_events_replay_with_last_event_id(server, trained):
    name, _ = trained
    assert [event_id for event_id, _, _ in events_of(server, name, {"Last-Event-ID": "2"})] == ["3", "end"]
    assert [event_id for event_id, _, _ in events_of(server, name, {"Last-Event-ID": "3"})] == ["end"]
    assert server.get(f"/api/runs/{name}/events", headers={"Last-Event-ID": "end"}).status_code == 204
    bad = server.get(f"/api/runs/{name}/events", headers={"Last-Event-ID": "three"})
    assert bad.status_code == 400 and "epoch number" in bad.json()["detail"]
    assert server.get("/api/runs/no-such-run/events").status_code == 404
    assert server.get("/api/runs/..%2F..%2Fetc/events").status_code == 404


def test_a_run_another_training_writes_is_followed_epoch_by_epoch(server, quiet):
    """A training (here in a thread, as `digitlab train` in another process: the run's status and lock say
    it is being written) held after its second epoch: the server lists it as training with two epochs; a
    viewer who comes then gets those two, then each later epoch as it is written, its tiles pushed with it,
    then the end."""
    second, go_on = threading.Event(), threading.Event()

    def hold(epochs_done, histories, wall_time_s):
        if epochs_done == 2:
            second.set()
            assert go_on.wait(120), "the test never let the training go on"

    trainer = threading.Thread(
        target=training.train,
        args=(config.TrainConfig(**{**QUICK.to_dict(), "epochs": 4}),),
        kwargs=dict(runs_dir=server.runs_dir, data_path=server.data_path, print_fn=quiet, on_epoch_end=hold),
    )
    trainer.start()
    try:
        assert second.wait(120)
        (row,) = server.get("/api/runs").json()["runs"]
        name = row["run"]
        assert row["training"] is True and row["status"] == "running" and row["epochs"] == 2
        detail = server.get(f"/api/runs/{name}").json()
        assert detail["training"] is True and len(detail["history"]["val_accuracy"]) == 2
        pushed, found = [], []
        viewer = threading.Thread(target=lambda: found.extend(events_of(server, name, pushed=pushed)))
        viewer.start()
        go_on.set()
        viewer.join(120)
        assert not viewer.is_alive()
    finally:
        go_on.set()
        trainer.join(120)
    assert [event_id for event_id, _, _ in found] == ["1", "2", "3", "4", "end"]
    assert found[-1][2]["status"] == "complete"
    assert pushed and pushed[-1] >= 3 and all(epoch in (2, 3, 4) for epoch in pushed)  # The newest's tiles.
    history = runs.open_run(server.runs_dir / name).history()
    assert [payload["val_accuracy"] for _, kind, payload in found if kind == "epoch"] == history["val_accuracy"]
    assert server.get("/api/runs").json()["runs"][0]["training"] is False
    assert server.get(f"/api/runs/{name}/evaluation").json()["epoch"] == 4  # Its model.keras now.


# --- Any epoch's network: predictions, tiles, evaluation ------------------------------------------


def test_predictions_use_that_epochs_network(server, trained, mnist):
    import keras

    name, run = trained
    _, (x_valid, _) = mnist
    pixels = x_valid[0]
    answers = {}
    trained_model = run.load_model()
    for epoch in (1, 2, 3):
        answer = server.post(f"/api/predict?run={name}&epoch={epoch}", json={"pixels": pixels.tolist()})
        assert answer.status_code == 200 and answer.json()["epoch"] == epoch and answer.json()["run"] == name
        answers[epoch] = np.array(answer.json()["probabilities"])
        model = keras.models.clone_model(trained_model)
        # Keras itself, with that epoch's recorded weights (the last epoch: the run's model.keras, exactly).
        model.set_weights(run.epoch_weights(epoch) if epoch < 3 else trained_model.get_weights())
        expected = model.predict(data.to_inputs(pixels[None]), verbose=0)[0]
        np.testing.assert_allclose(answers[epoch], expected, rtol=0, atol=1e-6)
    assert not np.allclose(answers[1], answers[3])  # The network learned between them.
    last = server.post(f"/api/predict?run={name}", json={"pixels": pixels.tolist()}).json()
    assert last["epoch"] == 3
    np.testing.assert_allclose(last["probabilities"], answers[3], rtol=0, atol=0)
    # The float16 record of the last epoch answers as its model.keras does, to 3 decimals.
    model.set_weights(run.epoch_weights(3))
    np.testing.assert_allclose(model.predict(data.to_inputs(pixels[None]), verbose=0)[0], answers[3], atol=2e-3)

    assert server.post(f"/api/predict?run={name}&epoch=9", json={"pixels": pixels.tolist()}).status_code == 404
    assert server.post("/api/predict?run=nope", json={"pixels": pixels.tolist()}).status_code == 404
    alone = server.post("/api/predict?epoch=2", json={"pixels": pixels.tolist()})  # No run is served here.
    assert alone.status_code == 409 and "?run=NAME&epoch=E" in alone.json()["detail"]
    nothing = server.post("/api/predict", json={"pixels": pixels.tolist()})
    assert nothing.status_code == 409 and "No network is served yet" in nothing.json()["detail"]


def test_tiles_of_each_epoch(server, trained):
    name, run = trained
    pictures = []
    for epoch in (1, 3):
        answer = server.get(f"/api/runs/{name}/epochs/{epoch}/tiles.png")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(answer.content))
        assert picture.size == (8 * 28 + 7 * 2, 8 * 28 + 7 * 2) and picture.mode == "P"
        pictures.append(np.asarray(picture))
    assert (pictures[0] != pictures[1]).any()
    # Unit 0's tile is its 784 weights on the shared symmetric scale, in palette steps 0-254.
    kernel = run.epoch_weights(1)[0]
    expected = np.rint((kernel[:, 0] / np.abs(kernel).max() + 1) * 127).reshape(28, 28)
    np.testing.assert_array_equal(pictures[0][:28, :28], expected)
    assert server.get(f"/api/runs/{name}/epochs/0/tiles.png").status_code == 422  # Epochs count from 1.


def test_evaluation_of_an_epoch_agrees_with_the_history(server, trained):
    name, run = trained
    result = server.get(f"/api/runs/{name}/evaluation").json()
    assert result["epoch"] == 3 and result["images"] == 100
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == 100 and result["errors"] == 100 - np.trace(matrix)
    # Keras's predict and the engine's own validation may differ on one borderline image, no more.
    assert result["accuracy"] == pytest.approx(run.history()["val_accuracy"][-1], abs=0.0101)
    assert len(result["mistakes"]) == min(24, result["errors"])
    assert all(mistake["true"] != mistake["predicted"] for mistake in result["mistakes"])
    first = server.get(f"/api/runs/{name}/evaluation?epoch=1").json()
    assert first["accuracy"] == pytest.approx(run.history()["val_accuracy"][0], abs=0.011)  # float16 weights


def test_runs_listing_and_detail(server, trained):
    name, run = trained
    listing = server.get("/api/runs").json()
    assert [row["run"] for row in listing["runs"]] == [name] and listing["runs"][0]["recorded_epochs"] == 3
    detail = server.get(f"/api/runs/{name}").json()
    assert detail["history"] == run.history() and detail["final_epoch"] == 3 and detail["recorded_epochs"] == [1, 3]
    assert detail["config"]["record_epochs"] is True
    assert server.get("/api/runs/nope").status_code == 404


def test_the_drawing_only_server_keeps_no_runs_and_no_server_trains():
    from digitlab import models

    untrained = models.create_model(config.TrainConfig().resolved())  # Only the routes matter here.
    with TestClient(serving.create_app(untrained, run_name="r")) as client:
        assert client.get("/api/health").json()["runs"] is False
        assert client.get("/api/runs").status_code == 405  # No listing: only POST, which answers it keeps none.
        assert client.post("/api/train", json={"epochs": 3}).status_code == 404  # The page trains; never the server.
        assert client.post("/api/predict?run=r", json={"pixels": [[0] * 28] * 28}).status_code == 404


# --- Tokens -----------------------------------------------------------------------------------------

OPERATOR, VIEWER = "operator-token-0123456789", "viewer-token-0123456789"


@pytest.fixture
def guarded(tmp_path, small_npz):
    permissions = access.Access.for_host("10.1.2.3", OPERATOR, VIEWER)
    app = serving.create_app(runs_dir=tmp_path / "runs", data_path=small_npz, permissions=permissions)
    with TestClient(app) as client:
        client.runs_dir = tmp_path / "runs"
        client.runs_dir.mkdir()
        yield client


PATHS = [
    "/",
    "/static/app.js",
    "/static/style.css",
    "/api/health",
    "/api/runs",
    "/docs",
    "/openapi.json",
    "/api/runs/x/events",
    "/nothing",
]


@pytest.mark.parametrize("path", PATHS)
def test_without_the_token_nothing_is_served(guarded, path):
    answer = guarded.get(path)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {"detail": answer.json()["detail"]} and "token" in answer.json()["detail"]
    wrong = guarded.get(path, headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 403 and "not this server's" in wrong.json()["detail"]
    assert guarded.post("/api/predict", json={"pixels": [[0] * 28] * 28}).status_code == 401


def test_the_links_tokens_and_the_cookie(guarded, trained_run):
    page = guarded.get(f"/?token={VIEWER}")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{access.COOKIE}={VIEWER};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The page's scripts and requests then carry the cookie.
    assert guarded.get("/static/live.js").status_code == 200
    assert guarded.get("/api/health").json()["role"] == "viewer"
    refused = guarded.post("/api/runs", json={})  # Keeping a page's run here is the operator's.
    assert refused.status_code == 403 and "view-only" in refused.json()["detail"]
    import shutil

    shutil.copytree(trained_run, guarded.runs_dir / "kept")
    assert [event[0] for event in events_of(guarded, "kept")] == ["1", "2", "end"]  # A viewer watches runs.
    guarded.cookies.clear()
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert guarded.get("/api/health", headers=operator).json()["role"] == "operator"
    cross_site = guarded.post("/api/runs", json={}, headers={**operator, "Origin": "http://elsewhere.example"})
    assert cross_site.status_code == 403 and "another site" in cross_site.json()["detail"]
    same_site = guarded.post("/api/runs", json={}, headers={**operator, "Origin": "http://testserver"})
    assert same_site.status_code == 422, same_site.text  # Let through; an empty document is not a page run.


def test_access_rules():
    assert access.Access.for_host("127.0.0.1").open and access.Access.for_host("::1").open
    assert access.Access.for_host("localhost").open
    generated = access.Access.for_host("0.0.0.0")
    assert not generated.open and generated.operator_token != generated.view_token
    assert len(generated.operator_token) >= 24
    assert generated.role(generated.operator_token) == "operator" and generated.role(generated.view_token) == "viewer"
    assert generated.role("") is None and generated.role(generated.operator_token + "x") is None
    link = generated.link("http://host:8000/", "viewer")
    assert link == f"http://host:8000/?token={generated.view_token}"
    given = access.Access.for_host("127.0.0.1", operator_token=OPERATOR)  # A token on loopback is required too.
    assert not given.open and given.operator_token == OPERATOR
    for bad in ("short", "has spaces in it right here", "semi;colon;token;xxxxxx"):
        with pytest.raises(access.errors.DigitlabError, match="--token must be 16 to 200"):
            access.Access.for_host("0.0.0.0", operator_token=bad)
    with pytest.raises(access.errors.DigitlabError, match="must differ"):
        access.Access.for_host("0.0.0.0", OPERATOR, OPERATOR)


def test_serve_flags_are_checked(capsys, tmp_path):
    for flags, message in (
        (["--port", "0"], "--port must be from 1 to 65535"),
        (["--max-viewers", "-1"], "--max-viewers must be a positive"),
        (["--host", "0.0.0.0", "--token", "abc"], "--token must be 16 to 200"),
        ([str(tmp_path / "missing")], "No run folder"),
    ):
        assert cli.main(["serve", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


# --- No 500 from what a user can cause (issue 22): each answer is a 4xx with a sentence -------------


@pytest.fixture
def damaged(tmp_path, small_npz, trained_run):
    """A server whose runs folder holds a copy of a complete run (`good`) and `damage(name, **fields)`,
    which adds a copy whose config.json has those fields changed, as a hand edit would."""
    import shutil

    runs_dir = tmp_path / "runs"
    shutil.copytree(trained_run, runs_dir / "good")
    app = serving.create_app(runs_dir=runs_dir, data_path=small_npz)

    def damage(name, **fields):
        shutil.copytree(trained_run, runs_dir / name)
        path = runs_dir / name / runs.CONFIG_FILE
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
        return name

    with TestClient(app) as client:
        client.runs_dir, client.damage = runs_dir, damage
        yield client


PIXELS = {"pixels": [[0] * 14 + [255] * 2 + [0] * 12] * 28}
WRONG_TYPES = [{"epochs": "2"}, {"units": 64}, {"epochs": None, "model": None}, {"epochs": []}, {"batch_size": None}]


def _refused(answer, status, *words):
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and detail.endswith(".") and "Traceback" not in detail, detail
    for word in words:
        assert word in detail, detail
    return detail


@pytest.mark.parametrize("fields", WRONG_TYPES, ids=lambda fields: json.dumps(fields))
def test_a_run_whose_config_holds_a_wrong_type_answers_409(damaged, fields):
    name = damaged.damage("edited", **fields)
    for answer in (
        damaged.get(f"/api/runs/{name}"),
        damaged.get(f"/api/runs/{name}/evaluation"),
        damaged.get(f"/api/runs/{name}/epochs/2/tiles.png"),
        damaged.get(f"/api/runs/{name}/events"),
        damaged.post(f"/api/predict?run={name}", json=PIXELS),
    ):
        _refused(answer, 409, f"The run {name} cannot be opened", "config")
    listed = {row["run"]: row for row in damaged.get("/api/runs").json()["runs"]}
    assert listed["good"]["problem"] is None and listed["good"]["model"] == "shallow"
    assert "config" in listed[name]["problem"] and listed[name]["model"] == "?"
    assert damaged.get("/api/runs/good").status_code == 200  # The damaged run hides no other.


def test_a_config_edited_to_another_network_answers_409(damaged):
    """ "batch_norm": "no" (a string, read as true until config.json is read strictly) asked for a
    network with BatchNormalization that the run's weights do not fit: a sentence, not set_weights' error."""
    name = damaged.damage("batch-norm-no", batch_norm="no")
    for answer in (damaged.post(f"/api/predict?run={name}", json=PIXELS), damaged.get(f"/api/runs/{name}/evaluation")):
        assert answer.status_code == 409, answer.text
        assert name in answer.json()["detail"] and "config.json" in answer.json()["detail"]


def test_a_folder_name_that_is_not_utf8_is_listed_with_why(damaged):
    import os
    import shutil

    shutil.copytree(damaged.runs_dir / "good", os.fsdecode(bytes(damaged.runs_dir) + b"/caf\xe9"))
    answer = damaged.get("/api/runs")
    assert answer.status_code == 200, answer.text
    rows = {row["run"]: row for row in answer.json()["runs"]}
    assert set(rows) == {"good", "caf\ufffd"}
    assert "not UTF-8" in rows["caf\ufffd"]["problem"] and rows["good"]["problem"] is None


@pytest.mark.parametrize("name", ["数字", "a b", "x+y", "run(2)"])
def test_every_name_listed_as_openable_opens(damaged, name):
    import shutil
    import urllib.parse

    shutil.copytree(damaged.runs_dir / "good", damaged.runs_dir / name)
    rows = {row["run"]: row for row in damaged.get("/api/runs").json()["runs"]}
    assert rows[name]["problem"] is None
    quoted = urllib.parse.quote(name, safe="")
    detail = damaged.get(f"/api/runs/{quoted}")
    assert detail.status_code == 200 and detail.json()["run"] == name
    assert damaged.post(f"/api/predict?run={quoted}&epoch=2", json=PIXELS).status_code == 200
    tiles = [event[2]["tiles"] for event in events_of(damaged, quoted) if event[1] == "epoch"]
    assert tiles[-1] == f"/api/runs/{quoted}/epochs/2/tiles.png"
    for hidden in (".hidden", ".."):
        assert damaged.get(f"/api/runs/{urllib.parse.quote(hidden)}").status_code == 404


def test_a_last_event_id_of_other_digits_is_refused(damaged):
    as_query = damaged.get("/api/runs/good/events?last_event_id=%C2%B3")  # '³'.isdigit() is true.
    _refused(as_query, 422, "last_event_id")
    as_header = damaged.get("/api/runs/good/events", headers={"Last-Event-ID": "\u00b3".encode()})
    _refused(as_header, 400, "Last-Event-ID must be an epoch number")
    assert [event[0] for event in events_of(damaged, "good", {"Last-Event-ID": "1"})] == ["2", "end"]


# --- The OpenAPI schema says what the API does (issue 22; tests/test_api_schema.py fuzzes it) --------


def test_every_status_and_the_error_shape_are_in_the_schema(server):
    schema = server.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(schema) and "securitySchemes" not in schema["components"]
    error = {"$ref": "#/components/schemas/ErrorBody"}
    expected = {
        ("get", "/api/runs/{name}/events"): {"200", "204", "400", "404", "409", "422", "503"},
        ("get", "/api/runs/{name}"): {"200", "404", "409", "422"},
        ("get", "/api/runs/{name}/evaluation"): {"200", "404", "409", "422", "503"},
        ("post", "/api/predict"): {"200", "400", "404", "409", "413", "415", "422"},
    }
    for (method, path), statuses in expected.items():
        answers = schema["paths"][path][method]["responses"]
        assert set(answers) == statuses, (path, set(answers))
        for status in statuses - {"200", "202", "204"}:
            assert answers[status]["content"]["application/json"]["schema"] == error, (path, status)
    assert not [path for path in schema["paths"] if path.startswith("/api/train")]  # The server trains nothing.
    # The 422 FastAPI makes itself (a parameter of the wrong type) has the documented shape too.
    assert set(server.get("/api/runs/x/evaluation?epoch=abc").json()) == {"detail"}


def test_a_405_lists_every_method_of_its_path(server):
    for method, path, allowed in (
        ("OPTIONS", "/api/runs", "GET, POST"),
        ("PUT", "/api/runs", "GET, POST"),
        ("DELETE", "/api/runs/x", "GET"),
        ("GET", "/api/predict", "POST"),
    ):
        answer = server.request(method, path)
        assert answer.status_code == 405 and answer.headers["allow"] == allowed, (method, path, answer.headers)
        assert path in answer.json()["detail"]


def test_with_tokens_the_schema_names_them_and_401_403(tmp_path):
    guarded = serving.create_app(runs_dir=tmp_path / "runs", permissions=access.Access(OPERATOR, VIEWER))
    with TestClient(guarded) as client:
        schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {VIEWER}"}).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert (schemes["token_query"]["in"], schemes["token_query"]["name"]) == ("query", "token")
    assert (schemes["token_cookie"]["in"], schemes["token_cookie"]["name"]) == ("cookie", access.COOKIE)
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert {"401", "403"} <= set(operation["responses"])

"""Tests of the live training API (serve/live.py), the networks of any epoch (serve/networks.py) and the
tokens (serve/access.py), in-process through FastAPI's TestClient: real trainings in the server's
thread, on a 600-image subset of the real MNIST (conftest's small_npz), into real run folders.

The real server on loopback and in a network namespace is test_live_server.py; the page in
headless Chromium is test_live_browser.py.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import digitlab  # noqa: F401  (chooses the JAX backend)
from digitlab import cli, config, data, runs, training
from digitlab.serve import access, live
from digitlab.serve import app as serving

QUICK = {"learning_rate": 0.5, "epochs": 3, "seed": 3}


@pytest.fixture
def server(tmp_path, small_npz):
    """The app with training on, its runs in tmp_path/runs, trained on small_npz."""
    app = serving.create_app(runs_dir=tmp_path / "runs", data_path=small_npz, log=lambda *args: None)
    with TestClient(app) as client:
        client.runs_dir = tmp_path / "runs"
        yield client


def events_of(client, name, headers=None) -> list[tuple[str, str, dict]]:
    """(id, event, data) of every event of a run's stream; returns once the stream ends (with the run)."""
    answer = client.get(f"/api/train/{name}/events", headers=headers or {})
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
            pushed = np.asarray(Image.open(io.BytesIO(base64.b64decode(inside))), dtype=int)
            fetched = client.get(f"/api/runs/{name}/epochs/{tiles['epoch']}/tiles.png", headers=headers or {})
            assert np.abs(pushed - np.asarray(Image.open(io.BytesIO(fetched.content)), dtype=int)).max() <= 1
        elif "event" in fields:
            found.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return found


def train(client, **values) -> str:
    answer = client.post("/api/train", json={**QUICK, **values})
    assert answer.status_code == 202, answer.text
    return answer.json()["run"]


# --- Every TrainConfig rule, with the sentence the `train` flag gives ------------------------------

# Bad values whose flag parses, so that `digitlab train` reaches TrainConfig's own rule.
FLAG_RULES = [
    ("learning_rate", 0, ["--learning-rate", "0"]),
    ("learning_rate", 11, ["--learning-rate", "11"]),
    ("batch_size", 0, ["--batch-size", "0"]),
    ("batch_size", 60001, ["--batch-size", "60001"]),
    ("epochs", 0, ["--epochs", "0"]),
    ("epochs", 100001, ["--epochs", "100001"]),
    ("seed", -1, ["--seed", "-1"]),
    ("seed", 2**31, ["--seed", str(2**31)]),
    ("train_limit", 0, ["--train-limit", "0"]),
]


@pytest.mark.parametrize("field, value, flags", FLAG_RULES, ids=[f"{rule[0]}={rule[1]}" for rule in FLAG_RULES])
def test_each_rule_gets_the_sentence_of_the_train_flag(server, capsys, field, value, flags):
    answer = server.post("/api/train", json={field: value})
    assert answer.status_code == 422 and answer.json()["field"] == field
    assert cli.main(["train", *flags]) == 2
    flag_says = capsys.readouterr().err.strip().removeprefix("error: ")
    assert answer.json()["detail"] == flag_says


# Values the flags' parser refuses itself (choices, types): the API gives TrainConfig's sentence.
TYPE_AND_CHOICE_RULES = [
    ("model", "resnet"),
    ("activation", "swish"),
    ("loss", "hinge"),
    ("optimizer", "lion"),
    ("validation", "train"),
    ("learning_rate", "fast"),
    ("learning_rate", True),
    ("batch_size", 12.5),
    ("epochs", "3"),
    ("seed", 1.5),
    ("train_limit", [100]),
]


@pytest.mark.parametrize(
    "field, value", TYPE_AND_CHOICE_RULES, ids=[f"{rule[0]}={rule[1]!r}" for rule in TYPE_AND_CHOICE_RULES]
)
def test_bad_types_and_choices_get_trainconfigs_sentence(server, field, value):
    answer = server.post("/api/train", json={field: value})
    assert answer.status_code == 422, answer.text
    with pytest.raises(config.ConfigError) as rule:
        config.TrainConfig(**{field: value}).resolved()
    assert answer.json() == {"detail": str(rule.value), "field": field}


@pytest.mark.parametrize(
    "body, status, message, field",
    [
        ({"model": "lenet"}, 422, "The page trains the dense nets", "model"),
        ({"epochs": 1001}, 422, "at most 1000 epochs a run", "epochs"),
        ({"engine": "fit"}, 422, "The page cannot set 'engine'", "engine"),
        ({"seeds": 4}, 422, "The page cannot set 'seeds'", "seeds"),
        ([1, 2], 422, "must be a JSON object", None),
        ("{epochs: 3", 400, "not valid JSON", None),
        ('{"learning_rate": NaN}', 422, "finite number", None),
    ],
)
def test_other_bad_bodies(server, body, status, message, field):
    content = body if isinstance(body, str) else json.dumps(body)
    answer = server.post("/api/train", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]
    assert answer.json().get("field") == field
    assert not server.runs_dir.exists() or not list(server.runs_dir.iterdir())  # Nothing was started.


def test_limits_on_training_images(tmp_path, small_npz):
    app = serving.create_app(runs_dir=tmp_path, data_path=small_npz, limits=live.Limits(max_train_images=500))
    with TestClient(app) as client:
        for values in ({}, {"train_limit": 501}):
            answer = client.post("/api/train", json=values)
            assert answer.status_code == 422 and answer.json()["field"] == "train_limit"
            assert "at most 500 images a run" in answer.json()["detail"]


# --- A training from the API: events, the run folder, the same run as the CLI's ----------------------


def test_a_training_streams_its_epochs_and_is_an_ordinary_run(server, small_npz, quiet, tmp_path):
    name = train(server)
    found = events_of(server, name)
    assert [(event_id, kind) for event_id, kind, _ in found] == [
        ("1", "epoch"),
        ("2", "epoch"),
        ("3", "epoch"),
        ("end", "end"),
    ]
    epochs = [payload for _, kind, payload in found if kind == "epoch"]
    assert [payload["epoch"] for payload in epochs] == [1, 2, 3] and all(payload["epochs"] == 3 for payload in epochs)
    assert all(payload["time"] > 0 and payload["wall_time_s"] > 0 for payload in epochs)
    assert all(payload["tiles"] == f"/api/runs/{name}/epochs/{payload['epoch']}/tiles.png" for payload in epochs)
    assert "tiles_data" not in epochs[0] and "event: tiles" not in server.get(f"/api/train/{name}/events").text
    assert found[-1][2]["status"] == "complete" and found[-1][2]["epoch"] == 3

    run = runs.open_run(server.runs_dir / name)
    assert run.status()["status"] == "complete" and run.model_path().is_file()
    assert [row["run"] for row in runs.list_runs(server.runs_dir)] == [name]  # `digitlab runs` lists it.
    history = run.history()
    for payload in epochs:
        for key in runs.HISTORY_KEYS:
            assert payload[key] == history[key][payload["epoch"] - 1]
    # The same config trained as `digitlab train` trains it (training.train) gives the same history.
    same = training.train(run.config(), runs_dir=tmp_path / "cli", data_path=small_npz, print_fn=quiet)
    assert same.history() == history

    # The record of every epoch: float16 weights, about 100 KB an epoch for the shallow net.
    assert run.recorded_epochs() == [1, 2, 3]
    sizes = {path.stat().st_size for path in (run.path / runs.EPOCHS_FOLDER).iterdir()}
    assert len(sizes) == 1 and 50_890 * 2 < sizes.pop() < 104_000  # 2 bytes a weight, and npz headers.
    final = run.load_model().get_weights()
    for recorded, exact in zip(run.epoch_weights(3), final, strict=True):
        np.testing.assert_allclose(recorded, exact, rtol=1e-3, atol=1e-4)


def test_events_replay_with_last_event_id(server):
    name = train(server)
    assert len(events_of(server, name)) == 4  # Waits for the run to end.
    assert [event_id for event_id, _, _ in events_of(server, name, {"Last-Event-ID": "2"})] == ["3", "end"]
    assert [event_id for event_id, _, _ in events_of(server, name, {"Last-Event-ID": "3"})] == ["end"]
    assert server.get(f"/api/train/{name}/events", headers={"Last-Event-ID": "end"}).status_code == 204
    bad = server.get(f"/api/train/{name}/events", headers={"Last-Event-ID": "three"})
    assert bad.status_code == 400 and "epoch number" in bad.json()["detail"]
    assert server.get("/api/train/no-such-run/events").status_code == 404
    assert server.get("/api/train/..%2F..%2Fetc/events").status_code == 404


def test_a_run_from_another_server_replays_from_its_folder(tmp_path, small_npz, quiet):
    run = training.train(
        config.TrainConfig(epochs=2, seed=1, record_epochs=True), runs_dir=tmp_path, data_path=small_npz, print_fn=quiet
    )
    with TestClient(serving.create_app(runs_dir=tmp_path, data_path=small_npz)) as client:
        found = events_of(client, run.name)
        assert [event_id for event_id, _, _ in found] == ["1", "2", "end"]
        assert found[0][2]["val_accuracy"] == run.history()["val_accuracy"][0]
        assert found[0][2]["tiles"].endswith("/epochs/1/tiles.png") and found[-1][2]["status"] == "complete"


def test_a_second_training_while_one_runs_is_refused_then_stop_saves_it(server):
    name = train(server, epochs=1000)  # Far longer than the test: it is stopped below.
    second = server.post("/api/train", json=QUICK)
    assert second.status_code == 409
    assert f"{name} is training" in second.json()["detail"] and "stop it" in second.json()["detail"]
    now = server.get("/api/train").json()["training"]
    assert now["run"] == name and now["epochs"] == 1000 and "operator" in now["started_by"]
    stopping = server.post(f"/api/train/{name}/stop")
    assert stopping.status_code == 202 and "train --resume" in stopping.json()["detail"]
    end = events_of(server, name)[-1][2]
    assert end["status"] == "interrupted" and end["resume"] == runs.resume_command(server.runs_dir / name)
    status = runs.open_run(server.runs_dir / name).status()
    assert status["status"] == "interrupted" and status["epoch"] < 1000
    assert server.get("/api/train").json()["training"] is None
    again = server.post(f"/api/train/{name}/stop")
    assert again.status_code == 409 and "not training" in again.json()["detail"]


def test_stopped_and_resumed_equals_uninterrupted(server, small_npz, quiet, tmp_path):
    name = train(server, epochs=6)
    assert server.post(f"/api/train/{name}/stop").status_code == 202  # Acted on after an epoch.
    end = events_of(server, name)[-1][2]
    assert end["status"] == "interrupted", "the run ended before the stop arrived"
    stopped_at = end["epoch"]
    assert 1 <= stopped_at < 6
    resumed = server.post(f"/api/train/{name}/resume")
    assert resumed.status_code == 202, resumed.text
    found = events_of(server, name)
    # A viewer of the resumed run gets every epoch: the first ones replayed from the run's history.
    assert [event_id for event_id, _, _ in found] == ["1", "2", "3", "4", "5", "6", "end"]
    assert found[-1][2]["status"] == "complete"
    run = runs.open_run(server.runs_dir / name)
    uninterrupted = training.train(run.config(), runs_dir=tmp_path / "whole", data_path=small_npz, print_fn=quiet)
    assert run.history() == uninterrupted.history()
    np.testing.assert_array_equal(run.load_model().get_weights()[0], uninterrupted.load_model().get_weights()[0])
    assert run.recorded_epochs() == [1, 2, 3, 4, 5, 6]
    complete = server.post(f"/api/train/{name}/resume")
    assert complete.status_code == 409 and "already complete" in complete.json()["detail"]
    assert server.post("/api/train/nothing-here/resume").status_code == 404


def test_resume_refuses_a_run_of_other_data(tmp_path, small_npz, mnist_path, quiet):
    run = training.train(config.TrainConfig(epochs=3, seed=1), runs_dir=tmp_path, data_path=small_npz, print_fn=quiet)
    run.set_status("interrupted", epoch=1)
    with TestClient(serving.create_app(runs_dir=tmp_path, data_path=mnist_path)) as client:
        answer = client.post(f"/api/train/{run.name}/resume")
        assert answer.status_code == 409 and "SHA-256" in answer.json()["detail"], answer.text


# --- Any epoch's network: predictions, tiles, evaluation ------------------------------------------


@pytest.fixture
def trained(server):
    name = train(server)
    events_of(server, name)
    return name, runs.open_run(server.runs_dir / name)


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


def test_the_drawing_only_server_has_no_training():
    from digitlab import models

    untrained = models.create_model(config.TrainConfig().resolved())  # Only the routes matter here.
    with TestClient(serving.create_app(untrained, run_name="r")) as client:
        assert client.get("/api/health").json()["training"] is False
        assert client.post("/api/train", json=QUICK).status_code == 404
        assert client.post("/api/predict?run=r", json={"pixels": [[0] * 28] * 28}).status_code == 404


# --- Tokens -----------------------------------------------------------------------------------------

OPERATOR, VIEWER = "operator-token-0123456789", "viewer-token-0123456789"


@pytest.fixture
def guarded(tmp_path, small_npz):
    permissions = access.Access.for_host("10.1.2.3", OPERATOR, VIEWER)
    app = serving.create_app(runs_dir=tmp_path / "runs", data_path=small_npz, permissions=permissions)
    with TestClient(app) as client:
        yield client


PATHS = [
    "/",
    "/static/app.js",
    "/static/style.css",
    "/api/health",
    "/api/runs",
    "/api/train",
    "/docs",
    "/openapi.json",
    "/api/train/x/events",
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


def test_the_links_tokens_and_the_cookie(guarded):
    page = guarded.get(f"/?token={VIEWER}")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{access.COOKIE}={VIEWER};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The page's scripts and requests then carry the cookie.
    assert guarded.get("/static/live.js").status_code == 200
    assert guarded.get("/api/health").json()["role"] == "viewer"
    refused = guarded.post("/api/train", json=QUICK)
    assert refused.status_code == 403 and "view-only" in refused.json()["detail"]
    assert guarded.post("/api/train/x/stop").status_code == 403
    guarded.cookies.clear()
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert guarded.get("/api/health", headers=operator).json()["role"] == "operator"
    cross_site = guarded.post("/api/train", json=QUICK, headers={**operator, "Origin": "http://elsewhere.example"})
    assert cross_site.status_code == 403 and "another site" in cross_site.json()["detail"]
    started = guarded.post("/api/train", json=QUICK, headers={**operator, "Origin": "http://testserver"})
    assert started.status_code == 202, started.text
    events_of(guarded, started.json()["run"], headers=operator)


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
        (["--max-epochs", "0"], "--max-epochs must be a positive"),
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
    app = serving.create_app(runs_dir=runs_dir, data_path=small_npz, log=lambda *args: None)

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
        damaged.get(f"/api/train/{name}/events"),
        damaged.post(f"/api/predict?run={name}", json=PIXELS),
        damaged.post(f"/api/train/{name}/resume"),
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
    as_query = damaged.get("/api/train/good/events?last_event_id=%C2%B3")  # '³'.isdigit() is true.
    _refused(as_query, 422, "last_event_id")
    as_header = damaged.get("/api/train/good/events", headers={"Last-Event-ID": "\u00b3".encode()})
    _refused(as_header, 400, "Last-Event-ID must be an epoch number")
    assert [event[0] for event in events_of(damaged, "good", {"Last-Event-ID": "1"})] == ["2", "end"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": []}, "model"),
        ({"model": {}}, "model"),
        ({"model": None}, "model"),
        ({"epochs": "2"}, "epochs"),
        ({"learning_rate": True}, "learning_rate"),
        ({"learning_rate": "0.5"}, "learning_rate"),
        ({"seed": 1.5}, "seed"),
        ({"validation": ["test"]}, "validation"),
        ({"loss": 3}, "loss"),
    ],
)
def test_a_training_field_of_the_wrong_type_is_a_422_naming_it(server, body, field):
    answer = server.post("/api/train", json=body)
    _refused(answer, 422, field)
    assert answer.json()["field"] == field


def test_whole_numbers_in_any_spelling_are_taken(server):
    assert live.as_json_number("epochs", 3.0) == 3 and isinstance(live.as_json_number("epochs", 3.0), int)
    assert isinstance(live.as_json_number("learning_rate", 1), float) and live.as_json_number("epochs", 2.5) == 2.5
    assert live.as_json_number("epochs", None) is None and live.as_json_number("epochs", True) is True
    assert live.config_from_values({"epochs": 3.0, "learning_rate": 1}).epochs == 3


# --- The OpenAPI schema says what the API does (issue 22; tests/test_api_schema.py fuzzes it) --------


def test_every_status_and_the_error_shape_are_in_the_schema(server):
    schema = server.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(schema) and "securitySchemes" not in schema["components"]
    error = {"$ref": "#/components/schemas/ErrorBody"}
    expected = {
        ("post", "/api/train"): {"202", "400", "403", "409", "422", "503"},
        ("get", "/api/train/{name}/events"): {"200", "204", "400", "404", "409", "422", "503"},
        ("post", "/api/train/{name}/stop"): {"202", "403", "404", "409", "422"},
        ("post", "/api/train/{name}/resume"): {"202", "403", "404", "409", "422", "503"},
        ("get", "/api/runs/{name}"): {"200", "404", "409", "422"},
        ("get", "/api/runs/{name}/evaluation"): {"200", "404", "409", "422", "503"},
        ("post", "/api/predict"): {"200", "400", "404", "409", "413", "415", "422"},
    }
    for (method, path), statuses in expected.items():
        answers = schema["paths"][path][method]["responses"]
        assert set(answers) == statuses, (path, set(answers))
        for status in statuses - {"200", "202", "204"}:
            assert answers[status]["content"]["application/json"]["schema"] == error, (path, status)
    body = schema["paths"]["/api/train"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False and body["properties"]["model"]["enum"] == list(live.LIVE_MODELS)
    # The 422 FastAPI makes itself (a parameter of the wrong type) has the documented shape too.
    assert set(server.get("/api/runs/x/evaluation?epoch=abc").json()) == {"detail"}


def test_the_training_schema_has_the_servers_limits_and_trainconfigs_bounds():
    schema = live.train_body_schema(live.Limits(max_epochs=5, max_train_images=500))["properties"]
    assert schema["epochs"]["maximum"] == 5 and schema["epochs"]["type"] == "integer"  # null: 200 epochs > 5.
    assert schema["train_limit"]["maximum"] == 500 and schema["train_limit"]["type"] == "integer"
    assert live.train_body_schema(live.Limits(max_epochs=5, max_train_images=500))["required"] == [
        "epochs",
        "train_limit",
    ]
    assert live.train_body_schema(live.Limits())["properties"]["epochs"]["type"] == ["integer", "null"]
    for name, bounds in live.FIELD_BOUNDS.items():  # The largest (smallest) value passes, one step beyond fails.
        for key, limit in bounds.items():
            step = {"maximum": 1, "minimum": -1, "exclusiveMinimum": 0}[key]
            inside = limit if key != "exclusiveMinimum" else 1e-9
            live.config_from_values({name: inside})
            with pytest.raises(config.ConfigError):
                live.config_from_values({name: limit + step})


def test_a_405_lists_every_method_of_its_path(server):
    for method, path, allowed in (
        ("OPTIONS", "/api/train", "GET, POST"),
        ("PUT", "/api/train", "GET, POST"),
        ("DELETE", "/api/runs/x", "GET"),
        ("GET", "/api/predict", "POST"),
    ):
        answer = server.request(method, path)
        assert answer.status_code == 405 and answer.headers["allow"] == allowed, (method, path, answer.headers)
        assert path in answer.json()["detail"]


def test_with_tokens_the_schema_names_them_and_401_403(tmp_path):
    guarded = serving.create_app(
        runs_dir=tmp_path / "runs", permissions=access.Access(OPERATOR, VIEWER), log=lambda *args: None
    )
    with TestClient(guarded) as client:
        schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {VIEWER}"}).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert (schemes["token_query"]["in"], schemes["token_query"]["name"]) == ("query", "token")
    assert (schemes["token_cookie"]["in"], schemes["token_cookie"]["name"]) == ("cookie", access.COOKIE)
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert {"401", "403"} <= set(operation["responses"])

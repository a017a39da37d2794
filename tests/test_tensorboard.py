"""`digitlab tensorboard RUN`: a real TensorBoard on loopback serves the scalars `--tensorboard` logged.

The heavy test trains a short run with `--tensorboard`, starts `python -m digitlab
tensorboard RUN` on a free port of 127.0.0.1, reads every logged scalar back through
TensorBoard's HTTP API, compares them with the run's history, and stops the server.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request

import pytest

from digitlab import cli, config, runs, training
from digitlab.serve import board


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, mnist_path, quiet):
    settings = config.TrainConfig(epochs=3, train_limit=2000, seed=4, learning_rate=1.0, tensorboard=True)
    return training.train(settings, runs_dir=tmp_path_factory.mktemp("runs"), print_fn=quiet, verbose=0)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.mark.heavy
def test_tensorboard_serves_the_logged_scalars(logged_run, free_port, running_server):
    url = f"http://127.0.0.1:{free_port}"
    command = [sys.executable, "-m", "digitlab", "tensorboard", str(logged_run.path), "--port", str(free_port)]
    with running_server(command, f"{url}/data/runs"):
        tags = {}
        for _ in range(120):  # TensorBoard reads the event files in the background after it starts.
            tags = _get(f"{url}/data/plugin/scalars/tags")
            if tags and all(len(run_tags) >= 4 for run_tags in tags.values()):
                break
            time.sleep(0.5)
        assert len(tags) == 1, tags
        ((run_name, run_tags),) = tags.items()
        history = logged_run.history()
        for split, prefix in (("train", ""), ("validation", "val_")):
            for metric in ("accuracy", "loss"):
                tag = f"epoch_{metric}/{split}"
                assert tag in run_tags
                query = urllib.parse.urlencode({"run": run_name, "tag": tag})
                points = _get(f"{url}/data/plugin/scalars/scalars?{query}")
                assert [step for _, step, _ in points] == [1, 2, 3]
                assert [value for _, _, value in points] == pytest.approx(history[prefix + metric], rel=1e-6)


def test_a_run_without_logs_is_refused_with_what_to_do(trained_run, capsys):
    with pytest.raises(runs.RunError, match="train --tensorboard"):
        board.log_dir(runs.open_run(trained_run))
    assert cli.main(["tensorboard", str(trained_run)]) == 2
    assert "has no TensorBoard logs" in capsys.readouterr().err
    assert cli.main(["tensorboard", str(trained_run), "--port", "0"]) == 2

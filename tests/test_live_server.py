"""The live page's server for real: `digitlab serve` as a child process on loopback (a viewer that
reconnects with Last-Event-ID, many viewers, the bound on viewers, a Ctrl-C that saves the training),
and in a network namespace of its own, bound to an address that exists only there, where every
request needs the token it printed. Trainings are short (real MNIST, 2,000 training images); every
wait is on what the server has sent or written, never on the clock.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from digitlab import runs, training
from digitlab.serve import networks

pytestmark = pytest.mark.heavy


def _post(url, path, values=None, headers=None):
    request = urllib.request.Request(
        url + path,
        data=json.dumps(values or {}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory, load_script):
    """`digitlab serve --runs-dir ...` on a free loopback port, at most 6 viewers: (url, runs folder)."""
    runs_dir = tmp_path_factory.mktemp("live_runs")
    load_test = load_script("load_test")
    port = load_test.free_port()
    command = [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(runs_dir), "--port", str(port)]
    with load_test.run_server([*command, "--max-viewers", "6"], f"http://127.0.0.1:{port}/api/health", timeout=180):
        yield f"http://127.0.0.1:{port}", runs_dir


def test_a_viewer_that_reconnects_with_last_event_id_misses_nothing(served, load_script):
    url, runs_dir = served
    bench = load_script("live_bench")
    status, started = _post(url, "/api/train", {"epochs": 12, "train_limit": 2000, "seed": 4})
    assert status == 202, started
    name = started["run"]
    first = bench.read_events(url, name, stop_after_epoch=2)  # Leaves after epoch 2, as a closed laptop.
    assert [event_id for event_id, *_ in first] == ["1", "2"]
    rest = bench.read_events(url, name, last_event_id=2)
    assert [event_id for event_id, *_ in rest] == [*map(str, range(3, 13)), "end"]
    assert rest[-1][2]["status"] == "complete"
    history = runs.open_run(runs_dir / name).history()
    for _, kind, payload, _ in first + rest[:-1]:
        assert kind == "epoch" and payload["val_accuracy"] == history["val_accuracy"][payload["epoch"] - 1]


def test_many_viewers_and_the_bound_on_them(served, load_script):
    url, _ = served
    bench = load_script("live_bench")
    status, started = _post(url, "/api/train", {"epochs": 1000, "train_limit": 2000, "seed": 4})
    assert status == 202, started
    name = started["run"]
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    streams = []
    try:
        for _ in range(6):  # The server allows 6 (--max-viewers 6): each gets its stream.
            connection = socket.create_connection((host, port), timeout=30)
            connection.sendall(f"GET /api/train/{name}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head
            streams.append(connection)
        with pytest.raises(RuntimeError, match="503.*as many as it allows"):
            bench.read_events(url, name)
    finally:
        for connection in streams:
            connection.close()
    # Closed streams are counted out: several viewers now follow the run to its end together.
    assert _post(url, f"/api/train/{name}/stop")[0] == 202
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(lambda _: bench.read_events(url, name), range(4)))
    ends = [viewer[-1] for viewer in seen]
    assert all(end[1] == "end" and end[2]["status"] == "interrupted" for end in ends), ends
    for viewer in seen:
        epochs = [payload["epoch"] for _, kind, payload, _ in viewer if kind == "epoch"]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs == [
            payload["epoch"] for _, kind, payload, _ in seen[0] if kind == "epoch"
        ]


def test_ctrl_c_on_the_server_saves_the_training_resumably(tmp_path, load_script, quiet):
    load_test, bench = load_script("load_test"), load_script("live_bench")
    port = load_test.free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(tmp_path), "--port", str(port)]
    with load_test.run_server(command, f"{url}/api/health", timeout=180) as server:
        status, started = _post(url, "/api/train", {"epochs": 100, "train_limit": 2000, "seed": 8})
        assert status == 202, started
        name = started["run"]
        pictures = []

        async def on_event(item):  # A live viewer gets each newest epoch's tiles inside the stream.
            if item[1] == "tiles":
                pictures.append(item[2])
                return True
            return False

        seen = bench.read_events(url, name, on_event=on_event)  # It trains: epochs, then their tiles.
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=120) is not None  # It stops, once the training is saved.
    run = runs.open_run(tmp_path / name)
    status = run.status()
    assert status["status"] == "interrupted", "the run ended before the Ctrl-C arrived"
    assert 1 <= status["epoch"] < 100 and status["checkpoint_epoch"] == status["epoch"]
    (picture,) = pictures
    assert picture["epoch"] == seen[-1][2]["epoch"] and picture["png"].startswith("data:image/png;base64,")
    png = base64.b64decode(picture["png"].split(",", 1)[1])
    assert png == networks.weight_tiles_png(run.epoch_weights(picture["epoch"])[0])
    finished = training.resume(run.path, print_fn=quiet)  # What `digitlab train --resume` runs.
    assert finished.status()["status"] == "complete" and len(finished.history()["loss"]) == 100
    assert finished.recorded_epochs() == list(range(1, 101))


# --- Off loopback: a server in a network namespace of its own ----------------------------------------

CLIENT = textwrap.dedent(
    """
    import json, sys, urllib.error, urllib.request
    answers = []
    for method, url, headers, body in json.loads(sys.argv[1]):
        request = urllib.request.Request(url, data=body.encode() if body else None, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                answers.append([answer.status, dict(answer.headers), answer.read().decode(errors="replace")])
        except urllib.error.HTTPError as error:
            answers.append([error.code, dict(error.headers), error.read().decode(errors="replace")])
        except OSError as error:
            answers.append([None, {}, repr(error)])
    print(json.dumps(answers))
    """
)


@pytest.fixture
def namespace():
    """A network namespace with a veth pair whose end v0 holds 10.213.N.1: an address no other
    machine, and not even this machine's own namespace, can reach. Removed afterwards."""
    name = f"digitlab-test-{os.getpid()}"
    address = f"10.213.{os.getpid() % 250}.1"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        ["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "v0"],
        ["ip", "-n", name, "link", "set", "v0", "up"],
        ["ip", "-n", name, "link", "set", "v1", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"This test needs network namespaces (root and iproute2): {' '.join(step)}: {done.stderr}")
        yield name, address
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _in_namespace(name, requests):
    done = subprocess.run(
        ["ip", "netns", "exec", name, sys.executable, "-c", CLIENT, json.dumps(requests)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_off_loopback_every_request_needs_the_printed_token(namespace, tmp_path, load_script):
    name, address = namespace
    port = 8000
    base = f"http://{address}:{port}"
    log = tmp_path / "server.txt"
    with log.open("w") as output:
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-m", "digitlab", "serve", "--host", address,
             "--port", str(port), "--runs-dir", str(tmp_path / "runs"), "--max-epochs", "5"],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:  # Up when it answers (401: it wants the token) inside the namespace.
            if server.poll() is not None:
                pytest.fail(f"The server exited: {log.read_text()}")
            if _in_namespace(name, [["GET", f"{base}/api/health", {}, None]])[0][0] == 401:
                break
            assert time.monotonic() < deadline, log.read_text()
        printed = log.read_text()
        operator = re.search(r"operator \(trains, stops\):\s+(\S+)", printed).group(1)
        viewer = re.search(r"view-only \(watch, draw\):\s+(\S+)", printed).group(1)
        assert operator.startswith(f"{base}/?token=") and viewer.startswith(f"{base}/?token=")
        operator_token, view_token = operator.split("=", 1)[1], viewer.split("=", 1)[1]
        assert operator_token != view_token and len(operator_token) >= 24

        as_viewer = {"Authorization": f"Bearer {view_token}"}
        as_operator = {"Authorization": f"Bearer {operator_token}", "Content-Type": "application/json"}
        paths = ["/", "/static/app.js", "/static/live.js", "/api/health", "/api/runs", "/docs", "/api/train/x/events"]
        answers = _in_namespace(
            name,
            [["GET", base + path, {}, None] for path in paths]
            + [
                ["POST", f"{base}/api/train", {"Content-Type": "application/json"}, '{"epochs": 2}'],
                ["GET", f"{base}/?token=not-the-right-token-0000", {}, None],
                ["GET", f"http://127.0.0.1:{port}/api/health", {}, None],  # It listens on its address only.
                ["GET", viewer, {}, None],
                ["GET", f"{base}/api/health", as_viewer, None],
                ["POST", f"{base}/api/train", {**as_viewer, "Content-Type": "application/json"}, '{"epochs": 2}'],
                ["POST", f"{base}/api/train", as_operator, '{"epochs": 2, "train_limit": 500, "seed": 1}'],
                ["POST", f"{base}/api/train", as_operator, '{"epochs": 6}'],  # Over this server's --max-epochs.
            ],
        )
        for path, (status, _, body) in zip([*paths, "POST /api/train"], answers[: len(paths) + 1], strict=True):
            assert status == 401, (path, status, body)
            assert json.loads(body)["detail"].startswith("This server needs its token") and "<" not in body
        wrong, local, page, health, view_post, started, too_long = answers[len(paths) + 1 :]
        assert wrong[0] == 403 and "not this server's" in wrong[2]
        assert local[0] is None and "Connection refused" in local[2]
        assert page[0] == 200 and '<canvas id="pad"' in page[2] and view_token in page[1]["set-cookie"]
        assert health[0] == 200 and json.loads(health[2])["role"] == "viewer"
        assert view_post[0] == 403 and "view-only" in view_post[2]
        assert started[0] == 202, started
        assert too_long[0] == 422 and "at most 5 epochs" in too_long[2]
        run = json.loads(started[2])["run"]
        stream = _in_namespace(name, [["GET", f"{base}/api/train/{run}/events", as_viewer, None]])[0]
        assert stream[0] == 200 and stream[2].count("event: epoch") == 2 and '"status": "complete"' in stream[2]
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_live_bench_prints_its_table(load_script, mnist_path):
    """scripts/live_bench.py on a tiny configuration: it runs end to end and its table holds every row.
    (Its figures are judged from the full run in docs/serving.md, not by timing assertions here.)"""
    table, figures = load_script("live_bench").run_bench(
        epochs=2,
        repeats=1,
        viewers=2,
        latency_viewers=3,
        latency_epochs=3,
        train_limit=2000,
        data=str(mnist_path),
        idle_s=1,
    )
    print(table)
    assert "digitlab train (own process)" in table and "page, 2 viewers (server thread)" in table
    assert "server idle" in table and "3 viewers x 3 epochs (9 events)" in table
    assert figures["delay_ms"]["p50"] >= 0 and len(figures["rows"]) == 3

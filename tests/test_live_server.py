"""`digitlab serve` for real, as a child process on loopback, showing live a run that a real
`digitlab train` (another child process) trains into its runs folder: the epochs reach the viewers
while the training runs, a viewer that reconnects with Last-Event-ID misses nothing, the bound on
viewers holds, and Ctrl-C on the server leaves the training alone. Then the server in a network
namespace of its own, bound to an address that exists only there, where every request needs the
token it printed. Trainings are short (real MNIST); every wait is on what the server has sent or a
process has written, never on the clock: the training is paused (SIGSTOP) where a test needs it to
be caught in the middle.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest

from digitlab import runs
from digitlab.plots import inside as plots_inside

pytestmark = pytest.mark.heavy

EPOCHS = 40


def _get(url, path, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, headers=headers or {}), timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory, load_script):
    """`digitlab serve --runs-dir ...` on a free loopback port, at most 6 viewers: (url, runs folder, server)."""
    runs_dir = tmp_path_factory.mktemp("live_runs")
    load_test = load_script("load_test")
    port = load_test.free_port()
    command = [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(runs_dir), "--port", str(port)]
    with load_test.run_server(
        [*command, "--max-viewers", "6"], f"http://127.0.0.1:{port}/api/health", timeout=180
    ) as server:
        yield f"http://127.0.0.1:{port}", runs_dir, server


@contextlib.contextmanager
def paused_training(runs_dir, mnist_path, seed, after_epoch=2):
    """A real `digitlab train` (EPOCHS epochs of the shallow net on all 60,000 images, every epoch
    recorded) into `runs_dir`, paused with SIGSTOP once it has written `after_epoch` epochs: yields
    (the process, its run, the epochs written when it stopped). Let go with SIGCONT."""
    command = [sys.executable, "-m", "digitlab", "train", "--epochs", str(EPOCHS), "--seed", str(seed)]
    command += ["--record-epochs", "--runs-dir", str(runs_dir), "--data", str(mnist_path)]
    known = set(os.listdir(runs_dir))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:  # Every 5 ms: an epoch of 60,000 images takes far longer.
            assert process.poll() is None, process.stderr.read().decode()
            made = [name for name in os.listdir(runs_dir) if name not in known]
            if made:
                run = runs.Run(runs_dir / made[0])
                done = len(run.recorded_epochs())
                if done >= after_epoch:
                    process.send_signal(signal.SIGSTOP)
                    break
            time.sleep(0.005)
        done = len(run.recorded_epochs())  # One more may have landed before the signal did.
        assert done < EPOCHS, "the training ended before it could be paused"
        yield process, run, done
    finally:
        process.send_signal(signal.SIGCONT)
        assert process.wait(timeout=600) == 0, process.stderr.read().decode()


def test_a_digitlab_train_run_is_shown_live_and_then_finished(served, load_script, mnist_path):
    url, runs_dir, _ = served
    bench = load_script("live_bench")
    with paused_training(runs_dir, mnist_path, seed=4) as (process, run, done):
        status, listing = _get(url, "/api/runs")
        row = next(row for row in listing["runs"] if row["run"] == run.name)
        assert row["training"] is True and row["status"] == "running" and row["epochs"] >= done
        pictures = []

        async def on_event(item):  # A live viewer gets the newest epoch's tiles inside the stream.
            if item[1] == "tiles":
                pictures.append(item[2])
                return True  # Leaves then, as a closed laptop.
            return False

        first = bench.read_events(url, run.name, on_event=on_event)
        assert [event_id for event_id, *_ in first] == [str(epoch) for epoch in range(1, done + 1)]
        assert process.poll() is None  # Every epoch so far came while `digitlab train` had not ended.
        (picture,) = pictures
        assert picture["epoch"] == done
        png = base64.b64decode(picture["png"].split(",", 1)[1])
        assert png == plots_inside.weight_tiles_png(run.epoch_weights(done)[0])
        process.send_signal(signal.SIGCONT)
        rest = bench.read_events(url, run.name, last_event_id=done)  # Reconnects: the epochs after `done`.
    assert [event_id for event_id, *_ in rest] == [*map(str, range(done + 1, EPOCHS + 1)), "end"]
    assert rest[-1][2]["status"] == "complete" and rest[-1][2]["epoch"] == EPOCHS
    # The later epochs came live too: the first of them before the training wrote its end.
    assert rest[0][3] < (run.path / runs.METRICS_FILE).stat().st_mtime
    history = run.history()
    for _, kind, payload, _ in first + rest[:-1]:
        assert kind == "epoch" and payload["val_accuracy"] == history["val_accuracy"][payload["epoch"] - 1]
        assert payload["tiles"].endswith(f"/epochs/{payload['epoch']}/tiles.png")
    detail = _get(url, f"/api/runs/{run.name}")[1]
    assert detail["training"] is False and detail["status"]["status"] == "complete"
    assert _get(url, f"/api/runs/{run.name}/evaluation")[1]["epoch"] == EPOCHS
    replay = bench.read_events(url, run.name)  # The finished run, from its folder.
    assert [event_id for event_id, *_ in replay] == [*map(str, range(1, EPOCHS + 1)), "end"]


def test_many_viewers_and_the_bound_on_them(served, load_script, mnist_path):
    url, runs_dir, _ = served
    bench = load_script("live_bench")
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    with paused_training(runs_dir, mnist_path, seed=5, after_epoch=1) as (process, run, done):
        streams = []
        try:
            for _ in range(6):  # The server allows 6 (--max-viewers 6): each gets its stream.
                connection = socket.create_connection((host, port), timeout=30)
                connection.sendall(f"GET /api/runs/{run.name}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    head += connection.recv(4096)
                assert head.startswith(b"HTTP/1.1 200"), head
                streams.append(connection)
            with pytest.raises(RuntimeError, match="503.*as many as it allows"):
                bench.read_events(url, run.name)
        finally:
            for connection in streams:
                connection.close()
        # Closed streams are counted out: several viewers now follow the run to its end together.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            viewers = [pool.submit(bench.read_events, url, run.name) for _ in range(4)]
            process.send_signal(signal.SIGCONT)
            seen = [viewer.result(timeout=600) for viewer in viewers]
    for viewer in seen:
        assert [event_id for event_id, *_ in viewer] == [*map(str, range(1, EPOCHS + 1)), "end"]
        assert viewer[-1][2]["status"] == "complete"


def test_ctrl_c_on_the_server_ends_its_streams_and_leaves_the_training_alone(tmp_path, load_script, mnist_path):
    load_test, bench = load_script("load_test"), load_script("live_bench")
    port = load_test.free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(tmp_path), "--port", str(port)]
    with load_test.run_server(command, f"{url}/api/health", timeout=180) as server:
        with paused_training(tmp_path, mnist_path, seed=6, after_epoch=1) as (process, run, done):
            following = threading.Event()

            async def on_event(item):
                following.set()  # The viewer follows the paused run: it has its epochs so far.
                return False

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                viewer = pool.submit(bench.read_events, url, run.name, on_event=on_event)
                assert following.wait(120)
                server.send_signal(signal.SIGINT)
                assert server.wait(timeout=60) is not None  # It stops though a viewer was following.
                seen = viewer.result(timeout=60)
            assert all(kind == "epoch" for _, kind, *_ in seen)  # No end: the run was not over.
    assert run.status()["status"] == "complete" and len(run.history()["loss"]) == EPOCHS


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


def test_off_loopback_every_request_needs_the_printed_token(namespace, tmp_path, trained_run):
    import shutil

    name, address = namespace
    shutil.copytree(trained_run, tmp_path / "runs" / "kept")
    port = 8000
    base = f"http://{address}:{port}"
    log = tmp_path / "server.txt"
    with log.open("w") as output:
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-m", "digitlab", "serve", "--host", address,
             "--port", str(port), "--runs-dir", str(tmp_path / "runs")],
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
        operator = re.search(r"operator \(keeps runs\):\s+(\S+)", printed).group(1)
        viewer = re.search(r"view-only \(watch, draw\):\s+(\S+)", printed).group(1)
        assert operator.startswith(f"{base}/?token=") and viewer.startswith(f"{base}/?token=")
        operator_token, view_token = operator.split("=", 1)[1], viewer.split("=", 1)[1]
        assert operator_token != view_token and len(operator_token) >= 24

        as_viewer = {"Authorization": f"Bearer {view_token}"}
        as_operator = {"Authorization": f"Bearer {operator_token}", "Content-Type": "application/json"}
        paths = ["/", "/static/app.js", "/static/live.js", "/api/health", "/api/runs", "/docs", "/api/runs/x/events"]
        answers = _in_namespace(
            name,
            [["GET", base + path, {}, None] for path in paths]
            + [
                ["POST", f"{base}/api/runs", {"Content-Type": "application/json"}, "{}"],
                ["GET", f"{base}/?token=not-the-right-token-0000", {}, None],
                ["GET", f"http://127.0.0.1:{port}/api/health", {}, None],  # It listens on its address only.
                ["GET", viewer, {}, None],
                ["GET", f"{base}/api/health", as_viewer, None],
                ["POST", f"{base}/api/runs", {**as_viewer, "Content-Type": "application/json"}, "{}"],
                ["POST", f"{base}/api/runs", as_operator, "{}"],  # Let through: not a page run, so 422.
                ["GET", f"{base}/api/runs/kept/events", as_viewer, None],
            ],
        )
        for path, (status, _, body) in zip([*paths, "POST /api/runs"], answers[: len(paths) + 1], strict=True):
            assert status == 401, (path, status, body)
            assert json.loads(body)["detail"].startswith("This server needs its token") and "<" not in body
        wrong, local, page, health, view_post, operator_post, stream = answers[len(paths) + 1 :]
        assert wrong[0] == 403 and "not this server's" in wrong[2]
        assert local[0] is None and "Connection refused" in local[2]
        assert page[0] == 200 and '<canvas id="pad"' in page[2] and view_token in page[1]["set-cookie"]
        assert health[0] == 200 and json.loads(health[2])["role"] == "viewer"
        assert view_post[0] == 403 and "view-only" in view_post[2]
        assert operator_post[0] == 422, operator_post
        assert stream[0] == 200 and stream[2].count("event: epoch") == 2 and '"status": "complete"' in stream[2]
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_live_bench_prints_its_table(load_script, mnist_path):
    """scripts/live_bench.py on a tiny configuration: it runs end to end and its table holds every row.
    (Its figures are judged from the full run in docs/serving.md, not by timing assertions here.)"""
    table, figures = load_script("live_bench").run_bench(
        epochs=2, repeats=1, viewers=2, train_limit=2000, data=str(mnist_path), idle_s=1
    )
    print(table)
    assert "digitlab train, not watched" in table and "digitlab train, 2 viewers" in table
    assert "server idle" in table and "watched / not watched" in table and "2 viewers (" in table
    assert figures["delay_ms"]["max"] >= figures["delay_ms"]["p50"] and len(figures["rows"]) == 3

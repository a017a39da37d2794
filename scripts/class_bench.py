"""A simulated class against one real `digitlab serve --class`, on this machine's loopback.

    python scripts/class_bench.py                               # 100 students x 200 epochs (issue 24's target)
    python scripts/class_bench.py --students 20 --epochs 20     # a quick look

It starts `digitlab serve --class` on a free loopback port with a fresh runs folder (removed at the
end), or --runs-dir, and runs N students at once, each in a thread of its own: a student fetches the
page's files once (the page, its scripts and style, page.json and MNIST's index; not MNIST's arrays,
which a browser caches), begins a run of the shallow net (POST /api/class/runs), then sends an epoch every 0.1-0.5 s
for E epochs, then finishes it, as the page's classroom.js does: each epoch its history row and
handwriting accuracy, and its 50,890 weights when GET /api/class's weights_every_s have passed since
it last sent them (the first time, a random part of that after the run began); the finish with the
final weights at float32; a submission lost on the way sent again on a new connection, one refused
for the rate after a second. The weights are the page's initial weights (prng.initial_weights), one
set per student: the server checks them, it does not train.

It prints one table: the epoch submissions' latency p50/p99/max (from the first attempt to the
answer), errors (a submission that failed in the end: an answer but 2xx, or no answer after the
page's retries), how many were resent and why, epochs lost (epochs not in the run folder), runs
complete in the runs folder, the finishes' latency, the bytes sent, the CPU time and use over the
test of the server process and of its finish workers, and the machine. CLASS_BENCH_TRACE=1 prints
each epoch's latency and the moment it was answered to stderr. The clients and the server share this
machine's cores, so the figures are under load by the clients; the machine's load average, printed,
says what else ran.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from digitlab import data, runs
from digitlab.browser import page_runs, prng
from digitlab.config import TrainConfig

TIMEOUT_S = 600  # The page's fetch waits as long as the server takes; a finish queues behind the class's others.
PAGE_FILES = [
    "/",
    "/static/style.css",
    "/static/mode.js",
    "/static/charts.js",
    "/static/app.js",
    "/static/live.js",
    "/static/browser.js",
    "/static/classroom.js",
    "/static/handwriting.js",
    "/static/page.json",
    "/static/mnist/index.json",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def encoded(weights) -> list[dict]:
    names = ["dense_0/kernel", "dense_0/bias", "dense_1/kernel", "dense_1/bias"]
    return [
        {"name": name, "shape": list(w.shape), "base64": base64.b64encode(np.asarray(w, "<f4").tobytes()).decode()}
        for name, w in zip(names, weights, strict=True)
    ]


class Student(threading.Thread):
    def __init__(self, index: int, port: int, epochs: int, sha256: dict, results: dict):
        super().__init__(daemon=True)
        self.index, self.port, self.epochs, self.sha256, self.results = index, port, epochs, sha256, results
        self.latencies: list[float] = []
        self.finish_latency: float | None = None
        self.errors: list[str] = []
        self.retries = 0
        self.resent: list[str] = []
        self.sent_bytes = 0
        self.answered = 0
        self.run_name: str | None = None
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        """Sends as the page's classroom.js does: a request lost on the way is sent again on a new
        connection (5 times, waiting 0.5 s, 1 s, 2 s, ...), one refused for the rate (429) after 1 s (8
        times). The answer's body (None if it failed in the end) and the seconds from the first attempt."""
        start = time.perf_counter()
        for attempt in range(9):
            try:
                self.connection.request(method, path, body=body, headers=headers or {})
                answer = self.connection.getresponse()
                payload = answer.read()
            except (OSError, http.client.HTTPException) as error:
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
                if attempt < 5:
                    self.retries += 1
                    self.resent.append(f"{method} {path}: {type(error).__name__}: {error}")
                    time.sleep(0.5 * 2**attempt)
                    continue
                self.errors.append(f"{method} {path}: {error}")
                return None, time.perf_counter() - start
            elapsed = time.perf_counter() - start
            self.sent_bytes += len(body or b"")
            if answer.status == 429 and attempt < 8:
                self.retries += 1
                self.resent.append(f"{method} {path}: 429")
                time.sleep(1)
                continue
            if not 200 <= answer.status < 300:
                self.errors.append(f"{method} {path}: {answer.status} {payload[:200]!r}")
                return None, elapsed
            return payload, elapsed
        return None, time.perf_counter() - start

    def run(self) -> None:
        rng = random.Random(self.index)
        for path in PAGE_FILES:
            self.request("GET", path)
        state, _ = self.request("GET", "/api/class")
        weights_every_s = json.loads(state)["weights_every_s"] if state else 0.0
        config = TrainConfig(model="shallow", epochs=self.epochs, learning_rate=0.5, seed=self.index, train_limit=1000)
        head = {
            **page_runs.head(config, self.sha256, "class_bench", "class_bench"),
            "student": f"Student {self.index:03d}",
        }
        json_headers = {"Content-Type": "application/json"}
        payload, _ = self.request("POST", "/api/class/runs", json.dumps(head).encode(), json_headers)
        if payload is None:
            return
        created = json.loads(payload)
        self.run_name = created["run"]
        headers = {**json_headers, "X-Run-Secret": created["secret"]}
        weights = json.dumps(encoded(prng.initial_weights(self.index, [784, 64, 10])))
        # As the page: weights every weights_every_s, the first after a random part of that (not all at once).
        weights_sent = time.monotonic() - rng.uniform(0, weights_every_s)
        for epoch in range(1, self.epochs + 1):
            time.sleep(rng.uniform(0.1, 0.5))
            row = {"loss": [1 / epoch], "accuracy": [0.9], "val_loss": [1 / epoch], "val_accuracy": [0.9]}
            body = f'{{"epoch": {epoch}, "history": {json.dumps(row)}, "handwriting_accuracy": 0.5'
            if time.monotonic() - weights_sent >= weights_every_s:  # As the page: every few seconds.
                body += f', "weights": {weights}'
                weights_sent = time.monotonic()
            payload, elapsed = self.request(
                "POST", f"/api/class/runs/{self.run_name}/epochs", (body + "}").encode(), headers
            )
            self.latencies.append(elapsed)
            if os.environ.get("CLASS_BENCH_TRACE"):  # When each epoch was answered, and how long it took.
                print(
                    f"student {self.index} epoch {epoch}: {elapsed * 1000:.0f} ms at {time.monotonic():.3f}",
                    file=sys.stderr,
                )
            if payload is not None:
                self.answered = epoch
        # The final weights at float32, as the page sends them.
        finish = f'{{"status": "complete", "wall_time_s": 1.0, "weights": {weights}}}'.encode()
        _, self.finish_latency = self.request("POST", f"/api/class/runs/{self.run_name}/finish", finish, headers)
        self.connection.close()


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU time so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(pid: int, seen: dict[int, float]) -> float:
    """The CPU time of `pid`'s child processes (the server's finish workers), each as last seen alive:
    call it until the children end, with the same `seen`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            seen[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return sum(seen.values())


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=100, help="students at once (default: 100)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs each student sends (default: 200)")
    parser.add_argument("--runs-dir", default=None, help="the server's runs folder (default: a fresh temporary one)")
    parser.add_argument("--cap-mb", type=float, default=100_000, help="the runs folder's cap, MB (default: 100000)")
    args = parser.parse_args(argv)
    if args.students < 1 or args.epochs < 1:
        parser.error("--students and --epochs must be positive")
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="class-bench-"))
    port = free_port()
    loaded = data.load(os.environ.get("DIGITLAB_DATA"))
    command = [
        sys.executable, "-m", "digitlab", "serve", "--class", "--host", "127.0.0.1", "--port", str(port),
        "--runs-dir", str(runs_dir), "--class-cap-mb", str(args.cap_mb),
    ]  # fmt: skip
    if os.environ.get("DIGITLAB_DATA"):
        command += ["--data", os.environ["DIGITLAB_DATA"]]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                probe.request("GET", "/api/health")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(server.stderr.read().decode() if server.stderr else "", file=sys.stderr)
                print("error: digitlab serve did not start", file=sys.stderr)
                return 2
            time.sleep(0.2)
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        warm.request("GET", "/static/mnist/index.json")  # The asset is built once, before the class comes.
        warm.getresponse().read()
        load_before = os.getloadavg()[0]
        cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
        students = [Student(index, port, args.epochs, loaded.sha256, {}) for index in range(args.students)]
        for student in students:
            student.start()
        workers: dict[int, float] = {}
        while any(student.is_alive() for student in students):
            children_cpu_seconds(server.pid, workers)
            time.sleep(0.5)
        wall = time.perf_counter() - wall_before
        cpu = cpu_seconds(server.pid) - cpu_before
        workers_cpu = children_cpu_seconds(server.pid, workers)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    latencies = sorted(latency for student in students for latency in student.latencies)
    errors = [error for student in students for error in student.errors]
    lost, complete = 0, 0
    for student in students:
        if student.run_name is None:
            lost += args.epochs
            continue
        run = runs.Run(runs_dir / student.run_name)
        kept = len(run.history()["val_accuracy"])
        lost += max(0, student.answered - kept) + (args.epochs - student.answered)
        complete += run.status().get("status") == "complete" and kept == args.epochs
    size = sum(path.stat().st_size for path in runs_dir.rglob("*") if path.is_file())

    def ms(fraction: float) -> str:
        return (
            f"{latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000:.1f} ms" if latencies else "-"
        )

    finishes = sorted(student.finish_latency for student in students if student.finish_latency is not None)

    def finish_ms(fraction: float) -> str:
        return f"{finishes[min(len(finishes) - 1, int(fraction * len(finishes)))] * 1000:.0f} ms" if finishes else "-"

    rows = [
        ("students x epochs", f"{args.students} x {args.epochs}"),
        ("submissions", str(len(latencies))),
        ("submissions p50", ms(0.50)),
        ("submissions p99", ms(0.99)),
        ("submissions max", ms(1.0)),
        ("mean", f"{statistics.fmean(latencies) * 1000:.1f} ms" if latencies else "-"),
        ("errors", str(len(errors))),
        ("resent", f"{sum(student.retries for student in students)} (lost on the way or refused for the rate)"),
        ("epochs lost", str(lost)),
        ("runs complete", f"{complete} / {args.students}"),
        ("finishes p50, max", f"{finish_ms(0.5)}, {finish_ms(1.0)}"),
        ("sent", f"{sum(student.sent_bytes for student in students) / 1e6:.1f} MB"),
        ("runs folder", f"{size / 1e6:.1f} MB"),
        ("wall time", f"{wall:.1f} s"),
        ("server CPU", f"{cpu:.1f} s ({100 * cpu / wall:.0f}% of one core)"),
        ("finish workers' CPU", f"{workers_cpu:.1f} s ({100 * workers_cpu / wall:.0f}% of one core)"),
        ("load average (1 min)", f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"),
        ("machine", machine()),
    ]
    for name, value in rows:
        print(f"{name:<22} {value}")
    for error in errors[:5]:
        print(f"  e.g. {error}")
    for reason in [reason for student in students for reason in student.resent][:5]:
        print(f"  resent after {reason}")
    if args.runs_dir is None:
        shutil.rmtree(runs_dir)  # A fresh folder of its own: the class's runs go once measured.
    return 0 if not errors and lost == 0 and complete == args.students else 1


if __name__ == "__main__":
    sys.exit(main())

"""`digitlab sweep --address` on a real Ray cluster of the test's own (heavy): a head and a worker node
in two network namespaces, joined by a veth pair, with private addresses that exist only inside
them, the worker in a mount namespace of its own in which the sweep's folder does not exist, so a
trial there can deliver its run only through Ray. Where the machine refuses network namespaces,
the cluster is one head on loopback and the two-machine tests are skipped, saying so.

On it: a driver without the cluster's token is refused, a trial that fails on its own is recorded
and the others finish, early stopping, bug 1 of issue 15 through the CLI, a sweep across the two
machines equal to the embedded one (tests/sweep_helpers.py's reference_sweep), and the same sweep
with the worker machine's Ray processes SIGKILLed while its trial trains (this test runs last: the
worker stays dead). Every driver joins this one cluster, so no test pays for a Ray start of its own.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from digitlab import cli, runs, text
from sweep_helpers import ENVIRONMENT, SWEEP_ARGS, descendants, kill, results_without_time, trials, wait_gone

HEAD_IP, WORKER_IP = "10.213.0.1", "10.213.0.2"
PORT = 6379
RAY = Path(sys.executable).with_name("ray")
# The cluster's environment: its token (Ray's default), and a lost node noticed within a few seconds
# (the GCS checks each node every second and gives up after three misses; Ray's default is 5 x 3 s).
CLUSTER_ENVIRONMENT = dict(
    ENVIRONMENT,
    RAY_AUTH_MODE="token",
    RAY_health_check_period_ms="1000",
    RAY_health_check_timeout_ms="1000",
    RAY_health_check_failure_threshold="3",
)


class RayCluster:
    """The test's Ray: a head and a worker node in network namespaces (`nodes` 2), or a head on loopback."""

    def __init__(self, hidden: Path):
        self.tag = secrets.token_hex(3)
        self.hidden = hidden  # What the worker node does not see: every test's tmp_path.
        self.logs = Path(tempfile.mkdtemp(prefix=f"ray-{self.tag}-"))  # Short: Ray's socket paths fit 107 bytes.
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.worker: subprocess.Popen | None = None
        self.prefix: list[str] = []  # How a driver is run beside the head.
        self.nodes = 0
        self.skip_reason = ""

    # Starting and stopping.

    def start(self) -> None:
        try:
            self._make_namespaces()
        except (OSError, subprocess.CalledProcessError) as error:
            said = getattr(error, "stderr", "") or str(error)
            self.skip_reason = f"this machine does not allow network namespaces ({said.strip()})"
            self._remove_namespaces()
            with socket.socket() as probe:  # A free port: this machine's other Rays may hold 6379.
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            self._start_node(self._head_command("127.0.0.1", port), "head")
            self.address, self.nodes = f"127.0.0.1:{port}", 1
            return
        self.prefix = ["ip", "netns", "exec", self.head_ns]
        self._start_node(self.prefix + self._head_command(HEAD_IP), "head")
        self.address, self.nodes = f"{HEAD_IP}:{PORT}", 1
        self.start_worker()

    def _make_namespaces(self) -> None:
        self.head_ns, self.worker_ns = f"dl-{self.tag}-head", f"dl-{self.tag}-work"
        head_link, worker_link = f"dl{self.tag}h", f"dl{self.tag}w"
        for namespace in (self.head_ns, self.worker_ns):
            _run("ip", "netns", "add", namespace)
            self.namespaces.append(namespace)
        _run("ip", "link", "add", head_link, "type", "veth", "peer", "name", worker_link)
        for namespace, link, address in ((self.head_ns, head_link, HEAD_IP), (self.worker_ns, worker_link, WORKER_IP)):
            _run("ip", "link", "set", link, "netns", namespace)
            _run("ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", link)
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
            _run("ip", "-n", namespace, "link", "set", link, "up")
        if not shutil.which("unshare") or not shutil.which("nsenter"):
            raise OSError("unshare and nsenter (util-linux) are needed for the worker's mount namespace")

    def _head_command(self, address: str, port: int = PORT) -> list[str]:
        return [
            str(RAY), "start", "--head", "--block", "--node-ip-address", address, "--port", str(port),
            "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats",
            "--temp-dir", str(self.logs / "head"),
        ]  # fmt: skip

    def start_worker(self) -> None:
        """The worker node, in its namespace, with an empty tmpfs over the tests' folders."""
        ray_start = [
            str(RAY), "start", "--address", f"{HEAD_IP}:{PORT}", "--node-ip-address", WORKER_IP,
            "--num-cpus", "1", "--block", "--disable-usage-stats", "--temp-dir", str(self.logs / "worker"),
        ]  # fmt: skip
        hide = f"mount -t tmpfs digitlab-test {shlex.quote(str(self.hidden))} && exec {shlex.join(ray_start)}"
        command = ["ip", "netns", "exec", self.worker_ns, "unshare", "-m", "--propagation", "private", "sh", "-c", hide]
        self.worker = self._start_node(command, "worker")
        self.nodes = 2

    def _start_node(self, command: list[str], name: str) -> subprocess.Popen:
        """Starts `ray start --block` and waits for it to say it is up; a node whose raylet gave up
        (on a busy machine Ray's agents can take longer to start than its raylet waits) is started again."""
        for attempt in range(1, 4):
            log = self.logs / f"{name}-{attempt}.log"
            with open(log, "w") as handle:
                process = subprocess.Popen(
                    command,
                    env=CLUSTER_ENVIRONMENT,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.processes.append(process)
            deadline = time.monotonic() + 240
            while process.poll() is None and time.monotonic() < deadline:
                if "Ray runtime started" in log.read_text(errors="replace"):
                    return process
                time.sleep(0.5)
            self._stop(process)
        raise AssertionError(f"The Ray {name} did not start in three tries; see {log}:\n{log.read_text()[-3000:]}")

    def kill_worker(self) -> int:
        """SIGKILLs every process of the worker node at once (as a machine that dies); how many."""
        assert self.worker is not None
        pids = {self.worker.pid} | descendants(self.worker.pid)
        kill(pids)
        self.worker.wait(timeout=60)
        wait_gone(pids, 60)
        return len(pids)

    def stop(self) -> None:
        for process in reversed(self.processes):
            self._stop(process)
        self._remove_namespaces()
        shutil.rmtree(self.logs, ignore_errors=True)

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        started = descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        wait_gone(started, 60)

    def _remove_namespaces(self) -> None:
        for namespace in self.namespaces:  # Deleting a namespace deletes its end of the veth pair, so both.
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        self.namespaces = []

    # Drivers.

    def sweep(self, *argv, env=None, timeout=900) -> subprocess.CompletedProcess:
        """`digitlab sweep --address THE_HEAD ARGV`, beside the head, to its end."""
        return subprocess.run(
            self._command(argv), env=env or CLUSTER_ENVIRONMENT, text=True, capture_output=True, timeout=timeout
        )

    def start_sweep(self, *argv) -> subprocess.Popen:
        return subprocess.Popen(
            self._command(argv), env=CLUSTER_ENVIRONMENT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def _command(self, argv) -> list[str]:
        return [*self.prefix, sys.executable, "-m", "digitlab", "sweep", "--address", self.address, *map(str, argv)]

    def worker_sees(self, path: Path) -> bool:
        """Whether `path` exists in the worker node's mount namespace."""
        assert self.worker is not None
        return subprocess.run(["nsenter", "-t", str(self.worker.pid), "-m", "test", "-e", str(path)]).returncode == 0


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, mnist_path):
    cluster = RayCluster(hidden=tmp_path_factory.getbasetemp())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def two_machines(ray_cluster):
    if ray_cluster.nodes < 2:
        pytest.skip(ray_cluster.skip_reason or "the cluster's worker node is gone")
    return ray_cluster


# On any cluster.


@pytest.mark.heavy
def test_a_driver_without_the_clusters_token_is_refused_clearly_and_fast(ray_cluster, tmp_path):
    # Ray's clusters ask for a token (~/.ray/auth_token, which `ray start` made or found), which a driver
    # given an address sends only when told to: without RAY_AUTH_MODE=token it is refused, clearly and fast.
    out = tmp_path / "sweep"
    started = time.monotonic()
    without_token = {key: value for key, value in CLUSTER_ENVIRONMENT.items() if key != "RAY_AUTH_MODE"}
    refused = ray_cluster.sweep("--grid", "learning_rate=0.1", "--out", out, env=without_token)
    assert refused.returncode == 2 and refused.stderr.startswith("error: Could not start or reach the Ray cluster")
    assert "RAY_AUTH_MODE=token" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    assert time.monotonic() - started < 30 and not out.exists()
    greedy = ray_cluster.sweep("--grid", "learning_rate=0.1", "--cpus-per-trial", "3", "--out", out)
    assert greedy.returncode == 2 and not out.exists()
    cpus = ray_cluster.nodes  # One CPU a node.
    assert greedy.stderr == f"error: Each trial asks for 3 CPUs (--cpus-per-trial), but this Ray has only {cpus}.\n"


@pytest.mark.heavy
def test_a_trial_that_fails_on_its_own_is_recorded_not_retried_and_the_others_finish(ray_cluster, tmp_path):
    out = tmp_path / "sweep"
    result = ray_cluster.sweep(
        "--grid", "model=shallow,lenet", "--engine", "fast", "--epochs", "2", "--train-limit", "1000", "--out", out
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads((out / "sweep.json").read_text())
    assert [trial["status"] for trial in state["trials"]] == ["complete", "failed"]
    assert "--engine fast cannot train the lenet net" in state["trials"][1]["error"]
    assert not state["trials"][1].get("retries")  # Its own error: not Tune's to retry.
    rows = results_without_time(out)
    assert [row["model"] for row in rows] == ["shallow", "lenet"]
    assert rows[1]["status"].startswith("failed (1 of 1 seeds): --engine fast cannot train the lenet net")
    assert "0 failed" not in result.stdout.splitlines()[-1] and "1 failed" in result.stdout.splitlines()[-1]


@pytest.mark.heavy
def test_a_sweep_of_epochs_beside_another_field_ends_with_its_tables_heatmap_and_report(ray_cluster, tmp_path, capsys):
    """Issue 15, bug 1, as the user met it (this command trained all four trials, then failed), on this
    cluster rather than an embedded Ray only to spare a Ray start: the bug was in the results."""
    out = tmp_path / "sweep"
    result = ray_cluster.sweep(
        "--grid", "epochs=1,2", "--grid", "learning_rate=0.1,0.5", "--seeds", "1", "--train-limit", "1000", "--out", out
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("Done: 4 trials (4 complete, 0 stopped early, 0 failed)")
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert {(row["epochs"], row["learning_rate"]) for row in rows} == {
        ("1", "0.1"),
        ("1", "0.5"),
        ("2", "0.1"),
        ("2", "0.5"),
    }
    assert all(row["epochs_run"] == row["epochs"] and row["status"] == "complete" for row in rows)
    assert [row["params"] for row in json.loads((out / "results.json").read_text())] == [
        {"epochs": int(row["epochs"]), "learning_rate": float(row["learning_rate"])} for row in rows
    ]
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "results.md").read_text() in result.stdout
    code = cli.main(["report", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == "" and captured.out.strip() == f"Wrote {out / 'report.html'}"


@pytest.mark.heavy
def test_early_stopping_stops_the_trials_that_trail_and_says_so(ray_cluster, tmp_path):
    """Learning rates from good to hopeless for the book's net, so that ASHA (rungs at epochs 1, 3
    and 9) has good trials to compare the later ones with."""
    out = tmp_path / "sweep"
    result = ray_cluster.sweep(
        "--grid",
        "learning_rate=3,1,0.3,0.03,0.003,0.001,0.0003,0.0001",
        "--epochs",
        "9",
        "--train-limit",
        "1000",
        "--early-stop",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads((out / "sweep.json").read_text())
    stopped = [trial for trial in state["trials"] if trial["status"] == "stopped"]
    assert stopped and {trial["status"] for trial in state["trials"]} <= {"complete", "stopped"}
    for trial in stopped:
        # Interrupted by the scheduler after an epoch, or with its worker ended mid-epoch: resumable either way.
        # (Tune stops a trial asynchronously: a fast one may train a few epochs past the decision.)
        assert runs.Run(out / "runs" / trial["run"]).status()["status"] == "interrupted"
    rows = {row["learning_rate"]: row for row in results_without_time(out)}
    for trial in stopped:
        assert rows[text.value_text(trial["params"]["learning_rate"])]["status"] == "stopped early (1 of 1 seeds)"
    assert f"{len(stopped)} stopped early" in result.stdout.splitlines()[-1]


# On two machines with no shared folder.


def _nodes_of_runs(out: Path) -> dict[str, dict]:
    return {path.name: runs.Run(path).metrics()["node"] for path in sorted((out / "runs").iterdir()) if path.is_dir()}


@pytest.mark.heavy
def test_a_sweep_across_two_machines_with_no_shared_folder_equals_the_embedded_one(
    two_machines, reference_sweep, tmp_path
):
    out = tmp_path / "sweep"
    assert not two_machines.worker_sees(tmp_path)  # The worker cannot write there, nor read it.
    result = two_machines.sweep(*SWEEP_ARGS, "--out", out)
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    nodes = _nodes_of_runs(out)
    ran_on = sorted(node["address"] for node in nodes.values())
    assert set(ran_on) == {HEAD_IP, WORKER_IP}, nodes  # Trials ran on both machines...
    assert results_without_time(out) == results_without_time(reference_sweep[1])  # ...to the same results.
    for name in nodes:
        assert runs.Run(out / "runs" / name).history() == runs.Run(reference_sweep[1] / "runs" / name).history()
        assert runs.Run(out / "runs" / name).load_model() is not None
        assert not list((out / "runs" / name).glob(".*"))
    last = result.stdout.splitlines()[-1]
    assert f"on {HEAD_IP}" in last and f"on {WORKER_IP}" in last, last  # The trials of each machine.


@pytest.mark.heavy
def test_a_lost_machine_is_survived_with_the_same_results(two_machines, reference_sweep, tmp_path):
    """The worker machine's Ray processes are SIGKILLed once a trial there has a checkpoint in OUT;
    Tune starts that trial again on the head, which resumes it from that checkpoint. Runs last."""
    out = tmp_path / "sweep"
    process = two_machines.start_sweep(*SWEEP_ARGS, "--out", out)
    cut = None
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline and cut is None:
        for trial in trials(out):
            if trial.get("node") == WORKER_IP and trial["status"] == "running":
                try:
                    status = runs.Run(out / "runs" / trial["run"]).read_json(runs.STATUS_FILE)
                except runs.RunError:
                    continue
                if status.get("checkpoint_epoch") and status.get("status") == "running":
                    cut = dict(trial, checkpoint_epoch=status["checkpoint_epoch"])
                    break
        time.sleep(0.02)
    assert cut is not None, "no trial trained on the worker machine: " + (process.communicate()[0] or "")
    killed = two_machines.kill_worker()
    two_machines.nodes = 1  # Gone for good: later tests of two machines skip.
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    assert killed >= 3, killed  # Its raylet, agents and workers.
    state = {trial["run"]: trial for trial in json.loads((out / "sweep.json").read_text())["trials"]}
    assert {trial["status"] for trial in state.values()} == {"complete"}
    retried = state[cut["run"]]
    assert retried["retries"] >= 1 and retried["lost"][0] == WORKER_IP and retried["node"] == HEAD_IP
    metrics = runs.Run(out / "runs" / cut["run"]).metrics()
    assert metrics["node"]["address"] == HEAD_IP and metrics["node"]["attempt"] >= 2
    assert metrics["resumed_after_epoch"] >= cut["checkpoint_epoch"]  # From its checkpoint, not from the start.
    assert results_without_time(out) == [
        dict(row, retried=str(int(row["learning_rate"] == text.value_text(cut["params"]["learning_rate"]))))
        for row in results_without_time(reference_sweep[1])
    ]
    for name in state:
        assert runs.Run(out / "runs" / name).history() == runs.Run(reference_sweep[1] / "runs" / name).history()
    assert f"{cut['run']} lost its worker on {WORKER_IP}; retrying it from its last checkpoint" in output
    assert "1 retried after a lost worker or machine" in output.splitlines()[-1]

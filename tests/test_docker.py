"""The Docker image, built from the repository's Dockerfile and run with a real container engine.

The `docker` tests (their own marker: in `make test`, not in `make check`) build the image with
podman (Debian's, on runc; `make test` installs it where apt-get can) and run it: `digitlab train`
on MNIST mounted read-only writes a complete run into a host folder; `docker stop` ends a training
container within 10 s with its run interrupted, and the run resumes; JupyterLab answers on a
published loopback port, lists the four notebooks and the project's kernel, and runs a notebook's
first cells through the kernel's websocket; `digitlab serve` answers; the health check turns
healthy; MNIST kept in a named volume is found as Keras's cache; the image runs as a non-root user
and holds no .venv, no tests and no MNIST; a change to the code rebuilds only the wheel's layers.
Where no image registry can be reached, the base image is a stand-in built from Debian's packages
(scripts/standin_base.py), cached between runs. Every container, volume and image a test makes is
removed afterwards, also when it fails; the build cache and the stand-in base are kept. The tests
skip, saying why, only where no container engine works.

The unmarked tests check the lock files, the .dockerignore and the health check's rules (fast tier).
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.server
import json
import os
import re
import resource
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))
LOCK = ROOT / "requirements" / "lock.txt"
IMAGE_LOCK = ROOT / "requirements" / "image.txt"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOME = "/home/digitlab"
STOP_LIMIT_S = 10
# The tests run containers of this image with this prefix in their names, so that they can all be removed.
PREFIX = f"digitlab-test-{uuid.uuid4().hex[:8]}"

SYSTEMD_NOISE = re.compile(r'level=error msg="(unable to get systemd connection|Removing timer for container)')

docker = pytest.mark.docker
_terminal: list = []


@pytest.fixture(scope="module", autouse=True)
def _terminal_reporter(pytestconfig):
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")  # None in an xdist worker.
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    _terminal[:] = [reporter, capture] if reporter and capture else []


def _pins(path: Path) -> dict[str, str]:
    """name -> exact version, from a lock file of `name==version` lines."""
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


# The fast tier: what `make lock` wrote, the build context and the health check's rules.


def test_the_lock_pins_every_dependency_of_pyproject_within_its_range():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["lab"]]
    wanted += project["optional-dependencies"]["test"]
    pins = _pins(LOCK)
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {LOCK.name}: run make lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}: make lock"
    # The image's lock is the same versions, fewer packages (no test tools).
    image = _pins(IMAGE_LOCK)
    assert image.items() <= pins.items() and "pytest" not in image and "jupyterlab" in image


def test_the_default_install_pulls_no_cuda_build():
    for path in (LOCK, IMAGE_LOCK):
        pins = _pins(path)
        assert not [name for name in pins if name.startswith("nvidia-") or "cuda" in name], path
        assert "tensorflow-cpu" in pins and "tensorflow" not in pins and "torch" not in pins
        assert not [version for version in pins.values() if "+cu" in version]


def test_the_build_context_holds_only_what_the_dockerfile_copies():
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "*", "the context is a list of what goes in"
    allowed = [pattern[1:] for pattern in patterns if pattern.startswith("!")]
    for name in [".venv", ".git", "runs", "sweeps", "tests", "mnist.npz", ".pytest_cache", "docs"]:
        assert not any(fnmatch.fnmatch(name, pattern) for pattern in allowed), name
    copied = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert source in allowed or source.split("/")[0] in allowed, f"{source} is copied but not in the context"


def test_the_health_check_asks_each_server_on_its_port(load_script):
    health = load_script("healthcheck")
    assert health.server_urls(
        [
            ["/usr/bin/tini", "--", "jupyter", "lab", "--ip=0.0.0.0", "--port=8888"],
            ["/opt/digitlab/bin/python", "/opt/digitlab/bin/jupyter-lab", "--ip=0.0.0.0", "--port=9999"],
            ["python", "/opt/digitlab/bin/digitlab", "serve", "runs/RUN", "--host", "0.0.0.0"],
            ["python", "-m", "digitlab", "serve", "runs/RUN", "--port", "8123"],
            ["python", "/opt/digitlab/bin/digitlab", "train", "--epochs", "20"],
            ["/bin/bash"],
        ]
    ) == [
        "http://127.0.0.1:9999/api",
        "http://127.0.0.1:8000/api/health",
        "http://127.0.0.1:8123/api/health",
    ]


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (401, True), (403, True), (500, False), (None, False)])
def test_the_health_check_takes_a_token_request_for_an_answer(
    load_script, monkeypatch, capsys, free_port, status, healthy
):
    """A server that asks for its token (digitlab serve --host 0.0.0.0) is up; a 500 or no server is not."""
    health = load_script("healthcheck")

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = None if status is None else http.server.HTTPServer(("127.0.0.1", 0), Answer)
    port = free_port if server is None else server.server_address[1]
    monkeypatch.setattr(health, "_command_lines", lambda: [["python", "-m", "digitlab", "serve", "--port", str(port)]])
    if server is not None:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert health.main() == (0 if healthy else 1)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert capsys.readouterr().out.startswith("healthy" if healthy else "unhealthy")


# The container engine: podman as root on runc, with a containers.conf of the test's own.


class Engine:
    """Runs podman with this test's settings; remembers what it creates so that it can all be removed."""

    def __init__(self, config_dir: Path):
        config = config_dir / "containers.conf"
        # Podman's default limits ask for more than many machines allow (runc then cannot start anything): ask
        # for this machine's hard limits, and no more processes than it has process ids.
        pid_max = (
            int(Path("/proc/sys/kernel/pid_max").read_text()) if Path("/proc/sys/kernel/pid_max").is_file() else 32768
        )
        ulimits = []
        for name, limit, most in (
            ("nofile", resource.RLIMIT_NOFILE, 1 << 20),
            ("nproc", resource.RLIMIT_NPROC, pid_max),
        ):
            hard = resource.getrlimit(limit)[1]
            value = most if hard == resource.RLIM_INFINITY else min(hard, most)
            ulimits.append(f'"{name}={value}:{value}"')
        runtime = 'runtime = "runc"' if shutil.which("runc") else ""  # crun cannot start containers on hybrid cgroups.
        config.write_text(f"[containers]\ndefault_ulimits = [{', '.join(ulimits)}]\n[engine]\n{runtime}\n")
        self.environment = {**os.environ, "CONTAINERS_CONF": str(config)}
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(["podman", *args], env=self.environment, capture_output=True, text=True, timeout=timeout)
        # Without systemd, podman cannot time health checks, and says so on every run: not the test's concern.
        done.stderr = "".join(line for line in done.stderr.splitlines(keepends=True) if not SYSTEMD_NOISE.search(line))
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def run(self, image: str, *args: str, name: str | None = None, detach: bool = False, options=()):
        """`podman run` of `image`: detached (named, to be removed afterwards) or to its end."""
        name = name or f"{PREFIX}-{len(self.containers)}"
        self.containers.append(name)
        # Without systemd podman cannot time health checks; `podman healthcheck run` runs them on demand.
        flags = ["--name", name, "--health-interval", "disable", *options]
        if detach:
            return self("run", "--detach", *flags, image, *args)
        return self("run", *flags, image, *args, check=False)

    def inspect(self, container: str, template: str) -> str:
        return self("inspect", "--format", template, container).stdout.strip()

    def logs(self, container: str) -> str:
        done = self("logs", container, check=False)
        return done.stdout + done.stderr

    def remove_all(self) -> None:
        for name in self.containers:
            self("rm", "--force", "--volumes", name, check=False)
        for name in self.volumes:
            self("volume", "rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    if shutil.which("podman") is None:
        pytest.skip(
            "no container engine: the docker tests need podman (apt-get install podman buildah runc; make test does)"
        )
    engine = Engine(tmp_path_factory.mktemp("podman"))
    info = engine("info", check=False, timeout=120)
    if info.returncode != 0:
        pytest.skip(f"podman is installed but does not work here: {info.stderr.strip()[-500:]}")
    yield engine
    engine.remove_all()


@pytest.fixture(scope="module")
def base_image(engine, load_script):
    """The Dockerfile's base: a local one, or the stand-in built from Debian's packages (cached)."""
    standin = load_script("standin_base")
    podman = ["env", f"CONTAINERS_CONF={engine.environment['CONTAINERS_CONF']}", "podman"]
    if standin._image_label(podman, standin.BASE_IMAGE) is None and os.geteuid() != 0:
        pytest.skip(f"{standin.BASE_IMAGE} is not here, and building its stand-in needs root (debootstrap)")
    start = time.perf_counter()
    described = standin.ensure(podman, print_fn=_report)
    _report(f"base: {described}, in {time.perf_counter() - start:.0f} s")
    return standin.BASE_IMAGE


def _build(engine, context: Path, tag: str, *options: str, check: bool = True) -> tuple[str, float]:
    """`podman build` as docs/docker.md says (a Docker-format image, so that it keeps its HEALTHCHECK)."""
    secret = ["--secret", f"id=ca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    start = time.perf_counter()
    command = ["build", "--format", "docker", "--pull=never", *secret, *options, "--tag", tag, str(context)]
    done = engine(*command, check=check, timeout=1800)
    return done.stdout + done.stderr, time.perf_counter() - start


@pytest.fixture(scope="module")
def image(engine, base_image):
    tag = f"localhost/{PREFIX}:latest"
    try:
        output, took = _build(engine, ROOT, tag)
        cached = output.count("--> Using cache")
        _report(f"image built in {took:.0f} s ({cached} steps from the build cache)")
        size = int(engine("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        _report(f"image size: {size / 1e9:.2f} GB")
        yield tag
    finally:
        engine("rmi", "--force", "--no-prune", tag, check=False)


@pytest.fixture(scope="module")
def mnist_mount(mnist_path) -> list[str]:
    return ["--volume", f"{mnist_path}:/data/mnist.npz:ro", "--env", "DIGITLAB_DATA=/data/mnist.npz"]


def _runs_folder(path: Path, owner: int | None = None) -> Path:
    """A host folder for a container's runs, as a user would make it (`mkdir runs`), owned by `owner`."""
    path.mkdir()
    if owner is not None and os.geteuid() == 0:
        os.chown(path, owner, owner)
    else:
        path.chmod(0o777)
    return path


@pytest.fixture(scope="module")
def trained_in_container(engine, image, mnist_mount, tmp_path_factory):
    """`digitlab train --epochs 1 --train-limit 2000` inside, on MNIST mounted read-only; (output, run folder)."""
    runs = _runs_folder(tmp_path_factory.mktemp("container_runs") / "runs", owner=1000)
    train = ["digitlab", "train", "--epochs", "1", "--train-limit", "2000"]
    done = engine.run(image, *train, options=[*mnist_mount, "--volume", f"{runs}:{HOME}/runs"])
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = runs.iterdir()
    return done.stdout + done.stderr, run


# Run inside the image: who it runs as, what lies where the project's files could have gone, what is installed.
PROBE = """
import getpass, json, os, stat, subprocess
from pathlib import Path

found = []
for folder, subfolders, files in os.walk("/"):
    if folder.startswith(("/proc", "/sys", "/dev")):
        subfolders[:] = []
        continue
    for name in subfolders + files:
        path = os.path.join(folder, name)
        if name == ".venv" or name.lower().startswith("mnist") and name.endswith(".npz") or name == "test_training.py":
            found.append(path)
        elif name in files:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_size == 11490434:  # The size of MNIST's mnist.npz.
                found.append(path)
freeze = subprocess.run(["python", "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
print(json.dumps({
    "uid": os.getuid(), "user": getpass.getuser(), "found": found,
    "home": sorted(os.listdir(Path.home())), "runs": os.listdir(Path.home() / "runs"),
    "datasets": os.listdir(Path.home() / ".keras" / "datasets"),
    "notebooks": sorted(os.listdir(Path.home() / "notebooks")),
    "packages": dict(line.split("==") for line in freeze.split()),
}))
"""


@docker
def test_the_image_runs_as_a_user_and_holds_no_venv_tests_or_mnist(engine, image):
    done = engine.run(image, "python", "-c", PROBE)
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert probe["uid"] != 0 and probe["user"] == "digitlab"
    assert probe["found"] == [], f"found in the image: {probe['found']}"
    assert probe["home"] == [".bash_logout", ".bashrc", ".keras", ".profile", "notebooks", "runs"]
    assert probe["runs"] == [] and probe["datasets"] == [] and probe["notebooks"] == NOTEBOOKS
    installed = {canonicalize_name(name): version for name, version in probe["packages"].items()}
    expected = _pins(IMAGE_LOCK)
    assert {name: installed.get(name) for name in expected} == expected, "the image installs exactly image.txt"
    assert not [name for name in installed if name.startswith("nvidia-") or name == "tensorflow"]
    assert "digitlab" in installed


@docker
def test_train_inside_writes_a_complete_run_into_the_host_folder(trained_in_container):
    output, run = trained_in_container
    engine_line = next(line for line in output.splitlines() if line.startswith("Engine:"))
    assert "whole epochs in C" in engine_line, engine_line  # The wheel carries the compiled kernels.
    expected = {"config.json", "data.json", "status.json", "history.csv", "history.json", "model.keras"}
    expected |= {"curves.png", "metrics.json", "checkpoint.npz"}
    assert expected <= {path.name for path in run.iterdir()}
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert len(_history(run)["val_accuracy"]) == 1
    assert json.loads((run / "data.json").read_text())["path"] == "/data/mnist.npz"
    assert {path.stat().st_uid for path in run.iterdir()} == {1000}  # The image's user, as the folder's owner.


@docker
def test_without_mnist_or_network_the_loaders_message_shows(engine, image):
    done = engine.run(image, "digitlab", "train", "--epochs", "1", options=["--network", "none"])
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "DIGITLAB_DATA" in done.stderr, done.stderr


@docker
def test_mnist_kept_in_a_named_volume_is_found_as_keras_s_cache(engine, image, mnist_mount):
    """docs/docker.md's `-v digitlab-keras:/home/digitlab/.keras`: what lands there once (here copied, as no
    download can be made on this machine) is found by later containers without DIGITLAB_DATA or a network."""
    volume = f"{PREFIX}-keras"
    engine.volumes.append(volume)
    keep = ["--volume", f"{volume}:{HOME}/.keras"]
    copied = engine.run(image, "sh", "-c", f"cp /data/mnist.npz {HOME}/.keras/datasets/", options=[*mnist_mount, *keep])
    assert copied.returncode == 0, copied.stderr
    train = ["digitlab", "train", "--epochs", "1", "--train-limit", "500", "--runs-dir", "/tmp/runs"]
    done = engine.run(image, *train, options=["--network", "none", *keep])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Downloading" not in done.stdout + done.stderr


@docker
def test_docker_stop_interrupts_training_and_the_run_resumes(engine, image, mnist_mount, tmp_path):
    # As `docker run --user "$(id -u):$(id -g)"` does for a host user who is not the image's uid 1000.
    user = 4321
    runs = _runs_folder(tmp_path / "runs", owner=user)
    options = ["--user", f"{user}:{user}", *mnist_mount, "--volume", f"{runs}:{HOME}/runs"]
    # A checkpoint after every epoch, so that the stop lands after the third one, whatever the machine's speed.
    train = ["digitlab", "train", "--epochs", "200", "--train-limit", "20000", "--seed", "3"]
    train += ["--checkpoint-seconds", "0"]
    container = f"{PREFIX}-stopped"
    engine.run(image, *train, name=container, detach=True, options=options)
    deadline = time.monotonic() + 180
    while not _checkpointed(runs, epochs=3):
        assert time.monotonic() < deadline, f"no checkpoint within 3 minutes:\n{engine.logs(container)}"
        assert engine.inspect(container, "{{.State.Running}}") == "true", engine.logs(container)
        time.sleep(0.2)
    start = time.perf_counter()
    engine("stop", "--time", str(STOP_LIMIT_S), container)
    took = time.perf_counter() - start
    output = engine.logs(container)
    assert took < STOP_LIMIT_S, f"docker stop took {took:.1f} s:\n{output}"
    assert engine.inspect(container, "{{.State.ExitCode}}") == "130", output  # As after Ctrl-C; not 137 (killed).
    assert "Resume it with" in output and "Traceback" not in output
    (run,) = runs.iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["checkpoint_epoch"] >= 3
    assert {path.stat().st_uid for path in run.iterdir()} == {user}  # The host user's files.
    _report(f"docker stop of training: {took:.1f} s, at epoch {status['checkpoint_epoch']}")

    resumed = engine.run(image, "digitlab", "train", "--resume", f"runs/{run.name}", options=options)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert len(_history(run)["val_accuracy"]) == 200


def _history(run: Path) -> dict:
    (seed,) = json.loads((run / "history.json").read_text())["seeds"]
    return seed


def _checkpointed(runs: Path, epochs: int) -> bool:
    for run in runs.iterdir():
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return (json.loads((run / "status.json").read_text()).get("checkpoint_epoch") or 0) >= epochs
    return False


@docker
def test_jupyterlab_lists_the_notebooks_and_kernel_and_runs_the_first_cells(engine, image, mnist_mount, free_port):
    token = uuid.uuid4().hex
    url = f"http://127.0.0.1:{free_port}"
    container = f"{PREFIX}-jupyter"
    # The image's default command; published on this machine's loopback only.
    options = ["--publish", f"127.0.0.1:{free_port}:8888", "--env", f"JUPYTER_TOKEN={token}", *mnist_mount]
    engine.run(image, name=container, detach=True, options=options)
    _wait_for(f"{url}/api/status", engine, container, token=token)
    with pytest.raises(urllib.error.HTTPError):  # The token is required.
        urllib.request.urlopen(f"{url}/api/contents", timeout=10)
    assert "/lab?token=" in engine.logs(container)  # The address to open, as Jupyter prints it.

    contents = _get(f"{url}/api/contents", token)
    assert sorted(item["name"] for item in contents["content"] if item["type"] == "notebook") == NOTEBOOKS
    kernelspecs = _get(f"{url}/api/kernelspecs", token)
    spec = kernelspecs["kernelspecs"]["python3"]["spec"]
    assert kernelspecs["default"] == "python3" and spec["display_name"] == "Python 3 (digitlab)"
    assert spec["argv"][0] == "/opt/digitlab/bin/python"

    notebook = json.loads((ROOT / "notebooks" / "shallow_net_in_keras.ipynb").read_text())
    cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"][:4]
    kernel = _post(f"{url}/api/kernels", token, {"name": "python3"})
    outputs = _execute(f"ws://127.0.0.1:{free_port}/api/kernels/{kernel['id']}/channels", token, cells)
    for cell, got in zip(cells, outputs, strict=True):
        # The same versions and the same MNIST as the saved run: the same printed and returned values.
        assert got == _texts(cell["outputs"]), "".join(cell["source"])
    _report(f"JupyterLab: {len(cells)} cells of shallow_net_in_keras.ipynb ran: {outputs[1]}")

    health = engine("healthcheck", "run", container, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    assert engine.inspect(container, "{{.State.Health.Status}}") == "healthy"
    _stop_within_limit(engine, container, "JupyterLab")


def _wait_for(url: str, engine, container: str, token: str | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(urllib.error.URLError, ConnectionError, OSError):
            _get(url, token)
            return
        if engine.inspect(container, "{{.State.Running}}") != "true":
            pytest.fail(f"the container ended:\n{engine.logs(container)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{engine.logs(container)}")
        time.sleep(0.5)


def _get(url: str, token: str | None):
    headers = {"Authorization": f"token {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        return json.loads(answer.read())


def _post(url: str, token: str, body: dict):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _texts(outputs: list[dict]) -> list[str]:
    """The text a cell printed or returned (stream text and text/plain results), in order."""
    texts = []
    for output in outputs:
        if output["output_type"] == "stream":
            texts.append("".join(output["text"]))
        elif output["output_type"] in ("execute_result", "display_data") and "text/plain" in output["data"]:
            texts.append("".join(output["data"]["text/plain"]))
        elif output["output_type"] == "error":
            texts.append(f"{output['ename']}: {output['evalue']}")
    return texts


def _execute(url: str, token: str, cells: list[dict], timeout: float = 180) -> list[list[str]]:
    """Runs the cells one by one through the kernel's websocket (Jupyter's messaging protocol)."""
    import websocket

    connection = websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=timeout)
    session = uuid.uuid4().hex
    results = []
    try:
        for cell in cells:
            message_id = uuid.uuid4().hex
            header = {"msg_id": message_id, "msg_type": "execute_request", "session": session, "username": "test"}
            header |= {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "version": "5.3"}
            content = {"code": "".join(cell["source"]), "silent": False, "store_history": True}
            content |= {"user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
            request = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
            connection.send(json.dumps(request))
            outputs, replied, idle = [], False, False
            while not (replied and idle):
                message = json.loads(connection.recv())
                if message.get("parent_header", {}).get("msg_id") != message_id:
                    continue
                kind = message["header"]["msg_type"]
                if kind == "execute_reply":
                    assert message["content"]["status"] == "ok", message["content"]
                    replied = True
                elif kind == "status":
                    idle = message["content"]["execution_state"] == "idle"
                elif kind in ("stream", "execute_result", "display_data", "error"):
                    outputs.append({"output_type": kind, **message["content"]})
            results.append(_texts(outputs))
    finally:
        connection.close()
    return results


def _stop_within_limit(engine, container: str, what: str) -> None:
    start = time.perf_counter()
    engine("stop", "--time", str(STOP_LIMIT_S), container)
    took = time.perf_counter() - start
    assert took < STOP_LIMIT_S, f"docker stop of {what} took {took:.1f} s"
    assert engine.inspect(container, "{{.State.ExitCode}}") != "137", f"{what} was killed, not stopped"
    _report(f"docker stop of {what}: {took:.1f} s")


@docker
def test_digitlab_serve_answers_turns_healthy_and_stops(engine, image, trained_in_container, free_port):
    _, run = trained_in_container
    container = f"{PREFIX}-serve"
    options = ["--publish", f"127.0.0.1:{free_port}:8000", "--volume", f"{run.parent}:{HOME}/runs:ro"]
    engine.run(
        image,
        "digitlab",
        "serve",
        f"runs/{run.name}",
        "--host",
        "0.0.0.0",
        name=container,
        detach=True,
        options=options,
    )
    # Bound to the container's every interface, it asks every request for a token, and prints links
    # that carry it: one for the container's published port on this machine.
    url = f"http://127.0.0.1:{free_port}"
    deadline = time.monotonic() + 180
    printed = r"on this machine.*: http://127\.0\.0\.1:8000/\?token=(\S+)"
    while not (links := re.findall(printed, engine.logs(container))):
        if engine.inspect(container, "{{.State.Running}}") != "true" or time.monotonic() > deadline:
            pytest.fail(f"no link with a token was printed:\n{engine.logs(container)}")
        time.sleep(0.5)
    _wait_for(f"{url}/api/health?token={links[0]}", engine, container)
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(f"{url}/api/health", None)
    assert refused.value.code == 401
    assert _get(f"{url}/api/health?token={links[0]}", None)["run"] == run.name
    health = engine("healthcheck", "run", container, check=False)  # It holds no token: a 401 is an answer.
    assert health.returncode == 0, health.stdout + health.stderr
    assert engine.inspect(container, "{{.State.Health.Status}}") == "healthy"
    _stop_within_limit(engine, container, "digitlab serve")


@docker
def test_a_change_to_the_code_rebuilds_only_the_wheel(engine, image, tmp_path):
    """The dependencies' layer comes from the build cache after a code change; the change reaches the image."""
    context = tmp_path / "context"
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for name in [*allowed, "Dockerfile", ".dockerignore"]:
        source = ROOT / name
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
        else:
            shutil.copy2(source, context / name)
    marker = f"# changed by test_docker {uuid.uuid4().hex}"
    with (context / "src" / "digitlab" / "__init__.py").open("a") as init:
        init.write(f"\n{marker}\n")
    tag = f"localhost/{PREFIX}-changed:latest"
    try:
        output, took = _build(engine, context, tag)
        steps = _steps(output)
        installs = [step for step in steps if "pip install -r /tmp/requirements/image.txt" in step[0]]
        assert installs and all(cached for _, cached in installs), "the dependencies were installed again"
        wheel = [step for step in steps if "pip wheel" in step[0]]
        assert wheel and not any(cached for _, cached in wheel), "the wheel was not rebuilt"
        shown = engine.run(tag, "sh", "-c", "tail -n 1 $(python -c 'import digitlab; print(digitlab.__file__)')")
        assert shown.stdout.strip() == marker
        _report(f"rebuild after a code change: {took:.0f} s")
    finally:
        engine("rmi", "--force", "--no-prune", tag, check=False)


@docker
def test_an_unknown_variant_is_refused_with_a_clear_message(engine, image):
    tag = f"localhost/{PREFIX}-variant:latest"
    try:
        output, _ = _build(engine, ROOT, tag, "--build-arg", "VARIANT=tpu", check=False)
        assert "VARIANT must be cpu or gpu, not 'tpu'" in output
    finally:
        engine("rmi", "--force", "--no-prune", tag, check=False)


def _steps(output: str) -> list[tuple[str, bool]]:
    """(instruction, from the build cache) for each step of podman build's output."""
    steps = []
    for chunk in re.split(r"^\[\d+/\d+\] STEP \d+/\d+: ", output, flags=re.MULTILINE)[1:]:
        instruction, _, rest = chunk.partition("\n")
        steps.append((instruction, rest.lstrip().startswith("--> Using cache")))
    return steps


def _report(line: str) -> None:
    """A measured figure, written to the terminal past pytest's capture (docs/docker.md quotes them)."""
    if _terminal:
        reporter, capture = _terminal
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[docker] {line}")

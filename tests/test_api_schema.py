"""The API against its own /openapi.json: schemathesis (`st run`, every check on, a fixed seed, EXAMPLES
examples a route) against a real `digitlab serve`, in the three setups of issue 22: no run, a saved run,
and off loopback with tokens, as the operator and as a view-only viewer; and a class (`--class`). Any
failure fails the test, with schemathesis's report.

The servers train nothing (the page trains in the browser), so every request the fuzzer sends is
answered at once. The one exception to the checks' defaults: POST /api/predict may answer 422 to a
body the schema allows, since no schema can say that a picture must hold a digit (schemathesis sends
a blank 1x1 PNG), and POST /api/runs may answer 422 to a page run the schema allows, since no schema
can say that its weights must fit its config.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from test_live_server import _in_namespace, namespace  # noqa: F401  (the network namespace fixture)

pytestmark = pytest.mark.heavy

EXAMPLES = 50
SEED = 22
OPERATOR, VIEWER = "operator-token-0123456789", "viewer-token-0123456789"
CONFIG = """\
[generation]
max-examples = {examples}

[[operations]]
include-path = "/api/predict"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path = "/api/runs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


def _serve(arguments, runs_dir, mnist_path) -> list[str]:
    return [
        sys.executable, "-m", "digitlab", "serve", *arguments, "--runs-dir", str(runs_dir), "--data", str(mnist_path),
    ]  # fmt: skip


CLASS_CONFIG = """
[[operations]]
include-path-regex = "^/api/class/runs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


def _schemathesis(base, folder, headers=(), name=None, prefix=(), extra=""):
    """Runs `st run` on base's /openapi.json (in a network namespace with `prefix`); asserts it found nothing."""
    config = folder / "schemathesis.toml"
    text = CONFIG.format(examples=EXAMPLES) + extra
    if name is not None:  # Every {name} is the saved run, so each route reaches its logic, not a 404.
        text = f"[parameters]\n{json.dumps('path.name')} = {json.dumps(name)}\n\n" + text
    config.write_text(text)
    command = [
        *prefix, sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{base}/openapi.json",
        "--checks", "all", "--seed", str(SEED), "--workers", "1", "--no-color", "--request-timeout", "60",
        "--report", "junit", "--report-dir", str(folder / "report"),
    ]  # fmt: skip
    for header in headers:
        command += ["--header", header]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=folder)
    output = done.stdout + done.stderr
    print(output[-4000:])
    assert done.returncode == 0, output[-12000:]  # st exits 1 on any failure of any check.
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-4000:]
    assert selected[1] == selected[2] == tested[1], output[-4000:]  # Every route of the schema was fuzzed.


def test_no_run(tmp_path, load_script, mnist_path):
    load_test = load_script("load_test")
    port = load_test.free_port()
    base = f"http://127.0.0.1:{port}"
    command = _serve(["--port", str(port)], tmp_path / "runs", mnist_path)
    with load_test.run_server(command, f"{base}/api/health", timeout=180):
        _schemathesis(base, tmp_path)


def test_a_saved_run(tmp_path, load_script, mnist_path, trained_run):
    load_test = load_script("load_test")
    port = load_test.free_port()
    base = f"http://127.0.0.1:{port}"
    runs_dir = tmp_path / "runs"
    shutil.copytree(trained_run, runs_dir / trained_run.name)
    command = _serve([str(runs_dir / trained_run.name), "--port", str(port)], runs_dir, mnist_path)
    with load_test.run_server(command, f"{base}/api/health", timeout=180):
        _schemathesis(base, tmp_path, name=trained_run.name)


def test_a_class(tmp_path, load_script, mnist_path):
    """`serve --class`: the students' routes too (a page run's settings, epochs and finish may answer
    422 to a body the schema allows: no schema can say that weights must fit the net's shapes)."""
    load_test = load_script("load_test")
    port = load_test.free_port()
    base = f"http://127.0.0.1:{port}"
    command = _serve(["--port", str(port), "--class"], tmp_path / "runs", mnist_path)
    with load_test.run_server(command, f"{base}/api/health", timeout=180):
        _schemathesis(base, tmp_path, extra=CLASS_CONFIG)


def test_off_loopback_with_tokens_as_operator_and_viewer(namespace, tmp_path, mnist_path):  # noqa: F811
    name, address = namespace
    base = f"http://{address}:8000"
    log = tmp_path / "server.txt"
    tokens = ["--token", OPERATOR, "--view-token", VIEWER]
    command = _serve(["--host", address, "--port", "8000", *tokens], tmp_path / "runs", mnist_path)
    with log.open("w") as output:
        server = subprocess.Popen(["ip", "netns", "exec", name, *command], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while _in_namespace(name, [["GET", f"{base}/api/health", {}, None]])[0][0] != 401:  # Up: it wants a token.
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        inside = ["ip", "netns", "exec", name]
        for role, token in (("operator", OPERATOR), ("viewer", VIEWER)):
            folder = tmp_path / role
            folder.mkdir()
            _schemathesis(base, folder, headers=[f"Authorization: Bearer {token}"], prefix=inside)
    finally:
        server.terminate()
        server.wait(timeout=60)

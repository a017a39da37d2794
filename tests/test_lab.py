"""`make lab`: JupyterLab, installed by the project's own files, serves the notebooks with the project's kernel.

The heavy test starts a real Jupyter server on a free port of 127.0.0.1 with a token,
as `make lab` does (same root folder, loopback), asks its REST API for the notebooks
and the kernels, and stops it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _get(url: str, token: str):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_make_lab_starts_jupyterlab_on_the_notebooks_on_loopback():
    command = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lab_line = next(line for line in command.splitlines() if "jupyter lab" in line)
    assert "--ServerApp.ip=127.0.0.1" in lab_line and "--ServerApp.root_dir=notebooks" in lab_line


@pytest.mark.heavy
def test_jupyter_lists_the_notebooks_and_the_projects_kernel(free_port, running_server, tmp_path):
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{free_port}"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={free_port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={NOTEBOOKS}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")  # As `make lab` does for root.
    # The server's runtime files go to a temporary folder; the kernels are found as for a reader.
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    with running_server(command, f"{url}/api/status?token={token}", env=env):
        with pytest.raises(urllib.error.HTTPError):  # The token is required.
            urllib.request.urlopen(f"{url}/api/contents", timeout=10)
        contents = _get(f"{url}/api/contents", token)
        listed = sorted(item["name"] for item in contents["content"] if item["type"] == "notebook")
        assert listed == sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) and len(listed) == 4
        kernelspecs = _get(f"{url}/api/kernelspecs", token)
        # Each notebook names the python3 kernel; here it is this environment's Python, digitlab's.
        assert {json.loads((NOTEBOOKS / name).read_text())["metadata"]["kernelspec"]["name"] for name in listed} == {
            "python3"
        }
        spec = kernelspecs["kernelspecs"]["python3"]["spec"]
        assert Path(spec["argv"][0]).resolve() == Path(sys.executable).resolve()
        assert spec["display_name"] == "Python 3 (digitlab)"
        assert kernelspecs["default"] == "python3"
        # The API opens a notebook as Jupyter would.
        notebook = _get(f"{url}/api/contents/shallow_net_in_keras.ipynb", token)
        assert notebook["type"] == "notebook" and notebook["content"]["cells"]

"""What the sweep tests share (tests/test_sweep.py, tests/test_sweep_cluster.py): the sweep they all
compare with, run once per session on an embedded Ray, and helpers for processes and sockets.

    from sweep_helpers import SWEEP_ARGS, reference_sweep, sweep   # reference_sweep is a fixture
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The sweep every Ray test compares against: 2 learning rates x 2 seeds of the shallow net.
SWEEP_ARGS = [
    "--grid",
    "learning_rate=0.05,0.5",
    "--seeds",
    "2",
    "--seed",
    "3",
    "--epochs",
    "6",
    "--train-limit",
    "6000",
    "--checkpoint-seconds",  # A checkpoint after every epoch: the tests kill trials between them.
    "0",
]
ENVIRONMENT = dict(os.environ, PYTHONUNBUFFERED="1")


def sweep(*argv, timeout=900, env=ENVIRONMENT, prefix=()):
    """`digitlab sweep ARGV` in a child process (after `prefix`, such as `ip netns exec NAME`), to its end."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "digitlab", "sweep", *map(str, argv)],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def results_without_time(out: Path) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    for row in rows:
        row.pop("wall_time_s")
    return rows


def trials(out: Path) -> list[dict]:
    """The trials of sweep.json as they are now ([] while it is not written yet)."""
    try:
        return json.loads((out / "sweep.json").read_text())["trials"]
    except (OSError, ValueError, KeyError):
        return []


@pytest.fixture(scope="session")
def reference_sweep(tmp_path_factory, mnist_path):
    """SWEEP_ARGS swept without a break on an embedded Ray: its output, its folder, the TCP sockets
    its Ray processes listened on while a trial trained ({(process name, address, port)}), and
    the PYTHONPATH each of those processes had ({process name: PYTHONPATH})."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "sweep", *SWEEP_ARGS, "--out", str(out)],
        env=ENVIRONMENT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    listening: set[tuple[str, str, int]] = set()
    python_paths: dict[str, str] = {}
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if any(trial["status"] == "running" for trial in trials(out)):
            # Ray, its agents and a trial's worker are all up now, until the sweep's end.
            ray_processes = descendants(process.pid)
            listening = listening_sockets({process.pid} | ray_processes)
            python_paths = {name: _environment(pid).get("PYTHONPATH", "") for pid, name in _names(ray_processes)}
            break
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=900)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, out, listening, python_paths


def _names(pids: set[int]) -> list[tuple[int, str]]:
    found = []
    for pid in pids:
        try:
            found.append((pid, Path(f"/proc/{pid}/comm").read_text().strip()))
        except OSError:
            pass
    return found


def _environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item)


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: set[int], seconds: float) -> set[int]:
    """Waits for the processes to end; kills (by id) any left after `seconds`, returns those."""
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while True:
        alive = {pid for pid in alive if running(pid)}
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    kill(alive)
    return alive


def kill(pids: set[int], signal_number: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            pass


def listening_sockets(pids: set[int]) -> set[tuple[str, str, int]]:
    """The TCP sockets these processes listen on: (process name, local address, port), read from
    /proc/PID/fd (the sockets' inodes) and /proc/PID/net/tcp and tcp6 (their addresses and states)."""
    found = set()
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            inodes = set()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
            tables = {kind: Path(f"/proc/{pid}/net/{kind}").read_text() for kind in ("tcp", "tcp6")}
        except OSError:
            continue  # The process ended meanwhile.
        for kind, table in tables.items():
            for line in table.splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN.
                    address, port = fields[1].split(":")
                    found.add((name, _address(address, kind == "tcp6"), int(port, 16)))
    return found


def _address(hexadecimal: str, six: bool) -> str:
    """An address of /proc/net/tcp(6): 32-bit words in the machine's (little-endian) byte order."""
    raw = bytes.fromhex(hexadecimal)
    raw = b"".join(raw[index : index + 4][::-1] for index in range(0, len(raw), 4))
    return str(ipaddress.IPv6Address(raw) if six else ipaddress.IPv4Address(raw))


def is_loopback(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    mapped = getattr(parsed, "ipv4_mapped", None)
    return parsed.is_loopback or (mapped is not None and mapped.is_loopback)

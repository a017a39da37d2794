"""Measures `digitlab serve` showing, live, the runs `digitlab train` trains into its runs folder.

    python scripts/live_bench.py                              # 200 epochs, twice each, 50 viewers
    python scripts/live_bench.py --epochs 20 --repeats 1      # a quick look

It starts `digitlab serve` (no RUN) on a free loopback port and prints one table, every row from
this one run:

1. The book's run (shallow net, all 60,000 images, --epochs, seed 0, --record-epochs) trained by
   `digitlab train` into a folder the server does not serve (the anchor), then into the server's
   runs folder while `--viewers` viewers follow it (as the page does: the event stream, the newest
   epoch's tiles inside it, any other epoch's tiles fetched), alternating, `--repeats` times. For
   each: the command's wall time and the training loop's own (metrics.json `wall_time_s`), and
   the server's answers meanwhile (a prediction every 50 ms, p50/p99); a first row gives those
   answers with nothing training. The ratios say what being watched costs the training.
2. Delay: for every epoch and viewer of the followed runs, the time from the epoch's weights
   landing on disk (the mtime of epochs/epoch-NNNN.npz, the last file training writes for an
   epoch) to the event's arrival, p50/p99/max. The server reads a followed run's folder every
   `live.POLL_S` seconds, so that bounds the typical delay.

The clients are a few lines of asyncio speaking HTTP/1.1 directly, so that they take as little CPU
as they can from the server. Everything runs on 127.0.0.1; the script refuses any other address.
Tests import `read_events`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_test  # noqa: E402  (this folder's own module: the server starter and the loopback check)

PROBE_EVERY_S = 0.05


async def _open(host: str, port: int, path: str, headers: dict | None = None, method: str = "GET", body: bytes = b""):
    reader, writer = await asyncio.open_connection(host, port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = {}
    for line in head[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    return reader, writer, status, fields


async def _body(reader, fields) -> bytes:
    if fields.get("transfer-encoding") == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(chunks)
            chunks.append(chunk[:-2])
    return await reader.readexactly(int(fields.get("content-length", "0")))


async def _stream_chunks(reader, fields):
    """The body of a streaming (chunked) response, chunk by chunk, as it arrives."""
    if fields.get("transfer-encoding") != "chunked":
        yield await _body(reader, fields)
        return
    while True:
        size = int((await reader.readline()).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return
        yield chunk[:-2]


async def read_events_async(
    url: str, name: str, last_event_id=None, stop_after_epoch=None, headers=None, on_event=None
):
    """Reads a run's event stream: a list of its epoch and end events as (id, event, data, arrival
    time.time()); every event, `tiles` ones included, is also passed to `on_event`. Stops at the end
    event, after the epoch `stop_after_epoch`, or when `on_event` returns True (then closes the
    connection, as a viewer that leaves)."""
    parts = urllib.request.urlparse(url)
    load_test.check_loopback(parts.hostname)
    wanted = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id is not None:
        wanted["Last-Event-ID"] = str(last_event_id)
    reader, writer, status, fields = await _open(parts.hostname, parts.port, f"/api/runs/{name}/events", wanted)
    if status != 200:
        body = await _body(reader, fields)
        writer.close()
        raise RuntimeError(f"The events of {name} answered {status}: {body[:300]!r}")
    found, pending = [], b""
    try:
        async for chunk in _stream_chunks(reader, fields):
            arrived = time.time()
            pending += chunk
            while b"\n\n" in pending:
                block, pending = pending.split(b"\n\n", 1)
                lines = [line.split(": ", 1) for line in block.decode().split("\n") if ": " in line]
                event = dict(line for line in lines if not line[0].startswith(":"))
                if "event" not in event:
                    continue
                item = (event.get("id"), event["event"], json.loads(event["data"]), arrived)
                if item[1] != "tiles":  # The newest epoch's pictures are only told to on_event.
                    found.append(item)
                if on_event is not None and await on_event(item):
                    return found
                if item[1] == "end" or (stop_after_epoch is not None and item[2].get("epoch", 0) >= stop_after_epoch):
                    return found
    finally:
        writer.close()
    return found


def read_events(url: str, name: str, **options) -> list:
    """`read_events_async` from synchronous code (the tests), in a thread of its own: the caller may
    already run an event loop (Playwright's synchronous API does)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read_events_async(url, name, **options)).result()


async def _viewer(url: str, name: str, tiles: bool) -> list:
    """One viewer, as the page: the event stream, and the newest epoch's tiles one picture at a time."""
    parts = urllib.request.urlparse(url)
    newest = {"url": None}
    fetched = {"url": None}
    wake = asyncio.Event()

    async def fetch_tiles():
        reader = writer = None
        try:
            while True:
                await wake.wait()
                wake.clear()
                while newest["url"] and newest["url"] != fetched["url"]:
                    target = newest["url"]
                    if writer is None:
                        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                    writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.hostname}\r\n\r\n".encode())
                    try:
                        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                    except (asyncio.IncompleteReadError, ConnectionError):
                        writer.close()  # The server closed the idle keep-alive connection (after 5 s): again.
                        reader = writer = None
                        continue
                    lines = head.split("\r\n")
                    length = int(
                        next(line.split(":")[1] for line in lines if line.lower().startswith("content-length"))
                    )
                    await reader.readexactly(length)
                    fetched["url"] = target
        finally:
            if writer is not None:
                writer.close()

    async def on_event(item):
        # As the page: the newest epoch's tiles follow its event; those of an epoch without them are fetched.
        if item[1] == "epoch" and item[2].get("tiles"):
            newest["url"] = item[2]["tiles"]
        elif item[1] == "tiles":
            fetched["url"] = newest["url"]  # Came inside the stream.
        if item[1] == "epoch":  # The page redraws on its next frame; a picture still missing is asked then.
            asyncio.get_running_loop().call_later(0.05, wake.set)

    fetcher = asyncio.create_task(fetch_tiles()) if tiles else None
    try:
        return await read_events_async(url, name, on_event=on_event if tiles else None)
    finally:
        if fetcher is not None:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await fetcher


async def _probe(url: str, run: str, stop: asyncio.Event) -> list[float]:
    """A prediction every PROBE_EVERY_S on one keep-alive connection until `stop`; the latencies in ms."""
    parts = urllib.request.urlparse(url)
    body, content_type = load_test.build_payload("pixels")
    request = (
        f"POST /api/predict?run={run} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    latencies = []
    try:
        while not stop.is_set():
            started = time.perf_counter()
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = int(
                next(line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length"))
            )
            await reader.readexactly(length)
            if not head.startswith("HTTP/1.1 200"):
                raise RuntimeError(f"A prediction failed: {head.splitlines()[0]}")
            latencies.append((time.perf_counter() - started) * 1000)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_EVERY_S)
    finally:
        writer.close()
    return latencies


def _percentiles(values) -> str:
    if not values:
        return "-"
    return f"{np.percentile(values, 50):.1f} / {np.percentile(values, 99):.1f}"


def _train_command(folder: Path, epochs: int, train_limit, data) -> list[str]:
    command = [sys.executable, "-m", "digitlab", "train", "--epochs", str(epochs), "--seed", "0", "--record-epochs"]
    command += ["--runs-dir", str(folder)] + (["--train-limit", str(train_limit)] if train_limit else [])
    return command + (["--data", data] if data else [])


async def _new_run(folder: Path, known: set, process) -> str:
    """The run folder a `digitlab train` just made in `folder`, once it has its config."""
    while True:
        made = [path.parent.name for path in folder.glob("*/config.json") if path.parent.name not in known]
        if made:
            return made[0]
        if process.returncode is not None:
            raise RuntimeError("digitlab train ended before its run folder appeared.")
        await asyncio.sleep(0.02)


async def _timed_run(command, url, probe_run, folder: Path, viewers: int):
    """Runs `digitlab train`; with `viewers`, that many follow its run on the server from its first
    moment. Returns (run name, wall s, the viewers' events, prediction latencies meanwhile)."""
    folder.mkdir(parents=True, exist_ok=True)
    known = {path.name for path in folder.iterdir()}
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(url, probe_run, stop))
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    name = await _new_run(folder, known, process)
    watched = await asyncio.gather(*(_viewer(url, name, True) for _ in range(viewers)))
    _, errors = await process.communicate()
    wall = time.perf_counter() - started
    stop.set()
    latencies = await probe
    if process.returncode != 0:
        raise RuntimeError(f"digitlab train failed: {errors.decode()[-2000:]}")
    return name, wall, watched, latencies


async def _idle_probe(url, run, seconds):
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(url, run, stop))
    await asyncio.sleep(seconds)
    stop.set()
    return await probe


def _delays(run_dir: Path, watched: list) -> list[float]:
    """Per epoch event: its arrival less the time its weights were written, in ms."""
    written = {int(path.stem.split("-")[1]): path.stat().st_mtime for path in (run_dir / "epochs").glob("epoch-*.npz")}
    return [
        (arrived - written[data["epoch"]]) * 1000
        for seen in watched
        for _, kind, data, arrived in seen
        if kind == "epoch" and data["epoch"] in written
    ]


def run_bench(epochs=200, repeats=2, viewers=50, train_limit=None, data=None, idle_s=10.0):
    """Runs the benchmark (see the module docstring); returns (table text, figures dict)."""
    folder = Path(tempfile.mkdtemp(prefix="digitlab-live-bench-"))
    port = load_test.free_port()
    url = f"http://127.0.0.1:{port}"
    served = folder / "served"
    server = [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(served), "--port", str(port)]
    server += ["--max-viewers", str(viewers + 10)] + (["--data", data] if data else [])
    rows, delays = [], []
    with load_test.run_server(server, f"{url}/api/health", timeout=180):
        # A first short run, in the served folder, whose network the predictions ask.
        subprocess.run(_train_command(served, 1, 2000, data), check=True, capture_output=True)
        (warm,) = [path.name for path in served.iterdir()]
        rows.append((f"server idle ({idle_s:g} s)", 1, None, None, asyncio.run(_idle_probe(url, warm, idle_s))))
        for repeat in range(1, repeats + 1):
            for label, where, count in (
                ("digitlab train, not watched", folder / "alone", 0),
                (f"digitlab train, {viewers} viewers", served, viewers),
            ):
                name, wall, watched, latencies = asyncio.run(
                    _timed_run(_train_command(where, epochs, train_limit, data), url, warm, where, count)
                )
                loop = json.loads((where / name / "metrics.json").read_text())["wall_time_s"]
                if any(
                    [item[2]["epoch"] for item in seen if item[1] == "epoch"] != list(range(1, epochs + 1))
                    for seen in watched
                ):
                    raise RuntimeError("A viewer missed epochs.")
                delays += _delays(where / name, watched)
                rows.append((label, repeat, wall, loop, latencies))
    alone = [row for row in rows if row[0].endswith("not watched")]
    watched_rows = [row for row in rows if row[0].endswith("viewers")]
    images = f"{train_limit:,}" if train_limit else "60,000"
    load = os.getloadavg()
    lines = [
        f"live_bench: shallow net, {epochs} epochs on {images} images, seed 0, --record-epochs; {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "",
        f"{'':36} {'run':>3}  {'wall s':>7}  {'training loop s':>15}  {'predict ms p50 / p99 meanwhile':>30}",
    ]
    for label, repeat, wall, loop, latencies in rows:
        wall_text, loop_text = ("-", "-") if wall is None else (f"{wall:.1f}", f"{loop:.1f}")
        lines.append(f"{label:36} {repeat:>3}  {wall_text:>7}  {loop_text:>15}  {_percentiles(latencies):>30}")
    ratio_wall = statistics.median(row[2] for row in watched_rows) / statistics.median(row[2] for row in alone)
    ratio_loop = statistics.median(row[3] for row in watched_rows) / statistics.median(row[3] for row in alone)
    lines += [
        "",
        f"watched / not watched, median of {repeats}:  wall {ratio_wall:.3f}   training loop {ratio_loop:.3f}",
        f"epoch written -> event arrival, {viewers} viewers ({len(delays)} events): "
        f"p50 {np.percentile(delays, 50):.1f} ms   p99 {np.percentile(delays, 99):.1f} ms   max {max(delays):.1f} ms",
    ]
    figures = {
        "rows": [dict(zip(("what", "repeat", "wall_s", "loop_s", "predict_ms"), row, strict=True)) for row in rows],
        "delay_ms": {
            "p50": float(np.percentile(delays, 50)),
            "p99": float(np.percentile(delays, 99)),
            "max": max(delays),
        },
        "folder": str(folder),
    }
    return "\n".join(lines), figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs of each timed run (default: 200, the book's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each kind, alternating (default: 2)")
    parser.add_argument("--viewers", type=int, default=50, help="viewers of each watched run (default: 50)")
    parser.add_argument("--train-limit", type=int, default=None, help="training images (default: all 60,000)")
    parser.add_argument(
        "--data", default=None, help="MNIST's mnist.npz (default: digitlab's search, DIGITLAB_DATA first)"
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "repeats", "viewers"):
        if not 1 <= getattr(args, name) <= 1000:
            parser.error(f"--{name.replace('_', '-')} must be from 1 to 1000")
    table, _ = run_bench(args.epochs, args.repeats, args.viewers, args.train_limit, args.data)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

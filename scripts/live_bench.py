"""Measures the live training page on this machine's loopback, side by side with `digitlab train`.

    python scripts/live_bench.py                              # 200 epochs, twice each, 20 and 50 viewers
    python scripts/live_bench.py --epochs 20 --repeats 1      # a quick look

It starts `digitlab serve` (no RUN) on a free loopback port and prints one table:

1. Speed: the book's run (shallow net, all 60,000 images, --epochs, seed 0) trained by
   `digitlab train` in its own process, then the same config started from the page's API
   (`POST /api/train`) while `--viewers` viewers watch it, alternating, `--repeats` times. For each:
   the wall time (the command's whole life; for the page, the POST until the end event) and the
   training loop's own time (metrics.json `wall_time_s`), and the server's answers meanwhile (a
   prediction every 50 ms, p50/p99): with `digitlab train` the training runs in another process,
   which is what a server training in a subprocess would give; with the page it runs in the
   server's own thread. A first row gives the server's answers with nothing training.
2. Delay: `--latency-viewers` viewers watch a run of `--latency-epochs` epochs; for every epoch
   and viewer, the time from the end of the epoch (the `time` the server stamps in the event,
   when the epoch's files are written) to the event's arrival, p50/p99/max.

Each viewer does what the page does: it reads the event stream (`GET /api/train/NAME/events`),
whose newest epoch carries its weight tiles, and fetches by URL the tiles of any epoch that came
without them (when it fell behind), one picture at a time. The clients are a few lines
of asyncio speaking HTTP/1.1 directly, so that they take as little CPU as they can from the server.
Everything runs on 127.0.0.1; the script refuses any other address. Tests import `read_events`.
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
    reader, writer, status, fields = await _open(parts.hostname, parts.port, f"/api/train/{name}/events", wanted)
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


def _post_json(url: str, path: str, values: dict) -> dict:
    request = urllib.request.Request(
        url + path, data=json.dumps(values).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


async def _page_run(url, runs_dir, values, viewers, probe_run, tiles=True):
    started = time.perf_counter()
    name = (await asyncio.to_thread(_post_json, url, "/api/train", values))["run"]
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(url, probe_run, stop)) if probe_run else None
    watched = await asyncio.gather(*(_viewer(url, name, tiles) for _ in range(viewers)))
    wall = time.perf_counter() - started
    stop.set()
    latencies = await probe if probe else []
    return name, wall, watched, latencies


async def _cli_run(command, probe_url, probe_run):
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(probe_url, probe_run, stop))
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, errors = await process.communicate()
    wall = time.perf_counter() - started
    stop.set()
    latencies = await probe
    if process.returncode != 0:
        raise RuntimeError(f"digitlab train failed: {errors.decode()[-2000:]}")
    return wall, latencies


async def _idle_probe(url, run, seconds):
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(url, run, stop))
    await asyncio.sleep(seconds)
    stop.set()
    return await probe


def _percentiles(values) -> str:
    if not values:
        return "-"
    return f"{np.percentile(values, 50):.1f} / {np.percentile(values, 99):.1f}"


def run_bench(
    epochs=200,
    repeats=2,
    viewers=20,
    latency_viewers=50,
    latency_epochs=200,
    train_limit=None,
    data=None,
    idle_s=10.0,
    baseline=False,
):
    """Runs the benchmark (see the module docstring); returns (table text, figures dict)."""
    folder = Path(tempfile.mkdtemp(prefix="digitlab-live-bench-"))
    port = load_test.free_port()
    url = f"http://127.0.0.1:{port}"
    data_flags = ["--data", data] if data else []
    server = [sys.executable, "-m", "digitlab", "serve", "--runs-dir", str(folder / "page"), "--port", str(port)]
    server += [
        "--max-viewers",
        str(max(viewers, latency_viewers) + 10),
        "--max-epochs",
        str(max(epochs, latency_epochs)),
    ]
    limit = {"train_limit": train_limit} if train_limit else {}
    values = {"epochs": epochs, "seed": 0, **limit}
    cli = [sys.executable, "-m", "digitlab", "train", "--epochs", str(epochs), "--seed", "0", *data_flags]
    cli += ["--runs-dir", str(folder / "cli")] + (["--train-limit", str(train_limit)] if train_limit else [])
    rows, figures = [], {"cli": [], "page": []}
    with load_test.run_server(server + data_flags, f"{url}/api/health", timeout=180):
        # A first short run loads MNIST and warms the server; predictions ask its network.
        warm = _post_json(url, "/api/train", {"epochs": 1, "train_limit": 2000, "seed": 0})["run"]
        read_events(url, warm)
        rows.append((f"server idle ({idle_s:g} s)", 1, None, None, asyncio.run(_idle_probe(url, warm, idle_s))))
        for repeat in range(1, repeats + 1):
            wall, latencies = asyncio.run(_cli_run(cli, url, warm))
            (run_dir,) = [path for path in (folder / "cli").iterdir() if path.name not in figures["cli"]]
            figures["cli"].append(run_dir.name)
            loop = _metrics(run_dir)["wall_time_s"]
            rows.append(("digitlab train (own process)", repeat, wall, loop, latencies))
            name, wall, watched, latencies = asyncio.run(_page_run(url, folder / "page", values, viewers, warm))
            figures["page"].append(name)
            loop = _metrics(folder / "page" / name)["wall_time_s"]
            if any(len([item for item in seen if item[1] == "epoch"]) != epochs for seen in watched):
                raise RuntimeError("A viewer missed epochs.")
            rows.append((f"page, {viewers} viewers (server thread)", repeat, wall, loop, latencies))
            if baseline:  # The same with one viewer reading the events only: what the viewers cost.
                name, wall, _, latencies = asyncio.run(_page_run(url, folder / "page", values, 1, warm, tiles=False))
                loop = _metrics(folder / "page" / name)["wall_time_s"]
                rows.append(("page, 1 viewer, events only", repeat, wall, loop, latencies))
        name, _, watched, _ = asyncio.run(
            _page_run(url, folder / "page", {**values, "epochs": latency_epochs}, latency_viewers, None)
        )
        delays = [
            (arrived - data["time"]) * 1000
            for seen in watched
            for _, kind, data, arrived in seen
            if kind == "epoch" and data.get("time")
        ]
    cli_walls = [row[2] for row in rows if row[0].startswith("digitlab")]
    page_walls = [row[2] for row in rows if row[0].startswith(f"page, {viewers} ")]
    cli_loops = [row[3] for row in rows if row[0].startswith("digitlab")]
    page_loops = [row[3] for row in rows if row[0].startswith(f"page, {viewers} ")]
    images = f"{train_limit:,}" if train_limit else "60,000"
    load = os.getloadavg()
    lines = [
        f"live_bench: shallow net, {epochs} epochs on {images} images, seed 0; {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "",
        f"{'':36} {'run':>3}  {'wall s':>7}  {'training loop s':>15}  {'predict ms p50 / p99 meanwhile':>30}",
    ]
    for label, repeat, wall, loop, latencies in rows:
        wall_text, loop_text = ("-", "-") if wall is None else (f"{wall:.1f}", f"{loop:.1f}")
        lines.append(f"{label:36} {repeat:>3}  {wall_text:>7}  {loop_text:>15}  {_percentiles(latencies):>30}")
    lines += [
        "",
        f"page / digitlab train, median of {repeats}:  "
        f"wall {statistics.median(page_walls) / statistics.median(cli_walls):.3f}   "
        f"training loop {statistics.median(page_loops) / statistics.median(cli_loops):.3f}",
        f"epoch end -> event arrival, {latency_viewers} viewers x {latency_epochs} epochs ({len(delays)} events): "
        f"p50 {np.percentile(delays, 50):.1f} ms   p99 {np.percentile(delays, 99):.1f} ms   max {max(delays):.1f} ms",
    ]
    figures.update(
        rows=[dict(zip(("what", "repeat", "wall_s", "loop_s", "predict_ms"), row, strict=True)) for row in rows],
        delay_ms={"p50": float(np.percentile(delays, 50)), "p99": float(np.percentile(delays, 99)), "max": max(delays)},
        folder=str(folder),
    )
    return "\n".join(lines), figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs of each timed run (default: 200, the book's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each kind, alternating (default: 2)")
    parser.add_argument("--viewers", type=int, default=20, help="viewers during the timed page runs (default: 20)")
    parser.add_argument("--latency-viewers", type=int, default=50, help="viewers of the delay run (default: 50)")
    parser.add_argument("--latency-epochs", type=int, default=200, help="epochs of the delay run (default: 200)")
    parser.add_argument("--train-limit", type=int, default=None, help="training images (default: all 60,000)")
    parser.add_argument(
        "--baseline", action="store_true", help="also time the page with one viewer reading the events only"
    )
    parser.add_argument(
        "--data", default=None, help="MNIST's mnist.npz (default: digitlab's search, DIGITLAB_DATA first)"
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "repeats", "viewers", "latency_viewers", "latency_epochs"):
        if not 1 <= getattr(args, name) <= 1000:
            parser.error(f"--{name.replace('_', '-')} must be from 1 to 1000")
    table, _ = run_bench(
        args.epochs,
        args.repeats,
        args.viewers,
        args.latency_viewers,
        args.latency_epochs,
        args.train_limit,
        args.data,
        baseline=args.baseline,
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

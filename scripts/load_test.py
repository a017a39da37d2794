"""A short, bounded load test of `POST /api/predict` on this machine's loopback interface.

    python scripts/load_test.py --run runs/shallow-1              # starts its own server on a free port
    python scripts/load_test.py --url http://127.0.0.1:8000       # a running `digitlab serve`
    python scripts/load_test.py --run runs/shallow-1 --payload png --requests 2000 --concurrency 50

It sends at most `--requests` requests over `--concurrency` keep-alive connections
and stops after `--time-limit` seconds whatever happens; it refuses any address
that is not loopback. The client is a few lines of asyncio speaking HTTP/1.1
directly, so that it takes as little of the CPU as possible from the server it
measures. It prints requests per second, the client's p50/p99 latency, the
server's own time per request (its `X-Process-Time-Ms` header) and the errors.

Payloads: `pixels` (JSON 28x28, the prediction alone) or `png` (a 140x140 PNG of a
drawn digit as a multipart upload, what the drawing page sends). Tests import
`run_load_test`, `start_server` and `run_server` from here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np

BOUNDARY = "digitlab-load-test-boundary"


def check_loopback(host: str) -> None:
    """Raises ValueError unless `host` is a loopback address."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"The load test runs on loopback only; {host!r} is not a loopback address. Use 127.0.0.1.")


def drawn_digit(size: int = 140) -> np.ndarray:
    """A synthetic test picture: a white '7' drawn with a thick pen on a dark board, (size, size, 3) uint8."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (20, 24, 31))
    draw = ImageDraw.Draw(image)
    scale = size / 140
    points = [(40 * scale, 35 * scale), (100 * scale, 35 * scale), (62 * scale, 112 * scale)]
    draw.line(points, fill="white", width=max(1, round(10 * scale)), joint="curve")
    return np.asarray(image)


def build_payload(kind: str) -> tuple[bytes, str]:
    """The request body and its Content-Type for a payload kind (`pixels` or `png`)."""
    from PIL import Image

    picture = drawn_digit()
    if kind == "pixels":
        grey = np.asarray(Image.fromarray(picture).convert("L").resize((28, 28), Image.LANCZOS))
        return json.dumps({"pixels": grey.tolist(), "prepare": False}).encode(), "application/json"
    if kind == "png":
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="drawing.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + buffer.getvalue()
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        return body, f"multipart/form-data; boundary={BOUNDARY}"
    raise ValueError(f"Unknown payload {kind!r}; choose pixels or png.")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _load(
    host: str,
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    requests: int,
    concurrency: int,
    time_limit: float,
    warmup: int,
) -> dict:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body
    latencies, server_times, statuses, failures = [], [], {}, []
    issued = 0
    deadline = 0.0
    measuring = False

    async def worker():
        nonlocal issued
        reader = writer = None
        try:
            while True:
                limit = requests if measuring else warmup
                if issued >= limit or time.perf_counter() > deadline:
                    return
                issued += 1
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    started = time.perf_counter()
                    writer.write(request)
                    status, headers, _ = await _read_response(reader)
                    elapsed = (time.perf_counter() - started) * 1000
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
                    if measuring:
                        failures.append(f"{type(error).__name__}: {error}")
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                if measuring:
                    latencies.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1
                    if "x-process-time-ms" in headers:
                        server_times.append(float(headers["x-process-time-ms"]))
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    # A short warm-up (not measured) opens the connections and warms the server's caches.
    deadline = time.perf_counter() + time_limit
    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(warmup, 1)))))
    issued, measuring = 0, True
    started = time.perf_counter()
    deadline = started + time_limit
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started

    def percentile(values, share):
        return round(float(np.percentile(values, share)), 3) if values else None

    errors = len(failures) + sum(count for status, count in statuses.items() if status != 200)
    return {
        "requests": len(latencies) + len(failures),
        "concurrency": concurrency,
        "errors": errors,
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "failures": failures[:5],
        "elapsed_s": round(elapsed, 3),
        "stopped_by_time_limit": time.perf_counter() > deadline,
        "requests_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": percentile(latencies, 100),
        },
        "server_ms": {
            "p50": percentile(server_times, 50),
            "p90": percentile(server_times, 90),
            "p99": percentile(server_times, 99),
            "max": percentile(server_times, 100),
        },
    }


def run_load_test(
    url: str = "http://127.0.0.1:8000",
    requests: int = 2000,
    concurrency: int = 50,
    time_limit: float = 30.0,
    payload: str = "pixels",
    warmup: int = 50,
) -> dict:
    """Sends at most `requests` predictions over `concurrency` connections within `time_limit`
    seconds to a loopback server, and returns the figures (see the module docstring)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"Expected an http:// URL such as http://127.0.0.1:8000; got {url!r}.")
    check_loopback(parts.hostname)
    if not 1 <= requests <= 100_000 or not 1 <= concurrency <= 1000 or not 0 < time_limit <= 600:
        raise ValueError("Keep the test bounded: 1-100,000 requests, 1-1,000 connections, a time limit of 0-600 s.")
    body, content_type = build_payload(payload)
    result = asyncio.run(
        _load(
            parts.hostname,
            parts.port or 80,
            "/api/predict",
            body,
            content_type,
            requests,
            concurrency,
            time_limit,
            warmup,
        )
    )
    result["payload"] = payload
    return result


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is listening on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def run_server(command: list[str], ready_url: str, timeout: float = 120.0, env: dict | None = None):
    """Starts `command` as a child process and waits until `ready_url` answers 200; yields the child,
    and stops it afterwards (SIGTERM, then SIGKILL after 20 s).

    Raises RuntimeError, with the end of the child's output, when it exits early or does not
    answer within `timeout` seconds. The tests' `running_server` fixture is this function."""
    # The child's output goes to a file, never a pipe that nobody reads (a full pipe would stall it).
    log = tempfile.TemporaryFile()
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def output() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + timeout
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"The server exited early: {output()}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"The server did not answer on {ready_url} within {timeout:g} s: {output()}")
            time.sleep(0.2)
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        log.close()


@contextlib.contextmanager
def start_server(model_path: str, port: int | None = None, timeout: float = 60.0, access_log: bool = False):
    """Runs `digitlab`'s server for a saved model in a child process on 127.0.0.1; yields its URL.

    A separate process keeps the client's and the server's Python apart (each has its own GIL)."""
    port = port or free_port()
    command = [sys.executable, os.path.abspath(__file__), "--serve-model", str(model_path), "--port", str(port)]
    if access_log:
        command.append("--access-log")
    url = f"http://127.0.0.1:{port}"
    with run_server(command, f"{url}/api/health", timeout):
        yield url


def _serve_model(model_path: str, port: int, access_log: bool) -> None:
    import keras

    import digitlab  # noqa: F401  (chooses the JAX backend before Keras loads)
    from digitlab.serve import app as serving

    model = keras.saving.load_model(model_path, safe_mode=True)
    serving.serve(
        model,
        host="127.0.0.1",
        port=port,
        run_name=os.path.basename(os.path.dirname(model_path)),
        access_log=access_log,
    )


def format_figures(result: dict) -> str:
    """The figures as a few lines of text."""
    latency, server = result["latency_ms"], result["server_ms"]
    return "\n".join(
        [
            f"payload {result['payload']}: {result['requests']} requests over {result['concurrency']} connections "
            f"in {result['elapsed_s']} s{' (stopped by the time limit)' if result['stopped_by_time_limit'] else ''}",
            f"  throughput        {result['requests_per_s']} requests/s",
            f"  client latency    p50 {latency['p50']} ms   p90 {latency['p90']} ms   "
            f"p99 {latency['p99']} ms   max {latency['max']} ms",
            f"  server time       p50 {server['p50']} ms   p90 {server['p90']} ms   "
            f"p99 {server['p99']} ms   (X-Process-Time-Ms)",
            f"  errors            {result['errors']}  statuses {result['statuses']}"
            + (f"  e.g. {result['failures'][0]}" if result["failures"] else ""),
        ]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="a running server on loopback, e.g. http://127.0.0.1:8000")
    target.add_argument("--run", help="a run folder holding model.keras; a server is started for it")
    target.add_argument("--model", help="a .keras file; a server is started for it")
    target.add_argument("--serve-model", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help="port for the started server (default: a free one)")
    parser.add_argument("--requests", type=int, default=2000, help="requests to send (default: 2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="keep-alive connections (default: 50)")
    parser.add_argument("--time-limit", type=float, default=30.0, help="stop after this many seconds (default: 30)")
    parser.add_argument(
        "--payload",
        choices=("pixels", "png", "both"),
        default="both",
        help="JSON 28x28 pixels, a PNG upload like the page's, or both (default: both)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="let the started server log every request, as `digitlab serve` does (default: off)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.serve_model:
        _serve_model(args.serve_model, args.port, args.access_log)
        return 0
    payloads = ("pixels", "png") if args.payload == "both" else (args.payload,)
    try:
        if args.url:
            server = contextlib.nullcontext(args.url.rstrip("/"))
        else:
            model_path = args.model or (os.path.join(args.run, "model.keras") if args.run else None)
            if not model_path or not os.path.isfile(model_path):
                parser.error("give --url of a running server, or --run/--model naming a saved model.keras")
            server = start_server(model_path, args.port, access_log=args.access_log)
        with server as url:
            results = [
                run_load_test(url, args.requests, args.concurrency, args.time_limit, payload) for payload in payloads
            ]
    except (ValueError, RuntimeError) as error:
        print(f"load test: {error}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2) if args.json else "\n".join(format_figures(result) for result in results))
    return 1 if any(result["errors"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())

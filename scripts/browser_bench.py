"""Measures the page that trains in the browser (issue 23's targets) against `digitlab train`, in one run.

    python scripts/browser_bench.py                  # the book's run: 200 epochs on all 60,000 images
    python scripts/browser_bench.py --quick          # 5 epochs on 10,000 images: a look, and the test's run
    python scripts/browser_bench.py --threads 1      # one thread only

It writes the static site (`digitlab site`) to a temporary folder, serves it on loopback with Python's
plain static file server (a second server, for more than one thread, adds the COOP/COEP headers that
cross-origin isolation needs) and drives headless Chromium through Playwright. For each thread count, in
a fresh browser: a first visit (MNIST fetched) and a second one (MNIST from IndexedDB), each trained for
one epoch, then the timed run: the book's net (shallow, MSE, SGD 0.01, batch 128, seed 0) for --epochs
epochs, from the click on Train to the end of the last epoch. The page is not changed for this: an init
script wraps the page's Worker constructor so that every message the training Worker sends is recorded
with the page's clock, and pins `navigator.hardwareConcurrency` (from which the page picks its threads).
The timed run has a handwriting set of 100 digits in the page (issue 24's target): ten of each label, the
first of the MNIST test images (the book's validation images), kept as the page keeps a drawn set
(handwriting.js's localStorage format, the 28x28 field and a pad-sized PNG). The page scores it every epoch
on its main thread while the Worker trains on; handwriting.js times each scoring with performance.now()
and hands the times to the list the init script puts in the page (handwriting.js's hook, there only when
this script asks), and the table sets them against the Worker's epochs. (One script over 450 lines: every
figure of both issues' tables from one run, which the coordinator starts once on a quiet machine.)

Then `digitlab train --seed 0` trains the same run twice in its own process, on the AVX2 path (the
default) and on the portable C path (DIGITLAB_KERNEL_SCALAR=1, which engine/sparse.py reads), and the
portable path trains the first --check-epochs epochs in this process, so that the browser's weights after
each of those epochs of the timed run are compared with the native ones, bit for bit. The page's peak
memory is the largest Chromium renderer's peak RSS (VmHWM in /proc: the page's process, which runs its
Workers too). One table is printed, with the machine and the date; --json FILE keeps the figures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import functools
import gzip
import http.server
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from digitlab import data, system
from digitlab.browser import prng, site
from digitlab.config import TrainConfig

CHROMIUM = os.environ.get("DIGITLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
# The book's run, as the page's URL settings and as `digitlab train` flags.
BOOK = {"model": "shallow", "loss": "mean_squared_error", "optimizer": "sgd", "learning_rate": 0.01, "batch_size": 128}
SEED = 0
PAGE_LOAD_MS = 120_000  # A generous bound on a loaded machine for the page to show its training card.
EPOCH_MS = 60_000  # The same for one epoch (the book's net takes well under a second an epoch in Chromium).

# Runs in the page before its scripts: records the training Worker's messages with the page's clock
# (performance.now(), whose origin is the navigation's start) and the click on Train.
RECORDER = """
Object.defineProperty(Navigator.prototype, "hardwareConcurrency", { get: () => %(threads)d });
window.__bench = { messages: [], weights: [], clicked: null };
window.__digitlabHandwritingTimes = []; // handwriting.js's hook: each epoch's scoring of the set (ms).
document.addEventListener("click", (event) => {
  if (event.target.id === "start") window.__bench.clicked = performance.now();
}, true);
const PageWorker = window.Worker;
window.Worker = class extends PageWorker {
  constructor(url, options) {
    super(url, options);
    if (!String(url).includes("train-worker.js")) return;
    this.addEventListener("message", ({ data }) => {
      const { weights, ...rest } = data;
      window.__bench.messages.push({ ...rest, at: performance.now() });
      if (data.type === "epoch") window.__bench.weights.push(weights);
    });
  }
};
window.__benchWeights = (epoch) => {
  const arrays = window.__bench.weights[epoch - 1];
  const all = new Uint8Array(arrays.reduce((total, array) => total + array.byteLength, 0));
  let offset = 0;
  for (const array of arrays) {
    all.set(new Uint8Array(array.buffer, array.byteOffset, array.byteLength), offset);
    offset += array.byteLength;
  }
  let text = "";
  for (let i = 0; i < all.length; i += 0x8000) text += String.fromCharCode(...all.subarray(i, i + 0x8000));
  return btoa(text);
};
"""


HANDWRITING_STORE = "digitlab-handwriting"  # handwriting.js's localStorage key and file format.
HANDWRITING_PER_LABEL = 10
PAD_BOARD = (0x14, 0x18, 0x1F)  # The pad's board colour (#14181f); the ink is white.


def handwriting_set(arrays: dict, per_label: int = HANDWRITING_PER_LABEL) -> str:
    """A handwriting set as the page keeps one (JSON text): the first `per_label` MNIST test images of each
    label, each as its 28x28 field (what the page's preprocessing makes of a drawing) and a 280x280 PNG of
    the pad showing it (each pixel a 10x10 square of white ink on the board), as `Add` keeps a drawn digit."""
    from PIL import Image

    images, labels = arrays["x_test"], arrays["y_test"]
    board = np.array(PAD_BOARD, np.float32)
    digits = []
    for label in range(10):
        for index in np.flatnonzero(labels == label)[:per_label]:
            image = images[index]
            ink = image.astype(np.float32)[..., None] / 255
            pad = Image.fromarray((board + (255 - board) * ink).round().astype(np.uint8), "RGB")
            buffer = io.BytesIO()
            pad.resize((280, 280), Image.Resampling.NEAREST).save(buffer, "PNG")
            digits.append(
                {
                    "label": label,
                    "png": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
                    "pixels": base64.b64encode(image.astype(np.uint8).tobytes()).decode(),
                }
            )
    return json.dumps({"format": HANDWRITING_STORE, "version": 1, "digits": digits})


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Python's plain static file server, without its log lines."""

    def log_message(self, *args):
        pass


class IsolatingHandler(QuietHandler):
    """The same, with the headers that make the page cross-origin isolated (threads)."""

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()


@contextlib.contextmanager
def serve(folder: Path, isolated: bool):
    """The site on a free loopback port, in a thread of this process: its URL."""
    handler = functools.partial(IsolatingHandler if isolated else QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def page_settings(epochs: int, train_limit: int | None) -> str:
    settings = {**BOOK, "epochs": epochs, "seed": SEED}
    if train_limit is not None:
        settings["train_limit"] = train_limit
    return "?" + "&".join(f"{name}={value}" for name, value in settings.items())


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def renderer_peak_rss() -> list[int]:
    """The peak resident memory (VmHWM) of each of this process's Chromium renderers, in bytes, largest first.

    The page and its Workers (the training Worker and the engine's threads) live in one renderer process."""
    peaks = []
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            if b"--type=renderer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) * 1024)
    return sorted(peaks, reverse=True)


def train_in_page(page, url: str, epochs: int) -> dict:
    """Loads the page, presses Train, waits for the Worker's end: its messages and the click, page clock (ms)."""
    page.goto(url, timeout=PAGE_LOAD_MS)
    page.locator("#train-card").wait_for(state="visible", timeout=PAGE_LOAD_MS)
    page.locator("#start").click()
    page.wait_for_function(
        "() => window.__bench.messages.some((m) => m.type === 'end' || m.type === 'error')",
        polling=200,
        timeout=PAGE_LOAD_MS + epochs * EPOCH_MS,
    )
    recorded = page.evaluate("() => ({ messages: window.__bench.messages, clicked: window.__bench.clicked })")
    failed = [m["message"] for m in recorded["messages"] if m["type"] == "error"]
    if failed:
        raise RuntimeError(f"the page's training stopped: {failed[0]}")
    epochs_done = [m for m in recorded["messages"] if m["type"] == "epoch"]
    if len(epochs_done) != epochs:
        raise RuntimeError(f"the page trained {len(epochs_done)} epochs, not {epochs}")
    return recorded


def browser_weights(page, epoch: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(page.evaluate("(epoch) => window.__benchWeights(epoch)", epoch)), "<f4")


def measure_browser(playwright, folder: Path, threads: int, args, check_epochs: int, handwriting: str) -> dict:
    """One thread count: a first visit, a cached visit, the timed run (with the handwriting set in the page),
    its weights, each epoch's scoring of the set and the renderers' peak RSS."""
    with serve(folder, isolated=threads > 1) as url:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_init_script(RECORDER % {"threads": threads})
            page = context.new_page()
            first = train_in_page(page, url + page_settings(1, args.train_limit), 1)
            cached = train_in_page(page, url + page_settings(1, args.train_limit), 1)
            # Kept as a learner's set is: the page reads it when it loads.
            page.evaluate("([key, text]) => localStorage.setItem(key, text)", [HANDWRITING_STORE, handwriting])
            timed = train_in_page(page, url + page_settings(args.epochs, args.train_limit), args.epochs)
            scorings = page.evaluate("() => window.__digitlabHandwritingTimes")
            weights = [browser_weights(page, epoch) for epoch in range(1, check_epochs + 1)]
            peak_rss = renderer_peak_rss()
            context.close()
        finally:
            browser.close()

    def ready(recorded):
        return next(m for m in recorded["messages"] if m["type"] == "ready")

    def first_epoch_end(recorded):
        return next(m for m in recorded["messages"] if m["type"] == "epoch")["at"]

    engine = ready(timed)["engine"]
    if engine["threads"] != threads:
        raise RuntimeError(f"the page trained with {engine['threads']} thread(s), not {threads}")
    if ready(cached)["fetched"] or not ready(first)["fetched"]:
        raise RuntimeError("the first visit should fetch MNIST and the second read it from IndexedDB")
    epochs = [m for m in timed["messages"] if m["type"] == "epoch"]
    digits = len(json.loads(handwriting)["digits"])
    if [(s["epoch"], s["count"]) for s in scorings] != [(n, digits) for n in range(1, args.epochs + 1)]:
        raise RuntimeError(f"the page scored its handwriting set of {digits} as {scorings!r}, not once an epoch")
    end = next(m for m in timed["messages"] if m["type"] == "end")
    return {
        "threads": threads,
        "build": engine["build"],
        "train_to_end_s": (end["at"] - timed["clicked"]) / 1000,
        "worker_loop_s": end["wallTime"],
        "first_epoch_s": epochs[0]["seconds"],
        # Each epoch's trainEpoch (its validation included) and getWeights, in the Worker: the engine's time.
        "epoch_seconds": [m["seconds"] for m in epochs],
        "train_to_first_epoch_s": (epochs[0]["at"] - timed["clicked"]) / 1000,
        "load_to_first_epoch_first_visit_s": first_epoch_end(first) / 1000,
        "load_to_first_epoch_cached_s": first_epoch_end(cached) / 1000,
        "mnist_transfer_bytes": ready(first)["bytes"],
        "val_accuracy": [m["logs"]["val_accuracy"] for m in epochs[:check_epochs]],
        "handwriting_digits": digits,
        # Each epoch's scoring of the set on the page's main thread, and with the set's grid rebuilt too (ms).
        "handwriting_scoring_ms": [s["scoring"] for s in scorings],
        "handwriting_shown_ms": [s["shown"] for s in scorings],
        "weights": weights,
        "peak_rss_bytes": peak_rss[0] if peak_rss else 0,
        "renderers_peak_rss_bytes": peak_rss,
    }


def native_train(args, scalar: bool, threads: int, folder: Path) -> dict:
    """`digitlab train --seed 0` for the same run in its own process, on `threads` cores (OMP_NUM_THREADS,
    which engine/fast.py reads): its Done line's seconds, metrics.json's wall_time_s and its engine path."""
    command = [sys.executable, "-m", "digitlab", "train", "--seed", str(SEED), "--epochs", str(args.epochs)]
    command += ["--runs-dir", str(folder), "--no-record-epochs"]
    for name, value in BOOK.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    if args.train_limit is not None:
        command += ["--train-limit", str(args.train_limit)]
    environment = dict(os.environ, DIGITLAB_DATA=str(args.data))
    environment.pop("DIGITLAB_KERNEL_SCALAR", None)
    environment["OMP_NUM_THREADS"] = str(threads)
    if scalar:
        environment["DIGITLAB_KERNEL_SCALAR"] = "1"
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"digitlab train failed: {done.stderr[-2000:]}")
    seconds = re.search(r"^Done: .* in ([0-9.]+) s", done.stdout, re.MULTILINE)
    path = re.search(r"^Engine: [^(]*\((.*)\)$", done.stdout, re.MULTILINE)
    metrics = json.loads(next(folder.glob("*/metrics.json")).read_text())
    return {
        "seconds": float(seconds.group(1)),
        "path": path.group(1) if path else "?",
        "wall_time_s": metrics.get("wall_time_s"),
    }


def native_portable_epochs(config: TrainConfig, arrays: dict) -> tuple[list[np.ndarray], list[float]]:
    """A page's run (a resolved config) trained by the native engine on its portable C path, from the page's
    initial weights (digitlab.browser.prng) and batch orders: every epoch's weights (flat float32, in
    `model.get_weights()` order) and val accuracy. tests/test_browser_train.py checks the page with it too."""
    from digitlab import models
    from digitlab.engine import FastEngine, sparse

    network = models.create_seeded_models(config)[0]
    # The deep net's BatchNormalization arrays too, and the Dropout seed its page run draws its masks from.
    network.set_weights(
        prng.page_arrays(config.seed, [784, *config.units, 10], [*[config.batch_norm] * len(config.units), False])
    )
    (x, y), validation, _ = data.prepare(arrays, "test", config.train_limit)
    epochs = config.epochs
    previous = os.environ.get(sparse.SCALAR_VARIABLE)
    os.environ[sparse.SCALAR_VARIABLE] = "1"
    sparse.reload()
    weights, accuracies = [], []
    try:
        engine = FastEngine([network], config)
        state = engine.get_state()
        if "dropout_seeds" in state:
            state["dropout_seeds"] = np.array([prng.dropout_seed(config.seed)], np.uint32)
            engine.set_state(state)

        def keep(epoch, logs):
            engine.sync_to_models()
            weights.append(np.concatenate([array.ravel() for array in network.get_weights()]).astype(np.float32))
            accuracies.append(float(logs[0]["val_accuracy"]))

        engine.fit(x, y, validation, epochs=epochs, rngs=[np.random.RandomState(config.seed)], on_epoch_end=keep)
        if not engine.path.startswith("whole epochs in C, sparse first layer (portable C"):
            raise RuntimeError(f"the native check ran on {engine.path!r}, not the portable C path")
    finally:
        if previous is None:
            os.environ.pop(sparse.SCALAR_VARIABLE, None)
        else:
            os.environ[sparse.SCALAR_VARIABLE] = previous
        sparse.reload()
    return weights, accuracies


def differing_weights(native: np.ndarray, browser: np.ndarray) -> int:
    """How many float32 weights differ in their bits (every weight, when the shapes differ)."""
    if native.shape != browser.shape:
        return max(native.size, browser.size)
    return int(np.count_nonzero(native.view(np.uint32) != browser.view(np.uint32)))


def engine_sizes() -> dict[str, tuple[int, int]]:
    """Each engine file's bytes and gzip'ed bytes (what a host that compresses sends)."""
    folder = Path(site.__file__).resolve().parents[1] / "serve" / "static" / "engine"
    sizes = {}
    for name in ("engine.js", "engine.wasm", "engine-threads.wasm", "engine-scalar.wasm"):
        content = (folder / name).read_bytes()
        sizes[name] = (len(content), len(gzip.compress(content, 9)))
    return sizes


def handwriting_row(row: dict, threads: int) -> str:
    """Issue 24's row: the set's scoring each epoch (median, max) against the Worker's epoch (median)."""
    scoring, shown = row["handwriting_scoring_ms"], row["handwriting_shown_ms"]
    epoch_ms = statistics.median(row["epoch_seconds"]) * 1000
    median, slowest = statistics.median(scoring), max(scoring)
    return (
        f"| Handwriting set of {row['handwriting_digits']}, scored each epoch, {threads} thread(s): "
        f"{median:.1f} ms = {100 * median / epoch_ms:.2f}% of an epoch (target <= 5%; medians over "
        f"{len(scoring)} epochs, an epoch {epoch_ms / 1000:.3f} s; the slowest scoring {slowest:.1f} ms = "
        f"{100 * slowest / epoch_ms:.2f}%; with the set's grid rebuilt (layout and paint not counted), "
        f"median {statistics.median(shown):.1f} ms) | {100 * median / epoch_ms:.2f}% |"
    )


def table(results: dict) -> str:
    """Every figure as one Markdown table, with the machine and the date."""
    machine, args = results["machine"], results["args"]
    images = f"{args['train_limit']:,}" if args["train_limit"] else "60,000"
    lines = [
        f"Browser engine benchmark: the book's net (shallow, MSE, SGD 0.01, batch 128, seed 0), "
        f"{args['epochs']} epochs on {images} images.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['architecture']}); "
        f"Chromium {results['chromium']}; {results['date']}.",
        "",
        "digitlab train's training time: metrics.json's wall_time_s, the time its Done line prints (the epochs, "
        "without loading MNIST); the browser's: from the click on Train (MNIST from IndexedDB, the engine's start, "
        "the epochs).",
        "",
        "| Figure | Value |",
        "|---|---:|",
    ]
    for row in results["browser"]:
        n = row["threads"]
        native, portable = results["native"][n], results["native_portable"][n]
        where = f"{n} thread{'s' if n > 1 else ''}, {row['build']}"
        lines += [
            f"| digitlab train, OMP_NUM_THREADS={n} ({native['path']}): training time | "
            f"{native['wall_time_s']:.2f} s |",
            f"| digitlab train, OMP_NUM_THREADS={n}, DIGITLAB_KERNEL_SCALAR=1 ({portable['path']}): training time | "
            f"{portable['wall_time_s']:.2f} s |",
            f"| Browser, {where}: Train to epoch {args['epochs']}'s end | {row['train_to_end_s']:.1f} s |",
            f"| Browser, {where}: the Worker's training loop | {row['worker_loop_s']:.1f} s |",
            f"| Browser, {where}: first epoch (the Worker's own) | {row['first_epoch_s']:.2f} s |",
            f"| Browser, {where}: the epochs in the engine (trainEpoch and getWeights, summed) | "
            f"{sum(row['epoch_seconds']):.1f} s |",
            f"| Browser, {where}: the loop outside the engine (orders, messages, the stop's check) | "
            f"{row['worker_loop_s'] - sum(row['epoch_seconds']):.2f} s |",
            f"| Browser, {where}: an epoch in the engine: fastest, median | "
            f"{min(row['epoch_seconds']):.3f} s, {statistics.median(row['epoch_seconds']):.3f} s |",
            f"| Browser, {where}: Train to epoch 1's end | {row['train_to_first_epoch_s']:.2f} s |",
            f"| Ratio browser (Train to end) / digitlab train (AVX2), {n} thread(s) (target <= 2) | "
            f"{row['train_to_end_s'] / native['wall_time_s']:.2f}x |",
            f"| Ratio browser (Train to end) / digitlab train (portable C), {n} thread(s) | "
            f"{row['train_to_end_s'] / portable['wall_time_s']:.2f}x |",
            f"| Page load to epoch 1's end, MNIST cached, {n} thread(s) (target <= 5 s) | "
            f"{row['load_to_first_epoch_cached_s']:.2f} s |",
            f"| Page load to epoch 1's end, first visit (MNIST fetched), {n} thread(s) | "
            f"{row['load_to_first_epoch_first_visit_s']:.2f} s |",
            handwriting_row(row, n),
            f"| Page's peak memory, {n} thread(s) (its renderer process's VmHWM, /proc; "
            f"{len(row['renderers_peak_rss_bytes'])} renderers summed: "
            f"{sum(row['renderers_peak_rss_bytes']) / 2**20:.0f} MiB) | {row['peak_rss_bytes'] / 2**20:.0f} MiB |",
        ]
    check = results["check"]
    for row in check["browser"]:
        lines.append(
            f"| Differing weights, browser ({row['threads']} thread(s)) vs native portable path, "
            f"after each of epochs 1-{check['epochs']} | {', '.join(str(n) for n in row['differing'])} "
            f"of {check['weights']:,} |"
        )
        lines.append(
            f"| Val accuracy after epoch {check['epochs']}: browser ({row['threads']} thread(s)) / native | "
            f"{row['val_accuracy']:.4f} / {check['native_val_accuracy']:.4f} |"
        )
    for name, (raw, packed) in results["engine_sizes"].items():
        lines.append(f"| Engine file {name}: bytes, gzip'ed | {raw:,} / {packed:,} |")
    lines.append(f"| MNIST's transfer (four .u8.gz files, first visit) | {results['mnist_transfer_bytes']:,} bytes |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the timed run (default: 200)")
    parser.add_argument("--train-limit", type=int, default=None, help="training images (default: all 60,000)")
    parser.add_argument(
        "--quick", action="store_true", help="5 epochs on 10,000 images (a look, and the test's run; default: off)"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="the page's threads (default: 1 2)")
    parser.add_argument(
        "--check-epochs", type=int, default=5, help="epochs compared bit for bit with the native path (default: 5)"
    )
    parser.add_argument("--data", default=None, help="mnist.npz (default: DIGITLAB_DATA, as digitlab train finds it)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file (default: none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.train_limit = 5, 10_000
    if args.epochs < 1 or any(n < 1 for n in args.threads):
        parser.error("--epochs and --threads must be 1 or more")
    args.check_epochs = min(args.check_epochs, args.epochs)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    loaded = data.load(args.data)
    args.data = loaded.path
    started = datetime.datetime.now(datetime.UTC)
    with tempfile.TemporaryDirectory(prefix="browser-bench-") as temporary:
        folder = Path(temporary) / "site"
        site.write_site(folder, loaded)
        handwriting = handwriting_set(loaded.arrays)
        browser_rows = []
        with sync_playwright() as playwright:
            for threads in args.threads:
                print(f"Training in Chromium with {threads} thread(s)...", file=sys.stderr, flush=True)
                browser_rows.append(measure_browser(playwright, folder, threads, args, args.check_epochs, handwriting))
            probe = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            chromium_version = probe.version
            probe.close()
        print("Training with digitlab train (AVX2, then portable)...", file=sys.stderr, flush=True)
        native, portable = {}, {}
        for threads in args.threads:
            native[threads] = native_train(args, False, threads, Path(temporary) / f"runs-avx2-{threads}")
            portable[threads] = native_train(args, True, threads, Path(temporary) / f"runs-portable-{threads}")
    print("Training the bit check on the native portable path...", file=sys.stderr, flush=True)
    book = TrainConfig(**BOOK, epochs=args.check_epochs, seed=SEED, train_limit=args.train_limit).resolved()
    native_weights, native_accuracy = native_portable_epochs(book, loaded.arrays)
    check = {
        "epochs": args.check_epochs,
        "weights": int(native_weights[0].size),
        "native_val_accuracy": native_accuracy[-1],
        "browser": [
            {
                "threads": row["threads"],
                "differing": [differing_weights(n, b) for n, b in zip(native_weights, row["weights"], strict=True)],
                "val_accuracy": row["val_accuracy"][-1],
            }
            for row in browser_rows
        ],
    }
    results = {
        "args": {"epochs": args.epochs, "train_limit": args.train_limit, "threads": args.threads},
        "machine": system.machine_info(),
        "chromium": chromium_version,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "native": native,
        "native_portable": portable,
        "browser": [{key: value for key, value in row.items() if key != "weights"} for row in browser_rows],
        "check": check,
        "engine_sizes": engine_sizes(),
        "mnist_transfer_bytes": browser_rows[0]["mnist_transfer_bytes"],
    }
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`digitlab bench`'s words: the line printed as each row finishes, and bench.md's tables.

from digitlab.bench import markdown as bench_markdown
print(bench_markdown.to_markdown(results))        # the shallow net's rows (`runner.run_bench`)
print(bench_markdown.lenet_markdown(results))     # LeNet's steps per backend (`runner.run_lenet_bench`)
"""

from __future__ import annotations

from digitlab.bench import breakdown, rows
from digitlab.config import MODEL_DEFAULTS

# `digitlab bench --model lenet` times this many first steps of `fit` as compilation, and leaves them out.
WARMUP_STEPS = 5


def short_steps(row: rows.Row) -> str:
    """A LeNet row in a line, as it finishes: ms/step, backend, peak memory (or why it has none)."""
    if row["status"] != "ok":
        return row["status"]
    return f"{row['ms_per_step']:.0f} ms/step on {row['keras_backend']}, peak {row['peak_memory_mb']:.0f} MB"


def lenet_markdown(results: rows.Results) -> str:
    """The LeNet step timings as a Markdown table with the machine it ran on."""
    machine = results["machine"]
    lines = [
        f"LeNet (chapter 10, batch 128), Keras fit, {results['steps']} steps per row, each in its own process.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Keras {machine['keras']}, JAX {machine['jax']}, "
        f"TensorFlow {machine['tensorflow']}; {results['created']}.",
        "",
        "| Row | backend | ms/step | epoch of 469 steps (projected) | × fastest | peak memory |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        name = f"**{row['name']}**" if row.get("default") else row["name"]
        if row["status"] != "ok":
            lines.append(f"| {name} | {row.get('keras_backend') or ''} | {row['status']} | | | |")
            continue
        lines.append(
            f"| {name} | {row['keras_backend']} | {row['ms_per_step']:.0f} | "
            f"{row['ms_per_step'] * 469 / 1000:.0f} s | {row['times_fastest']:.2f} | "
            f"{row['peak_memory_mb']:.0f} MB |"
        )
    lines += ["", f"ms/step: median step after the first {WARMUP_STEPS} (compilation); an epoch adds validation."]
    return "\n".join(lines) + "\n"


def short(row: rows.Row) -> str:
    """A shallow-net row in a line, as it finishes: s/epoch, val accuracy, peak memory, how it ran."""
    if row["status"] != "ok":
        return row["status"]
    return (
        f"{row['seconds_per_epoch']:.3f} s/epoch, val accuracy {row['val_accuracy']:.4f}, "
        f"peak {row['peak_memory_mb']:.0f} MB ({breakdown.describe_path(row)})"
    )


def handover_text(handover: dict) -> str:
    """'64 ns before the rows, 66 ns after' (a read that failed: 'not read')."""
    before, after = (handover.get(when) for when in ("before", "after"))
    return " ".join(
        [
            "not read" if before is None else f"{before:.0f} ns",
            "before the rows,",
            "not read" if after is None else f"{after:.0f} ns",
            "after",
        ]
    )


def to_markdown(results: rows.Results) -> str:
    """The bench results as a Markdown table with the machine it ran on."""
    machine, gflops = results["machine"], results["gflops"]
    book_epochs = MODEL_DEFAULTS[results["model"]]["epochs"]
    lines = [
        f"Book's {results['model']} net (MNIST, batch 128, validation every epoch), "
        f"{results['epochs']} epoch(s) measured"
        + (f" on {results['train_limit']} training images" if results["train_limit"] else "")
        + ".",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; float32 matmul {gflops['all_cores']:.0f} GFLOP/s "
        f"({gflops['one_core']:.0f} on one core); Keras {machine['keras']}, JAX {machine['jax']}, "
        f"TensorFlow {machine['tensorflow']}, NumPy {machine['numpy']}; {results['created']}."
        + (
            f" Cores' hand-over (a cache line between two threads, there and back): "
            f"{handover_text(results['handover_ns'])}."
            if any(value is not None for value in results.get("handover_ns", {}).values())
            else ""
        ),
        "",
        f"| Engine | s/epoch | 1st epoch s | {book_epochs} epochs (projected) | val accuracy | peak memory "
        "| × arithmetic limit (dense / useful) | speedup vs fit TF | speedup vs fit JAX |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | {row['status']} | | | | | | | |")
            continue
        speedups = [row.get("speedup_vs_fit_tensorflow"), row.get("speedup_vs_fit_jax")]
        lines.append(
            f"| {row['name']} ({breakdown.describe_path(row)}) | {row['seconds_per_epoch']:.3f} "
            f"| {row['first_epoch_seconds']:.2f} "
            f"| {row['projected_seconds']:.0f} s | {row['val_accuracy']:.4f} | {row['peak_memory_mb']:.0f} MB "
            f"| {row['times_limit']:.1f} / {row['times_useful_limit']:.1f} | "
            + " | ".join("" if s is None else f"{s:.1f}×" for s in speedups)
            + " |"
        )
    lines += [
        "",
        "s/epoch: median of the epochs after the first (the first includes compilation). "
        f"{book_epochs} epochs (the book's run): the first epoch plus {book_epochs - 1} more. "
        "Speedups compare those runs (the first epoch's compilation included), not s/epoch alone. "
        "Rows with N seeds train N networks; their times are for all N and their speedups are per network. "
        "× arithmetic limit: s/epoch over (the epoch's multiply-adds × 2 ÷ the measured "
        f"GFLOP/s, {gflops['limit']:.0f}); dense counts every pixel, useful only the nonzero ones (the first "
        "layer's products with zero pixels add nothing). Peak memory: the largest resident set of the process "
        "that trained.",
    ]
    if results.get("scaling"):
        lines += [
            "",
            "Per network, against one seed on one core (the other cores' worth): "
            + "; ".join(f"{name}: {ratio:.2f}×" for name, ratio in results["scaling"].items())
            + ".",
        ]
    bandwidth, deep = results.get("bandwidth"), results.get("model") == "deep"
    for row in results["rows"]:
        if row.get("breakdown"):
            lines += ["", *breakdown.to_markdown(row, row["breakdown"])]
    if bandwidth and deep:
        lines += [
            "",
            "Each thread's phases add up to its epoch; validation runs on every thread. The deep net's phases "
            "(_deep.c) have no limits counted (engine.timing.work counts the shallow net's): their seconds alone. "
            "With Adam on AVX-512 the first layer's update sums its gradient as it goes (the gradient's row is 0).",
        ]
    elif bandwidth:
        lines += [
            "",
            "limit: the phase's multiply-adds at the measured matrix-multiply speed (one core's where one thread "
            "ran, all cores' where one per core ran), or its bytes at the read bandwidth of the level they come "
            "from (one core's: "
            + ", ".join(f"{level} {value / 1e9:.0f} GB/s" for level, value in bandwidth.items())
            + ", times the threads that ran), whichever is longer; waiting, the loss, setup and Python have none. "
            "Each thread's phases add up to its epoch; validation runs on every thread.",
        ]
    comparison = results.get("comparison")
    if comparison:
        lines += ["", f"Accuracy check: {comparison['summary']}."]
    return "\n".join(lines) + "\n"

"""Where an epoch goes (`digitlab bench --profile`): each engine row's phases against their own limits.

    from digitlab.bench import breakdown
    bandwidth = breakdown.measure_bandwidth()              # one core's read bytes/s at l1, l2, memory
    table = breakdown.phases(row, gflops, bandwidth)       # [{"phase", "seconds", "limit_seconds", ...}]
    lines = breakdown.to_markdown(row, table)

A phase's limit is the time its work needs at this machine's measured speeds: its multiply-adds at
the float32 matrix-multiply speed (`gflops`: one core's where one thread ran, all cores' where a thread
per core ran), or its bytes at the read bandwidth of the level they come from (one core's, times the
threads that ran),
whichever is longer. Waiting, the loss, setting up and Python have no arithmetic to speak of: their
limit is zero, and all their time is overhead. Work counts come from `engine.timing.work`, which counts
the shallow net's epoch; the deep net's rows (`_deep.c`'s phases, `timing.DEEP_PHASES`) have none, so their
phases are listed without limits.
"""

from __future__ import annotations

from typing import TypedDict

from digitlab.bench import rows

# Working sets for the bandwidth probe: L1 (16 KiB), the first layer's kernel (784 x 64 floats, in L2), memory.
PROBE_BYTES = {"l1": 16 << 10, "l2": 200 << 10, "memory": 256 << 20}
LEVEL_NAMES = {"arithmetic": "multiply-adds", "l1": "L1 bytes", "l2": "L2 bytes", "memory": "memory bytes", "": ""}


class Phase(TypedDict):
    """One phase of an engine row's epoch: its seconds, its own limit and what sets that limit."""

    phase: str
    seconds: list[float]  # Per epoch, one per thread (validation and Python: one number).
    limit_seconds: float  # 0: no arithmetic limit.
    bound: str  # What sets the limit: "arithmetic", "l1", "l2", "memory", or "".
    times_limit: float | None


def measure_bandwidth() -> dict[str, float]:
    """One core's read bandwidth in bytes per second at each level of `PROBE_BYTES` (the C kernels' loads)."""
    from digitlab.engine import sparse

    if not sparse.available():
        return {}
    repeats = {"memory": 3}
    return {level: sparse.read_bandwidth(size, repeats.get(level, 50)) for level, size in PROBE_BYTES.items()}


def phases(row: rows.Row, gflops: dict[str, float], bandwidth: dict[str, float]) -> list[Phase]:
    """The row's profile as one entry per phase, each with its limit on this machine (empty without one)."""
    from digitlab.engine import timing

    profile, work = row.get("profile"), row.get("work")
    if not profile or work is None:
        return []
    threads = max(1, len(next(iter(profile["phases"].values()), [0])))  # Those that ran.
    cores = max(1, row.get("cores", 1))
    if threads == 1:
        flops_per_second = 1e9 * gflops["one_core"]
    else:
        flops_per_second = 1e9 * gflops["all_cores"] * min(threads, cores) / cores
    per_core = {level: value * min(threads, cores) for level, value in bandwidth.items()}
    networks = row["networks"]
    table: list[Phase] = []
    measured = [(name, values) for name, values in profile["phases"].items() if values]
    measured += [(timing.VALIDATION, [profile[timing.VALIDATION]]), (timing.PYTHON, [profile[timing.PYTHON]])]
    for name, values in measured:
        limit, bound = 0.0, ""
        if name in work and per_core:
            phase_work = {
                "flops": networks * work[name]["flops"],
                "bytes": {level: networks * size for level, size in work[name]["bytes"].items()},
            }
            limit, bound = timing.limit_seconds(phase_work, flops_per_second, per_core)
        slowest = max(values)
        table.append(
            {
                "phase": name,
                "seconds": values,
                "limit_seconds": limit,
                "bound": bound,
                "times_limit": slowest / limit if limit > 0 else None,
            }
        )
    return table


def to_markdown(row: rows.Row, table: list[Phase]) -> list[str]:
    """The breakdown of one row as Markdown lines (ms per epoch)."""
    if not table:
        return []
    threads = max(len(entry["seconds"]) for entry in table)
    heads = " | ".join(f"thread {t}" for t in range(threads))
    totals = [sum(entry["seconds"][t] for entry in table if t < len(entry["seconds"])) for t in range(threads)]
    limit_total = sum(entry["limit_seconds"] for entry in table)
    # Without any limit (the deep net's phases: no work model), the table holds the seconds and their sum alone.
    limits = " | limit | × limit | limit set by" if limit_total else ""
    lines = [
        f"Where an epoch goes: {row['name']} ({describe_path(row)}), ms per epoch over "
        f"{row['profile']['epochs']} epoch(s) after the first:",
        "",
        f"| phase | {heads}{limits} |",
        "|---|" + "---:|" * threads + ("---:|---:|---|" if limit_total else ""),
    ]
    for entry in table:
        cells = [f"{1000 * value:.1f}" for value in entry["seconds"]] + [""] * (threads - len(entry["seconds"]))
        if not limit_total:
            lines.append(f"| {entry['phase']} | {' | '.join(cells)} |")
            continue
        times = "" if entry["times_limit"] is None else f"{entry['times_limit']:.1f}"
        limit = f"{1000 * entry['limit_seconds']:.1f}" if entry["limit_seconds"] else "0"
        lines.append(f"| {entry['phase']} | {' | '.join(cells)} | {limit} | {times} | {LEVEL_NAMES[entry['bound']]} |")
    sums = " | ".join(f"**{1000 * total:.1f}**" for total in totals)
    if limit_total:
        lines.append(f"| **sum** | {sums} | **{1000 * limit_total:.1f}** | **{max(totals) / limit_total:.1f}** | |")
    else:
        lines.append(f"| **sum** | {sums} |")
    return lines


def describe_path(row: rows.Row) -> str:
    """What an engine row ran, in a few words: the first layer's code and its SIMD width, and the threads."""
    if row.get("kind") != "engine" or "kernel" not in row:
        return row.get("engine", "")
    kernel = row["kernel"]
    width = {"AVX-512": " (512-bit)", "AVX2": " (256-bit)"}.get(kernel, "")
    counts = {int(threads): epochs for threads, epochs in row.get("thread_counts", {}).items()}
    if not counts:  # The JAX backend: XLA chooses its threads.
        return f"{row['engine']}, {kernel}{width}"
    if len(counts) == 1:
        (count,) = counts
        threads = f"{count} thread{'s' if count > 1 else ''} per network"
    else:
        threads = f"{min(counts)}–{max(counts)} threads per network (following the load)"
    seeds = row.get("seed_threads", 1)
    over = f", {seeds} threads over the seeds" if seeds > 1 else ""
    return f"{row['engine']}, {kernel}{width}, {threads}{over}"

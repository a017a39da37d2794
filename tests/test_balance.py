"""_threads.h's Balance: each batch's cuts between the engine's threads move towards the threads' speeds.

The header's own functions, compiled with the C compiler that builds the engine, on batches whose times
follow a model (a part the same for every thread, a part in proportion to its share); the engine's epochs
run the same functions on their measured times, so their cuts differ from run to run: tests/test_engine.py,
test_avx512.py and test_batchnorm.py check the bits on 1, 2 and 3 threads, and the last test here that a
thread's rows get the same bits wherever the cut puts them."""

import ctypes
import shlex
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from digitlab.engine import sparse

HEADER_FOLDER = Path(__file__).resolve().parent.parent / "src" / "digitlab" / "engine"

# argv: threads, batches, the fixed nanoseconds of a batch, then each thread's nanoseconds per whole batch,
# then (optional) a batch at which thread 1 is stopped for 10 ms. Prints the cuts after every batch.
DRIVER = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include "_threads.h"

int main(int argc, char **argv) {
    const int threads = atoi(argv[1]), batches = atoi(argv[2]);
    const double fixed = atof(argv[3]);
    double per[MAX_THREADS];
    for (int t = 0; t < threads; t++) per[t] = atof(argv[4 + t]);
    const int stall = argc > 4 + threads ? atoi(argv[4 + threads]) : -1;
    Balance balance;
    balance_init(&balance, threads);
    for (int b = 0; b < batches; b++) {
        const double *cuts = balance.cuts[b & 1];
        for (int t = 0; t < threads; t++) {
            const double ns = fixed + (cuts[t + 1] - cuts[t]) * per[t] + (b == stall && t == 1 ? 1e7 : 0.0);
            balance_record(&balance, t, (int64_t)ns);
        }
        balance_next(&balance, b, b + 1);
        for (int t = 0; t <= threads; t++) printf("%.6f%c", balance.cuts[(b + 1) & 1][t], t == threads ? '\n' : ' ');
    }
    int64_t prefix[5] = {0, 10, 10, 40, 100}; /* Pixels with 10, 0, 30 and 60 entries. */
    printf("%lld %lld %lld %lld %lld\n", (long long)pixel_cut(prefix, 4, 0.0), (long long)pixel_cut(prefix, 4, 0.1),
           (long long)pixel_cut(prefix, 4, 0.11), (long long)pixel_cut(prefix, 4, 0.5),
           (long long)pixel_cut(prefix, 4, 1.0));
    return 0;
}
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """The driver above, compiled against the engine's header."""
    folder = tmp_path_factory.mktemp("balance")
    (folder / "driver.c").write_text(DRIVER)
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    command = [*compiler, "-O2", "-std=c99", f"-I{HEADER_FOLDER}", str(folder / "driver.c"), "-o", str(folder / "run")]
    subprocess.run(command, check=True, capture_output=True)
    return folder / "run"


def run(driver, threads, batches, fixed, per, stall=None):
    arguments = [str(threads), str(batches), str(fixed), *map(str, per)] + ([str(stall)] if stall is not None else [])
    lines = subprocess.run([str(driver), *arguments], check=True, capture_output=True, text=True).stdout.splitlines()
    return [[float(value) for value in line.split()] for line in lines[:-1]], [int(v) for v in lines[-1].split()]


def test_alike_threads_keep_the_even_cut(driver):
    cuts, _ = run(driver, 2, 50, 20000, [100000, 100000])
    assert all(row == [0.0, 0.5, 1.0] for row in cuts)


@pytest.mark.parametrize("fixed", [0, 30000])
def test_a_slower_thread_is_given_less_until_both_take_the_same_time(driver, fixed):
    """Thread 1 takes 1.5x as long for the same share: at equal times thread 0 holds 0.6 of the batch, whether or
    not part of each thread's time is the same for both (the deep net's statistics over every row)."""
    cuts, _ = run(driver, 2, 100, fixed, [100000, 150000])
    assert cuts[0][1] > 0.5
    assert abs(cuts[40][1] - 0.6) < 0.01 and abs(cuts[-1][1] - 0.6) < 0.001
    firsts = [row[1] for row in cuts]
    moves = [later - earlier for earlier, later in zip(firsts, firsts[1:], strict=False)]
    assert min(moves) > -2e-6  # Towards it, without overshooting (the cuts are printed to 6 places).


def test_a_thread_stopped_for_a_moment_loses_little_of_its_share_and_gets_it_back(driver):
    cuts, _ = run(driver, 2, 60, 0, [100000, 100000], stall=10)
    assert cuts[9][1] == 0.5
    assert 0.5 < cuts[10][1] < 0.54  # One batch 100x slower moves the cut by a few percent, not to the floor.
    assert abs(cuts[-1][1] - 0.5) < 0.002


def test_no_share_falls_below_the_floor_and_three_threads_balance(driver):
    cuts, _ = run(driver, 2, 200, 0, [100000, 100000000])
    assert abs((cuts[-1][2] - cuts[-1][1]) - 0.125) < 1e-9  # Thread 1 keeps an eighth: its time stays measured.
    cuts, _ = run(driver, 3, 200, 0, [100000, 200000, 100000])
    shares = [cuts[-1][t + 1] - cuts[-1][t] for t in range(3)]
    assert [round(share, 3) for share in shares] == [0.4, 0.2, 0.4]


def test_untimed_batches_leave_the_cuts(driver):
    cuts, _ = run(driver, 2, 5, 0, [0, 0])
    assert all(row == [0.0, 0.5, 1.0] for row in cuts)


def test_pixels_are_cut_where_their_entries_reach_the_share(driver):
    _, pixels = run(driver, 2, 1, 0, [1, 1])
    assert pixels == [0, 1, 3, 4, 4]


@pytest.mark.parametrize("simd", [True, False])
def test_a_rows_activations_are_the_same_bits_wherever_a_cut_puts_them(simd, monkeypatch):
    """The sigmoid of a 10-unit layer over a thread's rows: where a cut leaves a thread one row, its last two
    values fall in a partial vector. Each value gets the bits it gets with all the rows at once (a scalar tail
    of other arithmetic gave about one value in 200 other bits)."""
    monkeypatch.setenv(sparse.SCALAR_VARIABLE, "0" if simd else "1")
    sparse.reload()
    try:
        library = sparse._load()
        if library is None or (simd and not sparse.simd()):
            pytest.skip("no C kernels, or no AVX2 here")
        activate = library.digitlab_dense_activate
        activate.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32]
        activate.restype = None
        sigmoid = sparse.FUSED_ACTIVATIONS["sigmoid"]
        rows = np.random.default_rng(0).normal(0, 4, (20000, 10)).astype(np.float32)
        whole = rows.copy()
        activate(whole.ctypes.data, len(whole), 10, sigmoid)
        alone = rows.copy()
        for row in alone:
            activate(row.ctypes.data, 1, 10, sigmoid)
        np.testing.assert_array_equal(alone.view(np.uint32), whole.view(np.uint32))
    finally:
        monkeypatch.delenv(sparse.SCALAR_VARIABLE)
        sparse.reload()

"""Tests of the fast engine against Keras `fit` itself, on real MNIST shrunk to a few thousand images.

The reference is Keras 3's own `fit` on the JAX backend, run through
`engine.FitEngine`: from the same initial weights and the same batch order (the
same `np.random.RandomState(seed)` given to both engines) the fast engine must
end with the same weights and report the same history, for both of its backends.
"""

import os
import pathlib
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from keras import layers

from digitlab import config, data, engine, models
from digitlab.engine import cores, numpy_backend, sparse, timing

TRAIN_LIMIT = 2000
EPOCHS = 2
SEED = 7
BACKENDS = ("numpy", "jax")
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
# The book's shallow net, the intermediate net (cross-entropy, ReLU, SGD 0.1), and Adam with momentum slots;
# widths that are not multiples of the C code's blocks (64 and 8 units) take its remainder paths.
CASES = {
    "shallow-mse-sgd": dict(model="shallow"),
    "intermediate-cce-sgd": dict(model="intermediate"),
    "intermediate-odd-widths": dict(model="intermediate", units=[100, 20]),
    "shallow-adam": dict(model="shallow", optimizer="adam", learning_rate=0.001),
    "intermediate-sgd-momentum": dict(model="intermediate", learning_rate=0.01, momentum=0.9),
}


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_valid, y_valid), _ = data.split(data.load_arrays(), train_limit=TRAIN_LIMIT)
    return (
        (data.to_inputs(x_train), data.to_targets(y_train)),
        (data.to_inputs(x_valid[:1000]), data.to_targets(y_valid[:1000])),
    )


def seeded_models(settings: dict, count: int = 1, seed: int = SEED):
    """The config and `count` compiled models built after `keras.utils.set_random_seed(seed)`."""
    cfg = config.TrainConfig(**settings).resolved()
    keras.utils.set_random_seed(seed)
    return cfg, [models.create_model(cfg) for _ in range(count)]


class _FitResults(dict):
    """Keras fit's initial and final weights and history for each case, trained on first use and
    kept, so that both backends and every path compare with one fit, and only the cases a tier runs train."""

    def __init__(self, mnist):
        super().__init__()
        self.mnist = mnist

    def __missing__(self, case):
        (x, y), validation = self.mnist
        cfg, (model,) = seeded_models(CASES[case])
        initial = model.get_weights()
        logs: list[dict] = []
        engine.FitEngine(model, cfg, verbose=0).fit(
            x,
            y,
            validation,
            epochs=EPOCHS,
            rngs=[np.random.RandomState(SEED)],
            on_epoch_end=lambda epoch, epoch_logs: logs.append(epoch_logs[0]),
        )
        history = {key: [entry[key] for entry in logs] for key in HISTORY_KEYS}
        self[case] = (initial, model.get_weights(), history)
        return self[case]


@pytest.fixture(scope="module")
def fit_results(mnist):
    return _FitResults(mnist)


# Adam's slots are checked in make test; the fast tier keeps SGD, momentum, cross-entropy and odd widths.
HEAVY_CASES = ("shallow-adam",)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=pytest.mark.heavy) if case in HEAVY_CASES else case for case in CASES]
)
def test_engine_matches_keras_fit(mnist, fit_results, case, backend):
    (x, y), validation = mnist
    initial, fitted, history = fit_results[case]
    cfg, (model,) = seeded_models(CASES[case])
    for built, reference in zip(model.get_weights(), initial, strict=True):
        np.testing.assert_array_equal(built, reference)  # The same seed gives the same initial weights.
    fast = engine.FastEngine([model], cfg, backend=backend)
    logs = []
    fast.fit(
        x,
        y,
        validation,
        epochs=EPOCHS,
        rngs=[np.random.RandomState(SEED)],
        on_epoch_end=lambda epoch, epoch_logs, logs=logs: logs.append(epoch_logs[0]),
    )
    fast.sync_to_models()
    assert fast.name == f"fast-{backend}"
    for trained, expected in zip(model.get_weights(), fitted, strict=True):
        np.testing.assert_allclose(trained, expected, rtol=1e-4, atol=2e-6)
    # The weights moved: the comparison is not between two untrained models.
    assert max(np.abs(after - before).max() for after, before in zip(fitted, initial, strict=True)) > 1e-4
    assert len(logs) == EPOCHS
    for key in HISTORY_KEYS:
        np.testing.assert_allclose([entry[key] for entry in logs], history[key], rtol=1e-4, atol=1e-6)


@pytest.fixture
def kernel_setting(request, monkeypatch):
    """The NumPy backend's path: the default (AVX2 where the CPU has it), the C kernel's portable version,
    per-batch steps in NumPy around the C kernel (no whole epochs in C), or no C kernel at all."""
    variable = {
        "default": None,
        "portable": sparse.SCALAR_VARIABLE,
        "per-batch": numpy_backend.NO_FUSED_VARIABLE,
        "off": sparse.DISABLE_VARIABLE,
    }[request.param]
    if variable is not None:
        monkeypatch.setenv(variable, "1")
    sparse.reload()
    yield request.param
    monkeypatch.undo()
    sparse.reload()


# How the first layer runs in each setting; plain SGD runs whole epochs in C where the kernel is on.
EXPECTED_PATHS = {
    ("shallow-mse-sgd", "portable"): "whole epochs in C, sparse first layer (portable C",
    ("shallow-mse-sgd", "per-batch"): "sparse first layer in C (AVX",
    ("shallow-mse-sgd", "off"): "NumPy only: the C kernel is disabled",
    ("intermediate-sgd-momentum", "portable"): "sparse first layer in C (portable C",
    ("intermediate-sgd-momentum", "off"): "NumPy only: the C kernel is disabled",
    ("intermediate-cce-sgd", "per-batch"): "sparse first layer in C (AVX",
    ("intermediate-odd-widths", "portable"): "whole epochs in C, sparse first layer (portable C",
}


@pytest.mark.parametrize(("case", "kernel_setting"), list(EXPECTED_PATHS), indirect=["kernel_setting"])
def test_every_first_layer_path_matches_keras_fit(mnist, fit_results, case, kernel_setting):
    """The default path runs in the test above; here the portable C, the per-batch steps, and NumPy alone."""
    (x, y), validation = mnist
    initial, fitted, history = fit_results[case]
    cfg, (model,) = seeded_models(CASES[case])
    fast = engine.FastEngine([model], cfg, backend="numpy")
    logs = []
    fast.fit(
        x,
        y,
        validation,
        epochs=EPOCHS,
        rngs=[np.random.RandomState(SEED)],
        on_epoch_end=lambda epoch, epoch_logs, logs=logs: logs.append(epoch_logs[0]),
    )
    fast.sync_to_models()
    assert fast.path.startswith(EXPECTED_PATHS[case, kernel_setting]), fast.path
    for trained, expected in zip(model.get_weights(), fitted, strict=True):
        np.testing.assert_allclose(trained, expected, rtol=1e-4, atol=2e-6)
    for key in HISTORY_KEYS:
        np.testing.assert_allclose([entry[key] for entry in logs], history[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_engines_arrays_start_on_a_page_and_hold_the_models_weights(workers):
    """One seed's arrays and the stacked ones of several (SeedThreads) are page-aligned copies (the C epochs stream
    them side by side: a misaligned one measured up to 7x slower in Adam's update), equal to the models' weights."""
    cfg = config.TrainConfig(model="deep", seed=0, seeds=2).resolved()
    keras.utils.set_random_seed(0)
    built = models.create_seeded_models(cfg)
    fast = engine.FastEngine(built, cfg, workers=workers)
    arrays = fast._impl.arrays
    assert all(array.ctypes.data % numpy_backend.PAGE == 0 for array in arrays.values())
    for k, model in enumerate(built):
        kernel = model.get_weights()[0]
        np.testing.assert_array_equal(arrays["dense_0/kernel"][k], kernel)
    copy = numpy_backend.page_aligned(np.float64(3.5))
    assert copy.shape == () and copy == 3.5 and copy.ctypes.data % numpy_backend.PAGE == 0


def test_the_default_path_is_the_avx2_kernel_where_it_is_built(mnist):
    # This machine (CI) builds the kernel at install and has AVX2; a machine without either trains on NumPy.
    cfg, (model,) = seeded_models(dict(model="shallow"))
    fast = engine.FastEngine([model], cfg, backend="numpy")
    (x, y), validation = mnist
    fast.fit(x, y, validation, epochs=1)
    assert sparse.available(), sparse.unavailable_reason()
    assert fast.path.startswith("whole epochs in C, sparse first layer (AVX") and "inputs are nonzero" in fast.path


def test_a_missing_kernel_library_is_said_and_numpy_trains(mnist, monkeypatch):
    monkeypatch.setattr(sparse, "LIBRARY_NAME", "_no_such_kernels")
    sparse.reload()
    try:
        cfg, (model,) = seeded_models(dict(model="shallow"))
        fast = engine.FastEngine([model], cfg, backend="numpy")
        assert "was not built at install time" in fast.path
        (x, y), validation = mnist
        logs = []
        fast.fit(x[:500], y[:500], validation, epochs=1, on_epoch_end=lambda epoch, epoch_logs: logs.append(epoch_logs))
        assert logs[0][0]["val_accuracy"] > 0
    finally:
        monkeypatch.undo()
        sparse.reload()


@pytest.mark.parametrize("case", ["shallow-mse-sgd", "shallow-adam"])
def test_threads_over_seeds_train_as_one_thread_does(mnist, case):
    (x, y), validation = mnist
    results = {}
    for workers in (1, 2):
        cfg, group = seeded_models(CASES[case], count=3)
        fast = engine.FastEngine(group, cfg, backend="numpy", workers=workers)
        logs = []
        fast.fit(
            x,
            y,
            validation,
            epochs=2,
            rngs=[np.random.RandomState(s) for s in (1, 2, 3)],
            on_epoch_end=lambda epoch, epoch_logs, logs=logs: logs.append(epoch_logs),
        )
        results[workers] = (fast.get_state(), logs, fast.path)
    assert "2 threads over the seeds" in results[2][2] and "threads" not in results[1][2]
    for name, value in results[1][0].items():
        np.testing.assert_allclose(results[2][0][name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    for one, two in zip(results[1][1], results[2][1], strict=True):
        for single, threaded in zip(one, two, strict=True):
            assert threaded == pytest.approx(single, rel=1e-5)


@pytest.mark.parametrize(
    ("case", "kernel_setting"),
    [
        ("shallow-mse-sgd", "default"),
        ("intermediate-cce-sgd", "default"),
        ("intermediate-odd-widths", "default"),
        ("shallow-mse-sgd", "portable"),
    ],
    indirect=["kernel_setting"],
)
def test_threads_within_one_network_change_nothing(mnist, case, kernel_setting, monkeypatch):
    """Whole epochs in C split each batch's first layer over threads; every thread count gives the same bits,
    on the AVX2 path and on the portable one."""
    (x, y), validation = mnist
    # Each count as asked, however busy the machine is (the engine would use fewer on busy cores).
    monkeypatch.setattr(cores.FreeCores, "threads", lambda self, wanted: wanted)
    results = {}
    for workers in (1, 2, 3):
        cfg, (model,) = seeded_models(CASES[case])
        fast = engine.FastEngine([model], cfg, backend="numpy", workers=workers)
        logs = []
        fast.fit(
            x,
            y,
            validation,
            epochs=2,
            rngs=[np.random.RandomState(1)],
            on_epoch_end=lambda epoch, epoch_logs, logs=logs: logs.append(epoch_logs),
        )
        results[workers] = (fast.get_state(), logs)
        assert fast.path.startswith("whole epochs in C") and (workers == 1) != (f"{workers} threads" in fast.path)
        wide = sparse.avx512() and model.layers[0].units == 64  # _kernels.c's forward_avx512 runs it.
        assert fast.kernel == ("portable C" if kernel_setting == "portable" else "AVX-512" if wide else "AVX2")
    for workers in (2, 3):
        assert results[workers][1] == results[1][1]
        for name, value in results[1][0].items():
            np.testing.assert_array_equal(results[workers][0][name], value, err_msg=name)


def test_the_profile_times_every_phase_and_changes_no_result(mnist, monkeypatch):
    """With profile=True the C epoch times its phases per thread; the weights and history are the same bits."""
    (x, y), validation = mnist
    monkeypatch.setattr(cores.FreeCores, "threads", lambda self, wanted: wanted)
    results = {}
    for profile in (False, True):
        cfg, (model,) = seeded_models(CASES["shallow-mse-sgd"])
        fast = engine.FastEngine([model], cfg, backend="numpy", workers=2, profile=profile)
        logs = []
        fast.fit(
            x,
            y,
            validation,
            epochs=2,
            rngs=[np.random.RandomState(1)],
            on_epoch_end=lambda epoch, epoch_logs, logs=logs: logs.append(epoch_logs),
        )
        results[profile] = (fast.get_state(), logs, fast.profile)
    assert results[False][2] is None
    assert results[True][1] == results[False][1]
    for name, value in results[False][0].items():
        np.testing.assert_array_equal(results[True][0][name], value, err_msg=name)
    measured = results[True][2].per_epoch()
    assert measured["epochs"] == 2 and measured["thread_counts"] == {"2": 2}
    assert list(measured["phases"]) == list(timing.PHASES) and sparse.profile_phases() == len(timing.PHASES)
    assert all(len(seconds) == 2 and min(seconds) >= 0 for seconds in measured["phases"].values())
    for phase in ("first layer forward", "first layer update", "loss"):
        assert min(measured["phases"][phase]) > 0, phase
    # Thread 0's phases are the C call's time; the rest of the call is Python's.
    thread_0 = sum(seconds[0] for seconds in measured["phases"].values())
    assert thread_0 <= measured["train"] and measured[timing.PYTHON] > 0 and measured[timing.VALIDATION] > 0
    # The work model counts the first layer on the nonzero pixels: 64 units, a multiply-add is 2 flops.
    work = timing.work([784, 64, 10], x, validation[0], cfg.batch_size)
    assert work["first layer forward"]["flops"] == 2 * 64 * np.count_nonzero(x)
    assert work["first layer forward"]["bytes"]["l2"] == 4 * 64 * np.count_nonzero(x)


def test_sparse_rows_hold_the_nonzero_entries_as_numpy_finds_them(mnist):
    (x, _), _ = mnist
    edge = np.array([[0.0, -0.0, np.nan, 1.0], [0, 0, 0, 0], [2, 0, 0, -3]], np.float32)
    for matrix in (x, edge):
        rows = sparse.SparseRows(matrix)
        row_numbers, columns = np.nonzero(matrix)  # -0.0 is zero, NaN is not.
        np.testing.assert_array_equal(rows.cols, columns)
        np.testing.assert_array_equal(rows.vals, matrix[row_numbers, columns])
        np.testing.assert_array_equal(np.diff(rows.starts), np.count_nonzero(matrix, axis=1))
        assert rows.starts[0] == 0 and rows.most_per_row == np.count_nonzero(matrix, axis=1).max()


def test_busy_cores_leave_one_thread_per_network():
    """Programs keeping every core busy (here one spinning process per core) leave the engine one thread;
    the count is never below one, nor above what was asked."""
    free = cores.FreeCores()
    count = len(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(cores.WINDOW_S + 0.2)
        assert free.threads(count) == 1
        assert free.free is not None and free.free < 0.5
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert free.threads(1) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_the_engine_trains_from_the_images_rows_as_from_the_inputs(mnist, workers):
    """`FastEngine.fit` takes the images' sparse rows (`SparseRows.from_images`) in place of the float32 inputs
    where `trains_from_rows`, and trains the same bits (one seed, and two seeds in their threads); where the C
    kernel does not run whole epochs (Adam without BatchNormalization, the JAX backend) it says so."""
    (_, y), (_, y_valid) = mnist
    (images, _), (valid_images, _), _ = data.split(data.load_arrays(), train_limit=TRAIN_LIMIT)
    rows, valid_rows = sparse.SparseRows.from_images(images), sparse.SparseRows.from_images(valid_images[:1000])
    states = []
    for inputs, validation in ((data.to_inputs(images), data.to_inputs(valid_images[:1000])), (rows, valid_rows)):
        cfg, networks = seeded_models(CASES["shallow-mse-sgd"], count=workers)
        fast = engine.FastEngine(networks, cfg, backend="numpy", workers=workers)
        assert fast.trains_from_rows
        logs: list = []
        rngs = [np.random.RandomState(SEED + k) for k in range(workers)]
        fast.fit(inputs, y, (validation, y_valid), epochs=2, rngs=rngs, on_epoch_end=lambda _, got: logs.append(got))  # noqa: B023
        states.append((fast.get_state(), logs))
    for name, array in states[0][0].items():
        assert np.array_equal(array, states[1][0][name]), name
    assert states[0][1] == states[1][1]

    cfg, (model,) = seeded_models(CASES["shallow-adam"])
    adam = engine.FastEngine([model], cfg, backend="numpy")
    assert not adam.trains_from_rows
    with pytest.raises(ValueError, match="give the float32 inputs"):
        adam.fit(rows, y, (valid_rows, y_valid), epochs=1)
    cfg, (model,) = seeded_models(CASES["shallow-mse-sgd"])
    assert not engine.FastEngine([model], cfg, backend="jax").trains_from_rows


def test_the_thread_count_follows_the_epochs_measured_times():
    """cores.SpeedCheck: one early epoch on one thread to compare with; two epochs in a row on two threads
    much slower than their best are followed by one on one thread, which keeps the network there while it is
    faster than the recent two-thread epochs (a longer stretch each time two lose again); one slow epoch among
    fast ones (a hiccup) is not; a stretch ends with a try of two threads."""

    def run(times_of):
        check, chosen = cores.SpeedCheck(), []
        for epoch in range(len(times_of)):
            threads = check.allowed(2)
            chosen.append(threads)
            check.record(threads, times_of[epoch][threads])
        return chosen

    quiet = [{1: 0.070, 2: 0.045}] * 30
    # The early probe (third epoch) loses; then two threads throughout.
    assert run(quiet) == [2, 2, 1] + [2] * 27
    # One slow epoch among fast ones (the 10th, as the 2-core machine's once a second): no probe.
    spike = list(quiet)
    spike[9] = {1: 0.070, 2: 0.120}
    assert run(spike) == [2, 2, 1] + [2] * 27
    # Such hiccups every few epochs, never two in a row: two threads throughout.
    hiccups = [{1: 0.070, 2: 0.120} if epoch % 5 == 4 else quiet[0] for epoch in range(40)]
    assert run(hiccups) == [2, 2, 1] + [2] * 37
    # A core turns slow for two threads for 21 epochs from the 10th (a neighbour on a virtual machine's host):
    slow = quiet[:9] + [{1: 0.070, 2: 0.200}] * 21 + quiet[:30]
    chosen = run(slow)
    assert chosen[:12] == [2, 2, 1] + [2] * 8 + [1]  # two slow epochs and a probe that wins against the median:
    assert chosen[12:22] == [1] * 8 + [2, 1]  # 8 more on one thread, a try of two, which loses:
    assert chosen[22:39] == [1] * 15 + [2, 2]  # 16 on one, then a try of two (the slowness has passed),
    assert chosen[39:] == [2] * 21  # which wins: two threads again.
    # The first epoch (caches, pages) is never compared: a slow first epoch changes nothing.
    assert run([{1: 1.0, 2: 1.0}] + quiet[1:]) == [2, 2, 1] + [2] * 27
    # Two threads slower than 1.4x their best, yet faster than one thread was (the whole machine slow): no
    # probe while the one-thread epoch (the third) is at most 64 epochs old, then one (after two such epochs
    # past that), which loses.
    machine_slow = quiet[:9] + [{1: 0.070, 2: 0.065}] * 80
    assert run(machine_slow) == [2, 2, 1] + [2] * 66 + [1] + [2] * 19


def test_the_thread_count_follows_the_cores_hand_over():
    """SpeedCheck told the cores' hand-over before the epochs where it asks for it (FreeCores.before_epoch):
    far-apart cores after one slow epoch make a probe at once, which faces that epoch; cores that come near
    again (two reads in a row) end a stretch on one thread at once, and a try that loses there leaves the times
    to decide; a far reading with fast epochs, or none at all, changes nothing."""
    near, far = 55.0, 330.0

    def run(epochs, handovers=None):
        check, chosen = cores.SpeedCheck(), []
        for epoch, times in enumerate(epochs):
            if handovers is not None and check.wants_handover():
                check.measured(handovers[epoch])
            threads = check.allowed(2)
            chosen.append(threads)
            check.record(threads, times[threads])
        return chosen

    quiet, slow = {1: 0.070, 2: 0.045}, {1: 0.070, 2: 0.200}
    # The host moves the two cores apart for 21 epochs from the 10th, then back.
    epochs = [quiet] * 9 + [slow] * 21 + [quiet] * 30
    apart = [near] * 9 + [far] * 21 + [near] * 30
    by_times = run(epochs)
    assert by_times[9:12] == [2, 2, 1] and by_times[30:37] == [1] * 7  # Two slow epochs; back at the 38th.
    chosen = run(epochs, apart)
    assert chosen[:10] == [2, 2, 1] + [2] * 7  # The 10th epoch is slow and the cores far apart:
    assert chosen[10:19] == [1] * 9  # a probe at once, which wins against that epoch, and 8 more on one;
    assert chosen[19:30] == [2] + [1] * 10  # a try of two, which loses (the cores still apart), and more on one;
    assert chosen[30:] == [1] + [2] * 29  # the cores come near at the 31st: two near reads, two threads, a win.
    # One near read in a stretch (the host in the middle of a move) is not enough.
    assert run(epochs, apart[:25] + [near] + apart[26:]) == chosen
    assert sum(epochs[e][t] for e, t in enumerate(chosen)) < sum(epochs[e][t] for e, t in enumerate(by_times))
    # Epochs slow for another reason (the cores stay near): the same choices as the times alone.
    assert run(epochs, [near] * 60) == by_times
    # No hand-over measured (the probe could not be made): the same too.
    assert run(epochs, [None] * 60) == by_times
    # A far reading beside fast epochs (the 17th is read for the reference): nothing happens.
    assert run([quiet] * 30, [near] * 16 + [far] + [near] * 13) == [2, 2, 1] + [2] * 27
    # The cores come near but two threads still lose: one try, then the times decide (no try every epoch).
    stuck = [quiet] * 9 + [slow] * 40
    chosen = run(stuck, [near] * 9 + [far] * 5 + [near] * 35)
    assert chosen[10:15] == [1] * 5 and chosen[15] == 2  # The early end of the stretch: a try, which loses;
    assert chosen[16:32] == [1] * 16 and chosen[32] == 2  # then 16 on one thread (doubled) before the next.


def test_the_cores_hand_over_is_measured_in_c():
    """sparse.handover_ns: a cache line's round trip between two threads, in nanoseconds (tens to hundreds on
    a machine's cores), or None where it cannot be measured."""
    if sparse.unavailable_reason() is not None:
        pytest.skip(sparse.unavailable_reason())
    # Half a second each, until one answers or 30 s have passed: in the full suite the book's LeNet run, which
    # conftest.py starts with the session, trains on TensorFlow's threads beside this test, and the helper waits
    # for the scheduler; three reads of 0.5 s in a row (and of 50 ms before) all went unanswered in two CI runs.
    two_cores = len(os.sched_getaffinity(0)) >= 2
    give_up = time.monotonic() + (30.0 if two_cores else 0.0)
    measured = [sparse.handover_ns(chunks=4, limit_s=0.5)]
    while measured[-1] is None and time.monotonic() < give_up:
        measured.append(sparse.handover_ns(chunks=4, limit_s=0.5))
    assert all(ns is None or 1.0 < ns < 1e8 for ns in measured), measured
    if two_cores and measured[-1] is None:  # No answer from a second core in 30 s: say what held the cores.
        busiest = subprocess.run(["ps", "-eo", "pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True)
        load = pathlib.Path("/proc/loadavg").read_text()
        pytest.fail(f"none of {len(measured)} hand-over reads answered in 30 s\nload {load}{busiest.stdout[:2000]}")
    assert sparse.handover_ns(chunks=0) is None  # Nothing to time.
    free = cores.FreeCores(handover=lambda: 77.0)
    free.before_epoch(1)  # One thread wanted: no probe.
    assert free.speed.handover is None
    free.before_epoch(2)
    assert free.speed.handover in (77.0, None)  # None only where the load leaves a single core.


@pytest.mark.heavy
def test_a_busy_core_the_load_cannot_see_sends_the_network_to_one_thread():
    """A thread of this process that keeps a core busy is the process's own CPU time, which FreeCores's load
    count takes away: on two cores, two-thread epochs slow down several-fold while it runs, the epochs' own
    times send the network to one thread, and the weights are one thread's bits."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    child = r"""
import hashlib, json, os, sys, threading
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])  # Two cores, as on the machine this is about.
import numpy as np
sys.path.insert(0, os.environ["TESTS_DIR"])
import test_engine as t
from digitlab import data, engine
from digitlab.engine import cores
times = []  # (threads, ms) of each epoch, for a failure's message.
def record(self, threads, seconds, record=cores.FreeCores.record):
    times.append((threads, round(seconds * 1e3, 1)))
    record(self, threads, seconds)
cores.FreeCores.record = record
# 12,000 images: epochs of ~12 ms on one thread, 35-56 ms on two beside the busy one, so that one time slice
# lost to another program (the suite's LeNet run: ~10 ms) cannot make the one-thread probe lose, as it did
# with 2,000 images (2-ms epochs, one of 12 ms).
(x_train, y_train), (x_valid, y_valid), _ = data.split(data.load_arrays(), train_limit=12000)
x, y = data.to_inputs(x_train), data.to_targets(y_train)
validation = (data.to_inputs(x_valid[:1000]), data.to_targets(y_valid[:1000]))
results = {}
for workers, busy in ((1, False), (2, True)):
    stop = threading.Event()
    blob = bytes(1 << 22)
    def spin():
        while not stop.is_set():
            hashlib.sha256(blob).digest()  # Lets Python's lock go while it hashes: a core busy in C.
    spinner = threading.Thread(target=spin)
    if busy:
        spinner.start()
    cfg, (model,) = t.seeded_models(t.CASES["shallow-mse-sgd"])
    fast = engine.FastEngine([model], cfg, backend="numpy", workers=workers)
    fast.fit(x, y, validation, epochs=16, rngs=[np.random.RandomState(1)])
    stop.set()
    if busy:
        spinner.join()
    state = fast.get_state()
    results[workers] = {"counts": fast.thread_counts, "state": {k: v.tobytes().hex() for k, v in state.items()}}
    results[workers]["times"], times[:] = list(times), []
print(json.dumps(results))
"""
    environment = dict(os.environ, TESTS_DIR=os.path.dirname(__file__))
    done = subprocess.run([sys.executable, "-c", child], env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    busy = results["2"]
    assert busy["state"] == results["1"]["state"]
    counts = {int(threads): epochs for threads, epochs in busy["counts"].items()}
    assert counts.get(1, 0) >= 8, f"{counts}; each epoch's (threads, ms): {busy['times']}"


def test_fit_engine_shuffles_with_one_permutation_per_epoch(mnist):
    """FitEngine keeps fit's one-off build draw out of the generator: epoch e uses its e-th permutation."""
    (x, y), validation = mnist
    cfg, (model,) = seeded_models(dict(model="shallow"))
    rng = np.random.RandomState(SEED)
    np.random.seed(SEED + 1)  # The global generator's own state must not matter.
    engine.FitEngine(model, cfg, verbose=0).fit(x, y, validation, epochs=EPOCHS, rngs=[rng])
    expected = np.random.RandomState(SEED)
    for _ in range(EPOCHS):
        expected.permutation(len(x))
    np.testing.assert_array_equal(rng.permutation(len(x)), expected.permutation(len(x)))


@pytest.mark.parametrize(
    ("backend", "settings"),
    [
        ("numpy", dict(model="intermediate", optimizer="adam", learning_rate=0.001)),
        ("jax", dict(model="intermediate", optimizer="adam", learning_rate=0.001)),
        ("numpy", dict(model="intermediate")),  # Plain SGD: whole epochs in C.
    ],
)
def test_state_round_trip_continues_exactly(mnist, backend, settings):
    (x, y), validation = mnist
    cfg, straight_models = seeded_models(settings, count=2)
    straight = engine.FastEngine(straight_models, cfg, backend=backend)
    straight_logs = []
    straight.fit(
        x,
        y,
        validation,
        epochs=3,
        rngs=[np.random.RandomState(s) for s in (1, 2)],
        on_epoch_end=lambda epoch, logs: straight_logs.append((epoch, logs)),
    )

    cfg, first_models = seeded_models(settings, count=2)
    first = engine.FastEngine(first_models, cfg, backend=backend)
    first_rngs = [np.random.RandomState(s) for s in (1, 2)]
    first.fit(x, y, validation, epochs=2, rngs=first_rngs)
    saved = first.get_state()
    assert int(saved["iterations"]) == 2 * int(np.ceil(len(x) / cfg.batch_size))
    if settings.get("optimizer") == "adam":
        assert saved["momentum/dense_0/kernel"].shape == (2, 784, 64)

    cfg, fresh_models = seeded_models(settings, count=2, seed=SEED + 1)  # Other weights, overwritten below.
    resumed = engine.FastEngine(fresh_models, cfg, backend=backend)
    resumed.set_state(saved)
    resumed_logs = []
    resumed.fit(
        x,
        y,
        validation,
        epochs=3,
        initial_epoch=2,
        rngs=first_rngs,
        on_epoch_end=lambda epoch, logs: resumed_logs.append((epoch, logs)),
    )
    assert resumed_logs == straight_logs[2:]
    final, expected = resumed.get_state(), straight.get_state()
    assert set(final) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_seeds_match_single_runs(mnist, backend):
    (x, y), validation = mnist
    seeds = (3, 4, 5)
    cfg, together_models = seeded_models(dict(model="shallow"), count=len(seeds))
    together = engine.FastEngine(together_models, cfg, backend=backend)
    together_logs = []
    together.fit(
        x,
        y,
        validation,
        epochs=2,
        rngs=[np.random.RandomState(s) for s in seeds],
        on_epoch_end=lambda epoch, logs: together_logs.append(logs),
    )
    together.sync_to_models()
    cfg, alone_models = seeded_models(dict(model="shallow"), count=len(seeds))
    for k, (model, seed) in enumerate(zip(alone_models, seeds, strict=True)):
        alone = engine.FastEngine([model], cfg, backend=backend)
        alone_logs = []
        alone.fit(
            x,
            y,
            validation,
            epochs=2,
            rngs=[np.random.RandomState(seed)],
            on_epoch_end=lambda epoch, logs, alone_logs=alone_logs: alone_logs.append(logs[0]),
        )
        alone.sync_to_models()
        for single, joint in zip(model.get_weights(), together_models[k].get_weights(), strict=True):
            np.testing.assert_allclose(single, joint, rtol=1e-5, atol=1e-7)
        for single, joint in zip(alone_logs, [logs[k] for logs in together_logs], strict=True):
            assert single == pytest.approx(joint, rel=1e-5)
    # Different seeds really are different networks.
    assert not np.allclose(together_models[0].get_weights()[0], together_models[1].get_weights()[0])


def dropout_model():
    """A small Dense-Dropout-Dense net (not one of the book's), to exercise Dropout and RMSprop."""
    model = keras.Sequential(
        [
            keras.Input(shape=(784,)),
            layers.Dense(32, activation="tanh"),
            layers.Dropout(0.3),
            layers.Dense(32, activation="elu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(0.003), metrics=["accuracy"])
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_model_learns_and_resumes(mnist, backend):
    (x, y), validation = mnist
    cfg = config.TrainConfig(model="intermediate").resolved()
    keras.utils.set_random_seed(SEED)
    straight = engine.FastEngine([dropout_model()], cfg, backend=backend)
    logs = []
    straight.fit(
        x,
        y,
        validation,
        epochs=3,
        rngs=[np.random.RandomState(0)],
        on_epoch_end=lambda epoch, epoch_logs, logs=logs: logs.append(epoch_logs[0]),
    )
    assert logs[-1]["val_accuracy"] > 0.8
    keras.utils.set_random_seed(SEED)
    first = engine.FastEngine([dropout_model()], cfg, backend=backend)
    rng = np.random.RandomState(0)
    first.fit(x, y, validation, epochs=2, rngs=[rng])
    resumed = engine.FastEngine([dropout_model()], cfg, backend=backend)
    resumed.set_state(first.get_state())
    resumed.fit(x, y, validation, epochs=3, initial_epoch=2, rngs=[rng])
    for name, value in straight.get_state().items():
        np.testing.assert_array_equal(resumed.get_state()[name], value, err_msg=name)


def test_backends_agree_on_dropout_free_models(mnist):
    (x, y), validation = mnist
    finals = {}
    for backend in BACKENDS:
        cfg, (model,) = seeded_models(dict(model="intermediate", optimizer="rmsprop", learning_rate=0.001))
        fast = engine.FastEngine([model], cfg, backend=backend)
        fast.fit(x, y, validation, epochs=1, rngs=[np.random.RandomState(0)])
        finals[backend] = fast.get_state()
    for name, value in finals["jax"].items():
        np.testing.assert_allclose(finals["numpy"][name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def test_unsupported_reason_names_the_problem():
    for name in ("shallow", "intermediate", "deep"):
        cfg = config.TrainConfig(model=name).resolved()
        assert engine.unsupported_reason(models.create_model(cfg), cfg) is None
    deep = config.TrainConfig(model="deep").resolved()
    uncentered = keras.Sequential([keras.Input(shape=(784,)), layers.Dense(8), layers.BatchNormalization(center=False)])
    uncentered.add(layers.Dense(10, activation="softmax"))
    uncentered.compile(loss="categorical_crossentropy", optimizer="adam")
    reason = engine.unsupported_reason(uncentered, deep)
    assert "BatchNormalization" in reason and reason.endswith(".")
    lenet = config.TrainConfig(model="lenet").resolved()
    assert "Conv2D" in engine.unsupported_reason(models.create_model(lenet), lenet)
    shallow = config.TrainConfig(model="shallow").resolved()
    assert "not compiled" in engine.unsupported_reason(models.build_model(shallow), shallow)
    model = models.build_model(shallow)
    model.compile(loss="mean_squared_error", optimizer=keras.optimizers.Adam(amsgrad=True))
    assert "amsgrad" in engine.unsupported_reason(model, shallow)
    model.compile(loss="mean_absolute_error", optimizer="sgd")
    assert "loss" in engine.unsupported_reason(model, shallow)
    with pytest.raises(ValueError, match="BatchNormalization"):
        engine.FastEngine([models.create_model(deep)], deep, backend="jax")


def test_bad_input_raises_value_error(mnist):
    (x, y), validation = mnist
    cfg, (model,) = seeded_models(dict(model="shallow"))
    with pytest.raises(ValueError, match="backend"):
        engine.FastEngine([model], cfg, backend="tpu")
    with pytest.raises(ValueError, match="at least one"):
        engine.FastEngine([], cfg)
    fast = engine.FastEngine([model], cfg, backend="numpy")
    with pytest.raises(ValueError, match=r"\(n, 784\)"):
        fast.fit(x[:, :100], y, validation, epochs=1)
    with pytest.raises(ValueError, match="one random generator per model"):
        fast.fit(x, y, validation, epochs=1, rngs=[np.random.RandomState(0)] * 2)
    state = fast.get_state()
    state["dense_0/kernel"] = state["dense_0/kernel"][:, :10]
    with pytest.raises(ValueError, match="dense_0/kernel"):
        fast.set_state(state)
    with pytest.raises(ValueError, match="exactly the arrays"):
        fast.set_state({"iterations": np.zeros(())})


def test_callback_errors_propagate(mnist):
    (x, y), validation = mnist
    cfg, (model,) = seeded_models(dict(model="shallow"))
    fast = engine.FastEngine([model], cfg, backend="numpy")

    def stop(epoch, logs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fast.fit(x, y, validation, epochs=3, on_epoch_end=stop)

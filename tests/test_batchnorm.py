"""The deep net (chapter 9: Dense, BatchNormalization, Dropout, Adam) on the fast engine, against Keras `fit`.

From the same initial weights and batches, the engine must end an epoch with `fit`'s weights
(the moving statistics included) and report its history, within float32 rounding. Dropout's
masks are the engine's own (it cannot draw Keras's), so the equality is tested with the Dropout
rate at 0; with a rate above 0 the test checks that a run learns and resumes bit for bit.
"""

import keras
import numpy as np
import pytest

from digitlab import config, data, engine, models
from digitlab.engine import cores, deep, numpy_backend, sparse, timing

SEED = 7
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@pytest.fixture(scope="module")
def shrunken():
    """A few batches of real MNIST (600 images: four full batches of 128 and one of 88), 500 to validate."""
    (x_train, y_train), (x_valid, y_valid), _ = data.split(data.load_arrays(), train_limit=600)
    return (
        (data.to_inputs(x_train), data.to_targets(y_train)),
        (data.to_inputs(x_valid[:500]), data.to_targets(y_valid[:500])),
    )


def deep_models(count: int = 1, **settings):
    """The book's deep net, `count` models built after seeding with SEED (the same initial weights)."""
    cfg = config.TrainConfig(model="deep", **settings).resolved()
    keras.utils.set_random_seed(SEED)
    return cfg, [models.create_model(cfg) for _ in range(count)]


def train(run_engine, x, y, validation, epochs: int) -> list[dict]:
    logs: list[dict] = []
    run_engine.fit(
        x,
        y,
        validation,
        epochs=epochs,
        rngs=[np.random.RandomState(SEED)],
        on_epoch_end=lambda epoch, epoch_logs: logs.append(epoch_logs[0]),
    )
    return logs


# The engine's paths for the deep net, the variable that picks each, and how the engine says it runs.
PATHS = {
    "C epochs": (None, "whole epochs in C, sparse first layer (AVX"),
    "C epochs, portable": (sparse.SCALAR_VARIABLE, "whole epochs in C, sparse first layer (portable C"),
    "NumPy steps": (numpy_backend.NO_FUSED_VARIABLE, "sparse first layer in C (AVX"),
    "NumPy only": (sparse.DISABLE_VARIABLE, "NumPy only"),
}


@pytest.fixture
def path(request, monkeypatch):
    variable, _ = PATHS[request.param]
    if variable is not None:
        monkeypatch.setenv(variable, "1")
    sparse.reload()
    yield request.param
    monkeypatch.undo()
    sparse.reload()


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize(
    "settings",
    [dict(dropout=[0.0]), dict(dropout=[0.0], optimizer="sgd", learning_rate=0.1)],
    ids=["adam", "sgd"],
)
def test_deep_net_matches_keras_fit(shrunken, settings, path):
    (x, y), validation = shrunken
    cfg, (reference,) = deep_models(**settings)
    initial = reference.get_weights()
    fit_logs = train(engine.FitEngine(reference, cfg, verbose=0), x, y, validation, epochs=2)
    cfg, (model,) = deep_models(**settings)
    fast = engine.make_engine([model], cfg)
    assert fast.name == "fast-numpy"
    assert fast.path.startswith(PATHS[path][1])
    fast_logs = train(fast, x, y, validation, epochs=2)
    fast.sync_to_models()
    names = [variable.path for variable in reference.weights]
    assert sum("moving_mean" in name for name in names) == 3
    for name, trained, expected, before in zip(
        names, model.get_weights(), reference.get_weights(), initial, strict=True
    ):
        assert np.abs(expected - before).max() > 1e-4, name  # Every array moved, the moving statistics too.
        np.testing.assert_allclose(trained, expected, rtol=1e-4, atol=2e-6, err_msg=name)
    for key in HISTORY_KEYS:
        np.testing.assert_allclose(
            [entry[key] for entry in fast_logs], [entry[key] for entry in fit_logs], rtol=1e-4, atol=1e-6
        )


@pytest.mark.parametrize("path", ["C epochs", "C epochs, portable"], indirect=True)
def test_threads_share_each_batch_with_the_same_bits(shrunken, path, monkeypatch):
    """One, two and three threads sharing each batch of _deep.c's epoch end with the same bits (every sum over
    the rows runs in one order), and with fit's weights within float32 rounding, the book's Dropout 0.2 aside.
    The two-thread runs are profiled (`digitlab bench --profile`): timing the phases changes no bit."""
    (x, y), validation = shrunken
    cfg, (reference,) = deep_models(dropout=[0.0])
    train(engine.FitEngine(reference, cfg, verbose=0), x, y, validation, epochs=2)
    monkeypatch.setattr(cores.FreeCores, "threads", lambda self, wanted: wanted)  # As many as asked, whatever the load.
    for dropout in (0.0, 0.2):
        states, histories = [], []
        for threads in (1, 2, 3):
            cfg, (model,) = deep_models(dropout=[dropout])
            fast = engine.FastEngine([model], cfg, backend="numpy", workers=threads, profile=threads == 2)
            assert fast.path.startswith(PATHS[path][1])
            histories.append(train(fast, x, y, validation, epochs=2))
            assert fast.thread_counts == {threads: 2}
            if fast.profile is not None:
                measured = fast.profile.per_epoch()
                assert list(measured["phases"]) == list(timing.DEEP_PHASES) == list(fast.profile.names)
                assert deep.profile_phases() == len(timing.DEEP_PHASES)
                for phase in ("first layer forward", "BatchNormalization statistics", "first layer update"):
                    assert len(measured["phases"][phase]) == 2 and min(measured["phases"][phase]) > 0, phase
                assert sum(seconds[0] for seconds in measured["phases"].values()) <= measured["train"]
            states.append(fast.get_state())
            if dropout == 0.0:
                fast.sync_to_models()
                for name, trained, expected in zip(
                    [variable.path for variable in reference.weights],
                    model.get_weights(),
                    reference.get_weights(),
                    strict=True,
                ):
                    np.testing.assert_allclose(trained, expected, rtol=1e-4, atol=2e-6, err_msg=name)
        for state, history in zip(states[1:], histories[1:], strict=True):
            assert history == histories[0]
            for name, value in states[0].items():
                np.testing.assert_array_equal(state[name], value, err_msg=f"{name}, Dropout {dropout}")


def test_deep_net_with_dropout_learns_and_resumes_exactly(shrunken):
    """The book's Dropout 0.2 on the C path: masks of its own, the same ones again after a resume."""
    (x, y), validation = shrunken
    cfg, (model,) = deep_models()
    straight = engine.FastEngine([model], cfg)
    assert straight.path.startswith("whole epochs in C")
    logs = train(straight, x, y, validation, epochs=3)
    # Chance is 0.1. Measured after 3 epochs of these 600 images: training accuracy 0.665 (fit: 0.71); the
    # validation's moving statistics have had 15 steps to move (fit: 0.36, the engine 0.31).
    assert logs[-1]["accuracy"] > 0.5 and logs[-1]["val_accuracy"] > 0.2
    cfg, (model,) = deep_models()
    first = engine.FastEngine([model], cfg)
    rng = np.random.RandomState(SEED)
    first.fit(x, y, validation, epochs=2, rngs=[rng])
    cfg, (model,) = deep_models()
    resumed = engine.FastEngine([model], cfg)
    resumed.set_state(first.get_state())
    resumed.fit(x, y, validation, epochs=3, initial_epoch=2, rngs=[rng])
    for name, value in straight.get_state().items():
        np.testing.assert_array_equal(resumed.get_state()[name], value, err_msg=name)


def test_seeds_side_by_side_train_as_single_runs(shrunken):
    """Two seeds in one engine (threads over the seeds) end where each seed's run alone ends; profiled, each
    seed's thread has its row of the deep net's phases (`digitlab bench --profile --model deep --seeds 2`)."""
    (x, y), validation = shrunken
    cfg = config.TrainConfig(model="deep", seed=SEED, seeds=2).resolved()
    together = engine.FastEngine(models.create_seeded_models(cfg), cfg, workers=2, profile=True)
    together.fit(x, y, validation, epochs=2, rngs=[np.random.RandomState(SEED + k) for k in range(2)])
    assert together.profile is not None and together.profile.names == timing.DEEP_PHASES
    assert together.seed_threads == 2 and together.profile.phases.shape == (2, len(timing.DEEP_PHASES))
    assert together.profile.phases[:, timing.DEEP_PHASES.index("first layer forward")].min() > 0
    for k in range(2):
        single = config.TrainConfig(model="deep", seed=SEED + k).resolved()
        alone = engine.FastEngine(models.create_seeded_models(single), single)
        alone.fit(x, y, validation, epochs=2, rngs=[np.random.RandomState(SEED + k)])
        for name, value in alone.get_state().items():
            if name != "iterations":
                np.testing.assert_array_equal(together.get_state()[name][k], value[0], err_msg=name)

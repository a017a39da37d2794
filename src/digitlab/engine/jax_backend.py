"""The JAX backend of `FastEngine` (name `fast-jax`): its natural path on a GPU.

`FastEngine(models, config, backend="jax")` (or `backend="auto"` when JAX sees a
GPU) builds a `JaxBackend` here; nothing else should need it. It keeps the N
models' weights and optimizer slots stacked in JAX arrays and trains them with
the same formulas as Keras's JAX backend: each epoch is one `jax.jit`-compiled
call (compiled once per training-set size) that runs a `lax.scan` over the
epoch's batches, with `vmap` over the N models inside each step, plus one more
step for a last partial batch. Validation is one more jitted, vmapped call.
The compiled functions live in a `Program`, shared by every backend of the same
network, batch size and number of models, so a process that builds several
engines (a resume, the tests) compiles each function once.

`fast.py` imports this module only when a run asks for the JAX backend, so that
`import digitlab.engine` does not load it; what both backends share (`NetworkSpec`,
the weight names, the clipping constant) comes from `spec.py`.
"""

from __future__ import annotations

import functools

import numpy as np

from digitlab.engine import spec


class JaxBackend:
    """Trains the stacked models with JAX; the same formulas as Keras's JAX backend."""

    def __init__(self, network: spec.NetworkSpec, batch_size: int, state: dict):
        import jax

        self.jax = jax
        self.program = program(network, batch_size, len(state["dense_0/kernel"]))
        self.load(state)

    def state(self) -> dict:
        """The weights, optimizer state and step count as NumPy arrays (a checkpoint's)."""
        state = {name: np.asarray(value) for name, value in self.arrays.items()}
        state["iterations"] = np.asarray(state["iterations"], np.int64)
        return state

    def load(self, state: dict) -> None:
        """Takes the arrays of `state` (a checkpoint's) as the current ones."""
        jnp = self.jax.numpy
        self.arrays = {name: jnp.asarray(value) for name, value in state.items() if name != "iterations"}
        self.arrays["iterations"] = jnp.asarray(int(state["iterations"]), jnp.int32)

    def start(self, x, y, validation) -> None:
        """Puts the training data (and the validation data, if any) on the device once."""
        jnp = self.jax.numpy
        self.data = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(np.argmax(y, axis=1).astype(np.int32)))
        self.validation = None
        if validation is not None:
            self.validation = (
                jnp.asarray(validation[0]),
                jnp.asarray(validation[1]),
                jnp.asarray(np.argmax(validation[1], axis=1).astype(np.int32)),
            )

    def train_epoch(self, orders: np.ndarray):
        """Trains one epoch in the batch orders given; each network's loss sums and correct counts."""
        epoch = self.program.epoch(orders.shape[1])
        self.arrays, loss_sums, correct = epoch(self.arrays, *self.data, orders.astype(np.int32))
        return np.asarray(loss_sums, np.float64), np.asarray(correct, np.int64)

    def evaluate(self):
        """Each network's loss sums and correct counts on the validation data given to `start`."""
        assert self.validation is not None, "evaluate needs the validation data given to start"
        loss_sums, correct = self.program.evaluate(self.arrays, *self.validation)
        return np.asarray(loss_sums, np.float64), np.asarray(correct, np.int64)


@functools.cache
def program(network: spec.NetworkSpec, batch_size: int, count: int) -> Program:
    """The one `Program` of this network, batch size and number of models in this process."""
    return Program(network, batch_size, count)


class Program:
    """The jitted epoch and validation functions of one network, batch size and number of models.

    It holds no weights and no data (they are arguments), so sharing it between
    backends shares only compiled code.
    """

    def __init__(self, network: spec.NetworkSpec, batch_size: int, count: int):
        import jax

        self.jax, self.network, self.batch_size, self.count = jax, network, batch_size, count
        self.names = spec.weight_names(network)
        self.epochs: dict = {}
        self.evaluate = jax.jit(self._evaluate_function())

    def epoch(self, size: int):
        """The jitted epoch over `size` training examples (compiled on first use)."""
        if size not in self.epochs:
            self.epochs[size] = self.jax.jit(self._epoch_function(size), donate_argnums=0)
        return self.epochs[size]

    def _forward(self, weights: dict, x, key):
        jax, jnp = self.jax, self.jax.numpy
        functions = {
            "sigmoid": jax.nn.sigmoid,
            "relu": jax.nn.relu,
            "tanh": jnp.tanh,
            "elu": jax.nn.elu,
            "selu": jax.nn.selu,
            "linear": lambda value: value,
            "softmax": lambda value: jax.nn.softmax(value, axis=-1),
        }
        activations = x
        for number, layer in enumerate(self.network.dense):
            if layer.dropout and key is not None:
                keep = 1.0 - layer.dropout
                mask = jax.random.bernoulli(jax.random.fold_in(key, number), keep, activations.shape)
                activations = jax.lax.select(mask, activations / keep, jnp.zeros_like(activations))
            activations = activations @ weights[f"dense_{number}/kernel"] + weights[f"dense_{number}/bias"]
            activations = functions[layer.activation](activations)
        return activations

    def _losses(self, outputs, targets, labels):
        """Per-example losses (Keras's formulas) and per-example hits."""
        jnp = self.jax.numpy
        if self.network.loss == "mean_squared_error":
            losses = jnp.mean(jnp.square(targets - outputs), axis=-1)
        else:
            normalized = outputs / jnp.sum(outputs, axis=-1, keepdims=True)
            normalized = jnp.clip(normalized, spec.CROSSENTROPY_CLIP, 1.0 - spec.CROSSENTROPY_CLIP)
            losses = -jnp.sum(targets * jnp.log(normalized), axis=-1)
        return losses, jnp.argmax(outputs, axis=-1) == labels

    def _update(self, weights: dict, slots: dict, grads: dict, iterations):
        """One optimizer step for one model, Keras's formulas."""
        jnp, optimizer = self.jax.numpy, self.network.optimizer
        rate = jnp.float32(optimizer.learning_rate)
        new_weights, new_slots = {}, dict(slots)
        for name in self.names:
            weight, grad = weights[name], grads[name]
            if optimizer.name == "sgd":
                if optimizer.momentum:
                    momentum = slots[f"momentum/{name}"] * optimizer.momentum - grad * rate
                    new_slots[f"momentum/{name}"] = momentum
                    step = momentum * optimizer.momentum - grad * rate if optimizer.nesterov else momentum
                    weight = weight + step
                else:
                    weight = weight - grad * rate
            elif optimizer.name == "adam":
                local_step = (iterations + 1).astype(jnp.float32)
                power_1 = jnp.power(jnp.float32(optimizer.beta_1), local_step)
                power_2 = jnp.power(jnp.float32(optimizer.beta_2), local_step)
                alpha = rate * jnp.sqrt(1 - power_2) / (1 - power_1)
                first = slots[f"momentum/{name}"]
                second = slots[f"velocity/{name}"]
                first = first + (grad - first) * (1 - optimizer.beta_1)
                second = second + (jnp.square(grad) - second) * (1 - optimizer.beta_2)
                new_slots[f"momentum/{name}"], new_slots[f"velocity/{name}"] = first, second
                weight = weight - (first * alpha) / (jnp.sqrt(second) + optimizer.epsilon)
            else:
                velocity = optimizer.rho * slots[f"velocity/{name}"] + (1 - optimizer.rho) * jnp.square(grad)
                new_slots[f"velocity/{name}"] = velocity
                increment = rate * grad / jnp.sqrt(velocity + optimizer.epsilon)
                if optimizer.momentum:
                    momentum = optimizer.momentum * slots[f"momentum/{name}"] + increment
                    new_slots[f"momentum/{name}"] = momentum
                    weight = weight - momentum
                else:
                    weight = weight - increment
            new_weights[name] = weight
        return new_weights, new_slots

    def _split(self, arrays: dict):
        weights = {name: arrays[name] for name in self.names}
        slots = {name: value for name, value in arrays.items() if "/" in name and name not in weights}
        seeds = arrays.get("dropout_seeds", self.jax.numpy.zeros(self.count, self.jax.numpy.uint32))
        return weights, slots, seeds

    def _epoch_function(self, size: int):
        jax, jnp = self.jax, self.jax.numpy
        has_dropout = any(layer.dropout for layer in self.network.dense)

        def model_step(weights, slots, seed, x, y, labels, iterations):
            key = jax.random.fold_in(jax.random.PRNGKey(seed), iterations) if has_dropout else None

            def loss_function(weights):
                losses, hits = self._losses(self._forward(weights, x, key), y, labels)
                return jnp.sum(losses) / losses.shape[0], (jnp.sum(losses), jnp.sum(hits))

            grads, (loss_sum, hits) = jax.grad(loss_function, has_aux=True)(weights)
            weights, slots = self._update(weights, slots, grads, iterations)
            return weights, slots, loss_sum, hits

        models_step = jax.vmap(model_step, in_axes=(0, 0, 0, 0, 0, 0, None))
        batch, full = self.batch_size, size // self.batch_size

        def run(carry, index, x, y, labels):
            weights, slots, seeds, iterations = carry
            weights, slots, loss_sum, hits = models_step(
                weights, slots, seeds, x[index], y[index], labels[index], iterations
            )
            return (weights, slots, seeds, iterations + 1), (loss_sum, hits)

        def epoch(arrays, x, y, labels, orders):
            weights, slots, seeds = self._split(arrays)
            carry = (weights, slots, seeds, arrays["iterations"])

            def body(carry, step):
                index = jax.lax.dynamic_slice_in_dim(orders, step * batch, batch, axis=1)
                return run(carry, index, x, y, labels)

            carry, (loss_sums, hits) = jax.lax.scan(body, carry, jnp.arange(full))
            loss_sums, hits = loss_sums.sum(axis=0), hits.sum(axis=0)
            if size % batch:
                carry, (last_loss, last_hits) = run(carry, orders[:, full * batch :], x, y, labels)
                loss_sums, hits = loss_sums + last_loss, hits + last_hits
            weights, slots, seeds, iterations = carry
            arrays = {**weights, **slots, "iterations": iterations}
            if has_dropout:
                arrays["dropout_seeds"] = seeds
            return arrays, loss_sums, hits

        return epoch

    def _evaluate_function(self):
        jax, jnp = self.jax, self.jax.numpy

        def model_evaluate(weights, x, y, labels):
            losses, hits = self._losses(self._forward(weights, x, None), y, labels)
            return jnp.sum(losses), jnp.sum(hits)

        def evaluate(arrays, x, y, labels):
            weights, _, _ = self._split(arrays)
            return jax.vmap(model_evaluate, in_axes=(0, None, None, None))(weights, x, y, labels)

        return evaluate

"""The JAX backend of `engine.FastEngine` (name `fast-jax`): its natural path on a GPU.

`FastEngine(models, config, backend="jax")` (or `backend="auto"` when JAX sees a
GPU) builds a `_JaxBackend` here; nothing else should use it directly. It keeps
the N models' weights and optimizer slots stacked in JAX arrays and trains them
with the same formulas as Keras's JAX backend: each epoch is one `jax.jit`-compiled
call (compiled once per training-set size) that runs a `lax.scan` over the
epoch's batches, with `vmap` over the N models inside each step, plus one more
step for a last partial batch. Validation is one more jitted, vmapped call.

`engine.py` imports this module lazily, inside `_make_backend`, so that
`import digitlab.engine` does not load it; the helpers both backends share
(`NetworkSpec`, the clipping constant) stay in `engine.py` and are imported from there.
"""

from __future__ import annotations

import numpy as np

from digitlab.engine import _CLIP, NetworkSpec


class _JaxBackend:
    """Trains the stacked models with JAX; the same formulas as Keras's JAX backend."""

    def __init__(self, spec: NetworkSpec, batch_size: int, state: dict):
        import jax

        self.jax, self.spec, self.batch_size = jax, spec, batch_size
        self.names = [f"dense_{index}/{part}" for index in range(len(spec.dense)) for part in ("kernel", "bias")]
        self.count = len(state["dense_0/kernel"])
        self.load(state)
        self.compiled: dict = {}

    def state(self) -> dict:
        state = {name: np.asarray(value) for name, value in self.arrays.items()}
        state["iterations"] = np.asarray(state["iterations"], np.int64)
        return state

    def load(self, state: dict) -> None:
        jnp = self.jax.numpy
        self.arrays = {name: jnp.asarray(value) for name, value in state.items() if name != "iterations"}
        self.arrays["iterations"] = jnp.asarray(int(state["iterations"]), jnp.int32)

    def start(self, x, y, validation) -> None:
        jnp = self.jax.numpy
        self.data = (jnp.asarray(x), jnp.asarray(y), jnp.asarray(np.argmax(y, axis=1).astype(np.int32)))
        self.validation = None
        if validation is not None:
            self.validation = (jnp.asarray(validation[0]), jnp.asarray(validation[1]),
                               jnp.asarray(np.argmax(validation[1], axis=1).astype(np.int32)))

    def train_epoch(self, orders: np.ndarray):
        size = orders.shape[1]
        if size not in self.compiled:
            self.compiled[size] = self.jax.jit(self._epoch_function(size), donate_argnums=0)
        self.arrays, loss_sums, correct = self.compiled[size](self.arrays, *self.data, orders.astype(np.int32))
        return np.asarray(loss_sums, np.float64), np.asarray(correct, np.int64)

    def evaluate(self):
        if "evaluate" not in self.compiled:
            self.compiled["evaluate"] = self.jax.jit(self._evaluate_function())
        loss_sums, correct = self.compiled["evaluate"](self.arrays, *self.validation)
        return np.asarray(loss_sums, np.float64), np.asarray(correct, np.int64)

    def _forward(self, weights: dict, x, key):
        jax, jnp = self.jax, self.jax.numpy
        functions = {
            "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh, "elu": jax.nn.elu,
            "selu": jax.nn.selu, "linear": lambda value: value, "softmax": lambda value: jax.nn.softmax(value, axis=-1),
        }
        activations = x
        for number, layer in enumerate(self.spec.dense):
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
        if self.spec.loss == "mean_squared_error":
            losses = jnp.mean(jnp.square(targets - outputs), axis=-1)
        else:
            normalized = outputs / jnp.sum(outputs, axis=-1, keepdims=True)
            normalized = jnp.clip(normalized, _CLIP, 1.0 - _CLIP)
            losses = -jnp.sum(targets * jnp.log(normalized), axis=-1)
        return losses, jnp.argmax(outputs, axis=-1) == labels

    def _update(self, weights: dict, slots: dict, grads: dict, iterations):
        """One optimizer step for one model, Keras's formulas."""
        jnp, optimizer = self.jax.numpy, self.spec.optimizer
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
        has_dropout = any(layer.dropout for layer in self.spec.dense)

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
            weights, slots, loss_sum, hits = models_step(weights, slots, seeds, x[index], y[index],
                                                         labels[index], iterations)
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
                carry, (last_loss, last_hits) = run(carry, orders[:, full * batch:], x, y, labels)
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


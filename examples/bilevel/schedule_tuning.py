r"""Learning-rate, momentum and weight-decay schedules for an MLP on digits, tuned through unrolled SGD.

The inner loop is :math:`T` steps of SGD with momentum (minibatch 32, the batch a function
of the step index so every method sees the same sequence):

.. math:: v \leftarrow \mu_t v + \nabla\ell(w) + \kappa_t w, \qquad w \leftarrow w - \eta_t v,

with :math:`\eta_t = e^{a_k}`, :math:`\mu_t = \sigma(b_k)`, :math:`\kappa_t = e^{c_k}` and
:math:`k = \lfloor K t / T \rfloor` (:func:`implicit_jax.shared_schedule`; FDS's sharing).
The outer loss is the validation cross-entropy after :math:`T` steps; its hypergradient
comes from :func:`implicit_jax.unrolled_hypergradient` with ``"reverse"``, ``"fds"`` or
``FG2U``, and Adam updates the :math:`3K` hyperparameters.
"""

from __future__ import annotations

import itertools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from implicit_jax.bilevel import shared_schedule, unrolled_hypergradient

BATCH = 32


class DigitsSplit(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split(seed: int = 0) -> DigitsSplit:
    """sklearn digits: 1,000 train, 397 validation, 400 test (stratified), standardised."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0
    idx = np.arange(len(x))
    train, rest = train_test_split(idx, train_size=1000, random_state=seed, stratify=bunch.target)
    val, test = train_test_split(rest, test_size=400, random_state=seed, stratify=bunch.target[rest])
    mean, std = x[train].mean(0), x[train].std(0) + 0.1
    norm = lambda a: ((a - mean) / std).astype(np.float32)
    y = bunch.target.astype(np.int32)
    return DigitsSplit(norm(x[train]), y[train], norm(x[val]), y[val], norm(x[test]), y[test])


def init_mlp(key: jax.Array, sizes=(64, 32, 10)) -> list:
    params = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), itertools.pairwise(sizes)):
        params.append((jax.random.normal(k, (n_in, n_out)) / np.sqrt(n_in), jnp.zeros(n_out)))
    return params


def mlp(params, x):
    for w, b in params[:-1]:
        x = jnp.tanh(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def cross_entropy(params, x, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(mlp(params, x), y))


def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(mlp(params, x), -1) == y)


def initial_hparams(num_values: int, lr: float = 0.05, momentum: float = 0.5, weight_decay: float = 1e-4) -> dict:
    """Constant schedules: ``log_lr``, ``momentum_logit`` and ``log_wd`` of shape ``(num_values,)``."""
    full = lambda v: jnp.full((num_values,), v, jnp.float32)
    return {
        "log_lr": full(np.log(lr)),
        "momentum_logit": full(np.log(momentum / (1 - momentum))),
        "log_wd": full(np.log(weight_decay)),
    }


def make_problem(split: DigitsSplit, num_steps: int, seed: int = 0):
    """``(step, outer_loss, state0)`` for :func:`implicit_jax.unrolled_hypergradient`."""
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    x_val, y_val = jnp.asarray(split.x_val), jnp.asarray(split.y_val)
    n = x.shape[0] - x.shape[0] % BATCH

    def step(state, h, t):
        params, velocity = state
        start = (t * BATCH) % n
        xb, yb = jax.lax.dynamic_slice_in_dim(x, start, BATCH), jax.lax.dynamic_slice_in_dim(y, start, BATCH)
        lr = jnp.exp(shared_schedule(h["log_lr"], t, num_steps))
        momentum = jax.nn.sigmoid(shared_schedule(h["momentum_logit"], t, num_steps))
        wd = jnp.exp(shared_schedule(h["log_wd"], t, num_steps))
        grads = jax.grad(cross_entropy)(params, xb, yb)
        velocity = jax.tree_util.tree_map(lambda v, g, p: momentum * v + g + wd * p, velocity, grads, params)
        params = jax.tree_util.tree_map(lambda p, v: p - lr * v, params, velocity)
        return params, velocity

    def outer_loss(state, h):
        return cross_entropy(state[0], x_val, y_val)

    params = init_mlp(jax.random.key(seed))
    return step, outer_loss, (params, jax.tree_util.tree_map(jnp.zeros_like, params))


def hypergradient_fn(split: DigitsSplit, num_steps: int, method):
    step, outer_loss, state0 = make_problem(split, num_steps)

    @jax.jit
    def fn(h, key):
        return unrolled_hypergradient(step, h, state0, num_steps, outer_loss, method=method, key=key)

    return fn


def peak_temp_bytes(split: DigitsSplit, num_steps: int, method, num_values: int) -> int:
    """XLA's compiled temporary-buffer size for one hypergradient (the memory that grows with T)."""
    fn = hypergradient_fn(split, num_steps, method)
    compiled = fn.lower(initial_hparams(num_values), jax.random.key(0)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def evaluate(split: DigitsSplit, num_steps: int, h) -> dict:
    """Train with schedule ``h`` for ``num_steps`` and report validation/test loss and accuracy."""
    step, _outer_loss, state0 = make_problem(split, num_steps)

    @jax.jit
    def train(h):
        def body(carry, _):
            s, t = carry
            return (step(s, h, t), t + 1), None

        (state, _), _ = jax.lax.scan(body, (state0, jnp.int32(0)), None, length=num_steps)
        return state[0]

    params = train(h)
    return {
        "val_loss": float(cross_entropy(params, split.x_val, split.y_val)),
        "test_loss": float(cross_entropy(params, split.x_test, split.y_test)),
        "test_accuracy": float(accuracy(params, split.x_test, split.y_test)),
    }


def tune(
    split: DigitsSplit,
    num_steps: int,
    method,
    *,
    num_values: int = 10,
    outer_steps: int = 20,
    learning_rate: float = 0.1,
    seed: int = 0,
) -> dict:
    """Adam on the schedules; returns the outer-loss curve, seconds per hypergradient and the tuned schedule's results."""
    fn = hypergradient_fn(split, num_steps, method)
    h = initial_hparams(num_values)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(h)
    key = jax.random.key(seed)
    jax.block_until_ready(fn(h, key))  # compile
    curve, seconds = [], 0.0
    for _ in range(outer_steps):
        key, sub = jax.random.split(key)
        start = time.perf_counter()
        value, grad = jax.block_until_ready(fn(h, sub))
        seconds += time.perf_counter() - start
        curve.append(float(value))
        updates, opt_state = optimizer.update(grad, opt_state)
        h = optax.apply_updates(h, updates)
    result = {
        "val_loss_curve": curve,
        "seconds_per_hypergradient": seconds / outer_steps,
        "schedule": {k: np.asarray(v).tolist() for k, v in h.items()},
    }
    result.update({f"tuned_{k}": v for k, v in evaluate(split, num_steps, h).items()})
    result.update({f"initial_{k}": v for k, v in evaluate(split, num_steps, initial_hparams(num_values)).items()})
    return result

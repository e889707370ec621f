"""A small SGD-with-momentum training run whose hyperparameters follow schedules."""

import jax
import jax.numpy as jnp
import numpy as np

import implicit_jax as ij

_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.normal(size=(64, 5)))
Y = jnp.asarray(X @ _rng.normal(size=5) + 0.1 * _rng.normal(size=64))
X_VAL = jnp.asarray(_rng.normal(size=(32, 5)))
Y_VAL = jnp.asarray(X_VAL @ _rng.normal(size=5))
BATCH = 16


def train_loss(w, t):
    start = (t * BATCH) % X.shape[0]  # the minibatch is a function of the step index
    xb = jax.lax.dynamic_slice_in_dim(X, start, BATCH).astype(w.dtype)
    yb = jax.lax.dynamic_slice_in_dim(Y, start, BATCH).astype(w.dtype)
    return jnp.mean((xb @ w - yb) ** 2)


def make_step(num_steps):
    def step(state, h, t):
        w, v = state
        lr = jnp.exp(ij.shared_schedule(h["log_lr"], t, num_steps))
        momentum = jax.nn.sigmoid(h["momentum_logit"])
        v = momentum * v + jax.grad(train_loss)(w, t) + h["weight_decay"] * w
        return w - lr * v, v

    return step


def outer_loss(state, h):
    w, _ = state
    return jnp.mean((X_VAL.astype(w.dtype) @ w - Y_VAL.astype(w.dtype)) ** 2) + 1e-3 * h["weight_decay"] ** 2


def hparams(num_values, dtype=jnp.float64):
    return {
        "log_lr": jnp.full((num_values,), -3.0, dtype),
        "momentum_logit": jnp.asarray(0.5, dtype),
        "weight_decay": jnp.asarray(0.01, dtype),
    }


def state0(dtype=jnp.float64):
    return jnp.zeros(5, dtype), jnp.zeros(5, dtype)


def num_hparams(num_values):
    return num_values + 2

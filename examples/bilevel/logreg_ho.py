r"""Hyperparameter optimisation of l2-regularised logistic regression with ``argmin`` hypergradients.

Inner problem (one strength, or one per feature; the bias is not penalised):

.. math:: w^\star(\lambda) = \arg\min_w \frac{1}{n}\sum_i \log(1 + e^{-y_i x_i^\top w}) + \frac12 \sum_j e^{\lambda_j} w_j^2,

outer loss: the held-out log loss of :math:`w^\star(\lambda)`. The outer loop runs Adam on
:math:`\lambda`, warm-starting each inner solve at the previous solution (as in the SHINE
paper's HO experiments), and records held-out loss against wall time for each backward.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from implicit_jax.bilevel import argmin

FASHION_MNIST_CLASSES = (0, 6)  # T-shirt/top vs shirt: the hardest pair to separate


class Split(NamedTuple):
    """Features with a trailing bias column of ones; labels in {-1, +1}."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1] - 1


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((x.shape[0], 1), x.dtype)], axis=1)


def _finish(name, x, y, train_idx, val_idx, test_idx, x_test=None, y_test=None) -> Split:
    mean, std = x[train_idx].mean(0), x[train_idx].std(0) + 1e-6
    norm = lambda a: _with_bias(((a - mean) / std).astype(np.float32))
    y = np.where(y > 0, 1.0, -1.0).astype(np.float32)
    if x_test is None:
        x_test, y_test = x[test_idx], y[test_idx]
    else:
        y_test = np.where(y_test > 0, 1.0, -1.0).astype(np.float32)
    return Split(norm(x[train_idx]), y[train_idx], norm(x[val_idx]), y[val_idx], norm(x_test), y_test, name)


def breast_cancer(seed: int = 0) -> Split:
    """scikit-learn's breast cancer (569 x 30): 50% train, 25% validation, 25% test, stratified."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer()
    idx = np.arange(len(bunch.target))
    train, rest = train_test_split(idx, test_size=0.5, random_state=seed, stratify=bunch.target)
    val, test = train_test_split(rest, test_size=0.5, random_state=seed, stratify=bunch.target[rest])
    return _finish("breast_cancer", bunch.data.astype(np.float64), bunch.target, train, val, test)


def fashion_mnist_pair(
    num_train: int = 2000, num_val: int = 2000, data_dir: str | None = None, classes=FASHION_MNIST_CLASSES
) -> Split:
    """Two Fashion-MNIST classes, 784 pixel features: train/validation from the training set, test from its test set."""
    from implicit_jax.train.data import fashion_mnist

    data = fashion_mnist(data_dir)

    def pick(images, labels):
        keep = np.isin(labels, classes)
        return images[keep].reshape(keep.sum(), -1).astype(np.float64), (labels[keep] == classes[1]).astype(np.int64)

    x, y = pick(data.train_images, data.train_labels)
    x_test, y_test = pick(data.test_images, data.test_labels)
    order = np.random.default_rng(0).permutation(len(y))
    train, val = order[:num_train], order[num_train : num_train + num_val]
    return _finish(f"fashion_mnist_{classes[0]}v{classes[1]}", x, y, train, val, None, x_test, y_test)


def log_loss(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.softplus(-y * (x @ w)))


def inner_objective(split: Split):
    """``g(w, log_lam)``: training log loss plus the l2 penalty (no penalty on the bias)."""
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)

    def g(w, log_lam):
        weights = w[:-1]
        return log_loss(w, x, y) + 0.5 * jnp.sum(jnp.exp(log_lam) * weights**2)

    return g


def outer_objective(split: Split, which: str = "val"):
    x, y = jnp.asarray(getattr(split, f"x_{which}")), jnp.asarray(getattr(split, f"y_{which}"))
    return lambda w: log_loss(w, x, y)


class Trace(NamedTuple):
    """One HO run: per outer step, cumulative seconds (compilation excluded), held-out and test loss."""

    backward: str
    seconds: list
    val_loss: list
    test_loss: list
    log_lam: Any
    inner_steps: list


def make_outer_step(split: Split, backward, *, learning_rate: float, inner_tol: float, inner_max_steps: int, solver="lbfgs"):
    r"""A jitted ``(log_lam, w, opt_state) -> (log_lam, w, opt_state, val_loss, inner_steps)``.

    The inner tolerance is absolute on :math:`\|\nabla_w g\|`: a relative one would tighten as
    warm starts get better.
    """
    g, val = inner_objective(split), outer_objective(split)
    optimizer = optax.adam(learning_rate)

    def hyper_loss(log_lam, w_prev):
        w, info = argmin(
            g,
            log_lam,
            w_prev,
            solver=solver,
            backward=backward,
            tol=inner_tol,
            stop_mode="abs",
            max_steps=inner_max_steps,
            outer_loss=val,
            return_info=True,
        )
        return val(w), (w, info.steps)

    @jax.jit
    def step(log_lam, w_prev, opt_state):
        (loss, (w, steps)), grad = jax.value_and_grad(hyper_loss, has_aux=True)(log_lam, w_prev)
        updates, opt_state = optimizer.update(grad, opt_state)
        return optax.apply_updates(log_lam, updates), w, opt_state, loss, steps

    return step, optimizer


def run_hyperopt(
    split: Split,
    backward,
    *,
    per_feature: bool = False,
    outer_steps: int = 50,
    learning_rate: float = 0.2,
    init_log_lam: float = -2.0,
    inner_tol: float = 1e-5,
    inner_max_steps: int = 300,
    label: str | None = None,
    solver="lbfgs",
) -> Trace:
    """Adam on the log-strengths for ``outer_steps`` steps; compilation is done (and discarded) before timing."""
    step, optimizer = make_outer_step(
        split, backward, learning_rate=learning_rate, inner_tol=inner_tol, inner_max_steps=inner_max_steps, solver=solver
    )
    shape = (split.num_features,) if per_feature else ()
    log_lam = jnp.full(shape, init_log_lam, jnp.float32)
    w = jnp.zeros(split.x_train.shape[1], jnp.float32)
    opt_state = optimizer.init(log_lam)
    jax.block_until_ready(step(log_lam, w, opt_state))  # compile
    test = jax.jit(outer_objective(split, "test"))
    seconds, vals, tests, steps_list, elapsed = [], [], [], [], 0.0
    for _ in range(outer_steps):
        start = time.perf_counter()
        new_log_lam, w, opt_state, loss, steps = jax.block_until_ready(step(log_lam, w, opt_state))
        elapsed += time.perf_counter() - start
        seconds.append(elapsed)
        vals.append(float(loss))  # held-out loss at the current log_lam (before the update)
        tests.append(float(test(w)))
        steps_list.append(int(steps))
        log_lam = new_log_lam
    name = label or (backward if isinstance(backward, str) else repr(backward))
    return Trace(name, seconds, vals, tests, np.asarray(log_lam).tolist(), steps_list)


def sklearn_grid_search(split: Split, log_lams: np.ndarray) -> dict:
    """Held-out log loss of scikit-learn's LogisticRegression over a grid of strengths.

    Our objective :math:`\\frac1n \\sum \\ell + \\frac{e^\\lambda}{2}\\|w\\|^2` is sklearn's
    :math:`C \\sum \\ell + \\frac12 \\|w\\|^2` with :math:`C = 1 / (n e^\\lambda)`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss as sk_log_loss

    n = split.x_train.shape[0]
    losses = []
    for log_lam in log_lams:
        model = LogisticRegression(C=1.0 / (n * np.exp(log_lam)), tol=1e-8, max_iter=5000)
        model.fit(split.x_train[:, :-1], split.y_train)
        losses.append(sk_log_loss(split.y_val, model.predict_proba(split.x_val[:, :-1]), labels=[-1.0, 1.0]))
    best = int(np.argmin(losses))
    return {
        "log_lams": np.asarray(log_lams).tolist(),
        "val_loss": losses,
        "best_log_lam": float(log_lams[best]),
        "best_val_loss": float(losses[best]),
    }


def time_to_tolerance(trace: Trace, target: float) -> float | None:
    """Seconds until the held-out loss first reaches ``target`` (None if it never does)."""
    for seconds, loss in zip(trace.seconds, trace.val_loss):
        if loss <= target:
            return seconds
    return None

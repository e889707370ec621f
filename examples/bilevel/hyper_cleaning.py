r"""Data hyper-cleaning (Franceschi et al., ICML 2017, Sec. 5.1) on Fashion-MNIST.

Half of the training labels are replaced by a different random class. Each training example
gets a weight :math:`\sigma(a_i)`; the inner problem fits a linear softmax classifier to the
weighted training loss,

.. math:: W^\star(a) = \arg\min_W \frac{1}{n}\sum_i \sigma(a_i)\, \ell(W x_i, \tilde y_i) + \frac{\rho}{2}\|W\|^2,

and the outer problem minimises the clean validation loss of :math:`W^\star(a)` over the
:math:`n` weights, with ``argmin`` hypergradients (one mixed VJP gives all :math:`n` at once).
Examples whose weight ends below 1/2 are flagged as corrupted.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from implicit_jax.bilevel import argmin


class CleaningData(NamedTuple):
    x_train: np.ndarray
    y_noisy: np.ndarray
    corrupted: np.ndarray  # bool mask of the flipped labels
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def corrupt_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace ``fraction`` of the labels by a uniformly drawn *different* class."""
    rng = np.random.default_rng(seed)
    corrupted = np.zeros(len(labels), bool)
    corrupted[rng.permutation(len(labels))[: round(fraction * len(labels))]] = True
    shift = rng.integers(1, num_classes, size=len(labels))
    return np.where(corrupted, (labels + shift) % num_classes, labels).astype(np.int32), corrupted


def fashion_mnist_cleaning(
    num_train: int = 5000,
    num_val: int = 5000,
    num_test: int = 10000,
    fraction: float = 0.5,
    seed: int = 0,
    data_dir: str | None = None,
) -> CleaningData:
    from implicit_jax.train.data import fashion_mnist

    data = fashion_mnist(data_dir)
    order = np.random.default_rng(seed).permutation(len(data.train_labels))
    flat = lambda a: a.reshape(a.shape[0], -1)
    train, val = order[:num_train], order[num_train : num_train + num_val]
    y_noisy, corrupted = corrupt_labels(data.train_labels[train], fraction, 10, seed)
    return CleaningData(
        flat(data.train_images[train]),
        y_noisy,
        corrupted,
        flat(data.train_images[val]),
        data.train_labels[val],
        flat(data.test_images[:num_test]),
        data.test_labels[:num_test],
    )


def _logits(w, x):
    return x @ w[:-1] + w[-1]


def inner_objective(data: CleaningData, l2: float):
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_noisy)

    def g(w, a):
        losses = optax.softmax_cross_entropy_with_integer_labels(_logits(w, x), y)
        return jnp.mean(jax.nn.sigmoid(a) * losses) + 0.5 * l2 * jnp.sum(w[:-1] ** 2)

    return g


def mean_loss(w, x, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(_logits(w, jnp.asarray(x)), jnp.asarray(y)))


def test_accuracy(w, data: CleaningData) -> float:
    return float(jnp.mean(jnp.argmax(_logits(w, jnp.asarray(data.x_test)), -1) == jnp.asarray(data.y_test)))


def flagging_scores(a: np.ndarray, corrupted: np.ndarray) -> dict:
    """Precision, recall and F1 of "weight below 1/2" as a detector of corrupted labels."""
    flagged = np.asarray(a) < 0.0
    tp = np.sum(flagged & corrupted)
    precision = tp / max(flagged.sum(), 1)
    recall = tp / max(corrupted.sum(), 1)
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / max(precision + recall, 1e-12)),
        "flagged": int(flagged.sum()),
    }


def run(
    data: CleaningData,
    backward="implicit",
    *,
    outer_steps: int = 60,
    learning_rate: float = 1.0,
    l2: float = 1e-3,
    inner_tol: float = 1e-4,
    inner_max_steps: int = 200,
) -> dict:
    """Adam on the per-example logits ``a`` (from 0: every weight 1/2); returns flagging scores and accuracies."""
    g = inner_objective(data, l2)
    val = lambda w: mean_loss(w, data.x_val, data.y_val)
    num_features = data.x_train.shape[1]
    optimizer = optax.adam(learning_rate)

    def hyper_loss(a, w_prev):
        w = argmin(g, a, w_prev, backward=backward, tol=inner_tol, stop_mode="abs", max_steps=inner_max_steps, outer_loss=val)
        return val(w), w

    @jax.jit
    def step(a, w, opt_state):
        (loss, w), grad = jax.value_and_grad(hyper_loss, has_aux=True)(a, w)
        updates, opt_state = optimizer.update(grad, opt_state)
        return optax.apply_updates(a, updates), w, opt_state, loss

    a = jnp.zeros(len(data.y_noisy), jnp.float32)
    w = jnp.zeros((num_features + 1, 10), jnp.float32)
    opt_state = optimizer.init(a)
    baseline = argmin(g, jnp.full_like(a, 20.0), w, tol=inner_tol, stop_mode="abs", max_steps=inner_max_steps)  # all weights 1
    oracle = argmin(
        g, jnp.where(jnp.asarray(data.corrupted), -20.0, 20.0), w, tol=inner_tol, stop_mode="abs", max_steps=inner_max_steps
    )
    jax.block_until_ready(step(a, w, opt_state))
    curve, start = [], time.perf_counter()
    for _ in range(outer_steps):
        a, w, opt_state, loss = step(a, w, opt_state)
        curve.append(float(loss))
    seconds = time.perf_counter() - start
    w_final = argmin(g, a, w, tol=inner_tol, stop_mode="abs", max_steps=inner_max_steps)
    return {
        "backward": backward if isinstance(backward, str) else repr(backward),
        "val_loss_curve": curve,
        "seconds": seconds,
        **flagging_scores(np.asarray(a), data.corrupted),
        "test_accuracy_cleaned": test_accuracy(w_final, data),
        "test_accuracy_unweighted": test_accuracy(baseline, data),
        "test_accuracy_oracle": test_accuracy(oracle, data),
        "corrupted_fraction": float(data.corrupted.mean()),
    }

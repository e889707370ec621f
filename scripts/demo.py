"""The main job until the Flax training script lands: solve a DEQ layer with every estimator, then train one.

Part 1 solves z = tanh(z W^T + x U^T) (batch 64, d 256, ||W|| = 0.9) with every backward
estimator and prints forward/backward time and the gradient's cosine to the exact one.
Part 2 trains a small DEQ classifier (z = tanh(z W^T + x U^T + b) with W kept at spectral
norm <= 0.9, then a linear head) with Optax on two interleaved spirals (generated, no
download), once per estimator, and prints test accuracy and time per step.

    python scripts/demo.py            # about a minute on 2 CPU cores
    python scripts/demo.py --quick    # smaller, for CI
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import implicit_jax as ij
from implicit_jax.testing import tanh_layer, tree_cosine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for benchmarks/
from benchmarks.timing import median_ms

ESTIMATORS = {
    "implicit": ("anderson", "implicit"),
    "unroll": ("anderson", "unroll"),
    "shine": ("broyden", "shine"),
    "shine (fallback)": ("broyden", ij.Shine(fallback=True)),
    "jfb": ("anderson", "jfb"),
    "phantom_unroll (k=5, l=0.5)": ("anderson", ij.PhantomUnroll(k=5, damping=0.5)),
    "phantom_neumann (k=5, l=0.5)": ("anderson", ij.PhantomNeumann(k=5, damping=0.5)),
}


def estimator_table(batch: int, dim: int) -> None:
    f, params, x, c = tanh_layer(d=dim, batch=batch, norm=0.9, x_scale=0.5, dtype=jnp.float32, orthogonal=True)
    print(f"Part 1: z = tanh(z W^T + x U^T), batch {batch}, d {dim}, ||W|| = 0.9, tol 1e-5 (float32, CPU)")
    print(f"{'backward':<30} {'solver':<10} {'fwd steps':>9} {'fwd ms':>8} {'bwd ms':>8} {'cos to exact':>13}")
    exact = None
    for name, (solver, backward) in ESTIMATORS.items():

        def solve(p, solver=solver, backward=backward):
            return ij.fixed_point(f, p, x, solver=solver, backward=backward, batched=True, return_info=True)

        loss = lambda p: jnp.sum(c * solve(p)[0])
        forward = jax.jit(lambda p: solve(p)[0])
        pullback = jax.jit(lambda vjp: vjp(jnp.ones((), jnp.float32)))
        vjp = jax.jit(lambda p: jax.vjp(loss, p)[1])(params)
        grad = jax.jit(jax.grad(loss))(params)
        exact = grad if exact is None else exact
        steps = int(jax.jit(solve)(params)[1].steps)
        print(
            f"{name:<30} {solver:<10} {steps:>9d} {median_ms(forward, params):8.2f} {median_ms(pullback, vjp):8.2f} {tree_cosine(grad, exact):13.4f}"
        )


def spirals(n: int, seed: int):
    """Two interleaved noisy spirals in 2-D (1.5 turns each), as float32 arrays."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 1, 1.0, -1.0)
    points = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * np.pi)
    points += 0.09 * rng.standard_normal(points.shape)
    return jnp.asarray(points, jnp.float32), jnp.asarray(label)


def init_params(key, hidden: int):
    k = jax.random.split(key, 4)
    return {
        "W": 0.5 * jax.random.normal(k[0], (hidden, hidden)) / np.sqrt(hidden),
        "U": 3.0 * jax.random.normal(k[1], (hidden, 2)),
        "b": jax.random.normal(k[2], (hidden,)),
        "head": jax.random.normal(k[3], (hidden, 2)) / np.sqrt(hidden),
    }


def cell(p, z, x):
    w = p["W"] * jnp.minimum(1.0, 0.9 / jnp.linalg.norm(p["W"], 2))  # keep the map a contraction
    return jnp.tanh(z @ w.T + x @ p["U"].T + p["b"])


def logits(p, x, solver, backward):
    z0 = jnp.zeros((x.shape[0], p["W"].shape[0]), x.dtype)
    z, info = ij.fixed_point(
        cell, p, x, z0=z0, solver=solver, backward=backward, batched=True, tol=1e-4, max_steps=60, return_info=True
    )
    return z @ p["head"], info


def train(name, solver, backward, data, steps, hidden, seed=0):
    (x_train, y_train), (x_test, y_test) = data
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, steps))
    params = init_params(jax.random.PRNGKey(seed), hidden)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        def loss_fn(p):
            out, info = logits(p, x_train, solver, backward)
            return optax.softmax_cross_entropy_with_integer_labels(out, y_train).mean(), info

        (loss, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss, info.steps

    params, state, *_ = step(params, state)  # compile
    start = time.perf_counter()
    history = []
    for i in range(steps - 1):
        params, state, loss, _fwd_steps = step(params, state)
        if i % max(1, steps // 5) == 0:
            history.append(f"{float(loss):.3f}")
    jax.block_until_ready(params)
    per_step = 1e3 * (time.perf_counter() - start) / (steps - 1)
    out, info = jax.jit(lambda p: logits(p, x_test, solver, backward))(params)
    accuracy = float(jnp.mean(jnp.argmax(out, -1) == y_test))
    print(f"{name:<30} {accuracy:9.1%} {per_step:9.2f} {int(info.steps):>9d}   {' -> '.join(history)}")
    return accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (used by the test suite)")
    args = parser.parse_args()
    from implicit_jax.train.cli import exit_if_dry_run  # needs the train extra; here so the rest does not

    exit_if_dry_run(f"{Path(__file__).name} with {vars(args)}")
    batch, dim, steps, hidden, n = (16, 64, 60, 32, 400) if args.quick else (64, 256, 300, 64, 1500)
    print(f"implicit_jax {ij.__version__}, jax {jax.__version__} on {jax.devices()[0].platform}\n")
    estimator_table(batch, dim)
    print(f"\nPart 2: train a DEQ classifier on two spirals ({n} train / {n} test points, hidden {hidden}, {steps} Adam steps)")
    print(f"{'backward':<30} {'test acc':>9} {'ms/step':>9} {'fwd steps':>9}   training loss")
    data = (spirals(n, seed=0), spirals(n, seed=1))
    for name in ["implicit", "shine", "jfb", "phantom_unroll (k=5, l=0.5)"]:
        train(name, *ESTIMATORS[name], data, steps, hidden)


if __name__ == "__main__":
    main()

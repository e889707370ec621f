"""SHINE's direction on the main job's conv DEQ: cosine of the parameter gradient to the exact one, real cotangents.

The model of ``configs/fashion_mnist_deq.py`` (MDEQ-tiny residual cell, 32 channels at 14x14,
weight-normalised kernels) with its initial parameters, or after ``--train_steps`` Adam steps of
the main job's loss (cross-entropy, no Jacobian penalty), on one batch of ``--batch``
Fashion-MNIST training images: the cotangent is the cross-entropy's gradient through the
pooled linear head, the one training uses. For each forward tolerance (relative) and Anderson
memory it reports the cosine to the exact gradient (Anderson forward and implicit adjoint at
1e-6) of SHINE on Anderson (plain, with its per-sample Jacobian-free fallback, and with 2 refine
steps), SHINE on Broyden (plain and with the fallback), JFB and both
phantom gradients (k = 5, damping 0.5), each with that forward tolerance.

    python benchmarks/shine_conv_study.py             # writes benchmarks/results/shine_conv_study.json
    python benchmarks/shine_conv_study.py --batch 8 --tols 1e-2 --memories 5 --train_steps 0
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import implicit_jax as ij
from implicit_jax.nn import ConvDEQ
from implicit_jax.testing import tree_cosine
from implicit_jax.train import data as data_lib


def loss_fn(graphdef, images, labels):
    def loss(state):
        logits = nnx.merge(graphdef, state)(images).logits
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss


def model(solver, backward, tol: float) -> ConvDEQ:
    """The main job's conv DEQ (same initial parameters for every call: seed 0) with this solver and backward."""
    return ConvDEQ(1, 10, channels=32, groups=8, normalization="weight", rngs=nnx.Rngs(0), solver=solver, backward=backward,
                   tol=tol, max_steps=200)  # fmt: skip


def trained_state(images, labels, steps: int):
    """The parameters after ``steps`` Adam steps (lr 2e-3) on the batch, exact gradients: a model past initialisation."""
    graphdef, state = nnx.split(model("anderson", "implicit", 1e-3))
    loss = loss_fn(graphdef, images, labels)
    optimizer = optax.adam(2e-3)
    opt_state = optimizer.init(state)

    @jax.jit
    def step(state, opt_state):
        updates, opt_state = optimizer.update(jax.grad(loss)(state), opt_state, state)
        return optax.apply_updates(state, updates), opt_state

    for _ in range(steps):
        state, opt_state = step(state, opt_state)
    return state


def gradient(solver, backward, tol, state, images, labels):
    graphdef, _ = nnx.split(model(solver, backward, tol))
    return jax.jit(jax.grad(loss_fn(graphdef, images, labels)))(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tols", default="1e-2,1e-4")
    parser.add_argument("--memories", default="5,10")
    parser.add_argument("--train_steps", default="0,50", help="comma-separated: measure at initialisation and after N steps")
    parser.add_argument("--data_dir", default="", help="Fashion-MNIST's IDX files (default: Debian's dataset-fashion-mnist)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "shine_conv_study.json"))
    args = parser.parse_args()
    from implicit_jax.train.cli import exit_if_dry_run

    exit_if_dry_run(f"{Path(__file__).name} with {vars(args)}")
    dataset = data_lib.load("fashion_mnist", data_dir=args.data_dir, train_subset=args.batch, test_subset=10)
    images, labels = jnp.asarray(dataset.train_images), jnp.asarray(dataset.train_labels)
    rows = []
    for steps in [int(s) for s in args.train_steps.split(",")]:
        state = trained_state(images, labels, steps)
        exact = gradient("anderson", ij.Implicit(tol=1e-6, max_steps=500), 1e-6, state, images, labels)
        for tol in [float(t) for t in args.tols.split(",")]:
            methods = {
                "jfb": ("anderson", "jfb"),
                "phantom_unroll k=5": ("anderson", ij.PhantomUnroll(k=5, damping=0.5)),
                "phantom_neumann k=5": ("anderson", ij.PhantomNeumann(k=5, damping=0.5)),
                "shine (broyden)": ("broyden", "shine"),
                "shine (broyden) fallback": ("broyden", ij.Shine(fallback=True)),
            }
            for memory in [int(m) for m in args.memories.split(",")]:
                methods[f"shine (anderson m={memory})"] = (ij.Anderson(memory=memory), "shine")
                methods[f"shine (anderson m={memory}) fallback"] = (ij.Anderson(memory=memory), ij.Shine(fallback=True))
                methods[f"shine (anderson m={memory}) refine=2"] = (ij.Anderson(memory=memory), ij.Shine(refine=2))
            for name, (solver, backward) in methods.items():
                cosine = float(tree_cosine(gradient(solver, backward, tol, state, images, labels), exact))
                rows.append(dict(train_steps=steps, tol=tol, method=name, cosine=cosine))
            print(f"done: {steps} training steps, tol {tol:g}", flush=True)
    print(f"\nconv DEQ of configs/fashion_mnist_deq.py, batch {args.batch} of Fashion-MNIST, cross-entropy cotangent; "
          "cosine to the exact parameter gradient")  # fmt: skip
    print(f"{'trained':>7} {'tol':>6}  {'method':<32} {'cosine':>7}")
    for r in rows:
        print(f"{r['train_steps']:>7} {r['tol']:>6.0e}  {r['method']:<32} {r['cosine']:7.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(batch=args.batch, machine=platform.platform(), rows=rows), indent=1))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()

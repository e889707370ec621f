"""How good is SHINE's direction on the Anderson forward? Cosine to the exact gradient against JFB and phantom.

Layer: the benchmark DEQ layer z = tanh(z W^T + x U^T), ||W||_2 = 0.9 (``tanh_layer``), float32,
``--batch`` samples of width ``--width``. Two cotangents dL/dz*:

* ``random``: a fixed Gaussian ``c`` (the loss sum(c * z*)), as in ``benchmarks/backward.py``;
* ``head``: a classifier's training cotangent, the cross-entropy gradient through a linear head
  with 10 classes, ``(softmax(z H^T) - onehot(y)) H``: it lies in the 10-dimensional row space
  of ``H``, the case the SHINE paper's outer-problem awareness targets.

For each Anderson ``memory`` and forward ``tol`` it reports the cosine of the parameter
gradient (W and U) to the exact one (Anderson forward at 1e-7, implicit adjoint at 1e-7) for
SHINE on Anderson (plain and with 1-3 refine steps), SHINE on Broyden, JFB and
phantom_unroll(k=5, damping=0.5), each with the same forward tolerance.

    python benchmarks/shine_study.py                     # writes benchmarks/results/shine_study.json
    python benchmarks/shine_study.py --width 128 --batch 16 --memories 5 --tols 1e-5
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp

import implicit_jax as ij
from implicit_jax.testing import tanh_layer, tree_cosine

NUM_CLASSES = 10


def cotangent_loss(kind: str, width: int, batch: int, c):
    """``loss(z) -> scalar`` whose gradient is the chosen cotangent."""
    if kind == "random":
        return lambda z: jnp.sum(c * z)
    keys = jax.random.split(jax.random.key(11), 2)
    head = jax.random.normal(keys[0], (NUM_CLASSES, width), jnp.float32) / jnp.sqrt(width)
    labels = jax.random.randint(keys[1], (batch,), 0, NUM_CLASSES)
    return lambda z: jnp.mean(-jax.nn.log_softmax(z @ head.T)[jnp.arange(batch), labels]) * batch


def gradient(f, params, x, loss, solver, backward, tol):
    def objective(p):
        return loss(ij.fixed_point(f, p, x, solver=solver, backward=backward, tol=tol, max_steps=200, batched=True))

    return jax.jit(jax.grad(objective))(params)


def study_setup(parser: argparse.ArgumentParser):
    """Add ``--width``/``--batch``, parse (a dry run stops here), and build the study layer: ``(args, f, params, x, c)``."""
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    from implicit_jax.train.cli import exit_if_dry_run  # needs the train extra; here so the rest does not

    exit_if_dry_run(f"{Path(parser.prog).name} with {vars(args)}")
    return args, *tanh_layer(d=args.width, batch=args.batch, norm=0.9, dtype=jnp.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", default="5,10,20")
    parser.add_argument("--tols", default="1e-3,1e-5")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "shine_study.json"))
    args, f, params, x, c = study_setup(parser)
    rows = []
    for kind in ("random", "head"):
        loss = cotangent_loss(kind, args.width, args.batch, c)
        exact = gradient(f, params, x, loss, "anderson", ij.Implicit(tol=1e-7, max_steps=500), 1e-7)
        for tol in [float(t) for t in args.tols.split(",")]:
            baselines = {
                "jfb": gradient(f, params, x, loss, "anderson", "jfb", tol),
                "phantom_unroll k=5 l=0.5": gradient(f, params, x, loss, "anderson", ij.PhantomUnroll(k=5, damping=0.5), tol),
                "shine (broyden)": gradient(f, params, x, loss, "broyden", "shine", tol),
            }
            for name, grad in baselines.items():
                rows.append(dict(cotangent=kind, tol=tol, memory=None, method=name, cosine=float(tree_cosine(grad, exact))))
            for memory in [int(m) for m in args.memories.split(",")]:
                solver = ij.Anderson(memory=memory)
                for refine in (0, 1, 2, 3):
                    grad = gradient(f, params, x, loss, solver, ij.Shine(refine=refine), tol)
                    rows.append(
                        dict(
                            cotangent=kind,
                            tol=tol,
                            memory=memory,
                            method=f"shine (anderson) refine={refine}",
                            cosine=float(tree_cosine(grad, exact)),
                        )
                    )
            for refine in (1, 2, 3):  # the same adjoint steps started from g instead of the SHINE estimate
                grad = gradient(
                    f, params, x, loss, "anderson", ij.Implicit(solver="anderson", max_steps=refine, fallback=None), tol
                )
                rows.append(
                    dict(
                        cotangent=kind,
                        tol=tol,
                        memory=5,
                        method=f"adjoint from g, {refine} steps",
                        cosine=float(tree_cosine(grad, exact)),
                    )
                )
            print(f"done {kind} tol={tol:g}", flush=True)
    print(f"\nwidth {args.width}, batch {args.batch}, ||W|| = 0.9, float32; cosine to the exact gradient")
    print(f"{'cotangent':<9} {'tol':>6} {'memory':>6}  {'method':<36} {'cosine':>7}")
    for r in rows:
        memory = "" if r["memory"] is None else r["memory"]
        print(f"{r['cotangent']:<9} {r['tol']:>6.0e} {memory:>6}  {r['method']:<36} {r['cosine']:7.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(width=args.width, batch=args.batch, machine=platform.platform(), rows=rows), indent=1))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()

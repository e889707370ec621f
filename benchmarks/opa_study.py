"""Does outer-problem awareness (OPA) make SHINE's fixed-point direction worth its cost? A measurement.

OPA (Ramzi et al., ICLR 2022, Sec. 3.2) adds, every ``every`` forward steps, one extra update
to the forward's inverse-Jacobian estimate :math:`H \\approx (J_f - I)^{-1}` along the
direction the backward will need, :math:`v = \\partial L / \\partial z` at the current iterate
(for the ``head`` cotangent, the cross-entropy gradient through a known linear head and the
labels; for ``random``, the fixed cotangent itself). Two variants on our limited-memory
Broyden (the layer and cotangents of ``benchmarks/shine_study.py``):

* ``secant`` (the paper's, Eq. 7 for BFGS carried to Broyden): :math:`e = H v`, rescaled to the
  last step's length, one extra ``f`` evaluation for :math:`y = g(z + e) - g(z)`
  (:math:`g(z) = f(z) - z`), and a good-Broyden update with the pair :math:`(e, y)`;
* ``adjoint`` (adjoint Broyden, Schlenkrich, Griewank & Walther 2010, the update the SHINE paper
  points to for non-symmetric Jacobians): :math:`\\sigma = H^\\top v`, one VJP for
  :math:`y = J_g^\\top \\sigma`, and the least-change rank-one update with
  :math:`H^\\top y = \\sigma` (:math:`H \\leftarrow H + y (\\sigma - H^\\top y)^\\top / y^\\top y`).

Each OPA update costs one ``f`` evaluation (secant) or one VJP (adjoint) in the forward, the
price of one adjoint step, so the comparison that matters is against SHINE with that many
``refine`` steps and against JFB / phantom_unroll. The table gives the cosine of the parameter
gradient to the exact one, the extra evaluations per sample, and the jitted forward+backward time.
The variants live here, not in the library, until they earn their cost.

    python benchmarks/opa_study.py                      # writes benchmarks/results/opa_study.json
    python benchmarks/opa_study.py --width 128 --batch 16 --everies 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for benchmarks/
import implicit_jax as ij
from benchmarks.shine_study import cotangent_loss, study_setup
from benchmarks.timing import interleaved_ms
from implicit_jax import quasi_newton as qn
from implicit_jax.solvers.fixed_point.broyden import BroydenState
from implicit_jax.testing import tree_cosine

TOL = 1e-5


def adjoint_broyden_update(inverse: qn.LowRankInverse, sigma: jax.Array, y: jax.Array) -> qn.LowRankInverse:
    """:math:`H \\leftarrow H + y (\\sigma - H^\\top y)^\\top / y^\\top y`, so that :math:`H^\\top y = \\sigma` after it."""
    room = qn._make_room(inverse)
    u_new, ok = ij._flat.safe_divide(y, qn._vdot(y, y))
    return qn._accept(inverse, room, u_new, sigma - qn.rmatvec(room, y), ok)


@dataclasses.dataclass(frozen=True)
class OuterAwareBroyden(ij.Broyden):
    """Broyden with an OPA update after every ``every``-th step along ``direction(z)`` (batched)."""

    direction: Callable[[jax.Array], jax.Array] | None = None
    every: int = 1
    variant: str = "secant"

    def step(self, fn, z, fz, state, active):
        z_new, fz_new, state, nfev = super().step(fn, z, fz, state, active)
        due = active & (state.steps % self.every == 0)
        r_new = fz_new - z_new

        def update(inverse):  # one extra f evaluation (secant) or VJP (adjoint), only in steps where a sample is due
            v = self.direction(z_new)
            if self.variant == "secant":
                e = jax.vmap(qn.matvec)(inverse, v)
                step_length = jnp.linalg.norm(z_new - z, axis=1, keepdims=True)
                e = e * step_length / jnp.maximum(jnp.linalg.norm(e, axis=1, keepdims=True), 1e-30)
                y = fn(z_new + e) - (z_new + e) - r_new
                return jax.vmap(qn.good_broyden_update)(inverse, e, y, due)
            sigma = jax.vmap(qn.rmatvec)(inverse, v)
            _, vjp = jax.vjp(fn, z_new)
            y = vjp(sigma)[0] - sigma
            updated = jax.vmap(adjoint_broyden_update)(inverse, sigma, y)
            return jax.tree_util.tree_map(
                lambda a, b: jnp.where(due.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), updated, inverse
            )

        inverse = jax.lax.cond(jnp.any(due), update, lambda inverse: inverse, state.inverse)
        h_residual = jnp.where(due[:, None], jax.vmap(qn.matvec)(inverse, r_new), state.h_residual)
        extra = jnp.any(due).astype(jnp.int32)  # the extra evaluation (or VJP) of this step
        return z_new, fz_new, BroydenState(inverse, state.steps, h_residual), nfev + extra


def value_and_grad_fn(f, x, loss, solver, backward):
    def objective(p):
        return loss(ij.fixed_point(f, p, x, solver=solver, backward=backward, tol=TOL, max_steps=200, batched=True))

    return jax.jit(jax.value_and_grad(objective))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--everies", default="1,3")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "opa_study.json"))
    args, f, params, x, c = study_setup(parser)
    rows = []
    for kind in ("random", "head"):
        loss = cotangent_loss(kind, args.width, args.batch, c)
        direction = jax.grad(loss)  # per sample: the loss is a sum over samples
        exact = value_and_grad_fn(f, x, loss, "anderson", ij.Implicit(tol=1e-7, max_steps=500))(params)[1]
        methods = {
            "jfb (anderson)": ("anderson", "jfb"),
            "phantom_unroll k=5 (anderson)": ("anderson", ij.PhantomUnroll()),
            "shine (anderson)": ("anderson", "shine"),
        }
        methods |= {f"shine (broyden) refine={k}": ("broyden", ij.Shine(refine=k)) for k in (0, 1, 2, 3)}
        for every in [int(e) for e in args.everies.split(",")]:
            for variant in ("secant", "adjoint"):
                solver = OuterAwareBroyden(direction=direction, every=every, variant=variant)
                methods[f"shine (broyden) + OPA {variant} every {every}"] = (solver, "shine")
        fns = {name: value_and_grad_fn(f, x, loss, solver, backward) for name, (solver, backward) in methods.items()}
        steps = {}
        for name, (solver, _) in methods.items():
            _z, info = jax.jit(
                lambda p, solver=solver: ij.fixed_point(
                    f, p, x, solver=solver, tol=TOL, max_steps=200, batched=True, return_info=True
                )
            )(params)
            steps[name] = (float(jnp.mean(info.steps)), float(jnp.mean(info.num_fn_evals)))
        times = interleaved_ms(list(fns.values()), params, rounds=args.rounds)
        for (name, fn), ms in zip(fns.items(), times):
            rows.append(
                dict(
                    cotangent=kind,
                    method=name,
                    cosine=float(tree_cosine(fn(params)[1], exact)),
                    ms=ms,
                    forward_steps=steps[name][0],
                    forward_fn_evals=steps[name][1],
                )
            )
        print(f"done {kind}", flush=True)
    print(
        f"\nwidth {args.width}, batch {args.batch}, ||W|| = 0.9, float32, tol {TOL}; cosine to the exact gradient, "
        f"value_and_grad ms (interleaved medians over {args.rounds} rounds, {platform.machine()})"
    )
    print(f"{'cotangent':<9} {'method':<40} {'cosine':>7} {'ms':>7} {'fwd steps':>9} {'fwd f evals':>11}")
    for r in rows:
        print(
            f"{r['cotangent']:<9} {r['method']:<40} {r['cosine']:7.4f} {r['ms']:7.2f} {r['forward_steps']:9.1f} "
            f"{r['forward_fn_evals']:11.1f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(dict(width=args.width, batch=args.batch, tol=TOL, machine=platform.platform(), rows=rows), indent=1)
    )
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()

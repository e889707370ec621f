"""Bi-level benchmarks: (1) argmin hypergradients on logistic-regression HO, (2) memory and time vs horizon.

(1) For each ``argmin`` backward, on breast cancer (30 features) and two Fashion-MNIST
classes (784 features), one regularisation strength per feature:

* ``hypergrad ms``: one jitted hypergradient at a fixed lambda, with the inner L-BFGS
  started from scratch (inner solve plus backward);
* ``backward ms``: applying the saved pull-back alone (``jax.vjp`` once, then the returned
  function timed): the cost of the hypergradient beyond the inner solve;
* ``time to tol``: seconds of outer Adam steps (compilation excluded) until the held-out
  loss is within 1% of the best held-out loss any method reached, or "never".

jaxopt's LBFGS with ``implicit_diff=True`` (its default CG solve) runs beside ours when
installed (``pip install -e ".[bench]"``).

(2) For the digits MLP schedule-tuning problem (3 schedules x 10 shared values):
XLA's compiled temporary memory of one hypergradient for reverse / FDS / FG2U(8) at
T = 100, 1,000, 10,000, and its median time, skipped when over the memory budget.

    python benchmarks/bilevel.py            # writes benchmarks/results/bilevel.json
    python benchmarks/bilevel.py --quick    # breast cancer only, T up to 1,000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import implicit_jax as ij

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for examples/ and benchmarks/
from benchmarks.timing import median_ms
from examples.bilevel import logreg_ho, schedule_tuning

RESULTS = Path(__file__).parent / "results"


def backwards(neumann_step_size):
    return {
        "implicit (CG)": ij.ArgminImplicit(),
        "shine": ij.ArgminShine(),
        "shine + OPA": ij.ArgminShine(opa_every=5),
        "neumann (k=20)": ij.ArgminNeumann(k=20, step_size=neumann_step_size),
        "jfb": ij.ArgminJFB(),
    }


def hypergradient_timings(split, backward, per_feature, repeats, tol=1e-5):
    g, val = logreg_ho.inner_objective(split), logreg_ho.outer_objective(split)
    log_lam = jnp.full((split.num_features,) if per_feature else (), -4.0, jnp.float32)
    w0 = jnp.zeros(split.x_train.shape[1], jnp.float32)

    def solve(lam):
        return ij.argmin(g, lam, w0, backward=backward, tol=tol, stop_mode="abs", max_steps=300, outer_loss=val)

    outer = lambda lam: val(solve(lam))
    hyper = jax.jit(jax.grad(outer))
    with_pullback = jax.jit(lambda lam: jax.vjp(outer, lam))
    pullback = jax.jit(lambda vjp: vjp(jnp.ones((), jnp.float32)))
    total = median_ms(hyper, log_lam, repeats=repeats)
    backward_only = median_ms(pullback, with_pullback(log_lam)[1], repeats=repeats)
    return total, backward_only


def jaxopt_hypergradient_ms(split, per_feature, repeats, tol=1e-5):
    try:
        import jaxopt
    except ImportError:
        return None
    g, val = logreg_ho.inner_objective(split), logreg_ho.outer_objective(split)
    solver = jaxopt.LBFGS(fun=g, tol=tol, maxiter=300, implicit_diff=True)
    log_lam = jnp.full((split.num_features,) if per_feature else (), -4.0, jnp.float32)
    w0 = jnp.zeros(split.x_train.shape[1], jnp.float32)
    hyper = jax.jit(jax.grad(lambda lam: val(solver.run(w0, lam).params)))
    return median_ms(hyper, log_lam, repeats=repeats)


def ho_table(split, neumann_step_size, outer_steps, repeats):
    rows = []
    traces = {}
    for name, backward in backwards(neumann_step_size).items():
        total, bwd = hypergradient_timings(split, backward, per_feature=True, repeats=repeats)
        traces[name] = logreg_ho.run_hyperopt(split, backward, per_feature=True, outer_steps=outer_steps, label=name)
        rows.append({"backward": name, "hypergrad_ms": total, "backward_ms": bwd})
    best = min(min(t.val_loss) for t in traces.values())
    for row in rows:
        trace = traces[row["backward"]]
        row.update(
            time_to_tol_s=logreg_ho.time_to_tolerance(trace, best * 1.01),
            best_val_loss=min(trace.val_loss),
            final_test_loss=trace.test_loss[-1],
        )
    peer = jaxopt_hypergradient_ms(split, per_feature=True, repeats=repeats)
    if peer is not None:
        rows.append(
            {
                "backward": "jaxopt LBFGS implicit_diff",
                "hypergrad_ms": peer,
                "backward_ms": None,
                "time_to_tol_s": None,
                "best_val_loss": None,
                "final_test_loss": None,
            }
        )
    implicit = rows[0]["hypergrad_ms"]
    for row in rows:
        row["ratio_to_implicit"] = row["hypergrad_ms"] / implicit
    return rows


def memory_table(horizons, budget_mib, repeats, num_values=10):
    split = schedule_tuning.digits_split()
    methods = {"reverse": "reverse", "fds": "fds", "fg2u (b=8)": ij.FG2U(num_directions=8)}
    rows = []
    for horizon in horizons:
        for name, method in methods.items():
            size = schedule_tuning.peak_temp_bytes(split, horizon, method, num_values) / 2**20
            row = {"method": name, "num_steps": horizon, "temp_mib": size, "within_budget": size <= budget_mib, "ms": None}
            if size <= budget_mib:
                fn = schedule_tuning.hypergradient_fn(split, horizon, method)
                row["ms"] = median_ms(
                    fn, schedule_tuning.initial_hparams(num_values), jax.random.key(0), repeats=max(1, repeats // 2)
                )
            rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--outer-steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per median (the memory table uses half)")
    parser.add_argument("--budget-mib", type=float, default=256.0)
    parser.add_argument("--horizons", default=None, help="comma-separated T values (default 100,1000,10000; --quick: 100,1000)")
    parser.add_argument("--out", default=str(RESULTS / "bilevel.json"))
    args = parser.parse_args()
    from implicit_jax.train.cli import exit_if_dry_run  # needs the train extra; here so the rest does not

    exit_if_dry_run(f"{Path(__file__).name} with {vars(args)}")
    datasets = [("breast_cancer", logreg_ho.breast_cancer(), 1.0)]
    if not args.quick:
        datasets.append(("fashion_mnist_0v6", logreg_ho.fashion_mnist_pair(), 0.05))
    result = {"machine": platform.platform(), "devices": [str(d) for d in jax.devices()], "ho": {}, "memory": None}
    for name, split, step_size in datasets:
        rows = ho_table(split, step_size, args.outer_steps, args.repeats)
        result["ho"][name] = rows
        print(f"\nHO, {name} ({split.num_features} features, one strength per feature)")
        print(
            f"{'backward':28s} {'hypergrad ms':>12s} {'ratio':>6s} {'backward ms':>11s} {'time to tol s':>13s} {'best held-out':>13s} {'test loss':>9s}"
        )
        fmt = lambda v, f: "-" if v is None else format(v, f)
        for r in rows:
            print(
                f"{r['backward']:28s} {r['hypergrad_ms']:12.2f} {r['ratio_to_implicit']:6.2f} {fmt(r['backward_ms'], '11.2f')} "
                f"{fmt(r['time_to_tol_s'], '13.2f') if r['best_val_loss'] is not None and r['time_to_tol_s'] is not None else ('never' if r['best_val_loss'] is not None else '-'):>13s} "
                f"{fmt(r['best_val_loss'], '13.4f')} {fmt(r['final_test_loss'], '9.4f')}"
            )
    horizons = [100, 1000] if args.quick else [100, 1000, 10000]
    if args.horizons:
        horizons = [int(t) for t in args.horizons.split(",")]
    rows = memory_table(horizons, args.budget_mib, args.repeats)
    result["memory"] = {"budget_mib": args.budget_mib, "rows": rows}
    print(f"\nHypergradient memory and time vs horizon (digits MLP, 30 hyperparameters, budget {args.budget_mib:.0f} MiB)")
    print(f"{'method':12s} {'T':>6s} {'temp MiB':>9s} {'ms':>10s}")
    for r in rows:
        ms = f"{r['ms']:10.1f}" if r["ms"] is not None else f"{'over budget':>10s}"
        print(f"{r['method']:12s} {r['num_steps']:6d} {r['temp_mib']:9.1f} {ms}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

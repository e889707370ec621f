"""Forward/backward cost and gradient quality of every estimator, against jaxopt and optimistix.

Problem: the DEQ layer z = tanh(z W^T + x U^T), ||W||_2 = 0.9, loss sum(c * z*), float32,
forward tolerance 1e-5 on the relative residual ||f(z) - z|| / ||f(z)||. For each
method it prints forward time (the jitted solve alone), backward time (the jitted
pull-back alone, applied to saved residuals), total time (jitted value_and_grad; each
the fastest of --repeats calls, since a busy machine only adds time; the peer speed-up
is also re-timed with ours and the peer called in turn, as paired medians),
the cosine and relative error of the gradient (w.r.t. W and U) against a float64
reference computed without this library (plain fixed-point loops to 1e-12), the
number of f evaluations and VJPs, and the "floor": those counts times the measured
cost of one f call and one VJP. Peers solve the same problem at the same relative
tolerance (jaxopt's absolute tol is set to 1e-5 * ||z*||; optimistix's rtol = 1e-5).

    python benchmarks/backward.py                       # 64x256, 128x512 and 256x1024
    python benchmarks/backward.py --settings 128x512 --repeats 5 --no-peers

Writes the table as JSON to --out (default benchmarks/results/backward.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import enable_x64

import implicit_jax as ij
from implicit_jax.benchmarking import interleaved_ms, min_ms
from implicit_jax.problems import tanh_layer, tree_cosine, tree_ravel

TOL = 1e-5
MAX_STEPS = 100


@dataclasses.dataclass
class Row:
    setting: str
    method: str
    forward_ms: float
    backward_ms: float
    total_ms: float
    cosine: float
    rel_error: float
    forward_evals: float | None = None
    backward_evals: float | None = None  # f evaluations in the backward pass
    backward_vjps: float | None = None
    floor_ms: float | None = None
    note: str = ""
    total_fn: object = dataclasses.field(default=None, repr=False)  # the jitted value_and_grad, for paired re-timing


def reference_gradient(f, params, x, c):
    """float64 gradient of sum(c * z*) by plain loops: z = f(z) to 1e-12, then u = J^T u + c."""
    params, x, c = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), (params, x, c))

    def loop(step, v0):
        def cond(carry):
            v, v_prev, i = carry
            return (jnp.linalg.norm(v - v_prev) > 1e-12 * jnp.linalg.norm(v)) & (i < 2000)

        return jax.lax.while_loop(cond, lambda carry: (step(carry[0]), carry[0], carry[2] + 1), (step(v0), v0, 0))[0]

    z = loop(lambda z: f(params, z, x), jnp.zeros_like(x))
    _, vjp = jax.vjp(lambda p, z: f(p, z, x), params, z)
    u = loop(lambda u: vjp(u)[1] + c, c)
    return vjp(u)[0], z


def unit_costs(f, params, x, z, repeats, chain=50):
    """Measured ms of one f call, one VJP w.r.t. z, and one VJP w.r.t. (params, z, x).

    Each is timed as ``chain`` dependent calls inside one jitted loop, so Python dispatch
    does not inflate the per-call cost the floors are built from, and the fastest of
    ``repeats`` loops is kept: a busy machine only adds time, so the floor stays a lower
    bound and ``total / floor`` errs on the high side.
    """
    loop = lambda body, init: jax.jit(lambda *a: jax.lax.fori_loop(0, chain, lambda i, carry: body(carry, *a), init))
    _, vjp_z = jax.vjp(lambda z: f(params, z, x), z)
    _, vjp_all = jax.vjp(f, params, z, x)
    t_f = min_ms(loop(lambda z, p, x: f(p, z, x), z), params, x, repeats=repeats)
    t_vjp_z = min_ms(loop(lambda u, vjp: vjp(u)[0], z), vjp_z, repeats=repeats)
    t_vjp = min_ms(loop(lambda carry, vjp: (lambda c: (c[1], jax.tree_util.tree_map(jnp.add, carry[1], c[0])))(vjp(carry[0])), (z, params)), vjp_all, repeats=repeats)
    return t_f / chain, t_vjp_z / chain, t_vjp / chain


def time_method(setting, name, solve, params, x, c, ref, repeats, note=""):
    """solve(params, x) -> z. Forward = the solve alone; backward = applying the saved pull-back alone."""
    loss = lambda p, x: jnp.sum(c * solve(p, x))
    forward = jax.jit(solve)
    with_pullback = jax.jit(lambda p, x: jax.vjp(loss, p, x))
    pullback = jax.jit(lambda vjp: vjp(jnp.ones((), jnp.float32)))
    total = jax.jit(jax.value_and_grad(loss))
    t_fwd = min_ms(forward, params, x, repeats=repeats)
    t_bwd = min_ms(pullback, with_pullback(params, x)[1], repeats=repeats)
    t_tot = min_ms(total, params, x, repeats=repeats)
    grad = total(params, x)[1]
    err = float(jnp.linalg.norm(tree_ravel(grad) - tree_ravel(ref)) / jnp.linalg.norm(tree_ravel(ref)))
    return Row(setting, name, t_fwd, t_bwd, t_tot, tree_cosine(grad, ref), err, note=note, total_fn=total)


OURS = {
    "implicit (fixed-point fwd+adjoint)": ("fixed_point_iteration", ij.Implicit(solver="fixed_point_iteration")),
    "implicit (anderson fwd+adjoint)": ("anderson", ij.Implicit()),
    "implicit (broyden fwd+adjoint)": ("broyden", ij.Implicit(solver="broyden")),
    "implicit (anderson fwd, gmres)": ("anderson", ij.Implicit(solver="gmres")),
    "implicit_jvp (fixed-point fwd, transposed tangent solve)": ("fixed_point_iteration", ij.ImplicitJVP(solver="fixed_point_iteration")),
    "unroll (anderson)": ("anderson", "unroll"),
    "unroll replay (fixed-point)": ("fixed_point_iteration", ij.Unroll(replay=True)),
    "shine (broyden)": ("broyden", "shine"),
    "shine fallback (broyden)": ("broyden", ij.Shine(fallback=True)),
    "shine refine=5 (broyden)": ("broyden", ij.Shine(refine=5)),
    "jfb (anderson)": ("anderson", "jfb"),
    "phantom_unroll k=5 l=0.5": ("anderson", ij.PhantomUnroll(k=5, damping=0.5)),
    "phantom_neumann k=5 l=0.5": ("anderson", ij.PhantomNeumann(k=5, damping=0.5)),
}


def backward_counts(backward, info: ij.BackwardInfo, forward_steps: int):
    """(f evaluations, VJPs) of our backward pass, from its structure and its tap."""
    steps = float(info.steps)
    if isinstance(backward, ij.Implicit) or backward == "implicit":
        if getattr(backward, "solver", None) == "gmres":  # + the true residual after each cycle
            return 1, steps + math.ceil(steps / backward.gmres_restart) + 2
        return 1, steps + 2  # linearise once; adjoint evals = steps + 1; one pull-back VJP
    if isinstance(backward, ij.Unroll) and backward.replay:  # one evaluation + one VJP per step replayed
        return forward_steps, forward_steps
    if backward == "unroll" or isinstance(backward, ij.Unroll):
        return 0, forward_steps
    if isinstance(backward, ij.Shine) or backward == "shine":
        return 1, 1 + (steps + 1 if steps > 0 else 0)
    if isinstance(backward, ij.PhantomUnroll):
        return backward.k, backward.k
    if isinstance(backward, ij.PhantomNeumann):
        return 1, backward.k
    return 1, 1  # jfb


def selected(methods: str | None) -> dict:
    """The entries of OURS whose name contains one of the comma-separated substrings (all if None)."""
    if methods is None:
        return OURS
    chosen = {name: v for name, v in OURS.items() if any(part in name for part in methods.split(","))}
    if not any(name.startswith("implicit") for name in chosen):
        raise SystemExit(f"--methods must select at least one implicit method (the reference of the summary); methods are {list(OURS)}")
    return chosen


def run_ours(setting, f, params, x, c, ref, costs, repeats, methods=None):
    t_f, t_vjp_z, t_vjp = costs
    rows = []
    for name, (solver, backward) in selected(methods).items():
        solve = lambda p, x, solver=solver, backward=backward: ij.fixed_point(f, p, x, solver=solver, backward=backward, tol=TOL, max_steps=MAX_STEPS, batched=True)
        row = time_method(setting, name, solve, params, x, c, ref, repeats)
        _, info = jax.jit(lambda p, x: ij.fixed_point(f, p, x, solver=solver, backward=backward, tol=TOL, max_steps=MAX_STEPS, batched=True, return_info=True))(params, x)
        row.forward_evals = int(info.num_fn_evals)
        evals, vjps = None, None
        if not isinstance(backward, ij.ImplicitJVP):  # its adjoint solve comes from JAX's transposition: no tap
            tap_grad = jax.jit(jax.grad(lambda p, tap: jnp.sum(c * ij.fixed_point(f, p, x, solver=solver, backward=backward, tol=TOL, max_steps=MAX_STEPS, batched=True, backward_tap=tap)), argnums=1))
            evals, vjps = backward_counts(backward, tap_grad(params, ij.backward_tap()), int(info.steps))
        row.note = f"fwd steps {int(info.steps)}, converged {bool(info.converged.all())}"
        if vjps is not None:
            row.backward_evals, row.backward_vjps = evals, vjps
            # the last VJP of each backward is w.r.t. (params, z, x); the adjoint iterations w.r.t. z only
            row.floor_ms = row.forward_evals * t_f + evals * t_f + max(vjps - 1, 0) * t_vjp_z + t_vjp
            if backward == "unroll" or isinstance(backward, ij.Unroll):  # every step's VJP reaches the parameters
                row.floor_ms = row.forward_evals * t_f + evals * t_f + vjps * t_vjp
        rows.append(row)
    return rows


def run_peers(setting, f, params, x, c, ref, z_ref, repeats):
    import jaxopt
    import lineax as lx
    import optimistix as optx

    rows = []
    abs_tol = TOL * float(jnp.linalg.norm(z_ref))  # jaxopt stops on ||f(z) - z|| over the whole batch
    fp = lambda z, p, x: f(p, z, x)
    gmres = functools.partial(jaxopt.linear_solve.solve_gmres, tol=TOL)
    for name, make in {
        "jaxopt FixedPointIteration (normal-CG)": lambda: jaxopt.FixedPointIteration(fp, maxiter=MAX_STEPS, tol=abs_tol),
        "jaxopt FixedPointIteration (GMRES)": lambda: jaxopt.FixedPointIteration(fp, maxiter=MAX_STEPS, tol=abs_tol, implicit_diff_solve=gmres),
        "jaxopt AndersonAcceleration (normal-CG)": lambda: jaxopt.AndersonAcceleration(fp, maxiter=MAX_STEPS, tol=abs_tol),
        "jaxopt AndersonAcceleration (GMRES)": lambda: jaxopt.AndersonAcceleration(fp, maxiter=MAX_STEPS, tol=abs_tol, implicit_diff_solve=gmres),
    }.items():
        solver = make()
        solve = lambda p, x, solver=solver: solver.run(jnp.zeros_like(x), p, x).params
        row = time_method(setting, name, solve, params, x, c, ref, repeats)
        state = jax.jit(lambda p, x, solver=solver: solver.run(jnp.zeros_like(x), p, x).state)(params, x)
        row.forward_evals = int(state.iter_num) + (1 if "Anderson" in name else 0)
        row.note = f"fwd steps {int(state.iter_num)}, error {float(state.error):.1e}"
        rows.append(row)

    adjoint = optx.ImplicitAdjoint(linear_solver=lx.GMRES(rtol=TOL, atol=TOL))
    solver = optx.FixedPointIteration(rtol=TOL, atol=TOL)
    solve = lambda p, x: optx.fixed_point(lambda z, args: f(args[0], z, args[1]), solver, jnp.zeros_like(x), (p, x), max_steps=MAX_STEPS, adjoint=adjoint, throw=False).value
    row = time_method(setting, "optimistix FixedPointIteration (ImplicitAdjoint, GMRES)", solve, params, x, c, ref, repeats)
    sol = jax.jit(lambda p, x: optx.fixed_point(lambda z, args: f(args[0], z, args[1]), solver, jnp.zeros_like(x), (p, x), max_steps=MAX_STEPS, adjoint=adjoint, throw=False))(params, x)
    row.forward_evals = int(sol.stats["num_steps"]) + 1
    row.note = f"fwd steps {int(sol.stats['num_steps'])}, result {sol.result == optx.RESULTS.successful}"
    rows.append(row)
    return rows


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(rows):
    header = f"{'setting':>9} {'method':<56} {'fwd ms':>8} {'bwd ms':>8} {'total':>8} {'floor':>8} {'tot/floor':>9} {'cos':>8} {'rel err':>8} {'f-evals':>7} {'bwd f/vjp':>9}  note"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = None if r.floor_ms is None else r.total_ms / r.floor_ms
        bwd = "-" if r.backward_vjps is None else f"{r.backward_evals:g}/{r.backward_vjps:g}"
        print(
            f"{r.setting:>9} {r.method:<56} {r.forward_ms:8.1f} {r.backward_ms:8.1f} {r.total_ms:8.1f} {fmt(r.floor_ms, '8.1f')} "
            f"{fmt(ratio, '9.2f')} {r.cosine:8.5f} {r.rel_error:8.1e} {fmt(r.forward_evals, '7d')} {bwd:>9}  {r.note}"
        )


def summarize(rows, args_of, rounds):
    """The issue's target ratios, per setting; the peer speed-up is re-timed with ours and the peer interleaved."""
    lines = []
    for setting in dict.fromkeys(r.setting for r in rows):
        rs = {r.method: r for r in rows if r.setting == setting}
        exact = min((r for name, r in rs.items() if name.startswith("implicit")), key=lambda r: r.total_ms)
        peers = [r for r in rs.values() if r.method.startswith(("jaxopt", "optimistix")) and r.rel_error <= max(exact.rel_error, 1e-4)]
        if peers:
            best = min(peers, key=lambda r: r.total_ms)
            ours_ms, peer_ms = interleaved_ms([exact.total_fn, best.total_fn], *args_of[setting], rounds=rounds)
            lines.append(f"{setting}: best peer at rel err <= max(ours, 1e-4): {best.method} {best.total_ms:.1f} ms (rel err {best.rel_error:.1e}); "
                         f"our fastest exact, {exact.method}: {exact.total_ms:.1f} ms (rel err {exact.rel_error:.1e}) -> speed-up {best.total_ms / exact.total_ms:.2f}x; "
                         f"interleaved over {rounds} rounds: {ours_ms:.1f} vs {peer_ms:.1f} ms -> {peer_ms / ours_ms:.2f}x")
        for name, r in rs.items():
            if r.method.startswith(("shine", "jfb", "phantom")):
                lines.append(f"{setting}: backward of {name}: {exact.backward_ms / max(r.backward_ms, 1e-9):.1f}x cheaper than the fastest exact backward ({exact.method}; cos {r.cosine:.3f})")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="64x256,128x512,256x1024", help="comma-separated BATCHxDIM")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--methods", default=None, help="comma-separated substrings: run only our methods whose name contains one (default all)")
    parser.add_argument("--x-scale", type=float, default=1.0, help="input scale: smaller keeps tanh linear and the problem harder")
    parser.add_argument("--gaussian", dest="orthogonal", action="store_false", help="Gaussian W (easy) instead of 0.9 x orthogonal")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "backward.json"))
    args = parser.parse_args()

    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, float32, tol {TOL}")
    rows, args_of = [], {}
    for setting in args.settings.split(","):
        batch, dim = map(int, setting.split("x"))
        with enable_x64():  # only the problem and its float64 reference; everything timed runs in float32
            f, params, x, c = tanh_layer(d=dim, batch=batch, seed=0, norm=0.9, x_scale=args.x_scale, dtype=jnp.float64, orthogonal=args.orthogonal)
            ref, z_ref = jax.tree_util.tree_map(np.asarray, reference_gradient(f, params, x, c))
        params32, x32, c32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), (params, x, c))
        ref = jax.tree_util.tree_map(jnp.asarray, ref)
        z_ref = jnp.asarray(z_ref, jnp.float32)
        args_of[setting] = (params32, x32)
        costs = unit_costs(f, params32, x32, z_ref, args.repeats)
        print(f"\n{setting}: one f call {costs[0]:.3f} ms, one VJP w.r.t. z {costs[1]:.3f} ms, one VJP w.r.t. (params, z, x) {costs[2]:.3f} ms")
        setting_rows = run_ours(setting, f, params32, x32, c32, ref, costs, args.repeats, args.methods)
        if not args.no_peers:
            setting_rows += run_peers(setting, f, params32, x32, c32, ref, z_ref, args.repeats)
        print_table(setting_rows)
        rows += setting_rows
    print()
    summary = summarize(rows, args_of, rounds=3 * args.repeats)
    print("\n".join(summary))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": str(jax.devices()[0]), "jax": jax.__version__},
        "tol": TOL, "rows": [{fld.name: getattr(r, fld.name) for fld in dataclasses.fields(r) if fld.name != "total_fn"} for r in rows], "summary": summary,
    }, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

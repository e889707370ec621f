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

Equal tolerances do not give equal gradients (at 1e-5, jaxopt's normal-CG backward leaves
about 3e-5 relative error, ours 1e-5), so our fastest exact method and the best peer are
then re-run at each of --sweep-tols (forward and backward solves both at that tolerance;
time against gradient error, interleaved), and the speed-up is also given at matched error:
the peer at 1e-5 against our fastest point whose gradient error is no larger than the peer's.

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
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import enable_x64

import implicit_jax as ij
from implicit_jax.testing import tanh_layer, tree_cosine, tree_ravel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for benchmarks/
from benchmarks.timing import interleaved_ms, min_ms

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
    t_vjp = min_ms(
        loop(lambda carry, vjp: (lambda c: (c[1], jax.tree_util.tree_map(jnp.add, carry[1], c[0])))(vjp(carry[0])), (z, params)),
        vjp_all,
        repeats=repeats,
    )
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
    return Row(setting, name, t_fwd, t_bwd, t_tot, tree_cosine(grad, ref), gradient_error(grad, ref), note=note, total_fn=total)


def gradient_error(grad, ref) -> float:
    """Relative error ||grad - ref|| / ||ref|| over all parameter leaves."""
    return float(jnp.linalg.norm(tree_ravel(grad) - tree_ravel(ref)) / jnp.linalg.norm(tree_ravel(ref)))


OURS = {
    "implicit (fixed-point fwd+adjoint)": ("fixed_point_iteration", ij.Implicit(solver="fixed_point_iteration")),
    "implicit (anderson fwd+adjoint)": ("anderson", ij.Implicit()),
    "implicit (broyden fwd+adjoint)": ("broyden", ij.Implicit(solver="broyden")),
    "implicit (anderson fwd, gmres)": ("anderson", ij.Implicit(solver=ij.GMRES(restart=20))),
    "implicit_jvp (fixed-point fwd, transposed tangent solve)": (
        "fixed_point_iteration",
        ij.ImplicitJVP(solver="fixed_point_iteration"),
    ),
    "unroll (anderson)": ("anderson", "unroll"),
    "unroll replay (fixed-point)": ("fixed_point_iteration", ij.Unroll(replay=True)),
    "shine (broyden)": ("broyden", "shine"),
    "shine fallback (broyden)": ("broyden", ij.Shine(fallback=True)),
    "shine refine=5 (broyden)": ("broyden", ij.Shine(refine=5)),
    "shine (anderson)": ("anderson", "shine"),
    "shine refine=2 (anderson)": ("anderson", ij.Shine(refine=2)),
    "jfb (anderson)": ("anderson", "jfb"),
    "phantom_unroll k=5 l=0.5": ("anderson", ij.PhantomUnroll(k=5, damping=0.5)),
    "phantom_neumann k=5 l=0.5": ("anderson", ij.PhantomNeumann(k=5, damping=0.5)),
}


def backward_counts(backward, info: ij.BackwardInfo, forward_steps: int):
    """(f evaluations, VJPs) of our backward pass, from its structure and its tap."""
    steps = float(info.steps)
    if isinstance(backward, ij.Implicit) or backward == "implicit":
        if isinstance(getattr(backward, "solver", None), ij.GMRES):  # + the true residual after each cycle
            return 1, steps + math.ceil(steps / backward.solver.restart) + 2
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
        raise SystemExit(
            f"--methods must select at least one implicit method (the reference of the summary); methods are {list(OURS)}"
        )
    return chosen


def run_ours(setting, f, params, x, c, ref, costs, repeats, methods=None):
    t_f, t_vjp_z, t_vjp = costs
    rows = []
    for name, (solver, backward) in selected(methods).items():
        row = time_method(setting, name, our_solve(f, name, TOL), params, x, c, ref, repeats)
        _, info = jax.jit(
            lambda p, x: ij.fixed_point(
                f, p, x, solver=solver, backward=backward, tol=TOL, max_steps=MAX_STEPS, batched=True, return_info=True
            )
        )(params, x)
        row.forward_evals = int(info.num_fn_evals)
        evals, vjps = None, None
        if not isinstance(backward, ij.ImplicitJVP):  # its adjoint solve comes from JAX's transposition: no tap
            tap_grad = jax.jit(
                jax.grad(
                    lambda p, tap: jnp.sum(
                        c
                        * ij.fixed_point(
                            f,
                            p,
                            x,
                            solver=solver,
                            backward=backward,
                            tol=TOL,
                            max_steps=MAX_STEPS,
                            batched=True,
                            backward_tap=tap,
                        )
                    ),
                    argnums=1,
                )
            )
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


OPTIMISTIX = "optimistix FixedPointIteration (ImplicitAdjoint, GMRES)"


def jaxopt_solvers(f, tol: float, z_norm: float) -> dict:
    """name -> jaxopt solver at relative tolerance ``tol`` (its absolute tol is ``tol * ||z*||``:
    jaxopt stops on ||f(z) - z|| over the whole batch)."""
    import jaxopt

    abs_tol = tol * z_norm
    fp = lambda z, p, x: f(p, z, x)
    # jaxopt's default backward is normal-CG with jax.scipy's default tol 1e-5 (= TOL): passing
    # tol changes nothing at TOL and lets a tolerance sweep tighten both of the peer's solves
    normal_cg = functools.partial(jaxopt.linear_solve.solve_normal_cg, tol=tol)
    gmres = functools.partial(jaxopt.linear_solve.solve_gmres, tol=tol)
    return {
        "jaxopt FixedPointIteration (normal-CG)": jaxopt.FixedPointIteration(
            fp, maxiter=MAX_STEPS, tol=abs_tol, implicit_diff_solve=normal_cg
        ),
        "jaxopt FixedPointIteration (GMRES)": jaxopt.FixedPointIteration(
            fp, maxiter=MAX_STEPS, tol=abs_tol, implicit_diff_solve=gmres
        ),
        "jaxopt AndersonAcceleration (normal-CG)": jaxopt.AndersonAcceleration(
            fp, maxiter=MAX_STEPS, tol=abs_tol, implicit_diff_solve=normal_cg
        ),
        "jaxopt AndersonAcceleration (GMRES)": jaxopt.AndersonAcceleration(
            fp, maxiter=MAX_STEPS, tol=abs_tol, implicit_diff_solve=gmres
        ),
    }


def optimistix_solution(f, tol: float):
    """``(params, x) -> optimistix Solution`` at rtol = atol = ``tol`` (GMRES adjoint at the same tolerance)."""
    import lineax as lx
    import optimistix as optx

    adjoint = optx.ImplicitAdjoint(linear_solver=lx.GMRES(rtol=tol, atol=tol))
    solver = optx.FixedPointIteration(rtol=tol, atol=tol)
    return lambda p, x: optx.fixed_point(
        lambda z, args: f(args[0], z, args[1]),
        solver,
        jnp.zeros_like(x),
        (p, x),
        max_steps=MAX_STEPS,
        adjoint=adjoint,
        throw=False,
    )


def peer_solve(f, name: str, tol: float, z_norm: float):
    """The peer method ``name`` as ``solve(params, x) -> z*`` at relative tolerance ``tol``."""
    if name == OPTIMISTIX:
        solution = optimistix_solution(f, tol)
        return lambda p, x: solution(p, x).value
    solver = jaxopt_solvers(f, tol, z_norm)[name]
    return lambda p, x: solver.run(jnp.zeros_like(x), p, x).params


def our_solve(f, name: str, tol: float):
    """Our method ``name`` (a key of OURS) as ``solve(params, x) -> z*`` at tolerance ``tol``."""
    solver, backward = OURS[name]
    return lambda p, x: ij.fixed_point(f, p, x, solver=solver, backward=backward, tol=tol, max_steps=MAX_STEPS, batched=True)


def run_peers(setting, f, params, x, c, ref, z_ref, repeats):
    import optimistix as optx

    rows = []
    z_norm = float(jnp.linalg.norm(z_ref))
    for name, solver in jaxopt_solvers(f, TOL, z_norm).items():
        row = time_method(setting, name, peer_solve(f, name, TOL, z_norm), params, x, c, ref, repeats)
        state = jax.jit(lambda p, x, solver=solver: solver.run(jnp.zeros_like(x), p, x).state)(params, x)
        row.forward_evals = int(state.iter_num) + (1 if "Anderson" in name else 0)
        row.note = f"fwd steps {int(state.iter_num)}, error {float(state.error):.1e}"
        rows.append(row)

    row = time_method(setting, OPTIMISTIX, peer_solve(f, OPTIMISTIX, TOL, z_norm), params, x, c, ref, repeats)
    sol = jax.jit(optimistix_solution(f, TOL))(params, x)
    row.forward_evals = int(sol.stats["num_steps"]) + 1
    row.note = f"fwd steps {int(sol.stats['num_steps'])}, result {sol.result == optx.RESULTS.successful}"
    rows.append(row)
    return rows


def tolerance_sweep(setting, ours, peer, params, x, c, ref, tols, rounds):
    """Total time (interleaved medians) and gradient error of two methods at each tolerance.

    ``ours`` and ``peer`` are ``(name, solve_at)`` with ``solve_at(tol) -> solve(params, x) -> z*``.
    Returns ``(points, line)``: one dict per (method, tol), and the speed-up at matched error:
    the peer at the benchmark's tolerance ``TOL`` (which ``tols`` must hold) against our fastest
    point whose gradient error is no larger than the peer's.
    """
    specs = [(side, name, tol, solve_at(tol)) for side, (name, solve_at) in (("ours", ours), ("peer", peer)) for tol in tols]
    totals = [jax.jit(jax.value_and_grad(lambda p, x, solve=solve: jnp.sum(c * solve(p, x)))) for *_, solve in specs]
    times = interleaved_ms(totals, params, x, rounds=rounds)
    points = [
        {
            "setting": setting,
            "side": side,
            "method": name,
            "tol": tol,
            "total_ms": ms,
            "rel_error": gradient_error(total(params, x)[1], ref),
        }
        for (side, name, tol, _), total, ms in zip(specs, totals, times)
    ]
    peer_point, best = matched_error(points)
    if best is None:
        return (
            points,
            f"{setting}: no tolerance in {list(tols)} gives our gradient an error <= the peer's {peer_point['rel_error']:.1e}",
        )
    line = (
        f"{setting}: at matched gradient error, {peer[0]} at tol {TOL:g} (rel err {peer_point['rel_error']:.1e}) {peer_point['total_ms']:.1f} ms "
        f"vs {best['method']} at tol {best['tol']:g} (rel err {best['rel_error']:.1e}) {best['total_ms']:.1f} ms -> {peer_point['total_ms'] / best['total_ms']:.2f}x"
    )
    return points, line


def matched_error(points, tol: float = TOL) -> tuple[dict, dict | None]:
    """``(peer point at tol, our fastest point whose gradient error is <= the peer's, or None)``."""
    (peer_point,) = [p for p in points if p["side"] == "peer" and p["tol"] == tol]
    good = [p for p in points if p["side"] == "ours" and p["rel_error"] <= peer_point["rel_error"]]
    return peer_point, min(good, key=lambda p: p["total_ms"]) if good else None


def print_sweep(points):
    """The sweep's points; each peer row also gives our fastest point at no larger gradient error."""
    print(f"{'setting':>9} {'method':<56} {'tol':>7} {'total ms':>9} {'rel err':>8}  matched error")
    for p in points:
        matched = ""
        if p["side"] == "peer":
            _, best = matched_error(points, p["tol"])
            matched = (
                "ours: none as accurate"
                if best is None
                else f"ours at tol {best['tol']:.0e}: {best['total_ms']:.2f} ms -> {p['total_ms'] / best['total_ms']:.2f}x"
            )
        print(f"{p['setting']:>9} {p['method']:<56} {p['tol']:7.0e} {p['total_ms']:9.2f} {p['rel_error']:8.1e}  {matched}")


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


def fastest_exact(rows) -> Row:
    """Our fastest exact method (an ``implicit*`` row) of one setting."""
    return min((r for r in rows if r.method.startswith("implicit")), key=lambda r: r.total_ms)


def best_peer(rows, exact: Row) -> Row | None:
    """The fastest peer row whose gradient error is at most max(ours, 1e-4), if any."""
    peers = [r for r in rows if r.method.startswith(("jaxopt", "optimistix")) and r.rel_error <= max(exact.rel_error, 1e-4)]
    return min(peers, key=lambda r: r.total_ms) if peers else None


def summarize(rows, args_of, rounds):
    """The issue's target ratios, per setting; the peer speed-up is re-timed with ours and the peer interleaved."""
    lines = []
    for setting in dict.fromkeys(r.setting for r in rows):
        rs = {r.method: r for r in rows if r.setting == setting}
        exact = fastest_exact(rs.values())
        best = best_peer(rs.values(), exact)
        if best is not None:
            ours_ms, peer_ms = interleaved_ms([exact.total_fn, best.total_fn], *args_of[setting], rounds=rounds)
            lines.append(
                f"{setting}: best peer at rel err <= max(ours, 1e-4): {best.method} {best.total_ms:.1f} ms (rel err {best.rel_error:.1e}); "
                f"our fastest exact, {exact.method}: {exact.total_ms:.1f} ms (rel err {exact.rel_error:.1e}) -> speed-up {best.total_ms / exact.total_ms:.2f}x; "
                f"interleaved over {rounds} rounds: {ours_ms:.1f} vs {peer_ms:.1f} ms -> {peer_ms / ours_ms:.2f}x"
            )
        for name, r in rs.items():
            if r.method.startswith(("shine", "jfb", "phantom")):
                lines.append(
                    f"{setting}: backward of {name}: {exact.backward_ms / max(r.backward_ms, 1e-9):.1f}x cheaper than the fastest exact backward ({exact.method}; cos {r.cosine:.3f})"
                )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="64x256,128x512,256x1024", help="comma-separated BATCHxDIM")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument(
        "--methods", default=None, help="comma-separated substrings: run only our methods whose name contains one (default all)"
    )
    parser.add_argument(
        "--x-scale", type=float, default=1.0, help="input scale: smaller keeps tanh linear and the problem harder"
    )
    parser.add_argument(
        "--gaussian", dest="orthogonal", action="store_false", help="Gaussian W (easy) instead of 0.9 x orthogonal"
    )
    parser.add_argument(
        "--sweep-tols",
        default="3e-6,1e-5,2e-5,3e-5,1e-4",
        help="tolerances at which our fastest exact method and the best peer are re-run to compare time at matched "
        "gradient error (the benchmark tolerance is always included); empty to skip",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "backward.json"))
    args = parser.parse_args()
    from implicit_jax.train.cli import exit_if_dry_run  # needs the train extra; here so the rest does not

    exit_if_dry_run(f"{Path(__file__).name} with {vars(args)}")
    sweep_tols = sorted({float(t) for t in args.sweep_tols.split(",") if t.strip()} | {TOL}) if args.sweep_tols.strip() else []

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, float32, tol {TOL}"
    )
    rows, args_of, sweep_points, sweep_lines = [], {}, [], []
    for setting in args.settings.split(","):
        batch, dim = map(int, setting.split("x"))
        with enable_x64():  # only the problem and its float64 reference; everything timed runs in float32
            f, params, x, c = tanh_layer(
                d=dim, batch=batch, seed=0, norm=0.9, x_scale=args.x_scale, dtype=jnp.float64, orthogonal=args.orthogonal
            )
            ref, z_ref = jax.tree_util.tree_map(np.asarray, reference_gradient(f, params, x, c))
        params32, x32, c32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), (params, x, c))
        ref = jax.tree_util.tree_map(jnp.asarray, ref)
        z_ref = jnp.asarray(z_ref, jnp.float32)
        args_of[setting] = (params32, x32)
        costs = unit_costs(f, params32, x32, z_ref, args.repeats)
        print(
            f"\n{setting}: one f call {costs[0]:.3f} ms, one VJP w.r.t. z {costs[1]:.3f} ms, one VJP w.r.t. (params, z, x) {costs[2]:.3f} ms"
        )
        setting_rows = run_ours(setting, f, params32, x32, c32, ref, costs, args.repeats, args.methods)
        if not args.no_peers:
            setting_rows += run_peers(setting, f, params32, x32, c32, ref, z_ref, args.repeats)
        print_table(setting_rows)
        rows += setting_rows
        exact = fastest_exact(setting_rows)
        peer = best_peer(setting_rows, exact)
        if sweep_tols and peer is not None:
            z_norm = float(jnp.linalg.norm(z_ref))
            points, line = tolerance_sweep(
                setting,
                (exact.method, lambda tol: our_solve(f, exact.method, tol)),
                (peer.method, lambda tol: peer_solve(f, peer.method, tol, z_norm)),
                params32,
                x32,
                c32,
                ref,
                sweep_tols,
                rounds=3 * args.repeats,
            )
            print(
                f"\n{setting}: time against gradient error (value_and_grad, interleaved medians over {3 * args.repeats} rounds)"
            )
            print_sweep(points)
            sweep_points += points
            sweep_lines.append(line)
    print()
    summary = summarize(rows, args_of, rounds=3 * args.repeats) + sweep_lines
    print("\n".join(summary))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "device": str(jax.devices()[0]),
                    "jax": jax.__version__,
                },
                "tol": TOL,
                "rows": [
                    {fld.name: getattr(r, fld.name) for fld in dataclasses.fields(r) if fld.name != "total_fn"} for r in rows
                ],
                "tolerance_sweep": sweep_points,
                "summary": summary,
            },
            indent=1,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

"""Compile time of one solve plus gradient, per solver x estimator, against jaxopt and optimistix.

Research code recompiles at every new shape, configuration or estimator, so the time from
``jax.jit(jax.value_and_grad(loss))`` to a runnable executable is felt daily. For each
method this prints the tracing/lowering time (Python: building the jaxpr and the HLO) and
the XLA compile time, each the median of --repeats fresh traces (a new function object
each time, so nothing is cached), and their sum as a ratio to optimistix's. It also counts
the fusions in the optimised program: XLA's CPU backend compiles each fusion as a kernel of
its own at a few milliseconds apiece whatever its size, so the count is a deterministic
proxy for compile time (timings move by 10-20% from run to run on a shared machine). Run time is
measured by ``benchmarks/backward.py``; this script measures compilation only.

A second table times the same gradient called *eagerly* (no ``jax.jit`` around it), as in a
notebook: the first call (tracing, compiling and running, after clearing every cache) and a
repeated call with new parameter values. ``fixed_point`` runs an eager call as one compiled
program cached on the map's traced program; optimistix does the same with ``equinox.filter_jit``.

Problems (float32, forward tolerance 1e-5, 100 steps at most; loss ``sum(c * z*)``):

* ``small``: the tanh layer ``z = tanh(W z + U x)`` with 28 units, one sample, unbatched;
* ``deq``: the same layer at 64 samples x 256 units, batched (the benchmark DEQ layer).

    python benchmarks/compile_time.py                  # both problems, with peers
    python benchmarks/compile_time.py --problems small --repeats 1 --no-peers --methods anderson

Writes the table as JSON to --out (default benchmarks/results/compile_time.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

import implicit_jax as ij
from implicit_jax.testing import tanh_layer

TOL = 1e-5
MAX_STEPS = 100
RESULTS = Path(__file__).resolve().parent / "results"
#: (solver, backward) pairs measured; SHINE reads Broyden's inverse estimate.
METHODS = [
    (s, b) for s in ("fixed_point_iteration", "anderson", "broyden") for b in ("implicit", "implicit_jvp", "jfb", "unroll")
]
METHODS.insert(METHODS.index(("broyden", "jfb")), ("broyden", "shine"))
#: label -> (solver, backward object): the default's parts, and optimistix's algorithm (plain iteration, GMRES adjoint).
CONFIGURED = {
    "anderson / Implicit(fallback=None)": ("anderson", ij.Implicit(fallback=None)),
    "fixed_point_iteration / Implicit(fallback=None)": ("fixed_point_iteration", ij.Implicit(fallback=None)),
    "fixed_point_iteration / Implicit(solver=GMRES())": ("fixed_point_iteration", ij.Implicit(solver=ij.GMRES())),
}
OPTIMISTIX = "optimistix FixedPointIteration (ImplicitAdjoint, GMRES)"


@dataclasses.dataclass
class Row:
    problem: str
    method: str
    trace_s: float
    compile_s: float
    total_s: float
    fusions: int
    vs_optimistix: float | None = None


def problem(name: str):
    """``(f(params, z, x), params, x, c, batched)`` of the named problem."""
    d, batch = (28, 1) if name == "small" else (256, 64)
    f, params, x, c = tanh_layer(d=d, batch=batch, dtype=jnp.float32)
    if name == "small":  # one unbatched sample
        return (lambda p, z, x: f(p, z[None], x[None])[0]), params, x[0], c[0], False
    return f, params, x, c, True


def ours(name: str, solver: str, backward) -> Callable[[], Callable]:
    f, _, x, c, batched = problem(name)

    def make():
        def loss(p):
            return jnp.sum(
                c * ij.fixed_point(f, p, x, solver=solver, backward=backward, tol=TOL, max_steps=MAX_STEPS, batched=batched)
            )

        return jax.value_and_grad(loss)

    return make


def optimistix_loss(name: str) -> Callable[[], Callable]:
    import lineax as lx
    import optimistix as optx

    f, _, x, c, _ = problem(name)

    def make():
        adjoint = optx.ImplicitAdjoint(linear_solver=lx.GMRES(rtol=TOL, atol=TOL))

        def loss(p):
            solution = optx.fixed_point(
                lambda z, p: f(p, z, x),
                optx.FixedPointIteration(rtol=TOL, atol=TOL),
                jnp.zeros_like(x),
                p,
                max_steps=MAX_STEPS,
                adjoint=adjoint,
                throw=False,
            )
            return jnp.sum(c * solution.value)

        return jax.value_and_grad(loss)

    return make


def jaxopt_loss(name: str, anderson: bool) -> Callable[[], Callable]:
    import jaxopt

    f, _, x, c, _ = problem(name)

    def make():
        kind = jaxopt.AndersonAcceleration if anderson else jaxopt.FixedPointIteration
        solver = kind(lambda z, p: f(p, z, x), maxiter=MAX_STEPS, tol=TOL, implicit_diff=True)

        def loss(p):
            return jnp.sum(c * solver.run(jnp.zeros_like(x), p).params)

        return jax.value_and_grad(loss)

    return make


def count_fusions(compiled) -> int:
    """Fusion instructions in a compiled program's optimised HLO, in every computation (loop bodies included)."""
    return len(re.findall(r"= \S+ fusion\(", compiled.as_text()))


def compile_seconds(make: Callable[[], Callable], params, repeats: int) -> tuple[float, float, int]:
    """Median ``(trace + lower, XLA compile)`` seconds over ``repeats`` fresh functions, and the fusions; each executable is run once."""
    traces, compiles = [], []
    for _ in range(repeats):
        fn = jax.jit(make())
        start = time.perf_counter()
        lowered = fn.lower(params)
        middle = time.perf_counter()
        compiled = lowered.compile()
        end = time.perf_counter()
        jax.block_until_ready(compiled(params))
        traces.append(middle - start)
        compiles.append(end - middle)
    return statistics.median(traces), statistics.median(compiles), count_fusions(compiled)


@dataclasses.dataclass
class EagerRow:
    problem: str
    method: str
    first_call_s: float
    repeat_call_s: float
    vs_optimistix: float | None = None


def eager_seconds(make: Callable[[], Callable], params, repeats: int) -> tuple[float, float]:
    """Median ``(first call, repeated call)`` seconds of the un-jitted gradient, every cache cleared before each first call."""
    from implicit_jax import _compiled

    firsts, repeated = [], []
    other = jax.tree_util.tree_map(lambda a: 1.01 * a, params)
    for _ in range(repeats):
        _compiled._cache.clear()
        jax.clear_caches()
        fn = make()
        start = time.perf_counter()
        jax.block_until_ready(fn(params))
        middle = time.perf_counter()
        jax.block_until_ready(fn(other))
        firsts.append(middle - start)
        repeated.append(time.perf_counter() - middle)
    return statistics.median(firsts), statistics.median(repeated)


def methods_of(name: str, peers: bool, only: list[str] | None) -> list[tuple[str, Callable[[], Callable]]]:
    """``(label, make)`` of every method measured on problem ``name``, restricted to the labels containing one of ``only``."""
    methods = [(f"{s} / {b}", ours(name, s, b)) for s, b in METHODS]
    methods += [(label, ours(name, s, b)) for label, (s, b) in CONFIGURED.items()]
    if peers:
        methods += [
            (OPTIMISTIX, optimistix_loss(name)),
            ("jaxopt FixedPointIteration (implicit, normal-CG)", jaxopt_loss(name, False)),
            ("jaxopt AndersonAcceleration (implicit, normal-CG)", jaxopt_loss(name, True)),
        ]
    if only:
        methods = [(m, make) for m, make in methods if any(key in m for key in only)]
    return methods


def eager_table(names: list[str], repeats: int, peers: bool, only: list[str] | None = None) -> list[EagerRow]:
    rows = []
    for name in names:
        params = problem(name)[1]
        for method, make in methods_of(name, peers, only):
            first, repeat = eager_seconds(make, params, repeats)
            rows.append(EagerRow(name, method, first, repeat))
            print(f"{name:6s} {method:52s} eager: first call {first:6.2f} s  repeated call {repeat:7.3f} s", flush=True)
        reference = next((r.first_call_s for r in rows if r.problem == name and r.method == OPTIMISTIX), None)
        for r in rows:
            if r.problem == name and reference:
                r.vs_optimistix = r.first_call_s / reference
    return rows


def table(names: list[str], repeats: int, peers: bool, only: list[str] | None = None) -> list[Row]:
    rows = []
    for name in names:
        params = problem(name)[1]
        compile_seconds(ours(name, "fixed_point_iteration", "jfb"), params, 1)  # warm up JAX's own caches
        for method, make in methods_of(name, peers, only):
            trace, compile_, fusions = compile_seconds(make, params, repeats)
            rows.append(Row(name, method, trace, compile_, trace + compile_, fusions))
            print(
                f"{name:6s} {method:52s} trace {trace:6.2f} s  compile {compile_:6.2f} s  total {trace + compile_:6.2f} s  fusions {fusions:4d}",
                flush=True,
            )
        reference = next((r.total_s for r in rows if r.problem == name and r.method == OPTIMISTIX), None)
        for r in rows:
            if r.problem == name and reference:
                r.vs_optimistix = r.total_s / reference
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default="small,deq", help="comma-separated: small, deq")
    parser.add_argument("--repeats", type=int, default=3, help="fresh traces per method (median)")
    parser.add_argument("--no-peers", action="store_true", help="skip jaxopt and optimistix")
    parser.add_argument("--methods", default="", help="comma-separated substrings; keep only the methods containing one")
    parser.add_argument("--out", default=str(RESULTS / "compile_time.json"))
    args = parser.parse_args()
    from implicit_jax.train.cli import exit_if_dry_run  # needs the train extra; here so the rest does not

    exit_if_dry_run(f"{Path(__file__).name} with {vars(args)}")
    names = [n for n in args.problems.split(",") if n]
    unknown = sorted(set(names) - {"small", "deq"})
    if unknown:
        parser.error(f"unknown --problems {unknown}; valid: small, deq")
    only = [m for m in args.methods.split(",") if m]
    rows = table(names, args.repeats, not args.no_peers, only)
    eager = eager_table(names, args.repeats, not args.no_peers, only)
    print(
        f"\n{'problem':7s} {'method':52s} {'trace s':>8s} {'compile s':>10s} {'total s':>8s} {'fusions':>8s} {'/ optimistix':>13s}"
    )
    for r in rows:
        ratio = f"{r.vs_optimistix:13.2f}" if r.vs_optimistix else f"{'-':>13s}"
        print(f"{r.problem:7s} {r.method:52s} {r.trace_s:8.2f} {r.compile_s:10.2f} {r.total_s:8.2f} {r.fusions:8d} {ratio}")
    print(f"\n{'problem':7s} {'method (eager: no jit)':52s} {'first call s':>13s} {'repeat s':>9s} {'/ optimistix':>13s}")
    for r in eager:
        ratio = f"{r.vs_optimistix:13.2f}" if r.vs_optimistix else f"{'-':>13s}"
        print(f"{r.problem:7s} {r.method:52s} {r.first_call_s:13.2f} {r.repeat_call_s:9.3f} {ratio}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"jax": jax.__version__, "backend": jax.default_backend(), "machine": platform.machine(), "repeats": args.repeats}
    out.write_text(
        json.dumps(
            {"meta": meta, "rows": [dataclasses.asdict(r) for r in rows], "eager": [dataclasses.asdict(r) for r in eager]},
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

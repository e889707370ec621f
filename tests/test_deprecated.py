"""Old import paths keep working for one release, each with a DeprecationWarning naming the new path."""

import json
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import pytest

import implicit_jax as ij
from implicit_jax._deprecated import MOVED_MODULES

OLD_NAMES = {
    "implicit_jax.solvers.base": ["StopCriterion", "SolverInfo", "iterate", "AbstractFixedPointSolver"],
    "implicit_jax.solvers.anderson": ["Anderson"],
    "implicit_jax.solvers.broyden": ["Broyden"],
    "implicit_jax.solvers.fixed_point_iteration": ["FixedPointIteration"],
    "implicit_jax.solvers.cg": ["conjugate_gradient", "CGInfo"],
    "implicit_jax.solvers.gmres": ["gmres"],
    "implicit_jax.solvers.lbfgs": ["LBFGS"],
    "implicit_jax.solvers.linesearch": ["wolfe_line_search"],
    "implicit_jax.solvers.minimize": ["minimize", "MinimizeInfo", "OuterAwareness"],
    "implicit_jax.solvers.optax_minimizer": ["OptaxMinimizer"],
    "implicit_jax.bilevel.argmin_base": ["ArgminProblem", "AbstractArgminBackward", "BackwardInfo"],
    "implicit_jax.bilevel.argmin_backwards": ["ArgminImplicit", "ArgminShine", "ARGMIN_BACKWARDS"],
    "implicit_jax.bilevel.unrolled_base": ["UnrolledProblem", "AbstractUnrolledMethod"],
    "implicit_jax.bilevel.fds": ["FDS", "shared_schedule"],
    "implicit_jax.bilevel.fg2u": ["FG2U"],
    "implicit_jax.problems": ["tanh_layer", "linear_problem", "tree_cosine"],
}


def test_every_moved_module_is_covered():
    assert set(OLD_NAMES) == set(MOVED_MODULES)


def test_old_module_paths_import_with_a_warning_naming_the_new_path():
    # a fresh interpreter, so that each first import (the one that warns) happens there
    code = textwrap.dedent(f"""
        import importlib, json, warnings
        import implicit_jax
        report = {{}}
        for old, names in {OLD_NAMES!r}.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                module = importlib.import_module(old)
            report[old] = [[str(w.message) for w in caught if w.category is DeprecationWarning],
                           [n for n in names if getattr(module, n, None) is None]]
        print(json.dumps(report))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for old, (messages, missing) in report.items():
        assert not missing, (old, missing)
        assert len(messages) == 1 and "moved to" in messages[0] and MOVED_MODULES[old][0] in messages[0], (old, messages)


def test_importing_the_old_gmres_module_keeps_the_function_callable():
    import implicit_jax.solvers.gmres

    import implicit_jax.solvers

    b = jnp.ones((2, 3))
    x, info = implicit_jax.solvers.gmres(lambda v: 2.0 * v, b, jnp.zeros_like(b), ij.solvers.StopCriterion(tol=1e-8))
    assert bool(jnp.all(info.converged)) and jnp.allclose(x, 0.5)


def test_moved_names_of_surviving_modules_warn():
    from implicit_jax.bilevel import unrolled
    from implicit_jax.estimators import base

    with pytest.warns(DeprecationWarning, match="implicit_jax.adjoint.backward_tap"):
        assert base.backward_tap is ij.backward_tap
    with pytest.warns(DeprecationWarning, match="unrolled_methods"):
        assert unrolled.Truncated is ij.Truncated
    with pytest.raises(AttributeError):
        base.not_a_name


def test_gmres_restart_option_warns_and_becomes_a_configured_gmres():
    with pytest.warns(DeprecationWarning, match="GMRES"):
        old = ij.Implicit(solver="gmres", gmres_restart=7)
    assert old == ij.Implicit(solver=ij.GMRES(restart=7))
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="GMRES solver only"):
        ij.Implicit(solver="anderson", gmres_restart=7)


@pytest.mark.slow
def test_old_custom_fixed_point_signature_still_gives_its_rules_gradient():
    from implicit_jax import _flat
    from implicit_jax.estimators import FixedPointProblem, custom_fixed_point
    from implicit_jax.solvers import Anderson, StopCriterion
    from implicit_jax.testing import linear_closed_form, linear_problem

    def rule(config, ctx, g):  # Jacobian-free backprop, written against the old interface
        _, pull = ctx.linearize()
        return pull(g), ij.backward_tap(g.dtype)

    with pytest.warns(DeprecationWarning, match="custom_root"):
        solve = custom_fixed_point(rule, "old_jfb")
    f, params, x, c = linear_problem()
    layout = _flat.layout_of(x, False)
    problem = FixedPointProblem(f, layout)

    def loss(p):
        z, _ = solve(
            None,
            problem,
            Anderson(),
            StopCriterion(tol=1e-12, max_steps=100),
            False,
            p,
            x,
            _flat.flatten(layout, jnp.zeros_like(x)),
            None,
        )
        return jnp.sum(c * _flat.unflatten(layout, z))

    _, expected, _ = linear_closed_form(params, x, c, c)  # u = g = c
    chex.assert_trees_all_close(jax.grad(loss)(params), expected, rtol=1e-8)

"""Names with options -> configured solvers and estimators (implicit_jax/_registry.py)."""

import pytest

import implicit_jax as ij
from implicit_jax._registry import parse_spec, parse_value
from implicit_jax.bilevel.argmin import resolve_argmin_backward, resolve_minimizer
from implicit_jax.bilevel.unrolled import resolve_method
from implicit_jax.estimators import resolve_backward
from implicit_jax.solvers import resolve_linear_solver, resolve_solver


def test_a_name_with_options_builds_the_configured_object():
    assert resolve_backward("phantom_unroll", {"k": 3, "damping": 0.8}) == ij.PhantomUnroll(k=3, damping=0.8)
    assert resolve_backward("shine", {"refine": 2, "fallback": True}) == ij.Shine(refine=2, fallback=True)
    assert resolve_solver("anderson", options={"memory": 10, "mixing": 1}) == ij.Anderson(memory=10, mixing=1.0)
    assert resolve_solver("broyden", options={"update": "bad"}) == ij.Broyden(update="bad")
    assert resolve_linear_solver("gmres", options={"restart": 7}) == ij.GMRES(restart=7)
    assert resolve_argmin_backward("neumann", {"k": 10, "step_size": 0.5}) == ij.ArgminNeumann(k=10, step_size=0.5)
    assert resolve_method("fg2u", {"num_directions": 4}) == ij.FG2U(num_directions=4)
    assert resolve_minimizer("lbfgs", {"memory": 20}) == ij.LBFGS(memory=20)
    assert resolve_backward("jfb") == ij.JFB()  # no options: the default configuration


def test_an_int_is_a_float_and_solver_options_take_names():
    assert isinstance(resolve_solver("anderson", options={"mixing": 1}).mixing, float)
    implicit = resolve_backward("implicit", {"solver": "gmres", "fallback": None, "tol": 1e-6})
    assert implicit.solver == ij.GMRES() and implicit.fallback is None and implicit.tol == 1e-6
    assert resolve_backward("implicit", {"fallback": "cg"}).fallback == ij.CG()
    assert resolve_backward("implicit", {"solver": "broyden"}).solver == ij.Broyden()


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "phantom_unroll",
            {"kk": 3},
            "backward 'phantom_unroll' has no option 'kk'. Options of 'phantom_unroll' (with defaults): k=5, damping=0.5.",
        ),
        ("phantom_unroll", {"k": 2.5}, "k=2.5 has the wrong type (expected int)"),
        ("phantom_unroll", {"k": True}, "k=True has the wrong type (expected int)"),
        ("phantom_unroll", {"k": 0}, "PhantomUnroll(k=...) must be an integer >= 1, got 0. Options"),
        ("shine", {"fallback": "yes"}, "fallback='yes' has the wrong type (expected bool)"),
        (
            "implicit",
            {"fallback": "nope"},
            "fallback='nope' has the wrong type (expected AbstractLinearSolver (or its name) or None)",
        ),
        ("implicit", {"solver": "nope"}, "unknown Implicit(solver='nope')"),
    ],
)
def test_bad_options_name_the_option_and_list_the_valid_ones(name, options, message):
    with pytest.raises(ValueError) as error:
        resolve_backward(name, options)
    assert message in str(error.value)


def test_every_problem_is_reported_and_literals_list_their_values():
    with pytest.raises(ValueError) as error:
        resolve_backward("phantom_neumann", {"k": "3", "dampin": 0.5})
    assert "k='3' has the wrong type" in str(error.value) and "has no option 'dampin'" in str(error.value)
    with pytest.raises(ValueError, match=r"update='ugly' has the wrong type \(expected value in \['good', 'bad'\]\)"):
        resolve_solver("broyden", options={"update": "ugly"})


def test_options_apply_to_names_only():
    with pytest.raises(ValueError, match="apply to a name only"):
        resolve_backward(ij.PhantomUnroll(), {"k": 3})
    with pytest.raises(ValueError, match="unknown backward 'phantom'"):
        resolve_backward("phantom", {"k": 3})


def test_parse_spec_reads_names_options_and_literals():
    assert parse_spec("phantom_unroll:k=3:damping=0.8") == ("phantom_unroll", {"k": 3, "damping": 0.8})
    assert parse_spec(" implicit:solver=gmres:fallback=None ") == ("implicit", {"solver": "gmres", "fallback": None})
    assert parse_spec("shine:fallback=True") == ("shine", {"fallback": True})
    assert parse_spec("jfb") == ("jfb", {})
    assert parse_value("1e-3") == 1e-3 and parse_value("cg") == "cg"
    with pytest.raises(ValueError, match="expected NAME:OPTION=VALUE"):
        parse_spec("phantom_unroll:k")

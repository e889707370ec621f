import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import implicit_jax as ij
from implicit_jax.bilevel import ARGMIN_BACKWARDS
from tests.bilevel import ridge

LAM = jnp.asarray(-1.0, jnp.float64)
W0 = jnp.zeros(ridge.D, jnp.float64)


def hypergrad(backward, lam=LAM, **kwargs):
    kwargs.setdefault("tol", 1e-10)
    return jax.grad(lambda l: ridge.outer(ij.argmin(ridge.inner, l, W0, backward=backward, outer_loss=ridge.outer, **kwargs)))(
        lam
    )


def test_solution_matches_closed_form():
    w, info = ij.argmin(ridge.inner, LAM, W0, tol=1e-12, return_info=True)
    chex.assert_trees_all_close(w, ridge.solution(LAM), atol=1e-10)
    assert bool(info.converged) and int(info.steps) > 0


@pytest.mark.slow
@pytest.mark.parametrize("backward", ["implicit", "unroll"])
@pytest.mark.parametrize("lam", [LAM, jnp.linspace(-2.0, 0.0, ridge.D)], ids=["scalar", "per_feature"])
def test_exact_backwards_match_closed_form(backward, lam):
    chex.assert_trees_all_close(hypergrad(backward, lam, max_steps=200), ridge.exact_hypergradient(lam), rtol=1e-6, atol=1e-12)


@pytest.mark.slow
def test_optax_inner_solver_with_unroll_and_implicit():
    kwargs = dict(solver=optax.sgd(0.3, momentum=0.8), max_steps=400, tol=1e-10)
    for backward in ("implicit", "unroll"):
        chex.assert_trees_all_close(hypergrad(backward, **kwargs), ridge.exact_hypergradient(LAM), rtol=1e-5)


@pytest.mark.slow
def test_pytrees_closures_and_jit():
    def loss(h, scale):
        def inner(w, h):  # tuple w, dict hparams, closes over the traced `scale`
            a, b = w
            return ridge.inner(jnp.concatenate([a, b]) * scale / 2.0, h["log_lam"]) + 0.0 * jnp.sum(h["unused"])

        a, b = ij.argmin(inner, h, (W0[:3], W0[3:]), tol=1e-10)
        return ridge.outer(jnp.concatenate([a, b]))

    h = {"log_lam": LAM, "unused": jnp.zeros(2, jnp.float64)}
    grads = jax.jit(jax.grad(loss))(h, jnp.asarray(2.0, jnp.float64))
    chex.assert_trees_all_close(grads["log_lam"], ridge.exact_hypergradient(LAM), rtol=1e-6)
    chex.assert_trees_all_close(grads["unused"], jnp.zeros(2))
    g_scale = jax.grad(loss, argnums=1)(h, jnp.asarray(2.0, jnp.float64))  # gradient reaches the closed-over value
    eps = 1e-6
    fd = (loss(h, jnp.asarray(2.0 + eps)) - loss(h, jnp.asarray(2.0 - eps))) / (2 * eps)
    np.testing.assert_allclose(g_scale, fd, rtol=1e-5)


@pytest.mark.slow
def test_float32():
    lam = jnp.asarray(-1.0, jnp.float32)
    g = jax.grad(
        lambda l: ridge.outer(
            ij.argmin(lambda w, l: ridge.inner(w, l).astype(jnp.float32), l, jnp.zeros(ridge.D, jnp.float32), tol=1e-5)
        )
    )(lam)
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, ridge.exact_hypergradient(LAM), rtol=1e-3)


def test_backward_tap_reports_cg():
    def loss(l, tap):
        return ridge.outer(ij.argmin(ridge.inner, l, W0, tol=1e-10, backward_tap=tap))

    _, info = jax.grad(loss, argnums=(0, 1))(LAM, ij.backward_tap(jnp.float64))
    assert 1 <= float(info.steps) <= ridge.D + 5 and float(info.converged) == 1.0 and float(info.rel_residual) <= 1e-10


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"argmin backward 'cg'.*'implicit'.*'shine'"):
        ij.argmin(ridge.inner, LAM, W0, backward="cg")
    with pytest.raises(ValueError, match=r"argmin solver 'bfgs'.*'lbfgs'"):
        ij.argmin(ridge.inner, LAM, W0, solver="bfgs")


def test_bad_inputs_fail_with_clear_errors():
    with pytest.raises(TypeError, match="hparams.*floating point"):
        ij.argmin(ridge.inner, jnp.asarray(1), W0)
    with pytest.raises(ValueError, match="float scalar"):
        ij.argmin(lambda w, l: w * l, LAM, W0)
    with pytest.raises(TypeError, match=r"g\(w, hparams\) failed.*hparams = \{'a'"):
        ij.argmin(lambda w, h: ridge.inner(w, h["log_lam"]), {"a": LAM}, W0)  # wrong structure
    with pytest.raises(ValueError, match="outer_loss"):
        ij.argmin(ridge.inner, LAM, W0, backward=ij.ArgminShine(opa_every=5))
    with pytest.raises(TypeError, match="complex w0.*real and imaginary parts"):
        ij.argmin(lambda w, h: jnp.sum(jnp.abs(w) ** 2) * h, LAM, W0.astype(jnp.complex64))


def test_mixed_stop_mode_adds_an_absolute_floor_to_the_relative_test():
    # rel: ||grad|| <= tol ||grad(w0)||; mixed adds atol, so a huge atol stops at once.
    _, info = ij.argmin(ridge.inner, LAM, W0, stop_mode="mixed", tol=0.0, atol=1e6, return_info=True)
    assert bool(info.converged) and int(info.steps) == 0
    w, info = ij.argmin(ridge.inner, LAM, W0, stop_mode="mixed", tol=1e-6, atol=1e-9, return_info=True)
    assert bool(info.converged)
    np.testing.assert_allclose(w, ridge.solution(LAM), rtol=1e-4)


@pytest.mark.slow
def test_non_convergence_is_reported_and_can_raise():
    _w, info = ij.argmin(ridge.inner, LAM, W0, max_steps=2, tol=1e-12, return_info=True)
    assert not bool(info.converged) and int(info.steps) == 2
    with pytest.raises(ij.NonConvergenceError, match="did not converge after 2 steps"):
        ij.argmin(ridge.inner, LAM, W0, max_steps=2, tol=1e-12, throw=True)
    with pytest.raises(Exception, match="did not converge"):
        jax.block_until_ready(jax.jit(lambda l: ij.argmin(ridge.inner, l, W0, max_steps=2, tol=1e-12, throw=True))(LAM))


def test_nan_inner_problem_is_not_converged_and_hypergradient_raises_under_throw():
    def bad(w, l):
        return ridge.inner(w, l) + jnp.sum(jnp.sqrt(w - 10.0))  # NaN everywhere near w0

    _, info = ij.argmin(bad, LAM, W0, return_info=True)
    assert not bool(info.converged)
    with pytest.raises(ij.NonConvergenceError):
        ij.argmin(bad, LAM, W0, throw=True)


@pytest.mark.slow
@pytest.mark.parametrize("backward", ["implicit", "shine", "unroll"])
def test_vmap_over_hyperparameters_equals_a_loop_and_the_closed_form(backward):
    # one jitted, vmapped while_loop solves every problem; finished ones are held while the others run
    lams = jnp.array([-2.0, -1.0, 0.0], jnp.float64)
    batched = jax.jit(jax.vmap(lambda l: hypergrad(backward, l, max_steps=200)))(lams)
    looped = jnp.stack([hypergrad(backward, l, max_steps=200) for l in lams])
    # SHINE reads the L-BFGS path, which batched matmuls can perturb at rounding level
    chex.assert_trees_all_close(batched, looped, rtol=1e-6 if backward == "shine" else 1e-10, atol=1e-12)
    if backward != "shine":  # SHINE is an estimate (its accuracy is tested in argmin_estimators/test_shine.py)
        exact = jnp.stack([ridge.exact_hypergradient(l) for l in lams])
        chex.assert_trees_all_close(batched, exact, rtol=1e-6, atol=1e-10)


# The conformance test over every argmin estimator: pytrees, jit, the tap, and agreement
# with the closed form to the estimator's own accuracy (cosine to the exact hypergradient on
# one strength per feature; measured: implicit, unroll 1.0, shine 0.9987, neumann 0.9996, jfb 0.9905).
MIN_COSINE = {"implicit": 0.99999, "unroll": 0.99999, "shine": 0.99, "neumann": 0.99, "jfb": 0.95}


@pytest.mark.slow
@pytest.mark.parametrize("backward", sorted(ARGMIN_BACKWARDS))
def test_every_backward_on_pytrees_under_jit_with_its_tap(backward):
    assert set(MIN_COSINE) == set(ARGMIN_BACKWARDS)
    lam = jnp.linspace(-2.0, 0.0, ridge.D)

    def loss(h, tap):
        a, b = ij.argmin(
            lambda w, h: ridge.inner(jnp.concatenate(w), h["log_lam"]),
            h,
            (W0[:2], W0[2:]),
            tol=1e-10,
            max_steps=200,
            backward=backward,
            backward_tap=tap,
        )
        return ridge.outer(jnp.concatenate([a, b]))

    tap = None if backward == "unroll" else ij.backward_tap(jnp.float64)
    grads, info = jax.jit(jax.grad(loss, argnums=(0, 1)))({"log_lam": lam}, tap)
    chex.assert_tree_all_finite(grads)
    exact = ridge.exact_hypergradient(lam)
    cosine = float(grads["log_lam"] @ exact / (jnp.linalg.norm(grads["log_lam"]) * jnp.linalg.norm(exact)))
    assert cosine >= MIN_COSINE[backward], cosine
    if tap is not None:
        assert isinstance(info, ij.BackwardInfo) and float(info.steps) >= 0
        assert float(info.converged) == 1.0 if backward == "implicit" else np.isnan(float(info.converged))
    estimator = ARGMIN_BACKWARDS[backward]()
    assert hash(estimator) == hash(ARGMIN_BACKWARDS[backward]()) and estimator.name == backward


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", [optax.lbfgs(), optax.adam(0.05), optax.sgd(0.3)], ids=["lbfgs", "adam", "sgd"])
def test_any_optax_optimizer_as_the_inner_solver_gives_the_exact_hypergradient(optimizer):
    exact = ridge.exact_hypergradient(LAM)
    chex.assert_trees_all_close(hypergrad("implicit", solver=optimizer, max_steps=3000, tol=1e-9), exact, rtol=1e-6)


def test_shine_with_optax_lbfgs_reads_its_own_secant_pairs():
    # SHINE's inverse Hessian comes from the pairs OptaxMinimizer records (optax's L-BFGS state is
    # not read); with L-BFGS steps they are good curvature pairs, so SHINE is close to exact.
    exact = ridge.exact_hypergradient(LAM)
    shine = hypergrad("shine", solver=optax.lbfgs(), tol=1e-9)
    assert abs(float(shine - exact)) < 0.05 * abs(float(exact))


def test_hparams_with_non_array_leaves_equinox_style():
    eqx = pytest.importorskip("equinox")

    class Ridge(eqx.Module):
        log_lam: jax.Array
        penalty: object  # a function: a non-array leaf

    hparams = Ridge(LAM, lambda w: jnp.sum(w**2))
    g = lambda w, h: (
        ridge.inner(w, h.log_lam) - 0.5 * jnp.exp(h.log_lam) * jnp.sum(w**2) + 0.5 * jnp.exp(h.log_lam) * h.penalty(w)
    )
    grads = eqx.filter_grad(lambda h: ridge.outer(ij.argmin(g, h, W0, tol=1e-10)))(hparams)
    chex.assert_trees_all_close(grads.log_lam, ridge.exact_hypergradient(LAM), rtol=1e-6)
    with pytest.raises(TypeError, match="w0 must hold only arrays"):
        ij.argmin(ridge.inner, LAM, (W0, jnp.tanh))


TARGET = jnp.ones(3)


def test_an_objective_reading_a_rebound_global_is_solved_with_its_current_value():
    # JAX caches a trace per function object; argmin traces an alias, so the new global is read.
    global TARGET

    def g(w, lam):
        return jnp.sum((w - TARGET) ** 2) + lam * jnp.sum(w**2)

    old = TARGET
    try:
        first = ij.argmin(g, 1.0, jnp.zeros(3))
        TARGET = 2 * jnp.ones(3)
        second = ij.argmin(g, 1.0, jnp.zeros(3))
        op_by_op = ij.argmin(g, 1.0, jnp.zeros(3), throw=True)  # the path that does not compile the solve as a whole
    finally:
        TARGET = old
    np.testing.assert_allclose(first, 0.5, rtol=1e-4)  # w = target / (1 + lam)
    np.testing.assert_allclose(second, 1.0, rtol=1e-4)
    np.testing.assert_allclose(op_by_op, 1.0, rtol=1e-4)


def test_an_eager_hypergradient_reuses_its_compiled_program_and_matches_the_op_by_op_one(monkeypatch):
    import importlib

    from implicit_jax import _compiled

    argmin_module = importlib.import_module("implicit_jax.bilevel.argmin")

    traces = []  # every solve, with or without outer loss, is traced through _solve_flat_with_outer
    original = argmin_module._solve_flat_with_outer
    monkeypatch.setattr(argmin_module, "_solve_flat_with_outer", lambda *a: traces.append(a[1] is not None) or original(*a))
    _compiled._cache.clear()
    shine = ij.ArgminShine(opa_every=5)  # two maps: the objective and the outer loss
    grads = [hypergrad(backward, lam=lam) for backward in ("implicit", shine) for lam in (LAM, 2 * LAM)]
    assert len(_compiled._cache) == 2 and traces == [False, True]  # one trace each, two calls each
    for i, backward in enumerate(("implicit", shine)):
        chex.assert_trees_all_close(grads[2 * i], hypergrad(backward, throw=True), rtol=1e-8)


def test_a_hypergradient_inside_jit_with_a_closed_over_integer_index():
    # the pattern of examples/bilevel/hyper_cleaning.py: per-example weights, labels gathered by index
    x = jnp.asarray(np.random.default_rng(0).standard_normal((20, 3)), jnp.float32)
    labels = jnp.asarray(np.arange(20) % 3, jnp.int32)

    def g(w, a):
        return jnp.mean(jax.nn.sigmoid(a) * ((x @ w)[jnp.arange(20), labels] - 1.0) ** 2) + 1e-3 * jnp.sum(w**2)

    def hypergradient(a):
        return jax.grad(lambda a: jnp.sum(ij.argmin(g, a, jnp.zeros((3, 3)), tol=1e-8)))(a)

    chex.assert_trees_all_close(jax.jit(hypergradient)(jnp.zeros(20)), hypergradient(jnp.zeros(20)), rtol=1e-4, atol=1e-7)

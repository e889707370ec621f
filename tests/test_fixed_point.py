"""The public entry point: pytrees, transformations, dtypes and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax.testing import linear_problem, tanh_layer, tree_cosine

ALL_BACKWARDS = sorted(ij.BACKWARDS)


def solver_for(backward):
    return "broyden" if backward == "shine" else "anderson"


def pytree_problem(dtype=jnp.float32):
    """Dict params and a tuple state (a, b) coupled through both halves."""
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"A": 0.4 * jax.random.normal(k[0], (4, 4), dtype) / 2, "B": {"w": 0.3 * jax.random.normal(k[1], (3, 4), dtype) / 2}}
    x = jax.random.normal(k[2], (4,), dtype)

    def f(p, z, x):
        a, b = z
        return jnp.tanh(p["A"] @ a + x + 0.1 * jnp.sum(b)), jnp.tanh(p["B"]["w"] @ a)

    z0 = (jnp.zeros(4, dtype), jnp.zeros(3, dtype))
    return f, params, x, z0


@pytest.mark.slow
@pytest.mark.parametrize("backward", ALL_BACKWARDS)
def test_pytree_params_and_tuple_state_with_every_backward(backward):
    f, params, x, z0 = pytree_problem()
    loss = lambda p, x: sum(
        jnp.sum(leaf**2) for leaf in ij.fixed_point(f, p, x, z0=z0, solver=solver_for(backward), backward=backward, tol=1e-6)
    )
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    chex.assert_trees_all_equal_structs(grads, (params, x))
    chex.assert_tree_all_finite(grads)
    exact = jax.grad(
        lambda p, x: sum(jnp.sum(leaf**2) for leaf in ij.fixed_point(f, p, x, z0=z0, backward="unroll", tol=1e-7, max_steps=100)),
        argnums=(0, 1),
    )(params, x)
    assert tree_cosine(grads, exact) > 0.9


@pytest.mark.slow
def test_implicit_matches_unroll_on_pytrees_in_float64():
    f, params, x, z0 = pytree_problem(jnp.float64)
    grad = lambda bw: jax.grad(
        lambda p, x: sum(jnp.sum(leaf**2) for leaf in ij.fixed_point(f, p, x, z0=z0, backward=bw, tol=1e-13, max_steps=200)),
        argnums=(0, 1),
    )(params, x)
    chex.assert_trees_all_close(grad("implicit"), grad("unroll"), atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("backward", ALL_BACKWARDS)
def test_vmap_over_samples_equals_the_batched_solve(backward):
    # float64. SHINE reads Broyden's last updates, whose steps near convergence are ~1e-10 and
    # rounding-dominated, so batched and per-sample matmuls differ there (seen: 6e-6 relative
    # in float64, 1e-3 in float32 at tol 1e-6); the other estimators agree to 1e-7.
    f, params, x, c = tanh_layer(d=8, batch=3, dtype=jnp.float64)
    kwargs = dict(solver=solver_for(backward), backward=backward, tol=1e-10)
    batched = lambda p: jnp.sum(c * ij.fixed_point(f, p, x, batched=True, **kwargs))
    per_sample = lambda p: jnp.sum(
        c * jax.vmap(lambda xi: ij.fixed_point(lambda p, z, x: f(p, z[None], x[None])[0], p, xi, **kwargs))(x)
    )
    rtol = 1e-4 if backward == "shine" else 1e-7
    chex.assert_trees_all_close(jax.grad(batched)(params), jax.jit(jax.grad(per_sample))(params), rtol=rtol, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("backward", ALL_BACKWARDS + [ij.Unroll(replay=True)], ids=str)
def test_padded_sample_and_integer_leaves_leave_the_gradient_finite_and_unchanged(backward):
    # A masked (zero-padded) sample starts at its fixed point z = 0, where the residual norm's
    # derivative is 0/0, and integer or boolean leaves of params and x get float0 cotangents.
    # Neither may spoil the gradient (replay unrolling is the sensitive case: NaN for every
    # parameter on the first, an error on the second). The padded sample adds nothing to
    # the parameter gradient, so it must equal that of the other samples alone.
    f, params, x, c = tanh_layer(d=6, batch=3, dtype=jnp.float64)
    gated = lambda p, z, inputs: f(p, z, inputs["x"] * (inputs["keep"][:, None] > 0)) * p["on"]
    params = dict(params, on=jnp.array(True))

    def grads(inputs, c):
        z0 = jnp.zeros_like(inputs["x"])
        loss = lambda p, inputs: jnp.sum(
            c
            * ij.fixed_point(
                gated, p, inputs, z0=z0, solver=solver_for(backward), backward=backward, tol=1e-10, max_steps=100, batched=True
            )
        )
        return jax.jit(jax.grad(loss, argnums=(0, 1), allow_int=True))(params, inputs)

    d_params, d_inputs = grads({"x": x, "keep": jnp.array([1, 1, 0])}, c)
    alone, _ = grads({"x": x[:2], "keep": jnp.array([1, 1])}, c[:2])
    assert d_params["on"].dtype == jax.dtypes.float0 and d_inputs["keep"].dtype == jax.dtypes.float0
    chex.assert_tree_all_finite(d_inputs["x"])
    np.testing.assert_array_equal(d_inputs["x"][2], 0.0)
    rtol = 1e-4 if backward == "shine" else 1e-9  # SHINE: rounding in Broyden's last updates, see above
    chex.assert_trees_all_close({k: d_params[k] for k in ("W", "U")}, {k: alone[k] for k in ("W", "U")}, rtol=rtol, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtypes_are_preserved_and_info_is_reported(dtype):
    f, params, x, c = tanh_layer(d=8, batch=2, dtype=dtype)
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    z, info = jax.jit(lambda p, x: ij.fixed_point(f, p, x, batched=True, tol=tol, return_info=True))(params, x)
    assert z.dtype == dtype
    grads = jax.grad(lambda p: jnp.sum(c * ij.fixed_point(f, p, x, batched=True, tol=tol)))(params)
    assert all(g.dtype == dtype for g in jax.tree_util.tree_leaves(grads))
    assert info.converged.shape == (2,) and bool(info.converged.all())
    assert int(info.num_fn_evals) == int(info.steps) + 1
    np.testing.assert_array_less(np.asarray(info.rel_residual), tol)


@pytest.mark.slow
def test_unbatched_info_is_scalar_and_gradients_reach_x_and_closed_over_values():
    f, params, x, c = linear_problem()
    scale = jnp.asarray(0.5)

    def loss(p, x, scale):
        z, info = ij.fixed_point(lambda p, z, x: scale * f(p, z, x), p, x, tol=1e-12, return_info=True)
        assert info.converged.shape == ()
        return jnp.sum(c * z)

    grads = jax.grad(loss, argnums=(0, 1, 2))(params, x, scale)
    fd = (loss(params, x, scale + 1e-6) - loss(params, x, scale - 1e-6)) / 2e-6
    np.testing.assert_allclose(grads[2], fd, rtol=1e-6)
    assert np.linalg.norm(grads[1]) > 0


@pytest.mark.slow
def test_configured_objects_are_hashable_static_arguments():
    f, params, x, c = tanh_layer(d=8, batch=2, dtype=jnp.float32)

    @jax.jit
    def run(p):
        return jax.grad(
            lambda p: jnp.sum(
                c * ij.fixed_point(f, p, x, solver=ij.Broyden(memory=10), backward=ij.Shine(fallback=True), batched=True)
            )
        )(p)

    chex.assert_tree_all_finite(run(params))
    assert hash(ij.PhantomUnroll(k=5, damping=0.5)) == hash(ij.PhantomUnroll(k=5, damping=0.5))
    assert ij.Implicit(solver="gmres") == ij.Implicit(solver="gmres")
    jax.jit(lambda p, bw: ij.fixed_point(f, p, x, backward=bw, batched=True), static_argnums=1)(params, ij.PhantomNeumann(k=3))


# ---------------------------------------------------------------- bad input


def test_unknown_names_list_the_valid_choices():
    f, params, x, _ = linear_problem()
    with pytest.raises(
        ValueError, match=r"unknown solver 'newton'; valid names are \['anderson', 'broyden', 'fixed_point_iteration'\]"
    ):
        ij.fixed_point(f, params, x, solver="newton")
    with pytest.raises(
        ValueError,
        match=r"unknown backward 'exact'; valid names are \['implicit', 'implicit_jvp', 'jfb', 'phantom_neumann', 'phantom_unroll', 'shine', 'unroll'\]",
    ):
        ij.fixed_point(f, params, x, backward="exact")
    with pytest.raises(ValueError, match="stop_mode must be one of"):
        ij.fixed_point(f, params, x, stop_mode="max")


def test_shape_change_fails_at_trace_time_naming_both_shapes():
    f = lambda p, z, x: jnp.concatenate([z, x])
    with pytest.raises(ValueError, match=r"leaf 0 of z has shape \(3,\), but it returned shape \(6,\)"):
        jax.jit(lambda x: ij.fixed_point(f, None, x)).lower(jnp.ones(3))


def test_dtype_change_fails_at_trace_time():
    f = lambda p, z, x: (z + x).astype(jnp.float64)
    with pytest.raises(TypeError, match="leaf 0 of z has dtype float32, but it returned dtype float64"):
        ij.fixed_point(f, None, jnp.ones(3, jnp.float32))


def test_structure_change_and_integer_state_fail_clearly():
    with pytest.raises(ValueError, match="same pytree structure"):
        ij.fixed_point(lambda p, z, x: (z, z), None, jnp.ones(3))
    with pytest.raises(TypeError, match="floating-point"):
        ij.fixed_point(lambda p, z, x: z, None, jnp.ones(3, jnp.int32))


def test_complex_states_are_refused_with_the_real_view_as_the_way_out():
    b = jnp.array([1.0, 1.0j], jnp.complex64)
    with pytest.raises(TypeError, match="complex states are not supported.*real and imaginary parts"):
        ij.fixed_point(lambda p, z, x: 0.5 * z + p, b, (), z0=jnp.zeros(2, jnp.complex64))

    def real_view(p, z, x):  # the same map on (re, im)
        out = 0.5 * (z[0] + 1j * z[1]) + (p[0] + 1j * p[1])
        return out.real, out.imag

    re, im = ij.fixed_point(real_view, (b.real, b.imag), (), z0=(jnp.zeros(2), jnp.zeros(2)), tol=1e-7)
    np.testing.assert_allclose(re + 1j * im, 2 * b, atol=1e-5)


def test_missing_initial_state_is_asked_for():
    with pytest.raises(ValueError, match="pass z0"):
        ij.fixed_point(lambda p, z, x: z, None, None)
    z = ij.fixed_point(lambda p, z, x: 0.5 * z + 1.0, None, None, z0=jnp.zeros(2))
    np.testing.assert_allclose(z, 2.0, rtol=1e-4)


def test_nan_map_is_never_converged():
    f = lambda p, z, x: z * jnp.nan + x
    _z, info = jax.jit(lambda x: ij.fixed_point(f, None, x, return_info=True))(jnp.ones(3))
    assert not bool(info.converged)
    assert not np.isfinite(float(info.abs_residual))


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_throw_raises_on_non_convergence(jit):
    f, params, x, _ = tanh_layer(d=8, batch=2, dtype=jnp.float32)
    solve = lambda x: ij.fixed_point(f, params, x, batched=True, max_steps=2, tol=1e-7, throw=True)
    solve = jax.jit(solve) if jit else solve
    with pytest.raises(Exception, match=r"fixed_point did not converge: 2 of 2 sample\(s\) unconverged after 2 steps"):
        jax.block_until_ready(solve(x))
    # and nothing is raised when it converges
    jax.block_until_ready(ij.fixed_point(f, params, x, batched=True, tol=1e-4, throw=True))


# Models as params: an Equinox MLP (its activation function is a pytree leaf), an NNX module,
# a Linen apply. Exact estimators match autodiff through the iterations; the others run.
def _equinox_problem(dtype):
    eqx = pytest.importorskip("equinox")
    mlp = eqx.nn.MLP(in_size=4, out_size=4, width_size=8, depth=1, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    mlp = jax.tree_util.tree_map(lambda a: (0.3 * a).astype(dtype) if eqx.is_array(a) else a, mlp)
    return eqx, mlp, (lambda m, z, x: 0.5 * m(z) + x), jnp.linspace(-1.0, 1.0, 4, dtype=dtype)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["anderson", "broyden", "fixed_point_iteration"])
def test_equinox_module_as_params_exact_gradients(solver):
    eqx, mlp, cell, x = _equinox_problem(jnp.float64)

    def loss(m, backward):
        return jnp.sum(ij.fixed_point(cell, m, x, solver=solver, backward=backward, tol=1e-12, max_steps=300) ** 2)

    reference = eqx.filter_grad(lambda m: loss(m, "unroll"))(mlp)
    for backward in ("implicit", "implicit_jvp"):
        grads = eqx.filter_jit(eqx.filter_grad(lambda m: loss(m, backward)))(mlp)
        chex.assert_trees_all_close(eqx.filter(grads, eqx.is_array), eqx.filter(reference, eqx.is_array), atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("backward", ["shine", "jfb", "phantom_unroll", "phantom_neumann"])
def test_equinox_module_as_params_with_every_other_estimator(backward):
    eqx, mlp, cell, x = _equinox_problem(jnp.float32)
    solver = "broyden" if backward == "shine" else "anderson"
    grads = eqx.filter_grad(lambda m: jnp.sum(ij.fixed_point(cell, m, x, solver=solver, backward=backward) ** 2))(mlp)
    assert grads.activation is None  # eqx.filter_grad's convention for non-array leaves
    assert jax.tree_util.tree_structure(eqx.filter(grads, eqx.is_array)) == jax.tree_util.tree_structure(
        eqx.filter(mlp, eqx.is_array)
    )
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array)))


@pytest.mark.slow
def test_nnx_module_and_linen_apply_as_params():
    from flax import linen, nnx

    x = jnp.linspace(-1.0, 1.0, 4, dtype=jnp.float32)
    layer = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
    nnx_cell = lambda m, z, x: jnp.tanh(0.3 * m(z)) + x
    grads = nnx.grad(lambda m: jnp.sum(ij.fixed_point(nnx_cell, m, x, tol=1e-6) ** 2))(layer)
    reference = nnx.grad(lambda m: jnp.sum(ij.fixed_point(nnx_cell, m, x, tol=1e-6, backward="unroll", max_steps=100) ** 2))(
        layer
    )
    chex.assert_trees_all_close(grads, reference, atol=1e-4)

    dense = linen.Dense(4)
    variables = dense.init(jax.random.PRNGKey(0), x)
    linen_cell = lambda v, z, x: jnp.tanh(0.3 * dense.apply(v, z)) + x
    grads = jax.grad(lambda v: jnp.sum(ij.fixed_point(linen_cell, v, x, tol=1e-6) ** 2))(variables)
    reference = jax.grad(lambda v: jnp.sum(ij.fixed_point(linen_cell, v, x, tol=1e-6, backward="unroll", max_steps=100) ** 2))(
        variables
    )
    chex.assert_trees_all_close(grads, reference, atol=1e-4)


def test_a_state_with_non_array_leaves_is_refused():
    with pytest.raises(TypeError, match="z0 must hold only arrays.*function"):
        ij.fixed_point(lambda p, z, x: z, (), (), z0=(jnp.ones(2), jnp.tanh))
    with pytest.raises(ValueError, match="pass z0"):
        ij.fixed_point(lambda p, z, x: z, (), {"a": jnp.ones(2), "act": jnp.tanh})

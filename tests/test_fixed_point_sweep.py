"""A tolerance × dtype sweep of ``fixed_point`` over small reference problems, every solver × exact estimator.

The contract (never a wrong answer marked converged): with ``throw=True`` each run either
raises :class:`implicit_jax.NonConvergenceError` (forward or adjoint unconverged), or returns
a solution and a gradient within what the tolerance allows of the float64 reference. The
reference is Newton's method on :math:`b \\mapsto z^\\star(b)` with dense Jacobians, and
:math:`\\partial z^\\star/\\partial b = (I - \\partial_z f)^{-1} \\partial_b f`. Only the runs listed in
``EXPECTED_FAILURES`` may raise (so the test cannot pass by raising everywhere).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import implicit_jax as ij
from implicit_jax.testing import contraction

H = np.array([[5.0, 0.3, 0.1], [0.3, 5.5, 0.2], [0.1, 0.2, 6.0]])
ROTATION = 0.95 * np.array([[0.0, -1.0], [1.0, 0.0]])
W_LINEAR = np.asarray(contraction(jax.random.PRNGKey(0), 4, 0.5))
W_TANH = np.asarray(contraction(jax.random.PRNGKey(1), 6, 0.9))

#: name -> (f(b, z), b, z0 shape); every map is written for any float dtype.
PROBLEMS = {
    "linear": (lambda b, z: jnp.asarray(W_LINEAR, z.dtype) @ z + b, np.array([1.0, -2.0, 0.5, 3.0]), (4,)),
    "non-contractive linear": (
        lambda b, z: z - (jnp.asarray(H, z.dtype) @ z - b),
        np.array([1.0, 2.0, 3.0]),
        (3,),
    ),  # J eigenvalues -4..-5
    "rotation": (lambda b, z: jnp.asarray(ROTATION, z.dtype) @ z + b, np.array([1.0, 1.0]), (2,)),  # J eigenvalues +-0.95i
    "scalar affine": (lambda b, z: 0.5 * z + b, np.array(3.0), ()),
    "tanh layer": (lambda b, z: jnp.tanh(jnp.asarray(W_TANH, z.dtype) @ z + b), np.linspace(-1.0, 1.0, 6), (6,)),
}
#: plain iteration diverges (|eigenvalue| > 1) or needs hundreds of steps (0.95^t): it must say so.
EXPECTED_FAILURES = {("fixed_point_iteration", "non-contractive linear"), ("fixed_point_iteration", "rotation")}
#: a loose tolerance in float32 and one near float64's resolution (the sweep's cost is compilation: 4 s a case).
CASES = [("float32", 1e-4), ("float64", 1e-10)]


def _reference(name):
    """``(z*, dz*/db, ||(I - J)^-1||)`` in float64 by Newton's method."""
    f, b, shape = PROBLEMS[name]
    b = jnp.asarray(b, jnp.float64)
    flat = lambda z: jnp.ravel(f(b, z.reshape(shape)))
    z = jnp.zeros(int(np.prod(shape)), jnp.float64)
    eye = jnp.eye(z.size)
    for _ in range(50):
        z = z - jnp.linalg.solve(jax.jacfwd(flat)(z) - eye, flat(z) - z)
    inverse = jnp.linalg.inv(eye - jax.jacfwd(flat)(z))
    db = jax.jacfwd(lambda bb: jnp.ravel(f(bb, z.reshape(shape))))(b).reshape(z.size, -1)
    return np.asarray(z), np.asarray(inverse @ db), float(jnp.linalg.norm(inverse, 2))


@pytest.mark.slow
@pytest.mark.parametrize("dtype, tol", CASES, ids=[f"{d}-tol{t:g}" for d, t in CASES])
@pytest.mark.parametrize("backward", ["implicit", "implicit_jvp"])
@pytest.mark.parametrize("solver", ["anderson", "broyden", "fixed_point_iteration"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_right_answer_or_a_flag(name, solver, backward, dtype, tol):
    f, b, shape = PROBLEMS[name]
    b = jnp.asarray(b, dtype)
    z_ref, jac_ref, inverse_norm = _reference(name)
    eps = float(jnp.finfo(dtype).eps)

    def solve(b):
        return ij.fixed_point(
            lambda b, z, x: f(b, z),
            b,
            (),
            z0=jnp.zeros(shape, dtype),
            solver=solver,
            backward=backward,
            tol=tol,
            max_steps=60,
            throw=True,
        )

    try:
        basis = jnp.eye(b.size, dtype=dtype).reshape((b.size,) + b.shape)
        if backward == "implicit_jvp":  # forward mode, through the tangent solve
            z, tangent = jax.linearize(solve, b)
            jac = jax.vmap(tangent, out_axes=-1)(basis)
        else:
            z, pull = jax.vjp(solve, b)
            jac = jax.vmap(lambda g: pull(g)[0])(jnp.eye(z.size, dtype=dtype).reshape((z.size,) + z.shape))
        jac = jax.block_until_ready(jac)
    except Exception as error:
        assert "did not converge" in str(error), error
        assert (solver, name) in EXPECTED_FAILURES, f"{solver} unexpectedly flagged {name}: {error}"
        return
    assert (solver, name) not in EXPECTED_FAILURES, f"{solver} should not converge on {name}"
    # rel residual <= tol  =>  ||z - z*|| <= ||(I - J)^-1|| tol ||f(z)||, plus rounding
    scale = max(1.0, float(np.linalg.norm(z_ref)))
    bound = 2 * inverse_norm * (tol + 100 * eps) * scale
    np.testing.assert_allclose(np.ravel(z), np.ravel(z_ref), atol=bound, rtol=0)
    jac_scale = max(1.0, float(np.abs(jac_ref).max()))
    np.testing.assert_allclose(
        np.asarray(jac).reshape(jac_ref.shape), jac_ref, atol=10 * inverse_norm * (tol + 100 * eps) * jac_scale, rtol=0
    )

"""Reverse: backprop through every step, against finite differences of the unrolled objective."""

import jax.numpy as jnp
import numpy as np

import implicit_jax as ij
from tests.bilevel import sgd_problem as P

T = 12


def run(method, num_values=T):
    return ij.unrolled_hypergradient(P.make_step(T), P.hparams(num_values), P.state0(), T, P.outer_loss, method=method)


def test_reverse_matches_finite_differences():
    value, grad = run("reverse", num_values=3)
    step = P.make_step(T)

    def objective(h):
        state = P.state0()
        for t in range(T):
            state = step(state, h, jnp.asarray(t, jnp.int32))
        return P.outer_loss(state, h)

    np.testing.assert_allclose(value, objective(P.hparams(3)), rtol=1e-12)
    eps = 1e-6
    for name in ("momentum_logit", "weight_decay"):
        up, down = P.hparams(3), P.hparams(3)
        up[name], down[name] = up[name] + eps, down[name] - eps
        np.testing.assert_allclose(grad[name], (objective(up) - objective(down)) / (2 * eps), rtol=1e-5)

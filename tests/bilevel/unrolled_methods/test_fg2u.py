import os
import socket
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import implicit_jax as ij
from tests.bilevel import sgd_problem as P

T = 12
N = P.num_hparams(T)


def estimate(method, key, num_values=T):
    return ij.unrolled_hypergradient(P.make_step(T), P.hparams(num_values), P.state0(), T, P.outer_loss, method=method, key=key)


def exact(num_values=T):
    return ravel_pytree(ij.unrolled_hypergradient(P.make_step(T), P.hparams(num_values), P.state0(), T, P.outer_loss)[1])[0]


@pytest.mark.slow
@pytest.mark.parametrize("distribution, theory", [("rademacher", (N - 1) / 4), ("gaussian", (N + 1) / 4)])
def test_unbiased_with_the_theoretical_relative_mse(distribution, theory):
    b, draws = 4, 2000
    method = ij.FG2U(num_directions=b, distribution=distribution)
    keys = jax.random.split(jax.random.key(0), draws)
    estimates = jax.jit(jax.vmap(lambda k: ravel_pytree(estimate(method, k)[1])[0]))(keys)
    g = exact()
    # Unbiased: every coordinate of the mean lies within 4.5 standard errors of the exact gradient.
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(draws)
    assert np.all(np.abs(estimates.mean(axis=0) - g) < 4.5 * standard_error)
    # Relative MSE E|g_hat - g|^2 / |g|^2 = (N -+ 1) / b, within 4 standard errors of its own estimate.
    rel_sq_errors = np.sum((estimates - g) ** 2, axis=1) / np.sum(g**2)
    assert abs(rel_sq_errors.mean() - theory) < 4 * rel_sq_errors.std(ddof=1) / np.sqrt(draws)


def test_one_hyperparameter_with_rademacher_directions_is_exact():
    def step(state, h, t):
        return P.make_step(T)(state, {"log_lr": h, "momentum_logit": jnp.asarray(0.0), "weight_decay": jnp.asarray(0.0)}, t)

    def outer(state, h):
        return P.outer_loss(state, {"weight_decay": jnp.asarray(0.0)})

    h = jnp.asarray([-3.0])
    _, fg = ij.unrolled_hypergradient(step, h, P.state0(), T, outer, method=ij.FG2U(num_directions=3), key=jax.random.key(1))
    _, rev = ij.unrolled_hypergradient(step, h, P.state0(), T, outer)
    chex.assert_trees_all_close(fg, rev, rtol=1e-12)


def test_value_is_the_outer_loss_and_estimate_is_the_direction_average():
    key = jax.random.key(3)
    method = ij.FG2U(num_directions=5)
    value, grad = estimate(method, key)
    v = jax.random.rademacher(key, (5, N), dtype=jnp.float64)
    chex.assert_trees_all_close(ravel_pytree(grad)[0], (v @ exact()) @ v / 5, rtol=1e-10)
    assert float(value) == pytest.approx(
        float(ij.unrolled_hypergradient(P.make_step(T), P.hparams(T), P.state0(), T, P.outer_loss)[0]), rel=1e-14
    )


@pytest.mark.slow
def test_zeroth_order_matches_forward_mode_with_the_same_directions():
    key = jax.random.key(2)
    _, jvp = estimate(ij.FG2U(num_directions=6), key)
    _, fd = estimate(ij.FG2U(num_directions=6, zeroth_order=True, fd_step=1e-7), key)
    chex.assert_trees_all_close(fd, jvp, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("field, value", [("num_directions", 0), ("distribution", "uniform"), ("fd_step", 0.0)])
def test_bad_options(field, value):
    with pytest.raises(ValueError, match=field):
        ij.FG2U(**{field: value})


@pytest.mark.slow
def test_directions_sharded_over_four_devices_give_the_single_device_estimate():
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        jax.config.update("jax_enable_x64", True)
        assert jax.device_count() == 4, jax.devices()
        import implicit_jax as ij
        from tests.bilevel import sgd_problem as P
        def run(shard):
            fn = jax.jit(lambda h, k: ij.unrolled_hypergradient(P.make_step(12), h, P.state0(), 12, P.outer_loss, method=ij.FG2U(num_directions=6, shard=shard), key=k))
            return fn(P.hparams(12), jax.random.key(7))
        (v1, g1), (v4, g4) = run(False), run(True)
        np.testing.assert_allclose(v1, v4, rtol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g4)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)
        from implicit_jax.bilevel.unrolled_methods.fg2u import shard_directions
        d, real = shard_directions(jnp.ones((6, 3)))
        assert real == 6 and float(d[6:].sum()) == 0.0  # padded with zero directions
        assert d.shape == (8, 3) and len(d.sharding.device_set) == 4, d.sharding
        print("ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_directions_sharded_over_the_devices_of_two_processes_give_the_single_device_estimate():
    """Two processes on 127.0.0.1 with two CPU devices each: the directions are split over all four."""
    script = textwrap.dedent(
        """
        import sys, jax, jax.numpy as jnp, numpy as np
        jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
        jax.config.update("jax_enable_x64", True)
        assert jax.device_count() == 4 and jax.local_device_count() == 2, jax.devices()
        import implicit_jax as ij
        from tests.bilevel import sgd_problem as P
        fn = jax.jit(lambda h, k: ij.unrolled_hypergradient(P.make_step(12), h, P.state0(), 12, P.outer_loss,
                                                             method=ij.FG2U(num_directions=6), key=k))
        value, grad = fn(P.hparams(12), jax.random.key(7))
        grad = jax.tree_util.tree_leaves(grad)
        assert all(len(g.sharding.device_set) == 4 for g in grad)  # replicated over both processes
        print(repr([float(value)] + [float(x) for g in grad for x in np.ravel(np.asarray(g))]))
        """
    )
    single = textwrap.dedent(
        """
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        import implicit_jax as ij
        from tests.bilevel import sgd_problem as P
        fn = jax.jit(lambda h, k: ij.unrolled_hypergradient(P.make_step(12), h, P.state0(), 12, P.outer_loss,
                                                             method=ij.FG2U(num_directions=6, shard=False), key=k))
        value, grad = fn(P.hparams(12), jax.random.key(7))
        print(repr([float(value)] + [float(x) for g in jax.tree_util.tree_leaves(grad) for x in np.ravel(np.asarray(g))]))
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"127.0.0.1:{port}", str(i)],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=240) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in processes), [err[-3000:] for _, err in outputs]
    reference = subprocess.run(
        [sys.executable, "-c", single],
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = eval(reference.stdout.strip().splitlines()[-1])
    for out, _ in outputs:
        np.testing.assert_allclose(eval(out.strip().splitlines()[-1]), expected, rtol=1e-12)

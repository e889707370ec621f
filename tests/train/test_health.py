import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implicit_jax.train.health import ConvergenceMonitor, describe_nonfinite, finite_report, leaf_names, select_state


def test_a_non_finite_step_keeps_the_previous_state_inside_jit():
    old = {"w": jnp.ones(3), "count": jnp.asarray(2, jnp.int32)}

    @jax.jit
    def step(state, scale):
        grads = {"w": scale * jnp.ones(3), "count": jnp.zeros((), jnp.int32)}
        new = {"w": state["w"] - grads["w"], "count": state["count"] + 1}
        loss = jnp.sum(new["w"] ** 2)
        report = finite_report(loss, grads, new)
        return select_state(report["finite"], new, old), report

    good, report = step(old, 0.5)
    assert bool(report["finite"]) and float(good["w"][0]) == 0.5 and int(good["count"]) == 3
    bad, report = step(old, jnp.inf)
    assert not bool(report["finite"]) and not bool(report["finite_loss"])
    np.testing.assert_array_equal(bad["w"], old["w"])
    assert int(bad["count"]) == 2
    np.testing.assert_array_equal(report["finite_grads"], [True, False])  # leaves in order: count, w


def test_the_message_names_the_step_and_the_arrays():
    params = {"head": {"kernel": 0.0}, "cell": {"bias": 0.0, "kernel": 0.0}}
    names = leaf_names(params)
    assert names == ["cell.bias", "cell.kernel", "head.kernel"]
    report = dict(finite_loss=True, finite_grads=np.array([True, False, False]), finite_state=np.array([True, True, True]))
    message = describe_nonfinite(12, report, names, names)
    assert message == "step 12: non-finite (NaN or inf) gradient in 2 of 3 arrays (cell.kernel, head.kernel)"


def test_low_convergence_warns_once_after_patience_records():
    monitor = ConvergenceMonitor(threshold=0.5, patience=3)
    assert monitor.update(dict(step=10, forward_converged=0.2, backward_converged=None)) is None
    assert monitor.update(dict(step=20, forward_converged=0.9)) is None  # recovered: the count restarts
    monitor.update(dict(step=30, forward_converged=0.2))
    monitor.update(dict(step=40, forward_converged=0.3))
    with pytest.warns(RuntimeWarning, match=r"forward solves converged in only 30% .* \(steps 30\.\.50\)"):
        monitor.update(dict(step=50, forward_converged=0.4))
    assert monitor.update(dict(step=60, forward_converged=0.1)) is None  # once per run

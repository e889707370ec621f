import numpy as np
import pytest

import implicit_jax as ij
from examples.bilevel import schedule_tuning as S


@pytest.fixture(scope="module")
def split():
    return S.digits_split()


@pytest.mark.slow
def test_fds_and_reverse_tune_identically_and_lower_the_validation_loss(split):
    reverse = S.tune(split, 40, "reverse", num_values=4, outer_steps=3)
    fds = S.tune(split, 40, "fds", num_values=4, outer_steps=3)
    np.testing.assert_allclose(fds["val_loss_curve"], reverse["val_loss_curve"], rtol=1e-4)
    assert reverse["val_loss_curve"][-1] < reverse["val_loss_curve"][0]
    assert set(reverse["schedule"]) == {"log_lr", "momentum_logit", "log_wd"}


@pytest.mark.slow
def test_memory_of_forward_methods_is_flat_in_the_horizon(split):
    fds = [S.peak_temp_bytes(split, t, "fds", 4) for t in (20, 200)]
    fg2u = [S.peak_temp_bytes(split, t, ij.FG2U(num_directions=2), 4) for t in (20, 200)]
    reverse = [S.peak_temp_bytes(split, t, "reverse", 4) for t in (20, 200)]
    assert fds[0] == fds[1] and fg2u[0] == fg2u[1]
    assert reverse[1] > 5 * reverse[0]


def test_evaluate_reports_losses_and_accuracy(split):
    result = S.evaluate(split, 30, S.initial_hparams(3))
    assert 0.0 <= result["test_accuracy"] <= 1.0 and np.isfinite(result["val_loss"])
